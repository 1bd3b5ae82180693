//! Every kind of resource Switchyard loads, registered in one place (the `kinds!` table):
//! its (`apiVersion`, `kind`), how it is parsed, which kinds share a name space, the
//! [`Config`] field it is kept in, and what all kinds answer (kind name, metadata,
//! validation). Adding a kind starts here.

use serde::Deserialize;

use crate::auth::{EventPolicy, Identity, TokenIssuer};
use crate::config::Config;

use crate::resources::{
    AddressTable, Broker, EventType, FieldError, KNATIVE_EVENTING_V1, KNATIVE_EVENTING_V1BETA2,
    KNATIVE_FLOWS_V1, ObjectMeta, Parallel, SWITCHYARD_V1, Sequence, Sink, Trigger,
};
use crate::sources::{
    KNATIVE_SOURCES_V1, PingSource, S3Source, SWITCHYARD_SOURCES_V1, WebhookSource,
};
use crate::streams::{
    KNATIVE_EVENTING_V1ALPHA1, KNATIVE_SOURCES_V1BETA1, KafkaSink, KafkaSource, MqttSource,
    NatsSink, NatsSource,
};

/// The table: for each kind, its variant and type, its `apiVersion`, its group (which kinds
/// share a name space per namespace), and the [`Config`] field it is kept in. One line here
/// is how a kind is registered; everything below is generated from it.
macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident, $api:expr, $group:ident, $field:ident;)*) => {
        /// One resource of any supported kind.
        // Resources are few and short-lived (config loading); boxing would only complicate matching.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum Resource {
            $($(#[$doc])* $kind($kind),)*
        }

        impl Resource {
            /// The kind's name.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Resource::$kind(_) => stringify!($kind),)*
                }
            }

            /// The kind's `apiVersion`.
            pub fn api_version(&self) -> &'static str {
                match self {
                    $(Resource::$kind(_) => $api,)*
                }
            }

            /// The resource as a manifest: `apiVersion`, `kind`, then its fields as loaded
            /// (defaults filled in).
            pub fn to_manifest(&self) -> serde_json::Value {
                let fields = match self {
                    $(Resource::$kind(r) => serde_json::to_value(r),)*
                };
                let mut out = serde_json::Map::new();
                out.insert("apiVersion".into(), self.api_version().into());
                out.insert("kind".into(), self.kind().into());
                if let Ok(serde_json::Value::Object(fields)) = fields {
                    out.extend(fields);
                }
                serde_json::Value::Object(out)
            }

            /// The resource's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Resource::$kind(r) => &r.metadata,)*
                }
            }

            /// Checks the resource on its own (references to others are checked by the
            /// config).
            pub fn validate(&self) -> Result<(), FieldError> {
                match self {
                    $(Resource::$kind(r) => r.validate(),)*
                }
            }

            /// The kinds that share this one's name space per namespace.
            pub fn group(&self) -> Group {
                match self {
                    $(Resource::$kind(_) => Group::$group,)*
                }
            }

            /// Whether the config already holds a resource of this one's group named `key`.
            pub(crate) fn taken(&self, config: &Config, key: &(String, String)) -> bool {
                let group = self.group();
                $(Group::$group == group && config.$field.contains_key(key) ||)* false
            }

            /// Keeps the resource in its field of `config`.
            pub(crate) fn insert_into(self, config: &mut Config, key: (String, String)) {
                match self {
                    $(Resource::$kind(r) => {
                        config.$field.insert(key, r);
                    })*
                }
            }

            /// The supported (`apiVersion`, `kind`) pairs.
            pub const KINDS: &'static [(&'static str, &'static str)] =
                &[$(($api, stringify!($kind)),)*];

            /// Parses the body of a resource of `kind` (one of [`Resource::KINDS`]); the
            /// failing field's path and the message when it does not fit.
            pub(crate) fn parse(
                kind: &str,
                body: serde_json::Value,
            ) -> Result<Resource, (String, String)> {
                match kind {
                    $(stringify!($kind) => typed::<$kind>(body).map(Resource::$kind),)*
                    _ => Err((String::new(), format!("unknown kind `{kind}`"))),
                }
            }

            /// Every resource of `group` in `config`, with its kind and key.
            pub fn all_in(config: &Config, group: Group) -> Vec<(&'static str, (String, String), Resource)> {
                let mut out = Vec::new();
                $(if Group::$group == group {
                    out.extend(config.$field.iter().map(|(k, r)| {
                        (stringify!($kind), k.clone(), Resource::$kind(r.clone()))
                    }));
                })*
                out
            }
            /// Keeps, of the resources of `group` in `config`, those `keep` says to (by kind
            /// and key).
            pub fn retain_in(
                config: &mut Config,
                group: Group,
                keep: impl Fn(&'static str, &(String, String)) -> bool,
            ) {
                $(if Group::$group == group {
                    config.$field.retain(|k, _| keep(stringify!($kind), k));
                })*
            }
            /// The kinds of `group`.
            pub fn kinds_of(group: Group) -> impl Iterator<Item = &'static str> {
                [$((Group::$group, stringify!($kind)),)*]
                    .into_iter()
                    .filter(move |(g, _)| *g == group)
                    .map(|(_, k)| k)
            }
        }
    };
}

