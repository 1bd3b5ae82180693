//! Sequences and Parallels become Brokers and Triggers at load, named as Knative names the
//! channels and subscriptions it makes for them, so each step is stored, delivered, retried
//! and dead-lettered like any Trigger, and `switchyard dlq` shows a failed step.
//!
//! - Sequence `s`: a Broker `s-kn-sequence-{i}` per step with a Trigger of the same name to
//!   the step; step i's replies go to Broker i+1, the last step's to the `reply`.
//! - Parallel `p`: the Broker `p-kn-parallel` takes the events; per branch i, a Trigger
//!   `p-kn-parallel-filter-{i}` to the filter, whose replies go to the Broker
//!   `p-kn-parallel-{i}`, whose Trigger `p-kn-parallel-{i}` delivers to the subscriber (without
//!   a filter, that Trigger is on `p-kn-parallel`); the subscriber's replies go to the
//!   branch's `reply`, or the Parallel's.
//! - A `reply` that is a Broker receives the replies directly; any other destination gets a
//!   Broker and a Trigger `{prefix}-reply` that deliver to it; no `reply` drops them.

use std::collections::BTreeMap;

use crate::config::{Config, ConfigError, Origins};
use crate::resources::{
    Broker, DeliverySpec, Destination, ObjectMeta, ReplyTo, Trigger, TriggerSpec,
};

/// The label on what a flow adds: `Sequence.{name}` or `Parallel.{name}`.
pub const OWNER_LABEL: &str = "flows.switchyard.dev/owner";

/// For a Trigger a flow added, the flow (`Kind {ns}/name`, `{ns}` left for the caller) and
/// the path in the flow that the Trigger's `field` stands for: a Sequence's
/// `…-kn-sequence-1` and `spec.subscriber.ref` is `spec.steps[1].ref`.
pub(crate) fn place(trigger: &Trigger, field: &str) -> Option<(String, String)> {
    let owner = trigger.metadata.labels.get(OWNER_LABEL)?;
    let (kind, flow) = owner.split_once('.')?;
    let rest = trigger.metadata.name.strip_prefix(flow)?;
    // (the path of the destination, the path its delivery settings come from)
    let (destination, delivery) = match kind {
        "Sequence" => match rest.strip_prefix("-kn-sequence-")? {
            "reply" => ("spec.reply".to_owned(), "spec".to_owned()),
            i => (format!("spec.steps[{i}]"), format!("spec.steps[{i}]")),
        },
        "Parallel" => {
            let rest = rest.strip_prefix("-kn-parallel")?;
            if rest == "-reply" {
                ("spec.reply".to_owned(), "spec".to_owned())
            } else if let Some(i) = rest.strip_prefix("-filter-") {
                (
                    format!("spec.branches[{i}].filter"),
                    format!("spec.branches[{i}]"),
                )
            } else {
                let rest = rest.strip_prefix('-')?;
                match rest.strip_suffix("-reply") {
                    Some(i) => (
                        format!("spec.branches[{i}].reply"),
                        format!("spec.branches[{i}]"),
                    ),
                    None => (
                        format!("spec.branches[{rest}].subscriber"),
                        format!("spec.branches[{rest}]"),
                    ),
                }
            }
        }
        _ => return None,
    };
    let path = if let Some(f) = field.strip_prefix("spec.subscriber") {
        format!("{destination}{f}")
    } else if let Some(f) = field.strip_prefix("spec.delivery") {
        format!("{delivery}.delivery{f}")
    } else {
        destination
    };
    Some((format!("{kind} {{ns}}/{flow}"), path))
}

/// The Broker a Sequence's address resolves to: its first step's.
pub fn sequence_ingress(name: &str) -> String {
    format!("{name}-kn-sequence-0")
}

/// The Broker a Parallel's address resolves to.
pub fn parallel_ingress(name: &str) -> String {
    format!("{name}-kn-parallel")
}

