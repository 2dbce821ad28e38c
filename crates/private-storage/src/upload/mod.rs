//! Uploads: the policy that names, validates and stores a file while its bytes stream in.
//!
//! One pipeline for every upload: **policy → key** (sanitise the name, apply `upload_to` and
//! `upload_subfolder`) → **sniff** the first bytes and check them against the allow-list, the
//! declared type and the extension → **guarded stream** (size cut-off, SHA-256) → **staged
//! write** that the storage commits only when the stream ended cleanly.

mod guard;
pub(crate) use guard::hex;
mod naming;
mod sniff;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream};
use tokio::sync::oneshot;

use crate::storage::PutStream;
use crate::{Error, GetOptions, ObjectKey, PutMode, PutOptions, Result, Storage};

/// How many bytes are looked at to tell what a file is.
const HEAD: usize = 8 * 1024;
/// For images: enough to get past large EXIF/ICC blocks to the dimensions.
const IMAGE_HEAD: usize = 256 * 1024;

/// What is known of a stored file's SHA-256 when it is checked.
pub(crate) enum Sha256Of<'a> {
    /// Nothing: read the file for it (and compare with `expected`, if given).
    Read { expected: Option<&'a str> },
    /// Computed by this process from the bytes as they were written: the file must have `size`
    /// bytes.
    Written { sha256: String, size: u64 },
}

/// Computes subfolders from a record.
type SubfolderFn<R> = dyn Fn(&R) -> Vec<String> + Send + Sync;
/// Computes a path from a record and a file name.
type PathFn<R> = dyn Fn(&R, &str) -> String + Send + Sync;

/// How and where uploads of one kind are stored: the reference's `PrivateFileField`, declared
/// once per kind of record `R`.
///
/// Every check happens **while the bytes stream**: the size is enforced chunk by chunk (and up
/// front when the length is known), the content type is sniffed from the first bytes —
/// never trusted from the client — and cross-checked with the declared type and the
/// extension. Nothing is visible in the storage until the whole upload passed; a refused,
/// failed or abandoned upload leaves nothing behind.
///
/// ```
/// use private_storage::{MemoryStorage, StorageExt, Upload, UploadPolicy};
///
/// struct Invoice { customer: String }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let policy = UploadPolicy::<Invoice>::new(MemoryStorage::new())
///     .upload_to("invoices/%Y")
///     .upload_subfolder(|invoice| vec![invoice.customer.clone()])
///     .content_types(["application/pdf"])
///     .max_file_size(10 * 1024 * 1024);
///
/// let invoice = Invoice { customer: "ACME Corp".into() };
/// let saved = policy.save(&invoice, Upload::from_bytes("March 2026.pdf", "%PDF-1.7\n...")).await?;
/// assert!(saved.key.as_str().ends_with("/ACME_Corp/March_2026.pdf"));
/// assert_eq!(saved.content_type, "application/pdf");
///
/// let renamed_exe = Upload::from_bytes("invoice.pdf", b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0".to_vec());
/// let err = policy.save(&invoice, renamed_exe).await.unwrap_err();
/// assert_eq!(err.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
/// # Ok::<(), private_storage::Error>(())
/// # }).unwrap();
/// ```
pub struct UploadPolicy<R: ?Sized = ()> {
    storage: Arc<dyn Storage>,
    upload_to: UploadTo<R>,
    subfolder: Option<Arc<SubfolderFn<R>>>,
    content_types: Vec<String>,
    max_file_size: Option<u64>,
    overwrite: bool,
    image: Option<ImageLimits>,
}

enum UploadTo<R: ?Sized> {
    Folder(String),
    Function(Arc<PathFn<R>>),
}

#[derive(Debug, Clone, Copy)]
struct ImageLimits {
    max: Option<(u64, u64)>,
}

impl<R: ?Sized> Clone for UploadPolicy<R> {
    fn clone(&self) -> Self {
        Self {
            storage: Arc::clone(&self.storage),
            upload_to: match &self.upload_to {
                UploadTo::Folder(f) => UploadTo::Folder(f.clone()),
                UploadTo::Function(f) => UploadTo::Function(Arc::clone(f)),
            },
            subfolder: self.subfolder.clone(),
            content_types: self.content_types.clone(),
            max_file_size: self.max_file_size,
            overwrite: self.overwrite,
            image: self.image,
        }
    }
}

