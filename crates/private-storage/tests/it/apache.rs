//! Real Apache with mod_xsendfile in front of the service in `X-Sendfile` mode.
use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{Peer, app, free_port, pattern, program, serve, wait_for_port};
use private_storage::{Delivery, LocalStorage, ObjectKey, ServePrivate, Storage};

const NAME: &str = "Bücher/Heizölrückstoßabdämpfung mit Leerzeichen.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_serves_allowed_files_through_x_sendfile_and_nothing_else() {
    let base = tempfile::tempdir().unwrap();
    // Apache's workers run as www-data: they must be able to read the files.
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = base.path().join("root");
    std::fs::create_dir_all(root.join("Bücher")).unwrap();
    let big = pattern(300_000, 11);
    std::fs::write(root.join("hello.txt"), "hello").unwrap();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join(NAME), "öl").unwrap();
    // Names mod_xsendfile would decode into another file, if sent as they are.
    std::fs::create_dir_all(root.join("users/1/%2e%2e/6")).unwrap();
    std::fs::create_dir_all(root.join("users/6")).unwrap();
    std::fs::write(root.join("users/1/%2e%2e/6/x"), "user one's").unwrap();
    std::fs::write(root.join("users/6/x"), "user six's").unwrap();
    std::fs::write(root.join("%41.txt"), "percent four one").unwrap();
    std::fs::write(root.join("A.txt"), "the letter A").unwrap();
    std::fs::write(root.join("100%.txt"), "a stray percent").unwrap();
    std::fs::write(root.join("50% off %zz.txt"), "spaces and percents").unwrap();

    let storage = LocalStorage::new(&root).unwrap();
    let own_etag = storage.head(&ObjectKey::new("big.bin").unwrap()).await.unwrap().etag.unwrap();
    let backend = serve(app(ServePrivate::new(storage.clone()).delivery(Delivery::apache()))).await;

    let port = free_port();
    let dir = base.path().display().to_string();
    let modules = "/usr/lib/apache2/modules";
    let conf = base.path().join("apache.conf");
    std::fs::write(
        &conf,
        format!(
            r#"ServerRoot "{dir}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {dir}/apache.pid
ErrorLog {dir}/error.log
LogLevel warn
DefaultRuntimeDir {dir}
Mutex file:{dir} default
User www-data
Group www-data
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule xsendfile_module {modules}/mod_xsendfile.so
TypesConfig /etc/mime.types
ProxyPass /private-media/ http://{backend}/private-media/
XSendFile On
XSendFilePath {root}
"#,
            root = storage.root().display()
        ),
    )
    .unwrap();
    let apache = program("apache2");
    let mut start = Command::new(&apache);
    start.arg("-f").arg(&conf).args(["-k", "start"]);
    let mut stop = Command::new(&apache);
    stop.arg("-f").arg(&conf).args(["-k", "stop"]);
    let peer = Peer::start("apache", start, stop, base.path().join("error.log"));
    wait_for_port(port).await;

    let client = common::http().build().unwrap();
    let url =
        |key: &str| format!("http://127.0.0.1:{port}/private-media/{}", ObjectKey::new(key).unwrap().to_url_path());

    let r = client.get(url("hello.txt")).bearer_auth("root").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", peer.log_text());
    assert!(r.headers().get("x-sendfile").is_none(), "the internal header never reaches the client");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), "hello");

    let r = client.get(url(NAME)).bearer_auth("root").send().await.unwrap();
    assert_eq!(r.status(), 200, "a non-ASCII name with spaces: {}", peer.log_text());
    assert_eq!(r.text().await.unwrap(), "öl");

    // Apache serves exactly the file the rule saw, whatever `%` the name holds.
    for (key, body) in [
        ("users/1/%2e%2e/6/x", "user one's"),
        ("%41.txt", "percent four one"),
        ("100%.txt", "a stray percent"),
        ("50% off %zz.txt", "spaces and percents"),
    ] {
        let r = client.get(url(key)).bearer_auth("root").send().await.unwrap();
        assert_eq!(r.status(), 200, "{key}: {}", peer.log_text());
        assert_eq!(r.text().await.unwrap(), body, "{key}");
    }

    let r = client.head(url("big.bin")).bearer_auth("root").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "300000");
    assert_eq!(r.headers()["etag"], own_etag.as_str(), "Apache sends the service's ETag, not its own");
    assert!(r.bytes().await.unwrap().is_empty());

    let r = client.get(url("big.bin")).bearer_auth("root").header("range", "bytes=1000-1999").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/300000");
    assert!(r.bytes().await.unwrap()[..] == big[1000..2000]);

    let r = client.get(url("big.bin")).bearer_auth("root").header("if-none-match", &own_etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
    let r = client.get(url("hello.txt")).bearer_auth("root").header("if-none-match", &own_etag).send().await.unwrap();
    assert_eq!(r.status(), 200, "another file's ETag does not match (Apache's `ETag: \"0\"` trap)");

    for user in [None, Some("alice")] {
        let mut req = client.get(url("big.bin")).header("range", "bytes=0-99");
        if let Some(user) = user {
            req = req.bearer_auth(user);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{user:?}");
        let body = r.bytes().await.unwrap();
        assert!(!body.windows(16).any(|w| w == &big[..16]), "not a byte of the file for {user:?}");
    }
}
