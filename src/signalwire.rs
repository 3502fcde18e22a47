//! SignalWire's REST API as the handlers use it: fetching recordings (only from allowed
//! hosts), deleting them, sending messages.
//!
//! `[signalwire]` configures it. Every request is HTTP Basic with the Project ID as user and
//! the API token as password. A `RecordingUrl` is checked against `recording_hosts` before
//! anything touches the network (no connection, not even a DNS look-up), and a redirect to a
//! host outside that list is not followed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::handlers::DeliveryError;
use crate::outbound::{classify_send_error, retry_after};

/// The REST API's path below the space (or `api_base`).
pub const API_PATH: &str = "/api/laml/2010-04-01";

/// How long connecting to SignalWire may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the connection may stay silent while a response is read.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most redirects followed (all within `recording_hosts`).
const MAX_REDIRECTS: usize = 5;

/// `[signalwire]`: REST access, used by `archive`, `sms` and `email` attachments.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalWireConfig {
    /// Your space: `example.signalwire.com` (a scheme may be given; https is the default).
    pub space_url: Option<String>,
    /// Instead of `space_url`: the base URL the REST paths are appended to, e.g.
    /// `http://127.0.0.1:9000` (a stand-in in tests, or a proxy).
    pub api_base: Option<String>,
    /// The Project ID (the user of HTTP Basic auth).
    pub project_id: Option<String>,
    /// The API token (the password). From the environment:
    /// `RECORDHOOK_SIGNALWIRE__API_TOKEN`. Never logged.
    pub api_token: Option<String>,
    /// Hosts a `RecordingUrl` may point to: exact host names, or `*.example.com` for any
    /// subdomain of `example.com`. A URL on any other host is never fetched. From the
    /// environment, separate several with commas.
    #[serde(deserialize_with = "crate::config::string_or_list")]
    pub recording_hosts: Vec<String>,
}

impl Default for SignalWireConfig {
    fn default() -> Self {
        Self {
            space_url: None,
            api_base: None,
            project_id: None,
            api_token: None,
            recording_hosts: vec!["*.signalwire.com".to_owned()],
        }
    }
}

impl fmt::Debug for SignalWireConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalWireConfig")
            .field("space_url", &self.space_url)
            .field("api_base", &self.api_base)
            .field("project_id", &self.project_id)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("recording_hosts", &self.recording_hosts)
            .finish()
    }
}

/// A config problem: the `signalwire.<key>` at fault and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// The key, spelled `signalwire.<key>`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SignalWireConfig {
    /// Checks what is set without requiring anything (called for every config).
    pub fn check(&self) -> Result<(), ConfigProblem> {
        let problem = |key, message: String| ConfigProblem { key, message };
        if self.space_url.is_some() && self.api_base.is_some() {
            return Err(problem("signalwire.api_base", "set either space_url or api_base, not both".into()));
        }
        if let Some(space) = &self.space_url {
            parse_base(space, true).map_err(|m| problem("signalwire.space_url", m))?;
        }
        if let Some(base) = &self.api_base {
            parse_base(base, false).map_err(|m| problem("signalwire.api_base", m))?;
        }
        for host in &self.recording_hosts {
            HostPattern::parse(host).map_err(|m| problem("signalwire.recording_hosts", m))?;
        }
        Ok(())
    }

    /// A client that can only download recordings (no credentials needed; they are sent
    /// when configured).
    pub fn downloader(&self) -> Result<Client, ConfigProblem> {
        self.check()?;
        let base = self.base().ok();
        let credentials = match (&self.project_id, &self.api_token) {
            (Some(p), Some(t)) if !p.trim().is_empty() && !t.trim().is_empty() => Some((p.clone(), t.clone())),
            _ => None,
        };
        Client::new(base, credentials, &self.recording_hosts)
    }

    /// A client for the REST API: needs a space (or `api_base`), `project_id` and `api_token`.
    pub fn client(&self) -> Result<Client, ConfigProblem> {
        self.check()?;
        let base = self.base()?;
        let project_id = self.project_id.as_deref().map(str::trim).filter(|p| !p.is_empty()).ok_or(ConfigProblem {
            key: "signalwire.project_id",
            message: "is required (your SignalWire Project ID)".into(),
        })?;
        let token = self.api_token.as_deref().filter(|t| !t.trim().is_empty()).ok_or(ConfigProblem {
            key: "signalwire.api_token",
            message: "is required: set RECORDHOOK_SIGNALWIRE__API_TOKEN".into(),
        })?;
        Client::new(Some(base), Some((project_id.to_owned(), token.to_owned())), &self.recording_hosts)
    }

    fn base(&self) -> Result<url::Url, ConfigProblem> {
        match (&self.space_url, &self.api_base) {
            (Some(space), _) => {
                parse_base(space, true).map_err(|m| ConfigProblem { key: "signalwire.space_url", message: m })
            }
            (None, Some(base)) => {
                parse_base(base, false).map_err(|m| ConfigProblem { key: "signalwire.api_base", message: m })
            }
            (None, None) => Err(ConfigProblem {
                key: "signalwire.space_url",
                message: "is required (e.g. \"example.signalwire.com\"), or set signalwire.api_base".into(),
            }),
        }
    }
}

