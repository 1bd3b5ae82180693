//! The dispatcher: everything between the log and the subscribers. One router reads each new
//! event once and hands it to the queues of the triggers whose filters match; each trigger
//! delivers from its queue with bounded concurrency, schedules retries in the store,
//! dead-letters what cannot be delivered, and ingests replies. The rules are in
//! `spec/delivery.md`; the map in ARCHITECTURE.md.
//!
//! | module | holds |
//! |---|---|
//! | `router` | the router: commits → filter index → trigger queues |
//! | `trigger` | a trigger at run time: resolved config, queue and cursor, retries, metrics |
//! | `deliver` | the dispatch loop: first attempts, ordered keys, cold reads |
//! | `outcome` | what follows an attempt: a pure function, tested as a table |
//! | `settle` | the one place that writes an outcome to the store (and stores replies) |
//! | `retry` | the retry loop: due retry records → attempts |
//! | `dead_letter` | dead-letter sinks, retries of removed triggers |
//! | `recovery` | what runs at start, before routing |

mod dead_letter;
mod deliver;
mod outcome;
mod recovery;
mod retry;
mod router;
mod settle;
mod trigger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError, LogRecord, SideRecord, Table, blocking};
use switchyard_broker::metrics as m;
use switchyard_broker::tasks::Tasks;
use switchyard_core::config::Config;
use switchyard_core::id::TriggerId;
use switchyard_core::resources::Trigger;
use tokio::sync::mpsc;

pub use outcome::{Outcome, decide};
pub use trigger::TriggerRuntime;

use crate::filter::{Filter, FilterError, FilterIndex};
use crate::records;
use crate::streams::StreamSinks;
use router::BrokerRoute;

/// Queue entries beyond this many keep only the offset, and consecutive offsets share one
/// entry (`queue::OffsetQueue`); the event is read again from the log when its turn comes.
/// This is what bounds memory per queued event.
const HOT_QUEUE: usize = 1024;
/// Records a trigger reads from the log at a time for a run in the cold part of its queue.
const READ_AHEAD: usize = 64;
/// Bytes of stored events a trigger keeps read ahead (beyond the one it asked for).
const READ_AHEAD_BYTES: usize = 1024 * 1024;
/// Default bound on deliveries in flight per trigger.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A trigger's filter does not compile.
    #[error("Trigger {trigger}: {source}")]
    Filter {
        /// The trigger.
        trigger: TriggerId,
        /// What is wrong.
        source: FilterError,
    },
    /// A trigger refers to a stream sink that has no writer.
    #[error("Trigger {trigger}: no writer for the stream sink `{address}`")]
    NoStreamSink {
        /// The trigger.
        trigger: TriggerId,
        /// The sink's address.
        address: String,
    },
    /// The store failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Compiles every trigger's filter, so a bad one stops `serve` and `validate` with its field.
pub fn check_filters(config: &Config) -> Result<(), DispatchError> {
    for ((ns, name), t) in &config.triggers {
        compile_filter(ns, name, t)?;
    }
    Ok(())
}

