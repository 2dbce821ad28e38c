//! Private file storage: files kept out of public reach and served only to the requests an
//! access rule allows, with complete HTTP semantics.
//!
//! Files live in a [`Storage`] — a folder on disk ([`LocalStorage`], the default) or any
//! backend implementing the trait — and are served by [`ServePrivate`], a `tower::Service`
//! you mount in an axum (or any tower) application. Every request goes through one pipeline:
//!
//! 1. the URL tail becomes an [`ObjectKey`], percent-decoded and validated **once**;
//! 2. the application's auth layer has put a [`CurrentUser`] into the request (or not);
//! 3. the [`AccessRule`] decides, seeing a [`PrivateFile`] with the request, the storage, the
//!    canonical key and lazily fetched metadata — before anything about the file is revealed;
//! 4. preconditions and ranges are planned (RFC 9110), headers computed once;
//! 5. the [`Delivery`] mode sends the bytes: streamed by the application, or handed to nginx
//!    (`X-Accel-Redirect`), Apache (`X-Sendfile`) or a custom mode.
//!
//! # Example
//!
//! ```
//! use axum::Router;
//! use private_storage::{LocalStorage, ObjectKey, PrivateFile, ServePrivate, StorageExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let private_root = dir.path();
//! let storage = LocalStorage::new(private_root)?; // must exist: never created, never guessed
//! storage.put_bytes(&ObjectKey::new("users/ada/cv.pdf")?, "%PDF-1.7 ...").await?;
//!
//! // Users read their own folder; staff read everything.
//! let own_folder = |file: PrivateFile| async move {
//!     match file.user() {
//!         Some(user) if user.is_staff() => true,
//!         Some(user) => file.key().as_str().starts_with(&format!("users/{}/", user.id())),
//!         None => false,
//!     }
//! };
//! let app: Router = Router::new()
//!     .nest_service("/private-media", ServePrivate::new(storage).rule(own_folder));
//! # Ok(()) }
//! ```
//!
//! Its identity comes from your own auth layer, as a middleware that inserts a [`CurrentUser`]:
//!
//! ```
//! use axum::{extract::Request, middleware::Next, response::Response};
//! use private_storage::{CurrentUser, User};
//!
//! async fn identify(mut request: Request, next: Next) -> Response {
//!     // Look up the session cookie or bearer token in your store (cache it: this runs on
//!     // every download), then:
//!     let found: Option<User> = None;
//!     if let Some(user) = found {
//!         request.extensions_mut().insert(CurrentUser::new(user));
//!     }
//!     next.run(request).await
//! }
//! // Router::new().nest_service(...).layer(axum::middleware::from_fn(identify))
//! ```
//!
//! With `tower-sessions`/`axum-login`, the middleware reads the logged-in user from the session
//! and wraps it in a type implementing [`Identity`]; with API tokens, it verifies the token.
//! The example `demo` (`cargo run -p private-storage --example demo`) runs two storages side
//! by side with a toy token layer.
//!
//! # Storage
//!
//! [`Storage`] is a small async trait: `head`, `get` (a range, an `if_match` precondition),
//! `put` from a stream (atomic: nothing is visible until the stream ended cleanly), `delete`
//! and `list`; [`StorageExt`] adds conveniences such as [`StorageExt::url`]. Several storages
//! can be served side by side, each with its own base URL, rule and settings. The `testing`
//! feature's [`testing::conformance`] suite checks any backend against the contract.
//!
//! With the `s3` feature, `S3Storage` keeps objects in an S3-compatible bucket: ranged
//! streaming reads pinned by `If-Match`, multipart writes aborted when they fail or are
//! dropped, create-only writes with `If-None-Match: *`, SSE-S3/KMS/C. Every delivery mode
//! runs the rule first: stream (the app proxies the bytes with bounded memory),
//! `Delivery::presigned_redirect` (a short-lived presigned URL with our `Content-Type` and
//! `Content-Disposition` signed in), and `Delivery::nginx_presigned` (nginx streams from S3;
//! the URL never reaches the client). `S3Storage::presigned_post` lets browsers upload
//! straight to the bucket within a size range the S3 server enforces, and
//! [`UploadPolicy::finalise_direct`] moves what arrived to a key the client never had and
//! checks it there.
//!
//! # Uploads
//!
//! [`UploadPolicy`] is the reference's `PrivateFileField`, declared once per kind of record:
//! `upload_to` (a folder with `%Y/%m` placeholders, or a function of the record and the file
//! name), `upload_subfolder` (folders from the record, each sanitised), `content_types` (an
//! allow-list checked against what the bytes **are**: magic numbers, cross-checked with the
//! declared type and the extension), `max_file_size` (enforced while streaming), `overwrite`,
//! and an image variant that records dimensions and caps them. Names are sanitised and never
//! overwrite: a taken name gets a random suffix, chosen atomically when the write commits.
//! A save returns a [`SavedFile`] (key, size, sniffed type, original name, SHA-256, image size).
//! With axum, [`UploadForm`] streams multipart fields into a policy with bounded memory.
//!
//! # Downloads by record
//!
//! [`ServeRecords`] serves the file a record holds, found by id through the application's
//! [`RecordSource`] (its scope is the reference's query set); the rule sees the record as
//! [`PrivateFile::parent`]. An unknown id is answered exactly like a denial.
//!
//! # Share links
//!
//! [`ShareLinks`] issues links to one file (or one record's file) for an `<img>`, a `<video>`,
//! an email: HMAC-SHA256-signed, expiring (capped lifetime), optionally bound to a user,
//! revocable one by one or all at once per file, with rotating [`ShareKeys`]. [`ServeShared`]
//! serves them through the same pipeline and delivery modes as [`ServePrivate`]; every issue
//! and use goes to a [`ShareAudit`].
//!
//! # Access rules
//!
//! [`allow_authenticated`], [`allow_staff`] and [`allow_superuser`] (the default), or any async
//! closure `|file: PrivateFile| async move { … }` returning `bool`, or a type implementing
//! [`AccessRule`]. What a denied request gets is [`OnDenied`]: `403` (default), `404`, or a
//! redirect to a login page for anonymous visitors. A [`FileHold`] then keeps allowed files
//! back while they must not be served (a virus scan pending: [`Held`] says why).
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | [`UploadForm`] (multipart uploads with bounded memory), `IntoResponse` for [`Error`], the original URI (mount prefix included) in login redirects |
//! | `testing` | no | [`testing::conformance`], the storage conformance suite for your own backends |
//! | `s3` | no | `S3Storage` (S3, MinIO, Ceph, Garage, R2) with presigned redirects and direct uploads |
//! | `tus` | no | `tus`: resumable uploads (tus 1.0) over an upload policy |
//! | `encryption` | no | `EncryptedStorage`: encryption at rest that still serves byte ranges |
//! | `clamav` | no | `scan::Clamd`: virus scanning of whole streams by clamd (`INSTREAM`) |
//!
//! # Security
//!
//! The threat model is a client who may be authenticated but must read only what the rule
//! allows, and who controls the URL, the headers and the timing of its requests.
//!
//! - **Traversal and rule bypass.** Keys are validated once and rejected, never normalised
//!   (see [`ObjectKey`]): no `..` or `.` segments, empty segments, leading `/`, backslashes,
//!   NUL or control characters, drive prefixes, slash or dot look-alikes, invisible formatting
//!   characters, over-long keys. The rule, the storage and every delivery mode see the same
//!   key. [`LocalStorage`] resolves paths with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`:
//!   no symlink below the root is followed. Tested by a corpus of 77 hostile paths sent over a
//!   real socket (`tests/traversal.rs`).
//! - **Information leaks.** The rule runs before the file's existence is looked up, for every
//!   method: a denied request and (with [`OnDenied::NotFound`]) a missing file get the same
//!   answer; a rejected key names no file and gets the missing file's `404`, whoever asks. Server errors are logged and answered with a generic message.
//! - **Partial files.** Writes are staged and renamed into place after fsync; a failed or
//!   dropped write leaves nothing. A read that fails mid-way aborts the response, so a client
//!   never takes a truncated file for a whole one.
//! - **Active content.** Every response carries `X-Content-Type-Options: nosniff`; HTML, SVG,
//!   XML and script types are forced to `attachment` with `Content-Security-Policy: sandbox`
//!   unless explicitly allowed ([`ServePrivate::allow_inline`]).
//! - **Uploads.** Types are sniffed from the bytes, never taken from the client; a renamed
//!   executable, HTML or SVG behind an image name, and image/markup polyglots are refused
//!   (415). The size limit cuts an upload off as soon as it is passed (413), and up front when
//!   the announced length exceeds it. Names are sanitised to one segment; subfolders can only
//!   nest, never climb. Refused, failed and abandoned uploads leave nothing, not even a
//!   staging file. Image dimensions can be capped (decompression bombs).
//! - **Enumeration.** Downloads by record answer an unknown id exactly like a denied one.
//! - **S3** (feature `s3`). Presigned URLs are signed only after the rule allowed the request,
//!   live a minute unless configured, never outlive the share link they serve, and carry this
//!   crate's `Content-Type` and `Content-Disposition`; storages with customer keys (SSE-C)
//!   refuse to presign rather than hand out a broken link. The nginx location for S3 drops the
//!   client's `Authorization` and cookies and re-adds the security headers. Multipart uploads
//!   that fail are aborted, and retried until the server answers. Tested against s3s-fs and
//!   Garage (`tests/s3.rs`).
//! - **Share links.** The signature is checked first, in constant time; a tampered, revoked,
//!   retired-key or wrong-user link gets the service's denial with no hint of which check failed
//!   (only an authentic expired link is told `410 Gone`). Revocation is checked on every use and
//!   fails closed when the store fails. A bound user appears in the token only as a keyed tag.
//!   Responses to links carry `Referrer-Policy: no-referrer`. Tested by flipping every byte,
//!   a property test over mutations, and a real browser (`tests/share.rs`, `tests/share_browser.rs`).
//! - **Resource use.** Large files stream in bounded chunks and stop when the client leaves;
//!   multi-range requests are coalesced and capped ([`ServePrivate::max_ranges`]); uploads are
//!   read at most 64 KiB ahead of the storage.
//! - **Caching.** `Cache-Control: private, no-cache` by default: shared caches never keep a
//!   private file.
//! - **Faults.** A full disk answers `507` and keeps earlier files; a killed upload leaves only
//!   an invisible staging file, removed by [`LocalStorage::remove_staging_files`] (which never
//!   touches a write in progress, in any process: writers hold a lock on their staging file).
//!
//! Where the claims are tested: `tests/it/traversal.rs` (hostile paths), `tests/it/http.rs`
//! (semantics, denials, failures mid-stream), `tests/it/uploads.rs` (spoofing, limits, naming
//! properties), `tests/it/share.rs` and `tests/it/share_browser.rs` (links), `tests/it/faults.rs`
//! (disk full, crash), `tests/it/nginx.rs` and `tests/it/apache.rs` (real proxies), and the fuzz
//! targets in `fuzz/` (keys, the Range/precondition planner, Content-Disposition, multipart
//! uploads, share tokens).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod access;
#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "axum")]
pub use axum::{FormField, MAX_FORM_FIELDS, MAX_PART_HEADERS, MAX_TEXT_FIELD, UploadForm};
mod error;
mod http;
mod key;
mod share;
mod storage;
mod units;
mod upload;

