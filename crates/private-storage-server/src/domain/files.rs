//! Files: uploads with their records, listing, showing, deleting, and the record source of
//! downloads by id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use private_storage::{ContentDisposition, ObjectKey, PrivateFile, RecordSource, SavedFile, Upload};

use super::audit::Event;
use super::webhooks::file_data;
use super::{Actor, Domain, Error, Result, may_access};
use crate::config::WebhookEvent;
use crate::db::{Db, FileRow, OwnedFile, ScanState, new_id, now};

/// The record type uploads are saved for: the owner's user id (it names their folder).
#[derive(Debug, Clone)]
pub struct Owner(pub String);

/// Uploads in progress per user, capped at `max_uploads_per_user`.
#[derive(Debug, Clone)]
pub struct UploadSlots {
    max: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl UploadSlots {
    pub(super) fn new(max: usize) -> Self {
        Self { max, running: Arc::default() }
    }

    /// How many uploads `user_id` runs now.
    pub fn running(&self, user_id: &str) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(user_id).copied().unwrap_or(0)
    }

    pub(super) fn take(&self, user_id: &str) -> Option<UploadSlot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = running.entry(user_id.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(UploadSlot { slots: self.clone(), user_id: user_id.to_owned() })
    }
}

/// One of a user's upload slots, given back when dropped.
#[derive(Debug)]
pub(super) struct UploadSlot {
    slots: UploadSlots,
    user_id: String,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = running.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.user_id);
            }
        }
    }
}

/// Records for downloads by id, in the scope of the request's user.
#[derive(Debug, Clone)]
pub struct DbRecords(pub(super) Db);

#[async_trait]
impl RecordSource for DbRecords {
    type Record = Arc<FileRow>;

    async fn find(&self, request: &http::request::Parts, id: &str) -> private_storage::Result<Option<Arc<FileRow>>> {
        let Some(actor) = request.extensions.get::<Actor>() else { return Ok(None) };
        self.0
            .file(id, actor.scope())
            .await
            .map_err(|e| private_storage::Error::Storage { backend: "database", source: Box::new(e) })
    }

    fn file_key(&self, record: &Arc<FileRow>) -> Option<ObjectKey> {
        ObjectKey::new(&record.object_key).ok()
    }

    fn sees_every_record(&self, request: &http::request::Parts) -> bool {
        request.extensions.get::<Actor>().is_some_and(Actor::sees_everything)
    }
}

/// The `Content-Disposition` of a download by record: the record's name (RFC 6266, UTF-8 with
/// an ASCII fallback), as an attachment — or inline with `?inline=1`, for viewing in the browser
/// (active content is an attachment whatever is asked).
pub(super) fn disposition(request: &http::request::Parts, record: &Arc<FileRow>) -> Option<ContentDisposition> {
    let inline = request.uri.query().is_some_and(|q| q.split('&').any(|p| p == "inline" || p == "inline=1"));
    let disposition = if inline { ContentDisposition::inline() } else { ContentDisposition::attachment() };
    Some(disposition.with_filename(&record.name))
}

/// The rule of downloads by record: [`may_access`] on the record the file belongs to.
pub(super) async fn owner_or_staff(file: PrivateFile) -> bool {
    let Some(record) = file.parent::<Arc<FileRow>>() else { return false };
    file.user().is_some_and(|u| may_access(u.id(), u.is_staff() || u.is_superuser(), &record.owner_id))
}

