//! Helpers for the server tests: a server on a temporary data folder (SQLite + local files),
//! users with passwords and tokens, requests through `oneshot`.
#![allow(dead_code, unreachable_pub)]

pub mod peers;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use private_storage_server::{AppState, Loader, app};
use tower::ServiceExt;

pub struct TestServer {
    pub state: AppState,
    pub app: Router,
    pub dir: tempfile::TempDir,
}

/// A server on a fresh data folder with `settings` on top of the defaults.
pub async fn server(settings: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec![("data_dir".to_owned(), dir.path().join("data").display().to_string())];
    flags.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = Loader::new().flags(&flags).unwrap().build().unwrap();
    let state = AppState::build(config).await.unwrap();
    TestServer { app: app(state.clone()), state, dir }
}

impl TestServer {
    /// Creates a user whose password is `password-<name>` and returns an API token.
    pub async fn user(&self, name: &str, staff: bool, superuser: bool) -> String {
        let hash = private_storage_server::domain::hash_password(&format!("password-{name}"));
        let user = self.state.db.create_user(name, &hash, staff, superuser).await.unwrap();
        let token = format!("ps_{}", private_storage_server::domain::random_token(32));
        self.state
            .db
            .create_token(&user.id, "test", &private_storage_server::domain::sha256_hex(&token))
            .await
            .unwrap();
        token
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    pub async fn get(&self, uri: &str, auth: &Auth<'_>) -> Reply {
        self.send(auth.apply(Request::get(uri)).body(Body::empty()).unwrap()).await
    }

    /// Uploads `bytes` as the `file` field named `name` to `uri`, after the given fields.
    pub async fn upload(&self, uri: &str, auth: &Auth<'_>, fields: &[(&str, &str)], name: &str, bytes: &[u8]) -> Reply {
        let (content_type, body) = multipart(fields, name, bytes);
        let request =
            auth.apply(Request::post(uri)).header("content-type", content_type).body(Body::from(body)).unwrap();
        self.send(request).await
    }

    /// Posts an urlencoded form.
    pub async fn form(&self, uri: &str, auth: &Auth<'_>, fields: &[(&str, &str)]) -> Reply {
        let body: String = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
        let request = auth
            .apply(Request::post(uri))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    /// Logs in through the login form; returns the session.
    pub async fn login(&self, name: &str) -> Session {
        self.login_with(name, &format!("password-{name}")).await.expect("login works")
    }

    pub async fn login_with(&self, name: &str, password: &str) -> Result<Session, Reply> {
        let page = self.get("/login", &Auth::None).await;
        assert_eq!(page.status, 200);
        let (csrf_name, login_cookie) =
            page.prefixed_cookie("ps_login_csrf").expect("the login form sets its CSRF cookie");
        let csrf = field(&page.text(), "csrf");
        let cookie = format!("{csrf_name}={login_cookie}");
        let reply = self
            .form(
                "/login",
                &Auth::Cookie(&cookie),
                &[("username", name), ("password", password), ("csrf", &csrf), ("next", "/")],
            )
            .await;
        if reply.status != StatusCode::SEE_OTHER {
            return Err(reply);
        }
        let (session_name, session) = reply.prefixed_cookie("ps_session").expect("a session cookie");
        let cookie = format!("{session_name}={session}");
        let index = self.get("/", &Auth::Cookie(&cookie)).await;
        Ok(Session {
            cookie,
            csrf: field(&index.text(), "csrf"),
            set_cookie: reply.header("set-cookie").unwrap().to_owned(),
        })
    }
}

pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub set_cookie: String,
}

pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
}

impl Auth<'_> {
    fn apply(&self, builder: http::request::Builder) -> http::request::Builder {
        match self {
            Auth::None => builder,
            Auth::Bearer(token) => builder.header("authorization", format!("Bearer {token}")),
            Auth::Cookie(cookie) => builder.header("cookie", *cookie),
        }
    }
}

pub use test_support::Reply;

/// The `value` of the first `name="<name>" value="…"` input in `html`.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} field in {html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

fn enc(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A `multipart/form-data` body: `fields`, then the file.
pub fn multipart(fields: &[(&str, &str)], name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----private-storage-test-boundary";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").bytes());
    }
    body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").bytes());
    body.extend_from_slice(bytes);
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A small PDF.
pub fn pdf(len: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..len.saturating_sub(9)).map(|i| b'a' + (i % 26) as u8));
    bytes
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file below `dir`, recursively (staging files included).
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// Everything stored in the server's media folder.
pub fn stored_files(server: &TestServer) -> Vec<String> {
    files_under(&server.dir.path().join("data/media"))
}

pub fn method(m: &str) -> Method {
    m.parse().unwrap()
}
