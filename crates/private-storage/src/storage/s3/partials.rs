//! [`S3Partials`]: unfinished resumable uploads kept in the bucket itself, so that every server
//! sharing it can continue any of them (features `s3` and `tus`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{PART_SIZE, S3Storage, STAGING};
use crate::storage::ByteStream;
use crate::tus::{PartialStore, UploadInfo};
use crate::{Error, ObjectKey, ObjectMeta, PutMode, Result, Storage};

/// The first bytes kept apart for the type checks: S3 cannot read the parts of an unfinished
/// multipart upload. As many as the largest head an upload policy looks at.
const HEAD_KEPT: usize = 256 * 1024;

/// Unfinished resumable uploads in an S3 bucket, under the storage's staging folder: the bytes
/// as a multipart upload (8 MiB parts; S3 wants at least 5 MiB in all but the last), the bytes
/// past the last whole part as a "tail" object (so an acknowledged offset is stored, as tusd's
/// S3 store does), the first 256 KiB apart for the type checks, and the state as JSON. A
/// finished upload's parts are completed, then copied into place on the S3 server; an ended or
/// expired one's multipart upload is aborted.
///
/// Every server sharing the bucket sees every upload, so a client may continue on another
/// server. The state is written after the bytes it describes, so a crash between the two loses
/// only bytes that were never acknowledged.
#[derive(Debug, Clone)]
pub struct S3Partials {
    s3: Arc<S3Storage>,
    /// Parts and tail written by an append, until the engine saves the offset they make up.
    pending: Arc<Mutex<HashMap<String, Parts>>>,
}

/// Where an upload's bytes are, beside its [`UploadInfo`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Parts {
    /// The multipart upload's id, once created.
    upload: Option<String>,
    /// The ETags of the parts so far, in order, each `PART_SIZE` bytes.
    etags: Vec<String>,
    /// The object holding the bytes past the last part, and how many there are.
    tail: Option<String>,
    tail_len: u64,
    /// How many of the first bytes the head object holds.
    head_len: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    info: UploadInfo,
    parts: Parts,
}

impl S3Partials {
    /// Unfinished uploads in `s3`'s bucket, finished into `s3`.
    pub fn new(s3: Arc<S3Storage>) -> Self {
        Self { s3, pending: Arc::default() }
    }

    fn path(&self, id: &str, what: &str) -> Result<Path> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::storage("tus", "not an upload id"));
        }
        Ok(self.internal(&format!("{id}{what}")))
    }

    /// The folder of the uploads' objects, or one of them.
    fn internal(&self, name: &str) -> Path {
        let folder = match &self.s3.prefix {
            Some(prefix) => format!("{prefix}/{STAGING}/tus"),
            None => format!("{STAGING}/tus"),
        };
        let raw = if name.is_empty() { folder } else { format!("{folder}/{name}") };
        Path::parse(raw).expect("a valid staging path")
    }

    fn store(&self) -> &Arc<object_store::aws::AmazonS3> {
        &self.s3.store
    }

    async fn read_saved(&self, id: &str) -> Result<Option<Saved>> {
        match self.store().get(&self.path(id, ".json")?).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(s3)?;
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| Error::storage("tus", e))?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3(e)),
        }
    }

    async fn write_saved(&self, info: &UploadInfo, parts: &Parts) -> Result<()> {
        let saved = serde_json::to_vec(&Saved { info: info.clone(), parts: parts.clone() })
            .map_err(|e| Error::storage("tus", e))?;
        self.store().put(&self.path(&info.id, ".json")?, PutPayload::from(saved)).await.map_err(s3)?;
        Ok(())
    }

    /// The parts an append left, or else those saved.
    async fn parts(&self, id: &str) -> Result<Parts> {
        if let Some(parts) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(parts.clone());
        }
        Ok(self.read_saved(id).await?.map(|s| s.parts).unwrap_or_default())
    }

    async fn read(&self, path: &Path) -> Result<Bytes> {
        self.store().get(path).await.map_err(s3)?.bytes().await.map_err(s3)
    }

    async fn delete(&self, path: &Path) {
        match self.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(%path, error = %e, "could not delete a resumable upload's object"),
        }
    }

    /// Writes `data` after the saved bytes: whole parts as they fill, the rest as a new tail.
    async fn write(&self, info: &UploadInfo, mut data: ByteStream) -> Result<(u64, Parts, Result<()>)> {
        let mut parts = self.parts(&info.id).await?;
        let staged = self.path(&info.id, "")?;
        let upload = match &parts.upload {
            Some(upload) => upload.clone(),
            None => {
                let upload = self.store().create_multipart(&staged).await.map_err(s3)?;
                parts.upload = Some(upload.clone());
                upload
            }
        };
        let mut buffer = BytesMut::new();
        if let Some(tail) = &parts.tail {
            buffer.extend_from_slice(
                &self.read(&self.path(&info.id, &format!(".{tail}"))?).await?[..parts.tail_len as usize],
            );
        }
        let mut head = BytesMut::new();
        if parts.head_len > 0 && (parts.head_len as usize) < HEAD_KEPT {
            head.extend_from_slice(&self.read(&self.path(&info.id, ".head")?).await?[..parts.head_len as usize]);
        }
        let mut offset = info.offset;
        let mut outcome = Ok(());
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            if (offset as usize) < HEAD_KEPT {
                let take = (HEAD_KEPT - offset as usize).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            offset += chunk.len() as u64;
            buffer.extend_from_slice(&chunk);
            while buffer.len() >= PART_SIZE {
                let part = buffer.split_to(PART_SIZE).freeze();
                let id = self.store().put_part(&staged, &upload, parts.etags.len(), part.into()).await.map_err(s3)?;
                parts.etags.push(id.content_id);
            }
        }
        if head.len() as u64 > parts.head_len {
            self.store()
                .put(&self.path(&info.id, ".head")?, PutPayload::from(head.clone().freeze()))
                .await
                .map_err(s3)?;
            parts.head_len = head.len() as u64;
        }
        parts.tail = None;
        parts.tail_len = buffer.len() as u64;
        if !buffer.is_empty() {
            let name: String = std::iter::repeat_with(fastrand::alphanumeric).take(12).collect();
            let path = self.path(&info.id, &format!(".{name}"))?;
            self.store().put(&path, PutPayload::from(buffer.freeze())).await.map_err(s3)?;
            parts.tail = Some(name);
        }
        Ok((offset, parts, outcome))
    }
}

