//! The validation rules of the product contract: the seed's eight required fields and
//! status enum, with the three documented departures (`failed` is a status;
//! `RecordingDuration` may be absent on `in-progress`; `CallSid` may be absent when
//! `ConferenceSid` is present). Every offending field is reported, not just the first.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Fields;
use crate::event::{KNOWN_FIELDS, RecordingEvent, RecordingStatus};

/// One offending field, by its SignalWire name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldError {
    /// The SignalWire field name, e.g. `RecordingSid`.
    pub field: String,
    /// What is wrong with it, e.g. `is required`.
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.to_owned(), message: message.into() }
}

/// A field's value as received: text from a form or query, any JSON value from JSON.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl Raw<'_> {
    /// The value as text, when it is text (a form value or a JSON string).
    fn as_str(&self) -> Option<&str> {
        match self {
            Raw::Text(s) => Some(s),
            Raw::Json(Value::String(s)) => Some(s),
            Raw::Json(_) => None,
        }
    }
}

/// Uniform read access over the two shapes, so the rules are written once.
struct Input<'a> {
    known: BTreeMap<&'static str, Raw<'a>>,
    extra: BTreeMap<String, Value>,
    repeated: Vec<&'static str>,
}

impl<'a> Input<'a> {
    fn from_pairs(pairs: &'a [(String, String)]) -> Self {
        let mut input = Input { known: BTreeMap::new(), extra: BTreeMap::new(), repeated: Vec::new() };
        for (name, value) in pairs {
            match KNOWN_FIELDS.iter().find(|k| **k == name) {
                Some(&known) => {
                    if input.known.insert(known, Raw::Text(value)).is_some() && !input.repeated.contains(&known) {
                        input.repeated.push(known);
                    }
                }
                // An unknown field sent twice is kept as a list of its values, in order.
                None => match input.extra.get_mut(name) {
                    Some(Value::Array(values)) => values.push(Value::String(value.clone())),
                    Some(first) => {
                        let first = first.take();
                        input.extra.insert(name.clone(), Value::Array(vec![first, Value::String(value.clone())]));
                    }
                    None => {
                        input.extra.insert(name.clone(), Value::String(value.clone()));
                    }
                },
            }
        }
        input
    }

    fn from_json(map: &'a Map<String, Value>) -> Self {
        let mut input = Input { known: BTreeMap::new(), extra: BTreeMap::new(), repeated: Vec::new() };
        for (name, value) in map {
            match KNOWN_FIELDS.iter().find(|k| **k == name) {
                // JSON null means "not sent".
                Some(_) if value.is_null() => {}
                Some(&known) => {
                    input.known.insert(known, Raw::Json(value));
                }
                None => {
                    input.extra.insert(name.clone(), value.clone());
                }
            }
        }
        input
    }

    /// A text field: `Ok(None)` when absent or empty, an error when not a string.
    fn text(&self, field: &'static str, errors: &mut Vec<FieldError>) -> Option<String> {
        match self.known.get(field)?.as_str() {
            Some("") => None,
            Some(s) => Some(s.to_owned()),
            None => {
                errors.push(error(field, "must be a string"));
                None
            }
        }
    }

    /// A non-negative integer field: JSON numbers, or text of decimal digits.
    fn integer(&self, field: &'static str, errors: &mut Vec<FieldError>) -> Option<u64> {
        let raw = self.known.get(field)?;
        let parsed = match (raw.as_str(), raw) {
            (Some(""), _) => return None,
            (Some(s), _) => parse_digits(s),
            (None, Raw::Json(Value::Number(n))) => n.as_u64(),
            (None, _) => None,
        };
        if parsed.is_none() {
            errors.push(error(field, "must be an integer greater than or equal to 0"));
        }
        parsed
    }

    fn present(&self, field: &'static str) -> bool {
        self.known.get(field).is_some_and(|raw| raw.as_str() != Some(""))
    }
}

/// Digits only: `+5`, ` 5`, `5.0` and `0x5` are not integers here.
fn parse_digits(s: &str) -> Option<u64> {
    if s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None }
}

