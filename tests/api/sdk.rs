//! Callbacks signed by SignalWire's official SDK (an independent implementation, run
//! from the test suite through `tests/support/sign.py`) are accepted end to end.

use serde_json::{Value, json};

use crate::helpers::*;

/// Signs a batch of requests with the SDK; `None` (test skipped) when the SDK is not
/// installed and we are not in CI.
fn sdk_sign(batch: &Value) -> Option<Vec<Value>> {
    use std::io::Write;
    let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/sign.py");
    let check = std::process::Command::new(&python).args([script, "--check"]).output();
    if !check.as_ref().is_ok_and(|o| o.status.success()) {
        let hint = "pip install -r tests/support/requirements.txt (or set TEST_PYTHON)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the signalwire SDK is required in CI: {hint}");
        eprintln!("skipped: the signalwire Python SDK is not installed; {hint}");
        return None;
    }
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(batch.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_signed_by_the_official_sdk_are_accepted() {
    let app = TestApp::spawn_server("public_url = \"https://hooks.example.com\"", "").await;
    let url = "https://hooks.example.com/recording-status";
    let form = callback("RE_sdk_form", "completed");
    let json_body = json!({
        "AccountSid": "AC1", "CallSid": "CA1", "RecordingSid": "RE_sdk_json",
        "RecordingUrl": "https://example.signalwire.com/r", "RecordingStatus": "completed",
        "RecordingDuration": 7, "RecordingChannels": 1, "RecordingSource": "DialVerb"
    })
    .to_string();
    let port_form = callback("RE_sdk_port", "completed");
    let Some(signatures) = sdk_sign(&json!([
        {"key": KEY, "url": url, "form": form},
        {"key": KEY, "url": url, "raw": json_body},
        {"key": KEY, "url": "https://hooks.example.com:443/recording-status", "form": port_form},
    ])) else {
        return;
    };
    let sig = |i: usize| signatures[i].as_str().unwrap().to_owned();

    assert_eq!(app.post_form_signed(&form, &sig(0), &[]).await.status(), 200);
    assert_eq!(app.post_form_signed(&port_form, &sig(2), &[]).await.status(), 200);
    let r = app
        .client
        .post(app.url("/recording-status"))
        .header("content-type", "application/json")
        .header("x-signalwire-signature", sig(1))
        .body(json_body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The SDK's signature does not carry over to another body.
    let mut other = form.clone();
    other[2].1 = "RE_other".into();
    assert_eq!(app.post_form_signed(&other, &sig(0), &[]).await.status(), 403);
}
