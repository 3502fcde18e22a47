//! The callback route: request → verify → decode/validate → persist → acknowledge.
//!
//! The order is deliberate. Cheap, unauthenticated checks come first (draining, media
//! type, size, encoding); the signature is checked before anything is written, so an
//! unsigned request can never fill the quarantine; and the answer is sent only after the
//! store says the event is durable.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::problem::Rejection;
use crate::callback::{BodyKind, FieldError, Fields, decode_form, decode_json, kind_of, validate};
use crate::event::{RecordingEvent, StoredEvent};
use crate::metrics as m;
use crate::signature::SignedBody;
use crate::store::{Claimed, Ingested, NewEvent, NewQuarantine, StoreError, Target};

/// The two signature headers; SignalWire's own name wins when both are present.
const SIGNATURE_HEADERS: [&str; 2] = ["x-signalwire-signature", "x-twilio-signature"];

#[derive(Serialize)]
struct Accepted<'a> {
    status: &'static str,
    event_id: &'a str,
}

/// `POST|GET {server.path}`
pub async fn receive(
    State(app): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = handle(&app, &method, &uri, &headers, body).await;
    match result {
        Ok(ingested) => {
            let (status, event_id) = match &ingested {
                Ingested::Stored { event_id, .. } => ("stored", event_id),
                Ingested::Duplicate { event_id } => ("duplicate", event_id),
                Ingested::Superseded { event_id } => ("superseded", event_id),
            };
            m::callback_answered(status, started.elapsed());
            (StatusCode::OK, axum::Json(Accepted { status, event_id })).into_response()
        }
        Err(rejection) => {
            m::callback_answered(rejection.outcome(), started.elapsed());
            let request_id = super::request_id(&headers);
            match &rejection {
                Rejection::Unavailable(e) => {
                    tracing::error!(request_id, error = %e, "callback refused: store unavailable")
                }
                Rejection::Forbidden => tracing::warn!(request_id, "callback refused: signature verification failed"),
                r => tracing::info!(request_id, status = r.status().as_u16(), reason = %r, "callback rejected"),
            }
            rejection.into_response()
        }
    }
}

