//! The delivery core: a trigger's loop over its [`DeliverySource`]. It takes work, starts
//! attempts within the trigger's concurrency bound and rate, holds replies to the broker's
//! `eventTypes`, decides the outcome ([`decide`]) and hands it back to the source to settle.
//! Ordered triggers deliver one event per `partitionkey` at a time and retry it in place.
//! Nothing here knows where work is stored.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_broker::append::{self, reply_ttl};
use switchyard_broker::metrics as m;
use switchyard_broker::traces;
use switchyard_core::CloudEvent;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::down::{self, Turn};
use super::outcome::{Outcome, decide};
use super::source::{DeliverySource, Work};
use super::trigger::TriggerRuntime;
use super::{HOT_QUEUE, lock, unit_random};
use crate::delivery::{AttemptError, AttemptResult, HttpTarget, Subscriber, Verdict};
use crate::records;

impl TriggerRuntime {
    /// One attempt to `to`, after the `earlier` ones, counted. Replies are held to the
    /// broker's `eventTypes` as ingress holds events: a reply the broker refuses (`enforce`)
    /// makes the attempt fail like a malformed reply, so it is retried and then dead-lettered.
    /// A connection refused by the trigger's own subscriber while it is down is held
    /// (`down.rs`), within `holdWhileDown` of the event's first held attempt; `probe` says
    /// the attempt held the probe's turn.
    pub(super) async fn attempt(
        &self,
        to: &Subscriber,
        event: &CloudEvent,
        earlier: &[records::Attempt],
        probe: bool,
    ) -> AttemptResult {
        // A span per attempt while traces are on: a child of the event's trace context, its
        // own sent as the hop's `traceparent`.
        let trace = traces::Span::attempt(&self.id, event, to.address(), earlier.len() + 1);
        let hop = trace.hop();
        let mut r = self
            .deliverer
            .attempt(to, event, &self.config.settings, &[], hop.as_ref())
            .await;
        if std::ptr::eq(to, &self.config.subscriber) {
            self.hold_while_down(&mut r, earlier, probe);
        }
        // Replies that will be dropped for their TTL are not judged: nothing is stored.
        if r.verdict == Verdict::Delivered
            && !r.replies.is_empty()
            && reply_ttl(event) > 0
            && let Some(reply_broker) = &self.reply_broker
            && let Err(refused) = append::check(&self.event_types, reply_broker, &r.replies)
        {
            r.fail(AttemptError::reply_refused(&refused.to_string()));
        }
        self.count_attempt(event, &r);
        self.trace_attempt(trace, hop.as_ref(), event, &mut r);
        r
    }

    /// One attempt to the trigger's own HTTP subscriber `to` with `events` in one request (a
    /// batch), after the `earlier` ones (the batch's); held as [`Self::attempt`] holds, counted
    /// once as a request and once for each event, traced as the first event's.
    async fn attempt_batch(
        &self,
        to: &HttpTarget,
        events: &[&CloudEvent],
        earlier: &[records::Attempt],
        probe: bool,
    ) -> AttemptResult {
        let first = events[0];
        let trace = traces::Span::attempt(&self.id, first, to.as_str(), earlier.len() + 1);
        let hop = trace.hop();
        let mut r = self
            .deliverer
            .attempt_batch(to, events, &self.config.settings, hop.as_ref())
            .await;
        self.hold_while_down(&mut r, earlier, probe);
        self.count_request(&r);
        for event in events {
            self.count_event(event, &r);
        }
        self.trace_attempt(trace, hop.as_ref(), first, &mut r);
        r
    }

    /// Tells the down state (`down.rs`) what attempt `r` at the trigger's own subscriber
    /// found, and holds it when it was refused while the subscriber is down (within
    /// `holdWhileDown` of the event's first held attempt).
    fn hold_while_down(&self, r: &mut AttemptResult, earlier: &[records::Attempt], probe: bool) {
        let hold = self.config.settings.hold_while_down;
        if !hold.is_zero()
            && self
                .down
                .observe(r, probe, earlier.last().is_some_and(|a| a.held), &self.id)
            && r.verdict == Verdict::Retry
        {
            r.held = down::may_hold(earlier, hold, records::now_ms());
        }
    }