/// Validates decoded fields against the product's rules.
pub fn validate(fields: &Fields) -> Result<RecordingEvent, Vec<FieldError>> {
    let input = match fields {
        Fields::Pairs(pairs) => Input::from_pairs(pairs),
        Fields::Json(map) => Input::from_json(map),
    };
    let mut errors: Vec<FieldError> = input.repeated.iter().map(|f| error(f, "must be sent only once")).collect();
    let required = |value: Option<String>, field: &'static str, errors: &mut Vec<FieldError>| {
        if value.is_none() && !errors.iter().any(|e| e.field == field) {
            errors.push(error(field, "is required"));
        }
        value
    };

    let account_sid = required(input.text("AccountSid", &mut errors), "AccountSid", &mut errors);
    let conference_sid = input.text("ConferenceSid", &mut errors);
    let call_sid = input.text("CallSid", &mut errors);
    if call_sid.is_none() && conference_sid.is_none() && !errors.iter().any(|e| e.field == "CallSid") {
        errors.push(error("CallSid", "is required (unless ConferenceSid is present)"));
    }
    let recording_sid = required(input.text("RecordingSid", &mut errors), "RecordingSid", &mut errors);
    let recording_url = required(input.text("RecordingUrl", &mut errors), "RecordingUrl", &mut errors);
    if let Some(Err(message)) = recording_url.as_deref().map(check_url) {
        errors.push(error("RecordingUrl", message));
    }
    let status_text = required(input.text("RecordingStatus", &mut errors), "RecordingStatus", &mut errors);
    let status = status_text.as_deref().and_then(|s| {
        let parsed = RecordingStatus::parse(s);
        if parsed.is_none() {
            errors.push(error("RecordingStatus", "must be one of in-progress, completed, absent, failed"));
        }
        parsed
    });
    let duration = input.integer("RecordingDuration", &mut errors);
    if !input.present("RecordingDuration") && status != Some(RecordingStatus::InProgress) {
        errors.push(error("RecordingDuration", "is required (unless RecordingStatus is in-progress)"));
    }
    let channels = input.integer("RecordingChannels", &mut errors);
    if channels == Some(0) {
        errors.push(error("RecordingChannels", "must be an integer greater than or equal to 1"));
    }
    if !input.present("RecordingChannels") {
        errors.push(error("RecordingChannels", "is required"));
    }
    let channels = channels.and_then(|c| {
        let c = u32::try_from(c).ok();
        if c.is_none() {
            errors.push(error("RecordingChannels", "is too large"));
        }
        c
    });
    let source = required(input.text("RecordingSource", &mut errors), "RecordingSource", &mut errors);
    let start_time = input.text("RecordingStartTime", &mut errors);
    let track = input.text("RecordingTrack", &mut errors);
    let api_version = input.text("ApiVersion", &mut errors);
    let error_code = input.known.get("ErrorCode").map(|raw| match raw {
        Raw::Text(s) => Value::String((*s).to_owned()),
        Raw::Json(v) => (*v).clone(),
    });

    if !errors.is_empty() {
        return Err(errors);
    }
    match (account_sid, recording_sid, recording_url, status, channels, source) {
        (Some(account_sid), Some(recording_sid), Some(recording_url), Some(status), Some(channels), Some(source)) => {
            Ok(RecordingEvent {
                account_sid,
                call_sid,
                recording_sid,
                recording_url,
                recording_status: status,
                recording_duration: duration,
                recording_channels: channels,
                recording_source: source,
                recording_start_time: start_time,
                recording_track: track,
                error_code,
                conference_sid,
                api_version,
                extra: input.extra,
            })
        }
        // Every `None` above pushed an error, so this arm is unreachable in practice;
        // answer it as a validation failure rather than trusting that with a panic.
        _ => Err(vec![error("RecordingSid", "could not be validated")]),
    }
}

