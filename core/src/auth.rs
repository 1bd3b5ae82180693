//! The front door's resources (spec/security.md): who a caller is — an `Identity` holding a
//! static bearer token, or a JWT from a `TokenIssuer` — what they may operate (scopes, per
//! namespace), and Knative's `EventPolicy`, who may send to a Broker.
//!
//! A subject is a string as an OIDC `sub` claim carries it. Kubernetes' service-account form
//! `system:serviceaccount:{namespace}:{name}` gives the subject a namespace, which is what
//! Knative's `allow-same-namespace` mode and an unqualified scope compare with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::{Duration, FieldError, KReference, ObjectMeta, SubscriptionsApiFilter};
use crate::sources::SecretValue;

/// The subject prefix of a Kubernetes service account.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The namespace a subject of the form `system:serviceaccount:{namespace}:{name}` is in.
pub fn subject_namespace(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then_some(ns)
}

/// What a caller may do on the management API and read paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read stored events with their data (`tail`, `…/events`) and the event types.
    EventsRead,
    /// List dead letters (without the events' data).
    DeadLettersRead,
    /// Show one dead letter with its event and every attempt.
    DeadLettersReadData,
    /// Redrive dead letters.
    DeadLettersRedrive,
    /// Delete and purge dead letters.
    DeadLettersPurge,
    /// Scrape `/metrics`.
    MetricsRead,
    /// Read brokers, triggers and sources with their status.
    ResourcesRead,
    /// Pause and resume triggers.
    TriggersOperate,
    /// Everything above, plus reloading the configuration and reading the audit log.
    Admin,
}

impl Scope {
    /// Every scope, with its name.
    pub const ALL: [(Scope, &'static str); 9] = [
        (Scope::EventsRead, "events:read"),
        (Scope::DeadLettersRead, "deadletters:read"),
        (Scope::DeadLettersReadData, "deadletters:read-data"),
        (Scope::DeadLettersRedrive, "deadletters:redrive"),
        (Scope::DeadLettersPurge, "deadletters:purge"),
        (Scope::MetricsRead, "metrics:read"),
        (Scope::ResourcesRead, "resources:read"),
        (Scope::TriggersOperate, "triggers:operate"),
        (Scope::Admin, "admin"),
    ];

    /// The scope's name, as written in configuration and tokens.
    pub fn as_str(self) -> &'static str {
        Scope::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("admin", |(_, n)| n)
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }
}

/// Where a granted scope holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespaces {
    /// The caller's own namespace (from its subject); nowhere if it has none.
    Own,
    /// This namespace.
    Named(String),
    /// Every namespace (`@*`).
    All,
}

/// A scope and where it holds: `deadletters:read` (the caller's namespace),
/// `deadletters:read@shop`, `admin@*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    /// What.
    pub scope: Scope,
    /// Where.
    pub namespaces: Namespaces,
}

impl Grant {
    /// Parses `SCOPE`, `SCOPE@NAMESPACE` or `SCOPE@*`; `None` for anything else (a JWT's
    /// `scope` claim may hold scopes meant for other services, which are passed over).
    pub fn parse(text: &str) -> Option<Grant> {
        let (scope, namespaces) = match text.split_once('@') {
            None => (text, Namespaces::Own),
            Some((s, "*")) => (s, Namespaces::All),
            Some((s, ns)) => {
                crate::resources::dns_label("", ns).ok()?;
                (s, Namespaces::Named(ns.to_owned()))
            }
        };
        Some(Grant {
            scope: Scope::parse(scope)?,
            namespaces,
        })
    }
}

fn grants(field: &str, scopes: &[String]) -> Result<(), FieldError> {
    for (i, s) in scopes.iter().enumerate() {
        if Grant::parse(s).is_none() {
            let names: Vec<&str> = Scope::ALL.iter().map(|(_, n)| *n).collect();
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!(
                    "`{s}` is not a scope: use one of {}, optionally followed by `@NAMESPACE` or `@*`",
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// `switchyard.dev/v1` Identity: a caller known by a static bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Identity {
    /// Name and namespace; the subject defaults to the service account they name.
    pub metadata: ObjectMeta,
    /// The token and what it may do.
    pub spec: IdentitySpec,
}

/// The spec of an [`Identity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentitySpec {
    /// The bearer token, read when the configuration is loaded or reloaded; only its SHA-256
    /// is kept.
    pub token: SecretValue,
    /// The subject EventPolicies' `from.sub` match; default
    /// `system:serviceaccount:{namespace}:{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Scopes on the management API: `deadletters:read` (in the subject's namespace),
    /// `deadletters:read@shop`, `admin@*`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl Identity {
    /// The subject the token authenticates as.
    pub fn subject(&self) -> String {
        self.spec.subject.clone().unwrap_or_else(|| {
            format!(
                "{SERVICE_ACCOUNT_PREFIX}{}:{}",
                self.metadata.namespace, self.metadata.name
            )
        })
    }

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        self.spec.token.validate("spec.token")?;
        if self.spec.subject.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::new("spec.subject", "must not be empty"));
        }
        grants("spec.scopes", &self.spec.scopes)
    }
}

