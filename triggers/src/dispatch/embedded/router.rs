//! The router: it reads each newly committed event once (from the log's commit
//! announcements, or from the log itself when it catches up), asks the broker's
//! [`FilterIndex`] which triggers match, and pushes the event to their queues. It never
//! blocks on a trigger: the queues do not refuse.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::log::{Committed, EventLog};
use tokio::sync::mpsc;

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
        if self.triggers.is_empty() {
            // Nobody to route to: do not decode.
            self.position = offset + 1;
            return;
        }
        match switchyard_core::store::decode(bytes) {
            Ok(event) => {
                let event = Arc::new(event);
                let triggers = &self.triggers;
                self.index.for_each_match(&event, |i| {
                    let t = &triggers[i];
                    if offset >= t.start && !lock(&t.skip).remove(&offset) {
                        t.enqueue(offset, &event);
                    }
                });
            }
            Err(e) => {
                tracing::error!(broker = %self.id, offset, error = %e, "cannot decode a stored event; skipped")
            }
        }
        self.position = offset + 1;
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

/// Routes every broker's new events until the dispatcher's `Tasks` stop it: first what the triggers
/// have not seen yet, then each announced commit, reading the log where announcements were missed.
pub(super) async fn router(
    mut routes: HashMap<Arc<str>, BrokerRoute>,
    log: Arc<dyn EventLog>,
    mut commits: mpsc::Receiver<Committed>,
) {
    for route in routes.values_mut() {
        route.catch_up(&log, u64::MAX).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
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
