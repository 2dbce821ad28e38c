//! The server's configuration: defaults, then a TOML file, then `PRIVATE_STORAGE_<KEY>`
//! environment variables, then flags (the last wins). Every key is validated at start; an
//! unknown key is an error that names it and where it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use private_storage::S3Setting;

/// The environment prefix of every setting (`PRIVATE_STORAGE_BIND`, `PRIVATE_STORAGE_S3_BUCKET`).
pub const ENV_PREFIX: &str = "PRIVATE_STORAGE_";

/// Declares [`Key`]: every top-level setting with its name, default and help, in one table.
macro_rules! keys {
    ($($key:ident = $name:literal, $default:expr, $help:literal;)*) => {
        /// A top-level setting, typed: the name a file, a `PRIVATE_STORAGE_<NAME>` variable or a
        /// flag gives it is parsed once into this (as object_store's `AmazonS3ConfigKey`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[allow(missing_docs)] // see `Key::help`
        pub enum Key { $($key),* }

        impl Key {
            /// Every key.
            pub const ALL: &[Key] = &[$(Key::$key),*];

            /// The key's name.
            pub fn as_str(self) -> &'static str {
                match self { $(Key::$key => $name),* }
            }

            /// Its default (`None`: derived or unset).
            pub fn default_value(self) -> Option<&'static str> {
                match self { $(Key::$key => $default),* }
            }

            /// What it does.
            pub fn help(self) -> &'static str {
                match self { $(Key::$key => $help),* }
            }
        }
    };
}

keys! {
    DataDir = "data_dir", Some("./private-storage-data"), "folder for the SQLite database, the media folder and generated keys";
    Bind = "bind", Some("127.0.0.1:8000"), "address to listen on";
    DatabaseUrl = "database_url", None, "sqlite://… or postgres://… (default: SQLite in data_dir)";
    Storage = "storage", None, "a local folder, or s3://bucket/prefix with [s3] settings (default: data_dir/media)";
    AuthFunction = "auth_function", Some("allow_superuser"), "rule of /private-media/: allow_authenticated | allow_staff | allow_superuser";
    MaxFileSize = "max_file_size", Some("100MiB"), "largest upload: bytes, or 10MB / 1GiB";
    ContentTypes = "content_types", Some(""), "allowed upload types, comma-separated (image/*, application/pdf); empty: any sniffable type";
    Delivery = "delivery", Some("stream"), "stream | nginx | apache | s3-redirect";
    InternalUrl = "internal_url", Some("/_private"), "nginx internal location prefix (delivery = nginx)";
    OnDenied = "on_denied", Some("403"), "answer to a denied download: 403 | 404 | login";
    PublicUrl = "public_url", None, "the URL users reach the server at (https://… turns on Secure cookies)";
    ShareKeys = "share_keys", None, "share-link signing keys, id=base64,… newest first (default: one generated into data_dir)";
    Encryption = "encryption", Some("off"), "on: files are encrypted at rest (AES-256-GCM, ranges still served) under encryption_keys; off: stored as uploaded";
    EncryptionKeys = "encryption_keys", None, "key-encryption keys, id=base64,… newest first (`private-storage keys generate ID` makes one)";
    EncryptionKeysFile = "encryption_keys_file", None, "a file holding encryption_keys (id=base64 per line, newest first), instead of the setting";
    ShareMaxLifetime = "share_max_lifetime", Some("7d"), "longest a share link may live (any length: 90d, 365d)";
    ShareDefaultLifetime = "share_default_lifetime", Some("1d"), "a share link's lifetime when none is asked for";
    ShareRequirePassword = "share_require_password", Some("false"), "true: every new share link needs a password";
    ShareDefaultMaxDownloads = "share_default_max_downloads", Some(""), "downloads a new share link allows when none is asked for (empty: no limit)";
    SessionTtl = "session_ttl", Some("12h"), "how long a login lasts";
    AuditRetention = "audit_retention", Some("90d"), "how long the audit trail is kept";
    UploadExpiry = "upload_expiry", Some("24h"), "how long an unfinished resumable (tus) upload is kept after its last request";
    UploadChunkSize = "upload_chunk_size", Some("8MiB"), "bytes per request of the upload page's resumable uploads: keep it below any cap a proxy in front puts on request bodies";
    FileCache = "file_cache", Some("64MiB"), "memory for small files (64 KiB at most) kept to be served without reading them again; 0: none";
    LogFormat = "log_format", Some("text"), "text | json";
    HeaderReadTimeout = "header_read_timeout", Some("10s"), "a client must send its request headers within this";
    RequestTimeout = "request_timeout", Some("60s"), "limit on pages and API calls (downloads and uploads are not cut)";
    ShutdownGrace = "shutdown_grace", Some("30s"), "on SIGTERM, how long in-flight requests may finish";
    Scan = "scan", Some("off"), "clamav: every new file is scanned by clamd before anyone can fetch it (pending until then); off: files are served as uploaded";
    ClamdAddress = "clamd_address", Some("127.0.0.1:3310"), "clamd's TCPSocket (host:port) or LocalSocket (unix:/run/clamav/clamd.ctl)";
    ScanMaxSize = "scan_max_size", Some("25MiB"), "the largest file clamd scans: set it to clamd's StreamMaxLength";
    ScanOversize = "scan_oversize", Some("reject"), "a file larger than scan_max_size: reject (refused at upload) | unscanned (kept, served, and shown as not scanned)";
    ScanInfected = "scan_infected", Some("keep"), "an infected file: keep (out of reach, shown to its owner) | delete (its bytes deleted, its record kept as a notice)";
    ScanTimeout = "scan_timeout", Some("60s"), "how long clamd may take for one read or write before it counts as down";
    WebhookBackoff = "webhook_backoff", Some("10s"), "the wait before a failed webhook delivery is retried (doubling each time, at most an hour)";
    QuotaBytes = "quota_bytes", Some(""), "every user's storage quota, e.g. 10GiB (empty: none); `user quota NAME SIZE` sets one user's";
    QuotaFiles = "quota_files", Some(""), "every user's quota of files (empty: none); `user quota NAME --files N` sets one user's";
    MaxUploadsPerUser = "max_uploads_per_user", Some("4"), "concurrent uploads one user may run";
    MaxConnections = "max_connections", Some("4096"), "open connections at most; more are answered 503 and closed";
    TrustedProxies = "trusted_proxies", Some(""), "addresses of reverse proxies whose X-Forwarded-For is believed (for the login limit), comma-separated";
    OidcIssuer = "oidc_issuer", None, "OpenID provider for single sign-on (its discovery document is <issuer>/.well-known/openid-configuration)";
    OidcClientId = "oidc_client_id", None, "this server's client id at the provider";
    OidcClientSecret = "oidc_client_secret", None, "this server's client secret at the provider";
    OidcScopes = "oidc_scopes", Some("profile,email"), "scopes asked for besides openid, comma-separated";
    OidcRedirectUrl = "oidc_redirect_url", None, "where the provider sends people back (default: public_url + /login/oidc/callback)";
    OidcUsernameClaim = "oidc_username_claim", Some("preferred_username"), "the ID token claim that names the user";
    OidcStaffClaim = "oidc_staff_claim", Some("groups"), "the ID token claim whose values give roles and admission";
    OidcStaffValues = "oidc_staff_values", Some(""), "values of oidc_staff_claim that make staff, comma-separated";
    OidcSuperuserValues = "oidc_superuser_values", Some(""), "values of oidc_staff_claim that make a superuser, comma-separated";
    OidcAllowedValues = "oidc_allowed_values", Some(""), "values of oidc_staff_claim one of which a user needs to sign in (empty: anyone the provider signs in)";
    OidcName = "oidc_name", Some("single sign-on"), "how the login page names the provider (Sign in with …)";
    PasswordLogin = "password_login", Some("true"), "whether local passwords log in (false: only single sign-on)";
}

