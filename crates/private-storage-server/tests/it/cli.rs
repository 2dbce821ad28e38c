//! The `private-storage` binary's operator commands, run as a user would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cli(data: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_private-storage"));
    command.arg("--data-dir").arg(data).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn users_tokens_and_files_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(
        failed(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("short\n"), &[]), 1)
            .contains("at least 8 characters")
    );
    assert!(
        ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("a long password\n"), &[]))
            .contains("created user ada")
    );
    assert!(
        failed(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("another password\n"), &[]), 1)
            .contains("exists already")
    );
    assert!(
        ok(&cli(&data, &["user", "add", "root", "--superuser", "--password-stdin"], Some("root password\n"), &[]))
            .contains("created superuser root")
    );
    let users = ok(&cli(&data, &["user", "list"], None, &[]));
    assert!(users.contains("ada\tuser") && users.contains("root\tsuperuser"), "{users}");
    let token = ok(&cli(&data, &["token", "create", "ada"], None, &[])).trim().to_owned();
    assert!(token.starts_with("ps_") && token.len() > 40, "{token}");
    let db = std::fs::read(data.join("private-storage.db")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()), "only the token's hash is stored");

    // put / ls / get / rm, through the upload policy.
    let original = [b"%PDF-1.7\n".as_slice(), &vec![b'z'; 100_000]].concat();
    let file = dir.path().join("Jahresbericht 2026.pdf");
    std::fs::write(&file, &original).unwrap();
    let put = ok(&cli(&data, &["put", file.to_str().unwrap(), "--owner", "ada"], None, &[]));
    let id = put.split('\t').next().unwrap().to_owned();
    assert!(put.contains("application/pdf") && put.contains("Jahresbericht 2026.pdf"), "{put}");
    let listing = ok(&cli(&data, &["ls"], None, &[]));
    assert!(listing.contains(&id) && listing.contains("\tada\t100009\t"), "{listing}");
    let out = dir.path().join("copy.pdf");
    ok(&cli(&data, &["get", &id, "-o", out.to_str().unwrap()], None, &[]));
    assert!(std::fs::read(&out).unwrap() == original);
    let exe = dir.path().join("invoice.pdf");
    std::fs::write(&exe, [b"MZ\x90\x00".as_slice(), &[0u8; 500]].concat()).unwrap();
    let refused = failed(&cli(&data, &["put", exe.to_str().unwrap(), "--owner", "ada"], None, &[]), 1);
    assert!(
        refused.contains("application/pdf") || refused.contains("not allowed") || refused.contains("type"),
        "{refused}"
    );
    assert!(
        failed(&cli(&data, &["put", file.to_str().unwrap()], None, &[]), 1).contains("--owner"),
        "two users: say whose"
    );

    // share / share revoke
    let link = ok(&cli(&data, &["share", &id, "--expires", "1h", "--attachment"], None, &[]));
    assert!(link.trim().starts_with("http://127.0.0.1:8000/s/"), "{link}");
    assert!(failed(&cli(&data, &["share", &id, "--expires", "30d"], None, &[]), 1).contains("at most"));

    ok(&cli(&data, &["rm", &id], None, &[]));
    assert!(!ok(&cli(&data, &["ls"], None, &[])).contains(&id));
    assert!(ok(&cli(&data, &["check"], None, &[])).contains("ready"));
    ok(&cli(&data, &["user", "passwd", "ada", "--password-stdin"], Some("a new password\n"), &[]));
    let db_url = format!("sqlite://{}", data.join("private-storage.db").display());
    let token_hash = private_storage_server::domain::sha256_hex(&token);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = runtime.block_on(private_storage_server::db::Db::open(&db_url)).unwrap();
    assert!(runtime.block_on(db.user_by_token(&token_hash)).unwrap().is_some(), "the token works before it is revoked");
    ok(&cli(&data, &["token", "revoke", "ada"], None, &[]));
    assert!(
        runtime.block_on(db.user_by_token(&token_hash)).unwrap().is_none(),
        "a revoked token no longer authenticates"
    );
    ok(&cli(&data, &["user", "rm", "ada"], None, &[]));
    assert!(!ok(&cli(&data, &["user", "list"], None, &[])).contains("ada"));
}

