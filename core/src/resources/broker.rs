//! The Broker: its spec, retention and `eventTypes` mode.

use serde::{Deserialize, Serialize};

use super::*;

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
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
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
