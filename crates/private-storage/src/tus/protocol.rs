//! The tus 1.0.0 wire format: header names, their typed values and their parsing
//! (<https://tus.io/protocols/resumable-upload>, cited below as "tus §section").

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::TusError;

/// The protocol version this crate speaks (tus §Tus-Resumable).
pub const VERSION: &str = "1.0.0";

/// The extensions [`TusService`](super::TusService) implements, as `OPTIONS` lists them
/// (tus §Tus-Extension).
pub const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";

/// The checksum algorithms accepted in `Upload-Checksum` (tus §Checksum).
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

/// The media type of a PATCH body (tus §PATCH).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

macro_rules! header_names {
    ($($name:ident = $value:literal;)*) => {
        $(
            #[doc = concat!("`", $value, "`")]
            pub(crate) const $name: HeaderName = HeaderName::from_static($value);
        )*
    };
}

header_names! {
    TUS_RESUMABLE = "tus-resumable";
    TUS_VERSION = "tus-version";
    TUS_EXTENSION = "tus-extension";
    TUS_MAX_SIZE = "tus-max-size";
    TUS_CHECKSUM_ALGORITHM = "tus-checksum-algorithm";
    UPLOAD_OFFSET = "upload-offset";
    UPLOAD_LENGTH = "upload-length";
    UPLOAD_DEFER_LENGTH = "upload-defer-length";
    UPLOAD_METADATA = "upload-metadata";
    UPLOAD_EXPIRES = "upload-expires";
    UPLOAD_CHECKSUM = "upload-checksum";
}

/// Whether the request speaks our version (tus §Tus-Resumable: every request but `OPTIONS`
/// carries it; another version is answered `412` with `Tus-Version`).
pub(crate) fn check_version(headers: &HeaderMap) -> Result<(), TusError> {
    match headers.get(TUS_RESUMABLE) {
        Some(v) if v == VERSION => Ok(()),
        _ => Err(TusError::UnsupportedVersion),
    }
}

/// A header holding a non-negative integer (`Upload-Offset`, `Upload-Length`): digits only.
pub(crate) fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, TusError> {
    let Some(value) = headers.get(name) else { return Ok(None) };
    let text = value.to_str().ok().filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    text.and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| TusError::BadRequest(format!("{name} must be a non-negative integer")))
}

/// What a creation request says about the length (tus §Upload-Length, §Upload-Defer-Length:
/// exactly one of the two).
pub(crate) fn creation_length(headers: &HeaderMap) -> Result<Option<u64>, TusError> {
    let length = number(headers, &UPLOAD_LENGTH)?;
    let deferred = match headers.get(UPLOAD_DEFER_LENGTH) {
        None => false,
        Some(v) if v == "1" => true,
        Some(_) => return Err(TusError::BadRequest("Upload-Defer-Length must be 1".into())),
    };
    match (length, deferred) {
        (Some(length), false) => Ok(Some(length)),
        (None, true) => Ok(None),
        (Some(_), true) => Err(TusError::BadRequest("send Upload-Length or Upload-Defer-Length, not both".into())),
        (None, false) => Err(TusError::BadRequest("Upload-Length or Upload-Defer-Length: 1 is required".into())),
    }
}

/// `Upload-Metadata`: comma-separated pairs of a key (ASCII, no space or comma, unique) and an
/// optional base64 value (tus §Upload-Metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metadata(Vec<(String, Option<String>)>);

/// The longest `Upload-Metadata` header accepted.
const MAX_METADATA: usize = 4096;

impl Metadata {
    /// Parses the header value.
    ///
    /// ```
    /// use private_storage::tus::Metadata;
    ///
    /// let m = Metadata::parse("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")?;
    /// assert_eq!(m.get("filename"), Some("world_domination_plan.pdf"));
    /// assert_eq!(m.get("is_confidential"), Some(""));
    /// # Ok::<(), private_storage::tus::TusError>(())
    /// ```
    ///
    /// # Errors
    /// [`TusError::BadRequest`] for a malformed pair, a repeated key, a value that is not
    /// base64 of UTF-8 text, or a header longer than 4 KiB.
    pub fn parse(value: &str) -> Result<Self, TusError> {
        let bad = |why: &str| TusError::BadRequest(format!("Upload-Metadata: {why}"));
        if value.len() > MAX_METADATA {
            return Err(bad("longer than 4 KiB"));
        }
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut parts = pair.split(' ').filter(|p| !p.is_empty());
            let key = parts.next().unwrap_or_default();
            let value = parts.next();
            if parts.next().is_some() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("each pair is a key and an optional base64 value"));
            }
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(bad("a key appears twice"));
            }
            let value = match value {
                Some(encoded) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|_| bad("a value is not base64"))?;
                    Some(String::from_utf8(bytes).map_err(|_| bad("a value is not UTF-8 text"))?)
                }
                None => None,
            };
            pairs.push((key.to_owned(), value));
        }
        Ok(Self(pairs))
    }

    /// The value of `key` (`""` for a key without a value).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// The file's name, under the keys clients use (`filename`, Uppy's `name`).
    pub fn filename(&self) -> Option<&str> {
        self.get("filename").or_else(|| self.get("name")).filter(|n| !n.is_empty())
    }

    /// The declared type (`filetype`, Uppy's `type`): never trusted, checked like a form's.
    pub fn filetype(&self) -> Option<&str> {
        self.get("filetype").or_else(|| self.get("type")).filter(|t| !t.is_empty())
    }

    /// The header value, as received (re-encoded).
    pub fn to_header(&self) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} {}", base64::engine::general_purpose::STANDARD.encode(v)),
                None => k.clone(),
            })
            .collect();
        HeaderValue::from_str(&pairs.join(",")).ok()
    }
}