/// Any setting: a top-level [`Key`], or an `[s3]` one (`s3.<name>`, `PRIVATE_STORAGE_S3_<NAME>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    /// A top-level setting.
    Key(Key),
    /// An S3 setting of the `[s3]` table.
    S3(S3Setting),
}

impl Setting {
    /// Whether the value is a secret, never printed.
    pub fn is_secret(self) -> bool {
        match self {
            Setting::Key(key) => matches!(key, Key::ShareKeys | Key::OidcClientSecret | Key::EncryptionKeys),
            Setting::S3(s3) => s3.is_secret(),
        }
    }

    /// The setting of a name (`bind`, `s3.bucket`); an unknown name is an error listing the known ones.
    fn parse(name: &str) -> Result<Self, String> {
        if let Some(s3) = name.strip_prefix("s3.") {
            let known: Vec<&str> = S3Setting::ALL.iter().map(|s| s.as_str()).collect();
            return s3.parse().map(Setting::S3).map_err(|_| format!("known S3 settings: {}", known.join(", ")));
        }
        Key::ALL.iter().find(|k| k.as_str() == name).map(|k| Setting::Key(*k)).ok_or_else(|| {
            format!("known keys: {}", Key::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "))
        })
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Key(key) => f.write_str(key.as_str()),
            Setting::S3(s3) => write!(f, "s3.{s3}"),
        }
    }
}

/// Which access rule guards `/private-media/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleName {
    /// Any logged-in user.
    Authenticated,
    /// Staff.
    Staff,
    /// Superusers (the default, as in the reference).
    Superuser,
}

