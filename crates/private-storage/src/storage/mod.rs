//! The storage trait and its backends.
//!
//! [`Storage`] is the minimum contract a backend fulfils: `head`, `get` (with a range and an
//! `if_match` precondition), `put` from a stream, `delete` and `list`. Conveniences such as
//! [`StorageExt::put_bytes`] and [`StorageExt::url`] are built on top for every backend.
//! The `testing` feature's [`conformance`](crate::testing::conformance) suite checks that a
//! backend keeps the contract.

mod cached;
#[cfg(feature = "encryption")]
mod encrypted;
pub(crate) mod local;
mod memory;
mod migrate;
#[cfg(feature = "s3")]
mod s3;

use std::fmt::Debug;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt, stream};

pub use cached::CachedStorage;
#[cfg(all(feature = "encryption", feature = "tus"))]
pub(crate) use encrypted::PartialCipher;
#[cfg(feature = "encryption")]
pub use encrypted::{EncryptedStorage, Keyring, Rewrap};
pub use local::{FileRegion, LocalStorage};
pub use memory::{Fault, MemoryStorage};
pub use migrate::{MigrationProgress, MigrationReport, migrate};
#[cfg(all(feature = "s3", feature = "tus"))]
pub use s3::S3Partials;
#[cfg(feature = "s3")]
pub use s3::{
    DEFAULT_PRESIGN_EXPIRY, Encryption, PostPolicy, PresignedPost, S3Builder, S3Setting, S3Storage,
    install_tls_provider,
};

use crate::{Error, ObjectKey, Result};

/// The base URL a storage's links start with unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "/private-media/";

/// A stream of bytes flowing out of a storage (or anywhere a `'static` stream is needed).
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A stream of bytes flowing into [`Storage::put`]; it may borrow (an axum multipart field does).
pub type PutStream<'a> = BoxStream<'a, Result<Bytes>>;

/// What a storage knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// The object's key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written.
    pub last_modified: SystemTime,
    /// A strong entity tag, quoted as it goes on the wire (`"5f3a-1000"`), if the backend has one.
    pub etag: Option<String>,
    /// The content type recorded at write time, if the backend records one.
    pub content_type: Option<String>,
}

impl ObjectMeta {
    /// Metadata for `key` with the given size and modification time, and no ETag or type.
    pub fn new(key: ObjectKey, size: u64, last_modified: SystemTime) -> Self {
        Self { key, size, last_modified, etag: None, content_type: None }
    }

    /// Sets the entity tag (quoted as on the wire).
    pub fn with_etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// Sets the recorded content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }
}

/// Options for [`Storage::get`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOptions {
    /// Only these bytes (half-open, within the object). Defaults to the whole object.
    pub range: Option<Range<u64>>,
    /// Fail with [`Error::PreconditionFailed`] unless the object's ETag is this one, so that
    /// the bytes of one response never mix two versions. Defaults to none.
    pub if_match: Option<String>,
}

impl GetOptions {
    /// Reads the bytes in `range`.
    pub fn with_range(mut self, range: Range<u64>) -> Self {
        self.range = Some(range);
        self
    }

    /// Reads only if the object's ETag is still `etag`.
    pub fn with_if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }
}

/// Whether a write may replace an existing object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutMode {
    /// Replace any existing object atomically. The default.
    #[default]
    Overwrite,
    /// Fail with [`Error::AlreadyExists`] if an object exists; the check and the write are atomic.
    Create,
    /// Never replace: if the key is taken when the write commits, store under a variant with a
    /// random suffix before the extension (`a.pdf` → `a_4qQ5fdT.pdf`), atomically, so
    /// concurrent writes of one name all land under distinct keys. The returned
    /// [`ObjectMeta::key`] names the key used.
    CreateUnique,
}

/// Options for [`Storage::put`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOptions {
    /// Overwrite or create-only. Defaults to [`PutMode::Overwrite`].
    pub mode: PutMode,
    /// The content type to record, where the backend records one. Defaults to none.
    pub content_type: Option<String>,
}

impl PutOptions {
    /// Sets the write mode.
    pub fn with_mode(mut self, mode: PutMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the content type to record.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }
}

/// What a presigned download URL asks of the backend (see [`Storage::presigned_get`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresignedGet {
    /// How long the URL works; capped by (and defaulting to) the storage's own limit.
    pub expires_in: Option<Duration>,
    /// The `Content-Type` the backend answers with.
    pub content_type: Option<String>,
    /// The `Content-Disposition` the backend answers with.
    pub content_disposition: Option<String>,
    /// The `Cache-Control` the backend answers with.
    pub cache_control: Option<String>,
}

