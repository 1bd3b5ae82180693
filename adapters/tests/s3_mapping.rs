//! Recorded S3, MinIO, Ceph and SNS notification payloads (`fixtures/s3/`) map to the
//! CloudEvents the AWS S3 adapter spec gives (`fixtures/s3/expected.json`).

use std::path::Path;

use switchyard_adapters::s3::{SnsMessage, map_notification, parse_sns};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/s3")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn as_json(events: &[switchyard_core::CloudEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|e| {
            serde_json::from_slice(&switchyard_core::json::encode_event(e)).expect("valid JSON")
        })
        .collect()
}

fn expected(name: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_slice(&fixture("expected.json")).expect("JSON");
    all.get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no expectation for {name}"))
}

#[test]
fn recorded_payloads_map_to_the_expected_cloudevents() {
    for name in [
        "aws_put.json",
        "aws_delete_two_records.json",
        "minio_put.json",
        "ceph_put.json",
        "test_event.json",
    ] {
        let events = map_notification(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::Value::Array(as_json(&events)),
            expected(name),
            "{name}"
        );
    }
}

#[test]
fn sns_notifications_unwrap_to_the_same_events() {
    let SnsMessage::Notification { message, topic_arn } =
        parse_sns(&fixture("sns_notification.json")).expect("parses")
    else {
        panic!("not a notification");
    };
    assert!(topic_arn.starts_with("arn:aws:sns:"));
    let events = map_notification(message.as_bytes()).expect("maps");
    assert_eq!(
        serde_json::Value::Array(as_json(&events)),
        expected("sns_notification.json")
    );
    assert_eq!(
        expected("sns_notification.json"),
        expected("aws_put.json"),
        "SNS carries the same S3 notification"
    );
}

#[test]
fn subscription_confirmations_name_the_url() {
    match parse_sns(&fixture("sns_subscription_confirmation.json")).expect("parses") {
        SnsMessage::Confirm { url, .. } => {
            assert!(
                url.starts_with("https://sns.us-east-1.amazonaws.com/"),
                "{url}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_with_spaces_and_unicode_decode_into_subject() {
    let events = map_notification(&fixture("aws_put.json")).expect("maps");
    let subject = events[0].subject.as_deref().unwrap_or("");
    assert!(subject.contains(' ') && subject.contains('É'), "{subject}");
}
