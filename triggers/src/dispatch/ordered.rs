//! Ordered triggers' delivery: one event per `partitionkey` at a time, retried in place, so
//! a key's events reach the subscriber in the order they were stored. The dispatch loop
//! (`deliver.rs`) parks events behind busy keys ([`Keys`]) and starts a [`deliver_key`] task
//! for a key that is free; a draining trigger finishes its keys, except where waiting could
//! gain nothing ([`Drain`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_broker::metrics as m;
use switchyard_broker::traces;
use switchyard_core::CloudEvent;
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use super::deliver::{paced, settle, stopped};
use super::down::Turn;
use super::lock;
use super::outcome::{Outcome, decide};
use super::source::{DeliverySource, Work};
use super::trigger::TriggerRuntime;
use super::unit_random;
use crate::delivery::{AttemptResult, Subscriber};
use crate::records;

/// An ordered trigger's event: retried in place, so its key stays blocked until it is
/// delivered or dead-lettered. `false` if it gave up, draining, on a wait that could gain
/// nothing (see [`Drain`]): the work is handed back to the source, owed to the next run.
async fn deliver_in_order<S: DeliverySource>(
    t: &TriggerRuntime,
    source: &S,
    mut work: Work<S::Ticket>,
    drain: &mut Drain,
) -> bool {
    let to = t.destination(&work);
    let mut retry = InPlace::new(t, drain, std::mem::take(&mut work.attempts), 1);
    let outcome = loop {
        // A redrive to another URL (`work.redirect`) is not an attempt at the subscriber: it
        // does not wait for its probe turn.
        let Ok(turn) = retry.turn(work.redirect.is_none()).await else {
            source.release(work).await;
            return false;
        };
        let r = t
            .attempt(&to, &work.event, &retry.attempts, turn.is_some())
            .await;
        drop(turn);
        match retry.decide(r).await {
            Ok(Some(settled)) => break settled,
            Ok(None) => {}
            Err(GaveUp) => {
                source.release(work).await;
                return false;
            }
        }
    };
    settle(t, source, work, outcome).await;
    true
}

/// Where an event's (or a batch's) retries in place stand: the attempts so far, and the
/// waits around each attempt, which a draining trigger gives up where they could gain
/// nothing ([`Drain`]).
struct InPlace<'a> {
    t: &'a TriggerRuntime,
    drain: &'a mut Drain,
    attempts: Vec<records::Attempt>,
    /// How many events each attempt carries (a batch's), for the retries metric.
    events: usize,
}

/// A retry in place gave up, draining: the caller hands its work back to the source.
struct GaveUp;

impl<'a> InPlace<'a> {
    fn new(
        t: &'a TriggerRuntime,
        drain: &'a mut Drain,
        attempts: Vec<records::Attempt>,
        events: usize,
    ) -> Self {
        InPlace {
            t,
            drain,
            attempts,
            events,
        }
    }

    /// Before an attempt: while the subscriber is down, waits for the trigger's probe turn
    /// (`None` when it is up, or when `to_subscriber` is false), and a probe (a turn taken)
    /// waits for a paused trigger's resume too.
    async fn turn(&mut self, to_subscriber: bool) -> Result<Option<Turn>, GaveUp> {
        if !to_subscriber {
            return Ok(None);
        }
        let turn = self
            .drain
            .unless_draining(self.t.down.turn())
            .await
            .ok_or(GaveUp)?;
        if turn.is_some() {
            self.drain
                .unless_draining(self.t.pause.resumed())
                .await
                .ok_or(GaveUp)?;
        }
        Ok(turn)
    }

