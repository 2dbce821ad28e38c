//! [`S3Storage`]: private objects in S3-compatible storage (feature `s3`), over object_store's
//! S3 client.

mod config;
#[cfg(feature = "tus")]
mod partials;
mod post;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{Attribute, Attributes, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};

pub use config::{DEFAULT_PRESIGN_EXPIRY, Encryption, S3Builder, S3Setting};
#[cfg(feature = "tus")]
pub use partials::S3Partials;
pub use post::{PostPolicy, PresignedPost};

use super::{GetOptions, GetResult, ObjectMeta, Payload, PresignedGet, PutMode, PutOptions, PutStream, Storage};
use super::{UNIQUE_ATTEMPTS, check_if_match, check_range, with_random_suffix};
use crate::{Error, ObjectKey, Result};

/// Parts of a multipart upload (S3's minimum is 5 MiB for every part but the last). Bodies up
/// to this size go up in one conditional `PUT`.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once per upload; memory per upload stays under `(1 + this) × PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 2;
/// Where multipart uploads with a create-only mode are assembled before they are copied into
/// place with `If-None-Match: *`, and resumable uploads wait: never listed, and a key with
/// this segment is neither read (missing) nor written.
const STAGING: &str = ".ps-staging";

/// Whether `key` names something in the staging area.
fn is_staging(key: &ObjectKey) -> bool {
    key.segments().any(|segment| segment == STAGING)
}

/// A read of a staging object: as missing as it is for `list`.
fn readable(key: &ObjectKey) -> Result<()> {
    match is_staging(key) {
        true => Err(Error::NotFound { key: key.clone() }),
        false => Ok(()),
    }
}

/// A write into the staging area: refused.
fn writable(key: &ObjectKey) -> Result<()> {
    match is_staging(key) {
        true => Err(Error::storage("s3", format!("keys with a {STAGING} segment are reserved for staging"))),
        false => Ok(()),
    }
}

/// Private objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, Garage, R2, ...).
///
/// Reads stream with ranged `GET`s pinned by `If-Match`, so memory stays bounded whatever the
/// object size and a dropped response stops the transfer. Writes of up to 8 MiB are one `PUT`;
/// larger ones are multipart uploads that are aborted (no orphaned parts) when the input fails
/// or the write is dropped. Create-only writes use `If-None-Match: *` (see
/// [`S3Builder::conditional_writes`]). [`Storage::presigned_get`] signs short-lived download
/// links for the [`Delivery::presigned_redirect`](crate::Delivery::presigned_redirect) mode, and
/// [`S3Storage::presigned_post`] lets browsers upload straight to the bucket.
///
/// Build one with [`S3Storage::builder`]; nothing is contacted until the first request
/// ([`S3Storage::check`] tests the connection).
#[derive(Debug)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: Option<ObjectKey>,
    base_url: String,
    presign_expiry: Duration,
    cache_control: Option<String>,
    storage_class: Option<String>,
    encryption: Encryption,
    conditional_writes: bool,
    endpoint: Option<String>,
    region: String,
    virtual_hosted: bool,
}

