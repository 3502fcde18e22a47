//! The dispatcher: one worker per handler runs deliveries under the handler's `timeout`
//! and concurrency limit, and records each outcome.
//!
//! Deliveries reach a worker two ways:
//!
//! * **Hand-off** (the fast path). When the ingest path can reserve a slot in the
//!   handler's lane, the delivery is stored already claimed by this process and, once the
//!   commit is done, handed to the worker in memory: no second round-trip to the store.
//! * **Claim** (everything else: retries coming due, backlog when the lane is full, work
//!   left by a previous run or another replica). The worker claims due deliveries from
//!   the store with a lease.
//!
//! Either way the delivery is leased (the handler's `timeout` plus `lease_margin`), so a
//! worker that dies mid-delivery never strands it: the lease runs out and it is due
//! again. Each handler has its own worker and semaphore, so a slow handler only ever
//! holds up its own queue.

pub mod backoff;

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DispatchConfig;
use crate::handlers::{Attempt, CommonOptions, DeliveryError, Handler};
use crate::metrics as m;
use crate::store::{Claimed, Outcome, Store};

/// A handler ready to run: its implementation and the options the dispatcher applies.
#[derive(Clone)]
pub struct Route {
    /// The handler's name.
    pub name: String,
    /// The implementation.
    pub handler: Arc<dyn Handler>,
    /// Timeout, retry policy and concurrency.
    pub options: CommonOptions,
}

impl Route {
    fn concurrency(&self) -> usize {
        self.options.concurrency.unwrap_or(1).max(1)
    }
}

/// A claimed delivery on its way to a worker, holding its lane slot until it starts.
struct Handed {
    claim: Claimed,
    _slot: OwnedSemaphorePermit,
}

/// One handler's way in from the ingest path.
struct Lane {
    /// Poked when deliveries were queued in the store for this handler.
    wake: Arc<Notify>,
    /// Hand-off capacity: a reservation holds one until the delivery starts running.
    slots: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Handed>,
    /// Lease of a handed-off delivery: it may wait for a running attempt before its own
    /// starts, so it gets two timeouts plus the margin.
    lease: Duration,
}

/// The ingest path's side of the dispatcher: reserve a hand-off slot before storing,
/// hand the claimed delivery over after the commit, or wake the worker to claim it.
#[derive(Clone, Default)]
pub struct Handoff(Arc<BTreeMap<String, Lane>>);

/// A reserved hand-off slot for one handler.
pub struct Reservation {
    handler: String,
    slot: OwnedSemaphorePermit,
    /// How long the delivery's lease must be when stored.
    pub lease: Duration,
}

impl Handoff {
    /// Reserves a hand-off slot, if the handler's lane has room.
    pub fn reserve(&self, handler: &str) -> Option<Reservation> {
        let lane = self.0.get(handler)?;
        let slot = lane.slots.clone().try_acquire_owned().ok()?;
        Some(Reservation { handler: handler.to_owned(), slot, lease: lane.lease })
    }

    /// Hands a delivery stored as claimed to its worker.
    pub fn deliver(&self, reservation: Reservation, claim: Claimed) {
        if let Some(lane) = self.0.get(&reservation.handler) {
            // A closed lane means the worker stopped (shutdown): the lease runs out or
            // the next start makes the delivery due again.
            let _ = lane.tx.send(Handed { claim, _slot: reservation.slot });
        }
    }

    /// Wakes the workers of the named handlers to claim from the store.
    pub fn wake<'a>(&self, handlers: impl IntoIterator<Item = &'a String>) {
        for name in handlers {
            if let Some(lane) = self.0.get(name) {
                lane.wake.notify_one();
            }
        }
    }
}

/// Runs every handler's worker until shut down.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    routes: Vec<(Route, mpsc::UnboundedReceiver<Handed>)>,
    config: DispatchConfig,
    handoff: Handoff,
}

/// What is running after [`Dispatcher::start`]; see [`Running::shutdown`].
pub struct Running {
    stop_claiming: CancellationToken,
    abandon: CancellationToken,
    tracker: TaskTracker,
    in_flight: InFlight,
    store: Arc<dyn Store>,
}

/// Claims this process holds and has not finished: released on shutdown.
type InFlight = Arc<Mutex<HashSet<(i64, u32)>>>;

