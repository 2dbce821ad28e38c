//! The caches of the per-request reads (token, session, record) never keep alive what was
//! taken away: a revoked token, an ended session, a deleted file and a revoked share link are
//! refused at the very next request by the instance that took them away, and within a second
//! by another instance (PostgreSQL) or process (the CLI on the same SQLite file) — while the
//! caches demonstrably answer the requests before.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use private_storage_server::AppState;

use crate::common::{Auth, TestServer, pdf, server};

/// What another instance or process may take to see a change.
const ACROSS: Duration = Duration::from_secs(1);

/// An instance serving on a real socket (so its caches are on: only a serving process
/// follows changes).
struct Served {
    base: String,
    state: AppState,
}

async fn serve(s: &TestServer) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(private_storage_server::serve(s.state.clone(), listener, std::future::pending()));
    Served { base, state: s.state.clone() }
}

impl Served {
    async fn get(&self, path: &str, auth: &Auth<'_>) -> (u16, Vec<u8>) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        request = match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Cookie(cookie) => request.header("cookie", *cookie),
        };
        let reply = request.send().await.unwrap();
        (reply.status().as_u16(), reply.bytes().await.unwrap().to_vec())
    }

    fn hits(&self) -> u64 {
        self.state.db.cache_stats().0
    }

    /// Asks until the caches answer: a serving instance's watcher takes its lease within
    /// a poll of starting.
    async fn warm(&self, path: &str, auth: &Auth<'_>, body: &[u8]) {
        let deadline = Instant::now() + ACROSS;
        loop {
            let before = self.hits();
            let (status, got) = self.get(path, auth).await;
            assert_eq!((status, got.as_slice()), (200, body), "{path}");
            if self.hits() > before {
                return;
            }
            assert!(Instant::now() < deadline, "{path}: no request was answered from the caches");
            tokio::task::yield_now().await;
        }
    }
}

/// Asks `reader` until it refuses (anything but the file's bytes), within `bound`; the
/// refusal's status.
async fn refused_within(reader: &Served, bound: Duration, path: &str, auth: &Auth<'_>, body: &[u8]) -> u16 {
    let start = Instant::now();
    loop {
        let (status, got) = reader.get(path, auth).await;
        if status != 200 {
            assert_ne!(got.as_slice(), body, "{path}: the bytes went with the refusal");
            return status;
        }
        assert_eq!(got.as_slice(), body);
        assert!(
            start.elapsed() <= bound,
            "{path} was still served {:?} after it was taken away on {} (bound {bound:?})",
            start.elapsed(),
            if bound.is_zero() { "this instance" } else { "another" },
        );
        tokio::task::yield_now().await;
    }
}

async fn upload(s: &TestServer, token: &str, bytes: &[u8]) -> String {
    let reply = s.upload("/api/files", &Auth::Bearer(token), &[], "report.pdf", bytes).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().unwrap().to_owned()
}

async fn send(s: &TestServer, method: &str, uri: &str, token: &str, json: Option<&str>) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(json.unwrap_or_default().to_owned()))
        .unwrap();
    s.send(request).await.status.as_u16()
}

