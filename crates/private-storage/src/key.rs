//! The validated object key: the only way to name a stored object.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The longest key accepted, in bytes (the S3 limit).
pub const MAX_KEY_LEN: usize = 1024;
/// The longest single segment accepted, in bytes (the common filesystem limit).
pub const MAX_SEGMENT_LEN: usize = 255;

/// A canonical, validated name of a stored object, such as `users/1/report.pdf`.
///
/// Every storage, every access rule and every delivery mode sees the same `ObjectKey`:
/// a request path is decoded and checked **once**, here, and nothing downstream ever
/// sees the raw path again. Validation **rejects** rather than normalises, so
/// `users/1/../6/secret.txt` is an error, never `users/6/secret.txt` (the bypass that
/// `django-private-storage` allowed: its rule saw the raw path, its storage the normalised one).
///
/// A key is a `/`-separated list of one or more segments. It is rejected when:
///
/// - it is empty, longer than [`MAX_KEY_LEN`] bytes, or has a segment longer than
///   [`MAX_SEGMENT_LEN`] bytes;
/// - it starts or ends with `/`, or has an empty segment (`a//b`);
/// - a segment is `.` or `..`, or consists only of dots and dot look-alikes (`．．`, `‥`);
/// - it contains a backslash, a slash look-alike (`／`, `∕`, `⁄`, `＼`), NUL or another
///   control character (C0, DEL, C1), or an invisible formatting character that can disguise
///   a name (bidirectional overrides, zero-width characters, BOM);
/// - its first segment is a Windows drive prefix such as `C:`.
///
/// ```
/// use private_storage::ObjectKey;
///
/// let key = ObjectKey::new("users/1/report.pdf")?;
/// assert_eq!(key.as_str(), "users/1/report.pdf");
/// assert_eq!(key.file_name(), "report.pdf");
///
/// assert!(ObjectKey::new("users/1/../6/secret.txt").is_err());
/// assert!(ObjectKey::new("/etc/passwd").is_err());
/// assert!(ObjectKey::new("a\\b").is_err());
/// # Ok::<(), private_storage::KeyError>(())
/// ```
///
/// Keys from URLs are percent-decoded exactly once, then validated:
///
/// ```
/// use private_storage::ObjectKey;
///
/// let key = ObjectKey::from_url_path("reports/Q1%20summary.pdf")?;
/// assert_eq!(key.as_str(), "reports/Q1 summary.pdf");
/// // An encoded dot segment is still a dot segment.
/// assert!(ObjectKey::from_url_path("a/%2e%2e/b").is_err());
/// // Double encoding decodes once: the result is the literal name `%2e%2e`, not `..`.
/// assert_eq!(ObjectKey::from_url_path("a/%252e%252e/b")?.as_str(), "a/%2e%2e/b");
/// # Ok::<(), private_storage::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(Arc<str>);

/// Why a string is not a valid [`ObjectKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("the key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("the key is {len} bytes long; the limit is {MAX_KEY_LEN}")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A segment is longer than [`MAX_SEGMENT_LEN`] bytes.
    #[error("a segment is {len} bytes long; the limit is {MAX_SEGMENT_LEN}")]
    SegmentTooLong {
        /// The segment's length in bytes.
        len: usize,
    },
    /// The key starts with `/`.
    #[error("the key starts with '/'; keys are relative to the storage root")]
    Absolute,
    /// The key has an empty segment (`a//b`, or a trailing `/`).
    #[error("the key has an empty segment")]
    EmptySegment,
    /// A segment is `.` or `..` (or looks like one).
    #[error("the key has a dot segment ('.' or '..')")]
    DotSegment,
    /// The key contains a character that is never allowed in a key.
    #[error("the key contains a forbidden character {0:?}")]
    ForbiddenChar(char),
    /// The first segment is a Windows drive prefix such as `C:`.
    #[error("the key starts with a drive prefix")]
    DrivePrefix,
    /// Percent-decoding produced bytes that are not UTF-8.
    #[error("the key is not valid UTF-8 once percent-decoded")]
    InvalidUtf8,
}

impl ObjectKey {
    /// Validates an already-decoded key.
    ///
    /// # Errors
    /// [`KeyError`] names the first rule the key breaks (see the type's docs).
    pub fn new(key: impl AsRef<str>) -> Result<Self, KeyError> {
        let key = key.as_ref();
        validate(key)?;
        Ok(Self(Arc::from(key)))
    }

