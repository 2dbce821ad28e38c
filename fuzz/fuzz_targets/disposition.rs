//! Content-Disposition building: always visible ASCII, a quoted fallback with nothing that
//! could end the quote, and a `filename*` that decodes back to the exact name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use private_storage::ContentDisposition;

fuzz_target!(|input: (bool, &str)| {
    let (attachment, name) = input;
    let kind = if attachment { ContentDisposition::attachment() } else { ContentDisposition::inline() };
    let value = kind.header_value(name);
    let text = value.to_str().expect("visible ASCII only");
    let (head, extended) = text.rsplit_once("; filename*=UTF-8''").expect("an extended filename");
    let decoded = percent_encoding::percent_decode_str(extended).decode_utf8().expect("UTF-8");
    assert_eq!(decoded, name, "filename* round-trips");
    let fallback = head.split_once("filename=\"").expect("a fallback").1.strip_suffix('"').expect("closed quote");
    assert!(!fallback.is_empty() && !fallback.contains(['"', '\\', '%']), "{fallback:?}");
});
