//! Real tus clients against the running server: tus-js-client (Node) and tuspy (Python) upload a
//! 256 MiB random file in 8 MiB chunks, are killed with SIGKILL at ~40 %, and a fresh process
//! resumes from the URL the first one stored; the stored file is the source, byte for byte. And
//! the official Node tus server (`@tus/server` + `@tus/file-store`) as a differential oracle: one
//! scripted request sequence against both gives the same statuses and protocol headers. And
//! behind nginx capping request bodies at 1 MiB: tus gets through in smaller chunks, a plain
//! multipart upload gets a JSON 413.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::Digest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::{TestServer, server};

const SIZE: u64 = 256 * 1024 * 1024;
const CHUNK: u64 = 8 * 1024 * 1024;
/// Turns a hang into a failure; never a pause.
const BOUND: Duration = Duration::from_secs(300);

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// A server on loopback with room for the file; its address and a user's token.
async fn running() -> (TestServer, String, std::net::SocketAddr) {
    let s = server(&[("max_file_size", "300MiB")]).await;
    let token = s.user("ada", false, false).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(private_storage_server::serve(s.state.clone(), listener, std::future::pending()));
    (s, token, addr)
}

/// `len` pseudo-random bytes written to `path`; their SHA-256.
fn random_file(path: &Path, len: u64) -> String {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1024 * 1024];
    for _ in 0..len / block.len() as u64 {
        for word in block.chunks_mut(8) {
            // xorshift64*: incompressible enough that nothing can take a shortcut.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        hasher.update(&block);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes a line `accepted <n>` reports.
fn accepted(line: &str) -> Option<u64> {
    line.strip_prefix("accepted ").and_then(|n| n.trim().parse().ok())
}

/// Runs `command` until it reports `at` bytes accepted, then kills it (SIGKILL); returns what
/// it reported last.
async fn kill_at(mut command: Command, at: u64) -> u64 {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let reached = tokio::time::timeout(BOUND, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(n) = accepted(&line).filter(|&n| n >= at) {
                return n;
            }
        }
        panic!("the client ended before {at} bytes");
    })
    .await
    .expect("the client got on");
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed, not finished");
    reached
}

/// Runs `command` to its end; its output lines.
async fn run(mut command: Command) -> Vec<String> {
    let out = tokio::time::timeout(BOUND, command.kill_on_drop(true).output()).await.expect("it ends").unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text.lines().map(str::to_owned).collect()
}

