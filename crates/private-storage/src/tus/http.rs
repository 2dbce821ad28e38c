//! The HTTP side of tus: requests read into [`TusRequest`], answers built from an
//! [`UploadInfo`] or an error. Shared by [`TusService`](super::TusService) and by apps that
//! drive [`Resumable`](super::Resumable) from their own handlers.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, Response, StatusCode};

use super::protocol::{self, Checksum};
use super::{Metadata, TusError, UploadInfo};
use crate::Error;
use crate::error::BoxError;
use crate::http::ResponseBody;
use crate::http::essence;
use crate::storage::ByteStream;

/// A tus request, read from its method, headers and the path below the endpoint.
#[derive(Debug)]
pub enum TusRequest {
    /// `OPTIONS`: what the server supports (tus §OPTIONS).
    Options,
    /// `POST` to the endpoint (tus §Creation), with the first bytes in its body when it has one
    /// (§Creation With Upload).
    Create {
        /// `Upload-Length`, or `None` when deferred.
        length: Option<u64>,
        /// `Upload-Metadata`.
        metadata: Metadata,
        /// Whether the body carries bytes (`Content-Type: application/offset+octet-stream`).
        with_upload: bool,
        /// `Content-Length`, when sent.
        content_length: Option<u64>,
    },
    /// `HEAD` of an upload: its offset (tus §HEAD).
    Head {
        /// The upload's id.
        id: String,
    },
    /// `PATCH` of an upload: bytes at an offset (tus §PATCH).
    Patch {
        /// The upload's id.
        id: String,
        /// `Upload-Offset`.
        offset: u64,
        /// `Upload-Length`, for a deferred length.
        length: Option<u64>,
        /// `Content-Length`, when sent.
        content_length: Option<u64>,
        /// `Upload-Checksum`.
        checksum: Option<Checksum>,
    },
    /// `DELETE` of an upload (tus §Termination).
    Delete {
        /// The upload's id.
        id: String,
    },
}

impl TusRequest {
    /// Reads a request to the endpoint: `path` is what follows the endpoint's URL (`""` or `/`
    /// for the endpoint, `/<id>` for an upload). `X-HTTP-Method-Override` is honoured, as the
    /// protocol allows for environments that cannot send `PATCH` or `DELETE`.
    ///
    /// # Errors
    /// [`TusError::UnsupportedVersion`] without `Tus-Resumable: 1.0.0` (but for `OPTIONS`),
    /// [`TusError::WrongContentType`] for a `PATCH` of another type, [`TusError::BadRequest`]
    /// for malformed headers, [`TusError::NoSuchUpload`] for a path that names no upload, or a
    /// method the path does not take.
    pub fn parse(parts: &http::request::Parts, path: &str) -> Result<Self, TusError> {
        let headers = &parts.headers;
        let method = match headers.get("x-http-method-override").and_then(|v| v.to_str().ok()) {
            Some(m) => {
                Method::from_bytes(m.as_bytes()).map_err(|_| TusError::BadRequest("bad method override".into()))?
            }
            None => parts.method.clone(),
        };
        if method == Method::OPTIONS {
            return Ok(TusRequest::Options);
        }
        protocol::check_version(headers)?;
        let id = path.trim_start_matches('/');
        // One Content-Type (RFC 9110 §8.3: several are an error), and it is ours.
        let mut types = headers.get_all(CONTENT_TYPE).iter();
        let is_upload_type = match (types.next(), types.next()) {
            (Some(t), None) => t.to_str().is_ok_and(|t| essence(t) == protocol::OFFSET_OCTET_STREAM),
            _ => false,
        };
        if id.is_empty() {
            if method != Method::POST {
                return Err(TusError::NoSuchUpload);
            }
            let metadata = match headers.get(protocol::UPLOAD_METADATA) {
                Some(v) => Metadata::parse(v.to_str().map_err(|_| TusError::BadRequest("Upload-Metadata".into()))?)?,
                None => Metadata::default(),
            };
            let length = protocol::creation_length(headers)?;
            let content_length = protocol::number(headers, &CONTENT_LENGTH)?;
            let with_upload = is_upload_type && content_length != Some(0);
            return Ok(TusRequest::Create { length, metadata, with_upload, content_length });
        }
        if id.contains('/') {
            return Err(TusError::NoSuchUpload);
        }
        let id = id.to_owned();
        match method {
            Method::HEAD | Method::GET => Ok(TusRequest::Head { id }),
            Method::DELETE => Ok(TusRequest::Delete { id }),
            Method::PATCH => {
                if !is_upload_type {
                    return Err(TusError::WrongContentType);
                }
                let offset = protocol::number(headers, &protocol::UPLOAD_OFFSET)?
                    .ok_or_else(|| TusError::BadRequest("Upload-Offset is required".into()))?;
                Ok(TusRequest::Patch {
                    id,
                    offset,
                    length: protocol::number(headers, &protocol::UPLOAD_LENGTH)?,
                    content_length: protocol::number(headers, &CONTENT_LENGTH)?,
                    checksum: Checksum::from_headers(headers)?,
                })
            }
            _ => Err(TusError::NoSuchUpload),
        }
    }
}

/// A request body as the stream a [`Patch`](super::Patch) takes.
pub fn body_stream<B>(body: B) -> ByteStream
where
    B: http_body::Body + Send + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    http_body_util::BodyDataStream::new(body)
        .map_ok(Into::into)
        .map_err(|e| Error::BadUpload { message: format!("the request body broke off: {}", e.into()) })
        .boxed()
}

fn response(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(protocol::TUS_RESUMABLE, HeaderValue::from_static(protocol::VERSION));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

fn expires(info: &UploadInfo) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(info.expires)).expect("an HTTP date is a header value")
}

