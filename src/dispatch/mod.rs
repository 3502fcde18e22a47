//! The dispatcher: one worker per handler claims due deliveries from the store, runs
//! them under the handler's `timeout` and concurrency limit, and records each outcome.
//!
//! Work is claimed with a lease (the handler's `timeout` plus `lease_margin`), so a
//! worker that dies mid-delivery never strands it: the lease runs out and the delivery is
//! due again. Each handler has its own worker and semaphore, so a slow handler only
//! ever holds up its own queue.

pub mod backoff;

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DispatchConfig;
use crate::handlers::{Attempt, CommonOptions, DeliveryError, Handler};
use crate::metrics as m;
use crate::store::{Claimed, Outcome, Store, now_millis};

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

/// Wakes a handler's worker when new deliveries were queued for it, so new events are
/// dispatched at once instead of at the next poll.
#[derive(Clone, Default)]
pub struct Wakers(Arc<BTreeMap<String, Arc<Notify>>>);

impl Wakers {
    fn new(names: impl Iterator<Item = String>) -> Self {
        Wakers(Arc::new(names.map(|n| (n, Arc::new(Notify::new()))).collect()))
    }

    /// Wakes the workers of the named handlers.
    pub fn wake<'a>(&self, handlers: impl IntoIterator<Item = &'a String>) {
        for name in handlers {
            if let Some(n) = self.0.get(name) {
                n.notify_one();
            }
        }
    }
}

/// Runs every handler's worker until shut down.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    routes: Vec<Route>,
    config: DispatchConfig,
    wakers: Wakers,
}

/// What is running after [`Dispatcher::start`]; see [`Running::shutdown`].
pub struct Running {
    stop_claiming: CancellationToken,
    abandon: CancellationToken,
    tracker: TaskTracker,
    in_flight: Arc<Mutex<HashSet<(i64, u32)>>>,
    store: Arc<dyn Store>,
}

impl Dispatcher {
    /// A dispatcher for these routes.
    pub fn new(store: Arc<dyn Store>, routes: Vec<Route>, config: DispatchConfig) -> Self {
        let wakers = Wakers::new(routes.iter().map(|r| r.name.clone()));
        Self { store, routes, config, wakers }
    }

    /// The wakers the ingest path pokes after a commit.
    pub fn wakers(&self) -> Wakers {
        self.wakers.clone()
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
        for route in self.routes {
            let worker = Worker {
                store: self.store.clone(),
                wake: self.wakers.0.get(&route.name).cloned().unwrap_or_default(),
                permits: Arc::new(Semaphore::new(route.options.concurrency)),
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
    /// Stops claiming new work, gives running deliveries `grace` to finish, then abandons
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
        let unfinished: Vec<(i64, u32)> = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
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
    permits: Arc<Semaphore>,
    lease: Duration,
    poll: Duration,
    stop: CancellationToken,
    abandon: CancellationToken,
    tracker: TaskTracker,
    in_flight: Arc<Mutex<HashSet<(i64, u32)>>>,
}

impl Worker {
    async fn run(self) {
        let name = self.route.name.clone();
        tracing::debug!(handler = %name, "worker started");
        while !self.stop.is_cancelled() {
            // Claim only as much as we can run now: the rest stays claimable elsewhere.
            let free = self.permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    permit = self.permits.acquire() => drop(permit),
                }
                continue;
            }
            let claimed = match self.store.claim(&name, free, self.lease).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(handler = %name, error = %e, "claim failed; will retry");
                    self.idle().await;
                    continue;
                }
            };
            let full = claimed.len() == free;
            for claim in claimed {
                let Ok(permit) = self.permits.clone().try_acquire_owned() else { break };
                self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert((claim.delivery_id, claim.attempt));
                let task = Delivery {
                    store: self.store.clone(),
                    route: self.route.clone(),
                    abandon: self.abandon.clone(),
                    in_flight: self.in_flight.clone(),
                };
                self.tracker.spawn(async move {
                    task.run(claim).await;
                    drop(permit);
                });
            }
            if !full {
                self.idle().await;
            }
        }
        tracing::debug!(handler = %name, "worker stopped");
    }

    /// Waits for new work, the poll interval, or shutdown.
    async fn idle(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(self.poll) => {}
        }
    }
}

struct Delivery {
    store: Arc<dyn Store>,
    route: Arc<Route>,
    abandon: CancellationToken,
    in_flight: Arc<Mutex<HashSet<(i64, u32)>>>,
}

impl Delivery {
    async fn run(self, claim: Claimed) {
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
        let outcome = self.decide(&claim, result);
        m::delivery_finished(&route.name, &outcome, started.elapsed());
        let key = (claim.delivery_id, claim.attempt);
        match self.store.finish(claim.delivery_id, claim.attempt, outcome).await {
            Ok(()) => {}
            // The lease runs out and the delivery is retried: at least once still holds.
            Err(e) => tracing::warn!(handler = %route.name, delivery_id = claim.delivery_id, error = %e,
                "could not record delivery outcome"),
        }
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
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
                Outcome::Retry { due_at: now_millis() + wait.as_millis() as i64, error: message }
            }
        }
    }
}
