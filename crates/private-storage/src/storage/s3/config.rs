//! Building an [`S3Storage`]: typed setters, named string settings (from a file, the
//! environment or a URL), validated once at construction.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};

use super::S3Storage;
use crate::{Error, Result};

/// The presigned-URL lifetime unless configured otherwise.
pub const DEFAULT_PRESIGN_EXPIRY: Duration = Duration::from_secs(60);

/// The longest presigned URL S3 accepts (SigV4: seven days).
const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Server-side encryption for the objects an [`S3Storage`] writes.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encryption {
    /// No encryption header (the bucket's default applies).
    None,
    /// SSE-S3: the server encrypts with keys it manages (`AES256`).
    S3,
    /// SSE-KMS with this KMS key id.
    Kms {
        /// The key id or ARN.
        key_id: String,
    },
    /// SSE-C: the server encrypts with this 256-bit customer key, which is then sent with
    /// every read (ranged and proxied ones included). Presigned URLs cannot carry it, so the
    /// presigned delivery and direct uploads are refused for such a storage.
    Customer {
        /// The key.
        key: [u8; 32],
    },
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::None => f.write_str("None"),
            Encryption::S3 => f.write_str("S3"),
            Encryption::Kms { key_id } => f.debug_struct("Kms").field("key_id", key_id).finish(),
            Encryption::Customer { .. } => f.write_str("Customer { key: <redacted> }"),
        }
    }
}

/// A setting [`S3Builder::set`] accepts, by the name configuration files and the environment
/// spell it (`bucket`; in the environment the name in upper case after a prefix,
/// `PRIVATE_STORAGE_S3_BUCKET`, see [`S3Builder::from_env`]).
///
/// ```
/// use private_storage::S3Setting;
/// let key: S3Setting = "presign_expiry".parse()?;
/// assert_eq!((key, key.as_str()), (S3Setting::PresignExpiry, "presign_expiry"));
/// assert!(S3Setting::SecretAccessKey.is_secret());
/// assert!("bukcet".parse::<S3Setting>().is_err());
/// # Ok::<(), private_storage::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // each is named after the builder method of the same name
pub enum S3Setting {
    Bucket,
    Region,
    Endpoint,
    AccessKeyId,
    SecretAccessKey,
    SessionToken,
    Prefix,
    BaseUrl,
    PresignExpiry,
    CacheControl,
    StorageClass,
    Encryption,
    KmsKeyId,
    CustomerKey,
    ConditionalWrites,
    AllowHttp,
    VirtualHostedStyle,
}

impl S3Setting {
    /// Every setting, in the order of the documentation.
    pub const ALL: [S3Setting; 17] = [
        S3Setting::Bucket,
        S3Setting::Region,
        S3Setting::Endpoint,
        S3Setting::AccessKeyId,
        S3Setting::SecretAccessKey,
        S3Setting::SessionToken,
        S3Setting::Prefix,
        S3Setting::BaseUrl,
        S3Setting::PresignExpiry,
        S3Setting::CacheControl,
        S3Setting::StorageClass,
        S3Setting::Encryption,
        S3Setting::KmsKeyId,
        S3Setting::CustomerKey,
        S3Setting::ConditionalWrites,
        S3Setting::AllowHttp,
        S3Setting::VirtualHostedStyle,
    ];

    /// The setting's name.
    pub fn as_str(self) -> &'static str {
        match self {
            S3Setting::Bucket => "bucket",
            S3Setting::Region => "region",
            S3Setting::Endpoint => "endpoint",
            S3Setting::AccessKeyId => "access_key_id",
            S3Setting::SecretAccessKey => "secret_access_key",
            S3Setting::SessionToken => "session_token",
            S3Setting::Prefix => "prefix",
            S3Setting::BaseUrl => "base_url",
            S3Setting::PresignExpiry => "presign_expiry",
            S3Setting::CacheControl => "cache_control",
            S3Setting::StorageClass => "storage_class",
            S3Setting::Encryption => "encryption",
            S3Setting::KmsKeyId => "kms_key_id",
            S3Setting::CustomerKey => "customer_key",
            S3Setting::ConditionalWrites => "conditional_writes",
            S3Setting::AllowHttp => "allow_http",
            S3Setting::VirtualHostedStyle => "virtual_hosted_style",
        }
    }

    /// Whether the value is a secret, never to be printed.
    pub fn is_secret(self) -> bool {
        matches!(self, S3Setting::SecretAccessKey | S3Setting::SessionToken | S3Setting::CustomerKey)
    }
}

