//! The server's operations, which every front-end (pages, JSON API, command line) calls.
//!
//! [`Domain`] owns them all — accounts and logins, uploads with their records, listing,
//! showing, deleting, sharing, revoking, and the download services — and answers with one
//! error type, [`Error`]. Who may touch which file is decided here once ([`Actor`]), so a rule
//! added here holds on every path a byte takes. Front-ends only translate: a request into a
//! call, and an [`Error`] into their medium, each in one place (`http::Failure` for JSON,
//! `http::web::error_page` for pages, `cli::Failure` for the command line).

mod accounts;
pub mod audit;
mod files;
mod keys;
mod link_access;
mod links;
mod quotas;
mod requests;
mod resumable;
mod scan;
mod sso;
mod webhooks;

use std::sync::Arc;

use http::StatusCode;
use private_storage::tus::{PartialStore, Resumable};
use private_storage::{ServePrivate, ServeRecords, ServeShared, ShareLinks, Storage, UploadPolicy};

pub(crate) use accounts::role;
pub use accounts::{LoginLimiter, NewSession, TheirFiles, hash_password, random_token, sha256_hex};
pub use files::{DbRecords, Owner, UploadSlots};
pub use keys::{KeyStatus, Rotation};
pub use link_access::{LinkAnswer, LinkPage, LinkRequest, UNLOCK_TTL, is_preview_bot};
pub use links::{DbAudit, DbRevocations, NewLink, ShareRequest, keys_in};
pub use quotas::{QuotaValue, UsageReport};
pub use requests::{NewRequest, Uploader};
pub use webhooks::signature as webhook_signature;

use crate::config::Config;
use crate::db::{Db, DbError, UserRow};
use crate::metrics::Metrics;

/// Why an operation did not happen. [`Error::status`] and [`Error::message`] are what a
/// front-end shows; the cause of a server error is logged when the error is made, never shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No identity: log in, or send a token.
    #[error("Log in or send an API token.")]
    Unauthenticated,
    /// An API token that is not (or no longer) valid.
    #[error("The API token is not valid.")]
    BadToken,
    /// Wrong name or password (the same answer whether or not the name exists).
    #[error("Wrong user name or password.")]
    WrongCredentials,
    /// Too many failed logins for this name and address.
    #[error("Too many failed attempts: wait a few minutes and try again.")]
    TooManyAttempts,
    /// The thing does not exist, or is not the actor's to see: the same answer for both.
    #[error("There is no such {0}.")]
    NotFound(&'static str),
    /// The request may not do this (a form without its CSRF token, say).
    #[error("{0}")]
    Forbidden(String),
    /// The user already runs as many uploads as allowed.
    #[error("Too many uploads at once: wait for one to finish.")]
    TooManyUploads,
    /// The storage library's answer: an upload the policy refused (size, type, a broken body,
    /// a full disk), or a storage that failed.
    #[error(transparent)]
    Storage(#[from] private_storage::Error),
    /// A bad value in the request, with what is expected.
    #[error("{0}")]
    Invalid(String),
    /// Something with that name exists already.
    #[error("{0}")]
    Exists(String),
    /// A sign-in through the identity provider did not work (the reason, for people).
    #[error("{0}")]
    SignInRefused(String),
    /// Another instance is writing this resumable upload now: retry in a moment.
    #[error("Another request is writing this upload: try again in a moment.")]
    Locked,
    /// The upload would take the user past their quota (the message names it).
    #[error("{0}")]
    OverQuota(String),
    /// A well-formed request the configured policy refuses (a link longer than
    /// `share_max_lifetime`, say), with why.
    #[error("{0}")]
    Policy(String),
    /// The file is held back: its virus scan is pending, or it was found infected (the hold
    /// says why, with its status).
    #[error("{}", .0.message())]
    Held(private_storage::Held),
    /// Too many password checks are waiting: retry in a moment.
    #[error("Too many logins are being checked at once: try again in a moment.")]
    Busy,
    /// The database cannot answer: fail closed, retry later.
    #[error("The service is temporarily unavailable.")]
    Unavailable(#[source] DbError),
    /// A bug or an unexpected failure (logged).
    #[error("Internal server error.")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) => {
                tracing::error!(error = %e, "database unavailable");
                Error::Unavailable(e)
            }
            DbError::Conflict(_) => Error::Exists("It exists already.".into()),
            e => {
                tracing::error!(error = %e, "database error");
                Error::Internal(e.into())
            }
        }
    }
}