/// The bytes of a [`Storage::get`].
pub enum Payload {
    /// All the bytes, already in memory (small objects).
    Bytes(Bytes),
    /// The bytes as they are read, in bounded chunks.
    Stream(ByteStream),
    /// A byte range of a file on the local filesystem, opened before the result was returned
    /// ([`LocalStorage`]'s larger reads). [`FileRegion::into_stream`] reads it in chunks; the
    /// file service can instead hand it to the kernel (`sendfile`) on a connection that
    /// supports it (see [`SendfileStream`](crate::SendfileStream)).
    File(FileRegion),
}

impl Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            Payload::Stream(_) => f.write_str("Stream(..)"),
            Payload::File(region) => f.debug_tuple("File").field(region).finish(),
        }
    }
}

/// The result of a [`Storage::get`]: metadata, the byte range it covers, and the bytes.
#[derive(Debug)]
#[non_exhaustive]
pub struct GetResult {
    /// The object's metadata, read together with the bytes.
    pub meta: ObjectMeta,
    /// Which bytes of the object the payload holds.
    pub range: Range<u64>,
    /// The bytes.
    pub payload: Payload,
}

impl GetResult {
    /// Builds a result.
    pub fn new(meta: ObjectMeta, range: Range<u64>, payload: Payload) -> Self {
        Self { meta, range, payload }
    }

    /// The payload as a stream, whatever its form.
    pub fn into_stream(self) -> ByteStream {
        match self.payload {
            Payload::Bytes(b) => stream::once(async move { Ok(b) }).boxed(),
            Payload::Stream(s) => s,
            Payload::File(region) => region.into_stream(),
        }
    }

    /// Collects the payload into memory.
    ///
    /// # Errors
    /// The first error of the stream.
    pub async fn bytes(self) -> Result<Bytes> {
        match self.payload {
            Payload::Bytes(b) => Ok(b),
            Payload::Stream(s) => collect(s).await,
            Payload::File(region) => collect(region.into_stream()).await,
        }
    }
}

/// A stream's bytes, collected into memory.
pub(crate) async fn collect(stream: ByteStream) -> Result<Bytes> {
    let buf = stream
        .try_fold(BytesMut::new(), |mut buf, chunk| async move {
            buf.extend_from_slice(&chunk);
            Ok(buf)
        })
        .await?;
    Ok(buf.freeze())
}

