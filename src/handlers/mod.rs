//! Handlers: where an event goes once it is stored.
//!
//! A handler kind is one file in this folder with an options struct, a [`Handler`]
//! implementation, and one variant in [`HandlerKind`]. Everything a handler kind shares
//! (filters, timeout, retry policy, concurrency) lives in [`CommonOptions`] and is applied
//! by the dispatcher, not by the handler.

pub mod archive;
pub mod command;
pub mod email;
pub mod filter;
pub mod http;
pub mod log;
pub mod sms;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::event::StoredEvent;
use crate::signalwire::SignalWireConfig;
pub use filter::Filter;

/// What building a handler may need from the rest of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// `[signalwire]`: REST access for `archive`, `sms` and `email` attachments.
    pub signalwire: &'a SignalWireConfig,
}

impl BuildContext<'static> {
    /// A context with every section at its defaults (no SignalWire credentials).
    pub fn defaults() -> Self {
        static DEFAULT: std::sync::OnceLock<SignalWireConfig> = std::sync::OnceLock::new();
        BuildContext { signalwire: DEFAULT.get_or_init(SignalWireConfig::default) }
    }
}

/// Why one delivery attempt failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// A transient failure: the attempt is retried after a backoff.
    #[error("{message}")]
    Retryable {
        /// What went wrong, for the delivery's `last_error`.
        message: String,
        /// How long the downstream asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// A failure that retrying cannot fix: the delivery is dead-lettered at once.
    #[error("{message}")]
    Permanent {
        /// What went wrong, for the delivery's `last_error`.
        message: String,
    },
}

impl DeliveryError {
    /// A retryable error with no `Retry-After`.
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError::Retryable { message: message.into(), retry_after: None }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError::Permanent { message: message.into() }
    }
}

/// One attempt to hand one event to one handler.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The stored event.
    pub event: &'a StoredEvent,
    /// The delivery's identifier in the store.
    pub delivery_id: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// A destination for recording events.
///
/// Implementations perform one attempt and classify its failure; the dispatcher owns
/// timeouts (it drops the future when `timeout` passes), retries and dead-lettering.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Delivers the event once.
    async fn deliver(&self, attempt: Attempt<'_>) -> Result<(), DeliveryError>;
}

/// Retry policy of one handler: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included) before the delivery is dead-lettered.
    pub max_attempts: u32,
    /// The backoff ceiling before the second attempt; it doubles with every attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The largest backoff ever waited, and the clamp on a downstream's `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 10, initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(600) }
    }
}

/// Options every handler accepts, whatever its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommonOptions {
    /// `RecordingStatus` values this handler wants; empty means all.
    pub events: Vec<crate::event::RecordingStatus>,
    /// `RecordingSource` values this handler wants; empty means all.
    pub sources: Vec<String>,
    /// `AccountSid` values this handler wants; empty means all.
    pub accounts: Vec<String>,
    /// Events shorter than this many seconds are not queued (events without a duration pass).
    pub min_duration: Option<u64>,
    /// The time one attempt may take before it is abandoned and retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Backoff and attempt limit.
    pub retry: RetryPolicy,
    /// Attempts of this handler that may run at once (a slow handler cannot starve
    /// others). Unset: the handler type's default (see [`HandlerKind::default_concurrency`]).
    pub concurrency: Option<usize>,
}

impl Default for CommonOptions {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            sources: Vec::new(),
            accounts: Vec::new(),
            min_duration: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            concurrency: None,
        }
    }
}

/// The per-type options of a handler, chosen by its `type` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HandlerKind {
    /// Write the event to the service log.
    Log(log::LogOptions),
    /// POST the event as JSON to a URL.
    Http(http::HttpOptions),
    /// Run a program with the event on stdin and in its environment.
    Command(command::CommandOptions),
    /// Download the recording and store it in a directory or an S3-compatible bucket.
    Archive(archive::ArchiveOptions),
    /// Send an e-mail, optionally with the recording attached.
    Email(email::EmailOptions),
    /// Send a text message through SignalWire's Messages API.
    Sms(sms::SmsOptions),
}