/// What one flow adds, and where it came from.
struct Builder {
    kind: &'static str,
    ns: String,
    name: String,
    file: String,
    brokers: Vec<String>,
    triggers: Vec<(String, TriggerSpec)>,
    not_ready: Vec<ConfigError>,
}

impl Builder {
    fn error(&self, field: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            resource: Some(format!("{} {}/{}", self.kind, self.ns, self.name)),
            field: Some(field.to_owned()),
            message,
        }
    }

    fn trigger(
        &mut self,
        name: String,
        broker: String,
        subscriber: Destination,
        delivery: Option<DeliverySpec>,
        reply: ReplyTo,
    ) {
        self.triggers.push((
            name,
            TriggerSpec {
                broker,
                broker_ref: None,
                filter: None,
                filters: Vec::new(),
                subscriber,
                delivery,
                ordering: None,
                max_in_flight: None,
                rate_limit: None,
                batch: None,
                reply: Some(reply),
            },
        ));
    }

    /// Where replies sent to `dest` go ([`ReplyTo`]); `prefix` names the Broker and Trigger a
    /// destination that is not a Broker gets. `field` names `dest` in a not-ready note.
    fn reply_to(
        &mut self,
        existing: &BTreeMap<(String, String), Broker>,
        dest: Option<&Destination>,
        prefix: &str,
        field: &str,
    ) -> ReplyTo {
        let Some(dest) = dest else {
            return ReplyTo::Discard;
        };
        if let Some(r) = dest
            .reference
            .as_ref()
            .filter(|r| r.kind == "Broker" && dest.uri.is_none())
        {
            let ns = r.namespace.clone().unwrap_or_else(|| self.ns.clone());
            if !existing.contains_key(&(ns.clone(), r.name.clone())) {
                let note = self.error(
                    &format!("{field}.ref"),
                    format!(
                        "no Broker `{}` in namespace `{ns}` (BrokerDoesNotExist): replies are dropped until the Broker is in the configuration",
                        r.name
                    ),
                );
                self.not_ready.push(note);
                return ReplyTo::Discard;
            }
            return ReplyTo::Broker(ns, r.name.clone());
        }
        let broker = format!("{prefix}-reply");
        self.brokers.push(broker.clone());
        self.trigger(
            broker.clone(),
            broker.clone(),
            dest.clone(),
            None,
            ReplyTo::Discard,
        );
        ReplyTo::Broker(self.ns.clone(), broker)
    }

    /// Adds what was built to `config`; a name that is taken or too long is the flow's error.
    fn finish(
        self,
        config: &mut Config,
        origin: &mut Origins,
    ) -> Result<Vec<ConfigError>, ConfigError> {
        let labels = BTreeMap::from([(
            OWNER_LABEL.to_owned(),
            format!("{}.{}", self.kind, self.name),
        )]);
        let meta = |name: &str| ObjectMeta {
            name: name.to_owned(),
            namespace: self.ns.clone(),
            labels: labels.clone(),
            annotations: BTreeMap::new(),
        };
        for name in self
            .brokers
            .iter()
            .chain(self.triggers.iter().map(|(n, _)| n))
        {
            meta(name).validate().map_err(|e| {
                self.error(
                    "metadata.name",
                    format!(
                        "the name is too long for the Brokers and Triggers it needs (`{name}`: {})",
                        e.message
                    ),
                )
            })?;
        }
        for name in &self.brokers {
            let key = (self.ns.clone(), name.clone());
            if config.brokers.contains_key(&key) {
                return Err(self.error(
                    "metadata.name",
                    format!("needs a Broker named `{name}`, and one exists already"),
                ));
            }
            origin.insert(("Broker", key.0.clone(), key.1.clone()), self.file.clone());
            config.brokers.insert(
                key,
                Broker {
                    metadata: meta(name),
                    spec: Default::default(),
                },
            );
        }
        for (name, spec) in self.triggers {
            let key = (self.ns.clone(), name.clone());
            if config.triggers.contains_key(&key) {
                return Err(ConfigError {
                    file: self.file.clone(),
                    resource: Some(format!("{} {}/{}", self.kind, self.ns, self.name)),
                    field: Some("metadata.name".into()),
                    message: format!("needs a Trigger named `{name}`, and one exists already"),
                });
            }
            origin.insert(("Trigger", key.0.clone(), key.1.clone()), self.file.clone());
            config.triggers.insert(
                key,
                Trigger {
                    metadata: meta(&name),
                    spec,
                },
            );
        }
        Ok(self.not_ready)
    }
}

