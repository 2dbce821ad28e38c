//! The traversal and bypass corpus, sent byte for byte over a real socket to a server on
//! `LocalStorage`: no byte outside the root is ever served, and a rule "keys under
//! `users/<id>/`" never lets one user reach another's file.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::common::{app, serve};
use private_storage::{LocalStorage, PrivateFile, ServePrivate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OUTSIDE_SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOT";
const USER6_SECRET: &str = "USER-SIX-SECRET";
const OWN: &str = "user one's own file";

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// 200 with user 1's own file (the control cases).
    Own,
    /// Anything but a 2xx, and no secret in it.
    Refused,
    /// User 6's file by its canonical key: refused to user 1, served to the superuser.
    SixsFile,
}
use Expect::{Own, Refused, SixsFile};

fn corpus() -> Vec<(String, Expect)> {
    let long_segment = format!("users/1/{}", "a".repeat(300));
    let long_key = format!("users/1/{}x", "a/".repeat(600));
    let mut cases: Vec<(String, Expect)> = [
        ("users/1/own.txt", Own),
        ("users/1/own.txt?/../../6/secret.txt", Own),
        ("users/1/own.txt?x=../6/secret.txt", Own),
        ("users/6/secret.txt", SixsFile),
        // Dot segments, raw and encoded.
        ("users/1/../6/secret.txt", Refused),
        ("users/1/%2e%2e/6/secret.txt", Refused),
        ("users/1/%2E%2E/6/secret.txt", Refused),
        ("users/1/.%2e/6/secret.txt", Refused),
        ("users/1/%2e./6/secret.txt", Refused),
        ("users/1/./../6/secret.txt", Refused),
        ("users/1/.../6/secret.txt", Refused),
        ("users/1/....//6/secret.txt", Refused),
        ("users/1//../6/secret.txt", Refused),
        ("users/1/own.txt/../../6/secret.txt", Refused),
        ("users/6/../1/own.txt", Refused),
        ("users/1/%2e%2e/%2e%2e/outside/secret.txt", Refused),
        ("users/1/../../../../../../etc/passwd", Refused),
        ("users/1/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", Refused),
        ("..", Refused),
        ("%2e", Refused),
        ("../outside/secret.txt", Refused),
        ("%2e%2e/outside/secret.txt", Refused),
        ("%2e%2e%2foutside%2fsecret.txt", Refused),
        // Encoded separators.
        ("users/1/..%2f6/secret.txt", Refused),
        ("users/1/..%2F6%2Fsecret.txt", Refused),
        ("users/1%2f..%2f6%2fsecret.txt", Refused),
        ("users%2f1%2f..%2f6%2fsecret.txt", Refused),
        // Double encoding decodes once, to a literal (missing) name.
        ("users/1/%252e%252e/6/secret.txt", Refused),
        ("users/1/.%252e/6/secret.txt", Refused),
        ("users/1/%25%32%65%25%32%65/6/secret.txt", Refused),
        ("users/1/%252e%252e%252f6%252fsecret.txt", Refused),
        // Backslashes and mixed separators.
        ("users/1/..%5c6%5csecret.txt", Refused),
        ("users/1/%5c..%5c6/secret.txt", Refused),
        ("users/1/%2E%2E%5C6%5Csecret.txt", Refused),
        ("users/1/..\\6\\secret.txt", Refused),
        ("users/1/..%5c..%5coutside%5csecret.txt", Refused),
        // Absolute paths and drive prefixes.
        ("/etc/passwd", Refused),
        ("%2fetc%2fpasswd", Refused),
        ("C:%5cwindows%5cwin.ini", Refused),
        ("C:/windows/win.ini", Refused),
        // NUL and control characters.
        ("users/1/%00/../6/secret.txt", Refused),
        ("users/1/own.txt%00.pdf", Refused),
        ("users/1/..%00/6/secret.txt", Refused),
        ("users/1/.%00./6/secret.txt", Refused),
        ("users/1/..%0a/6/secret.txt", Refused),
        ("users/1/%0d%0a/../6/secret.txt", Refused),
        ("users/1/..%09/6/secret.txt", Refused),
        ("users/1/%7f/../6/secret.txt", Refused),
        // Overlong and invalid UTF-8.
        ("users/1/%c0%ae%c0%ae/6/secret.txt", Refused),
        ("users/1/%e0%80%ae%e0%80%ae/6/secret.txt", Refused),
        ("users/1/%c0%af../6/secret.txt", Refused),
        ("users/1/%c1%9c..%c1%9c6/secret.txt", Refused),
        ("users/1/%ff%fe/../6/secret.txt", Refused),
        ("users/1/%uff0e%uff0e/6/secret.txt", Refused),
        // Unicode look-alikes and invisible characters.
        ("users/1/%ef%bc%8e%ef%bc%8e/6/secret.txt", Refused),
        ("users/1/%ef%bc%8f..%ef%bc%8f6/secret.txt", Refused),
        ("users/1/%e2%80%a5/6/secret.txt", Refused),
        ("users/1/..%e2%88%956%e2%88%95secret.txt", Refused),
        ("users/1/..%ef%bc%bc6%ef%bc%bcsecret.txt", Refused),
        ("users/1/%e2%80%ae/../6/secret.txt", Refused),
        ("users/1/%ef%bb%bf../6/secret.txt", Refused),
        ("users/1/%e2%80%8b../6/secret.txt", Refused),
        // Server-specific path parameters are literal names here.
        ("users/1/..;/6/secret.txt", Refused),
        ("users/1/%2e%2e;/6/secret.txt", Refused),
        ("users/1/own.txt;/../../6/secret.txt", Refused),
        // Case and length tricks.
        ("USERS/1/../6/secret.txt", Refused),
        ("Users/6/secret.txt", Refused),
        // Symlinks below the root: out of it, absolute, to a folder outside, and to another user.
        ("users/1/link-out", Refused),
        ("users/1/abs-link", Refused),
        ("users/1/dir-link/secret.txt", Refused),
        ("users/1/to-six/secret.txt", Refused),
        ("users/1/to-six", Refused),
        // A staging file is never served, even in the user's own folder.
        ("users/1/.ps-tmp-0000000000000000", Refused),
        ("users/1", Refused),
        ("users/1/", Refused),
    ]
    .into_iter()
    .map(|(p, e)| (p.to_owned(), e))
    .collect();
    cases.push((long_segment, Refused));
    cases.push((long_key, Refused));
    cases
}

