//! Resumable uploads (tus): the library's state machine over the same upload policy, slots and
//! records as every other upload. An upload is its creator's alone; once its last byte is in,
//! it is checked whole and becomes a file record, exactly as `POST /api/files` would make it.
//!
//! Requests to one upload run one at a time: within an instance the library's turn (a newcomer
//! stops the running request), across instances a lease in the database ([`Leases`]): while
//! another instance holds it, a request is answered `423 Locked` (tus clients retry).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use private_storage::tus::{Metadata, Patch, UploadInfo};

use super::files::Owner;
use super::{Actor, Domain, Error, Result};
use crate::db::{Db, FileRow, now};

/// How long a lease lasts unless renewed (an instance that died holding one is taken over then).
const LEASE: Duration = Duration::from_secs(30);
/// How often a running request's lease is renewed.
const RENEW: Duration = Duration::from_secs(10);

/// This instance's leases on resumable uploads: one per upload however many of its requests
/// work on it, renewed while any does, given back when the last ends.
#[derive(Debug)]
pub(crate) struct Leases {
    db: Db,
    /// This instance, as the database knows it.
    holder: String,
    /// Requests running per leased upload.
    held: tokio::sync::Mutex<HashMap<String, usize>>,
}

/// One request's share of a lease.
struct LeaseShare {
    leases: Arc<Leases>,
    id: String,
}

impl Leases {
    pub(crate) fn new(db: Db) -> Arc<Self> {
        Arc::new(Self { db, holder: crate::db::new_id(), held: Default::default() })
    }

    fn until() -> i64 {
        now() + LEASE.as_secs() as i64
    }

    /// A share of this instance's lease on `id`, taking it first if need be.
    async fn take(self: &Arc<Self>, id: &str) -> Result<LeaseShare> {
        let mut held = self.held.lock().await;
        if let Some(running) = held.get_mut(id) {
            *running += 1;
        } else {
            if !self.db.lease_upload(id, &self.holder, Self::until()).await? {
                return Err(Error::Locked);
            }
            held.insert(id.to_owned(), 1);
            tokio::spawn(self.clone().renew(id.to_owned()));
        }
        Ok(LeaseShare { leases: self.clone(), id: id.to_owned() })
    }

    /// Renews the lease on `id` while requests of this instance work on it.
    async fn renew(self: Arc<Self>, id: String) {
        loop {
            tokio::time::sleep(RENEW).await;
            if !self.held.lock().await.contains_key(&id) {
                return;
            }
            match self.db.lease_upload(&id, &self.holder, Self::until()).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(upload = %id, "another instance took over a lease still in use"),
                Err(e) => tracing::warn!(upload = %id, error = %e, "could not renew an upload's lease"),
            }
        }
    }
}

impl Drop for LeaseShare {
    fn drop(&mut self) {
        let (leases, id) = (self.leases.clone(), std::mem::take(&mut self.id));
        tokio::spawn(async move {
            let mut held = leases.held.lock().await;
            let last = held.get_mut(&id).is_some_and(|running| {
                *running -= 1;
                *running == 0
            });
            if last {
                held.remove(&id);
                if let Err(e) = leases.db.release_upload(&id, &leases.holder).await {
                    tracing::warn!(upload = %id, error = %e, "could not give an upload's lease back (it runs out by itself)");
                }
            }
        });
    }
}

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
    /// The policy's refusals of the declared length ([`Error::Storage`]: 413, 400);
    /// [`Error::OverQuota`] when the user's quota has no room for it (the upload is ended).
    pub async fn create_upload(&self, actor: &Actor, length: Option<u64>, metadata: Metadata) -> Result<UploadInfo> {
        let owner = uploader(actor)?;
        let created = async {
            let info = self.resumable.create(owner, length, metadata).await?;
            // The quota's room is held from the start, as long as the upload may live.
            let ttl = i64::try_from(self.config.upload_expiry.as_secs()).unwrap_or(i64::MAX);
            match self.hold(owner, &info.id, length, ttl).await {
                Ok(hold) => {
                    if let Some(hold) = hold {
                        hold.keep();
                    }
                    Ok(info)
                }
                Err(e) => {
                    self.resumable.terminate(owner, &info.id).await?;
                    Err(e)
                }
            }
        }
        .await;
        if let Err(e) = &created {
            self.metrics.rejected(e.upload_reason());
            self.refused_upload(actor, owner, e).await;
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
    /// [`Error::TooManyUploads`]; [`Error::Locked`] while another instance writes the upload;
    /// the protocol's and the policy's refusals; the database's.
    pub async fn append_upload(&self, actor: &Actor, id: &str, patch: Patch) -> Result<(UploadInfo, Option<FileRow>)> {
        let owner = uploader(actor)?;
        let result = async {
            let _slot = self.uploads.take(owner).ok_or(Error::TooManyUploads)?;
            let _lease = self.leases.take(id).await?;
            let patched = self.resumable.patch(&Owner(owner.to_owned()), owner, id, patch).await?;
            let record = match &patched.saved {
                Some(saved) => Some(self.record(owner, saved, Some(id)).await?),
                None => None,
            };
            Ok::<_, Error>((patched.info, record))
        }
        .await;
        match &result {
            Ok((_, Some(row))) => {
                self.metrics.uploaded();
                self.audit_upload(actor, row);
            }
            Ok((_, None)) => {}
            Err(e) => {
                self.metrics.rejected(e.upload_reason());
                self.refused_upload(actor, owner, e).await;
            }
        }
        result
    }

    /// Ends the actor's upload `id` and forgets its bytes.
    ///
    /// # Errors
    /// 404 for an upload that is not the actor's.
    pub async fn end_upload(&self, actor: &Actor, id: &str) -> Result<()> {
        let _lease = self.leases.take(id).await?;
        self.resumable.terminate(uploader(actor)?, id).await?;
        self.db.release(id).await?;
        Ok(())
    }

    /// Removes unfinished uploads past `upload_expiry`; returns how many.
    ///
    /// # Errors
    /// The store's.
    pub async fn sweep_uploads(&self) -> Result<usize> {
        let swept = self.resumable.sweep().await?;
        // The holds of the uploads swept, and of plain uploads whose process went away.
        self.db.purge_reservations().await?;
        Ok(swept)
    }
}
