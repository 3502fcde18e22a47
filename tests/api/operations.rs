//! Operating the service: health, readiness, metrics, request ids, the CLI.

use crate::helpers::*;
use crate::process::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::spawn("\n[handlers.audit]\ntype = \"log\"\n").await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"), "every response carries a request id");
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);

    app.post_form(&callback("RE1", "completed")).await;
    app.post_form(&callback("RE1", "completed")).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "recordhook_callbacks_total{outcome=\"stored\"}",
        "recordhook_callbacks_total{outcome=\"duplicate\"}",
        "recordhook_ack_seconds_bucket",
        "recordhook_queue_depth{handler=\"audit\"}",
        "recordhook_dead_letters{handler=\"audit\"}",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    for name in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(name.starts_with("recordhook_"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_request_id_is_kept() {
    let app = TestApp::spawn("").await;
    let r = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_delivers_signed_callbacks_in_every_shape() {
    let app = TestApp::spawn("").await;
    let url = app.url("/recording-status");
    for format in ["form", "json", "get"] {
        let (ok, out, err) = cli(&["send", "--url", &url, "--signing-key", KEY, "--format", format]);
        assert!(ok, "{format}: {out}{err}");
        assert!(out.starts_with("200 "), "{format}: {out}");
    }
    let (ok, out, _) = cli(&["send", "--url", &url, "--signing-key", "PSK_wrong"]);
    assert!(!ok);
    assert!(out.starts_with("403 "), "{out}");
    let (ok, out, _) =
        cli(&["send", "--url", &url, "--signing-key", KEY, "--status", "in-progress", "RecordingSid=RE9"]);
    assert!(ok, "{out}");
}

#[test]
fn check_config_accepts_a_good_file_and_names_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text(dir.path(), "", "\n[handlers.audit]\ntype = \"log\"\n")).unwrap();
    let (ok, out, err) = cli(&["check-config", "--config", good.to_str().unwrap()]);
    assert!(ok, "{out}{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, config_text(dir.path(), "", "\n[handlers.audit]\ntype = \"log\"\nlevl = \"info\"\n")).unwrap();
    let (ok, _, err) = cli(&["check-config", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("handlers.audit.levl") && err.contains("bad.toml"), "{err}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, config_text(dir.path(), "", "\n[handlers.f]\ntype = \"http\"\nurl = \"not a url\"\n"))
        .unwrap();
    let (ok, _, err) = cli(&["check-config", "--config", typo.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("handlers.f.url"), "{err}");
}

#[test]
fn check_config_names_the_environment_variable_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("c.toml");
    std::fs::write(&good, config_text(dir.path(), "", "")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .args(["check-config"])
        .env("RECORDHOOK_CONFIG", &good)
        .env("RECORDHOOK_SERVER__MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("server.max_body_bytes") && err.contains("RECORDHOOK_SERVER__MAX_BODY_BYTES"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_command_reflects_healthz() {
    let app = TestApp::spawn("").await;
    let (ok, _, err) = cli(&["healthcheck", "--url", &app.url("/healthz")]);
    assert!(ok, "{err}");
    let (ok, _, _) = cli(&["healthcheck", "--url", &app.url("/nope")]);
    assert!(!ok);
    let (ok, _, _) = cli(&["healthcheck", "--url", "http://127.0.0.1:1/healthz"]);
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_command_lists_reasons() {
    let app = TestApp::spawn("").await;
    let mut fields = callback("RE1", "completed");
    fields.retain(|(k, _)| k != "RecordingUrl");
    assert_eq!(app.post_form(&fields).await.status(), 422);
    let (ok, out, _) = cli(&["quarantine", "--config", app.config_path.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("RecordingUrl") && out.contains("is required"), "{out}");
}

#[test]
fn the_example_config_runs_as_is_given_a_signing_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .args(["check-config", "--config", example])
        .env("RECORDHOOK_SIGNATURE__SIGNING_KEYS", "PSK_try_me")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without a key, required signatures make it refuse to start, saying what to set.
    let (ok, _, err) = cli(&["check-config", "--config", example]);
    assert!(!ok);
    assert!(err.contains("RECORDHOOK_SIGNATURE__SIGNING_KEYS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_callback_is_logged_with_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, config_text(dir.path(), "", "")).unwrap();
    let server = Server::start_logging(&config, "info");

    // Unsigned: refused, and the warning names the request.
    let headers = [("x-request-id", "trace-me-7")];
    let r = post_form_to(&reqwest::Client::new(), &server.url(), &callback("RElog", "completed"), &headers).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-request-id"], "trace-me-7");

    let stdout = server.kill_and_log();
    let line = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "callback refused: signature verification failed")
        .unwrap_or_else(|| panic!("no refusal logged:\n{stdout}"));
    assert_eq!(line["request_id"], "trace-me-7", "{line}");
}