/// `example.signalwire.com` or `https://example.signalwire.com[/prefix]` → a base URL
/// without a trailing slash.
fn parse_base(value: &str, default_https: bool) -> Result<url::Url, String> {
    let value = value.trim();
    let text = if default_https && !value.contains("://") { format!("https://{value}") } else { value.to_owned() };
    let url = url::Url::parse(&text).map_err(|e| format!("not a valid URL or host: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme must be http or https, not `{}`", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("must be scheme://host[:port][/path] without credentials, query or fragment".into());
    }
    Ok(url)
}

/// One entry of `recording_hosts`.
#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
}

impl HostPattern {
    fn parse(value: &str) -> Result<HostPattern, String> {
        let v = value.trim().to_ascii_lowercase();
        let (wild, host) = match v.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, v.clone()),
        };
        let valid = !host.is_empty()
            && !host.starts_with('.')
            && !host.ends_with('.')
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !valid {
            return Err(format!("`{value}` is not a host name or a `*.domain` wildcard"));
        }
        Ok(if wild { HostPattern::Suffix(format!(".{host}")) } else { HostPattern::Exact(host) })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host == h,
            HostPattern::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
        }
    }
}

/// Which hosts recordings may be fetched from.
#[derive(Debug, Clone)]
pub struct AllowList(Arc<Vec<HostPattern>>);

impl AllowList {
    /// Whether `host` (a URL's host, any case; IPv6 in brackets) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|p| p.matches(&host))
    }
}

/// A SignalWire REST client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Option<url::Url>,
    credentials: Option<(String, String)>,
    allow: AllowList,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base.as_ref().map(url::Url::as_str)).finish_non_exhaustive()
    }
}

