//! `http`: sends the event's JSON to a URL, optionally signed the Standard Webhooks way.
//!
//! One attempt is one request. The body is [`StoredEvent::json`] byte for byte, so a
//! downstream written for SignalWire's JSON callbacks works unchanged. Redirects are not
//! followed: a `3xx` is a configuration problem (the URL moved) and is reported as such.
//!
//! [`StoredEvent::json`]: crate::event::StoredEvent::json

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Attempt, BuildError, DeliveryError, Handler};
use crate::outbound::{classify_send_error, error_chain, retry_after};

/// The HTTP method an `http` handler sends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `POST` (the default).
    #[default]
    #[serde(alias = "post")]
    Post,
    /// `PUT`
    #[serde(alias = "put")]
    Put,
    /// `PATCH`
    #[serde(alias = "patch")]
    Patch,
}

impl Method {
    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
        }
    }
}

/// Options of a `http` handler.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpOptions {
    /// Where the event is sent: an absolute `http://` or `https://` URL.
    pub url: String,
    /// The request method: `POST` (the default), `PUT` or `PATCH`.
    #[serde(default)]
    pub method: Method,
    /// Extra request headers, name → value (for example an `Authorization` token).
    /// The headers the handler sets itself (`Content-Type`, `Idempotency-Key`, the
    /// `webhook-*` headers) and connection-level ones (`Host`, `Content-Length`, …) are
    /// refused. Values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Standard Webhooks signing secret: `whsec_` followed by the base64 of 24 to 64
    /// random bytes (the prefix may be left out). When set, every request carries
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature`. Best given through the
    /// environment (`RECORDHOOK_HANDLERS__<NAME>__SECRET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self.headers.keys().map(|k| (k.as_str(), REDACTED)).collect();
        f.debug_struct("HttpOptions")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("headers", &headers)
            .field("secret", &self.secret.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// The URL with any password in it replaced (for `Debug`).
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

/// Headers a user may not set: the handler sets them itself, or they belong to the
/// connection rather than to the request.
const RESERVED_HEADERS: [&str; 14] = [
    "content-type",
    "content-length",
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// The Standard Webhooks secret prefix.
const SECRET_PREFIX: &str = "whsec_";

/// How much of a response body goes into an error message.
const BODY_EXCERPT_BYTES: usize = 200;

/// How long reading a response body may take once the status is known.
const BODY_READ_LIMIT: Duration = Duration::from_secs(2);

/// How much of a successful response's body is read so the connection can be reused.
const DRAIN_BYTES: usize = 64 * 1024;

impl HttpOptions {
    pub(super) fn build(&self, name: &str) -> Result<Arc<dyn Handler>, BuildError> {
        let err =
            |option: &str, message: String| BuildError { handler: name.to_owned(), option: option.to_owned(), message };

        let url = url::Url::parse(&self.url).map_err(|e| err("url", format!("not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("url", format!("scheme must be http or https, not `{}`", url.scheme())));
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(err("url", "has no host".to_owned()));
        };
        let origin = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };

        let mut headers = HeaderMap::new();
        for (key, value) in &self.headers {
            let option = format!("headers.{key}");
            let name = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| err(&option, "not a valid header name".to_owned()))?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(err(&option, "is set by the handler and cannot be configured".to_owned()));
            }
            // The value is never echoed back: it may be a token.
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| err(&option, "value must be visible ASCII, spaces or tabs (no line breaks)".to_owned()))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }

        let signer = match &self.secret {
            None => None,
            Some(secret) => Some(Signer::new(secret).map_err(|m| err("secret", m.to_owned()))?),
        };

        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("recordhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| err("url", format!("cannot create an HTTP client: {}", error_chain(&e))))?;

        Ok(Arc::new(HttpHandler { client, url, origin, method: self.method.as_reqwest(), headers, signer }))
    }
}

/// Signs requests the Standard Webhooks way (`v1`, HMAC-SHA256).
struct Signer {
    key: Hmac<Sha256>,
}

impl Signer {
    fn new(secret: &str) -> Result<Self, &'static str> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        if encoded.is_empty() {
            return Err("is empty");
        }
        let bytes =
            STANDARD_PAD_INDIFFERENT.decode(encoded).map_err(|_| "must be `whsec_` followed by standard base64")?;
        if !(24..=64).contains(&bytes.len()) {
            return Err("must decode to between 24 and 64 bytes (Standard Webhooks)");
        }
        let key = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes).map_err(|_| "cannot be used as an HMAC key")?;
        Ok(Self { key })
    }

    /// The `webhook-signature` value for one message.
    fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

struct HttpHandler {
    client: reqwest::Client,
    url: url::Url,
    /// `scheme://host[:port]`, for error messages (no path, query or credentials).
    origin: String,
    method: reqwest::Method,
    headers: HeaderMap,
    signer: Option<Signer>,
}

