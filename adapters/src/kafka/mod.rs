//! Kafka: the KafkaSource, a consumer group reading topics into a broker, and the KafkaSink a
//! trigger delivers to (librdkafka through rdkafka).
//!
//! Records that are CloudEvents (the Kafka binding: `ce_` headers, or a
//! `content-type: application/cloudevents+json` value) pass through unchanged; other records
//! are wrapped as Knative's KafkaSource wraps them (see [`wrap_record`]). A batch's offsets
//! are stored for librdkafka's commits only after its events are stored (automatic offset
//! storing is off), so a crash or a rebalance redelivers records, never skips them.

mod sink;

pub(crate) use sink::sink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::EventLog;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::streams::{InitialOffset, KafkaKeyType, KafkaNet};
use switchyard_core::{CloudEvent, Data, EventError, ExtValue};

use crate::SourceError;
use crate::kind::{Kind, Setup, StartFuture, Started};
use crate::target::Target;
use switchyard_broker::tasks::Tasks;

/// Records stored in one transaction at most.
const MAX_BATCH: usize = 500;

/// The librdkafka settings for a KafkaSink's `auth`, Knative's form: the keys of the Secret
/// `name` in the secrets directory. `protocol` is required; the others are read when the
/// protocol needs them (`sasl.mechanism` defaults to `PLAIN`).
pub(crate) fn secret_security(config: &mut ClientConfig, name: &str) -> Result<(), String> {
    let dir = switchyard_core::sources::secrets_dir().join(name);
    let read = |key: &str| -> Result<Option<String>, String> {
        let path = dir.join(key);
        match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("auth: cannot read {}: {e}", path.display())),
        }
    };
    // `protocol` and `sasl.mechanism` are words: a final newline (`echo … >`) is forgiven.
    // The other keys are read exactly.
    let protocol = read("protocol")?.map(|p| p.trim().to_owned()).ok_or_else(|| {
        format!(
            "auth: the Secret `{name}` has no key `protocol` ({} is missing; SWITCHYARD_SECRETS_DIR holds a folder per Secret, a file per key)",
            dir.join("protocol").display()
        )
    })?;
    let (sasl, tls) = match protocol.as_str() {
        "PLAINTEXT" => (false, false),
        "SASL_PLAINTEXT" => (true, false),
        "SSL" => (false, true),
        "SASL_SSL" => (true, true),
        other => {
            return Err(format!(
                "auth: the Secret `{name}`'s protocol `{other}` is not PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL"
            ));
        }
    };
    config.set("security.protocol", protocol.as_str());
    if sasl {
        config.set(
            "sasl.mechanisms",
            read("sasl.mechanism")?.map_or_else(|| "PLAIN".to_owned(), |m| m.trim().to_owned()),
        );
        config.set("sasl.username", read("user")?.unwrap_or_default());
        config.set("sasl.password", read("password")?.unwrap_or_default());
    }
    if tls {
        for (setting, key) in [
            ("ssl.ca.pem", "ca.crt"),
            ("ssl.certificate.pem", "user.crt"),
            ("ssl.key.pem", "user.key"),
        ] {
            if let Some(v) = read(key)? {
                config.set(setting, v);
            }
        }
    }
    Ok(())
}

/// The librdkafka settings for `net` (SASL and TLS).
fn security(config: &mut ClientConfig, net: Option<&KafkaNet>) -> Result<(), String> {
    let Some(net) = net else { return Ok(()) };
    let sasl = net.sasl.as_ref().filter(|s| s.enable);
    let tls = net.tls.as_ref().filter(|t| t.enable);
    let protocol = match (sasl.is_some(), tls.is_some()) {
        (false, false) => return Ok(()),
        (true, false) => "SASL_PLAINTEXT",
        (false, true) => "SSL",
        (true, true) => "SASL_SSL",
    };
    config.set("security.protocol", protocol);
    if let Some(s) = sasl {
        let secret = |v: &Option<switchyard_core::sources::SecretValue>, field: &str| {
            v.as_ref()
                .map(|v| v.resolve().map_err(|e| format!("net.sasl.{field}: {e}")))
                .transpose()
        };
        config.set(
            "sasl.mechanisms",
            secret(&s.mechanism, "type")?.unwrap_or_else(|| "PLAIN".to_owned()),
        );
        config.set(
            "sasl.username",
            secret(&s.user, "user")?.unwrap_or_default(),
        );
        config.set(
            "sasl.password",
            secret(&s.password, "password")?.unwrap_or_default(),
        );
    }
    if let Some(t) = tls {
        for (key, value, field) in [
            ("ssl.ca.pem", &t.ca_cert, "caCert"),
            ("ssl.certificate.pem", &t.cert, "cert"),
            ("ssl.key.pem", &t.key, "key"),
        ] {
            if let Some(v) = value {
                config.set(
                    key,
                    v.resolve().map_err(|e| format!("net.tls.{field}: {e}"))?,
                );
            }
        }
    }
    Ok(())
}