fn compile_filter(ns: &str, name: &str, t: &Trigger) -> Result<Filter, DispatchError> {
    Filter::compile(&t.spec).map_err(|source| DispatchError::Filter {
        trigger: TriggerId::new(ns, name),
        source,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A uniform number in [0, 1) for jitter; quality does not matter, independence from the
/// other triggers does.
fn unit_random() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ records::now_ms();
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Up to `max` records of `broker`'s log from `from` on.
async fn read_log(
    log: &Arc<dyn EventLog>,
    broker: &Arc<str>,
    from: u64,
    max: usize,
) -> Result<Vec<LogRecord>, LogError> {
    let broker = Arc::clone(broker);
    blocking(log, move |log| log.read(&broker, from, max)).await
}

/// Up to `max` records of a side table in `[from, to)`.
async fn scan(
    log: &Arc<dyn EventLog>,
    table: Table,
    from: Vec<u8>,
    to: Vec<u8>,
    max: usize,
) -> Result<Vec<SideRecord>, LogError> {
    blocking(log, move |log| log.scan(table, &from, &to, max)).await
}

/// The running dispatcher of every trigger of a configuration.
pub struct Dispatcher {
    tasks: Tasks,
    triggers: Vec<Arc<TriggerRuntime>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("triggers", &self.triggers.len())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Starts routing and delivery for every trigger in `config`. `ingress` is the base URL of
    /// this server (`http://host:port`), for subscribers that refer to a Broker; `streams`
    /// writes to the KafkaSinks and NatsSinks subscribers refer to.
    pub async fn start(
        config: &Config,
        log: Arc<dyn EventLog>,
        event_types: Arc<EventTypePolicy>,
        ingress: &str,
        streams: StreamSinks,
    ) -> Result<Dispatcher, DispatchError> {
        check_filters(config)?;
        let mut routes = HashMap::new();
        for (ns, name) in config.brokers.keys() {
            let id: Arc<str> = Arc::from(switchyard_core::id::join(ns, name));
            let position = log.stats(&id)?.next;
            let route = BrokerRoute {
                id: Arc::clone(&id),
                position,
                index: FilterIndex::default(),
                triggers: Vec::new(),
            };
            routes.insert(id, (route, Vec::new()));
        }
        let cx = trigger::Context {
            config,
            log: &log,
            event_types: &event_types,
            ingress,
            streams: &streams,
        };
        let mut all = Vec::new();
        for ((ns, name), t) in &config.triggers {
            let runtime = Arc::new(TriggerRuntime::build(&cx, ns, name, t)?);
            let (route, route_filters) = routes
                .get_mut(runtime.broker_id())
                .ok_or_else(|| LogError::Storage(format!("no broker {}", runtime.broker_id())))?;
            route.position = route.position.min(runtime.start);
            route.triggers.push(Arc::clone(&runtime));
            // The index reports matches by position: filter i is trigger i's.
            route_filters.push(compile_filter(ns, name, t)?);
            all.push(runtime);
        }
        let routes: HashMap<Arc<str>, BrokerRoute> = routes
            .into_iter()
            .map(|(id, (mut route, route_filters))| {
                route.index = FilterIndex::new(route_filters);
                (id, route)
            })
            .collect();
        for route in routes.values() {
            recovery::forget_removed_triggers(log.as_ref(), &route.id, &route.triggers).await?;
            recovery::resend_to_dead_letter_sinks(log.as_ref(), &route.id, &route.triggers).await?;
        }
        let mut tasks = Tasks::new("dispatcher");
        let (commits_tx, commits_rx) = mpsc::channel(4096);
        log.observe_commits(commits_tx);
        tasks.spawn(router::router(routes, Arc::clone(&log), commits_rx));
        for t in &all {
            tasks.spawn(deliver::dispatch_loop(Arc::clone(t)));
            tasks.spawn(retry::retry_loop(Arc::clone(t)));
        }
        tasks.spawn(housekeeping(all.clone()));
        Ok(Dispatcher {
            tasks,
            triggers: all,
        })
    }

    /// The triggers, for inspection.
    pub fn triggers(&self) -> &[Arc<TriggerRuntime>] {
        &self.triggers
    }

    /// Stops routing and delivery. Deliveries in flight are abandoned: their events were not
    /// acknowledged, so they are delivered again after a restart (at-least-once). Cursors are
    /// committed; the store persists them when it shuts down.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
        for t in &self.triggers {
            let side = lock(&t.side_tasks).take();
            if let Some(side) = side {
                side.shutdown().await;
            }
            t.commit_cursor();
        }
    }
}

/// Every 100 ms, hands each trigger's cursor to the log; every second, sets its lag gauge.
async fn housekeeping(triggers: Vec<Arc<TriggerRuntime>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        for t in &triggers {
            t.commit_cursor();
            if n.is_multiple_of(10) {
                metrics::gauge!(m::TRIGGER_LAG, t.labels()).set(t.lag() as f64);
            }
        }
    }
}