/// Installs ring as the process's default TLS crypto provider, unless one is installed already.
///
/// The `s3` feature builds reqwest without a provider of its own (to avoid a second, C-built
/// crypto library): [`S3Builder::build`] calls this, and so must an application that builds
/// other reqwest clients before its first `S3Storage`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl S3Storage {
    /// A builder; see [`S3Builder`].
    pub fn builder() -> S3Builder {
        S3Builder::default()
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The folder of the bucket the objects live in, if any.
    pub fn prefix(&self) -> Option<&ObjectKey> {
        self.prefix.as_ref()
    }

    /// The server-side encryption applied to writes.
    pub fn encryption(&self) -> &Encryption {
        &self.encryption
    }

    /// The default lifetime of presigned URLs.
    pub fn presign_expiry(&self) -> Duration {
        self.presign_expiry
    }

    /// Checks that the bucket answers with these credentials (one small `LIST`).
    ///
    /// # Errors
    /// [`Error::Storage`] with the server's answer.
    pub async fn check(&self) -> Result<()> {
        let prefix = self.prefix.as_ref().map(|p| Path::from(p.as_str()));
        self.store.list(prefix.as_ref()).take(1).try_collect::<Vec<_>>().await.map_err(|e| Error::storage("s3", e))?;
        Ok(())
    }

    /// [`S3Storage::check`], then, with [`S3Builder::conditional_writes`] on, that the server
    /// really refuses a second create-only write of one object (some S3-compatible servers,
    /// Garage 2.x among them, ignore `If-None-Match` and would let uploads overwrite each
    /// other). Writes and deletes one small probe object in the staging folder.
    ///
    /// # Errors
    /// [`Error::Config`] naming `conditional_writes` if the server ignores the condition;
    /// [`Error::Storage`] if it cannot be reached.
    pub async fn check_writes(&self) -> Result<()> {
        self.check().await?;
        if !self.conditional_writes {
            return Ok(());
        }
        let probe = self.staging_path();
        let create = || object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        let first = self.store.put_opts(&probe, PutPayload::from_static(b"probe"), create()).await;
        let second = self.store.put_opts(&probe, PutPayload::from_static(b"probe"), create()).await;
        let _ = self.store.delete(&probe).await;
        first.map_err(|e| Error::storage("s3", e))?;
        match second {
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(Error::storage("s3", e)),
            Ok(_) => Err(Error::config(
                "conditional_writes",
                "this S3 server ignores If-None-Match on writes: set conditional_writes = false (create-only writes then check first, which is not atomic)",
            )),
        }
    }

    /// The path in the bucket of `key`.
    fn path(&self, key: &ObjectKey) -> Path {
        let raw = match &self.prefix {
            Some(prefix) => format!("{prefix}/{key}"),
            None => key.to_string(),
        };
        // A valid key has no empty, `.` or `..` segment and no control character: exactly
        // what object_store refuses, so this cannot fail.
        Path::parse(raw).expect("a valid key is a valid object path")
    }

    fn staging_path(&self) -> Path {
        let name: String = std::iter::repeat_with(fastrand::alphanumeric).take(24).collect();
        let raw = match &self.prefix {
            Some(prefix) => format!("{prefix}/{STAGING}/{name}"),
            None => format!("{STAGING}/{name}"),
        };
        Path::parse(raw).expect("a valid staging path")
    }

    fn attributes(&self, content_type: Option<&str>) -> Attributes {
        let mut attributes = Attributes::new();
        if let Some(t) = content_type {
            attributes.insert(Attribute::ContentType, t.to_owned().into());
        }
        if let Some(c) = &self.cache_control {
            attributes.insert(Attribute::CacheControl, c.clone().into());
        }
        if let Some(c) = &self.storage_class {
            attributes.insert(Attribute::StorageClass, c.clone().into());
        }
        attributes
    }

    /// Single-request write of a body already in memory, with the create-only modes.
    async fn put_small(&self, key: &ObjectKey, payload: PutPayload, options: &PutOptions) -> Result<ObjectMeta> {
        let size = payload.content_length() as u64;
        let attributes = self.attributes(options.content_type.as_deref());
        self.commit(key, options.mode, |target, create| {
            let payload = payload.clone();
            let attributes = attributes.clone();
            async move {
                let mode = if create { object_store::PutMode::Create } else { object_store::PutMode::Overwrite };
                let opts = object_store::PutOptions { mode, attributes, ..Default::default() };
                self.store.put_opts(&target, payload, opts).await.map(|r| r.e_tag)
            }
        })
        .await
        .map(|(key, etag)| self.written(key, size, etag, options))
    }

    /// Runs `write(path, create_only)` under `key`, or under suffixed variants of it for
    /// [`PutMode::CreateUnique`]. Without conditional writes the create-only check is a `HEAD`
    /// before the write.
    async fn commit<F, Fut>(&self, key: &ObjectKey, mode: PutMode, write: F) -> Result<(ObjectKey, Option<String>)>
    where
        F: Fn(Path, bool) -> Fut,
        Fut: Future<Output = object_store::Result<Option<String>>>,
    {
        let attempts = match mode {
            PutMode::Overwrite => {
                return write(self.path(key), false).await.map(|e| (key.clone(), e)).map_err(|e| map_err(key, e));
            }
            PutMode::Create => 1,
            PutMode::CreateUnique => UNIQUE_ATTEMPTS,
        };
        let mut candidate = key.clone();
        for _ in 0..attempts {
            let path = self.path(&candidate);
            let taken = match self.conditional_writes {
                true => false, // the write itself refuses a taken key
                false => match self.store.head(&path).await {
                    Ok(_) => true,
                    Err(object_store::Error::NotFound { .. }) => false,
                    // Unknown is not free: never risk overwriting.
                    Err(e) => return Err(map_err(&candidate, e)),
                },
            };
            if !taken {
                match write(path, self.conditional_writes).await {
                    Ok(etag) => return Ok((candidate, etag)),
                    Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
                    Err(e) => return Err(map_err(&candidate, e)),
                }
            }
            candidate = with_random_suffix(key);
        }
        Err(Error::AlreadyExists { key: key.clone() })
    }

    fn written(&self, key: ObjectKey, size: u64, etag: Option<String>, options: &PutOptions) -> ObjectMeta {
        let mut meta = ObjectMeta::new(key, size, SystemTime::now());
        meta.etag = etag.map(quoted);
        meta.content_type = options.content_type.clone();
        meta
    }

    fn meta(&self, key: ObjectKey, om: &object_store::ObjectMeta, attributes: Option<&Attributes>) -> ObjectMeta {
        let mut meta = ObjectMeta::new(key, om.size, om.last_modified.into());
        meta.etag = om.e_tag.clone().map(quoted);
        // S3 reports a default type for objects written without one: that is "unknown".
        meta.content_type = attributes
            .and_then(|a| a.get(&Attribute::ContentType))
            .map(|v| v.to_string())
            .filter(|t| !matches!(t.as_str(), "binary/octet-stream" | "application/octet-stream" | ""));
        meta
    }

    /// Where a multipart upload is assembled: the key itself (S3 makes it visible only when
    /// completed), or a staging object for the create-only modes.
    async fn put_multipart(
        &self,
        key: &ObjectKey,
        first: Vec<Bytes>,
        mut rest: PutStream<'_>,
        options: &PutOptions,
    ) -> Result<ObjectMeta> {
        let direct = options.mode == PutMode::Overwrite;
        let target = if direct { self.path(key) } else { self.staging_path() };
        let opts = object_store::PutMultipartOptions {
            attributes: self.attributes(options.content_type.as_deref()),
            ..Default::default()
        };
        let upload = self.store.put_multipart_opts(&target, opts).await.map_err(|e| map_err(key, e))?;
        let mut upload = Upload::new(upload);
        let mut size = 0u64;
        let sent = async {
            for chunk in first {
                size += chunk.len() as u64;
                upload.push(chunk).await.map_err(|e| map_err(key, e))?;
            }
            while let Some(chunk) = rest.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                upload.push(chunk).await.map_err(|e| map_err(key, e))?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = sent {
            upload.abort().await;
            return Err(e);
        }
        let etag = upload.finish().await.map_err(|e| map_err(key, e))?;
        if direct {
            return Ok(self.written(key.clone(), size, etag, options));
        }
        let staged = StagedObject { store: self.store.clone(), path: Some(target.clone()) };
        let committed = self.copy_path(&target, key, options.mode).await;
        staged.remove().await;
        let (key, etag) = committed?;
        Ok(self.written(key, size, etag, options))
    }

    /// A server-side copy (`CopyObject`) of the object at `from` to `to`, in `mode`.
    async fn copy_path(&self, from: &Path, to: &ObjectKey, mode: PutMode) -> Result<(ObjectKey, Option<String>)> {
        self.commit(to, mode, |path, create| async move {
            if create {
                self.store.copy_if_not_exists(from, &path).await?;
            } else {
                self.store.copy(from, &path).await?;
            }
            Ok(self.store.head(&path).await?.e_tag)
        })
        .await
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        readable(key)?;
        let options = object_store::GetOptions { head: true, ..Default::default() };
        let got = self.store.get_opts(&self.path(key), options).await.map_err(|e| map_err(key, e))?;
        Ok(self.meta(key.clone(), &got.meta, Some(&got.attributes)))
    }

    /// One ranged `GET` of the first `inline_max` bytes: for a small object that is all of it,
    /// metadata included, in one round trip instead of a `HEAD` and a `GET`. For a larger one
    /// the probe is read to its end (at most `inline_max` bytes, so the connection is reused)
    /// and dropped.
    async fn head_with_bytes(&self, key: &ObjectKey, inline_max: u64) -> Result<(ObjectMeta, Option<Bytes>)> {
        if inline_max == 0 {
            return Ok((self.head(key).await?, None));
        }
        readable(key)?;
        let request = object_store::GetOptions { range: Some(GetRange::Bounded(0..inline_max)), ..Default::default() };
        match self.store.get_opts(&self.path(key), request).await {
            Ok(got) => {
                let meta = self.meta(key.clone(), &got.meta, Some(&got.attributes));
                let whole = got.range == (0..meta.size);
                let bytes = got.bytes().await.map_err(|e| map_err(key, e))?;
                Ok((meta, whole.then_some(bytes)))
            }
            Err(e @ object_store::Error::NotFound { .. }) => Err(map_err(key, e)),
            // An empty object has no byte 0 to range over (416): ask for its metadata alone.
            Err(_) => Ok((self.head(key).await?, None)),
        }
    }

    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        readable(key)?;
        if let Some(range) = options.range.clone().filter(|r| r.start >= r.end) {
            // S3 cannot send zero bytes of an object: check the range against its size.
            let meta = self.head(key).await?;
            check_if_match(options.if_match.as_deref(), &meta)?;
            let range = check_range(Some(range), meta.size)?;
            return Ok(GetResult::new(meta, range, Payload::Bytes(Bytes::new())));
        }
        let wanted = options.range.clone();
        let request = object_store::GetOptions {
            range: wanted.clone().map(GetRange::Bounded),
            if_match: options.if_match.clone(),
            ..Default::default()
        };
        match self.store.get_opts(&self.path(key), request).await {
            Ok(got) => {
                let meta = self.meta(key.clone(), &got.meta, Some(&got.attributes));
                let range = got.range.clone();
                // Some servers (s3s-fs) ignore If-Match: check the ETag they answered with.
                check_if_match(options.if_match.as_deref(), &meta)?;
                if let Some(wanted) = wanted.filter(|w| *w != range) {
                    // Servers shorten a range that runs past the end: that is outside the object.
                    check_range(Some(wanted.clone()), meta.size)?;
                    return Err(Error::storage("s3", format!("asked for bytes {wanted:?}, got {range:?}")));
                }
                let failed = key.clone();
                let stream = got.into_stream().map_err(move |e| map_err(&failed, e)).boxed();
                Ok(GetResult::new(meta, range, Payload::Stream(stream)))
            }
            Err(e @ (object_store::Error::NotFound { .. } | object_store::Error::Precondition { .. })) => {
                Err(map_err(key, e))
            }
            Err(e) => match wanted {
                // A range outside the object: S3 answers 416, or a shorter range than asked.
                Some(range) => {
                    let meta = self.head(key).await?;
                    check_range(Some(range), meta.size)?;
                    Err(map_err(key, e))
                }
                None => Err(map_err(key, e)),
            },
        }
    }

    async fn put(&self, key: &ObjectKey, mut data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta> {
        writable(key)?;
        let mut first = Vec::new();
        let mut buffered = 0;
        while buffered < PART_SIZE {
            match data.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    buffered += chunk.len();
                    first.push(chunk);
                }
                None => return self.put_small(key, first.into_iter().collect(), &options).await,
            }
        }
        self.put_multipart(key, first, data, &options).await
    }

    /// `CopyObject` on the S3 server: the bytes never pass through here.
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey, mode: PutMode) -> Result<ObjectMeta> {
        readable(from)?;
        writable(to)?;
        let (key, _) = self.copy_path(&self.path(from), to, mode).await.map_err(|e| match e {
            // A write's target cannot be missing: it is the source.
            Error::NotFound { .. } => Error::NotFound { key: from.clone() },
            e => e,
        })?;
        self.head(&key).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        writable(key)?;
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(key, e)),
        }
    }

    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>> {
        let base = self.prefix.clone();
        let folder = match (&self.prefix, prefix) {
            (Some(p), Some(sub)) => Some(p.join(sub)),
            (Some(p), None) => Some(p.clone()),
            (None, sub) => sub.cloned(),
        };
        let folder = folder.map(|f| Path::parse(f.as_str()).expect("a valid key is a valid object path"));
        let store = self.store.clone();
        let this_meta = move |om: object_store::ObjectMeta| -> Option<ObjectMeta> {
            let raw = om.location.as_ref();
            let rel = match &base {
                Some(p) => raw.strip_prefix(p.as_str())?.strip_prefix('/')?,
                None => raw,
            };
            if rel.split('/').any(|segment| segment == STAGING) {
                return None;
            }
            let key = ObjectKey::new(rel).ok()?;
            let mut meta = ObjectMeta::new(key, om.size, om.last_modified.into());
            meta.etag = om.e_tag.map(quoted);
            Some(meta)
        };
        store
            .list(folder.as_ref())
            .map_err(|e| Error::storage("s3", e))
            .try_filter_map(move |om| std::future::ready(Ok(this_meta(om))))
            .boxed()
    }

    async fn presigned_get(&self, key: &ObjectKey, request: &PresignedGet) -> Result<Option<String>> {
        readable(key)?;
        if matches!(self.encryption, Encryption::Customer { .. }) {
            return Err(Error::config(
                "delivery",
                "objects encrypted with a customer key (SSE-C) cannot be fetched through presigned URLs",
            ));
        }
        let expires_in =
            request.expires_in.unwrap_or(self.presign_expiry).min(self.presign_expiry).max(Duration::from_secs(1));
        let mut query = Vec::new();
        for (name, value) in [
            ("response-content-type", &request.content_type),
            ("response-content-disposition", &request.content_disposition),
            ("response-cache-control", &request.cache_control),
        ] {
            if let Some(value) = value {
                query.push((name, value.as_str()));
            }
        }
        let options = SignedUrlOptions::new().with_query(query);
        let url = self
            .store
            .signed_url_opts(Method::GET, &self.path(key), expires_in, &options)
            .await
            .map_err(|e| Error::storage("s3", e))?;
        Ok(Some(url.to_string()))
    }

    fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// An S3 ETag as it goes on the wire: quoted (some servers leave the quotes out).