/// The `key` extension of a wrapped record, read as the key-type label says. A key that does
/// not have the declared shape (not UTF-8, not 4 or 8 bytes) is kept as bytes.
fn key_value(key: &[u8], key_type: KafkaKeyType) -> ExtValue {
    let bytes = || ExtValue::Binary(key.to_vec());
    match key_type {
        KafkaKeyType::String => {
            std::str::from_utf8(key).map_or_else(|_| bytes(), |s| ExtValue::String(s.to_owned()))
        }
        KafkaKeyType::Int => match key.len() {
            4 => ExtValue::Integer(i32::from_be_bytes([key[0], key[1], key[2], key[3]])),
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(key);
                let v = i64::from_be_bytes(b);
                i32::try_from(v).map_or_else(|_| ExtValue::String(v.to_string()), ExtValue::Integer)
            }
            _ => bytes(),
        },
        KafkaKeyType::Float => match key.len() {
            4 => ExtValue::String(f32::from_be_bytes([key[0], key[1], key[2], key[3]]).to_string()),
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(key);
                ExtValue::String(f64::from_be_bytes(b).to_string())
            }
            _ => bytes(),
        },
        KafkaKeyType::ByteArray => bytes(),
    }
}

/// `kafkaheader` + the header name in lowercase with everything but `a-z0-9` removed; `None`
/// when that is not an extension name (empty, or longer than 20 characters).
fn header_extension(name: &str) -> Option<String> {
    let ext: String = std::iter::once("kafkaheader".to_owned())
        .chain(
            name.chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase().to_string()),
        )
        .collect();
    (ext.len() > "kafkaheader".len() && switchyard_core::validate::extension_name(&ext).is_ok())
        .then_some(ext)
}

/// One consumed record, borrowed from the consumer.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp in milliseconds since the epoch, when it has one.
    pub timestamp_ms: Option<i64>,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its headers.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// Its value.
    pub value: Option<&'a [u8]>,
}

/// The event of a record: the CloudEvent it carries, or Knative's wrapping:
/// `type=dev.knative.kafka.event`, `source=/apis/v1/namespaces/{ns}/kafkasources/{name}#{topic}`,
/// `subject=partition:{p}#{offset}`, `id=partition:{p}/offset:{offset}`, `time` the record's
/// timestamp, the key in `key` and `partitionkey`, headers in `kafkaheader{name}`, and
/// `content-type` as `datacontenttype`. A value over `max_payload_bytes` is refused.
pub fn wrap_record(
    ns: &str,
    name: &str,
    key_type: KafkaKeyType,
    r: &Record<'_>,
    max_payload_bytes: usize,
) -> Result<CloudEvent, EventError> {
    crate::payload_within_limit(r.value.map_or(0, <[u8]>::len), max_payload_bytes)?;
    if let Some(e) = switchyard_core::bindings::decode_kafka(r.headers, r.value)? {
        return Ok(e);
    }
    let mut event = CloudEvent::new(
        format!("partition:{}/offset:{}", r.partition, r.offset),
        format!("/apis/v1/namespaces/{ns}/kafkasources/{name}#{}", r.topic),
        "dev.knative.kafka.event",
    )?;
    event.subject = Some(format!("partition:{}#{}", r.partition, r.offset));
    event.time = r
        .timestamp_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    if let Some(k) = r.key {
        let key = key_value(k, key_type);
        event.extensions.insert(
            "partitionkey".to_owned(),
            ExtValue::String(key.to_canonical_string()),
        );
        event.extensions.insert("key".to_owned(), key);
    }
    let mut headers: BTreeMap<String, ExtValue> = BTreeMap::new();
    for (h, v) in r.headers {
        let value = v.unwrap_or_default();
        if h.eq_ignore_ascii_case("content-type") {
            event.datacontenttype = crate::target::content_type(std::str::from_utf8(value).ok());
        }
        match header_extension(h) {
            Some(ext) => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| switchyard_core::validate::string_value(&ext, s).is_ok())
                    .map_or_else(
                        || ExtValue::Binary(value.to_vec()),
                        |s| ExtValue::String(s.to_owned()),
                    );
                headers.insert(ext, v);
            }
            None => tracing::debug!(
                header = h,
                "a Kafka header name does not make an extension name of at most 20 characters; left out"
            ),
        }
    }
    event.extensions.extend(headers);
    if let Some(v) = r.value.filter(|v| !v.is_empty()) {
        event.data = Data::Binary(bytes::Bytes::copy_from_slice(v));
    }
    event.validate()?;
    Ok(event)
}