/// A place private files live.
///
/// The minimum contract every backend fulfils (the [conformance suite](crate::testing::conformance)
/// checks it):
///
/// - `head` and `get` answer [`Error::NotFound`] for a missing object and for anything that is
///   not a regular object (a directory, a link out of the root, a staging file);
/// - `get` with `if_match` fails with [`Error::PreconditionFailed`] when the ETag differs, and
///   with a range outside the object fails with [`Error::InvalidRange`];
/// - `put` is atomic: until the input stream has ended cleanly nobody sees the object, and if
///   the stream fails (or the future is dropped) nothing remains, and any previous object is
///   untouched; the input stream's own error is returned unchanged;
/// - `copy` follows `put`'s modes, and a missing source is [`Error::NotFound`];
/// - `delete` of a missing object succeeds;
/// - `list` yields every object inside a folder prefix (whole segments), in any order.
///
/// Use [`StorageExt`] for conveniences, and share a storage as `Arc<dyn Storage>`.
#[async_trait]
pub trait Storage: Debug + Send + Sync + 'static {
    /// The object's metadata.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta>;

    /// The object's metadata, with all its bytes when it is at most `inline_max` bytes long
    /// (a backend may leave the bytes out anyway). Lets a backend answer a small file in one
    /// round trip: the file service asks this once per request. Defaults to [`Storage::head`]
    /// without bytes.
    async fn head_with_bytes(&self, key: &ObjectKey, inline_max: u64) -> Result<(ObjectMeta, Option<Bytes>)> {
        let _ = inline_max;
        Ok((self.head(key).await?, None))
    }

    /// The object's bytes (all, or `options.range`), with its metadata.
    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult>;

    /// Writes the object from a stream, atomically. The returned metadata names the key written
    /// (which differs from `key` only with [`PutMode::CreateUnique`]).
    async fn put(&self, key: &ObjectKey, data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta>;

    /// Copies the object at `from` to `to` (or, with [`PutMode::CreateUnique`], a free variant
    /// of it), as atomically as [`Storage::put`]; the returned metadata names the key written.
    /// Defaults to streaming a `get` into a `put`; backends that can copy on their side do.
    ///
    /// # Errors
    /// [`Error::NotFound`] naming `from` when it does not exist; otherwise as [`Storage::put`].
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey, mode: PutMode) -> Result<ObjectMeta> {
        let source = self.get(from, GetOptions::default()).await?;
        let mut options = PutOptions::default().with_mode(mode);
        options.content_type = source.meta.content_type.clone();
        self.put(to, source.into_stream(), options).await
    }

    /// Deletes the object; succeeds if it does not exist.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Every object inside the folder `prefix` (or the whole storage), in no particular order.
    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>>;

    /// Overwrites `bytes.len()` bytes of the object at `offset` in place, durably, provided its
    /// ETag is still `if_match`, and returns its new metadata; `Ok(None)` from backends that
    /// only write whole objects (the default). Not atomic: a crash may leave the write half
    /// done, so a caller lays its data out to survive that (key rotation writes a second key
    /// slot before clearing the first). `LocalStorage` implements it.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::PreconditionFailed`] when the ETag differs;
    /// [`Error::InvalidRange`] when the bytes would not lie within the object.
    async fn overwrite_at(
        &self,
        key: &ObjectKey,
        offset: u64,
        bytes: &[u8],
        if_match: &str,
    ) -> Result<Option<ObjectMeta>> {
        let _ = (key, offset, bytes, if_match);
        Ok(None)
    }

    /// Whether `get` answers the bytes as stored, so that a proxy handed the object's path,
    /// key or a presigned URL (the nginx, Apache and presigned delivery modes) serves the same
    /// bytes. `true` by default; `false` for a storage that transforms them, such as
    /// `EncryptedStorage`, whose stored bytes are ciphertext: those modes then refuse.
    fn serves_stored_bytes(&self) -> bool {
        true
    }

    /// The absolute filesystem path of the object, for backends that have one (used by the
    /// Apache `X-Sendfile` delivery and by access rules). Defaults to `None`.
    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        let _ = key;
        None
    }

    /// The URL prefix links to this storage's objects start with (see [`StorageExt::url`]).
    /// Defaults to [`DEFAULT_BASE_URL`].
    fn base_url(&self) -> &str {
        DEFAULT_BASE_URL
    }

    /// A URL that lets whoever holds it `GET` the object straight from the backend until it
    /// expires, answered with the headers `request` asks for; `None` for backends that cannot
    /// sign URLs (the default). Used by
    /// [`Delivery::presigned_redirect`](crate::Delivery::presigned_redirect) after the access
    /// rule allowed the request.
    async fn presigned_get(&self, key: &ObjectKey, request: &PresignedGet) -> Result<Option<String>> {
        let _ = (key, request);
        Ok(None)
    }
}

/// Conveniences available on every [`Storage`].
#[async_trait]
pub trait StorageExt: Storage {
    /// Writes `bytes` under `key`, replacing any existing object.
    ///
    /// ```
    /// use private_storage::{MemoryStorage, ObjectKey, StorageExt};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let storage = MemoryStorage::new();
    /// let key = ObjectKey::new("notes/a.txt")?;
    /// storage.put_bytes(&key, "hello").await?;
    /// assert_eq!(storage.read(&key).await?, "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    async fn put_bytes(&self, key: &ObjectKey, bytes: impl Into<Bytes> + Send) -> Result<ObjectMeta> {
        let bytes = bytes.into();
        self.put(key, stream::once(async move { Ok(bytes) }).boxed(), PutOptions::default()).await
    }

    /// Reads the whole object into memory.
    async fn read(&self, key: &ObjectKey) -> Result<Bytes> {
        self.get(key, GetOptions::default()).await?.bytes().await
    }

    /// Whether an object exists under `key`.
    async fn exists(&self, key: &ObjectKey) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether an object exists under the name `name`; a name that is not a valid key (the
    /// empty name of a record without a file, say) simply does not exist.
    async fn exists_name(&self, name: &str) -> Result<bool> {
        match ObjectKey::new(name) {
            Ok(key) => self.exists(&key).await,
            Err(_) => Ok(false),
        }
    }

    /// The link to the object: [`Storage::base_url`] followed by the percent-encoded key.
    ///
    /// ```
    /// use private_storage::{MemoryStorage, ObjectKey, StorageExt};
    ///
    /// let storage = MemoryStorage::new().with_base_url("/invoices/");
    /// let key = ObjectKey::new("2026/März 1.pdf")?;
    /// assert_eq!(storage.url(&key), "/invoices/2026/M%C3%A4rz%201.pdf");
    /// # Ok::<(), private_storage::KeyError>(())
    /// ```
    fn url(&self, key: &ObjectKey) -> String {
        let base = self.base_url();
        let sep = if base.ends_with('/') { "" } else { "/" };
        format!("{base}{sep}{}", key.to_url_path())
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}

#[async_trait]
impl<S: Storage + ?Sized> Storage for Arc<S> {
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        (**self).head(key).await
    }
    async fn head_with_bytes(&self, key: &ObjectKey, inline_max: u64) -> Result<(ObjectMeta, Option<Bytes>)> {
        (**self).head_with_bytes(key, inline_max).await
    }
    async fn get(&self, key: &ObjectKey, options: GetOptions) -> Result<GetResult> {
        (**self).get(key, options).await
    }
    async fn put(&self, key: &ObjectKey, data: PutStream<'_>, options: PutOptions) -> Result<ObjectMeta> {
        (**self).put(key, data, options).await
    }
    async fn copy(&self, from: &ObjectKey, to: &ObjectKey, mode: PutMode) -> Result<ObjectMeta> {
        (**self).copy(from, to, mode).await
    }
    async fn overwrite_at(
        &self,
        key: &ObjectKey,
        offset: u64,
        bytes: &[u8],
        if_match: &str,
    ) -> Result<Option<ObjectMeta>> {
        (**self).overwrite_at(key, offset, bytes, if_match).await
    }
    fn serves_stored_bytes(&self) -> bool {
        (**self).serves_stored_bytes()
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        (**self).delete(key).await
    }
    fn list(&self, prefix: Option<&ObjectKey>) -> BoxStream<'static, Result<ObjectMeta>> {
        (**self).list(prefix)
    }
    fn local_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        (**self).local_path(key)
    }
    fn base_url(&self) -> &str {
        (**self).base_url()
    }
    async fn presigned_get(&self, key: &ObjectKey, request: &PresignedGet) -> Result<Option<String>> {
        (**self).presigned_get(key, request).await
    }
}

