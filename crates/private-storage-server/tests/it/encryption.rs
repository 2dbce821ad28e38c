//! Encryption at rest through the server: every upload path stores ciphertext, every download
//! path serves the plaintext with its ranges, and what cannot decrypt is refused at start.

use axum::body::Body;
use base64::Engine;
use http::Request;
use private_storage_server::Loader;

use crate::common::{Auth, TestServer, files_under, server, sha256};

fn key_entry(id: &str, byte: u8) -> String {
    format!("{id}={}", base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

/// A PDF of `len` bytes with `marker` at several places.
fn marked_pdf(len: usize, marker: &[u8]) -> Vec<u8> {
    let mut bytes = crate::common::pdf(len);
    for at in [100, len / 2, len - marker.len() - 1] {
        bytes[at..at + marker.len()].copy_from_slice(marker);
    }
    bytes
}

fn assert_nowhere(s: &TestServer, marker: &[u8]) {
    let files = files_under(&s.dir.path().join("data"));
    assert!(files.iter().any(|f| f.contains("/media/files/")), "files were stored: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "the content is readable in {file}");
    }
}

async fn check_served(s: &TestServer, auth: &Auth<'_>, id: &str, content: &[u8]) {
    let url = format!("/files/{id}/download");
    let whole = s.get(&url, auth).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == content, "the whole file");
    assert_eq!(whole.header("content-length"), Some(content.len().to_string().as_str()));
    let at = content.len() / 2 - 7;
    let range = format!("bytes={at}-{}", at + 99);
    let request = |uri: &str| Request::get(uri).header("range", &range);
    let auth_header = match auth {
        Auth::Bearer(token) => format!("Bearer {token}"),
        _ => unreachable!("bearer tokens here"),
    };
    let ranged = s.send(request(&url).header("authorization", &auth_header).body(Body::empty()).unwrap()).await;
    assert_eq!(ranged.status, 206);
    assert!(ranged.body[..] == content[at..at + 100], "a range in the middle");
    let head = s.send(Request::head(&url).header("authorization", &auth_header).body(Body::empty()).unwrap()).await;
    assert_eq!(head.header("content-length"), Some(content.len().to_string().as_str()), "HEAD: the plaintext size");
}

#[tokio::test]
async fn every_upload_path_stores_ciphertext_and_every_download_path_serves_the_content() {
    let s = server(&[("encryption", "on"), ("encryption_keys", &key_entry("k1", 1))]).await;
    let ada = s.user("ada", false, true).await;
    let auth = Auth::Bearer(&ada);
    let marker = b"MARKER-2f9c0e1b7a-IN-THE-CONTENT";

    // Multipart, as the API and the upload form take it.
    let posted = marked_pdf(300_000, marker);
    let created = s.upload("/api/files", &auth, &[], "posted.pdf", &posted).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let file = created.json();
    assert_eq!(file["sha256"], sha256(&posted), "the recorded SHA-256 is of the content");
    assert_eq!(file["size"], 300_000);
    let posted_id = file["id"].as_str().unwrap().to_owned();
    check_served(&s, &auth, &posted_id, &posted).await;

    // Resumable (tus), in two requests: the partial is the server's until the end.
    let resumed = marked_pdf(200_000, marker);
    let meta = format!("filename {}", base64::engine::general_purpose::STANDARD.encode("resumed.pdf"));
    let tus = |method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>| {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {ada}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::from(body)).unwrap()
    };
    let created =
        s.send(tus("POST", "/api/uploads", &[("upload-length", "200000"), ("upload-metadata", &meta)], vec![])).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let upload = created.header("location").unwrap().to_owned();
    let octets = ("content-type", "application/offset+octet-stream");
    let first = s.send(tus("PATCH", &upload, &[("upload-offset", "0"), octets], resumed[..70_000].to_vec())).await;
    assert_eq!(first.status, 204);
    for partial in files_under(&s.dir.path().join("data/uploads")) {
        let bytes = std::fs::read(&partial).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "an unfinished upload is readable in {partial}");
    }
    let last = s.send(tus("PATCH", &upload, &[("upload-offset", "70000"), octets], resumed[70_000..].to_vec())).await;
    assert_eq!(last.status, 204, "{}", last.text());
    let shown = s.get(last.header("x-file-location").unwrap(), &auth).await.json();
    assert_eq!(shown["sha256"], sha256(&resumed));
    let resumed_id = shown["id"].as_str().unwrap().to_owned();
    check_served(&s, &auth, &resumed_id, &resumed).await;

    // By key under /private-media/ (the superuser rule), and through a share link.
    let key = s.state.db.file(&posted_id, None).await.unwrap().unwrap().object_key.clone();
    let by_key = s.get(&format!("/private-media/{key}"), &auth).await;
    assert!(by_key.status == 200 && by_key.body == posted, "by key");
    let link = Request::post(format!("/api/files/{resumed_id}/links"))
        .header("authorization", format!("Bearer {ada}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"expires":"1h"}"#))
        .unwrap();
    let url = s.send(link).await.json()["url"].as_str().unwrap().to_owned();
    let shared = s.send(Request::get(&url).header("range", "bytes=-10").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (shared.status.as_u16(), &shared.body[..]),
        (206, &resumed[resumed.len() - 10..]),
        "a share link's range"
    );

    assert_nowhere(&s, marker);
}

#[test]
fn encryption_is_refused_at_start_without_keys_or_with_a_delivery_that_cannot_decrypt() {
    let build = |settings: &[(&str, &str)]| {
        let flags: Vec<(String, String)> = settings.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Loader::new().flags(&flags).and_then(Loader::build).map(|_| ()).map_err(|e| e.to_string())
    };
    let keys = key_entry("k1", 1);
    let no_keys = build(&[("encryption", "on")]).unwrap_err();
    assert!(no_keys.contains("encryption") && no_keys.contains("keys generate"), "{no_keys}");
    for delivery in ["nginx", "apache"] {
        let refused = build(&[("encryption", "on"), ("encryption_keys", &keys), ("delivery", delivery)]).unwrap_err();
        assert!(refused.contains("delivery = stream") && refused.contains(delivery), "{refused}");
        assert!(!refused.contains(&keys[3..]), "no key material in messages");
    }
    let bad = build(&[("encryption", "on"), ("encryption_keys", "k1=c2hvcnQ=")]).unwrap_err();
    assert!(bad.contains("32 bytes"), "{bad}");
    assert!(build(&[("encryption", "on"), ("encryption_keys", &keys)]).is_ok());
    assert!(build(&[("encryption", "maybe")]).unwrap_err().contains("on or off"));
}
