//! Loading resources from YAML or JSON files: one file, or every `*.yaml`, `*.yml` and
//! `*.json` file of a directory in name order; a YAML file may hold several documents.
//!
//! Every error names the file, the resource and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::kinds::Resource;
use crate::resources::{
    AddressTable, Broker, DEFAULT_CLUSTER_DOMAIN, Destination, EventType, ObjectMeta, Parallel,
    Sequence, Sink, Target, Trigger, TriggerSpec,
};
use crate::sources::{PingSource, S3Source, WebhookSource};
use crate::streams::{KafkaSink, KafkaSource, MqttSource, NatsSink, NatsSource};

/// Why a configuration did not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or `<api>` for resources that came over the management API).
    pub file: String,
    /// `Kind namespace/name`, when the failure is inside a resource.
    pub resource: Option<String>,
    /// The field path, when the failure is about one field.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(r) = &self.resource {
            write!(f, ": {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Metadata fields Kubernetes writes itself; dropped on load like `status`.
pub const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "finalizers",
    "ownerReferences",
    "generateName",
];

/// The file each resource came from, by (kind, namespace, name).
pub(crate) type Origins = BTreeMap<(&'static str, String, String), String>;

/// A validated set of resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Brokers by (namespace, name).
    pub brokers: BTreeMap<(String, String), Broker>,
    /// Triggers by (namespace, name).
    pub triggers: BTreeMap<(String, String), Trigger>,
    /// Sinks by (namespace, name).
    pub sinks: BTreeMap<(String, String), Sink>,
    /// EventTypes by (namespace, name).
    pub event_types: BTreeMap<(String, String), EventType>,
    /// WebhookSources by (namespace, name).
    pub webhook_sources: BTreeMap<(String, String), WebhookSource>,
    /// PingSources by (namespace, name).
    pub ping_sources: BTreeMap<(String, String), PingSource>,
    /// S3Sources by (namespace, name).
    pub s3_sources: BTreeMap<(String, String), S3Source>,
    /// KafkaSources by (namespace, name).
    pub kafka_sources: BTreeMap<(String, String), KafkaSource>,
    /// NatsSources by (namespace, name).
    pub nats_sources: BTreeMap<(String, String), NatsSource>,
    /// MqttSources by (namespace, name).
    pub mqtt_sources: BTreeMap<(String, String), MqttSource>,
    /// KafkaSinks by (namespace, name).
    pub kafka_sinks: BTreeMap<(String, String), KafkaSink>,
    /// NatsSinks by (namespace, name).
    pub nats_sinks: BTreeMap<(String, String), NatsSink>,
    /// AddressTables by (namespace, name).
    pub address_tables: BTreeMap<(String, String), AddressTable>,
    /// Sequences by (namespace, name).
    pub sequences: BTreeMap<(String, String), Sequence>,
    /// Parallels by (namespace, name).
    pub parallels: BTreeMap<(String, String), Parallel>,
    /// The file each EventType came from, for errors found after loading (schema compilation).
    pub event_type_files: BTreeMap<(String, String), String>,
    /// The file each Trigger came from, for errors found after loading (CESQL compilation).
    pub trigger_files: BTreeMap<(String, String), String>,
    /// Documents and fields that loaded without effect ([`Config::load`] fills it).
    pub ignored: Vec<Ignored>,
    /// Resources that loaded but cannot work yet, and why (a Trigger whose Broker is not in
    /// the configuration: Knative's `BrokerDoesNotExist`).
    pub not_ready: Vec<ConfigError>,
}

fn describe(value: &serde_json::Value, index: usize) -> String {
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or("resource");
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|v| v.as_str())
        .unwrap_or(crate::resources::DEFAULT_NAMESPACE);
    if name == "?" {
        format!("{kind} (document {})", index + 1)
    } else {
        format!("{kind} {ns}/{name}")
    }
}

