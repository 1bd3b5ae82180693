//! MqttSource (MQTT 3.1.1 and 5).

use serde::{Deserialize, Serialize};

use crate::resources::{Destination, FieldError, ObjectMeta};
use crate::sources::{CeOverrides, SecretValue};
use crate::streams::ClientTls;

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
    /// The MQTT broker, `mqtt://host:port` (port 1883 when omitted), or over TLS
    /// `mqtts://host:port` (port 8883 when omitted).
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
    /// TLS settings for an `mqtts://` broker: the CA to trust (default the system's
    /// certificates) and a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
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

    /// Whether the broker is reached over TLS (`mqtts://` or `ssl://`).
    pub fn uses_tls(&self) -> bool {
        self.spec.broker.starts_with("mqtts://") || self.spec.broker.starts_with("ssl://")
    }

    /// The broker's host and port.
    pub fn host_port(&self) -> Result<(String, u16), FieldError> {
        let err = || {
            FieldError::new(
                "spec.broker",
                format!(
                    "`{}` is not an MQTT broker address (`mqtt://host:port` or `mqtts://host:port`)",
                    self.spec.broker
                ),
            )
        };
        let b = &self.spec.broker;
        let rest = b
            .strip_prefix("mqtt://")
            .or_else(|| b.strip_prefix("tcp://"))
            .or_else(|| b.strip_prefix("mqtts://"))
            .or_else(|| b.strip_prefix("ssl://"))
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
            None if self.uses_tls() => 8883,
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
        if let Some(t) = &spec.tls {
            if !self.uses_tls() {
                return Err(FieldError::new(
                    "spec.tls",
                    "TLS settings need an `mqtts://` broker",
                ));
            }
            t.validate("spec.tls")?;
        }
        Ok(())
    }
}