/// How downloads are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryName {
    /// Through the app.
    Stream,
    /// nginx `X-Accel-Redirect` (local storage: alias; S3: proxied presigned URL).
    Nginx,
    /// Apache `X-Sendfile`.
    Apache,
    /// `307` to a presigned S3 URL.
    S3Redirect,
}

/// What a denied download gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedName {
    /// `403`.
    Forbidden,
    /// `404`.
    NotFound,
    /// Anonymous visitors go to `/login`; others get `403`.
    Login,
}

/// Where the files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A local folder.
    Local(PathBuf),
    /// An S3 bucket and prefix (`s3://…`) with the `[s3]` settings.
    S3 {
        /// The `s3://bucket/prefix` URL.
        url: String,
        /// The `[s3]` settings.
        settings: BTreeMap<S3Setting, String>,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub database_url: String,
    pub storage: StorageConfig,
    pub auth_function: RuleName,
    pub max_file_size: u64,
    pub content_types: Vec<String>,
    pub delivery: DeliveryName,
    pub internal_url: String,
    pub on_denied: DeniedName,
    pub public_url: Option<String>,
    pub share_keys: Option<String>,
    /// Whether files are encrypted at rest.
    pub encryption: bool,
    /// The key-encryption keys, newest first (`encryption_keys` or `encryption_keys_file`).
    pub encryption_keys: Option<private_storage::Keyring>,
    pub share_max_lifetime: Duration,
    /// A new link's lifetime when none is asked for.
    pub share_default_lifetime: Duration,
    /// Whether every new link needs a password.
    pub share_require_password: bool,
    /// Downloads a new link allows when none is asked for.
    pub share_default_max_downloads: Option<u64>,
    pub session_ttl: Duration,
    pub audit_retention: Duration,
    /// How long an unfinished resumable upload is kept after its last request.
    pub upload_expiry: Duration,
    /// Bytes per request of the upload page's resumable uploads.
    pub upload_chunk_size: u64,
    /// Memory for the bytes of small files served from memory (0: none).
    pub file_cache: u64,
    /// Single sign-on with an OpenID provider, if configured.
    pub sso: Option<crate::sso::SsoConfig>,
    /// Whether local passwords log in.
    pub password_login: bool,
    pub log_json: bool,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_uploads_per_user: usize,
    /// Every user's byte quota, unless overridden (`None`: none).
    pub quota_bytes: Option<u64>,
    /// Every user's file quota, unless overridden (`None`: none).
    pub quota_files: Option<u64>,
    pub max_connections: usize,
    /// Virus scanning, when on.
    pub scan: Option<ScanConfig>,
    /// The `[[webhook]]` entries.
    pub webhooks: Vec<WebhookConfig>,
    /// The first wait before a failed delivery is retried.
    pub webhook_backoff: Duration,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Every effective raw value and where it came from, for `config check`.
    pub sources: BTreeMap<Setting, (String, Source)>,
}

/// Virus scanning by clamd.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// Where clamd listens.
    pub address: private_storage::scan::ClamdAddress,
    /// The largest file clamd scans (its `StreamMaxLength`).
    pub max_size: u64,
    /// Whether a larger file is refused at upload (`false`: kept and served as not scanned).
    pub reject_oversize: bool,
    /// Whether an infected file's bytes are deleted (`false`: kept out of reach).
    pub delete_infected: bool,
    /// How long one read or write to clamd may take.
    pub timeout: Duration,
}

/// An event a webhook may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    /// A file is stored durably and may be fetched (with scanning: it was found clean).
    FileCreated,
    /// A file was deleted.
    FileDeleted,
    /// A scan found a file infected.
    ScanInfected,
    /// A share link served its file.
    LinkUsed,
    /// A share link reached its download limit.
    LinkLimitReached,
    /// An upload was refused for the user's quota.
    QuotaExceeded,
}

impl WebhookEvent {
    /// Every event.
    pub const ALL: [WebhookEvent; 6] = [
        WebhookEvent::FileCreated,
        WebhookEvent::FileDeleted,
        WebhookEvent::ScanInfected,
        WebhookEvent::LinkUsed,
        WebhookEvent::LinkLimitReached,
        WebhookEvent::QuotaExceeded,
    ];

    /// Its name (`file.created`).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::FileCreated => "file.created",
            WebhookEvent::FileDeleted => "file.deleted",
            WebhookEvent::ScanInfected => "scan.infected",
            WebhookEvent::LinkUsed => "link.used",
            WebhookEvent::LinkLimitReached => "link.limit_reached",
            WebhookEvent::QuotaExceeded => "quota.exceeded",
        }
    }
}

/// A `[[webhook]]` entry.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where deliveries are posted.
    pub url: String,
    /// The signing key (after `whsec_`, base64-decoded).
    pub secret: Vec<u8>,
    /// The events it gets.
    pub events: Vec<WebhookEvent>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig").field("url", &self.url).field("events", &self.events).finish_non_exhaustive()
    }
}

