//! The dispatcher: everything between the log and the subscribers, in two halves joined by
//! one seam (`source.rs`). The delivery core (`deliver.rs`, `outcome.rs`, `trigger.rs`) takes
//! a trigger's work from a [`DeliverySource`], attempts it within the trigger's bounds and
//! decides the outcome; the source (`embedded/`: the router, the trigger's queue and cursor,
//! its retry records) hands out the work and settles the outcomes. The rules are in
//! `spec/delivery.md`; the map in ARCHITECTURE.md.
//!
//! | module | holds |
//! |---|---|
//! | `source` | the seam: [`Work`] and [`DeliverySource`] |
//! | `trigger` | a trigger at run time, as the core sees it: resolved config, bounds, metrics |
//! | `deliver` | the delivery core: attempts, the reply check, ordered keys, rate |
//! | `outcome` | what follows an attempt: a pure function, tested as a table |
//! | `embedded` | the delivery source over the embedded log (router, queues, retries, settle) |
//! | `jetstream` | the delivery source over JetStream: a durable consumer per trigger, shared by replicas |
//! | `replies` | a subscriber's replies as every source stores them |

#[cfg(test)]
mod core_tests;
mod deliver;
pub mod down;
mod embedded;
pub mod health;
pub mod jetstream;
mod ordered;
mod outcome;
pub mod pause;
mod replies;
mod source;
mod trigger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError, LogRecord, SideRecord, Table, blocking};
use switchyard_broker::tasks::Tasks;
use switchyard_core::config::Config;
use switchyard_core::id::TriggerId;
use switchyard_core::resources::Trigger;

pub use embedded::EmbeddedSource;
pub use outcome::{Outcome, decide};
pub use source::{DeliverySource, Work};
pub use trigger::TriggerRuntime;

use crate::filter::{Filter, FilterError};
use crate::records;
use crate::streams::StreamSinks;

/// Queue entries beyond this many keep only the offset, and consecutive offsets share one
/// entry (`queue::OffsetQueue`); the event is read again from the log when its turn comes.
/// This is what bounds memory per queued event.
const HOT_QUEUE: usize = 1024;
/// Default bound on deliveries in flight per trigger.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A trigger's filter does not compile: a load error, in the form of the others
    /// (`FILE: Trigger namespace/name: field.path: message`).
    #[error("{file}: Trigger {trigger}: {error}")]
    Filter {
        /// The file the trigger came from.
        file: String,
        /// The trigger.
        trigger: TriggerId,
        /// What is wrong (its text names the field).
        error: FilterError,
    },
    /// A trigger refers to a stream sink that has no writer.
    #[error("Trigger {trigger}: no writer for the stream sink `{address}`")]
    NoStreamSink {
        /// The trigger.
        trigger: TriggerId,
        /// The sink's address.
        address: String,
    },
    /// A trigger's HTTP client cannot be built, or cannot verify an https destination.
    #[error("Trigger {trigger}: {message}")]
    HttpClient {
        /// The trigger.
        trigger: TriggerId,
        /// Why.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A reload was applied, but a part of it failed (`changes` is what it did).
    #[error("{error}")]
    Partly {
        /// What the reload changed.
        changes: TriggerChanges,
        /// The first failure.
        error: Box<DispatchError>,
    },
}

/// Compiles every trigger's filter, so a bad one stops `serve` and `validate` with its field.
pub fn check_filters(config: &Config) -> Result<(), DispatchError> {
    for ((ns, name), t) in &config.triggers {
        compile_filter(config, ns, name, t)?;
    }
    Ok(())
}

fn compile_filter(
    config: &Config,
    ns: &str,
    name: &str,
    t: &Trigger,
) -> Result<Filter, DispatchError> {
    Filter::compile(&t.spec).map_err(|error| DispatchError::Filter {
        file: config
            .trigger_files
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_else(|| "<api>".to_owned()),
        trigger: TriggerId::new(ns, name),
        error,
    })
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

/// The running triggers' delivery sources by (broker id, trigger name), as the management
/// API (redrives schedule retries) and the housekeeping see them; a reload changes it.
#[derive(Debug, Clone, Default)]
pub struct RunningTriggers(Arc<std::sync::RwLock<SourcesByTrigger>>);

/// Sources by (broker id, trigger name).
type SourcesByTrigger = HashMap<(String, String), Arc<EmbeddedSource>>;

impl RunningTriggers {
    /// The source of trigger `name` of broker `broker` (`namespace/name`), if it runs.
    pub fn get(&self, broker: &str, name: &str) -> Option<Arc<EmbeddedSource>> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(broker.to_owned(), name.to_owned())).cloned()
    }

    /// Every running trigger's source.
    pub fn all(&self) -> Vec<Arc<EmbeddedSource>> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().cloned().collect()
    }

    fn set(&self, sources: impl Iterator<Item = Arc<EmbeddedSource>>) {
        let map = sources
            .map(|s| ((s.broker_id().to_owned(), s.id().name().to_owned()), s))
            .collect();
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }
}

