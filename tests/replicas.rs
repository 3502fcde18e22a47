//! Several real `recordhook serve` processes on one PostgreSQL database, as they run
//! behind a load balancer: load spread across them, one SIGKILLed mid-load and restarted,
//! the same callback sent to two at once, and the database cut off and given back.
//!
//! Each test gets a fresh database (see `tests/support`); without a PostgreSQL server
//! they print `skipped: …`, and fail under `CI=true`.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use futures_util::StreamExt;
use recordhook::signature::{SigningKey, sign_fields};
use support::TestDb;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::AbortHandle;

const KEY: &str = "PSK_replica_test_key";

// --- the downstream receiver ------------------------------------------------------------

/// Answers for one request: (status, Retry-After seconds).
type Script = Box<dyn Fn(&str, usize) -> (StatusCode, Option<u64>) + Send + Sync>;

struct ReceiverState {
    /// Every RecordingSid received, in order (one entry per request).
    got: Mutex<Vec<String>>,
    /// RecordingSids answered 2xx.
    delivered: Mutex<HashSet<String>>,
    delay: Duration,
    script: Script,
}

/// A downstream HTTP service that records what it was sent.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(
        delay: Duration,
        script: impl Fn(&str, usize) -> (StatusCode, Option<u64>) + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = Arc::new(ReceiverState {
            got: Mutex::default(),
            delivered: Mutex::default(),
            delay,
            script: Box::new(script),
        });
        let app = Router::new().route("/hook", post(receive)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, state }
    }

    fn delivered(&self, sid: &str) -> bool {
        self.state.delivered.lock().unwrap().contains(sid)
    }

    fn count(&self, sid: &str) -> usize {
        self.state.got.lock().unwrap().iter().filter(|s| *s == sid).count()
    }
}

async fn receive(State(state): State<Arc<ReceiverState>>, body: String) -> axum::response::Response {
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let sid = body["RecordingSid"].as_str().unwrap_or_default().to_owned();
    let seen = {
        let mut got = state.got.lock().unwrap();
        let seen = got.iter().filter(|s| **s == sid).count();
        got.push(sid.clone());
        seen
    };
    tokio::time::sleep(state.delay).await;
    let (status, retry_after) = (state.script)(&sid, seen);
    if status.is_success() {
        state.delivered.lock().unwrap().insert(sid);
    }
    let mut headers = HeaderMap::new();
    if let Some(secs) = retry_after {
        headers.insert("retry-after", secs.into());
    }
    (status, headers).into_response()
}

// --- replicas ---------------------------------------------------------------------------

/// One `recordhook serve` process.
struct Replica {
    port: u16,
    child: Child,
}

