//! Virus scanning against a real clamd (Debian's `clamav-daemon`, on a signature database the
//! test writes): pending files are served by no route, infected ones never, clean ones once
//! scanned; fail closed while clamd is down, and caught up with no one acting once it is back.

use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use http::Request;
use test_support::{Clamd, EICAR, MARKER, MARKER_SIGNATURE};

use crate::common::{Auth, Reply, TestServer, pdf, server, stored_files};

const MIB: usize = 1024 * 1024;

async fn scanning_server(clamd: &Clamd, extra: &[(&str, &str)]) -> TestServer {
    let address = format!("127.0.0.1:{}", clamd.port);
    let mut settings = vec![("scan", "clamav"), ("clamd_address", address.as_str()), ("scan_max_size", "64MiB")];
    settings.extend_from_slice(extra);
    server(&settings).await
}

async fn upload(s: &TestServer, token: &str, name: &str, bytes: &[u8]) -> serde_json::Value {
    let reply = s.upload("/api/files", &Auth::Bearer(token), &[], name, bytes).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

fn id_of(file: &serde_json::Value) -> String {
    file["id"].as_str().unwrap().to_owned()
}

async fn scan_state(s: &TestServer, token: &str, id: &str) -> (String, Option<String>) {
    let file = s.get(&format!("/api/files/{id}"), &Auth::Bearer(token)).await.json();
    (file["scan"].as_str().unwrap().to_owned(), file["scan_detail"].as_str().map(str::to_owned))
}

/// A share link to the file, made by its owner.
async fn share(s: &TestServer, token: &str, id: &str) -> String {
    let request = Request::post(format!("/api/files/{id}/links"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"expires":"1h"}"#))
        .unwrap();
    let link = s.send(request).await;
    assert_eq!(link.status, 201, "{}", link.text());
    link.json()["url"].as_str().unwrap().to_owned()
}

/// Every way to the file's bytes a client has: by record (GET, HEAD, a range, inline), by key
/// under `/private-media/` (as a superuser), and by share link (GET, HEAD, a range).
async fn every_route(s: &TestServer, owner: &str, root: &str, id: &str, link: &str) -> Vec<(String, Reply)> {
    let key = s.state.db.file(id, None).await.unwrap().unwrap().object_key.clone();
    let by_key = format!("/private-media/{key}");
    let record = format!("/files/{id}/download");
    let inline = format!("{record}?inline=1");
    let routes: [(&str, &str, &str, Option<&str>); 8] = [
        (&record, "GET", owner, None),
        (&record, "HEAD", owner, None),
        (&record, "GET", owner, Some("bytes=0-9")),
        (&inline, "GET", owner, None),
        (&by_key, "GET", root, None),
        (link, "GET", "", None),
        (link, "HEAD", "", None),
        (link, "GET", "", Some("bytes=5-")),
    ];
    let mut replies = Vec::new();
    for (uri, method, token, range) in routes {
        let mut request = Request::builder().method(method).uri(uri);
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let reply = s.send(request.body(Body::empty()).unwrap()).await;
        replies.push((format!("{method} {uri} {range:?}"), reply));
    }
    replies
}

/// No route answers with a byte of the file or a header about it: only `status`, and why.
fn assert_held(replies: &[(String, Reply)], status: u16, why: &str) {
    for (route, reply) in replies {
        assert_eq!(reply.status, status, "{route}: {}", reply.text());
        if !route.starts_with("HEAD") {
            assert!(reply.text().contains(why), "{route}: {}", reply.text());
        }
        for leak in ["etag", "content-range", "accept-ranges", "x-accel-redirect", "location", "content-disposition"] {
            assert_eq!(reply.header(leak), None, "{route}: {leak}");
        }
    }
}

/// Polls `condition` (a state reached by the server's own scanning loop) for up to 30 s.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_new_file_is_served_by_no_route_until_clamd_found_it_clean() {
    let clamd = Clamd::start(64 * MIB as u64).await;
    let s = scanning_server(&clamd, &[]).await;
    let (ada, root) = (s.user("ada", false, false).await, s.user("root", true, true).await);
    let bytes = pdf(300_000);
    let file = upload(&s, &ada, "report.pdf", &bytes).await;
    assert_eq!(file["scan"], "pending");
    let id = id_of(&file);
    let link = share(&s, &ada, &id).await;
    assert_held(&every_route(&s, &ada, &root, &id, &link).await, 423, "being scanned");
    let page = s.get(&format!("/files/{id}"), &Auth::Cookie(&s.login("ada").await.cookie)).await.text();
    assert!(page.contains(r#"data-scan="pending""#) && !page.contains(&format!("/files/{id}/download")), "{page}");

    assert_eq!(s.state.domain.scan_waiting().await.unwrap(), 1);
    assert_eq!(scan_state(&s, &ada, &id).await, ("clean".into(), None));
    for (route, reply) in every_route(&s, &ada, &root, &id, &link).await {
        assert!(reply.status == 200 || reply.status == 206, "{route}: {}", reply.status);
        if route.starts_with("GET") && !route.contains("bytes") {
            assert!(reply.body == bytes, "{route}");
        }
    }
    let metrics = s.get("/metrics", &Auth::None).await.text();
    assert!(metrics.contains(r#"private_storage_scans_total{outcome="clean"} 1"#), "{metrics}");
}

#[tokio::test]
async fn eicar_is_found_and_the_infected_file_is_never_served_but_shown_to_its_owner() {
    let clamd = Clamd::start(64 * MIB as u64).await;
    let s = scanning_server(&clamd, &[]).await;
    let (ada, root) = (s.user("ada", false, false).await, s.user("root", true, true).await);
    let id = id_of(&upload(&s, &ada, "eicar.txt", EICAR).await);
    let link = share(&s, &ada, &id).await;
    assert_eq!(s.state.domain.scan_waiting().await.unwrap(), 1);
    let (state, detail) = scan_state(&s, &ada, &id).await;
    assert_eq!((state.as_str(), detail.as_deref()), ("infected", Some("Eicar-Test-Signature.UNOFFICIAL")));
    assert_held(&every_route(&s, &ada, &root, &id, &link).await, 403, "found infected (Eicar-Test-Signature");
    let cookie = s.login("ada").await.cookie;
    let index = s.get("/", &Auth::Cookie(&cookie)).await.text();
    assert!(index.contains(r#"data-scan="infected""#) && index.contains("Eicar-Test-Signature"), "{index}");
    assert!(!index.contains(&format!("/files/{id}/download")), "no download link for an infected file");
    // The owner can still delete it.
    let delete = Request::delete(format!("/api/files/{id}"))
        .header("authorization", format!("Bearer {ada}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.send(delete).await.status, 204);
    assert!(stored_files(&s).is_empty());
}

/// The tests' own body signature, 50 MiB into a 60 MiB file that arrives through tus in
/// 8 MiB chunks, is found: the whole stream reached clamd.
#[tokio::test]
async fn a_signature_50_mib_into_a_60_mib_resumable_upload_is_found() {
    let clamd = Clamd::start(64 * MIB as u64).await;
    let s = scanning_server(&clamd, &[]).await;
    let ada = s.user("ada", false, false).await;
    let mut data: Vec<u8> = (0..60 * MIB).map(|i| (i * 31 % 251) as u8).collect();
    data[50 * MIB..50 * MIB + MARKER.len()].copy_from_slice(MARKER);
    let tus = |method: &str, uri: &str, headers: &[(&str, String)], body: Vec<u8>| {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {ada}"));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.body(Body::from(body)).unwrap()
    };
    let meta = format!("filename {}", base64::engine::general_purpose::STANDARD.encode("deep.bin"));
    let created = s
        .send(tus(
            "POST",
            "/api/uploads",
            &[("upload-length", data.len().to_string()), ("upload-metadata", meta)],
            vec![],
        ))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let url = created.header("location").unwrap().to_owned();
    let mut id = None;
    for (n, chunk) in data.chunks(8 * MIB).enumerate() {
        let headers = [
            ("upload-offset", (n * 8 * MIB).to_string()),
            ("content-type", "application/offset+octet-stream".to_owned()),
        ];
        let reply = s.send(tus("PATCH", &url, &headers, chunk.to_vec())).await;
        assert_eq!(reply.status, 204, "{}", reply.text());
        id = reply.header("x-file-location").map(|l| l.trim_start_matches("/api/files/").to_owned());
    }
    let id = id.expect("the last PATCH names the file");
    assert_eq!(scan_state(&s, &ada, &id).await.0, "pending");
    assert_eq!(s.state.domain.scan_waiting().await.unwrap(), 1);
    assert_eq!(scan_state(&s, &ada, &id).await, ("infected".into(), Some(MARKER_SIGNATURE.into())));
}

/// Fail closed: with clamd down a new file stays pending and its download answers 503; when
/// clamd comes back, the server's own loop scans and promotes it, with no one acting.
#[tokio::test]
async fn with_clamd_down_files_wait_and_are_promoted_once_it_is_back() {
    let mut clamd = Clamd::start(64 * MIB as u64).await;
    clamd.stop();
    let s = scanning_server(&clamd, &[("scan_timeout", "2s")]).await;
    let scanning = tokio::spawn(s.state.domain.clone().scan_forever());
    let ada = s.user("ada", false, false).await;
    let bytes = pdf(20_000);
    let id = id_of(&upload(&s, &ada, "notes.pdf", &bytes).await);
    let download = format!("/files/{id}/download");
    eventually("the download answers 503 once the scan failed", || async {
        s.get(&download, &Auth::Bearer(&ada)).await.status == 503
    })
    .await;
    let reply = s.get(&download, &Auth::Bearer(&ada)).await;
    assert!(reply.text().contains("scanner is unavailable"), "{}", reply.text());
    assert!(reply.header("retry-after").is_some());
    assert_eq!(scan_state(&s, &ada, &id).await.0, "pending");

    clamd.restart().await;
    eventually("the file is promoted by the scanning loop", || async { scan_state(&s, &ada, &id).await.0 == "clean" })
        .await;
    let reply = s.get(&download, &Auth::Bearer(&ada)).await;
    assert!(reply.status == 200 && reply.body == bytes);
    scanning.abort();
}

/// Past `scan_max_size`: refused at upload (`reject`, the default), or kept and served as not
/// scanned (`unscanned`) — never passed as clean. A limit clamd enforces below ours is caught
/// too: with `reject` such a file is refused service, not served.
#[tokio::test]
async fn files_larger_than_the_scanner_takes_are_rejected_or_marked_unscanned() {
    let clamd = Clamd::start(MIB as u64).await;
    let big = pdf(2 * MIB);

    let s = scanning_server(&clamd, &[("scan_max_size", "1MiB")]).await;
    let ada = s.user("ada", false, false).await;
    let refused = s.upload("/api/files", &Auth::Bearer(&ada), &[], "big.pdf", &big).await;
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert!(stored_files(&s).is_empty());

    let s = scanning_server(&clamd, &[("scan_max_size", "1MiB"), ("scan_oversize", "unscanned")]).await;
    let ada = s.user("ada", false, false).await;
    let file = upload(&s, &ada, "big.pdf", &big).await;
    assert_eq!(file["scan"], "unscanned");
    assert!(file["scan_detail"].as_str().unwrap().contains("larger than the virus scanner takes"), "{file}");
    assert_eq!(s.get(&format!("/files/{}/download", id_of(&file)), &Auth::Bearer(&ada)).await.status, 200);

    // scan_max_size set above clamd's StreamMaxLength: clamd says "too large".
    for (oversize, state, status) in [("reject", "refused", 403), ("unscanned", "unscanned", 200)] {
        let s = scanning_server(&clamd, &[("scan_max_size", "4MiB"), ("scan_oversize", oversize)]).await;
        let ada = s.user("ada", false, false).await;
        let id = id_of(&upload(&s, &ada, "big.pdf", &big).await);
        assert_eq!(s.state.domain.scan_waiting().await.unwrap(), 1);
        assert_eq!(scan_state(&s, &ada, &id).await.0, state, "{oversize}");
        assert_eq!(s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await.status, status, "{oversize}");
    }
}

/// `scan_infected = "delete"`: the bytes go, the record stays as the owner's notice, and the
/// file no longer counts against the quota.
#[tokio::test]
async fn an_infected_file_can_be_deleted_at_once_leaving_its_owner_a_notice() {
    let clamd = Clamd::start(MIB as u64).await;
    let s = scanning_server(&clamd, &[("scan_max_size", "1MiB"), ("scan_infected", "delete")]).await;
    let ada = s.user("ada", false, false).await;
    let clean = id_of(&upload(&s, &ada, "ok.pdf", &pdf(1000)).await);
    let infected = id_of(&upload(&s, &ada, "eicar.txt", EICAR).await);
    assert_eq!(stored_files(&s).len(), 2);
    assert_eq!(s.state.domain.scan_waiting().await.unwrap(), 2);
    assert_eq!(scan_state(&s, &ada, &clean).await.0, "clean");
    assert_eq!(scan_state(&s, &ada, &infected).await.0, "removed");
    assert_eq!(stored_files(&s).len(), 1, "the infected bytes are deleted");
    let usage = s.get("/api/usage", &Auth::Bearer(&ada)).await.json();
    assert_eq!((usage["used_bytes"].as_i64(), usage["used_files"].as_i64()), (Some(1000), Some(1)), "{usage}");
    let reply = s.get(&format!("/files/{infected}/download"), &Auth::Bearer(&ada)).await;
    assert_eq!(reply.status, 403);
    assert!(reply.text().contains("has been deleted"), "{}", reply.text());
    let delete = Request::delete(format!("/api/files/{infected}"))
        .header("authorization", format!("Bearer {ada}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.send(delete).await.status, 204, "the notice can be dismissed");
}

/// With nginx delivery a pending file is not handed off: the hold answers before the delivery.
#[tokio::test]
async fn a_pending_file_is_not_handed_to_nginx() {
    let clamd = Clamd::start(MIB as u64).await;
    let s = scanning_server(&clamd, &[("scan_max_size", "1MiB"), ("delivery", "nginx")]).await;
    let ada = s.user("ada", false, false).await;
    let id = id_of(&upload(&s, &ada, "a.pdf", &pdf(1000)).await);
    let reply = s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await;
    assert_eq!((reply.status.as_u16(), reply.header("x-accel-redirect")), (423, None));
    s.state.domain.scan_waiting().await.unwrap();
    let reply = s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-accel-redirect").is_some());
}
