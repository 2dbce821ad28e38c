//! The server's log: one line per event on stderr, as text (the default) or JSON
//! (`log_format = "json"`).
//!
//! Log lines carry what clients sent — names, paths, headers — and a log reader must be able
//! to trust that one line is one event. JSON escapes every value by itself; in text logs every
//! value, the message included, goes through [`Escaped`]: no field can start a new line,
//! rewind one with a carriage return, or reorder it with bidi controls.

use std::fmt::{self, Write as _};

use tracing_subscriber::field::{MakeExt, RecordFields};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Logs at `info` while serving and `warn` for other commands, unless `RUST_LOG` says otherwise.
pub(crate) fn init(json: bool, serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.fmt_fields(EscapedFields::default()).init();
    }
}

/// Text-log fields as `name=value`, each value escaped; the message bare, escaped too.
#[derive(Debug, Default)]
pub(crate) struct EscapedFields(());

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let format = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
            let text = format!("{value:?}");
            match field.name() {
                "message" => write!(w, "{}", Escaped(&text)),
                name => write!(w, "{name}={}", Escaped(&text)),
            }
        })
        .delimited(" ");
        format.format_fields(writer, fields)
    }
}

/// `text` with every control character (C0, DEL, C1 — newlines and carriage returns among
/// them) and every bidi embedding, override or isolate written as an escape (`\n`, `\u{202e}`).
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control()
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
            {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn no_value_can_forge_or_hide_a_log_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields::default())
            .finish();
        let forged = "ada\n2026-12-01T00:00:00Z  INFO login ok user=root\r\u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", path = %forged);
            let _entered = span.enter();
            tracing::warn!(name = %forged, debug = ?forged, count = 3, "failed login for {forged}");
        });
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 1, "one event, one line: {log}");
        assert!(!log.contains('\r') && !log.contains('\u{202e}'), "{log:?}");
        assert!(log.contains(r"name=ada\n2026-12-01T00:00:00Z  INFO login ok user=root\r\u{202e}"), "{log}");
        assert!(log.contains(r"failed login for ada\n2026"), "the message too: {log}");
        assert!(log.contains(r"request{path=ada\n2026"), "and span fields: {log}");
        assert!(log.contains("count=3"), "{log}");
    }
}
