//! Resources that connect Switchyard to streaming systems: the KafkaSource, NatsSource and
//! MqttSource kinds that consume topics and subjects into a broker, and the KafkaSink and
//! NatsSink kinds a Trigger's `subscriber.ref` (or a `deadLetterSink.ref`) can name so its
//! events are written to a topic or subject.
//!
//! The sources share the conventions of [`crate::sources`] (`sink`, `ceOverrides`); the
//! promise is at-least-once from the source system into the broker: an offset is committed, a
//! message acked, only after the broker stored the event.

use serde::{Deserialize, Serialize};

use crate::resources::{Destination, Duration, FieldError, ObjectMeta};
use crate::sources::{CeOverrides, SecretValue};

/// `apiVersion` of Knative's KafkaSource.
pub const KNATIVE_SOURCES_V1BETA1: &str = "sources.knative.dev/v1beta1";
/// `apiVersion` of Knative's KafkaSink.
pub const KNATIVE_EVENTING_V1ALPHA1: &str = "eventing.knative.dev/v1alpha1";

/// The Knative label that says how a KafkaSource reads record keys.
pub const KAFKA_KEY_TYPE_LABEL: &str = "kafkasources.sources.knative.dev/key-type";

/// How a KafkaSource turns a record key into the `key` extension (Knative's key-type label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaKeyType {
    /// UTF-8 text (the default); a key that is not UTF-8 is kept as bytes.
    #[default]
    String,
    /// A big-endian 32- or 64-bit signed integer.
    Int,
    /// A big-endian 32- or 64-bit IEEE 754 float.
    Float,
    /// Bytes, written as base64.
    ByteArray,
}

impl KafkaKeyType {
    fn parse(value: &str) -> Result<Self, FieldError> {
        match value {
            "string" => Ok(KafkaKeyType::String),
            "int" => Ok(KafkaKeyType::Int),
            "float" => Ok(KafkaKeyType::Float),
            "byte-array" => Ok(KafkaKeyType::ByteArray),
            other => Err(FieldError::new(
                format!("metadata.labels.{KAFKA_KEY_TYPE_LABEL}"),
                format!("`{other}` is not a key type: use string, int, float or byte-array"),
            )),
        }
    }
}

/// SASL settings of a Kafka connection (Knative's `net.sasl`, with secrets given as values or
/// environment variables instead of Kubernetes secret references).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSasl {
    /// Whether SASL is used.
    #[serde(default)]
    pub enable: bool,
    /// The user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SecretValue>,
    /// The password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// The mechanism: `PLAIN` (default), `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<SecretValue>,
}

/// TLS settings of a Kafka connection (Knative's `net.tls`); PEM texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaTls {
    /// Whether TLS is used.
    #[serde(default)]
    pub enable: bool,
    /// CA certificate(s) the brokers' certificates are checked against (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretValue>,
    /// Client certificate, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretValue>,
    /// Client private key, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretValue>,
}

/// How to reach Kafka securely (Knative's `net`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaNet {
    /// SASL authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
}

impl KafkaNet {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        if let Some(s) = self.sasl.as_ref().filter(|s| s.enable) {
            match (&s.user, &s.password) {
                (Some(u), Some(p)) => {
                    u.validate(&format!("{field}.sasl.user"))?;
                    p.validate(&format!("{field}.sasl.password"))?;
                }
                _ => {
                    return Err(FieldError::new(
                        format!("{field}.sasl"),
                        "SASL needs `user` and `password`",
                    ));
                }
            }
            if let Some(t) = &s.mechanism {
                t.validate(&format!("{field}.sasl.type"))?;
                if let Some(v) = &t.value
                    && !matches!(v.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")
                {
                    return Err(FieldError::new(
                        format!("{field}.sasl.type"),
                        format!(
                            "`{v}` is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                        ),
                    ));
                }
            }
        }
        if let Some(t) = self.tls.as_ref().filter(|t| t.enable) {
            for (name, v) in [("caCert", &t.ca_cert), ("cert", &t.cert), ("key", &t.key)] {
                if let Some(v) = v {
                    v.validate(&format!("{field}.tls.{name}"))?;
                }
            }
            if t.cert.is_some() != t.key.is_some() {
                return Err(FieldError::new(
                    format!("{field}.tls"),
                    "give both `cert` and `key` for mutual TLS, or neither",
                ));
            }
        }
        Ok(())
    }
}

fn bootstrap_servers(field: &str, servers: &[String]) -> Result<(), FieldError> {
    if servers.is_empty() {
        return Err(FieldError::new(
            field,
            "give at least one `host:port` Kafka broker",
        ));
    }
    for s in servers {
        // librdkafka takes a comma-separated list; a server itself must not hold one.
        if s.is_empty() || s.contains([',', ' ', '/']) || !s.contains(':') {
            return Err(FieldError::new(
                field,
                format!("`{s}` is not a `host:port` Kafka broker address"),
            ));
        }
    }
    Ok(())
}

fn kafka_topic(field: &str, topic: &str) -> Result<(), FieldError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "`{topic}` is not a Kafka topic name (1 to 249 of a-z, A-Z, 0-9, `.`, `_`, `-`)"
            ),
        ))
    }
}

