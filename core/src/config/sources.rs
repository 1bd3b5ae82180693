//! What a source's sink adds: a source whose sink is not a Broker gets a Broker and a
//! Trigger of its own; one whose Broker is missing is parked, not ready.

use std::collections::BTreeMap;

use super::{Config, ConfigError, Origins};
use crate::resources::{Broker, Destination, ObjectMeta, Trigger, TriggerSpec};

impl Config {
    /// Every source: (kind, namespace, name, sink).
    pub fn sources(&self) -> Vec<(&'static str, &str, &str, &Destination)> {
        let mut out: Vec<(&'static str, &str, &str, &Destination)> = Vec::new();
        for ((ns, name), s) in &self.webhook_sources {
            out.push(("WebhookSource", ns, name, &s.spec.sink));
        }
        for ((ns, name), s) in &self.ping_sources {
            out.push(("PingSource", ns, name, &s.spec.sink));
        }
        for ((ns, name), s) in &self.s3_sources {
            out.push(("S3Source", ns, name, &s.spec.sink));
        }
        for ((ns, name), s) in &self.kafka_sources {
            out.push(("KafkaSource", ns, name, &s.spec.sink));
        }
        for ((ns, name), s) in &self.nats_sources {
            out.push(("NatsSource", ns, name, &s.spec.sink));
        }
        for ((ns, name), s) in &self.mqtt_sources {
            out.push(("MqttSource", ns, name, &s.spec.sink));
        }
        out
    }

    /// The broker a source's events are stored in, as (namespace, name): the Broker its
    /// `sink.ref` names, or for any other sink (a `uri`, a ref to a Service, a Sink, …) the
    /// Broker `{kind}-{name}` (kind in lowercase) that [`Config::from_resources`] added, with
    /// a Trigger of the same name delivering to the sink.
    pub fn source_broker(kind: &str, ns: &str, name: &str, sink: &Destination) -> (String, String) {
        match &sink.reference {
            Some(r) if r.kind == "Broker" => (
                r.namespace.clone().unwrap_or_else(|| ns.to_owned()),
                r.name.clone(),
            ),
            _ => (
                ns.to_owned(),
                format!("{}-{name}", kind.to_ascii_lowercase()),
            ),
        }
    }

    /// Takes out the sources whose sink is a Broker that is not in the configuration: they
    /// load not ready (Knative's `BrokerDoesNotExist`) and do not run; what is not ready.
    pub(super) fn park_sources_without_their_broker(
        &mut self,
        origin: &Origins,
    ) -> Vec<ConfigError> {
        let parked: Vec<(&'static str, String, String, String)> = self
            .sources()
            .into_iter()
            .filter_map(|(kind, ns, name, sink)| {
                let r = sink.reference.as_ref().filter(|r| r.kind == "Broker")?;
                let bns = r.namespace.clone().unwrap_or_else(|| ns.to_owned());
                let missing = !self.brokers.contains_key(&(bns.clone(), r.name.clone()));
                missing.then(|| {
                    let why = format!("no Broker `{}` in namespace `{bns}`", r.name);
                    (kind, ns.to_owned(), name.to_owned(), why)
                })
            })
            .collect();
        let mut notes = Vec::new();
        for (kind, ns, name, why) in parked {
            let key = (ns.clone(), name.clone());
            crate::kinds::Resource::retain_in(self, crate::kinds::Group::Source, |k, other| {
                !(k == kind && *other == key)
            });
            notes.push(ConfigError {
                file: origin
                    .get(&(kind, ns.clone(), name.clone()))
                    .cloned()
                    .unwrap_or_default(),
                resource: Some(format!("{kind} {ns}/{name}")),
                field: Some("spec.sink.ref".into()),
                message: format!(
                    "{why} (BrokerDoesNotExist): the source does not run until the Broker is in the configuration"
                ),
            });
        }
        notes
    }

    /// Adds a Broker and a Trigger for each source whose sink is not a Broker (a `uri`, or a
    /// `ref` to anything else), so the source's events are stored before they are accepted
    /// and reach the sink with a trigger's retries.
    pub(super) fn add_uri_sinks(&mut self, origin: &mut Origins) -> Result<(), ConfigError> {
        let mut added = Vec::new();
        for (kind, ns, name, sink) in self.sources() {
            if sink.reference.as_ref().is_some_and(|r| r.kind == "Broker") {
                continue;
            }
            let (bns, bname) = Config::source_broker(kind, ns, name, sink);
            let file = origin
                .get(&(kind, ns.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_default();
            let err = |message: String| ConfigError {
                file: file.clone(),
                resource: Some(format!("{kind} {ns}/{name}")),
                field: Some(
                    if sink.reference.is_some() {
                        "spec.sink.ref"
                    } else {
                        "spec.sink.uri"
                    }
                    .into(),
                ),
                message,
            };
            let meta = ObjectMeta {
                name: bname.clone(),
                namespace: bns.clone(),
                labels: BTreeMap::from([(
                    "sources.switchyard.dev/source".to_owned(),
                    format!("{kind}.{name}"),
                )]),
                annotations: BTreeMap::new(),
            };
            meta.validate().map_err(|e| {
                err(format!(
                    "the name is too long for a sink that is not a Broker, which needs a Broker and a Trigger named `{bname}` ({})",
                    e.message
                ))
            })?;
            let key = (bns.clone(), bname.clone());
            if self.brokers.contains_key(&key) || self.triggers.contains_key(&key) {
                return Err(err(format!(
                    "a sink that is not a Broker needs a Broker and a Trigger named `{bname}`, and one exists already; rename it or give the sink as a ref to a Broker"
                )));
            }
            let trigger = Trigger {
                metadata: meta.clone(),
                spec: TriggerSpec {
                    broker: bname.clone(),
                    broker_ref: None,
                    filter: None,
                    filters: Vec::new(),
                    subscriber: sink.clone(),
                    delivery: None,
                    ordering: None,
                    max_in_flight: None,
                    rate_limit: None,
                    batch: None,
                    reply: None,
                },
            };
            added.push((
                file,
                key,
                Broker {
                    metadata: meta,
                    spec: Default::default(),
                },
                trigger,
            ));
        }
        for (file, key, broker, trigger) in added {
            origin.insert(("Broker", key.0.clone(), key.1.clone()), file.clone());
            origin.insert(("Trigger", key.0.clone(), key.1.clone()), file);
            self.brokers.insert(key.clone(), broker);
            self.triggers.insert(key, trigger);
        }
        Ok(())
    }
}
