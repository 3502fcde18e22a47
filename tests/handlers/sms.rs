//! `sms`: one message per recipient through the Messages API, and its classification.

use std::time::Duration;

use recordhook::handlers::DeliveryError;

use crate::signalwire_stub::{PROJECT, SignalWireStub};
use crate::support::*;

const TABLE: &str = "type = \"sms\"\nfrom = \"+15550000000\"\nto = [\"+15551112222\", \"+15553334444\"]\n\
                     body = \"Recording {{ RecordingSid }} ({{ RecordingDuration }} s): {{ RecordingUrl }}\"";

#[tokio::test]
async fn sms_sends_one_message_per_recipient_with_the_rendered_body() {
    let stub = SignalWireStub::start().await;
    let handler = build(TABLE, &signalwire(&stub)).unwrap();
    let event = event("RE_sms", "https://example.signalwire.com/r/RE_sms");
    deliver(&handler, &event, 1).await.expect("sent");

    let messages = stub.messages();
    assert_eq!(messages.len(), 2);
    for (m, to) in messages.iter().zip(["+15551112222", "+15553334444"]) {
        assert_eq!(m.path, format!("/api/laml/2010-04-01/Accounts/{PROJECT}/Messages.json"));
        assert!(m.authorized, "Basic auth with project id and token");
        assert_eq!(m.form["From"], "+15550000000");
        assert_eq!(m.form["To"], to);
        assert_eq!(m.form["Body"], "Recording RE_sms (42 s): https://example.signalwire.com/r/RE_sms");
    }
}

#[tokio::test]
async fn sms_429_and_5xx_are_retried_honouring_retry_after() {
    let stub = SignalWireStub::start().await;
    stub.sms_script(|_, n| match n {
        0 => (429, vec![("retry-after", "3".into())], r#"{"code":20429,"message":"Too Many Requests"}"#.into()),
        1 => (503, vec![], r#"{"code":20503,"message":"Service Unavailable"}"#.into()),
        _ => (201, vec![], r#"{"sid":"SM1"}"#.into()),
    });
    let handler = build(TABLE, &signalwire(&stub)).unwrap();
    let event = event("RE_busy", "https://example.signalwire.com/r/RE_busy");
    match deliver(&handler, &event, 1).await {
        Err(DeliveryError::Retryable { message, retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert!(message.contains("429") && message.contains("Too Many Requests"), "{message}");
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    let message = retryable(deliver(&handler, &event, 2).await);
    assert!(message.contains("503"), "{message}");
}

#[tokio::test]
async fn sms_other_4xx_is_a_dead_letter_quoting_signalwires_message() {
    let stub = SignalWireStub::start().await;
    stub.sms_script(|_, _| {
        (400, vec![], r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#.into())
    });
    let handler = build(TABLE, &signalwire(&stub)).unwrap();
    let event = event("RE_bad", "https://example.signalwire.com/r/RE_bad");
    let message = permanent(deliver(&handler, &event, 1).await);
    assert!(message.contains("400") && message.contains("21211: Invalid 'To' Phone Number"), "{message}");
    assert!(message.contains("+15551112222"), "names the recipient: {message}");
}

#[tokio::test]
async fn sms_with_a_wrong_token_is_a_dead_letter() {
    let stub = SignalWireStub::start().await;
    let mut sw = signalwire(&stub);
    sw.api_token = Some("PT_wrong".into());
    let handler = build(TABLE, &sw).unwrap();
    let message = permanent(deliver(&handler, &event("RE_auth", "https://x.signalwire.com/r"), 1).await);
    assert!(message.contains("401") && message.contains("Authentication Error"), "{message}");
    assert!(!message.contains("PT_wrong"), "the token leaked: {message}");
}

#[tokio::test]
async fn a_retry_texts_only_the_recipients_not_yet_texted() {
    let stub = SignalWireStub::start().await;
    stub.sms_script(|to, n| {
        if to == "+15553334444" && n == 0 {
            (500, vec![], r#"{"code":1,"message":"oops"}"#.into())
        } else {
            (201, vec![], r#"{"sid":"SM"}"#.into())
        }
    });
    let handler = build(TABLE, &signalwire(&stub)).unwrap();
    let event = event("RE_part", "https://example.signalwire.com/r/RE_part");
    retryable(deliver(&handler, &event, 1).await);
    deliver(&handler, &event, 2).await.unwrap();
    let to: Vec<String> = stub.messages().iter().map(|m| m.form["To"].clone()).collect();
    assert_eq!(to, ["+15551112222", "+15553334444", "+15553334444"]);
}

#[test]
fn sms_config_errors_name_the_option_or_the_signalwire_key() {
    let sw = recordhook::signalwire::SignalWireConfig {
        space_url: Some("example.signalwire.com".into()),
        project_id: Some("p".into()),
        api_token: Some("t".into()),
        ..Default::default()
    };
    let typo = TABLE.replace("{{ RecordingUrl }}", "{{ RecordingURL }}");
    let Err(e) = build(&typo, &sw) else { panic!("built") };
    assert_eq!(e.option, "body");
    assert!(e.message.contains("`RecordingURL`"), "{e}");
    let Err(e) = build("type = \"sms\"\nfrom = \"+1555\"\nto = []", &sw) else { panic!("built") };
    assert_eq!(e.option, "to");
    let no_space = recordhook::signalwire::SignalWireConfig { space_url: None, ..sw };
    let Err(e) = build(TABLE, &no_space) else { panic!("built") };
    assert_eq!(e.key(), "signalwire.space_url");
}
