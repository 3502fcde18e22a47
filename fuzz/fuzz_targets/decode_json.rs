//! JSON bodies: `decode_json`, then `validate` on whatever decodes.
//!
//! Properties: nothing panics; a validated event round-trips through the stored JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recordhook::callback::{Fields, decode_json, validate};
use recordhook::event::StoredEvent;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = decode_json(data) else { return };
    if let Ok(event) = validate(&Fields::Json(map)) {
        let json = serde_json::to_string(&event).expect("a validated event serializes");
        let stored = StoredEvent::from_json("id".into(), json.clone()).expect("stored JSON reads back");
        assert_eq!(serde_json::to_string(&stored.event).unwrap(), json);
    }
});
