//! The periodic purge behind `[store] retention`.
//!
//! Every replica runs it: purges are small batches of idempotent deletes (PostgreSQL
//! skips rows another replica is deleting), so running it everywhere costs little and
//! needs no leader.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Store;

/// How often history is purged.
const EVERY: Duration = Duration::from_secs(600);
/// Rows per table per store call: keeps each transaction (and, for SQLite, each pause of
/// the writer) short.
const BATCH: usize = 2_000;

/// Purges history older than `retention` every `EVERY` (10 minutes) until `stop`.
pub async fn run(store: Arc<dyn Store>, retention: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut purged = 0;
        loop {
            match store.purge(retention, BATCH).await {
                Ok(0) => break,
                Ok(n) => purged += n,
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge failed; will try again");
                    break;
                }
            }
            if stop.is_cancelled() {
                return;
            }
            // Let callbacks through between batches.
            tokio::task::yield_now().await;
        }
        if purged > 0 {
            tracing::info!(rows = purged, ?retention, "purged finished history");
        }
    }
}
