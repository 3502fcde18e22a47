//! Rejections, answered as RFC 9457 `application/problem+json`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::callback::{DecodeError, FieldError};
use crate::store::StoreError;

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Why a callback was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Draining,
    /// The store could not commit.
    #[error("the store is unavailable")]
    Unavailable(#[source] StoreError),
    /// Missing or wrong signature. Deliberately says nothing about which part failed.
    #[error("signature verification failed")]
    Forbidden,
    /// The body does not decode.
    #[error("{0}")]
    BadBody(#[source] DecodeError),
    /// The body could not be read.
    #[error("the request body could not be read")]
    BodyRead,
    /// Neither form nor JSON.
    #[error("Content-Type must be application/x-www-form-urlencoded or application/json")]
    UnsupportedMediaType,
    /// Over `max_body_bytes`.
    #[error("the request body exceeds {0} bytes")]
    TooLarge(usize),
    /// Validation failed; every offending field is listed.
    #[error("the callback failed validation")]
    Invalid(Vec<FieldError>),
}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Draining | Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::BadBody(_) | Rejection::BodyRead => StatusCode::BAD_REQUEST,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The `outcome` label of `recordhook_callbacks_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::Draining => "draining",
            Rejection::Unavailable(_) => "unavailable",
            Rejection::Forbidden => "forbidden",
            Rejection::BadBody(_) | Rejection::BodyRead => "bad_request",
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::TooLarge(_) => "too_large",
            Rejection::Invalid(_) => "invalid",
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                Rejection::Invalid(errors) => Some(errors),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}
