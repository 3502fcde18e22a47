//! The store contract, written once against `dyn Store` so every implementation runs the
//! same checks and they cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use recordhook::event::RecordingStatus;
use recordhook::store::sqlite::{Mode, SqliteStore};
use recordhook::store::{Ingested, NewEvent, NewQuarantine, Outcome, Replay, Store, StoreError, Target};

fn event(sid: &str, status: RecordingStatus, handlers: &[&str]) -> NewEvent {
    let json = serde_json::json!({
        "AccountSid": "AC1", "CallSid": "CA1", "RecordingSid": sid,
        "RecordingUrl": "https://example.signalwire.com/r", "RecordingStatus": status.as_str(),
        "RecordingDuration": 5, "RecordingChannels": 1, "RecordingSource": "RecordVerb"
    });
    NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        recording_sid: sid.to_owned(),
        recording_status: status,
        json: json.to_string(),
        targets: handlers.iter().map(|h| Target { handler: h.to_string(), lease: None }).collect(),
    }
}

struct Sqlite {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
}

fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), Mode::Server).unwrap();
    Sqlite { _dir: dir, store: Arc::new(store) }
}

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn ingest_queues_one_delivery_per_handler() {
    let s = sqlite();
    let r = s.store.ingest(event("RE1", RecordingStatus::Completed, &["a", "b"])).await.unwrap();
    assert!(matches!(r, Ingested::Stored { .. }));
    assert_eq!(s.store.claim("a", 10, LEASE).await.unwrap().len(), 1);
    assert_eq!(s.store.claim("b", 10, LEASE).await.unwrap().len(), 1);
    assert_eq!(s.store.claim("c", 10, LEASE).await.unwrap().len(), 0);
}

