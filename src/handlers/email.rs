//! `email`: sends an e-mail per event over SMTP, optionally with the recording attached.
//!
//! `smtp_url` chooses the connection: `smtps://host[:465]` (TLS from the start),
//! `smtp://host[:587]?tls=required` (STARTTLS, required), `smtp://host[:25]` (plain, for a
//! local relay). The user may be in the URL; the password comes from `smtp_password`
//! (best through the environment). An SMTP 4xx answer is retried, a 5xx answer is a dead
//! letter; connection and TLS failures are retried.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::archive::AudioFormat;
use super::{Attempt, BuildContext, BuildError, DeliveryError, Handler};
use crate::event::RecordingStatus;
use crate::signalwire::Client;
use crate::template::{Context, Template};

/// Options of an `email` handler.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailOptions {
    /// `smtps://[user@]host[:port]`, `smtp://[user@]host[:port]?tls=required` (STARTTLS) or
    /// `smtp://host[:port]` (no TLS: local relays only).
    pub smtp_url: String,
    /// The SMTP password for the URL's user. From the environment:
    /// `RECORDHOOK_HANDLERS__<NAME>__SMTP_PASSWORD`. Never logged.
    #[serde(default)]
    pub smtp_password: Option<String>,
    /// The sender: `rec@example.com` or `Recordings <rec@example.com>`.
    pub from: String,
    /// Recipients; one message is sent to all of them.
    pub to: Vec<String>,
    /// Subject template.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Plain-text body template.
    #[serde(default = "default_body")]
    pub body: String,
    /// Attach the recording (completed events only) when it is at most `attach_max_bytes`;
    /// a larger one is not attached and the body says so.
    #[serde(default)]
    pub attach: bool,
    /// The largest recording attached, in bytes.
    #[serde(default = "default_attach_max_bytes")]
    pub attach_max_bytes: u64,
    /// The attachment's format: `wav` (the default) or `mp3`; also the `format` template variable.
    #[serde(default)]
    pub format: AudioFormat,
}

impl fmt::Debug for EmailOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = url::Url::parse(&self.smtp_url).map(|mut u| {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            u.to_string()
        });
        f.debug_struct("EmailOptions")
            .field("smtp_url", url.as_mut().map(|u| &*u).unwrap_or(&"<invalid>".to_owned()))
            .field("smtp_password", &self.smtp_password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("body", &self.body)
            .field("attach", &self.attach)
            .field("attach_max_bytes", &self.attach_max_bytes)
            .field("format", &self.format)
            .finish()
    }
}

fn default_subject() -> String {
    "Recording {{ RecordingSid }} ({{ RecordingDuration }} s)".to_owned()
}

fn default_body() -> String {
    "Recording {{ RecordingSid }} of call {{ CallSid }} is {{ RecordingStatus }}.\n\nDuration: {{ RecordingDuration }} s\nAudio: {{ RecordingUrl }}\n".to_owned()
}

fn default_attach_max_bytes() -> u64 {
    10 * 1024 * 1024
}

