//! `archive`: downloads the recording and stores it in a local directory (`file://`) or
//! an S3-compatible bucket (`s3://`).
//!
//! The audio is streamed from SignalWire to the destination: it is never held in memory
//! whole. A local file is written under a temporary name, fsync'd, checked and renamed
//! into place (and the directory fsync'd), so a file under its final name is always
//! complete. An S3 object is written by a multipart upload, which only becomes visible
//! when complete. What was stored is then verified (its size equals what was downloaded,
//! it is not empty, its content type is audio) and its SHA-256 logged. Only then, with
//! `delete_from_signalwire`, is the recording deleted at SignalWire.
//!
//! Idempotent: an attempt that finds the object already stored (a redelivery after a
//! crash, or after the recording was already deleted at SignalWire) does not download it
//! again and goes on to the delete step.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Attempt, BuildContext, BuildError, DeliveryError, Handler};
use crate::event::RecordingStatus;
use crate::signalwire::Client;
use crate::template::{Context, Template};

/// The audio format fetched from SignalWire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// `RecordingUrl` as it is: WAV (the default).
    #[default]
    Wav,
    /// `RecordingUrl` + `.mp3`.
    Mp3,
}

impl AudioFormat {
    /// `wav` or `mp3`: the `format` template variable.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioFormat::Wav => "wav",
            AudioFormat::Mp3 => "mp3",
        }
    }

    /// The content type stored when SignalWire's answer does not name an audio type.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Mp3 => "audio/mpeg",
        }
    }
}

/// Options of an `archive` handler.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveOptions {
    /// `wav` (the default) or `mp3`.
    #[serde(default)]
    pub format: AudioFormat,
    /// `file:///absolute/directory` or `s3://bucket[/prefix]`.
    pub destination: String,
    /// S3 endpoint URL for S3-compatible stores (MinIO, R2, …); default: AWS.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// S3 region; default: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub s3_region: Option<String>,
    /// Allow an `http://` `s3_endpoint` (local test stores only).
    #[serde(default)]
    pub s3_allow_http: bool,
    /// The object's path below the destination: a template over the event's fields,
    /// `event_id` and `format`. Empty segments are dropped; `.` and `..` are refused.
    #[serde(default = "default_path")]
    pub path: String,
    /// DELETE the recording at SignalWire once the copy is stored and verified.
    #[serde(default)]
    pub delete_from_signalwire: bool,
}

impl std::fmt::Debug for ArchiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveOptions")
            .field("format", &self.format)
            .field("destination", &self.destination)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_allow_http", &self.s3_allow_http)
            .field("path", &self.path)
            .field("delete_from_signalwire", &self.delete_from_signalwire)
            .finish()
    }
}

fn default_path() -> String {
    "{{ AccountSid }}/{{ CallSid }}/{{ RecordingSid }}.{{ format }}".to_owned()
}

/// How many parts of one S3 upload are in flight at once (each up to 5 MiB in memory).
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;

enum Destination {
    Dir(PathBuf),
    S3 { store: Arc<AmazonS3>, bucket: String, prefix: String },
}