impl fmt::Display for S3Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for S3Setting {
    type Err = Error;

    /// # Errors
    /// [`Error::Config`] naming the unknown setting and listing the known ones.
    fn from_str(name: &str) -> Result<Self> {
        S3Setting::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            let known: Vec<&str> = S3Setting::ALL.iter().map(|s| s.as_str()).collect();
            Error::config("s3", format!("unknown S3 setting `{name}` (known: {})", known.join(", ")))
        })
    }
}

/// Builds an [`S3Storage`]; see [`S3Storage::builder`].
///
/// ```
/// use private_storage::S3Storage;
///
/// let storage = S3Storage::builder()
///     .bucket("media")
///     .endpoint("http://127.0.0.1:3900") // path-style, as MinIO, Ceph and Garage want
///     .region("garage")
///     .credentials("GK0123456789", "a-secret-of-16-chars-or-more")
///     .prefix("private")
///     .build()?;
/// assert_eq!(storage.bucket(), "media");
///
/// // The same from named settings (a configuration file), where a typo is an error.
/// let err = S3Storage::builder().set("bukcet", "media").unwrap_err();
/// assert!(err.to_string().contains("bukcet"));
/// # Ok::<(), private_storage::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct S3Builder {
    bucket: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    prefix: Option<String>,
    base_url: Option<String>,
    presign_expiry: Option<Duration>,
    cache_control: Option<String>,
    storage_class: Option<String>,
    encryption: Option<Encryption>,
    conditional_writes: Option<bool>,
    allow_http: Option<bool>,
    virtual_hosted_style: Option<bool>,
    // Kept apart from `encryption` so `encryption = kms` and `kms_key_id` may come in any order.
    kms_key_id: Option<String>,
    customer_key: Option<String>,
    encryption_name: Option<String>,
}

impl fmt::Debug for S3Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Builder")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("prefix", &self.prefix)
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

impl S3Builder {
    /// The bucket (required).
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The region (default `us-east-1`; S3-compatible servers often want their own name).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The endpoint of an S3-compatible server (`http://127.0.0.1:3900`); requests are then
    /// path-style unless [`S3Builder::virtual_hosted_style`] says otherwise. Default: AWS.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Static credentials. Without them the ambient AWS chain is used (`AWS_*` variables,
    /// web identity, container and instance metadata), as [`S3Builder::from_env`] reads it.
    pub fn credentials(mut self, access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Objects live under this folder of the bucket (the reference's `location`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The URL prefix of this storage's links (default [`DEFAULT_BASE_URL`](crate::DEFAULT_BASE_URL)).
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// How long presigned URLs live (default one minute, at most seven days).
    pub fn presign_expiry(mut self, expiry: Duration) -> Self {
        self.presign_expiry = Some(expiry);
        self
    }

    /// `Cache-Control` stored with every object written.
    pub fn cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = Some(value.into());
        self
    }

    /// Storage class of every object written (`STANDARD_IA`, ...).
    pub fn storage_class(mut self, class: impl Into<String>) -> Self {
        self.storage_class = Some(class.into());
        self
    }

    /// Server-side encryption of every object written (and, for SSE-C, read).
    pub fn encryption(mut self, encryption: Encryption) -> Self {
        self.encryption = Some(encryption);
        self
    }

    /// Whether the server honours `If-None-Match: *` on writes (AWS, R2, MinIO, Garage do),
    /// which makes create-only writes atomic. Default `true`. Without it, create-only writes
    /// check for the object first, which two concurrent writers can both pass.
    pub fn conditional_writes(mut self, enabled: bool) -> Self {
        self.conditional_writes = Some(enabled);
        self
    }

    /// Allow a plain `http://` endpoint (default: allowed only for loopback endpoints).
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = Some(allow);
        self
    }

    /// Address the bucket as a host name (`bucket.endpoint`) instead of a path.
    pub fn virtual_hosted_style(mut self, enabled: bool) -> Self {
        self.virtual_hosted_style = Some(enabled);
        self
    }

