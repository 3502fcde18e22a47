//! Shared test plumbing: the real app on port 0 over a temp directory, a recording
//! downstream receiver, signing, and polling with a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use recordhook::app::Application;
use recordhook::config::Config;
use recordhook::signature::{SigningKey, sign_fields, sign_raw};
use recordhook::store::Store;
use tokio_util::sync::CancellationToken;

/// The Signing Key every test app trusts.
pub const KEY: &str = "PSK_test_signing_key";

/// A running app.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its temp directory (holds the store and config).
    pub dir: tempfile::TempDir,
    /// The config file it was loaded from.
    pub config_path: PathBuf,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// A client for talking to it.
    pub client: reqwest::Client,
}

/// Posts `fields` as a form body to `url` with `headers` (no signature unless one is
/// among them).
pub async fn post_form_to(
    client: &reqwest::Client,
    url: &str,
    fields: &[(String, String)],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
    let mut request = client.post(url).header("content-type", "application/x-www-form-urlencoded").body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The config every test starts from; `server` lines go into `[server]`, `extra` is
/// appended (handler tables etc.).
pub fn config_text(dir: &Path, server: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 4096
shutdown_grace = "5s"
{server}

[signature]
signing_keys = ["PSK_other_project", "{KEY}"]

[store]
path = "{}"

[dispatch]
poll_interval = "50ms"
lease_margin = "1s"
{extra}
"#,
        dir.join("recordhook.db").display()
    )
}

/// Writes and loads a config in a fresh temp dir.
pub fn config_in(dir: &tempfile::TempDir, server: &str, extra: &str) -> (Config, PathBuf) {
    let path = dir.path().join("recordhook.toml");
    std::fs::write(&path, config_text(dir.path(), server, extra)).unwrap();
    (recordhook::config::load(Some(&path)).unwrap(), path)
}

impl TestApp {
    /// Starts the app with `extra` config appended.
    pub async fn spawn(extra: &str) -> TestApp {
        Self::spawn_server("", extra).await
    }

    /// Starts the app with `server` lines in `[server]` and `extra` appended.
    pub async fn spawn_server(server: &str, extra: &str) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let (config, config_path) = config_in(&dir, server, extra);
        let app = Application::build(config).await.unwrap();
        Self::run(app, dir, config_path)
    }

    /// Starts the app over a given store.
    pub async fn spawn_with_store(extra: &str, store: Arc<dyn Store>) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let (config, config_path) = config_in(&dir, "", extra);
        let app = Application::build_with_store(config, store).await.unwrap();
        Self::run(app, dir, config_path)
    }

    fn run(app: Application, dir: tempfile::TempDir, config_path: PathBuf) -> TestApp {
        let addr = app.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
        TestApp { addr, dir, config_path, stop, task, client: reqwest::Client::new() }
    }

    /// The callback URL as SignalWire would call it (no public_url set: the Host header).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Sends a signed form callback.
    pub async fn post_form(&self, fields: &[(String, String)]) -> reqwest::Response {
        let url = self.url("/recording-status");
        let signature = sign_fields(&SigningKey::new(KEY), &url, fields);
        self.post_form_signed(fields, &signature, &[]).await
    }

    /// Posts a form callback with the given signature and extra headers.
    pub async fn post_form_signed(
        &self,
        fields: &[(String, String)],
        signature: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut with_signature = vec![("x-signalwire-signature", signature)];
        with_signature.extend_from_slice(headers);
        post_form_to(&self.client, &self.url("/recording-status"), fields, &with_signature).await
    }

    /// Sends a signed JSON callback.
    pub async fn post_json(&self, body: &serde_json::Value) -> reqwest::Response {
        let url = self.url("/recording-status");
        let body = serde_json::to_vec(body).unwrap();
        self.client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-signalwire-signature", sign_raw(&SigningKey::new(KEY), &url, &body))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Stops the app (as SIGTERM would) and waits for it to finish draining.
    pub async fn stop(self) -> tempfile::TempDir {
        self.stop.cancel();
        self.task.await.unwrap();
        self.dir
    }

    /// The store file.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("recordhook.db")
    }
}

/// A complete, valid callback for recording `sid`.
pub fn callback(sid: &str, status: &str) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = vec![
        ("AccountSid".into(), "b3877c40-da60-4998-90ad-b792e98472af".into()),
        ("CallSid".into(), "b3877c40-da60-4998-90ad-b792e98472ca".into()),
        ("RecordingSid".into(), sid.into()),
        ("RecordingUrl".into(), format!("https://example.signalwire.com/api/laml/2010-04-01/Recordings/{sid}")),
        ("RecordingStatus".into(), status.into()),
        ("RecordingDuration".into(), "94".into()),
        ("RecordingChannels".into(), "1".into()),
        ("RecordingSource".into(), "RecordVerb".into()),
    ];
    if status == "in-progress" {
        f.retain(|(k, _)| k != "RecordingDuration");
    }
    f
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, parsed.
    pub body: serde_json::Value,
}

type Script = Box<dyn Fn(&serde_json::Value, usize) -> StatusCode + Send + Sync>;

struct ReceiverState {
    got: Mutex<Vec<Received>>,
    script: Script,
    delay: Duration,
}

/// A downstream HTTP service that records what it is sent and answers by a script
/// (`(body, how many requests for this RecordingSid so far) -> status`).
pub struct Receiver {
    /// Its URL.
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn ok() -> Receiver {
        Self::scripted(|_, _| StatusCode::OK).await
    }

    /// A receiver answering by `script`.
    pub async fn scripted(
        script: impl Fn(&serde_json::Value, usize) -> StatusCode + Send + Sync + 'static,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, script)
    }

    /// A receiver on a given listener (to come back on the same port after an outage).
    pub fn on(
        listener: tokio::net::TcpListener,
        script: impl Fn(&serde_json::Value, usize) -> StatusCode + Send + Sync + 'static,
    ) -> Receiver {
        Self::build(listener, Duration::ZERO, Box::new(script))
    }

    /// A receiver that takes `delay` to answer 200.
    pub async fn slow(delay: Duration) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::build(listener, delay, Box::new(|_, _| StatusCode::OK))
    }

    fn build(listener: tokio::net::TcpListener, delay: Duration, script: Script) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = Arc::new(ReceiverState { got: Mutex::default(), script, delay });
        let app = Router::new().route("/hook", post(receive)).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, state }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// How many requests carried this RecordingSid.
    pub fn count(&self, sid: &str) -> usize {
        self.received().iter().filter(|r| r.body["RecordingSid"] == sid).count()
    }
}

async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: String) -> StatusCode {
    tokio::time::sleep(state.delay).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    let mut got = state.got.lock().unwrap();
    let seen = got.iter().filter(|r| r.body["RecordingSid"] == body["RecordingSid"]).count();
    got.push(Received { headers, body: body.clone() });
    drop(got);
    (state.script)(&body, seen)
}

/// Polls `check` until it holds or `timeout` passes; panics with `what` on timeout.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An `http` handler table pointing at `url`.
pub fn http_handler(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[handlers.{name}]\ntype = \"http\"\nurl = \"{url}\"\ntimeout = \"2s\"\nretry = {{ max_attempts = 4, initial_backoff = \"20ms\", max_backoff = \"100ms\" }}\n{extra}\n"
    )
}

/// Runs the `recordhook` binary with `args`; returns (exit success, stdout, stderr).
/// It blocks: a test that runs it against its own in-process app needs a multi-thread
/// runtime, so the app keeps serving meanwhile.
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recordhook")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
