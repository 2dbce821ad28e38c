//! Conditional requests (RFC 9110 §13) and the response plan shared by every delivery mode.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE};
use http::{HeaderMap, Method};

use super::range::{self, Ranges};

/// What to answer, decided from the request headers and the object's validators alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// 200 with the whole representation.
    Full,
    /// 206 with these ranges (one: a plain partial response; several: `multipart/byteranges`).
    Partial(Vec<Range<u64>>),
    /// 304.
    NotModified,
    /// 412.
    PreconditionFailed,
    /// 416.
    Unsatisfiable,
}

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validators<'a> {
    /// Strong entity tag, quoted.
    pub(crate) etag: Option<&'a str>,
    pub(crate) last_modified: SystemTime,
    pub(crate) len: u64,
}

/// Plans the response, evaluating preconditions in the order of RFC 9110 §13.2.2:
///
/// 1. `If-Match` present and false → 412 (strong comparison, §13.1.1).
/// 2. Else `If-Unmodified-Since` present, a valid date, and the object is newer → 412 (§13.1.4).
/// 3. `If-None-Match` present and false → 304 for GET/HEAD, 412 otherwise (weak comparison,
///    §13.1.2).
/// 4. Else for GET/HEAD, `If-Modified-Since` a valid date and the object not newer → 304
///    (§13.1.3).
/// 5. For GET with `Range`: an `If-Range` that does not match (§13.1.5: strong ETag, or a
///    date equal to a Last-Modified that is itself strong, i.e. at least a second before `now`)
///    means the whole representation; otherwise the ranges are evaluated (§14.2). `Range` on
///    any other method, HEAD included, is ignored.
/// 6. Otherwise the whole representation.
///
/// Dates compare at one-second resolution, the resolution of HTTP-date.
pub(crate) fn plan(method: &Method, headers: &HeaderMap, v: Validators<'_>, now: SystemTime, max_parts: usize) -> Plan {
    let last_modified = secs(v.last_modified);
    let current = v.etag.and_then(|e| parse_tags(e.as_bytes())).and_then(|t| t.into_iter().next());
    let get_or_head = method == Method::GET || method == Method::HEAD;

    if let Some(if_match) = joined(headers, &IF_MATCH) {
        let ok = match parse_list(&if_match) {
            Some(TagList::Any) => true,
            Some(TagList::Tags(tags)) => current.as_ref().is_some_and(|c| tags.iter().any(|t| t.strong_eq(c))),
            // An unparsable If-Match cannot be shown to match.
            None => false,
        };
        if !ok {
            return Plan::PreconditionFailed;
        }
    } else if let Some(date) = date(headers, &IF_UNMODIFIED_SINCE)
        && last_modified > date
    {
        return Plan::PreconditionFailed;
    }

    if let Some(if_none_match) = joined(headers, &IF_NONE_MATCH) {
        let matched = match parse_list(&if_none_match) {
            Some(TagList::Any) => true,
            Some(TagList::Tags(tags)) => current.as_ref().is_some_and(|c| tags.iter().any(|t| t.weak_eq(c))),
            None => false,
        };
        if matched {
            return if get_or_head { Plan::NotModified } else { Plan::PreconditionFailed };
        }
    } else if get_or_head
        && let Some(date) = date(headers, &IF_MODIFIED_SINCE)
        && last_modified <= date
    {
        return Plan::NotModified;
    }

    if method != Method::GET {
        return Plan::Full;
    }
    let Some(range_header) = headers.get(RANGE) else { return Plan::Full };
    if let Some(if_range) = headers.get(IF_RANGE) {
        let value = if_range.as_bytes();
        let holds = if value.starts_with(b"\"") || value.starts_with(b"W/") {
            let tag = parse_tags(value).filter(|t| t.len() == 1).and_then(|t| t.into_iter().next());
            matches!((tag, &current), (Some(t), Some(c)) if t.strong_eq(c))
        } else {
            let strong_date = last_modified < secs(now);
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| httpdate::parse_http_date(s).ok())
                .is_some_and(|d| strong_date && secs(d) == last_modified)
        };
        if !holds {
            return Plan::Full;
        }
    }
    match range::evaluate(range_header.as_bytes(), v.len, max_parts) {
        Ranges::Ignore => Plan::Full,
        Ranges::Satisfiable(ranges) => Plan::Partial(ranges),
        Ranges::Unsatisfiable => Plan::Unsatisfiable,
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// A valid HTTP-date in `name`, in seconds; an invalid one is ignored (RFC 9110 §13.1.3-4).
fn date(headers: &HeaderMap, name: &http::HeaderName) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok().map(secs)
}

