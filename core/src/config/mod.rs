//! Loading resources from YAML or JSON files: one file, or every `*.yaml`, `*.yml` and
//! `*.json` file of a directory in name order; a YAML file may hold several documents.
//!
//! Every error names the file, the resource and the field. The data path, a file each:
//! [`parse`] (a document → a resource, or skipped, or refused), this module (files →
//! [`Config`]), `sources` (what a source's sink adds), `flows` (crate-level: what a
//! Sequence or Parallel adds), `references` (every ref resolved and checked), and
//! [`report`] (`validate`'s account, document by document).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::auth::{EventPolicy, Identity, TokenIssuer};
pub use crate::kinds::Resource;
use crate::resources::{AddressTable, Broker, EventType, Parallel, Sequence, Sink, Trigger};
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
    /// Identities (static bearer tokens) by (namespace, name).
    pub identities: BTreeMap<(String, String), Identity>,
    /// TokenIssuers (OIDC/JWT) by (namespace, name).
    pub token_issuers: BTreeMap<(String, String), TokenIssuer>,
    /// EventPolicies by (namespace, name).
    pub event_policies: BTreeMap<(String, String), EventPolicy>,
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

mod parse;
mod references;
mod report;
mod sources;

pub use parse::{Ignored, Parsed, parse_documents, parse_resource, parse_text};
pub use report::{Outcome, Report};

/// The files a configuration at `path` is read from: the file itself, or a directory's
/// `.yaml`, `.yml` and `.json` files (not its subdirectories), in name order.
pub fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
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

impl Config {
    /// Loads a file or a directory and validates the whole: the first refusal, if any
    /// ([`Config::report`] says what became of every document).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::report(path).config
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
}