    /// Sets one setting by its name (an [`S3Setting`]), as configuration files and the
    /// environment spell it. Durations are seconds or take a unit (`90s`, `5m`, `1h`); booleans
    /// are `true`/`false`; `encryption` is `none`, `s3`, `kms` (with `kms_key_id`) or `customer`
    /// (with `customer_key`, 32 bytes in base64).
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown name or a value that does not parse, naming it.
    pub fn set(self, name: &str, value: &str) -> Result<Self> {
        self.with(name.parse()?, value)
    }

    /// Sets one setting (see [`S3Builder::set`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a value that does not parse, naming the setting.
    pub fn with(mut self, setting: S3Setting, value: &str) -> Result<Self> {
        let value = value.trim().to_owned();
        match setting {
            S3Setting::Bucket => self.bucket = Some(value),
            S3Setting::Region => self.region = Some(value),
            S3Setting::Endpoint => self.endpoint = Some(value),
            S3Setting::AccessKeyId => self.access_key_id = Some(value),
            S3Setting::SecretAccessKey => self.secret_access_key = Some(value),
            S3Setting::SessionToken => self.session_token = Some(value),
            S3Setting::Prefix => self.prefix = Some(value),
            S3Setting::BaseUrl => self.base_url = Some(value),
            S3Setting::PresignExpiry => {
                self.presign_expiry = Some(
                    crate::parse_duration(&value)
                        .ok_or_else(|| bad("presign_expiry", &value, "a duration such as 60s, 5m or 1h"))?,
                )
            }
            S3Setting::CacheControl => self.cache_control = Some(value),
            S3Setting::StorageClass => self.storage_class = Some(value),
            S3Setting::Encryption => self.encryption_name = Some(value),
            S3Setting::KmsKeyId => self.kms_key_id = Some(value),
            S3Setting::CustomerKey => self.customer_key = Some(value),
            S3Setting::ConditionalWrites => self.conditional_writes = Some(parse_bool("conditional_writes", &value)?),
            S3Setting::AllowHttp => self.allow_http = Some(parse_bool("allow_http", &value)?),
            S3Setting::VirtualHostedStyle => {
                self.virtual_hosted_style = Some(parse_bool("virtual_hosted_style", &value)?)
            }
        }
        Ok(self)
    }

