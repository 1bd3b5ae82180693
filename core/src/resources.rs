//! Resource types (Knative-shaped: `apiVersion`, `kind`, `metadata`, `spec`) and their
//! validation. Loading from files lives in [`crate::config`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use crate::sources::{
    KNATIVE_SOURCES_V1, PingSource, S3Source, SWITCHYARD_SOURCES_V1, WebhookSource,
};
use crate::streams::{
    KNATIVE_EVENTING_V1ALPHA1, KNATIVE_SOURCES_V1BETA1, KafkaSink, KafkaSource, MqttSource,
    NatsSink, NatsSource,
};

/// `apiVersion` of Knative's Broker and Trigger, which load unchanged.
pub const KNATIVE_EVENTING_V1: &str = "eventing.knative.dev/v1";
/// `apiVersion` of Knative's EventType, which loads unchanged.
pub const KNATIVE_EVENTING_V1BETA2: &str = "eventing.knative.dev/v1beta2";
/// `apiVersion` of Switchyard's own kinds.
pub const SWITCHYARD_V1: &str = "switchyard.dev/v1";
/// The namespace of a resource whose metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The default `knativebrokerttl` given to events that arrive without one.
pub const DEFAULT_BROKER_TTL: i32 = 255;
/// The extension that carries a broker's loop guard (stamped by `switchyard_broker::append`).
pub const TTL_EXTENSION: &str = "knativebrokerttl";
/// The extension that records when a broker received an event (stamped likewise).
pub const ARRIVAL_EXTENSION: &str = "knativearrivaltime";

/// A validation failure inside one resource: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field, such as `spec.delivery.retry`.
    pub field: String,
    /// What is wrong, in lowercase.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `metadata` of every resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The resource's name: a DNS-1123 label (lowercase letters, digits and `-`, at most 63).
    pub name: String,
    /// The namespace; `default` when omitted.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Free-form labels, kept and shown, not interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations, kept and shown, not interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

pub(crate) fn dns_label(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "`{value}` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
            ),
        ))
    }
}

impl ObjectMeta {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        dns_label("metadata.name", &self.name)?;
        dns_label("metadata.namespace", &self.namespace)
    }
}