#[async_trait]
impl Handler for HttpHandler {
    async fn deliver(&self, a: Attempt<'_>) -> Result<(), DeliveryError> {
        let event = a.event;
        let id = HeaderValue::from_str(&event.id)
            .map_err(|_| DeliveryError::permanent(format!("event id {:?} cannot be sent as a header", event.id)))?;

        let mut headers = self.headers.clone();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("idempotency-key"), id.clone());
        if let Some(signer) = &self.signer {
            let timestamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let signature = signer.sign(&event.id, timestamp, &event.json);
            headers.insert(HeaderName::from_static("webhook-id"), id);
            headers.insert(HeaderName::from_static("webhook-timestamp"), HeaderValue::from(timestamp));
            headers.insert(
                HeaderName::from_static("webhook-signature"),
                HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
            );
        }

        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(headers)
            .body(event.json.clone())
            .send()
            .await
            .map_err(|e| self.classify_error(&e))?;

        let status = response.status();
        if status.is_success() {
            drain(response).await;
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let location = response.headers().get(header::LOCATION).map(|v| excerpt(v.as_bytes(), BODY_EXCERPT_BYTES));
        let body = body_excerpt(response).await;

        let mut message = format!("{} {} answered {status}", self.method, self.origin);
        if let Some(location) = &location {
            message.push_str(&format!(" (redirect to {location}, not followed)"));
        }
        if !body.is_empty() {
            message.push_str(&format!(": {body}"));
        }

        let retryable = status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            // Informational or non-standard (6xx…) final statuses: nothing says the event
            // was taken, and nothing says trying again is pointless.
            || !(status.is_redirection() || status.is_client_error());
        if retryable {
            Err(DeliveryError::Retryable { message, retry_after })
        } else {
            Err(DeliveryError::Permanent { message })
        }
    }
}

impl HttpHandler {
    /// Classifies a failure to get a response at all.
    fn classify_error(&self, e: &reqwest::Error) -> DeliveryError {
        classify_send_error(self.method.as_str(), &self.origin, e)
    }
}

/// Reads the first bytes of an error response's body (bounded in size and time).
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    let read = async {
        while buf.len() < BODY_EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(BODY_READ_LIMIT, read).await;
    excerpt(&buf, BODY_EXCERPT_BYTES)
}