/// A `[[webhook]]` table: `url`, `secret` (16 bytes or more; `whsec_<base64>` as the
/// Standard Webhooks specification writes them, or any text), `events` (names, or `"*"`).
fn webhook(table: &toml::Table, n: usize, source: &Source) -> Result<WebhookConfig, ConfigError> {
    let named = |message: String| err(format!("`webhook` #{n} ({source}): {message}"));
    for key in table.keys() {
        if !["url", "secret", "events"].contains(&key.as_str()) {
            return Err(named(format!("unknown key `{key}`; known keys: url, secret, events")));
        }
    }
    let url = table.get("url").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(&url).is_err() {
        return Err(named(format!("url {url:?}: expected http://… or https://…")));
    }
    let secret = table.get("secret").and_then(|v| v.as_str()).unwrap_or_default();
    let secret = match secret.strip_prefix("whsec_") {
        Some(encoded) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| named("secret: whsec_ is followed by base64".into()))?
        }
        None => secret.as_bytes().to_vec(),
    };
    if secret.len() < 16 {
        return Err(named("secret: at least 16 bytes".into()));
    }
    let names: Vec<&str> = match table.get("events") {
        Some(toml::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        Some(toml::Value::String(one)) => one.split(',').map(str::trim).collect(),
        _ => Vec::new(),
    };
    let mut events = Vec::new();
    for name in names {
        if name == "*" {
            events.extend(WebhookEvent::ALL);
            continue;
        }
        let known = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ");
        events.push(
            WebhookEvent::ALL
                .into_iter()
                .find(|e| e.as_str() == name)
                .ok_or_else(|| named(format!("unknown event {name:?}; known events: {known}, or \"*\"")))?,
        );
    }
    if events.is_empty() {
        return Err(named("events: name at least one (or \"*\")".into()));
    }
    Ok(WebhookConfig { url, secret, events })
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The TOML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag => f.write_str("flag"),
        }
    }
}

/// A configuration that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn err(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// Gathers raw values layer by layer.
#[derive(Debug, Default)]
pub struct Loader {
    values: BTreeMap<Setting, (String, Source)>,
    webhooks: Vec<(toml::Table, Source)>,
}

impl Loader {
    /// Starts from the defaults.
    pub fn new() -> Self {
        let mut loader = Self::default();
        for key in Key::ALL {
            if let Some(value) = key.default_value() {
                loader.values.insert(Setting::Key(*key), (value.to_owned(), Source::Default));
            }
        }
        loader
    }

    fn set(&mut self, name: &str, value: String, source: Source) -> Result<(), ConfigError> {
        let setting =
            Setting::parse(name).map_err(|hint| err(format!("unknown setting `{name}` ({source}); {hint}")))?;
        self.values.insert(setting, (value, source));
        Ok(())
    }

    /// Reads a TOML file: top-level keys plus an `[s3]` table.
    pub fn file(mut self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        for (key, value) in table {
            match (key.as_str(), value) {
                ("s3", toml::Value::Table(s3)) => {
                    for (name, value) in s3 {
                        self.set(&format!("s3.{name}"), scalar(&value), Source::File(path.to_owned()))?;
                    }
                }
                ("webhook", toml::Value::Array(items)) => {
                    for item in items {
                        let toml::Value::Table(table) = item else {
                            return Err(err(format!("{}: write each webhook as a [[webhook]] table", path.display())));
                        };
                        self.webhooks.push((table, Source::File(path.to_owned())));
                    }
                }
                (_, value) => self.set(&key, scalar(&value), Source::File(path.to_owned()))?,
            }
        }
        Ok(self)
    }

