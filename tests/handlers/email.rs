//! `email` against a real SMTP server (aiosmtpd): rendered subject and body, the audio
//! attached, 4xx retried, 5xx dead-lettered.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::signalwire_stub::{SignalWireStub, wav_bytes};
use crate::support::*;

fn table(port: u16, extra: &str) -> String {
    format!(
        "type = \"email\"\nsmtp_url = \"smtp://127.0.0.1:{port}\"\nfrom = \"Recordings <rec@example.com>\"\n\
         to = [\"ops@example.com\", \"Boss <boss@example.com>\"]\n\
         subject = \"Recording {{{{ RecordingSid }}}} ({{{{ RecordingDuration }}}} s)\"\n\
         body = \"Listen: {{{{ RecordingUrl }}}}\\nEvent {{{{ event_id }}}}\"\n{extra}"
    )
}

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no message at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(path).unwrap()
}

/// The decoded body of the MIME part whose headers mention `marker`.
fn attachment(eml: &str, marker: &str) -> Vec<u8> {
    let eml = eml.replace("\r\n", "\n");
    let start = eml.find(marker).expect("attachment part");
    let body_start = start + eml[start..].find("\n\n").unwrap() + 2;
    let body_end = body_start + eml[body_start..].find("\n--").unwrap();
    let b64: String = eml[body_start..body_end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

#[tokio::test]
async fn email_is_sent_over_smtp_with_the_rendered_subject_and_the_audio_attached() {
    if !python_has("aiosmtpd") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let smtp = PythonServer::start("smtp_server.py", &[out.path().to_str().unwrap(), "ok"]);
    let stub = SignalWireStub::start().await;
    let handler = build(&table(smtp.port, "attach = true"), &signalwire(&stub)).unwrap();
    let event = event("RE_mail", &stub.recording_url("RE_mail"));

    // The recording is not available yet: retried, nothing sent.
    retryable(deliver(&handler, &event, 1).await);
    deliver(&handler, &event, 2).await.expect("sent");

    let eml = wait_for(&out.path().join("1.eml"));
    assert!(eml.contains("Subject: Recording RE_mail (42 s)"), "{eml}");
    assert!(eml.contains("From: Recordings <rec@example.com>"), "{eml}");
    // The text part may be quoted-printable: undo its soft line breaks.
    let text = eml.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
    assert!(text.contains(&stub.recording_url("RE_mail")), "{eml}");
    assert!(text.contains("Event ev-RE_mail"), "{eml}");
    assert_eq!(attachment(&eml, "filename=\"RE_mail.wav\""), wav_bytes("RE_mail"));
    let rcpt = std::fs::read_to_string(out.path().join("1.rcpt")).unwrap();
    assert_eq!(rcpt, "ops@example.com\nboss@example.com");
}

#[tokio::test]
async fn a_recording_over_attach_max_bytes_is_linked_not_attached() {
    if !python_has("aiosmtpd") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let smtp = PythonServer::start("smtp_server.py", &[out.path().to_str().unwrap(), "ok"]);
    let stub = SignalWireStub::start().await;
    let handler = build(&table(smtp.port, "attach = true\nattach_max_bytes = 1000"), &signalwire(&stub)).unwrap();
    let event = event("RE_big", &stub.recording_url("RE_big"));
    let _ = deliver(&handler, &event, 1).await;
    deliver(&handler, &event, 2).await.expect("sent");
    let eml = wait_for(&out.path().join("1.eml"));
    assert!(!eml.contains("filename="), "{eml}");
    assert!(eml.contains("not attached"), "{eml}");
}

#[tokio::test]
async fn smtp_4xx_is_retried_and_5xx_is_a_dead_letter() {
    if !python_has("aiosmtpd") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let sw = recordhook::signalwire::SignalWireConfig::default();
    let event = event("RE_smtp", "https://example.signalwire.com/r/RE_smtp");

    let busy = PythonServer::start("smtp_server.py", &[out.path().to_str().unwrap(), "4xx"]);
    let handler = build(&table(busy.port, ""), &sw).unwrap();
    let message = retryable(deliver(&handler, &event, 1).await);
    assert!(message.contains("451"), "{message}");

    let rejecting = PythonServer::start("smtp_server.py", &[out.path().to_str().unwrap(), "5xx"]);
    let handler = build(&table(rejecting.port, ""), &sw).unwrap();
    let message = permanent(deliver(&handler, &event, 1).await);
    assert!(message.contains("550"), "{message}");
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let handler = build(&table(port, ""), &Default::default()).unwrap();
    let event = event("RE_down", "https://example.signalwire.com/r/RE_down");
    retryable(deliver(&handler, &event, 1).await);
}

#[test]
fn email_config_errors_name_the_option_and_debug_redacts_the_password() {
    let sw = Default::default();
    for (extra_table, option) in [
        (table(25, "").replace("smtp://", "http://"), "smtp_url"),
        (table(25, "").replace("rec@example.com", "not an address"), "from"),
        (table(25, "").replace("{{ RecordingSid }}", "{{ RecordingSId }}"), "subject"),
        (table(25, "").replace("{{ event_id }}", "{% if %}"), "body"),
        (table(25, "smtp_password = \"hunter2\""), "smtp_password"),
    ] {
        let Err(e) = build(&extra_table, &sw) else { panic!("built: {extra_table}") };
        assert_eq!(e.option, option, "{e}");
    }
    let config: recordhook::handlers::HandlerConfig =
        toml_value(&table(25, "smtp_password = \"hunter2\"").replace("smtp://", "smtp://user@"));
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(build(&table(25, "smtp_password = \"hunter2\"").replace("smtp://", "smtp://user@"), &sw).is_ok());
}
