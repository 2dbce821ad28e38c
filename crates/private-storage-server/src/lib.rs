//! The private-storage server, built only on the `private-storage` library's public API.
//!
//! [`AppState::build`] turns a [`Config`] into everything a request needs (database, storage,
//! the library's services); [`app`] is the HTTP interface; [`serve`] runs it with timeouts and
//! graceful shutdown. The binary (`private-storage`) is a thin command line over these
//! ([`cli::run`]).

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod metrics;
pub mod server;
pub mod share;
pub mod web;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use private_storage::{
    Delivery, LocalStorage, ObjectKey, OnDenied, PrivateFile, RecordSource, ServePrivate, ServeRecords, ServeShared,
    ShareKeys, ShareLinks, Storage, StorageExt, UploadPolicy, allow_authenticated, allow_staff, allow_superuser,
};

pub use config::{Config, ConfigError, Loader};
pub use server::serve;

use auth::LoginLimiter;
use config::{DeliveryName, DeniedName, RuleName, StorageConfig};
use db::{Db, FileRow};
use metrics::Metrics;

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
        source: sqlx::Error,
    },
    /// The storage cannot be used.
    #[error("storage: {0}")]
    Storage(String),
}

/// The record type uploads are saved for: the owner's user id.
#[derive(Debug, Clone)]
pub struct Owner(pub String);

/// Everything a request needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// The database.
    pub db: Db,
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// `/private-media/` with the configured rule.
    pub media: ServePrivate,
    /// `/files/{id}/download`: owner or staff.
    pub records: ServeRecords<DbRecords>,
    /// Share links.
    pub links: ShareLinks,
    /// `/s/{token}`.
    pub shared: ServeShared,
    /// The upload policy.
    pub policy: Arc<UploadPolicy<Owner>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Failed logins.
    pub limiter: Arc<LoginLimiter>,
    /// Uploads in progress per user.
    pub uploads: Arc<Mutex<HashMap<String, usize>>>,
    /// Page templates.
    pub templates: Arc<minijinja::Environment<'static>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("storage", &self.storage).finish_non_exhaustive()
    }
}

/// Records for downloads by id: a user's own files, or every file for staff.
#[derive(Debug, Clone)]
pub struct DbRecords(Db);

#[async_trait]
impl RecordSource for DbRecords {
    type Record = FileRow;

    async fn find(&self, request: &http::request::Parts, id: &str) -> private_storage::Result<Option<FileRow>> {
        let Some(authed) = request.extensions.get::<auth::Authed>() else { return Ok(None) };
        let scope = (!authed.is_staff()).then_some(authed.user.id.as_str());
        self.0
            .file(id, scope)
            .await
            .map_err(|e| private_storage::Error::Storage { backend: "database", source: Box::new(e) })
    }

    fn file_key(&self, record: &FileRow) -> Option<ObjectKey> {
        ObjectKey::new(&record.object_key).ok()
    }
}

/// The rule of downloads by record: the owner, or staff.
async fn owner_or_staff(file: PrivateFile) -> bool {
    let owner = file.parent::<FileRow>().map(|f| f.owner_id.clone());
    file.user().is_some_and(|u| u.is_staff() || u.is_superuser() || Some(u.id()) == owner.as_deref())
}

impl AppState {
    /// Opens the database (migrating it), the storage and the services described by `config`.
    ///
    /// # Errors
    /// A [`StartError`] saying what to fix.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        private_storage::install_tls_provider();
        let derived_media = matches!(&config.storage, StorageConfig::Local(p) if *p == config.data_dir.join("media"));
        let sqlite_in_data_dir =
            config.database_url.starts_with("sqlite:") && !config.sources.contains_key("database_url");
        if derived_media || sqlite_in_data_dir || config.share_keys.is_none() {
            create_private_dir(&config.data_dir)?;
        }
        let db = Db::open(&config.database_url)
            .await
            .map_err(|source| StartError::Database { url: config::redact_url(&config.database_url), source })?;