#[test]
fn configuration_is_checked_and_printed_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = format!("k1={}", "Q".repeat(43));
    let shown = ok(&cli(
        &data,
        &["config", "check"],
        None,
        &[("PRIVATE_STORAGE_SHARE_KEYS", &secret), ("PRIVATE_STORAGE_MAX_FILE_SIZE", "5MB")],
    ));
    assert!(shown.contains("share_keys = \"<redacted>\"  # env PRIVATE_STORAGE_SHARE_KEYS"), "{shown}");
    assert!(shown.contains("max_file_size = \"5MB\"  # env PRIVATE_STORAGE_MAX_FILE_SIZE"), "{shown}");
    assert!(!shown.contains("QQQQ"));
    let typo = failed(&cli(&data, &["config", "check"], None, &[("PRIVATE_STORAGE_MAX_FILESIZE", "5MB")]), 2);
    assert!(typo.contains("unknown setting `max_filesize`") && typo.contains("PRIVATE_STORAGE_MAX_FILESIZE"), "{typo}");
    let bad = failed(&cli(&data, &["serve", "-s", "delivery=carrier-pigeon"], None, &[]), 2);
    assert!(bad.contains("`delivery` (flag)"), "{bad}");
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "bind = \"127.0.0.1:9\"\n[s3]\nbukcet = \"x\"\n").unwrap();
    let file_typo = failed(&cli(&data, &["--config", toml.to_str().unwrap(), "config", "check"], None, &[]), 2);
    assert!(file_typo.contains("s3.bukcet") && file_typo.contains("c.toml"), "{file_typo}");
    // A storage folder that does not exist is not created behind the user's back.
    let missing =
        failed(&cli(&data, &["serve", "--storage", "/nonexistent/media", "--bind", "127.0.0.1:0"], None, &[]), 1);
    assert!(missing.contains("/nonexistent/media") && missing.contains("create the folder"), "{missing}");
    assert!(!Path::new("/nonexistent/media").exists());
    // The nginx snippet for the configured delivery.
    let nginx = ok(&cli(&data, &["config", "nginx", "-s", "delivery=nginx"], None, &[]));
    assert!(
        nginx.contains("location /_private/ {") && nginx.contains("internal;") && nginx.contains("/media/;"),
        "{nginx}"
    );
}

#[test]
fn copy_storage_copies_verified_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("a long password\n"), &[]));
    let mut originals = Vec::new();
    for i in 0..3 {
        let file = dir.path().join(format!("doc {i}.pdf"));
        let bytes = [b"%PDF-1.7\n".as_slice(), &vec![b'a' + i as u8; 10_000 * (i + 1)]].concat();
        std::fs::write(&file, &bytes).unwrap();
        ok(&cli(&data, &["put", file.to_str().unwrap()], None, &[]));
        originals.push(bytes);
    }
    let target = dir.path().join("new-media");
    std::fs::create_dir(&target).unwrap();
    let first = ok(&cli(&data, &["copy-storage", target.to_str().unwrap()], None, &[]));
    assert!(first.contains("copied 3 file(s)"), "{first}");
    let again = ok(&cli(&data, &["copy-storage", target.to_str().unwrap()], None, &[]));
    assert!(again.contains("copied 0 file(s)") && again.contains("3 already in place"), "{again}");
    // Switched over, the server reads the same files from the new folder.
    let out = dir.path().join("back.pdf");
    let id = ok(&cli(&data, &["ls"], None, &[])).lines().next().unwrap().split('\t').next().unwrap().to_owned();
    ok(&cli(&data, &["--storage", target.to_str().unwrap(), "get", &id, "-o", out.to_str().unwrap()], None, &[]));
    assert!(originals.contains(&std::fs::read(&out).unwrap()));
    assert!(
        failed(&cli(&data, &["copy-storage", "/nonexistent/target"], None, &[]), 1).contains("/nonexistent/target")
    );
}