/// Where a KafkaSource starts in partitions its consumer group has no offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum InitialOffset {
    /// The oldest record still kept.
    Earliest,
    /// Only records written after the group first joins (Knative's default).
    #[default]
    Latest,
}

/// `spec` of a KafkaSource (Knative's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSourceSpec {
    /// Where events go: a `ref` to a Broker, or a `uri`.
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    /// Kafka brokers to bootstrap from, `host:port`.
    pub bootstrap_servers: Vec<String>,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// The consumer group (default `switchyard.{namespace}.{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    /// Where a new group starts: `earliest` or `latest` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_offset: Option<InitialOffset>,
    /// Consumers in the group, each taking a share of the partitions (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u32>,
    /// SASL and TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<KafkaNet>,
}

/// A KafkaSource (Knative's kind): records of Kafka topics as CloudEvents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSource {
    /// Identity of the source (the key-type label lives here, as in Knative).
    pub metadata: ObjectMeta,
    /// What it does.
    pub spec: KafkaSourceSpec,
}

impl KafkaSource {
    /// The largest `consumers` taken.
    pub const MAX_CONSUMERS: u32 = 64;

    /// The consumer group in force.
    pub fn consumer_group(&self) -> String {
        self.spec.consumer_group.clone().unwrap_or_else(|| {
            format!(
                "switchyard.{}.{}",
                self.metadata.namespace, self.metadata.name
            )
        })
    }

    /// How record keys are read, from the Knative key-type label.
    pub fn key_type(&self) -> Result<KafkaKeyType, FieldError> {
        self.metadata
            .labels
            .get(KAFKA_KEY_TYPE_LABEL)
            .map_or(Ok(KafkaKeyType::String), |v| KafkaKeyType::parse(v))
    }

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        crate::sources::validate_common(&spec.sink, spec.ce_overrides.as_ref())?;
        bootstrap_servers("spec.bootstrapServers", &spec.bootstrap_servers)?;
        if spec.topics.is_empty() {
            return Err(FieldError::new("spec.topics", "give at least one topic"));
        }
        for t in &spec.topics {
            kafka_topic("spec.topics", t)?;
        }
        if spec.consumer_group.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::new("spec.consumerGroup", "must not be empty"));
        }
        if spec
            .consumers
            .is_some_and(|c| c == 0 || c > Self::MAX_CONSUMERS)
        {
            return Err(FieldError::new(
                "spec.consumers",
                format!("must be 1 to {}", Self::MAX_CONSUMERS),
            ));
        }
        if let Some(n) = &spec.net {
            n.validate("spec.net")?;
        }
        self.key_type()?;
        Ok(())
    }
}

/// How a NATS client authenticates (one of the three).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsAuth {
    /// A token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretValue>,
    /// A user name (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SecretValue>,
    /// The password of `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// A `.creds` file (JWT and NKey seed), as NATS' `nsc` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
}