impl EmailOptions {
    pub(super) fn build(&self, name: &str, context: &BuildContext<'_>) -> Result<Arc<dyn Handler>, BuildError> {
        let err = |option: &str, message: String| BuildError::option(name, option, message);
        let url = url::Url::parse(&self.smtp_url).map_err(|e| err("smtp_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(err("smtp_url", format!("scheme must be smtp or smtps, not `{}`", url.scheme())));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&self.smtp_url)
            .map_err(|e| err("smtp_url", format!("{e}")))?;
        if let Some(password) = &self.smtp_password {
            if url.username().is_empty() {
                return Err(err("smtp_password", "is set but smtp_url names no user (smtps://user@host)".into()));
            }
            let user = percent_decode(url.username());
            builder = builder.credentials(Credentials::new(user, password.clone()));
        }
        let transport = builder.build();

        let from: Mailbox = self.from.parse().map_err(|e| err("from", format!("not an e-mail address: {e}")))?;
        if self.to.is_empty() {
            return Err(err("to", "must list at least one recipient".into()));
        }
        let to = self
            .to
            .iter()
            .map(|t| t.parse::<Mailbox>().map_err(|e| err("to", format!("`{t}` is not an e-mail address: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let subject = Template::parse(&self.subject).map_err(|m| err("subject", m))?;
        let body = Template::parse(&self.body).map_err(|m| err("body", m))?;
        if self.attach && self.attach_max_bytes == 0 {
            return Err(err("attach_max_bytes", "must be greater than zero when attach = true".into()));
        }
        let downloader = if self.attach {
            Some(context.signalwire.downloader().map_err(|p| BuildError::signalwire(name, p))?)
        } else {
            None
        };
        Ok(Arc::new(EmailHandler {
            name: name.to_owned(),
            transport,
            from,
            to,
            subject,
            body,
            downloader,
            attach_max_bytes: self.attach_max_bytes,
            format: self.format,
        }))
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("u={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

struct EmailHandler {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: Template,
    body: Template,
    /// Set when `attach = true`.
    downloader: Option<Client>,
    attach_max_bytes: u64,
    format: AudioFormat,
}

#[async_trait]
impl Handler for EmailHandler {
    async fn deliver(&self, a: Attempt<'_>) -> Result<(), DeliveryError> {
        let context = Context::new(a.event, self.format.as_str());
        let subject = self.subject.render(&context).map_err(|m| DeliveryError::permanent(format!("subject: {m}")))?;
        let mut body = self.body.render(&context).map_err(|m| DeliveryError::permanent(format!("body: {m}")))?;

        let mut attachment = None;
        if let Some(client) = &self.downloader
            && a.event.event.recording_status == RecordingStatus::Completed
        {
            match self.download(client, &a.event.event.recording_url).await? {
                Some((bytes, content_type)) => attachment = Some((bytes, content_type)),
                None => body.push_str(&format!(
                    "\n\n(The recording is larger than {} bytes and is not attached.)\n",
                    self.attach_max_bytes
                )),
            }
        }

        let mut builder = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let built = match attachment {
            None => builder.singlepart(SinglePart::plain(body)),
            Some((bytes, content_type)) => {
                let filename = format!("{}.{}", a.event.event.recording_sid, self.format.as_str());
                builder.multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(body))
                        .singlepart(Attachment::new(filename).body(bytes, content_type)),
                )
            }
        };
        let message = built.map_err(|e| DeliveryError::permanent(format!("cannot build the message: {e}")))?;
        match self.transport.send(message).await {
            Ok(response) => {
                tracing::info!(handler = %self.name, event_id = %a.event.id, code = %response.code(), "e-mail sent");
                Ok(())
            }
            Err(e) => {
                let message = format!("SMTP: {}", describe(&e));
                if e.is_permanent() {
                    Err(DeliveryError::permanent(message))
                } else {
                    // 4xx answers, connection and TLS failures, timeouts: all may pass.
                    Err(DeliveryError::retryable(message))
                }
            }
        }
    }
}

impl EmailHandler {
    /// The recording's bytes, or `None` when it is larger than `attach_max_bytes`.
    async fn download(&self, client: &Client, url: &str) -> Result<Option<(Vec<u8>, ContentType)>, DeliveryError> {
        let mut response = client.fetch_recording(url, self.format.as_str()).await?;
        if response.content_length().is_some_and(|n| n > self.attach_max_bytes) {
            return Ok(None);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|ct| ct.starts_with("audio/"))
            .and_then(|ct| ContentType::parse(ct).ok())
            .unwrap_or_else(|| ContentType::parse(self.format.content_type()).expect("a valid content type"));
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            DeliveryError::retryable(format!("download interrupted: {}", crate::outbound::error_chain(&e)))
        })? {
            if bytes.len() as u64 + chunk.len() as u64 > self.attach_max_bytes {
                return Ok(None);
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.is_empty() {
            return Err(DeliveryError::retryable("the recording was empty (not available yet?)"));
        }
        Ok(Some((bytes, content_type)))
    }
}

/// lettre's error with its sources, on one line.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(&format!(": {part}"));
        }
        source = s.source();
    }
    text.replace(['\r', '\n'], " ")
}