impl Error {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated | Error::BadToken | Error::WrongCredentials => StatusCode::UNAUTHORIZED,
            Error::TooManyAttempts | Error::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Storage(e) => e.status(),
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Exists(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) | Error::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Error::Locked => StatusCode::LOCKED,
            Error::OverQuota(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Policy(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Held(held) => held.status(),
            Error::SignInRefused(_) => StatusCode::FORBIDDEN,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What a client may be told.
    pub fn message(&self) -> String {
        match self {
            Error::Storage(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    /// The metrics label of a refused upload.
    pub(crate) fn upload_reason(&self) -> &'static str {
        if matches!(self, Error::OverQuota(_)) {
            return "quota";
        }
        match self.status().as_u16() {
            413 => "too_large",
            415 => "unsupported_type",
            400 => "bad_upload",
            403 => "csrf",
            429 => "too_many_uploads",
            507 => "storage_full",
            _ => "error",
        }
    }
}

/// A result of the domain.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who asks for an operation.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A logged-in user (session or API token).
    User(Arc<UserRow>),
    /// The operator at the command line: may act on every file.
    Operator,
}

impl Actor {
    /// Whether this actor sees every file: staff, superusers and the operator.
    pub fn sees_everything(&self) -> bool {
        match self {
            Actor::User(user) => user.is_staff || user.is_superuser,
            Actor::Operator => true,
        }
    }

    /// The owner the actor's file lookups are limited to (`None`: every file).
    pub(crate) fn scope(&self) -> Option<&str> {
        match self {
            Actor::User(user) if !self.sees_everything() => Some(&user.id),
            _ => None,
        }
    }

    /// The name recorded as the issuer of what this actor does.
    pub(crate) fn name(&self) -> &str {
        match self {
            Actor::User(user) => &user.username,
            Actor::Operator => "cli",
        }
    }
}

/// The one access decision on a file: its owner, or someone who sees everything.
pub(crate) fn may_access(user_id: &str, sees_everything: bool, owner_id: &str) -> bool {
    sees_everything || user_id == owner_id
}

/// The operations, over the database, the storage and the library's services. Cheap to clone:
/// one reference count (every request's middleware and handlers clone it).
#[derive(Clone)]
pub struct Domain(Arc<Inner>);

/// What a [`Domain`] holds.
pub struct Inner {
    config: Arc<Config>,
    db: Db,
    storage: Arc<dyn Storage>,
    policy: Arc<UploadPolicy<Owner>>,
    links: ShareLinks,
    media: ServePrivate,
    records: ServeRecords<DbRecords>,
    shared: ServeShared,
    uploads: UploadSlots,
    resumable: Resumable<Owner>,
    leases: Arc<resumable::Leases>,
    sso: Option<Arc<crate::sso::Sso>>,
    /// The storage's encryption, when files are encrypted at rest.
    encrypted: Option<Arc<crate::state::Encrypted>>,
    /// The virus scanner, when scanning is on.
    scanner: Option<Arc<scan::Scanner>>,
    /// The audit trail's queue.
    audit: audit::AuditLog,
    /// The configured webhooks, if any.
    webhooks: Option<Arc<webhooks::Webhooks>>,
    /// Whether downloads by key look their file's scan state up (scanning is on, or held
    /// files are left from when it was).
    holds_by_key: Arc<std::sync::atomic::AtomicBool>,
    limiter: Arc<LoginLimiter>,
    /// Password attempts per share link.
    link_limiter: Arc<LoginLimiter>,
    metrics: Arc<Metrics>,
}

impl std::ops::Deref for Domain {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").field("storage", &self.storage).finish_non_exhaustive()
    }
}

/// What [`Domain::new`] is built from: values the configuration produced.
pub(crate) struct Parts {
    pub(crate) config: Arc<Config>,
    pub(crate) db: Db,
    pub(crate) storage: Arc<dyn Storage>,
    /// Serving with the configured delivery and denial policy, before any rule.
    pub(crate) serving: ServePrivate,
    /// `/private-media/`: `serving` with the configured rule.
    pub(crate) media: ServePrivate,
    pub(crate) links: ShareLinks,
    pub(crate) metrics: Arc<Metrics>,
    /// Where unfinished resumable uploads are kept.
    pub(crate) partials: Arc<dyn PartialStore>,
    /// `storage` itself when files are encrypted at rest, for key management.
    pub(crate) encrypted: Option<Arc<crate::state::Encrypted>>,
}

impl Domain {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts { config, db, storage, serving, media, links, metrics, partials, encrypted } = parts;
        let scanner = config.scan.clone().map(|c| Arc::new(scan::Scanner::new(c)));
        // Until `note_held_files` has looked: fail closed.
        let holds_by_key = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hold = scan::scan_hold(db.clone(), scanner.clone(), holds_by_key.clone());
        let (serving, media) = (serving.hold(hold.clone()), media.hold(hold));
        // Files larger than the scanner takes are refused at upload, unless they may be kept
        // unscanned.
        let max_file_size = match scanner.as_ref().and_then(|s| s.upload_limit()) {
            Some(limit) => config.max_file_size.min(limit),
            None => config.max_file_size,
        };
        let mut policy = UploadPolicy::<Owner>::from_arc(storage.clone())
            .upload_to("files/%Y/%m")
            // A folder of its own per upload (80 random bits): two uploads of one name never
            // race for one key, even where the storage cannot create atomically (S3 without
            // conditional writes), so no clean-up can delete another upload's bytes. Fanned
            // out by the id's first byte: a user's month holds at most 256 folders, each
            // 1/256 of their uploads (about 4,000 at a million). Keys are recorded, so files
            // stored under an earlier layout are served as they are.
            .upload_subfolder(|owner: &Owner| {
                let id = crate::db::new_id();
                vec![owner.0.clone(), id[..2].to_owned(), id]
            })
            .max_file_size(max_file_size);
        if !config.content_types.is_empty() {
            policy = policy.content_types(config.content_types.clone());
        }
        let records = ServeRecords::new(DbRecords(db.clone()), serving.clone().rule(files::owner_or_staff))
            .disposition(files::disposition);
        let shared = ServeShared::new(links.clone(), serving.clone()).records(links::record_keys(db.clone()));
        let resumable = Resumable::from_arc(policy.clone(), partials).lifetime(config.upload_expiry);
        Self(Arc::new(Inner {
            media,
            records,
            shared,
            resumable,
            leases: resumable::Leases::new(db.clone()),
            sso: config.sso.clone().map(|c| Arc::new(crate::sso::Sso::new(c))),
            encrypted,
            scanner,
            holds_by_key,
            audit: audit::AuditLog::start(db.clone(), metrics.clone()),
            webhooks: webhooks::Webhooks::new(config.webhooks.clone(), config.webhook_backoff),
            policy: Arc::new(policy),
            links,
            uploads: UploadSlots::new(config.max_uploads_per_user),
            limiter: Arc::new(LoginLimiter::new(5, 20, std::time::Duration::from_secs(15 * 60), 100_000)),
            link_limiter: Arc::new(LoginLimiter::new(5, 20, std::time::Duration::from_secs(15 * 60), 100_000)),
            config,
            db,
            storage,
            metrics,
        }))
    }

    /// `/private-media/`: files by key, under the configured rule.
    pub fn media(&self) -> &ServePrivate {
        &self.media
    }

    /// Downloads by record id: the owner, or staff.
    pub fn records(&self) -> &ServeRecords<DbRecords> {
        &self.records
    }

    /// Share links.
    pub fn shared(&self) -> &ServeShared {
        &self.shared
    }

    /// Uploads running now per user.
    pub fn uploads(&self) -> &UploadSlots {
        &self.uploads
    }

    /// Whether the database and the storage answer.
    ///
    /// # Errors
    /// What does not answer, said plainly (for logs and `check`).
    pub async fn ready(&self) -> Result<(), String> {
        self.db.ping().await.map_err(|e| format!("database: {e}"))?;
        let probe = private_storage::ObjectKey::new(".readiness-probe").expect("a valid key");
        private_storage::StorageExt::exists(&*self.storage, &probe).await.map_err(|e| format!("storage: {e}"))?;
        Ok(())
    }
}