    /// Percent-decodes a URL path (without its leading `/`) exactly once, then validates it.
    ///
    /// # Errors
    /// [`KeyError::InvalidUtf8`] when the decoded bytes are not UTF-8, otherwise as [`ObjectKey::new`].
    pub fn from_url_path(path: &str) -> Result<Self, KeyError> {
        let decoded = percent_decode_str(path).decode_utf8().map_err(|_| KeyError::InvalidUtf8)?;
        Self::new(decoded)
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments of the key, in order.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment: the file name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The key with every segment percent-encoded for use in a URL path (`/` kept).
    ///
    /// ```
    /// # use private_storage::ObjectKey;
    /// let key = ObjectKey::new("a b/ü?.txt")?;
    /// assert_eq!(key.to_url_path(), "a%20b/%C3%BC%3F.txt");
    /// assert_eq!(ObjectKey::from_url_path(&key.to_url_path())?, key);
    /// # Ok::<(), private_storage::KeyError>(())
    /// ```
    pub fn to_url_path(&self) -> String {
        utf8_percent_encode(&self.0, PATH_SEGMENT).to_string()
    }

    /// Whether this key lies inside the folder `prefix` (whole segments: `a/b` is inside `a`,
    /// `ab/c` is not).
    pub fn starts_with(&self, prefix: &ObjectKey) -> bool {
        self.0.strip_prefix(&*prefix.0).is_some_and(|rest| rest.starts_with('/'))
    }

    /// This key followed by `child` (which must itself be a valid key).
    pub fn join(&self, child: &ObjectKey) -> ObjectKey {
        ObjectKey(Arc::from(format!("{}/{}", self.0, child.0)))
    }
}

/// Characters escaped in a URL path: everything but unreserved characters and `/`
/// (RFC 3986 §3.3), so the result survives any proxy that decodes once.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b';')
    .add(b'=')
    .add(b'+')
    .add(b'&')
    .add(b'$')
    .add(b',')
    .add(b':')
    .add(b'@')
    .add(b'\'')
    .add(b'!')
    .add(b'*')
    .add(b'(')
    .add(b')');

fn validate(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if key.starts_with('/') {
        return Err(KeyError::Absolute);
    }
    // Every look-alike and invisible character is outside ASCII: an ASCII key (the usual one)
    // is checked byte by byte, without decoding.
    let forbidden = if key.is_ascii() {
        key.bytes().find(|&b| is_forbidden_ascii(b)).map(char::from)
    } else {
        key.chars().find(|&c| is_forbidden(c))
    };
    if let Some(c) = forbidden {
        return Err(KeyError::ForbiddenChar(c));
    }
    let first = key.split('/').next().unwrap_or(key);
    let b = first.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Err(KeyError::DrivePrefix);
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(KeyError::EmptySegment);
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(KeyError::SegmentTooLong { len: segment.len() });
        }
        if segment.chars().all(is_dot_like) {
            return Err(KeyError::DotSegment);
        }
    }
    Ok(())
}

pub(crate) fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\\'
            // Slash and backslash look-alikes: harmless on Linux, but they become separators
            // after NFKC normalisation or on other systems a file may be copied to.
            | '\u{2044}' | '\u{2215}' | '\u{2216}' | '\u{29F8}' | '\u{29F9}'
            | '\u{FE68}' | '\u{FF0F}' | '\u{FF3C}'
            // Invisible formatting that disguises names (RTLO "gpj.exe" tricks, zero widths, BOM).
            | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
        )
}

/// [`is_forbidden`] of an ASCII character.
fn is_forbidden_ascii(b: u8) -> bool {
    b.is_ascii_control() || b == b'\\'
}