    /// After an attempt: its outcome once settled (delivered, not retryable, or out of
    /// retries), or `None` once the retry it calls for has fallen due ([`retry_in_place`]).
    async fn decide(&mut self, r: AttemptResult) -> Result<Option<Outcome>, GaveUp> {
        let now = records::now_ms();
        let attempts = std::mem::take(&mut self.attempts);
        match decide(r, attempts, &self.t.config.settings, now, unit_random()) {
            Outcome::Retry {
                attempts: so_far,
                due_ms,
            } => {
                self.attempts = so_far;
                if retry_in_place(self.t, &self.attempts, self.events, due_ms, now, self.drain)
                    .await
                {
                    Ok(None)
                } else {
                    Err(GaveUp)
                }
            }
            settled => Ok(Some(settled)),
        }
    }
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
/// `false` if it gave up, draining, as [`deliver_in_order`] does.
async fn deliver_batch_in_order<S: DeliverySource>(
    t: &TriggerRuntime,
    source: &S,
    mut batch: Vec<Work<S::Ticket>>,
    drain: &mut Drain,
) -> bool {
    let Subscriber::Http(to) = &t.config.subscriber else {
        // Only HTTP subscribers get batches (`TriggerConfig::batch`).
        return deliver_each_in_order(t, source, batch, drain).await;
    };
    let attempts = std::mem::take(&mut batch[0].attempts);
    let mut retry = InPlace::new(t, drain, attempts, batch.len());
    let outcome = loop {
        let Ok(turn) = retry.turn(true).await else {
            release_all(source, batch).await;
            return false;
        };
        let events: Vec<&CloudEvent> = batch.iter().map(|w| &*w.event).collect();
        let r = t
            .attempt_batch(to, &events, &retry.attempts, turn.is_some())
            .await;
        drop(turn);
        // A batch refused as a whole (415: not a format the subscriber reads, as a Knative
        // broker's ingress; 413: larger than it reads; 400 or 422: one of its events, or the
        // batch, refused) is sent again one event at a time: each then gets its own answer,
        // and only an event the subscriber refuses on its own is dead-lettered.
        if let Some(status @ (400 | 413 | 415 | 422)) = r.status {
            tracing::warn!(trigger = %t.id, status, events = batch.len(), "the subscriber refused a batch; sending its events one by one");
            // `retry` borrows `drain`: done with it here.
            drop(retry);
            return deliver_each_in_order(t, source, batch, drain).await;
        }
        match retry.decide(r).await {
            Ok(Some(settled)) => break settled,
            Ok(None) => {}
            Err(GaveUp) => {
                release_all(source, batch).await;
                return false;
            }
        }
    };
    for work in batch {
        settle(t, source, work, outcome.clone()).await;
    }
    true
}

/// `batch`'s events one at a time, in order; `false` if one gave up (the rest are handed back
/// too).
async fn deliver_each_in_order<S: DeliverySource>(
    t: &TriggerRuntime,
    source: &S,
    batch: Vec<Work<S::Ticket>>,
    drain: &mut Drain,
) -> bool {
    let mut batch = batch.into_iter();
    while let Some(work) = batch.next() {
        let logged = traces::log_span(&t.id, &work.event);
        if !deliver_in_order(t, source, work, drain)
            .instrument(logged)
            .await
        {
            release_all(source, batch).await;
            return false;
        }
    }
    true
}

/// Hands `works` back to the source, not started: owed to the next run.
async fn release_all<S: DeliverySource>(
    source: &S,
    works: impl IntoIterator<Item = Work<S::Ticket>>,
) {
    for work in works {
        source.release(work).await;
    }
}

/// Waits for a retry in place (of `events` events, after `attempts`) to fall due at `due_ms`:
/// counted as a retry unless it was held, and, on a paused trigger, until the resume. `false`
/// if the trigger began draining while the wait could gain nothing: the last attempt was held
/// (the subscriber is down), or the trigger is paused.
async fn retry_in_place(
    t: &TriggerRuntime,
    attempts: &[records::Attempt],
    events: usize,
    due_ms: u64,
    now: u64,
    drain: &mut Drain,
) -> bool {
    let held = attempts.last().is_some_and(|a| a.held);
    if !held {
        metrics::counter!(m::DELIVERY_RETRIES, t.labels()).increment(events as u64);
    }
    let due = tokio::time::sleep(Duration::from_millis(due_ms.saturating_sub(now)));
    if held {
        if drain.unless_draining(due).await.is_none() {
            return false;
        }
    } else {
        // A backoff ends within the drain's bound, or the drain's timeout stops it.
        due.await;
    }
    // A retry in place falls due on a paused trigger: it waits for the resume.
    drain.unless_draining(t.pause.resumed()).await.is_some()
}

/// An ordered trigger's view of its drain (`stop`). A draining trigger finishes what it has
/// taken (see [`deliver_key`]), but not by waiting where nothing can come of it before the
/// drain's timeout stops it anyway: for a paused trigger to resume, or for a subscriber that
/// is down to come back. There it gives up at once, and what it gave up is owed to the next
/// run, as what the timeout stops is.
struct Drain(watch::Receiver<bool>);

impl Drain {
    /// `wait`'s output, or `None` if the trigger is draining before it is ready. A wait that
    /// is ready at once wins, so a drain still goes through waits that cost nothing.
    async fn unless_draining<F: std::future::Future>(&mut self, wait: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = wait => Some(out),
            () = stopped(&mut self.0) => None,
        }
    }
}