/// Takes each of the four away on `writer` and checks every reader: each was answered from
/// its caches before, each refuses within its bound after.
async fn each_revocation_is_seen(writer: &TestServer, readers: &[(&Served, Duration)]) {
    let token = writer.user("ada", false, false).await;
    let other = writer.user("bob", false, false).await;
    let bytes = pdf(4096);
    let id = upload(writer, &token, &bytes).await;
    let spare = upload(writer, &token, &bytes).await;
    let session = writer.login("ada").await;
    let reply = writer
        .send(
            Request::post(format!("/api/files/{id}/links"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let json = reply.json();
    let url = json["url"].as_str().unwrap();
    let link = &url[url.find("/s/").unwrap()..];
    let link_id = json["link_id"].as_str().unwrap().to_owned();
    let download = format!("/files/{id}/download");
    let spare_download = format!("/files/{spare}/download");
    let (bearer, cookie) = (Auth::Bearer(&token), Auth::Cookie(&session.cookie));
    for (reader, _) in readers {
        reader.warm(&download, &bearer, &bytes).await;
        reader.warm(&download, &cookie, &bytes).await;
        reader.warm(&spare_download, &bearer, &bytes).await;
        assert_eq!(reader.get(link, &Auth::None).await, (200, bytes.clone()));
        let (status, got) = reader.get(&download, &Auth::Bearer(&other)).await;
        assert!(status == 403 && got != bytes, "another user's file: {status}");
    }

    // The session ends.
    let logout = writer.form("/logout", &cookie, &[("csrf", &session.csrf)]).await;
    assert_eq!(logout.status, 303);
    for (reader, bound) in readers {
        refused_within(reader, *bound, &download, &cookie, &bytes).await;
        assert_eq!(reader.get(&download, &bearer).await.0, 200, "the token still works");
    }
    // The share link is revoked.
    assert_eq!(send(writer, "DELETE", &format!("/api/links/{link_id}"), &token, None).await, 204);
    for (reader, bound) in readers {
        refused_within(reader, *bound, link, &Auth::None, &bytes).await;
    }
    // The file is deleted.
    assert_eq!(send(writer, "DELETE", &format!("/api/files/{id}"), &token, None).await, 204);
    for (reader, bound) in readers {
        // Denied as an unknown id is (403), or — within the bound, on a record not yet seen
        // gone — 404 for the bytes that went with it.
        let status = refused_within(reader, *bound, &download, &bearer, &bytes).await;
        assert!(status == 403 || (status == 404 && !bound.is_zero()), "{status}");
        assert_eq!(reader.get(&spare_download, &bearer).await.0, 200, "the other file is still served");
    }
    // The token is revoked.
    writer.state.domain.revoke_tokens("ada", Some("test")).await.unwrap();
    for (reader, bound) in readers {
        assert_eq!(refused_within(reader, *bound, &spare_download, &bearer, &bytes).await, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite_every_revocation_is_refused_at_the_next_request() {
    let s = server(&[]).await;
    let served = serve(&s).await;
    each_revocation_is_seen(&s, &[(&served, Duration::ZERO)]).await;
}

/// An operator's command in another process (the CLI on the same SQLite file) is seen by the
/// running server within a second: a revoked token, a removed file, a changed password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite_the_cli_in_another_process_is_seen_within_a_second() {
    let s = server(&[]).await;
    let served = serve(&s).await;
    let token = s.user("ada", false, false).await;
    let bytes = pdf(4096);
    let id = upload(&s, &token, &bytes).await;
    let spare = upload(&s, &token, &bytes).await;
    let session = s.login("ada").await;
    let (download, spare_download) = (format!("/files/{id}/download"), format!("/files/{spare}/download"));
    let (bearer, cookie) = (Auth::Bearer(&token), Auth::Cookie(&session.cookie));
    served.warm(&download, &bearer, &bytes).await;
    served.warm(&spare_download, &cookie, &bytes).await;
    let data = s.dir.path().join("data");

    cli(&data, &["rm", &id]);
    let status = refused_within(&served, ACROSS, &download, &bearer, &bytes).await;
    assert!(status == 403 || status == 404, "{status}");
    cli(&data, &["token", "revoke", "ada", "--name", "test"]);
    assert_eq!(refused_within(&served, ACROSS, &spare_download, &bearer, &bytes).await, 401);
    // A new password ends the user's sessions.
    served.warm(&spare_download, &cookie, &bytes).await;
    let mut passwd = std::process::Command::new(env!("CARGO_BIN_EXE_private-storage"))
        .arg("--data-dir")
        .arg(&data)
        .args(["user", "passwd", "ada", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut passwd.stdin.take().unwrap(), b"a brand new password\n").unwrap();
    assert!(passwd.wait().unwrap().success());
    refused_within(&served, ACROSS, &spare_download, &cookie, &bytes).await;
}

fn cli(data: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_private-storage"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgresql_another_instance_refuses_within_a_second() {
    let pg = crate::common::peers::Postgres::start();
    let media = tempfile::tempdir().unwrap();
    let storage = media.path().display().to_string();
    let keys = format!("k1={}", "A".repeat(43));
    let settings = [("database_url", pg.url.as_str()), ("storage", storage.as_str()), ("share_keys", keys.as_str())];
    let (a, b) = (server(&settings).await, server(&settings).await);
    let (served_a, served_b) = (serve(&a).await, serve(&b).await);
    each_revocation_is_seen(&a, &[(&served_a, Duration::ZERO), (&served_b, ACROSS)]).await;
}