impl NatsAuth {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        let ways = usize::from(self.token.is_some())
            + usize::from(self.user.is_some() || self.password.is_some())
            + usize::from(self.credentials_file.is_some());
        if ways != 1 {
            return Err(FieldError::new(
                field,
                "give exactly one of `token`, `user` with `password`, or `credentialsFile`",
            ));
        }
        if let Some(t) = &self.token {
            t.validate(&format!("{field}.token"))?;
        }
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => {
                u.validate(&format!("{field}.user"))?;
                p.validate(&format!("{field}.password"))?;
            }
            (None, None) => {}
            _ => {
                return Err(FieldError::new(
                    field,
                    "give `user` and `password` together",
                ));
            }
        }
        if self.credentials_file.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::new(
                format!("{field}.credentialsFile"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

fn nats_servers(field: &str, servers: &[String]) -> Result<(), FieldError> {
    if servers.is_empty() {
        return Err(FieldError::new(
            field,
            "give at least one server, e.g. `nats://127.0.0.1:4222`",
        ));
    }
    for s in servers {
        let lower = s.to_ascii_lowercase();
        let rest = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .find_map(|p| lower.strip_prefix(p))
            .unwrap_or(&lower);
        if rest.is_empty() || s.contains(char::is_whitespace) || s.contains(',') {
            return Err(FieldError::new(
                field,
                format!("`{s}` is not a NATS server address (`nats://host:port`)"),
            ));
        }
    }
    Ok(())
}

/// Checks a NATS subject; `wildcards` allows `*` tokens and a final `>`.
fn nats_subject(field: &str, subject: &str, wildcards: bool) -> Result<(), FieldError> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let ok = !subject.is_empty()
        && !subject.contains(char::is_whitespace)
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && match *t {
                    "*" => wildcards,
                    ">" => wildcards && i == tokens.len() - 1,
                    t => !t.contains(['*', '>']),
                }
        });
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            if wildcards {
                format!(
                    "`{subject}` is not a NATS subject (dot-separated tokens; `*` for one token, `>` only last)"
                )
            } else {
                format!("`{subject}` is not a NATS subject without wildcards")
            },
        ))
    }
}

/// Which messages a new JetStream consumer starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum NatsDeliverPolicy {
    /// Every message the stream holds (the default).
    #[default]
    All,
    /// Only messages stored after the consumer is created.
    New,
    /// The last message, then new ones.
    Last,
}

/// NatsSource's JetStream mode: a durable pull consumer on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsJetStream {
    /// The stream (it must exist; create it with `nats stream add` or your own tooling).
    pub stream: String,
    /// The durable consumer's name (default `switchyard-{namespace}-{name}`); created when
    /// missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Where a new consumer starts (default `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_policy: Option<NatsDeliverPolicy>,
    /// How long the server waits for an ack before redelivering (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait: Option<Duration>,
    /// The delay asked for with a nak when the broker cannot take events (default 1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nak_delay: Option<Duration>,
    /// Messages fetched per pull, 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

impl NatsJetStream {
    /// The default ack wait.
    pub const DEFAULT_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
    /// The default nak delay.
    pub const DEFAULT_NAK_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
}

/// `spec` of a NatsSource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsSourceSpec {
    /// Where events go: a `ref` to a Broker, or a `uri`.
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    /// NATS servers, e.g. `nats://127.0.0.1:4222`.
    pub servers: Vec<String>,
    /// The subject to consume; wildcards (`*`, `>`) allowed.
    pub subject: String,
    /// Core NATS only: a queue group, so several servers share the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    /// Consume a JetStream stream with a durable consumer instead of core NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<NatsJetStream>,
    /// `type` of events built from messages that are not CloudEvents (default
    /// `dev.switchyard.nats.message`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// Authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
}

/// A NatsSource (our kind): NATS messages, core or JetStream, as CloudEvents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsSource {
    /// Identity of the source.
    pub metadata: ObjectMeta,
    /// What it does.
    pub spec: NatsSourceSpec,
}

