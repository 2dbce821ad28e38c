//! `Content-Disposition` in RFC 6266 form, the same for every client.

use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// How the browser should present a served file, and under which name.
///
/// Every client gets the same RFC 6266 header — no User-Agent sniffing: an ASCII
/// `filename="…"` fallback for old clients plus `filename*=UTF-8''…` (RFC 8187) with the exact
/// name. Quotes, backslashes, `%`, separators and control characters never reach the header raw.
///
/// ```
/// use private_storage::ContentDisposition;
///
/// let value = ContentDisposition::attachment().header_value("Heizölrückstoßabdämpfung.txt");
/// assert_eq!(
///     value,
///     "attachment; filename=\"Heizolruckstossabdampfung.txt\"; \
///      filename*=UTF-8''Heiz%C3%B6lr%C3%BCcksto%C3%9Fabd%C3%A4mpfung.txt"
/// );
/// ```
///
/// A `ContentDisposition` put into a request's extensions overrides the service's setting for
/// that request (a share link or a record view can choose the name this way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDisposition {
    attachment: bool,
    filename: Option<String>,
}

impl ContentDisposition {
    /// Display in the browser where possible.
    pub fn inline() -> Self {
        Self { attachment: false, filename: None }
    }

    /// Save as a file.
    pub fn attachment() -> Self {
        Self { attachment: true, filename: None }
    }

    /// Uses `filename` instead of the key's last segment.
    pub fn with_filename(mut self, filename: impl Into<String>) -> Self {
        self.filename = Some(filename.into());
        self
    }

    /// Whether this is `attachment`.
    pub fn is_attachment(&self) -> bool {
        self.attachment
    }

    /// The configured file name, if any.
    pub fn filename(&self) -> Option<&str> {
        self.filename.as_deref()
    }

    /// The header value for a file whose own name is `default_name` (the configured
    /// filename, if any, wins).
    pub fn header_value(&self, default_name: &str) -> HeaderValue {
        let name = self.filename.as_deref().unwrap_or(default_name);
        let kind = if self.attachment { "attachment" } else { "inline" };
        let value = if !name.is_empty() && name.bytes().all(is_attr_char) {
            // The common case (`report-2026.pdf`): both forms are the name itself.
            let mut value = String::with_capacity(kind.len() + 2 * name.len() + 32);
            for part in [kind, "; filename=\"", name, "\"; filename*=UTF-8''", name] {
                value.push_str(part);
            }
            value
        } else {
            format!(
                "{kind}; filename=\"{}\"; filename*=UTF-8''{}",
                ascii_fallback(name),
                utf8_percent_encode(name, ATTR_CHAR_ESCAPES)
            )
        };
        HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).expect("only visible ASCII is generated")
    }
}

/// Whether `byte` stands for itself in an RFC 8187 `value-chars` (and so, being visible ASCII
/// without `"`, `\`, `%` or `/`, in the quoted fallback too).
fn is_attr_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte)
}

/// RFC 8187 §3.2.1 `attr-char`: ALPHA / DIGIT / "!#$&+-.^_`|~"; everything else is escaped.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A printable-ASCII rendering of `name` for the `filename=` quoted string: transliterated
/// where possible (`ö` → `o`), with `"`, `\`, `%` (which some clients decode), `/` and
/// controls replaced by `_`.
fn ascii_fallback(name: &str) -> String {
    let transliterated = deunicode::deunicode_with_tofu(name, "_");
    let cleaned: String = transliterated
        .chars()
        .map(|c| match c {
            '"' | '\\' | '%' | '/' => '_',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '_',
        })
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() { "download".to_owned() } else { trimmed.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_attr_chars_only_take_the_short_path_to_the_same_header() {
        for name in ["report-2026.pdf", "a!#$&+-.^_`|~z", "x"] {
            assert!(name.bytes().all(is_attr_char), "{name}");
            let kind = ContentDisposition::inline();
            let slow = format!(
                "inline; filename=\"{}\"; filename*=UTF-8''{}",
                ascii_fallback(name),
                utf8_percent_encode(name, ATTR_CHAR_ESCAPES)
            );
            assert_eq!(kind.header_value(name), slow.as_str());
        }
        for byte in 0..128u8 {
            let one = (byte as char).to_string();
            let kept = utf8_percent_encode(&one, ATTR_CHAR_ESCAPES).to_string() == one;
            assert_eq!(is_attr_char(byte), kept, "{byte:#x}: the same set as ATTR_CHAR_ESCAPES");
        }
        for name in ["a b", "a\"b", "a%b", "a/b", "a\\b", "ö", ";", ","] {
            assert!(!name.bytes().all(is_attr_char), "{name}");
        }
    }

    #[test]
    fn disposition_headers_are_rfc_6266_for_every_name() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("test5.txt", "attachment; filename=\"test5.txt\"; filename*=UTF-8''test5.txt"),
            ("a b.pdf", "attachment; filename=\"a b.pdf\"; filename*=UTF-8''a%20b.pdf"),
            ("x\";y,z.txt", "attachment; filename=\"x_;y,z.txt\"; filename*=UTF-8''x%22%3By%2Cz.txt"),
            ("back\\slash%41.txt", "attachment; filename=\"back_slash_41.txt\"; filename*=UTF-8''back%5Cslash%2541.txt"),
            ("日本.pdf", "attachment; filename=\"Ri Ben .pdf\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.pdf"),
            ("\u{1F600}", "attachment; filename=\"grinning\"; filename*=UTF-8''%F0%9F%98%80"),
            ("  ", "attachment; filename=\"download\"; filename*=UTF-8''%20%20"),
            ("new\nline.txt", "attachment; filename=\"new_line.txt\"; filename*=UTF-8''new%0Aline.txt"),
        ];
        for (name, expected) in cases {
            assert_eq!(ContentDisposition::attachment().header_value(name), *expected, "{name:?}");
        }
    }

    #[test]
    fn configured_filename_overrides_and_inline_is_kept() {
        let d = ContentDisposition::inline().with_filename("report.pdf");
        assert_eq!(d.header_value("ignored.bin"), "inline; filename=\"report.pdf\"; filename*=UTF-8''report.pdf");
    }
}
