//! EventTypes at run time: their schemas compiled once (JSON Schema drafts 7 and 2020-12, no
//! network), matching an event to its type, the types discovered in `record` mode, and
//! [`EventTypePolicy`], the brokers' `eventTypes` settings as broker ingress, every source and
//! the dispatcher (for replies) apply them before storing. The contract is `spec/eventtypes.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde::Serialize;
use serde_json::Value;
use switchyard_core::config::{Config, ConfigError};
use switchyard_core::resources::EventTypeMode;
use switchyard_core::{CloudEvent, Data};

use crate::log::{EventLog, LogError, Table, WriteOp};
use crate::metrics as m;

/// The most violations listed for one event.
pub const MAX_VIOLATIONS: usize = 20;

const DRAFT7: &str = "http://json-schema.org/draft-07/schema";
const DRAFT2020: &str = "https://json-schema.org/draft/2020-12/schema";

/// One way an event's data breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer into the event's data (`""` is the data itself).
    pub pointer: String,
    /// The schema keyword that failed (`type`, `required`, `minimum`, …).
    pub keyword: String,
    /// What is wrong.
    pub message: String,
}

/// A configured EventType with its compiled schema.
#[derive(Debug)]
pub struct Registered {
    /// Namespace of the EventType.
    pub namespace: String,
    /// Name of the EventType.
    pub name: String,
    /// The `type` it describes.
    pub ty: String,
    /// `spec.source`: exact, or a prefix when it ends with `*`; any when absent.
    pub source: Option<String>,
    /// `spec.schema`.
    pub schema: Option<String>,
    /// `spec.description`.
    pub description: Option<String>,
    /// The referenced broker, `namespace/name`.
    pub broker: Option<String>,
    validator: Option<Arc<Validator>>,
}

impl Registered {
    fn source_score(&self, source: &str) -> Option<usize> {
        match self.source.as_deref() {
            None => Some(0),
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => source.starts_with(prefix).then_some(1 + prefix.len()),
                None => (source == p).then_some(usize::MAX),
            },
        }
    }

    /// Whether an event of this type and source matches.
    pub fn matches(&self, ty: &str, source: &str) -> bool {
        self.ty == ty && self.source_score(source).is_some()
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What [`Registry::check`] found for one event.
#[derive(Debug)]
pub enum Check<'a> {
    /// No EventType of the broker matches the event's type and source, and its `dataschema`
    /// names no registered schema.
    NotRegistered,
    /// A matching EventType exists but has no schema to validate against.
    Unchecked,
    /// The data is valid against this EventType's schema.
    Passed(&'a Registered),
    /// The data breaks this EventType's schema.
    Failed(&'a Registered, Vec<Violation>),
}

impl Check<'_> {
    /// Whether the event may be stored as far as its schema goes (not `Failed`).
    pub fn is_valid(&self) -> bool {
        !matches!(self, Check::Failed(..))
    }
}

/// Every configured EventType, schemas compiled.
#[derive(Debug, Default)]
pub struct Registry {
    types: Vec<Arc<Registered>>,
    /// (broker id, type) → the EventTypes referencing that broker with that type.
    by_broker_type: HashMap<(String, String), Vec<Arc<Registered>>>,
    /// Schema URI → the EventType whose `schemaData` it names.
    by_schema: HashMap<String, Arc<Registered>>,
}

/// Schemas resolved by `$ref`: only those of registered EventTypes.
struct LocalSchemas(Arc<HashMap<String, Value>>);

impl Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str();
        self.0
            .get(key)
            .or_else(|| self.0.get(key.trim_end_matches('#')))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "`{key}` is not the `schema` of an EventType with `schemaData`; switchyard does not fetch schemas"
                )
                .into()
            })
    }
}

fn strip_fragment(uri: &str) -> &str {
    uri.split('#').next().unwrap_or(uri)
}

