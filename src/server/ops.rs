//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// How long readiness waits for the store before calling it down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when the store can commit and the service is not draining; 503 otherwise.
pub async fn readyz(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if app.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match tokio::time::timeout(PING_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(request_id = super::request_id(&headers), error = %e, "readiness: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store not responding\n").into_response(),
    }
}

/// Prometheus text exposition. Queue gauges are refreshed from the store on each scrape.
pub async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match app.store.stats().await {
        Ok(stats) => {
            let names: Vec<String> = app.routes.iter().map(|(n, _)| n.clone()).collect();
            crate::metrics::set_queue(&names, &stats);
        }
        Err(e) => {
            tracing::warn!(request_id = super::request_id(&headers), error = %e, "metrics: could not read queue depth")
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render()).into_response()
}
