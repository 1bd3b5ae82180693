//! NatsSource (core NATS or a JetStream durable consumer) and NatsSink.

use serde::{Deserialize, Serialize};

use super::*;
use crate::resources::{Destination, Duration, FieldError, ObjectMeta};
use crate::sources::{CeOverrides, SecretValue};

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

pub(super) fn nats_servers(field: &str, servers: &[String]) -> Result<(), FieldError> {
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
pub(super) fn nats_subject(field: &str, subject: &str, wildcards: bool) -> Result<(), FieldError> {
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
    /// The durable consumer's name (default `switchyard-{namespace}-{name}`, a dot in the
    /// name written `_`, which JetStream does not allow in consumer names); created when
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
    /// TLS to the servers (required once given): the CA to trust, a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
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
        if let Some(t) = &spec.tls {
            t.validate("spec.tls")?;
        }
        Ok(())
    }

    /// The durable consumer's name in JetStream mode.
    pub fn consumer_name(&self) -> Option<String> {
        self.spec.jetstream.as_ref().map(|js| {
            js.consumer.clone().unwrap_or_else(|| {
                format!(
                    "switchyard-{}-{}",
                    self.metadata.namespace,
                    self.metadata.name.replace('.', "_")
                )
            })
        })
    }
}

/// The MQTT protocol version a source speaks to its broker: `"3.1.1"` or `5` (YAML's bare
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
    /// TLS to the servers (required once given): the CA to trust, a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
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
        if let Some(t) = &self.spec.tls {
            t.validate("spec.tls")?;
        }
        Ok(())
    }
}