/// `switchyard.dev/v1` TokenIssuer: an OIDC issuer whose JWTs are accepted as bearer tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenIssuer {
    /// Name and namespace (the namespace plays no part in what its tokens may do).
    pub metadata: ObjectMeta,
    /// The issuer, its keys and the claims read.
    pub spec: TokenIssuerSpec,
}

/// The spec of a [`TokenIssuer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenIssuerSpec {
    /// The `iss` claim a token must carry, exactly.
    pub issuer: String,
    /// The `aud` values accepted; a token must name at least one.
    pub audiences: Vec<String>,
    /// Where the issuer's public keys (a JWK Set) are.
    pub jwks: JwksSource,
    /// The claim holding the token's scopes: a space-separated string or an array
    /// (default `scope`, OAuth 2.0's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_claim: Option<String>,
    /// How far `exp` and `nbf` may be off (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Duration>,
}

/// A JWK Set, from a file or a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwksSource {
    /// A file holding the JWK Set, read when the configuration is loaded or reloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An `http(s)` URL serving the JWK Set (an issuer's `jwks_uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long keys fetched from `url` are used before they are fetched again (default 5
    /// minutes); a token naming a key not in the set fetches it sooner, at most every 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
}

/// The default of [`TokenIssuerSpec::scopes_claim`].
pub const DEFAULT_SCOPES_CLAIM: &str = "scope";
/// The default of [`TokenIssuerSpec::leeway`], in seconds.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// The default of [`JwksSource::refresh_interval`], in seconds.
pub const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;

impl TokenIssuer {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let s = &self.spec;
        if s.issuer.is_empty() {
            return Err(FieldError::new("spec.issuer", "must not be empty"));
        }
        if s.audiences.is_empty() || s.audiences.iter().any(String::is_empty) {
            return Err(FieldError::new(
                "spec.audiences",
                "name at least one audience, none empty",
            ));
        }
        match (&s.jwks.file, &s.jwks.url) {
            (Some(f), None) if !f.is_empty() => {}
            (None, Some(u)) => {
                crate::resources::validate_http_url("spec.jwks.url", u)?;
                let host = url::Url::parse(u)
                    .ok()
                    .and_then(|p| p.host_str().map(str::to_owned))
                    .unwrap_or_default();
                let loopback = host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !u.to_ascii_lowercase().starts_with("https://") && !loopback {
                    return Err(FieldError::new(
                        "spec.jwks.url",
                        "keys are fetched over https (plain http only from loopback): whoever sits between could hand out their own",
                    ));
                }
            }
            _ => {
                return Err(FieldError::new(
                    "spec.jwks",
                    "give exactly one of `file` or `url`",
                ));
            }
        }
        if s.scopes_claim.as_deref().is_some_and(str::is_empty) {
            return Err(FieldError::new("spec.scopesClaim", "must not be empty"));
        }
        Ok(())
    }
}

/// `eventing.knative.dev/v1alpha1` EventPolicy: who may send to the Brokers it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventPolicy {
    /// Name and namespace; a policy applies to Brokers of its own namespace.
    pub metadata: ObjectMeta,
    /// To whom, from whom, which events.
    #[serde(default)]
    pub spec: EventPolicySpec,
}

/// The spec of an [`EventPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventPolicySpec {
    /// The Brokers the policy applies to; empty: every Broker of its namespace.
    #[serde(default)]
    pub to: Vec<EventPolicyTo>,
    /// Who is allowed: subjects (`*` at the end matches any suffix) or resources.
    #[serde(default)]
    pub from: Vec<EventPolicyFrom>,
    /// Subscriptions API filters every event of an allowed request must pass.
    #[serde(default)]
    pub filters: Vec<SubscriptionsApiFilter>,
}

/// One entry of `spec.to`: a Broker by name, or Brokers by labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventPolicyTo {
    /// A Broker by name.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// Brokers whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<PolicySelector>,
}

/// A Kubernetes label selector, with the kind it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySelector {
    /// The selected kind's `apiVersion` (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The selected kind (optional; only Brokers take events here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Labels that must all be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values (`In`, `NotIn`).
    #[serde(default)]
    pub values: Vec<String>,
}

impl PolicySelector {
    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => got.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => got.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => got.is_some(),
                    _ => got.is_none(),
                }
            })
    }

    /// Whether the selector can select a Broker at all.
    pub fn selects_brokers(&self) -> bool {
        self.kind.as_deref().is_none_or(|k| k == "Broker")
    }
}