/// Kinds that share one name space per namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Brokers.
    Broker,
    /// Triggers.
    Trigger,
    /// EventTypes.
    EventType,
    /// Sinks of every kind, so a `ref` reads unambiguously.
    Sink,
    /// Sources of every kind: they share the path `/sources/{namespace}/{name}` and metric
    /// labels.
    Source,
    /// AddressTables.
    AddressTable,
    /// Sequences (the Brokers and Triggers they add are named after them).
    Sequence,
    /// Parallels (likewise).
    Parallel,
    /// Identities.
    Identity,
    /// TokenIssuers.
    TokenIssuer,
    /// EventPolicies.
    EventPolicy,
}

kinds! {
    /// `eventing.knative.dev/v1` Broker.
    Broker, KNATIVE_EVENTING_V1, Broker, brokers;
    /// `eventing.knative.dev/v1` Trigger.
    Trigger, KNATIVE_EVENTING_V1, Trigger, triggers;
    /// `switchyard.dev/v1` Sink.
    Sink, SWITCHYARD_V1, Sink, sinks;
    /// `eventing.knative.dev/v1beta2` EventType.
    EventType, KNATIVE_EVENTING_V1BETA2, EventType, event_types;
    /// `sources.switchyard.dev/v1` WebhookSource.
    WebhookSource, SWITCHYARD_SOURCES_V1, Source, webhook_sources;
    /// `sources.knative.dev/v1` PingSource.
    PingSource, KNATIVE_SOURCES_V1, Source, ping_sources;
    /// `sources.switchyard.dev/v1` S3Source.
    S3Source, SWITCHYARD_SOURCES_V1, Source, s3_sources;
    /// `sources.knative.dev/v1beta1` KafkaSource.
    KafkaSource, KNATIVE_SOURCES_V1BETA1, Source, kafka_sources;
    /// `sources.switchyard.dev/v1` NatsSource.
    NatsSource, SWITCHYARD_SOURCES_V1, Source, nats_sources;
    /// `sources.switchyard.dev/v1` MqttSource.
    MqttSource, SWITCHYARD_SOURCES_V1, Source, mqtt_sources;
    /// `eventing.knative.dev/v1alpha1` KafkaSink.
    KafkaSink, KNATIVE_EVENTING_V1ALPHA1, Sink, kafka_sinks;
    /// `switchyard.dev/v1` NatsSink.
    NatsSink, SWITCHYARD_V1, Sink, nats_sinks;
    /// `switchyard.dev/v1` AddressTable.
    AddressTable, SWITCHYARD_V1, AddressTable, address_tables;
    /// `flows.knative.dev/v1` Sequence.
    Sequence, KNATIVE_FLOWS_V1, Sequence, sequences;
    /// `flows.knative.dev/v1` Parallel.
    Parallel, KNATIVE_FLOWS_V1, Parallel, parallels;
    /// `switchyard.dev/v1` Identity.
    Identity, SWITCHYARD_V1, Identity, identities;
    /// `switchyard.dev/v1` TokenIssuer.
    TokenIssuer, SWITCHYARD_V1, TokenIssuer, token_issuers;
    /// `eventing.knative.dev/v1alpha1` EventPolicy.
    EventPolicy, KNATIVE_EVENTING_V1ALPHA1, EventPolicy, event_policies;
}

fn typed<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner().to_string())
    })
}