/// How long a reload, or the server's stop, waits for a trigger it stops or changes to finish
/// the attempts in flight (each also ends at the trigger's own timeout) and its sends to the
/// dead-letter sink, before it stops them. What it stops is delivered again by the trigger's
/// next run.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One running trigger: its source, its loops, and what it was built from.
struct Unit {
    source: Arc<EmbeddedSource>,
    inputs: trigger::Inputs,
    /// The delivery loop, which ends on its own once drained.
    delivery: Tasks,
    /// The source's own loops (the retry scanner), which run until stopped.
    tasks: Tasks,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Unit {
    /// Starts the delivery loop of `source`, whose own loops run in `tasks`.
    fn run(source: Arc<EmbeddedSource>, inputs: trigger::Inputs, tasks: Tasks) -> Unit {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut delivery = Tasks::new("delivery loop");
        delivery.spawn(deliver::dispatch_loop(
            Arc::clone(source.trigger()),
            Arc::clone(&source),
            stopped,
        ));
        Unit {
            source,
            inputs,
            delivery,
            tasks,
            stop,
        }
    }

    /// Stops taking work, lets the attempts in flight settle and the started sends to the
    /// dead-letter sink finish (up to [`DRAIN_TIMEOUT`]), and commits the cursor.
    async fn drain(self) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        self.stop.send_replace(true);
        self.delivery.finish(DRAIN_TIMEOUT).await;
        self.tasks.shutdown().await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.source.drain(left).await;
    }
}

/// What a reload changed among the triggers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TriggerChanges {
    /// Triggers that started.
    pub added: Vec<TriggerId>,
    /// Triggers restarted with new settings.
    pub changed: Vec<TriggerId>,
    /// Triggers stopped (their pending retries became dead letters).
    pub removed: Vec<TriggerId>,
}

/// The running dispatcher of every trigger of a configuration.
pub struct Dispatcher {
    /// The router and the housekeeping.
    tasks: Tasks,
    units: HashMap<TriggerId, Unit>,
    routes: tokio::sync::mpsc::Sender<embedded::RouteChange>,
    running: RunningTriggers,
    log: Arc<dyn EventLog>,
    egress: switchyard_core::egress::EgressPolicy,
    /// The brokers routed to, by id.
    brokers: std::collections::HashSet<Arc<str>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("triggers", &self.units.len())
            .finish_non_exhaustive()
    }
}

/// The Triggers of `config` that can run: their Broker is in the configuration (one that is
/// not loaded as not ready, `Config::not_ready`: nothing reaches it).
fn runnable(config: &Config) -> impl Iterator<Item = (&(String, String), &Trigger)> {
    config.triggers.iter().filter(|((ns, _), t)| {
        config
            .brokers
            .contains_key(&(ns.clone(), t.spec.broker.clone()))
    })
}

fn broker_ids(config: &Config) -> std::collections::HashSet<Arc<str>> {
    config
        .brokers
        .keys()
        .map(|(ns, name)| Arc::from(switchyard_core::id::join(ns, name)))
        .collect()
}