impl NatsSource {
    /// The default `type` of wrapped messages.
    pub const DEFAULT_TYPE: &'static str = "dev.switchyard.nats.message";

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        crate::sources::validate_common(&spec.sink, spec.ce_overrides.as_ref())?;
        nats_servers("spec.servers", &spec.servers)?;
        nats_subject("spec.subject", &spec.subject, true)?;
        if let Some(q) = &spec.queue_group {
            if spec.jetstream.is_some() {
                return Err(FieldError::new(
                    "spec.queueGroup",
                    "is for core NATS; a JetStream consumer is shared by using the same `jetstream.consumer`",
                ));
            }
            nats_subject("spec.queueGroup", q, false)?;
        }
        if let Some(js) = &spec.jetstream {
            let name_ok = |n: &str| {
                !n.is_empty()
                    && !n.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
            };
            if !name_ok(&js.stream) {
                return Err(FieldError::new(
                    "spec.jetstream.stream",
                    "is not a stream name (no spaces, `.`, `*` or `>`)",
                ));
            }
            if js.consumer.as_deref().is_some_and(|c| !name_ok(c)) {
                return Err(FieldError::new(
                    "spec.jetstream.consumer",
                    "is not a consumer name (no spaces, `.`, `*` or `>`)",
                ));
            }
            if js.batch.is_some_and(|b| !(1..=1000).contains(&b)) {
                return Err(FieldError::new("spec.jetstream.batch", "must be 1 to 1000"));
            }
            if js
                .ack_wait
                .is_some_and(|d| d.0 < std::time::Duration::from_secs(1))
            {
                return Err(FieldError::new(
                    "spec.jetstream.ackWait",
                    "must be at least one second",
                ));
            }
        }
        if let Some(t) = &spec.ty {
            crate::validate::non_empty_string("type", t)
                .map_err(|e| FieldError::new("spec.type", e.to_string()))?;
        }
        if let Some(a) = &spec.auth {
            a.validate("spec.auth")?;
        }
        Ok(())
    }

    /// The durable consumer's name in JetStream mode.
    pub fn consumer_name(&self) -> Option<String> {
        self.spec.jetstream.as_ref().map(|js| {
            js.consumer.clone().unwrap_or_else(|| {
                format!(
                    "switchyard-{}-{}",
                    self.metadata.namespace, self.metadata.name
                )
            })
        })
    }
}

/// The MQTT protocol version a source speaks to its broker: `"3.1.1"` or `5` (YAML's bare
/// `5` is a number; both forms load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1: events arrive in structured mode or as raw payloads.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5 (the default): also binary mode, through user properties and the content type.
    #[default]
    #[serde(rename = "5")]
    V5,
}

/// User name and password for an MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttAuth {
    /// The user name.
    pub username: SecretValue,
    /// The password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
}

/// `spec` of an MqttSource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttSourceSpec {
    /// Where events go: a `ref` to a Broker, or a `uri`.
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    /// The MQTT broker, `mqtt://host:port` (port 1883 when omitted).
    pub broker: String,
    /// Topic filters to subscribe to; `+` and `#` wildcards allowed.
    pub topics: Vec<String>,
    /// `3.1.1` or `5` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<MqttVersion>,
    /// The client id (default `switchyard-{namespace}-{name}`); the broker keeps the session
    /// (and the QoS 1 messages that arrive while Switchyard is down) under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Subscription QoS: 0 or 1 (default 1; QoS 1 messages are acked after storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// Start a clean session on every connect, dropping what the broker queued (default
    /// false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_session: Option<bool>,
    /// `type` of events built from raw payloads (default `dev.switchyard.mqtt.message`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// User name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<MqttAuth>,
}

/// An MqttSource (our kind): MQTT messages as CloudEvents, per the CloudEvents MQTT binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttSource {
    /// Identity of the source.
    pub metadata: ObjectMeta,
    /// What it does.
    pub spec: MqttSourceSpec,
}

impl<'de> Deserialize<'de> for MqttVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Text(String),
            Number(u64),
        }
        match Given::deserialize(d)? {
            Given::Text(t) if t == "3.1.1" => Ok(MqttVersion::V311),
            Given::Text(t) if t == "5" || t == "5.0" => Ok(MqttVersion::V5),
            Given::Number(5) => Ok(MqttVersion::V5),
            _ => Err(serde::de::Error::custom(
                "the MQTT protocol version is `3.1.1` or `5`",
            )),
        }
    }
}

