//! The dispatcher: one router reads each new event once and hands it to the queues of the
//! triggers whose filters match; each trigger delivers from its queue with bounded
//! concurrency, schedules retries in the store, dead-letters what cannot be delivered, and
//! ingests replies. How it fits together is in ARCHITECTURE.md; the rules in
//! `spec/delivery.md`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{Committed, EventLog, LogError, LogRecord, Table, WriteOp};
use switchyard_broker::metrics as m;
use switchyard_core::config::Config;
use switchyard_core::resources::{Destination, Ordering as TriggerOrdering};
use switchyard_core::{CloudEvent, ExtValue};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::delivery::{AttemptResult, Deliverer, DeliverySettings, TTL_EXTENSION, Verdict};
use crate::filter::{Filter, FilterError, FilterIndex};
use crate::queue::OffsetQueue;
use crate::records::{self, Attempt, DeadLetter, RetryEntry};
use crate::streams::StreamSinks;

/// Queue entries beyond this many keep only the offset, and consecutive offsets share one
/// entry (`queue::OffsetQueue`); the event is read again from the log when its turn comes.
/// This is what bounds memory per queued event.
const HOT_QUEUE: usize = 1024;
/// Records a trigger reads from the log at a time for a run in the cold part of its queue.
const READ_AHEAD: usize = 64;
/// Bytes of stored events a trigger keeps read ahead (beyond the one it asked for).
const READ_AHEAD_BYTES: usize = 1024 * 1024;
/// Records the router reads from the log at a time when it catches up.
const READ_BATCH: usize = 512;
/// Default bound on deliveries in flight per trigger.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
/// The extension that records when the broker received an event.
const ARRIVAL_EXTENSION: &str = "knativearrivaltime";

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A trigger's filter does not compile.
    #[error("Trigger {trigger}: {source}")]
    Filter {
        /// `namespace/name`.
        trigger: String,
        /// What is wrong.
        source: FilterError,
    },
    /// The store failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Compiles every trigger's filter, so a bad one stops `serve` and `validate` with its field.
pub fn check_filters(config: &Config) -> Result<(), DispatchError> {
    for ((ns, name), t) in &config.triggers {
        Filter::compile(&t.spec).map_err(|source| DispatchError::Filter {
            trigger: format!("{ns}/{name}"),
            source,
        })?;
    }
    Ok(())
}

struct TriggerState {
    queue: OffsetQueue,
    inflight: BTreeSet<u64>,
    /// Every offset below this has been routed (matched into the queue, or skipped).
    routed_to: u64,
}

/// One trigger at run time.
pub struct TriggerRuntime {
    /// Namespace of the trigger and its broker.
    pub namespace: String,
    /// The trigger's name.
    pub name: String,
    broker: Arc<str>,
    consumer: String,
    subscriber: String,
    dead_letter_sink: Option<String>,
    settings: DeliverySettings,
    ordered: bool,
    rate_limit: Option<f64>,
    deliverer: Deliverer,
    state: Mutex<TriggerState>,
    wake: Notify,
    retry_wake: Notify,
    retry_prefix: Vec<u8>,
    slots: Arc<Semaphore>,
    pending_retries: AtomicI64,
    skip: Mutex<HashSet<u64>>,
    start: u64,
    log: Arc<dyn EventLog>,
    /// The brokers' `eventTypes` settings, which replies are held to.
    event_types: Arc<EventTypePolicy>,
    committed: AtomicU64,
    /// Metric handles, looked up once (labels are fixed per trigger).
    latency: metrics::Histogram,
    counters: Mutex<HashMap<String, metrics::Counter>>,
}

impl std::fmt::Debug for TriggerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerRuntime")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn resolve(dest: &Destination, ns: &str, config: &Config, ingress: &str) -> String {
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

/// The longest reply refusal kept in an attempt's `error`, in bytes.
const MAX_REFUSAL_BYTES: usize = 1024;

/// The TTL a reply to `original` gets: one less than the original's. A reply whose TTL would
/// be 0 or less is dropped (that is how reply loops die).
fn reply_ttl(original: &CloudEvent) -> i64 {
    original
        .extensions
        .get(TTL_EXTENSION)
        .and_then(ExtValue::as_i64)
        .unwrap_or(i64::from(switchyard_core::resources::DEFAULT_BROKER_TTL))
        - 1
}