/// Reads a small successful response to its end so the connection goes back to the pool.
async fn drain(mut response: reqwest::Response) {
    if response.content_length().is_some_and(|n| n as usize > DRAIN_BYTES) {
        return;
    }
    let read = async {
        let mut total = 0;
        while total <= DRAIN_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => total += chunk.len(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(BODY_READ_LIMIT, read).await;
}

/// At most `max` bytes as one line of text (lossy UTF-8, control characters as spaces).
fn excerpt(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let text: String = String::from_utf8_lossy(cut).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.trim();
    if bytes.len() > max { format!("{text}…") } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, Method as AxumMethod, StatusCode};
    use axum::response::{IntoResponse, Response};

    use super::*;
    use crate::event::StoredEvent;
    use crate::handlers::{HandlerConfig, HandlerKind};

    const EVENT_ID: &str = "01963a2e-7c1d-7f3a-9b5e-2f4d6c8a0b1e";

    fn event() -> StoredEvent {
        let json = r#"{"AccountSid":"b3877c40-da60-4998-90ad-b792e98472af","CallSid":"4ac6f7a4-4a15-4b1f-8d35-5e2c3f0f6d53","RecordingSid":"e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59","RecordingUrl":"https://example.signalwire.com/api/laml/2010-04-01/Accounts/b3877c40-da60-4998-90ad-b792e98472af/Recordings/e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59","RecordingStatus":"completed","RecordingDuration":17,"RecordingChannels":1,"RecordingSource":"RecordVerb","RecordingStartTime":"Tue, 14 Apr 2026 09:12:44 +0000","ErrorCode":"0","ApiVersion":"2010-04-01","Digits":"hangup"}"#;
        StoredEvent::from_json(EVENT_ID.to_owned(), json.to_owned()).expect("valid event")
    }

    #[derive(Debug, Clone)]
    struct Seen {
        method: AxumMethod,
        path: String,
        headers: AxumHeaders,
        body: Bytes,
    }

    /// A scripted answer: status, extra headers, body.
    type Script = (u16, Vec<(&'static str, String)>, &'static str);

    #[derive(Clone)]
    struct Receiver {
        seen: Arc<Mutex<Vec<Seen>>>,
        script: Arc<Script>,
    }

    async fn record(
        State(r): State<Receiver>,
        method: AxumMethod,
        uri: axum::http::Uri,
        headers: AxumHeaders,
        body: Bytes,
    ) -> Response {
        r.seen.lock().unwrap().push(Seen { method, path: uri.path().to_owned(), headers, body });
        let (status, extra, body) = &*r.script;
        let mut response = (StatusCode::from_u16(*status).unwrap(), *body).into_response();
        for (k, v) in extra {
            response.headers_mut().insert(*k, v.parse().unwrap());
        }
        response
    }

    /// Starts a receiver answering every request with `script`.
    async fn receiver(script: Script) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Receiver { seen: seen.clone(), script: Arc::new(script) };
        let app = Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, seen)
    }

    fn options(url: String) -> HttpOptions {
        HttpOptions { url, method: Method::Post, headers: BTreeMap::new(), secret: None }
    }

    async fn deliver(options: &HttpOptions) -> Result<(), DeliveryError> {
        let handler = options.build("forward").expect("handler builds");
        let event = event();
        handler.deliver(Attempt { event: &event, delivery_id: 1, attempt: 1 }).await
    }

    #[tokio::test]
    async fn posts_the_stored_json_exactly_with_its_headers() {
        let (addr, seen) = receiver((200, vec![], "ok")).await;
        let mut o = options(format!("http://{addr}/hooks/recording?x=1"));
        o.headers.insert("Authorization".into(), "Bearer t0ken".into());
        o.headers.insert("X-Tenant".into(), "acme".into());
        deliver(&o).await.expect("delivered");

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.method, AxumMethod::POST);
        assert_eq!(r.path, "/hooks/recording");
        assert_eq!(r.body, event().json.as_bytes());
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["idempotency-key"], EVENT_ID);
        assert_eq!(r.headers["user-agent"], concat!("recordhook/", env!("CARGO_PKG_VERSION")));
        assert_eq!(r.headers["authorization"], "Bearer t0ken");
        assert_eq!(r.headers["x-tenant"], "acme");
        assert!(r.headers.get("webhook-signature").is_none());
    }

    #[tokio::test]
    async fn sends_put_when_configured_and_signs_when_a_secret_is_set() {
        let (addr, seen) = receiver((204, vec![], "")).await;
        let mut o = options(format!("http://{addr}/"));
        o.method = Method::Put;
        // 32 bytes, 0..=31.
        let key: Vec<u8> = (0u8..32).collect();
        o.secret = Some(format!("whsec_{}", STANDARD.encode(&key)));
        deliver(&o).await.expect("delivered");

        let seen = seen.lock().unwrap();
        let r = &seen[0];
        assert_eq!(r.method, AxumMethod::PUT);
        assert_eq!(r.headers["webhook-id"], EVENT_ID);
        let ts: u64 = r.headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert!(now.abs_diff(ts) < 60, "timestamp {ts} is not now ({now})");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(format!("{EVENT_ID}.{ts}.").as_bytes());
        mac.update(&r.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(r.headers["webhook-signature"], expected.as_str());
    }

    #[tokio::test]
    async fn server_error_with_retry_after_seconds_is_retryable() {
        let (addr, _) = receiver((500, vec![("retry-after", "7".into())], "database is down")).await;
        let err = deliver(&options(format!("http://{addr}/"))).await.unwrap_err();
        match err {
            DeliveryError::Retryable { message, retry_after } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert!(message.contains("500"), "{message}");
                assert!(message.contains("database is down"), "{message}");
            }
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn too_many_requests_with_an_http_date_is_retryable() {
        let at = SystemTime::now() + Duration::from_secs(120);
        let (addr, _) = receiver((429, vec![("retry-after", httpdate::fmt_http_date(at))], "slow down")).await;
        let err = deliver(&options(format!("http://{addr}/"))).await.unwrap_err();
        match err {
            DeliveryError::Retryable { message, retry_after } => {
                let secs = retry_after.expect("retry_after parsed").as_secs();
                assert!((100..=120).contains(&secs), "retry_after {secs}s");
                assert!(message.contains("429"), "{message}");
            }
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn request_timeout_status_is_retryable_without_retry_after() {
        let (addr, _) = receiver((408, vec![("retry-after", "soon".into())], "")).await;
        let err = deliver(&options(format!("http://{addr}/"))).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Retryable { retry_after: None, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn not_found_is_permanent_and_quotes_a_bounded_body() {
        let long = Box::leak("x".repeat(5000).into_boxed_str());
        let (addr, _) = receiver((404, vec![], long)).await;
        let err = deliver(&options(format!("http://{addr}/missing"))).await.unwrap_err();
        match err {
            DeliveryError::Permanent { message } => {
                assert!(message.contains("404"), "{message}");
                assert!(message.len() < 400, "message too long: {} bytes", message.len());
            }
            other => panic!("expected permanent, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn redirect_is_permanent_and_not_followed() {
        let (addr, seen) = receiver((302, vec![("location", "/elsewhere".into())], "moved")).await;
        let err = deliver(&options(format!("http://{addr}/old"))).await.unwrap_err();
        match err {
            DeliveryError::Permanent { message } => {
                assert!(message.contains("302"), "{message}");
                assert!(message.contains("/elsewhere"), "{message}");
            }
            other => panic!("expected permanent, got {other:?}"),
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "the redirect was followed");
        assert_eq!(seen[0].path, "/old");
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        // Bind, learn the port, close: nothing listens there any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = deliver(&options(format!("http://{addr}/"))).await.unwrap_err();
        match err {
            DeliveryError::Retryable { message, retry_after } => {
                assert_eq!(retry_after, None);
                assert!(message.contains("connect"), "{message}");
                assert!(message.contains(&addr.to_string()), "{message}");
            }
            other => panic!("expected retryable, got {other:?}"),
        }
    }

    #[test]
    fn bad_options_are_build_errors_naming_the_option() {
        let cases: Vec<(HttpOptions, &str)> = vec![
            (options("not a url".into()), "url"),
            (options("ftp://example.com/x".into()), "url"),
            (options("file:///etc/passwd".into()), "url"),
            (options("".into()), "url"),
            (
                HttpOptions {
                    headers: [("Bad Name".to_owned(), "v".to_owned())].into(),
                    ..options("https://example.com/".into())
                },
                "headers.Bad Name",
            ),
            (
                HttpOptions {
                    headers: [("X-Token".to_owned(), "a\nb".to_owned())].into(),
                    ..options("https://example.com/".into())
                },
                "headers.X-Token",
            ),
            (
                HttpOptions {
                    headers: [("Content-Type".to_owned(), "text/plain".to_owned())].into(),
                    ..options("https://example.com/".into())
                },
                "headers.Content-Type",
            ),
            (
                HttpOptions { secret: Some("whsec_not base64!".into()), ..options("https://example.com/".into()) },
                "secret",
            ),
            (
                HttpOptions {
                    secret: Some(format!("whsec_{}", STANDARD.encode([7u8; 8]))),
                    ..options("https://example.com/".into())
                },
                "secret",
            ),
            (HttpOptions { secret: Some("whsec_".into()), ..options("https://example.com/".into()) }, "secret"),
        ];
        for (o, option) in cases {
            let Err(e) = o.build("forward") else { panic!("{o:?} built") };
            assert_eq!(e.handler, "forward");
            assert_eq!(e.option, option, "{e}");
            assert!(!e.to_string().contains("a\nb"), "header value echoed: {e}");
        }
    }

    #[test]
    fn secrets_with_or_without_prefix_and_padding_are_accepted() {
        let key = [42u8; 32];
        for secret in [
            format!("whsec_{}", STANDARD.encode(key)),
            STANDARD.encode(key),
            format!("whsec_{}", STANDARD.encode(key).trim_end_matches('=')),
        ] {
            let o = HttpOptions { secret: Some(secret), ..options("https://example.com/".into()) };
            assert!(o.build("forward").is_ok(), "{o:?}");
        }
    }

    #[test]
    fn config_deserializes_with_defaults_and_debug_redacts_secrets() {
        let config: HandlerConfig = serde_json::from_value(serde_json::json!({
            "type": "http",
            "url": "https://user:pa55@hooks.example.com/in",
            "headers": { "Authorization": "Bearer s3cr3t-token" },
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }))
        .unwrap();
        let HandlerKind::Http(o) = &config.kind else { panic!("not http: {config:?}") };
        assert_eq!(o.method, Method::Post);
        assert_eq!(o.headers.len(), 1);
        let debug = format!("{config:?}");
        for leaked in ["s3cr3t-token", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "pa55"] {
            assert!(!debug.contains(leaked), "{leaked} in {debug}");
        }
        assert!(debug.contains("Authorization"), "{debug}");

        let put: HttpOptions =
            serde_json::from_value(serde_json::json!({ "url": "http://x/", "method": "put" })).unwrap();
        assert_eq!(put.method, Method::Put);
        assert!(
            serde_json::from_value::<HttpOptions>(serde_json::json!({ "url": "http://x/", "method": "GET" })).is_err()
        );
        assert!(serde_json::from_value::<HttpOptions>(serde_json::json!({})).is_err());
    }

    #[test]
    fn excerpts_are_bounded_single_lines() {
        assert_eq!(excerpt(b"  line one\nline two\r\n", 200), "line one line two");
        let long = excerpt("é".repeat(300).as_bytes(), 200);
        assert!(long.len() <= 200 + "…".len() + 3, "{}", long.len());
        assert!(long.ends_with('…'));
    }
}