impl Dispatcher {
    /// Starts routing and delivery for every trigger in `config` (a subscriber that refers to
    /// a Broker is stored into through `log`, see [`crate::streams::BrokerSink`]); `streams`
    /// writes to the KafkaSinks and NatsSinks subscribers refer to.
    pub async fn start(
        config: &Config,
        log: Arc<dyn EventLog>,
        event_types: Arc<EventTypePolicy>,
        streams: StreamSinks,
        egress: switchyard_core::egress::EgressPolicy,
    ) -> Result<Dispatcher, DispatchError> {
        check_filters(config)?;
        let cx = trigger::Context {
            config,
            event_types: &event_types,
            log: &log,
            egress: &egress,
            streams: &streams,
        };
        let mut triggers = Vec::new();
        let mut inputs = Vec::new();
        for ((ns, name), t) in runnable(config) {
            triggers.push(Arc::new(TriggerRuntime::build(&cx, ns, name, t)?));
            inputs.push(cx.inputs(ns, t));
        }
        let mut tasks = Tasks::new("dispatcher");
        let mut trigger_tasks: Vec<Tasks> =
            triggers.iter().map(|_| Tasks::new("trigger")).collect();
        let running = RunningTriggers::default();
        let (sources, routes) = embedded::start(
            config,
            &log,
            &event_types,
            &triggers,
            &mut tasks,
            &mut trigger_tasks,
            &running,
        )
        .await?;
        running.set(sources.iter().cloned());
        let units = sources
            .into_iter()
            .zip(inputs)
            .zip(trigger_tasks)
            .map(|((source, inputs), tasks)| {
                (source.id().clone(), Unit::run(source, inputs, tasks))
            })
            .collect();
        Ok(Dispatcher {
            tasks,
            units,
            routes,
            running,
            log,
            egress,
            brokers: broker_ids(config),
        })
    }

    /// The running triggers' sources, for the management API (redrives schedule retries).
    pub fn running(&self) -> RunningTriggers {
        self.running.clone()
    }

    /// Takes `config` in place of the running one, trigger by trigger: a trigger whose
    /// inputs are the same keeps running untouched; one that changed, or whose broker's
    /// `eventTypes` changed (`event_types_changed`) or whose stream sink was restarted
    /// (`restarted_sinks`, by address), is drained and started again from its cursor, its
    /// filter applying to every event it had not yet handed to its subscriber; a new one
    /// starts at the end of its broker's log; a removed one is drained, its cursor
    /// forgotten and its pending retries turned into dead letters. Every trigger is built
    /// before anything stops, so a trigger that cannot be built changes nothing.
    pub async fn reconfigure(
        &mut self,
        config: &Config,
        event_types: Arc<EventTypePolicy>,
        streams: StreamSinks,
        event_types_changed: bool,
        restarted_sinks: &std::collections::HashSet<String>,
    ) -> Result<TriggerChanges, DispatchError> {
        check_filters(config)?;
        let log = Arc::clone(&self.log);
        let egress = self.egress.clone();
        let cx = trigger::Context {
            config,
            event_types: &event_types,
            log: &log,
            egress: &egress,
            streams: &streams,
        };
        // Build first: an error here leaves everything as it was.
        let mut wanted = HashMap::new();
        for ((ns, name), t) in runnable(config) {
            let id = TriggerId::new(ns, name);
            let inputs = cx.inputs(ns, t);
            let keep = !event_types_changed
                && !inputs.uses_any(restarted_sinks)
                && self.units.get(&id).is_some_and(|u| u.inputs == inputs);
            let build = if keep {
                None
            } else {
                Some((
                    Arc::new(TriggerRuntime::build(&cx, ns, name, t)?),
                    compile_filter(config, ns, name, t)?,
                ))
            };
            wanted.insert(id, (inputs, build));
        }
        let mut changes = TriggerChanges::default();
        let stopping: Vec<TriggerId> = self
            .units
            .keys()
            .filter(|id| wanted.get(*id).is_none_or(|(_, build)| build.is_some()))
            .cloned()
            .collect();
        let new_brokers = broker_ids(config);
        let mut touched: std::collections::HashSet<Arc<str>> = stopping
            .iter()
            .filter_map(|id| {
                self.units
                    .get(id)
                    .map(|u| Arc::clone(&u.source.trigger().broker))
            })
            .chain(
                wanted
                    .values()
                    .filter_map(|(_, b)| b.as_ref().map(|(t, _)| Arc::clone(&t.broker))),
            )
            .collect();
        touched.extend(new_brokers.symmetric_difference(&self.brokers).cloned());

        // 1. The routes stop feeding the triggers that stop. From here on an error (the
        // store failing) does not end the reload half-way: it is kept, the rest done.
        let mut failed: Option<DispatchError> = None;
        let mut stopped = Vec::new();
        for id in &stopping {
            if let Some(unit) = self.units.remove(id) {
                stopped.push(unit);
            }
        }
        self.running
            .set(self.units.values().map(|u| Arc::clone(&u.source)));
        for broker in &touched {
            if let Err(e) = self.set_route(broker, config).await {
                failed.get_or_insert(e);
            }
        }
        // 2. They drain, side by side. A trigger removed, or moved to another broker, leaves
        // its old broker something to clean up.
        let mut left: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
        futures_util::future::join_all(stopped.into_iter().map(|unit| {
            let id = unit.source.id().clone();
            let old_broker = Arc::clone(&unit.source.trigger().broker);
            match wanted.get(&id) {
                Some((_, build)) => {
                    let moved = build.as_ref().is_some_and(|(t, _)| t.broker != old_broker);
                    if moved {
                        left.insert(old_broker);
                    }
                    changes.changed.push(id);
                }
                None => {
                    left.insert(old_broker);
                    changes.removed.push(id);
                }
            }
            unit.drain()
        }))
        .await;
        // 3. The new and changed triggers open from their cursors, join their routes, run.
        for (id, (inputs, build)) in wanted {
            let Some((runtime, _)) = build else {
                continue;
            };
            let mut tasks = Tasks::new("trigger");
            match EmbeddedSource::open_running(runtime, &self.log, &event_types, &mut tasks).await {
                Ok(source) => {
                    if !changes.changed.contains(&id) {
                        changes.added.push(id.clone());
                    }
                    self.units.insert(id, Unit::run(source, inputs, tasks));
                }
                Err(e) => {
                    tracing::error!(trigger = %id, error = %e, "a trigger could not start");
                    failed.get_or_insert(e.into());
                }
            }
        }
        self.running
            .set(self.units.values().map(|u| Arc::clone(&u.source)));
        for broker in &touched {
            if let Err(e) = self.set_route(broker, config).await {
                failed.get_or_insert(e);
            }
        }
        // 4. What a removed or moved trigger left on a broker (its cursor, its retries) is
        // cleaned up as at start, now that every trigger that stays there runs again.
        for broker in &left {
            let remaining: Vec<Arc<EmbeddedSource>> = self
                .units
                .values()
                .filter(|u| u.source.trigger().broker == *broker)
                .map(|u| Arc::clone(&u.source))
                .collect();
            if let Err(e) = embedded::forget_removed(&self.log, broker, &remaining).await {
                failed.get_or_insert(e.into());
            }
        }
        self.brokers = new_brokers;
        changes.added.sort();
        changes.changed.sort();
        changes.removed.sort();
        match failed {
            Some(error) => Err(DispatchError::Partly {
                changes,
                error: Box::new(error),
            }),
            None => Ok(changes),
        }
    }