/// One `[handlers.<name>]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandlerConfig {
    /// Filters, timeout, retry and concurrency.
    #[serde(flatten)]
    pub common: CommonOptions,
    /// The handler's type and its own options.
    #[serde(flatten)]
    pub kind: HandlerKind,
}

/// Why a handler could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("handler `{handler}`: option `{option}`: {message}")]
pub struct BuildError {
    /// The handler's name (the `<name>` of `[handlers.<name>]`).
    pub handler: String,
    /// The option at fault; a key of another section when it starts with `signalwire.`
    /// (see [`BuildError::key`]).
    pub option: String,
    /// What is wrong with it.
    pub message: String,
}

impl BuildError {
    /// The full config key at fault: `handlers.<name>.<option>`, or the `signalwire.<key>`
    /// a handler needs.
    pub fn key(&self) -> String {
        if self.option.starts_with("signalwire.") || self.option == "signalwire" {
            self.option.clone()
        } else {
            format!("handlers.{}.{}", self.handler, self.option)
        }
    }

    /// A missing or bad `[signalwire]` key that handler `name` needs.
    pub(crate) fn signalwire(name: &str, problem: crate::signalwire::ConfigProblem) -> Self {
        BuildError {
            handler: name.to_owned(),
            option: problem.key.to_owned(),
            message: format!("{} (needed by handler `{name}`)", problem.message),
        }
    }

    /// An error in option `option` of handler `name`.
    pub(crate) fn option(name: &str, option: &str, message: impl Into<String>) -> Self {
        BuildError { handler: name.to_owned(), option: option.to_owned(), message: message.into() }
    }
}

impl HandlerKind {
    /// Attempts running at once when `concurrency` is not set: high for `log` (an attempt
    /// is a log line), moderate for `http` (a downstream service should not be flooded),
    /// low for `command` (each attempt is a process), and a few for `archive` (each holds
    /// a download and an upload open), `email` and `sms` (an SMTP relay or SignalWire's
    /// rate limits should not be hammered).
    pub fn default_concurrency(&self) -> usize {
        match self {
            HandlerKind::Log(_) => 64,
            HandlerKind::Http(_) => 16,
            HandlerKind::Command(_) => 4,
            HandlerKind::Archive(_) => 4,
            HandlerKind::Email(_) => 4,
            HandlerKind::Sms(_) => 4,
        }
    }
}

impl HandlerConfig {
    /// The options the dispatcher applies, with defaults that depend on the type resolved.
    pub fn effective_options(&self) -> CommonOptions {
        let mut options = self.common.clone();
        options.concurrency = Some(options.concurrency.unwrap_or_else(|| self.kind.default_concurrency()));
        options
    }

    /// Checks the common options and builds the handler with every other section at its
    /// defaults (enough for `log`, `http`, `command`).
    pub fn build(&self, name: &str) -> Result<Arc<dyn Handler>, BuildError> {
        self.build_with(name, &BuildContext::defaults())
    }

    /// Checks the common options and builds the handler.
    pub fn build_with(&self, name: &str, context: &BuildContext<'_>) -> Result<Arc<dyn Handler>, BuildError> {
        let err = |option: &str, message: &str| BuildError {
            handler: name.to_owned(),
            option: option.to_owned(),
            message: message.to_owned(),
        };
        if self.common.timeout.is_zero() {
            return Err(err("timeout", "must be greater than zero"));
        }
        if self.common.retry.max_attempts == 0 {
            return Err(err("retry.max_attempts", "must be at least 1"));
        }
        if self.common.retry.initial_backoff > self.common.retry.max_backoff {
            return Err(err("retry.initial_backoff", "must not exceed retry.max_backoff"));
        }
        if self.common.concurrency == Some(0) {
            return Err(err("concurrency", "must be at least 1"));
        }
        match &self.kind {
            HandlerKind::Log(o) => o.build(name),
            HandlerKind::Http(o) => o.build(name),
            HandlerKind::Command(o) => o.build(name),
            HandlerKind::Archive(o) => o.build(name, context),
            HandlerKind::Email(o) => o.build(name, context),
            HandlerKind::Sms(o) => o.build(name, context),
        }
    }

    /// The filter the ingest path applies before queueing a delivery for this handler.
    pub fn filter(&self) -> Filter {
        Filter::from_options(&self.common)
    }
}
