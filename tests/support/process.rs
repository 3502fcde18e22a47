//! Plumbing for the tests that run the real `recordhook` binary as a separate process
//! (`tests/crash.rs`, `tests/faults.rs`): start, SIGKILL and restart it, send it signed
//! callbacks, and a downstream receiver that can fail in every way a real one does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recordhook::signature::{SigningKey, sign_fields};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Signing Key every test server trusts.
pub const KEY: &str = "PSK_process_test_key";

/// A free port on loopback (bound and released: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a config for a server storing in `dir`, with `handlers` appended.
pub fn write_config(dir: &Path, handlers: &str) -> PathBuf {
    let path = dir.join("recordhook.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[signature]
signing_keys = ["{KEY}"]

[store]
path = "{}"

[dispatch]
poll_interval = "50ms"
lease_margin = "500ms"
{handlers}
"#,
        dir.join("recordhook.db").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An `http` handler that retries fast and practically forever.
pub fn http_handler(url: &str, timeout: &str) -> String {
    format!(
        "\n[handlers.forward]\ntype = \"http\"\nurl = \"{url}\"\ntimeout = \"{timeout}\"\nconcurrency = 8\n\
         retry = {{ max_attempts = 100000, initial_backoff = \"20ms\", max_backoff = \"250ms\" }}\n"
    )
}

/// The binary, running.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Starts `recordhook serve` and waits until it accepts connections.
    pub fn start(config: &Path) -> Server {
        Self::spawn(config, "error", Stdio::null())
    }

    /// Like [`Server::start`], logging at `level`; [`Server::kill_and_log`] returns the log
    /// (JSON lines on stdout).
    pub fn start_logging(config: &Path, level: &str) -> Server {
        Self::spawn(config, level, Stdio::piped())
    }

    fn spawn(config: &Path, level: &str, stdout: Stdio) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_recordhook"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RECORDHOOK_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", level)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// The callback URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/recording-status", self.port)
    }

    /// `GET /readyz`'s status.
    pub async fn ready(&self, client: &reqwest::Client) -> u16 {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        client.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILLs a server started with [`Server::start_logging`] and returns its log.
    pub fn kill_and_log(mut self) -> String {
        self.kill9();
        let mut log = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut log).unwrap();
        }
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A complete, valid `completed` callback for recording `sid`.
pub fn callback(sid: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", "b3877c40-da60-4998-90ad-b792e98472af".to_owned()),
        ("CallSid", "b3877c40-da60-4998-90ad-b792e98472ca".to_owned()),
        ("RecordingSid", sid.to_owned()),
        ("RecordingUrl", format!("https://example.signalwire.com/api/laml/2010-04-01/Recordings/{sid}")),
        ("RecordingStatus", "completed".to_owned()),
        ("RecordingDuration", "94".to_owned()),
        ("RecordingChannels", "1".to_owned()),
        ("RecordingSource", "RecordVerb".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Posts a correctly signed form callback to `url`; the status, or the transport error.
pub async fn post(client: &reqwest::Client, url: &str, sid: &str) -> Result<u16, reqwest::Error> {
    let fields = callback(sid);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
    let signature = sign_fields(&SigningKey::new(KEY), url, &fields);
    let response = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", signature)
        .body(body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Polls `check` until it holds or `timeout` passes; panics with `what` on timeout.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the [`Downstream`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200, and the delivery is counted.
    Ok = 0,
    /// 503 (a retryable failure).
    Error = 1,
    /// Reads the request, then says nothing for 30 s (past any handler timeout).
    Hang = 2,
}

#[derive(Default)]
struct Counts {
    /// 200 answers per RecordingSid.
    delivered: Mutex<HashMap<String, u32>>,
    /// Requests seen in each mode.
    by_mode: [AtomicU64; 3],
}

/// A downstream HTTP service written against the socket, so that it can also refuse
/// connections (stop listening) and come back on the same port. Every answer closes the
/// connection, so a refused phase really refuses: no pooled connection survives it.
pub struct Downstream {
    /// Its URL.
    pub url: String,
    port: u16,
    mode: Arc<AtomicU8>,
    counts: Arc<Counts>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Downstream {
    /// Starts listening on a free port, answering 200.
    pub async fn start() -> Downstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let d = Downstream {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            mode: Arc::new(AtomicU8::new(Mode::Ok as u8)),
            counts: Arc::default(),
            accept: Mutex::new(None),
        };
        d.serve(listener);
        d
    }

    /// A downstream that is not listening yet: `url` refuses connections until [`listen`].
    pub fn down() -> Downstream {
        let port = free_port();
        Downstream {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            mode: Arc::new(AtomicU8::new(Mode::Ok as u8)),
            counts: Arc::default(),
            accept: Mutex::new(None),
        }
    }

    fn serve(&self, listener: TcpListener) {
        let mode = self.mode.clone();
        let counts = self.counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, mode.clone(), counts.clone()));
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// Answers the next requests this way.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused.
    pub fn refuse(&self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn listen(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen again on {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }

    /// How many times each RecordingSid was delivered (answered 200).
    pub fn delivered(&self) -> HashMap<String, u32> {
        self.counts.delivered.lock().unwrap().clone()
    }

    /// How many times `sid` was delivered.
    pub fn count(&self, sid: &str) -> u32 {
        self.counts.delivered.lock().unwrap().get(sid).copied().unwrap_or(0)
    }

    /// Requests seen while in `mode`.
    pub fn seen(&self, mode: Mode) -> u64 {
        self.counts.by_mode[mode as usize].load(Ordering::SeqCst)
    }
}

async fn answer(mut stream: TcpStream, mode: Arc<AtomicU8>, counts: Arc<Counts>) {
    let Some(body) = read_request(&mut stream).await else { return };
    let mode = mode.load(Ordering::SeqCst);
    counts.by_mode[mode as usize].fetch_add(1, Ordering::SeqCst);
    let status = match mode {
        0 => {
            let sid = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["RecordingSid"].as_str().map(str::to_owned))
                .unwrap_or_default();
            *counts.delivered.lock().unwrap().entry(sid).or_default() += 1;
            "200 OK"
        }
        1 => "503 Service Unavailable",
        _ => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
    };
    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads one HTTP/1.1 request with a `content-length` body; returns the body.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[header_end..header_end + length].to_vec())
}

/// Opens the store read-only beside (or after) the server, for assertions.
pub fn open_db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("recordhook.db")).unwrap()
}

/// `PRAGMA integrity_check`'s verdict ("ok" when the database is sound).
pub fn integrity(dir: &Path) -> String {
    open_db(dir).query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

/// Deliveries per state, e.g. `{"delivered": 10, "pending": 2}`.
pub fn delivery_states(dir: &Path) -> HashMap<String, i64> {
    let db = open_db(dir);
    let mut stmt = db.prepare("SELECT state, count(*) FROM deliveries GROUP BY state").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}
