//! `Range: bytes=…` (RFC 9110 §14.1.2, §14.2): parsing, satisfiability and coalescing.

use std::ops::Range;

/// Ranges separated by less than this many bytes are merged: a gap this small costs less than
/// the part header of `multipart/byteranges` (RFC 9110 §14.6 allows coalescing).
const COALESCE_GAP: u64 = 80;
/// Headers longer than this, or with more specs than [`MAX_SPECS`], are ignored unparsed.
const MAX_HEADER_LEN: usize = 4096;
const MAX_SPECS: usize = 256;

/// What a `Range` header asks of a representation of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// Serve the whole representation (200). The header was malformed, not `bytes`, or asked
    /// for more parts than the limit allows: RFC 9110 §14.2 lets a server ignore `Range`, and
    /// a 200 is always a correct answer, whereas a 416 would leave a legitimate client with nothing.
    Ignore,
    /// Serve these ranges (206): non-empty, sorted, non-overlapping, inside the representation.
    Satisfiable(Vec<Range<u64>>),
    /// No range overlaps the representation (416).
    Unsatisfiable,
}

enum Spec {
    /// `first-last`, with `last` possibly beyond the end (`first-` is `first-u64::MAX`).
    FromTo(u64, u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// Evaluates the `Range` header value against a representation of `len` bytes, allowing at
/// most `max_parts` parts once coalesced.
pub(crate) fn evaluate(header: &[u8], len: u64, max_parts: usize) -> Ranges {
    let Some(specs) = parse(header) else { return Ranges::Ignore };
    if len == 0 {
        // Only a non-zero suffix is satisfiable on an empty representation, and it selects
        // nothing: answer with the (empty) whole.
        return if specs.iter().any(|s| matches!(s, Spec::Suffix(n) if *n > 0)) {
            Ranges::Ignore
        } else {
            Ranges::Unsatisfiable
        };
    }
    let mut ranges: Vec<Range<u64>> = specs
        .into_iter()
        .filter_map(|spec| match spec {
            Spec::FromTo(first, _) if first >= len => None,
            Spec::FromTo(first, last) => Some(first..last.saturating_add(1).min(len)),
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some(len - n.min(len)..len),
        })
        .collect();
    if ranges.is_empty() {
        return Ranges::Unsatisfiable;
    }
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(COALESCE_GAP) => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.len() > max_parts {
        return Ranges::Ignore;
    }
    Ranges::Satisfiable(merged)
}

/// Parses `bytes=spec, spec…`; `None` for anything malformed (which is then ignored).
fn parse(header: &[u8]) -> Option<Vec<Spec>> {
    if header.len() > MAX_HEADER_LEN {
        return None;
    }
    let header = std::str::from_utf8(header).ok()?;
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // RFC 9110 §5.6.1: empty list elements are accepted and ignored.
    for element in set.split(',').map(|e| e.trim_matches([' ', '\t'])).filter(|e| !e.is_empty()) {
        if specs.len() == MAX_SPECS {
            return None;
        }
        let (first, last) = element.split_once('-')?;
        let spec = match (first, last) {
            ("", n) => Spec::Suffix(number(n)?),
            (f, "") => Spec::FromTo(number(f)?, u64::MAX),
            (f, l) => {
                let (f, l) = (number(f)?, number(l)?);
                if l < f {
                    return None;
                }
                Spec::FromTo(f, l)
            }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// A run of ASCII digits; values beyond `u64` saturate (they lie past any real end anyway).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

#[cfg(test)]
mod tests {
    use super::Ranges::{Ignore, Satisfiable, Unsatisfiable};
    use super::*;

    #[test]
    fn range_headers_evaluate_per_rfc_9110() {
        #[rustfmt::skip]
        let cases: &[(&str, u64, Ranges)] = &[
            ("bytes=0-0", 10, Satisfiable(vec![0..1])),
            ("bytes=0-9", 10, Satisfiable(vec![0..10])),
            ("bytes=2-", 10, Satisfiable(vec![2..10])),
            ("bytes=-3", 10, Satisfiable(vec![7..10])),
            ("bytes=-30", 10, Satisfiable(vec![0..10])),
            ("bytes=5-100", 10, Satisfiable(vec![5..10])),
            ("bytes=0-99999999999999999999999", 10, Satisfiable(vec![0..10])),
            ("BYTES = 1-2", 10, Satisfiable(vec![1..3])),
            ("bytes=1-2,,", 10, Satisfiable(vec![1..3])),
            ("bytes= 1-2 ,\t4-5", 10, Satisfiable(vec![1..6])),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=20-30, 10-", 10, Unsatisfiable),
            ("bytes=20-30, 1-1", 10, Satisfiable(vec![1..2])),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Ignore),
            ("bytes=5-1", 10, Ignore),
            ("bytes=", 10, Ignore),
            ("bytes=,", 10, Ignore),
            ("bytes=a-b", 10, Ignore),
            ("bytes=1-2-3", 10, Ignore),
            ("bytes=--1", 10, Ignore),
            ("bytes=+1-2", 10, Ignore),
            ("bytes=1 -2", 10, Ignore),
            ("items=0-1", 10, Ignore),
            ("bytes 0-1", 10, Ignore),
            ("", 10, Ignore),
        ];
        for (header, len, expected) in cases {
            assert_eq!(&evaluate(header.as_bytes(), *len, 16), expected, "{header:?} on {len} bytes");
        }
    }

    #[test]
    fn overlapping_and_nearby_ranges_are_coalesced_in_order() {
        let got = evaluate(b"bytes=500-600,0-10,5-20,590-700,-100", 10_000, 16);
        assert_eq!(got, Satisfiable(vec![0..21, 500..701, 9_900..10_000]));
    }

    #[test]
    fn too_many_parts_serve_the_whole_representation() {
        let many: Vec<String> = (0..17).map(|i| format!("{}-{}", i * 1000, i * 1000)).collect();
        let header = format!("bytes={}", many.join(","));
        assert_eq!(evaluate(header.as_bytes(), 100_000, 16), Ignore);
        assert!(matches!(evaluate(header.as_bytes(), 100_000, 17), Satisfiable(r) if r.len() == 17));
    }

    #[test]
    fn thousands_of_tiny_ranges_cannot_amplify_the_response() {
        // A classic amplification attempt: each byte many times over.
        let header = format!("bytes={}", vec!["0-"; 200].join(","));
        assert_eq!(evaluate(header.as_bytes(), 1000, 16), Satisfiable(vec![0..1000]));
        let header = format!("bytes={}", vec!["0-0"; 300].join(","));
        assert_eq!(evaluate(header.as_bytes(), 1000, 16), Ignore, "more specs than the parser accepts");
    }

    #[test]
    fn invalid_utf8_is_ignored() {
        assert_eq!(evaluate(b"bytes=0-\xff", 10, 16), Ignore);
    }
}
