//! `S3Storage` against real S3-compatible servers on loopback: s3s-fs in-process and Garage.
use crate::common;
use crate::common::s3 as servers;

use private_storage::testing::{conformance, conformance_skipping};

#[tokio::test(flavor = "multi_thread")]
async fn s3_storage_keeps_the_storage_contract_on_s3s_fs() {
    let server = servers::s3s_fs().await;
    // s3s-fs ignores If-None-Match: create-only writes check first there.
    let storage = server.builder().conditional_writes(false).build().unwrap();
    // s3s-fs keeps objects as files, so a folder answers HEAD; Garage runs that check below.
    conformance_skipping(&storage, &["folder-is-not-an-object"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_storage_keeps_the_storage_contract_on_garage_under_a_prefix() {
    let server = servers::garage().await;
    // Garage 2.x ignores If-None-Match on writes (see the next test).
    let storage = server.builder().prefix("tenant-a/files").conditional_writes(false).build().unwrap();
    storage.check_writes().await.unwrap();
    conformance(&storage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_conditional_writes_is_caught_by_the_write_check() {
    let server = servers::garage().await;
    let storage = server.builder().build().unwrap();
    match storage.check_writes().await {
        Err(private_storage::Error::Config { setting, .. }) => assert_eq!(setting, "conditional_writes"),
        other => panic!("expected the conditional_writes advice, got {other:?}"),
    }
    // The probe left nothing behind in the staging folder, which the storage itself never
    // lists: look at it through a storage rooted there (it does see what is in it).
    let staging = server.builder().prefix(".ps-staging").build().unwrap();
    private_storage::StorageExt::put_bytes(&staging, &private_storage::ObjectKey::new("marker").unwrap(), "x")
        .await
        .unwrap();
    let listed: Vec<String> =
        futures_util::TryStreamExt::try_collect::<Vec<_>>(private_storage::Storage::list(&staging, None))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key.to_string())
            .collect();
    assert_eq!(listed, ["marker"], "only the marker: the probe was deleted");
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use http::Method;
use private_storage::{
    Delivery, Encryption, Error, GetOptions, MemoryRevocations, ObjectKey, PostPolicy, PutMode, PutOptions, S3Storage,
    ServePrivate, ServeShared, Share, ShareKeys, ShareLinks, Storage, StorageExt, Upload, UploadPolicy,
    allow_authenticated,
};

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

/// `data` as a stream of 256 KiB chunks.
fn chunks(data: &[u8]) -> private_storage::PutStream<'static> {
    let parts: Vec<_> = data.chunks(256 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    stream::iter(parts).boxed()
}

/// Entries s3s-fs keeps for multipart uploads in progress (`.upload-*`, `.upload_id-*`).
fn pending_uploads(server: &servers::S3Server) -> Vec<String> {
    std::fs::read_dir(server.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn large_writes_are_multipart_and_a_failed_or_dropped_one_leaves_no_parts() {
    let server = servers::s3s_fs().await;
    let storage = server.builder().conditional_writes(false).build().unwrap();
    let data = common::pattern(21 * 1024 * 1024, 7);

    let k = key("big/blob.bin");
    let meta = storage.put(&k, chunks(&data), PutOptions::default()).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(storage.read(&k).await.unwrap() == data, "a multipart object round-trips");
    let slice =
        storage.get(&k, GetOptions::default().with_range(9_000_000..9_000_100)).await.unwrap().bytes().await.unwrap();
    assert_eq!(&slice[..], &data[9_000_000..9_000_100]);

    // Create-only large writes are staged and copied into place: the second finds the first.
    let created = storage
        .put(&key("big/unique.bin"), chunks(&data), PutOptions::default().with_mode(PutMode::CreateUnique))
        .await
        .unwrap();
    let variant = storage
        .put(&key("big/unique.bin"), chunks(&data), PutOptions::default().with_mode(PutMode::CreateUnique))
        .await
        .unwrap();
    assert_eq!(created.key.as_str(), "big/unique.bin");
    assert_ne!(variant.key, created.key);
    assert!(storage.read(&variant.key).await.unwrap() == data);
    let again =
        storage.put(&key("big/unique.bin"), chunks(&data), PutOptions::default().with_mode(PutMode::Create)).await;
    assert!(matches!(again, Err(Error::AlreadyExists { .. })), "{again:?}");
    let listed: Vec<_> = storage.list(Some(&key("big"))).map(|m| m.unwrap().key.to_string()).collect().await;
    assert_eq!(listed.len(), 3, "staging objects are gone and never listed: {listed:?}");

    // The input fails after two parts went up: its error comes back, nothing remains.
    let failing = chunks(&data[..17 * 1024 * 1024])
        .chain(stream::once(async { Err(Error::BadUpload { message: "client went away".into() }) }))
        .boxed();
    let err = storage.put(&key("big/failed.bin"), failing, PutOptions::default()).await.unwrap_err();
    assert!(matches!(&err, Error::BadUpload { message } if message == "client went away"), "{err}");
    assert!(!storage.exists(&key("big/failed.bin")).await.unwrap());
    assert_eq!(pending_uploads(&server), Vec::<String>::new(), "the failed upload was aborted");

    // The writer goes away mid-upload (the future is dropped): the upload is aborted too.
    let (reached, mut at_limit) = tokio::sync::watch::channel(false);
    let first = Bytes::from(data[..12 * 1024 * 1024].to_vec());
    let stalled = stream::once(async move { Ok(first) })
        .chain(stream::once(async move {
            reached.send(true).unwrap();
            std::future::pending::<()>().await;
            Ok(Bytes::new())
        }))
        .boxed();
    let dropped = key("big/dropped.bin");
    let put = storage.put(&dropped, stalled, PutOptions::default());
    tokio::select! {
        _ = put => panic!("the stalled upload cannot finish"),
        _ = at_limit.wait_for(|r| *r) => {}
    }
    until("the dropped upload is aborted", || pending_uploads(&server).is_empty()).await;
    assert!(!storage.exists(&key("big/dropped.bin")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_key_encryption_is_sent_on_every_read_and_required_by_the_server() {
    let server = servers::garage().await;
    let secret = Encryption::Customer { key: [42; 32] };
    let storage =
        Arc::new(server.builder().prefix("sse-c").conditional_writes(false).encryption(secret).build().unwrap());
    let data = common::pattern(10 * 1024 * 1024, 3);
    let k = key("secret/report.bin");
    storage.put(&k, chunks(&data), PutOptions::default()).await.unwrap();
    assert!(storage.read(&k).await.unwrap() == data, "whole reads carry the key");
    let part =
        storage.get(&k, GetOptions::default().with_range(5_000_000..5_000_010)).await.unwrap().bytes().await.unwrap();
    assert_eq!(&part[..], &data[5_000_000..5_000_010], "ranged reads carry the key");

    // Proxied through the service, with a Range: the bytes are exact.
    let app = common::app(ServePrivate::new(storage.clone()).rule(allow_authenticated()));
    let reply = common::send(
        &app,
        Method::GET,
        "/private-media/secret/report.bin",
        Some("alice"),
        &[("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(reply.status, 206);
    assert_eq!(&reply.body[..], &data[100..200]);

    // Without the key, the server refuses to hand out the bytes.
    let keyless = server.builder().prefix("sse-c").build().unwrap();
    assert!(keyless.read(&k).await.is_err(), "Garage enforces SSE-C");
    // A presigned URL cannot carry the key: the redirect mode refuses rather than leak a broken link.
    let redirect = common::app(
        ServePrivate::new(storage.clone()).rule(allow_authenticated()).delivery(Delivery::presigned_redirect(None)),
    );
    let reply = common::send(&redirect, Method::GET, "/private-media/secret/report.bin", Some("alice"), &[]).await;
    assert_eq!(reply.status, 500);
    assert!(reply.header("location").is_none());
}

/// A plain HTTP client that does not follow redirects.
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_redirects_go_only_to_allowed_users_and_carry_the_headers() {
    let server = servers::garage().await;
    let storage =
        Arc::new(server.builder().conditional_writes(false).presign_expiry(Duration::from_secs(120)).build().unwrap());
    let data = common::pattern(300_000, 9);
    storage.put_bytes(&key("users/alice/Quartalsbericht März.pdf"), data.clone()).await.unwrap();
    let service = ServePrivate::new(storage.clone())
        .rule(|file: private_storage::PrivateFile| async move {
            file.user().is_some_and(|u| file.key().as_str().starts_with(&format!("users/{}/", u.id())))
        })
        .content_disposition(private_storage::ContentDisposition::attachment())
        .delivery(Delivery::presigned_redirect(Some(Duration::from_secs(30))));
    let app = common::app(service.clone());
    let path = "/private-media/users/alice/Quartalsbericht%20M%C3%A4rz.pdf";

    // Denied: no redirect, no URL.
    for user in [None, Some("bob")] {
        let reply = common::send(&app, Method::GET, path, user, &[]).await;
        assert_eq!(reply.status, 403, "{user:?}");
        assert!(reply.header("location").is_none());
    }
    // HEAD and conditionals are answered here.
    let head = common::send(&app, Method::HEAD, path, Some("alice"), &[]).await;
    assert_eq!((head.status.as_u16(), head.header("content-length")), (200, Some("300000")));
    let etag = head.header("etag").unwrap().to_owned();
    let cached = common::send(&app, Method::GET, path, Some("alice"), &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);

    let reply = common::send(&app, Method::GET, path, Some("alice"), &[("range", "bytes=0-9")]).await;
    assert_eq!(reply.status, 307);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let location = reply.header("location").unwrap().to_owned();
    let expires: u64 = url_param(&location, "X-Amz-Expires").parse().unwrap();
    assert_eq!(expires, 30, "the mode's expiry, under the storage's cap");

    // The target serves the object with our headers, and Range.
    let got = client().get(&location).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/pdf");
    let disposition = got.headers()["content-disposition"].to_str().unwrap().to_owned();
    let body = got.bytes().await.unwrap();
    assert!(body == data, "the redirect target serves the object");
    // The same RFC 6266 value the streaming mode sends, non-ASCII name included.
    let streamed =
        common::send(&common::app(service.delivery(Delivery::stream())), Method::GET, path, Some("alice"), &[]).await;
    assert_eq!(streamed.header("content-disposition"), Some(disposition.as_str()));
    assert!(
        disposition.starts_with("attachment;")
            && disposition.contains("filename*=UTF-8''Quartalsbericht%20M%C3%A4rz.pdf"),
        "{disposition}"
    );
    let ranged = client().get(&location).header("range", "bytes=1000-1999").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert!(ranged.bytes().await.unwrap() == data[1000..2000]);

    // A tampered URL is refused by the S3 server itself.
    let tampered = location.replace("X-Amz-Expires=30", "X-Amz-Expires=3000");
    assert!(client().get(&tampered).send().await.unwrap().status().is_client_error());
    let other_key = location.replace("M%C3%A4rz", "April");
    assert!(client().get(&other_key).send().await.unwrap().status().is_client_error());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_presigned_url_is_refused_by_the_server() {
    let server = servers::garage().await;
    // X-Amz-Date counts whole seconds: a URL signed late in a second lives up to a second less
    // than its expiry. Three seconds leave the first request at least two.
    let storage = server.builder().conditional_writes(false).presign_expiry(Duration::from_secs(3)).build().unwrap();
    storage.put_bytes(&key("a.txt"), "soon gone").await.unwrap();
    let url = storage.presigned_get(&key("a.txt"), &Default::default()).await.unwrap().unwrap();
    assert!(!url.contains("X-Amz-Security-Token"), "static keys sign no session token: {url}");
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    // Poll until the lifetime has passed; from then on the server refuses it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = client().get(&url).send().await.unwrap().status();
        if status.is_client_error() {
            break;
        }
        assert!(Instant::now() < deadline, "the URL never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_link_redirect_never_outlives_the_link() {
    let server = servers::garage().await;
    let storage =
        Arc::new(server.builder().conditional_writes(false).presign_expiry(Duration::from_secs(3600)).build().unwrap());
    storage.put_bytes(&key("media/clip.mp4"), "not really a video").await.unwrap();
    let links = ShareLinks::new(ShareKeys::new("k1", [5u8; 32]).unwrap(), MemoryRevocations::new()).base_url("/s/");
    let link = links.issue(Share::key(key("media/clip.mp4")).expires_in(Duration::from_secs(90))).await.unwrap();
    let shared = ServeShared::new(
        links.clone(),
        ServePrivate::new(storage.clone()).delivery(Delivery::presigned_redirect(None)),
    );
    let app = axum::Router::new().nest_service("/s", shared);
    let reply = common::send(&app, Method::GET, &link.url, None, &[]).await;
    assert_eq!(reply.status, 307);
    let location = reply.header("location").unwrap();
    let expires: u64 = url_param(location, "X-Amz-Expires").parse().unwrap();
    assert!((1..=90).contains(&expires), "capped by the link's remaining life: {expires}");
    assert_eq!(client().get(location).send().await.unwrap().text().await.unwrap(), "not really a video");
    links.revoke(&link).await.unwrap();
    let reply = common::send(&app, Method::GET, &link.url, None, &[]).await;
    assert_eq!(reply.status, 403);
    assert!(reply.header("location").is_none());
}

fn url_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"))
        .to_owned()
}

/// Posts `file` with the form's fields to the bucket, as a browser would.
/// `content_type` replaces the form's `Content-Type` field (the one the policy pins).
async fn post_form(form: &private_storage::PresignedPost, content_type: &str, file: Vec<u8>) -> reqwest::Response {
    let mut multipart = reqwest::multipart::Form::new();
    for (name, value) in &form.fields {
        let value = if name == "Content-Type" { content_type.to_owned() } else { value.clone() };
        multipart = multipart.text(name.clone(), value);
    }
    let part = reqwest::multipart::Part::bytes(file).file_name("upload").mime_str(content_type).unwrap();
    client().post(&form.url).multipart(multipart.part("file", part)).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_uploads_are_bounded_by_the_server_and_checked_when_finalised() {
    let server = servers::garage().await;
    let storage = Arc::new(server.builder().prefix("direct").conditional_writes(false).build().unwrap());
    let policy: UploadPolicy = UploadPolicy::from_arc(storage.clone())
        .content_types(["image/png", "application/pdf"])
        .max_file_size(64 * 1024)
        .upload_to("kept");
    let png = common::png(4, 3);

    // Within the policy: stored by the S3 server, then accepted when finalised.
    let form = storage
        .presigned_post(&PostPolicy::new(key("incoming/a1/photo.png"), 64 * 1024).content_type("image/png"))
        .await
        .unwrap();
    let posted = post_form(&form, "image/png", png.clone()).await;
    assert!(posted.status().is_success(), "{:?}: {}", posted.status(), posted.text().await.unwrap());
    let saved = policy.finalise_direct(&(), &form.key, Some("image/png"), None).await.unwrap();
    assert_eq!((saved.size, saved.content_type.as_str()), (png.len() as u64, "image/png"));
    assert_eq!(saved.sha256, common::sha256(&png));
    assert_eq!(saved.original_name, "photo.png");
    // What was checked is what is kept: under a key the form never named, the client's own
    // object gone. The form is still valid, and a replay cannot swap the kept bytes.
    assert!(saved.key.as_str().starts_with("kept/") && saved.key.file_name().ends_with(".png"), "{}", saved.key);
    assert!(!form.fields.iter().any(|(_, value)| value.contains(saved.key.as_str())));
    assert!(!storage.exists(&form.key).await.unwrap(), "the client's object is deleted");
    let html = b"<!doctype html><script>alert(document.cookie)</script>".to_vec();
    assert!(post_form(&form, "image/png", html.clone()).await.status().is_success(), "the form can be replayed");
    assert_eq!(storage.read(&saved.key).await.unwrap(), png, "the replay did not reach the kept object");
    storage.delete(&form.key).await.unwrap();

    // Over the size the form pins: the S3 server refuses it, nothing is stored.
    let small = storage
        .presigned_post(&PostPolicy::new(key("incoming/a2/big.png"), 1024).content_type("image/png"))
        .await
        .unwrap();
    let refused = post_form(&small, "image/png", common::pattern(4096, 1)).await;
    assert!(refused.status().is_client_error(), "{:?}", refused.status());
    assert!(!storage.exists(&key("incoming/a2/big.png")).await.unwrap());

    // A different declared type than the form pins: refused by the server, nothing stored.
    storage.delete(&form.key).await.unwrap();
    let refused = post_form(&form, "text/html", png.clone()).await;
    assert!(refused.status().is_client_error(), "{:?}", refused.status());
    assert!(!storage.exists(&form.key).await.unwrap());

    // A spoofed file (HTML declared as PNG) gets in, and is caught and deleted at finalise.
    let spoof = storage
        .presigned_post(&PostPolicy::new(key("incoming/a3/cat.png"), 64 * 1024).content_type("image/png"))
        .await
        .unwrap();
    assert!(post_form(&spoof, "image/png", html).await.status().is_success());
    let err = policy.finalise_direct(&(), &spoof.key, Some("image/png"), None).await.unwrap_err();
    assert_eq!(err.status(), 415, "{err}");
    assert!(!storage.exists(&spoof.key).await.unwrap(), "the spoofed object is deleted");

    // A checksum that does not match: deleted too.
    let form = storage
        .presigned_post(&PostPolicy::new(key("incoming/a4/photo.png"), 64 * 1024).content_type("image/png"))
        .await
        .unwrap();
    assert!(post_form(&form, "image/png", png.clone()).await.status().is_success());
    let err = policy.finalise_direct(&(), &form.key, Some("image/png"), Some(&"0".repeat(64))).await.unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(!storage.exists(&form.key).await.unwrap());
    let kept: Vec<_> = storage.list(Some(&key("kept"))).try_collect().await.unwrap();
    assert_eq!(kept.len(), 1, "only the accepted upload was kept: {kept:?}");
    let err = policy.finalise_direct(&(), &form.key, None, None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "nothing uploaded: {err}");

    // SSE-C storages cannot offer forms.
    let sse_c = server.builder().encryption(Encryption::Customer { key: [1; 32] }).build().unwrap();
    assert!(matches!(sse_c.presigned_post(&PostPolicy::new(key("x.png"), 10)).await, Err(Error::Config { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upload_policy_works_unchanged_on_s3() {
    let server = servers::s3s_fs().await;
    let storage: Arc<S3Storage> = Arc::new(server.builder().conditional_writes(false).build().unwrap());
    let policy: UploadPolicy =
        UploadPolicy::from_arc(storage.clone()).upload_to("docs").max_file_size(10 * 1024 * 1024);
    let pdf = [b"%PDF-1.7\n".as_slice(), &common::pattern(12 * 1024 * 1024, 4)].concat();
    let err = policy.save(&(), Upload::new("big.pdf", chunks(&pdf))).await.unwrap_err();
    assert_eq!(err.status(), 413);
    assert_eq!(pending_uploads(&server), Vec::<String>::new(), "the cut-off multipart upload was aborted");
    let small = [b"%PDF-1.7\n".as_slice(), &common::pattern(9 * 1024 * 1024, 4)].concat();
    let saved = policy.save(&(), Upload::new("report.pdf", chunks(&small))).await.unwrap();
    let again = policy.save(&(), Upload::new("report.pdf", chunks(&small))).await.unwrap();
    assert_eq!(saved.key.as_str(), "docs/report.pdf");
    assert_ne!(again.key, saved.key, "an existing name gets a suffix, never an overwrite");
    assert_eq!(saved.content_type, "application/pdf");
    assert_eq!(saved.sha256, common::sha256(&small));
    let listed: Vec<_> = storage.list(None).map(|m| m.unwrap().key.to_string()).collect().await;
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_streams_from_s3_after_the_rule_without_the_client_seeing_a_presigned_url() {
    let server = servers::garage().await;
    let storage = Arc::new(server.builder().prefix("via-nginx").conditional_writes(false).build().unwrap());
    let data = common::pattern(2 * 1024 * 1024 + 17, 5);
    let name = "users/alice/Grüße an alle.bin";
    storage.put_bytes(&key(name), data.clone()).await.unwrap();
    let service = ServePrivate::new(storage.clone())
        .rule(|file: private_storage::PrivateFile| async move {
            file.user().is_some_and(|u| file.key().as_str().starts_with(&format!("users/{}/", u.id())))
        })
        .delivery(Delivery::nginx_presigned("/_s3").unwrap());
    let backend = common::serve(common::app(service)).await;

    let base = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let locations = format!(
        "        location /private-media/ {{ proxy_pass http://{backend}; }}\n{}",
        private_storage::nginx_s3_location("/_s3", &server.endpoint)
    );
    let peer = common::nginx(base.path(), port, &locations);
    let url = format!("http://127.0.0.1:{port}/private-media/{}", key(name).to_url_path());
    let http = reqwest::Client::new();

    let full = http.get(&url).bearer_auth("alice").send().await.unwrap();
    assert_eq!(full.status(), 200, "{}", peer.log_text());
    let headers = full.headers().clone();
    assert!(headers.get("x-accel-redirect").is_none());
    assert!(headers.keys().all(|h| !h.as_str().starts_with("x-amz")), "{headers:?}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(full.bytes().await.unwrap() == data, "nginx streamed the object from S3");

    let ranged = http.get(&url).bearer_auth("alice").header("range", "bytes=1048570-1048580").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert!(ranged.bytes().await.unwrap() == data[1_048_570..=1_048_580]);

    let head = http.head(&url).bearer_auth("alice").send().await.unwrap();
    assert_eq!(
        (head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()),
        (200, data.len().to_string().as_str())
    );

    for user in [None, Some("bob")] {
        let mut request = http.get(&url);
        if let Some(user) = user {
            request = request.bearer_auth(user);
        }
        let denied = request.send().await.unwrap();
        assert_eq!(denied.status(), 403);
        assert!(denied.text().await.unwrap().len() < 100, "no bytes to a denied user");
    }
    let direct = http.get(format!("http://127.0.0.1:{port}/_s3/media/via-nginx/users/alice/x")).send().await.unwrap();
    assert_eq!(direct.status(), 404, "the internal location is not reachable from outside");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrating_local_to_s3_and_back_is_verified_and_resumable() {
    let server = servers::garage().await;
    let s3 = server.builder().prefix("migrated").conditional_writes(false).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = private_storage::LocalStorage::new(dir.path()).unwrap();
    let files: Vec<(String, Vec<u8>)> =
        (0..6).map(|i| (format!("users/{i}/Datei {i}.bin"), common::pattern(1000 + i * 300_000, i as u32))).collect();
    for (name, data) in &files {
        local.put_bytes(&key(name), data.clone()).await.unwrap();
    }
    // A previous run got two objects across, one of them wrongly (same size, other bytes).
    s3.put_bytes(&key(&files[0].0), files[0].1.clone()).await.unwrap();
    s3.put_bytes(&key(&files[1].0), vec![0u8; files[1].1.len()]).await.unwrap();

    let mut seen = Vec::new();
    let report =
        private_storage::migrate(&local, &s3, None, |p| seen.push((p.key.to_string(), p.skipped))).await.unwrap();
    assert_eq!((report.copied, report.skipped), (5, 1), "{seen:?}");
    assert_eq!(seen.len(), 6);
    for (name, data) in &files {
        assert!(s3.read(&key(name)).await.unwrap() == *data, "{name} arrived intact");
    }
    let again = private_storage::migrate(&local, &s3, None, |_| {}).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 6), "a finished migration has nothing left to do");

    // And back, only one folder.
    let back_dir = tempfile::tempdir().unwrap();
    let back = private_storage::LocalStorage::new(back_dir.path()).unwrap();
    let report = private_storage::migrate(&s3, &back, Some(&key("users/3")), |_| {}).await.unwrap();
    assert_eq!(report.copied, 1);
    assert!(back.read(&key(&files[3].0)).await.unwrap() == files[3].1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_stops_the_upstream_s3_transfer() {
    const LARGE: usize = 64 * 1024 * 1024;
    let server = servers::s3s_fs().await;
    let bodies = server.bodies.clone().unwrap();
    let storage = server.builder().conditional_writes(false).build().unwrap();
    storage.put(&key("large.bin"), chunks(&common::pattern(LARGE, 3)), PutOptions::default()).await.unwrap();
    let addr = common::serve(common::app(ServePrivate::new(storage).rule(allow_authenticated()))).await;
    let sent_before = bodies.bytes.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(bodies.open(), 0, "nothing is being sent before the download");

    let socket = common::get_partly(addr, "/private-media/large.bin", "alice", 1024 * 1024).await;
    assert_eq!(bodies.open(), 1, "the upstream GET is streaming while the client reads");
    drop(socket);
    until("the upstream response is dropped", || bodies.open() == 0).await;
    let sent = bodies.bytes.load(std::sync::atomic::Ordering::SeqCst) - sent_before;
    assert!(sent < LARGE as u64 / 2, "S3 sent {sent} of {LARGE} bytes for a client that took ~1 MiB");
}

/// Resumable uploads kept in the bucket: 8 MiB parts and a durable tail, continued by a second
/// "server" (another `S3Partials` over the same bucket), completed into place with the right
/// bytes; an ended or expired upload's multipart upload is aborted and nothing of it is left.
#[cfg(feature = "tus")]
#[tokio::test(flavor = "multi_thread")]
async fn resumable_uploads_live_in_the_bucket_and_any_server_continues_them() {
    use private_storage::tus::{Metadata, Patch, Resumable, S3Partials};
    let server = servers::garage().await;
    let storage = Arc::new(server.builder().prefix("tus").conditional_writes(false).build().unwrap());
    let policy: UploadPolicy = UploadPolicy::from_arc(storage.clone()).upload_to("done");
    let one = Resumable::new(policy.clone(), S3Partials::new(storage.clone()));
    let two = Resumable::new(policy.clone(), S3Partials::new(storage.clone()));
    let data = common::pattern(20 << 20, 3);
    let patch = |offset: usize, end: usize| Patch {
        offset: offset as u64,
        length: None,
        checksum: None,
        content_length: Some((end - offset) as u64),
        data: stream::iter([Ok(Bytes::copy_from_slice(&data[offset..end]))]).boxed(),
    };
    let meta = Metadata::parse("filename ZGF0YS5iaW4=").unwrap();
    let info = one.create("ada", Some(data.len() as u64), meta.clone()).await.unwrap();
    // Its objects are the staging area's: no key reaches them.
    let state = key(&format!(".ps-staging/tus/{}.json", info.id));
    assert!(matches!(storage.head(&state).await, Err(Error::NotFound { .. })));
    assert!(matches!(storage.get(&state, Default::default()).await, Err(Error::NotFound { .. })));
    assert!(storage.put_bytes(&state, "forged").await.is_err());
    // 3 MiB: no whole part yet, all of it in the tail.
    assert_eq!(one.patch(&(), "ada", &info.id, patch(0, 3 << 20)).await.unwrap().info.offset, 3 << 20);
    // The other server sees where it is and goes on: 7 MiB more, one part and a new tail.
    assert_eq!(two.info("ada", &info.id).await.unwrap().offset, 3 << 20);
    assert_eq!(two.patch(&(), "ada", &info.id, patch(3 << 20, 10 << 20)).await.unwrap().info.offset, 10 << 20);
    assert_eq!(server.unfinished_uploads().await, 1, "one multipart upload holds the parts");
    let done = one.patch(&(), "ada", &info.id, patch(10 << 20, data.len())).await.unwrap();
    let saved = done.saved.expect("the last bytes complete it");
    assert!(saved.key.as_str().starts_with("done/"), "{}", saved.key);
    assert_eq!((saved.size, saved.sha256.as_str()), (data.len() as u64, common::sha256(&data).as_str()));
    assert!(storage.read(&saved.key).await.unwrap() == data, "the bytes in place are the upload's");
    assert_eq!(server.unfinished_uploads().await, 0);
    assert_eq!(two.info("ada", &info.id).await.unwrap().offset, data.len() as u64, "done, on every server");

    // Ended, and expired: the multipart upload is aborted, nothing of either is left.
    let ended = one.create("ada", Some(data.len() as u64), meta.clone()).await.unwrap();
    two.patch(&(), "ada", &ended.id, patch(0, 9 << 20)).await.unwrap();
    let short_lived = Resumable::new(policy, S3Partials::new(storage.clone())).lifetime(Duration::ZERO);
    let expired = short_lived.create("ada", Some(data.len() as u64), meta).await.unwrap();
    assert_eq!(server.unfinished_uploads().await, 1);
    one.terminate("ada", &ended.id).await.unwrap();
    assert_eq!(short_lived.sweep().await.unwrap(), 1, "the expired upload (the finished one's state lives on)");
    assert_eq!(server.unfinished_uploads().await, 0);
    assert!(one.info("ada", &expired.id).await.is_err());
    let left: Vec<_> = storage.list(None).try_collect().await.unwrap();
    assert_eq!(left.iter().map(|m| m.key.to_string()).collect::<Vec<_>>(), [saved.key.to_string()], "only the file");
}

#[cfg(feature = "encryption")]
#[tokio::test(flavor = "multi_thread")]
async fn encrypted_objects_in_a_garage_bucket_keep_the_contract_hide_their_content_and_rotate() {
    use private_storage::{EncryptedStorage, GetOptions, Keyring, ObjectKey, Rewrap, Storage, StorageExt};
    let server = servers::garage().await;
    let raw = std::sync::Arc::new(server.builder().prefix("sealed").conditional_writes(false).build().unwrap());
    let k1 = Keyring::generate_entry("k1").unwrap();
    let k2 = Keyring::generate_entry("k2").unwrap();
    let storage = EncryptedStorage::new(raw.clone(), Keyring::parse(&k1).unwrap()).unwrap();
    conformance(&storage).await;

    // 9 MiB: stored through a multipart upload (parts of 8 MiB).
    let marker = common::pattern(24, 0xbeef);
    let mut content = common::pattern(9 << 20, 7);
    for at in [0, 5 << 20, (9 << 20) - 24] {
        content[at..at + 24].copy_from_slice(&marker);
    }
    let key = ObjectKey::new("videos/clip.mp4").unwrap();
    storage.put_bytes(&key, content.clone()).await.unwrap();
    let objects: Vec<_> = futures_util::TryStreamExt::try_collect::<Vec<_>>(raw.list(None)).await.unwrap();
    assert!(objects.len() > 10, "the conformance objects and the clip are in the bucket");
    for object in &objects {
        let stored = raw.read(&object.key).await.unwrap();
        assert!(!stored.windows(24).any(|w| w == marker), "the marker is in {}", object.key);
        assert!(!stored.windows(11).any(|w| w == b"hello world"), "conformance content in {}", object.key);
    }
    let middle = storage.get(&key, GetOptions::default().with_range((5 << 20) - 3..(5 << 20) + 30)).await.unwrap();
    assert_eq!(middle.bytes().await.unwrap()[..], content[(5 << 20) - 3..(5 << 20) + 30]);

    let before = raw.read(&key).await.unwrap();
    let rotating = EncryptedStorage::new(raw.clone(), Keyring::parse(&format!("{k2},{k1}")).unwrap()).unwrap();
    assert_eq!(rotating.rewrap(&key).await.unwrap(), Rewrap::Rewrapped);
    let after = raw.read(&key).await.unwrap();
    assert!(after.len() == before.len() && after[208..] == before[208..], "content bytes unchanged on S3");
    let new_only = EncryptedStorage::new(raw, Keyring::parse(&k2).unwrap()).unwrap();
    assert!(new_only.read(&key).await.unwrap() == content, "readable with k2 alone");
}
