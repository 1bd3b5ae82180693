//! The embedded delivery source: a trigger's work from the embedded log. The router matches
//! each new event once and queues it for the triggers that take it; the trigger's cursor
//! passes an event once its outcome is durable; scheduled retries are records in the store's
//! retry table, fed back as work when they come due; outcomes are written by `settle.rs`.
//!
//! | module | holds |
//! |---|---|
//! | `mod.rs` | [`EmbeddedSource`]: a trigger's queue, cursor and retry book; start-up |
//! | `router` | the router: commits → filter index → trigger queues |
//! | `read` | reading queued events back from the log (cold entries, read-ahead) |
//! | `retry` | the retry scanner: due retry records → work |
//! | `settle` | the one place that writes an outcome to the store (and stores replies) |
//! | `dead_letter` | dead-letter sinks, retries of removed triggers |
//! | `recovery` | what runs at start, before routing |

mod dead_letter;
mod read;
mod recovery;
mod retry;
mod router;
mod settle;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_broker::append::Appender;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError, LogRecord, blocking};
use switchyard_broker::metrics as m;
use switchyard_broker::tasks::Tasks;
use switchyard_core::CloudEvent;
use switchyard_core::config::Config;
use switchyard_core::id::TriggerId;
use tokio::sync::{Notify, mpsc};

use super::source::{DeliverySource, Work};
use super::{DispatchError, HOT_QUEUE, Outcome, TriggerRuntime, compile_filter, lock};
use crate::filter::FilterIndex;
use crate::queue::OffsetQueue;
use crate::records;
use router::BrokerRoute;
pub(in crate::dispatch) use router::RouteChange;

/// What the trigger's queue and cursor hold.
struct QueueState {
    queue: OffsetQueue,
    inflight: BTreeSet<u64>,
    /// Every offset below this has been routed (matched into the queue, or skipped).
    routed_to: u64,
}

/// The trigger's scheduled retries: where they are kept, how many there are, and the due
/// ones handed out as work.
#[derive(Debug)]
struct RetryBook {
    /// Prefix of this trigger's keys in the retry table.
    prefix: Vec<u8>,
    /// Retry records this trigger has (for its lag).
    pending: AtomicI64,
    /// Wakes the retry scanner.
    wake: Notify,
    /// Due retries the scanner found, waiting for [`DeliverySource::next`].
    due: Mutex<VecDeque<Work<Ticket>>>,
    /// Keys of the retry records handed out and not yet settled, so a later scan does not
    /// hand them out twice.
    in_progress: Mutex<HashSet<Vec<u8>>>,
}