/// A duration, written as ISO 8601 (`PT0.5S`, `PT10M`, `P1D`, Knative's form) or as a number
/// with a unit (`500ms`, `10s`, `5m`, `2h`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// Parses either accepted form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let err = || {
            format!(
                "`{text}` is not a duration: use ISO 8601 such as `PT0.5S` or `P1D`, or a number with a unit such as `500ms`, `10s`, `5m`, `2h`, `7d`"
            )
        };
        if let Some(rest) = t.strip_prefix('P').or_else(|| t.strip_prefix('p')) {
            let mut total = 0f64;
            let mut in_time = false;
            let mut num = String::new();
            let mut any = false;
            for c in rest.chars() {
                match c.to_ascii_uppercase() {
                    'T' if !in_time && num.is_empty() => in_time = true,
                    d if d.is_ascii_digit() || d == '.' || d == ',' => {
                        num.push(if d == ',' { '.' } else { d });
                    }
                    unit => {
                        let n: f64 = num.parse().map_err(|_| err())?;
                        num.clear();
                        any = true;
                        total += n * match (unit, in_time) {
                            ('W', false) => 604_800.0,
                            ('D', false) => 86_400.0,
                            ('H', true) => 3_600.0,
                            ('M', true) => 60.0,
                            ('S', true) => 1.0,
                            _ => return Err(err()),
                        };
                    }
                }
            }
            if !num.is_empty() || !any {
                return Err(err());
            }
            return StdDuration::try_from_secs_f64(total)
                .map(Duration)
                .map_err(|_| err());
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (n, unit) = t.split_at(split);
        let n: f64 = n.parse().map_err(|_| err())?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(err()),
        };
        StdDuration::try_from_secs_f64(secs)
            .map(Duration)
            .map_err(|_| err())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "PT{}S", ms / 1000)
        } else {
            write!(f, "PT{}.{:03}S", ms / 1000, ms % 1000)
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A reference to another resource (Knative `KReference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KReference {
    /// `apiVersion` of the referenced resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `kind` of the referenced resource: `Sink`, `Broker`, `KafkaSink` or `NatsSink`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace; the referring resource's namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where events go (Knative `Destination`): a `uri`, or a `ref` to a named resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    /// Reference to a `Sink`, `KafkaSink`, `NatsSink` (or a `Broker`) defined in the
    /// configuration.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// An absolute `http` or `https` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Knative's CA certificates for TLS to the destination: not supported yet.
    #[serde(default, rename = "CACerts", skip_serializing)]
    pub ca_certs: Option<serde_json::Value>,
    /// Knative's OIDC audience: not supported.
    #[serde(default, skip_serializing)]
    pub audience: Option<serde_json::Value>,
}

fn unsupported(field: &str, what: &str) -> FieldError {
    FieldError::new(
        field,
        format!("this Knative field is not supported by switchyard ({what}); remove it"),
    )
}

/// Checks an absolute `http`/`https` URL.
pub fn validate_http_url(field: &str, uri: &str) -> Result<(), FieldError> {
    let lower = uri.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !uri.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(FieldError::new(
            field,
            format!("`{uri}` is not an absolute http:// or https:// URL"),
        )),
    }
}

impl Destination {
    pub(crate) fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.ca_certs.is_some() {
            return Err(unsupported(
                &format!("{field}.CACerts"),
                "custom CA certificates",
            ));
        }
        if self.audience.is_some() {
            return Err(unsupported(&format!("{field}.audience"), "OIDC audiences"));
        }
        match (&self.reference, &self.uri) {
            (Some(_), Some(_)) => Err(FieldError::new(
                field,
                "give either `ref` or `uri`, not both",
            )),
            (None, None) => Err(FieldError::new(field, "give `ref` or `uri`")),
            (None, Some(uri)) => validate_http_url(&format!("{field}.uri"), uri),
            (Some(r), None) => {
                if !matches!(
                    r.kind.as_str(),
                    "Sink" | "Broker" | "KafkaSink" | "NatsSink"
                ) {
                    return Err(FieldError::new(
                        format!("{field}.ref.kind"),
                        format!(
                            "`{}` cannot be referenced: use `Sink`, `Broker`, `KafkaSink` or `NatsSink`",
                            r.kind
                        ),
                    ));
                }
                dns_label(&format!("{field}.ref.name"), &r.name)
            }
        }
    }
}

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `backoffDelay · 2^(k-1)` before retry k.
    #[default]
    Exponential,
    /// `backoffDelay · k` before retry k.
    Linear,
}

/// The content mode of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryFormat {
    /// Binary mode: attributes in `ce-` headers.
    #[default]
    Binary,
    /// Structured mode: `application/cloudevents+json`.
    Json,
}

/// How events are delivered and retried (Knative `DeliverySpec`, plus `backoffMax` and
/// `jitter`). A Trigger's `delivery` replaces its Broker's as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Where events go after the last failed attempt (they are also kept in the built-in
    /// dead-letter store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    /// Retries after the first attempt (0 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i32>,
    /// `exponential` (default) or `linear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// The base delay of the backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<Duration>,
    /// The longest delay between two attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<Duration>,
    /// Random spread of each delay, as a fraction from 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Bound on each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// The longest `Retry-After` that is honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<Duration>,
    /// `binary` (default) or `json` (structured mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DeliveryFormat>,
}

impl DeliverySpec {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        if let Some(dls) = &self.dead_letter_sink {
            dls.validate(&format!("{field}.deadLetterSink"))?;
        }
        if self.retry.is_some_and(|r| r < 0) {
            return Err(FieldError::new(
                format!("{field}.retry"),
                "must be 0 or more",
            ));
        }
        if self.jitter.is_some_and(|j| !(0.0..=1.0).contains(&j)) {
            return Err(FieldError::new(
                format!("{field}.jitter"),
                "must be a fraction from 0 to 1",
            ));
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(FieldError::new(
                format!("{field}.timeout"),
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// How long a broker keeps events (our extension of the Broker spec). Retention never deletes
/// an event that a trigger has not finished with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retention {
    /// Events older than this may be deleted (default 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// When the broker's log is larger than this, the oldest events may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// `spec` of a Broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Knative's reference to a broker-class ConfigMap: not supported.
    #[serde(default, skip_serializing)]
    pub config: Option<serde_json::Value>,
    /// Delivery defaults for the broker's triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// How long events are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// `knativebrokerttl` given to events that arrive without one (default 255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i32>,
    /// What the broker does with the EventTypes that reference it, for events from ingress,
    /// sources and replies: `off` (default),
    /// `record`, `warn` or `enforce` (see `spec/eventtypes.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<EventTypeMode>,
    /// With `eventTypes: enforce`, also refuse events whose type no EventType of this broker
    /// registers (the "enforce: strict"). Only allowed with `enforce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types_strict: Option<bool>,
}

/// What a broker does with event types (`spec.eventTypes`), for events from ingress, sources
/// and replies alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventTypeMode {
    /// Nothing: EventTypes are only listed.
    #[default]
    Off,
    /// Register every new (type, source) stored, with first/last seen and counts.
    Record,
    /// Validate event data against its type's schema; store failures anyway, count and log them.
    Warn,
    /// Validate event data against its type's schema; refuse failures with 400.
    Enforce,
}

/// A Broker: an ingress that stores events durably, and the triggers that read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Broker {
    /// Identity of the broker.
    pub metadata: ObjectMeta,
    /// What the broker does.
    #[serde(default)]
    pub spec: BrokerSpec,
}

impl Broker {
    fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        if self.spec.config.is_some() {
            return Err(unsupported(
                "spec.config",
                "broker-class ConfigMaps; configure the broker in its spec",
            ));
        }
        if let Some(d) = &self.spec.delivery {
            d.validate("spec.delivery")?;
        }
        if self.spec.ttl.is_some_and(|t| t <= 0) {
            return Err(FieldError::new("spec.ttl", "must be 1 or more"));
        }
        if self.spec.event_types_strict == Some(true)
            && self.event_type_mode() != EventTypeMode::Enforce
        {
            return Err(FieldError::new(
                "spec.eventTypesStrict",
                "only applies with `eventTypes: enforce`; set that too or remove this field",
            ));
        }
        Ok(())
    }

    /// The TTL given to events that arrive without one.
    pub fn ttl(&self) -> i32 {
        self.spec.ttl.unwrap_or(DEFAULT_BROKER_TTL)
    }

    /// What the broker does with event types (`off` when unset).
    pub fn event_type_mode(&self) -> EventTypeMode {
        self.spec.event_types.unwrap_or_default()
    }

    /// Whether unregistered types are refused (`eventTypesStrict` with `enforce`).
    pub fn event_types_strict(&self) -> bool {
        self.spec.event_types_strict.unwrap_or(false)
    }
}

/// One filter of the CloudEvents Subscriptions API dialects (Knative `spec.filters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SubscriptionsApiFilter {
    /// Every named attribute equals the value exactly.
    Exact(BTreeMap<String, String>),
    /// Every named attribute starts with the value.
    Prefix(BTreeMap<String, String>),
    /// Every named attribute ends with the value.
    Suffix(BTreeMap<String, String>),
    /// All nested filters pass.
    All(Vec<SubscriptionsApiFilter>),
    /// At least one nested filter passes.
    Any(Vec<SubscriptionsApiFilter>),
    /// The nested filter does not pass.
    Not(Box<SubscriptionsApiFilter>),
    /// A CESQL expression (Knative's name for the dialect).
    Cesql(String),
    /// A CESQL expression (the Subscriptions API's name for the dialect).
    Sql(String),
}