/// Adds the Brokers and Triggers of every Sequence and Parallel; what is not ready.
pub(crate) fn add_flows(
    config: &mut Config,
    origin: &mut Origins,
) -> Result<Vec<ConfigError>, ConfigError> {
    let mut not_ready = Vec::new();
    let file_of = |kind: &'static str, ns: &str, name: &str, origin: &Origins| {
        origin
            .get(&(kind, ns.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_default()
    };
    let sequences: Vec<_> = config.sequences.clone().into_iter().collect();
    for ((ns, name), seq) in sequences {
        let mut b = Builder {
            kind: "Sequence",
            file: file_of("Sequence", &ns, &name, origin),
            ns,
            name: name.clone(),
            brokers: Vec::new(),
            triggers: Vec::new(),
            not_ready: Vec::new(),
        };
        let Some(last) = seq.spec.steps.len().checked_sub(1) else {
            continue; // validation refuses a Sequence without steps
        };
        let reply = b.reply_to(
            &config.brokers,
            seq.spec.reply.as_ref(),
            &format!("{name}-kn-sequence"),
            "spec.reply",
        );
        for (i, step) in seq.spec.steps.iter().enumerate() {
            let broker = format!("{name}-kn-sequence-{i}");
            let to = if i == last {
                reply.clone()
            } else {
                ReplyTo::Broker(b.ns.clone(), format!("{name}-kn-sequence-{}", i + 1))
            };
            b.brokers.push(broker.clone());
            b.trigger(
                broker.clone(),
                broker,
                step.destination(),
                step.delivery.clone(),
                to,
            );
        }
        not_ready.extend(b.finish(config, origin)?);
    }
    let parallels: Vec<_> = config.parallels.clone().into_iter().collect();
    for ((ns, name), par) in parallels {
        let mut b = Builder {
            kind: "Parallel",
            file: file_of("Parallel", &ns, &name, origin),
            ns,
            name: name.clone(),
            brokers: Vec::new(),
            triggers: Vec::new(),
            not_ready: Vec::new(),
        };
        let ingress = parallel_ingress(&name);
        b.brokers.push(ingress.clone());
        let shared = b.reply_to(
            &config.brokers,
            par.spec.reply.as_ref(),
            &format!("{name}-kn-parallel"),
            "spec.reply",
        );
        for (i, branch) in par.spec.branches.iter().enumerate() {
            let reply = match &branch.reply {
                Some(r) => b.reply_to(
                    &config.brokers,
                    Some(r),
                    &format!("{name}-kn-parallel-{i}"),
                    &format!("spec.branches[{i}].reply"),
                ),
                None => shared.clone(),
            };
            let subscriber_broker = match &branch.filter {
                Some(filter) => {
                    let passed = format!("{name}-kn-parallel-{i}");
                    b.brokers.push(passed.clone());
                    b.trigger(
                        format!("{name}-kn-parallel-filter-{i}"),
                        ingress.clone(),
                        filter.clone(),
                        branch.delivery.clone(),
                        ReplyTo::Broker(b.ns.clone(), passed.clone()),
                    );
                    passed
                }
                None => ingress.clone(),
            };
            b.trigger(
                format!("{name}-kn-parallel-{i}"),
                subscriber_broker,
                branch.subscriber.clone(),
                branch.delivery.clone(),
                reply,
            );
        }
        not_ready.extend(b.finish(config, origin)?);
    }
    Ok(not_ready)
}