/// The binary's `serve`, as the README runs it (on a free port), stopped with SIGTERM.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Served {
    fn start(data: &Path) -> Self {
        Self::start_logging(data, None, Stdio::null())
    }

    /// With `RUST_LOG` set to `level` (unset: the default), its log to `log`.
    fn start_logging(data: &Path, level: Option<&str>, log: Stdio) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_private-storage"));
        command.arg("--data-dir").arg(data).args(["serve", "--bind", "127.0.0.1:0"]).env_remove("RUST_LOG");
        if let Some(level) = level {
            command.env("RUST_LOG", level);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        // The server prints its URL once it listens.
        let url = lines
            .find_map(|line| line.unwrap().split_once("listening on ").map(|(_, url)| url.trim().to_owned()))
            .expect("the server prints its URL");
        // Keep reading: a closed pipe would fail the server's next line of output.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }

    /// SIGTERM, as a service manager stops it: a graceful shutdown exits 0.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        assert!(self.child.wait().unwrap().success(), "a graceful shutdown exits 0");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The access log: at the default level one line per request, with its request id (the
/// server mounts its layer only when the log shows it); with `RUST_LOG=warn` none — and the
/// request id is echoed either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_shows_each_request_unless_its_level_is_off() {
    private_storage::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    for (level, shown) in [(None, true), (Some("warn"), false)] {
        let log = dir.path().join(format!("log-{shown}"));
        let served = Served::start_logging(
            &dir.path().join(format!("data-{shown}")),
            level,
            std::fs::File::create(&log).unwrap().into(),
        );
        let response = reqwest::Client::new()
            .get(format!("{}healthz", served.url))
            .header("x-request-id", "trace-me-42")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-id"], "trace-me-42", "echoed at every log level");
        served.stop();
        let log = std::fs::read_to_string(&log).unwrap();
        let line = log.lines().any(|l| l.contains("finished processing request") && l.contains("trace-me-42"));
        assert_eq!(line, shown, "RUST_LOG={level:?}: {log}");
    }
}

fn pdf(len: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..len.saturating_sub(9)).map(|i| b'a' + (i % 26) as u8));
    bytes
}

/// The README's first steps on the binary: create the first user, `serve`, log in through the
/// login form, upload, download the same bytes, be refused without a login, stop with SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_flow_runs_on_the_binary() {
    private_storage::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "admin", "--superuser", "--password-stdin"], Some("correct horse battery\n"), &[]));
    let served = Served::start(&data);
    let http =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(format!("{}login", served.url)).send().await.unwrap().text().await.unwrap();
    let csrf = crate::common::field(&page, "csrf");
    let login = [("username", "admin"), ("password", "correct horse battery"), ("csrf", &csrf)];
    let reply = http.post(format!("{}login", served.url)).form(&login).send().await.unwrap();
    assert_eq!(reply.status(), 303, "logged in");
    let index = http.get(&served.url).send().await.unwrap().text().await.unwrap();
    assert!(index.contains("Upload files"), "{index}");

    let token = ok(&cli(&data, &["token", "create", "admin"], None, &[])).trim().to_owned();
    let bytes = pdf(20_000);
    let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name("smoke.pdf");
    let created: serde_json::Value = http
        .post(format!("{}api/files", served.url))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap_or_else(|| panic!("not uploaded: {created}"));
    let download = format!("{}files/{id}/download", served.url);
    let got = http.get(&download).bearer_auth(&token).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == bytes, "the same bytes come back");
    let anonymous = reqwest::get(&download).await.unwrap();
    assert_eq!(anonymous.status(), 403);
    served.stop();
}

