//! Resumable uploads (tus): the library's state machine over the same upload policy, slots and
//! records as every other upload. An upload is its creator's alone; once its last byte is in,
//! it is checked whole and becomes a file record, exactly as `POST /api/files` would make it.

use private_storage::tus::{Metadata, Patch, UploadInfo};

use super::files::Owner;
use super::{Actor, Domain, Error, Result};
use crate::db::FileRow;

/// The user an actor uploads as: resumable uploads are made over HTTP, by a user.
fn uploader(actor: &Actor) -> Result<&str> {
    match actor {
        Actor::User(user) => Ok(&user.id),
        Actor::Operator => Err(Error::Invalid("resumable uploads are made by a user".into())),
    }
}

impl Domain {
    /// The largest resumable upload (`Tus-Max-Size`).
    pub fn resumable_max_size(&self) -> u64 {
        self.config.max_file_size
    }

    /// Creates a resumable upload for the actor.
    ///
    /// # Errors
    /// The policy's refusals of the declared length ([`Error::Storage`]: 413, 400).
    pub async fn create_upload(&self, actor: &Actor, length: Option<u64>, metadata: Metadata) -> Result<UploadInfo> {
        let owner = uploader(actor)?;
        let created = self.resumable.create(owner, length, metadata).await.map_err(Error::from);
        if let Err(e) = &created {
            self.metrics.rejected(e.upload_reason());
        }
        created
    }

    /// Where the actor's upload `id` is.
    ///
    /// # Errors
    /// 404 for an upload that is not the actor's, 410 once expired.
    pub async fn upload_state(&self, actor: &Actor, id: &str) -> Result<UploadInfo> {
        Ok(self.resumable.info(uploader(actor)?, id).await?)
    }

    /// Appends a request's bytes to the actor's upload `id`, in one of the actor's upload
    /// slots; the request that brings the last byte turns it into a file record (the record
    /// too is returned).
    ///
    /// # Errors
    /// [`Error::TooManyUploads`]; the protocol's and the policy's refusals; the database's.
    pub async fn append_upload(&self, actor: &Actor, id: &str, patch: Patch) -> Result<(UploadInfo, Option<FileRow>)> {
        let owner = uploader(actor)?;
        let result = async {
            let _slot = self.uploads.take(owner).ok_or(Error::TooManyUploads)?;
            let patched = self.resumable.patch(&Owner(owner.to_owned()), owner, id, patch).await?;
            let record = match &patched.saved {
                Some(saved) => Some(self.record(owner, saved).await?),
                None => None,
            };
            Ok::<_, Error>((patched.info, record))
        }
        .await;
        match &result {
            Ok((_, Some(_))) => self.metrics.uploaded(),
            Ok((_, None)) => {}
            Err(e) => self.metrics.rejected(e.upload_reason()),
        }
        result
    }

    /// Ends the actor's upload `id` and forgets its bytes.
    ///
    /// # Errors
    /// 404 for an upload that is not the actor's.
    pub async fn end_upload(&self, actor: &Actor, id: &str) -> Result<()> {
        Ok(self.resumable.terminate(uploader(actor)?, id).await?)
    }

    /// Removes unfinished uploads past `upload_expiry`; returns how many.
    ///
    /// # Errors
    /// The store's.
    pub async fn sweep_uploads(&self) -> Result<usize> {
        Ok(self.resumable.sweep().await?)
    }
}
