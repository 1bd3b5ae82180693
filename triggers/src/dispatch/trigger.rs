//! One trigger at run time: what it was configured with (resolved at load), its queue and
//! cursor, its scheduled retries, and its metrics. The tasks that work for it are in
//! `deliver.rs`, `retry.rs` and `settle.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchyard_broker::append::Appender;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::EventLog;
use switchyard_broker::metrics as m;
use switchyard_broker::tasks::Tasks;
use switchyard_core::CloudEvent;
use switchyard_core::config::Config;
use switchyard_core::id::TriggerId;
use switchyard_core::resources::{Destination, Ordering as TriggerOrdering, Trigger};
use tokio::sync::{Notify, Semaphore};

use super::DispatchError;
use super::{DEFAULT_MAX_IN_FLIGHT, HOT_QUEUE, lock};
use crate::delivery::{AttemptResult, Deliverer, DeliverySettings, Subscriber};
use crate::queue::OffsetQueue;
use crate::records;
use crate::streams::StreamSinks;

/// A trigger's configuration, resolved once at start.
#[derive(Debug)]
pub(super) struct TriggerConfig {
    /// Where events go.
    pub subscriber: Subscriber,
    /// Where dead letters also go, if anywhere.
    pub dead_letter_sink: Option<Subscriber>,
    /// Retries, backoff, timeout, format.
    pub settings: DeliverySettings,
    /// Ordered per `partitionkey` (retried in place), or unordered.
    pub ordered: bool,
    /// At most this many deliveries started per second.
    pub rate_limit: Option<f64>,
}

/// What the trigger's queue and cursor hold.
struct QueueState {
    queue: OffsetQueue,
    inflight: BTreeSet<u64>,
    /// Every offset below this has been routed (matched into the queue, or skipped).
    routed_to: u64,
}

/// The trigger's scheduled retries: where they are kept and how many there are.
#[derive(Debug)]
pub(super) struct RetryBook {
    /// Prefix of this trigger's keys in the retry table.
    pub prefix: Vec<u8>,
    /// Retry records this trigger has (for its lag).
    pending: AtomicI64,
    /// Wakes the retry loop.
    pub wake: Notify,
}

