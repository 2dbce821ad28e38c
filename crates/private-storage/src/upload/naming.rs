//! Upload names: sanitising (the reference's `get_valid_name`, Unicode kept) and date folders.

use std::time::{SystemTime, UNIX_EPOCH};

/// File names longer than this (in bytes) are shortened, keeping the extension, so a random
/// suffix still fits within a segment.
const MAX_NAME: usize = 200;

/// The client's file name made safe as the last segment of a key: only the last path
/// component, control characters, `;` `,` `"` `<` `>` `:` `*` `?` `|` and the characters keys
/// forbid removed, white space turned into `_`, leading dots dropped (no hidden or staging
/// names). Never empty: `file` stands in for a name with nothing left.
pub(crate) fn clean_filename(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned = clean(last).unwrap_or_else(|| "file".to_owned());
    shorten(cleaned)
}

/// The client's file name as it may be shown and stored in a record: the last path component
/// (some browsers send a whole path), without control characters (C0, C1, DEL) or the
/// invisible characters that reorder text (bidirectional marks, embeddings, overrides and
/// isolates: `evil\u{202E}fdp.exe` would read as `evilexe.pdf`), trimmed, and at most
/// [`MAX_NAME`] bytes with the extension kept. Never empty: `file` stands in.
pub(crate) fn display_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control() && !is_bidi_control(*c)).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() { "file".to_owned() } else { shorten(cleaned.to_owned()) }
}

/// Unicode's bidirectional formatting characters (UAX #9, table 4).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// One folder name made safe as a key segment, or `None` if nothing usable is left.
pub(crate) fn clean_segment(segment: &str) -> Option<String> {
    clean(segment).map(shorten)
}

fn clean(s: &str) -> Option<String> {
    let cleaned: String = s
        .trim()
        .chars()
        .filter_map(|c| match c {
            c if c.is_whitespace() => Some('_'),
            ';' | ',' | '"' | '<' | '>' | ':' | '*' | '?' | '|' | '/' | '\\' => None,
            c if crate::key::is_forbidden(c) => None,
            c => Some(c),
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.');
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

fn shorten(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    let ext = name.rfind('.').map(|i| &name[i..]).filter(|e| e.len() <= 16).unwrap_or("");
    let mut cut = MAX_NAME - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &name[..cut])
}

/// Expands `%Y %m %d %H %M %S %%` in an `upload_to` folder with the UTC time `now`; other
/// `%` sequences are kept as they are.
pub(crate) fn expand_date(pattern: &str, now: SystemTime) -> String {
    if !pattern.contains('%') {
        return pattern.to_owned();
    }
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{year:04}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn display_names_lose_controls_and_reordering_characters_and_keep_their_extension() {
        for (sent, shown) in [
            ("Report 2026.pdf", "Report 2026.pdf"),
            ("C:\\fakepath\\Quartalsbericht März.pdf", "Quartalsbericht März.pdf"),
            ("evil\u{202E}fdp.exe", "evilfdp.exe"),
            ("a\u{2066}b\u{2069}\u{200F}.txt", "ab.txt"),
            ("line\nbreak\r\u{85}\u{1b}[31m.txt", "linebreak[31m.txt"),
            ("  \t ", "file"),
            ("\u{202D}", "file"),
        ] {
            assert_eq!(display_name(sent), shown, "{sent:?}");
        }
        let long = format!("{}.pdf", "ä".repeat(500));
        let shown = display_name(&long);
        assert!(shown.len() <= MAX_NAME && shown.ends_with(".pdf"), "{shown}");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn file_names_are_cleaned_like_the_reference_with_unicode_kept() {
        #[rustfmt::skip]
        let cases = [
            ("test1.txt", "test1.txt"),
            ("my report.pdf", "my_report.pdf"),
            ("a;b,c\"d.txt", "abcd.txt"),
            ("../../etc/passwd", "passwd"),
            ("C:\\Users\\x\\evil.exe", "evil.exe"),
            ("Heizölrückstoßabdämpfung.txt", "Heizölrückstoßabdämpfung.txt"),
            ("日本 語.pdf", "日本_語.pdf"),
            (".htaccess", "htaccess"),
            (".ps-tmp-1234", "ps-tmp-1234"),
            ("..", "file"),
            ("", "file"),
            ("a\u{202E}gpj.exe", "agpj.exe"),
            ("new\nline\t.txt", "new_line_.txt"),
            ("x<y>z:w*?|.txt", "xyzw.txt"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean_filename(input), expected, "{input:?}");
        }
    }

    #[test]
    fn long_names_keep_their_extension() {
        let name = clean_filename(&format!("{}.pdf", "ü".repeat(300)));
        assert!(name.len() <= MAX_NAME && name.ends_with(".pdf"), "{name}");
    }

    #[test]
    fn segments_with_nothing_usable_are_dropped() {
        assert_eq!(clean_segment("cust 1"), Some("cust_1".into()));
        for bad in ["", "..", ".", "  ", ";,"] {
            assert_eq!(clean_segment(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn date_placeholders_match_an_independent_calendar() {
        // httpdate formats the same instants: an oracle for the civil-date conversion.
        for secs in [0u64, 951_782_400, 1_709_164_800, 1_798_675_199, 4_107_542_400, 253_402_300_799] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let http = httpdate::fmt_http_date(t); // "Thu, 01 Jan 1970 00:00:00 GMT"
            let parts: Vec<&str> = http.split([' ', ':']).collect();
            let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let month = months.iter().position(|m| *m == parts[2]).unwrap() + 1;
            let expected = format!("{}/{month:02}/{}/{}{}{}", parts[3], parts[1], parts[4], parts[5], parts[6]);
            assert_eq!(expand_date("%Y/%m/%d/%H%M%S", t), expected, "{secs} ({http})");
        }
        assert_eq!(expand_date("docs/%%/%q/%", UNIX_EPOCH), "docs/%/%q/%");
    }
}
