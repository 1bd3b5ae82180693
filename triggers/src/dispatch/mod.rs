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

#[cfg(test)]
mod core_tests;
mod deliver;
mod embedded;
mod outcome;
mod source;
mod trigger;

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
    sources: Vec<Arc<EmbeddedSource>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("triggers", &self.sources.len())
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
        let cx = trigger::Context {
            config,
            event_types: &event_types,
            ingress,
            streams: &streams,
        };
        // A Trigger whose Broker is not in the configuration loaded as not ready
        // (`Config::not_ready`): nothing reaches it, so it runs nothing.
        let triggers = config
            .triggers
            .iter()
            .filter(|((ns, _), t)| {
                config
                    .brokers
                    .contains_key(&(ns.clone(), t.spec.broker.clone()))
            })
            .map(|((ns, name), t)| TriggerRuntime::build(&cx, ns, name, t).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tasks = Tasks::new("dispatcher");
        let sources = embedded::start(config, &log, &event_types, &triggers, &mut tasks).await?;
        for s in &sources {
            tasks.spawn(deliver::dispatch_loop(
                Arc::clone(s.trigger()),
                Arc::clone(s),
            ));
        }
        Ok(Dispatcher { tasks, sources })
    }

    /// Each trigger's delivery source, for the management API (redrives schedule retries).
    pub fn sources(&self) -> &[Arc<EmbeddedSource>] {
        &self.sources
    }

    /// Stops routing and delivery. Deliveries in flight are abandoned: their events were not
    /// acknowledged, so they are delivered again after a restart (at-least-once). Cursors are
    /// committed; the store persists them when it shuts down.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
        for s in &self.sources {
            s.shutdown().await;
        }
    }
}
