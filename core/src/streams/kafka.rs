//! KafkaSource (Knative's `sources.knative.dev/v1beta1`) and KafkaSink.

use serde::{Deserialize, Serialize};

use super::*;
use crate::resources::{Destination, FieldError, ObjectMeta};
use crate::sources::{CeOverrides, SecretValue};

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

pub(super) fn bootstrap_servers(field: &str, servers: &[String]) -> Result<(), FieldError> {
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

pub(super) fn kafka_topic(field: &str, topic: &str) -> Result<(), FieldError> {
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

/// Knative's KafkaSink `auth`: a whole Secret whose keys say how to connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSinkAuth {
    /// `{ref: {name}}`: the Secret, a folder of the secrets directory
    /// (`crate::sources::secrets_dir`) holding `protocol` (`PLAINTEXT`, `SASL_PLAINTEXT`,
    /// `SSL`, `SASL_SSL`) and, as it needs, `sasl.mechanism`, `user`, `password`, `ca.crt`,
    /// `user.crt`, `user.key`.
    pub secret: KafkaSinkAuthSecret,
}

/// The Secret of a KafkaSink's `auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSinkAuthSecret {
    /// `{name}` of the Secret.
    #[serde(rename = "ref")]
    pub reference: KafkaSinkSecretRef,
}

/// The name of a KafkaSink's Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSinkSecretRef {
    /// The Secret's name.
    pub name: String,
}

/// `spec` of a KafkaSink (Knative's fields, and Switchyard's `net` with one secret each).
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
    /// Knative's form of the same: a Secret with `protocol` and the keys it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<KafkaSinkAuth>,
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
        if let Some(a) = &spec.auth {
            if spec.net.is_some() {
                return Err(FieldError::new(
                    "spec.auth",
                    "give `auth` (Knative's Secret) or `net`, not both",
                ));
            }
            crate::resources::dns_subdomain("spec.auth.secret.ref.name", &a.secret.reference.name)?;
        }
        if let Some(n) = &spec.net {
            n.validate("spec.net")?;
        }
        Ok(())
    }
}
