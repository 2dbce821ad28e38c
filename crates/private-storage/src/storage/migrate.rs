//! Copying every object from one storage to another (local ↔ S3), verified and resumable.

use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::{GetOptions, PutOptions, Storage};
use crate::upload::hex;
use crate::{Error, ObjectKey, Result};

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Objects copied and verified.
    pub copied: u64,
    /// Objects already present in the target with the same size and SHA-256 (a resumed run).
    pub skipped: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// Progress of a [`migrate`], reported after each object.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MigrationProgress<'a> {
    /// The object just handled.
    pub key: &'a ObjectKey,
    /// Its size.
    pub size: u64,
    /// Whether it was already in place.
    pub skipped: bool,
    /// Totals so far.
    pub report: &'a MigrationReport,
}

/// Copies every object under `prefix` (or everything) from `from` to `to`, keeping keys and
/// content types. Each copy streams with bounded memory and is verified: the SHA-256 of what
/// the target then holds must equal the source's, or the copy is deleted and the migration
/// stops with an error. Objects the target already holds with the same size and SHA-256 are
/// skipped, so an interrupted migration resumes where it stopped; one that differs is
/// overwritten. `progress` is called after each object.
///
/// ```
/// use private_storage::{MemoryStorage, ObjectKey, StorageExt, migrate};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (old, new) = (MemoryStorage::new(), MemoryStorage::new());
/// old.put_bytes(&ObjectKey::new("a/1.txt")?, "one").await?;
/// let report = migrate(&old, &new, None, |_| {}).await?;
/// assert_eq!((report.copied, report.bytes), (1, 3));
/// assert_eq!(migrate(&old, &new, None, |_| {}).await?.skipped, 1); // resumable
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// # Errors
/// The first storage error, or [`Error::Storage`] naming the key whose copy did not verify.
pub async fn migrate<F, T>(
    from: &F,
    to: &T,
    prefix: Option<&ObjectKey>,
    mut progress: impl FnMut(&MigrationProgress<'_>),
) -> Result<MigrationReport>
where
    F: Storage + ?Sized,
    T: Storage + ?Sized,
{
    let mut report = MigrationReport::default();
    let mut listing = from.list(prefix);
    while let Some(meta) = listing.try_next().await? {
        let key = meta.key;
        let source = from.head(&key).await?;
        let existing = match to.head(&key).await {
            Ok(m) if m.size == source.size => Some(digest(to, &key, None).await?),
            Ok(_) => None,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let skipped = match existing {
            Some(existing) => digest(from, &key, source.etag.clone()).await? == existing,
            None => false,
        };
        if skipped {
            report.skipped += 1;
        } else {
            // Hash the source bytes as they pass, then read back what the target holds.
            let mut hasher = Sha256::new();
            let body = from.get(&key, pin(source.etag.clone())).await?.into_stream();
            let hashed = body.inspect_ok(|chunk| hasher.update(chunk)).boxed();
            let options = PutOptions { content_type: source.content_type.clone(), ..Default::default() };
            to.put(&key, hashed, options).await?;
            let source_digest = hex(&hasher.finalize());
            if digest(to, &key, None).await? != source_digest {
                to.delete(&key).await?;
                return Err(Error::storage(
                    "migrate",
                    format!("the copy of {key} does not match its source (SHA-256); removed"),
                ));
            }
            report.copied += 1;
            report.bytes += source.size;
        }
        progress(&MigrationProgress { key: &key, size: source.size, skipped, report: &report });
    }
    Ok(report)
}

fn pin(etag: Option<String>) -> GetOptions {
    GetOptions { range: None, if_match: etag }
}

async fn digest<S: Storage + ?Sized>(storage: &S, key: &ObjectKey, etag: Option<String>) -> Result<String> {
    let mut body = storage.get(key, pin(etag)).await?.into_stream();
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk?);
    }
    Ok(hex(&hasher.finalize()))
}
