//! Running the app on a socket: `TCP_NODELAY`, a header-read timeout against slow clients,
//! the peer address for the login limiter, a graceful shutdown that lets in-flight requests
//! finish within a bound — and the server's own upkeep, which only a serving process does:
//! removing the staging files of interrupted uploads, purging expired sessions and old audit
//! events, scanning new files for viruses, and delivering webhooks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::{AppState, app};

/// How long a staging file must have been left alone before the sweep may remove it (the sweep
/// never removes one a live writer holds; the age covers the instant before it takes the lock).
const STAGING_GRACE: Duration = Duration::from_secs(60);

/// How often the upkeep runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(300);

/// Serves `state` on `listener` until `shutdown` resolves, then waits up to the configured
/// grace period for in-flight requests (downloads included) before returning.
///
/// # Errors
/// Only if accepting connections fails persistently.
pub async fn serve(state: AppState, listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let grace = state.config.shutdown_grace;
    let header_timeout = state.config.header_read_timeout;
    let router = app(state.clone());
    // HTTP/1.1 only, built directly: hyper-util's protocol detection waits for the first bytes
    // without a timer, so a connection that sent nothing was kept forever. Here the
    // header-read timeout runs from the moment the connection is accepted.
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Vectored writes: hyper queues body frames as they are, which zero-copy responses need
    // (see `private_storage::SendfileStream`).
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true).writev(true);
    let connections = Arc::new(tokio::sync::Semaphore::new(state.config.max_connections));
    let graceful = GracefulShutdown::new();
    let upkeep = tokio::spawn(upkeep(state.clone()));
    let scanning = tokio::spawn(state.domain.clone().scan_forever());
    let delivering = tokio::spawn(state.domain.clone().deliver_forever());
    let db = state.db.clone();
    let watching = tokio::spawn(async move { db.watch_changes().await });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(turn_away(stream));
            continue;
        };
        // Local files larger than a single read go out by `sendfile`, from the page cache.
        let (stream, sendfile) = private_storage::SendfileStream::new(stream);
        let service = router.clone().map_request(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request.extensions_mut().insert(sendfile.clone());
            request.map(axum::body::Body::new)
        });
        let connection =
            builder.serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit; // the connection's place, given back when it ends
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    upkeep.abort();
    scanning.abort();
    delivering.abort();
    watching.abort();
    drop(listener);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: letting in-flight requests finish");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("the grace period ended with requests still running");
    }
    state.domain.audit().flush().await;
    Ok(())
}

/// At start and every few minutes: removes the staging files that interrupted uploads left
/// (a crash, a `SIGKILL`), without touching an upload in progress in any process, and forgets
/// expired sessions and revocations, and audit events past `audit_retention`.
async fn upkeep(state: AppState) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        if let crate::config::StorageConfig::Local(root) = &state.config.storage
            && let Ok(local) = private_storage::LocalStorage::new(root)
        {
            match local.remove_staging_files(STAGING_GRACE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed staging files of interrupted uploads"),
                Err(e) => tracing::warn!(error = %e, "could not clean the staging files"),
            }
        }
        match state.domain.sweep_uploads().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed resumable uploads past upload_expiry"),
            Err(e) => tracing::warn!(error = %e, "could not sweep the resumable uploads"),
        }
        if let Err(e) = state.db.purge_expired().await {
            tracing::warn!(error = %e, "could not purge expired sessions");
        }
        let cutoff = crate::db::now() - state.config.audit_retention.as_secs() as i64;
        match state.db.purge_share_events(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged share-link audit events past their retention"),
            Err(e) => tracing::warn!(error = %e, "could not purge the share-link audit trail"),
        }
        match state.db.purge_audit(cutoff.saturating_mul(1_000_000)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged audit events past audit_retention"),
            Err(e) => tracing::warn!(error = %e, "could not purge the audit trail"),
        }
    }
}

/// The answer to a connection beyond `max_connections`: a 503 that says to come back, then
/// the connection is closed. Bounded in time, so a client that does not read cannot hold it.
async fn turn_away(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
        retry-after: 1\r\nconnection: close\r\ncontent-length: 29\r\n\r\nToo many connections: retry.\n";
    tracing::warn!("max_connections reached: a connection was turned away");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await
    })
    .await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
