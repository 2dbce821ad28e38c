//! Wiring: the configuration becomes the library's values (storage, delivery, denial policy,
//! rule, share links) once, here, and they become the [`Domain`].
//!
//! Opening has no side effect on what a running server does: it creates the data folder if it
//! is missing, applies pending migrations and, on the embedded default, generates the
//! share-link key once. Sweeping staging files and purging expired rows are the server's jobs
//! ([`crate::server`]), never a command's.

use std::path::Path;
use std::sync::Arc;

use private_storage::tus::{LocalPartials, PartialStore, S3Partials};
use private_storage::{
    Delivery, EncryptedStorage, Keyring, LocalStorage, OnDenied, S3Storage, ServePrivate, ShareKeys, ShareLinks,
    Storage, allow_authenticated, allow_staff, allow_superuser,
};

use crate::config::{Config, ConfigError, DeliveryName, DeniedName, RuleName, StorageConfig, redact_url};
use crate::db::{Db, DbError};
use crate::domain::{DbAudit, DbRevocations, Domain, Parts, keys_in};
use crate::metrics::Metrics;

/// Why the server cannot start: said plainly, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database cannot be reached or migrated.
    #[error("database {url}: {source}")]
    Database {
        /// The URL, password redacted.
        url: String,
        /// What went wrong.
        source: DbError,
    },
    /// The storage cannot be used.
    #[error("storage: {0}")]
    Storage(String),
}

/// Everything a request needs. Cheap to clone: one reference count (axum clones the state for
/// every middleware and extractor of every request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What an [`AppState`] holds.
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// The operations every front-end calls.
    pub domain: Domain,
    /// The database, for operations tooling and tests (front-ends go through `domain`).
    pub db: Db,
    /// The storage, likewise.
    pub storage: Arc<dyn Storage>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Page templates.
    pub templates: Arc<minijinja::Environment<'static>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("domain", &self.domain).finish_non_exhaustive()
    }
}

/// The storage the configuration names, opened.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local folder.
    Local(LocalStorage),
    /// An S3 bucket.
    S3(Arc<S3Storage>),
}

impl Backend {
    /// Opens a storage: a folder (it must exist and not be writable by others), or S3 with its
    /// settings by name (the `[s3]` table and `PRIVATE_STORAGE_S3_*`, merged by the loader).
    ///
    /// # Errors
    /// [`StartError::Storage`] saying what to fix.
    pub fn open(storage: &StorageConfig) -> Result<Self, StartError> {
        match storage {
            StorageConfig::Local(path) => {
                check_local_root(path)?;
                LocalStorage::new(path).map(Backend::Local).map_err(|e| {
                    StartError::Storage(format!("{}: {e} (create the folder, or fix `storage`)", path.display()))
                })
            }
            StorageConfig::S3 { url, settings } => {
                let builder = settings
                    .iter()
                    .try_fold(private_storage::S3Builder::from_url(url)?, |builder, (setting, value)| {
                        builder.with(*setting, value)
                    })?;
                Ok(Backend::S3(Arc::new(builder.build()?)))
            }
        }
    }

    /// The storage for everything that reads and writes files, as stored (ciphertext, when
    /// encrypted).
    pub fn shared(&self) -> Arc<dyn Storage> {
        match self {
            Backend::Local(local) => Arc::new(local.clone()),
            Backend::S3(s3) => s3.clone(),
        }
    }

    /// The storage through `keys`' encryption.
    ///
    /// # Errors
    /// None today (the library's constructor is fallible).
    pub fn encrypted(&self, keys: Keyring) -> Result<Arc<Encrypted>, StartError> {
        Ok(Arc::new(EncryptedStorage::new(self.shared(), keys)?))
    }

    /// Checks that the storage can be used for real: the folder's permissions, or S3's writes
    /// (reachable, and whether it honours conditional writes). Returns a line for people.
    ///
    /// # Errors
    /// What is wrong, with what to fix.
    pub async fn check(&self) -> Result<String, String> {
        match self {
            Backend::Local(local) => {
                check_local_root(local.root()).map_err(|e| e.to_string())?;
                Ok(format!("{}, not writable by others", local.root().display()))
            }
            Backend::S3(s3) => {
                s3.check_writes().await.map_err(|e| e.to_string())?;
                Ok("S3 reachable, writes checked".into())
            }
        }
    }
}

/// The storage with encryption at rest.
pub type Encrypted = EncryptedStorage<Arc<dyn Storage>>;

impl From<private_storage::Error> for StartError {
    fn from(e: private_storage::Error) -> Self {
        StartError::Storage(e.to_string())
    }
}

