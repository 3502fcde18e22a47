//! `log`: writes each event to the service log. Always succeeds.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Attempt, BuildError, DeliveryError, Handler};

/// The level a `log` handler writes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `ERROR`
    Error,
    /// `WARN`
    Warn,
    /// `INFO` (the default)
    #[default]
    Info,
    /// `DEBUG`
    Debug,
    /// `TRACE`
    Trace,
}

/// Options of a `log` handler.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogOptions {
    /// Log level of the line written for each event.
    pub level: Level,
}

impl LogOptions {
    pub(super) fn build(&self, name: &str) -> Result<Arc<dyn Handler>, BuildError> {
        Ok(Arc::new(LogHandler { name: name.to_owned(), level: self.level }))
    }
}

struct LogHandler {
    name: String,
    level: Level,
}

#[async_trait]
impl Handler for LogHandler {
    async fn deliver(&self, a: Attempt<'_>) -> Result<(), DeliveryError> {
        let e = &a.event.event;
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(
                    handler = %self.name,
                    event_id = %a.event.id,
                    recording_sid = %e.recording_sid,
                    recording_status = %e.recording_status,
                    event = %a.event.json,
                    "recording event"
                )
            };
        }
        match self.level {
            Level::Error => emit!(error),
            Level::Warn => emit!(warn),
            Level::Info => emit!(info),
            Level::Debug => emit!(debug),
            Level::Trace => emit!(trace),
        }
        Ok(())
    }
}
