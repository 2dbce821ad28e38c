//! Quotas: room held atomically by uploads in progress, on every upload path and across
//! instances; usage always the sum of the user's files.

use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http::Request;

use crate::common::{Auth, TestServer, multipart, pdf, server};

/// The user's usage as `GET /api/usage` reports it, checked against the sum of the sizes of the
/// files `GET /api/files` lists — the invariant, after every step.
async fn used(s: &TestServer, token: &str) -> i64 {
    let usage = s.get("/api/usage", &Auth::Bearer(token)).await.json();
    let files = s.get("/api/files?per_page=500", &Auth::Bearer(token)).await.json();
    let sum: i64 = files["files"].as_array().unwrap().iter().map(|f| f["size"].as_i64().unwrap()).sum();
    let used = usage["used_bytes"].as_i64().unwrap();
    assert_eq!(used, sum, "usage is the sum of the files: {usage}");
    assert_eq!(usage["used_files"].as_i64().unwrap(), files["total"].as_i64().unwrap());
    used
}

fn delete_request(token: &str, id: &str) -> Request<Body> {
    Request::delete(format!("/api/files/{id}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

fn upload_request(token: &str, name: &str, bytes: &[u8]) -> Request<Body> {
    let (content_type, body) = multipart(&[], name, bytes);
    Request::post("/api/files")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap()
}

/// Four uploads of 0.6 × the quota at once, `spread` over the given servers.
async fn four_at_once(servers: &[Arc<TestServer>], token: &str) -> Vec<(u16, String)> {
    let uploads = (0..4).map(|i| {
        let s = servers[i % servers.len()].clone();
        let request = upload_request(token, &format!("big-{i}.pdf"), &pdf(600_000));
        tokio::spawn(async move {
            let reply = s.send(request).await;
            (reply.status.as_u16(), reply.text())
        })
    });
    futures_util::future::join_all(uploads).await.into_iter().map(Result::unwrap).collect()
}

fn assert_one_committed(outcomes: &[(u16, String)]) {
    let committed = outcomes.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(committed, 1, "exactly one fits: {outcomes:?}");
    for (status, body) in outcomes.iter().filter(|(status, _)| *status != 201) {
        assert_eq!(*status, 507, "{body}");
        assert!(body.contains("quota of 976.6 KB"), "the message names the quota: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_cannot_pass_the_quota_and_every_path_is_counted() {
    let s = Arc::new(server(&[("quota_bytes", "1000000")]).await);
    let ada = s.user("ada", false, false).await;
    let staff = s.user("sam", true, false).await;
    assert_eq!(used(&s, &ada).await, 0);

    assert_one_committed(&four_at_once(std::slice::from_ref(&s), &ada).await);
    assert_eq!(used(&s, &ada).await, 600_000);
    let usage = s.get("/api/usage", &Auth::Bearer(&ada)).await.json();
    assert_eq!((usage["quota_bytes"].as_i64(), usage["reserved_bytes"].as_i64()), (Some(1_000_000), Some(0)));

    // A resumable upload holds its room from its creation.
    let tus = |length: &str| {
        let meta = format!("filename {}", base64::engine::general_purpose::STANDARD.encode("r.pdf"));
        Request::post("/api/uploads")
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {ada}"))
            .header("upload-length", length)
            .header("upload-metadata", meta)
            .body(Body::empty())
            .unwrap()
    };
    let refused = s.send(tus("500000")).await;
    assert_eq!(refused.status, 507, "{}", refused.text());
    let created = s.send(tus("300000")).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let usage = s.get("/api/usage", &Auth::Bearer(&ada)).await.json();
    assert_eq!(usage["reserved_bytes"].as_i64(), Some(300_000), "held while it is unfinished");
    let crowded = s.send(upload_request(&ada, "small.pdf", &pdf(200_000))).await;
    assert_eq!(crowded.status, 507, "the held room is not free: {}", crowded.text());
    assert!(crowded.text().contains("held by uploads in progress"), "{}", crowded.text());
    let url = created.header("location").unwrap().to_owned();
    let ended = s
        .send(
            Request::delete(&url)
                .header("tus-resumable", "1.0.0")
                .header("authorization", format!("Bearer {ada}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ended.status, 204);
    assert_eq!(s.get("/api/usage", &Auth::Bearer(&ada)).await.json()["reserved_bytes"].as_i64(), Some(0));
    let fits = s.send(upload_request(&ada, "small.pdf", &pdf(200_000))).await;
    assert_eq!(fits.status, 201, "{}", fits.text());
    assert_eq!(used(&s, &ada).await, 800_000);

    // A delete frees its room at once.
    let files = s.get("/api/files", &Auth::Bearer(&ada)).await.json();
    let big = files["files"].as_array().unwrap().iter().find(|f| f["size"] == 600_000).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = s.send(delete_request(&ada, &big)).await;
    assert!(deleted.status.is_success(), "{}", deleted.status);
    assert_eq!(used(&s, &ada).await, 200_000);
    assert_eq!(s.send(upload_request(&ada, "again.pdf", &pdf(600_000))).await.status, 201);
    assert_eq!(used(&s, &ada).await, 800_000);

    // Staff set a file quota on the users page; plain users may not.
    let page = s.get("/users", &Auth::Bearer(&staff)).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("data-user=\"ada\"") && page.text().contains("781.2 KB"), "{}", page.text());
    assert_eq!(s.get("/users", &Auth::Bearer(&ada)).await.status, 403);
    let session = s.login("sam").await;
    let set = s
        .form(
            "/users/ada/quota",
            &Auth::Cookie(&session.cookie),
            &[("csrf", &session.csrf), ("bytes", ""), ("files", "2")],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.text());
    let third = s.send(upload_request(&ada, "third.pdf", &pdf(1000))).await;
    assert_eq!(third.status, 507);
    assert!(third.text().contains("quota of 2 files"), "{}", third.text());
    assert_eq!(used(&s, &ada).await, 800_000);
    let index = s.get("/", &Auth::Bearer(&ada)).await.text();
    assert!(index.contains("781.2 KB used of 976.6 KB") && index.contains("2 of 2 files"), "the usage bar: {index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgresql_hold_one_users_quota_together() {
    let pg = crate::common::peers::Postgres::start();
    let media = tempfile::tempdir().unwrap();
    let storage = media.path().display().to_string();
    let settings = [("quota_bytes", "1000000"), ("database_url", pg.url.as_str()), ("storage", storage.as_str())];
    let a = Arc::new(server(&settings).await);
    let b = Arc::new(server(&settings).await);
    let ada = a.user("ada", false, false).await;
    assert_one_committed(&four_at_once(&[a.clone(), b.clone()], &ada).await);
    assert_eq!((used(&a, &ada).await, used(&b, &ada).await), (600_000, 600_000));
    // Once more, with the first file deleted on the other instance: its room is free at once.
    let files = b.get("/api/files", &Auth::Bearer(&ada)).await.json();
    let id = files["files"][0]["id"].as_str().unwrap().to_owned();
    let deleted = b.send(delete_request(&ada, &id)).await;
    assert!(deleted.status.is_success());
    assert_eq!(used(&a, &ada).await, 0);
    assert_one_committed(&four_at_once(&[a.clone(), b.clone()], &ada).await);
    assert_eq!(used(&b, &ada).await, 600_000);
}