impl RetryBook {
    /// A retry record was added.
    fn added(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// A retry record was removed.
    fn removed(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a piece of work came from.
#[derive(Debug)]
pub enum Ticket {
    /// The trigger's queue (routed from the log).
    Routed,
    /// The retry record with this key.
    Retry(Vec<u8>),
}

/// One trigger's work from the embedded log: its queue and cursor, and its retry records.
pub struct EmbeddedSource {
    trigger: Arc<TriggerRuntime>,
    /// The trigger's cursor in the broker's log.
    consumer: String,
    state: Mutex<QueueState>,
    /// Wakes the delivery loop waiting in `next` (a routed event, a due retry).
    wake: Notify,
    /// Offsets at or past `start` that already have a retry record (a restart found them):
    /// routing skips them once.
    skip: Mutex<HashSet<u64>>,
    /// The cursor at start: older events were done before.
    start: u64,
    committed: AtomicU64,
    retries: RetryBook,
    /// Records read past a cold queue entry, for the entries after it (`read.rs`).
    read_ahead: Mutex<VecDeque<LogRecord>>,
    /// Whether `next` last handed out a due retry (then a routed event goes next).
    retry_went_last: AtomicBool,
    log: Arc<dyn EventLog>,
    /// Stores replies, held to the broker's `eventTypes`.
    appender: Appender,
    /// Sends to the dead-letter sink, which finish (within the drain's timeout) when the
    /// trigger drains, at a reload or the server's stop.
    /// `None` once the dispatcher shut them down: a send that comes later is not started
    /// (its dead letter's marker makes the next start send it).
    side_tasks: Mutex<Option<Tasks>>,
    /// Shared with the trigger's dead-letter-sink pump (see `dead_letter.rs`).
    dls_pump: Arc<dead_letter::DeadLetterPump>,
}

impl std::fmt::Debug for EmbeddedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSource")
            .field("trigger", &self.trigger.id)
            .finish_non_exhaustive()
    }
}

impl EmbeddedSource {
    /// The source of `trigger`, its cursor read (or set to the log's end, for a new trigger)
    /// and its pending retries counted, off the async workers.
    async fn open(
        trigger: Arc<TriggerRuntime>,
        log: &Arc<dyn EventLog>,
        event_types: &Arc<EventTypePolicy>,
    ) -> Result<EmbeddedSource, LogError> {
        let consumer = records::trigger_consumer(trigger.id.name());
        let prefix = records::retry_prefix(&trigger.broker, trigger.id.name());
        let (broker, c, p) = (
            Arc::clone(&trigger.broker),
            consumer.clone(),
            prefix.clone(),
        );
        let (start, pending, skip) = blocking(log, move |log| {
            let start = match log.committed(&broker, &c)? {
                Some(at) => at,
                None => {
                    // A new trigger sees the events that arrive from now on.
                    let next = log.stats(&broker)?.next;
                    log.commit(&broker, &c, next)?;
                    next
                }
            };
            let (pending, skip) = recovery::retry_offsets(log, &p, start)?;
            Ok((start, pending, skip))
        })
        .await?;
        Ok(EmbeddedSource {
            trigger,
            consumer,
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
                due: Mutex::default(),
                in_progress: Mutex::default(),
            },
            read_ahead: Mutex::default(),
            retry_went_last: AtomicBool::new(false),
            log: Arc::clone(log),
            appender: Appender::new(Arc::clone(log), Arc::clone(event_types)),
            side_tasks: Mutex::new(Some(Tasks::new("dead-letter sinks"))),
            dls_pump: Arc::default(),
        })
    }

    /// The trigger this source works for.
    pub fn trigger(&self) -> &Arc<TriggerRuntime> {
        &self.trigger
    }

    /// Opens the source of `trigger` (see [`EmbeddedSource::open`]) and spawns its retry
    /// scanner into `tasks`.
    pub(super) async fn open_running(
        trigger: Arc<TriggerRuntime>,
        log: &Arc<dyn EventLog>,
        event_types: &Arc<EventTypePolicy>,
        tasks: &mut Tasks,
    ) -> Result<Arc<EmbeddedSource>, LogError> {
        let source = Arc::new(EmbeddedSource::open(trigger, log, event_types).await?);
        tasks.spawn(retry::scan_due(Arc::clone(&source)));
        // What its dead-letter sink is still owed (before a restart, or by the trigger this
        // one replaces in a reload) is sent from now on.
        source.wake_dead_letter_pump();
        Ok(source)
    }

    /// The trigger's id.
    pub fn id(&self) -> &TriggerId {
        &self.trigger.id
    }

    /// The broker's log id, `namespace/name`.
    pub fn broker_id(&self) -> &str {
        &self.trigger.broker
    }

    /// Prefix of this trigger's keys in the retry table.
    pub fn retry_prefix(&self) -> &[u8] {
        &self.retries.prefix
    }

    /// Tells the retry scanner a retry record was written for it (a redrive).
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
    fn enqueue(&self, offset: u64, event: &Arc<CloudEvent>) {
        lock(&self.state).queue.push_back(offset, event);
        self.wake.notify_one();
    }

    /// Every offset below `position` has been routed.
    fn set_routed(&self, position: u64) {
        let mut s = lock(&self.state);
        s.routed_to = s.routed_to.max(position);
    }

