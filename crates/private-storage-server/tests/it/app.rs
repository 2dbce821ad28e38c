//! Every route and rule of the server through `oneshot`, on the embedded default (SQLite and
//! a local folder).
use crate::common;

use crate::common::{Auth, field, pdf, server, sha256, stored_files};
use axum::body::Body;
use http::{Request, StatusCode};

#[tokio::test]
async fn anonymous_visitors_are_sent_to_the_login_page_which_protects_itself() {
    let s = server(&[]).await;
    let index = s.get("/", &Auth::None).await;
    assert_eq!((index.status, index.header("location")), (StatusCode::SEE_OTHER, Some("/login")));
    let page = s.get("/login", &Auth::None).await;
    assert_eq!(page.status, 200);
    let cookie = page.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self';") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
}

#[tokio::test]
async fn login_needs_the_form_token_and_the_password_and_rotates_the_session() {
    let s = server(&[]).await;
    s.user("ada", false, false).await;
    // Wrong password: 401, the message, no session.
    let wrong = s.login_with("ada", "not-her-password").await.err().unwrap();
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("Wrong user name or password."));
    assert!(wrong.cookie("ps_session").is_none());
    // Unknown user: the same answer.
    let unknown = s.login_with("nobody", "whatever-password").await.err().unwrap();
    assert_eq!(
        (unknown.status, unknown.text().contains("Wrong user name or password.")),
        (StatusCode::UNAUTHORIZED, true)
    );
    // No CSRF cookie (a cross-site post): refused, no session.
    let forged =
        s.form("/login", &Auth::None, &[("username", "ada"), ("password", "password-ada"), ("csrf", "guess")]).await;
    assert_eq!(forged.status, 403);
    assert!(forged.cookie("ps_session").is_none());

    let first = s.login("ada").await;
    assert!(first.set_cookie.contains("HttpOnly") && first.set_cookie.contains("SameSite=Lax"), "{}", first.set_cookie);
    assert!(!first.set_cookie.contains("Secure"), "no TLS configured");
    assert_eq!(s.get("/", &Auth::Cookie(&first.cookie)).await.status, 200);
    // Logging in again gives a new session id; the old one no longer works.
    let page = s.get("/login", &Auth::None).await;
    let (login_cookie, csrf) = (page.cookie("ps_login_csrf").unwrap(), field(&page.text(), "csrf"));
    let cookies = format!("ps_login_csrf={login_cookie}; {}", first.cookie);
    let again = s
        .form("/login", &Auth::Cookie(&cookies), &[("username", "ada"), ("password", "password-ada"), ("csrf", &csrf)])
        .await;
    let second = again.cookie("ps_session").unwrap();
    assert_ne!(format!("ps_session={second}"), first.cookie);
    assert_eq!(s.get("/", &Auth::Cookie(&first.cookie)).await.status, StatusCode::SEE_OTHER, "the old session ended");
}

#[tokio::test]
async fn secure_cookies_behind_tls() {
    let s = server(&[("public_url", "https://files.example.com")]).await;
    s.user("ada", false, false).await;
    let session = s.login("ada").await;
    assert!(session.set_cookie.starts_with("__Host-ps_session=") && session.set_cookie.contains("; Secure"));
    assert!(session.cookie.starts_with("__Host-ps_session="));
    assert_eq!(s.get("/", &Auth::Cookie(&session.cookie)).await.status, 200, "the prefixed cookie is the session");
    let plain = session.cookie.trim_start_matches("__Host-");
    assert_eq!(s.get("/", &Auth::Cookie(plain)).await.status, 303, "an unprefixed cookie is not, over TLS");
}

#[tokio::test]
async fn after_login_only_same_origin_paths_are_followed() {
    let s = server(&[]).await;
    s.user("ada", false, false).await;
    let session = s.login("ada").await;
    let cookie = Auth::Cookie(&session.cookie);
    // As the query arrives: percent-encoded tabs, newlines and backslashes; other origins.
    for next in
        ["/%09/evil.example/", "/%0d%0a/evil.example", "//evil.example", "/%5Cevil.example", "https:evil.example"]
    {
        let reply = s.get(&format!("/login?next={next}"), &cookie).await;
        assert_eq!((reply.status.as_u16(), reply.header("location")), (303, Some("/")), "{next}");
    }
    let reply = s.get("/login?next=/files/abc", &cookie).await;
    assert_eq!(reply.header("location"), Some("/files/abc"));
}