        let storage: Arc<dyn Storage> = match &config.storage {
            StorageConfig::Local(path) => {
                if derived_media {
                    create_private_dir(path)?;
                }
                check_local_root(path)?;
                Arc::new(LocalStorage::new(path).map_err(|e| {
                    StartError::Storage(format!("{}: {e} (create the folder, or fix `storage`)", path.display()))
                })?)
            }
            StorageConfig::S3 { url, settings } => {
                let mut builder =
                    private_storage::S3Builder::from_url(url).map_err(|e| StartError::Storage(e.to_string()))?;
                for (name, value) in settings {
                    builder = builder.set(name, value).map_err(|e| StartError::Storage(e.to_string()))?;
                }
                Arc::new(builder.build().map_err(|e| StartError::Storage(e.to_string()))?)
            }
        };
        if let Some(local) = storage_local_root(&config)
            && let Ok(local) = LocalStorage::new(&local)
        {
            // A crash mid-upload leaves a staging file: never visible, removed here.
            match local.remove_staging_files(Duration::ZERO).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed staging files of interrupted uploads"),
                Err(e) => tracing::warn!(error = %e, "could not clean the staging files"),
            }
        }

        let delivery = match (config.delivery, &config.storage) {
            (DeliveryName::Stream, _) => Delivery::stream(),
            (DeliveryName::Nginx, StorageConfig::Local(_)) => {
                Delivery::nginx(&config.internal_url).map_err(|e| ConfigError(e.to_string()))?
            }
            (DeliveryName::Nginx, StorageConfig::S3 { .. }) => {
                Delivery::nginx_presigned(&config.internal_url).map_err(|e| ConfigError(e.to_string()))?
            }
            (DeliveryName::Apache, _) => Delivery::apache(),
            (DeliveryName::S3Redirect, _) => Delivery::presigned_redirect(None),
        };
        let on_denied = match config.on_denied {
            DeniedName::Forbidden => OnDenied::Forbidden,
            DeniedName::NotFound => OnDenied::NotFound,
            DeniedName::Login => OnDenied::login("/login"),
        };
        let base = ServePrivate::from_arc(storage.clone()).delivery(delivery).on_denied(on_denied);
        let media = match config.auth_function {
            RuleName::Authenticated => base.clone().rule(allow_authenticated()),
            RuleName::Staff => base.clone().rule(allow_staff()),
            RuleName::Superuser => base.clone().rule(allow_superuser()),
        };
        let records = ServeRecords::new(DbRecords(db.clone()), base.clone().rule(owner_or_staff));

        let keys = match &config.share_keys {
            Some(spec) => ShareKeys::parse(spec).map_err(|e| ConfigError(format!("`share_keys`: {e}")))?,
            None => share::keys_in(&config.data_dir)?,
        };
        let links = ShareLinks::new(keys, share::DbRevocations(db.clone()))
            .base_url("/s/")
            .max_lifetime(config.share_max_lifetime)
            .audit(share::DbAudit(db.clone()));
        let lookup = db.clone();
        let shared = ServeShared::new(links.clone(), base).records(move |id| {
            let db = lookup.clone();
            async move {
                let file = db
                    .file(&id, None)
                    .await
                    .map_err(|e| private_storage::Error::Storage { backend: "database", source: Box::new(e) })?;
                Ok(file.and_then(|f| ObjectKey::new(&f.object_key).ok()))
            }
        });

        let mut policy = UploadPolicy::<Owner>::from_arc(storage.clone())
            .upload_to("files/%Y/%m")
            .upload_subfolder(|owner: &Owner| vec![owner.0.clone()])
            .max_file_size(config.max_file_size);
        if !config.content_types.is_empty() {
            policy = policy.content_types(config.content_types.clone());
        }

        Ok(Self {
            config: Arc::new(config),
            db,
            storage,
            media,
            records,
            links,
            shared,
            policy: Arc::new(policy),
            metrics: Arc::default(),
            limiter: Arc::new(LoginLimiter::new(5, Duration::from_secs(15 * 60))),
            uploads: Arc::default(),
            templates: Arc::new(web::templates()),
        })
    }

    /// Records a file the upload policy stored for `owner_id`; if the record cannot be written,
    /// the bytes are deleted again (no file without a record).
    ///
    /// # Errors
    /// The database's.
    pub async fn record_upload(
        &self,
        owner_id: &str,
        saved: &private_storage::SavedFile,
        fallback_name: &str,
    ) -> Result<FileRow, sqlx::Error> {
        let row = FileRow {
            id: db::new_id(),
            owner_id: owner_id.to_owned(),
            object_key: saved.key.to_string(),
            name: if saved.original_name.is_empty() { fallback_name.to_owned() } else { saved.original_name.clone() },
            size: saved.size as i64,
            content_type: saved.content_type.clone(),
            sha256: saved.sha256.clone(),
            created: db::now(),
        };
        if let Err(e) = self.db.insert_file(&row).await {
            if let Err(delete) = self.storage.delete(&saved.key).await {
                tracing::error!(key = %saved.key, error = %delete, "could not delete the bytes of an unrecorded upload");
            }
            return Err(e);
        }
        self.metrics.uploaded();
        tracing::info!(id = %row.id, key = %row.object_key, size = row.size, owner = owner_id, "file uploaded");
        Ok(row)
    }

    /// Whether the database and the storage answer.
    pub async fn ready(&self) -> Result<(), String> {
        self.db.ping().await.map_err(|e| format!("database: {e}"))?;
        let probe = ObjectKey::new(".readiness-probe").expect("a valid key");
        self.storage.exists(&probe).await.map_err(|e| format!("storage: {e}"))?;
        Ok(())
    }
}

