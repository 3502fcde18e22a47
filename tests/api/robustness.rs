//! Hostile input and hard stops: nothing panics, nothing acknowledged is lost.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::process;
use crate::rng::SplitMix64;

/// Up to `max - 1` seeded random bytes, so a failing case can be replayed.
fn bytes(rng: &mut SplitMix64, max: usize) -> Vec<u8> {
    let n = (rng.next() as usize) % max;
    (0..n).map(|_| rng.next() as u8).collect()
}

#[tokio::test]
async fn arbitrary_bytes_never_get_a_5xx() {
    let app = TestApp::spawn("").await;
    let mut rng = SplitMix64(0x5eed);
    let content_types = ["application/x-www-form-urlencoded", "application/json", "text/plain", "", "application/xml"];
    let field_names = ["AccountSid=", "RecordingSid=", "RecordingStatus=", "&", "%", "%zz", "=", "+", "{\"", "\":"];
    for i in 0..400 {
        let mut body = bytes(&mut rng, 300);
        // Mix in fragments that reach deeper into the parsers than pure noise would.
        if i % 2 == 0 {
            for _ in 0..(rng.next() % 6) {
                body.extend_from_slice(field_names[(rng.next() as usize) % field_names.len()].as_bytes());
                body.extend(bytes(&mut rng, 12));
            }
        }
        let ct = content_types[(rng.next() as usize) % content_types.len()];
        let mut request = app.client.post(app.url("/recording-status")).body(body.clone());
        if !ct.is_empty() {
            request = request.header("content-type", ct);
        }
        if i % 3 == 0 {
            // Any printable header value (reqwest refuses to send control bytes).
            let signature: String = bytes(&mut rng, 40).iter().map(|b| char::from(b'!' + b % 94)).collect();
            request = request.header("x-signalwire-signature", signature);
        }
        let status = request.send().await.unwrap().status();
        assert!(status.as_u16() < 500, "case {i}: {status} for {ct:?} {body:?}");
    }
    // Arbitrary query strings on GET too.
    for i in 0..200 {
        let q: String = bytes(&mut rng, 80).iter().map(|b| format!("%{b:02X}")).collect();
        let status = app.client.get(app.url(&format!("/recording-status?{q}"))).send().await.unwrap().status();
        assert!(status.as_u16() < 500, "GET case {i}: {status}");
    }
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn acknowledged_events_survive_kill_9_and_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The downstream is down while the first server runs: nothing can be delivered.
    let downstream = process::Downstream::down();
    let config = process::write_config(dir.path(), &process::http_handler(&downstream.url, "2s"));
    let client = reqwest::Client::new();
    let mut server = process::Server::start(&config);
    for i in 0..25 {
        assert_eq!(process::post(&client, &server.url(), &format!("RE{i}")).await.unwrap(), 200);
    }
    server.kill9(); // SIGKILL: no shutdown code runs.

    downstream.listen().await;
    let _restarted = process::Server::start(&config);
    eventually("all 25 acknowledged events delivered", Duration::from_secs(20), || {
        (0..25).all(|i| downstream.count(&format!("RE{i}")) >= 1)
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_running_deliveries_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::slow(Duration::from_millis(1000)).await;
    // shutdown_grace is 2 s: the running delivery has time to finish.
    let config = process::write_config(dir.path(), &process::http_handler(&rx.url, "5s"));
    let client = reqwest::Client::new();
    let mut server = process::Server::start(&config);
    assert_eq!(process::post(&client, &server.url(), "RE1").await.unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await; // the delivery is running
    let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert_eq!(rx.count("RE1"), 1, "the running delivery finished before exit");
}