#[tokio::test]
async fn a_storage_that_holds_the_data_folder_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for storage in [data.clone(), dir.path().to_owned()] {
        let flags = vec![
            ("data_dir".to_owned(), data.display().to_string()),
            ("storage".to_owned(), storage.display().to_string()),
        ];
        let config = private_storage_server::Loader::new().flags(&flags).unwrap().build().unwrap();
        let e = private_storage_server::AppState::build(config).await.unwrap_err().to_string();
        assert!(e.contains("`storage`") && e.contains("`data_dir`"), "{e}");
    }
    // A SQLite database elsewhere, but inside the storage, is refused as well.
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let flags = vec![
        ("data_dir".to_owned(), data.display().to_string()),
        ("storage".to_owned(), media.display().to_string()),
        ("database_url".to_owned(), format!("sqlite://{}?mode=rwc", media.join("x.db").display())),
    ];
    let config = private_storage_server::Loader::new().flags(&flags).unwrap().build().unwrap();
    let e = private_storage_server::AppState::build(config).await.unwrap_err().to_string();
    assert!(e.contains("`storage`") && e.contains("`database_url`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_guesses_cannot_pass_the_login_limit() {
    let s = std::sync::Arc::new(server(&[]).await);
    s.user("ada", false, false).await;
    // The login form's CSRF check is a double submit: any matching cookie and field pass it.
    let guesses: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let fields = [("username", "ada"), ("password", &format!("guess-{i}")[..]), ("csrf", "x")];
                s.form("/login", &Auth::Cookie("ps_login_csrf=x"), &fields).await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, limited), (5, 195), "only the cap reaches the password check: {statuses:?}");
    let metrics = s.get("/metrics", &Auth::None).await.text();
    assert!(metrics.contains("private_storage_denied_total{kind=\"login\"} 5"), "{metrics}");
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let s = server(&[]).await;
    s.user("ada", false, false).await;
    for _ in 0..5 {
        assert_eq!(s.login_with("ada", "wrong-password").await.err().unwrap().status, 401);
    }
    let limited = s.login_with("ada", "password-ada").await.err().unwrap();
    assert_eq!(limited.status, 429, "even the right password waits");
    assert!(limited.text().contains("Too many failed attempts"));
    assert!(s.login_with("bob", "wrong-password").await.err().unwrap().status == 401, "other names are not affected");
}

