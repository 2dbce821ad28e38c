//! Resumable uploads (tus) through the server's `/api/uploads`: the same rules as every upload.

use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use http::Request;

use crate::common::{Auth, Reply, TestServer, pdf, server};

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn tus(method: &str, uri: &str, auth: &Auth<'_>, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri).header("tus-resumable", "1.0.0");
    request = match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.header("authorization", format!("Bearer {token}")),
        Auth::Cookie(cookie) => request.header("cookie", *cookie),
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).unwrap()
}

async fn create(s: &TestServer, auth: &Auth<'_>, length: usize, name: &str) -> Reply {
    let meta = format!("filename {}", base64::engine::general_purpose::STANDARD.encode(name));
    let len = length.to_string();
    s.send(tus("POST", "/api/uploads", auth, &[("upload-length", &len), ("upload-metadata", &meta)], Body::empty()))
        .await
}

async fn patch(s: &TestServer, auth: &Auth<'_>, url: &str, offset: usize, bytes: &[u8]) -> Reply {
    let offset = offset.to_string();
    let headers = [("upload-offset", offset.as_str()), ("content-type", "application/offset+octet-stream")];
    s.send(tus("PATCH", url, auth, &headers, Body::from(bytes.to_vec()))).await
}

#[tokio::test]
async fn a_finished_upload_becomes_a_file_record_and_not_before() {
    let s = server(&[("content_types", "application/pdf")]).await;
    let ada = s.user("ada", false, false).await;
    let auth = Auth::Bearer(&ada);
    let options = s.send(tus("OPTIONS", "/api/uploads", &Auth::None, &[], Body::empty())).await;
    assert_eq!((options.status.as_u16(), options.header("tus-max-size")), (204, Some("104857600")));

    let data = pdf(200_000);
    let created = create(&s, &auth, data.len(), "Quarterly report.pdf").await;
    assert_eq!(created.status, 201, "{}", created.text());
    let url = created.header("location").unwrap().to_owned();
    assert!(url.starts_with("/api/uploads/"), "{url}");
    let first = patch(&s, &auth, &url, 0, &data[..120_000]).await;
    assert_eq!((first.status.as_u16(), first.header("upload-offset")), (204, Some("120000")));
    let listed = s.get("/api/files", &auth).await.json();
    assert_eq!(listed["total"], 0, "an unfinished upload is in no list");

    let last = patch(&s, &auth, &url, 120_000, &data[120_000..]).await;
    assert_eq!(last.status, 204, "{}", last.text());
    let file = last.header("x-file-location").expect("where the file is").to_owned();
    let shown = s.get(&file, &auth).await.json();
    assert_eq!((shown["name"].as_str(), shown["size"].as_i64()), (Some("Quarterly report.pdf"), Some(200_000)));
    assert_eq!(shown["sha256"].as_str().unwrap(), sha256_hex(&data));
    let id = shown["id"].as_str().unwrap();
    let download = s.get(&format!("/files/{id}/download"), &auth).await;
    assert_eq!((download.status.as_u16(), &download.body[..]), (200, &data[..]));
    assert_eq!(s.get("/api/files", &auth).await.json()["total"], 1);

    // A whole file in the creation request (creation-with-upload) is a file at once.
    let small = pdf(30_000);
    let len = small.len().to_string();
    let headers = [("upload-length", len.as_str()), ("content-type", "application/offset+octet-stream")];
    let at_once = s.send(tus("POST", "/api/uploads", &auth, &headers, Body::from(small.clone()))).await;
    assert_eq!((at_once.status.as_u16(), at_once.header("upload-offset")), (201, Some("30000")));
    let file = at_once.header("x-file-location").expect("where the file is").to_owned();
    assert_eq!(s.get(&file, &auth).await.json()["sha256"].as_str().unwrap(), sha256_hex(&small));
    let left: Vec<_> = std::fs::read_dir(s.dir.path().join("data/uploads")).unwrap().collect();
    assert_eq!(left.len(), 2, "only the finished uploads' states, until they expire: {left:?}");
}

#[tokio::test]
async fn only_the_creator_sees_an_upload_and_sessions_need_the_csrf_token() {
    let s = server(&[]).await;
    let (ada, bob) = (s.user("ada", false, false).await, s.user("bob", false, true).await);
    let url = create(&s, &Auth::Bearer(&ada), 5000, "a.pdf").await.header("location").unwrap().to_owned();
    for auth in [Auth::Bearer(&bob), Auth::None] {
        let head = s.send(tus("HEAD", &url, &auth, &[], Body::empty())).await;
        assert!(matches!(head.status.as_u16(), 401 | 404), "{}", head.status);
        assert!(matches!(patch(&s, &auth, &url, 0, &pdf(5000)).await.status.as_u16(), 401 | 404));
    }
    assert_eq!(
        s.send(tus("HEAD", &url, &Auth::Bearer(&bob), &[], Body::empty())).await.status,
        404,
        "even a superuser"
    );
    let head = s.send(tus("HEAD", &url, &Auth::Bearer(&ada), &[], Body::empty())).await;
    assert_eq!((head.status.as_u16(), head.header("upload-offset")), (200, Some("0")));

    let session = s.login("ada").await;
    let cookie = Auth::Cookie(&session.cookie);
    assert_eq!(create(&s, &cookie, 10, "x.pdf").await.status, 403, "no X-CSRF-Token");
    let len_meta = [("upload-length", "5000"), ("x-csrf-token", session.csrf.as_str())];
    let created = s.send(tus("POST", "/api/uploads", &cookie, &len_meta, Body::empty())).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let old = s.send(tus("DELETE", &url, &cookie, &[], Body::empty())).await;
    assert_eq!(old.status, 403, "a session's DELETE needs the token too");
    let ended = s.send(tus("DELETE", &url, &cookie, &[("x-csrf-token", &session.csrf)], Body::empty())).await;
    assert_eq!(ended.status, 204);
    assert_eq!(s.send(tus("HEAD", &url, &Auth::Bearer(&ada), &[], Body::empty())).await.status, 404);
}

