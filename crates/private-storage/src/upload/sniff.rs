//! What the bytes are (magic numbers, text, markup), and whether that agrees with the
//! allow-list, the declared type and the file name.

use crate::Error;
use crate::http::essence;

/// Bytes of markup that make a binary format a polyglot a browser might render as a page.
const ACTIVE_MARKERS: &[&[u8]] =
    &[b"<script", b"<html", b"<!doctype html", b"<svg", b"<iframe", b"<body", b"<embed", b"<object"];

/// The type of the content that starts with `head` (which is all of it if it is short).
pub(crate) fn sniff(head: &[u8]) -> String {
    // Markup first: infer calls an SVG with an XML declaration plain XML.
    if let Some(markup) = leading_markup(head) {
        return markup.to_owned();
    }
    if let Some(kind) = infer::get(head) {
        return canonical(kind.mime_type()).to_owned();
    }
    if looks_like_text(head) { "text/plain".to_owned() } else { "application/octet-stream".to_owned() }
}

/// Markup at the start of a text (after a BOM and white space), as browsers sniff it.
fn leading_markup(head: &[u8]) -> Option<&'static str> {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head).trim_ascii_start();
    if !text.starts_with(b"<") {
        return None;
    }
    let start = &text[..text.len().min(1024)].to_ascii_lowercase();
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
    if start.starts_with(b"<?xml") || start.starts_with(b"<svg") || start.starts_with(b"<!doctype svg") {
        return Some(if has(b"<svg") { "image/svg+xml" } else { "application/xml" });
    }
    let html_starts: [&[u8]; 9] =
        [b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<iframe", b"<!--", b"<meta", b"<title"];
    html_starts.iter().any(|p| start.starts_with(p)).then_some("text/html")
}

fn looks_like_text(head: &[u8]) -> bool {
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        return true; // UTF-16 with a BOM
    }
    // The head may end inside a multi-byte character.
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    valid && !head.iter().any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B))
}

/// Whether binary content carries active markup in its first bytes (a GIF/HTML polyglot...).
pub(crate) fn has_active_markup(head: &[u8]) -> bool {
    ACTIVE_MARKERS.iter().any(|m| head.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)))
}

/// One spelling per type: aliases browsers and tools send are folded.
fn canonical(t: &str) -> &str {
    match t {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "image/x-png" => "image/png",
        "application/x-pdf" => "application/pdf",
        "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio/wav",
        "application/x-zip-compressed" | "application/x-zip" => "application/zip",
        "text/xml" => "application/xml",
        "application/x-gzip" => "application/gzip",
        "audio/mp3" => "audio/mpeg",
        "image/x-ms-bmp" => "image/bmp",
        "application/x-msdownload" | "application/x-dosexec" => "application/vnd.microsoft.portable-executable",
        other => other,
    }
}

/// Families of types that share one container, so the magic number cannot tell them apart.
const FAMILIES: &[&[&str]] = &[
    &[
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/epub+zip",
        "application/java-archive",
        "application/vnd.android.package-archive",
    ],
    &[
        "application/x-ole-storage",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.ms-outlook",
    ],
    &["video/mp4", "audio/mp4", "audio/m4a", "audio/x-m4a", "video/x-m4v", "video/quicktime", "video/3gpp"],
    &["audio/ogg", "video/ogg", "application/ogg", "audio/opus"],
    &["video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska"],
];

/// Types whose files always start with a signature `infer` knows: a name or a client claiming
/// one of these for bytes without the signature is lying.
fn has_signature(t: &str) -> bool {
    let (top, _) = t.split_once('/').unwrap_or((t, ""));
    matches!(top, "image" | "audio" | "video" | "font")
        || FAMILIES.iter().any(|f| f.contains(&t))
        || matches!(
            t,
            "application/pdf"
                | "application/gzip"
                | "application/x-7z-compressed"
                | "application/vnd.rar"
                | "application/x-rar-compressed"
                | "application/wasm"
                | "application/vnd.microsoft.portable-executable"
        )
}

/// Types a browser renders or runs as a page or script.
fn is_active_type(t: &str) -> bool {
    matches!(
        t,
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "application/xml"
            | "text/javascript"
            | "application/javascript"
    ) || t.ends_with("+xml")
}

/// Plain-text formats that sniff as `text/plain`.
fn is_textual(t: &str) -> bool {
    (t.starts_with("text/") && !matches!(t, "text/html" | "text/javascript" | "text/xsl" | "text/vnd.wap.wml"))
        || matches!(
            t,
            "application/json"
                | "application/x-yaml"
                | "application/yaml"
                | "application/toml"
                | "application/sql"
                | "application/x-sh"
                | "application/x-subrip"
                | "application/ld+json"
                | "application/x-ndjson"
        )
}

/// Whether a file whose bytes are `found` may be called `claimed` (by its name or its client).
pub(crate) fn compatible(found: &str, claimed: &str) -> bool {
    let claimed = canonical(claimed);
    found == claimed
        || claimed == "application/octet-stream"
        || FAMILIES.iter().any(|f| f.contains(&found) && f.contains(&claimed))
        // Text may go by any name that promises neither a binary signature nor active content.
        || (found == "text/plain" && (is_textual(claimed) || (!has_signature(claimed) && !is_active_type(claimed))))
        || (found == "application/xml" && claimed.ends_with("+xml") && claimed != "image/svg+xml")
        || (found == "application/octet-stream" && !has_signature(claimed) && !is_textual(claimed))
}

