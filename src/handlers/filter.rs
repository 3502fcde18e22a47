//! Which events a handler wants: `events`, `sources`, `accounts`, `min_duration`.

use std::collections::HashSet;

use super::CommonOptions;
use crate::event::{RecordingEvent, RecordingStatus};

/// A handler's filters, prepared for the ingest path.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    events: HashSet<RecordingStatus>,
    sources: HashSet<String>,
    accounts: HashSet<String>,
    min_duration: Option<u64>,
}

impl Filter {
    /// Builds the filter from a handler's common options.
    pub fn from_options(options: &CommonOptions) -> Self {
        Self {
            events: options.events.iter().copied().collect(),
            sources: options.sources.iter().cloned().collect(),
            accounts: options.accounts.iter().cloned().collect(),
            min_duration: options.min_duration,
        }
    }

    /// True when the handler wants this event. An empty list accepts everything; an event
    /// without `RecordingDuration` (an `in-progress` one) is not held back by `min_duration`.
    pub fn matches(&self, event: &RecordingEvent) -> bool {
        (self.events.is_empty() || self.events.contains(&event.recording_status))
            && (self.sources.is_empty() || self.sources.contains(&event.recording_source))
            && (self.accounts.is_empty() || self.accounts.contains(&event.account_sid))
            && match (self.min_duration, event.recording_duration) {
                (Some(min), Some(d)) => d >= min,
                _ => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: RecordingStatus, source: &str, account: &str, duration: Option<u64>) -> RecordingEvent {
        RecordingEvent {
            account_sid: account.into(),
            call_sid: Some("CA1".into()),
            recording_sid: "RE1".into(),
            recording_url: "https://a.signalwire.com/r".into(),
            recording_status: status,
            recording_duration: duration,
            recording_channels: 1,
            recording_source: source.into(),
            recording_start_time: None,
            recording_track: None,
            error_code: None,
            conference_sid: None,
            api_version: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn empty_filter_accepts_everything() {
        let f = Filter::default();
        assert!(f.matches(&event(RecordingStatus::Absent, "X", "A", None)));
    }

    #[test]
    fn each_filter_rejects_what_it_does_not_list() {
        let f = Filter::from_options(&CommonOptions {
            events: vec![RecordingStatus::Completed],
            sources: vec!["RecordVerb".into()],
            accounts: vec!["AC1".into()],
            min_duration: Some(10),
            ..Default::default()
        });
        assert!(f.matches(&event(RecordingStatus::Completed, "RecordVerb", "AC1", Some(10))));
        assert!(!f.matches(&event(RecordingStatus::Absent, "RecordVerb", "AC1", Some(10))));
        assert!(!f.matches(&event(RecordingStatus::Completed, "DialVerb", "AC1", Some(10))));
        assert!(!f.matches(&event(RecordingStatus::Completed, "RecordVerb", "AC2", Some(10))));
        assert!(!f.matches(&event(RecordingStatus::Completed, "RecordVerb", "AC1", Some(9))));
    }

    #[test]
    fn min_duration_lets_events_without_duration_through() {
        let f = Filter::from_options(&CommonOptions { min_duration: Some(5), ..Default::default() });
        assert!(f.matches(&event(RecordingStatus::InProgress, "RecordVerb", "AC1", None)));
    }
}