fn lock(in_flight: &InFlight) -> std::sync::MutexGuard<'_, HashSet<(i64, u32)>> {
    in_flight.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatcher {
    /// A dispatcher for these routes.
    pub fn new(store: Arc<dyn Store>, routes: Vec<Route>, config: DispatchConfig) -> Self {
        let mut lanes = BTreeMap::new();
        let mut with_rx = Vec::new();
        for route in routes {
            let (tx, rx) = mpsc::unbounded_channel();
            let lane = Lane {
                wake: Arc::new(Notify::new()),
                // Enough to keep every permit busy with one waiting behind it.
                slots: Arc::new(Semaphore::new(route.concurrency() * 2)),
                tx,
                lease: route.options.timeout * 2 + config.lease_margin,
            };
            lanes.insert(route.name.clone(), lane);
            with_rx.push((route, rx));
        }
        Self { store, routes: with_rx, config, handoff: Handoff(Arc::new(lanes)) }
    }

    /// The ingest path's side of the dispatcher.
    pub fn handoff(&self) -> Handoff {
        self.handoff.clone()
    }

    /// Starts one worker per handler.
    pub fn start(self) -> Running {
        let running = Running {
            stop_claiming: CancellationToken::new(),
            abandon: CancellationToken::new(),
            tracker: TaskTracker::new(),
            in_flight: Arc::default(),
            store: self.store.clone(),
        };
        for (route, handed) in self.routes {
            let worker = Worker {
                store: self.store.clone(),
                wake: self.handoff.0.get(&route.name).map(|l| l.wake.clone()).unwrap_or_default(),
                handed,
                permits: Arc::new(Semaphore::new(route.concurrency())),
                lease: route.options.timeout + self.config.lease_margin,
                poll: self.config.poll_interval,
                route: Arc::new(route),
                stop: running.stop_claiming.clone(),
                abandon: running.abandon.clone(),
                tracker: running.tracker.clone(),
                in_flight: running.in_flight.clone(),
            };
            running.tracker.spawn(worker.run());
        }
        running
    }
}

impl Running {
    /// Stops taking new work, gives running deliveries `grace` to finish, then abandons
    /// the rest and hands their claims back to the store so the next start (or another
    /// replica) picks them up at once.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_claiming.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "shutdown grace elapsed; abandoning running deliveries");
            self.abandon.cancel();
            self.tracker.wait().await;
        }
        let unfinished: Vec<(i64, u32)> = lock(&self.in_flight).drain().collect();
        if !unfinished.is_empty() {
            let n = unfinished.len();
            match self.store.release(unfinished).await {
                Ok(()) => tracing::info!(deliveries = n, "released unfinished deliveries"),
                // Not lost: their leases run out and they are claimed again.
                Err(e) => tracing::warn!(error = %e, "could not release unfinished deliveries"),
            }
        }
    }
}

struct Worker {
    store: Arc<dyn Store>,
    route: Arc<Route>,
    wake: Arc<Notify>,
    handed: mpsc::UnboundedReceiver<Handed>,
    permits: Arc<Semaphore>,
    lease: Duration,
    poll: Duration,
    stop: CancellationToken,
    abandon: CancellationToken,
    tracker: TaskTracker,
    in_flight: InFlight,
}