impl MqttSource {
    /// The default `type` of wrapped payloads.
    pub const DEFAULT_TYPE: &'static str = "dev.switchyard.mqtt.message";

    /// The broker's host and port.
    pub fn host_port(&self) -> Result<(String, u16), FieldError> {
        let err = || {
            FieldError::new(
                "spec.broker",
                format!(
                    "`{}` is not an MQTT broker address (`mqtt://host:port`)",
                    self.spec.broker
                ),
            )
        };
        let rest = self
            .spec
            .broker
            .strip_prefix("mqtt://")
            .or_else(|| self.spec.broker.strip_prefix("tcp://"))
            .ok_or_else(err)?
            .trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '@', ' ']) {
            return Err(err());
        }
        // `[v6 address]:port`, `[v6 address]`, `host:port` or `host`.
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(err)?;
                match after {
                    "" => (host, None),
                    after => (host, Some(after.strip_prefix(':').ok_or_else(err)?)),
                }
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            },
        };
        if host.is_empty() {
            return Err(err());
        }
        let port = match port {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| err())?
            }
            Some(_) => return Err(err()),
            None => 1883,
        };
        Ok((host.to_owned(), port))
    }

    /// The client id in force.
    pub fn client_id(&self) -> String {
        self.spec.client_id.clone().unwrap_or_else(|| {
            format!(
                "switchyard-{}-{}",
                self.metadata.namespace, self.metadata.name
            )
        })
    }

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        crate::sources::validate_common(&spec.sink, spec.ce_overrides.as_ref())?;
        self.host_port()?;
        if spec.topics.is_empty() {
            return Err(FieldError::new(
                "spec.topics",
                "give at least one topic filter",
            ));
        }
        for t in &spec.topics {
            let levels: Vec<&str> = t.split('/').collect();
            let ok = !t.is_empty()
                && !t.contains('\0')
                && levels.iter().enumerate().all(|(i, l)| match *l {
                    "#" => i == levels.len() - 1,
                    "+" => true,
                    l => !l.contains(['#', '+']),
                });
            if !ok {
                return Err(FieldError::new(
                    "spec.topics",
                    format!(
                        "`{t}` is not an MQTT topic filter (`+` for one level, `#` only as the last level)"
                    ),
                ));
            }
        }
        if spec.qos.is_some_and(|q| q > 1) {
            return Err(FieldError::new(
                "spec.qos",
                "must be 0 or 1 (QoS 2 is not supported)",
            ));
        }
        if spec.client_id.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::new("spec.clientId", "must not be empty"));
        }
        if let Some(t) = &spec.ty {
            crate::validate::non_empty_string("type", t)
                .map_err(|e| FieldError::new("spec.type", e.to_string()))?;
        }
        if let Some(a) = &spec.auth {
            a.username.validate("spec.auth.username")?;
            if let Some(p) = &a.password {
                p.validate("spec.auth.password")?;
            }
        }
        Ok(())
    }
}

/// How a stream sink writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum ContentMode {
    /// Attributes in headers, data as the payload (the default).
    #[default]
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

/// `spec` of a KafkaSink (Knative's fields; `net` instead of a secret reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSinkSpec {
    /// The topic records are written to.
    pub topic: String,
    /// Kafka brokers to bootstrap from, `host:port`.
    pub bootstrap_servers: Vec<String>,
    /// `binary` (default) or `structured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_mode: Option<ContentMode>,
    /// Partitions of the topic, when Switchyard is to create it at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_partitions: Option<i32>,
    /// Replicas of the topic, when Switchyard is to create it at start (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// SASL and TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<KafkaNet>,
}

/// A KafkaSink (Knative's kind): a Kafka topic a Trigger delivers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSink {
    /// Identity of the sink.
    pub metadata: ObjectMeta,
    /// Where it writes.
    pub spec: KafkaSinkSpec,
}

