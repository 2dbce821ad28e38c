//! The audit trail: a scripted run's requests and its audit records match one to one; users see
//! the events on their own files; floods of forged tokens write nothing.

use axum::body::Body;
use http::Request;
use serde_json::Value;

use crate::common::{Auth, TestServer, pdf, server};

/// The events as `GET /api/audit` lists them for `token`, oldest first, once everything queued
/// is written.
async fn trail(s: &TestServer, token: &str) -> Vec<Value> {
    s.state.domain.audit().flush().await;
    let reply = s.get("/api/audit?limit=1000", &Auth::Bearer(token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut events = reply.json()["events"].as_array().unwrap().clone();
    events.reverse();
    events
}

/// An event as the test expects it: kind, actor, file, status, range, bytes planned.
type Expected = (&'static str, String, Option<String>, Option<u16>, Option<&'static str>, Option<u64>);

fn seen(event: &Value) -> Expected {
    let kind = event["kind"].as_str().unwrap();
    let known = [
        "login",
        "login_failed",
        "upload",
        "upload_refused",
        "download",
        "denied",
        "link_issued",
        "link_revoked",
        "delete",
    ];
    let kind = known.into_iter().find(|k| *k == kind).unwrap_or_else(|| panic!("unexpected kind {kind}"));
    let range = event["byte_range"].as_str().map(|r| match r {
        "bytes=0-99" => "bytes=0-99",
        other => panic!("unexpected range {other}"),
    });
    (
        kind,
        event["actor"].as_str().unwrap().to_owned(),
        event["file_id"].as_str().map(str::to_owned),
        event["status"].as_u64().map(|s| s as u16),
        range,
        event["bytes"].as_u64(),
    )
}

fn request(method: &str, uri: &str, token: Option<&str>, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).unwrap()
}

#[tokio::test]
async fn a_scripted_run_and_its_audit_trail_match_one_to_one() {
    scripted_run(&server(&[("max_file_size", "1MiB")]).await).await;
}

#[tokio::test]
async fn a_scripted_run_and_its_audit_trail_match_one_to_one_on_postgresql() {
    let pg = crate::common::peers::Postgres::start();
    let media = tempfile::tempdir().unwrap();
    let storage = media.path().display().to_string();
    let settings = [("max_file_size", "1MiB"), ("database_url", pg.url.as_str()), ("storage", storage.as_str())];
    scripted_run(&server(&settings).await).await;
}

async fn scripted_run(s: &TestServer) {
    let (ada, bob, root) =
        (s.user("ada", false, false).await, s.user("bob", false, false).await, s.user("root", true, true).await);
    let user = |name: &str| format!("user:{name}");
    let mut expected: Vec<Expected> = Vec::new();

    let session = s.login("ada").await;
    expected.push(("login", user("ada"), None, None, None, None));
    assert!(s.login_with("ada", "wrong password").await.is_err());
    expected.push(("login_failed", "anonymous".into(), None, None, None, None));

    let bytes = pdf(5_000);
    let uploaded = s.upload("/api/files", &Auth::Bearer(&ada), &[], "report.pdf", &bytes).await;
    assert_eq!(uploaded.status, 201);
    let id = uploaded.json()["id"].as_str().unwrap().to_owned();
    let file = Some(id.clone());
    expected.push(("upload", user("ada"), file.clone(), None, None, Some(5_000)));

    let download = format!("/files/{id}/download");
    let get = |token: Option<&str>, headers: &[(&str, &str)]| request("GET", &download, token, headers, Body::empty());
    assert_eq!(s.send(get(Some(&ada), &[])).await.status, 200);
    expected.push(("download", user("ada"), file.clone(), Some(200), None, Some(5_000)));
    assert_eq!(s.send(get(Some(&ada), &[("range", "bytes=0-99")])).await.status, 206);
    expected.push(("download", user("ada"), file.clone(), Some(206), Some("bytes=0-99"), Some(100)));
    assert_eq!(s.send(request("HEAD", &download, Some(&ada), &[], Body::empty())).await.status, 200);
    expected.push(("download", user("ada"), file.clone(), Some(200), None, Some(0)));
    let denied = s.send(get(Some(&bob), &[])).await.status.as_u16();
    assert_eq!(denied, 403);
    expected.push(("download", user("bob"), file.clone(), Some(denied), None, None));
    let anonymous = s.send(get(None, &[])).await.status.as_u16();
    expected.push(("download", "anonymous".into(), file.clone(), Some(anonymous), None, None));

    let key = s.state.db.file(&id, None).await.unwrap().unwrap().object_key.clone();
    let by_key = s.get(&format!("/private-media/{key}"), &Auth::Bearer(&root)).await;
    assert_eq!(by_key.status, 200);
    expected.push(("download", user("root"), file.clone(), Some(200), None, Some(5_000)));

    let share = request(
        "POST",
        &format!("/api/files/{id}/links"),
        Some(&ada),
        &[("content-type", "application/json")],
        Body::from(r#"{"expires":"1h"}"#),
    );
    let link = s.send(share).await.json();
    let (url, link_id) = (link["url"].as_str().unwrap().to_owned(), link["link_id"].as_str().unwrap().to_owned());
    expected.push(("link_issued", user("ada"), file.clone(), None, None, None));
    assert_eq!(s.get(&url, &Auth::None).await.status, 200);
    expected.push(("download", format!("link:{link_id}"), file.clone(), Some(200), None, Some(5_000)));
    // Forged tokens and invalid API tokens leave no row.
    for forged in ["/s/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/s/x"] {
        assert_eq!(s.get(forged, &Auth::None).await.status, 403);
    }
    assert_eq!(s.get(&download, &Auth::Bearer("ps_not-a-token")).await.status, 401);

    let revoked =
        s.form(&format!("/links/{link_id}/revoke"), &Auth::Cookie(&session.cookie), &[("csrf", &session.csrf)]).await;
    assert_eq!(revoked.status, 303, "{}", revoked.text());
    expected.push(("link_revoked", user("ada"), file.clone(), None, None, None));
    assert_eq!(s.get(&url, &Auth::None).await.status, 403);
    expected.push(("download", format!("link:{link_id}"), file.clone(), Some(403), None, None));

    let too_big = s.upload("/api/files", &Auth::Bearer(&bob), &[], "big.pdf", &pdf(2 << 20)).await;
    assert_eq!(too_big.status, 413);
    expected.push(("upload_refused", user("bob"), None, Some(413), None, None));

    let delete = request("DELETE", &format!("/api/files/{id}"), Some(&ada), &[], Body::empty());
    assert_eq!(s.send(delete).await.status, 204);
    expected.push(("delete", user("ada"), file.clone(), None, None, None));

    let events = trail(s, &root).await;
    let got: Vec<Expected> = events.iter().map(seen).collect();
    assert_eq!(got, expected, "one record per request, in order");
    for event in &events {
        assert!(event["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{event}");
        assert!(event["route"].as_str().is_some_and(|r| r.contains(' ')), "{event}");
        assert!(event["time"].as_str().unwrap().ends_with('Z'));
    }
    let downloads: Vec<_> = events.iter().filter(|e| e["kind"] == "download").collect();
    assert!(downloads.iter().filter(|e| e["status"].as_u64().unwrap() < 300).all(|e| e["delivery"] == "stream"));
    assert!(events.iter().all(|e| !e["route"].as_str().unwrap().contains(&url[3..])), "tokens are not kept");
    let failed = events.iter().find(|e| e["kind"] == "login_failed").unwrap();
    assert!(failed["detail"].as_str().unwrap().contains("ada"), "{failed}");

    // Users read the events on their own files only; staff read everything.
    let own = trail(s, &ada).await;
    assert_eq!(own.len(), events.iter().filter(|e| e["file_id"] == id.as_str()).count());
    assert!(own.iter().all(|e| e["owner_id"] == events[2]["owner_id"]));
    assert!(trail(s, &bob).await.is_empty(), "bob owns no file");
    let filtered = s.get("/api/audit?kind=download&actor=user:ada", &Auth::Bearer(&root)).await.json();
    assert_eq!(filtered["events"].as_array().unwrap().len(), 3);
    // By file: on SQLite through its batch-built index (a process's first batch is indexed as
    // it is written) and the rows written since, on PostgreSQL through its index.
    let mut by_file = s.get(&format!("/api/audit?file={id}&limit=1000"), &Auth::Bearer(&root)).await.json()["events"]
        .as_array()
        .unwrap()
        .clone();
    by_file.reverse();
    let of_file: Vec<_> = events.iter().filter(|e| e["file_id"] == id.as_str()).cloned().collect();
    assert!(of_file.len() >= 3, "{of_file:?}");
    assert_eq!(by_file, of_file);
    s.state.db.index_audit_now().await.unwrap();
    let again = s.get(&format!("/api/audit?file={id}&limit=2"), &Auth::Bearer(&root)).await.json();
    assert_eq!(again["events"].as_array().unwrap(), &of_file.iter().rev().take(2).cloned().collect::<Vec<_>>());
    let page = s.get("/audit?kind=delete", &Auth::Cookie(&s.login("root").await.cookie)).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.text().matches(r#"data-kind="delete""#).count(), 1, "{}", page.text());

    // Retention: events before the cutoff go, the later ones stay.
    let third = events[2]["at"].as_i64().unwrap();
    assert_eq!(s.state.db.purge_audit(third).await.unwrap(), 2);
    assert_eq!(trail(s, &root).await.len(), events.len() - 2 + 1, "(the page's login is an event too)");
}

/// The delivery mode of each download is the one that carried it.
#[tokio::test]
async fn downloads_record_the_delivery_mode_that_carried_them() {
    for (mode, recorded) in [("nginx", "nginx"), ("apache", "apache"), ("stream", "stream")] {
        let s = server(&[("delivery", mode)]).await;
        let ada = s.user("ada", false, false).await;
        let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(1000)).await.json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await.status, 200);
        let events = trail(&s, &ada).await;
        let download = events.iter().find(|e| e["kind"] == "download").unwrap();
        assert_eq!(download["delivery"], recorded, "{mode}: {download}");
    }
}
