//! The front door (spec/security.md): who a request comes from and what it may do.
//!
//! - Authentication: a bearer token is an [`Identity`]'s static token (kept as its SHA-256,
//!   compared in constant time) or a JWT from a [`TokenIssuer`] (`jwt.rs`). A caller is a
//!   [`Principal`]: a subject and the scopes it was granted.
//! - Who may send to a Broker: Knative's EventPolicies and default authorization mode
//!   (`policy.rs`), decided before the body is read; the policies' filters are applied to the
//!   events by ingress ([`SendPermit`]).
//! - Who may operate: every route's required scope is in one table (`routes.rs`), applied by
//!   one middleware, which also refuses mutating API calls that are not JSON.
//!
//! The rules are rebuilt whole from the configuration at start and on every reload, so a
//! rotated token or key file takes effect without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use switchyard_core::CloudEvent;
use switchyard_core::auth::{Grant, Namespaces, Scope, subject_namespace};
use switchyard_core::config::Config;
use switchyard_core::resources::SubscriptionsApiFilter;

mod jwt;
mod policy;
pub(crate) mod routes;

pub use policy::{AuthorizationMode, SendPermit};

/// Whether an event passes a compiled filter.
pub type EventPredicate = Arc<dyn Fn(&CloudEvent) -> bool + Send + Sync>;

/// Compiles an EventPolicy's filters, or says why not.
pub type CompileFilters =
    dyn Fn(&[SubscriptionsApiFilter]) -> Result<EventPredicate, String> + Send + Sync;

/// Compiles Subscriptions API filters (the triggers crate's, given by whoever starts the
/// server, so that the broker does not depend on the filter engine).
#[derive(Clone)]
pub struct FilterCompiler(pub Arc<CompileFilters>);

impl std::fmt::Debug for FilterCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FilterCompiler")
    }
}

impl Default for FilterCompiler {
    fn default() -> Self {
        FilterCompiler(Arc::new(|filters: &[SubscriptionsApiFilter]| {
            if filters.is_empty() {
                Ok(Arc::new(|_: &CloudEvent| true) as EventPredicate)
            } else {
                Err("EventPolicy filters need the filter engine".to_owned())
            }
        }))
    }
}

/// The server's settings of the front door (`serve`'s flags).
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// What applies to a Broker no EventPolicy applies to, once callers are authenticated.
    pub default_mode: AuthorizationMode,
    /// Serve without any Identity or TokenIssuer on an address other than loopback
    /// (`--allow-unauthenticated`); without it such a configuration is refused.
    pub allow_unauthenticated: bool,
    /// Compiles EventPolicies' filters.
    pub filters: FilterCompiler,
    /// URL prefixes a dead-letter redrive may send to besides the triggers' own subscribers
    /// and dead-letter sinks (`--redrive-allow-uri`).
    pub redrive_allow_uris: Vec<String>,
}

/// Why the configuration's front door could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An Identity's token could not be read.
    #[error("Identity {name}: {message}")]
    Token {
        /// `namespace/name`.
        name: String,
        /// Why.
        message: String,
    },
    /// Two Identities have the same token.
    #[error("Identities {first} and {second} have the same token; each needs its own")]
    SameToken {
        /// One.
        first: String,
        /// The other.
        second: String,
    },
    /// A TokenIssuer's keys could not be read.
    #[error("TokenIssuer {name}: {message}")]
    Issuer {
        /// `namespace/name`.
        name: String,
        /// Why.
        message: String,
    },
    /// An EventPolicy's filters do not compile.
    #[error("EventPolicy {name}: spec.filters: {message}")]
    Filter {
        /// `namespace/name`.
        name: String,
        /// Why.
        message: String,
    },
    /// Nobody could authenticate, on an address other than loopback.
    #[error(
        "no Identity or TokenIssuer is configured, and {listen} is not a loopback address: add an Identity (a bearer token) or a TokenIssuer (JWTs) to the configuration, or pass --allow-unauthenticated to serve everyone (spec/security.md)"
    )]
    Unauthenticated {
        /// The address listened on.
        listen: std::net::SocketAddr,
    },
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The subject (an Identity's, or a JWT's `sub`).
    pub subject: String,
    /// What it may do.
    pub grants: Vec<Grant>,
    /// How it was authenticated: `token` or `jwt`.
    pub via: &'static str,
}

impl Principal {
    /// The namespace its subject names (`system:serviceaccount:{namespace}:{name}`).
    pub fn namespace(&self) -> Option<&str> {
        subject_namespace(&self.subject)
    }

    /// Whether it may do `scope` in `namespace` (`None`: across every namespace, as for
    /// `/metrics` and reloads). `admin` holds every scope.
    pub fn may(&self, scope: Scope, namespace: Option<&str>) -> bool {
        self.grants.iter().any(|g| {
            (g.scope == scope || g.scope == Scope::Admin)
                && match (&g.namespaces, namespace) {
                    (Namespaces::All, _) => true,
                    (Namespaces::Named(n), Some(ns)) => n == ns,
                    (Namespaces::Own, Some(ns)) => self.namespace() == Some(ns),
                    (_, None) => false,
                }
        })
    }
}

/// The caller of a request, as the middleware found it: `None` when it sent no credentials
/// (or authentication is off). Handlers read it from the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<Arc<Principal>>);

impl Caller {
    /// Who, for the audit log: the subject, or `anonymous`.
    pub fn who(&self) -> String {
        self.0
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |p| p.subject.clone())
    }
}

