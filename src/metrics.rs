//! Prometheus metrics. Every name starts with `recordhook_`.
//!
//! The `metrics` facade needs one process-wide recorder; it is installed once, on first
//! use, and every [`crate::app::Application`] in the process renders the same registry.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::store::{HandlerStats, Outcome};

/// Callbacks answered, by outcome (`stored`, `duplicate`, `superseded`, `forbidden`, …).
pub const CALLBACKS: &str = "recordhook_callbacks_total";
/// Time from request to acknowledgement, in seconds.
pub const ACK_SECONDS: &str = "recordhook_ack_seconds";
/// Delivery attempts, by handler and outcome (`delivered`, `retried`, `dead`).
pub const DELIVERIES: &str = "recordhook_deliveries_total";
/// Duration of delivery attempts, in seconds, by handler.
pub const DELIVERY_SECONDS: &str = "recordhook_delivery_seconds";
/// Deliveries waiting or running, by handler.
pub const QUEUE_DEPTH: &str = "recordhook_queue_depth";
/// Dead letters, by handler.
pub const DEAD_LETTERS: &str = "recordhook_dead_letters";

/// How often [`upkeep`] folds recorded histogram samples into their buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus registry, installing the recorder on first call.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(ACK_SECONDS.into()), &buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DELIVERY_SECONDS.into()), &buckets))
                .expect("bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, in which case ours is
            // simply not fed; rendering still works.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Folds the histogram samples recorded since the last scrape into their buckets, every
/// `every`, until `stop` is cancelled.
///
/// The Prometheus recorder keeps each raw histogram sample (its value and a timestamp)
/// until the registry is rendered or upkept. A service nobody scrapes would otherwise grow
/// by one sample for every callback and every delivery attempt, without bound.
pub async fn upkeep(every: Duration, stop: CancellationToken) {
    let handle = handle();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

fn describe() {
    metrics::describe_counter!(CALLBACKS, "Callbacks answered, by outcome.");
    metrics::describe_histogram!(ACK_SECONDS, metrics::Unit::Seconds, "Time from request to acknowledgement.");
    metrics::describe_counter!(DELIVERIES, "Delivery attempts, by handler and outcome.");
    metrics::describe_histogram!(DELIVERY_SECONDS, metrics::Unit::Seconds, "Duration of delivery attempts.");
    metrics::describe_gauge!(QUEUE_DEPTH, "Deliveries waiting or running, by handler.");
    metrics::describe_gauge!(DEAD_LETTERS, "Dead letters, by handler.");
}

/// Counts an answered callback and, for acknowledged ones, its latency.
pub fn callback_answered(outcome: &'static str, elapsed: Duration) {
    metrics::counter!(CALLBACKS, "outcome" => outcome).increment(1);
    metrics::histogram!(ACK_SECONDS).record(elapsed.as_secs_f64());
}

/// Counts a finished delivery attempt.
pub fn delivery_finished(handler: &str, outcome: &Outcome, elapsed: Duration) {
    let label = match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Retry { .. } => "retried",
        Outcome::Dead { .. } => "dead",
    };
    metrics::counter!(DELIVERIES, "handler" => handler.to_owned(), "outcome" => label).increment(1);
    metrics::histogram!(DELIVERY_SECONDS, "handler" => handler.to_owned()).record(elapsed.as_secs_f64());
}

/// Sets the queue gauges; handlers absent from `stats` have nothing queued.
pub fn set_queue(handlers: &[String], stats: &[HandlerStats]) {
    for name in handlers {
        let s = stats.iter().find(|s| &s.handler == name).cloned().unwrap_or_default();
        metrics::gauge!(QUEUE_DEPTH, "handler" => name.clone()).set(s.pending as f64);
        metrics::gauge!(DEAD_LETTERS, "handler" => name.clone()).set(s.dead as f64);
    }
}