fn check_url(value: &str) -> Result<(), &'static str> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err("must be an absolute http(s) URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::decode_form;
    use proptest::prelude::*;

    const EXAMPLE: &str = "AccountSid=b3877c40-da60-4998-90ad-b792e98472af&CallSid=b3877c40-da60-4998-90ad-b792e98472ca&RecordingSid=b3877c40-da60-4998-90ad-b792e984re01&RecordingUrl=https%3A%2F%2Fexample.signalwire.com%2Fapi%2Flaml%2F2010-04-01%2FAccounts%2Fb3877c40-da60-4998-90ad-b792e98472af%2FRecordings%2Fb3877c40-da60-4998-90ad-b792e984re01&RecordingStatus=completed&RecordingDuration=94&RecordingChannels=1&RecordingSource=RecordVerb";

    fn form(body: &str) -> Result<RecordingEvent, Vec<FieldError>> {
        validate(&Fields::Pairs(decode_form(body.as_bytes()).unwrap()))
    }

    fn json(body: &str) -> Result<RecordingEvent, Vec<FieldError>> {
        validate(&Fields::Json(serde_json::from_str(body).unwrap()))
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn signalwire_example_form_is_valid() {
        let e = form(EXAMPLE).unwrap();
        assert_eq!(e.recording_duration, Some(94));
        assert_eq!(e.recording_channels, 1);
        assert_eq!(e.recording_status, RecordingStatus::Completed);
        assert!(e.recording_url.starts_with("https://example.signalwire.com/"));
    }

    #[test]
    fn seed_json_is_valid_and_extras_are_kept() {
        let e = json(
            r#"{"AccountSid":"a","CallSid":"c","RecordingSid":"r","RecordingUrl":"https://x.signalwire.com/r",
                "RecordingStatus":"absent","RecordingDuration":0,"RecordingChannels":2,"RecordingSource":"DialVerb",
                "ErrorCode":16102,"Custom":{"k":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(e.recording_duration, Some(0));
        assert_eq!(e.error_code, Some(serde_json::json!(16102)));
        assert_eq!(e.extra["Custom"], serde_json::json!({"k":[1,2]}));
    }

    #[test]
    fn every_missing_field_is_named() {
        let errors = form("").unwrap_err();
        assert_eq!(
            fields(&errors),
            vec![
                "AccountSid",
                "CallSid",
                "RecordingSid",
                "RecordingUrl",
                "RecordingStatus",
                "RecordingDuration",
                "RecordingChannels",
                "RecordingSource"
            ]
        );
        assert!(errors.iter().all(|e| e.message.starts_with("is required")));
    }

    #[test]
    fn bad_values_are_named() {
        let body = EXAMPLE
            .replace("completed", "done")
            .replace("RecordingDuration=94", "RecordingDuration=-1")
            .replace("RecordingChannels=1", "RecordingChannels=0");
        let errors = form(&body).unwrap_err();
        assert_eq!(fields(&errors), vec!["RecordingStatus", "RecordingDuration", "RecordingChannels"]);
        let errors = form(&EXAMPLE.replace("https%3A%2F%2F", "ftp%3A%2F%2F")).unwrap_err();
        assert_eq!(fields(&errors), vec!["RecordingUrl"]);
        let errors = json(r#"{"AccountSid":1,"CallSid":"c","RecordingSid":"r","RecordingUrl":"https://h/r","RecordingStatus":"completed","RecordingDuration":1.5,"RecordingChannels":"x","RecordingSource":"s"}"#).unwrap_err();
        assert_eq!(fields(&errors), vec!["AccountSid", "RecordingDuration", "RecordingChannels"]);
    }

    #[test]
    fn documented_departures_are_accepted() {
        // `failed` is a status; in-progress may omit the duration.
        assert!(form(&EXAMPLE.replace("completed", "failed")).is_ok());
        let e = form(&EXAMPLE.replace("completed", "in-progress").replace("&RecordingDuration=94", "")).unwrap();
        assert_eq!(e.recording_duration, None);
        // ...but completed may not.
        let errors = form(&EXAMPLE.replace("&RecordingDuration=94", "")).unwrap_err();
        assert_eq!(fields(&errors), vec!["RecordingDuration"]);
        // Conference recordings carry ConferenceSid instead of CallSid.
        let conf = EXAMPLE.replace("CallSid=b3877c40-da60-4998-90ad-b792e98472ca", "ConferenceSid=CF1");
        assert_eq!(form(&conf).unwrap().conference_sid.as_deref(), Some("CF1"));
    }

    #[test]
    fn a_known_field_sent_twice_is_rejected() {
        let errors = form(&format!("{EXAMPLE}&RecordingSid=other")).unwrap_err();
        assert_eq!(fields(&errors), vec!["RecordingSid"]);
    }

    #[test]
    fn repeated_unknown_fields_become_a_list() {
        let e = form(&format!("{EXAMPLE}&Tag=a&Tag=b")).unwrap();
        assert_eq!(e.extra["Tag"], serde_json::json!(["a", "b"]));
    }

    proptest! {
        #[test]
        fn validation_never_panics(pairs in proptest::collection::vec(
            (prop::sample::select(KNOWN_FIELDS.to_vec()).prop_map(String::from), "\\PC{0,12}"), 0..16)) {
            let _ = validate(&Fields::Pairs(pairs));
        }
    }
}
