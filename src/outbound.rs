//! What every outbound HTTP call of a handler shares (the `http` handler and the
//! SignalWire REST client): how a failure to get a response is classified and described,
//! and how `Retry-After` is read.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use crate::handlers::DeliveryError;

/// An error's sources, `: `-separated, without the URL (which may carry credentials).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        // The top-level Display names the URL in some versions; the kind alone does not.
        let top = e.to_string();
        parts.push(top.split(" for url").next().unwrap_or(&top).to_owned());
    }
    parts.join(": ")
}

/// Classifies a failure to get a response at all. A refused redirect and a request that
/// could not be built are permanent; connection problems (refused, reset, DNS, TLS) and
/// timeouts may pass, so they are retryable. `origin` is `scheme://host[:port]`.
pub fn classify_send_error(method: &str, origin: &str, e: &reqwest::Error) -> DeliveryError {
    let chain = error_chain(e);
    if e.is_redirect() {
        return DeliveryError::permanent(format!("{method} {origin}: {chain}"));
    }
    let what = if e.is_connect() {
        "could not connect to"
    } else if e.is_timeout() {
        "timed out talking to"
    } else {
        "request failed to"
    };
    let message = format!("{method} {what} {origin}: {chain}");
    if e.is_builder() { DeliveryError::permanent(message) } else { DeliveryError::retryable(message) }
}

/// A response's `Retry-After`, if it has a usable one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER).and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (a date in the past is zero).
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // An absurdly long number saturates; the dispatcher clamps to max_backoff anyway.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parsing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let p = |s: &str| parse_retry_after(&HeaderValue::from_str(s).unwrap(), now);
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(p(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(p("-5"), None);
        assert_eq!(p("1.5"), None);
        assert_eq!(p("soon"), None);
        assert_eq!(p(""), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(p(&later), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(p(&earlier), Some(Duration::ZERO));
    }
}