fn build_tree(base: &Path) -> std::path::PathBuf {
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::create_dir_all(root.join("users/1")).unwrap();
    std::fs::create_dir_all(root.join("users/6")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), OUTSIDE_SECRET).unwrap();
    std::fs::write(root.join("users/1/own.txt"), OWN).unwrap();
    std::fs::write(root.join("users/6/secret.txt"), USER6_SECRET).unwrap();
    std::fs::write(root.join("users/1/.ps-tmp-0000000000000000"), "STAGED-PARTIAL-SECRET").unwrap();
    symlink("../../../outside/secret.txt", root.join("users/1/link-out")).unwrap();
    symlink(outside.join("secret.txt"), root.join("users/1/abs-link")).unwrap();
    symlink("../../../outside", root.join("users/1/dir-link")).unwrap();
    symlink("../6", root.join("users/1/to-six")).unwrap();
    root
}

/// Sends `GET /private-media/<path>` verbatim and returns the raw response.
async fn raw_get(addr: std::net::SocketAddr, path: &str, user: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /private-media/{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {user}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn status(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traversal_corpus_never_serves_a_byte_outside_the_rule() {
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let own_folder = |file: PrivateFile| async move {
        file.user().is_some_and(|u| u.is_superuser() || file.key().as_str().starts_with(&format!("users/{}/", u.id())))
    };
    let addr = serve(app(ServePrivate::new(LocalStorage::new(&root).unwrap()).rule(own_folder))).await;

    let cases = corpus();
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for (path, expect) in &cases {
        // As user 1 (the prefix rule), and as a superuser (everything inside the root allowed).
        for user in ["1", "root"] {
            let response = raw_get(addr, path, user).await;
            let code = status(&response);
            let leaked = [OUTSIDE_SECRET, "root:x:0:0", "STAGED-PARTIAL-SECRET"]
                .into_iter()
                .chain((user == "1").then_some(USER6_SECRET))
                .find(|s| response.contains(s));
            let ok = match expect {
                Own => code == 200 && response.ends_with(OWN),
                SixsFile if user == "root" => code == 200 && response.ends_with(USER6_SECRET),
                Refused | SixsFile => !(200..300).contains(&code),
            };
            if !ok || leaked.is_some() {
                failures.push(format!("{path:?} as {user}: {code}, leaked {leaked:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_below_the_root_are_not_followed_nor_listed_but_the_root_itself_may_be_one() {
    use futures_util::TryStreamExt;
    use private_storage::{ObjectKey, Storage, StorageExt};
    let base = tempfile::tempdir().unwrap();
    let root = build_tree(base.path());
    let linked_root = base.path().join("root-link");
    symlink(&root, &linked_root).unwrap();
    let storage = LocalStorage::new(&linked_root).unwrap();
    assert_eq!(storage.read(&ObjectKey::new("users/1/own.txt").unwrap()).await.unwrap(), OWN);
    for link in ["users/1/link-out", "users/1/abs-link", "users/1/to-six/secret.txt"] {
        let err = storage.head(&ObjectKey::new(link).unwrap()).await.unwrap_err();
        assert!(matches!(err, private_storage::Error::NotFound { .. }), "{link}: {err}");
    }
    let mut listed: Vec<String> = storage.list(None).map_ok(|m| m.key.to_string()).try_collect().await.unwrap();
    listed.sort();
    assert_eq!(listed, ["users/1/own.txt", "users/6/secret.txt"]);
    // Writing through a symlinked folder is refused too.
    let err = storage.put_bytes(&ObjectKey::new("users/1/to-six/new.txt").unwrap(), "x").await;
    assert!(err.is_err());
    assert!(!root.join("users/6/new.txt").exists());
}