/// Parses one resource from a generic value (a YAML/JSON document or an API body).
pub fn parse_resource(
    value: serde_json::Value,
    file: &str,
    index: usize,
) -> Result<Parsed, ConfigError> {
    let resource = describe(&value, index);
    let err = |field: Option<String>, message: String| ConfigError {
        file: file.to_owned(),
        resource: Some(resource.clone()),
        field,
        message,
    };
    let Some(obj) = value.as_object() else {
        return Err(err(
            None,
            "a resource must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    let api = obj.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = obj.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api.is_empty() || kind.is_empty() {
        return Err(err(None, "`apiVersion` and `kind` are required".into()));
    }
    let mut body = obj.clone();
    body.remove("apiVersion");
    body.remove("kind");
    let supported = Resource::KINDS
        .iter()
        .find(|(_, k)| *k == kind)
        .map(|(a, _)| *a);
    let ignore = |field: Option<String>, why: String| Ignored {
        file: file.to_owned(),
        resource: resource.clone(),
        field,
        why,
    };
    let (api, ignored) = match crate::compat::prepare(api, kind, supported, &mut body) {
        crate::compat::Prepared::Keep {
            api_version,
            ignored,
        } => (
            api_version,
            ignored
                .into_iter()
                .map(|(field, why)| ignore(Some(field), why))
                .collect::<Vec<_>>(),
        ),
        crate::compat::Prepared::Skip(why) => return Ok(Parsed::Skipped(ignore(None, why))),
        crate::compat::Prepared::Refuse(why) => return Err(err(Some("kind".into()), why)),
        crate::compat::Prepared::Unknown => (api, Vec::new()),
    };
    if !Resource::KINDS.contains(&(api, kind)) {
        let supported: Vec<String> = Resource::KINDS
            .iter()
            .map(|(a, k)| format!("{a} {k}"))
            .collect();
        let same_kind = Resource::KINDS.iter().find(|(_, k)| *k == kind);
        let message = match same_kind {
            Some((a, _)) => {
                format!("apiVersion `{api}` is not supported for kind {kind}; use `{a}`")
            }
            None => format!(
                "kind `{kind}` ({api}) is not supported; supported kinds: {}",
                supported.join(", ")
            ),
        };
        return Err(err(Some("kind".into()), message));
    }
    // `status` and the server-populated metadata are written by a control plane; manifests
    // exported with `kubectl get -o yaml` carry them, and they mean nothing here.
    body.remove("status");
    if let Some(serde_json::Value::Object(meta)) = body.get_mut("metadata") {
        for field in SERVER_METADATA {
            meta.remove(*field);
        }
    }
    let body = serde_json::Value::Object(body);
    let parsed = Resource::parse(kind, body);
    let resource_value = parsed.map_err(|(path, message)| {
        err((!path.is_empty() && path != ".").then_some(path), message)
    })?;
    resource_value
        .validate()
        .map_err(|e| err(Some(e.field), e.message))?;
    Ok(Parsed::Resource(resource_value, ignored))
}

/// What one document came to.
// Like `Resource`: few and short-lived (config loading); boxing would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A resource, with the fields it ignored.
    Resource(Resource, Vec<Ignored>),
    /// A document Switchyard does not run (a Deployment, a Knative Service): skipped.
    Skipped(Ignored),
}

/// A document or a field that loaded without effect, and why (docs/knative-compatibility.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The file.
    pub file: String,
    /// `Kind namespace/name` (or `Kind (document N)`).
    pub resource: String,
    /// The field, when a field is ignored rather than the whole document.
    pub field: Option<String>,
    /// Why it means nothing here.
    pub why: String,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.resource)?;
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": ignored: {}", self.why)
    }
}

/// Parses the documents of one file's text, leaving out what is ignored
/// ([`parse_documents`] says what). `name` is used in errors.
pub fn parse_text(text: &str, name: &str) -> Result<Vec<Resource>, ConfigError> {
    Ok(parse_documents(text, name)?
        .into_iter()
        .filter_map(|p| match p {
            Parsed::Resource(r, _) => Some(r),
            Parsed::Skipped(_) => None,
        })
        .collect())
}

