//! The caches of the per-request reads (token, session, record) never keep alive what was
//! taken away: a revoked token, an ended session, a deleted file and a revoked share link are
//! refused at the very next request by the instance that took them away, and within a second
//! by another instance (PostgreSQL) or process (the CLI on the same SQLite file) — while the
//! caches demonstrably answer the requests before. The same holds for the bytes of small
//! files the storage's cache serves from memory (by record and by key), and for a file whose
//! key was rewrapped behind it.

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

    fn files_in_memory(&self) -> usize {
        self.state.db.file_cache_usage().expect("the storage's cache is on by default").0
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

async fn object_key(s: &TestServer, id: &str) -> String {
    let (files, _) = s.state.db.files(None, 100, 0).await.unwrap();
    files.into_iter().find(|f| f.file.id == id).unwrap().file.object_key
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
    let by_key = format!("/private-media/{}", object_key(writer, &id).await);
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
        assert_eq!(reader.files_in_memory(), 2, "both files' bytes are served from memory");
        reader.warm(&by_key, &bearer, &bytes).await;
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
        // By key, where no record is looked up: its bytes are not served from memory either.
        assert_eq!(refused_within(reader, *bound, &by_key, &bearer, &bytes).await, 404);
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
    let s = server(&[BY_KEY]).await;
    let served = serve(&s).await;
    each_revocation_is_seen(&s, &[(&served, Duration::ZERO)]).await;
}

/// An operator's command in another process (the CLI on the same SQLite file) is seen by the
/// running server within a second: a revoked token, a removed file, a changed password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite_the_cli_in_another_process_is_seen_within_a_second() {
    let s = server(&[BY_KEY]).await;
    let served = serve(&s).await;
    let token = s.user("ada", false, false).await;
    let bytes = pdf(4096);
    let id = upload(&s, &token, &bytes).await;
    let spare = upload(&s, &token, &bytes).await;
    let by_key = format!("/private-media/{}", object_key(&s, &id).await);
    let session = s.login("ada").await;
    let (download, spare_download) = (format!("/files/{id}/download"), format!("/files/{spare}/download"));
    let (bearer, cookie) = (Auth::Bearer(&token), Auth::Cookie(&session.cookie));
    served.warm(&download, &bearer, &bytes).await;
    served.warm(&spare_download, &cookie, &bytes).await;
    served.warm(&by_key, &bearer, &bytes).await;
    assert_eq!(served.files_in_memory(), 2);
    let metrics = String::from_utf8(served.get("/metrics", &Auth::None).await.1).unwrap();
    assert!(metrics.contains("\nprivate_storage_file_cache_files 2\n"), "{metrics}");
    let data = s.dir.path().join("data");

    cli(&data, &["rm", &id]);
    let status = refused_within(&served, ACROSS, &download, &bearer, &bytes).await;
    assert!(status == 403 || status == 404, "{status}");
    assert_eq!(refused_within(&served, ACROSS, &by_key, &bearer, &bytes).await, 404);
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

/// `/private-media/` open to any user, so that files are also served by key.
const BY_KEY: (&str, &str) = ("auth_function", "allow_authenticated");

fn cli(data: &Path, args: &[&str]) -> String {
    cli_with(data, args, &[])
}

fn cli_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_private-storage"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `keys rotate` in another process rewrites the key slots of files a live server serves from
/// memory: the server sends their new validators within a second, and the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite_a_key_rotation_in_another_process_is_seen_within_a_second() {
    let scratch = tempfile::tempdir().unwrap();
    let generate = |id: &str| cli(scratch.path(), &["keys", "generate", id]).trim().to_owned();
    let (k1, k2) = (generate("k1"), generate("k2"));
    let both = format!("{k2},{k1}");
    let s = server(&[("encryption", "on"), ("encryption_keys", both.as_str())]).await;
    let served = serve(&s).await;
    let token = s.user("ada", false, false).await;
    let data = s.dir.path().join("data");
    // Stored under k1 alone (before the server knew k2, say).
    let bytes = pdf(4096);
    let file = scratch.path().join("report.pdf");
    std::fs::write(&file, &bytes).unwrap();
    let encrypted = |args: &[&str], keys: &str| {
        let args: Vec<&str> = ["-s", "encryption=on"].iter().chain(args).copied().collect();
        cli_with(&data, &args, &[("PRIVATE_STORAGE_ENCRYPTION_KEYS", keys)])
    };
    let put = encrypted(&["put", file.to_str().unwrap(), "--owner", "ada"], &k1);
    let id = put.split('\t').next().unwrap().to_owned();
    // Written an hour ago: the rotation's write gives it new validators (whole seconds).
    let stored = data.join("media").join(object_key(&s, &id).await);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&stored).unwrap().set_modified(an_hour_ago).unwrap();
    let download = format!("/files/{id}/download");
    let bearer = Auth::Bearer(&token);
    served.warm(&download, &bearer, &bytes).await;
    assert_eq!(served.files_in_memory(), 1, "its bytes are served from memory");
    let etag = |served: &Served| {
        let (base, token) = (served.base.clone(), token.clone());
        let download = download.clone();
        async move {
            let reply =
                reqwest::Client::new().get(format!("{base}{download}")).bearer_auth(token).send().await.unwrap();
            let etag = reply.headers()["etag"].to_str().unwrap().to_owned();
            (etag, reply.bytes().await.unwrap().to_vec())
        }
    };
    let (before, got) = etag(&served).await;
    assert_eq!(got, bytes);

    let rotated = encrypted(&["keys", "rotate"], &both);
    assert!(rotated.contains("rewrapped 1 file(s)"), "{rotated}");
    let start = Instant::now();
    loop {
        let (now, got) = etag(&served).await;
        assert_eq!(got, bytes, "the content is the same");
        if now != before {
            break;
        }
        assert!(start.elapsed() <= ACROSS, "the old ETag was still sent {:?} after the rotation", start.elapsed());
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgresql_another_instance_refuses_within_a_second() {
    let pg = crate::common::peers::Postgres::start();
    let media = tempfile::tempdir().unwrap();
    let storage = media.path().display().to_string();
    let keys = format!("k1={}", "A".repeat(43));
    let settings =
        [("database_url", pg.url.as_str()), ("storage", storage.as_str()), ("share_keys", keys.as_str()), BY_KEY];
    let (a, b) = (server(&settings).await, server(&settings).await);
    let (served_a, served_b) = (serve(&a).await, serve(&b).await);
    each_revocation_is_seen(&a, &[(&served_a, Duration::ZERO), (&served_b, ACROSS)]).await;
}