/// All lines of a list-valued header joined with commas (RFC 9110 §5.3).
fn joined(headers: &HeaderMap, name: &http::HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let mut out = values.next()?.as_bytes().to_vec();
    for v in values {
        out.push(b',');
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
}

#[derive(Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    /// The opaque tag with its quotes.
    opaque: &'a [u8],
}

impl EntityTag<'_> {
    /// Strong comparison (RFC 9110 §8.8.3.2): both strong and identical.
    fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: identical opaque tags, weakness ignored.
    fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

enum TagList<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

fn parse_list(value: &[u8]) -> Option<TagList<'_>> {
    if value.trim_ascii() == b"*" {
        return Some(TagList::Any);
    }
    parse_tags(value).map(TagList::Tags)
}

/// `#entity-tag` (RFC 9110 §8.8.3): `W/"…"` or `"…"`, comma-separated; `None` if malformed.
fn parse_tags(mut value: &[u8]) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    loop {
        value = value.trim_ascii_start();
        while let Some(rest) = value.strip_prefix(b",") {
            value = rest.trim_ascii_start();
        }
        if value.is_empty() {
            break;
        }
        let (weak, rest) = match value.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let body = rest.strip_prefix(b"\"")?;
        let close = body.iter().position(|&b| b == b'"')?;
        // etagc = %x21 / %x23-7E / obs-text
        if !body[..close].iter().all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
            return None;
        }
        tags.push(EntityTag { weak, opaque: &rest[..close + 2] });
        value = body[close + 1..].trim_ascii_start();
        if !(value.is_empty() || value.starts_with(b",")) {
            return None;
        }
    }
    (!tags.is_empty()).then_some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ETAG: &str = "\"5f-a\"";
    /// Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT
    const LM: u64 = 784_111_777;
    const OLDER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const SAME: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const NEWER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    fn run(method: Method, headers: &[(&str, &str)]) -> Plan {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let v = Validators {
            etag: Some(ETAG),
            // Half a second into the second: dates compare at second resolution.
            last_modified: UNIX_EPOCH + Duration::from_millis(LM * 1000 + 500),
            len: 100,
        };
        plan(&method, &map, v, UNIX_EPOCH + Duration::from_secs(LM + 3600), 16)
    }

    #[test]
    fn preconditions_follow_rfc_9110_section_13_2_2() {
        use Plan::*;
        let get = Method::GET;
        #[rustfmt::skip]
        type Case<'a> = (&'a str, Method, Vec<(&'a str, &'a str)>, Plan);
        let cases: Vec<Case<'_>> = vec![
            ("no headers", get.clone(), vec![], Full),
            ("if-match same", get.clone(), vec![("if-match", ETAG)], Full),
            ("if-match in list", get.clone(), vec![("if-match", "\"x\", \"5f-a\"")], Full),
            ("if-match on two lines", get.clone(), vec![("if-match", "\"x\""), ("if-match", ETAG)], Full),
            ("if-match star", get.clone(), vec![("if-match", "*")], Full),
            ("if-match other", get.clone(), vec![("if-match", "\"x\"")], PreconditionFailed),
            ("if-match weak never matches", get.clone(), vec![("if-match", "W/\"5f-a\"")], PreconditionFailed),
            ("if-match malformed", get.clone(), vec![("if-match", "5f-a")], PreconditionFailed),
            ("if-unmodified-since older", get.clone(), vec![("if-unmodified-since", OLDER)], PreconditionFailed),
            ("if-unmodified-since same", get.clone(), vec![("if-unmodified-since", SAME)], Full),
            ("if-unmodified-since invalid is ignored", get.clone(), vec![("if-unmodified-since", "yesterday")], Full),
            (
                "if-match wins over if-unmodified-since",
                get.clone(),
                vec![("if-match", ETAG), ("if-unmodified-since", OLDER)],
                Full,
            ),
            ("if-none-match same", get.clone(), vec![("if-none-match", ETAG)], NotModified),
            ("if-none-match weak matches", get.clone(), vec![("if-none-match", "W/\"5f-a\"")], NotModified),
            ("if-none-match star", get.clone(), vec![("if-none-match", "*")], NotModified),
            ("if-none-match other", get.clone(), vec![("if-none-match", "\"x\"")], Full),
            ("if-none-match on head", Method::HEAD, vec![("if-none-match", ETAG)], NotModified),
            ("if-none-match on post", Method::POST, vec![("if-none-match", ETAG)], PreconditionFailed),
            ("if-none-match malformed is ignored", get.clone(), vec![("if-none-match", "nope")], Full),
            ("if-modified-since same", get.clone(), vec![("if-modified-since", SAME)], NotModified),
            ("if-modified-since newer", get.clone(), vec![("if-modified-since", NEWER)], NotModified),
            ("if-modified-since older", get.clone(), vec![("if-modified-since", OLDER)], Full),
            ("if-modified-since invalid", get.clone(), vec![("if-modified-since", "soon")], Full),
            (
                "if-none-match takes precedence over if-modified-since",
                get.clone(),
                vec![("if-none-match", "\"x\""), ("if-modified-since", NEWER)],
                Full,
            ),
            (
                "if-match checked before if-none-match",
                get.clone(),
                vec![("if-match", "\"x\""), ("if-none-match", ETAG)],
                PreconditionFailed,
            ),
            (
                "failed if-unmodified-since beats 304",
                get.clone(),
                vec![("if-unmodified-since", OLDER), ("if-modified-since", NEWER)],
                PreconditionFailed,
            ),
            ("range", get.clone(), vec![("range", "bytes=0-9")], Partial(vec![0..10])),
            ("range on head is ignored", Method::HEAD, vec![("range", "bytes=0-9")], Full),
            ("unsatisfiable range", get.clone(), vec![("range", "bytes=100-")], Unsatisfiable),
            ("malformed range", get.clone(), vec![("range", "bytes=9-0")], Full),
            ("304 beats range", get.clone(), vec![("if-none-match", ETAG), ("range", "bytes=0-9")], NotModified),
            ("412 beats range", get.clone(), vec![("if-match", "\"x\""), ("range", "bytes=0-9")], PreconditionFailed),
            ("if-range same etag", get.clone(), vec![("if-range", ETAG), ("range", "bytes=0-9")], Partial(vec![0..10])),
            ("if-range stale etag", get.clone(), vec![("if-range", "\"old\""), ("range", "bytes=0-9")], Full),
            ("if-range weak etag", get.clone(), vec![("if-range", "W/\"5f-a\""), ("range", "bytes=0-9")], Full),
            ("if-range two etags", get.clone(), vec![("if-range", "\"5f-a\", \"5f-a\""), ("range", "bytes=0-9")], Full),
            ("if-range same date", get.clone(), vec![("if-range", SAME), ("range", "bytes=0-9")], Partial(vec![0..10])),
            ("if-range newer date", get.clone(), vec![("if-range", NEWER), ("range", "bytes=0-9")], Full),
            ("if-range garbage", get.clone(), vec![("if-range", "whenever"), ("range", "bytes=0-9")], Full),
            ("if-range unsatisfiable stale", get.clone(), vec![("if-range", "\"old\""), ("range", "bytes=500-")], Full),
        ];
        for (name, method, headers, expected) in cases {
            assert_eq!(run(method, &headers), expected, "{name}");
        }
    }

    #[test]
    fn if_range_date_needs_a_strong_last_modified() {
        // Modified within the same second as `now`: the date is a weak validator (§8.8.2.2).
        let mut map = HeaderMap::new();
        map.insert(IF_RANGE, HeaderValue::from_static(SAME));
        map.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
        let lm = UNIX_EPOCH + Duration::from_secs(LM);
        let v = Validators { etag: None, last_modified: lm, len: 10 };
        assert_eq!(plan(&Method::GET, &map, v, lm + Duration::from_millis(300), 16), Plan::Full);
        assert_eq!(plan(&Method::GET, &map, v, lm + Duration::from_secs(2), 16), Plan::Partial(vec![0..1]));
    }

    #[test]
    fn objects_without_etag_only_match_star() {
        let mut map = HeaderMap::new();
        map.insert(IF_MATCH, HeaderValue::from_static("\"a\""));
        let v = Validators { etag: None, last_modified: UNIX_EPOCH, len: 1 };
        assert_eq!(plan(&Method::GET, &map, v, UNIX_EPOCH, 16), Plan::PreconditionFailed);
        map.insert(IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(plan(&Method::GET, &map, v, UNIX_EPOCH, 16), Plan::Full);
    }

    #[test]
    fn entity_tag_lists_parse_strictly() {
        assert_eq!(parse_tags(b"\"a,b\", W/\"c\"").map(|t| t.len()), Some(2));
        for bad in [&b"\"a"[..], b"a", b"\"a\" x", b"W/a", b"\"a b\"", b""] {
            assert!(parse_tags(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