/// Whether `found` matches an allow-list entry (`type/subtype` or `type/*`).
pub(crate) fn allowed(found: &str, allow: &[String]) -> bool {
    allow.iter().any(|entry| {
        let entry = essence(entry);
        match entry.strip_suffix("/*") {
            Some(top) => found.split('/').next() == Some(top),
            // Unknown bytes pass only where unknown bytes are explicitly allowed.
            None if canonical(&entry) == "application/octet-stream" => found == "application/octet-stream",
            None => found != "application/octet-stream" && compatible(found, &entry),
        }
    })
}

/// Checks sniffed content against the allow-list, the client's declared type and the name's
/// extension.
pub(crate) fn check(found: &str, allow: &[String], declared: Option<&str>, filename: &str) -> Result<(), Error> {
    let unsupported = |expected: String| Error::UnsupportedType { found: found.to_owned(), expected };
    if !allow.is_empty() && !allowed(found, allow) {
        return Err(unsupported(format!("allowed: {}", allow.join(", "))));
    }
    if let Some(declared) = declared.map(essence).filter(|d| !d.is_empty())
        && !compatible(found, &declared)
    {
        return Err(unsupported(format!("the upload claimed {declared}")));
    }
    let guesses: Vec<&str> = mime_guess::from_path(filename).iter_raw().collect();
    if !guesses.is_empty() && !guesses.iter().any(|g| compatible(found, g)) {
        let ext = filename.rsplit('.').next().unwrap_or_default();
        return Err(unsupported(format!("a .{ext} file should be {}", guesses[0])));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0";
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n";
    const EXE: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0\xb8\0\0\0\0\0\0\0@\0\0\0\0\0\0\0";
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";

    #[test]
    fn content_is_sniffed_from_its_bytes() {
        #[rustfmt::skip]
        let cases: &[(&[u8], &str)] = &[
            (PNG, "image/png"),
            (PDF, "application/pdf"),
            (JPEG, "image/jpeg"),
            (EXE, "application/vnd.microsoft.portable-executable"),
            (b"hello, world\n", "text/plain"),
            ("grüße\n".as_bytes(), "text/plain"),
            (b"  <!DOCTYPE html><p>hi", "text/html"),
            (b"\xEF\xBB\xBF<html>", "text/html"),
            (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
            (b"<svg onload=alert(1)>", "image/svg+xml"),
            (b"<?xml version='1.0'?><note/>", "application/xml"),
            (b"a <script> in prose is text", "text/plain"),
            (b"\x00\x01\x02\x03binary", "application/octet-stream"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(sniff(bytes), *expected, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn checks_cross_the_allow_list_the_declared_type_and_the_extension() {
        let pdf_only = vec!["application/pdf".to_owned()];
        let images = vec!["image/*".to_owned()];
        #[rustfmt::skip]
        type Case<'a> = (&'a str, &'a [String], Option<&'a str>, &'a str, bool);
        let cases: &[Case<'_>] = &[
            ("application/pdf", &pdf_only, Some("application/pdf"), "a.pdf", true),
            ("application/pdf", &pdf_only, None, "a.pdf", true),
            ("application/vnd.microsoft.portable-executable", &pdf_only, Some("application/pdf"), "a.pdf", false),
            ("application/vnd.microsoft.portable-executable", &[], Some("application/pdf"), "a.pdf", false),
            ("application/vnd.microsoft.portable-executable", &[], None, "a.pdf", false),
            ("image/png", &images, Some("image/png"), "x.png", true),
            ("image/jpeg", &images, Some("image/jpg"), "x.JPG", true),
            ("text/html", &images, Some("image/png"), "x.png", false),
            ("text/html", &[], Some("image/png"), "x.png", false),
            ("image/svg+xml", &[], None, "x.png", false),
            ("image/svg+xml", &images, None, "x.svg", true),
            ("text/plain", &[], Some("text/csv"), "data.csv", true),
            ("text/plain", &[], Some("application/json"), "data.json", true),
            ("text/plain", &[], None, "photo.png", false),
            ("text/plain", &[], None, "mesh.x", true),
            ("text/plain", &[], None, "page.html", false),
            ("text/plain", &[], None, "drawing.svg", false),
            ("application/zip", &[], None, "report.docx", true),
            ("application/octet-stream", &[], None, "data.bin", true),
            ("application/octet-stream", &[], None, "x.png", false),
            ("application/octet-stream", &pdf_only, None, "data.bin", false),
            ("text/plain", &[], Some("application/octet-stream"), "notes", true),
            ("image/png", &["application/octet-stream".to_owned()], None, "x.png", false),
            ("application/octet-stream", &["application/octet-stream".to_owned()], None, "x.dat", true),
            ("text/plain", &["text/csv".to_owned()], None, "x.csv", true),
        ];
        for (found, allow, declared, name, ok) in cases {
            assert_eq!(
                check(found, allow, *declared, name).is_ok(),
                *ok,
                "{found} as {declared:?} named {name} against {allow:?}"
            );
        }
    }

    #[test]
    fn polyglot_markup_is_found_in_binary_heads() {
        assert!(has_active_markup(b"GIF89a\x01\0\x01\0<SCRIPT>alert(1)</script>"));
        assert!(!has_active_markup(PNG));
        // XMP metadata in JPEG and PDF files is XML, but not active markup.
        assert!(!has_active_markup(b"<?xpacket begin=''?><x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF/>"));
    }
}
