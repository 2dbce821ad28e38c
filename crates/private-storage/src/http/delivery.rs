//! How the bytes travel: the only stage where the delivery modes differ.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;
use super::sendfile::{Sendfile, SendfileBody};
use crate::storage::{GetOptions, Payload, PresignedGet};
use crate::{Error, ObjectMeta, PrivateFile, Result};

/// Files up to this size are read with their metadata, in one round trip, when streamed.
pub(crate) const INLINE_MAX: u64 = 64 * 1024;

/// The nginx header naming the internal location to serve (`X-Accel-Redirect`).
pub const X_ACCEL_REDIRECT: HeaderName = HeaderName::from_static("x-accel-redirect");
/// The Apache (`mod_xsendfile`) header naming the file to serve.
pub const X_SENDFILE: HeaderName = HeaderName::from_static("x-sendfile");

/// How a served file's bytes reach the client, once the rule allowed the request and the
/// response headers were computed. Every mode sends the same status and headers for the same
/// request; only the bytes travel differently.
///
/// ```
/// use private_storage::Delivery;
///
/// let stream = Delivery::stream(); // the default
/// let nginx = Delivery::nginx("/_private/")?; // nginx serves from an `internal` location
/// let apache = Delivery::apache(); // mod_xsendfile serves the absolute path
/// # Ok::<(), private_storage::Error>(())
/// ```
#[derive(Clone)]
pub struct Delivery(Mode);

#[derive(Clone)]
pub(crate) enum Mode {
    Stream,
    Nginx { prefix: Arc<str> },
    Apache,
    Redirect { expires_in: Option<Duration> },
    NginxPresigned { prefix: Arc<str> },
    Custom(Arc<dyn DeliverFile>),
}

/// The moment a share link expires, in the request extensions of the file it serves: a
/// presigned redirect never outlives the link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkDeadline(pub(crate) SystemTime);

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Mode::Stream => f.write_str("Delivery::Stream"),
            Mode::Nginx { prefix } => f.debug_struct("Delivery::Nginx").field("prefix", prefix).finish(),
            Mode::Apache => f.write_str("Delivery::Apache"),
            Mode::Redirect { expires_in } => {
                f.debug_struct("Delivery::PresignedRedirect").field("expires_in", expires_in).finish()
            }
            Mode::NginxPresigned { prefix } => {
                f.debug_struct("Delivery::NginxPresigned").field("prefix", prefix).finish()
            }
            Mode::Custom(_) => f.write_str("Delivery::Custom"),
        }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self::stream()
    }
}

impl Delivery {
    /// The bytes flow through the application in bounded chunks, with `Range` and
    /// `multipart/byteranges` served here. Memory does not grow with the file or range size; a
    /// client that disconnects stops the read. The default.
    pub fn stream() -> Self {
        Self(Mode::Stream)
    }

    /// nginx serves the bytes: the response carries an empty body and
    /// `X-Accel-Redirect: <internal_prefix>/<percent-encoded key>`, which nginx resolves in an
    /// `internal` location aliased to the storage root. nginx then handles `Range` itself.
    /// See [`nginx_internal_location`] for the matching configuration.
    ///
    /// # Errors
    /// [`Error::Config`] unless `internal_prefix` is an absolute path of visible ASCII without
    /// `?`, `#` or `%` (checked here, so a bad prefix never surfaces per request).
    pub fn nginx(internal_prefix: impl AsRef<str>) -> Result<Self> {
        Ok(Self(Mode::Nginx { prefix: internal_prefix_of(internal_prefix.as_ref())? }))
    }

    /// nginx streams the bytes from the storage's presigned URL (S3), which never reaches the
    /// client: the response carries `X-Accel-Redirect: <internal_prefix>/<presigned path>?<query>`
    /// and an `internal` location proxies it to the S3 endpoint (see [`nginx_s3_location`]).
    /// nginx passes `Range` and the conditionals through to S3; `HEAD` is answered here.
    ///
    /// # Errors
    /// As [`Delivery::nginx`].
    pub fn nginx_presigned(internal_prefix: impl AsRef<str>) -> Result<Self> {
        Ok(Self(Mode::NginxPresigned { prefix: internal_prefix_of(internal_prefix.as_ref())? }))
    }

    /// Apache's `mod_xsendfile` serves the bytes: the response carries an empty body and
    /// `X-Sendfile: <absolute path>`, plus this crate's ETag and Last-Modified so Apache's own
    /// conditional handling agrees with every other mode. Only for storages with local paths.
    ///
    /// A file whose path holds `%` is streamed by the application instead: mod_xsendfile 1.0
    /// percent-decodes the header and 0.12 does not, so no spelling of such a path names the
    /// same file under both.
    pub fn apache() -> Self {
        Self(Mode::Apache)
    }