    /// Ends attempt `r`'s span, and gives each reply without a trace context one: a reply
    /// span's, a child of the attempt's (`hop`). Replies to `event` that its TTL will drop
    /// (`replies.rs`) get none.
    fn trace_attempt(
        &self,
        trace: traces::Span,
        hop: Option<&traces::Hop>,
        event: &CloudEvent,
        r: &mut AttemptResult,
    ) {
        if !traces::enabled() {
            return;
        }
        if let Some(status) = r.status {
            trace.set("http.response.status_code", i64::from(status));
        }
        if r.held {
            trace.set("switchyard.held", true);
        }
        if r.verdict == Verdict::Delivered {
            let share =
                reply_ttl(event) / i64::try_from(r.replies.len().max(1)).unwrap_or(i64::MAX);
            if let Some(broker) = self.reply_broker.as_ref().filter(|_| share > 0) {
                for reply in &mut r.replies {
                    let span = traces::Span::reply(broker, reply, hop);
                    span.stamp(reply);
                    span.end();
                }
            }
            trace.end();
        } else {
            trace.fail(match (&r.error, r.status) {
                (Some(e), _) => e.to_string(),
                (None, Some(s)) => format!("the subscriber answered {s}"),
                (None, None) => "failed".to_owned(),
            });
        }
    }

    /// Where `work` goes: the trigger's subscriber, or the URL a redrive named.
    fn destination<T>(&self, work: &Work<T>) -> Cow<'_, Subscriber> {
        match &work.redirect {
            Some(uri) => Cow::Owned(Subscriber::Http(HttpTarget::new(uri.clone()))),
            None => Cow::Borrowed(&self.config.subscriber),
        }
    }
}

/// One attempt at `work` (an unordered trigger's event, or any scheduled retry), then its
/// outcome settled by the source (which schedules the next attempt, if any).
async fn deliver_once<S: DeliverySource>(
    t: Arc<TriggerRuntime>,
    source: Arc<S>,
    mut work: Work<S::Ticket>,
    _permit: OwnedSemaphorePermit,
    turn: Option<Turn>,
) {
    let r = t
        .attempt(
            &t.destination(&work),
            &work.event,
            &work.attempts,
            turn.is_some(),
        )
        .await;
    drop(turn);
    let earlier = std::mem::take(&mut work.attempts);
    let outcome = decide(
        r,
        earlier,
        &t.config.settings,
        records::now_ms(),
        unit_random(),
    );
    settle(&t, &*source, work, outcome).await;
}

/// An ordered trigger's event: retried in place, so its key stays blocked until it is
/// delivered or dead-lettered.
async fn deliver_in_order<S: DeliverySource>(
    t: &TriggerRuntime,
    source: &S,
    mut work: Work<S::Ticket>,
) {
    let to = t.destination(&work);
    let mut attempts = std::mem::take(&mut work.attempts);
    let outcome = loop {
        // While the subscriber is down, attempts wait for the trigger's probe turn.
        let turn = match work.redirect {
            Some(_) => None,
            None => t.down.turn().await,
        };
        if turn.is_some() {
            // Paused while it waited for the turn: the probe waits too.
            t.pause.resumed().await;
        }
        let r = t.attempt(&to, &work.event, &attempts, turn.is_some()).await;
        drop(turn);
        let now = records::now_ms();
        match decide(r, attempts, &t.config.settings, now, unit_random()) {
            Outcome::Retry {
                attempts: so_far,
                due_ms,
            } => {
                attempts = so_far;
                retry_in_place(t, &attempts, 1, due_ms, now).await;
            }
            // Delivered, not retryable, or out of retries.
            settled => break settled,
        }
    };
    settle(t, source, work, outcome).await;
}

/// How many of `batch`'s events (at least one) fit in a request body of `max_bytes` as a JSON
/// batch.
fn fitting<T>(batch: &[Work<T>], max_bytes: usize) -> usize {
    // `[e1,e2]`: the brackets, and a comma after each event but the last.
    let mut size = 1;
    let mut fit = 0;
    for work in batch {
        let one = switchyard_core::json::encode_batch(std::slice::from_ref(&*work.event)).len();
        if fit > 0 && size + one - 1 > max_bytes {
            break;
        }
        size += one - 1; // its brackets become a comma
        fit += 1;
    }
    fit
}