impl<R: ?Sized> fmt::Debug for UploadPolicy<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadPolicy")
            .field("storage", &self.storage)
            .field("content_types", &self.content_types)
            .field("max_file_size", &self.max_file_size)
            .field("overwrite", &self.overwrite)
            .field("image", &self.image.is_some())
            .finish_non_exhaustive()
    }
}

/// An upload on its way in: the client's file name, its declared type and length (if any), and
/// the bytes.
pub struct Upload<'a> {
    filename: String,
    declared_type: Option<String>,
    content_length: Option<u64>,
    limit: Option<u64>,
    data: PutStream<'a>,
}

impl fmt::Debug for Upload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("filename", &self.filename)
            .field("declared_type", &self.declared_type)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

impl<'a> Upload<'a> {
    /// An upload of `data` under the client's file name `filename`.
    pub fn new(filename: impl Into<String>, data: PutStream<'a>) -> Self {
        Self { filename: filename.into(), declared_type: None, content_length: None, limit: None, data }
    }

    /// An upload of bytes already in memory.
    pub fn from_bytes(filename: impl Into<String>, bytes: impl Into<Bytes>) -> Upload<'static> {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        Upload::new(filename, stream::once(async move { Ok(bytes) }).boxed()).content_length(len)
    }

    /// The type the client declared. It is never trusted, only cross-checked. Defaults to none.
    pub fn declared_type(mut self, content_type: impl Into<String>) -> Self {
        self.declared_type = Some(content_type.into());
        self
    }

    /// The length the client announced, so an oversized upload is refused before any byte is
    /// read. Defaults to unknown.
    pub fn content_length(mut self, len: u64) -> Self {
        self.content_length = Some(len);
        self
    }

    /// At most `bytes` for this upload (a quota's room, say); the policy's
    /// [`max_file_size`](UploadPolicy::max_file_size) still holds, and the smaller limit wins,
    /// enforced the same way (before the body when the length is announced, then as it streams).
    pub fn limit(mut self, bytes: u64) -> Self {
        self.limit = Some(self.limit.map_or(bytes, |l| l.min(bytes)));
        self
    }

    /// The client's file name.
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// The length the client announced, if any.
    pub fn announced_len(&self) -> Option<u64> {
        self.content_length
    }
}

/// What a successful save stored: the values an application keeps in its own record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SavedFile {
    /// Where the file is stored.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
    /// Its content type, as sniffed from the bytes.
    pub content_type: String,
    /// The file name the client sent, cleaned for showing: its last path component, without
    /// control characters or bidirectional formatting characters, at most 200 bytes (the
    /// extension kept). Never empty.
    pub original_name: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Width in pixels (image policies).
    pub width: Option<u64>,
    /// Height in pixels (image policies).
    pub height: Option<u64>,
}

impl<R: ?Sized> UploadPolicy<R> {
    /// Uploads stored in `storage`, at its root, with no type or size restriction.
    pub fn new(storage: impl Storage) -> Self {
        Self::from_arc(Arc::new(storage))
    }

