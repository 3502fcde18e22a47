//! The callback route: every status code in the product's table.

use std::sync::Arc;

use recordhook::signature::{SigningKey, sign_fields};
use recordhook::store::Store;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn signed_form_callback_is_stored_and_acknowledged() {
    let app = TestApp::spawn("").await;
    let r = app.post_form(&callback("RE1", "completed")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "stored");
    assert!(body["event_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn signed_json_callback_is_accepted() {
    let app = TestApp::spawn("").await;
    let r = app
        .post_json(&json!({
            "AccountSid": "AC1", "CallSid": "CA1", "RecordingSid": "RE1",
            "RecordingUrl": "https://example.signalwire.com/r/RE1", "RecordingStatus": "completed",
            "RecordingDuration": 3, "RecordingChannels": 2, "RecordingSource": "DialVerb"
        }))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn signed_get_callback_is_accepted() {
    let app = TestApp::spawn("").await;
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(callback("RE1", "completed")).finish();
    let url = app.url(&format!("/recording-status?{query}"));
    let r = app
        .client
        .get(&url)
        .header("x-signalwire-signature", sign_fields(&SigningKey::new(KEY), &url, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn twilio_header_name_is_accepted_too() {
    let app = TestApp::spawn("").await;
    let fields = callback("RE1", "completed");
    let url = app.url("/recording-status");
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sign_fields(&SigningKey::new(KEY), &url, &fields))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

#[tokio::test]
async fn missing_or_wrong_signature_is_403_and_reveals_nothing() {
    let app = TestApp::spawn("").await;
    let url = app.url("/recording-status");
    let fields = callback("RE1", "completed");
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
    let unsigned = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let a = problem(unsigned, 403).await;
    let wrong = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", sign_fields(&SigningKey::new("PSK_wrong"), &url, &fields))
        .body(body)
        .send()
        .await
        .unwrap();
    let b = problem(wrong, 403).await;
    // Same answer whatever failed: no oracle for an attacker.
    assert_eq!(a, b);
    // A forged request is not quarantined either.
    let store = recordhook::store::sqlite::SqliteStore::open(&app.db(), recordhook::store::sqlite::Mode::Tool).unwrap();
    assert!(store.quarantined().await.unwrap().is_empty());
}

#[tokio::test]
async fn tampered_field_is_403() {
    let app = TestApp::spawn("").await;
    let url = app.url("/recording-status");
    let fields = callback("RE1", "completed");
    let signature = sign_fields(&SigningKey::new(KEY), &url, &fields);
    let mut tampered = fields.clone();
    tampered[2].1 = "RE2".into();
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(tampered.iter()).finish();
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    problem(r, 403).await;
}

#[tokio::test]
async fn bad_encoding_is_400() {
    let app = TestApp::spawn("").await;
    let url = app.url("/recording-status");
    let bad_form = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("AccountSid=%ZZ")
        .send()
        .await
        .unwrap();
    let body = problem(bad_form, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("percent-encoding"));
    let bad_json =
        app.client.post(&url).header("content-type", "application/json").body("{\"a\":").send().await.unwrap();
    let body = problem(bad_json, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("JSON"));
}

#[tokio::test]
async fn other_content_types_are_415() {
    let app = TestApp::spawn("").await;
    let r = app
        .client
        .post(app.url("/recording-status"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    problem(r, 415).await;
    let r = app.client.post(app.url("/recording-status")).body("hi").send().await.unwrap();
    problem(r, 415).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = TestApp::spawn("").await;
    let mut fields = callback("RE1", "completed");
    fields.push(("Padding".into(), "x".repeat(5000)));
    problem(app.post_form(&fields).await, 413).await;
    // Without a Content-Length (chunked), the limit holds while reading.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(vec![b'a'; 3000]), Ok(vec![b'b'; 3000])]);
    let r = app
        .client
        .post(app.url("/recording-status"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    problem(r, 413).await;
}

#[tokio::test]
async fn invalid_callback_is_422_naming_every_field_and_is_quarantined() {
    let app = TestApp::spawn("").await;
    let mut fields = callback("RE1", "done");
    fields.retain(|(k, _)| k != "AccountSid");
    fields.iter_mut().find(|(k, _)| k == "RecordingChannels").unwrap().1 = "two".into();
    let body = problem(app.post_form(&fields).await, 422).await;
    let named: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(named, vec!["AccountSid", "RecordingStatus", "RecordingChannels"]);
    assert_eq!(body["errors"][0]["message"], "is required");

    let store = recordhook::store::sqlite::SqliteStore::open(&app.db(), recordhook::store::sqlite::Mode::Tool).unwrap();
    let kept = store.quarantined().await.unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].fields.contains("RE1"));
    assert!(kept[0].errors.contains("RecordingChannels"));
}

#[tokio::test]
async fn store_unavailable_is_503_with_retry_after() {
    let app = TestApp::spawn_with_store("", Arc::new(FailingStore)).await;
    let r = app.post_form(&callback("RE1", "completed")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    // An invalid but authentic callback cannot be quarantined either: 503, not 422, so
    // SignalWire tries again rather than the callback being lost.
    let mut fields = callback("RE1", "completed");
    fields.retain(|(k, _)| k != "AccountSid");
    assert_eq!(app.post_form(&fields).await.status(), 503);
}

#[tokio::test]
async fn behind_a_load_balancer_signatures_are_checked_over_public_url() {
    let app = TestApp::spawn_server("public_url = \"https://hooks.example.com\"", "").await;
    let fields = callback("RE1", "completed");
    let key = SigningKey::new(KEY);
    // What SignalWire signed: the public URL, not the address the service sees.
    let public = sign_fields(&key, "https://hooks.example.com/recording-status", &fields);
    assert_eq!(app.post_form_signed(&fields, &public, &[]).await.status(), 200);
    // SignalWire sometimes signs with the default port spelled out.
    let fields = callback("RE2", "completed");
    let with_port = sign_fields(&key, "https://hooks.example.com:443/recording-status", &fields);
    assert_eq!(app.post_form_signed(&fields, &with_port, &[]).await.status(), 200);
    // The internal address is not what was signed.
    let internal = sign_fields(&key, &app.url("/recording-status"), &fields);
    assert_eq!(app.post_form_signed(&fields, &internal, &[]).await.status(), 403);
}

#[tokio::test]
async fn forwarded_headers_are_used_only_when_trusted() {
    let forwarded = [("x-forwarded-proto", "https"), ("x-forwarded-host", "hooks.example.com")];
    let fields = callback("RE1", "completed");
    let signature = sign_fields(&SigningKey::new(KEY), "https://hooks.example.com/recording-status", &fields);

    let untrusting = TestApp::spawn("").await;
    assert_eq!(untrusting.post_form_signed(&fields, &signature, &forwarded).await.status(), 403);

    let trusting = TestApp::spawn_server("trust_forwarded_headers = true", "").await;
    assert_eq!(trusting.post_form_signed(&fields, &signature, &forwarded).await.status(), 200);
}

#[tokio::test]
async fn query_string_is_signed_exactly_as_received() {
    // A query the service must not re-encode or re-order before checking.
    let app = TestApp::spawn_server("", "").await;
    let path = "/recording-status?b=2&a=%2F%20x";
    let url = app.url(path);
    let fields = callback("RE1", "completed");
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-signalwire-signature", sign_fields(&SigningKey::new(KEY), &url, &fields))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn disabled_mode_accepts_unsigned_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = config_in(&dir, "", "");
    config.signature.mode = recordhook::config::SignatureMode::Disabled;
    let app = recordhook::app::Application::build(config).await.unwrap();
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let url = format!("http://{addr}/recording-status");
    let r = post_form_to(&reqwest::Client::new(), &url, &callback("RE1", "completed"), &[]).await;
    assert_eq!(r.status(), 200);
}

/// A store whose every operation fails, as a full or vanished disk would.
pub struct FailingStore;

fn down() -> recordhook::store::StoreError {
    recordhook::store::StoreError::Unavailable(Box::new(std::io::Error::other("disk on fire")))
}

#[async_trait::async_trait]
impl Store for FailingStore {
    async fn ingest(
        &self,
        _: recordhook::store::NewEvent,
    ) -> Result<recordhook::store::Ingested, recordhook::store::StoreError> {
        Err(down())
    }
    async fn quarantine(&self, _: recordhook::store::NewQuarantine) -> Result<i64, recordhook::store::StoreError> {
        Err(down())
    }
    async fn claim(
        &self,
        _: &str,
        _: usize,
        _: std::time::Duration,
    ) -> Result<Vec<recordhook::store::Claimed>, recordhook::store::StoreError> {
        Err(down())
    }
    async fn finish(&self, _: i64, _: u32, _: recordhook::store::Outcome) -> Result<(), recordhook::store::StoreError> {
        Err(down())
    }
    async fn release(&self, _: Vec<(i64, u32)>) -> Result<(), recordhook::store::StoreError> {
        Err(down())
    }
    async fn dead_letters(&self) -> Result<Vec<recordhook::store::DeadLetter>, recordhook::store::StoreError> {
        Err(down())
    }
    async fn quarantined(&self) -> Result<Vec<recordhook::store::Quarantined>, recordhook::store::StoreError> {
        Err(down())
    }
    async fn replay(&self, _: recordhook::store::Replay) -> Result<u64, recordhook::store::StoreError> {
        Err(down())
    }
    async fn ping(&self) -> Result<(), recordhook::store::StoreError> {
        Err(down())
    }
    async fn purge(&self, _: std::time::Duration, _: usize) -> Result<u64, recordhook::store::StoreError> {
        Err(down())
    }
    async fn stats(&self) -> Result<Vec<recordhook::store::HandlerStats>, recordhook::store::StoreError> {
        Err(down())
    }
}