/// An ordered trigger's batch (first deliveries of one key, in order): sent in one request,
/// retried in place as one, and each event settled with the batch's outcome, in order.
async fn deliver_batch_in_order<S: DeliverySource>(
    t: &TriggerRuntime,
    source: &S,
    mut batch: Vec<Work<S::Ticket>>,
) {
    let Subscriber::Http(to) = &t.config.subscriber else {
        // Only HTTP subscribers get batches (`TriggerConfig::batch`).
        for work in batch {
            deliver_in_order(t, source, work).await;
        }
        return;
    };
    let mut attempts = std::mem::take(&mut batch[0].attempts);
    let outcome = loop {
        // While the subscriber is down, attempts wait for the trigger's probe turn.
        let turn = t.down.turn().await;
        if turn.is_some() {
            t.pause.resumed().await;
        }
        let events: Vec<&CloudEvent> = batch.iter().map(|w| &*w.event).collect();
        let r = t
            .attempt_batch(to, &events, &attempts, turn.is_some())
            .await;
        drop(turn);
        // A batch refused as a whole (415: not a format the subscriber reads, as a Knative
        // broker's ingress; 413: larger than it reads; 400 or 422: one of its events, or the
        // batch, refused) is sent again one event at a time: each then gets its own answer,
        // and only an event the subscriber refuses on its own is dead-lettered.
        if let Some(status @ (400 | 413 | 415 | 422)) = r.status {
            tracing::warn!(trigger = %t.id, status, events = batch.len(), "the subscriber refused a batch; sending its events one by one");
            for work in batch {
                let logged = traces::log_span(&t.id, &work.event);
                deliver_in_order(t, source, work).instrument(logged).await;
            }
            return;
        }
        let now = records::now_ms();
        match decide(r, attempts, &t.config.settings, now, unit_random()) {
            Outcome::Retry {
                attempts: so_far,
                due_ms,
            } => {
                attempts = so_far;
                retry_in_place(t, &attempts, batch.len(), due_ms, now).await;
            }
            settled => break settled,
        }
    };
    for work in batch {
        settle(t, source, work, outcome.clone()).await;
    }
}

/// Waits for a retry in place (of `events` events, after `attempts`) to fall due at `due_ms`:
/// counted as a retry unless it was held, and, on a paused trigger, until the resume.
async fn retry_in_place(
    t: &TriggerRuntime,
    attempts: &[records::Attempt],
    events: usize,
    due_ms: u64,
    now: u64,
) {
    if !attempts.last().is_some_and(|a| a.held) {
        metrics::counter!(m::DELIVERY_RETRIES, t.labels()).increment(events as u64);
    }
    tokio::time::sleep(Duration::from_millis(due_ms.saturating_sub(now))).await;
    // A retry in place falls due on a paused trigger: it waits for the resume.
    t.pause.resumed().await;
}

async fn settle<S: DeliverySource>(
    t: &TriggerRuntime,
    source: &S,
    work: Work<S::Ticket>,
    outcome: Outcome,
) {
    let (position, first) = (work.position, work.first);
    if let Err(e) = source.settle(work, outcome).await {
        tracing::warn!(trigger = %t.id, position, first, error = %e, "outcome not recorded (shutting down); the event will be delivered again after a restart");
    }
}

/// Ordered triggers: the keys being delivered, and the work waiting behind each.
struct Keys<T> {
    parked: Mutex<Parked<T>>,
    /// Signalled when parked work is taken up.
    freed: Notify,
}

struct Parked<T> {
    by_key: HashMap<String, VecDeque<Work<T>>>,
    /// Work waiting across every key.
    waiting: usize,
}

impl<T> Keys<T> {
    fn new() -> Keys<T> {
        Keys {
            parked: Mutex::new(Parked {
                by_key: HashMap::new(),
                waiting: 0,
            }),
            freed: Notify::new(),
        }
    }

