//! recordhook: receives SignalWire `RecordingStatusCallback` webhooks, verifies and
//! validates them, stores them durably before acknowledging, and delivers each event to
//! every configured handler at least once.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod callback;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod event;
pub mod handlers;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod signalwire;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod template;
