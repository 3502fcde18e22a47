//! `archive`: bytes stored identical, the first 404 retried, delete only after the copy is
//! verified, idempotent redelivery, the allow-list, S3.

use std::path::Path;

use recordhook::signalwire::SignalWireConfig;

use crate::signalwire_stub::{ACCOUNT, SignalWireStub, mp3_bytes, wav_bytes};
use crate::support::*;

fn file_table(dir: &Path, extra: &str) -> String {
    format!("type = \"archive\"\ndestination = \"file://{}\"\n{extra}\n", dir.display())
}

#[tokio::test]
async fn archive_to_a_directory_stores_identical_bytes_after_retrying_the_first_404() {
    let stub = SignalWireStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let handler = build(&file_table(dir.path(), ""), &signalwire(&stub)).unwrap();
    let event = event("RE_dir_1", &stub.recording_url("RE_dir_1"));

    let message = retryable(deliver(&handler, &event, 1).await);
    assert!(message.contains("404") && message.contains("not available yet"), "{message}");
    deliver(&handler, &event, 2).await.expect("second attempt stores it");

    let stored = dir.path().join(ACCOUNT).join("4ac6f7a4-4a15-4b1f-8d35-5e2c3f0f6d53").join("RE_dir_1.wav");
    assert_eq!(std::fs::read(&stored).unwrap(), wav_bytes("RE_dir_1"));
    let leftovers: Vec<_> =
        std::fs::read_dir(stored.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "temporary files left behind: {leftovers:?}");
    assert!(stub.seen().iter().all(|s| s.authorized), "Basic auth on every request");
    assert!(stub.deletes().is_empty(), "delete_from_signalwire is off");
}

#[tokio::test]
async fn archive_mp3_fetches_the_mp3_url_and_renders_the_path_template() {
    let stub = SignalWireStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = file_table(
        dir.path(),
        "format = \"mp3\"\npath = \"{{ RecordingSource }}/{{ event_id }}-{{ RecordingSid }}.{{ format }}\"",
    );
    let handler = build(&table, &signalwire(&stub)).unwrap();
    let event = event("RE_mp3", &stub.recording_url("RE_mp3"));
    let _ = deliver(&handler, &event, 1).await;
    deliver(&handler, &event, 2).await.unwrap();
    let stored = dir.path().join("RecordVerb/ev-RE_mp3-RE_mp3.mp3");
    assert_eq!(std::fs::read(stored).unwrap(), mp3_bytes("RE_mp3"));
    assert!(stub.seen().iter().all(|s| s.path.ends_with("RE_mp3.mp3")));
}

#[tokio::test]
async fn delete_happens_only_after_the_copy_is_verified() {
    let stub = SignalWireStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    // At the moment SignalWire is asked to delete, the copy must be complete in place.
    stub.on_delete(move |sid| {
        let path = root.join(format!("{sid}.wav"));
        std::fs::read(path).is_ok_and(|b| b == wav_bytes(sid))
    });
    let table = file_table(dir.path(), "path = \"{{ RecordingSid }}.wav\"\ndelete_from_signalwire = true");
    let handler = build(&table, &signalwire(&stub)).unwrap();
    let event = event("RE_del", &stub.recording_url("RE_del"));

    retryable(deliver(&handler, &event, 1).await);
    assert!(stub.deletes().is_empty(), "no delete before the copy exists");
    deliver(&handler, &event, 2).await.unwrap();

    let deletes = stub.deletes();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, format!("/api/laml/2010-04-01/Accounts/{ACCOUNT}/Recordings/RE_del"));
    assert!(deletes[0].authorized);
    assert_eq!(stub.delete_checks(), vec![true], "the copy was verified before the delete");
}

#[tokio::test]
async fn a_copy_that_fails_never_deletes_the_recording() {
    let stub = SignalWireStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should go: the copy cannot be written.
    std::fs::write(dir.path().join("blocked"), b"x").unwrap();
    let table = file_table(dir.path(), "path = \"blocked/{{ RecordingSid }}.wav\"\ndelete_from_signalwire = true");
    let handler = build(&table, &signalwire(&stub)).unwrap();
    let failing = event("RE_fail", &stub.recording_url("RE_fail"));
    retryable(deliver(&handler, &failing, 1).await);
    let message = retryable(deliver(&handler, &failing, 2).await);
    assert!(message.contains("blocked"), "{message}");

    // An empty download is not a copy either.
    let table = file_table(dir.path(), "delete_from_signalwire = true");
    let handler = build(&table, &signalwire(&stub)).unwrap();
    let empty = event("EMPTY_1", &stub.recording_url("EMPTY_1"));
    retryable(deliver(&handler, &empty, 1).await);
    let message = retryable(deliver(&handler, &empty, 2).await);
    assert!(message.contains("empty"), "{message}");

    assert!(stub.deletes().is_empty(), "deleted without a verified copy: {:?}", stub.deletes());
}

#[tokio::test]
async fn a_redelivery_that_finds_the_copy_stored_succeeds_and_a_404_on_delete_is_done() {
    let stub = SignalWireStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = file_table(dir.path(), "delete_from_signalwire = true");
    let handler = build(&table, &signalwire(&stub)).unwrap();
    let event = event("RE_again", &stub.recording_url("RE_again"));
    let _ = deliver(&handler, &event, 1).await;
    deliver(&handler, &event, 2).await.unwrap();
    let gets = stub.seen().iter().filter(|s| s.method == "GET").count();

    // As after a crash between the delete and the outcome being recorded: the recording is
    // gone at SignalWire (its DELETE now answers 404), the copy is in place.
    deliver(&handler, &event, 3).await.expect("redelivery succeeds");
    assert_eq!(stub.seen().iter().filter(|s| s.method == "GET").count(), gets, "not downloaded again");
    assert_eq!(stub.deletes().len(), 2);
}