impl Worker {
    async fn run(mut self) {
        let name = self.route.name.clone();
        tracing::debug!(handler = %name, "worker started");
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Whether the store may hold due work for us: true at start, after a wake-up or
        // a poll tick, and for as long as claims come back full.
        let mut claim_due = true;
        loop {
            if claim_due && self.permits.available_permits() > 0 {
                // Claim only as much as can run now: the rest stays claimable elsewhere.
                let free = self.permits.available_permits();
                match self.store.claim(&name, free, self.lease).await {
                    Ok(claimed) => {
                        claim_due = claimed.len() == free;
                        for claim in claimed {
                            let Ok(permit) = self.permits.clone().try_acquire_owned() else { break };
                            self.spawn(claim, permit);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(handler = %name, error = %e, "claim failed; will retry");
                        claim_due = false;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                Some(handed) = self.handed.recv() => {
                    lock(&self.in_flight).insert((handed.claim.delivery_id, handed.claim.attempt));
                    let permit = tokio::select! {
                        _ = self.stop.cancelled() => break,
                        p = self.permits.clone().acquire_owned() => p,
                    };
                    let Ok(permit) = permit else { break };
                    self.spawn(handed.claim, permit);
                }
                _ = self.permits.acquire(), if claim_due => {}
                _ = self.wake.notified() => claim_due = true,
                _ = poll.tick() => claim_due = true,
            }
        }
        // Hand-offs that never started: their claims are released with the rest.
        self.handed.close();
        while let Ok(handed) = self.handed.try_recv() {
            lock(&self.in_flight).insert((handed.claim.delivery_id, handed.claim.attempt));
        }
        tracing::debug!(handler = %name, "worker stopped");
    }

    fn spawn(&self, claim: Claimed, permit: OwnedSemaphorePermit) {
        lock(&self.in_flight).insert((claim.delivery_id, claim.attempt));
        let task = Delivery {
            store: self.store.clone(),
            route: self.route.clone(),
            abandon: self.abandon.clone(),
            in_flight: self.in_flight.clone(),
        };
        self.tracker.spawn(task.run(claim, permit));
    }
}

struct Delivery {
    store: Arc<dyn Store>,
    route: Arc<Route>,
    abandon: CancellationToken,
    in_flight: InFlight,
}

impl Delivery {
    async fn run(self, claim: Claimed, permit: OwnedSemaphorePermit) {
        let route = &self.route;
        let attempt = Attempt { event: &claim.event, delivery_id: claim.delivery_id, attempt: claim.attempt };
        let started = std::time::Instant::now();
        // A panicking handler is a failed attempt, not a dead worker.
        let run = AssertUnwindSafe(route.handler.deliver(attempt)).catch_unwind();
        let result = tokio::select! {
            r = tokio::time::timeout(route.options.timeout, run) => match r {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(DeliveryError::retryable("handler panicked")),
                Err(_) => Err(DeliveryError::retryable(format!(
                    "timed out after {}", humantime::format_duration(route.options.timeout)
                ))),
            },
            // Shutdown grace is over: leave the claim in `in_flight` to be released.
            _ = self.abandon.cancelled() => return,
        };
        // The handler is done: let the next attempt start while the outcome is recorded.
        drop(permit);
        let outcome = self.decide(&claim, result);
        m::delivery_finished(&route.name, &outcome, started.elapsed());
        let key = (claim.delivery_id, claim.attempt);
        match self.store.finish(claim.delivery_id, claim.attempt, outcome).await {
            Ok(()) => {}
            // The lease runs out and the delivery is retried: at least once still holds.
            Err(e) => tracing::warn!(handler = %route.name, delivery_id = claim.delivery_id, error = %e,
                "could not record delivery outcome"),
        }
        lock(&self.in_flight).remove(&key);
    }

    fn decide(&self, claim: &Claimed, result: Result<(), DeliveryError>) -> Outcome {
        let route = &self.route;
        let fields = (route.name.as_str(), claim.delivery_id, claim.attempt, claim.event.event.recording_sid.as_str());
        match result {
            Ok(()) => {
                tracing::info!(
                    handler = fields.0,
                    delivery_id = fields.1,
                    attempt = fields.2,
                    recording_sid = fields.3,
                    "delivered"
                );
                Outcome::Delivered
            }
            Err(DeliveryError::Permanent { message }) => {
                tracing::warn!(handler = fields.0, delivery_id = fields.1, attempt = fields.2, recording_sid = fields.3,
                    error = %message, "permanent failure; dead-lettered");
                Outcome::Dead { error: message }
            }
            Err(DeliveryError::Retryable { message, .. }) if claim.attempt >= route.options.retry.max_attempts => {
                tracing::warn!(handler = fields.0, delivery_id = fields.1, attempt = fields.2, recording_sid = fields.3,
                    error = %message, "attempts exhausted; dead-lettered");
                Outcome::Dead { error: format!("gave up after {} attempts: {message}", claim.attempt) }
            }
            Err(DeliveryError::Retryable { message, retry_after }) => {
                let wait = backoff::delay(&route.options.retry, claim.attempt, retry_after);
                tracing::info!(handler = fields.0, delivery_id = fields.1, attempt = fields.2, recording_sid = fields.3,
                    error = %message, retry_in = ?wait, "attempt failed; will retry");
                Outcome::Retry { delay: wait, error: message }
            }
        }
    }
}