fn storage_local_root(config: &Config) -> Option<std::path::PathBuf> {
    match &config.storage {
        StorageConfig::Local(p) => Some(p.clone()),
        StorageConfig::S3 { .. } => None,
    }
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
pub fn check_local_root(path: &Path) -> Result<(), StartError> {
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

/// The HTTP interface (see the README for the routes).
pub fn app(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    let pages = Router::new()
        .route("/", get(web::index))
        .route("/login", get(web::login_page).post(web::login))
        .route("/logout", post(web::logout))
        .route("/files/{id}", get(web::file_page))
        .route("/files/{id}/delete", get(web::confirm_delete).post(web::delete))
        .route("/files/{id}/share", post(web::share))
        .route("/links/{link_id}/revoke", post(web::revoke))
        .route("/api/files", get(api::list))
        .route("/api/files/{id}", get(api::show).delete(api::delete))
        .route("/api/files/{id}/links", post(api::share))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/static/style.css", get(web::stylesheet))
        .route("/static/upload.js", get(web::upload_script))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, timeout));
    // Transfers are not cut by the request timeout: they may take as long as the bytes do.
    let transfers = Router::new()
        .route("/upload", post(web::upload))
        .route("/api/files", post(api::upload))
        .layer(DefaultBodyLimit::disable())
        .route("/files/{id}/download", get(download))
        .nest_service("/private-media", state.media.clone())
        .route("/s/{token}", get(shared).head(shared));
    pages
        .merge(transfers)
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::count))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(NewRequestId))
        .with_state(state)
}

/// A random id for each request without one, echoed in `x-request-id` and in every log line
/// of the request.
#[derive(Debug, Clone, Copy)]
struct NewRequestId;

impl tower_http::request_id::MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<tower_http::request_id::RequestId> {
        http::HeaderValue::from_str(&auth::random_token(9)).ok().map(tower_http::request_id::RequestId::new)
    }
}

/// The span of a request: method, path and request id. Share-link tokens are capabilities:
/// their path is logged as `/s/<token>`.
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let path = if path.starts_with("/s/") { "/s/<token>" } else { path };
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), path, request_id = id)
}

async fn download(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    request: axum::extract::Request,
) -> axum::response::Response {
    state.records.serve(&id, request).await.map(axum::body::Body::new)
}

async fn shared(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
    request: axum::extract::Request,
) -> axum::response::Response {
    state.shared.serve(&token, request).await.map(axum::body::Body::new)
}