fn s3(e: object_store::Error) -> Error {
    Error::storage("s3", e)
}

#[async_trait]
impl PartialStore for S3Partials {
    async fn create(&self, info: &UploadInfo) -> Result<()> {
        self.write_saved(info, &Parts::default()).await
    }

    async fn load(&self, id: &str) -> Result<Option<UploadInfo>> {
        let Ok(_) = self.path(id, "") else { return Ok(None) };
        Ok(self.read_saved(id).await?.map(|saved| saved.info))
    }

    async fn save(&self, info: &UploadInfo) -> Result<()> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&info.id);
        let saved = self.read_saved(&info.id).await?;
        let old_tail = saved.as_ref().and_then(|s| s.parts.tail.clone());
        let parts = match pending {
            Some(parts) => parts,
            None => saved.map(|s| s.parts).unwrap_or_default(),
        };
        self.write_saved(info, &parts).await?;
        // The tail the saved offset no longer needs.
        if let Some(old) = old_tail.filter(|old| parts.tail.as_ref() != Some(old)) {
            self.delete(&self.path(&info.id, &format!(".{old}"))?).await;
        }
        Ok(())
    }

    async fn append(&self, info: &UploadInfo, data: ByteStream) -> (u64, Result<()>) {
        match self.write(info, data).await {
            Ok((offset, parts, outcome)) => {
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(info.id.clone(), parts);
                (offset, outcome)
            }
            // Nothing new is acknowledged: parts written since are overwritten next time.
            Err(e) => (info.offset, Err(e)),
        }
    }

    async fn truncate(&self, info: &UploadInfo, _offset: u64) -> Result<()> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&info.id);
        if let Some(tail) = pending.and_then(|p| p.tail) {
            self.delete(&self.path(&info.id, &format!(".{tail}"))?).await;
        }
        Ok(())
    }

    async fn head(&self, id: &str, len: usize) -> Result<Bytes> {
        let parts = self.parts(id).await?;
        if parts.head_len == 0 {
            return Ok(Bytes::new());
        }
        let head = self.read(&self.path(id, ".head")?).await?;
        Ok(head.slice(..len.min(parts.head_len as usize).min(head.len())))
    }

    async fn finish(&self, info: &UploadInfo, key: &ObjectKey, mode: PutMode) -> Result<ObjectMeta> {
        let mut parts = self.parts(&info.id).await?;
        let staged = self.path(&info.id, "")?;
        let upload = parts.upload.clone().ok_or_else(|| Error::storage("tus", "an upload without bytes"))?;
        if let Some(tail) = &parts.tail {
            let bytes = self.read(&self.path(&info.id, &format!(".{tail}"))?).await?;
            let id = self.store().put_part(&staged, &upload, parts.etags.len(), bytes.into()).await.map_err(s3)?;
            parts.etags.push(id.content_id);
        }
        let ids = parts.etags.iter().map(|etag| PartId { content_id: etag.clone() }).collect();
        self.store().complete_multipart(&staged, &upload, ids).await.map_err(s3)?;
        let (stored, _) = self.s3.copy_path(&staged, key, mode).await?;
        let meta = self.s3.head(&stored).await?;
        let mut done = info.clone();
        done.completed = true;
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&info.id);
        self.write_saved(&done, &Parts::default()).await?;
        self.delete(&staged).await;
        self.delete(&self.path(&info.id, ".head")?).await;
        if let Some(tail) = &parts.tail {
            self.delete(&self.path(&info.id, &format!(".{tail}"))?).await;
        }
        Ok(meta)
    }

    async fn remove(&self, id: &str) -> Result<()> {
        if let Some(saved) = self.read_saved(id).await?
            && let Some(upload) = &saved.parts.upload
        {
            match self.store().abort_multipart(&self.path(id, "")?, &upload.clone()).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3(e)),
            }
        }
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        // Everything named after the upload: state, head, tails (a crash may have left one).
        let own = self.path(id, "")?;
        let prefix = self.internal("");
        let objects: Vec<Path> = self
            .store()
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_filter(|p| {
                std::future::ready(p.as_ref() == own.as_ref() || p.as_ref().starts_with(&format!("{own}.")))
            })
            .try_collect()
            .await
            .map_err(s3)?;
        for path in objects {
            self.delete(&path).await;
        }
        Ok(())
    }

    async fn ids(&self) -> Result<Vec<String>> {
        let prefix = self.internal("");
        let base = format!("{prefix}/");
        let names: Vec<String> =
            self.store().list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect().await.map_err(s3)?;
        Ok(names
            .iter()
            .filter_map(|name| name.strip_prefix(&base).unwrap_or(name).strip_suffix(".json").map(str::to_owned))
            .filter(|id| !id.contains('/'))
            .collect())
    }
}