impl SubscriptionsApiFilter {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        let names = |m: &BTreeMap<String, String>, dialect: &str| {
            if m.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.{dialect}"),
                    "needs at least one attribute",
                ));
            }
            for name in m.keys() {
                attribute_name(&format!("{field}.{dialect}.{name}"), name)?;
            }
            Ok(())
        };
        match self {
            SubscriptionsApiFilter::Exact(m) => names(m, "exact"),
            SubscriptionsApiFilter::Prefix(m) => names(m, "prefix"),
            SubscriptionsApiFilter::Suffix(m) => names(m, "suffix"),
            SubscriptionsApiFilter::All(v) | SubscriptionsApiFilter::Any(v) => {
                let dialect = if matches!(self, SubscriptionsApiFilter::All(_)) {
                    "all"
                } else {
                    "any"
                };
                v.iter()
                    .enumerate()
                    .try_for_each(|(i, f)| f.validate(&format!("{field}.{dialect}[{i}]")))
            }
            SubscriptionsApiFilter::Not(f) => f.validate(&format!("{field}.not")),
            SubscriptionsApiFilter::Cesql(e) | SubscriptionsApiFilter::Sql(e) => {
                if e.trim().is_empty() {
                    Err(FieldError::new(field, "the expression is empty"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

fn attribute_name(field: &str, name: &str) -> Result<(), FieldError> {
    crate::validate::extension_name(name)
        .or_else(|e| if name == "data" { Ok(()) } else { Err(e) })
        .map_err(|_| {
            FieldError::new(
                field,
                format!("`{name}` is not a CloudEvents attribute name (1 to 20 of a-z, 0-9)"),
            )
        })
}

/// Knative's legacy `spec.filter`: exact attribute matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerFilter {
    /// Attribute name → required value; `""` means "present with any non-empty value".
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// How a trigger orders its deliveries (our extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Deliveries run concurrently, bounded by `maxInFlight`.
    #[default]
    Unordered,
    /// One event at a time per `partitionkey` (per broker when the event has none).
    Ordered,
}

/// `spec` of a Trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Name of the broker in the trigger's namespace.
    pub broker: String,
    /// Knative's `brokerRef` (a broker in another namespace): not supported.
    #[serde(default, skip_serializing)]
    pub broker_ref: Option<serde_json::Value>,
    /// Legacy exact-match filter; ignored when `filters` is non-empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TriggerFilter>,
    /// Subscriptions API filters, all of which must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<SubscriptionsApiFilter>,
    /// Where matching events are delivered.
    pub subscriber: Destination,
    /// Delivery settings; replace the broker's `spec.delivery` as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// `unordered` (default) or `ordered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
    /// The most deliveries in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// The most deliveries started per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
}

/// A Trigger: a filter over a broker's events and the subscriber that receives the matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// Identity of the trigger.
    pub metadata: ObjectMeta,
    /// What the trigger does.
    pub spec: TriggerSpec,
}

impl Trigger {
    fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        if spec.broker_ref.is_some() {
            return Err(unsupported(
                "spec.brokerRef",
                "brokers in other namespaces; use `spec.broker`",
            ));
        }
        dns_label("spec.broker", &spec.broker)?;
        if let Some(filter) = &spec.filter {
            for name in filter.attributes.keys() {
                attribute_name(&format!("spec.filter.attributes.{name}"), name)?;
            }
        }
        for (i, f) in spec.filters.iter().enumerate() {
            f.validate(&format!("spec.filters[{i}]"))?;
        }
        spec.subscriber.validate("spec.subscriber")?;
        if let Some(d) = &spec.delivery {
            d.validate("spec.delivery")?;
        }
        if spec.max_in_flight == Some(0) {
            return Err(FieldError::new("spec.maxInFlight", "must be 1 or more"));
        }
        if spec
            .rate_limit
            .is_some_and(|r| r.is_nan() || !(0.001..=1_000_000.0).contains(&r))
        {
            return Err(FieldError::new(
                "spec.rateLimit",
                "must be from 0.001 to 1000000 events per second",
            ));
        }
        Ok(())
    }
}

/// `spec` of a Sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SinkSpec {
    /// The sink's absolute `http`/`https` URL.
    pub uri: String,
}

