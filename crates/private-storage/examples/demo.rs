//! A runnable demo: two private storages side by side, each at its own URL with its own rule,
//! behind a toy identity layer.
//!
//! ```text
//! cargo run -p private-storage --example demo            # listens on 127.0.0.1:8000
//! cargo run -p private-storage --example demo -- 127.0.0.1:9000 ./other-dir
//! ```
//!
//! - `/private-media/…` serves `<data>/media` to **staff** only (`allow_staff`).
//! - `/invoices/…` serves `<data>/invoices`: each user reads `users/<their id>/…`, staff read
//!   everything; anonymous visitors are sent to `/login?next=…`.
//!
//! The identity layer is a stand-in for real authentication (sessions, OAuth, API tokens): it
//! maps fixed bearer tokens — also accepted as a `token` cookie, for browsers — to users, and
//! puts a [`CurrentUser`] into the request extensions. That is all an application's own auth
//! layer has to do.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{Html, Response};
use axum::routing::get;
use private_storage::{
    ContentDisposition, CurrentUser, LocalStorage, ObjectKey, OnDenied, PrivateFile, ServePrivate, StorageExt, User,
    allow_staff,
};

/// The demo's users: token → identity.
fn user_for_token(token: &str) -> Option<User> {
    match token {
        "alice-token" => Some(User::new("alice")),
        "bob-token" => Some(User::new("bob")),
        "staff-token" => Some(User::new("carol").staff()),
        _ => None,
    }
}

/// The toy auth layer: `Authorization: Bearer <token>` or a `token=<token>` cookie.
async fn identify(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bearer =
        headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("token="));
    if let Some(user) = bearer.or(cookie).and_then(user_for_token) {
        request.extensions_mut().insert(CurrentUser::new(user));
    }
    next.run(request).await
}

/// Users read their own folder; staff read everything.
async fn own_folder_or_staff(file: PrivateFile) -> bool {
    match file.user() {
        Some(user) if user.is_staff() => true,
        Some(user) => file.key().as_str().starts_with(&format!("users/{}/", user.id())),
        None => false,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8000").parse()?;
    let data = PathBuf::from(args.next().unwrap_or_else(|| "demo-data".into()));

    // The library never creates a storage root; the demo makes its own folders explicitly.
    for folder in ["media", "invoices"] {
        std::fs::create_dir_all(data.join(folder))?;
    }
    let media = LocalStorage::new(data.join("media"))?.with_base_url("/private-media/");
    let invoices = LocalStorage::new(data.join("invoices"))?.with_base_url("/invoices/");
    // Uploads a crash interrupted leave staging files behind; this process is the only writer.
    for storage in [&media, &invoices] {
        storage.remove_staging_files(std::time::Duration::ZERO).await?;
    }
    seed(&media, &invoices).await?;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(move || index(addr)))
        .route("/login", get(|| async { Html("<h1>Log in</h1><p>This demo has no login form: send a bearer token or set the <code>token</code> cookie.</p>") }))
        .nest_service("/private-media", ServePrivate::new(media).rule(allow_staff()))
        .nest_service(
            "/invoices",
            ServePrivate::new(invoices)
                .rule(own_folder_or_staff)
                .on_denied(OnDenied::login("/login"))
                .content_disposition(ContentDisposition::attachment()),
        )
        .layer(middleware::from_fn(identify));

    println!("private-storage demo on http://{addr}/ (data in {})", data.display());
    println!("  curl -H 'Authorization: Bearer staff-token' http://{addr}/private-media/welcome.txt");
    println!("  curl -H 'Authorization: Bearer alice-token' http://{addr}/invoices/users/alice/2026-001.txt");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn seed(media: &LocalStorage, invoices: &LocalStorage) -> private_storage::Result<()> {
    let files: [(&LocalStorage, &str, &str); 4] = [
        (media, "welcome.txt", "Welcome to private-storage. Only staff can read this.\n"),
        (media, "Grüße/Bericht 2026.txt", "A UTF-8 name with spaces, served with RFC 6266 headers.\n"),
        (invoices, "users/alice/2026-001.txt", "Invoice 2026-001 for alice: 42.00 EUR\n"),
        (invoices, "users/bob/2026-002.txt", "Invoice 2026-002 for bob: 17.00 EUR\n"),
    ];
    for (storage, key, text) in files {
        let key = ObjectKey::new(key)?;
        if !storage.exists(&key).await? {
            storage.put_bytes(&key, text.to_owned()).await?;
        }
    }
    Ok(())
}

async fn index(addr: SocketAddr) -> Html<String> {
    Html(format!(
        "<h1>private-storage demo</h1>
<p>Tokens: <code>alice-token</code>, <code>bob-token</code>, <code>staff-token</code> (staff).</p>
<ul>
<li><a href=\"/private-media/welcome.txt\">/private-media/welcome.txt</a> (staff only)</li>
<li><a href=\"/invoices/users/alice/2026-001.txt\">/invoices/users/alice/2026-001.txt</a> (alice or staff)</li>
</ul>
<pre>curl -H 'Authorization: Bearer alice-token' http://{addr}/invoices/users/alice/2026-001.txt</pre>"
    ))
}
