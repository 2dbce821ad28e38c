//! Share links backed by the database: revocations shared by every instance, and an audit
//! trail of every link issued and used.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use private_storage::{LinkIssued, LinkUsed, RevocationStore, ShareAudit, ShareKeys, ShareTarget};

use crate::StartError;
use crate::db::Db;

fn target_name(target: &ShareTarget) -> String {
    match target {
        ShareTarget::Key(key) => format!("key:{key}"),
        ShareTarget::Record(id) => format!("file:{id}"),
        _ => format!("{target:?}"),
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn db_error(e: sqlx::Error) -> private_storage::Error {
    private_storage::Error::Storage { backend: "database", source: Box::new(e) }
}

/// Revocations in the database: every instance sees them at once.
#[derive(Debug, Clone)]
pub struct DbRevocations(pub Db);

#[async_trait]
impl RevocationStore for DbRevocations {
    async fn epoch(&self, target: &ShareTarget) -> private_storage::Result<u32> {
        self.0.epoch(&target_name(target)).await.map(|e| e as u32).map_err(db_error)
    }
    async fn bump_epoch(&self, target: &ShareTarget) -> private_storage::Result<u32> {
        self.0.bump_epoch(&target_name(target)).await.map(|e| e as u32).map_err(db_error)
    }
    async fn is_revoked(&self, link_id: &str) -> private_storage::Result<bool> {
        self.0.is_revoked(link_id).await.map_err(db_error)
    }
    async fn revoke(&self, link_id: &str, expires: SystemTime) -> private_storage::Result<()> {
        self.0.revoke_link(link_id, secs(expires)).await.map_err(db_error)
    }
}

/// Share events go to the log and to the `share_events` table.
#[derive(Debug, Clone)]
pub struct DbAudit(pub Db);

impl ShareAudit for DbAudit {
    fn issued(&self, event: &LinkIssued) {
        private_storage::TracingAudit.issued(event);
        let (db, link, target) = (self.0.clone(), event.link_id.clone(), target_name(&event.target));
        let detail = format!(
            "expires={} issued_by={} bound_to={}",
            secs(event.expires),
            event.issued_by.as_deref().unwrap_or("-"),
            event.bound_to.as_deref().unwrap_or("-")
        );
        tokio::spawn(async move {
            if let Err(e) = db.share_event("issued", Some(&link), Some(&target), &detail).await {
                tracing::error!(error = %e, "could not record a share event");
            }
        });
    }

    fn used(&self, event: &LinkUsed) {
        private_storage::TracingAudit.used(event);
        let (db, link, target) = (self.0.clone(), event.link_id.clone(), event.target.as_ref().map(target_name));
        let detail = format!(
            "outcome={} status={} bytes={} range={}",
            event.outcome,
            event.status,
            event.bytes.map_or("-".into(), |b| b.to_string()),
            event.range.as_deref().unwrap_or("-")
        );
        tokio::spawn(async move {
            if let Err(e) = db.share_event("used", link.as_deref(), target.as_deref(), &detail).await {
                tracing::error!(error = %e, "could not record a share event");
            }
        });
    }
}

/// The signing key kept in `data_dir/share-keys` (created once, readable by the owner only),
/// for the embedded default. Several instances must share `share_keys` from configuration.
pub fn keys_in(data_dir: &Path) -> Result<ShareKeys, StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("share-keys");
    let spec = match std::fs::read_to_string(&path) {
        Ok(spec) => spec,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let spec = format!("k1={}", crate::auth::random_token(32));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| StartError::Storage(format!("cannot create {}: {e}", path.display())))?;
            file.write_all(spec.as_bytes())
                .map_err(|e| StartError::Storage(format!("cannot write {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "generated the share-link signing key (set share_keys to run several instances)");
            spec
        }
        Err(e) => return Err(StartError::Storage(format!("cannot read {}: {e}", path.display()))),
    };
    ShareKeys::parse(spec.trim())
        .map_err(|e| StartError::Config(crate::ConfigError(format!("{}: {e}", path.display()))))
}
