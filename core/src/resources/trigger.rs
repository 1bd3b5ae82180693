//! The Trigger (filters, Subscriptions API dialects, ordering) and the Sink.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

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
    pub(crate) fn validate(&self, field: &str) -> Result<(), FieldError> {
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

/// `spec.batch` of a Trigger: how many waiting events one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchSpec {
    /// The most events in one request (1 to 1,000).
    pub max_events: u32,
    /// The most bytes of one request's body (at least 1,024; default 1 MiB, a Switchyard
    /// ingress's default `--max-body-bytes`); a single event larger than this goes alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl BatchSpec {
    /// The body size a batch keeps within when `maxBytes` is not given.
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
}

/// `spec` of a Trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Name of the broker in the trigger's namespace (required; defaulted only so that a
    /// `brokerRef` in its place gets its own error).
    #[serde(default)]
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
    /// Send the events waiting for the subscriber several to a request, as a JSON batch
    /// (our extension; ordered triggers with an HTTP subscriber only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
    /// Where replies go. Only the Triggers a Sequence or Parallel adds set it (Knative's
    /// Trigger has no such field): `None` stores them in the Trigger's own Broker.
    #[serde(skip)]
    pub reply: Option<ReplyTo>,
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
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        if spec.broker_ref.is_some() {
            return Err(unsupported(
                "spec.brokerRef",
                "brokers in other namespaces; use `spec.broker`",
            ));
        }
        if spec.broker.is_empty() {
            return Err(FieldError::new("spec", "missing field `broker`"));
        }
        dns_subdomain("spec.broker", &spec.broker)?;
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
        if let Some(batch) = &spec.batch {
            if !(1..=1000).contains(&batch.max_events) {
                return Err(FieldError::new(
                    "spec.batch.maxEvents",
                    "must be from 1 to 1000",
                ));
            }
            if batch.max_bytes.is_some_and(|b| b < 1024) {
                return Err(FieldError::new(
                    "spec.batch.maxBytes",
                    "must be 1024 or more",
                ));
            }
            if spec.ordering != Some(Ordering::Ordered) {
                return Err(FieldError::new(
                    "spec.batch",
                    "needs `ordering: ordered` (an unordered trigger already sends up to \
                     `maxInFlight` events at once)",
                ));
            }
        }
        Ok(())
    }
}

/// Where a Trigger's replies go, when not to its own Broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// Into this Broker, as (namespace, name).
    Broker(String, String),
    /// Nowhere: the flow has no `reply`.
    Discard,
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
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        validate_http_url("spec.uri", &self.spec.uri)
    }
}
