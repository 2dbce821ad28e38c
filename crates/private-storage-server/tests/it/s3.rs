//! The server on S3 (Garage): the presigned-redirect delivery, and the S3 server going away
//! under it — a download in flight is aborted (never a clean short 200), readiness reports it,
//! an upload in flight fails without a record and leaves no multipart parts once S3 is back,
//! and everything works again after the restart.
use crate::common;
use crate::common::peers;

use std::time::Duration;

use crate::common::{pdf, sha256};
use private_storage_server::{AppState, Loader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn ready(base: &str) -> u16 {
    reqwest::get(format!("{base}/readyz")).await.unwrap().status().as_u16()
}

/// The server on the Garage node `node` (`s3://media/files`, `conditional_writes = false`, as
/// `check` requires on Garage), with `extra` settings; its data folder lives in `dir`.
async fn on_garage(node: &peers::GarageNode, dir: &std::path::Path, extra: &[(&str, &str)]) -> AppState {
    let mut flags: Vec<(String, String)> = [
        ("data_dir", dir.display().to_string()),
        ("storage", "s3://media/files".to_owned()),
        ("s3.endpoint", node.endpoint.clone()),
        ("s3.region", "garage".to_owned()),
        ("s3.access_key_id", peers::ACCESS_KEY.to_owned()),
        ("s3.secret_access_key", peers::SECRET_KEY.to_owned()),
        ("s3.conditional_writes", "false".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    flags.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    AppState::build(Loader::new().flags(&flags).unwrap().build().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_aborts_transfers_cleanly_and_the_server_recovers() {
    let mut garage = peers::GarageCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let state = on_garage(&garage.nodes[0], dir.path(), &[]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(private_storage_server::serve(state.clone(), listener, std::future::pending()));
    let base = format!("http://{addr}");
    let hash = private_storage_server::domain::hash_password("password-ada");
    let ada = state.db.create_user("ada", &hash, false, false).await.unwrap();
    let token = format!("ps_{}", private_storage_server::domain::random_token(32));
    state.db.create_token(&ada.id, "t", &private_storage_server::domain::sha256_hex(&token)).await.unwrap();
    let http = reqwest::Client::new();
    let upload = |bytes: Vec<u8>| {
        let part = reqwest::multipart::Part::bytes(bytes).file_name("big.pdf");
        http.post(format!("{base}/api/files"))
            .bearer_auth(&token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
    };
    let bytes = pdf(48 * 1024 * 1024);
    let reply = upload(bytes.clone()).await.unwrap();
    assert_eq!(reply.status(), 201);
    let id = reply.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(ready(&base).await, 200);

    // A download is under way (the client reads slowly) when S3 goes down.
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            format!("GET /files/{id}/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0usize;
    let mut head = Vec::new();
    while received < 1024 * 1024 {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0);
        if head.len() < 4096 {
            head.extend_from_slice(&buf[..n.min(4096)]);
        }
        received += n;
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains(&format!("content-length: {}", bytes.len())), "{head}");
    garage.nodes[0].stop();
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the download neither finished nor was aborted");
    assert!(
        received < bytes.len(),
        "the client saw an aborted transfer ({received} of {} bytes), not a whole file",
        bytes.len()
    );

    // Readiness says so; an upload fails with a clear status and leaves no record.
    assert_eq!(ready(&base).await, 503);
    let refused = upload(pdf(1000)).await.unwrap();
    assert!(refused.status().is_server_error(), "{}", refused.status());
    assert_eq!(state.db.files(None, 10, 0).await.unwrap().1, 1);

    // S3 comes back; an upload in flight when it goes down again fails and leaves no parts.
    garage.nodes[0].restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ready(&base).await != 200 {
        assert!(std::time::Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (content_type, body) = common::multipart(&[], "cut.pdf", &pdf(24 * 1024 * 1024));
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body[..18 * 1024 * 1024]).await.unwrap(); // two 8 MiB parts are under way
    garage.nodes[0].stop();
    let _ = socket.write_all(&body[18 * 1024 * 1024..]).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), socket.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(!response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(state.db.files(None, 10, 0).await.unwrap().1, 1, "no record of the failed upload");

    garage.nodes[0].restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while garage.nodes[0].unfinished_uploads("media").await != 0 {
        assert!(std::time::Instant::now() < deadline, "the interrupted multipart upload was never aborted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Everything works again.
    let got = http.get(format!("{base}/files/{id}/download")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&bytes));
    assert_eq!(upload(pdf(5000)).await.unwrap().status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_redirects_allowed_downloads_to_presigned_s3_urls() {
    let garage = peers::GarageCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let state =
        on_garage(&garage.nodes[0], dir.path(), &[("delivery", "s3-redirect"), ("s3.presign_expiry", "30s")]).await;
    let app = private_storage_server::app(state.clone());
    let s = common::TestServer { state, app, dir };
    let (ada, bob) = (s.user("ada", false, false).await, s.user("bob", false, false).await);
    let bytes = pdf(300_000);
    let id = s.upload("/api/files", &common::Auth::Bearer(&ada), &[], "Angebot.pdf", &bytes).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let denied = s.get(&format!("/files/{id}/download"), &common::Auth::Bearer(&bob)).await;
    assert_eq!(denied.status, 403);
    assert!(denied.header("location").is_none(), "no URL for a denied user");
    let reply = s.get(&format!("/files/{id}/download"), &common::Auth::Bearer(&ada)).await;
    assert_eq!(reply.status, 307);
    let location = reply.header("location").unwrap();
    assert!(location.starts_with(&garage.nodes[0].endpoint) && location.contains("X-Amz-Expires=30"), "{location}");
    let got = reqwest::get(location).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/pdf");
    assert_eq!(
        got.headers()["content-disposition"],
        "attachment; filename=\"Angebot.pdf\"; filename*=UTF-8''Angebot.pdf",
        "the bucket answers with the record's name, signed into the URL"
    );
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&bytes));
    // HEAD is answered by the server itself.
    let head = s
        .send(
            http::Request::head(format!("/files/{id}/download"))
                .header("authorization", format!("Bearer {ada}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((head.status.as_u16(), head.header("content-length")), (200, Some("300000")));
}

/// Garage ignores `If-None-Match`, so with `conditional_writes = false` the check before a
/// write is not atomic: ten uploads of one name at once must still each get a key of their own,
/// all succeed, and every record must point at its own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_name_to_s3_all_succeed_with_their_own_bytes() {
    let garage = peers::GarageCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let state = on_garage(&garage.nodes[0], dir.path(), &[("max_uploads_per_user", "16")]).await;
    let app = private_storage_server::app(state.clone());
    let s = std::sync::Arc::new(common::TestServer { state, app, dir });
    let ada = s.user("ada", false, false).await;
    let uploads: Vec<_> = (0..10)
        .map(|i| {
            let (s, ada) = (s.clone(), ada.clone());
            tokio::spawn(async move {
                let bytes = pdf(2000 + i);
                let reply = s.upload("/api/files", &common::Auth::Bearer(&ada), &[], "report.pdf", &bytes).await;
                (reply.status, reply.json(), bytes)
            })
        })
        .collect();
    for upload in uploads {
        let (status, json, bytes) = upload.await.unwrap();
        assert_eq!(status, 201, "{json}");
        let got =
            s.get(&format!("/files/{}/download", json["id"].as_str().unwrap()), &common::Auth::Bearer(&ada)).await;
        assert_eq!(got.status, 200, "a record whose object is gone");
        assert_eq!(sha256(&got.body), sha256(&bytes), "each record holds its own bytes");
    }
}
