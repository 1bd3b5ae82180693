//! Every reference resolved and checked: Triggers' Brokers, destinations (`resolve`, the one
//! resolver), EventTypes' Brokers, AddressTables' cluster domain.

use super::{Config, ConfigError, Origins};
use crate::resources::{DEFAULT_CLUSTER_DOMAIN, Destination, Target};

impl Config {
    /// Checks every reference; what loads but cannot work yet (a Trigger without its Broker).
    pub(super) fn check_references(
        &self,
        origin: &Origins,
    ) -> Result<Vec<ConfigError>, ConfigError> {
        let mut not_ready = Vec::new();
        let file_of = |kind: &'static str, ns: &str, name: &str| {
            origin
                .get(&(kind, ns.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        self.cluster_domain_checked()
            .map_err(|(table, message)| ConfigError {
                file: file_of("AddressTable", &table.0, &table.1),
                resource: Some(format!("AddressTable {}/{}", table.0, table.1)),
                field: Some("spec.clusterDomain".into()),
                message,
            })?;
        // Sources first: a sink that is not a Broker is also the subscriber of the Trigger
        // added for it, and the error should name the source.
        for (kind, ns, name, sink) in self.sources() {
            self.check_destination(ns, sink).map_err(|m| ConfigError {
                file: file_of(kind, ns, name),
                resource: Some(format!("{kind} {ns}/{name}")),
                field: Some("spec.sink.ref".into()),
                message: m,
            })?;
        }
        for ((ns, name), trigger) in &self.triggers {
            // A Trigger a flow added is reported as the part of the flow it stands for.
            let err = |field: &str, message: String| match crate::flows::place(trigger, field) {
                Some((resource, field)) => ConfigError {
                    file: file_of("Trigger", ns, name),
                    resource: Some(resource.replace("{ns}", ns)),
                    field: Some(field),
                    message,
                },
                None => ConfigError {
                    file: file_of("Trigger", ns, name),
                    resource: Some(format!("Trigger {ns}/{name}")),
                    field: Some(field.to_owned()),
                    message,
                },
            };
            if !self
                .brokers
                .contains_key(&(ns.clone(), trigger.spec.broker.clone()))
            {
                not_ready.push(err(
                    "spec.broker",
                    format!(
                        "no Broker `{}` in namespace `{ns}` (BrokerDoesNotExist): the Trigger delivers once the Broker is in the configuration",
                        trigger.spec.broker
                    ),
                ));
            }
            self.check_destination(ns, &trigger.spec.subscriber)
                .map_err(|m| err("spec.subscriber.ref", m))?;
            if let Some(dls) = trigger
                .spec
                .delivery
                .as_ref()
                .and_then(|d| d.dead_letter_sink.as_ref())
            {
                self.check_destination(ns, dls)
                    .map_err(|m| err("spec.delivery.deadLetterSink.ref", m))?;
            }
        }
        for ((ns, name), et) in &self.event_types {
            if let Some((ref_ns, broker)) = et.broker()
                && !self.brokers.contains_key(&(ref_ns.clone(), broker.clone()))
            {
                not_ready.push(ConfigError {
                    file: file_of("EventType", ns, name),
                    resource: Some(format!("EventType {ns}/{name}")),
                    field: Some("spec.reference".into()),
                    message: format!(
                        "no Broker `{broker}` in namespace `{ref_ns}` (BrokerDoesNotExist): the EventType is listed and applies once the Broker is in the configuration"
                    ),
                });
            }
        }
        for ((ns, name), broker) in &self.brokers {
            if let Some(dls) = broker
                .spec
                .delivery
                .as_ref()
                .and_then(|d| d.dead_letter_sink.as_ref())
            {
                self.check_destination(ns, dls).map_err(|m| ConfigError {
                    file: file_of("Broker", ns, name),
                    resource: Some(format!("Broker {ns}/{name}")),
                    field: Some("spec.delivery.deadLetterSink.ref".into()),
                    message: m,
                })?;
            }
        }
        Ok(not_ready)
    }

    fn check_destination(&self, ns: &str, dest: &Destination) -> Result<(), String> {
        self.resolve(ns, dest).map(|_| ())
    }

    /// The cluster domain of Service addresses: the one an AddressTable sets, or
    /// `cluster.local`.
    pub fn cluster_domain(&self) -> &str {
        self.address_tables
            .values()
            .find_map(|t| t.spec.cluster_domain.as_deref())
            .unwrap_or(DEFAULT_CLUSTER_DOMAIN)
    }

    /// Checks that at most one AddressTable sets the cluster domain; else the second one
    /// and why.
    fn cluster_domain_checked(&self) -> Result<(), ((String, String), String)> {
        let mut setting = self
            .address_tables
            .iter()
            .filter(|(_, t)| t.spec.cluster_domain.is_some());
        match (setting.next(), setting.next()) {
            (Some((first, _)), Some((second, _))) => Err((
                second.clone(),
                format!(
                    "AddressTable {}/{} sets the cluster domain already; set it once",
                    first.0, first.1
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Where `dest`, a destination of a resource in namespace `ns`, sends events: a Broker, a
    /// KafkaSink or NatsSink, a Sink's URL, an AddressTable's URL, or for a Kubernetes or
    /// Knative Service `http://{name}.{namespace}.svc.{clusterDomain}`; a `uri` next to the
    /// `ref` is resolved against the ref's URL. The error says what is missing and what to
    /// add.
    pub fn resolve(&self, ns: &str, dest: &Destination) -> Result<Target, String> {
        let Some(r) = &dest.reference else {
            return Ok(Target::Url(dest.uri.clone().unwrap_or_default()));
        };
        let ref_ns = r.namespace.clone().unwrap_or_else(|| ns.to_owned());
        let key = (ref_ns.clone(), r.name.clone());
        let missing = || format!("no {} `{}` in namespace `{ref_ns}`", r.kind, r.name);
        let base = match r.kind.as_str() {
            "Broker" => match self.brokers.contains_key(&key) {
                true => Target::Broker {
                    namespace: ref_ns.clone(),
                    name: r.name.clone(),
                },
                false => return Err(missing()),
            },
            "KafkaSink" | "NatsSink" => {
                let found = if r.kind == "KafkaSink" {
                    self.kafka_sinks.contains_key(&key)
                } else {
                    self.nats_sinks.contains_key(&key)
                };
                if !found {
                    return Err(missing());
                }
                Target::Stream {
                    kind: r.kind.clone(),
                    namespace: ref_ns.clone(),
                    name: r.name.clone(),
                }
            }
            "Sink" => match self.sinks.get(&key) {
                Some(sink) => Target::Url(sink.spec.uri.clone()),
                None => return Err(missing()),
            },
            // A Sequence or Parallel of the configuration: its ingress Broker. (One that is
            // not here may be in an AddressTable, below.)
            "Sequence" | "Parallel"
                if r.api_version
                    .as_deref()
                    .is_none_or(|a| crate::resources::api_group(a) == "flows.knative.dev")
                    && (self.sequences.contains_key(&key) && r.kind == "Sequence"
                        || self.parallels.contains_key(&key) && r.kind == "Parallel") =>
            {
                Target::Broker {
                    namespace: ref_ns.clone(),
                    name: if r.kind == "Sequence" {
                        crate::flows::sequence_ingress(&r.name)
                    } else {
                        crate::flows::parallel_ingress(&r.name)
                    },
                }
            }
            _ => {
                let listed = self.address_tables.iter().find_map(|((table_ns, _), t)| {
                    t.spec
                        .addresses
                        .iter()
                        .find(|a| a.matches(r, &ref_ns, table_ns))
                });
                match listed {
                    Some(a) => Target::Url(a.url.clone()),
                    None if crate::resources::is_service(r) => Target::Url(
                        crate::resources::service_url(&r.name, &ref_ns, self.cluster_domain()),
                    ),
                    None if matches!(r.kind.as_str(), "Sequence" | "Parallel") => {
                        return Err(format!(
                            "{} (and no AddressTable gives it an address)",
                            missing()
                        ));
                    }
                    None => {
                        return Err(format!(
                            "nothing gives {} {ref_ns}/{} ({}) an address: Switchyard runs no {}; map it to a URL in an AddressTable (spec.addresses), or give a `uri`",
                            r.kind,
                            r.name,
                            r.api_version.as_deref().unwrap_or("no apiVersion"),
                            r.kind
                        ));
                    }
                }
            }
        };
        match (&dest.uri, base) {
            (None, base) => Ok(base),
            (Some(uri), Target::Url(url)) => crate::resources::join(&url, uri).map(Target::Url),
            (Some(_), _) => Err(format!(
                "a `uri` next to a ref to a {} is not supported: give one or the other",
                r.kind
            )),
        }
    }
}
