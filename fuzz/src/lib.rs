//! Fuzz targets: each takes arbitrary bytes to one of Switchyard's parsers of outside input —
//! the HTTP binding, the JSON format, the storage encoding and the write-ahead log's
//! segments, CESQL, the configuration loader,
//! S3/SNS notifications, and the Kafka, MQTT and NATS bindings — and checks that it answers
//! without panicking and, where a parser has an encoder, that what it decodes encodes back to
//! the same event.
//!
//! The targets are plain functions so that `tests/replay.rs` runs every file of `corpus/` and
//! `found/` through them in the ordinary test suite; `afl/` wraps them for AFL++
//! (`fuzz/run.sh`, see `fuzz/README.md`).

use bytes::Bytes;
use switchyard_core::CloudEvent;

/// A target: bytes in, a panic if something is wrong.
pub type Target = fn(&[u8]);

/// Every target, by name (the name is its corpus folder).
pub const TARGETS: &[(&str, Target)] = &[
    ("http", http),
    ("json", json),
    ("store", store),
    ("cesql", cesql),
    ("config", config),
    ("s3", s3),
    ("kafka", kafka),
    ("mqtt", mqtt),
    ("nats", nats),
    ("wal", wal),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Splits an input into parts at 0xFF bytes (which UTF-8 text never holds): a target that
/// needs several inputs (headers and a body) takes them in order, missing ones empty.
fn parts(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0xff).collect()
}

/// `name: value` lines as (name, value) pairs (lines without a colon are skipped).
fn header_lines(text: &[u8]) -> Vec<(&str, &[u8])> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            Some((name, value))
        })
        .collect()
}

fn header_map(text: &[u8]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in header_lines(text) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// An event decoded from any binding must be kept exactly by the storage encoding (what the
/// broker stores is what it delivers).
fn store_roundtrip(event: &CloudEvent) {
    let again = switchyard_core::store::decode(&switchyard_core::store::encode(event))
        .unwrap_or_else(|e| panic!("an event decoded from input does not decode once stored: {e}"));
    assert_eq!(&again, event, "the storage encoding changed the event");
}

/// An event decoded from the JSON format must come back the same through it (a binding's
/// event may not: JSON data in binary mode is bytes there and a JSON value here).
fn json_roundtrip(event: &CloudEvent) {
    let text = switchyard_core::json::encode_event(event);
    let again = switchyard_core::json::decode_event(&text).unwrap_or_else(|e| {
        panic!("an event decoded from input does not decode from its own JSON: {e}")
    });
    assert_eq!(&again, event, "the JSON format changed the event");
}

/// HTTP: headers (part 1) and a body (part 2), any content mode.
pub fn http(data: &[u8]) {
    let p = parts(data);
    let headers = header_map(p.first().copied().unwrap_or_default());
    let body = Bytes::copy_from_slice(p.get(1).copied().unwrap_or_default());
    if let Ok((_, events)) = switchyard_core::http::decode(&headers, body) {
        for e in &events {
            store_roundtrip(e);
        }
    }
}

/// The JSON format: one event and a batch.
pub fn json(data: &[u8]) {
    if let Ok(e) = switchyard_core::json::decode_event(data) {
        json_roundtrip(&e);
    }
    if let Ok(events) = switchyard_core::json::decode_batch(data) {
        for e in &events {
            json_roundtrip(e);
        }
    }
}

/// The storage encoding: a record that decodes encodes back to one that decodes the same.
pub fn store(data: &[u8]) {
    if let Ok(e) = switchyard_core::store::decode(data) {
        let again = switchyard_core::store::decode(&switchyard_core::store::encode(&e))
            .unwrap_or_else(|err| panic!("a decoded record does not decode once encoded: {err}"));
        assert_eq!(again, e, "the storage encoding changed the event");
    }
}

/// The write-ahead log: the bytes as a segment file, replayed; every record that replays
/// decodes and encodes back to the same bytes.
pub fn wal(data: &[u8]) {
    switchyard_broker::redb_log::fuzz_wal_segment(data);
}

/// CESQL: an expression (part 1), evaluated against an event from part 2 when that decodes,
/// else a fixed one.
pub fn cesql(data: &[u8]) {
    let p = parts(data);
    let Ok(text) = std::str::from_utf8(p.first().copied().unwrap_or_default()) else {
        return;
    };
    let Ok(expr) = switchyard_triggers::cesql::Expression::parse(text) else {
        return;
    };
    let event = p
        .get(1)
        .and_then(|b| switchyard_core::json::decode_event(b).ok())
        .or_else(|| CloudEvent::new("1", "/fuzz", "com.example.fuzz").ok());
    if let Some(event) = event {
        let _ = expr.matches(&event);
    }
}

/// The configuration loader: YAML text, then the whole configuration built from it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(resources) = switchyard_core::config::parse_text(text, "fuzz.yaml") {
        let _ = switchyard_core::config::Config::from_resources(
            resources.into_iter().map(|r| ("fuzz.yaml".to_owned(), r)),
        );
    }
}

/// S3 notifications (S3, MinIO, EventBridge) and SNS envelopes.
pub fn s3(data: &[u8]) {
    if let Ok(events) = switchyard_adapters::s3::map_notification(data) {
        for e in &events {
            store_roundtrip(e);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = switchyard_adapters::s3::parse_sns_value(&v);
    }
}

/// A Kafka record: headers (part 1, a line `name:` with nothing after the colon is a header
/// without a value when it has no space) and a value (part 2, absent when missing).
pub fn kafka(data: &[u8]) {
    let p = parts(data);
    let headers: Vec<(&str, Option<&[u8]>)> = header_lines(p.first().copied().unwrap_or_default())
        .into_iter()
        .map(|(n, v)| (n, (!v.is_empty()).then_some(v)))
        .collect();
    if let Ok(Some(e)) = switchyard_core::bindings::decode_kafka(&headers, p.get(1).copied()) {
        store_roundtrip(&e);
    }
}

/// MQTT: 5 (content type, user properties, payload) and 3.1.1 (the payload alone).
pub fn mqtt(data: &[u8]) {
    let p = parts(data);
    let content_type = p
        .first()
        .and_then(|b| std::str::from_utf8(b).ok())
        .filter(|s| !s.is_empty());
    let properties: Vec<(String, String)> = header_lines(p.get(1).copied().unwrap_or_default())
        .into_iter()
        .filter_map(|(n, v)| Some((n.to_owned(), std::str::from_utf8(v).ok()?.to_owned())))
        .collect();
    let payload = p.get(2).copied().unwrap_or_default();
    if let Ok(Some(e)) = switchyard_core::bindings::decode_mqtt5(content_type, &properties, payload)
    {
        store_roundtrip(&e);
    }
    if let Ok(Some(e)) = switchyard_core::bindings::decode_mqtt311(data) {
        json_roundtrip(&e);
    }
}

/// NATS: headers (part 1) carried over to HTTP's, then decoded with a body (part 2).
pub fn nats(data: &[u8]) {
    let p = parts(data);
    let lines: Vec<(&str, &str)> = header_lines(p.first().copied().unwrap_or_default())
        .into_iter()
        .filter_map(|(n, v)| Some((n, std::str::from_utf8(v).ok()?)))
        .collect();
    if let Ok(headers) = switchyard_core::bindings::nats_headers_to_http(lines) {
        let body = Bytes::copy_from_slice(p.get(1).copied().unwrap_or_default());
        if let Ok((_, events)) = switchyard_core::http::decode(&headers, body) {
            for e in &events {
                store_roundtrip(e);
            }
        }
    }
}
