//! The seed's use cases through the real app: a callback is archived, the recording deleted
//! at SignalWire after the copy is in place, and a text sent; template typos fail
//! `check-config`.

use std::time::Duration;

use crate::helpers::*;
use crate::signalwire_stub::{ACCOUNT, SignalWireStub, wav_bytes};

fn seed_config(stub: &SignalWireStub, archive_dir: &std::path::Path, sms_body: &str) -> String {
    format!(
        r#"{signalwire}
[handlers.archive]
type = "archive"
events = ["completed"]
destination = "file://{dir}"
path = "{{{{ AccountSid }}}}/{{{{ RecordingSid }}}}.{{{{ format }}}}"
delete_from_signalwire = true
timeout = "5s"
retry = {{ max_attempts = 5, initial_backoff = "20ms", max_backoff = "100ms" }}

[handlers.text]
type = "sms"
events = ["completed"]
min_duration = 10
from = "+15550000000"
to = ["+15551112222"]
body = "{sms_body}"
timeout = "5s"
retry = {{ max_attempts = 5, initial_backoff = "20ms", max_backoff = "100ms" }}
"#,
        signalwire = stub.config_toml(),
        dir = archive_dir.display(),
    )
}

fn seed_callback(stub: &SignalWireStub, sid: &str, status: &str, duration: &str) -> Vec<(String, String)> {
    let mut fields = callback(sid, status);
    for (k, v) in fields.iter_mut() {
        match k.as_str() {
            "AccountSid" => *v = ACCOUNT.to_owned(),
            "RecordingUrl" => *v = stub.recording_url(sid),
            "RecordingDuration" => *v = duration.to_owned(),
            _ => {}
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_recording_is_archived_deleted_after_the_copy_and_texted() {
    let stub = SignalWireStub::start().await;
    let archive = tempfile::tempdir().unwrap();
    let stored = archive.path().join(ACCOUNT).join("RE_e2e.wav");
    let root = archive.path().join(ACCOUNT);
    stub.on_delete(move |sid| std::fs::read(root.join(format!("{sid}.wav"))).is_ok_and(|b| b == wav_bytes(sid)));
    let app = TestApp::spawn(&seed_config(&stub, archive.path(), "Recording {{ RecordingSid }} is in")).await;

    assert_eq!(app.post_form(&seed_callback(&stub, "RE_e2e", "in-progress", "0")).await.status(), 200);
    assert_eq!(app.post_form(&seed_callback(&stub, "RE_e2e", "completed", "94")).await.status(), 200);
    // Too short for the text's min_duration: archived, not texted.
    assert_eq!(app.post_form(&seed_callback(&stub, "RE_short", "completed", "3")).await.status(), 200);

    eventually("the recording is archived and deleted", Duration::from_secs(20), || {
        stub.deletes().iter().any(|d| d.path.ends_with("/Recordings/RE_e2e"))
    })
    .await;
    eventually("the text is sent", Duration::from_secs(20), || !stub.messages().is_empty()).await;
    eventually("the short one is archived", Duration::from_secs(20), || {
        stub.deletes().iter().any(|d| d.path.ends_with("/Recordings/RE_short"))
    })
    .await;

    assert_eq!(std::fs::read(&stored).unwrap(), wav_bytes("RE_e2e"));
    // The first fetch answered 404 (not available yet); the retry got it.
    let gets = stub.seen().iter().filter(|s| s.method == "GET" && s.path.ends_with("/RE_e2e")).count();
    assert_eq!(gets, 2);
    assert!(stub.delete_checks().iter().all(|ok| *ok), "a delete came before the copy was in place");
    let messages = stub.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].form["Body"], "Recording RE_e2e is in");
    assert_eq!(messages[0].form["To"], "+15551112222");
    assert!(stub.seen().iter().all(|s| s.authorized));
    app.stop().await;
}

#[test]
fn a_template_typo_fails_check_config_naming_the_handler_option_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let sw = "\n[signalwire]\nspace_url = \"example.signalwire.com\"\nproject_id = \"p\"\napi_token = \"t\"\n";
    let typo = dir.path().join("typo.toml");
    let handlers = format!(
        "{sw}\n[handlers.text]\ntype = \"sms\"\nfrom = \"+15550000000\"\nto = [\"+15551112222\"]\nbody = \"Ready: {{{{ RecordingUrll }}}}\"\n"
    );
    std::fs::write(&typo, config_text(dir.path(), "", &handlers)).unwrap();
    let (ok, _, err) = cli(&["check-config", "--config", typo.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("handlers.text.body") && err.contains("RecordingUrll"), "{err}");

    let args = dir.path().join("args.toml");
    let handlers = "\n[handlers.run]\ntype = \"command\"\nprogram = \"true\"\nargs = [\"{{ RecordingSid }\"]\n";
    std::fs::write(&args, config_text(dir.path(), "", handlers)).unwrap();
    let (ok, _, err) = cli(&["check-config", "--config", args.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("handlers.run.args") && err.contains("syntax"), "{err}");

    let good = dir.path().join("good.toml");
    let handlers = handlers.replace("{{ RecordingSid }", "{{ RecordingSid }}");
    std::fs::write(&good, config_text(dir.path(), "", &handlers)).unwrap();
    let (ok, out, err) = cli(&["check-config", "--config", good.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
}

#[test]
fn sms_without_an_api_token_fails_check_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let handlers = "\n[signalwire]\nspace_url = \"example.signalwire.com\"\nproject_id = \"p\"\n\n[handlers.text]\ntype = \"sms\"\nfrom = \"+15550000000\"\nto = [\"+15551112222\"]\n";
    std::fs::write(&path, config_text(dir.path(), "", handlers)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env_remove("RECORDHOOK_SIGNALWIRE__API_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("signalwire.api_token") && err.contains("RECORDHOOK_SIGNALWIRE__API_TOKEN"), "{err}");
    // From the environment, it works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("RECORDHOOK_SIGNALWIRE__API_TOKEN", "PT_from_env")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_readmes_archive_email_sms_example_passes_check_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("### Archive, e-mail, text").expect("the example's section")..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.toml");
    std::fs::write(&path, config_text(dir.path(), "", example)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("RECORDHOOK_SIGNALWIRE__API_TOKEN", "PT_example")
        .env("RECORDHOOK_HANDLERS__MAIL__SMTP_PASSWORD", "example")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
