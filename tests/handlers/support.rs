//! Building handlers from TOML, events, and the Python-run servers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use recordhook::event::StoredEvent;
use recordhook::handlers::{Attempt, BuildContext, BuildError, DeliveryError, Handler, HandlerConfig};
use recordhook::signalwire::SignalWireConfig;

use crate::signalwire_stub::{ACCOUNT, SignalWireStub};

/// A `[signalwire]` section for the stand-in.
pub fn signalwire(stub: &SignalWireStub) -> SignalWireConfig {
    let toml = stub.config_toml().replace("[signalwire]", "");
    toml_value(&toml)
}

/// Parses TOML into any config type, as the loader does (through figment).
pub fn toml_value<T: serde::de::DeserializeOwned>(text: &str) -> T {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text)).extract().unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Builds a handler from the body of a `[handlers.<name>]` table.
pub fn build(table: &str, signalwire: &SignalWireConfig) -> Result<Arc<dyn Handler>, BuildError> {
    let config: HandlerConfig = toml_value(table);
    config.build_with("seed", &BuildContext { signalwire })
}

/// A completed event for recording `sid` at `url`.
pub fn event(sid: &str, url: &str) -> StoredEvent {
    let json = serde_json::json!({
        "AccountSid": ACCOUNT,
        "CallSid": "4ac6f7a4-4a15-4b1f-8d35-5e2c3f0f6d53",
        "RecordingSid": sid,
        "RecordingUrl": url,
        "RecordingStatus": "completed",
        "RecordingDuration": 42,
        "RecordingChannels": 1,
        "RecordingSource": "RecordVerb",
    });
    StoredEvent::from_json(format!("ev-{sid}"), json.to_string()).unwrap()
}

/// One attempt.
pub async fn deliver(handler: &Arc<dyn Handler>, event: &StoredEvent, attempt: u32) -> Result<(), DeliveryError> {
    handler.deliver(Attempt { event, delivery_id: 1, attempt }).await
}

/// Asserts a retryable error and returns its message.
pub fn retryable(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Retryable { message, .. }) => message,
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

/// Asserts a permanent error and returns its message.
pub fn permanent(result: Result<(), DeliveryError>) -> String {
    match result {
        Err(DeliveryError::Permanent { message }) => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn python() -> String {
    std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// `true` when Python can import `module`; otherwise the test is skipped (and fails under
/// `CI=true`, naming the requirements file).
pub fn python_has(module: &str) -> bool {
    let ok =
        Command::new(python()).args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success());
    if !ok {
        let hint = "pip install -r tests/support/server_requirements.txt (scripts/test does), or set TEST_PYTHON";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "Python module `{module}` is required in CI: {hint}");
        eprintln!("skipped: Python module `{module}` is not installed; {hint}");
    }
    ok
}

/// A server run by a Python script from tests/support; stopped (stdin closed, then killed)
/// when dropped.
pub struct PythonServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PythonServer {
    /// Runs `tests/support/<script> <port> <args…>` and waits for it to print `ready`.
    pub fn start(script: &str, args: &[&str]) -> PythonServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = format!("{}/tests/support/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(python())
            .arg(path)
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{script} did not start");
        PythonServer { child, port }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