struct Consumer {
    id: String,
    ns: String,
    name: String,
    key_type: KafkaKeyType,
    target: Target,
    log: Arc<dyn EventLog>,
}

impl Consumer {
    async fn run(self, consumer: StreamConsumer, index: u32) {
        tracing::info!(source = %self.id, consumer = index, "consuming Kafka");
        loop {
            let first = match consumer.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(source = %self.id, error = %e, "Kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match futures_util::FutureExt::now_or_never(consumer.recv()) {
                    Some(Ok(m)) => batch.push(m),
                    _ => break,
                }
            }
            let mut encoded = self.target.batch(batch.len());
            let max_payload = crate::max_payload_bytes(self.log.as_ref());
            // The next offset to commit per (topic, partition): the last record's + 1.
            let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
            for m in &batch {
                // rdkafka panics on a header name that is not UTF-8 (it unwraps the
                // conversion): such a record is skipped like a malformed one.
                let headers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    m.headers()
                        .map(|h| h.iter().map(|h| (h.key, h.value)).collect::<Vec<_>>())
                        .unwrap_or_default()
                }));
                let Ok(headers) = headers else {
                    tracing::error!(source = %self.id, topic = m.topic(), partition = m.partition(), offset = m.offset(), "a Kafka record has a header name that is not UTF-8; skipped");
                    self.target.malformed("skipped");
                    next.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
                    continue;
                };
                let record = Record {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                    key: m.key(),
                    headers: &headers,
                    value: m.payload(),
                };
                let tp = record
                    .headers
                    .iter()
                    .find(|(k, _)| *k == "traceparent")
                    .and_then(|(_, v)| std::str::from_utf8((*v)?).ok());
                let built = wrap_record(&self.ns, &self.name, self.key_type, &record, max_payload)
                    .map_err(|e| e.to_string())
                    .and_then(|e| self.target.add(&mut encoded, e, tp));
                match built {
                    Ok(()) => {}
                    Err(e) => {
                        // Kafka has no dead-letter queue of its own: the record stays in the
                        // topic, and is passed over.
                        tracing::error!(source = %self.id, topic = record.topic, partition = record.partition, offset = record.offset, error = %e, "a Kafka record cannot be stored as a CloudEvent; skipped");
                        self.target.malformed("skipped");
                    }
                }
                next.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            }
            if !encoded.is_empty()
                && self
                    .target
                    .append_until_stored(&self.log, encoded, Vec::new())
                    .await
                    .is_err()
            {
                // Shutting down: nothing is committed; the group redelivers after a restart.
                return;
            }
            drop(batch);
            self.store_offsets(&consumer, &next);
        }
    }

    /// Stores `next` (the next offset per topic and partition) for the consumer's next commit.
    fn store_offsets(&self, consumer: &StreamConsumer, next: &BTreeMap<(String, i32), i64>) {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(source = %self.id, error = %e, "cannot build the offsets to commit");
            }
        }
        // A partition this member no longer owns refuses them; its new owner gets the records
        // again: duplicates, never a gap.
        if let Err(e) = consumer.store_offsets(&offsets) {
            tracing::warn!(source = %self.id, error = %e, "cannot store offsets for commit; the records will be delivered again");
        }
    }
}

/// Starts every KafkaSource of `config`: `consumers` group members each.
pub(crate) fn start_sources(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: &Arc<dyn EventLog>,
    tasks: &mut Tasks,
) -> Result<(), SourceError> {
    for ((ns, name), s) in &config.kafka_sources {
        let id = SourceId::new(ns, name).to_string();
        let err = |m: String| SourceError(format!("KafkaSource {id}: {m}"));
        let key_type = s.key_type().map_err(|e| err(e.message))?;
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", s.spec.bootstrap_servers.join(","))
            .set("group.id", s.consumer_group())
            .set("client.id", format!("switchyard-{ns}-{name}"))
            // librdkafka commits (every second, at a rebalance and at close) only the offsets
            // this source stores after the store committed, and retries a failed commit: the
            // at-least-once pattern of librdkafka's documentation.
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A member that died (kill -9) holds its partitions until this passes: 10 s
            // instead of librdkafka's 45 s, so a restarted Switchyard resumes sooner.
            .set("session.timeout.ms", "10000")
            .set(
                "auto.offset.reset",
                match s.spec.initial_offset.unwrap_or_default() {
                    InitialOffset::Earliest => "earliest",
                    InitialOffset::Latest => "latest",
                },
            );
        security(&mut cc, s.spec.net.as_ref()).map_err(err)?;
        let topics: Vec<&str> = s.spec.topics.iter().map(String::as_str).collect();
        for index in 0..s.spec.consumers.unwrap_or(1) {
            let consumer: StreamConsumer = cc.create().map_err(|e| err(e.to_string()))?;
            consumer
                .subscribe(&topics)
                .map_err(|e| err(e.to_string()))?;
            let c = Consumer {
                id: id.clone(),
                ns: ns.clone(),
                name: name.clone(),
                key_type,
                target: Target::resolve(
                    config,
                    event_types,
                    "KafkaSource",
                    ns,
                    name,
                    &s.spec.sink,
                    s.spec.ce_overrides.as_ref(),
                ),
                log: Arc::clone(log),
            };
            tasks.spawn(c.run(consumer, index));
        }
    }
    Ok(())
}

