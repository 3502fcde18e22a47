//! Hostile input and hard stops: nothing panics, nothing acknowledged is lost.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::helpers::*;

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % max;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test]
async fn arbitrary_bytes_never_get_a_5xx() {
    let app = TestApp::spawn("").await;
    let mut rng = Lcg(0x5eed);
    let content_types = ["application/x-www-form-urlencoded", "application/json", "text/plain", "", "application/xml"];
    let field_names = ["AccountSid=", "RecordingSid=", "RecordingStatus=", "&", "%", "%zz", "=", "+", "{\"", "\":"];
    for i in 0..400 {
        let mut body = rng.bytes(300);
        // Mix in fragments that reach deeper into the parsers than pure noise would.
        if i % 2 == 0 {
            for _ in 0..(rng.next() % 6) {
                body.extend_from_slice(field_names[(rng.next() as usize) % field_names.len()].as_bytes());
                body.extend(rng.bytes(12));
            }
        }
        let ct = content_types[(rng.next() as usize) % content_types.len()];
        let mut request = app.client.post(app.url("/recording-status")).body(body.clone());
        if !ct.is_empty() {
            request = request.header("content-type", ct);
        }
        if i % 3 == 0 {
            // Any printable header value (reqwest refuses to send control bytes).
            let signature: String = rng.bytes(40).iter().map(|b| char::from(b'!' + b % 94)).collect();
            request = request.header("x-signalwire-signature", signature);
        }
        let status = request.send().await.unwrap().status();
        assert!(status.as_u16() < 500, "case {i}: {status} for {ct:?} {body:?}");
    }
    // Arbitrary query strings on GET too.
    for i in 0..200 {
        let q: String = rng.bytes(80).iter().map(|b| format!("%{b:02X}")).collect();
        let status = app.client.get(app.url(&format!("/recording-status?{q}"))).send().await.unwrap().status();
        assert!(status.as_u16() < 500, "GET case {i}: {status}");
    }
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

/// The real binary, as an operator runs it.
struct Server {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    fn start(config: &std::path::Path, port: u16) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_recordhook"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RECORDHOOK_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/recording-status", self.port)
    }

    async fn post(&self, client: &reqwest::Client, fields: &[(String, String)]) -> StatusCode {
        let url = self.url();
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
        let signature = recordhook::signature::sign_fields(&recordhook::signature::SigningKey::new(KEY), &url, fields);
        client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-signalwire-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &tempfile::TempDir, handler: &str) -> std::path::PathBuf {
    let path = dir.path().join("recordhook.toml");
    std::fs::write(&path, config_text(dir.path(), "", handler)).unwrap();
    path
}

#[tokio::test]
async fn acknowledged_events_survive_kill_9_and_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The downstream is down while the first server runs: nothing can be delivered.
    let downstream_port = free_port();
    let handler = format!(
        "\n[handlers.forward]\ntype = \"http\"\nurl = \"http://127.0.0.1:{downstream_port}/hook\"\ntimeout = \"2s\"\n\
         retry = {{ max_attempts = 1000, initial_backoff = \"20ms\", max_backoff = \"200ms\" }}\n"
    );
    let config = write_config(&dir, &handler);
    let client = reqwest::Client::new();
    let server = Server::start(&config, free_port());
    for i in 0..25 {
        assert_eq!(server.post(&client, &callback(&format!("RE{i}"), "completed")).await, 200);
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL: no shutdown code runs.
    server.child.wait().unwrap();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", downstream_port)).await.unwrap();
    let rx = Receiver::on(listener, |_, _| StatusCode::OK);
    let _restarted = Server::start(&config, free_port());
    eventually("all 25 acknowledged events delivered", Duration::from_secs(20), || {
        (0..25).all(|i| rx.count(&format!("RE{i}")) >= 1)
    })
    .await;
}

#[tokio::test]
async fn sigterm_drains_running_deliveries_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::slow(Duration::from_millis(1000)).await;
    let config = write_config(&dir, &http_handler("forward", &rx.url, ""));
    let client = reqwest::Client::new();
    let mut server = Server::start(&config, free_port());
    assert_eq!(server.post(&client, &callback("RE1", "completed")).await, 200);
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
