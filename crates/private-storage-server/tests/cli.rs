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
    let token_hash = private_storage_server::auth::sha256_hex(&token);
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