impl Client {
    fn new(
        base: Option<url::Url>,
        credentials: Option<(String, String)>,
        hosts: &[String],
    ) -> Result<Client, ConfigProblem> {
        let patterns = hosts
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| ConfigProblem { key: "signalwire.recording_hosts", message: m })?;
        let allow = AllowList(Arc::new(patterns));
        let policy_allow = allow.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let host = attempt.url().host_str().unwrap_or("").to_owned();
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if !policy_allow.allows(&host) {
                attempt.error(RedirectRefused(host))
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .redirect(policy)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("recordhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigProblem { key: "signalwire", message: format!("cannot create an HTTP client: {e}") })?;
        Ok(Client { http, base, credentials, allow })
    }

    /// The allow-list of recording hosts.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// Starts downloading a recording: `RecordingUrl` plus the format's extension (`.mp3`
    /// for mp3, nothing for wav). The host is checked first; a host outside
    /// `recording_hosts` is a permanent error naming it, with no network activity at all.
    /// A 404 (not available yet) and 5xx/429 are retryable; other statuses permanent.
    pub async fn fetch_recording(&self, recording_url: &str, format: &str) -> Result<reqwest::Response, DeliveryError> {
        let url = self.recording_url(recording_url, format)?;
        let mut request = self.http.get(url.clone());
        if let Some((user, token)) = &self.credentials {
            request = request.basic_auth(user, Some(token));
        }
        let response = request.send().await.map_err(|e| classify_send_error("GET", &origin(&url), &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let message = format!("GET {} answered {status}", redact(&url));
        Err(match status.as_u16() {
            404 => DeliveryError::Retryable {
                message: format!("{message}: the recording is not available yet"),
                retry_after,
            },
            408 | 429 | 500..=599 => DeliveryError::Retryable { message, retry_after },
            _ => DeliveryError::permanent(message),
        })
    }

    /// `RecordingUrl` (+ extension), checked against the allow-list.
    pub fn recording_url(&self, recording_url: &str, format: &str) -> Result<url::Url, DeliveryError> {
        let mut url = url::Url::parse(recording_url)
            .map_err(|e| DeliveryError::permanent(format!("RecordingUrl is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DeliveryError::permanent(format!("RecordingUrl scheme `{}` is not http(s)", url.scheme())));
        }
        let host = url.host_str().unwrap_or("").to_owned();
        if !self.allow.allows(&host) {
            return Err(DeliveryError::permanent(format!(
                "RecordingUrl host `{host}` is not in signalwire.recording_hosts; not fetched"
            )));
        }
        if format == "mp3" && !url.path().ends_with(".mp3") {
            let path = format!("{}.mp3", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }

    /// `DELETE /Accounts/{account}/Recordings/{sid}`. 2xx and 404 (already gone) are done;
    /// 429 and 5xx retryable; other statuses permanent.
    pub async fn delete_recording(&self, account_sid: &str, recording_sid: &str) -> Result<(), DeliveryError> {
        let url = self.rest_url(&["Accounts", account_sid, "Recordings", recording_sid])?;
        let response = self
            .authed(self.http.delete(url.clone()))
            .send()
            .await
            .map_err(|e| classify_send_error("DELETE", &origin(&url), &e))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(self.rest_error("DELETE", &url, response).await)
    }

    /// `POST /Accounts/{project}/Messages.json` with `From`, `To`, `Body`. Returns the
    /// message's `sid` when SignalWire gave one.
    pub async fn send_message(&self, from: &str, to: &str, body: &str) -> Result<Option<String>, DeliveryError> {
        let project = self.credentials.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
        let url = self.rest_url(&["Accounts", &project, "Messages.json"])?;
        let response = self
            .authed(self.http.post(url.clone()))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string([("From", from), ("To", to), ("Body", body)]).unwrap_or_default())
            .send()
            .await
            .map_err(|e| classify_send_error("POST", &origin(&url), &e))?;
        if response.status().is_success() {
            let sid = response.json::<serde_json::Value>().await.ok().and_then(|v| v["sid"].as_str().map(String::from));
            return Ok(sid);
        }
        Err(self.rest_error("POST", &url, response).await)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some((user, token)) => request.basic_auth(user, Some(token)),
            None => request,
        }
    }

    fn rest_url(&self, segments: &[&str]) -> Result<url::Url, DeliveryError> {
        let mut url = self.base.clone().ok_or_else(|| DeliveryError::permanent("signalwire.space_url is not set"))?;
        {
            let mut path = url.path_segments_mut().map_err(|_| DeliveryError::permanent("bad signalwire base URL"))?;
            path.pop_if_empty();
            path.extend(API_PATH.trim_start_matches('/').split('/'));
            path.extend(segments);
        }
        Ok(url)
    }

    /// A REST error: 429/5xx retryable (honouring `Retry-After`), other statuses permanent,
    /// quoting SignalWire's own `message` (and `code`) when the body has them.
    async fn rest_error(&self, method: &str, url: &url::Url, response: reqwest::Response) -> DeliveryError {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = tokio::time::timeout(Duration::from_secs(2), response.bytes()).await.ok().and_then(Result::ok);
        let detail = body.as_deref().map(signalwire_error_text).unwrap_or_default();
        let mut message = format!("{method} {} answered {status}", origin(url));
        if !detail.is_empty() {
            message.push_str(&format!(": {detail}"));
        }
        if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
            DeliveryError::Retryable { message, retry_after }
        } else {
            DeliveryError::permanent(message)
        }
    }
}

/// `{"code": 21211, "message": "…"}` → `21211: …`; anything else → a bounded excerpt.
fn signalwire_error_text(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(message) = v["message"].as_str()
    {
        let code = match &v["code"] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => format!("{s}: "),
            other => format!("{other}: "),
        };
        return excerpt(&format!("{code}{message}"));
    }
    excerpt(&String::from_utf8_lossy(body))
}

fn excerpt(text: &str) -> String {
    let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect();
    line.trim().to_owned()
}

/// `scheme://host[:port]` of a URL (no path, query or credentials), for messages.
fn origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// The URL without credentials or query, for messages.
fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// The error a redirect off the allow-list stops with.
#[derive(Debug)]
struct RedirectRefused(String);

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redirect to host `{}` refused: not in signalwire.recording_hosts", self.0)
    }
}

impl std::error::Error for RedirectRefused {}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(hosts: &[&str]) -> AllowList {
        AllowList(Arc::new(hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect()))
    }

