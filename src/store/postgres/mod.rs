//! The shared store: PostgreSQL, for several replicas behind one load balancer.
//!
//! It behaves exactly like the embedded store (the conformance suite runs against both);
//! what differs is how each guarantee holds across processes:
//!
//! * **Commit before 200.** Every write is committed before the call returns
//!   (PostgreSQL's `synchronous_commit` decides what "committed" means on the server;
//!   leave it `on`). Ingests are a transaction each; delivery outcomes are recorded in
//!   batches, one statement and one commit for every outcome that arrived while the
//!   previous batch committed (`finish.rs`).
//! * **Dedupe and late in-progress, across replicas.** An ingest first takes a
//!   transaction-scoped advisory lock on the recording (`pg_advisory_xact_lock(hashtext(
//!   RecordingSid))`), so for one recording the "is there a final status already?" check
//!   and the insert are serialized across every replica; the unique index on
//!   (`RecordingSid`, `RecordingStatus`) with `ON CONFLICT DO NOTHING` decides duplicates.
//! * **Shared queue.** Workers claim with `FOR UPDATE SKIP LOCKED` and a lease (`due_at`
//!   = the lease's end, `leased` = true), so a delivery runs on one replica at a time, and
//!   the lease of a replica that dies simply runs out. There is no start-up "reset every
//!   lease" as with SQLite: other replicas hold leases. A graceful shutdown hands its
//!   unfinished claims back with [`Store::release`].
//! * **One clock.** `due_at`, leases and retry delays are computed by the database's
//!   clock, never a replica's, so replicas with skewed clocks still agree on what is due.
//! * **Wake-ups.** An ingest that queues deliveries for any worker, a release and a
//!   replay call `pg_notify('recordhook', handler)` inside their transaction (delivered
//!   only if it commits). In server mode a listener task holds one extra connection with
//!   `LISTEN recordhook` and republishes handler names on [`Store::wake_ups`]; the
//!   dispatcher's poll stays the fallback (a missed notification costs one poll interval,
//!   never a delivery). Retries are not notified: they come due later, and the poll finds them.
//! * **Outages.** The pool waits at most [`ACQUIRE_TIMEOUT`] for a connection and every
//!   operation at most [`OP_TIMEOUT`], so callbacks are answered 503 quickly while the
//!   database is away; broken connections are dropped and new ones made on the next use,
//!   so the service recovers by itself when it is back.
//! * **Migrations** run at start-up in one transaction under an advisory lock, so any
//!   number of replicas may start at once; `schema_version` records what was applied.
//!
//! **Driver.** `tokio-postgres` with `deadpool-postgres`: a small, async-only driver with
//! pipelined statements and first-class `LISTEN` (its connection yields notifications
//! as messages), and a minimal pool with per-phase timeouts — everything needed and no
//! query macros or compile-time database. TLS is rustls, verified; see [`tls`].

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::broadcast;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;

use super::{
    Claimed, DeadLetter, HandlerStats, Ingested, Mode, NewEvent, NewQuarantine, Outcome, Quarantined, Replay, Store,
    StoreError,
};
use crate::event::StoredEvent;

mod listen;
pub mod tls;

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: i32 = 1;
/// Advisory lock key held while migrating (any fixed number; "recordhk" in ASCII).
const MIGRATION_LOCK: i64 = 0x7265_636f_7264_686b;
/// How long a request waits for a pooled connection (or a new one to be made) before
/// the store is called unavailable and the callback answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest any one store operation may take, for the same reason: a database that
/// stopped answering (a cut network, not a refused connection) must not hang callbacks.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Milliseconds since the epoch by the database's clock.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

// After the macro: the batched finishes use it too.
mod finish;

