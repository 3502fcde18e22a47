//! The signature verifier, on attacker-controlled URL, body and header.
//!
//! The input is split at the first two 0xFF bytes into URL, body and signature header
//! (0xFF never occurs in UTF-8, so it cannot collide with the text parts).
//!
//! Properties: nothing panics, whatever the three parts are; a signature we compute
//! ourselves over the same URL and body always verifies (Scheme A over the raw body, and
//! Scheme B over the fields when the body is a form); and that signature with one
//! character changed never does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recordhook::callback::decode_form;
use recordhook::signature::{SignedBody, SigningKey, Verifier, sign_fields, sign_raw};

const KEY: &str = "PSK_fuzz_signing_key";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xff);
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let raw = parts.next().unwrap_or_default();
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();

    let key = SigningKey::new(KEY);
    let verifier = Verifier::new(vec![SigningKey::new("PSK_other"), key.clone()]);

    // Arbitrary header, every body kind: must not panic.
    let _ = verifier.verify(&url, SignedBody::Json { raw }, &header);
    let _ = verifier.verify(&url, SignedBody::Query, &header);

    // Our own Scheme A signature over this URL and body verifies.
    let signed = sign_raw(&key, &url, raw);
    assert!(verifier.verify(&url, SignedBody::Json { raw }, &signed), "own Scheme A signature rejected");

    if let Ok(fields) = decode_form(raw) {
        let _ = verifier.verify(&url, SignedBody::Form { fields: &fields, raw }, &header);
        let signed = sign_fields(&key, &url, &fields);
        assert!(
            verifier.verify(&url, SignedBody::Form { fields: &fields, raw }, &signed),
            "own Scheme B signature rejected"
        );
        assert!(!verifier.verify(&url, SignedBody::Form { fields: &fields, raw }, &tamper(&signed)));
    }
    assert!(!verifier.verify(&url, SignedBody::Json { raw }, &tamper(&sign_raw(&key, &url, raw))));
});

/// The signature with its first character replaced by another of the same alphabet.
fn tamper(signature: &str) -> String {
    let mut chars: Vec<char> = signature.chars().collect();
    chars[0] = if chars[0] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}
