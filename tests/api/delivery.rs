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