#[tokio::test]
async fn expired_sessions_are_anonymous_and_logout_ends_a_session() {
    let s = server(&[("session_ttl", "0s")]).await;
    s.user("ada", false, false).await;
    let page = s.get("/login", &Auth::None).await;
    let (login_cookie, csrf) = (page.cookie("ps_login_csrf").unwrap(), field(&page.text(), "csrf"));
    let reply = s
        .form(
            "/login",
            &Auth::Cookie(&format!("ps_login_csrf={login_cookie}")),
            &[("username", "ada"), ("password", "password-ada"), ("csrf", &csrf)],
        )
        .await;
    let expired = format!("ps_session={}", reply.cookie("ps_session").unwrap());
    assert_eq!(s.get("/", &Auth::Cookie(&expired)).await.status, StatusCode::SEE_OTHER);
    assert_eq!(s.get("/api/files", &Auth::Cookie(&expired)).await.status, StatusCode::UNAUTHORIZED);

    let s = server(&[]).await;
    s.user("ada", false, false).await;
    let session = s.login("ada").await;
    let no_token = s.form("/logout", &Auth::Cookie(&session.cookie), &[("csrf", "wrong")]).await;
    assert_eq!(no_token.status, 403, "logout needs the form token too");
    let out = s.form("/logout", &Auth::Cookie(&session.cookie), &[("csrf", &session.csrf)]).await;
    assert_eq!((out.status, out.header("location")), (StatusCode::SEE_OTHER, Some("/login")));
    assert_eq!(s.get("/", &Auth::Cookie(&session.cookie)).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_api_uploads_lists_shows_downloads_and_deletes_only_what_the_user_may() {
    let s = server(&[]).await;
    let (ada, bob, staff) =
        (s.user("ada", false, false).await, s.user("bob", false, false).await, s.user("sam", true, false).await);
    let bytes = pdf(3000);
    let created = s.upload("/api/files", &Auth::Bearer(&ada), &[], "Bericht März.pdf", &bytes).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let file = created.json();
    assert_eq!(file["name"], "Bericht März.pdf");
    assert_eq!(file["size"], 3000);
    assert_eq!(file["content_type"], "application/pdf");
    assert_eq!(file["sha256"], sha256(&bytes));
    let id = file["id"].as_str().unwrap().to_owned();
    assert_eq!(file["url"], format!("/files/{id}/download"));
    assert!(file["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(created.header("location"), Some(format!("/api/files/{id}").as_str()));

    let listed = s.get("/api/files", &Auth::Bearer(&ada)).await.json();
    assert_eq!((listed["total"].as_i64(), listed["files"][0]["id"].as_str()), (Some(1), Some(id.as_str())));
    assert_eq!(s.get("/api/files", &Auth::Bearer(&bob)).await.json()["total"], 0, "bob sees only his files");
    let everyone = s.get("/api/files", &Auth::Bearer(&staff)).await.json();
    assert_eq!((everyone["total"].as_i64(), everyone["files"][0]["owner"].as_str()), (Some(1), Some("ada")));
    assert_eq!(s.get(&format!("/api/files/{id}"), &Auth::Bearer(&ada)).await.json()["name"], "Bericht März.pdf");
    assert_eq!(s.get(&format!("/api/files/{id}"), &Auth::Bearer(&bob)).await.status, 404);

    let download = s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await;
    assert_eq!(download.status, 200);
    assert!(download.body == bytes);
    assert_eq!(download.header("content-type"), Some("application/pdf"));
    let ranged = s
        .send(
            Request::get(format!("/files/{id}/download"))
                .header("authorization", format!("Bearer {ada}"))
                .header("range", "bytes=10-19")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((ranged.status.as_u16(), &ranged.body[..]), (206, &bytes[10..20]));
    assert_eq!(s.get(&format!("/files/{id}/download"), &Auth::Bearer(&staff)).await.status, 200, "staff may");
    // Someone else's file, an unknown id and no login all get the same answer.
    let theirs = s.get(&format!("/files/{id}/download"), &Auth::Bearer(&bob)).await;
    let unknown = s.get("/files/nope/download", &Auth::Bearer(&bob)).await;
    let anonymous = s.get(&format!("/files/{id}/download"), &Auth::None).await;
    assert_eq!(
        (theirs.status, unknown.status, anonymous.status),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN, StatusCode::FORBIDDEN)
    );
    assert_eq!(theirs.body, unknown.body);

    let denied = s
        .send(
            Request::delete(format!("/api/files/{id}"))
                .header("authorization", format!("Bearer {bob}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(denied.status, 404);
    let deleted = s
        .send(
            Request::delete(format!("/api/files/{id}"))
                .header("authorization", format!("Bearer {ada}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await.status, 403);
    assert!(stored_files(&s).is_empty(), "the bytes are gone too: {:?}", stored_files(&s));
}

#[tokio::test]
async fn bad_uploads_get_clear_answers_and_store_nothing() {
    let s = server(&[("max_file_size", "10KiB"), ("content_types", "application/pdf,image/*")]).await;
    let ada = s.user("ada", false, false).await;
    let too_big = s.upload("/api/files", &Auth::Bearer(&ada), &[], "big.pdf", &pdf(20_000)).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["error"], "The file may not be larger than 10.0 KB.");
    let exe = [b"MZ\x90\x00\x03\x00\x00\x00".as_slice(), &[0u8; 200]].concat();
    let spoofed = s.upload("/api/files", &Auth::Bearer(&ada), &[], "invoice.pdf", &exe).await;
    assert_eq!(spoofed.status, 415, "{}", spoofed.text());
    let html =
        s.upload("/api/files", &Auth::Bearer(&ada), &[], "cat.png", b"<html><script>alert(1)</script></html>").await;
    assert_eq!(html.status, 415);
    let empty = s.upload("/api/files", &Auth::Bearer(&ada), &[], "empty.pdf", b"").await;
    assert_eq!(empty.status, 400);
    let bogus = s.upload("/api/files", &Auth::Bearer("ps_not-a-token"), &[], "a.pdf", &pdf(100)).await;
    assert_eq!(bogus.status, 401);
    assert_eq!(bogus.header("www-authenticate"), Some("Bearer"));
    let anonymous = s.upload("/api/files", &Auth::None, &[], "a.pdf", &pdf(100)).await;
    assert_eq!(anonymous.status, 401);
    assert!(stored_files(&s).is_empty(), "{:?}", stored_files(&s));
    assert_eq!(s.get("/api/files", &Auth::Bearer(&ada)).await.json()["total"], 0);
    let metrics = s.get("/metrics", &Auth::None).await.text();
    assert!(metrics.contains("private_storage_upload_rejections_total{reason=\"too_large\"} 1"), "{metrics}");
    assert!(metrics.contains("private_storage_upload_rejections_total{reason=\"unsupported_type\"} 2"), "{metrics}");
    assert!(metrics.contains("private_storage_denied_total{kind=\"bad_token\"} 1"), "{metrics}");
}

#[tokio::test]
async fn the_upload_form_needs_its_token_and_shows_errors_next_to_it() {
    let s = server(&[("max_file_size", "10KiB")]).await;
    s.user("ada", false, false).await;
    let session = s.login("ada").await;
    let cookie = Auth::Cookie(&session.cookie);
    let forged = s.upload("/upload", &cookie, &[], "a.pdf", &pdf(100)).await;
    assert_eq!(forged.status, 403, "a cross-site form post has no token");
    let forged_api = s.upload("/api/files", &cookie, &[], "a.pdf", &pdf(100)).await;
    assert_eq!(forged_api.status, 403, "nor does a script on another site");
    assert!(stored_files(&s).is_empty());

    let too_big = s.upload("/upload", &cookie, &[("csrf", &session.csrf)], "big.pdf", &pdf(20_000)).await;
    assert_eq!(too_big.status, 413);
    let page = too_big.text();
    assert!(page.contains("id=\"upload-error\" role=\"alert\">The file may not be larger than 10.0 KB.</p>"), "{page}");

    let ok = s.upload("/upload", &cookie, &[("csrf", &session.csrf)], "notes <1>.pdf", &pdf(500)).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let index = s.get(ok.header("location").unwrap(), &cookie).await.text();
    assert!(
        index.contains("Uploaded notes &lt;1&gt;.pdf.") && !index.contains("notes <1>"),
        "names are escaped in pages: {index}"
    );
    assert_eq!(stored_files(&s).len(), 1);
    // With the header instead of the field (the page's script), the API accepts it too.
    let request = Request::post("/api/files").header("cookie", &session.cookie).header("x-csrf-token", &session.csrf);
    let (content_type, body) = common::multipart(&[], "b.pdf", &pdf(300));
    let reply = s.send(request.header("content-type", content_type).body(Body::from(body)).unwrap()).await;
    assert_eq!(reply.status, 201);
}

#[tokio::test]
async fn the_pages_list_files_and_delete_with_confirmation() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    s.user("sam", true, false).await;
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "plan.pdf", &pdf(100)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = s.login("ada").await;
    let cookie = Auth::Cookie(&session.cookie);
    let index = s.get("/", &cookie).await.text();
    // (The template escapes `/` too, as `&#x2f;`.)
    assert!(
        index.contains("plan.pdf") && index.contains("100 bytes") && index.contains("application&#x2f;pdf"),
        "{index}"
    );
    let staff = s.login("sam").await;
    let all = s.get("/", &Auth::Cookie(&staff.cookie)).await.text();
    assert!(all.contains("All files") && all.contains("<td>ada</td>"), "staff see owners");

    let file_page = s.get(&format!("/files/{id}"), &cookie).await;
    assert!(file_page.text().contains("plan.pdf"));
    assert!(file_page.text().contains("<dd>100 bytes</dd>") && !file_page.text().contains("bytes bytes"));
    let confirm = s.get(&format!("/files/{id}/delete"), &cookie).await;
    assert!(confirm.text().contains("Delete plan.pdf?"));
    let no_token = s.form(&format!("/files/{id}/delete"), &cookie, &[("csrf", "x")]).await;
    assert_eq!(no_token.status, 403);
    assert_eq!(stored_files(&s).len(), 1);
    let deleted = s.form(&format!("/files/{id}/delete"), &cookie, &[("csrf", &session.csrf)]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(stored_files(&s).is_empty());
    assert!(!s.get("/", &cookie).await.text().contains("plan.pdf"));
}

#[tokio::test]
async fn private_media_follows_the_configured_rule_and_refuses_traversal() {
    for (rule, ada_status) in [("allow_superuser", 403), ("allow_staff", 403), ("allow_authenticated", 200)] {
        let s = server(&[("auth_function", rule)]).await;
        let (ada, root) = (s.user("ada", false, false).await, s.user("root", false, true).await);
        s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(100)).await;
        let key = s.state.db.files(None, 1, 0).await.unwrap().0[0].file.object_key.clone();
        let url = format!("/private-media/{key}");
        assert_eq!(s.get(&url, &Auth::Bearer(&ada)).await.status.as_u16(), ada_status, "{rule}");
        assert_eq!(s.get(&url, &Auth::Bearer(&root)).await.status, 200, "{rule}");
        assert_eq!(s.get(&url, &Auth::None).await.status, 403, "{rule}");
        // The superuser may read everything, so a key that is absent gets 404: a spelling that
        // is not a key at all gets exactly the same answer, never a 403 that tells them apart.
        let missing = s.get("/private-media/files/no-such-file.pdf", &Auth::Bearer(&root)).await;
        assert_eq!(missing.status, 404, "{rule}");
        for hostile in [
            "/private-media/../data/private-storage.db",
            "/private-media/%2e%2e/share-keys",
            "/private-media/files/..%2f..%2fshare-keys",
            "/private-media//etc/passwd",
            &format!("/private-media//{key}"),
            &format!("/private-media/./{key}"),
        ] {
            let reply = s.get(hostile, &Auth::Bearer(&root)).await;
            assert_eq!((reply.status, &reply.body), (missing.status, &missing.body), "{hostile}");
        }
    }
    let s = server(&[("on_denied", "login")]).await;
    let reply = s.get("/private-media/x.pdf", &Auth::None).await;
    assert_eq!((reply.status.as_u16(), reply.header("location")), (302, Some("/login?next=/private-media/x.pdf")));
}

#[tokio::test]
async fn share_links_work_without_login_until_revoked_and_are_audited() {
    let s = server(&[]).await;
    let (ada, bob) = (s.user("ada", false, false).await, s.user("bob", false, false).await);
    let bytes = pdf(5000);
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "deck.pdf", &bytes).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let share = |token: &str, body: &str| {
        Request::post(format!("/api/files/{id}/links"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    assert_eq!(s.send(share(&bob, r#"{"expires":"1h"}"#)).await.status, 404, "only the owner shares");
    assert_eq!(s.send(share(&ada, r#"{"expires":"30d"}"#)).await.status, 422, "longer than share_max_lifetime");
    let link = s.send(share(&ada, r#"{"expires":"1h","attachment":true}"#)).await;
    assert_eq!(link.status, 201, "{}", link.text());
    let link = link.json();
    let url = link["url"].as_str().unwrap().to_owned();
    let got = s.get(&url, &Auth::None).await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    assert!(got.header("content-disposition").unwrap().starts_with("attachment"));
    assert_eq!(got.header("referrer-policy"), Some("no-referrer"));
    let ranged = s.send(Request::get(&url).header("range", "bytes=0-3").body(Body::empty()).unwrap()).await;
    assert_eq!((ranged.status.as_u16(), &ranged.body[..]), (206, &b"%PDF"[..]));
    let last = if url.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &url[..url.len() - 1]);
    assert_eq!(s.get(&tampered, &Auth::None).await.status, 403);

    // The file's page lists the live link; revoking it there ends it.
    let session = s.login("ada").await;
    let page = s.get(&format!("/files/{id}"), &Auth::Cookie(&session.cookie)).await.text();
    let link_id = link["link_id"].as_str().unwrap();
    assert!(page.contains(link_id), "{page}");
    let revoked =
        s.form(&format!("/links/{link_id}/revoke"), &Auth::Cookie(&session.cookie), &[("csrf", &session.csrf)]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let refused = s.get(&url, &Auth::None).await;
    assert_eq!(refused.status, 403);
    assert!(!s.get(&format!("/files/{id}"), &Auth::Cookie(&session.cookie)).await.text().contains(link_id));

    // A link bound to a user needs that user's login.
    let bound = s.send(share(&ada, r#"{"expires":"1h","user":"bob"}"#)).await.json();
    let bound_url = bound["url"].as_str().unwrap();
    assert_eq!(s.get(bound_url, &Auth::None).await.status, 403);
    assert_eq!(s.get(bound_url, &Auth::Bearer(&ada)).await.status, 403);
    assert_eq!(s.get(bound_url, &Auth::Bearer(&bob)).await.status, 200);

    // Issue and use events are in the database (recorded in the background).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let events = s.state.db.share_events(link_id).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        if kinds.contains(&"issued") && kinds.iter().filter(|k| **k == "used").count() >= 3 {
            assert!(events.iter().any(|e| e.detail.contains("outcome=refused")), "{events:?}");
            assert!(events.iter().any(|e| e.detail.contains("range=bytes=0-3")), "{events:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "audit events missing: {events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn forged_share_tokens_are_counted_not_written_and_the_audit_trail_is_bounded() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "deck.pdf", &pdf(500)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = Request::post(format!("/api/files/{id}/links"))
        .header("authorization", format!("Bearer {ada}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"expires":"1h"}"#))
        .unwrap();
    let link = s.send(request).await.json();
    let (url, link_id) = (link["url"].as_str().unwrap(), link["link_id"].as_str().unwrap());

    for i in 0..50 {
        assert_eq!(s.get(&format!("/s/garbage-{i}"), &Auth::None).await.status, 403);
    }
    let huge_range = format!("bytes=0-3,{}", "7-8,".repeat(2500));
    let reply = s.send(Request::get(url).header("range", &huge_range).body(Body::empty()).unwrap()).await;
    assert!(reply.status.is_success(), "{}", reply.status);

    // The link's own events (issued, used) arrive in the background; nothing else is written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let events = loop {
        let events = s.state.db.share_events(link_id).await.unwrap();
        if events.len() == 2 {
            break events;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(s.state.db.share_event_count().await.unwrap(), 2, "forged tokens write no rows");
    assert!(events[1].detail.len() < 200, "the stored Range is cut: {}", events[1].detail.len());
    let metrics = s.get("/metrics", &Auth::None).await.text();
    assert!(metrics.contains("private_storage_denied_total{kind=\"share_token\"} 50"), "{metrics}");

    // Retention: what is older than the cutoff goes.
    assert_eq!(s.state.db.purge_share_events(private_storage_server::db::now() + 1).await.unwrap(), 2);
    assert_eq!(s.state.db.share_event_count().await.unwrap(), 0);
}

#[tokio::test]
async fn client_file_names_are_cleaned_once_and_shown_escaped() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let sent = "inv\u{202E}fdp.exe\t\u{2066}<b>.pdf";
    let reply = s.upload("/api/files", &Auth::Bearer(&ada), &[], sent, &pdf(300)).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json()["name"], "invfdp.exe<b>.pdf", "controls and reordering characters removed");
    let session = s.login("ada").await;
    let index = s.get("/", &Auth::Cookie(&session.cookie)).await.text();
    assert!(index.contains("invfdp.exe&lt;b&gt;.pdf") && !index.contains("<b>.pdf"), "{index}");
}

#[tokio::test]
async fn request_bodies_are_bounded_everywhere() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    // Pages and API calls: 413 past 64 KiB, before the body is buffered.
    let huge = "a".repeat(1 << 20);
    let login = s.form("/login", &Auth::None, &[("username", "ada"), ("password", &huge), ("csrf", "x")]).await;
    assert_eq!(login.status, 413);
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(100)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let share = Request::post(format!("/api/files/{id}/links"))
        .header("authorization", format!("Bearer {ada}"))
        .header("content-type", "application/json")
        .body(Body::from(format!(r#"{{"expires":"1h","user":"{huge}"}}"#)))
        .unwrap();
    assert_eq!(s.send(share).await.status, 413);
    // Upload forms: a text field is read up to 64 KiB, and a form has at most 64 fields.
    let session = s.login("ada").await;
    let cookie = Auth::Cookie(&session.cookie);
    let long_csrf = s.upload("/api/files", &cookie, &[("csrf", &huge)], "b.pdf", &pdf(100)).await;
    assert_eq!(long_csrf.status, 400, "{}", long_csrf.text());
    assert!(long_csrf.json()["error"].as_str().unwrap().contains("longer than 64 KiB"));
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("f{i}"), "x".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let crowded = s.upload("/api/files", &Auth::Bearer(&ada), &many, "c.pdf", &pdf(100)).await;
    assert_eq!(crowded.status, 400, "{}", crowded.text());
    assert!(crowded.json()["error"].as_str().unwrap().contains("more than 64 fields"));
    assert_eq!(crate::common::stored_files(&s).len(), 1, "only the first upload was stored");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    assert_eq!(s.get("/healthz", &Auth::None).await.text(), "ok");
    assert_eq!(s.get("/readyz", &Auth::None).await.status, 200);
    s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(1234)).await;
    let id = s.get("/api/files", &Auth::Bearer(&ada)).await.json()["files"][0]["id"].as_str().unwrap().to_owned();
    s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await;
    s.get(&format!("/files/{id}/download"), &Auth::None).await;
    let metrics = s.get("/metrics", &Auth::None).await;
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let text = metrics.text();
    for line in [
        "private_storage_uploads_total 1",
        "private_storage_bytes_served_total 1234",
        "private_storage_denied_total{kind=\"download\"} 1",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[tokio::test]
async fn a_database_that_goes_away_fails_closed() {
    let s = server(&[("auth_function", "allow_authenticated")]).await;
    let ada = s.user("ada", false, false).await;
    s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(100)).await;
    let session = s.login("ada").await;
    let key = s.state.db.files(None, 1, 0).await.unwrap().0[0].file.object_key.clone();
    s.state.db.close().await;
    assert_eq!(s.get("/readyz", &Auth::None).await.status, 503);
    for auth in [Auth::Bearer(&ada), Auth::Cookie(&session.cookie)] {
        let reply = s.get(&format!("/private-media/{key}"), &auth).await;
        assert_eq!(reply.status, 503, "no decision, no bytes");
        assert!(!reply.text().contains("%PDF"));
    }
    assert_eq!(s.get(&format!("/private-media/{key}"), &Auth::None).await.status, 403);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let s = server(&[]).await;
    let a = s.get("/healthz", &Auth::None).await;
    let b = s.get("/healthz", &Auth::None).await;
    let (a, b) = (a.header("x-request-id").unwrap().to_owned(), b.header("x-request-id").unwrap().to_owned());
    assert!(a.len() >= 12 && a != b, "{a} {b}");
    let given =
        s.send(Request::get("/healthz").header("x-request-id", "from-the-proxy").body(Body::empty()).unwrap()).await;
    assert_eq!(given.header("x-request-id"), Some("from-the-proxy"), "an id from the proxy in front is kept");
}

#[tokio::test]
async fn an_unknown_record_is_404_for_staff_and_the_denial_for_others() {
    let s = server(&[]).await;
    let (ada, staff) = (s.user("ada", false, false).await, s.user("sam", true, false).await);
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(100)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = "00000000000000000000";
    assert_eq!(s.get(&format!("/files/{unknown}/download"), &Auth::Bearer(&staff)).await.status, 404);
    assert_eq!(s.get(&format!("/files/{id}/download"), &Auth::Bearer(&staff)).await.status, 200);
    for auth in [Auth::Bearer(&ada), Auth::None] {
        assert_eq!(s.get(&format!("/files/{unknown}/download"), &auth).await.status, 403, "ids are not enumerable");
    }
}

/// Downloads by record are named after the record, in every delivery mode and for every client.
#[tokio::test]
async fn downloads_by_record_carry_the_records_name() {
    let expected =
        "attachment; filename=\"Quartalsbericht Marz.pdf\"; filename*=UTF-8''Quartalsbericht%20M%C3%A4rz.pdf";
    for delivery in ["stream", "nginx", "apache"] {
        let s = server(&[("delivery", delivery)]).await;
        let ada = s.user("ada", false, false).await;
        let uploaded = s.upload("/api/files", &Auth::Bearer(&ada), &[], "Quartalsbericht März.pdf", &pdf(100)).await;
        let id = uploaded.json()["id"].as_str().unwrap().to_owned();
        let url = format!("/files/{id}/download");
        for agent in ["curl/8.5.0", "Mozilla/5.0 (Windows NT 10.0) Chrome/131.0"] {
            let request = Request::get(&url)
                .header("authorization", format!("Bearer {ada}"))
                .header("user-agent", agent)
                .body(Body::empty())
                .unwrap();
            let reply = s.send(request).await;
            assert_eq!(reply.status, 200, "{delivery}");
            assert_eq!(reply.header("content-disposition"), Some(expected), "{delivery}, {agent}");
        }
        let inline = s.get(&format!("{url}?inline=1"), &Auth::Bearer(&ada)).await;
        assert!(inline.header("content-disposition").unwrap().starts_with("inline;"), "{delivery}");
    }
}

#[tokio::test]
async fn the_configured_delivery_mode_hands_off_after_the_rule() {
    let s = server(&[("delivery", "nginx"), ("internal_url", "/_files")]).await;
    let ada = s.user("ada", false, false).await;
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(100)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = s.state.db.file(&id, None).await.unwrap().unwrap().object_key.clone();
    let reply = s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty(), "nginx sends the bytes");
    assert_eq!(reply.header("x-accel-redirect"), Some(format!("/_files/{key}").as_str()));
    let denied = s.get(&format!("/files/{id}/download"), &Auth::None).await;
    assert!(denied.header("x-accel-redirect").is_none());

    let s = server(&[("delivery", "apache")]).await;
    let ada = s.user("ada", false, false).await;
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "a.pdf", &pdf(100)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = s.get(&format!("/files/{id}/download"), &Auth::Bearer(&ada)).await;
    let path = reply.header("x-sendfile").unwrap();
    assert!(path.starts_with('/') && std::path::Path::new(path).is_file(), "{path}");
    assert!(reply.header("etag").is_some(), "Apache gets our validators");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_files_of_a_crashed_upload_are_removed_by_the_serving_server_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = vec![("data_dir".to_owned(), data.display().to_string())];
    let config = private_storage_server::Loader::new().flags(&flags).unwrap().build().unwrap();
    drop(private_storage_server::AppState::build(config.clone()).await.unwrap());
    // What a process killed mid-upload leaves, a while ago: a staging file nobody writes to,
    // never visible as a file.
    let folder = data.join("media/files/2026/11/someone");
    std::fs::create_dir_all(&folder).unwrap();
    let staged = folder.join(".ps-tmp-abc123");
    std::fs::write(&staged, b"half an upload").unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&staged).unwrap().set_modified(an_hour_ago).unwrap();

    // Opening everything (what every command does) removes nothing.
    let state = private_storage_server::AppState::build(config).await.unwrap();
    assert!(staged.exists(), "only a serving server sweeps");
    assert!(futures_util::TryStreamExt::try_collect::<Vec<_>>(state.storage.list(None)).await.unwrap().is_empty());

    // Serving sweeps at start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(private_storage_server::serve(state, listener, async move {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while staged.exists() {
        assert!(std::time::Instant::now() < deadline, "the serving server never swept");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn uploads_fan_out_by_id_and_files_of_the_earlier_layout_are_still_served() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let mut buckets = std::collections::BTreeSet::new();
    for i in 0..8 {
        let created = s.upload("/api/files", &Auth::Bearer(&ada), &[], &format!("f{i}.pdf"), &pdf(1000)).await;
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let key = s.state.db.file(&id, None).await.unwrap().unwrap().object_key.clone();
        // files/YYYY/MM/<owner>/<xx>/<upload id>/<name>, xx the upload id's first byte.
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 7, "{key}");
        assert!(parts[4].len() == 2 && parts[5].starts_with(parts[4]) && parts[5].len() == 20, "{key}");
        buckets.insert(parts[4].to_owned());
    }
    assert!(buckets.len() > 1, "spread over buckets: {buckets:?}");

    // A file stored under the layout before the fan-out (no bucket level) downloads as before.
    let id = s.upload("/api/files", &Auth::Bearer(&ada), &[], "old.pdf", &pdf(2000)).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let row = s.state.db.file(&id, None).await.unwrap().unwrap();
    let old_key =
        private_storage::ObjectKey::new(format!("files/2026/11/{}/0123456789abcdef0123/old.pdf", row.owner_id))
            .unwrap();
    let bytes = private_storage::StorageExt::read(
        &*s.state.storage,
        &private_storage::ObjectKey::new(&row.object_key).unwrap(),
    )
    .await
    .unwrap();
    private_storage::StorageExt::put_bytes(&*s.state.storage, &old_key, bytes.clone()).await.unwrap();
    s.state.db.delete_file(&id).await.unwrap();
    let old =
        private_storage_server::db::FileRow { id: "00aa".repeat(5), object_key: old_key.to_string(), ..(*row).clone() };
    s.state.db.insert_file(&old).await.unwrap();
    let got = s.get(&format!("/files/{}/download", old.id), &Auth::Bearer(&ada)).await;
    assert_eq!((got.status.as_u16(), &got.body[..]), (200, &bytes[..]));
}

/// Totals are counted up to 10,000: exactly that many is exact; one more is "more than
/// 10,000", and the pages still lead on past the 200th.
#[tokio::test]
async fn listing_totals_are_counted_up_to_ten_thousand() {
    use private_storage_server::db::{COUNTED_UP_TO, FileRow, ScanState, new_id};
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let owner = s.state.db.user_by_name("ada").await.unwrap().unwrap().id;
    let row = |n: i64| {
        let id = new_id();
        FileRow {
            object_key: format!("files/x/{id}"),
            id,
            owner_id: owner.clone(),
            name: format!("f{n}.txt"),
            size: 1,
            content_type: "text/plain".into(),
            sha256: String::new(),
            created: 1_700_000_000 + n,
            scan: ScanState::Clean,
            scan_detail: None,
        }
    };
    for n in 0..COUNTED_UP_TO {
        s.state.db.insert_file(&row(n)).await.unwrap();
    }
    let listed = s.get("/api/files", &Auth::Bearer(&ada)).await.json();
    assert_eq!((listed["total"].as_i64(), listed["total_is_exact"].as_bool()), (Some(COUNTED_UP_TO), Some(true)));
    s.state.db.insert_file(&row(COUNTED_UP_TO)).await.unwrap();
    let listed = s.get("/api/files", &Auth::Bearer(&ada)).await.json();
    assert_eq!((listed["total"].as_i64(), listed["total_is_exact"].as_bool()), (Some(COUNTED_UP_TO), Some(false)));
    // 10,100 files, 50 a page: page 201 is full, past the count, and leads on; so does the
    // last full one (202: more cannot be told from fewer there), and 203, empty, ends.
    for n in COUNTED_UP_TO + 1..COUNTED_UP_TO + 100 {
        s.state.db.insert_file(&row(n)).await.unwrap();
    }
    let page = s.get("/?page=201", &Auth::Bearer(&ada)).await.text();
    assert!(page.contains("(10000+)"), "{page}");
    assert!(page.contains("page=202"), "a full page past the count leads on");
    assert!(!s.get("/?page=203", &Auth::Bearer(&ada)).await.text().contains("page=204"), "the pages end");
}