fn is_dot_like(c: char) -> bool {
    matches!(c, '.' | '\u{2024}' | '\u{2025}' | '\u{2026}' | '\u{FE52}' | '\u{FF0E}')
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ObjectKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ObjectKey {
    type Error = KeyError;
    fn try_from(value: &str) -> Result<Self, KeyError> {
        Self::new(value)
    }
}

impl TryFrom<String> for ObjectKey {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, KeyError> {
        Self::new(value)
    }
}

impl std::str::FromStr for ObjectKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_check_forbids_what_the_character_check_forbids() {
        for b in 0..=0x7fu8 {
            assert_eq!(is_forbidden_ascii(b), is_forbidden(char::from(b)), "{b:#04x}");
            let key = format!("a/b{}c", char::from(b));
            let (fast, slow) = (validate(&key), validate(&format!("{key}\u{e9}")));
            assert_eq!(
                fast.is_err(),
                slow.is_err(),
                "{b:#04x}: the same verdict with or without a non-ASCII character"
            );
        }
    }

    #[test]
    fn valid_keys_are_kept_verbatim() {
        for key in [
            "a",
            "a/b/c.txt",
            "Heizölrückstoßabdämpfung.txt",
            ".htaccess",
            "a/.hidden",
            "...a",
            "a..b",
            "%2e%2e",
            "weird;name,with\"quotes.txt",
            "日本語/ファイル.pdf",
            "ab:c",
            "x/C:",
        ] {
            assert_eq!(ObjectKey::new(key).map(|k| k.to_string()), Ok(key.to_owned()), "{key:?}");
        }
    }

    #[test]
    fn invalid_keys_name_the_rule_they_break() {
        let long_segment = "x".repeat(256);
        let long_key = "a/".repeat(600);
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("/a", KeyError::Absolute),
            ("a/", KeyError::EmptySegment),
            ("a//b", KeyError::EmptySegment),
            (".", KeyError::DotSegment),
            ("..", KeyError::DotSegment),
            ("a/../b", KeyError::DotSegment),
            ("a/./b", KeyError::DotSegment),
            ("a/....", KeyError::DotSegment),
            ("a/\u{FF0E}\u{FF0E}/b", KeyError::DotSegment),
            ("\u{2025}/x", KeyError::DotSegment),
            ("a\\b", KeyError::ForbiddenChar('\\')),
            ("a\0b", KeyError::ForbiddenChar('\0')),
            ("a\nb", KeyError::ForbiddenChar('\n')),
            ("a\u{7f}", KeyError::ForbiddenChar('\u{7f}')),
            ("a\u{85}", KeyError::ForbiddenChar('\u{85}')),
            ("a\u{FF0F}b", KeyError::ForbiddenChar('\u{FF0F}')),
            ("a\u{2215}b", KeyError::ForbiddenChar('\u{2215}')),
            ("gpj\u{202E}.exe", KeyError::ForbiddenChar('\u{202E}')),
            ("\u{FEFF}a", KeyError::ForbiddenChar('\u{FEFF}')),
            ("C:/windows", KeyError::DrivePrefix),
            ("c:", KeyError::DrivePrefix),
            (&long_segment, KeyError::SegmentTooLong { len: 256 }),
            (&long_key, KeyError::TooLong { len: 1200 }),
        ];
        for (key, expected) in cases {
            assert_eq!(ObjectKey::new(key).as_ref().err(), Some(expected), "{key:?}");
        }
    }

    #[test]
    fn url_paths_are_decoded_exactly_once() {
        let cases: &[(&str, Result<&str, KeyError>)] = &[
            ("a%20b", Ok("a b")),
            ("a%2fb", Ok("a/b")),
            ("%2e%2e/x", Err(KeyError::DotSegment)),
            ("a%2F..%2Fb", Err(KeyError::DotSegment)),
            ("%252e%252e/x", Ok("%2e%2e/x")),
            ("a%5cb", Err(KeyError::ForbiddenChar('\\'))),
            ("a%00b", Err(KeyError::ForbiddenChar('\0'))),
            ("%c0%ae%c0%ae/x", Err(KeyError::InvalidUtf8)),
            ("%ff", Err(KeyError::InvalidUtf8)),
            ("%2fetc/passwd", Err(KeyError::Absolute)),
            ("caf%C3%A9.txt", Ok("café.txt")),
        ];
        for (path, expected) in cases {
            let got = ObjectKey::from_url_path(path);
            assert_eq!(got.as_ref().map(ObjectKey::as_str).map_err(Clone::clone), *expected, "{path:?}");
        }
    }

    #[test]
    fn url_path_round_trips() {
        for key in ["a b/c", "ü/%/?#/;=&", "x/[y]"] {
            let key = ObjectKey::new(key).unwrap();
            assert_eq!(ObjectKey::from_url_path(&key.to_url_path()).unwrap(), key);
        }
    }

    #[test]
    fn starts_with_matches_whole_segments() {
        let key = ObjectKey::new("users/1/a.txt").unwrap();
        assert!(key.starts_with(&ObjectKey::new("users").unwrap()));
        assert!(key.starts_with(&ObjectKey::new("users/1").unwrap()));
        assert!(!key.starts_with(&ObjectKey::new("users/10").unwrap()));
        assert!(!key.starts_with(&ObjectKey::new("user").unwrap()));
        assert!(!key.starts_with(&key));
    }
}
