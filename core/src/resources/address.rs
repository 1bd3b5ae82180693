//! Where a Destination's `ref` points, as Knative resolves addressables: the kinds of the
//! configuration itself (Broker, Sink, KafkaSink, NatsSink), an [`AddressTable`] entry, or for
//! a Kubernetes Service or a Knative Service the cluster's DNS name,
//! `http://{name}.{namespace}.svc.{clusterDomain}`; a `uri` next to a `ref` is resolved
//! against the ref's URL. The resolution itself is [`crate::config::Config::resolve`].

use serde::{Deserialize, Serialize};

use super::meta::{FieldError, KReference, ObjectMeta, dns_label, validate_http_url};

/// The cluster domain when no AddressTable sets one (Knative's default too).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// `switchyard.dev/v1` AddressTable: URLs for refs to what the configuration does not define
/// (Knative or Kubernetes Services outside a cluster, Sequences, custom addressables), so the
/// same manifests run on a laptop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddressTable {
    /// Identity of the table.
    pub metadata: ObjectMeta,
    /// Its entries.
    pub spec: AddressTableSpec,
}

/// The body of an AddressTable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddressTableSpec {
    /// The domain in `http://{name}.{namespace}.svc.{clusterDomain}`, the address of a ref to
    /// a Kubernetes Service or a Knative Service that no table lists; default `cluster.local`.
    /// At most one table sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
    /// The entries: a ref and its URL.
    #[serde(default)]
    pub addresses: Vec<Address>,
}

/// One entry of an AddressTable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Address {
    /// The resource, as refs name it: `kind` and `name`; `namespace`, the table's when
    /// omitted; `apiVersion`, when given, must have the ref's group (the version is not
    /// compared).
    #[serde(rename = "ref")]
    pub reference: KReference,
    /// Its absolute `http` or `https` URL.
    pub url: String,
}

/// What a Destination resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Broker of the configuration: its ingress.
    Broker {
        /// The Broker's namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A KafkaSink or NatsSink of the configuration.
    Stream {
        /// `KafkaSink` or `NatsSink`.
        kind: String,
        /// The sink's namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// An HTTP endpoint.
    Url(String),
}

/// The API group of an `apiVersion` (`serving.knative.dev/v1` → `serving.knative.dev`, the
/// core `v1` → ``).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Whether `r` names a Kubernetes Service (`v1`) or a Knative Service
/// (`serving.knative.dev/*`), which resolve to the cluster's DNS name.
pub fn is_service(r: &KReference) -> bool {
    r.kind == "Service"
        && matches!(
            r.api_version.as_deref().map(api_group),
            None | Some("" | "serving.knative.dev")
        )
}

/// The cluster DNS address of a Service (Knative's, for both kinds).
pub fn service_url(name: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("http://{name}.{namespace}.svc.{cluster_domain}")
}

/// Resolves `uri`, relative, against `base` (RFC 3986, as Knative does).
pub fn join(base: &str, uri: &str) -> Result<String, String> {
    let base = url::Url::parse(base).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    base.join(uri)
        .map(String::from)
        .map_err(|e| format!("`{uri}` does not resolve against `{base}`: {e}"))
}

impl Address {
    /// Whether this entry is the resource `r` names, in namespace `ns` (the ref's), for a
    /// table in namespace `table_ns`.
    pub fn matches(&self, r: &KReference, ns: &str, table_ns: &str) -> bool {
        let e = &self.reference;
        e.kind == r.kind
            && e.name == r.name
            && e.namespace.as_deref().unwrap_or(table_ns) == ns
            && match (&e.api_version, &r.api_version) {
                (Some(a), Some(b)) => api_group(a) == api_group(b),
                _ => true,
            }
    }
}

impl AddressTable {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        if let Some(domain) = &self.spec.cluster_domain {
            let ok = !domain.is_empty()
                && domain
                    .split('.')
                    .all(|label| dns_label("spec.clusterDomain", label).is_ok());
            if !ok {
                return Err(FieldError::new(
                    "spec.clusterDomain",
                    format!("`{domain}` is not a DNS domain"),
                ));
            }
        }
        for (i, a) in self.spec.addresses.iter().enumerate() {
            let field = format!("spec.addresses[{i}]");
            if a.reference.kind.is_empty() || a.reference.name.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.ref"),
                    "give the `kind` and `name` of the resource",
                ));
            }
            validate_http_url(&format!("{field}.url"), &a.url)?;
            let same = self.spec.addresses[..i].iter().any(|b| {
                b.matches(
                    &a.reference,
                    a.reference
                        .namespace
                        .as_deref()
                        .unwrap_or(&self.metadata.namespace),
                    &self.metadata.namespace,
                )
            });
            if same {
                return Err(FieldError::new(
                    format!("{field}.ref"),
                    "the table lists this resource twice",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(api: Option<&str>, kind: &str) -> KReference {
        KReference {
            api_version: api.map(str::to_owned),
            kind: kind.to_owned(),
            name: "display".to_owned(),
            namespace: None,
        }
    }

    #[test]
    fn services_of_both_kinds_resolve_to_the_cluster_dns_name() {
        assert!(is_service(&r(Some("v1"), "Service")));
        assert!(is_service(&r(Some("serving.knative.dev/v1"), "Service")));
        assert!(is_service(&r(None, "Service")));
        assert!(!is_service(&r(Some("example.com/v1"), "Service")));
        assert!(!is_service(&r(Some("flows.knative.dev/v1"), "Sequence")));
        assert_eq!(
            service_url("display", "apps", DEFAULT_CLUSTER_DOMAIN),
            "http://display.apps.svc.cluster.local"
        );
    }

    #[test]
    fn a_relative_uri_resolves_against_the_ref() {
        let base = "http://display.apps.svc.cluster.local";
        assert_eq!(
            join(base, "/events").as_deref(),
            Ok("http://display.apps.svc.cluster.local/events")
        );
        assert_eq!(
            join(base, "events?x=1").as_deref(),
            Ok("http://display.apps.svc.cluster.local/events?x=1")
        );
        assert_eq!(
            join("http://h:9000/fn/", "v2").as_deref(),
            Ok("http://h:9000/fn/v2")
        );
    }

    #[test]
    fn entries_match_by_group_kind_namespace_and_name() {
        let entry = Address {
            reference: r(Some("serving.knative.dev/v1"), "Service"),
            url: "http://127.0.0.1:9000/".to_owned(),
        };
        assert!(entry.matches(
            &r(Some("serving.knative.dev/v1beta1"), "Service"),
            "default",
            "default"
        ));
        assert!(entry.matches(&r(None, "Service"), "default", "default"));
        assert!(!entry.matches(&r(Some("v1"), "Service"), "default", "default"));
        assert!(!entry.matches(
            &r(Some("serving.knative.dev/v1"), "Service"),
            "apps",
            "default"
        ));
        assert!(!entry.matches(
            &r(Some("serving.knative.dev/v1"), "Route"),
            "default",
            "default"
        ));
    }
}