impl ArchiveOptions {
    pub(super) fn build(&self, name: &str, context: &BuildContext<'_>) -> Result<Arc<dyn Handler>, BuildError> {
        let err = |option: &str, message: String| BuildError::option(name, option, message);
        let path = Template::parse(&self.path).map_err(|m| err("path", m))?;
        let url = url::Url::parse(&self.destination)
            .map_err(|e| err("destination", format!("not a URL (file:///dir or s3://bucket/prefix): {e}")))?;
        let s3_only = [
            ("s3_endpoint", self.s3_endpoint.is_some()),
            ("s3_region", self.s3_region.is_some()),
            ("s3_allow_http", self.s3_allow_http),
        ];
        let destination = match url.scheme() {
            "file" => {
                if let Some((option, _)) = s3_only.iter().find(|(_, set)| *set) {
                    return Err(err(option, "only applies to an s3:// destination".into()));
                }
                if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(err("destination", "a file:// URL must not name a host: file:///absolute/dir".into()));
                }
                let dir = url
                    .to_file_path()
                    .map_err(|_| err("destination", "must be an absolute directory: file:///absolute/dir".into()))?;
                Destination::Dir(dir)
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| err("destination", "names no bucket: s3://bucket[/prefix]".into()))?;
                let prefix = url.path().trim_matches('/').to_owned();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(region) = &self.s3_region {
                    builder = builder.with_region(region);
                } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                    builder = builder.with_region("us-east-1");
                }
                if let Some(endpoint) = &self.s3_endpoint {
                    let parsed =
                        url::Url::parse(endpoint).map_err(|e| err("s3_endpoint", format!("not a URL: {e}")))?;
                    match parsed.scheme() {
                        "https" => {}
                        "http" if self.s3_allow_http => {}
                        "http" => {
                            return Err(err("s3_endpoint", "is http://: set s3_allow_http = true to allow it".into()));
                        }
                        other => {
                            return Err(err("s3_endpoint", format!("scheme must be https (or http), not `{other}`")));
                        }
                    }
                    builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
                }
                builder = builder.with_allow_http(self.s3_allow_http);
                // The dispatcher owns retries (with the handler's backoff and timeout): the
                // store client only smooths over a single hiccup.
                builder = builder.with_retry(object_store::RetryConfig {
                    max_retries: 1,
                    retry_timeout: std::time::Duration::from_secs(10),
                    ..Default::default()
                });
                let store = builder.build().map_err(|e| err("destination", format!("cannot set up S3: {e}")))?;
                Destination::S3 { store: Arc::new(store), bucket: bucket.to_owned(), prefix }
            }
            other => {
                return Err(err("destination", format!("scheme must be file:// or s3://, not `{other}://`")));
            }
        };
        let client = context.signalwire.client().map_err(|p| BuildError::signalwire(name, p))?;
        Ok(Arc::new(ArchiveHandler {
            name: name.to_owned(),
            format: self.format,
            destination,
            path,
            delete: self.delete_from_signalwire,
            client,
        }))
    }
}

struct ArchiveHandler {
    name: String,
    format: AudioFormat,
    destination: Destination,
    path: Template,
    delete: bool,
    client: Client,
}

/// What was stored.
struct Stored {
    size: u64,
    sha256: String,
    content_type: String,
}

#[async_trait]
impl Handler for ArchiveHandler {
    async fn deliver(&self, a: Attempt<'_>) -> Result<(), DeliveryError> {
        let event = &a.event.event;
        if event.recording_status != RecordingStatus::Completed {
            // in-progress: no file yet; absent/failed: none will come. Nothing to archive.
            tracing::info!(handler = %self.name, event_id = %a.event.id, status = %event.recording_status,
                "not a completed recording: nothing to archive");
            return Ok(());
        }
        let rendered = self
            .path
            .render(&Context::new(a.event, self.format.as_str()))
            .map_err(|m| DeliveryError::permanent(format!("path: {m}")))?;
        let relative =
            clean_path(&rendered).map_err(|m| DeliveryError::permanent(format!("path `{rendered}`: {m}")))?;

        let location = self.location(&relative);
        if let Some(size) = self.existing_size(&relative).await? {
            tracing::info!(handler = %self.name, event_id = %a.event.id, %location, size,
                "recording already archived: not downloaded again");
        } else {
            let stored = self.copy(&event.recording_url, &relative).await?;
            tracing::info!(handler = %self.name, event_id = %a.event.id, %location, size = stored.size,
                sha256 = %stored.sha256, content_type = %stored.content_type, "recording archived");
        }
        if self.delete {
            self.client.delete_recording(&event.account_sid, &event.recording_sid).await?;
            tracing::info!(handler = %self.name, event_id = %a.event.id, recording_sid = %event.recording_sid,
                "recording deleted at SignalWire");
        }
        Ok(())
    }
}

impl ArchiveHandler {
    fn location(&self, relative: &str) -> String {
        match &self.destination {
            Destination::Dir(dir) => dir.join(relative).display().to_string(),
            Destination::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{}", s3_key(prefix, relative)),
        }
    }