    fn waiting(&self) -> usize {
        lock(&self.parked).waiting
    }

    /// Parks `work` behind its key when the key is busy; otherwise marks the key busy and
    /// gives the work back to be started.
    fn park_or_claim(&self, key: &str, work: Work<T>) -> Option<Work<T>> {
        let mut p = lock(&self.parked);
        if let Some(waiting) = p.by_key.get_mut(key) {
            waiting.push_back(work);
            p.waiting += 1;
            None
        } else {
            p.by_key.insert(key.to_owned(), VecDeque::new());
            Some(work)
        }
    }

    /// Up to `n` more of the work waiting behind `key` (its key stays busy): a batch.
    fn take_more(&self, key: &str, n: usize) -> Vec<Work<T>> {
        let mut p = lock(&self.parked);
        let Some(waiting) = p.by_key.get_mut(key) else {
            return Vec::new();
        };
        let taken: Vec<Work<T>> = waiting.drain(..n.min(waiting.len())).collect();
        p.waiting -= taken.len();
        drop(p);
        if !taken.is_empty() {
            self.freed.notify_one();
        }
        taken
    }

    /// Puts `work` back at the head of `key`'s queue, in its order (what did not fit a batch).
    fn put_back(&self, key: &str, work: Vec<Work<T>>) {
        let mut p = lock(&self.parked);
        let n = work.len();
        let waiting = p.by_key.entry(key.to_owned()).or_default();
        for w in work.into_iter().rev() {
            waiting.push_front(w);
        }
        p.waiting += n;
    }

    /// The next work waiting behind `key`, or `None` (and the key is free).
    fn next_for(&self, key: &str) -> Option<Work<T>> {
        let mut p = lock(&self.parked);
        let next = p.by_key.get_mut(key).and_then(VecDeque::pop_front);
        match next {
            Some(work) => {
                p.waiting -= 1;
                drop(p);
                self.freed.notify_one();
                Some(work)
            }
            None => {
                p.by_key.remove(key);
                None
            }
        }
    }
}

/// Delivers `work` and then whatever waits behind its `key`, one at a time, holding one of
/// the trigger's slots for deliveries in flight (`permit`) the whole time: so at most
/// `maxInFlight` keys have a task, however many distinct keys arrive, and a key with nothing
/// waiting costs nothing. A draining trigger finishes what it has taken this way: leaving an
/// event of one key unsettled would make the next run send again the later events of other
/// keys, already delivered. So once the trigger is draining (`stop`), what it has taken goes
/// without waiting for the rate: a drain ends within [`super::DRAIN_TIMEOUT`].
async fn deliver_key<S: DeliverySource>(
    t: Arc<TriggerRuntime>,
    source: Arc<S>,
    keys: Arc<Keys<S::Ticket>>,
    key: String,
    mut work: Work<S::Ticket>,
    permit: tokio::sync::OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // What waits behind a busy key waits for a paused trigger too.
        t.pause.resumed().await;
        // With `batch`, the events waiting behind the key go with it, as many as fit.
        let mut batch = vec![work];
        if let Some(b) = t.config.batch {
            batch.extend(keys.take_more(&key, b.max_events - 1));
            let fit = fitting(&batch, b.max_bytes);
            keys.put_back(&key, batch.split_off(fit));
        }
        // Paced as the key comes to it, not as it was taken: events parked behind a key
        // while the subscriber was down drain at the rate too (a batch's events each).
        let start = batch
            .iter()
            .filter(|w| paced(w))
            .filter_map(|_| t.next_start())
            .last();
        if let Some(start) = start
            && !*stop.borrow()
        {
            tokio::select! {
                () = tokio::time::sleep_until(start) => {}
                () = stopped(&mut stop) => {}
            }
            // Paused while it waited for its turn: it waits for the resume too.
            t.pause.resumed().await;
        }
        if batch.len() > 1 {
            let logged = traces::log_span(&t.id, &batch[0].event);
            deliver_batch_in_order(&t, &*source, batch)
                .instrument(logged)
                .await;
        } else if let Some(work) = batch.pop() {
            let logged = traces::log_span(&t.id, &work.event);
            deliver_in_order(&t, &*source, work)
                .instrument(logged)
                .await;
        }
        match keys.next_for(&key) {
            Some(next) => work = next,
            None => break,
        }
    }
    drop(permit);
}

