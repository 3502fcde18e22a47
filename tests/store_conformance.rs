//! The store contract, written once against `dyn Store` and run against every
//! implementation (`sqlite_store::…` and `postgres_store::…`), so they cannot drift apart.
//!
//! Each PostgreSQL test gets a fresh database on the server at `TEST_POSTGRES_URL` (see
//! `tests/support`); without one it prints `skipped: …` (and fails under `CI=true`).

mod support;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use recordhook::event::RecordingStatus;
use recordhook::store::postgres::PostgresStore;
use recordhook::store::sqlite::SqliteStore;
use recordhook::store::{Ingested, Mode, NewEvent, NewQuarantine, Outcome, Replay, Store, StoreError, Target};
use support::TestDb;

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

/// A store under test and what must outlive it (its directory or database). Fields drop
/// in order: the store first.
struct Fixture {
    store: Arc<dyn Store>,
    _keep: Box<dyn Any>,
}

async fn sqlite() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), Mode::Server).unwrap();
    Some(Fixture { store: Arc::new(store), _keep: Box::new(dir) })
}

async fn postgres() -> Option<Fixture> {
    let db = TestDb::create().await?;
    let store = PostgresStore::open(&db.url, 8, None, Mode::Server).await.unwrap();
    Some(Fixture { store: Arc::new(store), _keep: Box::new(db) })
}

/// Instantiates every contract test once per store.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(f) = super::sqlite().await else { return };
                    super::$test(f.store.clone()).await;
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(f) = super::postgres().await else { return };
                    super::$test(f.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    ingest_queues_one_delivery_per_handler,
    duplicate_is_acknowledged_and_queued_nowhere,
    concurrent_duplicates_store_exactly_one,
    late_in_progress_does_not_undo_completed,
    a_claimed_delivery_is_not_claimed_again_until_its_lease_expires,
    retry_waits_until_due,
    delivered_is_final,
    dead_letters_replay_with_a_fresh_budget,
    released_claims_are_due_at_once_and_the_attempt_does_not_count,
    quarantine_is_listed,
    ping_succeeds_on_a_healthy_store,
    a_delivery_stored_claimed_is_not_claimed_again_until_its_lease_runs_out,
    the_holder_of_a_stored_claim_records_its_outcome,
    retention_purges_only_finished_history,
    concurrent_outcomes_are_each_recorded_by_their_own_attempt,
);

const LEASE: Duration = Duration::from_secs(60);

async fn ingest_queues_one_delivery_per_handler(store: Arc<dyn Store>) {
    let r = store.ingest(event("RE1", RecordingStatus::Completed, &["a", "b"])).await.unwrap();
    assert!(matches!(r, Ingested::Stored { .. }));
    assert_eq!(store.claim("a", 10, LEASE).await.unwrap().len(), 1);
    assert_eq!(store.claim("b", 10, LEASE).await.unwrap().len(), 1);
    assert_eq!(store.claim("c", 10, LEASE).await.unwrap().len(), 0);
}

async fn duplicate_is_acknowledged_and_queued_nowhere(store: Arc<dyn Store>) {
    let first = store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let Ingested::Stored { event_id, .. } = first else { panic!("{first:?}") };
    let again = store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    assert_eq!(again, Ingested::Duplicate { event_id });
    assert_eq!(store.claim("a", 10, LEASE).await.unwrap().len(), 1);
}

/// Sends the same callback `n` times at once, spread over `stores` in turn; how many of
/// the ingests answered `Stored`.
async fn ingest_concurrently(stores: &[Arc<dyn Store>], n: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move { store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await }));
    }
    let mut stored = 0;
    for t in tasks {
        if let Ingested::Stored { .. } = t.await.unwrap().unwrap() {
            stored += 1;
        }
    }
    stored
}

async fn concurrent_duplicates_store_exactly_one(store: Arc<dyn Store>) {
    assert_eq!(ingest_concurrently(std::slice::from_ref(&store), 50).await, 1);
    assert_eq!(store.claim("a", 100, LEASE).await.unwrap().len(), 1);
}

async fn late_in_progress_does_not_undo_completed(store: Arc<dyn Store>) {
    store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let late = store.ingest(event("RE1", RecordingStatus::InProgress, &["a"])).await.unwrap();
    assert!(matches!(late, Ingested::Superseded { .. }), "{late:?}");
    let claimed = store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event.event.recording_status, RecordingStatus::Completed);
    // In order, in-progress then completed, both are delivered.
    store.ingest(event("RE2", RecordingStatus::InProgress, &["a"])).await.unwrap();
    store.ingest(event("RE2", RecordingStatus::Completed, &["a"])).await.unwrap();
    assert_eq!(store.claim("a", 10, LEASE).await.unwrap().len(), 2);
}

