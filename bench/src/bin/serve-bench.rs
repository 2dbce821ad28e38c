//! The download path under load: `serve-bench <root> <stream|nginx|memory> [internal-prefix]`.
//!
//! `memory` serves the same files from `MemoryStorage` (loaded at start): the same stack
//! without file I/O, to tell the cost of the filesystem from the cost of HTTP.
//!
//! Serves `<root>` at `/private-media/` with `ServePrivate` behind a real access check: an
//! identity layer looks the bearer token up among 10 000 sessions (`token-0` … `token-9999`)
//! and the rule (`allow_authenticated`) runs on every request. Runs on one thread (the
//! harness pins it to one core), prints `listening <addr>` once it accepts connections.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::serve::ListenerExt;
use private_storage::{
    CurrentUser, Delivery, LocalStorage, MemoryStorage, ObjectKey, ServePrivate, Storage, StorageExt, User, allow_authenticated,
};

type Sessions = Arc<HashMap<String, CurrentUser>>;

async fn identify(State(sessions): State<Sessions>, mut request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| sessions.get(token))
        .cloned();
    if let Some(user) = user {
        request.extensions_mut().insert(user);
    }
    next.run(request).await
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: serve-bench <root> <stream|nginx|memory> [internal-prefix]";
    let root = args.next().ok_or(usage)?;
    let mode = args.next().ok_or(usage)?;
    let delivery = match mode.as_str() {
        "stream" | "memory" => Delivery::stream(),
        "nginx" => Delivery::nginx(args.next().as_deref().unwrap_or("/_internal"))?,
        other => return Err(format!("unknown mode {other}; {usage}").into()),
    };
    let sessions: Sessions = Arc::new(
        (0..10_000).map(|i| (format!("token-{i}"), CurrentUser::new(User::new(i.to_string())))).collect(),
    );
    let storage: Arc<dyn Storage> = if mode == "memory" {
        let memory = MemoryStorage::new().with_chunk_size(128 * 1024);
        let loader = tokio::runtime::Builder::new_current_thread().build()?;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let key = ObjectKey::new(entry.file_name().to_string_lossy())?;
            loader.block_on(memory.put_bytes(&key, std::fs::read(entry.path())?))?;
        }
        Arc::new(memory)
    } else {
        Arc::new(LocalStorage::new(root)?)
    };
    let files = ServePrivate::from_arc(storage).rule(allow_authenticated()).delivery(delivery);
    let app = Router::new()
        .nest_service("/private-media", files)
        .layer(middleware::from_fn_with_state(sessions, identify));
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}