/// The ingest statement, run right after the recording's advisory lock is granted. One
/// row: `superseded` (NULL: a duplicate), the stored event's id if it was a duplicate,
/// and the deliveries stored leased to this process (handlers and ids, in the same order).
/// Deliveries stored due notify the other replicas (delivered on commit).
const INGEST: &str = concat!(
    "WITH ev AS (
        INSERT INTO events (id, recording_sid, recording_status, received_at, superseded, payload)
        VALUES ($1, $2, $3, ",
    now_ms!(),
    ", $4 AND EXISTS (SELECT 1 FROM events WHERE recording_sid = $2
                          AND recording_status IN ('completed', 'absent', 'failed')), $5)
        ON CONFLICT (recording_sid, recording_status) DO NOTHING
        RETURNING seq, superseded, received_at
    ), d AS (
        INSERT INTO deliveries (event_seq, handler, state, attempts, leased, due_at, updated_at)
        SELECT ev.seq, t.handler, 'pending', CASE WHEN t.lease IS NULL THEN 0 ELSE 1 END, t.lease IS NOT NULL,
               ev.received_at + coalesce(t.lease, 0), ev.received_at
        FROM ev CROSS JOIN unnest($6::text[], $7::bigint[]) AS t (handler, lease)
        WHERE NOT ev.superseded
        RETURNING id, handler, leased
    ), n AS (
        SELECT count(pg_notify('recordhook', handler)::text) AS n FROM d WHERE NOT leased
    )
    SELECT (SELECT superseded FROM ev),
           (SELECT id FROM events WHERE recording_sid = $2 AND recording_status = $3),
           (SELECT array_agg(handler ORDER BY id) FROM d WHERE leased),
           (SELECT array_agg(id ORDER BY id) FROM d WHERE leased),
           (SELECT n FROM n)"
);

/// The shared PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    /// Outcomes go here, to be recorded in batches.
    finishing: tokio::sync::mpsc::Sender<finish::Finish>,
    wake: broadcast::Sender<String>,
    listening: bool,
    stop: CancellationToken,
}

/// Wraps a driver error with its causes spelled out: tokio-postgres and deadpool keep the
/// useful part (the server's message, why a TLS handshake failed) in the source chain,
/// which a log line printing the error alone would drop.
fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(std::io::Error::other(crate::outbound::error_chain(&e))))
}

fn timed_out() -> StoreError {
    unavailable(std::io::Error::new(std::io::ErrorKind::TimedOut, "PostgreSQL did not answer in time"))
}

/// Parses a connection URL, taking the password from `PGPASSWORD` when the URL has none
/// (as libpq does), so it can stay out of config files.
pub fn connection_config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(unavailable)?;
    if config.get_password().is_none()
        && let Ok(password) = std::env::var("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(ACQUIRE_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("recordhook");
    }
    Ok(config)
}

impl PostgresStore {
    /// Connects (`url`, at most `pool_size` connections; TLS as the URL's `sslmode` says,
    /// trusting the certificate authorities in `ca_file` or else the system's), migrates
    /// the schema, and in [`Mode::Server`] starts listening for other replicas' wake-ups.
    pub async fn open(url: &str, pool_size: usize, ca_file: Option<&Path>, mode: Mode) -> Result<Self, StoreError> {
        let config = connection_config(url)?;
        let tls = tls::connector(ca_file).map_err(unavailable)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            // `Fast`: a connection whose socket died is known closed and replaced; no
            // extra round trip per checkout.
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .recycle_timeout(Some(ACQUIRE_TIMEOUT))
            .build()
            .map_err(unavailable)?;
        let (wake, _) = broadcast::channel(1024);
        let finishing = finish::start(pool.clone());
        let store = Self { pool, finishing, wake, listening: mode == Mode::Server, stop: CancellationToken::new() };
        tokio::time::timeout(OP_TIMEOUT * 3, store.migrate()).await.map_err(|_| timed_out())??;
        if store.listening {
            tokio::spawn(listen::run(config, tls, store.wake.clone(), store.stop.clone()));
        }
        Ok(store)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Replicas starting together queue here; the first creates, the rest find it done.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(unavailable)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            .await
            .map_err(unavailable)?;
        let current: Option<i32> =
            tx.query_one("SELECT max(version) FROM schema_version", &[]).await.map_err(unavailable)?.get(0);
        if current.is_some_and(|v| v > SCHEMA_VERSION) {
            return Err(unavailable(std::io::Error::other(format!(
                "database schema version {} is newer than this recordhook supports ({SCHEMA_VERSION})",
                current.unwrap_or_default()
            ))));
        }
        if current != Some(SCHEMA_VERSION) {
            tx.batch_execute(SCHEMA).await.map_err(unavailable)?;
            tx.execute("DELETE FROM schema_version", &[]).await.map_err(unavailable)?;
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&SCHEMA_VERSION])
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    /// Runs `op` with a pooled connection, bounded by [`OP_TIMEOUT`].
    async fn with<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Object) -> Result<T, tokio_postgres::Error>,
    {
        with_client(&self.pool, op).await
    }
}

