//! Real nginx in front of the service in `X-Accel-Redirect` mode: nginx serves the bytes
//! (GET, HEAD, Range, 304) only after the service's rule allowed the request.
use crate::common;

use crate::common::{app, free_port, pattern, serve};
use private_storage::{
    Delivery, LocalStorage, MemoryRevocations, ObjectKey, ServePrivate, ServeShared, Share, ShareKeys, ShareLinks,
    Storage, nginx_internal_location,
};

const NAME: &str = "docs/Grüße an alle.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_allowed_files_through_x_accel_redirect_and_nothing_else() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    let big = pattern(300_000, 9);
    std::fs::write(root.join("hello.txt"), "hello").unwrap();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join(NAME), "grüße").unwrap();
    std::fs::write(root.join("page.html"), "<script>alert(1)</script>").unwrap();

    let storage = LocalStorage::new(&root).unwrap();
    let own_etag = storage.head(&ObjectKey::new("big.bin").unwrap()).await.unwrap().etag.unwrap();
    let service = ServePrivate::new(storage.clone()).delivery(Delivery::nginx("/_internal").unwrap());
    let links = ShareLinks::new(ShareKeys::new("k1", [5u8; 32]).unwrap(), MemoryRevocations::new()).base_url("/s/");
    let backend = serve(app(service.clone()).nest_service("/s", ServeShared::new(links.clone(), service))).await;

    let port = free_port();
    let locations = format!(
        "        location /private-media/ {{ proxy_pass http://{backend}; }}\n        location /s/ {{ proxy_pass http://{backend}; }}\n{}",
        nginx_internal_location("/_internal", storage.root(), 16)
    );
    let peer = common::nginx(base.path(), port, &locations);

    let client = common::http().build().unwrap();
    let url =
        |key: &str| format!("http://127.0.0.1:{port}/private-media/{}", ObjectKey::new(key).unwrap().to_url_path());

    let r = client.get(url("hello.txt")).bearer_auth("root").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", peer.log_text());
    assert!(r.headers().get("x-accel-redirect").is_none(), "the internal header never reaches the client");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["cache-control"], "private, no-cache");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), "hello");

    let r = client.get(url(NAME)).bearer_auth("root").send().await.unwrap();
    assert_eq!(r.status(), 200, "a UTF-8 name with spaces");
    assert_eq!(r.text().await.unwrap(), "grüße");

    let r = client.head(url("big.bin")).bearer_auth("root").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "300000");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, own_etag, "nginx's ETag is the service's: conditionals agree in every mode");
    assert!(r.bytes().await.unwrap().is_empty());

    let r = client.get(url("big.bin")).bearer_auth("root").header("range", "bytes=1000-1999").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/300000");
    assert!(r.bytes().await.unwrap()[..] == big[1000..2000]);

    let r = client
        .get(url("big.bin"))
        .bearer_auth("root")
        .header("range", "bytes=0-9")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a stale If-Range gets the whole file");

    let r = client.get(url("big.bin")).bearer_auth("root").header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);

    let r = client.get(url("page.html")).bearer_auth("root").send().await.unwrap();
    assert_eq!(r.headers()["content-security-policy"], "sandbox; default-src 'none'", "security headers survive nginx");
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    for user in [None, Some("alice")] {
        for range in [None, Some("bytes=0-99")] {
            let mut req = client.get(url("big.bin"));
            if let Some(user) = user {
                req = req.bearer_auth(user);
            }
            if let Some(range) = range {
                req = req.header("range", range);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 403, "{user:?} {range:?}");
            let body = r.bytes().await.unwrap();
            assert!(!body.windows(16).any(|w| w == &big[..16]), "not a byte of the file for {user:?}");
        }
    }

    // Share links through nginx: the bytes from nginx, the headers the service set.
    let link = links.issue(Share::key(ObjectKey::new(NAME).unwrap())).await.unwrap();
    let r = client.get(format!("http://127.0.0.1:{port}{}", link.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer", "re-added by the generated location");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), "grüße");
    links.revoke(&link).await.unwrap();
    let r = client.get(format!("http://127.0.0.1:{port}{}", link.url)).send().await.unwrap();
    assert_eq!(r.status(), 403, "a revoked link is never handed to nginx");
    assert_ne!(r.text().await.unwrap(), "grüße");

    let r = client.get(format!("http://127.0.0.1:{port}/_internal/hello.txt")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the internal location is not reachable from outside");
}
