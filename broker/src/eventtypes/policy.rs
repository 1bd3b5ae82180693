//! [`EventTypePolicy`]: each broker's `eventTypes` setting, applied alike by ingress, every
//! source and the dispatcher (for replies) through `crate::append`, refusing with a typed
//! [`EventTypeRefusal`].

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_core::CloudEvent;
use switchyard_core::config::{Config, ConfigError};
use switchyard_core::id::BrokerId;
use switchyard_core::resources::EventTypeMode;

use crate::log::EventLog;
use crate::metrics as m;

use super::discovery::Discovery;
use super::registry::{Check, Registered, Registry, Violation};

/// A broker's `eventTypes` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerMode {
    /// What is done with event types (`spec.eventTypes`).
    pub mode: EventTypeMode,
    /// With `enforce`: refuse types no EventType registers (`spec.eventTypesStrict`).
    pub strict: bool,
}

/// The brokers' `eventTypes` settings, applied alike by broker ingress, every source and the
/// dispatcher (for replies) before events are stored: [`check`](Self::check) before the append (`warn`, `enforce`),
/// [`record`](Self::record) after it (`record`).
#[derive(Debug, Default)]
pub struct EventTypePolicy {
    registry: Registry,
    modes: HashMap<String, BrokerMode>,
    discovery: Arc<Discovery>,
}

impl EventTypePolicy {
    /// Compiles the EventTypes of `config` and takes each broker's mode; discovered types go
    /// to `discovery`.
    pub fn new(config: &Config, discovery: Arc<Discovery>) -> Result<Self, ConfigError> {
        let modes = config
            .brokers
            .iter()
            .map(|((ns, name), b)| {
                let mode = BrokerMode {
                    mode: b.event_type_mode(),
                    strict: b.event_types_strict(),
                };
                (switchyard_core::id::join(ns, name), mode)
            })
            .collect();
        Ok(EventTypePolicy {
            registry: Registry::compile(config)?,
            modes,
            discovery,
        })
    }

    /// The configured EventTypes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The setting of broker `namespace/name` (`off` for one that does not exist).
    pub fn mode(&self, broker: &str) -> BrokerMode {
        self.modes.get(broker).copied().unwrap_or_default()
    }

    /// Checks events bound for `broker` against their EventTypes (modes `warn` and
    /// `enforce`; the others pass everything untouched). In `enforce` the first failing event
    /// refuses them all: the problem (400) says which one of several and lists each
    /// violation. In `warn` failures are counted and logged. Counts
    /// `switchyard_schema_validations_total`.
    pub fn check(
        &self,
        broker: &str,
        events: &[CloudEvent],
    ) -> Result<(), (usize, EventTypeRefusal)> {
        self.judge(broker, events, true)
    }

    /// What [`check`](Self::check) would answer, without counting or logging anything: for
    /// checks at load time of events that are not being stored.
    pub fn refusal(
        &self,
        broker: &str,
        events: &[CloudEvent],
    ) -> Result<(), (usize, EventTypeRefusal)> {
        self.judge(broker, events, false)
    }

    fn judge(
        &self,
        broker: &str,
        events: &[CloudEvent],
        report: bool,
    ) -> Result<(), (usize, EventTypeRefusal)> {
        let BrokerMode { mode, strict } = self.mode(broker);
        if !matches!(mode, EventTypeMode::Warn | EventTypeMode::Enforce) {
            return Ok(());
        }
        let enforce = mode == EventTypeMode::Enforce;
        let id = BrokerId::parse(broker).unwrap_or_else(|_| BrokerId::new(broker, ""));
        let (namespace, name) = (id.namespace(), id.name());
        // Counted once the batch's fate is known: only a batch accepted for storing may add
        // `event_type` labels (an event matched by its `dataschema` carries a type of the
        // producer's, and a refused batch must add none, whichever of its events passed).
        let mut counted: Vec<(&str, bool)> = Vec::new();
        let mut refusal = None;
        for (index, event) in events.iter().enumerate() {
            match self.registry.check(broker, event) {
                Check::NotRegistered => {
                    if enforce && strict {
                        refusal = Some((index, unregistered(event, broker)));
                        break;
                    }
                }
                Check::Unchecked => {}
                Check::Passed(_) => counted.push((&event.ty, true)),
                Check::Failed(registered, violations) => {
                    counted.push((&event.ty, false));
                    if enforce {
                        refusal = Some((index, schema_violation(event, registered, violations)));
                        break;
                    }
                    if !report {
                        continue;
                    }
                    tracing::warn!(
                        broker,
                        event_type = %event.ty,
                        event_id = %event.id,
                        event_type_resource = %registered.id(),
                        violations = violations.len(),
                        first = %violations.first().map(|v| format!("{}: {}", v.pointer, v.message)).unwrap_or_default(),
                        "event data does not match its schema (stored anyway: eventTypes is warn)"
                    );
                }
            }
        }
        if report {
            for (ty, passed) in counted {
                m::count_validation(broker, (namespace, name), ty, passed, refusal.is_none());
            }
        }
        match refusal {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// After events of `broker` were stored (mode `record`; nothing otherwise): counts their
    /// (type, source) pairs, persisting a pair seen for the first time at once. `now` is
    /// their arrival time (RFC 3339). A failed write is logged: the pair is written again at
    /// the next flush of the counts.
    pub async fn record<'a>(
        &self,
        log: &dyn EventLog,
        broker: &str,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
        now: &str,
    ) {
        if self.mode(broker).mode != EventTypeMode::Record {
            return;
        }
        let ops = self.discovery.observe(broker, pairs, now);
        if !ops.is_empty()
            && let Err(e) = log.write(ops).await
        {
            tracing::warn!(error = %e, broker, "cannot persist a discovered event type");
        }
    }
}

/// Why a broker's `eventTypes` refuse an event (`enforce`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventTypeRefusal {
    /// Its data breaks the schema of the EventType that registers it.
    #[error("{detail}")]
    SchemaViolation {
        /// What is wrong, naming the event, the EventType and the first violation.
        detail: String,
        /// Every violation.
        violations: Vec<Violation>,
    },
    /// No EventType registers it, and the broker refuses unregistered types (strict).
    #[error("{detail}")]
    Unregistered {
        /// What is wrong, naming the type, the source and the broker.
        detail: String,
    },
}

fn schema_violation(
    event: &CloudEvent,
    registered: &Registered,
    violations: Vec<Violation>,
) -> EventTypeRefusal {
    let first = violations
        .first()
        .map(|v| {
            let at = if v.pointer.is_empty() {
                "the data".to_owned()
            } else {
                format!("`{}`", v.pointer)
            };
            format!("{at}: {}", v.message)
        })
        .unwrap_or_default();
    EventTypeRefusal::SchemaViolation {
        detail: format!(
            "the data of event `{}` (type `{}`) does not match the schema of EventType {}: {} violation(s), first {first}",
            event.id,
            event.ty,
            registered.id(),
            violations.len()
        ),
        violations,
    }
}

fn unregistered(event: &CloudEvent, broker: &str) -> EventTypeRefusal {
    EventTypeRefusal::Unregistered {
        detail: format!(
            "no EventType of broker {broker} registers type `{}` from source `{}`, and the broker refuses unregistered types (eventTypesStrict)",
            event.ty, event.source
        ),
    }
}