/// A free port below the kernel's ephemeral range: a killed replica is restarted on the
/// same port, which an outgoing connection could otherwise have taken meanwhile.
fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn config(dir: &Path, port: u16, store_url: &str, receiver: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace = "2s"

[signature]
signing_keys = ["{KEY}"]

[store]
type = "postgres"
url = "{store_url}"
pool_size = 4

[dispatch]
poll_interval = "200ms"
lease_margin = "1s"

[handlers.hook]
type = "http"
url = "{receiver}"
timeout = "2s"
retry = {{ max_attempts = 50, initial_backoff = "50ms", max_backoff = "5s" }}
"#
    );
    let path = dir.join(format!("replica-{port}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

impl Replica {
    /// Starts a replica on `port` and waits until it is ready.
    async fn start(dir: &Path, port: u16, store_url: &str, receiver: &str) -> Replica {
        let config = config(dir, port, store_url, receiver);
        let log =
            std::fs::File::options().create(true).append(true).open(dir.join(format!("replica-{port}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_recordhook"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        // Only our config: nothing from the test's environment may reconfigure it.
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("RECORDHOOK_")) {
            command.env_remove(name);
        }
        let child = command.spawn().unwrap();
        let mut replica = Replica { port, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while replica.readyz().await != Some(StatusCode::OK) {
            if let Ok(Some(status)) = replica.child.try_wait() {
                let log = std::fs::read_to_string(dir.join(format!("replica-{port}.log"))).unwrap_or_default();
                panic!("replica on port {port} exited during start-up ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "replica on port {port} never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/recording-status", self.port)
    }

    async fn readyz(&self) -> Option<StatusCode> {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        client().get(url).send().await.ok().map(|r| r.status())
    }

    async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.readyz().await != Some(StatusCode::OK) {
            assert!(Instant::now() < deadline, "replica on port {} never became ready", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no drain, no release; its leases must run out.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends a signed form callback.
    async fn send(&self, sid: &str) -> Result<reqwest::Response, reqwest::Error> {
        send(&self.url(), sid).await
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap()
}

fn callback(sid: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", "b3877c40-da60-4998-90ad-b792e98472af"),
        ("CallSid", "b3877c40-da60-4998-90ad-b792e98472ca"),
        ("RecordingSid", sid),
        ("RecordingUrl", "https://example.signalwire.com/api/laml/2010-04-01/Recordings/r"),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "94"),
        ("RecordingChannels", "1"),
        ("RecordingSource", "RecordVerb"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn send(url: &str, sid: &str) -> Result<reqwest::Response, reqwest::Error> {
    let fields = callback(sid);
    let signature = sign_fields(&SigningKey::new(KEY), url, &fields);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
    client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", signature)
        .body(body)
        .send()
        .await
}

async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_nothing_when_one_is_killed_mid_load() {
    let Some(db) = TestDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    // A little slow, so deliveries are in flight when the replica dies.
    let receiver = Receiver::start(Duration::from_millis(20), |_, _| (StatusCode::OK, None)).await;
    let mut ports = [free_port(), free_port(), free_port()];
    while ports[1] == ports[0] || ports[2] == ports[0] || ports[2] == ports[1] {
        ports = [free_port(), free_port(), free_port()];
    }
    let mut replicas = Vec::new();
    for port in ports {
        replicas.push(Some(Replica::start(dir.path(), port, &db.url, &receiver.url).await));
    }

    // The load: 300 distinct callbacks, round-robin like a load balancer; a refused or
    // failed request goes to the next replica (as the balancer, or SignalWire's retry, would).
    const N: usize = 300;
    let sent = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<HashMap<String, u16>>> = Arc::default();
    let load = {
        let (sent, acked) = (sent.clone(), acked.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(0..N)
                .for_each_concurrent(8, |i| {
                    let (sent, acked) = (sent.clone(), acked.clone());
                    async move {
                        let sid = format!("RE-load-{i}");
                        for k in 0..30 {
                            let port = ports[(i + k) % 3];
                            let url = format!("http://127.0.0.1:{port}/recording-status");
                            if let Ok(r) = send(&url, &sid).await
                                && r.status() == StatusCode::OK
                            {
                                acked.lock().unwrap().insert(sid.clone(), port);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        // Spread the load over a few seconds so the kill lands mid-load.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await;
        })
    };

    eventually("a third of the load sent", Duration::from_secs(60), || sent.load(Ordering::Relaxed) >= N / 3).await;
    replicas[1].take().unwrap().kill().await;
    eventually("two thirds of the load sent", Duration::from_secs(60), || sent.load(Ordering::Relaxed) >= 2 * N / 3)
        .await;
    replicas[1] = Some(Replica::start(dir.path(), ports[1], &db.url, &receiver.url).await);
    load.await.unwrap();

    // The restarted replica takes callbacks again.
    let restarted = replicas[1].as_ref().unwrap();
    for i in 0..5 {
        let sid = format!("RE-after-{i}");
        assert_eq!(restarted.send(&sid).await.unwrap().status(), StatusCode::OK);
        acked.lock().unwrap().insert(sid, ports[1]);
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= N, "every callback was acknowledged by some replica ({} of {N})", acked.len());
    for port in ports {
        assert!(acked.values().filter(|p| **p == port).count() >= 10, "replica {port} took a share of the load");
    }
    // Leases of the killed replica's deliveries run out (2 × timeout + lease_margin) and
    // the others pick them up.
    eventually("every acknowledged callback delivered", Duration::from_secs(60), || {
        acked.keys().all(|sid| receiver.delivered(sid))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_callback_on_two_replicas_at_once_is_delivered_once() {
    let Some(db) = TestDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Duration::ZERO, |_, _| (StatusCode::OK, None)).await;
    let a = Replica::start(dir.path(), free_port(), &db.url, &receiver.url).await;
    let b = Replica::start(dir.path(), free_port(), &db.url, &receiver.url).await;
    let sids: Vec<String> = (0..20).map(|i| format!("RE-twice-{i}")).collect();
    for sid in &sids {
        let (ra, rb) = tokio::join!(a.send(sid), b.send(sid));
        let mut answers = [ra.unwrap(), rb.unwrap()];
        let mut statuses = Vec::new();
        for r in &mut answers {
            assert_eq!(r.status(), StatusCode::OK);
        }
        for r in answers {
            statuses.push(r.json::<serde_json::Value>().await.unwrap()["status"].as_str().unwrap().to_owned());
        }
        statuses.sort();
        assert_eq!(statuses, ["duplicate", "stored"], "{sid}");
    }
    eventually("all delivered", Duration::from_secs(30), || sids.iter().all(|s| receiver.delivered(s))).await;
    // Give a stray second delivery every chance to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for sid in &sids {
        assert_eq!(receiver.count(sid), 1, "{sid} delivered more than once");
    }
}

/// A TCP proxy between a replica and PostgreSQL that the test can cut and restore.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // the database is "down": refuse by hanging up
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, up, links }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_and_recovers_without_a_restart() {
    let Some(db) = TestDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    // RE-pending fails its first attempt with Retry-After: 3, so its retry comes due
    // while the database is away.
    let receiver = Receiver::start(Duration::ZERO, |sid, seen| {
        if sid == "RE-pending" && seen == 0 {
            (StatusCode::SERVICE_UNAVAILABLE, Some(3))
        } else {
            (StatusCode::OK, None)
        }
    })
    .await;
    let mut url = url::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = Proxy::start(upstream).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port)).unwrap();
    let replica = Replica::start(dir.path(), free_port(), url.as_str(), &receiver.url).await;

    assert_eq!(replica.send("RE-before").await.unwrap().status(), StatusCode::OK);
    eventually("RE-before delivered", Duration::from_secs(10), || receiver.delivered("RE-before")).await;
    assert_eq!(replica.send("RE-pending").await.unwrap().status(), StatusCode::OK);
    eventually("RE-pending's first attempt", Duration::from_secs(10), || receiver.count("RE-pending") == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // its retry is recorded

    proxy.cut();
    let cut_at = Instant::now();
    // Callbacks are refused with 503 + Retry-After (quickly: the pool does not hang)…
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = Instant::now();
        let r = replica.send("RE-during").await.unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.headers().contains_key("retry-after"));
            assert!(started.elapsed() < Duration::from_secs(12), "a 503 must not take long");
            break;
        }
        assert!(Instant::now() < deadline, "callbacks never turned 503 (last {})", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …and readiness says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.readyz().await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Keep it down until RE-pending's retry is due.
    if let Some(rest) = Duration::from_secs(4).checked_sub(cut_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }

    proxy.restore();
    // The same process recovers by itself.
    replica.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(replica.send("RE-after").await.unwrap().status(), StatusCode::OK);
    eventually("pending work and new work delivered", Duration::from_secs(30), || {
        receiver.delivered("RE-pending") && receiver.delivered("RE-after")
    })
    .await;
}
