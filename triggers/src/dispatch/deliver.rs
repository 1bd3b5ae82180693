//! A trigger's dispatch loop: it takes routed events from the trigger's queue (reading cold
//! ones back from the log), makes the first attempt within the trigger's concurrency bound
//! and rate, and hands the result to `settle.rs`. Ordered triggers deliver one event per
//! `partitionkey` at a time and retry it in place.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::append::{self, reply_ttl};
use switchyard_broker::log::{LogError, LogRecord};
use switchyard_broker::metrics as m;
use switchyard_core::{CloudEvent, ExtValue};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;

use super::outcome::{Outcome, decide};
use super::settle::Job;
use super::trigger::TriggerRuntime;
use super::{HOT_QUEUE, READ_AHEAD, READ_AHEAD_BYTES, read_log, unit_random};
use crate::delivery::{AttemptError, AttemptResult, Subscriber, Verdict};
use crate::records;

impl TriggerRuntime {
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

    /// One attempt to `to`, counted. Replies are held to the broker's
    /// `eventTypes` as ingress holds events: a reply the broker refuses (`enforce`) makes the
    /// attempt fail like a malformed reply, so it is retried and then dead-lettered.
    pub(super) async fn attempt(&self, to: &Subscriber, event: &CloudEvent) -> AttemptResult {
        let mut r = self
            .deliverer
            .attempt(to, event, &self.config.settings, &[])
            .await;
        // Replies that will be dropped for their TTL are not judged: nothing is stored.
        if r.verdict == Verdict::Delivered
            && !r.replies.is_empty()
            && reply_ttl(event) > 0
            && let Err(refused) = append::check(self.appender.policy(), &self.broker, &r.replies)
        {
            r.fail(AttemptError::reply_refused(&refused.to_string()));
        }
        self.count_attempt(&r);
        r
    }

    /// First delivery of a routed event (unordered triggers).
    async fn deliver(
        self: Arc<Self>,
        offset: u64,
        event: Arc<CloudEvent>,
        _permit: OwnedSemaphorePermit,
    ) {
        let r = self.attempt(&self.config.subscriber, &event).await;
        let outcome = decide(
            r,
            Vec::new(),
            &self.config.settings,
            records::now_ms(),
            unit_random(),
        );
        match self
            .settle_durably(&Job::first(offset, &event), outcome)
            .await
        {
            Ok(()) => self.done(offset),
            Err(e) => {
                tracing::warn!(trigger = %self.id, offset, error = %e, "outcome not recorded (shutting down); the event will be delivered again after a restart")
            }
        }
    }

    /// Delivery of an ordered trigger's event: retried in place, so its key stays blocked.
    async fn deliver_in_order(self: Arc<Self>, offset: u64, event: Arc<CloudEvent>) {
        let mut attempts = Vec::new();
        let outcome = loop {
            let r = self.attempt(&self.config.subscriber, &event).await;
            let now = records::now_ms();
            match decide(r, attempts, &self.config.settings, now, unit_random()) {
                Outcome::Retry {
                    attempts: so_far,
                    due_ms,
                } => {
                    attempts = so_far;
                    metrics::counter!(m::DELIVERY_RETRIES, self.labels()).increment(1);
                    tokio::time::sleep(Duration::from_millis(due_ms.saturating_sub(now))).await;
                }
                // Delivered, not retryable, or out of retries.
                settled => break settled,
            }
        };
        match self
            .settle_durably(&Job::first(offset, &event), outcome)
            .await
        {
            Ok(()) => self.done(offset),
            Err(e) => {
                tracing::error!(trigger = %self.id, offset, error = %e, "cannot record the delivery's outcome")
            }
        }
    }
}

/// What reading a queued event back from the log gave.
enum Read {
    /// The event.
    Event(Arc<CloudEvent>),
    /// Nothing to deliver for this entry (gone from the log, or put back to try later).
    Skip,
}

impl TriggerRuntime {
    /// Reads a cold queue entry's event (see [`load_event`](Self::load_event)): an event that
    /// is gone is skipped (done), one that cannot be read is put back and tried again after a
    /// pause.
    async fn read_queued(
        &self,
        offset: u64,
        ahead: usize,
        read_ahead: &mut VecDeque<LogRecord>,
    ) -> Read {
        match self.load_event(offset, ahead, read_ahead).await {
            Ok(Some(e)) => Read::Event(Arc::new(e)),
            Ok(None) => {
                tracing::error!(trigger = %self.id, offset, "event no longer in the log; skipped");
                self.done(offset);
                Read::Skip
            }
            Err(e) => {
                tracing::warn!(trigger = %self.id, offset, error = %e, "cannot read a queued event; trying again");
                self.requeue(offset);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Read::Skip
            }
        }
    }
}

/// Ordered triggers: the keys being delivered, and the events waiting behind each.
type Parked = HashMap<String, VecDeque<(u64, Arc<CloudEvent>)>>;

/// Takes the trigger's queued events and starts their first attempts, until the dispatcher's
/// `Tasks` stop it (its deliveries in flight end with it).
pub(super) async fn dispatch_loop(t: Arc<TriggerRuntime>) {
    let mut deliveries = JoinSet::new();
    let mut next_start = tokio::time::Instant::now();
    let mut busy: Parked = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    // Records read past a cold queue entry, for the entries after it.
    let mut read_ahead: VecDeque<LogRecord> = VecDeque::new();
    loop {
        while deliveries.try_join_next().is_some() {}
        // Ordered triggers park events behind busy keys; past HOT_QUEUE of them, stop taking
        // more from the queue (which holds offsets only) until a key frees up.
        if t.config.ordered && busy.values().map(VecDeque::len).sum::<usize>() >= HOT_QUEUE {
            // `done_tx` lives in this loop, so the channel never closes.
            if let Some(key) = done_rx.recv().await {
                start_next_in_order(&t, &mut busy, key, &mut deliveries, &done_tx);
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
            }
        };
        let event = match hot {
            Some(e) => e,
            None => match t.read_queued(offset, ahead, &mut read_ahead).await {
                Read::Event(e) => e,
                Read::Skip => continue,
            },
        };
        if let Some(rate) = t.config.rate_limit {
            tokio::time::sleep_until(next_start).await;
            next_start = tokio::time::Instant::now().max(next_start)
                + Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(3600));
        }
        if t.config.ordered {
            while let Ok(k) = done_rx.try_recv() {
                start_next_in_order(&t, &mut busy, k, &mut deliveries, &done_tx);
            }
            park_or_start(&t, &mut busy, offset, event, &mut deliveries, &done_tx);
            continue;
        }
        let Ok(permit) = Arc::clone(&t.slots).acquire_owned().await else {
            return;
        };
        deliveries.spawn(Arc::clone(&t).deliver(offset, event, permit));
    }
}

/// An ordered trigger's event: started at once when no event of its `partitionkey` is in
/// flight, parked behind it otherwise.
fn park_or_start(
    t: &Arc<TriggerRuntime>,
    busy: &mut Parked,
    offset: u64,
    event: Arc<CloudEvent>,
    deliveries: &mut JoinSet<()>,
    done: &mpsc::UnboundedSender<String>,
) {
    let key = event
        .extensions
        .get("partitionkey")
        .map(ExtValue::to_canonical_string)
        .unwrap_or_default();
    if let Some(waiting) = busy.get_mut(&key) {
        waiting.push_back((offset, event));
    } else {
        busy.insert(key.clone(), VecDeque::new());
        spawn_in_order(t, key, offset, event, deliveries, done);
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
    busy: &mut Parked,
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