async fn handle(
    app: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Ingested, Rejection> {
    if app.draining.is_cancelled() {
        return Err(Rejection::Draining);
    }
    let received = receive_fields(app, method, uri, headers, body).await?;
    authenticate(app, uri, headers, &received)?;
    match validate(&received.fields) {
        Ok(event) => persist(app, event).await,
        Err(errors) => {
            quarantine(app, &received.fields, &errors).await?;
            Err(Rejection::Invalid(errors))
        }
    }
}

/// What arrived, decoded: the fields, and the raw body the signature may cover.
struct Received {
    /// `None` for a GET (fields in the query string).
    kind: Option<BodyKind>,
    raw: bytes::Bytes,
    fields: Fields,
}

async fn receive_fields(
    app: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Received, Rejection> {
    if method == Method::GET {
        let fields = Fields::Pairs(decode_form(uri.query().unwrap_or("").as_bytes()).map_err(Rejection::BadBody)?);
        return Ok(Received { kind: None, raw: bytes::Bytes::new(), fields });
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let kind = kind_of(content_type).ok_or(Rejection::UnsupportedMediaType)?;
    let raw = read_body(headers, body, app.max_body_bytes).await?;
    let fields = match kind {
        BodyKind::Form => Fields::Pairs(decode_form(&raw).map_err(Rejection::BadBody)?),
        BodyKind::Json => Fields::Json(decode_json(&raw).map_err(Rejection::BadBody)?),
    };
    Ok(Received { kind: Some(kind), raw, fields })
}

/// Checks the signature (unless the operator disabled the check). Every failure is the
/// same 403: which part failed is never revealed.
fn authenticate(app: &AppState, uri: &Uri, headers: &HeaderMap, received: &Received) -> Result<(), Rejection> {
    let Some(verifier) = &app.verifier else { return Ok(()) };
    let signature = SIGNATURE_HEADERS
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .ok_or(Rejection::Forbidden)?;
    let url = app.signed_url(uri, headers).ok_or(Rejection::Forbidden)?;
    let signed = match (&received.fields, received.kind) {
        (Fields::Pairs(pairs), Some(_)) => SignedBody::Form { fields: pairs, raw: &received.raw },
        (Fields::Pairs(_), None) => SignedBody::Query,
        (Fields::Json(_), _) => SignedBody::Json { raw: &received.raw },
    };
    if verifier.verify(&url, signed, signature) { Ok(()) } else { Err(Rejection::Forbidden) }
}

/// Keeps an authentic (or unchecked, by the operator's choice) but invalid callback, so
/// nothing SignalWire sent is lost. If it cannot be kept, the answer is 503, not 422, so
/// SignalWire tries again.
async fn quarantine(app: &AppState, fields: &Fields, errors: &[FieldError]) -> Result<(), Rejection> {
    // Both serializations are of strings and JSON values only: they cannot fail.
    let fields = match fields {
        Fields::Pairs(pairs) => serde_json::to_string(pairs),
        Fields::Json(map) => serde_json::to_string(map),
    }
    .unwrap_or_default();
    let kept = NewQuarantine { fields, errors: serde_json::to_string(errors).unwrap_or_default() };
    app.store.quarantine(kept).await.map(|_| ()).map_err(Rejection::Unavailable)
}

/// Stores the event with one delivery per matching handler, then hands the deliveries
/// that got a hand-off slot straight to their workers and wakes the others.
async fn persist(app: &AppState, event: RecordingEvent) -> Result<Ingested, Rejection> {
    // Reserve hand-off slots first: a delivery with a slot is stored already claimed and
    // runs straight after the commit; the others wait in the store for a worker to claim.
    let mut reservations = Vec::new();
    let mut targets = Vec::new();
    for (name, filter) in &app.routes {
        if filter.matches(&event) {
            let reservation = app.handoff.reserve(name);
            targets.push(Target { handler: name.clone(), lease: reservation.as_ref().map(|r| r.lease) });
            reservations.extend(reservation);
        }
    }
    let queued: Vec<String> = targets.iter().filter(|t| t.lease.is_none()).map(|t| t.handler.clone()).collect();
    // A struct of strings, integers and JSON values: serializing it cannot fail.
    let json = serde_json::to_string(&event).unwrap_or_default();
    let new = NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        recording_sid: event.recording_sid.clone(),
        recording_status: event.recording_status,
        json: json.clone(),
        targets,
    };
    // The commit and the hand-off run in their own task, so they finish together even if
    // this request future is dropped mid-commit (the client went away, a load balancer
    // timed out). Otherwise a delivery stored as claimed by this process would never be
    // handed over, and would wait out its whole lease (twice the handler's timeout)
    // before anyone ran it.
    let (store, handoff) = (app.store.clone(), app.handoff.clone());
    let commit = tokio::spawn(async move {
        let ingested = store.ingest(new).await?;
        if let Ingested::Stored { event_id, leased } = &ingested {
            let stored = StoredEvent { id: event_id.clone(), event, json };
            // The store returns leased deliveries in the order the reservations were made.
            for (reservation, (_, delivery_id)) in reservations.into_iter().zip(leased) {
                let claim = Claimed { delivery_id: *delivery_id, attempt: 1, event: stored.clone() };
                handoff.deliver(reservation, claim);
            }
            handoff.wake(&queued);
        }
        Ok(ingested)
    });
    match commit.await {
        Ok(result) => result.map_err(Rejection::Unavailable),
        Err(e) => Err(Rejection::Unavailable(StoreError::Unavailable(Box::new(e)))),
    }
}

/// Reads the body, refusing more than `limit` bytes (413) before reading them when the
/// client says how long it is, and while reading when it does not.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<bytes::Bytes, Rejection> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Rejection::TooLarge(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large { Rejection::TooLarge(limit) } else { Rejection::BodyRead }
    })
}