/// Regression: every command used to sweep all staging files at start, so `user list` run
/// beside a live server destroyed the uploads in flight (the client got 404 after sending
/// its bytes). An upload held half-way survives `user list`, `ls` and `put`, and arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_flight_survives_commands_run_beside_the_live_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    private_storage::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("correct horse battery\n"), &[]));
    let token = ok(&cli(&data, &["token", "create", "ada"], None, &[])).trim().to_owned();
    let served = Served::start(&data);

    let bytes = pdf(3 << 20);
    let (content_type, body) = crate::common::multipart(&[], "large.pdf", &bytes);
    let addr = served.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/files HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    socket.write_all(&body[..half]).await.unwrap();
    let staging =
        || crate::common::files_under(&data.join("media")).into_iter().filter(|p| p.contains(".ps-tmp-")).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while staging() == 0 {
        assert!(std::time::Instant::now() < deadline, "the upload never reached the storage");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    assert!(ok(&cli(&data, &["user", "list"], None, &[])).contains("ada"));
    ok(&cli(&data, &["ls"], None, &[]));
    let other = dir.path().join("other.pdf");
    std::fs::write(&other, pdf(1000)).unwrap();
    ok(&cli(&data, &["put", other.to_str().unwrap(), "--owner", "ada"], None, &[]));
    assert_eq!(staging(), 1, "the upload in flight is still staged");

    socket.write_all(&body[half..]).await.unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    let id = reply.split("\"id\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
    let got = reqwest::Client::new()
        .get(format!("{}files/{id}/download", served.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == bytes, "the upload arrived intact");
    served.stop();
}

/// `user rm` never leaves bytes without a record: it refuses while the user owns files, unless
/// told to delete them (records and bytes) or to give them to another user.
#[test]
fn removing_a_user_who_owns_files_needs_a_decision_about_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for name in ["ada", "bob", "eve"] {
        ok(&cli(&data, &["user", "add", name, "--password-stdin"], Some("correct horse battery\n"), &[]));
    }
    let file = dir.path().join("notes.pdf");
    std::fs::write(&file, pdf(5000)).unwrap();
    let put = |owner: &str| ok(&cli(&data, &["put", file.to_str().unwrap(), "--owner", owner], None, &[]));
    let ada_files: Vec<String> = (0..2).map(|_| put("ada").split('\t').next().unwrap().to_owned()).collect();
    put("eve");
    let stored = || crate::common::files_under(&data.join("media")).len();
    assert_eq!(stored(), 3);

    let refused = failed(&cli(&data, &["user", "rm", "ada"], None, &[]), 1);
    assert!(refused.contains("owns 2 file(s)") && refused.contains("--delete-files"), "{refused}");
    assert!(ok(&cli(&data, &["user", "list"], None, &[])).contains("ada"), "not deleted");
    assert!(failed(&cli(&data, &["user", "rm", "ada", "--transfer-to", "ada"], None, &[]), 1).contains("own files"));

    ok(&cli(&data, &["user", "rm", "ada", "--transfer-to", "bob"], None, &[]));
    let bobs = ok(&cli(&data, &["ls", "--owner", "bob"], None, &[]));
    assert!(ada_files.iter().all(|id| bobs.contains(id.as_str())), "{bobs}");
    let out = dir.path().join("copy.pdf");
    ok(&cli(&data, &["get", &ada_files[0], "-o", out.to_str().unwrap()], None, &[]));
    assert_eq!(stored(), 3, "transferred, not copied");

    ok(&cli(&data, &["user", "rm", "eve", "--delete-files"], None, &[]));
    assert_eq!(stored(), 2, "eve's bytes are gone with her record");
    assert!(!ok(&cli(&data, &["ls"], None, &[])).contains("\teve\t"));
}

/// `share` prints a URL, so `share revoke` takes it — or the token, or the link id — and
/// `share list` shows what is live.
#[test]
fn share_links_are_listed_and_revoked_by_url_token_or_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("correct horse battery\n"), &[]));
    let file = dir.path().join("notes.pdf");
    std::fs::write(&file, pdf(2000)).unwrap();
    let id = ok(&cli(&data, &["put", file.to_str().unwrap()], None, &[])).split('\t').next().unwrap().to_owned();
    let urls: Vec<String> =
        (0..3).map(|_| ok(&cli(&data, &["share", &id, "--expires", "1h"], None, &[])).trim().to_owned()).collect();
    let listed = ok(&cli(&data, &["share", "list", &id], None, &[]));
    assert_eq!(listed.lines().count(), 3, "{listed}");
    let limited = cli(&data, &["share", &id, "--password-stdin", "--max-downloads", "2"], Some("long secret\n"), &[]);
    ok(&limited);
    let all = ok(&cli(&data, &["share", "list"], None, &[]));
    assert_eq!(all.lines().count(), 4, "{all}");
    let limited: Vec<&str> = all.lines().find(|l| l.contains("\tpassword\t")).unwrap().split('\t').collect();
    assert_eq!(limited[4..], ["0/2", "password", "notes.pdf"], "{all}");
    ok(&cli(&data, &["share", "revoke", limited[0]], None, &[]));

    ok(&cli(&data, &["share", "revoke", &urls[0]], None, &[]));
    let token = urls[1].rsplit('/').next().unwrap();
    ok(&cli(&data, &["share", "revoke", token], None, &[]));
    let left = ok(&cli(&data, &["share", "list", &id], None, &[]));
    assert_eq!(left.lines().count(), 1, "{left}");
    let last_id = left.split('\t').next().unwrap().to_owned();
    ok(&cli(&data, &["share", "revoke", &last_id], None, &[]));
    assert!(ok(&cli(&data, &["share", "list", &id], None, &[])).is_empty());
    assert!(failed(&cli(&data, &["share", "revoke", "http://x/s/forged"], None, &[]), 1).contains("no such link"));
}