    /// The client is sent (`307`) to a short-lived presigned URL of the storage (S3), which
    /// serves the bytes and `Range` itself, answering with this crate's `Content-Type`,
    /// `Content-Disposition` and `Cache-Control` (signed into the URL). The rule, `304`/`412`
    /// and `HEAD` are still answered here, so a denied request never sees a URL. The URL lives
    /// `expires_in` (capped by the storage's presign expiry, default theirs) and never longer
    /// than the share link it serves. Storages that cannot presign answer `500` (logged).
    pub fn presigned_redirect(expires_in: Option<Duration>) -> Self {
        Self(Mode::Redirect { expires_in })
    }

    /// The application produces the response (see [`DeliverFile`]).
    pub fn custom(deliver: impl DeliverFile) -> Self {
        Self(Mode::Custom(Arc::new(deliver)))
    }

    pub(crate) fn mode(&self) -> &Mode {
        &self.0
    }
}

/// Checks an nginx internal location prefix once, when the delivery is built.
fn internal_prefix_of(internal_prefix: &str) -> Result<Arc<str>> {
    let prefix = internal_prefix.trim_end_matches('/');
    let valid = internal_prefix.starts_with('/')
        && !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%'));
    if !valid {
        return Err(Error::config(
            "internal_prefix",
            format!(
                "{internal_prefix:?} is not a valid nginx internal location (expected an absolute path such as /_private)"
            ),
        ));
    }
    Ok(Arc::from(prefix))
}

/// A response ready to be delivered: the access rule allowed it, the preconditions passed, and
/// its headers are computed.
#[derive(Debug)]
#[non_exhaustive]
pub struct Prepared {
    /// The representation headers shared by every mode (type, ETag, Last-Modified, caching,
    /// disposition, security headers). `Content-Length` and `Content-Range` are the mode's.
    pub headers: HeaderMap,
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// The ranges to send (206), or empty for the whole object (200).
    pub ranges: Vec<Range<u64>>,
    /// A HEAD request: headers only.
    pub head_only: bool,
}

/// A delivery mode written by the application (see [`Delivery::custom`]).
#[async_trait]
pub trait DeliverFile: Send + Sync + 'static {
    /// Produces the response for `file`. Errors are answered through [`Error::status`].
    async fn deliver(&self, file: &PrivateFile, prepared: Prepared) -> Result<Response<ResponseBody>>;
}

pub(crate) async fn deliver(
    delivery: &Delivery,
    file: &PrivateFile,
    prepared: Prepared,
) -> Result<Response<ResponseBody>> {
    let hands_off = matches!(
        delivery.mode(),
        Mode::Nginx { .. } | Mode::Apache | Mode::Redirect { .. } | Mode::NginxPresigned { .. }
    );
    if hands_off && !file.storage().serves_stored_bytes() {
        // Checked per request, whatever was checked at start: a proxy would send the stored
        // bytes (ciphertext), not the file's.
        return Err(Error::config(
            "delivery",
            "this storage transforms its objects (encryption at rest): only stream delivery can serve them",
        ));
    }
    match delivery.mode() {
        Mode::Stream => stream_response(file, prepared).await,
        Mode::Nginx { prefix } => {
            let target = format!("{prefix}/{}", file.key().to_url_path());
            Ok(handoff(
                prepared,
                X_ACCEL_REDIRECT,
                HeaderValue::from_str(&target).map_err(|e| Error::storage("nginx", e))?,
            ))
        }
        Mode::Apache => {
            let path = file
                .full_path()
                .ok_or_else(|| Error::config("delivery", "X-Sendfile needs a storage with local paths"))?;
            // mod_xsendfile 1.0 percent-decodes the header (`XSendFileUnescape`, on by default),
            // 0.12 (Debian's) does not: a key holding `%2e%2e` or `%41` would name another file
            // under one of them whichever way it is sent. Such a file's bytes go through the
            // application instead — the file the rule saw, on any version.
            if path.as_os_str().as_encoded_bytes().contains(&b'%') {
                return stream_response(file, prepared).await;
            }
            let value = HeaderValue::from_bytes(path.as_os_str().as_encoded_bytes())
                .map_err(|e| Error::storage("apache", e))?;
            Ok(handoff(prepared, X_SENDFILE, value))
        }
        Mode::Redirect { .. } | Mode::NginxPresigned { .. } if prepared.head_only => {
            stream_response(file, prepared).await
        }
        Mode::Redirect { expires_in } => {
            let url = presign(file, &prepared, *expires_in).await?;
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            let headers = response.headers_mut();
            headers.insert(LOCATION, HeaderValue::from_str(&url).map_err(|e| Error::storage("presign", e))?);
            // The URL is a short-lived capability: never cached, never leaked through Referer.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            Ok(response)
        }
        Mode::NginxPresigned { prefix } => {
            let url = presign(file, &prepared, None).await?;
            let target = nginx_presigned_target(prefix, &url)?;
            Ok(handoff(prepared, X_ACCEL_REDIRECT, target))
        }
        Mode::Custom(custom) => custom.deliver(file, prepared).await,
    }
}

