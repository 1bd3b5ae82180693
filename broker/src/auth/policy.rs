//! Who may send to a Broker: Knative's EventPolicies and its `default-authorization-mode`.
//!
//! A Broker one or more EventPolicies apply to takes a request when its caller's subject is in
//! the `from` of at least one of them, and then each event when it passes every filter of at
//! least one of those. A Broker no policy applies to follows the default mode — but only once
//! callers can be authenticated at all (an Identity or a TokenIssuer is configured); before
//! that it is open, as Knative's brokers are with OIDC off.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_core::CloudEvent;
use switchyard_core::config::Config;

use super::{AuthError, AuthOptions, Caller, EventPredicate};
use crate::problem::Problem;

/// Knative's `default-authorization-mode`: what applies to a Broker no EventPolicy applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Only callers whose subject is in the Broker's namespace (Knative's default).
    #[default]
    AllowSameNamespace,
    /// Every caller, authenticated or not.
    AllowAll,
    /// Nobody: every Broker needs an EventPolicy.
    DenyAll,
}

impl AuthorizationMode {
    /// Parses Knative's spelling: `allow-same-namespace`, `allow-all`, `deny-all`.
    pub fn parse(text: &str) -> Option<AuthorizationMode> {
        match text {
            "allow-same-namespace" => Some(AuthorizationMode::AllowSameNamespace),
            "allow-all" => Some(AuthorizationMode::AllowAll),
            "deny-all" => Some(AuthorizationMode::DenyAll),
            _ => None,
        }
    }
}

/// What a request that may send must still hold its events to: the filters of the policies
/// that let it in (an event passes when it passes every filter of at least one of them).
#[derive(Clone, Default)]
pub struct SendPermit {
    /// One entry per policy that let the caller in; empty: no filter.
    filters: Vec<(String, EventPredicate)>,
}

impl std::fmt::Debug for SendPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPermit")
            .field("policies", &self.filters.len())
            .finish()
    }
}

impl SendPermit {
    /// Whether `event` may be stored; otherwise the policies it failed.
    pub fn check(&self, event: &CloudEvent) -> Result<(), String> {
        if self.filters.is_empty() || self.filters.iter().any(|(_, f)| f(event)) {
            return Ok(());
        }
        let names: Vec<&str> = self.filters.iter().map(|(n, _)| n.as_str()).collect();
        Err(names.join(", "))
    }
}

struct Compiled {
    /// `namespace/name`.
    name: String,
    from: Vec<switchyard_core::auth::EventPolicyFrom>,
    /// `None` when the policy has no filters.
    filter: Option<EventPredicate>,
}

/// The policies of each Broker, and the mode for the others.
#[derive(Default)]
pub(crate) struct Policies {
    by_broker: HashMap<String, Vec<Arc<Compiled>>>,
    mode: AuthorizationMode,
    enabled: bool,
}

impl Policies {
    pub(crate) fn build(
        config: &Config,
        options: &AuthOptions,
        enabled: bool,
    ) -> Result<Policies, AuthError> {
        let mut compiled = Vec::new();
        for ((ns, name), p) in &config.event_policies {
            let id = switchyard_core::id::join(ns, name);
            let filter = if p.spec.filters.is_empty() {
                None
            } else {
                Some(
                    (options.filters.0)(&p.spec.filters).map_err(|message| AuthError::Filter {
                        name: id.clone(),
                        message,
                    })?,
                )
            };
            compiled.push((
                ns.clone(),
                p,
                Arc::new(Compiled {
                    name: id,
                    from: p.spec.from.clone(),
                    filter,
                }),
            ));
        }
        let mut by_broker: HashMap<String, Vec<Arc<Compiled>>> = HashMap::new();
        for ((ns, name), broker) in &config.brokers {
            let applying: Vec<Arc<Compiled>> = compiled
                .iter()
                .filter(|(pns, p, _)| pns == ns && p.applies_to(name, &broker.metadata.labels))
                .map(|(_, _, c)| Arc::clone(c))
                .collect();
            if !applying.is_empty() {
                by_broker.insert(switchyard_core::id::join(ns, name), applying);
            }
        }
        Ok(Policies {
            by_broker,
            mode: options.default_mode,
            enabled,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_broker.is_empty()
    }

    pub(crate) fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.by_broker
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    pub(crate) fn may_send(
        &self,
        caller: &Caller,
        namespace: &str,
        name: &str,
    ) -> Result<SendPermit, Problem> {
        let id = switchyard_core::id::join(namespace, name);
        let principal = caller.0.as_deref();
        let Some(policies) = self.by_broker.get(&id) else {
            if !self.enabled {
                return Ok(SendPermit::default());
            }
            return match (self.mode, principal) {
                (AuthorizationMode::AllowAll, _) => Ok(SendPermit::default()),
                (_, None) => Err(Problem::unauthenticated(None)),
                (AuthorizationMode::AllowSameNamespace, Some(p))
                    if p.namespace() == Some(namespace) =>
                {
                    Ok(SendPermit::default())
                }
                (AuthorizationMode::AllowSameNamespace, Some(p)) => {
                    Err(Problem::forbidden(format!(
                        "`{}` may not send to broker {id}: no EventPolicy applies to it, and the default mode allow-same-namespace admits only subjects of namespace `{namespace}` (system:serviceaccount:{namespace}:…)",
                        p.subject
                    )))
                }
                (AuthorizationMode::DenyAll, Some(p)) => Err(Problem::forbidden(format!(
                    "`{}` may not send to broker {id}: no EventPolicy applies to it, and the default mode is deny-all",
                    p.subject
                ))),
            };
        };
        let Some(p) = principal else {
            return Err(Problem::unauthenticated(None));
        };
        let allowing: Vec<&Arc<Compiled>> = policies
            .iter()
            .filter(|c| c.from.iter().any(|f| f.allows(&p.subject)))
            .collect();
        if allowing.is_empty() {
            let names: Vec<&str> = policies.iter().map(|c| c.name.as_str()).collect();
            return Err(Problem::forbidden(format!(
                "`{}` may not send to broker {id}: no EventPolicy applying to it ({}) lists it in `from`",
                p.subject,
                names.join(", ")
            )));
        }
        if allowing.iter().any(|c| c.filter.is_none()) {
            return Ok(SendPermit::default());
        }
        Ok(SendPermit {
            filters: allowing
                .iter()
                .filter_map(|c| Some((c.name.clone(), Arc::clone(c.filter.as_ref()?))))
                .collect(),
        })
    }
}