/// `push` uploads to a running server through tus; killed at 40 % (SIGKILL), the same command
/// run again resumes where the server is and the stored file is the source.
#[test]
fn push_resumes_an_interrupted_upload_and_the_file_arrives_whole() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "admin", "--password-stdin"], Some("correct horse battery\n"), &[]));
    let token = ok(&cli(&data, &["token", "create", "admin"], None, &[])).trim().to_owned();
    let served = Served::start(&data);
    let source = dir.path().join("Jahresabschluss 2026.pdf");
    let bytes = pdf(24 << 20);
    std::fs::write(&source, &bytes).unwrap();
    let state = dir.path().join("push-state.json");
    let push = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_private-storage"));
        command.arg("push").arg(&source).args(["--server", &served.url, "--chunk-size", "1MiB", "--state"]);
        command.arg(&state).env("PRIVATE_STORAGE_TOKEN", &token).env_remove("RUST_LOG");
        command
    };
    let mut first = push().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let progress = std::io::BufReader::new(first.stderr.take().unwrap());
    let pushed = |line: &str| line.strip_prefix("pushed ").and_then(|l| l.split(' ').next()?.parse::<u64>().ok());
    let mut reached = 0;
    for line in progress.lines() {
        if let Some(n) = pushed(&line.unwrap()) {
            reached = n;
            if n >= bytes.len() as u64 * 2 / 5 {
                break;
            }
        }
    }
    first.kill().unwrap();
    assert!(!first.wait().unwrap().success(), "killed mid-upload");
    assert!(reached >= bytes.len() as u64 * 2 / 5, "got to {reached}");
    assert!(ok(&cli(&data, &["ls"], None, &[])).lines().all(|l| !l.contains("Jahresabschluss")), "not a file yet");

    let second = push().output().unwrap();
    let stdout = ok(&second);
    let stderr = String::from_utf8_lossy(&second.stderr);
    let resumed: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("resuming at ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no resume: {stderr}"));
    assert!(resumed >= reached, "resumed at {resumed}, after the {reached} acknowledged");
    let id = stdout.trim().rsplit('/').next().unwrap().to_owned();
    let out = dir.path().join("back.pdf");
    ok(&cli(&data, &["get", &id, "-o", out.to_str().unwrap()], None, &[]));
    assert!(std::fs::read(&out).unwrap() == bytes, "the stored file is the source");
    let remembered: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(remembered["urls"].as_object().unwrap().len(), 0, "a finished upload is forgotten");
    served.stop();
}