/// The storage's presigned URL for `file`, answering with the prepared headers, never
/// outliving a share link it serves.
async fn presign(file: &PrivateFile, prepared: &Prepared, expires_in: Option<Duration>) -> Result<String> {
    let header = |name| prepared.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
    let mut request = PresignedGet {
        expires_in,
        content_type: header(CONTENT_TYPE),
        content_disposition: header(CONTENT_DISPOSITION),
        cache_control: header(CACHE_CONTROL),
    };
    if let Some(LinkDeadline(deadline)) = file.request().extensions.get::<LinkDeadline>() {
        let left = deadline.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_secs(1));
        request.expires_in = Some(request.expires_in.map_or(left, |e| e.min(left)));
    }
    file.storage().presigned_get(file.key(), &request).await?.ok_or_else(|| {
        Error::config("delivery", "presigned delivery needs a storage that signs URLs, such as S3Storage")
    })
}

/// `<prefix>/<path>?<query>` of a presigned URL for nginx. nginx decodes an `X-Accel-Redirect`
/// path once before the location's regex sees it, so `%` is escaped once more: the location
/// then forwards the path exactly as it was signed. The query is passed through untouched.
fn nginx_presigned_target(prefix: &str, url: &str) -> Result<HeaderValue> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let target = format!("{prefix}{}?{query}", path.replace('%', "%25"));
    HeaderValue::from_str(&target).map_err(|e| Error::storage("nginx", e))
}

/// A 200 with the representation headers and the proxy's header: the proxy sends the bytes
/// and answers `Range` itself.
fn handoff(prepared: Prepared, name: HeaderName, value: HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.headers_mut() = prepared.headers;
    response.headers_mut().insert(name, value);
    response
}

