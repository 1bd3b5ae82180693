//! The EventType (Knative `eventing.knative.dev/v1beta2`) and how it matches an event.

use serde::{Deserialize, Serialize};

use super::*;

/// `spec` of an EventType (Knative `eventing.knative.dev/v1beta2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventTypeSpec {
    /// The CloudEvents `type` this EventType describes (matched exactly).
    #[serde(rename = "type")]
    pub ty: String,
    /// The CloudEvents `source`: matched exactly, or as a prefix when it ends with `*`; any
    /// source when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An absolute URI naming the schema of the data: what events give as `dataschema`, and
    /// what other schemas `$ref`. Never fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The JSON Schema (draft 7 or 2020-12) of the data, inline: a mapping, or a string
    /// holding JSON (Knative's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_data: Option<serde_json::Value>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The Broker whose ingress this EventType applies to; without one it is only listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
}

/// An EventType: a kind of event a broker takes, and the schema of its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventType {
    /// Identity of the event type.
    pub metadata: ObjectMeta,
    /// What it describes.
    pub spec: EventTypeSpec,
}

impl EventType {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        if spec.ty.trim().is_empty() {
            return Err(FieldError::new("spec.type", "must not be empty"));
        }
        if let Some(source) = &spec.source
            && source.is_empty()
        {
            return Err(FieldError::new(
                "spec.source",
                "must not be empty; leave it out to match any source",
            ));
        }
        if let Some(uri) = &spec.schema {
            crate::validate::absolute_uri("schema", uri)
                .map_err(|e| FieldError::new("spec.schema", e.to_string()))?;
        }
        self.schema_value()
            .map_err(|m| FieldError::new("spec.schemaData", m))?;
        if let Some(r) = &spec.reference {
            // Knative's EventTypes reference whatever produces or consumes the type (a Broker,
            // a Channel, a Knative Service); only a Broker's is enforced, the others listed.
            dns_subdomain("spec.reference.name", &r.name)?;
            if let Some(ns) = &r.namespace {
                dns_label("spec.reference.namespace", ns)?;
            }
        }
        Ok(())
    }

    /// The inline schema as JSON: `schemaData` as given, or parsed when it is a string.
    pub fn schema_value(&self) -> Result<Option<serde_json::Value>, String> {
        match &self.spec.schema_data {
            None => Ok(None),
            Some(serde_json::Value::String(text)) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| format!("the string is not JSON: {e}")),
            Some(v @ (serde_json::Value::Object(_) | serde_json::Value::Bool(_))) => {
                Ok(Some(v.clone()))
            }
            Some(_) => {
                Err("must be a JSON Schema: a mapping, a boolean, or a string holding JSON".into())
            }
        }
    }

    /// The referenced broker as (namespace, name), if the reference is to a Broker.
    pub fn broker(&self) -> Option<(String, String)> {
        self.spec
            .reference
            .as_ref()
            .filter(|r| r.kind == "Broker")
            .map(|r| {
                (
                    r.namespace
                        .clone()
                        .unwrap_or_else(|| self.metadata.namespace.clone()),
                    r.name.clone(),
                )
            })
    }

    /// Whether an event `source` matches `spec.source`.
    pub fn source_matches(&self, source: &str) -> bool {
        match self.spec.source.as_deref() {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => source.starts_with(prefix),
                None => source == p,
            },
        }
    }
}