impl RetryBook {
    /// A retry record was added.
    pub fn added(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// A retry record was removed.
    pub fn removed(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Metric handles, looked up once (labels are fixed per trigger).
struct TriggerMetrics {
    labels: Vec<metrics::Label>,
    latency: metrics::Histogram,
    attempts: Mutex<HashMap<String, metrics::Counter>>,
}

/// One trigger at run time.
pub struct TriggerRuntime {
    /// The trigger (its broker is in the same namespace).
    pub id: TriggerId,
    pub(super) broker: Arc<str>,
    /// The trigger's cursor in the broker's log.
    pub(super) consumer: String,
    pub(super) config: TriggerConfig,
    state: Mutex<QueueState>,
    /// Wakes the dispatch loop.
    pub(super) wake: Notify,
    /// Offsets at or past `start` that already have a retry record (a restart found them):
    /// routing skips them once.
    pub(super) skip: Mutex<HashSet<u64>>,
    /// The cursor at start: older events were done before.
    pub(super) start: u64,
    committed: AtomicU64,
    pub(super) retries: RetryBook,
    /// Deliveries in flight, across first attempts and retries.
    pub(super) slots: Arc<Semaphore>,
    pub(super) deliverer: Deliverer,
    pub(super) log: Arc<dyn EventLog>,
    /// Stores replies, held to the broker's `eventTypes`.
    pub(super) appender: Appender,
    /// Sends to the dead-letter sink, which end at shutdown like every other task.
    /// `None` once the dispatcher shut them down: a send that comes later is not started
    /// (its dead letter's marker makes the next start send it).
    pub(super) side_tasks: Mutex<Option<Tasks>>,
    metrics: TriggerMetrics,
}

impl std::fmt::Debug for TriggerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerRuntime")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Everything a trigger is built from besides its own resource.
pub(super) struct Context<'a> {
    pub config: &'a Config,
    pub log: &'a Arc<dyn EventLog>,
    pub event_types: &'a Arc<EventTypePolicy>,
    pub ingress: &'a str,
    pub streams: &'a StreamSinks,
}

/// The address a destination resolves to: its `uri`, a Broker's ingress URL, a stream sink's
/// address, or a Sink's `uri`.
fn address(dest: &Destination, ns: &str, config: &Config, ingress: &str) -> String {
    if let Some(uri) = &dest.uri {
        return uri.clone();
    }
    let Some(r) = &dest.reference else {
        return String::new();
    };
    let ref_ns = r.namespace.clone().unwrap_or_else(|| ns.to_owned());
    match r.kind.as_str() {
        "Broker" => format!("{ingress}/{ref_ns}/{}", r.name),
        kind if crate::streams::is_stream_kind(kind) => {
            crate::streams::address(kind, &ref_ns, &r.name)
        }
        _ => config
            .sinks
            .get(&(ref_ns, r.name.clone()))
            .map(|s| s.spec.uri.clone())
            .unwrap_or_default(),
    }
}

impl Context<'_> {
    /// Where `dest`, a destination of trigger `ns/name`, sends events.
    fn subscriber(
        &self,
        dest: &Destination,
        ns: &str,
        name: &str,
    ) -> Result<Subscriber, DispatchError> {
        let address = address(dest, ns, self.config, self.ingress);
        Subscriber::resolve(address.clone(), self.streams).ok_or_else(|| {
            DispatchError::NoStreamSink {
                trigger: TriggerId::new(ns, name),
                address,
            }
        })
    }
}

impl TriggerRuntime {
    /// The runtime of trigger `ns/name`, its cursor read (or set to the log's end, for a new
    /// trigger) and its pending retries counted.
    pub(super) fn build(
        cx: &Context<'_>,
        ns: &str,
        name: &str,
        trigger: &Trigger,
    ) -> Result<TriggerRuntime, DispatchError> {
        let log = cx.log;
        let broker_name = &trigger.spec.broker;
        let broker = &cx.config.brokers[&(ns.to_owned(), broker_name.clone())];
        let id: Arc<str> = Arc::from(switchyard_core::id::join(ns, broker_name));
        let consumer = records::trigger_consumer(name);
        let start = match log.committed(&id, &consumer)? {
            Some(c) => c,
            None => {
                // A new trigger sees the events that arrive from now on.
                let next = log.stats(&id)?.next;
                log.commit(&id, &consumer, next)?;
                next
            }
        };
        let prefix = records::retry_prefix(&id, name);
        let (pending, skip) = super::recovery::retry_offsets(log.as_ref(), &prefix, start)?;
        let delivery = trigger
            .spec
            .delivery
            .as_ref()
            .or(broker.spec.delivery.as_ref());
        let config = TriggerConfig {
            subscriber: cx.subscriber(&trigger.spec.subscriber, ns, name)?,
            dead_letter_sink: delivery
                .and_then(|d| d.dead_letter_sink.as_ref())
                .map(|d| cx.subscriber(d, ns, name))
                .transpose()?,
            settings: DeliverySettings::resolve(delivery),
            ordered: trigger.spec.ordering == Some(TriggerOrdering::Ordered),
            rate_limit: trigger.spec.rate_limit,
        };
        let labels = vec![
            metrics::Label::new("namespace_name", ns.to_owned()),
            metrics::Label::new("broker_name", broker_name.clone()),
            metrics::Label::new("trigger_name", name.to_owned()),
        ];
        Ok(TriggerRuntime {
            id: TriggerId::new(ns, name),
            broker: id,
            consumer,
            config,
            state: Mutex::new(QueueState {
                queue: OffsetQueue::new(HOT_QUEUE),
                inflight: BTreeSet::new(),
                routed_to: start,
            }),
            wake: Notify::new(),
            skip: Mutex::new(skip),
            start,
            committed: AtomicU64::new(start),
            retries: RetryBook {
                prefix,
                pending: AtomicI64::new(i64::try_from(pending).unwrap_or(i64::MAX)),
                wake: Notify::new(),
            },
            slots: Arc::new(Semaphore::new(
                trigger.spec.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT) as usize,
            )),
            deliverer: Deliverer::new(),
            log: Arc::clone(log),
            appender: Appender::new(Arc::clone(log), Arc::clone(cx.event_types)),
            side_tasks: Mutex::new(Some(Tasks::new("dead-letter sinks"))),
            metrics: TriggerMetrics {
                latency: metrics::histogram!(m::DELIVERY_LATENCY, labels.clone()),
                labels,
                attempts: Mutex::new(HashMap::new()),
            },
        })
    }

