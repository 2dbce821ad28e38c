//! Key canonicalisation: a canonical key never holds a dot or empty segment, a backslash, a
//! control character or a leading `/`, and it round-trips through its URL form.
#![no_main]
use libfuzzer_sys::fuzz_target;
use private_storage::{MAX_KEY_LEN, ObjectKey};

fuzz_target!(|path: &str| {
    let Ok(key) = ObjectKey::from_url_path(path) else { return };
    let s = key.as_str();
    assert!(!s.is_empty() && s.len() <= MAX_KEY_LEN, "{s:?}");
    assert!(!s.starts_with('/') && !s.contains('\\') && !s.chars().any(char::is_control), "{s:?}");
    for segment in s.split('/') {
        assert!(!segment.is_empty() && segment.chars().any(|c| c != '.'), "{s:?}");
    }
    assert_eq!(ObjectKey::from_url_path(&key.to_url_path()).unwrap(), key, "URL round trip");
    assert_eq!(ObjectKey::new(s).unwrap(), key, "decoded keys validate as they are");
});
