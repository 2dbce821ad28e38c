//! Headless Chromium (Debian's) through the server's pages, driven by playwright-core from
//! `tests/node/flow.mjs`: log in, upload and watch the file appear, the size-limit message,
//! download and compare bytes, log out and be denied. The screenshot is kept in
//! `target/artifacts/server-browser.png`.
use crate::common;

use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_uploads_downloads_and_logs_out_in_chromium() {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        scripts.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: scripts/test.sh runs `npm ci` in {}",
        scripts.display()
    );
    let s = common::server(&[("max_file_size", "64KiB")]).await;
    s.user("ada", false, false).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(private_storage_server::serve(s.state.clone(), listener, std::future::pending()));

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("server-browser.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = tokio::process::Command::new("node")
        .current_dir(&scripts)
        .arg("flow.mjs")
        .arg(format!("http://{addr}"))
        .args(["ada", "password-ada", &(64 * 1024).to_string()])
        .arg(&screenshot)
        .output()
        .await
        .expect("node runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("browser flow: ok"), "{text}");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000), "the screenshot was kept");
    // What the browser did is what the server holds.
    let (files, total) = s.state.db.files(None, 10, 0).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(files[0].file.name, "Quartalsbericht März.pdf");
}

/// Binds `addr` (port 0 for any), reusable at once after a server on it stopped.
fn listen(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(1024).unwrap()
}

/// Two files dropped on the page upload through tus; the server is stopped and started again
/// (a new process's state from the same data folder) while both are under way; both complete
/// with the bytes the browser had. Screenshots: `server-resume-uploading.png`, `server-resume.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dropped_files_resume_after_a_server_restart_in_chromium() {
    use tokio::io::AsyncBufReadExt;
    const SIZE: u64 = 12 * 1024 * 1024;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = || {
        let flags = [("data_dir", data.display().to_string()), ("shutdown_grace", "1s".to_owned())];
        let flags: Vec<_> = flags.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        private_storage_server::Loader::new().flags(&flags).unwrap().build().unwrap()
    };
    let state = private_storage_server::AppState::build(config()).await.unwrap();
    let hash = private_storage_server::domain::hash_password("password-ada");
    state.db.create_user("ada", &hash, false, false).await.unwrap();
    let listener = listen("127.0.0.1:0".parse().unwrap());
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(private_storage_server::serve(state, listener, async {
        let _ = stopped.await;
    }));

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("server-resume.png");
    let mut node = tokio::process::Command::new("node")
        .current_dir(&scripts)
        .arg("resume.mjs")
        .arg(format!("http://{addr}"))
        .args(["ada", "password-ada", &SIZE.to_string()])
        .arg(&screenshot)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let bound = std::time::Duration::from_secs(120); // turns a hang into a failure; never a pause
    let mut sent = Vec::new();
    tokio::time::timeout(bound, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(file) = line.strip_prefix("file ") {
                sent.push(file.split_once(' ').map(|(sha, name)| (name.to_owned(), sha.to_owned())).unwrap());
            }
            if line == "halfway" {
                return;
            }
        }
        panic!("the page never got halfway: {sent:?}");
    })
    .await
    .expect("halfway in time");

    // Stop the server mid-upload: both uploads are unfinished, part of their bytes kept.
    stop.send(()).unwrap();
    first.await.unwrap().unwrap();
    let partial: Vec<u64> = std::fs::read_dir(data.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().contains('.'))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(partial.len(), 2, "two unfinished uploads when the server stopped: {partial:?}");
    assert!(partial.iter().all(|&n| n > 0 && n < SIZE), "each part-way: {partial:?}");

    // Start again, from the same data folder, on the same address.
    let state = private_storage_server::AppState::build(config()).await.unwrap();
    tokio::spawn(private_storage_server::serve(state.clone(), listen(addr), std::future::pending()));
    let rest = tokio::time::timeout(bound, async {
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push(line);
        }
        rest
    })
    .await
    .expect("the page finishes");
    let status = node.wait().await.unwrap();
    assert!(status.success() && rest.iter().any(|l| l == "resume flow: ok"), "{rest:?}");
    let (files, total) = state.db.files(None, 10, 0).await.unwrap();
    assert_eq!(total, 2);
    let mut stored: Vec<(String, String)> =
        files.iter().map(|f| (f.file.name.clone(), f.file.sha256.clone())).collect();
    stored.sort();
    sent.sort();
    assert_eq!(stored, sent, "the stored files are the browser's");
}

/// A password link and a file request in Chromium (`tests/node/links.mjs`): the password form,
/// the preview, the download compared byte for byte, a fresh browser refused the copied byte
/// URL; an uploader sending a file. Screenshots: `link-locked.png`, `link-page.png`,
/// `request-page.png`, `request-sent.png` in `target/artifacts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_link_and_a_file_request_in_chromium() {
    use axum::body::Body;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let s = common::server(&[]).await;
    let ada = s.user("ada", false, false).await;
    // A 2×2 PNG, so that the preview has something to show.
    let png: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1,
        8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0, 1, 0, 0, 5,
        0, 1, 0x0d, 0x0a, 0x2d, 0xb4, 0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    let id = s.upload("/api/files", &common::Auth::Bearer(&ada), &[], "dot.png", png).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let json = |uri: String, body: &str| {
        http::Request::post(uri)
            .header("authorization", format!("Bearer {ada}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let link = s.send(json(format!("/api/files/{id}/links"), r#"{"password":"correct horse"}"#)).await.json();
    let request = s.send(json("/api/requests".into(), r#"{"title":"Receipts for March"}"#)).await.json();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(private_storage_server::serve(s.state.clone(), listener, std::future::pending()));

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let files = tempfile::tempdir().unwrap();
    let (expected, receipt) = (files.path().join("dot.png"), files.path().join("receipt.pdf"));
    std::fs::write(&expected, png).unwrap();
    std::fs::write(&receipt, common::pdf(5_000)).unwrap();
    for shot in ["link-locked.png", "link-page.png", "request-page.png", "request-sent.png"] {
        let _ = std::fs::remove_file(artifacts.join(shot));
    }
    let out = tokio::process::Command::new("node")
        .current_dir(&scripts)
        .arg("links.mjs")
        .arg(format!("http://{addr}"))
        .arg(link["url"].as_str().unwrap())
        .arg("correct horse")
        .arg(&expected)
        .arg(request["url"].as_str().unwrap())
        .arg(&receipt)
        .arg(&artifacts)
        .output()
        .await
        .expect("node runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("links flow: ok"), "{text}");
    for shot in ["link-locked.png", "link-page.png", "request-page.png", "request-sent.png"] {
        assert!(std::fs::metadata(artifacts.join(shot)).is_ok_and(|m| m.len() > 1000), "{shot} was kept");
    }
    let requests = s.get("/api/requests", &common::Auth::Bearer(&ada)).await.json();
    assert_eq!(requests["requests"][0]["uploads"][0]["uploader_name"], "Grace Hopper", "{requests}");
}