/// Up to `max` records of `broker`'s log from `from` on, read off the async workers.
async fn read_log(
    log: &Arc<dyn EventLog>,
    broker: &Arc<str>,
    from: u64,
    max: usize,
) -> Result<Vec<LogRecord>, LogError> {
    let (log, broker) = (Arc::clone(log), Arc::clone(broker));
    tokio::task::spawn_blocking(move || log.read(&broker, from, max))
        .await
        .map_err(|e| LogError::Storage(format!("read task failed: {e}")))?
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

impl TriggerRuntime {
    fn labels(&self) -> Vec<metrics::Label> {
        vec![
            metrics::Label::new("namespace_name", self.namespace.clone()),
            metrics::Label::new("broker_name", self.broker_name().to_owned()),
            metrics::Label::new("trigger_name", self.name.clone()),
        ]
    }

    fn broker_name(&self) -> &str {
        self.broker.split('/').nth(1).unwrap_or("")
    }

    /// The broker's log id, `namespace/name`.
    pub fn broker_id(&self) -> &str {
        &self.broker
    }

    /// Prefix of this trigger's keys in the retry table.
    pub fn retry_prefix(&self) -> &[u8] {
        &self.retry_prefix
    }

    /// Tells the retry scheduler a retry record was written for it (a redrive).
    pub fn retry_scheduled(&self) {
        self.pending_retries.fetch_add(1, Ordering::Relaxed);
        self.retry_wake.notify_one();
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
        held + self.pending_retries.load(Ordering::Relaxed).max(0)
    }

    fn enqueue(&self, offset: u64, event: &Arc<CloudEvent>) {
        lock(&self.state).queue.push_back(offset, event);
        self.wake.notify_one();
    }

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

    fn done(&self, offset: u64) {
        lock(&self.state).inflight.remove(&offset);
    }

    fn commit_cursor(&self) {
        let c = self.cursor();
        if self.committed.swap(c, Ordering::Relaxed) != c
            && let Err(e) = self.log.commit(&self.broker, &self.consumer, c)
        {
            tracing::warn!(trigger = %self.name, error = %e, "cannot commit cursor");
        }
    }

    /// Reads a queued event back from the log: `Ok(None)` only when a successful read shows it
    /// is gone. Past its hot part a queue holds runs of offsets, so when `ahead` more offsets
    /// of the same run follow, the read takes them too (up to [`READ_AHEAD`] records and
    /// [`READ_AHEAD_BYTES`]) into `read_ahead`, where the next pops find them without another
    /// trip to the store.
    async fn load_event(
        &self,
        offset: u64,
        ahead: usize,
        read_ahead: &mut VecDeque<LogRecord>,
    ) -> Result<Option<CloudEvent>, LogError> {
        while read_ahead.front().is_some_and(|r| r.offset < offset) {
            read_ahead.pop_front();
        }
        if read_ahead.front().is_none_or(|r| r.offset != offset) {
            let want = ahead.saturating_add(1).min(READ_AHEAD);
            let records = match read_log(&self.log, &self.broker, offset, want).await {
                // One unreadable record must not hold up its neighbours: read this one alone.
                Err(_) if want > 1 => read_log(&self.log, &self.broker, offset, 1).await?,
                other => other?,
            };
            let mut bytes = 0usize;
            *read_ahead = records
                .into_iter()
                .take_while(|r| {
                    bytes += r.event.len();
                    r.offset == offset || bytes <= READ_AHEAD_BYTES
                })
                .collect();
        }
        let Some(record) = read_ahead.pop_front().filter(|r| r.offset == offset) else {
            read_ahead.clear();
            return Ok(None);
        };
        switchyard_core::store::decode(&record.event)
            .map(Some)
            .map_err(|e| LogError::Storage(e.to_string()))
    }

    /// Puts a popped entry back at the head of the queue (its read failed; try again later).
    fn requeue(&self, offset: u64) {
        let mut s = lock(&self.state);
        s.inflight.remove(&offset);
        s.queue.push_front(offset);
    }

    /// One attempt to the subscriber at `url`, counted. Replies are held to the broker's
    /// `eventTypes` as ingress holds events: a reply the broker refuses (`enforce`) makes the
    /// attempt fail like a malformed reply, so it is retried and then dead-lettered.
    async fn attempt(&self, url: &str, event: &CloudEvent) -> AttemptResult {
        let mut r = self
            .deliverer
            .attempt(url, event, &self.settings, &[])
            .await;
        // Replies that will be dropped for their TTL are not judged: nothing is stored.
        if r.verdict == Verdict::Delivered
            && !r.replies.is_empty()
            && reply_ttl(event) > 0
            && let Err(p) = self.event_types.check(&self.broker, &r.replies)
        {
            // The detail can quote the reply's data: keep what each attempt record holds
            // bounded.
            let mut error = format!("reply refused by the broker: {}", p.detail);
            if error.len() > MAX_REFUSAL_BYTES {
                let mut end = MAX_REFUSAL_BYTES;
                while !error.is_char_boundary(end) {
                    end -= 1;
                }
                error.truncate(end);
                error.push('…');
            }
            r.error = Some(error);
            r.verdict = Verdict::Retry;
            r.replies.clear();
        }
        self.count_attempt(&r);
        r
    }

    fn count_attempt(&self, r: &AttemptResult) {
        let code = match (r.status, &r.error) {
            (Some(s), _) => s.to_string(),
            (None, Some(e)) if e.starts_with("timeout") => "timeout".to_owned(),
            _ => "connection_error".to_owned(),
        };
        self.latency.record(r.latency.as_secs_f64());
        let mut counters = lock(&self.counters);
        if let Some(c) = counters.get(&code) {
            c.increment(1);
        } else {
            let mut labels = self.labels();
            labels.push(metrics::Label::new("response_code", code.clone()));
            let c = metrics::counter!(m::DELIVERY_COUNT, labels);
            c.increment(1);
            counters.insert(code, c);
        }
    }

    /// Stores reply events in the trigger's broker with the TTL decremented; a reply whose TTL
    /// runs out is dropped (that is how reply loops die) and counted.
    async fn ingest_replies(
        &self,
        original: &CloudEvent,
        replies: Vec<CloudEvent>,
    ) -> Result<(), LogError> {
        let ttl = reply_ttl(original);
        if ttl <= 0 {
            tracing::warn!(trigger = %self.name, event = %original.id, "reply dropped: TTL exhausted (a reply loop?)");
            metrics::counter!(m::REPLIES_DROPPED, self.labels()).increment(replies.len() as u64);
            return Ok(());
        }
        let arrival = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut replies = replies;
        let encoded: Vec<Vec<u8>> = replies
            .iter_mut()
            .map(|r| {
                r.extensions.insert(
                    TTL_EXTENSION.to_owned(),
                    ExtValue::Integer(i32::try_from(ttl).unwrap_or(i32::MAX)),
                );
                r.extensions.insert(
                    ARRIVAL_EXTENSION.to_owned(),
                    ExtValue::Timestamp(arrival.clone()),
                );
                switchyard_core::store::encode(r)
            })
            .collect();
        loop {
            match self.log.append(&self.broker, encoded.clone()).await {
                Ok(_) => {
                    let pairs = replies.iter().map(|r| (r.ty.as_str(), r.source.as_str()));
                    self.event_types
                        .record(self.log.as_ref(), &self.broker, pairs, &arrival)
                        .await;
                    return Ok(());
                }
                Err(LogError::Overloaded) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(e),
            }
        }
    }

    /// `settle`, tried again while the store fails (a full disk, say), so an outcome is never
    /// dropped and the cursor is not pinned until a restart. Gives up only at shutdown.
    async fn settle_durably(
        self: &Arc<Self>,
        offset: u64,
        event: &CloudEvent,
        earlier: Vec<Attempt>,
        r: AttemptResult,
        old_key: Option<Vec<u8>>,
        uri: Option<String>,
    ) -> Result<(), LogError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self
                .settle(
                    offset,
                    event,
                    earlier.clone(),
                    r.clone(),
                    old_key.clone(),
                    uri.clone(),
                )
                .await
            {
                Err(LogError::Storage(e)) => {
                    tracing::error!(trigger = %self.name, offset, error = %e, "cannot record the delivery's outcome; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }

    /// Acts on an attempt's result: done, a (re)scheduled retry, or a dead letter. `earlier`
    /// are the attempts before this one (kept only for failures); `old_key` is the retry
    /// record this attempt came from, removed in the same write.
    async fn settle(
        self: &Arc<Self>,
        offset: u64,
        event: &CloudEvent,
        earlier: Vec<Attempt>,
        r: AttemptResult,
        old_key: Option<Vec<u8>>,
        uri: Option<String>,
    ) -> Result<(), LogError> {
        let delete_old = old_key.clone().map(|key| WriteOp::Delete {
            table: Table::Retries,
            key,
        });
        match r.verdict {
            Verdict::Delivered => {
                if !r.replies.is_empty() {
                    self.ingest_replies(event, r.replies).await?;
                }
                if let Some(op) = delete_old {
                    self.log.write(vec![op]).await?;
                    self.pending_retries.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Verdict::Retry if earlier.len() < self.settings.retry as usize => {
                let mut attempts = earlier;
                attempts.push(Attempt::of(&r));
                let k = u32::try_from(attempts.len()).unwrap_or(u32::MAX);
                let delay = self.settings.backoff(k, r.retry_after, unit_random());
                let due = records::now_ms() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                let entry = RetryEntry {
                    offset,
                    event: records::encode_event(event),
                    attempts,
                    uri,
                };
                let mut ops = vec![WriteOp::Put {
                    table: Table::Retries,
                    key: records::retry_key(&self.retry_prefix, due, records::new_id()),
                    value: serde_json::to_vec(&entry).unwrap_or_default(),
                }];
                let fresh = delete_old.is_none();
                ops.extend(delete_old);
                self.log.write(ops).await?;
                if fresh {
                    self.pending_retries.fetch_add(1, Ordering::Relaxed);
                }
                metrics::counter!(m::DELIVERY_RETRIES, self.labels()).increment(1);
                self.retry_wake.notify_one();
                Ok(())
            }
            verdict => {
                let mut attempts = earlier;
                attempts.push(Attempt::of(&r));
                let reason = if verdict == Verdict::Retry {
                    "retries exhausted"
                } else {
                    "not retryable"
                };
                let destination = uri.clone().unwrap_or_else(|| self.subscriber.clone());
                let letter = DeadLetter {
                    id: records::new_id(),
                    broker: self.broker.to_string(),
                    trigger: self.name.clone(),
                    offset,
                    time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    time_ms: records::now_ms(),
                    reason: reason.to_owned(),
                    destination: destination.clone(),
                    status: r.status,
                    ty: event.ty.clone(),
                    source: event.source.clone(),
                    event_id: event.id.clone(),
                    event: records::encode_event(event),
                    attempts,
                    error_data: (!r.body.is_empty()).then(|| {
                        let mut data = base64::engine::general_purpose::STANDARD.encode(&r.body);
                        data.truncate(1024);
                        data
                    }),
                };
                let mut ops = vec![WriteOp::Put {
                    table: Table::DeadLetters,
                    key: records::deadletter_key(&self.broker, letter.id),
                    value: serde_json::to_vec(&letter).unwrap_or_default(),
                }];
                // The dead-letter sink is owed this event until it answers 2xx; the marker
                // makes a restart send it again.
                if self.dead_letter_sink.is_some() {
                    ops.push(WriteOp::Put {
                        table: Table::DeadLetters,
                        key: records::dls_pending_key(&self.broker, letter.id),
                        value: self.name.clone().into_bytes(),
                    });
                }
                let had_old = delete_old.is_some();
                ops.extend(delete_old);
                self.log.write(ops).await?;
                if had_old {
                    self.pending_retries.fetch_sub(1, Ordering::Relaxed);
                }
                tracing::warn!(trigger = %self.name, event = %event.id, reason, status = ?r.status, error = ?r.error, "dead-lettered");
                let mut labels = self.labels();
                labels.push(metrics::Label::new("reason", reason));
                metrics::counter!(m::DEAD_LETTERS, labels).increment(1);
                if self.dead_letter_sink.is_some() {
                    let me = Arc::clone(self);
                    tokio::spawn(async move { me.send_to_dead_letter_sink(&letter).await });
                }
                Ok(())
            }
        }
    }

    /// Sends a dead-lettered event to the `deadLetterSink` with the `knativeerror*`
    /// attributes, retrying as the trigger would. The dead-letter store keeps it either way.
    async fn send_to_dead_letter_sink(&self, letter: &DeadLetter) {
        let (Some(dls), Some(event)) = (self.dead_letter_sink.as_deref(), letter.event()) else {
            return;
        };
        let mut extra = vec![("knativeerrordest", letter.destination.clone())];
        if let Some(status) = letter.status {
            extra.push(("knativeerrorcode", status.to_string()));
        }
        if let Some(data) = &letter.error_data {
            extra.push(("knativeerrordata", data.clone()));
        }
        for k in 0..=self.settings.retry {
            if k > 0 {
                tokio::time::sleep(self.settings.backoff(k, None, unit_random())).await;
            }
            let r = self
                .deliverer
                .attempt(dls, &event, &self.settings, &extra)
                .await;
            if r.verdict == Verdict::Delivered {
                let done = WriteOp::Delete {
                    table: Table::DeadLetters,
                    key: records::dls_pending_key(&self.broker, letter.id),
                };
                if let Err(e) = self.log.write(vec![done]).await {
                    tracing::warn!(trigger = %self.name, error = %e, "cannot clear a dead-letter-sink marker; the sink may get the event again after a restart");
                }
                return;
            }
            if r.verdict == Verdict::DeadLetter {
                // The sink refuses it for good: stop owing it (the store still has it).
                let give_up = WriteOp::Delete {
                    table: Table::DeadLetters,
                    key: records::dls_pending_key(&self.broker, letter.id),
                };
                let _ = self.log.write(vec![give_up]).await;
                tracing::error!(trigger = %self.name, event = %event.id, sink = dls, status = ?r.status, "the dead-letter sink refused the event; it stays in the dead-letter store");
                return;
            }
        }
        tracing::error!(trigger = %self.name, event = %event.id, sink = dls, "the dead-letter sink did not take the event; it stays in the dead-letter store and is sent again after a restart");
    }

    /// First delivery of a routed event (unordered triggers).
    async fn deliver(
        self: Arc<Self>,
        offset: u64,
        event: Arc<CloudEvent>,
        _permit: OwnedSemaphorePermit,
    ) {
        let r = self.attempt(&self.subscriber, &event).await;
        match self
            .settle_durably(offset, &event, Vec::new(), r, None, None)
            .await
        {
            Ok(()) => self.done(offset),
            Err(e) => {
                tracing::warn!(trigger = %self.name, offset, error = %e, "outcome not recorded (shutting down); the event will be delivered again after a restart")
            }
        }
    }

    /// Delivery of an ordered trigger's event: retried in place, so its key stays blocked.
    async fn deliver_in_order(self: Arc<Self>, offset: u64, event: Arc<CloudEvent>) {
        let mut attempts = Vec::new();
        let mut k = 0u32;
        loop {
            let r = self.attempt(&self.subscriber, &event).await;
            if r.verdict == Verdict::Retry && k < self.settings.retry {
                attempts.push(Attempt::of(&r));
                k += 1;
                metrics::counter!(m::DELIVERY_RETRIES, self.labels()).increment(1);
                tokio::time::sleep(self.settings.backoff(k, r.retry_after, unit_random())).await;
                continue;
            }
            // Delivered, not retryable, or out of retries (then `attempts` holds `retry`
            // entries, so `settle` dead-letters it as exhausted rather than scheduling more).
            match self
                .settle_durably(offset, &event, attempts, r, None, None)
                .await
            {
                Ok(()) => self.done(offset),
                Err(e) => {
                    tracing::error!(trigger = %self.name, offset, error = %e, "cannot record the delivery's outcome")
                }
            }
            return;
        }
    }

    /// A scheduled retry that came due.
    async fn retry(
        self: Arc<Self>,
        key: Vec<u8>,
        value: Vec<u8>,
        in_progress: Arc<Mutex<HashSet<Vec<u8>>>>,
        _permit: OwnedSemaphorePermit,
    ) {
        let entry: Option<RetryEntry> = serde_json::from_slice(&value).ok();
        let Some((entry, event)) = entry.and_then(|e| e.event().map(|ev| (e, ev))) else {
            tracing::error!(trigger = %self.name, "unreadable retry record; removing it");
            let _ = self
                .log
                .write(vec![WriteOp::Delete {
                    table: Table::Retries,
                    key: key.clone(),
                }])
                .await;
            lock(&in_progress).remove(&key);
            return;
        };
        // The scan that found this record may predate another task settling it (and leaving
        // `in_progress`): only a fresh read says whether it is still owed.
        let mut end = key.clone();
        end.push(0);
        match self.log.scan(Table::Retries, &key, &end, 1) {
            Ok(found) if found.is_empty() => {
                lock(&in_progress).remove(&key);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(trigger = %self.name, error = %e, "cannot read a retry record; trying later");
                lock(&in_progress).remove(&key);
                return;
            }
        }
        let url = entry.uri.clone().unwrap_or_else(|| self.subscriber.clone());
        let r = self.attempt(&url, &event).await;
        if let Err(e) = self
            .settle_durably(
                entry.offset,
                &event,
                entry.attempts,
                r,
                Some(key.clone()),
                entry.uri,
            )
            .await
        {
            tracing::error!(trigger = %self.name, error = %e, "cannot record a retry's outcome; it will be retried");
        }
        lock(&in_progress).remove(&key);
    }
}

/// The per-broker routing state.
struct BrokerRoute {
    id: Arc<str>,
    position: u64,
    index: FilterIndex,
    triggers: Vec<Arc<TriggerRuntime>>,
}

impl BrokerRoute {
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

/// The running dispatcher of every trigger of a configuration.
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
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
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut routes: HashMap<Arc<str>, BrokerRoute> = HashMap::new();
        let mut all = Vec::new();
        for (ns, name) in config.brokers.keys() {
            let id: Arc<str> = Arc::from(format!("{ns}/{name}"));
            let next = log.stats(&id)?.next;
            routes.insert(
                Arc::clone(&id),
                BrokerRoute {
                    id,
                    position: next,
                    index: FilterIndex::default(),
                    triggers: Vec::new(),
                },
            );
        }
        let mut filters_by_broker: HashMap<Arc<str>, Vec<Filter>> = HashMap::new();
        for ((ns, name), t) in &config.triggers {
            let broker_key = (ns.clone(), t.spec.broker.clone());
            let broker = &config.brokers[&broker_key];
            let id: Arc<str> = Arc::from(format!("{ns}/{}", t.spec.broker));
            let consumer = format!("trigger/{name}");
            let start = match log.committed(&id, &consumer)? {
                Some(c) => c,
                None => {
                    // A new trigger sees the events that arrive from now on.
                    let next = log.stats(&id)?.next;
                    log.commit(&id, &consumer, next)?;
                    next
                }
            };
            let retry_prefix = records::retry_prefix(&id, name);
            let (pending, skip) = retry_offsets(log.as_ref(), &retry_prefix, start)?;
            let delivery = t.spec.delivery.as_ref().or(broker.spec.delivery.as_ref());
            let settings = DeliverySettings::resolve(delivery);
            let dead_letter_sink = delivery
                .and_then(|d| d.dead_letter_sink.as_ref())
                .map(|d| resolve(d, ns, config, ingress));
            let runtime = Arc::new(TriggerRuntime {
                namespace: ns.clone(),
                name: name.clone(),
                broker: Arc::clone(&id),
                consumer,
                subscriber: resolve(&t.spec.subscriber, ns, config, ingress),
                dead_letter_sink,
                settings,
                ordered: t.spec.ordering == Some(TriggerOrdering::Ordered),
                rate_limit: t.spec.rate_limit,
                deliverer: Deliverer::new(Arc::clone(&streams)),
                state: Mutex::new(TriggerState {
                    queue: OffsetQueue::new(HOT_QUEUE),
                    inflight: BTreeSet::new(),
                    routed_to: start,
                }),
                wake: Notify::new(),
                retry_wake: Notify::new(),
                retry_prefix,
                slots: Arc::new(Semaphore::new(
                    t.spec.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT) as usize,
                )),
                pending_retries: AtomicI64::new(i64::try_from(pending).unwrap_or(i64::MAX)),
                skip: Mutex::new(skip),
                start,
                log: Arc::clone(&log),
                event_types: Arc::clone(&event_types),
                committed: AtomicU64::new(start),
                latency: metrics::histogram!(
                    m::DELIVERY_LATENCY,
                    "namespace_name" => ns.clone(),
                    "broker_name" => t.spec.broker.clone(),
                    "trigger_name" => name.clone()
                ),
                counters: Mutex::new(HashMap::new()),
            });
            let route = routes
                .get_mut(&id)
                .ok_or_else(|| LogError::Storage(format!("no broker {id}")))?;
            route.position = route.position.min(start);
            route.triggers.push(Arc::clone(&runtime));
            filters_by_broker
                .entry(id)
                .or_default()
                .push(
                    Filter::compile(&t.spec).map_err(|source| DispatchError::Filter {
                        trigger: format!("{ns}/{name}"),
                        source,
                    })?,
                );
            all.push(runtime);
        }
        // Cursors of triggers that are gone would hold retention back forever.
        for id in routes.keys() {
            let known: HashSet<String> = routes[id]
                .triggers
                .iter()
                .map(|t| t.consumer.clone())
                .collect();
            let stale: Vec<WriteOp> = log
                .consumers(id)?
                .into_iter()
                .filter(|(c, _)| c.starts_with("trigger/") && !known.contains(c))
                .map(|(consumer, _)| WriteOp::ForgetCursor {
                    broker: id.to_string(),
                    consumer,
                })
                .collect();
            if !stale.is_empty() {
                log.write(stale).await?;
            }
            let names: HashSet<&str> = routes[id]
                .triggers
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            orphaned_retries_to_dead_letters(log.as_ref(), id, &names).await?;
        }
        for (id, filters) in filters_by_broker {
            if let Some(route) = routes.get_mut(&id) {
                route.index = FilterIndex::new(filters);
            }
        }
        // Dead letters the dead-letter sink had not taken before the last stop.
        for route in routes.values() {
            let prefix = records::dls_pending_prefix(&route.id);
            let markers = log.scan(
                Table::DeadLetters,
                &prefix,
                &records::prefix_end(&prefix),
                usize::MAX,
            )?;
            for (marker, trigger) in markers {
                let id = marker
                    .get(prefix.len()..)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                let key = records::deadletter_key(&route.id, id);
                let mut end = key.clone();
                end.push(0);
                let letter = log
                    .scan(Table::DeadLetters, &key, &end, 1)?
                    .into_iter()
                    .next()
                    .and_then(|(_, v)| serde_json::from_slice::<DeadLetter>(&v).ok());
                let runtime = route.triggers.iter().find(|t| {
                    t.name.as_bytes() == trigger.as_slice() && t.dead_letter_sink.is_some()
                });
                match (letter, runtime) {
                    (Some(letter), Some(t)) => {
                        let t = Arc::clone(t);
                        tasks.spawn(async move { t.send_to_dead_letter_sink(&letter).await });
                    }
                    // Redriven or purged meanwhile, or the trigger or its sink is gone.
                    _ => {
                        log.write(vec![WriteOp::Delete {
                            table: Table::DeadLetters,
                            key: marker,
                        }])
                        .await?;
                    }
                }
            }
        }
        let (commits_tx, commits_rx) = mpsc::channel(4096);
        log.observe_commits(commits_tx);
        tasks.spawn(router(
            routes,
            Arc::clone(&log),
            commits_rx,
            stop_rx.clone(),
        ));
        for t in &all {
            tasks.spawn(dispatch_loop(Arc::clone(t), stop_rx.clone()));
            // Ordered triggers retry in place; their retry records come only from redrives.
            tasks.spawn(retry_loop(Arc::clone(t), stop_rx.clone()));
        }
        tasks.spawn(housekeeping(all.clone(), stop_rx));
        Ok(Dispatcher {
            stop,
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
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for t in &self.triggers {
            t.commit_cursor();
        }
    }
}

/// Retries still scheduled for triggers that are no longer configured become dead letters
/// (reason `trigger removed`), so removing a trigger drops nothing silently and the records
/// stay inspectable and redrivable once the trigger is back.
async fn orphaned_retries_to_dead_letters(
    log: &dyn EventLog,
    broker: &str,
    known: &HashSet<&str>,
) -> Result<(), LogError> {
    let from = format!("{broker}#").into_bytes();
    let to = format!("{broker}$").into_bytes();
    let mut cursor = from;
    loop {
        let chunk = log.scan(Table::Retries, &cursor, &to, 500)?;
        let n = chunk.len();
        let mut ops = Vec::new();
        for (key, value) in chunk {
            cursor = key.clone();
            cursor.push(0);
            let name_end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
            let trigger = String::from_utf8_lossy(&key[broker.len() + 1..name_end]).into_owned();
            if known.contains(trigger.as_str()) {
                continue;
            }
            let Ok(entry) = serde_json::from_slice::<RetryEntry>(&value) else {
                continue;
            };
            let event = entry.event();
            let letter = DeadLetter {
                id: records::new_id(),
                broker: broker.to_owned(),
                trigger: trigger.clone(),
                offset: entry.offset,
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                time_ms: records::now_ms(),
                reason: "trigger removed".to_owned(),
                destination: entry.uri.clone().unwrap_or_default(),
                status: entry.attempts.last().and_then(|a| a.status),
                ty: event.as_ref().map(|e| e.ty.clone()).unwrap_or_default(),
                source: event.as_ref().map(|e| e.source.clone()).unwrap_or_default(),
                event_id: event.as_ref().map(|e| e.id.clone()).unwrap_or_default(),
                event: entry.event,
                attempts: entry.attempts,
                error_data: None,
            };
            tracing::warn!(broker, trigger = %trigger, event = %letter.event_id, "a retry of a removed trigger was moved to the dead-letter store");
            ops.push(WriteOp::Put {
                table: Table::DeadLetters,
                key: records::deadletter_key(broker, letter.id),
                value: serde_json::to_vec(&letter).unwrap_or_default(),
            });
            ops.push(WriteOp::Delete {
                table: Table::Retries,
                key,
            });
        }
        if !ops.is_empty() {
            log.write(ops).await?;
        }
        if n < 500 {
            return Ok(());
        }
    }
}

/// How many retry records a trigger has, and the offsets at or past `start` they cover, read
/// in chunks and parsing only the offsets (the records also carry event copies).
fn retry_offsets(
    log: &dyn EventLog,
    prefix: &[u8],
    start: u64,
) -> Result<(usize, HashSet<u64>), LogError> {
    #[derive(serde::Deserialize)]
    struct OffsetOnly {
        offset: u64,
    }
    let end = records::prefix_end(prefix);
    let mut from = prefix.to_vec();
    let (mut count, mut skip) = (0, HashSet::new());
    loop {
        let chunk = log.scan(Table::Retries, &from, &end, 1000)?;
        let n = chunk.len();
        count += n;
        for (key, value) in chunk {
            if let Ok(e) = serde_json::from_slice::<OffsetOnly>(&value)
                && e.offset >= start
            {
                skip.insert(e.offset);
            }
            from = key;
            from.push(0);
        }
        if n < 1000 {
            return Ok((count, skip));
        }
    }
}

async fn router(
    mut routes: HashMap<Arc<str>, BrokerRoute>,
    log: Arc<dyn EventLog>,
    mut commits: mpsc::Receiver<Committed>,
    mut stop: watch::Receiver<bool>,
) {
    // Start with whatever the triggers have not seen yet.
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
            _ = stop.changed() => return,
        }
    }
}

async fn dispatch_loop(t: Arc<TriggerRuntime>, mut stop: watch::Receiver<bool>) {
    let mut deliveries = JoinSet::new();
    let mut next_start = tokio::time::Instant::now();
    // Ordered triggers: the key being delivered, and events waiting behind it.
    let mut busy: HashMap<String, VecDeque<(u64, Arc<CloudEvent>)>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    // Records read past a cold queue entry, for the entries after it.
    let mut read_ahead: VecDeque<LogRecord> = VecDeque::new();
    loop {
        while deliveries.try_join_next().is_some() {}
        // Ordered triggers park events behind busy keys; past HOT_QUEUE of them, stop taking
        // more from the queue (which holds offsets only) until a key frees up.
        if t.ordered && busy.values().map(VecDeque::len).sum::<usize>() >= HOT_QUEUE {
            tokio::select! {
                Some(key) = done_rx.recv() => {
                    start_next_in_order(&t, &mut busy, key, &mut deliveries, &done_tx);
                }
                _ = stop.changed() => {
                    deliveries.abort_all();
                    return;
                }
            }
            continue;
        }
        let Some((offset, hot, ahead)) = t.pop() else {
            read_ahead.clear();
            tokio::select! {
                _ = t.wake.notified() => continue,
                Some(key) = done_rx.recv() => {
                    start_next_in_order(&t, &mut busy, key, &mut deliveries, &done_tx);
                    continue;
                }
                _ = stop.changed() => {
                    deliveries.abort_all();
                    return;
                }
            }
        };
        let event = match hot {
            Some(e) => e,
            None => match t.load_event(offset, ahead, &mut read_ahead).await {
                Ok(Some(e)) => Arc::new(e),
                Ok(None) => {
                    tracing::error!(trigger = %t.name, offset, "event no longer in the log; skipped");
                    t.done(offset);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(trigger = %t.name, offset, error = %e, "cannot read a queued event; trying again");
                    t.requeue(offset);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            },
        };
        if let Some(rate) = t.rate_limit {
            tokio::time::sleep_until(next_start).await;
            next_start = tokio::time::Instant::now().max(next_start)
                + Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(3600));
        }
        if t.ordered {
            let key = event
                .extensions
                .get("partitionkey")
                .map(ExtValue::to_canonical_string)
                .unwrap_or_default();
            while let Ok(k) = done_rx.try_recv() {
                start_next_in_order(&t, &mut busy, k, &mut deliveries, &done_tx);
            }
            if let Some(waiting) = busy.get_mut(&key) {
                waiting.push_back((offset, event));
            } else {
                busy.insert(key.clone(), VecDeque::new());
                spawn_in_order(&t, key, offset, event, &mut deliveries, &done_tx);
            }
            continue;
        }
        let permit = tokio::select! {
            p = Arc::clone(&t.slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => { deliveries.abort_all(); return; }
        };
        deliveries.spawn(Arc::clone(&t).deliver(offset, event, permit));
    }
}

fn spawn_in_order(
    t: &Arc<TriggerRuntime>,
    key: String,
    offset: u64,
    event: Arc<CloudEvent>,
    deliveries: &mut JoinSet<()>,
    done: &mpsc::UnboundedSender<String>,
) {
    let (t, done) = (Arc::clone(t), done.clone());
    deliveries.spawn(async move {
        // Ordered triggers respect maxInFlight too (across keys).
        let Ok(_permit) = Arc::clone(&t.slots).acquire_owned().await else {
            return;
        };
        t.deliver_in_order(offset, event).await;
        let _ = done.send(key);
    });
}

fn start_next_in_order(
    t: &Arc<TriggerRuntime>,
    busy: &mut HashMap<String, VecDeque<(u64, Arc<CloudEvent>)>>,
    key: String,
    deliveries: &mut JoinSet<()>,
    done: &mpsc::UnboundedSender<String>,
) {
    let next = busy.get_mut(&key).and_then(VecDeque::pop_front);
    match next {
        Some((offset, event)) => spawn_in_order(t, key, offset, event, deliveries, done),
        None => {
            busy.remove(&key);
        }
    }
}

async fn retry_loop(t: Arc<TriggerRuntime>, mut stop: watch::Receiver<bool>) {
    let in_progress: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let mut retries = JoinSet::new();
    let end = records::prefix_end(&t.retry_prefix);
    loop {
        while retries.try_join_next().is_some() {}
        let now = records::now_ms();
        let due_end = records::retry_key(&t.retry_prefix, now + 1, 0);
        let due = t
            .log
            .scan(Table::Retries, &t.retry_prefix, &due_end, 256)
            .unwrap_or_default();
        let mut started = 0;
        for (key, value) in due {
            if !lock(&in_progress).insert(key.clone()) {
                continue;
            }
            let permit = tokio::select! {
                p = Arc::clone(&t.slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.changed() => { retries.abort_all(); return; }
            };
            started += 1;
            retries.spawn(Arc::clone(&t).retry(key, value, Arc::clone(&in_progress), permit));
        }
        let next_due = t
            .log
            .scan(Table::Retries, &due_end, &end, 1)
            .ok()
            .and_then(|v| {
                v.first()
                    .map(|(k, _)| records::retry_due(t.retry_prefix.len(), k))
            });
        let wait = match next_due {
            Some(d) => Duration::from_millis(d.saturating_sub(records::now_ms()).clamp(1, 1000)),
            None => Duration::from_secs(1),
        };
        let wait = if started == 0 && !lock(&in_progress).is_empty() {
            wait.max(Duration::from_millis(10))
        } else {
            wait
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = t.retry_wake.notified() => {}
            _ = stop.changed() => { retries.abort_all(); return; }
        }
    }
}

async fn housekeeping(triggers: Vec<Arc<TriggerRuntime>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        n += 1;
        for t in &triggers {
            t.commit_cursor();
            if n.is_multiple_of(10) {
                metrics::gauge!(m::TRIGGER_LAG, t.labels()).set(t.lag() as f64);
            }
        }
    }
}
