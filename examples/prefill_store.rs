//! Fills a recordhook store with many events quickly, for the scale benchmarks in
//! `benches/scale.sh`: ack throughput over a big store, RSS with a big delivery backlog.
//!
//! It goes through the store itself ([`SqliteStore`] and [`Store::ingest`], the same code
//! and schema the server uses, group commit and fsync included): each event is a valid
//! `completed` callback, validated by [`validate`], with one delivery per `--handler`.
//! Many ingests run at once, so each commit carries a full batch. Then, in one UPDATE:
//!
//! * deliveries of the `--delivered` handlers are marked delivered (history: an event
//!   that went through), and
//! * deliveries of the other handlers stay pending, due `--due-in-secs` from now (a
//!   queued backlog waiting out a retry backoff, as after a long downstream outage).
//!
//! Usage: `cargo run --release --example prefill_store -- --db /tmp/rh.db --events 1000000 \
//!  --handler log --handler forward --delivered log --due-in-secs 86400`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use futures_util::StreamExt;
use recordhook::callback::{Fields, validate};
use recordhook::store::sqlite::{Mode, SqliteStore};
use recordhook::store::{NewEvent, Store, Target, now_millis};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// The database file (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// How many events to add.
    #[arg(long)]
    events: u64,
    /// Handlers each event gets a delivery for.
    #[arg(long = "handler", required = true)]
    handlers: Vec<String>,
    /// Handlers whose deliveries are marked delivered afterwards.
    #[arg(long = "delivered")]
    delivered: Vec<String>,
    /// When the other (pending) deliveries become due, in seconds from now.
    #[arg(long, default_value_t = 86_400)]
    due_in_secs: i64,
    /// Prefix of the generated RecordingSids (use a new one for each fill of one store).
    #[arg(long, default_value = "prefill")]
    prefix: String,
    /// Ingests in flight at once.
    #[arg(long, default_value_t = 2048)]
    concurrency: usize,
}

fn event(prefix: &str, i: u64, handlers: &[String]) -> NewEvent {
    let sid = format!("{prefix}-{i:010}");
    let fields: Vec<(String, String)> = [
        ("AccountSid", "b3877c40-da60-4998-90ad-b792e98472af".to_owned()),
        ("CallSid", format!("call-{sid}")),
        ("RecordingSid", sid.clone()),
        ("RecordingUrl", format!("https://example.signalwire.com/api/laml/2010-04-01/Recordings/{sid}")),
        ("RecordingStatus", "completed".to_owned()),
        ("RecordingDuration", (i % 1800).to_string()),
        ("RecordingChannels", "1".to_owned()),
        ("RecordingSource", "RecordVerb".to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let validated = validate(&Fields::Pairs(fields)).expect("a valid callback");
    NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        recording_sid: validated.recording_sid.clone(),
        recording_status: validated.recording_status,
        json: serde_json::to_string(&validated).expect("serializes"),
        targets: handlers.iter().map(|h| Target { handler: h.clone(), lease: None }).collect(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&args.db, Mode::Server)?);
        let handlers = Arc::new(args.handlers.clone());
        let prefix = Arc::new(args.prefix.clone());
        let mut results = futures_util::stream::iter(0..args.events)
            .map(|i| {
                let (store, handlers, prefix) = (store.clone(), handlers.clone(), prefix.clone());
                async move { store.ingest(event(&prefix, i, &handlers)).await }
            })
            .buffer_unordered(args.concurrency);
        let mut done = 0u64;
        while let Some(result) = results.next().await {
            result?;
            done += 1;
            if done.is_multiple_of(100_000) {
                eprintln!("prefill: {done} events ({:.0}/s)", done as f64 / started.elapsed().as_secs_f64());
            }
        }
    }
    // The writer thread has exited with the store; settle the deliveries' states.
    let db = rusqlite::Connection::open(&args.db)?;
    let tx = db.unchecked_transaction()?;
    for handler in &args.delivered {
        tx.execute(
            "UPDATE deliveries SET state = 'delivered', attempts = 1 WHERE handler = ?1 AND state = 'pending'",
            [handler],
        )?;
    }
    tx.execute("UPDATE deliveries SET due_at = ?1 WHERE state = 'pending'", [now_millis() + args.due_in_secs * 1000])?;
    tx.commit()?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    eprintln!("prefill: {} events in {:.1?}", args.events, started.elapsed());
    Ok(())
}
