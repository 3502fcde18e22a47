//! A stand-in for SignalWire's REST API on 127.0.0.1: serves recordings as WAV or MP3
//! (answering 404 to the first request for each), records DELETEs and Messages.json posts,
//! and checks HTTP Basic auth on every request.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// The Project ID the stand-in expects.
pub const PROJECT: &str = "3f9a8e2c-proj-4b1e-9d6a-000000000001";
/// The API token it expects.
pub const TOKEN: &str = "PT_stub_token_value";
/// The AccountSid of test events.
pub const ACCOUNT: &str = "b3877c40-da60-4998-90ad-b792e98472af";

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// Whether Basic auth was present and right.
    pub authorized: bool,
    /// Form fields of a POST.
    pub form: HashMap<String, String>,
}

type SmsScript = Box<dyn Fn(&str, usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync>;
type DeleteHook = Box<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct StubState {
    seen: Mutex<Vec<Seen>>,
    gets: Mutex<HashMap<String, usize>>,
    deleted: Mutex<HashSet<String>>,
    /// Result of the delete hook for each DELETE, in order.
    delete_checks: Mutex<Vec<bool>>,
    on_delete: Mutex<Option<DeleteHook>>,
    sms: Mutex<Option<SmsScript>>,
    /// When set, a GET for a recording is answered 302 to this base + the same path.
    redirect_to: Mutex<Option<String>>,
}

/// The running stand-in.
#[derive(Clone)]
pub struct SignalWireStub {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<StubState>,
}

impl SignalWireStub {
    /// Starts a stand-in on 127.0.0.1.
    pub async fn start() -> SignalWireStub {
        let state = Arc::new(StubState::default());
        let app = Router::new().fallback(serve).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        SignalWireStub { addr, state }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The RecordingUrl of recording `sid`.
    pub fn recording_url(&self, sid: &str) -> String {
        format!("{}/api/laml/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}", self.base())
    }

    /// A `[signalwire]` section pointing at the stand-in, allowing 127.0.0.1.
    pub fn config_toml(&self) -> String {
        format!(
            "\n[signalwire]\napi_base = \"{}\"\nproject_id = \"{PROJECT}\"\napi_token = \"{TOKEN}\"\nrecording_hosts = [\"127.0.0.1\"]\n",
            self.base()
        )
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The DELETEs received.
    pub fn deletes(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.method == Method::DELETE).collect()
    }

    /// The Messages.json posts received.
    pub fn messages(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.method == Method::POST && s.path.ends_with("/Messages.json")).collect()
    }

    /// Runs `hook(recording_sid)` at each DELETE; [`delete_checks`](Self::delete_checks) keeps its answers.
    pub fn on_delete(&self, hook: impl Fn(&str) -> bool + Send + Sync + 'static) {
        *self.state.on_delete.lock().unwrap() = Some(Box::new(hook));
    }

    /// The delete hook's answers, one per DELETE.
    pub fn delete_checks(&self) -> Vec<bool> {
        self.state.delete_checks.lock().unwrap().clone()
    }

    /// Answers Messages.json posts by `script(to, how many posts to this number before)`:
    /// (status, headers, body).
    pub fn sms_script(
        &self,
        script: impl Fn(&str, usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync + 'static,
    ) {
        *self.state.sms.lock().unwrap() = Some(Box::new(script));
    }

    /// Makes every recording GET a redirect to `base` + the same path.
    pub fn redirect_recordings_to(&self, base: &str) {
        *self.state.redirect_to.lock().unwrap() = Some(base.to_owned());
    }
}

/// The WAV file served for `sid`: a valid header and 200 KB of deterministic samples.
pub fn wav_bytes(sid: &str) -> Vec<u8> {
    let samples = 200_000u32;
    let mut out = Vec::with_capacity(44 + samples as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + samples).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&samples.to_le_bytes());
    let mut x: u32 = sid.bytes().fold(2166136261, |h, b| (h ^ u32::from(b)).wrapping_mul(16777619));
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push((x >> 24) as u8);
    }
    out
}

/// The MP3 file served for `sid` (an ID3 tag and deterministic frames' worth of bytes).
pub fn mp3_bytes(sid: &str) -> Vec<u8> {
    let mut out = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    out.extend(wav_bytes(sid).into_iter().skip(44).take(50_000).map(|b| b.wrapping_add(7)));
    out
}

fn authorized(headers: &HeaderMap) -> bool {
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{PROJECT}:{TOKEN}")));
    headers.get("authorization").is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

async fn serve(
    State(state): State<Arc<StubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let authorized = authorized(&headers);
    let form: HashMap<String, String> =
        if method == Method::POST { form_urlencoded::parse(&body).into_owned().collect() } else { HashMap::new() };
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorized,
        form: form.clone(),
    });
    if !authorized {
        return error(401, 20003, "Authentication Error - invalid username");
    }
    let recording = path.split("/Recordings/").nth(1).map(str::to_owned);
    match (method, recording) {
        (Method::GET, Some(file)) => {
            if let Some(base) = state.redirect_to.lock().unwrap().clone() {
                return (StatusCode::FOUND, [("location", format!("{base}{path}"))]).into_response();
            }
            let (sid, ext) = match file.rsplit_once('.') {
                Some((sid, ext)) => (sid.to_owned(), ext.to_owned()),
                None => (file.clone(), "wav".to_owned()),
            };
            if state.deleted.lock().unwrap().contains(&sid) {
                return error(404, 20404, "The requested resource was not found");
            }
            let count = {
                let mut gets = state.gets.lock().unwrap();
                let n = gets.entry(file.clone()).or_default();
                *n += 1;
                *n
            };
            if count == 1 {
                // "Recordings are not always available immediately."
                return error(404, 20404, "The requested resource was not found");
            }
            let (bytes, content_type) = if sid.starts_with("EMPTY") {
                (Vec::new(), "audio/x-wav")
            } else if ext == "mp3" {
                (mp3_bytes(&sid), "audio/mpeg")
            } else {
                (wav_bytes(&sid), "audio/x-wav")
            };
            ([("content-type", content_type)], Body::from(bytes)).into_response()
        }
        (Method::DELETE, Some(sid)) => {
            let check = state.on_delete.lock().unwrap().as_ref().map(|hook| hook(&sid)).unwrap_or(true);
            state.delete_checks.lock().unwrap().push(check);
            if !state.deleted.lock().unwrap().insert(sid) {
                return error(404, 20404, "The requested resource was not found");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::POST, _) if path == format!("/api/laml/2010-04-01/Accounts/{PROJECT}/Messages.json") => {
            let to = form.get("To").cloned().unwrap_or_default();
            let before = state
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.method == Method::POST && s.form.get("To") == Some(&to))
                .count()
                - 1;
            let script = state.sms.lock().unwrap();
            let (status, extra, body) = match script.as_ref() {
                Some(script) => script(&to, before),
                None => (201, vec![], format!(r#"{{"sid":"SM{before}","to":"{to}","status":"queued"}}"#)),
            };
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
            for (k, v) in extra {
                response.headers_mut().insert(k, v.parse().unwrap());
            }
            response
        }
        _ => error(404, 20404, "The requested resource was not found"),
    }
}

/// A SignalWire-style JSON error.
pub fn error(status: u16, code: u32, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message, "status": status }).to_string();
    (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body).into_response()
}