    /// The metric labels that name this trigger.
    pub(super) fn labels(&self) -> Vec<metrics::Label> {
        self.metrics.labels.clone()
    }

    /// The broker's log id, `namespace/name`.
    pub fn broker_id(&self) -> &str {
        &self.broker
    }

    /// Prefix of this trigger's keys in the retry table.
    pub fn retry_prefix(&self) -> &[u8] {
        &self.retries.prefix
    }

    /// Tells the retry scheduler a retry record was written for it (a redrive).
    pub fn retry_scheduled(&self) {
        self.retries.added();
    }

    /// The offset before which this trigger is done with every event.
    pub fn cursor(&self) -> u64 {
        let s = lock(&self.state);
        let mut c = s.routed_to;
        if let Some(&o) = s.inflight.first() {
            c = c.min(o);
        }
        if let Some(o) = s.queue.front() {
            c = c.min(o);
        }
        c
    }

    /// Events this trigger still owes its subscriber: queued, in flight, or waiting to be
    /// retried.
    pub fn lag(&self) -> i64 {
        let s = lock(&self.state);
        let held = i64::try_from(s.queue.len() + s.inflight.len()).unwrap_or(i64::MAX);
        held + self.retries.pending.load(Ordering::Relaxed).max(0)
    }

    /// Queues a routed event.
    pub(super) fn enqueue(&self, offset: u64, event: &Arc<CloudEvent>) {
        lock(&self.state).queue.push_back(offset, event);
        self.wake.notify_one();
    }

    /// Every offset below `position` has been routed.
    pub(super) fn set_routed(&self, position: u64) {
        let mut s = lock(&self.state);
        s.routed_to = s.routed_to.max(position);
    }

    /// The next queued offset, its event when the queue kept it, and how many offsets of the
    /// same run follow it.
    pub(super) fn pop(&self) -> Option<(u64, Option<Arc<CloudEvent>>, usize)> {
        let mut s = lock(&self.state);
        let (offset, hot) = s.queue.pop_front()?;
        s.inflight.insert(offset);
        Some((offset, hot, s.queue.run_ahead()))
    }

    /// The event at `offset` is done for this trigger (its outcome is durable).
    pub(super) fn done(&self, offset: u64) {
        lock(&self.state).inflight.remove(&offset);
    }

    /// Puts a popped entry back at the head of the queue (its read failed; try again later).
    pub(super) fn requeue(&self, offset: u64) {
        let mut s = lock(&self.state);
        s.inflight.remove(&offset);
        s.queue.push_front(offset);
    }

    /// Hands the cursor to the log when it moved (the log persists it with a later commit).
    pub(super) fn commit_cursor(&self) {
        let c = self.cursor();
        if self.committed.swap(c, Ordering::Relaxed) != c
            && let Err(e) = self.log.commit(&self.broker, &self.consumer, c)
        {
            tracing::warn!(trigger = %self.id, error = %e, "cannot commit cursor");
        }
    }

    /// Counts an attempt by its response code, and its latency.
    pub(super) fn count_attempt(&self, r: &AttemptResult) {
        self.metrics.latency.record(r.latency.as_secs_f64());
        let code = r.response_code();
        let mut counters = lock(&self.metrics.attempts);
        if let Some(c) = counters.get(code.as_ref()) {
            c.increment(1);
        } else {
            let mut labels = self.labels();
            labels.push(metrics::Label::new("response_code", code.to_string()));
            let c = metrics::counter!(m::DELIVERY_COUNT, labels);
            c.increment(1);
            counters.insert(code.into_owned(), c);
        }
    }

    /// Runs `task` beside the trigger's loops; it is aborted at shutdown with them.
    pub(super) fn spawn_side_task(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        match lock(&self.side_tasks).as_mut() {
            Some(tasks) => tasks.spawn(task),
            None => {
                tracing::info!(trigger = %self.id, "shutting down: a dead letter goes to the dead-letter sink after the restart")
            }
        }
    }
}
