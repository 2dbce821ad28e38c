//! Key management for encryption at rest: which key-encryption key wraps each file, and the
//! rotation that rewraps them all under the newest.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use private_storage::{ObjectKey, Rewrap, Storage};

use super::{Domain, Error, Result};
use crate::db::Change;
use crate::state::Encrypted;

/// How many stored files each key-encryption key wraps.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct KeyStatus {
    /// Stored files, per KEK id wrapping their data key (a file a rotation was interrupted on
    /// counts under both of its ids).
    pub by_key: BTreeMap<String, u64>,
    /// The configured KEK ids, newest first.
    pub configured: Vec<String>,
    /// Stored objects.
    pub files: u64,
    /// Objects that are not encrypted files (no valid header), with the first few keys.
    pub not_encrypted: Vec<ObjectKey>,
}

/// What [`Domain::rotate_keys`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Rotation {
    /// Files now wrapped by the newest KEK that were not before.
    pub rewrapped: u64,
    /// Files that were already.
    pub unchanged: u64,
    /// Files deleted while the rotation ran (nothing to do).
    pub gone: u64,
    /// Files that could not be rewrapped, with why.
    pub failed: Vec<(ObjectKey, String)>,
}

impl Domain {
    fn encryption(&self) -> Result<&Arc<Encrypted>> {
        self.encrypted
            .as_ref()
            .ok_or_else(|| Error::Invalid("Encryption is off: set encryption = on and encryption_keys.".into()))
    }

    /// Counts the stored files per KEK, reading each file's header only.
    ///
    /// # Errors
    /// [`Error::Invalid`] when encryption is off; the storage's errors.
    pub async fn key_status(&self) -> Result<KeyStatus> {
        let encrypted = self.encryption()?;
        let mut status =
            KeyStatus { configured: encrypted.keys().ids().map(str::to_owned).collect(), ..KeyStatus::default() };
        let mut objects = encrypted.inner().list(None);
        while let Some(object) = objects.try_next().await? {
            status.files += 1;
            match encrypted.key_ids(&object.key).await {
                Ok(ids) => {
                    for id in ids {
                        *status.by_key.entry(id).or_default() += 1;
                    }
                }
                Err(private_storage::Error::Integrity { .. }) => status.not_encrypted.push(object.key),
                Err(private_storage::Error::NotFound { .. }) => status.files -= 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(status)
    }

    /// Rewraps every stored file's data key under the newest KEK (content untouched; see
    /// `EncryptedStorage::rewrap`), calling `progress` after each. Safe beside a live server:
    /// readers always find a wrap they can open, and a file deleted meanwhile stays deleted.
    /// Re-running finishes an interrupted rotation.
    ///
    /// # Errors
    /// [`Error::Invalid`] when encryption is off; listing errors. A file that fails is
    /// reported in [`Rotation::failed`], and the others go on.
    pub async fn rotate_keys(&self, mut progress: impl FnMut(&ObjectKey)) -> Result<Rotation> {
        let encrypted = self.encryption()?;
        let mut rotation = Rotation::default();
        let mut objects = encrypted.inner().list(None);
        while let Some(object) = objects.try_next().await? {
            let key = object.key;
            let had_record = self.db.file_by_key(key.as_str()).await?.is_some();
            let rewrapped = encrypted.rewrap(&key).await;
            if !matches!(rewrapped, Ok(Rewrap::Unchanged)) {
                // Rewritten (or perhaps half written) behind the storage's cache, here and in
                // every serving process: its validators changed.
                self.db.announce(&[Change::Object(key.as_str())]).await?;
            }
            match rewrapped {
                Ok(Rewrap::Unchanged) => rotation.unchanged += 1,
                Ok(_) => {
                    // A rewrite (S3) racing a delete would bring the bytes back: take them away.
                    if had_record && self.db.file_by_key(key.as_str()).await?.is_none() {
                        encrypted.inner().delete(&key).await?;
                        self.db.announce(&[Change::Object(key.as_str())]).await?;
                        rotation.gone += 1;
                    } else {
                        rotation.rewrapped += 1;
                    }
                }
                Err(private_storage::Error::NotFound { .. }) => rotation.gone += 1,
                Err(e) => rotation.failed.push((key.clone(), e.to_string())),
            }
            progress(&key);
        }
        Ok(rotation)
    }
}
