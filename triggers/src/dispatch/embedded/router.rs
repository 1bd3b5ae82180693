//! The router: it reads each newly committed event once (from the log's commit
//! announcements, or from the log itself when it catches up), asks the broker's
//! [`FilterIndex`] which triggers match, and pushes the event to their queues. It never
//! blocks on a trigger: the queues do not refuse. A reload changes a broker's triggers
//! through [`RouteChange`]; a trigger new to the route is first given, from the log, what it
//! has not seen of the events routed before it joined.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::log::{Committed, EventLog};
use tokio::sync::{mpsc, oneshot};

use super::EmbeddedSource;
use crate::dispatch::{lock, read_log};
use crate::filter::FilterIndex;

/// Records the router reads from the log at a time when it catches up.
const READ_BATCH: usize = 512;

/// The per-broker routing state.
pub(super) struct BrokerRoute {
    pub id: Arc<str>,
    /// The next offset to route.
    pub position: u64,
    pub index: FilterIndex,
    /// The broker's triggers, in the order of the index's filters.
    pub triggers: Vec<Arc<EmbeddedSource>>,
}

impl BrokerRoute {
    /// The route of broker `id`, from `position` on, with no triggers yet.
    pub fn new(id: Arc<str>, position: u64) -> BrokerRoute {
        BrokerRoute {
            id,
            position,
            index: FilterIndex::default(),
            triggers: Vec::new(),
        }
    }

    fn route(&mut self, offset: u64, bytes: &[u8]) {
        if offset < self.position {
            return;
        }
        self.route_to(offset, bytes, |_| true);
        self.position = offset + 1;
    }

    /// Queues the event at `offset` for the matching triggers `to` picks (by index).
    fn route_to(&self, offset: u64, bytes: &[u8], to: impl Fn(usize) -> bool) {
        if self.triggers.is_empty() {
            // Nobody to route to: do not decode.
            return;
        }
        match switchyard_core::store::decode(bytes) {
            Ok(event) => {
                let event = Arc::new(event);
                let triggers = &self.triggers;
                self.index.for_each_match(&event, |i| {
                    let t = &triggers[i];
                    if to(i) && offset >= t.start && !lock(&t.skip).remove(&offset) {
                        t.enqueue(offset, &event);
                    }
                });
            }
            Err(e) => {
                tracing::error!(broker = %self.id, offset, error = %e, "cannot decode a stored event; skipped")
            }
        }
    }

    /// Takes `triggers` (filter i is trigger i's) in place of the route's. A trigger that was
    /// not in the route is given, from the log, the events from its start up to where the
    /// route is, so it joins without a gap.
    async fn replace(
        &mut self,
        log: &Arc<dyn EventLog>,
        triggers: Vec<Arc<EmbeddedSource>>,
        index: FilterIndex,
    ) {
        let joined: Vec<bool> = triggers
            .iter()
            .map(|t| !self.triggers.iter().any(|old| Arc::ptr_eq(old, t)))
            .collect();
        self.triggers = triggers;
        self.index = index;
        let from = self
            .triggers
            .iter()
            .zip(&joined)
            .filter(|(_, joined)| **joined)
            .map(|(t, _)| t.start)
            .min()
            .unwrap_or(self.position);
        let mut at = from;
        while at < self.position {
            let records = match read_log(log, &self.id, at, READ_BATCH).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(broker = %self.id, error = %e, "cannot read the log for a trigger that joined; it starts where the broker is");
                    break;
                }
            };
            let n = records.len();
            for r in records.iter().filter(|r| r.offset < self.position) {
                self.route_to(r.offset, &r.event, |i| joined[i]);
                at = r.offset + 1;
            }
            if n < READ_BATCH {
                break;
            }
        }
        self.publish_position();
    }

    fn publish_position(&self) {
        for t in &self.triggers {
            t.set_routed(self.position);
            t.wake.notify_one();
        }
    }

    async fn catch_up(&mut self, log: &Arc<dyn EventLog>, until: u64) {
        while self.position < until {
            let records = match read_log(log, &self.id, self.position, READ_BATCH).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(broker = %self.id, error = %e, "cannot read the log");
                    return;
                }
            };
            let n = records.len();
            for r in records.into_iter().filter(|r| r.offset < until) {
                self.route(r.offset, &r.event);
            }
            if n < READ_BATCH {
                break;
            }
        }
        self.publish_position();
    }
}

/// A change to the routes, answered on `done` once in force.
pub(in crate::dispatch) enum RouteChange {
    /// Broker `broker` routes to `triggers` now (filter i of `index` is trigger i's); a broker
    /// new to the router starts at `position` (or at its earliest trigger's start).
    Set {
        broker: Arc<str>,
        position: u64,
        triggers: Vec<Arc<EmbeddedSource>>,
        index: FilterIndex,
        done: oneshot::Sender<()>,
    },
    /// Broker `broker` is gone: nothing is routed for it.
    Remove {
        broker: Arc<str>,
        done: oneshot::Sender<()>,
    },
}

/// Routes every broker's new events until the dispatcher's `Tasks` stop it: first what the triggers
/// have not seen yet, then each announced commit, reading the log where announcements were missed.
pub(super) async fn router(
    mut routes: HashMap<Arc<str>, BrokerRoute>,
    log: Arc<dyn EventLog>,
    mut commits: mpsc::Receiver<Committed>,
    mut changes: mpsc::Receiver<RouteChange>,
) {
    for route in routes.values_mut() {
        route.catch_up(&log, u64::MAX).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            Some(change) = changes.recv() => match change {
                RouteChange::Set { broker, position, triggers, index, done } => {
                    let route = routes.entry(Arc::clone(&broker)).or_insert_with(|| {
                        let start = triggers.iter().map(|t| t.start).min().unwrap_or(position);
                        BrokerRoute::new(broker, position.min(start))
                    });
                    route.replace(&log, triggers, index).await;
                    route.catch_up(&log, u64::MAX).await;
                    let _ = done.send(());
                }
                RouteChange::Remove { broker, done } => {
                    routes.remove(&broker);
                    let _ = done.send(());
                }
            },
            c = commits.recv() => {
                let Some(c) = c else { return };
                let Some(route) = routes.get_mut(&c.broker) else { continue };
                if c.first > route.position {
                    // Announcements were missed: read the gap from the log.
                    route.catch_up(&log, c.first).await;
                    if route.position < c.first {
                        // The gap could not be read; never route past it. The tick retries.
                        continue;
                    }
                }
                for (i, bytes) in c.events.iter().enumerate() {
                    route.route(c.first + i as u64, bytes);
                }
                route.publish_position();
            }
            _ = tick.tick() => {
                for route in routes.values_mut() {
                    route.catch_up(&log, u64::MAX).await;
                }
            }
        }
    }
}