    /// Settings from an `s3://bucket/prefix` URL, as the server's `storage` setting spells it.
    ///
    /// # Errors
    /// [`Error::Config`] unless the URL is `s3://` with a bucket.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::config("storage", format!("{url:?} is not an s3://bucket/prefix URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::config("storage", format!("{url:?} names no bucket (expected s3://bucket/prefix)")));
        }
        let mut builder = Self::default().bucket(bucket);
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            builder = builder.prefix(prefix);
        }
        Ok(builder)
    }

    /// Every setting found in the environment as `<env_prefix><NAME>` (`PRIVATE_STORAGE_S3_BUCKET`),
    /// over what the builder already holds. A variable with the prefix and an unknown name is an
    /// error, so a typo does not go unnoticed. Credentials not set here come from the ambient
    /// AWS chain at build time.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable.
    pub fn from_env(mut self, env_prefix: &str) -> Result<Self> {
        let mut vars: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(env_prefix)).collect();
        vars.sort();
        for (var, value) in vars {
            let name = var[env_prefix.len()..].to_ascii_lowercase();
            self = self.set(&name, &value).map_err(|e| match e {
                Error::Config { message, .. } => Error::config("environment", format!("{var}: {message}")),
                other => other,
            })?;
        }
        Ok(self)
    }

    /// Validates the settings and builds the storage. No request is made; use
    /// [`S3Storage::check`] to see that the bucket is reachable.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting that is missing or wrong.
    pub fn build(self) -> Result<S3Storage> {
        let bucket = self
            .bucket
            .clone()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::config("bucket", "an S3 storage needs a bucket"))?;
        if !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'))
            || bucket.len() < 3
            || bucket.len() > 63
        {
            return Err(Error::config(
                "bucket",
                format!("{bucket:?} is not a valid bucket name (3–63 lower-case letters, digits, `-`, `.`)"),
            ));
        }
        let prefix = match self.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(
                crate::ObjectKey::new(p)
                    .map_err(|e| Error::config("prefix", format!("{p:?} is not a valid folder: {e}")))?,
            ),
        };
        let presign_expiry = self.presign_expiry.unwrap_or(DEFAULT_PRESIGN_EXPIRY);
        if presign_expiry.is_zero() || presign_expiry > MAX_PRESIGN_EXPIRY {
            return Err(Error::config("presign_expiry", "must lie between one second and seven days"));
        }
        let encryption = self.resolve_encryption()?;
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(Error::config("secret_access_key", "access_key_id and secret_access_key go together"));
        }
        for (name, value) in [("cache_control", &self.cache_control), ("storage_class", &self.storage_class)] {
            if value.as_deref().is_some_and(|v| http::HeaderValue::from_str(v).is_err()) {
                return Err(Error::config(name, "must be visible ASCII (it is sent as a header)"));
            }
        }

        let region = self
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        // No overall request timeout (object_store's default of 30 s would cut a long download
        // to a slow client: the body is read as fast as the client takes it); a connect timeout
        // and a bounded retry instead, so an unreachable server is reported in seconds.
        let client =
            object_store::ClientOptions::new().with_timeout_disabled().with_connect_timeout(Duration::from_secs(5));
        let retry =
            object_store::RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..Default::default() };
        let mut os = AmazonS3Builder::from_env()
            .with_client_options(client)
            .with_retry(retry)
            .with_bucket_name(&bucket)
            .with_region(&region);
        let mut allow_http = self.allow_http;
        if let Some(endpoint) = &self.endpoint {
            let parsed = url::Url::parse(endpoint)
                .map_err(|e| Error::config("endpoint", format!("{endpoint:?} is not a URL: {e}")))?;
            match parsed.scheme() {
                "https" => {}
                "http" => {
                    let loopback = matches!(parsed.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                        || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
                        || parsed.host_str() == Some("localhost");
                    if !allow_http.unwrap_or(loopback) {
                        return Err(Error::config(
                            "allow_http",
                            format!(
                                "{endpoint} is plain http: set allow_http = true to send credentials and files unencrypted"
                            ),
                        ));
                    }
                    allow_http = Some(true);
                }
                other => {
                    return Err(Error::config(
                        "endpoint",
                        format!("{endpoint:?}: scheme {other:?} is not http or https"),
                    ));
                }
            }
            os = os
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_virtual_hosted_style_request(self.virtual_hosted_style.unwrap_or(false));
        } else if let Some(v) = self.virtual_hosted_style {
            os = os.with_virtual_hosted_style_request(v);
        }
        os = os.with_allow_http(allow_http.unwrap_or(false));
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            // Static keys are the whole credential: no session token from the environment, and
            // none at all unless one is set — an empty `X-Amz-Security-Token` would otherwise be
            // signed into every request and presigned URL, which AWS documents only for
            // temporary credentials.
            let credential = object_store::aws::AwsCredential {
                key_id: id.clone(),
                secret_key: secret.clone(),
                token: self.session_token.clone().filter(|t| !t.is_empty()),
            };
            os = os.with_credentials(std::sync::Arc::new(object_store::StaticCredentialProvider::new(credential)));
        }
        let conditional_writes = self.conditional_writes.unwrap_or(true);
        os = if conditional_writes {
            os.with_conditional_put(S3ConditionalPut::ETagMatch).with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        } else {
            os.with_conditional_put(S3ConditionalPut::Disabled)
        };
        os = match &encryption {
            Encryption::None => os,
            Encryption::S3 => {
                os.with_config("aws_server_side_encryption".parse().expect("a known object_store key"), "AES256")
            }
            Encryption::Kms { key_id } => os.with_sse_kms_encryption(key_id),
            Encryption::Customer { key } => {
                os.with_ssec_encryption(base64::engine::general_purpose::STANDARD.encode(key))
            }
        };
        super::install_tls_provider();
        let store = os.build().map_err(|e| Error::config("s3", e.to_string()))?;
        // A child module of `s3`, so the storage's private fields are in reach.
        Ok(S3Storage {
            store: std::sync::Arc::new(store),
            bucket,
            prefix,
            base_url: crate::storage::normalise_base_url(
                self.base_url.unwrap_or_else(|| crate::DEFAULT_BASE_URL.to_owned()),
            ),
            presign_expiry,
            cache_control: self.cache_control,
            storage_class: self.storage_class,
            encryption,
            conditional_writes,
            endpoint: self.endpoint.map(|e| e.trim_end_matches('/').to_owned()),
            region,
            virtual_hosted: self.virtual_hosted_style.unwrap_or(false),
        })
    }

    fn resolve_encryption(&self) -> Result<Encryption> {
        let named = match self.encryption_name.as_deref() {
            None => None,
            Some("none" | "") => Some(Encryption::None),
            Some("s3" | "AES256" | "sse-s3") => Some(Encryption::S3),
            Some("kms" | "aws:kms" | "sse-kms") => {
                let key_id = self
                    .kms_key_id
                    .clone()
                    .ok_or_else(|| Error::config("kms_key_id", "encryption = kms needs kms_key_id"))?;
                Some(Encryption::Kms { key_id })
            }
            Some("customer" | "sse-c") => {
                let encoded = self.customer_key.as_deref().ok_or_else(|| {
                    Error::config("customer_key", "encryption = customer needs customer_key (32 bytes, base64)")
                })?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| Error::config("customer_key", "must be 32 bytes in base64"))?;
                Some(Encryption::Customer { key: bytes })
            }
            Some(other) => return Err(bad("encryption", other, "none, s3, kms or customer")),
        };
        if named.is_none() && (self.kms_key_id.is_some() || self.customer_key.is_some()) {
            return Err(Error::config(
                "encryption",
                "kms_key_id / customer_key given without encryption = kms / customer",
            ));
        }
        Ok(named.or_else(|| self.encryption.clone()).unwrap_or(Encryption::None))
    }
}