    /// Reads every `PRIVATE_STORAGE_*` variable of `vars`.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut vars: Vec<_> = vars.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        vars.sort();
        for (var, value) in vars {
            let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
            let key = match name.strip_prefix("s3_") {
                Some(s3) => format!("s3.{s3}"),
                None => name,
            };
            self.set(&key, value, Source::Env(var.clone()))?;
        }
        Ok(self)
    }

    /// Applies `key=value` flags.
    pub fn flags(mut self, flags: &[(String, String)]) -> Result<Self, ConfigError> {
        for (key, value) in flags {
            self.set(key, value.clone(), Source::Flag)?;
        }
        Ok(self)
    }

    /// Validates everything and derives the defaults that depend on `data_dir`.
    pub fn build(self) -> Result<Config, ConfigError> {
        let v = &self.values;
        let get = |key: Key| v.get(&Setting::Key(key)).map(|(value, _)| value.as_str());
        let named = |key: Key, message: String| {
            let source = v.get(&Setting::Key(key)).map(|(_, s)| s.to_string()).unwrap_or_else(|| "default".into());
            err(format!("`{}` ({source}): {message}", key.as_str()))
        };
        let data_dir = PathBuf::from(get(Key::DataDir).unwrap_or_default());
        if data_dir.as_os_str().is_empty() {
            return Err(named(Key::DataDir, "must not be empty".into()));
        }
        let bind: SocketAddr = get(Key::Bind)
            .unwrap_or_default()
            .parse()
            .map_err(|e| named(Key::Bind, format!("not an address such as 127.0.0.1:8000 ({e})")))?;
        let database_url = match get(Key::DatabaseUrl) {
            Some(url)
                if url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://") =>
            {
                url.to_owned()
            }
            Some(other) => {
                return Err(named(
                    Key::DatabaseUrl,
                    format!("{} is neither sqlite:… nor postgres://…", redact_url(other)),
                ));
            }
            None => format!("sqlite://{}?mode=rwc", data_dir.join("private-storage.db").display()),
        };
        let storage = match get(Key::Storage) {
            Some(url) if url.starts_with("s3://") => {
                let settings = v
                    .iter()
                    .filter_map(|(k, (value, _))| match k {
                        Setting::S3(s3) => Some((*s3, value.clone())),
                        Setting::Key(_) => None,
                    })
                    .collect();
                StorageConfig::S3 { url: url.to_owned(), settings }
            }
            Some(path) if path.contains("://") => {
                return Err(named(Key::Storage, format!("{path:?}: expected a folder or s3://bucket/prefix")));
            }
            Some(path) => StorageConfig::Local(PathBuf::from(path)),
            None => StorageConfig::Local(data_dir.join("media")),
        };
        if matches!(storage, StorageConfig::Local(_)) && v.keys().any(|k| matches!(k, Setting::S3(_))) {
            return Err(named(Key::Storage, "[s3] settings are given but storage is not s3://bucket/prefix".into()));
        }
        let auth_function = match get(Key::AuthFunction).unwrap_or_default() {
            "allow_authenticated" => RuleName::Authenticated,
            "allow_staff" => RuleName::Staff,
            "allow_superuser" => RuleName::Superuser,
            other => {
                return Err(named(
                    Key::AuthFunction,
                    format!("{other:?}: expected allow_authenticated, allow_staff or allow_superuser"),
                ));
            }
        };
        let max_file_size = parse_size(get(Key::MaxFileSize).unwrap_or_default())
            .ok_or_else(|| named(Key::MaxFileSize, "expected bytes or a size such as 10MB or 1GiB".into()))?;
        let file_cache = parse_size(get(Key::FileCache).unwrap_or_default())
            .ok_or_else(|| named(Key::FileCache, "expected a size such as 64MiB, or 0".into()))?;
        let upload_chunk_size = parse_size(get(Key::UploadChunkSize).unwrap_or_default())
            .filter(|&n| n > 0)
            .ok_or_else(|| named(Key::UploadChunkSize, "expected a size such as 512KiB or 8MiB".into()))?;
        let content_types: Vec<String> = get(Key::ContentTypes)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        for t in &content_types {
            if !t.contains('/') {
                return Err(named(
                    Key::ContentTypes,
                    format!("{t:?} is not a media type such as image/png or image/*"),
                ));
            }
        }
        let delivery = match get(Key::Delivery).unwrap_or_default() {
            "stream" => DeliveryName::Stream,
            "nginx" => DeliveryName::Nginx,
            "apache" => DeliveryName::Apache,
            "s3-redirect" => DeliveryName::S3Redirect,
            other => {
                return Err(named(Key::Delivery, format!("{other:?}: expected stream, nginx, apache or s3-redirect")));
            }
        };
        match (&storage, delivery) {
            (StorageConfig::S3 { .. }, DeliveryName::Apache) => {
                return Err(named(Key::Delivery, "apache (X-Sendfile) needs local storage".into()));
            }
            (StorageConfig::Local(_), DeliveryName::S3Redirect) => {
                return Err(named(Key::Delivery, "s3-redirect needs storage = s3://bucket/prefix".into()));
            }
            _ => {}
        }
        let internal_url = get(Key::InternalUrl).unwrap_or_default().to_owned();
        private_storage::Delivery::nginx(&internal_url).map_err(|e| named(Key::InternalUrl, e.to_string()))?;
        let on_denied = match get(Key::OnDenied).unwrap_or_default() {
            "403" => DeniedName::Forbidden,
            "404" => DeniedName::NotFound,
            "login" => DeniedName::Login,
            other => return Err(named(Key::OnDenied, format!("{other:?}: expected 403, 404 or login"))),
        };
        let public_url = get(Key::PublicUrl).map(str::to_owned);
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(named(Key::PublicUrl, format!("{url:?}: expected http://… or https://…")));
        }
        let list = |key: Key| -> Vec<String> {
            get(key)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let sso = match get(Key::OidcIssuer) {
            None => None,
            Some(issuer) => {
                let required = |key: Key| {
                    get(key)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| named(key, "required with oidc_issuer".into()))
                };
                let base = public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned());
                let redirect_url = match (get(Key::OidcRedirectUrl), &base) {
                    (Some(url), _) => url.to_owned(),
                    (None, Some(base)) => format!("{base}/login/oidc/callback"),
                    (None, None) => {
                        return Err(named(Key::OidcRedirectUrl, "set it, or public_url, with oidc_issuer".into()));
                    }
                };
                let post_logout_url = match &base {
                    Some(base) => format!("{base}/login"),
                    None => redirect_url.replace("/login/oidc/callback", "/login"),
                };
                Some(crate::sso::SsoConfig {
                    issuer: issuer.to_owned(),
                    client_id: required(Key::OidcClientId)?,
                    client_secret: required(Key::OidcClientSecret)?,
                    scopes: list(Key::OidcScopes),
                    redirect_url,
                    post_logout_url,
                    username_claim: required(Key::OidcUsernameClaim)?,
                    roles_claim: required(Key::OidcStaffClaim)?,
                    staff_values: list(Key::OidcStaffValues),
                    superuser_values: list(Key::OidcSuperuserValues),
                    allowed_values: list(Key::OidcAllowedValues),
                    name: get(Key::OidcName).unwrap_or_default().to_owned(),
                })
            }
        };
        let password_login = match get(Key::PasswordLogin).unwrap_or_default() {
            "true" => true,
            "false" if sso.is_some() => false,
            "false" => return Err(named(Key::PasswordLogin, "false needs oidc_issuer: nobody could log in".into())),
            other => return Err(named(Key::PasswordLogin, format!("{other:?}: expected true or false"))),
        };
        let share_keys = get(Key::ShareKeys).map(str::to_owned);
        if let Some(keys) = &share_keys {
            private_storage::ShareKeys::parse(keys).map_err(|e| named(Key::ShareKeys, e.to_string()))?;
        }
        let encryption_keys = match (get(Key::EncryptionKeys), get(Key::EncryptionKeysFile)) {
            (Some(_), Some(_)) => {
                return Err(named(
                    Key::EncryptionKeysFile,
                    "give encryption_keys or encryption_keys_file, not both".into(),
                ));
            }
            (Some(spec), None) => {
                Some(private_storage::Keyring::parse(spec).map_err(|e| named(Key::EncryptionKeys, e.to_string()))?)
            }
            (None, Some(path)) => {
                let spec = std::fs::read_to_string(path)
                    .map_err(|e| named(Key::EncryptionKeysFile, format!("{path}: {e}")))?;
                Some(
                    private_storage::Keyring::parse(&spec)
                        .map_err(|e| named(Key::EncryptionKeysFile, e.to_string()))?,
                )
            }
            (None, None) => None,
        };
        let encryption = match get(Key::Encryption).unwrap_or_default() {
            "off" => false,
            "on" if encryption_keys.is_none() => {
                return Err(named(
                    Key::Encryption,
                    "on needs encryption_keys or encryption_keys_file (`private-storage keys generate ID` makes a key)"
                        .into(),
                ));
            }
            "on" if delivery != DeliveryName::Stream => {
                return Err(named(
                    Key::Encryption,
                    format!(
                        "on needs delivery = stream: with delivery = {} the proxy or S3 would send the stored \
                         ciphertext, and only this server can decrypt",
                        get(Key::Delivery).unwrap_or_default()
                    ),
                ));
            }
            "on" => true,
            other => return Err(named(Key::Encryption, format!("{other:?}: expected on or off"))),
        };
        let duration = |key: Key| {
            private_storage::parse_duration(get(key).unwrap_or_default())
                .ok_or_else(|| named(key, "expected a duration such as 30s, 10m, 12h or 7d".into()))
        };
        let max_uploads_per_user = get(Key::MaxUploadsPerUser)
            .unwrap_or_default()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| named(Key::MaxUploadsPerUser, "expected a positive number".into()))?;
        let max_connections = get(Key::MaxConnections)
            .unwrap_or_default()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| named(Key::MaxConnections, "expected a positive number".into()))?;
        let trusted_proxies = get(Key::TrustedProxies)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|_| named(Key::TrustedProxies, format!("{p:?} is not an IP address"))))
            .collect::<Result<Vec<std::net::IpAddr>, _>>()?;
        let quota_bytes = match get(Key::QuotaBytes).unwrap_or_default() {
            "" => None,
            size => {
                Some(parse_size(size).ok_or_else(|| named(Key::QuotaBytes, "expected a size such as 10GiB".into()))?)
            }
        };
        let quota_files = match get(Key::QuotaFiles).unwrap_or_default() {
            "" => None,
            n => Some(n.parse().map_err(|_| named(Key::QuotaFiles, "expected a number of files".into()))?),
        };
        let scan = match get(Key::Scan).unwrap_or_default() {
            "off" => None,
            "clamav" => Some(ScanConfig {
                address: get(Key::ClamdAddress)
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e: private_storage::scan::ScanError| named(Key::ClamdAddress, e.to_string()))?,
                max_size: parse_size(get(Key::ScanMaxSize).unwrap_or_default())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| named(Key::ScanMaxSize, "expected a size such as 25MiB".into()))?,
                reject_oversize: match get(Key::ScanOversize).unwrap_or_default() {
                    "reject" => true,
                    "unscanned" => false,
                    other => return Err(named(Key::ScanOversize, format!("{other:?}: expected reject or unscanned"))),
                },
                delete_infected: match get(Key::ScanInfected).unwrap_or_default() {
                    "keep" => false,
                    "delete" => true,
                    other => return Err(named(Key::ScanInfected, format!("{other:?}: expected keep or delete"))),
                },
                timeout: duration(Key::ScanTimeout)?,
            }),
            other => return Err(named(Key::Scan, format!("{other:?}: expected off or clamav"))),
        };
        let log_json = match get(Key::LogFormat).unwrap_or_default() {
            "text" => false,
            "json" => true,
            other => return Err(named(Key::LogFormat, format!("{other:?}: expected text or json"))),
        };
        Ok(Config {
            data_dir,
            bind,
            database_url,
            storage,
            auth_function,
            max_file_size,
            content_types,
            delivery,
            internal_url,
            on_denied,
            public_url,
            share_keys,
            encryption,
            encryption_keys,
            share_max_lifetime: duration(Key::ShareMaxLifetime)?,
            share_default_lifetime: duration(Key::ShareDefaultLifetime)?,
            share_require_password: match get(Key::ShareRequirePassword).unwrap_or_default() {
                "true" => true,
                "false" => false,
                other => return Err(named(Key::ShareRequirePassword, format!("{other:?}: expected true or false"))),
            },
            share_default_max_downloads: match get(Key::ShareDefaultMaxDownloads).unwrap_or_default() {
                "" => None,
                n => Some(
                    n.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| named(Key::ShareDefaultMaxDownloads, "expected a positive number".into()))?,
                ),
            },
            session_ttl: duration(Key::SessionTtl)?,
            audit_retention: duration(Key::AuditRetention)?,
            upload_expiry: duration(Key::UploadExpiry)?,
            upload_chunk_size,
            file_cache,
            sso,
            password_login,
            log_json,
            header_read_timeout: duration(Key::HeaderReadTimeout)?,
            request_timeout: duration(Key::RequestTimeout)?,
            shutdown_grace: duration(Key::ShutdownGrace)?,
            max_uploads_per_user,
            quota_bytes,
            quota_files,
            max_connections,
            scan,
            webhooks: self
                .webhooks
                .iter()
                .enumerate()
                .map(|(n, (table, source))| webhook(table, n + 1, source))
                .collect::<Result<_, _>>()?,
            webhook_backoff: duration(Key::WebhookBackoff)?,
            trusted_proxies,
            sources: self.values,
        })
    }
}