/// One entry of `spec.from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventPolicyFrom {
    /// A resource that sends (a source of this configuration: see spec/security.md).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// A subject; a trailing `*` matches any suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

impl EventPolicyFrom {
    /// Whether `subject` is allowed by this entry.
    pub fn allows(&self, subject: &str) -> bool {
        match &self.sub {
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => subject.starts_with(prefix),
                None => subject == pattern,
            },
            None => false,
        }
    }
}

impl EventPolicy {
    /// Whether the policy applies to the Broker `name` of its namespace with `labels`.
    pub fn applies_to(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.spec.to.is_empty()
            || self.spec.to.iter().any(|t| {
                t.reference
                    .as_ref()
                    .is_some_and(|r| r.kind == "Broker" && r.name == name)
                    || t.selector
                        .as_ref()
                        .is_some_and(|s| s.selects_brokers() && s.matches(labels))
            })
    }

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        for (i, to) in self.spec.to.iter().enumerate() {
            let field = format!("spec.to[{i}]");
            match (&to.reference, &to.selector) {
                (Some(r), None) => {
                    if r.kind != "Broker" {
                        return Err(FieldError::new(
                            format!("{field}.ref.kind"),
                            format!(
                                "`{}` takes no events in Switchyard: an EventPolicy applies to Brokers",
                                r.kind
                            ),
                        ));
                    }
                    crate::resources::dns_subdomain(&format!("{field}.ref.name"), &r.name)?;
                    if r.namespace
                        .as_ref()
                        .is_some_and(|ns| *ns != self.metadata.namespace)
                    {
                        return Err(FieldError::new(
                            format!("{field}.ref.namespace"),
                            "an EventPolicy applies to Brokers of its own namespace",
                        ));
                    }
                }
                (None, Some(s)) => {
                    for (j, e) in s.match_expressions.iter().enumerate() {
                        let ok = match e.operator.as_str() {
                            "In" | "NotIn" => !e.values.is_empty(),
                            "Exists" | "DoesNotExist" => e.values.is_empty(),
                            _ => false,
                        };
                        if !ok {
                            return Err(FieldError::new(
                                format!("{field}.selector.matchExpressions[{j}]"),
                                "use `In` or `NotIn` with values, `Exists` or `DoesNotExist` without",
                            ));
                        }
                    }
                }
                _ => {
                    return Err(FieldError::new(
                        field,
                        "give exactly one of `ref` or `selector`",
                    ));
                }
            }
        }
        for (i, from) in self.spec.from.iter().enumerate() {
            let field = format!("spec.from[{i}]");
            match (&from.reference, &from.sub) {
                (Some(r), None) => {
                    crate::resources::dns_subdomain(&format!("{field}.ref.name"), &r.name)?;
                }
                (None, Some(s)) if !s.is_empty() => {}
                _ => {
                    return Err(FieldError::new(
                        field,
                        "give exactly one of `ref` or `sub` (not empty)",
                    ));
                }
            }
        }
        for (i, f) in self.spec.filters.iter().enumerate() {
            f.validate(&format!("spec.filters[{i}]"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_read_with_and_without_a_namespace() {
        assert_eq!(
            Grant::parse("deadletters:read"),
            Some(Grant {
                scope: Scope::DeadLettersRead,
                namespaces: Namespaces::Own
            })
        );
        assert_eq!(
            Grant::parse("admin@*").map(|g| g.namespaces),
            Some(Namespaces::All)
        );
        assert_eq!(
            Grant::parse("events:read@shop").map(|g| g.namespaces),
            Some(Namespaces::Named("shop".into()))
        );
        assert_eq!(Grant::parse("openid"), None);
        assert_eq!(Grant::parse("admin@Not_A_Namespace"), None);
    }

    #[test]
    fn subjects_name_their_namespace_only_as_service_accounts() {
        assert_eq!(
            subject_namespace("system:serviceaccount:shop:ci"),
            Some("shop")
        );
        assert_eq!(subject_namespace("system:serviceaccount:shop:"), None);
        assert_eq!(subject_namespace("alice@example.com"), None);
    }

    #[test]
    fn a_trailing_star_matches_any_suffix() {
        let from = |s: &str| EventPolicyFrom {
            reference: None,
            sub: Some(s.into()),
        };
        assert!(from("system:serviceaccount:shop:*").allows("system:serviceaccount:shop:ci"));
        assert!(!from("system:serviceaccount:shop:*").allows("system:serviceaccount:bank:ci"));
        assert!(from("alice").allows("alice"));
        assert!(!from("alice").allows("alice2"));
    }
}
