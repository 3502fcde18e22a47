//! From acknowledgement to delivered: dedupe, retries, dead letters, replay, shutdown.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_receives_the_event_as_signalwire_json() {
    let rx = Receiver::ok().await;
    let app = TestApp::spawn(&http_handler("forward", &rx.url, "")).await;
    let mut fields = callback("RE1", "completed");
    fields.push(("CustomField".into(), "kept".into()));
    let ack: Value = app.post_form(&fields).await.json().await.unwrap();
    eventually("delivery", WAIT, || rx.count("RE1") == 1).await;
    let got = &rx.received()[0];
    assert_eq!(got.body["RecordingDuration"], 94, "integers, as in the seed's JSON");
    assert_eq!(got.body["RecordingChannels"], 1);
    assert_eq!(got.body["RecordingStatus"], "completed");
    assert_eq!(got.body["CustomField"], "kept", "unknown fields are handed on as received");
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["idempotency-key"], ack["event_id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_callbacks_are_delivered_exactly_once() {
    let rx = Receiver::ok().await;
    let app = std::sync::Arc::new(TestApp::spawn(&http_handler("forward", &rx.url, "")).await);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move { app.post_form(&callback("RE1", "completed")).await.status() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200, "duplicates are acknowledged");
    }
    eventually("delivery", WAIT, || rx.count("RE1") >= 1).await;
    // Give any wrongly queued duplicate time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count("RE1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_in_progress_is_acknowledged_but_not_dispatched() {
    let rx = Receiver::ok().await;
    let app = TestApp::spawn(&http_handler("forward", &rx.url, "")).await;
    assert_eq!(app.post_form(&callback("RE1", "completed")).await.status(), 200);
    let late = app.post_form(&callback("RE1", "in-progress")).await;
    assert_eq!(late.status(), 200);
    assert_eq!(late.json::<Value>().await.unwrap()["status"], "superseded");
    eventually("delivery", WAIT, || rx.count("RE1") == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let statuses: Vec<Value> = rx.received().iter().map(|r| r.body["RecordingStatus"].clone()).collect();
    assert_eq!(statuses, vec![Value::from("completed")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_until_delivered() {
    // 503 twice, then 200.
    let rx =
        Receiver::scripted(|_, seen| if seen < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }).await;
    let app = TestApp::spawn(&http_handler("forward", &rx.url, "")).await;
    app.post_form(&callback("RE1", "completed")).await;
    eventually("three attempts", WAIT, || rx.count("RE1") == 3).await;
    let (ok, out, _) = cli(&["dead-letters", "--config", app.config_path.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "only the header: nothing dead\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_dead_letters_and_replay_delivers() {
    // 404 (permanent) on the first request, 200 afterwards.
    let rx = Receiver::scripted(|_, seen| if seen == 0 { StatusCode::NOT_FOUND } else { StatusCode::OK }).await;
    let app = TestApp::spawn(&http_handler("forward", &rx.url, "")).await;
    let config = app.config_path.to_str().unwrap().to_owned();
    app.post_form(&callback("RE1", "completed")).await;

    let mut listing = String::new();
    eventually("a dead letter", WAIT, || {
        listing = cli(&["dead-letters", "--config", &config]).1;
        listing.lines().count() == 2
    })
    .await;
    let row: Vec<&str> = listing.lines().nth(1).unwrap().split('\t').collect();
    assert_eq!(&row[1..5], &["forward", "RE1", "completed", "1"]);
    assert!(row[5].contains("404"), "last error names the status: {}", row[5]);
    assert_eq!(rx.count("RE1"), 1, "a permanent failure is not retried");

    let (ok, out, err) = cli(&["replay", "--config", &config, "--delivery", row[0]]);
    assert!(ok, "{out}{err}");
    eventually("redelivery after replay", WAIT, || rx.count("RE1") == 2).await;
    eventually("dead letter gone", WAIT, || cli(&["dead-letters", "--config", &config]).1.lines().count() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_exhausted_dead_letters() {
    let rx = Receiver::scripted(|_, _| StatusCode::BAD_GATEWAY).await;
    let app = TestApp::spawn(&http_handler("forward", &rx.url, "")).await;
    app.post_form(&callback("RE1", "completed")).await;
    let config = app.config_path.to_str().unwrap().to_owned();
    eventually("a dead letter", WAIT, || cli(&["dead-letters", "--config", &config]).1.lines().count() == 2).await;
    assert_eq!(rx.count("RE1"), 4, "max_attempts = 4");
    let listing = cli(&["dead-letters", "--config", &config]).1;
    assert!(listing.contains("gave up after 4 attempts"), "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_choose_which_handlers_get_an_event() {
    let all = Receiver::ok().await;
    let completed_long = Receiver::ok().await;
    let other_account = Receiver::ok().await;
    let handlers = format!(
        "{}{}{}",
        http_handler("all", &all.url, ""),
        http_handler(
            "long_completed",
            &completed_long.url,
            "events = [\"completed\"]\nmin_duration = 60\nsources = [\"RecordVerb\"]"
        ),
        http_handler("other", &other_account.url, "accounts = [\"AC_other\"]"),
    );
    let app = TestApp::spawn(&handlers).await;
    app.post_form(&callback("RE_progress", "in-progress")).await;
    app.post_form(&callback("RE_done", "completed")).await; // 94 s, RecordVerb
    let mut short = callback("RE_short", "completed");
    short.iter_mut().find(|(k, _)| k == "RecordingDuration").unwrap().1 = "5".into();
    app.post_form(&short).await;
    eventually("all three to `all`", WAIT, || all.received().len() == 3).await;
    eventually("one to `long_completed`", WAIT, || completed_long.count("RE_done") == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(completed_long.received().len(), 1);
    assert!(other_account.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_deliveries_finish() {
    let rx = Receiver::slow(Duration::from_millis(800)).await;
    let app = TestApp::spawn(&http_handler("forward", &rx.url, "")).await;
    app.post_form(&callback("RE1", "completed")).await;
    // Let the delivery start, then stop while it is running.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _dir = app.stop().await;
    assert_eq!(rx.count("RE1"), 1, "the running delivery completed within shutdown_grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_does_not_hold_up_another() {
    let slow = Receiver::slow(Duration::from_secs(3)).await;
    let fast = Receiver::ok().await;
    let handlers = format!(
        "\n[handlers.slow]\ntype = \"http\"\nurl = \"{}\"\nconcurrency = 1\ntimeout = \"10s\"\n{}",
        slow.url,
        http_handler("fast", &fast.url, "")
    );
    let app = TestApp::spawn(&handlers).await;
    for i in 0..5 {
        app.post_form(&callback(&format!("RE{i}"), "completed")).await;
    }
    eventually("fast handler got all five", Duration::from_secs(2), || fast.received().len() == 5).await;
    assert!(slow.received().len() <= 1);
}

/// The embedded store with every ingest slowed down, so a client can give up mid-commit.
struct SlowIngest(recordhook::store::sqlite::SqliteStore, Duration);

#[async_trait::async_trait]
impl recordhook::store::Store for SlowIngest {
    async fn ingest(&self, e: recordhook::store::NewEvent) -> Result<recordhook::store::Ingested, StoreError> {
        tokio::time::sleep(self.1).await;
        self.0.ingest(e).await
    }
    async fn quarantine(&self, q: recordhook::store::NewQuarantine) -> Result<i64, StoreError> {
        self.0.quarantine(q).await
    }
    async fn claim(&self, h: &str, n: usize, l: Duration) -> Result<Vec<recordhook::store::Claimed>, StoreError> {
        self.0.claim(h, n, l).await
    }
    async fn finish(&self, id: i64, a: u32, o: recordhook::store::Outcome) -> Result<(), StoreError> {
        self.0.finish(id, a, o).await
    }
    async fn release(&self, c: Vec<(i64, u32)>) -> Result<(), StoreError> {
        self.0.release(c).await
    }
    async fn dead_letters(&self) -> Result<Vec<recordhook::store::DeadLetter>, StoreError> {
        self.0.dead_letters().await
    }
    async fn quarantined(&self) -> Result<Vec<recordhook::store::Quarantined>, StoreError> {
        self.0.quarantined().await
    }
    async fn replay(&self, r: recordhook::store::Replay) -> Result<u64, StoreError> {
        self.0.replay(r).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
    async fn purge(&self, older_than: Duration, limit: usize) -> Result<u64, StoreError> {
        self.0.purge(older_than, limit).await
    }
    async fn stats(&self) -> Result<Vec<recordhook::store::HandlerStats>, StoreError> {
        self.0.stats().await
    }
}

type StoreError = recordhook::store::StoreError;

#[tokio::test]
async fn a_client_that_hangs_up_mid_commit_does_not_delay_the_delivery() {
    // A client giving up while its callback is being committed must not strand the
    // delivery: it is stored as claimed by this process (the hand-off fast path), so if
    // the hand-off were dropped with the request it would wait out its whole lease
    // (2 × the 2 s timeout + 1 s margin) before running.
    let rx = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = recordhook::store::sqlite::SqliteStore::open(
        &dir.path().join("slow.db"),
        recordhook::store::sqlite::Mode::Server,
    )
    .unwrap();
    let store = std::sync::Arc::new(SlowIngest(sqlite, Duration::from_millis(400)));
    let app = TestApp::spawn_with_store(&http_handler("forward", &rx.url, ""), store).await;

    let fields = callback("RE-hung-up", "completed");
    let url = app.url("/recording-status");
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
    let signature = recordhook::signature::sign_fields(&recordhook::signature::SigningKey::new(KEY), &url, &fields);
    let gave_up = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", signature)
        .body(body)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client was meant to give up before the commit");

    eventually("the delivery runs without waiting out its lease", Duration::from_millis(2500), || {
        rx.count("RE-hung-up") == 1
    })
    .await;
}