#[cfg(feature = "clamav")]
pub mod scan;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tus")]
pub mod tus;

/// Hooks for the crate's own micro-benchmarks; not an API.
#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod __bench {
    use std::time::SystemTime;

    /// Plans a response (the private `conditional::plan`): 0 for the whole representation, the
    /// number of ranges for a partial one, or the status of a 304/412/416.
    pub fn plan(
        method: &http::Method,
        headers: &http::HeaderMap,
        etag: Option<&str>,
        last_modified: SystemTime,
        len: u64,
        now: SystemTime,
    ) -> usize {
        crate::http::bench_plan(method, headers, etag, last_modified, len, now)
    }
}

pub use access::{
    AccessRule, AllowAuthenticated, AllowStaff, AllowSuperuser, CurrentUser, Identity, PrivateFile, User,
    allow_authenticated, allow_staff, allow_superuser,
};
pub use error::{BoxError, Error, Result};
pub use http::{
    ContentDisposition, DeliverFile, Delivery, FileHold, Held, OnDenied, Prepared, RecordSource, ResponseBody,
    Sendfile, SendfileStream, ServePrivate, ServeRecords, ServeShared, ServedLink, X_ACCEL_REDIRECT, X_SENDFILE,
    nginx_internal_location, nginx_s3_location,
};
pub use key::{KeyError, MAX_KEY_LEN, MAX_SEGMENT_LEN, ObjectKey};
pub use share::{
    IssuedLink, LinkIssued, LinkUsed, MemoryRevocations, RevocationStore, Share, ShareAudit, ShareKeys, ShareLinks,
    ShareTarget, TracingAudit,
};
pub use storage::{
    ByteStream, CachedStorage, DEFAULT_BASE_URL, Fault, FileRegion, GetOptions, GetResult, LocalStorage, MemoryStorage,
    MigrationProgress, MigrationReport, ObjectMeta, Payload, PresignedGet, PutMode, PutOptions, PutStream, Storage,
    StorageExt, migrate,
};
#[cfg(feature = "s3")]
pub use storage::{
    DEFAULT_PRESIGN_EXPIRY, Encryption, PostPolicy, PresignedPost, S3Builder, S3Setting, S3Storage,
    install_tls_provider,
};
#[cfg(feature = "encryption")]
pub use storage::{EncryptedStorage, Keyring, Rewrap};
pub use units::{human_size, parse_duration};
pub use upload::{SavedFile, Upload, UploadPolicy};
