//! Outcomes, recorded in batches: every outcome that arrives while the previous batch is
//! committing goes into the next one, as one `UPDATE` over `unnest`ed arrays and one
//! commit. Without this every delivery cost the database a commit of its own on top of
//! its ingest's; under load the batch grows with the commit latency instead.

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, unavailable, with_client};

/// Most outcomes recorded by one statement.
const MAX_BATCH: usize = 256;

/// One outcome to record, and who waits for it.
pub(super) struct Finish {
    pub id: i64,
    pub attempt: i32,
    pub state: &'static str,
    /// Milliseconds from now until due again (retries), else 0.
    pub delay: i64,
    pub error: Option<String>,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Starts the batching task; it ends when every sender is gone (the store was dropped).
pub(super) fn start(pool: Pool) -> mpsc::Sender<Finish> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    tokio::spawn(run(pool, rx));
    tx
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Finish>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Waits for one outcome, then takes every other one already queued (up to the limit);
    // 0 only once every sender is gone.
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = record(&pool, &batch).await.map_err(|e| e.to_string());
        for f in batch.drain(..) {
            // A waiter that gave up (shutdown) is not an error here.
            let _ = f.reply.send(result.clone().map_err(|e| unavailable(std::io::Error::other(e))));
        }
    }
}

/// Records a batch of outcomes in one statement. Each is guarded by its attempt: a worker
/// whose lease ran out (and whose delivery moved on to a later attempt elsewhere) records
/// nothing; the guard also makes each delivery match at most one row of the batch.
async fn record(pool: &Pool, batch: &[Finish]) -> Result<(), StoreError> {
    let ids: Vec<i64> = batch.iter().map(|f| f.id).collect();
    let attempts: Vec<i32> = batch.iter().map(|f| f.attempt).collect();
    let states: Vec<&str> = batch.iter().map(|f| f.state).collect();
    let delays: Vec<i64> = batch.iter().map(|f| f.delay).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|f| f.error.as_deref()).collect();
    with_client(pool, async |client| {
        let stmt = client
            .prepare_cached(concat!(
                "UPDATE deliveries d SET state = f.state, leased = false, due_at = ",
                now_ms!(),
                " + f.delay, last_error = coalesce(f.error, d.last_error), updated_at = ",
                now_ms!(),
                " FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::bigint[], $5::text[])
                     AS f (id, attempt, state, delay, error)
                 WHERE d.id = f.id AND d.attempts = f.attempt AND d.state = 'pending'"
            ))
            .await?;
        client.execute(&stmt, &[&ids, &attempts, &states, &delays, &errors]).await?;
        Ok(())
    })
    .await
}