impl Config {
    /// Cookies get `Secure` when users reach the server over TLS.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
    }

    /// The effective configuration as TOML-ish lines with sources, secrets redacted.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut effective: BTreeMap<String, (Setting, String, String)> =
            self.sources.iter().map(|(k, (v, s))| (k.to_string(), (*k, v.clone(), s.to_string()))).collect();
        effective.entry("database_url".into()).or_insert_with(|| {
            (Setting::Key(Key::DatabaseUrl), self.database_url.clone(), "derived from data_dir".into())
        });
        if let StorageConfig::Local(path) = &self.storage {
            effective.entry("storage".into()).or_insert_with(|| {
                (Setting::Key(Key::Storage), path.display().to_string(), "derived from data_dir".into())
            });
        }
        for (key, (setting, value, source)) in effective {
            let shown = if setting.is_secret() {
                "<redacted>".to_owned()
            } else if setting == Setting::Key(Key::DatabaseUrl) {
                redact_url(&value)
            } else {
                value
            };
            out.push_str(&format!("{key} = {shown:?}  # {source}\n"));
        }
        for hook in &self.webhooks {
            let events: Vec<_> = hook.events.iter().map(|e| e.as_str()).collect();
            out.push_str(&format!("[[webhook]] url = {:?}, secret = \"<redacted>\", events = {events:?}\n", hook.url));
        }
        out
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:<redacted>{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn scalar(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Table(_) => String::new(),
    }
}

