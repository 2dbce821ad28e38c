//! Share links at every edge: passwords on every route (walked from the router itself),
//! download limits counted once per logical download (also in parallel, on SQLite and on
//! PostgreSQL with two instances), pages for people and metadata for preview bots, policy,
//! management and cache safety.

use std::sync::Arc;

use axum::body::Body;
use http::Request;

use crate::common::{Auth, Reply, TestServer, server};

/// A file whose bytes are recognisable anywhere in an answer.
fn secret_pdf() -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend(b"THE-SECRET-CONTENT-OF-THE-SHARED-FILE ".repeat(200));
    bytes
}

const MARKER: &str = "THE-SECRET-CONTENT-OF-THE-SHARED-FILE";

async fn upload(s: &TestServer, token: &str, name: &str, bytes: &[u8]) -> String {
    let reply = s.upload("/api/files", &Auth::Bearer(token), &[], name, bytes).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// Creates a link with the JSON `body`; the reply.
async fn share(s: &TestServer, token: &str, id: &str, body: &str) -> Reply {
    let request = Request::post(format!("/api/files/{id}/links"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    s.send(request).await
}

async fn link(s: &TestServer, token: &str, id: &str, body: &str) -> (String, String) {
    let reply = share(s, token, id, body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let json = reply.json();
    (json["url"].as_str().unwrap().to_owned(), json["link_id"].as_str().unwrap().to_owned())
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

const BROWSER: &[(&str, &str)] = &[
    ("accept", "text/html,application/xhtml+xml"),
    ("sec-fetch-dest", "document"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"),
];

fn has_bytes(reply: &Reply) -> bool {
    String::from_utf8_lossy(&reply.body).contains(MARKER)
}

/// The link's form: gives the password, returns the unlock cookie (`name=value`).
async fn unlock(s: &TestServer, url: &str, password: &str) -> Result<String, Reply> {
    let request = Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("password={}", password.replace(' ', "+"))))
        .unwrap();
    let reply = s.send(request).await;
    if reply.status != 303 {
        return Err(reply);
    }
    let set = reply.header("set-cookie").unwrap().to_owned();
    assert!(set.contains(&format!("Path={url};")), "scoped to the link: {set}");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    Ok(set.split(';').next().unwrap().to_owned())
}

/// Every route of the router, every method, with the route's parameters filled in with the
/// password link's token, its file's id, its link id and its owner: none answers a byte of the
/// file to a client without the password — a fresh browser, or another logged-in user — and
/// none hands it to nginx or redirects to it.
#[tokio::test]
async fn no_route_of_the_router_returns_a_password_links_bytes_without_the_password() {
    for delivery in ["stream", "nginx"] {
        let s = server(&[("delivery", delivery)]).await;
        let (ada, bob) = (s.user("ada", false, false).await, s.user("bob", false, false).await);
        let id = upload(&s, &ada, "secret.pdf", &secret_pdf()).await;
        let (url, link_id) = link(&s, &ada, &id, r#"{"expires":"1h","password":"correct horse"}"#).await;
        let token = url.trim_start_matches("/s/").to_owned();
        let key = s.state.db.file(&id, None).await.unwrap().unwrap().object_key.clone();
        let paths = private_storage_server::http::route_paths(&s.state);
        assert!(paths.contains(&"/s/{token}") && paths.len() > 30, "{paths:?}");
        let mut tried = 0;
        for path in &paths {
            let filled = path
                .replace("{token}", &token)
                .replace("{id}", &id)
                .replace("{link_id}", &link_id)
                .replace("{name}", "ada");
            let filled = if *path == "/private-media" { format!("/private-media/{key}") } else { filled };
            for uri in [filled.clone(), format!("{filled}?inline=1"), format!("{filled}?dl=1")] {
                for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
                    for auth in [None, Some(bob.as_str())] {
                        for headers in [&[][..], BROWSER, &[("range", "bytes=0-99")][..]] {
                            let mut request = Request::builder().method(method).uri(&uri);
                            if let Some(token) = auth {
                                request = request.header("authorization", format!("Bearer {token}"));
                            }
                            for (name, value) in headers {
                                request = request.header(*name, *value);
                            }
                            let reply = s.send(request.body(Body::empty()).unwrap()).await;
                            tried += 1;
                            let route = format!("{delivery}: {method} {uri} as {auth:?} with {headers:?}");
                            assert!(!has_bytes(&reply), "{route} answered the file's bytes");
                            assert!(reply.header("x-accel-redirect").is_none(), "{route} handed the file to nginx");
                            if let Some(location) = reply.header("location") {
                                assert!(!location.contains(&key), "{route} redirected to the file: {location}");
                            }
                        }
                    }
                }
            }
        }
        assert!(tried > 1000, "{tried}");
        // And with the password, the link works (the check above is not vacuous).
        let cookie = unlock(&s, &url, "correct horse").await.unwrap();
        let reply = s.send(get(&format!("{url}?dl=1"), &[("cookie", &cookie)])).await;
        match delivery {
            "stream" => assert!(has_bytes(&reply), "{}", reply.status),
            _ => assert!(reply.header("x-accel-redirect").is_some()),
        }
        assert_eq!(reply.header("cache-control"), Some("private, no-store"));
    }
}

#[tokio::test]
async fn a_password_link_asks_for_its_password_everywhere_and_limits_attempts() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let id = upload(&s, &ada, "secret.pdf", &secret_pdf()).await;
    let (url, _) = link(&s, &ada, &id, r#"{"password":"correct horse"}"#).await;
    let (other, _) = link(&s, &ada, &id, r#"{"password":"another one"}"#).await;

    let page = s.send(get(&url, BROWSER)).await;
    assert_eq!(page.status, 401);
    let html = page.text();
    assert!(html.contains(r#"id="unlock""#) && !html.contains("secret.pdf"), "the locked page names nothing: {html}");
    for variant in [url.clone(), format!("{url}?dl=1"), format!("{url}?inline=1")] {
        let reply = s.send(get(&variant, &[])).await;
        assert_eq!(reply.status, 401, "{variant}");
        assert!(!has_bytes(&reply) && reply.text().contains("password"), "{variant}");
    }

    let wrong = unlock(&s, &url, "wrong guess").await.unwrap_err();
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("Wrong password."));
    let cookie = unlock(&s, &url, "correct horse").await.unwrap();
    let bytes = s.send(get(&url, &[("cookie", &cookie)])).await;
    assert!(bytes.status == 200 && has_bytes(&bytes));
    assert_eq!(bytes.header("cache-control"), Some("private, no-store"));
    let ranged = s.send(get(&url, &[("cookie", &cookie), ("range", "bytes=0-8")])).await;
    assert_eq!((ranged.status.as_u16(), ranged.body.as_ref()), (206, &b"%PDF-1.7\n"[..]));
    let page = s.send(get(&url, &[("cookie", &cookie), BROWSER[0], BROWSER[1]])).await;
    assert!(page.status == 200 && page.text().contains("secret.pdf"), "unlocked, the page shows the file");
    // The cookie opens its own link only.
    assert_eq!(s.send(get(&other, &[("cookie", &cookie)])).await.status, 401);

    // Attempts are limited per link.
    for _ in 0..5 {
        assert_eq!(unlock(&s, &other, "guess").await.unwrap_err().status, 401);
    }
    let limited = unlock(&s, &other, "guess").await.unwrap_err();
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(unlock(&s, &other, "another one").await.unwrap_err().status, 429, "even the right one, for now");
}

/// Counting: a whole download counts one; a run of range requests from one client (a video
/// seeking, a resumed `curl -C -`) counts one; `HEAD`, the page and preview bots count none;
/// past the limit, 410.
#[tokio::test]
async fn downloads_are_counted_once_per_logical_download() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let id = upload(&s, &ada, "secret.pdf", &secret_pdf()).await;
    let (url, link_id) = link(&s, &ada, &id, r#"{"max_downloads":2}"#).await;
    let downloads = || async { s.state.db.link(&link_id).await.unwrap().unwrap().downloads };
    let curl = [("user-agent", "curl/8.11")];

    assert_eq!(s.send(Request::head(&url).body(Body::empty()).unwrap()).await.status, 200);
    let page = s.send(get(&url, BROWSER)).await;
    assert!(page.status == 200 && page.text().contains("Downloads left") && !has_bytes(&page));
    assert!(!page.text().contains("?inline=1"), "no preview on a limited link: it would use a download");
    assert!(page.text().contains("a preview would use one"));
    let bot = s.send(get(&url, &[("user-agent", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)")])).await;
    assert!(bot.status == 200 && !has_bytes(&bot) && bot.text().contains("og:title"));
    assert_eq!(downloads().await, 0, "HEAD, the page and a bot count nothing");

    assert!(has_bytes(&s.send(get(&url, &curl)).await));
    assert_eq!(downloads().await, 1);
    // `curl -C -`: the same client resumes with a range: the same download.
    assert_eq!(s.send(get(&url, &[curl[0], ("range", "bytes=4000-")])).await.status, 206);
    assert_eq!(downloads().await, 1);
    // A video in another browser: its first range counts, its seeks do not.
    let video = [("user-agent", "Mozilla/5.0 Firefox/133.0"), ("range", "bytes=0-")];
    assert_eq!(s.send(get(&url, &video)).await.status, 206);
    for seek in ["bytes=3000-", "bytes=100-199", "bytes=7000-"] {
        assert_eq!(s.send(get(&url, &[video[0], ("range", seek)])).await.status, 206);
    }
    assert_eq!(downloads().await, 2);
    let gone = s.send(get(&url, &[("user-agent", "Wget/1.24")])).await;
    assert_eq!(gone.status, 410);
    assert!(gone.text().contains("all of its 2 download(s)"), "{}", gone.text());
    assert_eq!(downloads().await, 2);
}

async fn parallel_full_downloads(servers: &[Arc<TestServer>], url: &str, n: usize) -> Vec<u16> {
    let requests = (0..n).map(|i| {
        let s = servers[i % servers.len()].clone();
        let request = get(url, &[("user-agent", &format!("client-{i}"))]);
        tokio::spawn(async move { s.send(request).await.status.as_u16() })
    });
    futures_util::future::join_all(requests).await.into_iter().map(Result::unwrap).collect()
}

fn assert_exactly(outcomes: &[u16], allowed: usize) {
    assert_eq!(outcomes.iter().filter(|s| **s == 200).count(), allowed, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|s| **s == 410).count(), outcomes.len() - allowed, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_plus_five_parallel_downloads_get_exactly_n_on_sqlite() {
    let s = Arc::new(server(&[]).await);
    let ada = s.user("ada", false, false).await;
    let id = upload(&s, &ada, "secret.pdf", &secret_pdf()).await;
    let (url, _) = link(&s, &ada, &id, r#"{"max_downloads":3}"#).await;
    assert_exactly(&parallel_full_downloads(&[s], &url, 8).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_plus_five_parallel_downloads_get_exactly_n_on_postgresql_with_two_instances() {
    let pg = crate::common::peers::Postgres::start();
    let media = tempfile::tempdir().unwrap();
    let storage = media.path().display().to_string();
    // Both instances sign and check links with the same key.
    let keys = format!("k1={}", "A".repeat(43));
    let settings = [("database_url", pg.url.as_str()), ("storage", storage.as_str()), ("share_keys", keys.as_str())];
    let (a, b) = (Arc::new(server(&settings).await), Arc::new(server(&settings).await));
    let ada = a.user("ada", false, false).await;
    let id = upload(&a, &ada, "secret.pdf", &secret_pdf()).await;
    let (url, _) = link(&a, &ada, &id, r#"{"max_downloads":4}"#).await;
    assert_exactly(&parallel_full_downloads(&[a.clone(), b.clone()], &url, 9).await, 4);
    // Revoked on one instance, refused on the other at the next request.
    let (url, link_id) = link(&a, &ada, &id, r#"{}"#).await;
    assert_eq!(b.send(get(&url, &[])).await.status, 200);
    let revoke = Request::delete(format!("/api/links/{link_id}"))
        .header("authorization", format!("Bearer {ada}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(a.send(revoke).await.status, 204);
    assert_eq!(b.send(get(&url, &[])).await.status, 403);
}

/// People get a page (with a preview where that is safe), programs and `<img>` the bytes.
#[tokio::test]
async fn browsers_get_the_links_page_and_programs_the_bytes() {
    let s = server(&[]).await;
    let ada = s.user("ada", false, false).await;
    let png: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1,
        8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0, 1, 0, 0, 5,
        0, 1, 0x0d, 0x0a, 0x2d, 0xb4, 0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    let id = upload(&s, &ada, "dot.png", png).await;
    let (url, _) = link(&s, &ada, &id, r#"{"expires":"2h"}"#).await;
    let page = s.send(get(&url, BROWSER)).await;
    let html = page.text();
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    // (The page escapes `/` as `&#x2f;`, which browsers read back.)
    let escaped = url.replace('/', "&#x2f;");
    for shown in ["dot.png", "Link expires", &format!(r#"<img src="{escaped}?inline=1""#), &format!("{escaped}?dl=1")] {
        assert!(html.contains(shown), "{shown}: {html}");
    }
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let img = s.send(get(&format!("{url}?inline=1"), &[("sec-fetch-dest", "image"), ("accept", "image/*")])).await;
    assert_eq!((img.status.as_u16(), img.body.as_ref()), (200, png));
    let curl = s.send(get(&url, &[("accept", "*/*")])).await;
    assert_eq!(curl.body.as_ref(), png);
    assert_eq!(
        curl.header("cache-control"),
        Some("private, no-cache"),
        "revalidated every time: never kept past expiry"
    );
    let download = s.send(get(&format!("{url}?dl=1"), BROWSER)).await;
    assert_eq!(download.body.as_ref(), png);
    assert!(download.header("content-disposition").unwrap().starts_with("attachment"), "{download:?}");
    for bot in [
        "facebookexternalhit/1.1",
        "Twitterbot/1.0",
        "Mozilla/5.0 (compatible; Discordbot/2.0)",
        "WhatsApp/2.23",
        "TelegramBot (like TwitterBot)",
        "LinkedInBot/1.0",
        "Mozilla/5.0 SkypeUriPreview Preview/0.5",
    ] {
        let reply = s.send(get(&url, &[("user-agent", bot)])).await;
        assert!(reply.status == 200 && reply.body.as_ref() != png && reply.text().contains("og:title"), "{bot}");
    }
}

/// The policy's refusals are 422 with a message; a link may live longer than 7 days when the
/// operator allows it; defaults apply when nothing is asked.
#[tokio::test]
async fn the_link_policy_is_enforced_with_422_and_its_defaults_apply() {
    let s = server(&[
        ("share_max_lifetime", "90d"),
        ("share_default_lifetime", "3d"),
        ("share_require_password", "true"),
        ("share_default_max_downloads", "5"),
    ])
    .await;
    let ada = s.user("ada", false, false).await;
    let id = upload(&s, &ada, "secret.pdf", &secret_pdf()).await;
    for (body, why) in [
        (r#"{"expires":"60d"}"#, "password: every link needs one"),
        (r#"{"expires":"100d","password":"long enough"}"#, "at most 90 day(s)"),
        (r#"{"password":"short"}"#, "at least 6 characters"),
        (r#"{"password":"long enough","max_downloads":0}"#, "max_downloads: at least 1"),
    ] {
        let reply = share(&s, &ada, &id, body).await;
        assert_eq!(reply.status, 422, "{body}");
        assert!(reply.json()["error"].as_str().unwrap().contains(why), "{body}: {}", reply.text());
    }
    let reply = share(&s, &ada, &id, r#"{"expires":"60d","password":"long enough"}"#).await;
    assert_eq!(reply.status, 201, "longer than MinIO's 7 days: {}", reply.text());
    let (_, link_id) = link(&s, &ada, &id, r#"{"password":"long enough"}"#).await;
    let listed = s.get("/api/links", &Auth::Bearer(&ada)).await.json();
    let made = listed["links"].as_array().unwrap().iter().find(|l| l["link_id"] == link_id.as_str()).unwrap().clone();
    assert_eq!((made["max_downloads"].as_i64(), made["password"].as_bool()), (Some(5), Some(true)));
    let lifetime = chrono::DateTime::parse_from_rfc3339(made["expires"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(made["created"].as_str().unwrap()).unwrap();
    assert_eq!(lifetime.num_days(), 3, "share_default_lifetime");
}

/// Owners list, extend (within the maximum) and revoke their links — one, or all of a file's;
/// staff see everyone's; others see none; each link's page shows its uses.
#[tokio::test]
async fn owners_list_extend_and_revoke_their_links() {
    let s = server(&[("share_max_lifetime", "30d")]).await;
    let (ada, bob, root) =
        (s.user("ada", false, false).await, s.user("bob", false, false).await, s.user("root", true, true).await);
    let id = upload(&s, &ada, "secret.pdf", &secret_pdf()).await;
    let (first, first_id) = link(&s, &ada, &id, r#"{"expires":"1h"}"#).await;
    let (second, _) = link(&s, &ada, &id, r#"{"expires":"1h"}"#).await;
    let listed = |token: &str| {
        let token = token.to_owned();
        let s = &s;
        async move { s.get("/api/links", &Auth::Bearer(&token)).await.json()["links"].as_array().unwrap().len() }
    };
    assert_eq!((listed(&ada).await, listed(&bob).await, listed(&root).await), (2, 0, 2));

    let patch = |token: &str, link_id: &str, expires: &str| {
        Request::patch(format!("/api/links/{link_id}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(format!(r#"{{"expires":"{expires}"}}"#)))
            .unwrap()
    };
    let extended = s.send(patch(&ada, &first_id, "20d")).await;
    assert_eq!(extended.status, 200, "{}", extended.text());
    let expires = chrono::DateTime::parse_from_rfc3339(extended.json()["expires"].as_str().unwrap()).unwrap();
    assert!((expires - chrono::Utc::now().fixed_offset()).num_days() >= 19);
    let too_long = s.send(patch(&ada, &first_id, "40d")).await;
    assert_eq!(too_long.status, 422);
    assert!(too_long.text().contains("at most"), "{}", too_long.text());
    assert_eq!(s.send(patch(&bob, &first_id, "2d")).await.status, 404, "not bob's");
    assert_eq!(s.send(get(&first, &[("user-agent", "curl/8")])).await.status, 200);
    assert_eq!(s.send(get(&first, BROWSER)).await.status, 200);

    let uses = s.get(&format!("/links/{first_id}"), &Auth::Cookie(&s.login("ada").await.cookie)).await.text();
    assert!(
        uses.contains(r#"data-kind="download""#)
            && uses.contains("curl&#x2f;8")
            && uses.contains(r#"data-kind="link_view""#),
        "the link's page shows its uses: {uses}"
    );

    let revoke_all = Request::delete(format!("/api/files/{id}/links"))
        .header("authorization", format!("Bearer {ada}"))
        .body(Body::empty())
        .unwrap();
    let revoked = s.send(revoke_all).await;
    assert_eq!(revoked.json()["revoked"], 2, "{}", revoked.text());
    for url in [&first, &second] {
        assert_eq!(s.send(get(url, &[])).await.status, 403);
        let page = s.send(get(url, BROWSER)).await;
        assert!(!page.text().contains("secret.pdf"), "a revoked link's page names nothing");
    }
    assert_eq!(listed(&ada).await, 0);
    let all = s.get("/api/links?all=1", &Auth::Bearer(&ada)).await.json();
    assert!(all["links"].as_array().unwrap().iter().all(|l| l["revoked"] == true));
    let (fresh, _) = link(&s, &ada, &id, r#"{"expires":"1h"}"#).await;
    assert_eq!(s.send(get(&fresh, &[])).await.status, 200, "links issued after a revoke-all work");
}
