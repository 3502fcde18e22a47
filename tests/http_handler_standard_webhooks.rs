//! The `http` handler's Standard Webhooks signature, checked by an independent verifier:
//! the reference Python package `standardwebhooks`
//! (`pip install -r tests/support/handler_requirements.txt`).
//!
//! Python is `$TEST_PYTHON` (default `python3`). Without the package the test
//! is skipped, except under `CI=true`, where it fails.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use recordhook::event::StoredEvent;
use recordhook::handlers::{Attempt, HandlerConfig};

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

const EVENT_JSON: &str = r#"{"AccountSid":"b3877c40-da60-4998-90ad-b792e98472af","CallSid":"4ac6f7a4-4a15-4b1f-8d35-5e2c3f0f6d53","RecordingSid":"e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59","RecordingUrl":"https://example.signalwire.com/api/laml/2010-04-01/Accounts/b3877c40-da60-4998-90ad-b792e98472af/Recordings/e1b3c1b4-5b8a-4b2b-9a6e-6f1d2c3b4a59","RecordingStatus":"completed","RecordingDuration":42,"RecordingChannels":2,"RecordingSource":"DialVerb","RecordingStartTime":"Tue, 14 Apr 2026 09:12:44 +0000","RecordingTrack":"both","ErrorCode":"0","ApiVersion":"2010-04-01","Caller":"+15551230000","Note":"caf\u00e9 \u2013 \u201cquoted\u201d"}"#;

fn python() -> String {
    std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn verifier() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/handler_verify_standardwebhooks.py")
}

/// `None` when Python can import `standardwebhooks`; otherwise why not.
fn missing_verifier() -> Option<String> {
    match Command::new(python()).args(["-c", "import standardwebhooks"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Some(format!("cannot run `{}`: {e}", python())),
    }
}

/// Runs the reference verifier; `Ok` if it accepts the request, else its complaint.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let headers: serde_json::Map<String, serde_json::Value> =
        headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().into())).collect();
    let input = serde_json::json!({
        "secret": secret,
        "headers": headers,
        "body": std::str::from_utf8(body).unwrap(),
    });
    let mut child = Command::new(python())
        .arg(verifier())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the verifier");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

async fn record(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

async fn receiver() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new().fallback(record).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

#[tokio::test]
async fn signature_verifies_with_the_reference_standardwebhooks_library() {
    if let Some(why) = missing_verifier() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "the Standard Webhooks cross-check needs the `standardwebhooks` Python package: \
                 pip install -r tests/support/handler_requirements.txt ({why})"
            );
        }
        eprintln!(
            "skipped: `standardwebhooks` is not importable by {} \
             (pip install -r tests/support/handler_requirements.txt): {why}",
            python()
        );
        return;
    }

    let key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let encoded = STANDARD.encode(&key);
    // The usual form, and the bare base64 the reference libraries also accept.
    for secret in [format!("whsec_{encoded}"), encoded.clone()] {
        let (addr, seen) = receiver().await;
        let config: HandlerConfig = serde_json::from_value(serde_json::json!({
            "type": "http",
            "url": format!("http://{addr}/recordings"),
            "secret": secret,
            "headers": { "Authorization": "Bearer downstream-token" },
        }))
        .expect("config deserializes");
        let handler = config.build("standard_webhooks").expect("handler builds");
        let event =
            StoredEvent::from_json("01963a2e-7c1d-7f3a-9b5e-2f4d6c8a0b1e".to_owned(), EVENT_JSON.to_owned()).unwrap();
        handler.deliver(Attempt { event: &event, delivery_id: 7, attempt: 1 }).await.expect("delivered");

        let (headers, body) = seen.lock().unwrap().pop().expect("one request");
        assert_eq!(body, EVENT_JSON.as_bytes());
        assert_eq!(headers["webhook-id"], event.id.as_str());

        verify(&secret, &headers, &body).expect("the reference verifier accepts the request");

        // The verifier really checks: a changed body, id or key is refused.
        let tampered = EVENT_JSON.replace("\"RecordingDuration\":42", "\"RecordingDuration\":43");
        assert!(verify(&secret, &headers, tampered.as_bytes()).is_err(), "tampered body accepted");
        let mut other_id = headers.clone();
        other_id.insert("webhook-id", "01963a2e-0000-7000-8000-000000000000".parse().unwrap());
        assert!(verify(&secret, &other_id, &body).is_err(), "other webhook-id accepted");
        let wrong = format!("whsec_{}", STANDARD.encode([9u8; 32]));
        assert!(verify(&wrong, &headers, &body).is_err(), "wrong secret accepted");
    }
}