/// Parses the documents of one file's text. `name` is used in errors; a `.json` name is read
/// as JSON (one resource, or an array of them), anything else as YAML.
pub fn parse_documents(text: &str, name: &str) -> Result<Vec<Parsed>, ConfigError> {
    let file_err = |message: String| ConfigError {
        file: name.to_owned(),
        resource: None,
        field: None,
        message,
    };
    let mut values = Vec::new();
    if name.ends_with(".json") {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| file_err(format!("invalid JSON: {e}")))?;
        match v {
            serde_json::Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    } else {
        for doc in serde_norway::Deserializer::from_str(text) {
            let v = serde_json::Value::deserialize(doc)
                .map_err(|e| file_err(format!("invalid YAML: {e}")))?;
            values.push(v);
        }
    }
    values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, v)| parse_resource(v, name, i))
        .collect()
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let io_err = |e: std::io::Error| ConfigError {
        file: path.display().to_string(),
        resource: None,
        field: None,
        message: format!("cannot read: {e}"),
    };
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io_err)? {
        let p = entry.map_err(io_err)?.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if p.is_file() && matches!(ext, "yaml" | "yml" | "json") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// What became of one document ([`Config::report`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Loaded, every field with its effect.
    Loaded,
    /// Loaded, with these fields ignored.
    LoadedIgnoring(Vec<Ignored>),
    /// Not a resource Switchyard runs: skipped.
    Skipped(Ignored),
    /// Refused.
    Refused(ConfigError),
}

/// `switchyard validate`'s account of a configuration: each document's outcome, and the
/// configuration of the documents that loaded (or why their references do not hold).
#[derive(Debug)]
pub struct Report {
    /// Per document: its file, `Kind namespace/name`, and what became of it.
    pub documents: Vec<(String, String, Outcome)>,
    /// The configuration of the loaded documents; an error when a document was refused (the
    /// first refusal) or their references do not hold.
    pub config: Result<Config, ConfigError>,
}

/// The documents of one file, each parsed on its own so that one refusal does not hide the
/// others: (`Kind namespace/name`, its outcome); a file that cannot be read or split into
/// documents is one refusal.
fn report_file(
    name: &str,
    text: Result<String, std::io::Error>,
) -> Vec<(String, Outcome, Option<Resource>)> {
    let file_err = |message: String| ConfigError {
        file: name.to_owned(),
        resource: None,
        field: None,
        message,
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return vec![(
                String::new(),
                Outcome::Refused(file_err(format!("cannot read: {e}"))),
                None,
            )];
        }
    };
    let mut values = Vec::new();
    if name.ends_with(".json") {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Array(items)) => values.extend(items),
            Ok(other) => values.push(other),
            Err(e) => {
                return vec![(
                    String::new(),
                    Outcome::Refused(file_err(format!("invalid JSON: {e}"))),
                    None,
                )];
            }
        }
    } else {
        for doc in serde_norway::Deserializer::from_str(&text) {
            match serde_json::Value::deserialize(doc) {
                Ok(v) => values.push(v),
                Err(e) => {
                    // The rest of the file cannot be split reliably after a syntax error.
                    let mut out: Vec<_> = Vec::new();
                    out.push((
                        String::new(),
                        Outcome::Refused(file_err(format!("invalid YAML: {e}"))),
                        None,
                    ));
                    return out;
                }
            }
        }
    }
    values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, v)| {
            let label = describe(&v, i);
            match parse_resource(v, name, i) {
                Ok(Parsed::Resource(r, ignored)) if ignored.is_empty() => {
                    (label, Outcome::Loaded, Some(r))
                }
                Ok(Parsed::Resource(r, ignored)) => {
                    (label, Outcome::LoadedIgnoring(ignored), Some(r))
                }
                Ok(Parsed::Skipped(why)) => (label, Outcome::Skipped(why), None),
                Err(e) => (label, Outcome::Refused(e), None),
            }
        })
        .collect()
}