    /// Like [`UploadPolicy::new`], for an already shared storage.
    pub fn from_arc(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            upload_to: UploadTo::Folder(String::new()),
            subfolder: None,
            content_types: Vec::new(),
            max_file_size: None,
            overwrite: false,
            image: None,
        }
    }

    /// Stores files in `folder`, where `%Y %m %d %H %M %S` are replaced by the UTC time of
    /// the upload (`invoices/%Y/%m`). Each part is sanitised. Defaults to the storage root.
    pub fn upload_to(mut self, folder: impl Into<String>) -> Self {
        self.upload_to = UploadTo::Folder(folder.into());
        self
    }

    /// Computes the path from the record and the (sanitised) file name: the returned path's
    /// folders are used, each sanitised, and its last part is the file name. Defaults to
    /// [`upload_to`](Self::upload_to)'s root.
    pub fn upload_to_fn(mut self, f: impl Fn(&R, &str) -> String + Send + Sync + 'static) -> Self {
        self.upload_to = UploadTo::Function(Arc::new(f));
        self
    }

    /// Inserts folders computed from the record under `upload_to` (e.g. the customer's slug).
    /// Each element is sanitised as a folder name; an element with `/` becomes nested folders,
    /// never a traversal. Defaults to none.
    pub fn upload_subfolder(mut self, f: impl Fn(&R) -> Vec<String> + Send + Sync + 'static) -> Self {
        self.subfolder = Some(Arc::new(f));
        self
    }

    /// Allows only these content types (`application/pdf`, or `image/*`), checked against
    /// what the bytes are. Defaults to any type (the declared type and the extension are still
    /// cross-checked).
    pub fn content_types<T: Into<String>>(mut self, types: impl IntoIterator<Item = T>) -> Self {
        self.content_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses files larger than `bytes`, cutting the upload off as soon as the limit is
    /// passed. Defaults to no limit.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = Some(bytes);
        self
    }

    /// Replaces an existing file of the same name instead of storing under a free variant
    /// (`a_4qQ5fdT.pdf`). Defaults to `false`: never overwrite.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Accepts only raster images whose header decodes, and records their width and height:
    /// the reference's `PrivateImageField`. Restricts the content types to `image/*` unless
    /// [`content_types`](Self::content_types) narrows them further. SVG is never an image here.
    pub fn image(mut self) -> Self {
        self.image.get_or_insert(ImageLimits { max: None });
        self
    }

    /// Refuses images wider or taller than this (a decompression-bomb guard). Implies
    /// [`image`](Self::image). Defaults to no limit.
    pub fn max_image_dimensions(mut self, width: u64, height: u64) -> Self {
        self.image = Some(ImageLimits { max: Some((width, height)) });
        self
    }

    /// The storage files are saved to.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The key a file named `filename` of `record` is stored under (before any suffix that
    /// makes it free).
    ///
    /// # Errors
    /// [`Error::BadUpload`] when the result is not a valid key (e.g. far too long).
    pub fn key_for(&self, record: &R, filename: &str) -> Result<ObjectKey> {
        let mut segments: Vec<String> = Vec::new();
        let mut folders = |path: &str| segments.extend(path.split('/').filter_map(naming::clean_segment));
        let name = match &self.upload_to {
            UploadTo::Folder(pattern) => {
                folders(&naming::expand_date(pattern, SystemTime::now()));
                naming::clean_filename(filename)
            }
            UploadTo::Function(f) => {
                let path = f(record, &naming::clean_filename(filename));
                let (dirs, last) = path.rsplit_once('/').unwrap_or(("", &path));
                folders(dirs);
                naming::clean_filename(last)
            }
        };
        if let Some(subfolder) = &self.subfolder {
            for element in subfolder(record) {
                segments.extend(element.split('/').filter_map(naming::clean_segment));
            }
        }
        segments.push(name);
        ObjectKey::new(segments.join("/"))
            .map_err(|e| Error::BadUpload { message: format!("the file's path is not usable: {e}") })
    }

    /// Validates and stores an upload for `record`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] (413), [`Error::UnsupportedType`] (415), [`Error::ImageTooLarge`]
    /// (413), [`Error::BadUpload`] (400, e.g. an empty file), the upload stream's own error, or
    /// a storage error. In every case nothing was stored.
    pub fn save<'a>(&'a self, record: &R, upload: Upload<'a>) -> impl Future<Output = Result<SavedFile>> + Send + 'a {
        // The key is computed before the first await: the future does not hold the record.
        let key = self.key_for(record, &upload.filename);
        async move { self.save_as(key?, upload).await }
    }

    /// Validates and stores an upload under `key` (or a free variant of it): for callers that
    /// name files themselves.
    ///
    /// # Errors
    /// As [`UploadPolicy::save`].
    pub async fn save_as(&self, key: ObjectKey, upload: Upload<'_>) -> Result<SavedFile> {
        let Upload { filename, declared_type, content_length, limit, data } = upload;
        let max_file_size = match (self.max_file_size, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Fused: a body shorter than the sniffing head has ended before the guard reads on,
        // and some streams (`unfold`) must not be polled after their end.
        let mut data = data.fuse().boxed();
        if let (Some(limit), Some(len)) = (max_file_size, content_length)
            && len > limit
        {
            return Err(Error::TooLarge { limit });
        }
        let head_len = if self.image.is_some() { IMAGE_HEAD } else { HEAD };
        let mut head = BytesMut::new();
        while head.len() < head_len {
            match data.next().await {
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => break,
            }
            if let Some(limit) = max_file_size.filter(|&l| head.len() as u64 > l) {
                return Err(Error::TooLarge { limit });
            }
        }
        if head.is_empty() {
            return Err(Error::BadUpload { message: "The submitted file is empty.".to_owned() });
        }
        let head = head.freeze();
        let found = sniff::sniff(&head);
        let (width, height) = self.validate(&found, &head, declared_type.as_deref(), &filename)?;

        let (done, digest) = oneshot::channel();
        let body = guard::guarded(head, data, max_file_size, done);
        let mode = if self.overwrite { PutMode::Overwrite } else { PutMode::CreateUnique };
        let options = PutOptions::default().with_mode(mode).with_content_type(found.clone());
        let meta = self.storage.put(&key, body, options).await?;
        let (size, sha256) =
            digest.await.map_err(|_| Error::storage("upload", "the upload was stored without its digest"))?;
        Ok(SavedFile {
            key: meta.key,
            size,
            content_type: found,
            original_name: naming::display_name(&filename),
            sha256,
            width,
            height,
        })
    }

    /// Checks an object that a client wrote straight into the storage (through an
    /// [`S3Storage::presigned_post`](crate::S3Storage) form, say) against this policy, as
    /// [`UploadPolicy::save`] checks a stream: size, the sniffed type against the allow-list,
    /// the declared type and the name, image rules.
    ///
    /// What is checked is what is kept: the object is first copied (on the S3 server, with no
    /// bytes through here) to the key this policy names for `record` — one the client never
    /// had, so a form that is still valid cannot swap the bytes afterwards — and the client's
    /// object is deleted. The copy is then read once (bounded memory) for its SHA-256, and
    /// deleted if it breaks the policy. Objects the client writes to its key later are never
    /// referenced: give the upload prefix a lifecycle rule that expires them.
    ///
    /// # Errors
    /// As [`UploadPolicy::save`], plus [`Error::NotFound`] when nothing was uploaded under
    /// `uploaded`, and [`Error::BadUpload`] when `expected_sha256` is given and differs. A
    /// storage error before the copy leaves the client's object in place, so the call can be
    /// retried.
    pub fn finalise_direct<'a>(
        &'a self,
        record: &R,
        uploaded: &'a ObjectKey,
        declared_type: Option<&'a str>,
        expected_sha256: Option<&'a str>,
    ) -> impl Future<Output = Result<SavedFile>> + Send + 'a {
        // As in `save`: the future does not hold the record.
        let target = self.key_for(record, uploaded.file_name());
        async move {
            let mode = if self.overwrite { PutMode::Overwrite } else { PutMode::CreateUnique };
            let kept = self.storage.copy(uploaded, &target?, mode).await?.key;
            if let Err(e) = self.storage.delete(uploaded).await {
                tracing::warn!(key = %uploaded, error = %e, "could not delete a direct upload after copying it");
            }
            let digest = Sha256Of::Read { expected: expected_sha256 };
            self.check_kept_as(&kept, uploaded.file_name(), declared_type, digest).await
        }
    }

    /// The largest file accepted, if limited.
    pub(crate) fn size_limit(&self) -> Option<u64> {
        self.max_file_size
    }

    /// Whether a stored file replaces one of the same name.
    pub(crate) fn overwrites(&self) -> bool {
        self.overwrite
    }

    /// How many first bytes the type checks look at.
    pub(crate) fn head_len(&self) -> usize {
        if self.image.is_some() { IMAGE_HEAD } else { HEAD }
    }

    /// The checks of a file's first bytes ([`UploadPolicy::head_len`] of them, or all of a
    /// shorter file) against this policy, before the rest arrives.
    pub(crate) fn check_head(&self, head: &[u8], declared_type: Option<&str>, filename: &str) -> Result<()> {
        if head.is_empty() {
            return Err(Error::BadUpload { message: "The submitted file is empty.".to_owned() });
        }
        self.validate(&sniff::sniff(head), head, declared_type, filename).map(|_| ())
    }

    /// Checks a file already stored under `key` (one nobody else can write) as `save` checks a
    /// stream; deletes it if it breaks the policy. `digest` is what is known of its SHA-256.
    pub(crate) async fn check_kept_as(
        &self,
        key: &ObjectKey,
        filename: &str,
        declared_type: Option<&str>,
        digest: Sha256Of<'_>,
    ) -> Result<SavedFile> {
        let checked = self.check_stored(key, filename, declared_type, digest).await;
        if checked.is_err()
            && let Err(e) = self.storage.delete(key).await
        {
            tracing::error!(%key, error = %e, "could not delete an upload that broke the policy");
        }
        checked
    }

    async fn check_stored(
        &self,
        key: &ObjectKey,
        filename: &str,
        declared_type: Option<&str>,
        digest: Sha256Of<'_>,
    ) -> Result<SavedFile> {
        use sha2::Digest;
        let meta = self.storage.head(key).await?;
        if meta.size == 0 {
            return Err(Error::BadUpload { message: "The submitted file is empty.".to_owned() });
        }
        if let Some(limit) = self.max_file_size.filter(|&l| meta.size > l) {
            return Err(Error::TooLarge { limit });
        }
        let pinned = |options: GetOptions| match &meta.etag {
            Some(etag) => options.with_if_match(etag.clone()),
            None => options,
        };
        let head_len = (if self.image.is_some() { IMAGE_HEAD } else { HEAD } as u64).min(meta.size);
        let head = self.storage.get(key, pinned(GetOptions::default().with_range(0..head_len))).await?.bytes().await?;
        let found = sniff::sniff(&head);
        let (width, height) = self.validate(&found, &head, declared_type, filename)?;
        let (size, sha256) = match digest {
            Sha256Of::Written { sha256, size } if size == meta.size => (size, sha256),
            Sha256Of::Written { .. } => return Err(Error::PreconditionFailed { key: key.clone() }),
            Sha256Of::Read { expected } => {
                let mut hasher = sha2::Sha256::new();
                let mut size = 0u64;
                let mut body = self.storage.get(key, pinned(GetOptions::default())).await?.into_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    hasher.update(&chunk);
                }
                let sha256 = hex(&hasher.finalize());
                if size != meta.size {
                    return Err(Error::PreconditionFailed { key: key.clone() });
                }
                if let Some(expected) = expected
                    && !expected.eq_ignore_ascii_case(&sha256)
                {
                    return Err(Error::BadUpload { message: "The file does not match its checksum.".to_owned() });
                }
                (size, sha256)
            }
        };
        let original_name = naming::display_name(filename);
        Ok(SavedFile { key: key.clone(), size, content_type: found, original_name, sha256, width, height })
    }

    /// The checks on the sniffed head; returns the image dimensions for image policies.
    fn validate(
        &self,
        found: &str,
        head: &[u8],
        declared: Option<&str>,
        filename: &str,
    ) -> Result<(Option<u64>, Option<u64>)> {
        let unsupported =
            |expected: &str| Error::UnsupportedType { found: found.to_owned(), expected: expected.to_owned() };
        let image_types;
        let allow = match (&self.image, self.content_types.is_empty()) {
            (Some(_), true) => {
                image_types = vec!["image/*".to_owned()];
                &image_types
            }
            _ => &self.content_types,
        };
        sniff::check(found, allow, declared, filename)?;
        let binary_media = (found.starts_with("image/") && found != "image/svg+xml") || found == "application/pdf";
        if binary_media && sniff::has_active_markup(head) {
            return Err(unsupported("a file without HTML or script inside (this looks like a polyglot)"));
        }
        let Some(limits) = self.image else { return Ok((None, None)) };
        if !found.starts_with("image/") || found == "image/svg+xml" {
            return Err(unsupported("an image (PNG, JPEG, GIF, WebP...)"));
        }
        let size = imagesize::blob_size(head).map_err(|_| unsupported("an image whose header can be read"))?;
        let (width, height) = (size.width as u64, size.height as u64);
        if width == 0 || height == 0 {
            return Err(unsupported("an image with a width and a height"));
        }
        if let Some((max_width, max_height)) = limits.max
            && (width > max_width || height > max_height)
        {
            return Err(Error::ImageTooLarge { width, height, max_width, max_height });
        }
        Ok((Some(width), Some(height)))
    }
}