/// Checks a requested range against an object's size (shared by the backends).
pub(crate) fn check_range(range: Option<Range<u64>>, size: u64) -> Result<Range<u64>> {
    match range {
        None => Ok(0..size),
        Some(r) if r.start <= r.end && r.end <= size => Ok(r),
        Some(r) => Err(Error::InvalidRange { start: r.start, end: r.end, size }),
    }
}

/// Checks an `if_match` precondition against an object's ETag (shared by the backends).
pub(crate) fn check_if_match(if_match: Option<&str>, meta: &ObjectMeta) -> Result<()> {
    match if_match {
        Some(expected) if meta.etag.as_deref() != Some(expected) => {
            Err(Error::PreconditionFailed { key: meta.key.clone() })
        }
        _ => Ok(()),
    }
}

/// How many suffixed names [`PutMode::CreateUnique`] tries before giving up.
pub(crate) const UNIQUE_ATTEMPTS: usize = 32;

/// `key` with `_` and seven random letters or digits inserted before the extension of its
/// last segment (`a/b.tar.gz` → `a/b_4qQ5fdT.tar.gz`), as Django names free variants.
pub(crate) fn with_random_suffix(key: &ObjectKey) -> ObjectKey {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric).take(7).collect();
    let name = key.file_name();
    let (stem, ext) = match name.find('.').filter(|&i| i > 0) {
        Some(i) => name.split_at(i),
        None => (name, ""),
    };
    // Keep the segment within the length limit by shortening the stem, on a char boundary.
    let room = crate::MAX_SEGMENT_LEN.saturating_sub(ext.len() + suffix.len() + 1);
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let renamed = format!("{}_{suffix}{ext}", &stem[..cut]);
    let parent = &key.as_str()[..key.as_str().len() - name.len()];
    ObjectKey::new(format!("{parent}{renamed}")).unwrap_or_else(|_| key.clone())
}

/// Normalises a base URL: it always ends with `/`.
pub(crate) fn normalise_base_url(base: impl Into<String>) -> String {
    let mut base = base.into();
    if !base.ends_with('/') {
        base.push('/');
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_suffixes_go_before_the_extension() {
        for (key, prefix, ext) in
            [("a.pdf", "a_", ".pdf"), ("x/b.tar.gz", "x/b_", ".tar.gz"), ("noext", "noext_", ""), (".env", ".env_", "")]
        {
            let renamed = with_random_suffix(&ObjectKey::new(key).unwrap());
            let s = renamed.as_str();
            assert!(s.starts_with(prefix) && s.ends_with(ext), "{key} → {s}");
            assert_eq!(s.len(), key.len() + 8, "{key} → {s}");
        }
        let long = ObjectKey::new(format!("{}.txt", "é".repeat(125))).unwrap();
        assert!(with_random_suffix(&long).file_name().len() <= crate::MAX_SEGMENT_LEN);
    }
}
