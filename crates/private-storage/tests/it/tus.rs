//! Resumable uploads through `TusService`, mounted in axum behind the toy identity layer.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use base64::Engine;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use private_storage::tus::{LocalPartials, Resumable, TusService};
use private_storage::{LocalStorage, SavedFile, UploadPolicy};
use sha2::Digest;
use tower::ServiceExt;

use crate::common::{self, pdf};

struct Fixture {
    app: Router,
    storage: LocalStorage,
    partial: std::path::PathBuf,
    completed: Arc<Mutex<Vec<(String, SavedFile)>>>,
    _dir: tempfile::TempDir,
}

fn fixture(policy: impl FnOnce(UploadPolicy) -> UploadPolicy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    let storage = LocalStorage::new(dir.path().join("files")).unwrap();
    let partial = dir.path().join("partial");
    let partials = LocalPartials::new(&partial, storage.clone()).unwrap();
    let uploads = Resumable::new(policy(UploadPolicy::new(storage.clone()).upload_to("up")), partials);
    let completed = Arc::new(Mutex::new(Vec::new()));
    let seen = completed.clone();
    let service = TusService::new(uploads, "/uploads/", move |owner, saved| {
        seen.lock().unwrap().push((owner, saved));
        async { Ok(()) }
    });
    let app = Router::new().nest_service("/uploads", service).layer(axum::middleware::from_fn(common::bearer_identity));
    Fixture { app, storage, partial, completed, _dir: dir }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    user: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri).header("tus-resumable", "1.0.0");
    if let Some(user) = user {
        request = request.header("authorization", format!("Bearer {user}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
    Reply { status: parts.status, headers: parts.headers, body }
}

fn metadata(name: &str, filetype: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!("filename {},filetype {}", b64(name), b64(filetype))
}

async fn create(app: &Router, user: &str, length: usize, name: &str) -> String {
    let meta = metadata(name, "application/pdf");
    let len = length.to_string();
    let r =
        send(app, "POST", "/uploads", Some(user), &[("upload-length", &len), ("upload-metadata", &meta)], vec![]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.header("upload-expires").is_some());
    r.header("location").unwrap().to_owned()
}

async fn patch(app: &Router, user: &str, url: &str, offset: usize, bytes: &[u8], extra: &[(&str, &str)]) -> Reply {
    let offset = offset.to_string();
    let mut headers = vec![("upload-offset", offset.as_str()), ("content-type", "application/offset+octet-stream")];
    headers.extend_from_slice(extra);
    send(app, "PATCH", url, Some(user), &headers, bytes.to_vec()).await
}

#[tokio::test]
async fn an_upload_in_three_patches_becomes_one_checked_file() {
    let f = fixture(|p| p.content_types(["application/pdf"]));
    let options = send(&f.app, "OPTIONS", "/uploads", None, &[], vec![]).await;
    assert_eq!(options.status, StatusCode::NO_CONTENT);
    assert_eq!(options.header("tus-version"), Some("1.0.0"));

    let data = pdf(300_000, 3);
    let url = create(&f.app, "ada", data.len(), "report.pdf").await;
    let id = url.rsplit('/').next().unwrap();
    assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id).unwrap().len(), 16, "128-bit ids");
    let thirds = [0, 100_000, 200_000, data.len()];
    for part in thirds.windows(2) {
        let head = send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await;
        assert_eq!(head.header("upload-offset"), Some(part[0].to_string().as_str()));
        assert_eq!(head.header("upload-length"), Some(data.len().to_string().as_str()));
        assert_eq!(head.header("cache-control"), Some("no-store"));
        assert!(f.completed.lock().unwrap().is_empty(), "nothing is a file before the last byte");
        let r = patch(&f.app, "ada", &url, part[0], &data[part[0]..part[1]], &[]).await;
        assert_eq!(
            (r.status, r.header("upload-offset")),
            (StatusCode::NO_CONTENT, Some(part[1].to_string().as_str())),
            "{}",
            r.body
        );
    }
    let done = f.completed.lock().unwrap().clone();
    assert_eq!(done.len(), 1);
    let (owner, saved) = &done[0];
    assert_eq!(
        (owner.as_str(), saved.original_name.as_str(), saved.content_type.as_str()),
        ("ada", "report.pdf", "application/pdf")
    );
    assert_eq!(saved.sha256, common::sha256(&data));
    assert_eq!(std::fs::read(f.storage.root().join(saved.key.as_str())).unwrap(), data);
    assert!(saved.key.as_str().starts_with("up/"), "{}", saved.key);
    assert_eq!(std::fs::read_dir(&f.partial).unwrap().count(), 1, "only the state is left");
    // A client that lost the last answer learns that the upload is done, and cannot add to it.
    let head = send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await;
    assert_eq!((head.status, head.header("upload-offset")), (StatusCode::OK, Some("300000")));
    let again = patch(&f.app, "ada", &url, data.len(), &[], &[]).await;
    assert_eq!((again.status, again.header("upload-offset")), (StatusCode::NO_CONTENT, Some("300000")));
    assert_eq!(f.completed.lock().unwrap().len(), 1, "completed once");
    assert_eq!(patch(&f.app, "ada", &url, data.len(), b"more", &[]).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn wrong_offsets_checksums_and_versions_keep_nothing_of_the_request() {
    let f = fixture(|p| p);
    let data = pdf(50_000, 1);
    let url = create(&f.app, "ada", data.len(), "a.pdf").await;
    assert_eq!(patch(&f.app, "ada", &url, 0, &data[..10_000], &[]).await.status, StatusCode::NO_CONTENT);
    let conflict = patch(&f.app, "ada", &url, 5_000, &data[5_000..20_000], &[]).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "an offset the upload is not at");

    let sha1 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b));
    let wrong = format!("sha1 {}", sha1(b"something else"));
    let mismatch = patch(&f.app, "ada", &url, 10_000, &data[10_000..20_000], &[("upload-checksum", &wrong)]).await;
    assert_eq!(mismatch.status.as_u16(), 460, "{}", mismatch.body);
    let head = send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await;
    assert_eq!(head.header("upload-offset"), Some("10000"), "the mismatched bytes were not kept");
    let right = format!("sha1 {}", sha1(&data[10_000..20_000]));
    let ok = patch(&f.app, "ada", &url, 10_000, &data[10_000..20_000], &[("upload-checksum", &right)]).await;
    assert_eq!((ok.status, ok.header("upload-offset")), (StatusCode::NO_CONTENT, Some("20000")));
    let sha256 =
        format!("sha256 {}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data[20_000..])));
    let ok = patch(&f.app, "ada", &url, 20_000, &data[20_000..], &[("upload-checksum", &sha256)]).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    assert_eq!(f.completed.lock().unwrap()[0].1.sha256, common::sha256(&data));

    let unsupported = patch(&f.app, "ada", &url, 0, b"x", &[("upload-checksum", "md5 AAAA")]).await;
    assert_eq!(unsupported.status, StatusCode::BAD_REQUEST);
    let old = Request::post("/uploads").header("tus-resumable", "0.2.2").header("upload-length", "5");
    let old =
        f.app.clone().oneshot(old.header("authorization", "Bearer ada").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(
        (old.status(), old.headers()["tus-version"].to_str().unwrap()),
        (StatusCode::PRECONDITION_FAILED, "1.0.0")
    );
    let url = create(&f.app, "ada", 10, "b.pdf").await;
    let wrong_type =
        send(&f.app, "PATCH", &url, Some("ada"), &[("upload-offset", "0"), ("content-type", "text/plain")], vec![1])
            .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let past = patch(&f.app, "ada", &url, 0, &[b'%'; 11], &[]).await;
    assert_eq!(past.status, StatusCode::PAYLOAD_TOO_LARGE, "past Upload-Length");
    assert_eq!(send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await.header("upload-offset"), Some("0"));
}

#[tokio::test]
async fn limits_and_types_are_enforced_as_the_bytes_arrive() {
    let f = fixture(|p| p.content_types(["application/pdf"]).max_file_size(100_000));
    let big = send(&f.app, "POST", "/uploads", Some("ada"), &[("upload-length", "100001")], vec![]).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "a declared length over the limit");

    // A deferred length: the PATCH that crosses the limit is refused and kept nothing.
    let r = send(&f.app, "POST", "/uploads", Some("ada"), &[("upload-defer-length", "1")], vec![]).await;
    let url = r.header("location").unwrap().to_owned();
    let data = pdf(150_000, 2);
    assert_eq!(patch(&f.app, "ada", &url, 0, &data[..60_000], &[]).await.status, StatusCode::NO_CONTENT);
    let crossing = patch(&f.app, "ada", &url, 60_000, &data[60_000..120_000], &[]).await;
    assert_eq!(crossing.status, StatusCode::PAYLOAD_TOO_LARGE);
    let head = send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await;
    assert_eq!((head.header("upload-offset"), head.header("upload-defer-length")), (Some("60000"), Some("1")));
    let done = patch(&f.app, "ada", &url, 60_000, &data[60_000..90_000], &[("upload-length", "90000")]).await;
    assert_eq!((done.status, done.header("upload-offset")), (StatusCode::NO_CONTENT, Some("90000")));
    assert_eq!(f.completed.lock().unwrap().len(), 1, "the deferred upload completed with its length");

    // A Windows executable named like a PDF: refused on its first PATCH, the upload ended.
    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.resize(20_000, 0);
    let url = create(&f.app, "ada", exe.len(), "invoice.pdf").await;
    let refused = patch(&f.app, "ada", &url, 0, &exe[..10_000], &[]).await;
    assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", refused.body);
    assert_eq!(send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await.status, StatusCode::NOT_FOUND);
    let id = url.rsplit('/').next().unwrap();
    assert!(!f.partial.join(id).exists() && !f.partial.join(format!("{id}.json")).exists(), "nothing of it is kept");
    assert_eq!(f.completed.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_upload_is_only_its_owners() {
    let f = fixture(|p| p);
    let url = create(&f.app, "ada", 20_000, "a.pdf").await;
    for (user, what) in [(Some("bob"), "another user"), (None, "anonymous")] {
        assert_eq!(send(&f.app, "HEAD", &url, user, &[], vec![]).await.status, StatusCode::NOT_FOUND, "{what}");
        let offset = [("upload-offset", "0"), ("content-type", "application/offset+octet-stream")];
        assert_eq!(
            send(&f.app, "PATCH", &url, user, &offset, pdf(100, 1)).await.status,
            StatusCode::NOT_FOUND,
            "{what}"
        );
        assert_eq!(send(&f.app, "DELETE", &url, user, &[], vec![]).await.status, StatusCode::NOT_FOUND, "{what}");
    }
    let anonymous = send(&f.app, "POST", "/uploads", None, &[("upload-length", "5")], vec![]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await.header("upload-offset"), Some("0"));
    assert_eq!(send(&f.app, "DELETE", &url, Some("ada"), &[], vec![]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(std::fs::read_dir(&f.partial).unwrap().count(), 0);
}

#[tokio::test]
async fn creation_with_upload_stores_the_first_bytes() {
    let f = fixture(|p| p);
    let data = pdf(30_000, 4);
    let len = data.len().to_string();
    let headers = [("upload-length", len.as_str()), ("content-type", "application/offset+octet-stream")];
    let r = send(&f.app, "POST", "/uploads", Some("ada"), &headers, data[..12_000].to_vec()).await;
    assert_eq!((r.status, r.header("upload-offset")), (StatusCode::CREATED, Some("12000")), "{}", r.body);
    let url = r.header("location").unwrap().to_owned();
    assert_eq!(patch(&f.app, "ada", &url, 12_000, &data[12_000..], &[]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.completed.lock().unwrap()[0].1.sha256, common::sha256(&data));
}

#[tokio::test]
async fn the_digest_is_right_whether_kept_across_requests_or_read_again() {
    let f = fixture(|p| p);
    let data = pdf(90_000, 9);
    for lose_the_running_digest in [false, true] {
        let url = create(&f.app, "ada", data.len(), "d.pdf").await;
        assert_eq!(patch(&f.app, "ada", &url, 0, &data[..40_000], &[]).await.status, StatusCode::NO_CONTENT);
        if lose_the_running_digest {
            // A state written before the digest was kept (or lost): the file is read again.
            let state = f.partial.join(format!("{}.json", url.rsplit('/').next().unwrap()));
            let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
            assert!(json["sha256_state"].is_string());
            json["sha256_state"] = serde_json::Value::Null;
            std::fs::write(&state, serde_json::to_vec(&json).unwrap()).unwrap();
        }
        assert_eq!(patch(&f.app, "ada", &url, 40_000, &data[40_000..], &[]).await.status, StatusCode::NO_CONTENT);
        let (_, saved) = f.completed.lock().unwrap().last().unwrap().clone();
        assert_eq!(saved.sha256, common::sha256(&data), "lost: {lose_the_running_digest}");
    }
}

/// Two `PATCH`es to one upload at once (a client that lost its connection tries again while
/// the server still reads the old request): the newcomer stops the running one where it is,
/// that one keeps what arrived, and the newcomer is told the offset moved (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_patch_stops_the_running_one_and_finds_the_offset_it_left() {
    let f = fixture(|p| p);
    let data = pdf(100_000, 5);
    let url = create(&f.app, "ada", data.len(), "c.pdf").await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let body = futures_util::stream::unfold(receiver, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    sender.send(bytes::Bytes::copy_from_slice(&data[..10_000])).await.unwrap();
    let request = Request::patch(&url)
        .header("tus-resumable", "1.0.0")
        .header("authorization", "Bearer ada")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(Body::from_stream(body))
        .unwrap();
    let app = f.app.clone();
    let running = tokio::spawn(async move { app.oneshot(request).await.unwrap() });
    // Until the first 10,000 bytes are stored, the running request holds the upload.
    let stored = f.partial.join(url.rsplit('/').next().unwrap());
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while std::fs::metadata(&stored).map_or(0, |m| m.len()) < 10_000 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the first request's bytes arrive");
    let second = patch(&f.app, "ada", &url, 0, &data, &[]).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "the offset moved under it");
    let first = running.await.unwrap();
    assert_eq!(first.status(), StatusCode::NO_CONTENT, "stopped where it was, its bytes kept");
    assert_eq!(first.headers()["upload-offset"], "10000");
    drop(sender);
    let head = send(&f.app, "HEAD", &url, Some("ada"), &[], vec![]).await;
    assert_eq!(head.header("upload-offset"), Some("10000"));
    assert_eq!(patch(&f.app, "ada", &url, 10_000, &data[10_000..], &[]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.completed.lock().unwrap()[0].1.sha256, common::sha256(&data));
}

/// An upload service over an encrypted folder with sealed partials, in `dir` (so that a second
/// one over the same `dir` is the same server restarted).
#[cfg(feature = "encryption")]
fn sealed_service(dir: &std::path::Path) -> (Router, Arc<private_storage::EncryptedStorage<LocalStorage>>) {
    use private_storage::{EncryptedStorage, Keyring};
    let keys = Keyring::parse(&format!("k1={}", base64::engine::general_purpose::STANDARD.encode([5u8; 32]))).unwrap();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let storage = Arc::new(EncryptedStorage::new(LocalStorage::new(dir.join("files")).unwrap(), keys.clone()).unwrap());
    let partials = LocalPartials::copying_into(dir.join("partial"), storage.clone()).unwrap().sealed(keys);
    let policy = UploadPolicy::from_arc(storage.clone()).upload_to("up").content_types(["application/pdf"]);
    let service = TusService::new(Resumable::new(policy, partials), "/uploads/", |_, _| async { Ok(()) });
    let app = Router::new().nest_service("/uploads", service).layer(axum::middleware::from_fn(common::bearer_identity));
    (app, storage)
}

#[cfg(feature = "encryption")]
#[tokio::test]
async fn sealed_partials_keep_an_unfinished_upload_encrypted_across_a_restart_and_refuse_changed_bytes() {
    use private_storage::StorageExt;
    let dir = tempfile::tempdir().unwrap();
    let marker = b"PARTIAL-MARKER-5b7e21";
    let mut data = pdf(300_000, 3);
    for at in [1000, 150_000, 250_000] {
        data[at..at + marker.len()].copy_from_slice(marker);
    }
    let (app, _) = sealed_service(dir.path());
    let url = create(&app, "ada", data.len(), "sealed.pdf").await;
    assert_eq!(patch(&app, "ada", &url, 0, &data[..200_000], &[]).await.status, StatusCode::NO_CONTENT);
    let on_disk = crate::common::files(dir.path());
    assert!(!on_disk.is_empty());
    for file in &on_disk {
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "unfinished bytes readable in {file}");
    }

    // Restarted: the offset is known and the rest completes it.
    let (app, storage) = sealed_service(dir.path());
    let head = send(&app, "HEAD", &url, Some("ada"), &[], vec![]).await;
    assert_eq!(head.header("upload-offset"), Some("200000"));
    let done = patch(&app, "ada", &url, 200_000, &data[200_000..], &[]).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);
    let stored: Vec<_> =
        futures_util::TryStreamExt::try_collect::<Vec<_>>(private_storage::Storage::list(&*storage, None))
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(storage.read(&stored[0].key).await.unwrap() == data, "the content, whole");
    for file in crate::common::files(dir.path()) {
        let bytes = std::fs::read(dir.path().join(&file)).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "content readable in {file}");
    }

    // Bytes changed on disk while unfinished: the finished upload is refused, nothing kept.
    let url = create(&app, "ada", data.len(), "changed.pdf").await;
    assert_eq!(patch(&app, "ada", &url, 0, &data[..200_000], &[]).await.status, StatusCode::NO_CONTENT);
    let id = url.rsplit('/').next().unwrap();
    let partial = dir.path().join("partial").join(id);
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[208 + 100_000] ^= 1;
    std::fs::write(&partial, &bytes).unwrap();
    let refused = patch(&app, "ada", &url, 200_000, &data[200_000..], &[]).await;
    assert!(refused.status.is_server_error(), "{} {}", refused.status, refused.body);
    let kept: Vec<_> =
        futures_util::TryStreamExt::try_collect::<Vec<_>>(private_storage::Storage::list(&*storage, None))
            .await
            .unwrap();
    assert_eq!(kept.len(), 1, "only the first upload is stored: {kept:?}");
}