/// `1048576`, `10MB`, `10 MiB`, `1GiB`, `512k`.
pub fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_defaults_are_the_embedded_server() {
        let config = Loader::new().build().unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8000");
        assert_eq!(config.storage, StorageConfig::Local(PathBuf::from("./private-storage-data/media")));
        assert!(config.database_url.starts_with("sqlite://./private-storage-data/"));
        assert_eq!(config.auth_function, RuleName::Superuser);
        assert_eq!(config.file_cache, 64 << 20);
        assert_eq!(config.max_file_size, 100 << 20);
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "bind = \"127.0.0.1:1\"\nmax_file_size = \"1MB\"\ncontent_types = [\"image/*\", \"application/pdf\"]\ndelivery = \"nginx\"\n").unwrap();
        let config = Loader::new()
            .file(&file)
            .unwrap()
            .env(env(&[
                ("PRIVATE_STORAGE_BIND", "127.0.0.1:2"),
                ("PRIVATE_STORAGE_MAX_FILE_SIZE", "2MiB"),
                ("OTHER", "x"),
            ]))
            .unwrap()
            .flags(&[("bind".into(), "127.0.0.1:3".into())])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(config.bind.port(), 3);
        assert_eq!(config.max_file_size, 2 << 20);
        assert_eq!(config.content_types, ["image/*", "application/pdf"]);
        assert_eq!(config.delivery, DeliveryName::Nginx);
        assert!(matches!(&config.sources[&Setting::Key(Key::Bind)].1, Source::Flag));
    }

    #[test]
    fn unknown_or_bad_settings_are_refused_with_their_name_and_source() {
        let e = Loader::new().env(env(&[("PRIVATE_STORAGE_BINDD", "x")])).unwrap_err();
        assert!(e.0.contains("`bindd`") && e.0.contains("PRIVATE_STORAGE_BINDD"), "{e}");
        let e = Loader::new().env(env(&[("PRIVATE_STORAGE_S3_BUKET", "x")])).unwrap_err();
        assert!(e.0.contains("s3.buket"), "{e}");
        for (key, value, expect) in [
            ("max_file_size", "ten", "max_file_size"),
            ("file_cache", "lots", "file_cache"),
            ("auth_function", "allow_everyone", "auth_function"),
            ("delivery", "s3-redirect", "delivery"),
            ("on_denied", "401", "on_denied"),
            ("internal_url", "relative", "internal_url"),
            ("database_url", "mysql://u:pw@h/db", "database_url"),
            ("content_types", "pdf", "content_types"),
            ("trusted_proxies", "127.0.0.1, nginx", "trusted_proxies"),
        ] {
            let e = Loader::new().flags(&[(key.into(), value.into())]).unwrap().build().unwrap_err();
            assert!(e.0.contains(expect), "{key}: {e}");
            assert!(!e.0.contains("pw@"), "secrets stay out of messages: {e}");
        }
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let config = Loader::new()
            .flags(&[
                ("database_url".into(), "postgres://ps:hunter2@db/ps".into()),
                ("storage".into(), "s3://media/files".into()),
                ("s3.secret_access_key".into(), "topsecret".into()),
                ("share_keys".into(), format!("k1={}", "A".repeat(43))),
                ("public_url".into(), "https://files.example".into()),
                ("oidc_issuer".into(), "https://id.example/realms/staff".into()),
                ("oidc_client_id".into(), "files".into()),
                ("oidc_client_secret".into(), "oidc-shh".into()),
            ])
            .unwrap()
            .build()
            .unwrap();
        let text = config.describe();
        assert!(!text.contains("hunter2") && !text.contains("topsecret") && !text.contains("AAAA"), "{text}");
        assert!(!text.contains("oidc-shh") && text.contains("oidc_issuer"), "{text}");
        let sso = config.sso.expect("single sign-on configured");
        assert_eq!(sso.redirect_url, "https://files.example/login/oidc/callback", "derived from public_url");
        assert!(text.contains("postgres://ps:<redacted>@db/ps"), "{text}");
    }

    #[test]
    fn single_sign_on_settings_are_checked_at_start() {
        let build = |pairs: &[(&str, &str)]| {
            let flags: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            Loader::new().flags(&flags).and_then(Loader::build).map_err(|e| e.0)
        };
        let issuer = ("oidc_issuer", "https://id.example");
        assert!(build(&[issuer]).unwrap_err().contains("oidc_redirect_url"), "a redirect URL is needed");
        let url = ("public_url", "https://files.example");
        assert!(build(&[issuer, url]).unwrap_err().contains("oidc_client_id"));
        assert!(build(&[("password_login", "false")]).unwrap_err().contains("nobody could log in"));
        assert!(build(&[("password_login", "maybe")]).unwrap_err().contains("expected true or false"));
        let ok =
            build(&[issuer, url, ("oidc_client_id", "c"), ("oidc_client_secret", "s"), ("password_login", "false")]);
        assert!(!ok.unwrap().password_login);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("1 TB"), None);
    }
}