/// Runs `op` with a connection from `pool`, the wait for it included in [`OP_TIMEOUT`].
async fn with_client<T, F>(pool: &Pool, op: F) -> Result<T, StoreError>
where
    F: AsyncFnOnce(&mut Object) -> Result<T, tokio_postgres::Error>,
{
    tokio::time::timeout(OP_TIMEOUT, async {
        let mut client = pool.get().await.map_err(unavailable)?;
        op(&mut client).await.map_err(unavailable)
    })
    .await
    .map_err(|_| timed_out())?
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
        self.pool.close();
    }
}

fn claimed_row(row: &tokio_postgres::Row) -> (i64, u32, String, String) {
    (row.get(0), row.get::<_, i32>(1) as u32, row.get(2), row.get(3))
}

#[async_trait]
impl Store for PostgresStore {
    async fn ingest(&self, e: NewEvent) -> Result<Ingested, StoreError> {
        let status = e.recording_status.as_str();
        let may_be_superseded = !e.recording_status.is_final();
        let handlers: Vec<&str> = e.targets.iter().map(|t| t.handler.as_str()).collect();
        let leases: Vec<Option<i64>> = e.targets.iter().map(|t| t.lease.map(|l| l.as_millis() as i64)).collect();
        let row = self
            .with(async |client| {
                let lock = client.prepare_cached("SELECT pg_advisory_xact_lock(hashtext($1))").await?;
                let store = client.prepare_cached(INGEST).await?;
                // One round trip: the four statements are pipelined (sent together, run in
                // order). The lock serializes every ingest of this recording, on every
                // replica, until commit; the insert is a separate statement so that its
                // snapshot, taken after the lock was granted, sees what earlier holders
                // committed — the final-status check and the insert are one atomic step.
                // If the insert fails, COMMIT on the aborted transaction rolls it back.
                let lock_params: [&(dyn ToSql + Sync); 1] = [&e.recording_sid];
                let store_params: [&(dyn ToSql + Sync); 7] =
                    [&e.id, &e.recording_sid, &status, &may_be_superseded, &e.json, &handlers, &leases];
                let (_, _, row, _) = futures_util::try_join!(
                    client.batch_execute("BEGIN"),
                    client.execute(&lock, &lock_params),
                    client.query_one(&store, &store_params),
                    client.batch_execute("COMMIT"),
                )?;
                Ok(row)
            })
            .await?;
        let superseded: Option<bool> = row.get(0);
        let Some(superseded) = superseded else {
            return Ok(Ingested::Duplicate { event_id: row.get(1) });
        };
        if superseded {
            return Ok(Ingested::Superseded { event_id: e.id });
        }
        let leased_handlers: Vec<String> = row.get::<_, Option<Vec<String>>>(2).unwrap_or_default();
        let leased_ids: Vec<i64> = row.get::<_, Option<Vec<i64>>>(3).unwrap_or_default();
        // In the order of the targets that asked for a lease (one delivery per handler).
        let leased = e
            .targets
            .iter()
            .filter(|t| t.lease.is_some())
            .filter_map(|t| {
                let i = leased_handlers.iter().position(|h| *h == t.handler)?;
                Some((t.handler.clone(), leased_ids[i]))
            })
            .collect();
        Ok(Ingested::Stored { event_id: e.id, leased })
    }