    /// The next queued offset, its event when the queue kept it, and how many offsets of the
    /// same run follow it.
    fn pop(&self) -> Option<(u64, Option<Arc<CloudEvent>>, usize)> {
        let mut s = lock(&self.state);
        let (offset, hot) = s.queue.pop_front()?;
        s.inflight.insert(offset);
        Some((offset, hot, s.queue.run_ahead()))
    }

    /// The event at `offset` is done for this trigger (its outcome is durable).
    fn done(&self, offset: u64) {
        lock(&self.state).inflight.remove(&offset);
    }

    /// Puts a popped entry back at the head of the queue (its read failed; try again later).
    fn requeue(&self, offset: u64) {
        let mut s = lock(&self.state);
        s.inflight.remove(&offset);
        s.queue.push_front(offset);
    }

    /// Hands the cursor to the log when it moved (the log persists it with a later commit).
    fn commit_cursor(&self) {
        let c = self.cursor();
        if self.committed.swap(c, Ordering::Relaxed) != c
            && let Err(e) = self.log.commit(&self.trigger.broker, &self.consumer, c)
        {
            tracing::warn!(trigger = %self.trigger.id, error = %e, "cannot commit cursor");
        }
    }

    /// Runs `task` beside the trigger's loops; a drain lets it finish within its timeout.
    fn spawn_side_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match lock(&self.side_tasks).as_mut() {
            Some(tasks) => tasks.spawn(task),
            None => {
                tracing::info!(trigger = %self.trigger.id, "shutting down: a dead letter goes to the dead-letter sink after the restart")
            }
        }
    }

    /// Stops the trigger's side tasks, letting the sends to the dead-letter sink that have
    /// started finish for up to `within`, and hands its cursor to the log one last time.
    pub(super) async fn drain(&self, within: Duration) {
        self.close_dead_letter_pump();
        let side = lock(&self.side_tasks).take();
        if let Some(side) = side {
            side.finish(within).await;
        }
        self.commit_cursor();
    }
}

impl DeliverySource for EmbeddedSource {
    type Ticket = Ticket;

    /// A due retry or the next queued event (reading cold entries back from the log). When
    /// both are waiting they take turns, so neither starves the other (as when both waited
    /// for the trigger's slots in arrival order).
    async fn next(&self) -> Work<Ticket> {
        loop {
            let retry_turn = !self.retry_went_last.load(Ordering::Relaxed);
            if retry_turn && let Some(work) = self.take_due() {
                return work;
            }
            match self.take_routed().await {
                Routed::Work(work) => return work,
                Routed::Skipped => continue,
                Routed::Empty => {}
            }
            if let Some(work) = self.take_due() {
                return work;
            }
            lock(&self.read_ahead).clear();
            self.wake.notified().await;
        }
    }

    async fn settle(&self, work: Work<Ticket>, outcome: Outcome) -> Result<(), LogError> {
        let retry_key = match &work.ticket {
            Ticket::Routed => None,
            Ticket::Retry(key) => Some(key.clone()),
        };
        let job = settle::Job {
            offset: work.position,
            event: &work.event,
            retry_key,
            uri: work.redirect.clone(),
        };
        let settled = self.settle_durably(&job, outcome).await;
        match work.ticket {
            Ticket::Routed if settled.is_ok() => self.done(work.position),
            Ticket::Routed => {}
            Ticket::Retry(key) => {
                lock(&self.retries.in_progress).remove(&key);
            }
        }
        settled
    }
}

/// What the trigger's queue gave.
enum Routed {
    /// The next routed event.
    Work(Work<Ticket>),
    /// An entry with nothing to deliver (gone from the log, or put back to read later).
    Skipped,
    /// The queue is empty.
    Empty,
}

impl EmbeddedSource {
    /// The next due retry the scanner handed out, if any.
    fn take_due(&self) -> Option<Work<Ticket>> {
        let work = lock(&self.retries.due).pop_front()?;
        self.retry_went_last.store(true, Ordering::Relaxed);
        Some(work)
    }

