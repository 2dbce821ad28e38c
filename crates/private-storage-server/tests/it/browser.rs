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