#[tokio::test]
async fn duplicate_is_acknowledged_and_queued_nowhere() {
    let s = sqlite();
    let first = s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let Ingested::Stored { event_id, .. } = first else { panic!("{first:?}") };
    let again = s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    assert_eq!(again, Ingested::Duplicate { event_id });
    assert_eq!(s.store.claim("a", 10, LEASE).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_duplicates_store_exactly_one() {
    let s = sqlite();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move { store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await }));
    }
    let mut stored = 0;
    for t in tasks {
        if let Ingested::Stored { .. } = t.await.unwrap().unwrap() {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(s.store.claim("a", 100, LEASE).await.unwrap().len(), 1);
}

#[tokio::test]
async fn late_in_progress_does_not_undo_completed() {
    let s = sqlite();
    s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let late = s.store.ingest(event("RE1", RecordingStatus::InProgress, &["a"])).await.unwrap();
    assert!(matches!(late, Ingested::Superseded { .. }), "{late:?}");
    let claimed = s.store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.event.recording_status, RecordingStatus::Completed);
    // In order, in-progress then completed, both are delivered.
    s.store.ingest(event("RE2", RecordingStatus::InProgress, &["a"])).await.unwrap();
    s.store.ingest(event("RE2", RecordingStatus::Completed, &["a"])).await.unwrap();
    assert_eq!(s.store.claim("a", 10, LEASE).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_claimed_delivery_is_not_claimed_again_until_its_lease_expires() {
    let s = sqlite();
    s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let first = s.store.claim("a", 10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    assert!(s.store.claim("a", 10, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = s.store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    // The first worker's late outcome is ignored: it lost the lease.
    s.store.finish(first[0].delivery_id, 1, Outcome::Delivered).await.unwrap();
    s.store.finish(again[0].delivery_id, 2, Outcome::Dead { error: "boom".into() }).await.unwrap();
    let dead = s.store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error, "boom");
}

#[tokio::test]
async fn retry_waits_until_due() {
    let s = sqlite();
    s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let c = s.store.claim("a", 10, LEASE).await.unwrap().remove(0);
    let delay = Duration::from_millis(300);
    s.store.finish(c.delivery_id, c.attempt, Outcome::Retry { delay, error: "503".into() }).await.unwrap();
    assert!(s.store.claim("a", 10, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = s.store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again[0].attempt, 2);
}

#[tokio::test]
async fn delivered_is_final() {
    let s = sqlite();
    s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let c = s.store.claim("a", 10, Duration::from_millis(1)).await.unwrap().remove(0);
    s.store.finish(c.delivery_id, c.attempt, Outcome::Delivered).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(s.store.claim("a", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(s.store.stats().await.unwrap().iter().map(|h| h.pending).sum::<u64>(), 0);
}

#[tokio::test]
async fn dead_letters_replay_with_a_fresh_budget() {
    let s = sqlite();
    s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    s.store.ingest(event("RE2", RecordingStatus::Completed, &["a"])).await.unwrap();
    for c in s.store.claim("a", 10, LEASE).await.unwrap() {
        s.store.finish(c.delivery_id, c.attempt, Outcome::Dead { error: "404".into() }).await.unwrap();
    }
    let dead = s.store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].recording_status, "completed");
    let stats = s.store.stats().await.unwrap();
    assert_eq!((stats[0].pending, stats[0].dead), (0, 2));

    assert_eq!(s.store.replay(Replay::Delivery(dead[0].delivery_id)).await.unwrap(), 1);
    assert!(matches!(s.store.replay(Replay::Delivery(dead[0].delivery_id)).await, Err(StoreError::NotDead(_))));
    let c = s.store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].attempt, 1);
    assert_eq!(s.store.replay(Replay::AllDead).await.unwrap(), 1);
    assert!(s.store.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn released_claims_are_due_at_once_and_the_attempt_does_not_count() {
    let s = sqlite();
    s.store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let c = s.store.claim("a", 10, LEASE).await.unwrap().remove(0);
    s.store.release(vec![(c.delivery_id, c.attempt)]).await.unwrap();
    let again = s.store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again[0].attempt, 1);
}

#[tokio::test]
async fn quarantine_is_listed() {
    let s = sqlite();
    let id = s
        .store
        .quarantine(NewQuarantine {
            fields: r#"[["RecordingSid","RE1"]]"#.into(),
            errors: r#"[{"field":"AccountSid","message":"is required"}]"#.into(),
        })
        .await
        .unwrap();
    let q = s.store.quarantined().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id);
    assert!(q[0].errors.contains("AccountSid"));
}

#[tokio::test]
async fn ping_succeeds_on_a_healthy_store() {
    sqlite().store.ping().await.unwrap();
}

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let _first = SqliteStore::open(&path, Mode::Server).unwrap();
    assert!(matches!(SqliteStore::open(&path, Mode::Server), Err(StoreError::Locked(_))));
    // Tools (listing, replay) may open it beside the server.
    SqliteStore::open(&path, Mode::Tool).unwrap();
}

#[tokio::test]
async fn leased_work_is_due_again_when_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let store = SqliteStore::open(&path, Mode::Server).unwrap();
        store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
        assert_eq!(store.claim("a", 10, Duration::from_secs(3600)).await.unwrap().len(), 1);
    }
    // The writer thread exits once its channel closes; give the lock a moment to drop.
    let store = loop {
        match SqliteStore::open(&path, Mode::Server) {
            Ok(s) => break s,
            Err(StoreError::Locked(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(store.claim("a", 10, LEASE).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_delivery_stored_claimed_is_not_claimed_again_until_its_lease_runs_out() {
    let s = sqlite();
    let mut e = event("RE1", RecordingStatus::Completed, &["a", "b"]);
    e.targets[0].lease = Some(Duration::from_millis(300));
    let Ingested::Stored { leased, .. } = s.store.ingest(e).await.unwrap() else { panic!() };
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].0, "a");
    // `b` was stored due; `a` is held by whoever asked for the lease.
    assert_eq!(s.store.claim("b", 10, LEASE).await.unwrap().len(), 1);
    assert!(s.store.claim("a", 10, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = s.store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, leased[0].1);
    assert_eq!(again[0].attempt, 2, "the leased first attempt counts");
}

#[tokio::test]
async fn the_holder_of_a_stored_claim_records_its_outcome() {
    let s = sqlite();
    let mut e = event("RE1", RecordingStatus::Completed, &["a"]);
    e.targets[0].lease = Some(LEASE);
    let Ingested::Stored { leased, .. } = s.store.ingest(e).await.unwrap() else { panic!() };
    s.store.finish(leased[0].1, 1, Outcome::Dead { error: "400".into() }).await.unwrap();
    assert_eq!(s.store.dead_letters().await.unwrap().len(), 1);
}