async fn a_claimed_delivery_is_not_claimed_again_until_its_lease_expires(store: Arc<dyn Store>) {
    store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let first = store.claim("a", 10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    assert!(store.claim("a", 10, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    // The first worker's late outcome is ignored: it lost the lease.
    store.finish(first[0].delivery_id, 1, Outcome::Delivered).await.unwrap();
    store.finish(again[0].delivery_id, 2, Outcome::Dead { error: "boom".into() }).await.unwrap();
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error, "boom");
}

async fn concurrent_outcomes_are_each_recorded_by_their_own_attempt(store: Arc<dyn Store>) {
    // Many outcomes at once (the PostgreSQL store records them in batches): each lands on
    // its own delivery, and a stale attempt's outcome in the same burst changes nothing.
    for i in 0..60 {
        store.ingest(event(&format!("RE{i}"), RecordingStatus::Completed, &["a"])).await.unwrap();
    }
    let claims = store.claim("a", 100, LEASE).await.unwrap();
    assert_eq!(claims.len(), 60);
    let outcome = |i: usize| match i % 3 {
        0 => Outcome::Delivered,
        1 => Outcome::Retry { delay: Duration::from_secs(3600), error: format!("retry {i}") },
        _ => Outcome::Dead { error: format!("dead {i}") },
    };
    let mut finishing = Vec::new();
    for (i, c) in claims.iter().enumerate() {
        let store = store.clone();
        let (id, attempt) = (c.delivery_id, c.attempt);
        let stale = store.clone();
        finishing.push(tokio::spawn(async move { store.finish(id, attempt, outcome(i)).await }));
        // A worker that lost an earlier lease on the same delivery, in the same burst.
        let error = "stale attempt".to_owned();
        finishing.push(tokio::spawn(async move { stale.finish(id, attempt - 1, Outcome::Dead { error }).await }));
    }
    for f in finishing {
        f.await.unwrap().unwrap();
    }
    let stats: u64 = store.stats().await.unwrap().iter().map(|h| h.pending).sum();
    assert_eq!(stats, 20, "the 20 retries wait, nothing else is pending");
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 20);
    assert!(dead.iter().all(|d| d.last_error.starts_with("dead ")), "{dead:?}");
    assert!(store.claim("a", 100, LEASE).await.unwrap().is_empty(), "retries are not due yet");
}

async fn retry_waits_until_due(store: Arc<dyn Store>) {
    store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let c = store.claim("a", 10, LEASE).await.unwrap().remove(0);
    let delay = Duration::from_millis(300);
    store.finish(c.delivery_id, c.attempt, Outcome::Retry { delay, error: "503".into() }).await.unwrap();
    assert!(store.claim("a", 10, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again[0].attempt, 2);
}

async fn delivered_is_final(store: Arc<dyn Store>) {
    store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let c = store.claim("a", 10, Duration::from_millis(1)).await.unwrap().remove(0);
    store.finish(c.delivery_id, c.attempt, Outcome::Delivered).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.claim("a", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(store.stats().await.unwrap().iter().map(|h| h.pending).sum::<u64>(), 0);
}

async fn dead_letters_replay_with_a_fresh_budget(store: Arc<dyn Store>) {
    store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    store.ingest(event("RE2", RecordingStatus::Completed, &["a"])).await.unwrap();
    for c in store.claim("a", 10, LEASE).await.unwrap() {
        store.finish(c.delivery_id, c.attempt, Outcome::Dead { error: "404".into() }).await.unwrap();
    }
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].recording_status, "completed");
    let stats = store.stats().await.unwrap();
    assert_eq!((stats[0].pending, stats[0].dead), (0, 2));

    assert_eq!(store.replay(Replay::Delivery(dead[0].delivery_id)).await.unwrap(), 1);
    assert!(matches!(store.replay(Replay::Delivery(dead[0].delivery_id)).await, Err(StoreError::NotDead(_))));
    let c = store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].attempt, 1);
    assert_eq!(store.replay(Replay::AllDead).await.unwrap(), 1);
    assert!(store.dead_letters().await.unwrap().is_empty());
}

