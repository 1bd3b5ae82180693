//! What every resource shares: metadata, field errors, durations, references and
//! destinations (`ref` or `uri`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use super::*;

/// A validation failure inside one resource: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field, such as `spec.delivery.retry`.
    pub field: String,
    /// What is wrong, in lowercase.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `metadata` of every resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The resource's name: a DNS-1123 label (lowercase letters, digits and `-`, at most 63).
    pub name: String,
    /// The namespace; `default` when omitted.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Free-form labels, kept and shown, not interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations, kept and shown, not interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

pub(crate) fn dns_label(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "`{value}` is not a valid name: use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
            ),
        ))
    }
}

/// Checks a DNS subdomain name (RFC 1123, as Kubernetes validates most object names): at
/// most 253 characters, dot-separated labels of lowercase letters, digits and `-`.
pub(crate) fn dns_subdomain(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = value.len() <= 253 && value.split('.').all(|label| dns_label("", label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "`{value}` is not a valid name: use at most 253 lowercase letters, digits, `-` and `.`, each part between dots starting and ending with a letter or digit"
            ),
        ))
    }
}

impl ObjectMeta {
    /// Checks the name and namespace as Kubernetes does for custom resources: the name a DNS
    /// subdomain (Knative's EventTypes are named `dev.knative.source.github.push`, and any of
    /// its kinds may have dots), the namespace a DNS label.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        dns_subdomain("metadata.name", &self.name)?;
        dns_label("metadata.namespace", &self.namespace)
    }
}

/// A duration, written as ISO 8601 (`PT0.5S`, `PT10M`, `P1D`, Knative's form) or as a number
/// with a unit (`500ms`, `10s`, `5m`, `2h`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// Parses either accepted form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let err = || {
            format!(
                "`{text}` is not a duration: use ISO 8601 such as `PT0.5S` or `P1D`, or a number with a unit such as `500ms`, `10s`, `5m`, `2h`, `7d`"
            )
        };
        if let Some(rest) = t.strip_prefix('P').or_else(|| t.strip_prefix('p')) {
            let mut total = 0f64;
            let mut in_time = false;
            let mut num = String::new();
            let mut any = false;
            for c in rest.chars() {
                match c.to_ascii_uppercase() {
                    'T' if !in_time && num.is_empty() => in_time = true,
                    d if d.is_ascii_digit() || d == '.' || d == ',' => {
                        num.push(if d == ',' { '.' } else { d });
                    }
                    unit => {
                        let n: f64 = num.parse().map_err(|_| err())?;
                        num.clear();
                        any = true;
                        total += n * match (unit, in_time) {
                            ('W', false) => 604_800.0,
                            ('D', false) => 86_400.0,
                            ('H', true) => 3_600.0,
                            ('M', true) => 60.0,
                            ('S', true) => 1.0,
                            _ => return Err(err()),
                        };
                    }
                }
            }
            if !num.is_empty() || !any {
                return Err(err());
            }
            return StdDuration::try_from_secs_f64(total)
                .map(Duration)
                .map_err(|_| err());
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (n, unit) = t.split_at(split);
        let n: f64 = n.parse().map_err(|_| err())?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(err()),
        };
        StdDuration::try_from_secs_f64(secs)
            .map(Duration)
            .map_err(|_| err())
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "PT{}S", ms / 1000)
        } else {
            write!(f, "PT{}.{:03}S", ms / 1000, ms % 1000)
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A reference to another resource (Knative `KReference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KReference {
    /// `apiVersion` of the referenced resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `kind` of the referenced resource: one of the configuration (`Broker`, `Sink`,
    /// `KafkaSink`, `NatsSink`), a Kubernetes or Knative `Service`, or any kind an
    /// AddressTable lists.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace; the referring resource's namespace when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where events go (Knative `Destination`): a `uri`, or a `ref` to a named resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    /// Reference to what receives the events: a `Broker`, `Sink`, `KafkaSink` or `NatsSink`
    /// of the configuration, a Kubernetes or Knative `Service`, or anything an AddressTable
    /// lists ([`crate::config::Config::resolve`]).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// An absolute `http` or `https` URL; with a `ref`, a relative one, resolved against the
    /// ref's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Knative's `CACerts`: PEM CA certificates trusted, besides the system's, for TLS to
    /// this destination (a subscriber behind a private CA).
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// Knative's OIDC audience: not supported.
    #[serde(default, skip_serializing)]
    pub audience: Option<serde_json::Value>,
}

pub(crate) fn unsupported(field: &str, what: &str) -> FieldError {
    FieldError::new(
        field,
        format!("this Knative field is not supported by switchyard ({what}); remove it"),
    )
}

/// Checks an absolute `http`/`https` URL.
pub fn validate_http_url(field: &str, uri: &str) -> Result<(), FieldError> {
    let lower = uri.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !uri.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(FieldError::new(
            field,
            format!("`{uri}` is not an absolute http:// or https:// URL"),
        )),
    }
}

impl Destination {
    pub(crate) fn validate(&self, field: &str) -> Result<(), FieldError> {
        if let Some(pem) = &self.ca_certs
            && !pem.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(FieldError::new(
                format!("{field}.CACerts"),
                "give PEM certificates (`-----BEGIN CERTIFICATE-----` blocks)",
            ));
        }
        if self.audience.is_some() {
            return Err(unsupported(&format!("{field}.audience"), "OIDC audiences"));
        }
        match (&self.reference, &self.uri) {
            (None, None) => Err(FieldError::new(field, "give `ref` or `uri`")),
            (None, Some(uri)) => validate_http_url(&format!("{field}.uri"), uri),
            (Some(r), uri) => {
                if r.kind.is_empty() {
                    return Err(FieldError::new(
                        format!("{field}.ref.kind"),
                        "give the kind of the resource",
                    ));
                }
                dns_subdomain(&format!("{field}.ref.name"), &r.name)?;
                match uri {
                    Some(uri) if validate_http_url("", uri).is_ok() => Err(FieldError::new(
                        format!("{field}.uri"),
                        format!(
                            "`{uri}` is absolute; with a `ref` the uri is relative to the ref's address (Knative's rule): give one or the other"
                        ),
                    )),
                    _ => Ok(()),
                }
            }
        }
    }
}