struct StaticToken {
    digest: [u8; 32],
    principal: Arc<Principal>,
}

/// The front door's rules, built whole from a configuration.
#[derive(Default)]
pub struct Auth {
    tokens: Vec<StaticToken>,
    issuers: Vec<jwt::Issuer>,
    policies: policy::Policies,
    /// Whether any Identity or TokenIssuer is configured: without one, nobody can be
    /// authenticated and the management API is open (loopback or `--allow-unauthenticated`).
    pub enabled: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("issuers", &self.issuers.len())
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Whether two digests are equal, in time that does not depend on where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    /// Builds the rules of `config`: reads every Identity's token and every TokenIssuer's key
    /// file, compiles the EventPolicies.
    pub fn build(config: &Config, options: &AuthOptions) -> Result<Auth, AuthError> {
        let mut tokens: Vec<StaticToken> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for ((ns, name), identity) in &config.identities {
            let id = switchyard_core::id::join(ns, name);
            let token = identity
                .spec
                .token
                .resolve()
                .map_err(|message| AuthError::Token {
                    name: id.clone(),
                    message,
                })?;
            let token = token.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                return Err(AuthError::Token {
                    name: id,
                    message: "the token is empty".to_owned(),
                });
            }
            let d = digest(token);
            if let Some(i) = tokens.iter().position(|t| same_digest(&t.digest, &d)) {
                return Err(AuthError::SameToken {
                    first: names[i].clone(),
                    second: id,
                });
            }
            tokens.push(StaticToken {
                digest: d,
                principal: Arc::new(Principal {
                    subject: identity.subject(),
                    grants: identity
                        .spec
                        .scopes
                        .iter()
                        .filter_map(|s| Grant::parse(s))
                        .collect(),
                    via: "token",
                }),
            });
            names.push(id);
        }
        let issuers = config
            .token_issuers
            .iter()
            .map(|((ns, name), issuer)| {
                jwt::Issuer::new(&issuer.spec).map_err(|message| AuthError::Issuer {
                    name: switchyard_core::id::join(ns, name),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let enabled = !tokens.is_empty() || !issuers.is_empty();
        let policies = policy::Policies::build(config, options, enabled)?;
        Ok(Auth {
            tokens,
            issuers,
            policies,
            enabled,
        })
    }

    /// Who sent `authorization` (the header's value): `Ok(None)` when it holds no credentials,
    /// or authentication is off; `Err(why)` when the credentials do not hold.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Arc<Principal>>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(value) = authorization else {
            return Ok(None);
        };
        let value = std::str::from_utf8(value).map_err(|_| "the header is not UTF-8")?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err("use the Bearer scheme: `Authorization: Bearer TOKEN`".to_owned()),
        };
        if token.is_empty() {
            return Err("the token is empty".to_owned());
        }
        let d = digest(token);
        // Every configured token is compared, so the time taken does not say which matched.
        let mut found = None;
        for t in &self.tokens {
            if same_digest(&t.digest, &d) {
                found = Some(Arc::clone(&t.principal));
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        if !self.issuers.is_empty() && token.bytes().filter(|b| *b == b'.').count() == 2 {
            return jwt::verify(&self.issuers, token, &d).await.map(Some);
        }
        Err("no Identity has this token".to_owned())
    }

    /// Whether `caller` may send to the Broker `namespace/name`, decided before its body is
    /// read.
    pub fn may_send(
        &self,
        caller: &Caller,
        namespace: &str,
        name: &str,
    ) -> Result<SendPermit, crate::problem::Problem> {
        self.policies.may_send(caller, namespace, name)
    }

    /// Whether anything decides who may send: callers can be authenticated, or a Broker has
    /// an EventPolicy. When not, every Broker is open, as before authentication existed.
    pub fn checks_senders(&self) -> bool {
        self.enabled || !self.policies.is_empty()
    }

    /// How many EventPolicies apply to each Broker (for logs).
    pub fn policies_by_broker(&self) -> BTreeMap<String, usize> {
        self.policies.counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str, grants: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            grants: grants.iter().filter_map(|g| Grant::parse(g)).collect(),
            via: "token",
        }
    }

    #[test]
    fn an_unqualified_scope_holds_in_the_subjects_namespace_only() {
        let p = principal("system:serviceaccount:shop:ops", &["deadletters:read"]);
        assert!(p.may(Scope::DeadLettersRead, Some("shop")));
        assert!(!p.may(Scope::DeadLettersRead, Some("bank")));
        assert!(!p.may(Scope::DeadLettersRead, None));
        assert!(!p.may(Scope::DeadLettersPurge, Some("shop")));
        let outsider = principal("alice", &["deadletters:read"]);
        assert!(!outsider.may(Scope::DeadLettersRead, Some("shop")));
    }

    #[test]
    fn admin_everywhere_holds_every_scope_everywhere() {
        let p = principal("alice", &["admin@*"]);
        assert!(p.may(Scope::MetricsRead, None));
        assert!(p.may(Scope::DeadLettersPurge, Some("bank")));
        let q = principal("bob", &["metrics:read@shop"]);
        assert!(!q.may(Scope::MetricsRead, None));
    }

    #[test]
    fn digests_compare_whole() {
        let a = digest("one");
        let b = digest("two");
        assert!(same_digest(&a, &a));
        assert!(!same_digest(&a, &b));
    }
}