    /// The next queued event.
    async fn take_routed(&self) -> Routed {
        let Some((offset, hot, ahead)) = self.pop() else {
            return Routed::Empty;
        };
        self.retry_went_last.store(false, Ordering::Relaxed);
        let event = match hot {
            Some(e) => e,
            None => match self.read_queued(offset, ahead).await {
                Some(e) => e,
                None => return Routed::Skipped,
            },
        };
        Routed::Work(Work {
            position: offset,
            event,
            attempts: Vec::new(),
            redirect: None,
            first: true,
            ticket: Ticket::Routed,
        })
    }
}

/// Opens every trigger's embedded source, runs what start-up owes (`recovery.rs`), and spawns
/// the router and the housekeeping into `tasks` and each trigger's retry scanner into its
/// own (`trigger_tasks`, in the order of `triggers`). Routes change through the sender it
/// returns.
pub(super) async fn start(
    config: &Config,
    log: &Arc<dyn EventLog>,
    event_types: &Arc<EventTypePolicy>,
    triggers: &[Arc<TriggerRuntime>],
    tasks: &mut Tasks,
    trigger_tasks: &mut [Tasks],
    running: &super::RunningTriggers,
) -> Result<(Vec<Arc<EmbeddedSource>>, mpsc::Sender<RouteChange>), DispatchError> {
    let mut routes = HashMap::new();
    for (ns, name) in config.brokers.keys() {
        let id: Arc<str> = Arc::from(switchyard_core::id::join(ns, name));
        let broker = Arc::clone(&id);
        let position = blocking(log, move |log| Ok(log.stats(&broker)?.next)).await?;
        let route = BrokerRoute::new(Arc::clone(&id), position);
        routes.insert(id, (route, Vec::new()));
    }
    let mut sources = Vec::new();
    for (t, own_tasks) in triggers.iter().zip(trigger_tasks.iter_mut()) {
        let source =
            EmbeddedSource::open_running(Arc::clone(t), log, event_types, own_tasks).await?;
        let (route, route_filters) = routes
            .get_mut(&t.broker)
            .ok_or_else(|| LogError::Storage(format!("no broker {}", t.broker)))?;
        route.position = route.position.min(source.start);
        route.triggers.push(Arc::clone(&source));
        // The index reports matches by position: filter i is trigger i's.
        let resource = &config.triggers[&(t.id.namespace().to_owned(), t.id.name().to_owned())];
        route_filters.push(compile_filter(
            config,
            t.id.namespace(),
            t.id.name(),
            resource,
        )?);
        sources.push(source);
    }
    let mut by_broker = HashMap::new();
    for (id, (mut route, route_filters)) in routes {
        route.index = FilterIndex::new(route_filters);
        recovery::forget_removed_triggers(log, &route.id, &route.triggers).await?;
        recovery::resend_to_dead_letter_sinks(log, &route.id, &route.triggers).await?;
        by_broker.insert(id, route);
    }
    let (commits_tx, commits_rx) = mpsc::channel(4096);
    log.observe_commits(commits_tx);
    let (changes_tx, changes_rx) = mpsc::channel(16);
    tasks.spawn(router::router(
        by_broker,
        Arc::clone(log),
        commits_rx,
        changes_rx,
    ));
    tasks.spawn(housekeeping(running.clone()));
    Ok((sources, changes_tx))
}

/// After a reload removed triggers of `broker`: forgets their cursors and turns their retries
/// into dead letters, as a start does (`remaining` are the broker's triggers now).
pub(super) async fn forget_removed(
    log: &Arc<dyn EventLog>,
    broker: &str,
    remaining: &[Arc<EmbeddedSource>],
) -> Result<(), LogError> {
    recovery::forget_removed_triggers(log, broker, remaining).await
}

/// Every 100 ms, hands each running trigger's cursor to the log; every second, sets its lag
/// gauge.
async fn housekeeping(running: super::RunningTriggers) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        for s in &running.all() {
            s.commit_cursor();
            if n.is_multiple_of(10) {
                metrics::gauge!(m::TRIGGER_LAG, s.trigger.labels()).set(s.lag() as f64);
            }
        }
    }
}
