//! `sms`: texts each recipient through SignalWire's Messages API.
//!
//! One attempt sends one message per recipient (`POST …/Accounts/{project_id}/Messages.json`
//! with `From`, `To` and the rendered `Body`). Recipients already texted for an event are
//! remembered by the handler, so a retry after a partial failure texts only the rest
//! (unless the process restarted in between: delivery is at least once).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Attempt, BuildContext, BuildError, DeliveryError, Handler};
use crate::signalwire::Client;
use crate::template::{Context, Template};

/// Options of an `sms` handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsOptions {
    /// The sender: one of your SignalWire numbers (E.164, e.g. `+15550000000`), or an
    /// alphanumeric sender ID where SignalWire allows one.
    pub from: String,
    /// Recipients (E.164); each gets its own message.
    pub to: Vec<String>,
    /// The message text: a template over the event's fields, `event_id` and `format`.
    #[serde(default = "default_body")]
    pub body: String,
}

fn default_body() -> String {
    "Recording {{ RecordingSid }} ({{ RecordingDuration }} s) is ready: {{ RecordingUrl }}".to_owned()
}

/// How many (event, recipient) pairs are remembered as sent.
const SENT_MEMORY: usize = 10_000;

impl SmsOptions {
    pub(super) fn build(&self, name: &str, context: &BuildContext<'_>) -> Result<Arc<dyn Handler>, BuildError> {
        // Not checked as a number: some countries allow alphanumeric sender IDs.
        if self.from.trim().is_empty() {
            return Err(BuildError::option(
                name,
                "from",
                "must not be empty: one of your numbers, e.g. \"+15550000000\"",
            ));
        }
        if self.to.is_empty() {
            return Err(BuildError::option(name, "to", "must list at least one recipient"));
        }
        if let Some(bad) = self.to.iter().find(|t| !is_phone_like(t)) {
            return Err(BuildError::option(
                name,
                "to",
                format!("`{bad}` is not a phone number such as \"+15551112222\""),
            ));
        }
        let body = Template::parse(&self.body).map_err(|m| BuildError::option(name, "body", m))?;
        let client = context.signalwire.client().map_err(|p| BuildError::signalwire(name, p))?;
        Ok(Arc::new(SmsHandler {
            name: name.to_owned(),
            client,
            from: self.from.trim().to_owned(),
            to: self.to.iter().map(|t| t.trim().to_owned()).collect(),
            body,
            sent: Mutex::default(),
        }))
    }
}

/// Digits with an optional leading `+` (spaces, dashes, dots and brackets allowed), or a
/// short code. SignalWire has the last word; this only catches obvious mistakes.
fn is_phone_like(value: &str) -> bool {
    let v = value.trim();
    let digits = v.chars().filter(char::is_ascii_digit).count();
    digits >= 3
        && v.chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')') || (c == '+' && i == 0))
}

struct SmsHandler {
    name: String,
    client: Client,
    from: String,
    to: Vec<String>,
    body: Template,
    /// (event id, recipient) pairs texted already.
    sent: Mutex<HashSet<(String, String)>>,
}

#[async_trait]
impl Handler for SmsHandler {
    async fn deliver(&self, a: Attempt<'_>) -> Result<(), DeliveryError> {
        let body = self
            .body
            .render(&Context::new(a.event, "wav"))
            .map_err(|m| DeliveryError::permanent(format!("body: {m}")))?;
        for to in &self.to {
            let key = (a.event.id.clone(), to.clone());
            if self.sent.lock().expect("sms memory lock").contains(&key) {
                continue;
            }
            let sid = self.client.send_message(&self.from, to, &body).await.map_err(|e| with_recipient(e, to))?;
            tracing::info!(handler = %self.name, event_id = %a.event.id, to = %to, message_sid = ?sid, "text sent");
            let mut sent = self.sent.lock().expect("sms memory lock");
            if sent.len() >= SENT_MEMORY {
                sent.clear();
            }
            sent.insert(key);
        }
        Ok(())
    }
}

fn with_recipient(e: DeliveryError, to: &str) -> DeliveryError {
    match e {
        DeliveryError::Retryable { message, retry_after } => {
            DeliveryError::Retryable { message: format!("text to {to}: {message}"), retry_after }
        }
        DeliveryError::Permanent { message } => DeliveryError::permanent(format!("text to {to}: {message}")),
    }
}