/// A checksum algorithm of `Upload-Checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha1,
    Sha256,
}

/// `Upload-Checksum`: the algorithm and the digest of this request's body (tus §Checksum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub(crate) algorithm: Algorithm,
    pub(crate) digest: Vec<u8>,
}

impl Checksum {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, TusError> {
        let Some(value) = headers.get(UPLOAD_CHECKSUM) else { return Ok(None) };
        let bad = || TusError::BadRequest("Upload-Checksum must be an algorithm and a base64 digest".into());
        let (name, digest) = value.to_str().ok().and_then(|v| v.split_once(' ')).ok_or_else(bad)?;
        let algorithm = match name {
            "sha1" => Algorithm::Sha1,
            "sha256" => Algorithm::Sha256,
            _ => {
                return Err(TusError::BadRequest(format!("checksum algorithm {name} is not supported (sha1, sha256)")));
            }
        };
        let digest = base64::engine::general_purpose::STANDARD.decode(digest.trim()).map_err(|_| bad())?;
        Ok(Some(Self { algorithm, digest }))
    }

    /// A hasher for this checksum's algorithm.
    pub(crate) fn hasher(&self) -> Hasher {
        use sha2::Digest;
        match self.algorithm {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
}

/// A running digest of a PATCH body.
pub(crate) enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(HeaderName::from_static(name), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn metadata_round_trips_and_refuses_what_the_spec_forbids() {
        let m = Metadata::parse("filename cmVwb3J0LnBkZg==, filetype YXBwbGljYXRpb24vcGRm,flag").unwrap();
        assert_eq!(
            (m.filename(), m.filetype(), m.get("flag")),
            (Some("report.pdf"), Some("application/pdf"), Some(""))
        );
        assert_eq!(Metadata::parse(m.to_header().unwrap().to_str().unwrap()).unwrap(), m);
        assert_eq!(Metadata::parse("name eC5wbmc=").unwrap().filename(), Some("x.png"), "Uppy's key");
        for bad in ["a b c", "a !!!", "a eA==,a eQ==", "k\u{1}v eA==", "n /w==", &"a".repeat(5000)] {
            assert!(Metadata::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Metadata::parse("").unwrap(), Metadata::default());
    }

    #[test]
    fn lengths_are_exactly_one_of_the_two_headers() {
        assert_eq!(creation_length(&headers(&[("upload-length", "42")])).unwrap(), Some(42));
        assert_eq!(creation_length(&headers(&[("upload-defer-length", "1")])).unwrap(), None);
        for bad in [
            headers(&[]),
            headers(&[("upload-length", "42"), ("upload-defer-length", "1")]),
            headers(&[("upload-defer-length", "0")]),
            headers(&[("upload-length", "-1")]),
            headers(&[("upload-length", "+4")]),
            headers(&[("upload-length", "99999999999999999999999")]),
        ] {
            assert!(matches!(creation_length(&bad), Err(TusError::BadRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn checksums_name_a_supported_algorithm_and_a_base64_digest() {
        let c = Checksum::from_headers(&headers(&[("upload-checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")]))
            .unwrap()
            .unwrap();
        let mut h = c.hasher();
        h.update(b"hello world");
        assert_eq!(h.finish(), c.digest, "sha1 of 'hello world'");
        for bad in ["md5 XrY7u+Ae7tCTyyK7j1rNww==", "sha1", "sha256 !!"] {
            assert!(Checksum::from_headers(&headers(&[("upload-checksum", bad)])).is_err(), "{bad}");
        }
    }
}