fn bad(setting: &'static str, value: &str, expected: &str) -> Error {
    Error::config(setting, format!("{value:?} is not valid: expected {expected}"))
}

fn parse_bool(setting: &'static str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(bad(setting, other, "true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::hex;

    fn base() -> S3Builder {
        S3Storage::builder().bucket("media").endpoint("http://127.0.0.1:9").credentials("ak", "sk")
    }

    /// The SigV4 signature a presigned `GET` URL should carry, computed from the URL itself as
    /// the AWS documentation describes ("Authenticating Requests: Using Query Parameters"):
    /// canonical request (method, path, sorted query without the signature, the `host` header,
    /// `UNSIGNED-PAYLOAD`), string to sign, signing key of the day.
    fn documented_signature(url: &str, secret: &str) -> String {
        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
        use sha2::Digest;
        const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
        let rest = url.split_once("://").unwrap().1;
        let (authority, path_query) = rest.split_at(rest.find('/').unwrap());
        let (path, query) = path_query.split_once('?').unwrap();
        let mut params: Vec<(String, String)> = query
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| percent_decode_str(s).decode_utf8().unwrap().into_owned();
                (decode(name), decode(value))
            })
            .filter(|(name, _)| name != "X-Amz-Signature")
            .collect();
        params.sort();
        let encode = |s: &str| utf8_percent_encode(s, UNRESERVED).to_string();
        let canonical_query: Vec<String> = params.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect();
        let canonical =
            format!("GET\n{path}\n{}\nhost:{authority}\n\nhost\nUNSIGNED-PAYLOAD", canonical_query.join("&"));
        let param = |name: &str| params.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let (date, scope) = (param("X-Amz-Date"), param("X-Amz-Credential"));
        let scope = scope.split_once('/').unwrap().1;
        let region = scope.split('/').nth(1).unwrap();
        let to_sign = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex(&sha2::Sha256::digest(canonical)));
        hex(&super::super::post::sign(secret, &date[..8], region, to_sign.as_bytes()))
    }

    const AWS_EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn the_signature_check_reproduces_the_aws_documentation_example() {
        let url = "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
                   &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
                   &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        assert_eq!(
            documented_signature(url, AWS_EXAMPLE_SECRET),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[tokio::test]
    async fn presigned_urls_with_static_keys_are_signed_as_aws_documents_with_its_parameters_only() {
        use crate::Storage;
        let storage = S3Storage::builder()
            .bucket("examplebucket")
            .region("us-east-1")
            .endpoint("https://s3.amazonaws.com")
            .credentials("AKIAIOSFODNN7EXAMPLE", AWS_EXAMPLE_SECRET)
            .build()
            .unwrap();
        let key = crate::ObjectKey::new("test.txt").unwrap();
        let url = storage.presigned_get(&key, &Default::default()).await.unwrap().unwrap();
        let mut names: Vec<&str> =
            url.split_once('?').unwrap().1.split('&').map(|p| p.split_once('=').unwrap().0).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-Signature",
                "X-Amz-SignedHeaders"
            ],
            "the documented parameters, no X-Amz-Security-Token: {url}"
        );
        let signature = url.rsplit_once("X-Amz-Signature=").unwrap().1.split('&').next().unwrap();
        assert_eq!(documented_signature(&url, AWS_EXAMPLE_SECRET), signature, "{url}");
    }

    #[tokio::test]
    async fn presigned_urls_carry_a_security_token_only_when_one_is_set() {
        use crate::Storage;
        let url = |builder: S3Builder| async move {
            let key = crate::ObjectKey::new("a.txt").unwrap();
            builder.build().unwrap().presigned_get(&key, &Default::default()).await.unwrap().unwrap()
        };
        let plain = url(base()).await;
        assert!(plain.contains("X-Amz-Credential=ak%2F") && !plain.contains("Security-Token"), "{plain}");
        let temporary = url(base().set("session_token", "tok").unwrap()).await;
        assert!(temporary.contains("X-Amz-Security-Token=tok"), "{temporary}");
    }

    #[test]
    fn every_documented_setting_is_accepted_and_a_typo_is_named() {
        for setting in S3Setting::ALL {
            let value = match setting {
                S3Setting::PresignExpiry => "5m",
                S3Setting::ConditionalWrites | S3Setting::AllowHttp | S3Setting::VirtualHostedStyle => "true",
                _ => "x",
            };
            assert_eq!(setting.as_str().parse::<S3Setting>().unwrap(), setting, "names round-trip");
            assert!(S3Storage::builder().set(setting.as_str(), value).is_ok(), "{setting}");
        }
        let err = S3Storage::builder().set("secret_key", "x").unwrap_err();
        assert!(err.to_string().contains("`secret_key`"), "{err}");
    }

    #[test]
    fn invalid_configurations_are_refused_naming_the_setting() {
        let cases: Vec<(S3Builder, &str)> = vec![
            (S3Storage::builder(), "bucket"),
            (base().bucket("Bad_Bucket!"), "bucket"),
            (base().prefix("a/../b"), "prefix"),
            (base().presign_expiry(Duration::from_secs(8 * 86_400)), "presign_expiry"),
            (base().endpoint("http://files.example.com"), "allow_http"),
            (base().endpoint("ftp://127.0.0.1"), "endpoint"),
            (base().set("encryption", "kms").unwrap(), "kms_key_id"),
            (base().set("encryption", "customer").unwrap().set("customer_key", "c2hvcnQ=").unwrap(), "customer_key"),
            (base().set("encryption", "rot13").unwrap(), "encryption"),
            (base().set("kms_key_id", "k").unwrap(), "encryption"),
            (base().cache_control("a\nb"), "cache_control"),
        ];
        for (builder, setting) in cases {
            match builder.build() {
                Err(Error::Config { setting: named, .. }) => assert_eq!(named, setting),
                other => panic!("expected a config error for {setting}, got {other:?}"),
            }
        }
    }

    #[test]
    fn urls_parse() {
        let b = S3Builder::from_url("s3://media/private/files/").unwrap();
        assert_eq!((b.bucket.as_deref(), b.prefix.as_deref()), (Some("media"), Some("private/files")));
        assert!(S3Builder::from_url("s3:///x").is_err());
        assert!(S3Builder::from_url("/srv/files").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let b = base()
            .set("encryption", "customer")
            .unwrap()
            .set("customer_key", &base64::engine::general_purpose::STANDARD.encode([9u8; 32]))
            .unwrap();
        let shown = format!("{b:?} {:?}", b.clone().build().unwrap());
        assert!(!shown.contains("\"sk\"") && !shown.contains("CQkJ"), "{shown}");
    }
}
