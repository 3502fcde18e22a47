//! Form bodies and query strings: `decode_form`, then `validate` on whatever decodes.
//!
//! Properties: nothing panics; a decoded form that validates serializes to the JSON the
//! store keeps, and that JSON reads back (what the dispatcher does with a stored event)
//! into the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recordhook::callback::{Fields, decode_form, validate};
use recordhook::event::StoredEvent;

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = decode_form(data) else { return };
    if let Ok(event) = validate(&Fields::Pairs(pairs)) {
        let json = serde_json::to_string(&event).expect("a validated event serializes");
        let stored = StoredEvent::from_json("id".into(), json.clone()).expect("stored JSON reads back");
        assert_eq!(serde_json::to_string(&stored.event).unwrap(), json);
    }
});