async fn released_claims_are_due_at_once_and_the_attempt_does_not_count(store: Arc<dyn Store>) {
    store.ingest(event("RE1", RecordingStatus::Completed, &["a"])).await.unwrap();
    let c = store.claim("a", 10, LEASE).await.unwrap().remove(0);
    store.release(vec![(c.delivery_id, c.attempt)]).await.unwrap();
    let again = store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again[0].attempt, 1);
}

async fn quarantine_is_listed(store: Arc<dyn Store>) {
    let id = store
        .quarantine(NewQuarantine {
            fields: r#"[["RecordingSid","RE1"]]"#.into(),
            errors: r#"[{"field":"AccountSid","message":"is required"}]"#.into(),
        })
        .await
        .unwrap();
    let q = store.quarantined().await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id);
    assert!(q[0].errors.contains("AccountSid"));
}

async fn ping_succeeds_on_a_healthy_store(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

async fn a_delivery_stored_claimed_is_not_claimed_again_until_its_lease_runs_out(store: Arc<dyn Store>) {
    let mut e = event("RE1", RecordingStatus::Completed, &["a", "b"]);
    e.targets[0].lease = Some(Duration::from_millis(300));
    let Ingested::Stored { leased, .. } = store.ingest(e).await.unwrap() else { panic!() };
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].0, "a");
    // `b` was stored due; `a` is held by whoever asked for the lease.
    assert_eq!(store.claim("b", 10, LEASE).await.unwrap().len(), 1);
    assert!(store.claim("a", 10, LEASE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = store.claim("a", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, leased[0].1);
    assert_eq!(again[0].attempt, 2, "the leased first attempt counts");
}

async fn the_holder_of_a_stored_claim_records_its_outcome(store: Arc<dyn Store>) {
    let mut e = event("RE1", RecordingStatus::Completed, &["a"]);
    e.targets[0].lease = Some(LEASE);
    let Ingested::Stored { leased, .. } = store.ingest(e).await.unwrap() else { panic!() };
    store.finish(leased[0].1, 1, Outcome::Dead { error: "400".into() }).await.unwrap();
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);
}

async fn retention_purges_only_finished_history(store: Arc<dyn Store>) {
    let sid = |n: u32| format!("RE{n}");
    for n in 1..=4 {
        // RE3 matched no handler: an event with no deliveries at all.
        let handlers: &[&str] = if n == 3 { &[] } else { &["a"] };
        store.ingest(event(&sid(n), RecordingStatus::Completed, handlers)).await.unwrap();
    }
    store.quarantine(NewQuarantine { fields: "[]".into(), errors: "[]".into() }).await.unwrap();
    let mut claims = store.claim("a", 10, LEASE).await.unwrap();
    claims.sort_by_key(|c| c.event.event.recording_sid.clone());
    let [c1, c2, c4] = &claims[..] else { panic!("{claims:?}") };
    store.finish(c1.delivery_id, c1.attempt, Outcome::Delivered).await.unwrap();
    store.finish(c2.delivery_id, c2.attempt, Outcome::Dead { error: "404".into() }).await.unwrap();
    let retry = Outcome::Retry { delay: Duration::from_secs(3600), error: "503".into() };
    store.finish(c4.delivery_id, c4.attempt, retry).await.unwrap();

    // Nothing is old enough yet.
    assert_eq!(store.purge(Duration::from_secs(3600), 100).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // RE1's delivery and event, and RE3's event.
    assert_eq!(store.purge(Duration::from_millis(10), 100).await.unwrap(), 3);
    assert_eq!(store.purge(Duration::from_millis(10), 100).await.unwrap(), 0);

    // Dead, pending and quarantined survive.
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);
    assert_eq!(store.quarantined().await.unwrap().len(), 1);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats[0].pending, stats[0].dead), (1, 1));
    // Purged events are gone (their dedupe keys too); the others are still there.
    for (n, gone) in [(1, true), (2, false), (3, true), (4, false)] {
        let again = store.ingest(event(&sid(n), RecordingStatus::Completed, &[])).await.unwrap();
        assert_eq!(matches!(again, Ingested::Stored { .. }), gone, "RE{n}: {again:?}");
    }
}

// --- SQLite only: one process owns the file ---------------------------------------

#[tokio::test]
async fn sqlite_a_second_server_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let _first = SqliteStore::open(&path, Mode::Server).unwrap();
    assert!(matches!(SqliteStore::open(&path, Mode::Server), Err(StoreError::Locked(_))));
    // Tools (listing, replay) may open it beside the server.
    SqliteStore::open(&path, Mode::Tool).unwrap();
}