    #[test]
    fn host_patterns_match_exact_hosts_and_subdomains_only() {
        let a = allow(&["*.signalwire.com", "files.example.org"]);
        assert!(a.allows("example.signalwire.com"));
        assert!(a.allows("A.B.SignalWire.com"));
        assert!(!a.allows("signalwire.com"));
        assert!(!a.allows("evilsignalwire.com"));
        assert!(!a.allows("signalwire.com.evil.net"));
        assert!(a.allows("files.example.org"));
        assert!(!a.allows("x.files.example.org"));
        assert!(HostPattern::parse("*").is_err());
        assert!(HostPattern::parse("http://x").is_err());
    }

    #[test]
    fn config_checks_name_the_key() {
        let mut c = SignalWireConfig::default();
        assert_eq!(c.client().unwrap_err().key, "signalwire.space_url");
        c.space_url = Some("example.signalwire.com".into());
        assert_eq!(c.client().unwrap_err().key, "signalwire.project_id");
        c.project_id = Some("p".into());
        assert_eq!(c.client().unwrap_err().key, "signalwire.api_token");
        c.api_token = Some("t".into());
        let client = c.client().unwrap();
        let url = client.rest_url(&["Accounts", "p", "Messages.json"]).unwrap();
        assert_eq!(url.as_str(), "https://example.signalwire.com/api/laml/2010-04-01/Accounts/p/Messages.json");
        c.api_base = Some("http://127.0.0.1:9".into());
        assert_eq!(c.check().unwrap_err().key, "signalwire.api_base");
        c.space_url = None;
        let url = c.client().unwrap().rest_url(&["Accounts", "a b", "Recordings", "r"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/api/laml/2010-04-01/Accounts/a%20b/Recordings/r");
        c.recording_hosts = vec!["bad host!".into()];
        assert_eq!(c.check().unwrap_err().key, "signalwire.recording_hosts");
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = SignalWireConfig { api_token: Some("PT_s3cr3t".into()), ..Default::default() };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn recording_urls_off_the_list_are_refused_before_any_request() {
        let c = SignalWireConfig::default();
        let client = c.downloader().unwrap();
        let e = client.recording_url("https://evil.example.net/r/RE1", "wav").unwrap_err();
        assert!(matches!(&e, DeliveryError::Permanent { message } if message.contains("evil.example.net")), "{e:?}");
        let ok = client.recording_url("https://x.signalwire.com/r/RE1", "mp3").unwrap();
        assert_eq!(ok.path(), "/r/RE1.mp3");
    }

    #[test]
    fn signalwire_error_bodies_are_quoted() {
        assert_eq!(
            signalwire_error_text(br#"{"code":21211,"message":"Invalid 'To' Phone Number"}"#),
            "21211: Invalid 'To' Phone Number"
        );
        assert_eq!(signalwire_error_text(b"plain\ntext"), "plain text");
    }
}