#[test]
fn a_plaintext_store_is_encrypted_by_copy_storage_and_its_keys_rotate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let marker = b"CLI-MARKER-8d1f3a";
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("a long password\n"), &[]));
    let original = [pdf(200_000), marker.to_vec(), pdf(1000)].concat();
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, &original).unwrap();
    ok(&cli(&data, &["put", file.to_str().unwrap()], None, &[]));
    let id = ok(&cli(&data, &["ls"], None, &[])).lines().next().unwrap().split('\t').next().unwrap().to_owned();

    let generated = ok(&cli(&data, &["keys", "generate", "k1"], None, &[]));
    let k1 = generated.trim().to_owned();
    assert!(k1.starts_with("k1=") && k1.len() == 3 + 44, "{k1}");
    let k2 = ok(&cli(&data, &["keys", "generate", "k2"], None, &[])).trim().to_owned();
    assert_ne!(k1[3..], k2[3..], "random keys");
    let keys = |spec: &str| spec.to_owned();
    let run = |args: Vec<String>, keys: String| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&data, &args, None, &[("PRIVATE_STORAGE_ENCRYPTION_KEYS", &keys)])
    };
    let plain_args = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();

    // Encrypt into a new folder, then switch over.
    let sealed = dir.path().join("sealed");
    std::fs::create_dir(&sealed).unwrap();
    let copied = ok(&run(plain_args(&["copy-storage", sealed.to_str().unwrap(), "--encrypt"]), keys(&k1)));
    assert!(copied.contains("copied 1 file(s)"), "{copied}");
    let again = ok(&run(plain_args(&["copy-storage", sealed.to_str().unwrap(), "--encrypt"]), keys(&k1)));
    assert!(again.contains("1 already in place"), "resumable, verified on the content: {again}");
    let stored = crate::common::files_under(&sealed);
    assert_eq!(stored.len(), 1);
    let ciphertext = std::fs::read(&stored[0]).unwrap();
    assert!(!ciphertext.windows(marker.len()).any(|w| w == marker), "ciphertext in the new folder");
    let on = |args: &[&str]| {
        let mut all = plain_args(&["--storage", sealed.to_str().unwrap(), "-s", "encryption=on"]);
        all.extend(plain_args(args));
        all
    };
    let out = dir.path().join("back.pdf");
    ok(&run(on(&["get", &id, "-o", out.to_str().unwrap()]), keys(&k1)));
    assert!(std::fs::read(&out).unwrap() == original, "the content reads back");

    // `put` beside it, encrypted as it streams.
    let second = dir.path().join("second.pdf");
    std::fs::write(&second, [pdf(5000), marker.to_vec()].concat()).unwrap();
    ok(&run(on(&["put", second.to_str().unwrap()]), keys(&k1)));
    let stored = crate::common::files_under(&sealed);
    assert_eq!(stored.len(), 2);
    for file in &stored {
        let bytes = std::fs::read(file).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "ciphertext in {file}");
    }
    let stored: Vec<String> = stored.into_iter().filter(|f| std::fs::read(f).unwrap() == ciphertext).collect();

    let status = ok(&run(on(&["keys", "status"]), keys(&k1)));
    assert!(status.contains("2 stored file(s)") && status.contains("k1: wraps 2 file(s)"), "{status}");
    let rotated = ok(&run(on(&["keys", "rotate"]), keys(&format!("{k2},{k1}"))));
    assert!(rotated.contains("rewrapped 2 file(s)"), "{rotated}");
    let after = std::fs::read(&stored[0]).unwrap();
    assert!(after.len() == ciphertext.len() && after[208..] == ciphertext[208..], "content bytes untouched");
    let status = ok(&run(on(&["keys", "status"]), keys(&format!("{k2},{k1}"))));
    assert!(status.contains("k2: wraps 2 file(s)") && status.contains("k1: wraps 0 file(s)"), "{status}");
    std::fs::remove_file(&out).unwrap();
    ok(&run(on(&["get", &id, "-o", out.to_str().unwrap()]), keys(&k2)));
    assert!(std::fs::read(&out).unwrap() == original, "readable with k1 removed");
    let refused = run(on(&["get", &id, "-o", dir.path().join("no.pdf").to_str().unwrap()]), keys(&k1));
    assert!(!refused.status.success(), "k1 alone no longer opens it");
    let checked = ok(&run(on(&["config", "check"]), keys(&k2)));
    assert!(checked.contains("encryption_keys") && !checked.contains(&k2[3..]), "redacted: {checked}");

    // And back to plaintext.
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    ok(&run(on(&["copy-storage", plain.to_str().unwrap(), "--decrypt"]), keys(&k2)));
    let back: Vec<Vec<u8>> = crate::common::files_under(&plain).iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(back.len() == 2 && back.contains(&original), "decrypted copies");
}

