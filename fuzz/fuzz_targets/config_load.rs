//! Config loading from TOML text: parse, unknown-key detection, every check, and the
//! building of each configured handler.
//!
//! Properties: nothing panics (a bad config must be an error naming the key, never a
//! crash at start-up), and the same text always gets the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recordhook::config::load_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let first = load_str(text).map_err(|e| e.to_string());
    let second = load_str(text).map_err(|e| e.to_string());
    assert_eq!(first.is_ok(), second.is_ok(), "loading is not deterministic");
    if let (Err(a), Err(b)) = (first, second) {
        assert_eq!(a, b, "loading is not deterministic");
    }
});
