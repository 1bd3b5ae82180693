//! What every handler of the server shares: the configured brokers as ingress sees them,
//! the brokers' `eventTypes` settings (swapped whole when the configuration changes), the
//! log, and the server's own state. Ingress and the server's other routes both read it; it
//! imports neither.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::eventtypes::{Discovery, EventTypePolicy};
use crate::log::EventLog;

/// A broker as ingress sees it.
#[derive(Debug)]
pub struct BrokerState {
    /// `namespace/name`, the broker's log id.
    pub id: String,
    /// TTL given to events without one.
    pub ttl: i32,
}

/// What every handler shares.
pub struct App {
    /// What `/readyz` says of the configuration.
    pub(crate) config_status: RwLock<crate::server::ConfigStatus>,
    pub(crate) brokers: RwLock<HashMap<String, Arc<BrokerState>>>,
    pub(crate) event_types: RwLock<Arc<EventTypePolicy>>,
    /// Event types seen by brokers in `record` mode.
    pub(crate) discovery: Arc<Discovery>,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Largest request body taken, in bytes.
    pub max_body_bytes: usize,
    pub(crate) metrics: PrometheusHandle,
    /// The front door's rules, swapped whole when the configuration changes.
    pub(crate) auth: RwLock<Arc<crate::auth::Auth>>,
    /// The front door's settings (`serve`'s flags).
    pub(crate) auth_options: crate::auth::AuthOptions,
    /// The address listened on.
    pub(crate) listen: std::net::SocketAddr,
    pub(crate) ready: AtomicBool,
    /// Set once the shutdown's drain window is over: ingress refuses with 503 and
    /// `Retry-After` while the server stops.
    pub(crate) stopping: AtomicBool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// The broker `namespace/name`, if it exists.
    pub fn broker(&self, namespace: &str, name: &str) -> Option<Arc<BrokerState>> {
        let key = switchyard_core::id::join(namespace, name);
        self.brokers.read().ok()?.get(&key).cloned()
    }

    /// The front door's rules in force.
    pub fn auth(&self) -> Arc<crate::auth::Auth> {
        // A poisoned lock still holds the rules last put there; never fall back to none.
        Arc::clone(
            &self
                .auth
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The configured EventTypes, schemas compiled, and each broker's `eventTypes` mode.
    pub fn event_types(&self) -> Arc<EventTypePolicy> {
        self.event_types
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }
}
