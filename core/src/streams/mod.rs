//! Resources that connect Switchyard to streaming systems: the KafkaSource, NatsSource and
//! MqttSource kinds that consume topics and subjects into a broker, and the KafkaSink and
//! NatsSink kinds a Trigger's `subscriber.ref` (or a `deadLetterSink.ref`) can name so its
//! events are written to a topic or subject.
//!
//! The sources share the conventions of [`crate::sources`] (`sink`, `ceOverrides`); the
//! promise is at-least-once from the source system into the broker: an offset is committed, a
//! message acked, only after the broker stored the event.

//!
//! A kind a file: [`kafka`], [`nats`], [`mqtt`].

use serde::{Deserialize, Serialize};

pub mod kafka;
pub mod mqtt;
pub mod nats;

pub use kafka::*;

use crate::resources::FieldError;
use crate::sources::SecretValue;

/// TLS from a source or sink to its server (an `mqtts://` MQTT broker, a NATS server): the
/// CA to trust (default the system's certificates) and a client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTls {
    /// CA certificates (PEM) to trust instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretValue>,
    /// A client certificate (PEM), for a server that requires one; with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretValue>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretValue>,
}

impl ClientTls {
    pub(crate) fn validate(&self, field: &str) -> Result<(), FieldError> {
        for (name, secret) in [
            ("caCert", &self.ca_cert),
            ("cert", &self.cert),
            ("key", &self.key),
        ] {
            if let Some(s) = secret {
                s.validate(&format!("{field}.{name}"))?;
            }
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(FieldError::new(field, "give `cert` and `key` together"));
        }
        Ok(())
    }
}
pub use mqtt::*;
pub use nats::*;

/// `apiVersion` of Knative's KafkaSource.
pub const KNATIVE_SOURCES_V1BETA1: &str = "sources.knative.dev/v1beta1";
/// `apiVersion` of Knative's KafkaSink.
pub const KNATIVE_EVENTING_V1ALPHA1: &str = "eventing.knative.dev/v1alpha1";

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