/// `204` to `OPTIONS`: version, extensions, the size limit, the checksum algorithms.
pub fn options(max_size: Option<u64>) -> Response<ResponseBody> {
    let mut r = response(StatusCode::NO_CONTENT);
    let headers = r.headers_mut();
    headers.insert(protocol::TUS_VERSION, HeaderValue::from_static(protocol::VERSION));
    headers.insert(protocol::TUS_EXTENSION, HeaderValue::from_static(protocol::EXTENSIONS));
    headers.insert(protocol::TUS_CHECKSUM_ALGORITHM, HeaderValue::from_static(protocol::CHECKSUM_ALGORITHMS));
    if let Some(max) = max_size {
        headers.insert(protocol::TUS_MAX_SIZE, number(max));
    }
    r
}

/// `201` to a creation: where the upload is, when it expires, and how far it got when the
/// request carried bytes.
pub fn created(location: &str, info: &UploadInfo, with_upload: bool) -> Response<ResponseBody> {
    let mut r = response(StatusCode::CREATED);
    let headers = r.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(LOCATION, location);
    }
    // tus §Creation With Upload: the offset reached, only when the request carried bytes.
    if with_upload {
        headers.insert(protocol::UPLOAD_OFFSET, number(info.offset));
    }
    headers.insert(protocol::UPLOAD_EXPIRES, expires(info));
    r
}

/// `204` to a `PATCH`: the new offset.
pub fn patched(info: &UploadInfo) -> Response<ResponseBody> {
    let mut r = response(StatusCode::NO_CONTENT);
    r.headers_mut().insert(protocol::UPLOAD_OFFSET, number(info.offset));
    r.headers_mut().insert(protocol::UPLOAD_EXPIRES, expires(info));
    r
}

/// `200` to a `HEAD`: offset, length (or that it is deferred), metadata, expiry.
pub fn head(info: &UploadInfo) -> Response<ResponseBody> {
    let mut r = response(StatusCode::OK);
    let headers = r.headers_mut();
    headers.insert(protocol::UPLOAD_OFFSET, number(info.offset));
    match info.length {
        Some(length) => headers.insert(protocol::UPLOAD_LENGTH, number(length)),
        None => headers.insert(protocol::UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1")),
    };
    if let Some(metadata) = info.metadata.to_header() {
        headers.insert(protocol::UPLOAD_METADATA, metadata);
    }
    headers.insert(protocol::UPLOAD_EXPIRES, expires(info));
    r
}

/// `204` to a `DELETE`.
pub fn terminated() -> Response<ResponseBody> {
    response(StatusCode::NO_CONTENT)
}

/// The answer to an error: its status and safe message, with the protocol's headers
/// (`Tus-Version` on `412`).
pub fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut r = response(status);
    *r.body_mut() = ResponseBody::from(message.to_owned());
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::PRECONDITION_FAILED {
        r.headers_mut().insert(protocol::TUS_VERSION, HeaderValue::from_static(protocol::VERSION));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = http::Request::builder().method(method).uri("/uploads/x");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    const V: (&str, &str) = ("tus-resumable", "1.0.0");

    #[test]
    fn requests_are_read_per_the_protocol() {
        assert!(matches!(TusRequest::parse(&parts("OPTIONS", &[]), ""), Ok(TusRequest::Options)));
        assert!(matches!(
            TusRequest::parse(&parts("POST", &[("upload-length", "5")]), ""),
            Err(TusError::UnsupportedVersion)
        ));
        let create = TusRequest::parse(&parts("POST", &[V, ("upload-length", "5")]), "/").unwrap();
        assert!(matches!(create, TusRequest::Create { length: Some(5), with_upload: false, .. }));
        let with_body =
            parts("POST", &[V, ("upload-defer-length", "1"), ("content-type", "application/offset+octet-stream")]);
        assert!(matches!(
            TusRequest::parse(&with_body, "").unwrap(),
            TusRequest::Create { length: None, with_upload: true, .. }
        ));
        let patch = parts("PATCH", &[V, ("upload-offset", "3"), ("content-type", "application/offset+octet-stream")]);
        assert!(matches!(TusRequest::parse(&patch, "/abc").unwrap(), TusRequest::Patch { offset: 3, .. }));
        let wrong_type = parts("PATCH", &[V, ("upload-offset", "3"), ("content-type", "application/json")]);
        assert!(matches!(TusRequest::parse(&wrong_type, "/abc"), Err(TusError::WrongContentType)));
        let no_offset = parts("PATCH", &[V, ("content-type", "application/offset+octet-stream")]);
        assert!(matches!(TusRequest::parse(&no_offset, "/abc"), Err(TusError::BadRequest(_))));
        let overridden = parts("POST", &[V, ("x-http-method-override", "DELETE")]);
        assert!(matches!(TusRequest::parse(&overridden, "/abc").unwrap(), TusRequest::Delete { .. }));
        assert!(matches!(TusRequest::parse(&parts("HEAD", &[V]), "/a/b"), Err(TusError::NoSuchUpload)));
    }

    #[test]
    fn every_answer_carries_the_protocol_version_and_no_store() {
        let r = options(Some(1024));
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["tus-resumable"], "1.0.0");
        assert_eq!(r.headers()["tus-max-size"], "1024");
        assert!(r.headers()["tus-extension"].to_str().unwrap().contains("creation-defer-length"));
        let e = error(StatusCode::PRECONDITION_FAILED, "no");
        assert_eq!(
            (e.headers()["tus-version"].to_str().unwrap(), e.headers()["cache-control"].to_str().unwrap()),
            ("1.0.0", "no-store")
        );
    }
}
