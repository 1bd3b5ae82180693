//! Interop: events built and sent by a CloudEvents SDK no one here wrote (the Python
//! `cloudevents` package from PyPI) are accepted and stored byte-for-byte.
//!
//! `scripts/test` installs the SDK in `target/test-venv`; `SWITCHYARD_TEST_PYTHON` can point
//! to another interpreter that has it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use common::{Switchyard, TWO_BROKERS};
use http::{HeaderMap, HeaderName, HeaderValue};
use switchyard_core::{CloudEvent, Data};

fn without_broker_attributes(mut e: CloudEvent) -> CloudEvent {
    assert!(e.extensions.remove("knativearrivaltime").is_some());
    assert!(e.extensions.remove("knativebrokerttl").is_some());
    e
}

#[test]
fn python_sdk_events_are_stored_byte_for_byte() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/send_with_python_sdk.py");
    let out = Command::new(common::python())
        .arg(&script)
        .arg(sy.url("/default/default"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sent.len(), 4);
    let stored = sy.stored("default/default");
    assert_eq!(stored.len(), sent.len());

    for (s, (_, stored)) in sent.iter().zip(stored) {
        assert_eq!(s["status"], 202, "{s}");
        let body = base64::engine::general_purpose::STANDARD
            .decode(s["body_b64"].as_str().unwrap())
            .unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in s["headers"].as_object().unwrap() {
            headers.insert(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
            );
        }
        let stored = without_broker_attributes(stored);
        assert_eq!(stored.id, s["id"].as_str().unwrap());
        match s["mode"].as_str().unwrap() {
            "binary" => {
                // The body is the data, byte for byte; the time text is the header's.
                assert_eq!(stored.data_bytes().unwrap().as_ref(), body.as_slice());
                let time = headers["ce-time"].to_str().unwrap();
                assert_eq!(stored.time.as_deref(), Some(time));
                // `switchyard events` prints JSON data as `data`, so compare the rest.
                let mut expected =
                    switchyard_core::http::decode_binary(&headers, body.into()).unwrap();
                expected.data = stored.data.clone();
                assert_eq!(stored, expected);
            }
            _ => {
                let text = String::from_utf8(body.clone()).unwrap();
                let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(stored.time.as_deref(), doc["time"].as_str());
                match &stored.data {
                    Data::Json(raw) => assert!(text.contains(&**raw), "data {raw} not in {text}"),
                    Data::Binary(bytes) => assert_eq!(
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                        doc["data_base64"].as_str().unwrap()
                    ),
                    Data::Absent => panic!("data lost"),
                }
                let expected = switchyard_core::json::decode_event(&body).unwrap();
                assert_eq!(stored, expected);
            }
        }
    }
}