fn draft_of(schema: &Value) -> Result<Draft, String> {
    let Some(declared) = schema.get("$schema") else {
        return Ok(Draft::Draft202012);
    };
    let text = declared.as_str().unwrap_or("");
    let bare = text.trim_end_matches('#');
    let https = |s: &str| s.replacen("http://", "https://", 1);
    if https(bare) == https(DRAFT7) {
        Ok(Draft::Draft7)
    } else if https(bare) == DRAFT2020 {
        Ok(Draft::Draft202012)
    } else {
        Err(format!(
            "`$schema` `{text}` is not supported: use draft 7 (`{DRAFT7}#`) or 2020-12 (`{DRAFT2020}`)"
        ))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Registry {
    /// Compiles every EventType's schema. A schema that is not valid for its draft, names an
    /// unsupported draft, or `$ref`s anything but another registered schema is an error
    /// naming the file, the EventType and the field.
    pub fn compile(config: &Config) -> Result<Registry, ConfigError> {
        let err = |key: &(String, String), field: &str, message: String| ConfigError {
            file: config
                .event_type_files
                .get(key)
                .cloned()
                .unwrap_or_else(|| "<config>".into()),
            resource: Some(format!("EventType {}/{}", key.0, key.1)),
            field: Some(field.to_owned()),
            message: one_line(&message),
        };
        // First every inline schema by its URIs, so `$ref`s between them resolve in any order.
        let mut documents: HashMap<String, Value> = HashMap::new();
        let mut owner: HashMap<String, (String, String)> = HashMap::new();
        let mut values = BTreeMap::new();
        for (key, et) in &config.event_types {
            let Some(value) = et
                .schema_value()
                .map_err(|m| err(key, "spec.schemaData", m))?
            else {
                continue;
            };
            let mut uris: Vec<String> = Vec::new();
            if let Some(uri) = &et.spec.schema {
                uris.push(strip_fragment(uri).to_owned());
            }
            if let Some(id) = value.get("$id").and_then(Value::as_str) {
                uris.push(strip_fragment(id).to_owned());
            }
            for uri in uris {
                if let Some(first) = owner.get(&uri)
                    && documents.get(&uri) != Some(&value)
                {
                    return Err(err(
                        key,
                        "spec.schema",
                        format!(
                            "`{uri}` is also the schema of EventType {}/{} with a different schemaData",
                            first.0, first.1
                        ),
                    ));
                }
                owner.insert(uri.clone(), key.clone());
                documents.insert(uri, value.clone());
            }
            values.insert(key.clone(), value);
        }
        let documents = Arc::new(documents);
        let mut registry = Registry::default();
        for (key, et) in &config.event_types {
            let validator = match values.get(key) {
                None => None,
                Some(value) => {
                    let draft =
                        draft_of(value).map_err(|m| err(key, "spec.schemaData.$schema", m))?;
                    let mut options = jsonschema::options()
                        .with_draft(draft)
                        .with_retriever(LocalSchemas(Arc::clone(&documents)));
                    if let Some(uri) = &et.spec.schema {
                        options = options.with_base_uri(strip_fragment(uri).to_owned());
                    }
                    let validator = options.build(value).map_err(|e| {
                        let at = e.instance_path().to_string();
                        let place = if at.is_empty() {
                            String::new()
                        } else {
                            format!(" at {at}")
                        };
                        err(
                            key,
                            "spec.schemaData",
                            format!("invalid JSON Schema{place}: {e}"),
                        )
                    })?;
                    Some(Arc::new(validator))
                }
            };
            let registered = Arc::new(Registered {
                namespace: key.0.clone(),
                name: key.1.clone(),
                ty: et.spec.ty.clone(),
                source: et.spec.source.clone(),
                schema: et.spec.schema.clone(),
                description: et.spec.description.clone(),
                broker: et.broker().map(|(ns, name)| format!("{ns}/{name}")),
                validator,
            });
            if let Some(broker) = &registered.broker {
                registry
                    .by_broker_type
                    .entry((broker.clone(), registered.ty.clone()))
                    .or_default()
                    .push(Arc::clone(&registered));
            }
            if let (Some(uri), Some(_)) = (&registered.schema, &registered.validator) {
                registry
                    .by_schema
                    .entry(uri.clone())
                    .or_insert_with(|| Arc::clone(&registered));
            }
            registry.types.push(registered);
        }
        Ok(registry)
    }

    /// Every configured EventType.
    pub fn types(&self) -> &[Arc<Registered>] {
        &self.types
    }

    /// The most specific EventType of `broker` for this type and source: an exact source
    /// first, then the longest prefix, then one without a source.
    pub fn find(&self, broker: &str, ty: &str, source: &str) -> Option<&Registered> {
        self.by_broker_type
            .get(&(broker.to_owned(), ty.to_owned()))?
            .iter()
            .filter_map(|r| r.source_score(source).map(|s| (s, r)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, r)| r.as_ref())
    }

    /// Matches an event of `broker` to its EventType and validates its data. An event whose
    /// `dataschema` is the `schema` of a registered EventType is validated against that schema,
    /// whatever its type.
    pub fn check(&self, broker: &str, event: &CloudEvent) -> Check<'_> {
        let found = self.find(broker, &event.ty, &event.source);
        let target = event
            .dataschema
            .as_deref()
            .and_then(|uri| self.by_schema.get(uri))
            .map(Arc::as_ref)
            .or_else(|| found.filter(|r| r.validator.is_some()));
        let Some(target) = target else {
            return if found.is_some() {
                Check::Unchecked
            } else {
                Check::NotRegistered
            };
        };
        let Some(validator) = &target.validator else {
            return Check::Unchecked;
        };
        let data = data_value(event);
        // The common case first: `is_valid` stops at nothing and builds no errors.
        if validator.is_valid(&data) {
            return Check::Passed(target);
        }
        let violations: Vec<Violation> = validator
            .iter_errors(&data)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                pointer: e.instance_path().to_string(),
                keyword: e.kind().keyword().to_owned(),
                message: e.to_string(),
            })
            .collect();
        if violations.is_empty() {
            Check::Passed(target)
        } else {
            Check::Failed(target, violations)
        }
    }
}

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
                (format!("{ns}/{name}"), mode)
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
        let (namespace, name) = broker.split_once('/').unwrap_or((broker, ""));
        let count = |ty: &str, result: &'static str| {
            if !report {
                return;
            }
            metrics::counter!(
                m::SCHEMA_VALIDATIONS,
                "namespace_name" => namespace.to_owned(),
                "broker_name" => name.to_owned(),
                "event_type" => ty.to_owned(),
                "result" => result
            )
            .increment(1);
        };
        for (index, event) in events.iter().enumerate() {
            match self.registry.check(broker, event) {
                Check::NotRegistered => {
                    if enforce && strict {
                        return Err((index, unregistered(event, broker)));
                    }
                }
                Check::Unchecked => {}
                Check::Passed(_) => count(&event.ty, "passed"),
                Check::Failed(registered, violations) => {
                    count(&event.ty, "failed");
                    if enforce {
                        return Err((index, schema_violation(event, registered, violations)));
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
        Ok(())
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

/// The event's data as the instance a schema sees: the JSON value for JSON data, `null` when
/// there is none, and otherwise (or when it does not parse) its text as a JSON string.
pub fn data_value(event: &CloudEvent) -> Value {
    match &event.data {
        Data::Absent => Value::Null,
        Data::Json(raw) => {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
        }
        Data::Binary(bytes) => {
            if switchyard_core::json::is_json_media_type(event.datacontenttype.as_deref())
                && let Ok(v) = serde_json::from_slice(bytes)
            {
                return v;
            }
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
    }
}

/// Counts of one (type, source) a broker stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// When it was first seen (RFC 3339).
    pub first_seen: String,
    /// When it was last seen (RFC 3339).
    pub last_seen: String,
    /// How many events of it were stored.
    pub count: u64,
    #[serde(skip)]
    dirty: bool,
}

/// (broker id, type, source).
type SeenKey = (String, String, String);

/// The (type, source) pairs stored by brokers in `record` mode (from ingress, sources and replies), kept in memory and
/// persisted in the store's `EventTypes` table: a new pair at once, counts every few seconds
/// and at shutdown.
#[derive(Debug, Default)]
pub struct Discovery {
    seen: Mutex<BTreeMap<SeenKey, Seen>>,
}

fn seen_key(key: &SeenKey) -> Vec<u8> {
    format!("{}\0{}\0{}", key.0, key.1, key.2).into_bytes()
}

fn seen_put(key: &SeenKey, seen: &Seen) -> WriteOp {
    WriteOp::Put {
        table: Table::EventTypes,
        key: seen_key(key),
        value: serde_json::to_vec(seen).unwrap_or_default(),
    }
}

impl Discovery {
    /// Loads what earlier runs recorded.
    pub fn load(log: &dyn EventLog) -> Result<Discovery, LogError> {
        let mut seen = BTreeMap::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let batch = log.scan(Table::EventTypes, &from, &[0xff], 1000)?;
            let Some((last, _)) = batch.last() else { break };
            from = last.clone();
            from.push(0);
            for (k, v) in &batch {
                let text = String::from_utf8_lossy(k);
                let mut parts = text.splitn(3, '\0');
                let (Some(b), Some(t), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                match serde_json::from_slice::<Seen>(v) {
                    Ok(record) => {
                        seen.insert((b.to_owned(), t.to_owned(), s.to_owned()), record);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable event type record")
                    }
                }
            }
        }
        Ok(Discovery {
            seen: Mutex::new(seen),
        })
    }

    /// Counts the stored events of a request; returns the writes that persist pairs seen for
    /// the first time.
    pub fn observe<'a>(
        &self,
        broker: &str,
        events: impl Iterator<Item = (&'a str, &'a str)>,
        now: &str,
    ) -> Vec<WriteOp> {
        let mut ops = Vec::new();
        let Ok(mut seen) = self.seen.lock() else {
            return ops;
        };
        for (ty, source) in events {
            let key = (broker.to_owned(), ty.to_owned(), source.to_owned());
            match seen.get_mut(&key) {
                Some(s) => {
                    s.last_seen = now.to_owned();
                    s.count += 1;
                    s.dirty = true;
                }
                None => {
                    let s = Seen {
                        first_seen: now.to_owned(),
                        last_seen: now.to_owned(),
                        count: 1,
                        dirty: false,
                    };
                    ops.push(seen_put(&key, &s));
                    seen.insert(key, s);
                }
            }
        }
        ops
    }

    /// The writes that persist every count changed since the last flush.
    pub fn flush(&self) -> Vec<WriteOp> {
        let Ok(mut seen) = self.seen.lock() else {
            return Vec::new();
        };
        seen.iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(k, s)| {
                s.dirty = false;
                seen_put(k, s)
            })
            .collect()
    }

    /// Everything seen, as (broker, type, source, counts).
    pub fn snapshot(&self) -> Vec<(SeenKey, Seen)> {
        self.seen
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// One entry of the discovery API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// The EventType's namespace (for a discovered one, its broker's).
    pub namespace: String,
    /// The EventType's name; `null` for a discovered type.
    pub name: Option<String>,
    /// The broker, `namespace/name`.
    pub broker: Option<String>,
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The source (a configured one may be a prefix ending in `*`).
    pub source: Option<String>,
    /// The schema URI.
    pub schema: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// `config` or `discovered`.
    pub origin: &'static str,
    /// First stored event of the type (record mode only).
    pub first_seen: Option<String>,
    /// Last stored event of the type (record mode only).
    pub last_seen: Option<String>,
    /// Stored events of the type (record mode only).
    pub count: u64,
}

/// Lists the configured and discovered types of a namespace, or of one broker when `broker`
/// (`namespace/name`) is given. A configured type shows the counts of the pairs it matches.
pub fn list(
    registry: &Registry,
    discovery: &Discovery,
    namespace: &str,
    broker: Option<&str>,
) -> Vec<Listed> {
    let seen = discovery.snapshot();
    let in_scope = |b: &str| match broker {
        Some(id) => b == id,
        None => b.split('/').next() == Some(namespace),
    };
    let mut out = Vec::new();
    for r in registry.types() {
        let wanted = match broker {
            Some(id) => r.broker.as_deref() == Some(id),
            None => r.namespace == namespace,
        };
        if !wanted {
            continue;
        }
        let mut item = Listed {
            namespace: r.namespace.clone(),
            name: Some(r.name.clone()),
            broker: r.broker.clone(),
            ty: r.ty.clone(),
            source: r.source.clone(),
            schema: r.schema.clone(),
            description: r.description.clone(),
            origin: "config",
            first_seen: None,
            last_seen: None,
            count: 0,
        };
        for ((b, t, s), counts) in &seen {
            if r.broker.as_deref() == Some(b.as_str()) && r.matches(t, s) {
                item.count += counts.count;
                if item
                    .first_seen
                    .as_ref()
                    .is_none_or(|f| counts.first_seen < *f)
                {
                    item.first_seen = Some(counts.first_seen.clone());
                }
                if item
                    .last_seen
                    .as_ref()
                    .is_none_or(|l| counts.last_seen > *l)
                {
                    item.last_seen = Some(counts.last_seen.clone());
                }
            }
        }
        out.push(item);
    }
    for ((b, t, s), counts) in seen {
        if !in_scope(&b) || registry.find(&b, &t, &s).is_some() {
            continue;
        }
        out.push(Listed {
            namespace: b.split('/').next().unwrap_or("").to_owned(),
            name: None,
            broker: Some(b),
            ty: t,
            source: Some(s),
            schema: None,
            description: None,
            origin: "discovered",
            first_seen: Some(counts.first_seen),
            last_seen: Some(counts.last_seen),
            count: counts.count,
        });
    }
    out.sort_by(|a, b| (&a.broker, &a.ty, &a.source).cmp(&(&b.broker, &b.ty, &b.source)));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(yaml: &str) -> Result<Config, ConfigError> {
        let resources = switchyard_core::config::parse_text(yaml, "test.yaml")?;
        Config::from_resources(resources.into_iter().map(|r| ("test.yaml".to_owned(), r)))
    }

    const BASE: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: orders}
spec: {eventTypes: enforce}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: address}
spec:
  type: com.example.address
  schema: https://schemas.example.com/address.json
  schemaData:
    type: object
    required: [city]
    properties: {city: {type: string}}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: order-created}
spec:
  type: com.example.order.created
  source: /orders/*
  schema: https://schemas.example.com/order.json
  reference: {kind: Broker, name: orders}
  schemaData: '{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","required":["total"],"properties":{"total":{"type":"number"},"shipTo":{"$ref":"https://schemas.example.com/address.json"}}}'
"#;

    fn event(source: &str, data: &str) -> CloudEvent {
        let mut e = CloudEvent::new("1", source, "com.example.order.created").unwrap();
        e.data = Data::Json(data.into());
        e
    }

    #[test]
    fn validates_with_refs_between_registered_schemas() {
        let r = Registry::compile(&config(BASE).unwrap()).unwrap();
        let ok = event("/orders/1", r#"{"total": 3, "shipTo": {"city": "Ghent"}}"#);
        assert!(matches!(r.check("default/orders", &ok), Check::Passed(_)));
        let bad = event("/orders/1", r#"{"total": "3", "shipTo": {}}"#);
        let Check::Failed(_, v) = r.check("default/orders", &bad) else {
            panic!("expected a failure");
        };
        let mut pointers: Vec<_> = v
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        pointers.sort();
        assert_eq!(pointers, [("/shipTo", "required"), ("/total", "type")]);
        // Another source is not this EventType's.
        assert!(matches!(
            r.check("default/orders", &event("/other", "{}")),
            Check::NotRegistered
        ));
        // dataschema picks the schema whatever the type.
        let mut by_schema = event("/x", r#"{"city": 1}"#);
        by_schema.dataschema = Some("https://schemas.example.com/address.json".into());
        assert!(matches!(
            r.check("default/orders", &by_schema),
            Check::Failed(..)
        ));
    }

    #[test]
    fn invalid_and_remote_schemas_are_refused() {
        let bad = BASE.replace("type: object\n", "type: objekt\n");
        let e = Registry::compile(&config(&bad).unwrap()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spec.schemaData"));
        assert!(
            e.message.starts_with("invalid JSON Schema"),
            "{}",
            e.message
        );
        let remote = BASE.replace(
            "https://schemas.example.com/address.json\"",
            "https://elsewhere.example.com/a.json\"",
        );
        let e = Registry::compile(&config(&remote).unwrap()).unwrap_err();
        assert!(e.message.contains("does not fetch"), "{}", e.message);
        let draft4 = BASE.replace("draft-07", "draft-04");
        let e = Registry::compile(&config(&draft4).unwrap()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spec.schemaData.$schema"));
    }

    #[test]
    fn non_json_and_absent_data() {
        let mut e = CloudEvent::new("1", "/s", "t").unwrap();
        assert_eq!(data_value(&e), Value::Null);
        e.data = Data::Binary(bytes::Bytes::from_static(b"hello"));
        e.datacontenttype = Some("text/plain".into());
        assert_eq!(data_value(&e), Value::String("hello".into()));
        e.datacontenttype = Some("application/json".into());
        e.data = Data::Binary(bytes::Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(data_value(&e), serde_json::json!({"a": 1}));
    }

    #[test]
    fn discovery_counts_and_persists_new_pairs_once() {
        let d = Discovery::default();
        let ops = d.observe(
            "ns/b",
            [("t", "/s"), ("t", "/s")].into_iter(),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(ops.len(), 1);
        assert_eq!(d.flush().len(), 1);
        assert!(d.flush().is_empty());
        let snap = d.snapshot();
        assert_eq!(snap[0].1.count, 2);
    }
}