/// Ordered triggers: the keys being delivered, and the work waiting behind each.
pub(super) struct Keys<T> {
    parked: Mutex<Parked<T>>,
    /// Signalled when parked work is taken up.
    pub(super) freed: Notify,
}

struct Parked<T> {
    by_key: HashMap<String, VecDeque<Work<T>>>,
    /// Work waiting across every key.
    waiting: usize,
}

impl<T> Keys<T> {
    pub(super) fn new() -> Keys<T> {
        Keys {
            parked: Mutex::new(Parked {
                by_key: HashMap::new(),
                waiting: 0,
            }),
            freed: Notify::new(),
        }
    }

    pub(super) fn waiting(&self) -> usize {
        lock(&self.parked).waiting
    }

    /// Parks `work` behind its key when the key is busy; otherwise marks the key busy and
    /// gives the work back to be started.
    pub(super) fn park_or_claim(&self, key: &str, work: Work<T>) -> Option<Work<T>> {
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
    pub(super) fn next_for(&self, key: &str) -> Option<Work<T>> {
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
/// without waiting for the rate: a drain ends within [`super::DRAIN_TIMEOUT`]. Where waiting
/// could gain nothing (paused, or the subscriber down) it gives the key up instead ([`Drain`]).
pub(super) async fn deliver_key<S: DeliverySource>(
    t: Arc<TriggerRuntime>,
    source: Arc<S>,
    keys: Arc<Keys<S::Ticket>>,
    key: String,
    mut work: Work<S::Ticket>,
    permit: tokio::sync::OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let mut drain = Drain(stop);
    // Whether it gave up, draining (`Drain`): the key stays busy until what waits behind it
    // is handed back.
    let gave_up = loop {
        // What waits behind a busy key waits for a paused trigger too.
        if drain.unless_draining(t.pause.resumed()).await.is_none() {
            source.release(work).await;
            break true;
        }
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
            && !*drain.0.borrow()
        {
            // Draining, it goes without waiting for the rate.
            let _ = drain.unless_draining(tokio::time::sleep_until(start)).await;
            // Paused while it waited for its turn: it waits for the resume too.
            if drain.unless_draining(t.pause.resumed()).await.is_none() {
                release_all(&*source, batch).await;
                break true;
            }
        }
        let settled = if batch.len() > 1 {
            let logged = traces::log_span(&t.id, &batch[0].event);
            deliver_batch_in_order(&t, &*source, batch, &mut drain)
                .instrument(logged)
                .await
        } else if let Some(work) = batch.pop() {
            let logged = traces::log_span(&t.id, &work.event);
            deliver_in_order(&t, &*source, work, &mut drain)
                .instrument(logged)
                .await
        } else {
            true
        };
        if !settled {
            break true;
        }
        match keys.next_for(&key) {
            Some(next) => work = next,
            None => break false,
        }
    };
    // What still waits behind a key given up is owed to the next run too.
    if gave_up {
        while let Some(next) = keys.next_for(&key) {
            source.release(next).await;
        }
    }
    drop(permit);
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
}