#[test]
fn quotas_are_set_shown_and_enforced_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("a long password\n"), &[]));
    let set = ok(&cli(&data, &["user", "quota", "ada", "1MiB", "--files", "5"], None, &[]));
    assert!(set.contains("ada: 0 bytes used (quota 1.0 MB), 0 file(s) of 5"), "{set}");
    let file = dir.path().join("a.pdf");
    std::fs::write(&file, pdf(600_000)).unwrap();
    ok(&cli(&data, &["put", file.to_str().unwrap()], None, &[]));
    let refused = failed(&cli(&data, &["put", file.to_str().unwrap()], None, &[]), 1);
    assert!(refused.contains("quota of 1.0 MB") && refused.contains("585.9 KB used"), "{refused}");
    let shown = ok(&cli(&data, &["user", "quota", "ada"], None, &[]));
    assert!(shown.contains("585.9 KB used (quota 1.0 MB), 1 file(s) of 5"), "{shown}");
    ok(&cli(&data, &["user", "quota", "ada", "none"], None, &[]));
    ok(&cli(&data, &["put", file.to_str().unwrap()], None, &[]));
    let bad = failed(&cli(&data, &["user", "quota", "ada", "lots"], None, &[]), 1);
    assert!(bad.contains("not a size"), "{bad}");
    // The configured default applies to everyone without an override.
    ok(&cli(&data, &["user", "quota", "ada", "default", "--files", "default"], None, &[]));
    let defaulted = failed(&cli(&data, &["-s", "quota_files=2", "put", file.to_str().unwrap()], None, &[]), 1);
    assert!(defaulted.contains("quota of 2 files"), "{defaulted}");
}

/// With scanning on, `put` scans the file before it returns (no server may be running), and
/// fails for an infected one; `get` refuses it; `scan status` counts states and `scan run`
/// catches up on files left pending while clamd was down.
#[tokio::test]
async fn put_scans_with_clamd_and_scan_run_catches_up_from_the_command_line() {
    let mut clamd = test_support::Clamd::start(1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let address = format!("clamd_address=127.0.0.1:{}", clamd.port);
    let on = |args: &[&str]| {
        let mut all = vec!["-s", "scan=clamav", "-s", &address, "-s", "scan_max_size=1MiB", "-s", "scan_timeout=2s"];
        all.extend_from_slice(args);
        cli(&data, &all, None, &[])
    };
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("a long password\n"), &[]));
    let clean = dir.path().join("clean.pdf");
    std::fs::write(&clean, pdf(10_000)).unwrap();
    let out = on(&["put", clean.to_str().unwrap()]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("scan: clean"), "{out:?}");
    let eicar = dir.path().join("eicar.txt");
    std::fs::write(&eicar, test_support::EICAR).unwrap();
    let refused = failed(&on(&["put", eicar.to_str().unwrap()]), 1);
    assert!(refused.contains("infected (Eicar-Test-Signature.UNOFFICIAL)"), "{refused}");
    let listed = ok(&cli(&data, &["ls"], None, &[]));
    let infected_id = listed.lines().find(|l| l.ends_with("eicar.txt")).unwrap().split('\t').next().unwrap();
    let out = dir.path().join("out.txt");
    let get = failed(&on(&["get", infected_id, "-o", out.to_str().unwrap()]), 1);
    assert!(get.contains("found infected"), "{get}");
    assert!(!out.exists());

    clamd.stop();
    let waiting = on(&["put", clean.to_str().unwrap()]);
    ok(&waiting);
    assert!(String::from_utf8_lossy(&waiting.stderr).contains("pending"), "{waiting:?}");
    assert!(failed(&on(&["scan", "run"]), 1).contains("1 file(s) still pending"));
    clamd.restart().await;
    let caught_up = ok(&on(&["scan", "run"]));
    assert!(caught_up.contains("scanned 1 file(s)"), "{caught_up}");
    let status = ok(&on(&["scan", "status"]));
    assert_eq!(status, "clean\t2\ninfected\t1\n");
}

