//! The ceiling of recordhook's own request path, for the `benches/run.sh` ladder: the real
//! `recordhook serve` (same config file, router, signature check, decoding, validation,
//! event serialization and handler routing) over a store that acknowledges every event at
//! once and keeps nothing. No fsync, no SQLite, no deliveries: whatever separates this row
//! from `recordhook` in the benchmark is the cost of durability and delivery; whatever
//! separates it from `bare_axum` is the cost of the request path itself.
//!
//! Never a way to run the service: nothing it acknowledges is stored.
//!
//! Usage: `cargo run --release --example http_ceiling -- recordhook.toml`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use recordhook::app::Application;
use recordhook::store::{
    Claimed, DeadLetter, HandlerStats, Ingested, NewEvent, NewQuarantine, Outcome, Quarantined, Replay, Store,
    StoreError,
};

/// Acknowledges everything, keeps nothing, has nothing to hand out.
struct InstantStore;

#[async_trait]
impl Store for InstantStore {
    async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        Ok(Ingested::Stored { event_id: event.id, leased: Vec::new() })
    }
    async fn quarantine(&self, _: NewQuarantine) -> Result<i64, StoreError> {
        Ok(0)
    }
    async fn claim(&self, _: &str, _: usize, _: Duration) -> Result<Vec<Claimed>, StoreError> {
        Ok(Vec::new())
    }
    async fn finish(&self, _: i64, _: u32, _: Outcome) -> Result<(), StoreError> {
        Ok(())
    }
    async fn release(&self, _: Vec<(i64, u32)>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(Vec::new())
    }
    async fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        Ok(Vec::new())
    }
    async fn replay(&self, _: Replay) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn purge(&self, _: Duration, _: usize) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn stats(&self) -> Result<Vec<HandlerStats>, StoreError> {
        Ok(Vec::new())
    }
}

#[tokio::main]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: http_ceiling <recordhook.toml>");
    recordhook::telemetry::init();
    let config = recordhook::config::load(Some(path.as_ref())).expect("a valid config");
    let app = Application::build_with_store(config, Arc::new(InstantStore)).await.expect("the service builds");
    app.run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
}