/// The KafkaSource kind.
pub(crate) const KIND: Kind = Kind {
    name: "KafkaSource",
    describe: |config| {
        config
            .kafka_sources
            .iter()
            .map(|((ns, name), s)| {
                format!(
                    "KafkaSource {ns}/{name}: topics {} from {} as group {}",
                    s.spec.topics.join(","),
                    s.spec.bootstrap_servers.join(","),
                    s.consumer_group()
                )
            })
            .collect()
    },
    check: None,
    start: start_kind,
};

fn start_kind<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        let mut tasks = Tasks::new("KafkaSources");
        start_sources(s.config, s.event_types, s.log, &mut tasks)?;
        Ok(Started::background(tasks))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(headers: &'a [(&'a str, Option<&'a [u8]>)], key: Option<&'a [u8]>) -> Record<'a> {
        Record {
            topic: "orders",
            partition: 2,
            offset: 17,
            timestamp_ms: Some(1_795_000_000_123),
            key,
            headers,
            value: Some(br#"{"total":42}"#),
        }
    }

    #[test]
    fn raw_records_are_wrapped_as_knative_does() {
        let headers = [
            ("content-type", Some(b"application/json".as_slice())),
            ("X-Trace", Some(b"abc".as_slice())),
            ("a-very-long-header-name", Some(b"left out".as_slice())),
        ];
        let e = wrap_record(
            "default",
            "orders",
            KafkaKeyType::String,
            &record(&headers, Some(b"cust-1")),
            crate::MAX_BODY_BYTES,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.id, "partition:2/offset:17");
        assert_eq!(
            e.source,
            "/apis/v1/namespaces/default/kafkasources/orders#orders"
        );
        assert_eq!(e.ty, "dev.knative.kafka.event");
        assert_eq!(e.subject.as_deref(), Some("partition:2#17"));
        assert_eq!(e.time.as_deref(), Some("2026-11-18T11:06:40.123Z"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.attribute("key").as_deref(), Some("cust-1"));
        assert_eq!(e.attribute("partitionkey").as_deref(), Some("cust-1"));
        assert_eq!(e.attribute("kafkaheaderxtrace").as_deref(), Some("abc"));
        assert_eq!(
            e.attribute("kafkaheadercontenttype"),
            None,
            "22 characters: too long"
        );
        assert_eq!(e.extensions.len(), 3);
    }

    #[test]
    fn key_types() {
        assert_eq!(
            key_value(&7i32.to_be_bytes(), KafkaKeyType::Int),
            ExtValue::Integer(7)
        );
        assert_eq!(
            key_value(&(1i64 << 40).to_be_bytes(), KafkaKeyType::Int),
            ExtValue::String("1099511627776".into())
        );
        assert_eq!(
            key_value(&21.5f64.to_be_bytes(), KafkaKeyType::Float),
            ExtValue::String("21.5".into())
        );
        assert_eq!(
            key_value(b"abc", KafkaKeyType::Int),
            ExtValue::Binary(b"abc".to_vec())
        );
        assert_eq!(
            key_value(&[0xff], KafkaKeyType::String),
            ExtValue::Binary(vec![0xff])
        );
        assert_eq!(
            key_value(b"k", KafkaKeyType::ByteArray),
            ExtValue::Binary(b"k".to_vec())
        );
    }

    #[test]
    fn cloudevent_records_pass_through() {
        let headers = [
            ("ce_specversion", Some(b"1.0".as_slice())),
            ("ce_id", Some(b"o-1".as_slice())),
            ("ce_source", Some(b"/shop".as_slice())),
            ("ce_type", Some(b"com.example.order.created".as_slice())),
        ];
        let e = wrap_record(
            "default",
            "orders",
            KafkaKeyType::String,
            &record(&headers, Some(b"k")),
            crate::MAX_BODY_BYTES,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.id.as_str(), e.ty.as_str()),
            ("o-1", "com.example.order.created")
        );
        assert!(e.extensions.is_empty(), "unchanged: no key extension added");
    }
}
