//! Durable state: events, their deliveries, quarantined callbacks and dead letters.
//!
//! [`Store`] is the interface the receiver and the dispatcher use; [`sqlite`] is the
//! embedded implementation (one process), [`postgres`] the shared one (several replicas).
//! A store must make [`Store::ingest`] durable before it returns (the caller
//! acknowledges the callback on its return) and must make the dedupe check and the insert
//! one atomic step. `tests/store_conformance.rs` runs one suite against both.

pub mod postgres;
pub mod retention;
pub mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Serialize;

use crate::event::{RecordingStatus, StoredEvent};

/// Milliseconds since the Unix epoch: the store's clock.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A server process: SQLite takes an exclusive lock on the database and, since no
    /// other process can hold leases, makes every leased delivery due again at once;
    /// PostgreSQL (where other replicas do hold leases) listens for wake-ups instead.
    Server,
    /// A CLI command beside running servers (listing, replay): no lock, no recovery.
    Tool,
}

/// One handler an event is queued for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The handler's name.
    pub handler: String,
    /// `Some(lease)`: this process will run the first attempt itself, right after the
    /// commit, so the delivery is stored already claimed (attempt 1, leased for `lease`)
    /// and no claim round-trip is needed. `None`: stored due, for any worker to claim.
    pub lease: Option<Duration>,
}

/// A validated event to store, with the handlers it is queued for.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Our id for the event (UUIDv7).
    pub id: String,
    /// Dedupe key, part one.
    pub recording_sid: String,
    /// Dedupe key, part two.
    pub recording_status: RecordingStatus,
    /// The event as JSON: exactly what handlers will receive.
    pub json: String,
    /// The handlers whose filters match; one delivery each.
    pub targets: Vec<Target>,
}

/// What [`Store::ingest`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored, with one delivery per matching handler.
    Stored {
        /// The new event's id.
        event_id: String,
        /// (handler, delivery id) of the deliveries stored already claimed, in the order
        /// of the targets that asked for a lease.
        leased: Vec<(String, i64)>,
    },
    /// The same (`RecordingSid`, `RecordingStatus`) was already stored: nothing queued.
    Duplicate {
        /// The id of the event stored first.
        event_id: String,
    },
    /// An `in-progress` arriving after a final status for the same recording: stored
    /// for the record, queued nowhere.
    Superseded {
        /// The new event's id.
        event_id: String,
    },
}

/// An authentic callback that failed validation, kept so nothing authentic is lost.
#[derive(Debug, Clone)]
pub struct NewQuarantine {
    /// The fields as received, as JSON (form fields as `[[name, value], …]`).
    pub fields: String,
    /// The validation errors, as JSON (`[{"field", "message"}, …]`).
    pub errors: String,
}

/// A quarantined callback, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// Its id.
    pub id: i64,
    /// When it arrived.
    pub received_at: Millis,
    /// The fields as received (JSON).
    pub fields: String,
    /// Why it was rejected (JSON).
    pub errors: String,
}

/// A delivery claimed by a worker: the worker holds a lease on it until it records an
/// outcome or the lease runs out.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The delivery's id.
    pub delivery_id: i64,
    /// This attempt's number (1 for the first); also the lease token: an outcome is only
    /// recorded if the delivery is still on this attempt.
    pub attempt: u32,
    /// The event to deliver.
    pub event: StoredEvent,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: never attempted again.
    Delivered,
    /// Try again after `delay` (measured by the store's clock, so replicas agree).
    Retry {
        /// How long to wait before the next attempt.
        delay: Duration,
        /// Why this attempt failed.
        error: String,
    },
    /// Give up: the delivery becomes a dead letter.
    Dead {
        /// Why.
        error: String,
    },
}

/// A delivery that gave up, as listed by `recordhook dead-letters`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The delivery's id (what `replay --delivery` takes).
    pub delivery_id: i64,
    /// The handler it was for.
    pub handler: String,
    /// The event's `RecordingSid`.
    pub recording_sid: String,
    /// The event's `RecordingStatus`.
    pub recording_status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
}

/// Which dead letters to put back in the queue.
#[derive(Debug, Clone, Copy)]
pub enum Replay {
    /// One delivery, by id.
    Delivery(i64),
    /// Every dead letter.
    AllDead,
}

/// Queue depth of one handler, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// The handler.
    pub handler: String,
    /// Deliveries waiting or running.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// Why the store could not do what was asked. Callers answer callbacks with 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O error, disk full, read-only, locked…).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
    /// Another server process already holds the store.
    #[error("store {0} is in use by another recordhook process")]
    Locked(String),
    /// No delivery with that id is dead.
    #[error("no dead delivery with id {0}")]
    NotDead(i64),
}

/// The durable state behind the receiver and the dispatcher.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores an event and its deliveries in one transaction, deduplicating on
    /// (`RecordingSid`, `RecordingStatus`), and returns only once that is durable.
    async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError>;

    /// Keeps an authentic callback that failed validation; durable on return.
    async fn quarantine(&self, item: NewQuarantine) -> Result<i64, StoreError>;

    /// Claims up to `limit` due deliveries of `handler`, leasing each for `lease`.
    async fn claim(&self, handler: &str, limit: usize, lease: Duration) -> Result<Vec<Claimed>, StoreError>;

    /// Records an attempt's outcome. Ignored if the lease was lost (the delivery moved on
    /// to a later attempt meanwhile).
    async fn finish(&self, delivery_id: i64, attempt: u32, outcome: Outcome) -> Result<(), StoreError>;

    /// Hands back claimed deliveries that will not finish (shutdown): due at once, and
    /// the unfinished attempt does not count.
    async fn release(&self, claims: Vec<(i64, u32)>) -> Result<(), StoreError>;

    /// Lists dead letters, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;

    /// Lists quarantined callbacks, oldest first.
    async fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError>;

    /// Puts dead letters back in the queue with a fresh attempt budget; returns how many.
    async fn replay(&self, which: Replay) -> Result<u64, StoreError>;

    /// Checks that the store can commit a write right now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Retention: deletes delivered deliveries finished more than `older_than` ago, then
    /// events received more than `older_than` ago that no delivery refers to any more
    /// (all delivered and purged, or never queued). Pending and dead deliveries, their
    /// events, and quarantined callbacks are never purged. At most `limit` rows of each
    /// table per call; returns how many rows went (call again while it is non-zero).
    /// A purged event's (`RecordingSid`, `RecordingStatus`) can be stored again: the
    /// dedupe window is the retention period.
    async fn purge(&self, older_than: Duration, limit: usize) -> Result<u64, StoreError>;

    /// Pending and dead counts per handler.
    async fn stats(&self) -> Result<Vec<HandlerStats>, StoreError>;

    /// Names of handlers whose deliveries were made due by *another* process (a replica's
    /// ingest, release or replay), so this process's workers can claim them at once
    /// instead of at their next poll. `None` when no other process can queue work (the
    /// embedded store). Each call subscribes afresh; a lagging subscriber loses wake-ups,
    /// which costs latency only: polling stays the fallback.
    fn wake_ups(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}