    /// Tells the router which of the running triggers broker `broker` routes to, or that the
    /// broker is gone from `config`, and waits until it has taken it.
    async fn set_route(&self, broker: &Arc<str>, config: &Config) -> Result<(), DispatchError> {
        let (done, taken) = tokio::sync::oneshot::channel();
        let exists = config
            .brokers
            .keys()
            .any(|(ns, name)| switchyard_core::id::join(ns, name) == **broker);
        let change = if exists {
            let mut sources = Vec::new();
            let mut filters = Vec::new();
            for unit in self
                .units
                .values()
                .filter(|u| u.source.trigger().broker == *broker)
            {
                let id = unit.source.id();
                let key = (id.namespace().to_owned(), id.name().to_owned());
                let Some(resource) = config.triggers.get(&key) else {
                    continue;
                };
                filters.push(compile_filter(config, id.namespace(), id.name(), resource)?);
                sources.push(Arc::clone(&unit.source));
            }
            let id = Arc::clone(broker);
            let position = blocking(&self.log, move |log| Ok(log.stats(&id)?.next)).await?;
            embedded::RouteChange::Set {
                broker: Arc::clone(broker),
                position,
                triggers: sources,
                index: crate::filter::FilterIndex::new(filters),
                done,
            }
        } else {
            embedded::RouteChange::Remove {
                broker: Arc::clone(broker),
                done,
            }
        };
        if self.routes.send(change).await.is_ok() {
            let _ = taken.await;
        }
        Ok(())
    }

    /// Stops routing, then drains every trigger side by side, as a reload drains the ones it
    /// stops: the attempts in flight finish and their outcomes are recorded, up to
    /// [`DRAIN_TIMEOUT`] in all, so a graceful stop does not send a delivered event again.
    /// What is still in flight after that is stopped and delivered again after the restart
    /// (at-least-once). Cursors are committed; the store persists them when it shuts down.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
        futures_util::future::join_all(self.units.into_values().map(Unit::drain)).await;
    }
}