    /// The size of the object when it is already stored (and not empty).
    async fn existing_size(&self, relative: &str) -> Result<Option<u64>, DeliveryError> {
        match &self.destination {
            Destination::Dir(dir) => match tokio::fs::metadata(dir.join(relative)).await {
                Ok(m) if m.is_file() && m.len() > 0 => Ok(Some(m.len())),
                _ => Ok(None),
            },
            Destination::S3 { store, prefix, .. } => {
                let key = object_path(prefix, relative)?;
                match store.head(&key).await {
                    Ok(meta) if meta.size > 0 => Ok(Some(meta.size)),
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(classify_store_error("looking up", &e)),
                }
            }
        }
    }

    /// Downloads the recording into the destination, then verifies what was stored.
    async fn copy(&self, recording_url: &str, relative: &str) -> Result<Stored, DeliveryError> {
        let response = self.client.fetch_recording(recording_url, self.format.as_str()).await?;
        let announced = response.content_length();
        let content_type = match response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(ct) if ct.starts_with("audio/") => ct.split(';').next().unwrap_or(ct).trim().to_owned(),
            Some(ct) if ct.starts_with("application/octet-stream") => self.format.content_type().to_owned(),
            None => self.format.content_type().to_owned(),
            Some(other) => {
                return Err(DeliveryError::retryable(format!(
                    "the recording was answered with content type `{other}`, not audio"
                )));
            }
        };
        let body = response.bytes_stream().map(|chunk| {
            chunk.map_err(|e| {
                DeliveryError::retryable(format!("download interrupted: {}", crate::outbound::error_chain(&e)))
            })
        });
        let (size, sha256) = match &self.destination {
            Destination::Dir(dir) => write_file(&dir.join(relative), body, announced).await?,
            Destination::S3 { store, prefix, .. } => {
                let key = object_path(prefix, relative)?;
                let written = upload(store.as_ref(), &key, &content_type, body, announced).await?;
                verify_object(store.as_ref(), &key, written.0, &content_type).await?;
                written
            }
        };
        Ok(Stored { size, sha256, content_type })
    }
}

/// Checks a downloaded length against the announced one and against zero.
fn check_length(received: u64, announced: Option<u64>) -> Result<(), DeliveryError> {
    if received == 0 {
        return Err(DeliveryError::retryable("the recording was empty (not available yet?)"));
    }
    if let Some(expected) = announced
        && expected != received
    {
        return Err(DeliveryError::retryable(format!("download truncated: received {received} of {expected} bytes")));
    }
    Ok(())
}