impl Domain {
    /// Stores an upload for `owner_id` through the upload policy and records it. `read` is
    /// the front-end's part: it reads the request up to the file and hands over its stream; it
    /// runs once one of the actor's upload slots is taken, so a user over the cap costs nothing.
    /// `bound` is what the front-end knows of the file's most size (a request's length): the
    /// room the quota holds for it, cut off there.
    /// No file without a record (the bytes are deleted if the record cannot be written), nothing
    /// stored when anything fails; every outcome is counted in the metrics.
    ///
    /// # Errors
    /// [`Error::TooManyUploads`], the front-end's refusals, the policy's ([`Error::Storage`]),
    /// [`Error::NotFound`] when a user uploads for someone else; the database's.
    pub async fn upload<'a>(
        &self,
        actor: &Actor,
        owner_id: &str,
        bound: Option<u64>,
        read: impl Future<Output = Result<Upload<'a>>>,
    ) -> Result<FileRow> {
        let result = async {
            if actor.scope().is_some_and(|own| own != owner_id) {
                return Err(Error::NotFound("user"));
            }
            let _slot = match actor {
                Actor::User(user) => Some(self.uploads.take(&user.id).ok_or(Error::TooManyUploads)?),
                Actor::Operator => None,
            };
            let upload = read.await?;
            let hold = self.hold_plain(owner_id, upload.announced_len().or(bound)).await?;
            let upload = match &hold {
                Some(hold) => upload.limit(hold.limit),
                None => upload,
            };
            let saved = self.policy.save(&Owner(owner_id.to_owned()), upload).await.map_err(|e| match (e, &hold) {
                // Cut off at the room the quota left, not at `max_file_size`.
                (private_storage::Error::TooLarge { limit }, Some(hold))
                    if limit == hold.limit && limit < self.config.max_file_size =>
                {
                    Error::OverQuota(hold.cut_off.clone())
                }
                (e, _) => e.into(),
            })?;
            let row = self.record(owner_id, &saved, hold.as_ref().map(|h| h.id.as_str())).await?;
            // Given back with the record, in its transaction.
            if let Some(hold) = hold {
                hold.keep();
            }
            Ok(row)
        }
        .await;
        match &result {
            Ok(row) => {
                self.metrics.uploaded();
                self.audit_upload(actor, row);
            }
            Err(e) => {
                self.metrics.rejected(e.upload_reason());
                self.refused_upload(actor, owner_id, e).await;
            }
        }
        result
    }

    /// Audits a stored upload.
    pub(super) fn audit_upload(&self, actor: &Actor, row: &FileRow) {
        self.audit.record(Event::by("upload", actor).file(row).bytes(Some(row.size as u64)).detail(&row.name));
    }

    /// Audits a refused upload; one refused for the quota is also the `quota.exceeded` event.
    pub(super) async fn refused_upload(&self, actor: &Actor, owner_id: &str, e: &Error) {
        if matches!(e, Error::Locked) {
            return; // another instance is writing it: the client retries, nothing was refused
        }
        let kind = if matches!(e, Error::OverQuota(_)) { "quota_refused" } else { "upload_refused" };
        self.audit.record(Event::by(kind, actor).status(e.status().as_u16()).detail(e.message()));
        if matches!(e, Error::OverQuota(_)) {
            let data = serde_json::json!({ "user_id": owner_id, "message": e.message() });
            self.emit(WebhookEvent::QuotaExceeded, data).await;
        }
    }

    /// The record of a stored upload; its name is the client's, cleaned by the policy. With a
    /// quota, written with the upload's hold given back, if the file fits.
    pub(super) async fn record(&self, owner_id: &str, saved: &SavedFile, hold: Option<&str>) -> Result<FileRow> {
        let (scan, scan_detail) = self.initial_scan(saved.size);
        let row = FileRow {
            id: new_id(),
            owner_id: owner_id.to_owned(),
            object_key: saved.key.to_string(),
            name: saved.original_name.clone(),
            size: saved.size as i64,
            content_type: saved.content_type.clone(),
            sha256: saved.sha256.clone(),
            created: now(),
            scan,
            scan_detail,
        };
        if let Err(e) = self.insert_held(&row, hold).await {
            if let Err(delete) = self.storage.delete(&saved.key).await {
                tracing::error!(key = %saved.key, error = %delete, "could not delete the bytes of an unrecorded upload");
            }
            return Err(e);
        }
        tracing::info!(id = %row.id, key = %row.object_key, size = row.size, owner = owner_id, scan = row.scan.as_str(), "file uploaded");
        if row.scan == ScanState::Pending {
            self.file_waits();
        } else {
            self.emit(WebhookEvent::FileCreated, serde_json::json!({ "file": file_data(&row) })).await;
        }
        Ok(row)
    }

    /// The actor's files (everyone's for staff), newest first, with their owners; and the total.
    ///
    /// # Errors
    /// The database's.
    pub async fn list(&self, actor: &Actor, limit: i64, offset: i64) -> Result<(Vec<OwnedFile>, i64)> {
        Ok(self.db.files(actor.scope(), limit, offset).await?)
    }

    /// Files of one owner, or everyone's (for the operator's listing), newest first, `limit`
    /// after the `(created, id)` of the last one seen.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown owner; the database's.
    pub async fn list_after(
        &self,
        owner: Option<&str>,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<OwnedFile>> {
        let scope = match owner {
            Some(name) => Some(self.user_named(name).await?.id),
            None => None,
        };
        Ok(self.db.files_after(scope.as_deref(), after, limit).await?)
    }

    /// A file the actor may see, by id.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none or it is not theirs: the same answer.
    pub async fn file(&self, actor: &Actor, id: &str) -> Result<FileRow> {
        self.db.file(id, actor.scope()).await?.map(|f| FileRow::clone(&f)).ok_or(Error::NotFound("file"))
    }

    /// A file the actor may see, by id or, for the operator, by storage key.
    ///
    /// # Errors
    /// As [`Domain::file`].
    pub async fn file_by_id_or_key(&self, actor: &Actor, target: &str) -> Result<FileRow> {
        match self.file(actor, target).await {
            Err(Error::NotFound(_)) if actor.sees_everything() => {
                self.db.file_by_key(target).await?.ok_or(Error::NotFound("file"))
            }
            found => found,
        }
    }

    /// The owner's name of a file, when it is not the actor.
    ///
    /// # Errors
    /// The database's.
    pub async fn owner_name(&self, actor: &Actor, file: &FileRow) -> Result<Option<String>> {
        if matches!(actor, Actor::User(u) if u.id == file.owner_id) {
            return Ok(None);
        }
        Ok(self.db.user_by_id(&file.owner_id).await?.map(|u| u.username))
    }

    /// Deletes a file the actor may see: its record, its share links, then its bytes.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the database's.
    pub async fn delete(&self, actor: &Actor, id: &str) -> Result<FileRow> {
        let file = self.file(actor, id).await?;
        // Events queued earlier find their file's owner as they are written: write them first.
        self.audit.flush().await;
        self.db.delete_file(&file.id).await?;
        match ObjectKey::new(&file.object_key) {
            // Found infected and deleted already: only the record was left.
            Ok(_) if file.scan == ScanState::Removed => {}
            Ok(key) => {
                if let Err(e) = self.storage.delete(&key).await {
                    // The record is gone, so nothing links to the bytes any more; log for cleanup.
                    tracing::error!(key = %key, error = %e, "could not delete the bytes of a deleted file");
                }
            }
            Err(e) => tracing::error!(key = %file.object_key, error = %e, "a record with an invalid key"),
        }
        tracing::info!(id = %file.id, key = %file.object_key, by = actor.name(), "file deleted");
        self.audit.record(Event::by("delete", actor).file(&file).detail(&file.name));
        self.emit(WebhookEvent::FileDeleted, serde_json::json!({ "file": file_data(&file) })).await;
        Ok(file)
    }

    /// The bytes of a file the actor may see, for the command line's `get`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the storage's.
    pub async fn read(&self, actor: &Actor, target: &str) -> Result<(FileRow, private_storage::GetResult)> {
        let file = self.file_by_id_or_key(actor, target).await?;
        self.check_servable(&file)?;
        let key = ObjectKey::new(&file.object_key).map_err(|e| Error::Internal(e.into()))?;
        let got = self.storage.get(&key, private_storage::GetOptions::default()).await?;
        Ok((file, got))
    }

    /// Copies every stored file to `target`, verified (see `private_storage::migrate`).
    ///
    /// # Errors
    /// The storages'.
    pub async fn copy_storage(
        &self,
        target: &dyn private_storage::Storage,
        progress: impl FnMut(&private_storage::MigrationProgress<'_>),
    ) -> Result<private_storage::MigrationReport> {
        Ok(private_storage::migrate(&*self.storage, target, None, progress).await?)
    }
}
