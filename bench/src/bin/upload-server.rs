//! The upload path under load: multipart → `UploadForm` → `UploadPolicy` (sniffing, size
//! guard, SHA-256) → `LocalStorage` (staged write, fsync, rename).
//!
//! `upload-server <root>` listens on 127.0.0.1 (a free port), prints `listening <url>` and
//! answers `POST /upload` (field `file`) with the stored key, size and digest.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use private_storage::{Error, LocalStorage, UploadForm, UploadPolicy};

async fn upload(State(policy): State<UploadPolicy>, mut form: UploadForm) -> Result<String, Error> {
    while let Some(field) = form.next_field().await? {
        if field.name() == Some("file") {
            let saved = policy.save(&(), field.into_upload()).await?;
            return Ok(format!("{} {} {}\n", saved.key, saved.size, saved.sha256));
        }
    }
    Err(Error::BadUpload { message: "no file field".into() })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args().nth(1).ok_or("usage: upload-server <root>")?;
    let policy = UploadPolicy::new(LocalStorage::new(root)?).max_file_size(4 << 30);
    let app = Router::new().route("/upload", post(upload)).layer(DefaultBodyLimit::disable()).with_state(policy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening http://{}/upload", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
