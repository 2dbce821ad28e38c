//! File requests: upload-only links that take files into their owner's storage through the
//! same checks as every upload, and let the uploader learn nothing.

use axum::body::Body;
use http::Request;

use crate::common::{Auth, Reply, TestServer, multipart, pdf, server};

async fn create(s: &TestServer, token: &str, body: &str) -> Reply {
    let request = Request::post("/api/requests")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    s.send(request).await
}

/// Sends a file to a request as an uploader's browser would.
async fn send(s: &TestServer, url: &str, fields: &[(&str, &str)], name: &str, bytes: &[u8]) -> Reply {
    let (content_type, body) = multipart(fields, name, bytes);
    let request = Request::post(url)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap();
    s.send(request).await
}

#[tokio::test]
async fn a_file_request_takes_files_within_its_limits_and_tells_the_uploader_nothing_else() {
    let s = server(&[]).await;
    let (ada, root) = (s.user("ada", false, false).await, s.user("root", true, true).await);
    let created = create(
        &s,
        &ada,
        r#"{"title":"Receipts for March","max_files":2,"max_bytes":"200KiB","content_types":["application/pdf"],"password":"open sesame"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let url = created.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/r/"));

    let page = s.get(&url, &Auth::None).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("Receipts for March") && html.contains(r#"id="request-password""#), "{html}");

    let who = [("name", "Grace Hopper"), ("email", "grace@example.org")];
    let with_password = [who[0], who[1], ("password", "open sesame")];
    let no_password = send(&s, &url, &who, "receipt.pdf", &pdf(10_000)).await;
    assert_eq!(no_password.status, 401, "{}", no_password.text());
    let wrong = send(&s, &url, &[who[0], who[1], ("password", "guess")], "receipt.pdf", &pdf(10_000)).await;
    assert_eq!(wrong.status, 401);
    let nameless =
        send(&s, &url, &[("email", "grace@example.org"), ("password", "open sesame")], "r.pdf", &pdf(100)).await;
    assert_eq!(nameless.status, 400, "{}", nameless.text());
    let png = send(&s, &url, &with_password, "photo.png", b"\x89PNG\r\n\x1a\n0000").await;
    assert_eq!(png.status, 415, "only the types the request takes: {}", png.text());
    let too_big = send(&s, &url, &with_password, "big.pdf", &pdf(300_000)).await;
    assert_eq!(too_big.status, 422, "past max_bytes: {}", too_big.text());

    let first = send(&s, &url, &with_password, "receipt.pdf", &pdf(10_000)).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert!(first.text().contains("Received: receipt.pdf"), "{}", first.text());
    // A second uploader sends a file of the same name: nothing is overwritten, and they learn
    // nothing of the first.
    let other = [("name", "Ada"), ("email", "ada@example.net"), ("password", "open sesame")];
    let second = send(&s, &url, &other, "receipt.pdf", &pdf(20_000)).await;
    assert_eq!(second.status, 201, "{}", second.text());
    assert!(!second.text().contains("Grace") && !second.text().contains("grace@example.org"));
    let third = send(&s, &url, &other, "more.pdf", &pdf(1_000)).await;
    assert_eq!(third.status, 422, "past max_files: {}", third.text());
    assert!(third.text().contains("takes 2 file(s)"), "{}", third.text());

    // The uploader can list, fetch or probe nothing.
    let files = s.get("/api/files", &Auth::Bearer(&ada)).await.json();
    let ids: Vec<String> =
        files["files"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 2, "both files are the owner's: {files}");
    for reply in [&first, &second, &page] {
        assert!(ids.iter().all(|id| !reply.text().contains(id.as_str())), "no file id reaches the uploader");
    }
    for probe in [format!("{url}/receipt.pdf"), format!("{url}x"), format!("/files/{}/download", ids[0])] {
        let reply = s.get(&probe, &Auth::None).await;
        assert!(reply.status.is_client_error(), "{probe}: {}", reply.status);
        assert!(!reply.text().contains("Grace") && !reply.text().contains("%PDF"), "{probe}");
    }

    // The owner sees who sent what, from where; staff see it too.
    let requests = s.get("/api/requests", &Auth::Bearer(&ada)).await.json();
    let uploads = requests["requests"][0]["uploads"].as_array().unwrap().clone();
    assert_eq!(uploads.len(), 2);
    let grace = uploads.iter().find(|u| u["uploader_name"] == "Grace Hopper").unwrap();
    assert_eq!((grace["uploader_email"].as_str(), grace["size"].as_i64()), (Some("grace@example.org"), Some(10_000)));
    assert_eq!(requests["requests"][0]["files"], 2);
    assert_eq!(s.get("/api/requests", &Auth::Bearer(&root)).await.json()["requests"].as_array().unwrap().len(), 1);
    let owner_page = s.get("/requests", &Auth::Cookie(&s.login("ada").await.cookie)).await.text();
    assert!(owner_page.contains("Grace Hopper") && owner_page.contains("grace@example.org"), "{owner_page}");

    // Closed: the link answers as if it never existed.
    let id = requests["requests"][0]["id"].as_str().unwrap();
    let close = Request::delete(format!("/api/requests/{id}"))
        .header("authorization", format!("Bearer {ada}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(s.send(close).await.status, 204);
    assert_eq!(s.get(&url, &Auth::None).await.status, 404);
    assert_eq!(send(&s, &url, &with_password, "late.pdf", &pdf(100)).await.status, 404);
}

/// The owner's quota holds for uploads through requests too, and a refused upload gives its
/// room in the request back.
#[tokio::test]
async fn uploads_through_a_request_count_against_the_owners_quota() {
    let s = server(&[("quota_bytes", "50000")]).await;
    let ada = s.user("ada", false, false).await;
    let created = create(&s, &ada, r#"{"title":"Anything","max_files":5}"#).await;
    let url = created.json()["url"].as_str().unwrap().to_owned();
    let who = [("name", "Linus"), ("email", "linus@example.org")];
    assert_eq!(send(&s, &url, &who, "a.pdf", &pdf(30_000)).await.status, 201);
    let over = send(&s, &url, &who, "b.pdf", &pdf(30_000)).await;
    assert_eq!(over.status, 507, "{}", over.text());
    let requests = s.get("/api/requests", &Auth::Bearer(&ada)).await.json();
    assert_eq!(requests["requests"][0]["files"], 1, "the refused upload gave its room back");
    assert_eq!(s.get("/api/usage", &Auth::Bearer(&ada)).await.json()["used_bytes"], 30_000);
}
