//! The recording event: what SignalWire sent, typed, and what every handler receives.
//!
//! Field names on the wire (and in the JSON handed to handlers) are SignalWire's own
//! PascalCase names. `RecordingDuration` and `RecordingChannels` are integers; every
//! field that arrived but is not modelled here is kept, as received, in [`RecordingEvent::extra`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `RecordingStatus`: the seed's three values plus `failed`, which SignalWire's `<Dial>`
/// and `<Conference>` documentation also lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingStatus {
    /// The recording has begun.
    InProgress,
    /// The file is available.
    Completed,
    /// Too short, or no audio was detected.
    Absent,
    /// The recording failed.
    Failed,
}

impl RecordingStatus {
    /// Every accepted value, in the order the documentation lists them.
    pub const ALL: [RecordingStatus; 4] =
        [RecordingStatus::InProgress, RecordingStatus::Completed, RecordingStatus::Absent, RecordingStatus::Failed];

    /// The wire spelling (`in-progress`, `completed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::InProgress => "in-progress",
            RecordingStatus::Completed => "completed",
            RecordingStatus::Absent => "absent",
            RecordingStatus::Failed => "failed",
        }
    }

    /// Parses the wire spelling; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// A final status: once one is stored, a later `in-progress` is stale.
    pub fn is_final(self) -> bool {
        !matches!(self, RecordingStatus::InProgress)
    }
}

impl fmt::Display for RecordingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated recording status callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordingEvent {
    /// The project (account) the recording belongs to.
    pub account_sid: String,
    /// The call; absent for conference recordings, which carry `ConferenceSid` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    /// The recording's identifier (opaque: SignalWire uses UUIDs, Twilio `RE…`).
    pub recording_sid: String,
    /// Where the audio can be fetched (no extension: WAV by default).
    pub recording_url: String,
    /// What happened to the recording.
    pub recording_status: RecordingStatus,
    /// Length in seconds; absent on `in-progress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_duration: Option<u64>,
    /// Number of audio channels.
    pub recording_channels: u32,
    /// What started the recording (`RecordVerb`, `DialVerb`, …): an open set.
    pub recording_source: String,
    /// When the recording started, as SignalWire formats it (RFC 2822).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_start_time: Option<String>,
    /// `inbound`, `outbound` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_track: Option<String>,
    /// SignalWire's error code (`0`, `16101` too short, `16102` silent), as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<serde_json::Value>,
    /// Present on conference recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_sid: Option<String>,
    /// The API version SignalWire called with (`2010-04-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Every other field that arrived, exactly as received.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The field names modelled by [`RecordingEvent`], in SignalWire spelling.
pub const KNOWN_FIELDS: [&str; 13] = [
    "AccountSid",
    "CallSid",
    "RecordingSid",
    "RecordingUrl",
    "RecordingStatus",
    "RecordingDuration",
    "RecordingChannels",
    "RecordingSource",
    "RecordingStartTime",
    "RecordingTrack",
    "ErrorCode",
    "ConferenceSid",
    "ApiVersion",
];

/// A stored event as the dispatcher hands it to a handler.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Our identifier for the event (a UUIDv7), stable across every delivery attempt.
    pub id: String,
    /// The event, typed.
    pub event: RecordingEvent,
    /// The event serialized as JSON exactly as it was stored: what `http` posts.
    pub json: String,
}

impl StoredEvent {
    /// Rebuilds a stored event from its id and stored JSON.
    pub fn from_json(id: String, json: String) -> Result<Self, serde_json::Error> {
        let event = serde_json::from_str(&json)?;
        Ok(Self { id, event, json })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_signalwire_names_and_keeps_extras() {
        let mut extra = BTreeMap::new();
        extra.insert("Foo".to_owned(), serde_json::Value::String("bar".into()));
        let event = RecordingEvent {
            account_sid: "AC".into(),
            call_sid: Some("CA".into()),
            recording_sid: "RE".into(),
            recording_url: "https://x.signalwire.com/r".into(),
            recording_status: RecordingStatus::InProgress,
            recording_duration: None,
            recording_channels: 2,
            recording_source: "RecordVerb".into(),
            recording_start_time: None,
            recording_track: None,
            error_code: None,
            conference_sid: None,
            api_version: Some("2010-04-01".into()),
            extra,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["RecordingStatus"], "in-progress");
        assert_eq!(json["RecordingChannels"], 2);
        assert_eq!(json["ApiVersion"], "2010-04-01");
        assert_eq!(json["Foo"], "bar");
        assert!(json.get("RecordingDuration").is_none());
        let back: RecordingEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn status_round_trips_through_its_wire_spelling() {
        for s in RecordingStatus::ALL {
            assert_eq!(RecordingStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RecordingStatus::parse("done"), None);
        assert!(!RecordingStatus::InProgress.is_final());
        assert!(RecordingStatus::Failed.is_final());
    }
}