#[tokio::test]
async fn the_policy_refuses_at_the_first_moment_it_can() {
    let s = server(&[("content_types", "application/pdf"), ("max_file_size", "100KiB")]).await;
    let ada = s.user("ada", false, false).await;
    let auth = Auth::Bearer(&ada);
    assert_eq!(create(&s, &auth, 200_000, "big.pdf").await.status, 413, "a declared length over max_file_size");

    let mut exe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec();
    exe.resize(50_000, 0);
    let url = create(&s, &auth, exe.len(), "invoice.pdf").await.header("location").unwrap().to_owned();
    let refused = patch(&s, &auth, &url, 0, &exe[..20_000]).await;
    assert_eq!(refused.status, 415, "{}", refused.text());
    assert_eq!(s.send(tus("HEAD", &url, &auth, &[], Body::empty())).await.status, 404, "the upload was ended");

    let url = create(&s, &auth, 20_000, "a.pdf").await.header("location").unwrap().to_owned();
    let wrong = patch(&s, &auth, &url, 10, &pdf(100)).await;
    assert_eq!(wrong.status, 409);
    let past = s
        .send(tus(
            "PATCH",
            &url,
            &auth,
            &[("upload-offset", "0"), ("content-type", "application/offset+octet-stream"), ("content-length", "20001")],
            Body::from(vec![b'%'; 20_001]),
        ))
        .await;
    assert_eq!(past.status, 413, "a body past Upload-Length, refused from its Content-Length");
    assert_eq!(s.get("/api/files", &auth).await.json()["total"], 0);
}

#[tokio::test]
async fn a_tus_upload_takes_one_of_the_users_upload_slots() {
    let s = server(&[("max_uploads_per_user", "1")]).await;
    let ada = s.user("ada", false, false).await;
    let auth = Auth::Bearer(&ada);
    let data = pdf(100_000);
    let first = create(&s, &auth, data.len(), "a.pdf").await.header("location").unwrap().to_owned();
    let second = create(&s, &auth, data.len(), "b.pdf").await.header("location").unwrap().to_owned();
    // The first PATCH holds its slot while its body is still arriving.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = futures_util::stream::unfold(receiver, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    sender.send(Bytes::copy_from_slice(&data[..50_000])).await.unwrap();
    let headers = [("upload-offset", "0"), ("content-type", "application/offset+octet-stream")];
    let request = tus("PATCH", &first, &auth, &headers, Body::from_stream(body));
    let app = s.app.clone();
    let held = tokio::spawn(async move { tower::ServiceExt::oneshot(app, request).await.unwrap().status() });
    let user = s.state.db.user_by_name("ada").await.unwrap().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while s.state.domain.uploads().running(&user.id) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the first PATCH took its slot");
    assert_eq!(patch(&s, &auth, &second, 0, &data).await.status, 429, "a second transfer at once");
    sender.send(Bytes::copy_from_slice(&data[50_000..])).await.unwrap();
    drop(sender);
    assert_eq!(held.await.unwrap(), 204);
    assert_eq!(patch(&s, &auth, &second, 0, &data).await.status, 204, "the slot is free again");
}

#[tokio::test]
async fn expired_uploads_answer_410_and_are_swept() {
    let s = server(&[("upload_expiry", "0s")]).await;
    let ada = s.user("ada", false, false).await;
    let auth = Auth::Bearer(&ada);
    let url = create(&s, &auth, 5000, "a.pdf").await.header("location").unwrap().to_owned();
    assert_eq!(s.send(tus("HEAD", &url, &auth, &[], Body::empty())).await.status, 410);
    assert_eq!(patch(&s, &auth, &url, 0, &pdf(5000)).await.status, 410);
    assert_eq!(s.state.domain.sweep_uploads().await.unwrap(), 1);
    assert_eq!(std::fs::read_dir(s.dir.path().join("data/uploads")).unwrap().count(), 0);
    assert_eq!(s.send(tus("HEAD", &url, &auth, &[], Body::empty())).await.status, 404);
}

#[tokio::test]
async fn another_instances_lease_holds_the_upload_until_it_runs_out() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let auth = Auth::Bearer(&ada);
    let data = pdf(20_000);
    let url = create(&s, &auth, data.len(), "a.pdf").await.header("location").unwrap().to_owned();
    let id = url.rsplit('/').next().unwrap();
    let now = private_storage_server::db::now();
    // Another instance is writing the upload: this one says so, and reads still work.
    assert!(s.state.db.lease_upload(id, "another-instance", now + 60).await.unwrap());
    let locked = patch(&s, &auth, &url, 0, &data).await;
    assert_eq!(locked.status, 423, "{}", locked.text());
    assert_eq!(s.send(tus("DELETE", &url, &auth, &[], Body::empty())).await.status, 423);
    assert_eq!(s.send(tus("HEAD", &url, &auth, &[], Body::empty())).await.header("upload-offset"), Some("0"));
    // It died holding it: once its lease ran out, this instance takes over.
    assert!(s.state.db.lease_upload(id, "another-instance", now - 1).await.unwrap());
    assert_eq!(patch(&s, &auth, &url, 0, &data).await.status, 204);
}
