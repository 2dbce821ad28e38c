//! The file-serving service: one pipeline for every delivery mode.
//!
//! A request flows top to bottom through [`ServePrivate::serve_file`]:
//! key (validated once) → [`PrivateFile`] → access rule → method → metadata (one `head`) →
//! [plan](conditional::plan) (preconditions and ranges, no I/O) →
//! [headers](headers::representation_headers) (computed once) → [delivery](delivery::deliver).

mod body;
mod conditional;
mod delivery;
mod disposition;
mod headers;
mod hold;
mod range;
mod records;
mod sendfile;
mod shared;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

pub use body::ResponseBody;
pub use delivery::{
    DeliverFile, Delivery, Prepared, X_ACCEL_REDIRECT, X_SENDFILE, nginx_internal_location, nginx_s3_location,
};
pub use disposition::ContentDisposition;
pub use hold::{FileHold, Held};
pub use records::{RecordSource, ServeRecords};
pub use sendfile::{Sendfile, SendfileStream};
pub use shared::{ServeShared, ServedLink};

use crate::access::{AccessRule, AllowSuperuser};
use crate::{CurrentUser, Error, ObjectKey, PrivateFile, Storage};
use conditional::{Plan, Validators};
pub(crate) use headers::essence;
use headers::{HeaderPolicy, NOSNIFF};

/// What a request the access rule denied is answered with. The answer never depends on
/// whether the file exists. (A path that is not a canonical key names no file and is answered
/// like a missing one, `404`, whoever asks: see [`ServePrivate::serve`].)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDenied {
    /// `403 Forbidden`. The default, as in the reference.
    Forbidden,
    /// `404 Not Found`: hides that anything is there.
    NotFound,
    /// Anonymous requests are redirected (`302`) to the login URL with the original path and
    /// query in `next`; authenticated users who are denied get `403`.
    LoginRedirect {
        /// The login page, e.g. `/login` (a `?` query is extended with `&next=`).
        login_url: String,
    },
}

impl OnDenied {
    /// Redirects anonymous requests to `login_url` (see [`OnDenied::LoginRedirect`]).
    pub fn login(login_url: impl Into<String>) -> Self {
        OnDenied::LoginRedirect { login_url: login_url.into() }
    }
}

/// A [`tower::Service`](tower_service::Service) that serves the files of one storage to the
/// requests its access rule allows, with complete HTTP semantics.
///
/// - **GET and HEAD** (HEAD: the same headers, no body, no read); any other method gets `405`
///   with `Allow` — but only after the rule allowed the request: nothing answers before the rule.
/// - **Range** (RFC 9110 §14): single ranges, suffix and open-ended ranges (`206`), several
///   ranges as `multipart/byteranges` (overlapping or nearby ranges coalesced; more parts than
///   [`max_ranges`](Self::max_ranges) → the whole file, `200`), unsatisfiable → `416` with
///   `Content-Range: bytes */N`, malformed → ignored (`200`), `If-Range` with an ETag or a date.
/// - **Conditional requests** in the RFC 9110 §13.2.2 order: `If-Match`,
///   `If-Unmodified-Since` (`412`), `If-None-Match`, `If-Modified-Since` (`304`).
/// - **Headers computed once** for every delivery mode: Content-Type, Content-Length,
///   Accept-Ranges, a strong ETag, Last-Modified, Cache-Control (default `private, no-cache`),
///   `X-Content-Type-Options: nosniff`, Content-Disposition (RFC 6266) when configured. Active
///   content (HTML, SVG, XML, JavaScript...) is forced to `attachment` and gets a sandboxing
///   `Content-Security-Policy`, unless allowed with [`allow_inline`](Self::allow_inline).
///
/// Mount it under a prefix with axum's `nest_service`; the rest of the path is the key,
/// percent-decoded exactly once:
///
/// ```
/// use axum::Router;
/// use private_storage::{allow_staff, LocalStorage, OnDenied, ServePrivate};
///
/// # fn main() -> Result<(), private_storage::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let storage = LocalStorage::new(dir.path())?;
/// let files = ServePrivate::new(storage)
///     .rule(allow_staff())
///     .on_denied(OnDenied::login("/login"));
/// let app: Router = Router::new().nest_service("/private-media", files);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServePrivate {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    storage: Arc<dyn Storage>,
    rule: Arc<dyn AccessRule>,
    hold: Option<Arc<dyn FileHold>>,
    on_denied: OnDenied,
    delivery: Delivery,
    policy: HeaderPolicy,
    max_ranges: usize,
}

