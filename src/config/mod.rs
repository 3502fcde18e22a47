//! The configuration tree, as users write it in TOML (see `config.example.toml`).
//!
//! Loading (file + `RECORDHOOK_…` environment overrides, unknown-key detection, errors
//! that name the key and where it came from) lives in [`load`].

mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handlers::HandlerConfig;
pub(crate) use load::string_or_list;
pub use load::{ConfigError, load, load_str};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener and the callback route.
    pub server: ServerConfig,
    /// Signature verification of incoming callbacks.
    pub signature: SignatureConfig,
    /// Where events and deliveries are kept.
    pub store: StoreConfig,
    /// The dispatcher that runs deliveries.
    pub dispatch: DispatchConfig,
    /// SignalWire REST access (`archive`, `sms`, `email` attachments).
    pub signalwire: crate::signalwire::SignalWireConfig,
    /// Named handlers: `[handlers.<name>]`.
    pub handlers: BTreeMap<String, HandlerConfig>,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The callback route; answers POST (form or JSON) and GET (query string).
    pub path: String,
    /// `scheme://host[:port]` that SignalWire calls. Signatures are checked over this plus
    /// the request's path and query exactly as received.
    pub public_url: Option<String>,
    /// When `public_url` is unset, take scheme and host from `X-Forwarded-Proto` and
    /// `X-Forwarded-Host`. Only turn on behind a proxy that sets them.
    pub trust_forwarded_headers: bool,
    /// Largest request body accepted; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Time allowed to receive a request's headers and body.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On SIGTERM, how long running deliveries may take before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            path: "/recording-status".to_owned(),
            public_url: None,
            trust_forwarded_headers: false,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Whether signatures are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    /// Every callback must carry a valid signature (the default).
    #[default]
    Required,
    /// No check at all; a warning is logged at start-up.
    Disabled,
}

/// `[signature]`
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignatureConfig {
    /// `required` or `disabled`.
    pub mode: SignatureMode,
    /// SignalWire Signing Keys; any one may match (key rotation, several projects).
    /// From the environment, one key or several separated by commas.
    #[serde(deserialize_with = "load::string_or_list")]
    pub signing_keys: Vec<String>,
}

impl std::fmt::Debug for SignatureConfig {
    // Signing keys are secrets: never print them, not even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureConfig")
            .field("mode", &self.mode)
            .field("signing_keys", &format_args!("[{} redacted]", self.signing_keys.len()))
            .finish()
    }
}

/// Which store implementation holds events and deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// An embedded SQLite database (WAL, fsync on every commit): the default. One process.
    #[default]
    Sqlite,
    /// A shared PostgreSQL database: any number of replicas behind a load balancer.
    Postgres,
}

/// `[store]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (embedded, the default) or `postgres` (shared by several replicas).
    #[serde(rename = "type")]
    pub kind: StoreKind,
    /// SQLite database file; its directory is created if missing. (`sqlite` only.)
    pub path: PathBuf,
    /// PostgreSQL connection URL, `postgres://user@host:5432/db` (`postgres` only, and
    /// required there). A password may be in the URL, but prefer `PGPASSWORD` or the whole
    /// URL in `RECORDHOOK_STORE__URL`, so it stays out of files. Never logged.
    pub url: Option<String>,
    /// Most connections this process opens to PostgreSQL. (`postgres` only.)
    pub pool_size: usize,
    /// PEM file of the certificate authorities that sign the PostgreSQL server's
    /// certificate (a managed database's CA bundle, a private CA). Unset: the system's
    /// trust store. Whether TLS is used is the URL's `sslmode`. (`postgres` only.)
    pub ca_file: Option<PathBuf>,
    /// How long finished history is kept, e.g. `"30d"`: delivered deliveries, and events
    /// whose deliveries were all delivered, are deleted once older than this. Pending and
    /// dead deliveries and the quarantine are never purged. Unset: keep everything.
    /// Also the dedupe window: a purged (`RecordingSid`, `RecordingStatus`) is new again.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            path: PathBuf::from("./data/recordhook.db"),
            url: None,
            pool_size: 16,
            ca_file: None,
            retention: None,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    // The URL may carry a password: print it redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .field("retention", &self.retention)
            .finish()
    }
}

/// A connection URL with its password (if any) replaced by `***`, fit for logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        // Not a URL (a `key=value` connection string, say): show nothing of it.
        Err(_) => "(unparseable URL, redacted)".to_owned(),
    }
}

/// `[dispatch]`: how the dispatcher looks for work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// How often each handler's worker looks for due deliveries when nothing woke it
    /// (new events wake it at once; this catches retries coming due and expired leases).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Extra time on top of a handler's `timeout` before a claimed delivery's lease
    /// expires and another worker may take it over.
    #[serde(with = "humantime_serde")]
    pub lease_margin: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self { poll_interval: Duration::from_secs(1), lease_margin: Duration::from_secs(30) }
    }
}