/// What the command line does is in the audit trail (as `cli`), and `audit export` prints the
/// trail since a time, oldest first, one JSON object per line.
#[test]
fn the_audit_trail_is_exported_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("a long password\n"), &[]));
    let file = dir.path().join("a.pdf");
    std::fs::write(&file, pdf(2_000)).unwrap();
    let id = ok(&cli(&data, &["put", file.to_str().unwrap()], None, &[])).split('\t').next().unwrap().to_owned();
    ok(&cli(&data, &["rm", &id], None, &[]));
    let exported = ok(&cli(&data, &["audit", "export", "--since", "1h"], None, &[]));
    let events: Vec<serde_json::Value> = exported.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<_> = events.iter().map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap())).collect();
    assert_eq!(kinds, [("upload", "cli"), ("delete", "cli")], "{exported}");
    assert!(events.iter().all(|e| e["file_id"] == id.as_str() && e["time"].as_str().unwrap().ends_with('Z')));
    assert_eq!(events[0]["bytes"], 2_000);
    let later = ok(&cli(&data, &["audit", "export", "--since", "2999-01-01"], None, &[]));
    assert!(later.is_empty(), "nothing after a time to come: {later}");
    let bad = failed(&cli(&data, &["audit", "export", "--since", "last tuesday"], None, &[]), 1);
    assert!(bad.contains("a time (2026-12-01"), "{bad}");
}

/// `ls` reads in batches from where the last one ended: every file once, newest first, across
/// batch boundaries and among files of the same second (ordered by id then).
#[test]
fn ls_lists_every_file_once_newest_first_across_batches() {
    use private_storage_server::db::{Db, FileRow, ScanState};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&cli(&data, &["user", "add", "ada", "--password-stdin"], Some("a long password\n"), &[]));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = runtime.block_on(Db::open(&format!("sqlite://{}", data.join("private-storage.db").display()))).unwrap();
    let owner = runtime.block_on(db.user_by_name("ada")).unwrap().unwrap().id;
    let mut expected = Vec::new();
    for n in 0..1_203 {
        let id = private_storage_server::db::new_id();
        // Seven timestamps: ties across every batch boundary.
        let created = 1_700_000_000 + n % 7;
        let row = FileRow {
            id: id.clone(),
            owner_id: owner.clone(),
            object_key: format!("files/x/{id}"),
            name: format!("f{n}"),
            size: n,
            content_type: "text/plain".into(),
            sha256: String::new(),
            created,
            scan: ScanState::Clean,
            scan_detail: None,
        };
        runtime.block_on(db.insert_file(&row)).unwrap();
        expected.push((created, id));
    }
    expected.sort_by(|a, b| b.cmp(a));
    let listed: Vec<String> =
        ok(&cli(&data, &["ls"], None, &[])).lines().map(|l| l.split('\t').next().unwrap().to_owned()).collect();
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(listed.len(), 1_203);
    assert_eq!(listed, expected);
    let own: Vec<String> = ok(&cli(&data, &["ls", "--owner", "ada"], None, &[]))
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect();
    assert_eq!(own, expected);
}
