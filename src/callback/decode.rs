//! Decoding callback bodies. Strict on purpose: a malformed percent escape or invalid
//! UTF-8 is a 400, never silently replaced, because the signature is computed over the
//! decoded values and a lossy decode would make an authentic callback fail the check
//! (or, worse, make two different bodies look the same).

use serde_json::{Map, Value};

/// What a POST body claims to be, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded`: what SignalWire's compatibility API sends.
    Form,
    /// `application/json` (or `application/*+json`): the seed's shape.
    Json,
}

/// Classifies a `Content-Type` header value; `None` means 415.
pub fn kind_of(content_type: Option<&str>) -> Option<BodyKind> {
    let essence = content_type?.split(';').next()?.trim();
    let (kind, subtype) = essence.split_once('/')?;
    if !kind.eq_ignore_ascii_case("application") {
        return None;
    }
    if subtype.eq_ignore_ascii_case("x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else if subtype.eq_ignore_ascii_case("json")
        || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json")
    {
        Some(BodyKind::Json)
    } else {
        None
    }
}

/// Why a body could not be decoded (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding at byte {0}")]
    BadEscape(usize),
    /// The decoded bytes of a name or value are not UTF-8.
    #[error("form field is not valid UTF-8 after decoding")]
    NotUtf8,
    /// The JSON does not parse.
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    /// The JSON parses but is not an object.
    #[error("body must be a JSON object")]
    NotAnObject,
}

/// Decoded callback fields, in the shape they arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Fields {
    /// Form or query fields, decoded, in the order received (names may repeat).
    Pairs(Vec<(String, String)>),
    /// A JSON object.
    Json(Map<String, Value>),
}

/// Decodes `application/x-www-form-urlencoded` bytes (a body or a query string).
pub fn decode_form(input: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let mut pairs = Vec::new();
    let mut offset = 0;
    for segment in input.split(|&b| b == b'&') {
        if !segment.is_empty() {
            let (name, value) = match segment.iter().position(|&b| b == b'=') {
                Some(eq) => (&segment[..eq], &segment[eq + 1..]),
                None => (segment, &b""[..]),
            };
            let value_offset = offset + name.len() + 1;
            pairs.push((decode_component(name, offset)?, decode_component(value, value_offset)?));
        }
        offset += segment.len() + 1;
    }
    Ok(pairs)
}

fn decode_component(input: &[u8], offset: usize) -> Result<String, DecodeError> {
    // Fast path: nothing to decode.
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        return std::str::from_utf8(input).map(str::to_owned).map_err(|_| DecodeError::NotUtf8);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(hi), Some(lo)) =
                    (input.get(i + 1).and_then(|&b| hex(b)), input.get(i + 2).and_then(|&b| hex(b)))
                else {
                    return Err(DecodeError::BadEscape(offset + i));
                };
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// Decodes a JSON body into an object.
pub fn decode_json(input: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::from_slice::<Value>(input) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::NotAnObject),
        Err(e) => Err(DecodeError::BadJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_types() {
        assert_eq!(kind_of(Some("application/x-www-form-urlencoded; charset=utf-8")), Some(BodyKind::Form));
        assert_eq!(kind_of(Some("Application/JSON")), Some(BodyKind::Json));
        assert_eq!(kind_of(Some("application/cloudevents+json")), Some(BodyKind::Json));
        assert_eq!(kind_of(Some("text/plain")), None);
        assert_eq!(kind_of(Some("application/xml")), None);
        assert_eq!(kind_of(None), None);
    }

    #[test]
    fn decodes_plus_and_escapes() {
        let pairs = decode_form(b"A=1&B=a+b%2Bc&C=&D&&E=%E2%82%AC").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "a b+c".into()),
                ("C".into(), "".into()),
                ("D".into(), "".into()),
                ("E".into(), "€".into()),
            ]
        );
    }

    #[test]
    fn rejects_bad_escapes_and_invalid_utf8() {
        assert_eq!(decode_form(b"A=%G1"), Err(DecodeError::BadEscape(2)));
        assert_eq!(decode_form(b"A=1&B=%4"), Err(DecodeError::BadEscape(6)));
        assert_eq!(decode_form(b"A=%FF"), Err(DecodeError::NotUtf8));
        assert_eq!(decode_form(b"A=\xff"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn json_must_be_an_object() {
        assert_eq!(decode_json(b"[1]"), Err(DecodeError::NotAnObject));
        assert!(matches!(decode_json(b"{"), Err(DecodeError::BadJson(_))));
        assert_eq!(decode_json(br#"{"a":1}"#).unwrap()["a"], 1);
    }

    proptest! {
        #[test]
        fn form_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_form(&bytes);
        }

        #[test]
        fn form_round_trips(pairs in proptest::collection::vec(("\\PC*", "\\PC*"), 0..8)) {
            let encoded: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs.iter())
                .finish();
            let decoded = decode_form(encoded.as_bytes()).unwrap();
            prop_assert_eq!(decoded, pairs);
        }

        #[test]
        fn json_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_json(&bytes);
        }
    }
}