#[tokio::test]
async fn a_recording_url_off_the_allow_list_is_never_contacted() {
    let stub = SignalWireStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sw = signalwire(&stub);
    sw.recording_hosts = vec!["*.signalwire.com".into(), "localhost".into()];
    let handler = build(&file_table(dir.path(), ""), &sw).unwrap();
    let event = event("RE_off", &stub.recording_url("RE_off"));
    let message = permanent(deliver(&handler, &event, 1).await);
    assert!(message.contains("`127.0.0.1`") && message.contains("recording_hosts"), "{message}");
    assert!(stub.seen().is_empty(), "the stand-in was contacted: {:?}", stub.seen());
}

#[tokio::test]
async fn a_redirect_off_the_allow_list_is_not_followed() {
    let stub = SignalWireStub::start().await;
    let elsewhere = SignalWireStub::start().await;
    stub.redirect_recordings_to(&format!("http://localhost:{}", elsewhere.addr.port()));
    let dir = tempfile::tempdir().unwrap();
    let handler = build(&file_table(dir.path(), ""), &signalwire(&stub)).unwrap();
    let event = event("RE_redir", &stub.recording_url("RE_redir"));
    let message = permanent(deliver(&handler, &event, 1).await);
    assert!(message.contains("`localhost`"), "{message}");
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
}

#[test]
fn archive_config_errors_name_the_option_or_the_signalwire_key() {
    let dir = tempfile::tempdir().unwrap();
    let sw = SignalWireConfig {
        api_base: Some("http://127.0.0.1:9".into()),
        project_id: Some("p".into()),
        api_token: Some("t".into()),
        ..Default::default()
    };
    let cases = [
        (file_table(dir.path(), "path = \"{{ RecordingSd }}.wav\""), "path", "RecordingSd"),
        (file_table(dir.path(), "path = \"{{ RecordingSid \""), "path", "syntax"),
        ("type = \"archive\"\ndestination = \"ftp://x/y\"".to_owned(), "destination", "scheme"),
        (
            "type = \"archive\"\ndestination = \"s3://b\"\ns3_endpoint = \"http://127.0.0.1:1\"".to_owned(),
            "s3_endpoint",
            "s3_allow_http",
        ),
        (file_table(dir.path(), "s3_region = \"eu-west-1\""), "s3_region", "s3://"),
    ];
    for (table, option, words) in cases {
        let Err(e) = build(&table, &sw) else { panic!("built: {table}") };
        assert_eq!(e.option, option, "{e}");
        assert!(e.to_string().contains(words), "{e}");
    }
    let no_token = SignalWireConfig { api_token: None, ..sw.clone() };
    let Err(e) = build(&file_table(dir.path(), ""), &no_token) else { panic!("built without a token") };
    assert_eq!(e.key(), "signalwire.api_token", "{e}");
    assert!(e.message.contains("RECORDHOOK_SIGNALWIRE__API_TOKEN"), "{e}");
}

/// S3: the test re-runs itself as a child process with the AWS_* credentials in its
/// environment (the handler reads them from there, and a test must not set variables in
/// its own multi-threaded process).
#[tokio::test]
async fn archive_to_s3_stores_identical_bytes_with_its_content_type() {
    if !python_has("moto.server") {
        return;
    }
    let server = PythonServer::start("s3_server.py", &["recordings"]);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["archive::s3_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TEST_S3_ENDPOINT", format!("http://127.0.0.1:{}", server.port))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[tokio::test]
#[ignore = "run by archive_to_s3_stores_identical_bytes_with_its_content_type"]
async fn s3_child() {
    use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt};
    let Ok(endpoint) = std::env::var("TEST_S3_ENDPOINT") else { return };
    let stub = SignalWireStub::start().await;
    let table = format!(
        "type = \"archive\"\ndestination = \"s3://recordings/calls\"\ns3_endpoint = \"{endpoint}\"\ns3_allow_http = true\n\
         s3_region = \"us-east-1\"\npath = \"{{{{ RecordingSid }}}}.{{{{ format }}}}\"\ndelete_from_signalwire = true"
    );
    let handler = build(&table, &signalwire(&stub)).unwrap();
    let event = event("RE_s3", &stub.recording_url("RE_s3"));
    retryable(deliver(&handler, &event, 1).await);
    deliver(&handler, &event, 2).await.expect("stored in S3");

    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name("recordings")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    let key = object_store::path::Path::from("calls/RE_s3.wav");
    let got = store.get_opts(&key, GetOptions::default()).await.unwrap();
    assert_eq!(
        got.attributes.get(&Attribute::ContentType).map(|v| v.as_ref().to_owned()).as_deref(),
        Some("audio/x-wav")
    );
    assert_eq!(got.bytes().await.unwrap().to_vec(), wav_bytes("RE_s3"));
    assert_eq!(stub.deletes().len(), 1, "deleted once stored and verified");

    // Redelivery: the object is there; nothing is downloaded again; the 404 on delete is done.
    let gets = stub.seen().iter().filter(|s| s.method == "GET").count();
    deliver(&handler, &event, 3).await.expect("redelivery succeeds");
    assert_eq!(stub.seen().iter().filter(|s| s.method == "GET").count(), gets);
    let _ = store.head(&key).await.unwrap();
}