impl AppState {
    /// Opens the database (migrating it), the storage and the services described by `config`.
    ///
    /// # Errors
    /// A [`StartError`] saying what to fix.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        private_storage::install_tls_provider();
        let derived_media = matches!(&config.storage, StorageConfig::Local(p) if *p == config.data_dir.join("media"));
        let sqlite_in_data_dir = config.database_url.starts_with("sqlite:")
            && !config.sources.contains_key(&crate::config::Setting::Key(crate::config::Key::DatabaseUrl));
        if derived_media || sqlite_in_data_dir || config.share_keys.is_none() {
            create_private_dir(&config.data_dir)?;
        }
        if derived_media {
            create_private_dir(&config.data_dir.join("media"))?;
        }
        check_storage_apart(&config)?;
        let db = Db::open(&config.database_url)
            .await
            .map_err(|source| StartError::Database { url: redact_url(&config.database_url), source })?;
        let backend = Backend::open(&config.storage)?;
        let encrypted = match (&config.encryption, &config.encryption_keys) {
            (true, Some(keys)) => Some(backend.encrypted(keys.clone())?),
            _ => None,
        };
        let mut storage: Arc<dyn Storage> = match &encrypted {
            Some(encrypted) => encrypted.clone(),
            None => backend.shared(),
        };
        if config.file_cache > 0 {
            // Small files served from memory: exact through the database's change feed.
            storage = db.cache_objects(storage, config.file_cache);
        }
        // Unfinished resumable uploads: beside the default media folder, so a finished one is
        // renamed into it; in the bucket with S3, so that every instance can continue them.
        // Encrypted, the unfinished bytes are encrypted in the data folder too, and a finished
        // upload is streamed through the storage's encryption.
        let uploads = config.data_dir.join("uploads");
        let partials: Arc<dyn PartialStore> = match (&backend, &encrypted) {
            (_, Some(encrypted)) => {
                Arc::new(LocalPartials::copying_into(uploads, storage.clone())?.sealed(encrypted.keys().clone()))
            }
            (Backend::Local(local), None) => Arc::new(LocalPartials::new(uploads, local.clone())?),
            (Backend::S3(s3), None) => Arc::new(S3Partials::new(s3.clone())),
        };

        let serving =
            ServePrivate::from_arc(storage.clone()).delivery(delivery(&config)?).on_denied(match config.on_denied {
                DeniedName::Forbidden => OnDenied::Forbidden,
                DeniedName::NotFound => OnDenied::NotFound,
                DeniedName::Login => OnDenied::login("/login"),
            });
        let media = match config.auth_function {
            RuleName::Authenticated => serving.clone().rule(allow_authenticated()),
            RuleName::Staff => serving.clone().rule(allow_staff()),
            RuleName::Superuser => serving.clone().rule(allow_superuser()),
        };
        let metrics = Arc::new(Metrics::default());
        let keys = match &config.share_keys {
            Some(spec) => ShareKeys::parse(spec).map_err(|e| ConfigError(format!("`share_keys`: {e}")))?,
            None => keys_in(&config.data_dir).map_err(StartError::Storage)?,
        };
        let links = ShareLinks::new(keys, DbRevocations(db.clone()))
            .base_url("/s/")
            .max_lifetime(config.share_max_lifetime)
            .audit(DbAudit::new(db.clone(), metrics.clone()));

        let config = Arc::new(config);
        let domain = Domain::new(Parts {
            config: config.clone(),
            db: db.clone(),
            storage: storage.clone(),
            serving,
            media,
            links,
            metrics: metrics.clone(),
            partials,
            encrypted,
        });
        if let Err(e) = domain.note_held_files().await {
            tracing::warn!(error = %e, "could not count held files: downloads by key check each file's scan state");
        }
        let templates = Arc::new(crate::http::web::templates());
        Ok(Self(Arc::new(Shared { config, domain, db, storage, metrics, templates })))
    }
}

fn delivery(config: &Config) -> Result<Delivery, ConfigError> {
    let built = match (config.delivery, &config.storage) {
        (DeliveryName::Stream, _) => Ok(Delivery::stream()),
        (DeliveryName::Nginx, StorageConfig::Local(_)) => Delivery::nginx(&config.internal_url),
        (DeliveryName::Nginx, StorageConfig::S3 { .. }) => Delivery::nginx_presigned(&config.internal_url),
        (DeliveryName::Apache, _) => Ok(Delivery::apache()),
        (DeliveryName::S3Redirect, _) => Ok(Delivery::presigned_redirect(None)),
    };
    built.map_err(|e| ConfigError(e.to_string()))
}

/// Refuses a local storage that holds the data folder or the SQLite database: `/private-media/`
/// would serve the database and the share-link keys as files.
fn check_storage_apart(config: &Config) -> Result<(), StartError> {
    let StorageConfig::Local(storage) = &config.storage else { return Ok(()) };
    let Ok(storage) = std::fs::canonicalize(storage) else { return Ok(()) }; // refused later, by name
    let database = crate::db::sqlite_path(&config.database_url).and_then(|p| p.parent().map(Path::to_path_buf));
    for (setting, path) in [("data_dir", Some(config.data_dir.clone())), ("database_url", database)] {
        let Some(Ok(path)) = path.map(std::fs::canonicalize) else { continue };
        if path.starts_with(&storage) {
            return Err(StartError::Config(ConfigError(format!(
                "`storage` ({}) holds `{setting}` ({}): the database and the share-link keys would be served as \
                 files; give the files a folder of their own",
                storage.display(),
                path.display()
            ))));
        }
    }
    Ok(())
}

/// Creates a folder only its owner may read (the data folder and the default media folder).
fn create_private_dir(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StartError::Storage(format!("cannot create {}: {e}", path.display())))
}

/// Refuses a media folder that other users could write to, and warns when they can read it.
fn check_local_root(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| StartError::Storage(format!("{}: {e} (create the folder, or fix `storage`)", path.display())))?;
    if !meta.is_dir() {
        return Err(StartError::Storage(format!("{} is not a folder", path.display())));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(StartError::Storage(format!(
            "{} is writable by every user (mode {:o}): chmod o-w it",
            path.display(),
            mode & 0o777
        )));
    }
    if mode & 0o004 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the media folder is readable by every user of this machine");
    }
    Ok(())
}
