//! The delivery core: a trigger's loop over its [`DeliverySource`]. It takes work, starts
//! attempts within the trigger's concurrency bound and rate, holds replies to the broker's
//! `eventTypes`, decides the outcome ([`decide`]) and hands it back to the source to settle.
//! Ordered triggers deliver one event per `partitionkey` at a time and retry it in place.
//! Nothing here knows where work is stored.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::append::{self, reply_ttl};
use switchyard_broker::traces;
use switchyard_core::CloudEvent;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::down::{self, Turn};
use super::ordered::{Keys, deliver_key};
use super::outcome::{Outcome, decide};
use super::source::{DeliverySource, Work};
use super::trigger::TriggerRuntime;
use super::{HOT_QUEUE, unit_random};
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
    pub(super) async fn attempt_batch(
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
    pub(super) fn destination<T>(&self, work: &Work<T>) -> Cow<'_, Subscriber> {
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

pub(super) async fn settle<S: DeliverySource>(
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

/// Whether `work` waits for its turn under the trigger's `rateLimit`: a first delivery, or an
/// event held while the subscriber was down (its backlog drains at the rate when it is up
/// again). Other retries are paced by their backoff.
pub(super) fn paced<T>(work: &Work<T>) -> bool {
    work.first || work.attempts.last().is_some_and(|a| a.held)
}

/// Resolves once `stop` is true (never, if its sender is gone without saying so).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Takes the trigger's work from `source` and starts its attempts, until `stop` turns true (a
/// reload or the server's stop): then it drains, taking no more work and returning once what
/// it took has settled (an ordered trigger's keys included, retries in place and all, except
/// what [`Drain`] gives up). Aborting its `Tasks` (the drain's timeout) ends its deliveries in
/// flight with it: they are owed to the next run.
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
