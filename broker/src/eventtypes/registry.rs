//! EventType schemas compiled once (JSON Schema drafts 7 and 2020-12; `$ref`s only to other
//! registered schemas, no network) and matching an event to the EventType that registers it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde::Serialize;
use serde_json::Value;
use switchyard_core::config::{Config, ConfigError};
use switchyard_core::{CloudEvent, Data};

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
    /// Broker id → type → the EventTypes referencing that broker with that type (looked up
    /// by `&str`, so a check allocates nothing to find them).
    by_broker_type: HashMap<String, HashMap<String, Vec<Arc<Registered>>>>,
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
        let (documents, values) = schema_documents(config)?;
        let documents = Arc::new(documents);
        let mut registry = Registry::default();
        for (key, et) in &config.event_types {
            let validator = match values.get(key) {
                None => None,
                Some(value) => Some(Arc::new(validator(config, key, value, &documents)?)),
            };
            let registered = Arc::new(Registered {
                namespace: key.0.clone(),
                name: key.1.clone(),
                ty: et.spec.ty.clone(),
                source: et.spec.source.clone(),
                schema: et.spec.schema.clone(),
                description: et.spec.description.clone(),
                broker: et
                    .broker()
                    .map(|(ns, name)| switchyard_core::id::join(&ns, &name)),
                validator,
            });
            registry.add(registered);
        }
        Ok(registry)
    }

    fn add(&mut self, registered: Arc<Registered>) {
        if let Some(broker) = &registered.broker {
            self.by_broker_type
                .entry(broker.clone())
                .or_default()
                .entry(registered.ty.clone())
                .or_default()
                .push(Arc::clone(&registered));
        }
        if let (Some(uri), Some(_)) = (&registered.schema, &registered.validator) {
            self.by_schema
                .entry(uri.clone())
                .or_insert_with(|| Arc::clone(&registered));
        }
        self.types.push(registered);
    }
}

/// A load error about EventType `key`'s `field`, naming its file.
fn config_error(
    config: &Config,
    key: &(String, String),
    field: &str,
    message: String,
) -> ConfigError {
    ConfigError {
        file: config
            .event_type_files
            .get(key)
            .cloned()
            .unwrap_or_else(|| "<config>".into()),
        resource: Some(format!("EventType {}/{}", key.0, key.1)),
        field: Some(field.to_owned()),
        message: one_line(&message),
    }
}

/// Every inline schema by its URIs (`spec.schema` and `$id`), so `$ref`s between them
/// resolve in any order; and each EventType's schema.
#[allow(clippy::type_complexity)]
fn schema_documents(
    config: &Config,
) -> Result<(HashMap<String, Value>, BTreeMap<(String, String), Value>), ConfigError> {
    let err = |key: &(String, String), field: &str, message: String| {
        config_error(config, key, field, message)
    };
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
    Ok((documents, values))
}

/// The compiled schema `value` of EventType `key`, its `$ref`s resolved among `documents`.
fn validator(
    config: &Config,
    key: &(String, String),
    value: &Value,
    documents: &Arc<HashMap<String, Value>>,
) -> Result<Validator, ConfigError> {
    let err = |field: &str, message: String| config_error(config, key, field, message);
    let draft = draft_of(value).map_err(|m| err("spec.schemaData.$schema", m))?;
    let mut options = jsonschema::options()
        .with_draft(draft)
        .with_retriever(LocalSchemas(Arc::clone(documents)));
    if let Some(uri) = config
        .event_types
        .get(key)
        .and_then(|et| et.spec.schema.as_ref())
    {
        options = options.with_base_uri(strip_fragment(uri).to_owned());
    }
    options.build(value).map_err(|e| {
        let at = e.instance_path().to_string();
        let place = if at.is_empty() {
            String::new()
        } else {
            format!(" at {at}")
        };
        err(
            "spec.schemaData",
            format!("invalid JSON Schema{place}: {e}"),
        )
    })
}

impl Registry {
    /// Every configured EventType.
    pub fn types(&self) -> &[Arc<Registered>] {
        &self.types
    }

    /// The most specific EventType of `broker` for this type and source: an exact source
    /// first, then the longest prefix, then one without a source.
    pub fn find(&self, broker: &str, ty: &str, source: &str) -> Option<&Registered> {
        self.by_broker_type
            .get(broker)?
            .get(ty)?
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