fn quoted(etag: String) -> String {
    if etag.starts_with('"') { etag } else { format!("\"{etag}\"") }
}

fn map_err(key: &ObjectKey, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound { key: key.clone() },
        object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { key: key.clone() },
        object_store::Error::Precondition { .. } => Error::PreconditionFailed { key: key.clone() },
        other => Error::storage("s3", other),
    }
}

/// A multipart upload in progress: parts of [`PART_SIZE`] go up while the next one fills, at
/// most [`PARTS_IN_FLIGHT`] at a time. Dropped before [`Upload::finish`] completed — the input
/// failed, a part failed, or the caller went away — it aborts the upload so no parts remain.
struct Upload {
    inner: Option<Box<dyn MultipartUpload>>,
    buffer: Vec<Bytes>,
    buffered: usize,
    in_flight: tokio::task::JoinSet<object_store::Result<()>>,
}

impl Upload {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Self { inner: Some(upload), buffer: Vec::new(), buffered: 0, in_flight: tokio::task::JoinSet::new() }
    }

    async fn push(&mut self, mut chunk: Bytes) -> object_store::Result<()> {
        while !chunk.is_empty() {
            let take = chunk.len().min(PART_SIZE - self.buffered);
            self.buffered += take;
            self.buffer.push(chunk.split_to(take));
            if self.buffered == PART_SIZE {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> object_store::Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let part: PutPayload = std::mem::take(&mut self.buffer).into_iter().collect();
        self.buffered = 0;
        let upload = self.inner.as_mut().expect("an unfinished upload");
        self.in_flight.spawn(upload.put_part(part));
        Ok(())
    }

    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(object_store::Error::JoinError { source: join }),
            None => Ok(()),
        }
    }

    /// Aborts the upload now (dropping it aborts in the background).
    async fn abort(mut self) {
        if let Some(mut upload) = self.inner.take() {
            self.in_flight.shutdown().await;
            if let Err(e) = upload.abort().await {
                tracing::warn!(error = %e, "could not abort a failed multipart upload; retrying in the background");
                abort_later(upload);
            }
        }
    }

    async fn finish(mut self) -> object_store::Result<Option<String>> {
        let completed = async {
            if self.buffered > 0 || self.in_flight.is_empty() {
                self.send_part().await?;
            }
            while !self.in_flight.is_empty() {
                self.join_one().await?;
            }
            self.inner.as_mut().expect("an unfinished upload").complete().await
        }
        .await;
        match completed {
            Ok(result) => {
                self.inner = None; // completed: nothing to abort
                Ok(result.e_tag)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(upload) = self.inner.take() {
            self.in_flight.abort_all();
            abort_later(upload);
        }
    }
}

/// How long a multipart upload that could not be aborted (the S3 server was unreachable) is
/// retried in the background before it is left to the bucket's lifecycle rule.
const ABORT_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// Aborts `upload` in the background, retrying with backoff while the server is unreachable,
/// so that an upload cut off by an outage leaves no parts once the server is back.
fn abort_later(mut upload: Box<dyn MultipartUpload>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            match upload.abort().await {
                Ok(()) => return,
                Err(e) if started.elapsed() > ABORT_RETRY_FOR => {
                    tracing::error!(error = %e, "gave up aborting an unfinished multipart upload; a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes its parts");
                    return;
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    });
}

/// A staged object, deleted once it was copied into place (or the copy failed).
struct StagedObject {
    store: Arc<AmazonS3>,
    path: Option<Path>,
}

impl StagedObject {
    async fn remove(mut self) {
        if let Some(path) = self.path.take()
            && let Err(e) = self.store.delete(&path).await
        {
            tracing::warn!(%path, error = %e, "could not delete a staged upload");
        }
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            runtime.spawn(async move { store.delete(&path).await });
        }
    }
}
