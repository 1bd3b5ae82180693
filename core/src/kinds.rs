//! Every kind of resource Switchyard loads, registered in one place: its (`apiVersion`,
//! `kind`), how it is parsed, and what all kinds answer (kind name, metadata, validation).
//! Adding a kind starts here.

use serde::Deserialize;

use crate::resources::{
    Broker, EventType, FieldError, KNATIVE_EVENTING_V1, KNATIVE_EVENTING_V1BETA2, ObjectMeta,
    SWITCHYARD_V1, Sink, Trigger,
};
use crate::sources::{
    KNATIVE_SOURCES_V1, PingSource, S3Source, SWITCHYARD_SOURCES_V1, WebhookSource,
};
use crate::streams::{
    KNATIVE_EVENTING_V1ALPHA1, KNATIVE_SOURCES_V1BETA1, KafkaSink, KafkaSource, MqttSource,
    NatsSink, NatsSource,
};

/// One resource of any supported kind.
// Resources are few and short-lived (config loading); boxing would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `eventing.knative.dev/v1` Broker.
    Broker(Broker),
    /// `eventing.knative.dev/v1` Trigger.
    Trigger(Trigger),
    /// `switchyard.dev/v1` Sink.
    Sink(Sink),
    /// `eventing.knative.dev/v1beta2` EventType.
    EventType(EventType),
    /// `sources.switchyard.dev/v1` WebhookSource.
    WebhookSource(WebhookSource),
    /// `sources.knative.dev/v1` PingSource.
    PingSource(PingSource),
    /// `sources.switchyard.dev/v1` S3Source.
    S3Source(S3Source),
    /// `sources.knative.dev/v1beta1` KafkaSource.
    KafkaSource(KafkaSource),
    /// `sources.switchyard.dev/v1` NatsSource.
    NatsSource(NatsSource),
    /// `sources.switchyard.dev/v1` MqttSource.
    MqttSource(MqttSource),
    /// `eventing.knative.dev/v1alpha1` KafkaSink.
    KafkaSink(KafkaSink),
    /// `switchyard.dev/v1` NatsSink.
    NatsSink(NatsSink),
}

impl Resource {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Broker(_) => "Broker",
            Resource::Trigger(_) => "Trigger",
            Resource::Sink(_) => "Sink",
            Resource::EventType(_) => "EventType",
            Resource::WebhookSource(_) => "WebhookSource",
            Resource::PingSource(_) => "PingSource",
            Resource::S3Source(_) => "S3Source",
            Resource::KafkaSource(_) => "KafkaSource",
            Resource::NatsSource(_) => "NatsSource",
            Resource::MqttSource(_) => "MqttSource",
            Resource::KafkaSink(_) => "KafkaSink",
            Resource::NatsSink(_) => "NatsSink",
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::Broker(r) => &r.metadata,
            Resource::Trigger(r) => &r.metadata,
            Resource::Sink(r) => &r.metadata,
            Resource::EventType(r) => &r.metadata,
            Resource::WebhookSource(r) => &r.metadata,
            Resource::PingSource(r) => &r.metadata,
            Resource::S3Source(r) => &r.metadata,
            Resource::KafkaSource(r) => &r.metadata,
            Resource::NatsSource(r) => &r.metadata,
            Resource::MqttSource(r) => &r.metadata,
            Resource::KafkaSink(r) => &r.metadata,
            Resource::NatsSink(r) => &r.metadata,
        }
    }

    /// Checks the resource on its own (references to others are checked by the config).
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Resource::Broker(r) => r.validate(),
            Resource::Trigger(r) => r.validate(),
            Resource::Sink(r) => r.validate(),
            Resource::EventType(r) => r.validate(),
            Resource::WebhookSource(r) => r.validate(),
            Resource::PingSource(r) => r.validate(),
            Resource::S3Source(r) => r.validate(),
            Resource::KafkaSource(r) => r.validate(),
            Resource::NatsSource(r) => r.validate(),
            Resource::MqttSource(r) => r.validate(),
            Resource::KafkaSink(r) => r.validate(),
            Resource::NatsSink(r) => r.validate(),
        }
    }

    /// The supported (`apiVersion`, `kind`) pairs.
    pub const KINDS: &'static [(&'static str, &'static str)] = &[
        (KNATIVE_EVENTING_V1, "Broker"),
        (KNATIVE_EVENTING_V1, "Trigger"),
        (SWITCHYARD_V1, "Sink"),
        (KNATIVE_EVENTING_V1BETA2, "EventType"),
        (SWITCHYARD_SOURCES_V1, "WebhookSource"),
        (KNATIVE_SOURCES_V1, "PingSource"),
        (SWITCHYARD_SOURCES_V1, "S3Source"),
        (KNATIVE_SOURCES_V1BETA1, "KafkaSource"),
        (SWITCHYARD_SOURCES_V1, "NatsSource"),
        (SWITCHYARD_SOURCES_V1, "MqttSource"),
        (KNATIVE_EVENTING_V1ALPHA1, "KafkaSink"),
        (SWITCHYARD_V1, "NatsSink"),
    ];
}

fn typed<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner().to_string())
    })
}

impl Resource {
    /// Parses the body of a resource of `kind` (one of [`Resource::KINDS`]); the failing
    /// field's path and the message when it does not fit.
    pub(crate) fn parse(kind: &str, body: serde_json::Value) -> Result<Resource, (String, String)> {
        match kind {
            "Broker" => typed::<Broker>(body).map(Resource::Broker),
            "Trigger" => typed::<Trigger>(body).map(Resource::Trigger),
            "EventType" => typed::<EventType>(body).map(Resource::EventType),
            "WebhookSource" => typed::<WebhookSource>(body).map(Resource::WebhookSource),
            "PingSource" => typed::<PingSource>(body).map(Resource::PingSource),
            "S3Source" => typed::<S3Source>(body).map(Resource::S3Source),
            "KafkaSource" => typed::<KafkaSource>(body).map(Resource::KafkaSource),
            "NatsSource" => typed::<NatsSource>(body).map(Resource::NatsSource),
            "MqttSource" => typed::<MqttSource>(body).map(Resource::MqttSource),
            "KafkaSink" => typed::<KafkaSink>(body).map(Resource::KafkaSink),
            "NatsSink" => typed::<NatsSink>(body).map(Resource::NatsSink),
            _ => typed::<Sink>(body).map(Resource::Sink),
        }
    }
}