impl KafkaSink {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        kafka_topic("spec.topic", &spec.topic)?;
        bootstrap_servers("spec.bootstrapServers", &spec.bootstrap_servers)?;
        if spec.num_partitions.is_some_and(|n| n < 1) {
            return Err(FieldError::new("spec.numPartitions", "must be at least 1"));
        }
        if spec
            .replication_factor
            .is_some_and(|n| !(1..=32767).contains(&n))
        {
            return Err(FieldError::new(
                "spec.replicationFactor",
                "must be 1 to 32767",
            ));
        }
        if spec.replication_factor.is_some() && spec.num_partitions.is_none() {
            return Err(FieldError::new(
                "spec.replicationFactor",
                "only used when the topic is created: give `numPartitions` too",
            ));
        }
        if let Some(n) = &spec.net {
            n.validate("spec.net")?;
        }
        Ok(())
    }
}

/// `spec` of a NatsSink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsSinkSpec {
    /// NATS servers, e.g. `nats://127.0.0.1:4222`.
    pub servers: Vec<String>,
    /// The subject events are published to (no wildcards).
    pub subject: String,
    /// Publish to JetStream and count a delivery only when the stream acknowledges it
    /// (default false: core NATS, delivered once the server has the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<bool>,
    /// `binary` (default) or `structured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_mode: Option<ContentMode>,
    /// Authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
}

/// A NatsSink (our kind): a NATS subject a Trigger delivers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsSink {
    /// Identity of the sink.
    pub metadata: ObjectMeta,
    /// Where it publishes.
    pub spec: NatsSinkSpec,
}

impl NatsSink {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        nats_servers("spec.servers", &self.spec.servers)?;
        nats_subject("spec.subject", &self.spec.subject, false)?;
        if let Some(a) = &self.spec.auth {
            a.validate("spec.auth")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for ok in ["a", "a.b", "a.*.c", "a.>", ">", "*"] {
            assert!(nats_subject("f", ok, true).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", "a.>.c", "a b", "a.b*", ".a", "a."] {
            assert!(nats_subject("f", bad, true).is_err(), "{bad}");
        }
        assert!(nats_subject("f", "a.*", false).is_err());
    }

    #[test]
    fn mqtt_addresses_and_versions() {
        let source = |broker: &str| {
            let yaml = format!(
                "metadata: {{name: m}}\nspec:\n  broker: '{broker}'\n  topics: [a]\n  sink: {{uri: 'http://x.example/'}}\n"
            );
            serde_norway::from_str::<MqttSource>(&yaml).map_err(|e| e.to_string())
        };
        let hp = |b: &str| source(b).and_then(|s| s.host_port().map_err(|e| e.message));
        assert_eq!(hp("mqtt://h:1884"), Ok(("h".into(), 1884)));
        assert_eq!(hp("mqtt://h"), Ok(("h".into(), 1883)));
        assert_eq!(hp("tcp://[::1]:1884"), Ok(("::1".into(), 1884)));
        assert_eq!(hp("mqtt://[::1]"), Ok(("::1".into(), 1883)));
        for bad in [
            "mqtt://",
            "mqtt://h:+1",
            "mqtt://h:x",
            "http://h",
            "mqtt://[::1",
            "mqtt://:1",
        ] {
            assert!(hp(bad).is_err(), "{bad}");
        }
        let version = |v: &str| serde_norway::from_str::<MqttVersion>(v).map_err(|e| e.to_string());
        assert_eq!(version("5"), Ok(MqttVersion::V5));
        assert_eq!(version("'5'"), Ok(MqttVersion::V5));
        assert_eq!(version("'3.1.1'"), Ok(MqttVersion::V311));
        assert!(version("3").is_err());
        assert!(version("3.1").is_err());
    }

    #[test]
    fn topics_and_servers() {
        assert!(kafka_topic("f", "orders.v1_x-y").is_ok());
        for bad in ["", ".", "a b", "a/b", &"x".repeat(250)] {
            assert!(kafka_topic("f", bad).is_err(), "{bad}");
        }
        assert!(bootstrap_servers("f", &["127.0.0.1:9092".into()]).is_ok());
        for bad in ["", "host", "a:1,b:2", "kafka://h:1"] {
            assert!(bootstrap_servers("f", &[bad.into()]).is_err(), "{bad}");
        }
        assert!(bootstrap_servers("f", &[]).is_err());
    }
}