/// Whether `work` waits for its turn under the trigger's `rateLimit`: a first delivery, or an
/// event held while the subscriber was down (its backlog drains at the rate when it is up
/// again). Other retries are paced by their backoff.
fn paced<T>(work: &Work<T>) -> bool {
    work.first || work.attempts.last().is_some_and(|a| a.held)
}

/// Resolves once `stop` is true (never, if its sender is gone without saying so).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Takes the trigger's work from `source` and starts its attempts, until the dispatcher's
/// `Tasks` stop it (its deliveries in flight end with it), or until `stop` turns true: then
/// it drains, taking no more work and returning once what it took has settled (an ordered
/// trigger's keys included, retries in place and all).
pub(super) async fn dispatch_loop<S: DeliverySource>(
    t: Arc<TriggerRuntime>,
    source: Arc<S>,
    mut stop: watch::Receiver<bool>,
) {
    let mut deliveries = JoinSet::new();
    let keys = Arc::new(Keys::new());
    loop {
        while deliveries.try_join_next().is_some() {}
        // Paused (`pause.rs`): no more work is taken; what the source has taken waits with
        // its lease renewed.
        if t.pause.is_paused() {
            tracing::info!(trigger = %t.id, "paused");
            source.idle().await;
            let mut renew = tokio::time::interval_at(
                tokio::time::Instant::now() + HOLD_INTERVAL,
                HOLD_INTERVAL,
            );
            let drained = loop {
                tokio::select! {
                    () = t.pause.resumed() => break false,
                    () = stopped(&mut stop) => break true,
                    _ = renew.tick() => source.idle().await,
                }
            };
            if drained {
                break;
            }
            tracing::info!(trigger = %t.id, "resumed");
            continue;
        }
        // Ordered triggers park events behind busy keys; past HOT_QUEUE of them, stop taking
        // more work until a key frees up.
        if t.config.ordered && keys.waiting() >= HOT_QUEUE {
            tokio::select! {
                () = keys.freed.notified() => continue,
                () = stopped(&mut stop) => break,
            }
        }
        // An unordered trigger takes work only once it can start it: work held waiting for a
        // slot would have its lease running (a JetStream message's ack wait).
        let early_permit = if t.config.ordered {
            None
        } else {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                permit = Arc::clone(&t.slots).acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return,
                },
            }
        };
        let work = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            work = source.next() => work,
        };
        // The subscriber is down (`down.rs`): the work waits, held, for the probe's turn
        // (before the pause check below, so a pause while it waits holds the probe too).
        let turn = if t.config.ordered || work.redirect.is_some() || !t.down.is_down() {
            None
        } else {
            let mut renew = tokio::time::interval_at(
                tokio::time::Instant::now() + HOLD_INTERVAL,
                HOLD_INTERVAL,
            );
            // One wait, kept across the renewals, so it keeps its place in line.
            let waiting = t.down.turn();
            tokio::pin!(waiting);
            let turn = loop {
                tokio::select! {
                    turn = &mut waiting => break Ok(turn),
                    () = stopped(&mut stop) => break Err(()),
                    _ = renew.tick() => {
                        // The work taken is held, and what the source took ahead of it too
                        // (a JetStream pull's buffered messages), as while paused.
                        source.hold(&work).await;
                        source.idle().await;
                    }
                }
            };
            match turn {
                Ok(turn) => turn,
                Err(()) => {
                    source.release(work).await;
                    break;
                }
            }
        };
        // Paused as it was taken: it waits with the trigger, held, and goes first on resume.
        if t.pause.is_paused() {
            let mut renew = tokio::time::interval_at(
                tokio::time::Instant::now() + HOLD_INTERVAL,
                HOLD_INTERVAL,
            );
            let drained = loop {
                tokio::select! {
                    () = t.pause.resumed() => break false,
                    () = stopped(&mut stop) => break true,
                    _ = renew.tick() => {
                        source.hold(&work).await;
                        source.idle().await;
                    }
                }
            };
            if drained {
                source.release(work).await;
                break;
            }
        }
        // Under `rateLimit`, an unordered trigger's work waits here for its start (an ordered
        // one's, in `deliver_key`, when its key comes to it).
        if !t.config.ordered
            && paced(&work)
            && let Some(start) = t.next_start()
        {
            // Waiting for its turn under the rate, the work is held (its lease renewed); when
            // draining, it is not started and goes back to the source.
            let mut renew = tokio::time::interval_at(
                tokio::time::Instant::now() + HOLD_INTERVAL,
                HOLD_INTERVAL,
            );
            let drained = loop {
                tokio::select! {
                    () = tokio::time::sleep_until(start) => break false,
                    () = stopped(&mut stop) => break true,
                    _ = renew.tick() => source.hold(&work).await,
                }
            };
            if drained {
                source.release(work).await;
                break;
            }
        }
        if t.config.ordered && work.first {
            let key = partition_key(&work.event);
            if let Some(work) = keys.park_or_claim(&key, work) {
                // A new busy key waits for a slot before it gets a task (events behind it are
                // parked meanwhile, within HOT_QUEUE).
                let Ok(permit) = Arc::clone(&t.slots).acquire_owned().await else {
                    return;
                };
                let (t, source, keys) = (Arc::clone(&t), Arc::clone(&source), Arc::clone(&keys));
                deliveries.spawn(deliver_key(
                    t,
                    source,
                    keys,
                    key,
                    work,
                    permit,
                    stop.clone(),
                ));
            }
            continue;
        }
        let permit = match early_permit {
            Some(permit) => permit,
            None => match Arc::clone(&t.slots).acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let logged = traces::log_span(&t.id, &work.event);
        deliveries.spawn(
            deliver_once(Arc::clone(&t), Arc::clone(&source), work, permit, turn)
                .instrument(logged),
        );
    }
    // Draining: every attempt in flight ends within the trigger's timeout and settles.
    while deliveries.join_next().await.is_some() {}
}