/// Streams `body` into `target` through a temporary file in the same directory: fsync,
/// verify the size on disk, rename into place, fsync the directory.
async fn write_file(
    target: &Path,
    mut body: impl futures_util::Stream<Item = Result<bytes::Bytes, DeliveryError>> + Unpin,
    announced: Option<u64>,
) -> Result<(u64, String), DeliveryError> {
    let io_err = |what: &str, path: &Path, e: std::io::Error| {
        DeliveryError::retryable(format!("{what} {}: {e}", path.display()))
    };
    let dir = target.parent().expect("a joined path has a parent");
    tokio::fs::create_dir_all(dir).await.map_err(|e| io_err("cannot create directory", dir, e))?;
    let file_name = target.file_name().and_then(|n| n.to_str()).unwrap_or("recording");
    let temp = dir.join(format!(".{file_name}.{}.part", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut file = tokio::fs::File::create(&temp).await.map_err(|e| io_err("cannot create", &temp, e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| io_err("cannot write", &temp, e))?;
        }
        file.flush().await.map_err(|e| io_err("cannot write", &temp, e))?;
        file.sync_all().await.map_err(|e| io_err("cannot fsync", &temp, e))?;
        check_length(size, announced)?;
        let on_disk = file.metadata().await.map_err(|e| io_err("cannot stat", &temp, e))?.len();
        if on_disk != size {
            return Err(DeliveryError::retryable(format!(
                "verification failed: {} holds {on_disk} bytes, {size} were downloaded",
                temp.display()
            )));
        }
        drop(file);
        tokio::fs::rename(&temp, target).await.map_err(|e| io_err("cannot rename into", target, e))?;
        // The rename is durable once the directory entry is.
        if let Ok(d) = tokio::fs::File::open(dir).await {
            d.sync_all().await.map_err(|e| io_err("cannot fsync directory", dir, e))?;
        }
        Ok((size, hex::encode(hasher.finalize())))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result
}

/// Streams `body` into an S3 multipart upload (aborted on failure).
async fn upload(
    store: &AmazonS3,
    key: &object_store::path::Path,
    content_type: &str,
    mut body: impl futures_util::Stream<Item = Result<bytes::Bytes, DeliveryError>> + Unpin,
    announced: Option<u64>,
) -> Result<(u64, String), DeliveryError> {
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, content_type.to_owned().into());
    let options = PutMultipartOptions { attributes, ..Default::default() };
    let upload =
        store.put_multipart_opts(key, options).await.map_err(|e| classify_store_error("starting upload of", &e))?;
    let mut writer = WriteMultipart::new(upload);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let streamed: Result<(), DeliveryError> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            writer
                .wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT)
                .await
                .map_err(|e| classify_store_error("uploading", &e))?;
            writer.put(chunk);
        }
        check_length(size, announced)
    }
    .await;
    if let Err(e) = streamed {
        let _ = writer.abort().await;
        return Err(e);
    }
    writer.finish().await.map_err(|e| classify_store_error("completing upload of", &e))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Reads the stored object's metadata back: the size and content type must be what was sent.
async fn verify_object(
    store: &AmazonS3,
    key: &object_store::path::Path,
    size: u64,
    content_type: &str,
) -> Result<(), DeliveryError> {
    let head = store
        .get_opts(key, GetOptions { head: true, ..Default::default() })
        .await
        .map_err(|e| classify_store_error("verifying", &e))?;
    if head.meta.size != size {
        return Err(DeliveryError::retryable(format!(
            "verification failed: {key} holds {} bytes, {size} were downloaded",
            head.meta.size
        )));
    }
    if let Some(stored) = head.attributes.get(&Attribute::ContentType)
        && stored.as_ref() != content_type
    {
        return Err(DeliveryError::retryable(format!(
            "verification failed: {key} has content type `{}`, not `{content_type}`",
            stored.as_ref()
        )));
    }
    Ok(())
}

fn classify_store_error(what: &str, e: &object_store::Error) -> DeliveryError {
    let message = format!("S3: {what} object failed: {e}");
    match e {
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            DeliveryError::permanent(message)
        }
        _ => DeliveryError::retryable(message),
    }
}

fn s3_key(prefix: &str, relative: &str) -> String {
    if prefix.is_empty() { relative.to_owned() } else { format!("{prefix}/{relative}") }
}

fn object_path(prefix: &str, relative: &str) -> Result<object_store::path::Path, DeliveryError> {
    object_store::path::Path::parse(s3_key(prefix, relative))
        .map_err(|e| DeliveryError::permanent(format!("path is not a valid object key: {e}")))
}

/// A rendered path made safe to join below the destination: segments split on `/`, empty
/// ones dropped; `.`, `..`, backslashes and control characters refused.
fn clean_path(rendered: &str) -> Result<String, String> {
    let segments: Vec<&str> = rendered.split('/').map(str::trim).filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return Err("renders to an empty path".into());
    }
    for s in &segments {
        if *s == "." || *s == ".." {
            return Err("must not contain `.` or `..` segments".into());
        }
        if s.contains('\\') || s.chars().any(char::is_control) {
            return Err("must not contain backslashes or control characters".into());
        }
    }
    Ok(segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("/a//b/c.wav").unwrap(), "a/b/c.wav");
        assert!(clean_path("a/../b").is_err());
        assert!(clean_path("  / ").is_err());
        assert!(clean_path("a\\b").is_err());
    }
}