impl Config {
    /// Loads a file or a directory document by document, going on past a refused one, and
    /// says what became of each ([`Report`]); what `switchyard validate` prints.
    pub fn report(path: &Path) -> Report {
        let files = match config_files(path) {
            Ok(f) => f,
            Err(e) => {
                return Report {
                    documents: vec![(e.file.clone(), String::new(), Outcome::Refused(e.clone()))],
                    config: Err(e),
                };
            }
        };
        let mut documents = Vec::new();
        let mut resources = Vec::new();
        let mut ignored = Vec::new();
        let mut first_refusal = None;
        for file in files {
            let name = file.display().to_string();
            for (label, outcome, resource) in report_file(&name, std::fs::read_to_string(&file)) {
                match &outcome {
                    Outcome::LoadedIgnoring(fields) => ignored.extend(fields.iter().cloned()),
                    Outcome::Skipped(why) => ignored.push(why.clone()),
                    Outcome::Refused(e) if first_refusal.is_none() => {
                        first_refusal = Some(e.clone())
                    }
                    _ => {}
                }
                if let Some(r) = resource {
                    resources.push((name.clone(), r));
                }
                documents.push((name.clone(), label, outcome));
            }
        }
        let config = match first_refusal {
            Some(e) => Err(e),
            None => Config::from_resources(resources).map(|mut c| {
                c.ignored = ignored;
                c
            }),
        };
        Report { documents, config }
    }

    /// Loads a file or a directory and validates the whole.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut resources = Vec::new();
        let mut ignored = Vec::new();
        for file in config_files(path)? {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| ConfigError {
                file: name.clone(),
                resource: None,
                field: None,
                message: format!("cannot read: {e}"),
            })?;
            for parsed in parse_documents(&text, &name)? {
                match parsed {
                    Parsed::Resource(r, fields) => {
                        resources.push((name.clone(), r));
                        ignored.extend(fields);
                    }
                    Parsed::Skipped(document) => ignored.push(document),
                }
            }
        }
        let mut config = Config::from_resources(resources)?;
        config.ignored = ignored;
        Ok(config)
    }

    /// Builds a config from resources (each with the file it came from), rejecting
    /// duplicates and references to resources that do not exist.
    pub fn from_resources(
        resources: impl IntoIterator<Item = (String, Resource)>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let mut origin: Origins = BTreeMap::new();
        for (file, r) in resources {
            let meta = r.metadata();
            let key = (meta.namespace.clone(), meta.name.clone());
            let label = format!("{} {}/{}", r.kind(), key.0, key.1);
            if r.taken(&config, &key) {
                let group = r.group();
                let first = Resource::kinds_of(group)
                    .find_map(|k| origin.get(&(k, key.0.clone(), key.1.clone())))
                    .map_or("?", |s| s);
                return Err(ConfigError {
                    file,
                    resource: Some(label.clone()),
                    field: Some("metadata.name".into()),
                    message: format!("defined twice (first in {first})"),
                });
            }
            if matches!(r, Resource::EventType(_)) {
                config.event_type_files.insert(key.clone(), file.clone());
            }
            origin.insert((r.kind(), key.0.clone(), key.1.clone()), file);
            r.insert_into(&mut config, key);
        }
        let mut not_ready = config.park_sources_without_their_broker(&origin);
        config.add_uri_sinks(&mut origin)?;
        not_ready.extend(crate::flows::add_flows(&mut config, &mut origin)?);
        config.not_ready = not_ready;
        config.not_ready.extend(config.check_references(&origin)?);
        config.trigger_files = config
            .triggers
            .keys()
            .filter_map(|(ns, name)| {
                let file = origin.get(&("Trigger", ns.clone(), name.clone()))?;
                Some(((ns.clone(), name.clone()), file.clone()))
            })
            .collect();
        Ok(config)
    }

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
    fn park_sources_without_their_broker(&mut self, origin: &Origins) -> Vec<ConfigError> {
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
            let removed = match kind {
                "WebhookSource" => self.webhook_sources.remove(&key).is_some(),
                "PingSource" => self.ping_sources.remove(&key).is_some(),
                "S3Source" => self.s3_sources.remove(&key).is_some(),
                "KafkaSource" => self.kafka_sources.remove(&key).is_some(),
                "NatsSource" => self.nats_sources.remove(&key).is_some(),
                "MqttSource" => self.mqtt_sources.remove(&key).is_some(),
                _ => false,
            };
            debug_assert!(removed, "every kind of Config::sources is parked here");
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
    fn add_uri_sinks(&mut self, origin: &mut Origins) -> Result<(), ConfigError> {
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

    /// Checks every reference; what loads but cannot work yet (a Trigger without its Broker).
    fn check_references(&self, origin: &Origins) -> Result<Vec<ConfigError>, ConfigError> {
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
