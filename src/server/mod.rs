//! The HTTP surface: the callback route and the operational routes.

pub mod callback;
pub mod listen;
pub mod ops;
pub mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderName, Request, Uri};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::dispatch::Handoff;
use crate::handlers::Filter;
use crate::signature::Verifier;
use crate::store::Store;

/// Everything a request handler needs, shared by all requests.
pub struct AppState {
    /// Where events go.
    pub store: Arc<dyn Store>,
    /// `None` when `signature.mode = "disabled"`.
    pub verifier: Option<Verifier>,
    /// `server.public_url` without a trailing slash.
    pub public_url: Option<String>,
    /// `server.trust_forwarded_headers`.
    pub trust_forwarded_headers: bool,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// Each handler's name and filter, in config order.
    pub routes: Vec<(String, Filter)>,
    /// Hands stored deliveries to the workers.
    pub handoff: Handoff,
    /// Cancelled on SIGTERM: readiness turns 503 and new callbacks are refused.
    pub draining: CancellationToken,
}

impl AppState {
    /// The URL SignalWire called, as it signed it: the public base URL (or the trusted
    /// forwarded headers, or the `Host` header) plus the path and query exactly as
    /// received — never re-encoded or re-ordered.
    pub fn signed_url(&self, uri: &Uri, headers: &HeaderMap) -> Option<String> {
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Some(base) = &self.public_url {
            return Some(format!("{base}{path_and_query}"));
        }
        let header = |name: &str| {
            headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or("").trim())
        };
        let (scheme, host) = if self.trust_forwarded_headers {
            (header("x-forwarded-proto").unwrap_or("http"), header("x-forwarded-host").or_else(|| header("host"))?)
        } else {
            ("http", header("host")?)
        };
        Some(format!("{scheme}://{host}{path_and_query}"))
    }
}

/// The request's id, as set (or kept) by the router's request-id layer, which runs before
/// any handler: for the log lines a handler writes at info and above.
fn request_id(headers: &HeaderMap) -> &str {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Builds the router: the callback route at `path`, `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: Arc<AppState>, path: &str, request_timeout: Duration) -> Router {
    let id_header = HeaderName::from_static("x-request-id");
    Router::new()
        .route(path, get(callback::receive).post(callback::receive))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        // The callback route enforces `max_body_bytes` itself, answering problem+json.
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(PropagateRequestIdLayer::new(id_header.clone()))
        // A debug-level span: with `RUST_LOG=debug` every line inside a request carries its
        // method, path and id. At the default level it costs nothing, which matters: the
        // JSON formatter renders an enabled span's fields on every request, 10–20% of the
        // request path's throughput. The lines the handlers log at info and above carry
        // `request_id` themselves.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = request_id(req.headers());
            tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(id_header, MakeRequestUuid))
        .with_state(state)
}