impl fmt::Debug for ServePrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServePrivate")
            .field("storage", &self.config.storage)
            .field("on_denied", &self.config.on_denied)
            .field("delivery", &self.config.delivery)
            .field("max_ranges", &self.config.max_ranges)
            .finish_non_exhaustive()
    }
}

impl ServePrivate {
    /// Serves the files of `storage`, with the default rule [`allow_superuser`](crate::allow_superuser).
    pub fn new(storage: impl Storage) -> Self {
        Self::from_arc(Arc::new(storage))
    }

    /// Like [`ServePrivate::new`], for an already shared storage.
    pub fn from_arc(storage: Arc<dyn Storage>) -> Self {
        Self {
            config: Arc::new(Config {
                storage,
                rule: Arc::new(AllowSuperuser),
                hold: None,
                on_denied: OnDenied::Forbidden,
                delivery: Delivery::stream(),
                policy: HeaderPolicy::default(),
                max_ranges: 16,
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Sets the access rule. Defaults to [`allow_superuser`](crate::allow_superuser).
    pub fn rule(mut self, rule: impl AccessRule) -> Self {
        self.config_mut().rule = Arc::new(rule);
        self
    }

    /// Holds back files the rule allowed (see [`FileHold`]): a virus scan that is pending, a
    /// file found infected. Defaults to none.
    pub fn hold(mut self, hold: impl FileHold) -> Self {
        self.config_mut().hold = Some(Arc::new(hold));
        self
    }

    /// Sets what a denied request gets. Defaults to [`OnDenied::Forbidden`].
    pub fn on_denied(mut self, on_denied: OnDenied) -> Self {
        self.config_mut().on_denied = on_denied;
        self
    }

    /// Sets how the bytes travel. Defaults to [`Delivery::stream`].
    ///
    /// # Panics
    /// With [`Delivery::apache`] when the storage has no local paths: `X-Sendfile` names a
    /// file on disk. (Raised here, while the service is built, never per request.)
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        if matches!(delivery.mode(), delivery::Mode::Apache) {
            let probe = ObjectKey::new("probe").expect("valid key");
            assert!(
                self.config.storage.local_path(&probe).is_some(),
                "Delivery::apache() needs a storage with local paths, such as LocalStorage"
            );
        }
        self.config_mut().delivery = delivery;
        self
    }

    /// Sets `Cache-Control`. Defaults to `private, no-cache` (shared caches never store the
    /// file; browsers revalidate every time). Use e.g. `no-store`, or `private, max-age=300`.
    pub fn cache_control(mut self, value: HeaderValue) -> Self {
        self.config_mut().policy.cache_control = value;
        self
    }

    /// Sends `Content-Disposition` on every file. Defaults to none (the browser decides),
    /// except for active content, which is always an attachment. A [`ContentDisposition`] in
    /// the request extensions overrides this per request.
    pub fn content_disposition(mut self, disposition: ContentDisposition) -> Self {
        self.config_mut().policy.disposition = Some(disposition);
        self
    }

    /// Allows an active content type (such as `text/html`) to be served inline, without the
    /// sandboxing CSP. Only do this for content that is trusted, or served from an origin of
    /// its own. Defaults to none.
    pub fn allow_inline(mut self, content_type: &str) -> Self {
        self.config_mut().policy.inline_active.push(headers::essence(content_type));
        self
    }

    /// Sets how many parts a multi-range response may have once overlapping and nearby ranges
    /// are coalesced; requests for more get the whole file (`200`), which is always a valid
    /// answer, where a `416` would leave a legitimate client with nothing. Defaults to 16.
    pub fn max_ranges(mut self, max_ranges: usize) -> Self {
        self.config_mut().max_ranges = max_ranges.max(1);
        self
    }

    /// The answer to a denied request, per [`OnDenied`]: the same for a denial and an unknown
    /// record.
    pub(crate) fn deny(&self, request: &http::request::Parts) -> Response<ResponseBody> {
        denied(&self.config.on_denied, request)
    }

    /// How many bytes of a small file are read with its metadata: only worth it when the bytes
    /// go through the application.
    pub(crate) fn inline_max(&self) -> u64 {
        match self.config.delivery.mode() {
            delivery::Mode::Stream => delivery::INLINE_MAX,
            _ => 0,
        }
    }

    /// The storage this service serves.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.config.storage
    }

    /// Serves the request: its URI path (after the mount prefix) is the percent-encoded key.
    ///
    /// A path that is not a canonical key — a dot segment, an empty segment (`//`) anywhere in
    /// the URI the client sent, any spelling [`ObjectKey`] rejects — never reaches the rule or
    /// the storage, and is answered `404 Not Found`, as a missing file is: no file can have
    /// that name, so the answer says nothing the client did not know, and a superuser sees no
    /// difference between a key that was rejected and one that is absent.
    pub async fn serve<B>(&self, request: Request<B>) -> Response<ResponseBody> {
        let (parts, _body) = request.into_parts();
        let path = parts.uri.path();
        // The mount point's prefix is stripped before the path reaches here, and with it the
        // empty segment of `/private-media//x`: look at what the client sent.
        let empty_segment = original_uri(&parts).path().contains("//");
        let key = match ObjectKey::from_url_path(path.strip_prefix('/').unwrap_or(path)) {
            Ok(key) if !empty_segment => key,
            rejected => {
                tracing::debug!(path, error = ?rejected.err(), "rejected key");
                return not_found();
            }
        };
        let file = PrivateFile::for_service(parts, Arc::clone(&self.config.storage), key, None, self.inline_max());
        self.serve_file(file).await
    }

    /// Serves an already resolved file: for handlers that find the key elsewhere (a record, say)
    /// and want the same rule, semantics and delivery.
    pub async fn serve_file(&self, file: PrivateFile) -> Response<ResponseBody> {
        if !self.config.rule.allows(&file).await {
            return self.deny(file.request());
        }
        self.respond(file).await
    }

    /// Everything after the access decision: hold, method, metadata, plan, headers, delivery.
    pub(crate) async fn respond(&self, file: PrivateFile) -> Response<ResponseBody> {
        let config = &*self.config;
        if let Some(held) = match &config.hold {
            Some(hold) => hold.held(&file).await,
            None => None,
        } {
            return held.response();
        }
        let method = &file.request().method;
        if method != Method::GET && method != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let meta = match file.metadata().await {
            Ok(Some(meta)) => meta.clone(),
            Ok(None) => return not_found(),
            Err(e) => return error_response(&e, file.key()),
        };
        let validators = Validators { etag: meta.etag.as_deref(), last_modified: meta.last_modified, len: meta.size };
        let plan = conditional::plan(method, &file.request().headers, validators, SystemTime::now(), config.max_ranges);
        let headers = headers::representation_headers(&config.policy, &file, &meta);
        let ranges = match plan {
            Plan::Full => Vec::new(),
            Plan::Partial(ranges) => ranges,
            Plan::NotModified => {
                // RFC 9110 §15.4.5: the validators and caching fields, no representation metadata.
                let mut response = Response::new(ResponseBody::empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                for name in [ETAG, LAST_MODIFIED, CACHE_CONTROL] {
                    if let Some(value) = headers.get(&name) {
                        response.headers_mut().insert(name, value.clone());
                    }
                }
                return response;
            }
            Plan::PreconditionFailed => return plain(StatusCode::PRECONDITION_FAILED, "Precondition failed."),
            Plan::Unsatisfiable => {
                let mut response = plain(StatusCode::RANGE_NOT_SATISFIABLE, "Range not satisfiable.");
                let value = HeaderValue::from_str(&format!("bytes */{}", meta.size)).expect("ASCII");
                response.headers_mut().insert(CONTENT_RANGE, value);
                return response;
            }
        };
        let prepared = Prepared { headers, meta, ranges, head_only: method == Method::HEAD };
        match delivery::deliver(&config.delivery, &file, prepared).await {
            Ok(response) => response,
            Err(e) => error_response(&e, file.key()),
        }
    }
}

#[cfg(feature = "__bench")]
pub(crate) fn bench_plan(
    method: &Method,
    headers: &http::HeaderMap,
    etag: Option<&str>,
    last_modified: SystemTime,
    len: u64,
    now: SystemTime,
) -> usize {
    match conditional::plan(method, headers, Validators { etag, last_modified, len }, now, 16) {
        Plan::Full => 0,
        Plan::Partial(ranges) => ranges.len(),
        Plan::NotModified => 304,
        Plan::PreconditionFailed => 412,
        Plan::Unsatisfiable => 416,
    }
}

/// The future of this module's tower services.
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// The one `tower::Service` of the serving types ([`ServePrivate`], [`ServeRecords`],
/// [`ServeShared`]): each finds its file from the path below its mount point — a key, a record
/// id, a share token — in its `serve_mounted`, and everything after is the same pipeline.
macro_rules! mounted_service {
    ([$($g:ident: $bound:path)?] $ty:ty) => {
        impl<$($g: $bound,)? B: Send + 'static> tower_service::Service<http::Request<B>> for $ty {
            type Response = http::Response<$crate::http::ResponseBody>;
            type Error = std::convert::Infallible;
            type Future = $crate::http::ResponseFuture;

            fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<B>) -> Self::Future {
                let service = self.clone();
                Box::pin(async move { Ok(service.serve_mounted(request).await) })
            }
        }
    };
}
pub(crate) use mounted_service;

mounted_service!([] ServePrivate);

impl ServePrivate {
    async fn serve_mounted<B>(&self, request: Request<B>) -> Response<ResponseBody> {
        self.serve(request).await
    }
}

/// The first segment of a mounted path, percent-decoded (a record id or a share token).
pub(crate) fn first_segment<B>(request: &Request<B>) -> String {
    let raw = request.uri().path().trim_start_matches('/').split('/').next().unwrap_or_default();
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// A short text response with the safe headers every answer carries.
pub(crate) fn plain(status: StatusCode, message: impl Into<ResponseBody>) -> Response<ResponseBody> {
    let mut response = Response::new(message.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    response
}

/// The answer to a missing file, and to a path that names none.
fn not_found() -> Response<ResponseBody> {
    plain(StatusCode::NOT_FOUND, "Not found.")
}

/// The answer to a denied request.
fn denied(on_denied: &OnDenied, request: &http::request::Parts) -> Response<ResponseBody> {
    match on_denied {
        OnDenied::Forbidden => plain(StatusCode::FORBIDDEN, "Forbidden."),
        OnDenied::NotFound => not_found(),
        OnDenied::LoginRedirect { login_url } => {
            let anonymous = request.extensions.get::<CurrentUser>().is_none_or(|u| !u.is_authenticated());
            if !anonymous {
                return plain(StatusCode::FORBIDDEN, "Forbidden.");
            }
            let next = original_uri(request).path_and_query().map_or("/", |pq| pq.as_str());
            let sep = if login_url.contains('?') { '&' } else { '?' };
            let location = format!("{login_url}{sep}next={}", utf8_percent_encode(next, QUERY_VALUE));
            let mut response = plain(StatusCode::FOUND, "Login required.");
            match HeaderValue::from_str(&location) {
                Ok(value) => {
                    response.headers_mut().insert(LOCATION, value);
                    response
                }
                Err(_) => plain(StatusCode::FORBIDDEN, "Forbidden."),
            }
        }
    }
}

/// The URI as the client sent it: under axum's `nest_service` the request URI lacks the mount
/// prefix, which axum keeps in `OriginalUri`.
fn original_uri(request: &http::request::Parts) -> &http::Uri {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = request.extensions.get() {
        return uri;
    }
    &request.uri
}

/// Escapes for a query parameter value.
const QUERY_VALUE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'&').add(b'+').add(b'%').add(b'<').add(b'>').add(b'=').add(b'?');

/// A storage error met while serving, as a response ([`Error::response`]), but for one case: the
/// object changed between the metadata read and the byte read (our own `if_match`). The client
/// sent no precondition, so that is not its 412 but a retryable 503.
fn error_response(error: &Error, key: &ObjectKey) -> Response<ResponseBody> {
    if let Error::PreconditionFailed { .. } = error {
        tracing::warn!(%key, "object changed while being served");
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "The file changed while being served; retry.");
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("0"));
        return response;
    }
    error.response()
}