/// How often work waiting for its turn under a trigger's rate is held again
/// ([`DeliverySource::hold`]).
const HOLD_INTERVAL: Duration = Duration::from_secs(5);

/// The key an ordered trigger orders by: the event's `partitionkey` (absent: one key).
fn partition_key(event: &CloudEvent) -> String {
    event.partition_key().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(position: u64) -> Work<()> {
        Work {
            position,
            event: Arc::new(CloudEvent::new("1", "/s", "t").expect("a valid event")),
            attempts: Vec::new(),
            redirect: None,
            first: true,
            ticket: (),
        }
    }

    #[test]
    fn work_waits_behind_its_key_and_comes_out_in_order() {
        let keys = Keys::new();
        assert!(
            keys.park_or_claim("a", work(1)).is_some(),
            "a free key is claimed"
        );
        assert!(
            keys.park_or_claim("b", work(2)).is_some(),
            "keys are independent"
        );
        assert!(keys.park_or_claim("a", work(3)).is_none());
        assert!(keys.park_or_claim("a", work(4)).is_none());
        assert_eq!(keys.waiting(), 2);
        assert_eq!(keys.next_for("a").map(|w| w.position), Some(3));
        assert_eq!(keys.next_for("a").map(|w| w.position), Some(4));
        assert_eq!(keys.waiting(), 0);
        assert!(
            keys.next_for("a").is_none(),
            "nothing left: the key is freed"
        );
        assert!(
            keys.park_or_claim("a", work(5)).is_some(),
            "a freed key is claimed again"
        );
        assert!(keys.next_for("b").is_none());
    }

    #[test]
    fn partition_key_is_the_extension_or_one_shared_key() {
        let mut e = CloudEvent::new("1", "/s", "t").expect("a valid event");
        assert_eq!(partition_key(&e), "");
        e.extensions.insert(
            "partitionkey".into(),
            switchyard_core::ExtValue::String("k1".into()),
        );
        assert_eq!(partition_key(&e), "k1");
    }
}