#[tokio::test]
async fn sqlite_leased_work_is_due_again_when_the_server_restarts() {
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

// --- PostgreSQL only: several replicas on one database ---------------------------------

/// `n` stores (replicas) on one fresh database, opened at the same time.
async fn replicas(n: usize) -> Option<(TestDb, Vec<Arc<dyn Store>>)> {
    let db = TestDb::create().await?;
    let opening = (0..n).map(|_| PostgresStore::open(&db.url, 4, None, Mode::Server));
    let stores = futures_util::future::join_all(opening).await;
    let stores = stores.into_iter().map(|s| Arc::new(s.unwrap()) as Arc<dyn Store>).collect();
    Some((db, stores))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_at_once_migrate_safely() {
    let Some((_db, stores)) = replicas(4).await else { return };
    for s in &stores {
        s.ping().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_same_callback_on_two_replicas_is_stored_once() {
    let Some((_db, stores)) = replicas(2).await else { return };
    assert_eq!(ingest_concurrently(&stores, 40).await, 1);
    assert_eq!(stores[1].claim("a", 100, LEASE).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_late_in_progress_is_suppressed_across_replicas() {
    let Some((db, stores)) = replicas(2).await else { return };
    // Race in-progress on one replica against completed on the other, for many recordings.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let sid = format!("RE{i}");
        let (a, b) = (stores[i % 2].clone(), stores[(i + 1) % 2].clone());
        let s2 = sid.clone();
        tasks.push(tokio::spawn(async move { a.ingest(event(&sid, RecordingStatus::Completed, &["h"])).await }));
        tasks.push(tokio::spawn(async move { b.ingest(event(&s2, RecordingStatus::InProgress, &["h"])).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Whatever the interleaving: an in-progress that was queued was stored before its
    // recording's completed, never after.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let bad: i64 = client
        .query_one(
            "SELECT count(*) FROM events p JOIN events c ON c.recording_sid = p.recording_sid
             WHERE p.recording_status = 'in-progress' AND c.recording_status = 'completed'
               AND NOT p.superseded AND p.seq > c.seq",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_never_claim_the_same_delivery() {
    let Some((_db, stores)) = replicas(2).await else { return };
    for i in 0..60 {
        stores[0].ingest(event(&format!("RE{i}"), RecordingStatus::Completed, &["a"])).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.claim("a", 3, LEASE).await.unwrap();
                if batch.is_empty() {
                    break got;
                }
                got.extend(batch.into_iter().map(|c| c.delivery_id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((n, all.len()), (60, 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_new_replica_leaves_other_replicas_leases_alone() {
    let Some(db) = TestDb::create().await else { return };
    let a = PostgresStore::open(&db.url, 2, None, Mode::Server).await.unwrap();
    a.ingest(event("RE1", RecordingStatus::Completed, &["h"])).await.unwrap();
    assert_eq!(a.claim("h", 10, LEASE).await.unwrap().len(), 1);
    // Unlike SQLite's single server, a replica starting must not take over live leases.
    let b = PostgresStore::open(&db.url, 2, None, Mode::Server).await.unwrap();
    assert!(b.claim("h", 10, LEASE).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queued_work_wakes_the_other_replicas() {
    let Some((_db, stores)) = replicas(2).await else { return };
    let mut wake_ups = stores[0].wake_ups().expect("server mode listens");
    // The LISTEN connection is opened in the background: retry until it is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    let name = loop {
        i += 1;
        stores[1].ingest(event(&format!("RE{i}"), RecordingStatus::Completed, &["h"])).await.unwrap();
        if let Ok(Ok(name)) = tokio::time::timeout(Duration::from_millis(200), wake_ups.recv()).await {
            break name;
        }
        assert!(tokio::time::Instant::now() < deadline, "no wake-up arrived");
    };
    assert_eq!(name, "h");
    // Replays wake them too.
    let c = stores[1].claim("h", 100, LEASE).await.unwrap();
    for c in c {
        stores[1].finish(c.delivery_id, c.attempt, Outcome::Dead { error: "x".into() }).await.unwrap();
    }
    while wake_ups.try_recv().is_ok() {}
    stores[1].replay(Replay::AllDead).await.unwrap();
    let name = tokio::time::timeout(Duration::from_secs(5), wake_ups.recv()).await.unwrap().unwrap();
    assert_eq!(name, "h");
}
