//! The representation headers, computed once and shared by every delivery mode.

use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, LAST_MODIFIED,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue};

use super::disposition::ContentDisposition;
use crate::{ObjectMeta, PrivateFile};

/// Neuters active content should a browser render it anyway: CSP Level 3 `sandbox` with no
/// allowances (no scripts, no same-origin access, no forms) and no subresources.
pub(crate) const SANDBOX_CSP: HeaderValue = HeaderValue::from_static("sandbox; default-src 'none'");
pub(crate) const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// The response policy of a service (see the setters of [`ServePrivate`](crate::ServePrivate)).
#[derive(Debug, Clone)]
pub(crate) struct HeaderPolicy {
    pub(crate) cache_control: HeaderValue,
    pub(crate) disposition: Option<ContentDisposition>,
    /// Active types (lower-case essences) the application allows inline.
    pub(crate) inline_active: Vec<String>,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        Self {
            cache_control: HeaderValue::from_static("private, no-cache"),
            disposition: None,
            inline_active: Vec::new(),
        }
    }
}

/// Content-Type, Accept-Ranges, ETag, Last-Modified, Cache-Control, nosniff, and
/// Content-Disposition / CSP as the policy and the type require.
pub(crate) fn representation_headers(policy: &HeaderPolicy, file: &PrivateFile, meta: &ObjectMeta) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(9);
    let content_type = meta
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or_else(|| HeaderValue::from_static(file.content_type()));
    let essence = essence(content_type.to_str().unwrap_or_default());
    let active = is_active(&essence) && !policy.inline_active.contains(&essence);

    let disposition = file.request().extensions.get::<ContentDisposition>().or(policy.disposition.as_ref());
    let disposition = match (disposition, active) {
        (Some(d), true) if !d.is_attachment() => {
            let forced = ContentDisposition::attachment();
            Some(match d.filename() {
                Some(name) => forced.with_filename(name),
                None => forced,
            })
        }
        (None, true) => Some(ContentDisposition::attachment()),
        (d, _) => d.cloned(),
    };

    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(etag) = meta.etag.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert(ETAG, etag);
    }
    headers.insert(LAST_MODIFIED, http_date(meta.last_modified));
    headers.insert(CACHE_CONTROL, policy.cache_control.clone());
    headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    if let Some(d) = disposition {
        headers.insert(CONTENT_DISPOSITION, d.header_value(file.key().file_name()));
    }
    if active {
        headers.insert(CONTENT_SECURITY_POLICY, SANDBOX_CSP);
    }
    headers
}

/// An IMF-fixdate (RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`, always 29 bytes) as a
/// header value, formatted on the stack: one allocation, the value's own.
fn http_date(at: std::time::SystemTime) -> HeaderValue {
    use std::io::Write as _;
    let mut buf = [0u8; 29];
    let mut out = &mut buf[..];
    write!(out, "{}", httpdate::HttpDate::from(at)).expect("an IMF-fixdate is 29 bytes");
    debug_assert!(out.is_empty(), "an IMF-fixdate is 29 bytes");
    HeaderValue::from_bytes(&buf).expect("an HTTP-date is ASCII")
}

/// `type/subtype` in lower case, without parameters.
pub(crate) fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Types a browser may execute or render with script in the serving origin (stored XSS).
fn is_active(essence: &str) -> bool {
    const ACTIVE: &[&str] = &[
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/ecmascript",
        "application/ecmascript",
        "application/x-shockwave-flash",
        "text/vnd.wap.wml",
        "multipart/x-mixed-replace",
        "text/cache-manifest",
    ];
    ACTIVE.contains(&essence) || essence.ends_with("+xml") || essence.ends_with("/xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_modified_is_the_imf_fixdate_of_the_time() {
        let times = [0, 784_111_777, 1_700_000_000, 253_402_300_799]; // 1970, RFC 9110's example, 2023, 9999
        for secs in times {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            assert_eq!(http_date(at).to_str().unwrap(), httpdate::fmt_http_date(at), "{secs}");
        }
        assert_eq!(
            http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn active_types_are_recognised() {
        for t in ["text/html", "image/svg+xml", "application/atom+xml", "text/xml", "application/javascript"] {
            assert!(is_active(t), "{t}");
        }
        for t in ["text/plain", "application/pdf", "image/png", "video/mp4", "application/json", "text/css"] {
            assert!(!is_active(t), "{t}");
        }
        assert_eq!(essence(" Text/HTML ; charset=utf-8"), "text/html");
    }
}