    async fn quarantine(&self, item: NewQuarantine) -> Result<i64, StoreError> {
        self.with(async |client| {
            let stmt = client
                .prepare_cached(concat!(
                    "INSERT INTO quarantine (received_at, fields, errors) VALUES (",
                    now_ms!(),
                    ", $1, $2) RETURNING id"
                ))
                .await?;
            Ok(client.query_one(&stmt, &[&item.fields, &item.errors]).await?.get(0))
        })
        .await
    }

    async fn claim(&self, handler: &str, limit: usize, lease: Duration) -> Result<Vec<Claimed>, StoreError> {
        let lease_ms = lease.as_millis() as i64;
        let rows = self
            .with(async |client| {
                // SKIP LOCKED: replicas claiming at the same moment take different rows
                // instead of queueing behind each other.
                let stmt = client
                    .prepare_cached(concat!(
                        "WITH due AS (
                            SELECT id FROM deliveries
                            WHERE handler = $1 AND state = 'pending' AND due_at <= ",
                        now_ms!(),
                        " ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                         UPDATE deliveries d SET attempts = d.attempts + 1, leased = true,
                                due_at = ",
                        now_ms!(),
                        " + $3, updated_at = ",
                        now_ms!(),
                        " FROM due, events e WHERE d.id = due.id AND e.seq = d.event_seq
                         RETURNING d.id, d.attempts, e.id, e.payload"
                    ))
                    .await?;
                client.query(&stmt, &[&handler, &(limit as i64), &lease_ms]).await
            })
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let (id, attempt, event_id, payload) = claimed_row(row);
            match StoredEvent::from_json(event_id, payload) {
                Ok(event) => claimed.push(Claimed { delivery_id: id, attempt, event }),
                // A payload we cannot read will not get better: dead-letter it, loudly.
                Err(e) => {
                    tracing::error!(delivery_id = id, error = %e, "stored event is unreadable; dead-lettering");
                    let error = format!("stored event is unreadable: {e}");
                    self.finish(id, attempt, Outcome::Dead { error }).await?;
                }
            }
        }
        claimed.sort_by_key(|c| c.delivery_id);
        Ok(claimed)
    }

    async fn finish(&self, id: i64, attempt: u32, outcome: Outcome) -> Result<(), StoreError> {
        let (state, delay, error) = match outcome {
            Outcome::Delivered => ("delivered", 0, None),
            Outcome::Retry { delay, error } => ("pending", delay.as_millis() as i64, Some(error)),
            Outcome::Dead { error } => ("dead", 0, Some(error)),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let attempt = attempt as i32;
        let recording = finish::Finish { id, attempt, state, delay, error, reply };
        self.finishing.send(recording).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn release(&self, claims: Vec<(i64, u32)>) -> Result<(), StoreError> {
        let ids: Vec<i64> = claims.iter().map(|c| c.0).collect();
        let attempts: Vec<i32> = claims.iter().map(|c| c.1 as i32).collect();
        self.with(async |client| {
            // Due at once, on any replica: tell them.
            let stmt = client
                .prepare_cached(concat!(
                    "WITH r AS (
                        UPDATE deliveries d SET leased = false, due_at = ",
                    now_ms!(),
                    ", attempts = d.attempts - 1, updated_at = ",
                    now_ms!(),
                    " FROM unnest($1::bigint[], $2::integer[]) AS c (id, attempt)
                        WHERE d.id = c.id AND d.attempts = c.attempt AND d.state = 'pending' AND d.leased
                        RETURNING d.handler)
                     SELECT pg_notify('recordhook', handler)::text FROM (SELECT DISTINCT handler FROM r) h"
                ))
                .await?;
            client.execute(&stmt, &[&ids, &attempts]).await?;
            Ok(())
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = self
            .with(async |client| {
                client
                    .query(
                        "SELECT d.id, d.handler, e.recording_sid, e.recording_status, d.attempts,
                                coalesce(d.last_error, '')
                         FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.state = 'dead' ORDER BY d.id",
                        &[],
                    )
                    .await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                delivery_id: r.get(0),
                handler: r.get(1),
                recording_sid: r.get(2),
                recording_status: r.get(3),
                attempts: r.get::<_, i32>(4) as u32,
                last_error: r.get(5),
            })
            .collect())
    }

    async fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let rows = self
            .with(async |client| {
                client.query("SELECT id, received_at, fields, errors FROM quarantine ORDER BY id", &[]).await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| Quarantined { id: r.get(0), received_at: r.get(1), fields: r.get(2), errors: r.get(3) })
            .collect())
    }

    async fn replay(&self, which: Replay) -> Result<u64, StoreError> {
        let only: Option<i64> = match which {
            Replay::Delivery(id) => Some(id),
            Replay::AllDead => None,
        };
        let n = self
            .with(async |client| {
                let stmt = client
                    .prepare_cached(concat!(
                        "WITH r AS (
                            UPDATE deliveries SET state = 'pending', attempts = 0, leased = false, due_at = ",
                        now_ms!(),
                        ", updated_at = ",
                        now_ms!(),
                        " WHERE state = 'dead' AND ($1::bigint IS NULL OR id = $1) RETURNING handler),
                         n AS (SELECT count(*) AS n FROM r),
                         w AS (SELECT pg_notify('recordhook', handler)::text AS x FROM (SELECT DISTINCT handler FROM r) h)
                         SELECT n.n, (SELECT count(*) FROM w) FROM n"
                    ))
                    .await?;
                Ok(client.query_one(&stmt, &[&only]).await?.get::<_, i64>(0) as u64)
            })
            .await?;
        match (which, n) {
            (Replay::Delivery(id), 0) => Err(StoreError::NotDead(id)),
            _ => Ok(n),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(async |client| {
            let stmt = client
                .prepare_cached(concat!(
                    "INSERT INTO heartbeat (id, at) VALUES (1, ",
                    now_ms!(),
                    ") ON CONFLICT (id) DO UPDATE SET at = excluded.at"
                ))
                .await?;
            client.execute(&stmt, &[]).await?;
            Ok(())
        })
        .await
    }

    async fn purge(&self, older_than: Duration, limit: usize) -> Result<u64, StoreError> {
        let older_than = older_than.as_millis() as i64;
        let limit = limit as i64;
        self.with(async |client| {
            // Two statements, each its own transaction: a purge never holds locks long,
            // and replicas purging at once just find less to do.
            let deliveries = client
                .prepare_cached(concat!(
                    "DELETE FROM deliveries WHERE id IN (
                        SELECT id FROM deliveries WHERE state = 'delivered' AND updated_at < ",
                    now_ms!(),
                    " - $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
                ))
                .await?;
            let events = client
                .prepare_cached(concat!(
                    "DELETE FROM events WHERE seq IN (
                        SELECT seq FROM events e WHERE e.received_at < ",
                    now_ms!(),
                    " - $1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)
                        LIMIT $2 FOR UPDATE SKIP LOCKED)"
                ))
                .await?;
            let d = client.execute(&deliveries, &[&older_than, &limit]).await?;
            let e = client.execute(&events, &[&older_than, &limit]).await?;
            Ok(d + e)
        })
        .await
    }

    async fn stats(&self) -> Result<Vec<HandlerStats>, StoreError> {
        let rows = self
            .with(async |client| {
                client
                    .query(
                        "SELECT handler, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead')
                         FROM deliveries WHERE state IN ('pending', 'dead') GROUP BY handler ORDER BY handler",
                        &[],
                    )
                    .await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| HandlerStats {
                handler: r.get(0),
                pending: r.get::<_, i64>(1) as u64,
                dead: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    fn wake_ups(&self) -> Option<broadcast::Receiver<String>> {
        self.listening.then(|| self.wake.subscribe())
    }
}