/// A Sink (our kind): a named HTTP endpoint that triggers and dead-letter settings refer to
/// with `ref`, so its URL is written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sink {
    /// Identity of the sink.
    pub metadata: ObjectMeta,
    /// Where it is.
    pub spec: SinkSpec,
}

impl Sink {
    fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        validate_http_url("spec.uri", &self.spec.uri)
    }
}

/// `spec` of an EventType (Knative `eventing.knative.dev/v1beta2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventTypeSpec {
    /// The CloudEvents `type` this EventType describes (matched exactly).
    #[serde(rename = "type")]
    pub ty: String,
    /// The CloudEvents `source`: matched exactly, or as a prefix when it ends with `*`; any
    /// source when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An absolute URI naming the schema of the data: what events give as `dataschema`, and
    /// what other schemas `$ref`. Never fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The JSON Schema (draft 7 or 2020-12) of the data, inline: a mapping, or a string
    /// holding JSON (Knative's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_data: Option<serde_json::Value>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The Broker whose ingress this EventType applies to; without one it is only listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
}

/// An EventType: a kind of event a broker takes, and the schema of its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventType {
    /// Identity of the event type.
    pub metadata: ObjectMeta,
    /// What it describes.
    pub spec: EventTypeSpec,
}

impl EventType {
    fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        if spec.ty.trim().is_empty() {
            return Err(FieldError::new("spec.type", "must not be empty"));
        }
        if let Some(source) = &spec.source
            && source.is_empty()
        {
            return Err(FieldError::new(
                "spec.source",
                "must not be empty; leave it out to match any source",
            ));
        }
        if let Some(uri) = &spec.schema {
            crate::validate::absolute_uri("schema", uri)
                .map_err(|e| FieldError::new("spec.schema", e.to_string()))?;
        }
        self.schema_value()
            .map_err(|m| FieldError::new("spec.schemaData", m))?;
        if let Some(r) = &spec.reference {
            if r.kind != "Broker" {
                return Err(FieldError::new(
                    "spec.reference.kind",
                    format!("`{}` cannot be referenced: use `Broker`", r.kind),
                ));
            }
            dns_label("spec.reference.name", &r.name)?;
            if let Some(ns) = &r.namespace {
                dns_label("spec.reference.namespace", ns)?;
            }
        }
        Ok(())
    }

    /// The inline schema as JSON: `schemaData` as given, or parsed when it is a string.
    pub fn schema_value(&self) -> Result<Option<serde_json::Value>, String> {
        match &self.spec.schema_data {
            None => Ok(None),
            Some(serde_json::Value::String(text)) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| format!("the string is not JSON: {e}")),
            Some(v @ (serde_json::Value::Object(_) | serde_json::Value::Bool(_))) => {
                Ok(Some(v.clone()))
            }
            Some(_) => {
                Err("must be a JSON Schema: a mapping, a boolean, or a string holding JSON".into())
            }
        }
    }

    /// The referenced broker as (namespace, name), if any.
    pub fn broker(&self) -> Option<(String, String)> {
        self.spec.reference.as_ref().map(|r| {
            (
                r.namespace
                    .clone()
                    .unwrap_or_else(|| self.metadata.namespace.clone()),
                r.name.clone(),
            )
        })
    }

    /// Whether an event `source` matches `spec.source`.
    pub fn source_matches(&self, source: &str) -> bool {
        match self.spec.source.as_deref() {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => source.starts_with(prefix),
                None => source == p,
            },
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_both_forms() {
        let s = |t: &str| Duration::parse(t).map(|d| d.0);
        assert_eq!(s("PT0.2S"), Ok(StdDuration::from_millis(200)));
        assert_eq!(s("PT1M30S"), Ok(StdDuration::from_secs(90)));
        assert_eq!(s("P1D"), Ok(StdDuration::from_secs(86400)));
        assert_eq!(s("P1DT1H"), Ok(StdDuration::from_secs(90000)));
        assert_eq!(s("500ms"), Ok(StdDuration::from_millis(500)));
        assert_eq!(s("7d"), Ok(StdDuration::from_secs(7 * 86400)));
        for bad in ["", "P", "PT", "PT1", "1", "10x", "P1S", "PT-1S", "abc"] {
            assert!(s(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Duration(StdDuration::from_millis(1500)).to_string(),
            "PT1.500S"
        );
    }
}
