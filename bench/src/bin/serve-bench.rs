//! The download path under load: `serve-bench <root> <stream|cached|nginx|memory|encrypted|s3|s3-redirect> [internal-prefix]`.
//!
//! `encrypted` copies the files into `<root>-sealed` through an `EncryptedStorage` (a fresh
//! key each start) and streams them from there, decrypting: the cost of encryption at rest.
//!
//! `cached` streams them through a `CachedStorage` (64 MiB) in front of the folder: small
//! files from memory once read, as the server does by default.
//!
//! `memory` serves the same files from `MemoryStorage` (loaded at start): the same stack
//! without file I/O, to tell the cost of the filesystem from the cost of HTTP. `s3` and
//! `s3-redirect` copy the files into the bucket that `PS_BENCH_S3_*` settings name
//! (`S3Builder::from_env`) and serve them from there, proxied or as presigned redirects; for the
//! direct-GET baseline they print `presigned <file> <url>` lines before `listening`.
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
    CurrentUser, Delivery, LocalStorage, MemoryStorage, ObjectKey, ServePrivate, Storage, StorageExt, User,
    allow_authenticated,
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
    let usage = "usage: serve-bench <root> <stream|cached|nginx|memory|encrypted|s3|s3-redirect> [internal-prefix]";
    let root = args.next().ok_or(usage)?;
    let mode = args.next().ok_or(usage)?;
    let delivery = match mode.as_str() {
        "stream" | "cached" | "memory" | "encrypted" | "s3" => Delivery::stream(),
        "s3-redirect" => Delivery::presigned_redirect(None),
        "nginx" => Delivery::nginx(args.next().as_deref().unwrap_or("/_internal"))?,
        other => return Err(format!("unknown mode {other}; {usage}").into()),
    };
    let sessions: Sessions =
        Arc::new((0..10_000).map(|i| (format!("token-{i}"), CurrentUser::new(User::new(i.to_string())))).collect());
    // One runtime for loading and serving: the S3 client's connections live on it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let storage: Arc<dyn Storage> = match mode.as_str() {
            "s3" | "s3-redirect" => {
                let s3 = private_storage::S3Storage::builder().from_env("PS_BENCH_S3_")?.build()?;
                // Streamed in (bounded memory), so the peak RSS the harness reads is the serving's.
                private_storage::migrate(&LocalStorage::new(&root)?, &s3, None, |_| {}).await?;
                for key in keys_of(&root)? {
                    let url = s3.presigned_get(&key, &Default::default()).await?.ok_or("no presigned URL")?;
                    println!("presigned {key} {url}");
                }
                Arc::new(s3)
            }
            "encrypted" => {
                let sealed = format!("{}-sealed", root.trim_end_matches('/'));
                std::fs::create_dir_all(&sealed)?;
                let keys = private_storage::Keyring::parse(&private_storage::Keyring::generate_entry("bench")?)?;
                let encrypted = private_storage::EncryptedStorage::new(LocalStorage::new(&sealed)?, keys)?;
                private_storage::migrate(&LocalStorage::new(&root)?, &encrypted, None, |_| {}).await?;
                Arc::new(encrypted)
            }
            "memory" => {
                let memory = MemoryStorage::new().with_chunk_size(128 * 1024);
                for key in keys_of(&root)? {
                    memory.put_bytes(&key, std::fs::read(std::path::Path::new(&root).join(key.as_str()))?).await?;
                }
                Arc::new(memory)
            }
            "cached" => Arc::new(private_storage::CachedStorage::new(LocalStorage::new(&root)?, 64 << 20)),
            _ => Arc::new(LocalStorage::new(&root)?),
        };
        let files = ServePrivate::from_arc(storage).rule(allow_authenticated()).delivery(delivery);
        let app = Router::new()
            .nest_service("/private-media", files)
            .layer(middleware::from_fn_with_state(sessions, identify));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The files of `root` (flat), as keys.
fn keys_of(root: &str) -> Result<Vec<ObjectKey>, Box<dyn std::error::Error>> {
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(root)? {
        keys.push(ObjectKey::new(entry?.file_name().to_string_lossy())?);
    }
    Ok(keys)
}