/// The one stored file: its record's SHA-256 and the SHA-256 of its bytes on disk.
async fn stored(s: &TestServer) -> (String, String) {
    let (files, total) = s.state.db.files(None, 10, 0).await.unwrap();
    assert_eq!(total, 1, "one file");
    let path = s.dir.path().join("data/media").join(&files[0].file.object_key);
    let bytes = tokio::fs::read(&path).await.unwrap();
    assert_eq!(bytes.len() as u64, SIZE);
    (files[0].file.sha256.clone(), hex(&sha2::Sha256::digest(&bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_killed_at_40_percent_resumes_in_a_fresh_process() {
    let scripts = peers().join("node");
    assert!(scripts.join("node_modules/tus-js-client").is_dir(), "scripts/test.sh runs `npm ci` in {scripts:?}");
    let (s, token, addr) = running().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("big.bin");
    let digest = random_file(&source, SIZE);
    let store = work.path().join("urls.json");
    let client = || {
        let mut c = Command::new("node");
        c.current_dir(&scripts).arg("tus-upload.mjs").arg(format!("http://{addr}/api/uploads")).arg(&token);
        c.arg(&source).arg(&store).arg(CHUNK.to_string());
        c
    };
    let before = kill_at(client(), SIZE * 2 / 5).await;
    assert_eq!(s.state.db.files(None, 10, 0).await.unwrap().1, 0, "nothing is a file yet");

    let lines = run(client()).await;
    assert!(lines.iter().any(|l| l.starts_with("resuming http://")), "{lines:?}");
    let first = lines.iter().find_map(|l| accepted(l)).expect("chunks after resuming");
    assert!(first > before, "resumed after the {before} bytes acknowledged before the kill, not from 0: {first}");
    assert!(lines.iter().any(|l| l.starts_with("done ")), "{lines:?}");
    assert_eq!(stored(&s).await, (digest.clone(), digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_killed_at_40_percent_resumes_in_a_fresh_process() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(python.exists(), "scripts/test.sh installs tuspy into {python:?}");
    let (s, token, addr) = running().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("big.bin");
    let digest = random_file(&source, SIZE);
    let store = work.path().join("urls.json");
    let client = || {
        let mut c = Command::new(&python);
        c.arg(peers().join("python/tus_upload.py")).arg(format!("http://{addr}/api/uploads")).arg(&token);
        c.arg(&source).arg(&store).arg(CHUNK.to_string());
        c
    };
    let before = kill_at(client(), SIZE * 2 / 5).await;
    let lines = run(client()).await;
    let start: u64 = lines[0].strip_prefix("start ").and_then(|n| n.parse().ok()).expect("the start line");
    assert!(start >= before, "resumed from the server's offset {start}, at least the {before} acknowledged");
    assert!(lines.iter().any(|l| l.starts_with("done ")), "{lines:?}");
    assert_eq!(stored(&s).await, (digest.clone(), digest));
}

/// What one step of the scripted sequence saw: the status and the protocol's headers.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    step: &'static str,
    status: u16,
    headers: Vec<(&'static str, Option<String>)>,
}

/// The headers compared. `Upload-Expires` is compared for its presence (the clocks differ),
/// and only where the specification requires it — creation and a `PATCH` that leaves the
/// upload unfinished: we send it on `HEAD` and on the last `PATCH` too.
const COMPARED: [&str; 4] = ["tus-resumable", "upload-offset", "upload-length", "upload-defer-length"];

/// The steps whose answers must carry `Upload-Expires` (tus §Expiration).
const EXPIRING: [&str; 6] = ["create", "patch 1", "patch 2", "patch 3", "create deferred", "deferred patch"];

/// Runs the scripted sequence against the tus endpoint `endpoint`.
async fn sequence(endpoint: &str, token: &str) -> Vec<Seen> {
    let http = reqwest::Client::new();
    let part = crate::common::pdf(100_000);
    let mut seen = Vec::new();
    let request = |method: &str, url: &str| {
        http.request(method.parse().unwrap(), url)
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {token}"))
    };
    let bytes = |r: reqwest::RequestBuilder, offset: usize, body: &[u8]| {
        r.header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(body.to_vec())
    };
    macro_rules! step {
        ($name:literal, $request:expr) => {{
            let r = $request.send().await.unwrap();
            let value = |h: &str| r.headers().get(h).map(|v| v.to_str().unwrap().to_owned());
            let mut headers: Vec<_> = COMPARED.iter().map(|h| (*h, value(h))).collect();
            if EXPIRING.contains(&$name) {
                headers.push(("upload-expires (present)", value("upload-expires").map(|_| "yes".to_owned())));
            }
            if $name == "options" {
                headers.push(("tus-version", value("tus-version")));
            }
            let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
            seen.push(Seen { step: $name, status: r.status().as_u16(), headers });
            location
        }};
    }
    let url = |location: Option<String>| {
        let location = location.expect("a Location");
        if location.starts_with("http") { location } else { format!("{}{location}", origin(endpoint)) }
    };
    step!("options", http.request(reqwest::Method::OPTIONS, endpoint));
    let meta = "filename YS5wZGY=";
    let upload = url(step!(
        "create",
        request("POST", endpoint).header("upload-length", "400000").header("upload-metadata", meta)
    ));
    step!("patch 1", bytes(request("PATCH", &upload), 0, &part));
    step!("patch 2", bytes(request("PATCH", &upload), 100_000, &part));
    step!("patch 3", bytes(request("PATCH", &upload), 200_000, &part));
    step!("head", request("HEAD", &upload));
    step!("wrong offset", bytes(request("PATCH", &upload), 100_000, &part));
    let json = request("PATCH", &upload).header("upload-offset", "300000").header("content-type", "application/json");
    step!("wrong type", json.body(part.clone()));
    step!("no version", bytes(http.patch(&upload), 300_000, &part).header("authorization", format!("Bearer {token}")));
    step!("delete", request("DELETE", &upload));
    step!("head after delete", request("HEAD", &upload));
    let deferred = url(step!(
        "create deferred",
        request("POST", endpoint).header("upload-defer-length", "1").header("upload-metadata", meta)
    ));
    step!("deferred patch", bytes(request("PATCH", &deferred), 0, &part));
    step!("deferred head", request("HEAD", &deferred));
    step!("deferred last patch", bytes(request("PATCH", &deferred), 100_000, &part).header("upload-length", "200000"));
    step!("head when complete", request("HEAD", &deferred));
    seen
}

fn origin(endpoint: &str) -> &str {
    let after_scheme = endpoint.find("://").unwrap() + 3;
    &endpoint[..after_scheme + endpoint[after_scheme..].find('/').unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_requests_get_the_same_answers_as_from_the_official_tus_server() {
    let scripts = peers().join("node");
    let store = tempfile::tempdir().unwrap();
    let mut reference = Command::new("node")
        .current_dir(&scripts)
        .arg("tus-reference.mjs")
        .arg(store.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reference.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(BOUND, lines.next_line()).await.expect("it starts").unwrap().unwrap();
    let port: u16 = line.strip_prefix("listening ").and_then(|p| p.parse().ok()).expect("its port");

    let (_s, token, addr) = running().await;
    let ours = sequence(&format!("http://{addr}/api/uploads"), &token).await;
    let theirs = sequence(&format!("http://127.0.0.1:{port}/files"), &token).await;
    // Where the reference departs from the specification, ours follows the specification.
    let by_spec = |seen: &Seen| SPEC_OVER_REFERENCE.iter().find(|(step, ..)| *step == seen.step);
    for seen in &ours {
        if let Some((step, status, why)) = by_spec(seen) {
            assert_eq!(seen.status, *status, "{step}: {why}");
        }
    }
    let differences: Vec<String> = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| a.headers != b.headers || (a.status != b.status && by_spec(a).is_none()))
        .map(|(a, b)| {
            format!("{}:\n  ours:   {} {:?}\n  theirs: {} {:?}", a.step, a.status, a.headers, b.status, b.headers)
        })
        .collect();
    assert!(differences.is_empty(), "{} steps differ:\n{}", differences.len(), differences.join("\n"));
    assert_eq!(ours.len(), 16);

    // Checksums, which the reference does not implement (it keeps a body whatever its
    // checksum), against the specification: 460, and nothing of the body kept.
    let http = reqwest::Client::new();
    let endpoint = format!("http://{addr}/api/uploads");
    let tus = |method: reqwest::Method, url: &str| {
        http.request(method, url).header("tus-resumable", "1.0.0").header("authorization", format!("Bearer {token}"))
    };
    let created = tus(reqwest::Method::POST, &endpoint).header("upload-length", "1000").send().await.unwrap();
    let upload = format!("http://{addr}{}", created.headers()["location"].to_str().unwrap());
    let body = crate::common::pdf(500);
    let wrong = tus(reqwest::Method::PATCH, &upload)
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-checksum", "sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 460, "tus §Checksum: 460 Checksum Mismatch");
    let head = tus(reqwest::Method::HEAD, &upload).send().await.unwrap();
    assert_eq!(head.headers()["upload-offset"], "0", "the mismatched body was not kept");
}

/// Steps where `@tus/server` departs from the specification: the status ours answers, and why.
const SPEC_OVER_REFERENCE: [(&str, u16, &str); 1] = [(
    "wrong type",
    415,
    "tus §PATCH: a body of another type SHOULD get 415 Unsupported Media Type (@tus/server answers 400)",
)];

/// The README's advice for a proxy that caps request bodies: nginx answers its own 413 as the
/// JSON error the pages show.
const JSON_413: &str = r#"error_page 413 /too-large.json;
        location = /too-large.json {
            internal;
            default_type application/json;
            return 413 '{"error": "The request is larger than the proxy in front of the server accepts."}';
        }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_capping_bodies_at_1m_tus_gets_through_in_small_chunks() {
    let scripts = peers().join("node");
    let (s, token, addr) = running().await;
    let nginx_dir = tempfile::tempdir().unwrap();
    let port = test_support::free_port();
    let _nginx = test_support::nginx(
        nginx_dir.path(),
        port,
        &format!(
            "        client_max_body_size 1m;\n        {JSON_413}\n        location / {{ proxy_pass http://{addr}; proxy_set_header Host $host; proxy_request_buffering off; }}"
        ),
    );
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("big.bin");
    let size = 50 * 1024 * 1024;
    let digest = random_file(&source, size);
    let mut client = Command::new("node");
    client.current_dir(&scripts).arg("tus-upload.mjs").arg(format!("http://127.0.0.1:{port}/api/uploads"));
    client.arg(&token).arg(&source).arg(work.path().join("urls.json")).arg((512 * 1024).to_string());
    let lines = run(client).await;
    assert!(lines.iter().any(|l| l.starts_with("done ")), "{lines:?}");
    let (files, _) = s.state.db.files(None, 10, 0).await.unwrap();
    assert_eq!((files[0].file.size as u64, files[0].file.sha256.as_str()), (size, digest.as_str()));

    // The same file as one multipart request: nginx refuses it, in the server's JSON.
    let part = reqwest::multipart::Part::file(&source).await.unwrap();
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/files"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    assert_eq!(refused.headers()["content-type"], "application/json");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("larger than the proxy"), "{body}");
}