async fn stream_response(file: &PrivateFile, prepared: Prepared) -> Result<Response<ResponseBody>> {
    let Prepared { mut headers, meta, ranges, head_only } = prepared;
    let size = meta.size;
    let (status, body, len) = match ranges.as_slice() {
        [] if head_only => (StatusCode::OK, ResponseBody::empty(), size),
        [] => (StatusCode::OK, read(file, &meta, None).await?, size),
        [range] => {
            let value = format!("bytes {}-{}/{size}", range.start, range.end - 1);
            headers.insert(CONTENT_RANGE, HeaderValue::from_str(&value).expect("ASCII"));
            (StatusCode::PARTIAL_CONTENT, read(file, &meta, Some(range.clone())).await?, range.end - range.start)
        }
        _ => {
            let content_type =
                headers.get(CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let boundary = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            let parts: Vec<(Bytes, Range<u64>)> = ranges
                .iter()
                .map(|r| {
                    let head = format!(
                        "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n",
                        content_type.to_str().unwrap_or("application/octet-stream"),
                        r.start,
                        r.end - 1
                    );
                    (Bytes::from(head), r.clone())
                })
                .collect();
            let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            let len = parts.iter().map(|(h, r)| h.len() as u64 + (r.end - r.start)).sum::<u64>() + tail.len() as u64;
            let value = format!("multipart/byteranges; boundary={boundary}");
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(&value).expect("ASCII"));
            (StatusCode::PARTIAL_CONTENT, multipart_body(file.clone(), meta.etag.clone(), parts, tail, len), len)
        }
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Reads the object (or a range of it), pinned to the ETag the headers were computed from so
/// one response never mixes two versions of a file.
async fn read(file: &PrivateFile, meta: &ObjectMeta, range: Option<Range<u64>>) -> Result<ResponseBody> {
    if let Some(bytes) = file.inline_bytes() {
        let range = range.unwrap_or(0..bytes.len() as u64);
        return Ok(ResponseBody::full(bytes.slice(range.start as usize..range.end as usize)));
    }
    let options = GetOptions { range, if_match: meta.etag.clone() };
    let got = file.storage().get(file.key(), options).await?;
    let len = got.range.end - got.range.start;
    Ok(match got.payload {
        Payload::Bytes(bytes) => ResponseBody::full(bytes),
        Payload::Stream(s) => ResponseBody::stream(logged(s, file), Some(len)),
        Payload::File(region) => match SendfileBody::new(region, file.request().extensions.get::<Sendfile>()) {
            Ok(body) => ResponseBody::sendfile(body),
            Err(region) => ResponseBody::stream(logged(region.into_stream(), file), Some(len)),
        },
    })
}

fn multipart_body(
    file: PrivateFile,
    etag: Option<String>,
    parts: Vec<(Bytes, Range<u64>)>,
    tail: Bytes,
    len: u64,
) -> ResponseBody {
    let reader = file.clone();
    let body = stream::iter(parts)
        .then(move |(head, range)| {
            let file = reader.clone();
            let options = GetOptions { range: Some(range.clone()), if_match: etag.clone() };
            async move {
                let data = match file.inline_bytes() {
                    Some(bytes) => {
                        let part = bytes.slice(range.start as usize..range.end as usize);
                        stream::once(async move { Ok(part) }).boxed()
                    }
                    None => file.storage().get(file.key(), options).await?.into_stream(),
                };
                Ok::<_, Error>(stream::once(async move { Ok(head) }).chain(data))
            }
        })
        .try_flatten()
        .chain(stream::once(async move { Ok(tail) }));
    ResponseBody::stream(logged(body.boxed(), &file), Some(len))
}

/// Logs the error that ends a body stream (once: the server stops polling after it).
fn logged(s: crate::storage::ByteStream, file: &PrivateFile) -> crate::storage::ByteStream {
    let key = file.key().clone();
    s.inspect_err(move |e| tracing::error!(%key, error = %e, "storage failed mid-transfer; aborting the response"))
        .boxed()
}

/// The nginx `location` block that streams [`Delivery::nginx_presigned`] targets of
/// `internal_prefix` from the S3 endpoint `endpoint` (`http://127.0.0.1:3900`, or
/// `https://s3.eu-west-1.amazonaws.com`; with virtual-hosted buckets, the bucket's host).
///
/// The client's `Authorization` and `Cookie` never reach S3 (the URL's signature is the only
/// credential), S3's own headers are hidden, and the security headers are set here, since the
/// application's do not survive the second upstream.
///
/// ```
/// use private_storage::nginx_s3_location;
///
/// let conf = nginx_s3_location("/_s3", "http://127.0.0.1:3900");
/// assert!(conf.contains("internal;"));
/// assert!(conf.contains("proxy_pass http://127.0.0.1:3900/$ps_s3_path$is_args$args;"));
/// ```
pub fn nginx_s3_location(internal_prefix: &str, endpoint: &str) -> String {
    let prefix = internal_prefix.trim_end_matches('/');
    let endpoint = endpoint.trim_end_matches('/');
    let resolver = if endpoint.starts_with("http://127.") || endpoint.starts_with("http://localhost") {
        ""
    } else {
        "    resolver 127.0.0.53 valid=60s; # adjust: a variable proxy_pass resolves at run time\n"
    };
    format!(
        "location ~ ^{prefix}/(?<ps_s3_path>.*)$ {{
    internal;
{resolver}    proxy_pass {endpoint}/$ps_s3_path$is_args$args;
    proxy_set_header Authorization \"\";
    proxy_set_header Cookie \"\";
    proxy_hide_header x-amz-id-2;
    proxy_hide_header x-amz-request-id;
    proxy_hide_header x-amz-server-side-encryption;
    proxy_hide_header x-amz-version-id;
    proxy_hide_header Set-Cookie;
    proxy_buffering off;
    add_header X-Content-Type-Options nosniff always;
    add_header Content-Security-Policy \"default-src 'none'; sandbox\" always;
    add_header Referrer-Policy no-referrer always;
}}
"
    )
}

/// The nginx `location` block that serves `X-Accel-Redirect` targets of `internal_prefix` from
/// the storage folder `root`.
///
/// nginx drops most upstream headers when it follows `X-Accel-Redirect`; this block re-adds
/// the security headers (nosniff, the sandbox CSP for active content, share links'
/// `Referrer-Policy`) and keeps nginx's multi-range
/// limit equal to the service's, so nginx answers exactly what the service would.
///
/// ```
/// use private_storage::nginx_internal_location;
///
/// let conf = nginx_internal_location("/_private", std::path::Path::new("/srv/files"), 16);
/// assert!(conf.contains("location /_private/ {"));
/// assert!(conf.contains("internal;"));
/// assert!(conf.contains("alias /srv/files/;"));
/// ```
pub fn nginx_internal_location(internal_prefix: &str, root: &Path, max_ranges: usize) -> String {
    let prefix = internal_prefix.trim_end_matches('/');
    let root = root.display().to_string();
    let root = root.trim_end_matches('/');
    format!(
        "location {prefix}/ {{
    internal;
    alias {root}/;
    max_ranges {max_ranges};
    # nginx keeps only a few upstream headers across X-Accel-Redirect: re-add the rest.
    add_header X-Content-Type-Options $upstream_http_x_content_type_options always;
    add_header Content-Security-Policy $upstream_http_content_security_policy always;
    add_header Referrer-Policy $upstream_http_referrer_policy always;
}}
"
    )
}
