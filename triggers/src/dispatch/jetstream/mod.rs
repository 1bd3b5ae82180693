//! The delivery source over JetStream (`serve --jetstream`; spec/jetstream.md). A trigger is
//! a durable pull consumer on its broker's stream, named as the trigger, which every replica
//! shares: JetStream hands each message to one replica at a time, so N replicas deliver each
//! event once between them, and a replica that dies leaves its messages to be handed out again
//! once their ack wait runs out. There is no leader and no assignment.
//!
//! `next` takes the consumer's next message, acks it at once when the trigger's filter does not
//! match (the replica filters), and hands the rest out with the attempts made so far counted
//! from JetStream's delivery count. `settle` acks a delivery once its replies are stored
//! (published with ids derived from the delivery, so a replica that dies between the two does
//! not store them twice), naks a retry with the backoff as the delay, and for a dead letter
//! publishes the record to the broker's dead-letter stream and acks only once that is stored.
//!
//! An ordered trigger is one durable consumer per partition of the stream (`{trigger}_p{p}`,
//! filtered to the partition's subject), each with one message handed out at a time: so a
//! partition's events, and with them each `partitionkey`'s, are delivered in stream order by
//! whichever replica holds the one, and a retry (a nak with a delay) holds its partition
//! until it is settled. The delivery core sees such a trigger as unordered: JetStream keeps
//! the order, across replicas, and the core's retries in place would outlast the ack wait.
//!
//! A dead letter redriven through the API waits in the broker's redrive stream
//! (`SY_RD_ns_name`, work-queue retention) on its trigger's subject; each trigger has one
//! more durable consumer there, a [`Lane::Redrive`], whose work skips the filter (it matched
//! once) and goes where the redrive said.

mod dead_letter;
mod dispatcher;

pub use dispatcher::{JetStreamDispatcher, JetStreamTriggers};

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::jetstream::{
    JetStreamLog, Names, REDRIVE_OFFSET_HEADER, REDRIVE_URI_HEADER, SETTLE_TIMEOUT, when_settled,
};
use switchyard_broker::log::LogError;
use switchyard_broker::metrics as m;
use switchyard_core::backoff::Backoff;
use switchyard_core::id::TriggerId;

use super::replies::reply_batch;
use super::{Outcome, TriggerRuntime, Work};
use crate::filter::Filter;
use crate::records::{self, Attempt, DeadLetter, Origin};

/// How long a replica may hold a message beyond the trigger's timeout before JetStream hands
/// it to another (the time to store replies or a dead letter, and to ack).
const ACK_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// Messages a consumer may have handed out and not yet acked, beyond the trigger's
/// `maxInFlight`: the retries waiting for their delay (a nak with a delay keeps a message
/// pending), so a backlog of retries does not stop first deliveries.
const RETRY_BACKLOG: i64 = 10_000;

/// Which of a trigger's consumers a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The broker's stream, whole (an unordered trigger).
    Stream,
    /// One partition of the broker's stream (an ordered trigger has one source per
    /// partition).
    Partition(u32),
    /// The trigger's redriven dead letters.
    Redrive,
}

/// One trigger's work from one of its durable consumers.
pub struct JetStreamSource {
    trigger: Arc<TriggerRuntime>,
    lane: Lane,
    filter: Filter,
    log: Arc<JetStreamLog>,
    policy: Arc<EventTypePolicy>,
    names: Names,
    consumer: async_nats::jetstream::consumer::PullConsumer,
    /// The broker's stream and the consumer's settings: a consumer that went away (deleted
    /// by hand) is made again from them.
    stream: async_nats::jetstream::stream::Stream,
    config: pull::Config,
    /// The attempts made at deliveries being retried, by whichever replica made them.
    attempts: async_nats::jetstream::kv::Store,
    batch: usize,
    messages: tokio::sync::Mutex<pull::Stream>,
    /// Messages pulled while the trigger is paused, held (their ack wait renewed) until it
    /// is resumed; handed out first.
    parked: std::sync::Mutex<std::collections::VecDeque<Message>>,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("trigger", &self.trigger.id)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

impl JetStreamSource {
    /// Creates (or updates) the trigger's durable consumer of `lane` and starts pulling from
    /// it. A new trigger starts at the end of its broker's stream, as in the embedded mode, or
    /// at `start` (a trigger that changed between ordered and not, `dispatcher.rs`); its
    /// redrive consumer at the start of its redrives.
    async fn open(
        trigger: Arc<TriggerRuntime>,
        lane: Lane,
        filter: Filter,
        log: Arc<JetStreamLog>,
        policy: Arc<EventTypePolicy>,
        start: Option<u64>,
    ) -> Result<JetStreamSource, LogError> {
        let names = Names::of(&trigger.broker);
        let stream_name = match lane {
            Lane::Redrive => &names.redrive_stream,
            Lane::Stream | Lane::Partition(_) => &names.stream,
        };
        let stream = settled(&trigger, || async {
            log.context()
                .get_stream(stream_name)
                .await
                .map_err(|e| LogError::unavailable("cannot open the broker's stream", &e))
        })
        .await?;
        let in_flight = i64::try_from(trigger.slots.available_permits()).unwrap_or(64);
        let mut config = pull::Config {
            durable_name: Some(consumer_name(&trigger.id, lane)),
            description: Some(format!("Switchyard: Trigger {}", trigger.id)),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: trigger.config.settings.timeout + ACK_WAIT_MARGIN,
            // Never: JetStream must not drop an event on its own; the trigger's retry
            // settings decide when it becomes a dead letter.
            max_deliver: -1,
            max_ack_pending: in_flight + RETRY_BACKLOG,
            ..Default::default()
        };
        match stream.consumer_info(consumer_name(&trigger.id, lane)).await {
            // Where a consumer starts cannot change once it exists: it keeps its own.
            Ok(info) if lane != Lane::Redrive => {
                config.deliver_policy = info.config.deliver_policy;
            }
            Ok(_) => {}
            Err(_) => {
                if let Some(start_sequence) = start {
                    // The trigger's consumers of the other kind (ordered or not) had taken
                    // it so far.
                    config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence };
                }
            }
        }
        match lane {
            Lane::Stream => {}
            Lane::Partition(p) => {
                // One message of the partition out at a time, a retry included: its order.
                config.filter_subject = names.partition_subject(p);
                config.max_ack_pending = 1;
                config.description = Some(format!(
                    "Switchyard: Trigger {}, partition {p} (ordered)",
                    trigger.id
                ));
            }
            Lane::Redrive => {
                config.filter_subject = names.redrive_subject(trigger.id.name());
                config.deliver_policy = DeliverPolicy::All;
                config.description =
                    Some(format!("Switchyard: redrives of Trigger {}", trigger.id));
            }
        }
        let consumer = settled(&trigger, || async {
            stream
                .create_consumer(config.clone())
                .await
                .map_err(|e| LogError::unavailable("cannot create the trigger's consumer", &e))
        })
        .await?;
        // What is pulled waits on the replica with its ack wait running: no more than the
        // trigger can start at once, and one at a time under a rate limit.
        let batch = if trigger.config.rate_limit.is_some() || matches!(lane, Lane::Partition(_)) {
            1
        } else {
            usize::try_from(in_flight).unwrap_or(64).clamp(1, 256)
        };
        let messages = pull_from(&consumer, batch).await?;
        let attempts = settled(&trigger, || log.attempts_bucket()).await?;
        Ok(JetStreamSource {
            trigger,
            lane,
            filter,
            log,
            policy,
            names,
            consumer,
            stream,
            config,
            attempts,
            batch,
            messages: tokio::sync::Mutex::new(messages),
            parked: std::sync::Mutex::default(),
        })
    }

    /// The trigger it serves.
    pub fn trigger(&self) -> &Arc<TriggerRuntime> {
        &self.trigger
    }

    /// Naks, without delay, the messages pulled and not handed out (at shutdown, once the
    /// delivery loop stopped taking work), so JetStream gives them to another replica now
    /// rather than after their ack wait.
    async fn hand_back(&self) {
        use futures_util::FutureExt;
        let mut messages = self.messages.lock().await;
        let mut handed_back = 0usize;
        let parked: Vec<Message> = super::lock(&self.parked).drain(..).collect();
        for message in parked {
            if ack(&message, AckKind::Nak(None)).await.is_ok() {
                handed_back += 1;
            }
        }
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            if ack(&message, AckKind::Nak(None)).await.is_ok() {
                handed_back += 1;
            }
        }
        if handed_back > 0 {
            tracing::info!(trigger = %self.trigger.id, handed_back, "messages handed back to JetStream");
        }
    }

    /// The stream its work comes from: its deliveries' message ids start with it, so a
    /// redrive's replies and dead letter are not taken for an event's of the same sequence.
    fn stream_name(&self) -> &str {
        match self.lane {
            Lane::Redrive => &self.names.redrive_stream,
            Lane::Stream | Lane::Partition(_) => &self.names.stream,
        }
    }

    /// Makes sure the consumer is there (one deleted by hand is made again) and pulls from it
    /// anew.
    async fn pull_again(&self, messages: &mut pull::Stream) {
        if let Err(e) = self.stream.create_consumer(self.config.clone()).await {
            tracing::warn!(trigger = %self.trigger.id, error = %e, "cannot make the trigger's consumer again; trying again");
            return;
        }
        match pull_from(&self.consumer, self.batch).await {
            Ok(again) => *messages = again,
            Err(e) => {
                tracing::warn!(trigger = %self.trigger.id, error = %e, "cannot pull from JetStream; trying again");
            }
        }
    }

    /// The key of the attempt history of the delivery of stream sequence `seq`.
    fn attempts_key(&self, seq: u64) -> String {
        format!("{}.{}.{seq}", self.stream_name(), self.trigger.id.name())
    }

    /// The attempts made before this hand-out of `seq`, the `delivered`th: those the replicas
    /// kept, after one without details for each hand-out that made none (a replica that
    /// stopped or died holding it), so that there are as many as JetStream counted.
    async fn earlier(&self, seq: u64, delivered: i64) -> Vec<Attempt> {
        let counted = usize::try_from(delivered.max(1) - 1).unwrap_or(0);
        if counted == 0 {
            return Vec::new();
        }
        let kept: Vec<Attempt> = match self.attempts.get(self.attempts_key(seq)).await {
            Ok(Some(value)) => serde_json::from_slice(&value).unwrap_or_default(),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::debug!(trigger = %self.trigger.id, error = %e, "cannot read an attempt history");
                Vec::new()
            }
        };
        // A summary line stands for as many hand-outs as it counts.
        let covered: u64 = kept.iter().map(Attempt::weight).sum();
        let covered = usize::try_from(covered).unwrap_or(usize::MAX);
        let mut all = unrecorded(counted.saturating_sub(covered));
        all.extend(kept);
        all
    }

    /// Keeps the attempts at `seq` so far for the replica that makes the next one.
    async fn keep_attempts(&self, seq: u64, attempts: &[Attempt]) {
        let value = serde_json::to_vec(&capped(attempts.to_vec())).unwrap_or_default();
        if let Err(e) = self
            .attempts
            .put(self.attempts_key(seq), value.into())
            .await
        {
            tracing::debug!(trigger = %self.trigger.id, error = %e, "cannot keep an attempt history; the next one lists these without details");
        }
    }

    /// Forgets the attempts at `seq`, settled for good.
    async fn forget_attempts(&self, seq: u64) {
        if let Err(e) = self.attempts.purge(self.attempts_key(seq)).await {
            tracing::debug!(trigger = %self.trigger.id, error = %e, "cannot forget an attempt history; it expires");
        }
    }

    /// The message id of the `i`th reply to the delivery of stream sequence `seq`.
    fn reply_id(&self, seq: u64, i: usize) -> String {
        format!(
            "{}:{}:{seq}:{i}",
            self.stream_name(),
            self.trigger.id.name()
        )
    }

    /// Publishes the replies of a delivery, trying again while JetStream is unavailable.
    async fn store_replies(
        &self,
        work: &Work<Message>,
        replies: Vec<switchyard_core::CloudEvent>,
    ) -> Result<(), LogError> {
        let Some(batch) = reply_batch(&self.trigger, &self.policy, &work.event, replies)? else {
            return Ok(());
        };
        let ids = (0..batch.len())
            .map(|i| self.reply_id(work.position, i))
            .collect::<Vec<_>>();
        let mut backoff = Backoff::STORE;
        loop {
            match self
                .log
                .publish(batch.broker(), batch.encoded().to_vec(), ids.clone())
                .await
            {
                Err(LogError::Unavailable(e)) => {
                    tracing::warn!(trigger = %self.trigger.id, error = %e, "cannot store a reply; trying again");
                    keep_holding(&work.ticket).await;
                    tokio::time::sleep(backoff.next_pause()).await;
                }
                other => return other.map(drop),
            }
        }
    }

    /// Publishes the dead letter of `work`, trying again while JetStream is unavailable; its
    /// id is the delivery's, so two replicas that both give up store it once.
    async fn store_dead_letter(
        &self,
        letter: &DeadLetter,
        seq: u64,
        ticket: &Message,
    ) -> Result<(), LogError> {
        let record = records::to_value(letter)?;
        let msg_id = format!("{}:{}:{seq}", self.stream_name(), self.trigger.id.name());
        // The last attempt may have taken most of the ack wait: renew it before publishing.
        keep_holding(ticket).await;
        let mut backoff = Backoff::STORE;
        loop {
            match self
                .log
                .publish_dead_letter(
                    &self.trigger.broker,
                    self.trigger.id.name(),
                    record.clone(),
                    msg_id.clone(),
                )
                .await
            {
                Err(LogError::Unavailable(e)) => {
                    tracing::warn!(trigger = %self.trigger.id, error = %e, "cannot store a dead letter; trying again");
                    keep_holding(ticket).await;
                    tokio::time::sleep(backoff.next_pause()).await;
                }
                other => return other.map(drop),
            }
        }
    }
}

/// The durable consumer of `trigger` for `lane`. Trigger names are DNS labels, so `_` keeps
/// an ordered trigger's partitions apart from other triggers; the redrives are in a stream of
/// their own.
fn consumer_name(trigger: &TriggerId, lane: Lane) -> String {
    match lane {
        Lane::Stream | Lane::Redrive => trigger.name().to_owned(),
        Lane::Partition(p) => format!("{}_p{p}", trigger.name()),
    }
}

/// `call`, tried again for up to [`SETTLE_TIMEOUT`] while JetStream cannot answer (a
/// cluster electing a leader, or forming as the replicas start).
async fn settled<T, F, Fut>(trigger: &TriggerRuntime, call: F) -> Result<T, LogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LogError>>,
{
    when_settled(
        SETTLE_TIMEOUT,
        &format!("start trigger {}", trigger.id),
        call,
    )
    .await
}

/// A pull from `consumer`, `batch` messages at a time, with heartbeats (so a lost server is
/// noticed within seconds).
async fn pull_from(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
    batch: usize,
) -> Result<pull::Stream, LogError> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| LogError::unavailable("cannot pull from the trigger's consumer", &e))
}

/// The most attempts a kept history or a dead letter lists: each may hold 1 KiB of the
/// subscriber's answer, and a dead letter must fit in one NATS message.
const MAX_LISTED_ATTEMPTS: usize = 100;

/// `attempts`, the earliest beyond [`MAX_LISTED_ATTEMPTS`] replaced by lines that count them:
/// one for those that counted against `retry`, one for those held while the subscriber was
/// down, with the first held attempt kept in full between them (the hold is bounded from it).
fn capped(mut attempts: Vec<Attempt>) -> Vec<Attempt> {
    if attempts.len() <= MAX_LISTED_ATTEMPTS {
        return attempts;
    }
    let kept = attempts.split_off(attempts.len() - (MAX_LISTED_ATTEMPTS - 3));
    let old = attempts;
    let counted: u64 = old.iter().filter(|a| !a.held).map(Attempt::weight).sum();
    let mut held: u64 = old.iter().filter(|a| a.held).map(Attempt::weight).sum();
    let first_held = old.iter().find(|a| a.held && a.count.is_none()).cloned();
    let summary = |n: u64, held: bool, what: &str| Attempt {
        time: String::new(),
        status: None,
        error: Some(format!("{n} earlier {what}not listed")),
        latency_ms: 0,
        body: None,
        held,
        count: Some(n),
    };
    let mut listed = Vec::with_capacity(MAX_LISTED_ATTEMPTS);
    if counted > 0 {
        listed.push(summary(counted, false, "attempts "));
    }
    if let Some(first) = first_held {
        held -= 1;
        listed.push(first);
    }
    if held > 0 {
        listed.push(summary(held, true, "held attempts "));
    }
    listed.extend(kept);
    listed
}

/// `n` hand-outs JetStream counted without an attempt kept for them (the replica holding
/// the event stopped or died first, or could not keep what it tried).
fn unrecorded(n: usize) -> Vec<Attempt> {
    (0..n)
        .map(|_| Attempt {
            time: String::new(),
            status: None,
            error: Some(
                "no details: the replica that held the event stopped or died before keeping them"
                    .to_owned(),
            ),
            latency_ms: 0,
            body: None,
            held: false,
            count: None,
        })
        .collect()
}

/// The value of header `name` of `message`, if it has one.
fn header(message: &Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()?
        .get(name)
        .map(|v| v.as_str().to_owned())
}

/// Tells JetStream the message is still being worked on (its ack wait starts again), so a
/// delivery whose outcome cannot be stored yet is not handed to another replica meanwhile.
async fn keep_holding(message: &Message) {
    if let Err(e) = ack(message, AckKind::Progress).await {
        tracing::debug!(error = %e, "cannot extend a message's ack wait");
    }
}

async fn ack(message: &Message, kind: AckKind) -> Result<(), LogError> {
    message
        .ack_with(kind)
        .await
        .map_err(|e| LogError::unavailable("cannot acknowledge to JetStream", &e))
}

impl super::DeliverySource for JetStreamSource {
    type Ticket = Message;

    async fn next(&self) -> Work<Message> {
        let mut messages = self.messages.lock().await;
        let mut backoff = Backoff::STORE;
        loop {
            let parked = super::lock(&self.parked).pop_front();
            let message = match parked {
                Some(message) => message,
                None => match messages.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        use async_nats::jetstream::consumer::pull::MessagesErrorKind as Kind;
                        tracing::warn!(trigger = %self.trigger.id, error = %e, "pulling from JetStream failed; trying again");
                        tokio::time::sleep(backoff.next_pause()).await;
                        // No consumer to answer: it was deleted (perhaps while the replica was
                        // away, so that no deletion notice came).
                        if matches!(e.kind(), Kind::ConsumerDeleted | Kind::NoResponders) {
                            self.pull_again(&mut messages).await;
                        }
                        continue;
                    }
                    None => {
                        // The pull ended (the consumer was deleted, the server lost its state,
                        // or the connection was replaced).
                        tracing::warn!(trigger = %self.trigger.id, "the pull from JetStream ended; pulling again");
                        tokio::time::sleep(backoff.next_pause()).await;
                        self.pull_again(&mut messages).await;
                        continue;
                    }
                },
            };
            backoff.reset();
            let Ok((position, delivered)) =
                message.info().map(|i| (i.stream_sequence, i.delivered))
            else {
                tracing::warn!(trigger = %self.trigger.id, "a JetStream message without delivery info; skipped");
                continue;
            };
            let event = match switchyard_core::store::decode(&message.payload) {
                Ok(event) => event,
                Err(e) => {
                    // Nothing can deliver it; it stays in the stream for inspection.
                    tracing::error!(trigger = %self.trigger.id, position, error = %e, "a damaged event in the stream; skipped");
                    let _ = ack(&message, AckKind::Term).await;
                    continue;
                }
            };
            let redrive = self.lane == Lane::Redrive;
            // A redrive matched the filter once; the filter may have changed since.
            if !redrive && !self.filter.matches(&event) {
                if let Err(e) = ack(&message, AckKind::Ack).await {
                    tracing::warn!(trigger = %self.trigger.id, position, error = %e, "cannot ack an event the filter passes over; it will come again");
                }
                continue;
            }
            let redirect = header(&message, REDRIVE_URI_HEADER);
            return Work {
                position,
                event: Arc::new(event),
                attempts: self.earlier(position, delivered).await,
                redirect,
                // A redrive is not a first delivery: no rate, no key to wait behind.
                first: !redrive && delivered <= 1,
                ticket: message,
            };
        }
    }

    async fn idle(&self) {
        use futures_util::FutureExt;
        // What the pull has brought is parked rather than left to its ack wait, which would
        // hand it out again and count a hand-out as an attempt; then every parked message's
        // ack wait starts again.
        {
            let mut messages = self.messages.lock().await;
            let mut parked = super::lock(&self.parked);
            // Bounded: each poll of the pull may ask JetStream for more.
            while parked.len() < 2 * self.batch
                && let Some(Some(Ok(message))) = messages.next().now_or_never()
            {
                parked.push_back(message);
            }
        }
        let parked: Vec<Message> = super::lock(&self.parked).iter().cloned().collect();
        for message in &parked {
            keep_holding(message).await;
        }
    }

    async fn hold(&self, work: &Work<Message>) {
        keep_holding(&work.ticket).await;
    }

    async fn release(&self, work: Work<Message>) {
        // Another replica may take it at once rather than after its ack wait.
        if let Err(e) = ack(&work.ticket, AckKind::Nak(None)).await {
            tracing::warn!(trigger = %self.trigger.id, position = work.position, error = %e, "cannot hand a message back; it is handed out again after its ack wait");
        }
    }

    async fn settle(&self, work: Work<Message>, outcome: Outcome) -> Result<(), LogError> {
        match outcome {
            Outcome::Delivered { replies } => {
                if !replies.is_empty() {
                    self.store_replies(&work, replies).await?;
                }
                ack(&work.ticket, AckKind::Ack).await?;
                if retried(&work.ticket) {
                    self.forget_attempts(work.position).await;
                }
                Ok(())
            }
            Outcome::Retry { attempts, due_ms } => {
                // Kept before the nak, for whichever replica the next hand-out goes to.
                self.keep_attempts(work.position, &attempts).await;
                let delay = Duration::from_millis(due_ms.saturating_sub(records::now_ms()));
                if !attempts.last().is_some_and(|a| a.held) {
                    metrics::counter!(m::DELIVERY_RETRIES, self.trigger.labels()).increment(1);
                }
                ack(&work.ticket, AckKind::Nak(Some(delay))).await
            }
            Outcome::DeadLetter {
                attempts,
                reason,
                error_data,
            } => {
                // A redrive's event is at the offset its header gives in the broker's stream.
                let offset = header(&work.ticket, REDRIVE_OFFSET_HEADER)
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(work.position);
                let origin = Origin {
                    broker: &self.trigger.broker,
                    trigger: self.trigger.id.name(),
                    offset,
                    event: records::encode_event(&work.event),
                    destination: work
                        .redirect
                        .clone()
                        .unwrap_or_else(|| self.trigger.config.subscriber.address().to_owned()),
                };
                let letter = DeadLetter::new(origin, reason, capped(attempts), error_data);
                self.store_dead_letter(&letter, work.position, &work.ticket)
                    .await?;
                let last = letter.attempts.last();
                tracing::warn!(trigger = %self.trigger.id, event = %work.event.id, %reason, status = ?letter.status, error = ?last.and_then(|a| a.error.as_deref()), "dead-lettered");
                let mut labels = self.trigger.labels();
                labels.push(metrics::Label::new("reason", reason.as_str()));
                metrics::counter!(m::DEAD_LETTERS, labels).increment(1);
                ack(&work.ticket, AckKind::Ack).await?;
                if retried(&work.ticket) {
                    self.forget_attempts(work.position).await;
                }
                Ok(())
            }
        }
    }
}

/// Whether `message` was handed out before (so attempts at it may be kept).
fn retried(message: &Message) -> bool {
    message.info().is_ok_and(|i| i.delivered > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_history_keeps_its_last_attempts_and_counts_the_rest() {
        let many = unrecorded(250);
        let listed = capped(many);
        assert_eq!(listed.len(), MAX_LISTED_ATTEMPTS - 2);
        assert_eq!(
            listed[0].error.as_deref(),
            Some("153 earlier attempts not listed")
        );
        assert_eq!(listed.iter().map(Attempt::weight).sum::<u64>(), 250);
        assert_eq!(capped(unrecorded(3)).len(), 3);
    }

    /// Held attempts cut short still do not count, the first is kept for the hold's bound,
    /// and cutting again keeps the counts.
    #[test]
    fn a_long_history_of_held_attempts_keeps_what_counts() {
        let held = |time: &str| Attempt {
            time: time.to_owned(),
            held: true,
            ..unrecorded(1).remove(0)
        };
        let mut history = unrecorded(2);
        history.push(held("2026-01-01T00:00:00.000Z"));
        history.extend((0..200).map(|_| held("2026-01-01T00:05:00.000Z")));
        let listed = capped(history);
        assert_eq!(listed.len(), MAX_LISTED_ATTEMPTS);
        assert_eq!(listed[0].count, Some(2));
        assert!(!listed[0].held);
        assert_eq!(
            listed[1].time, "2026-01-01T00:00:00.000Z",
            "the first held, in full"
        );
        assert!(listed[2].held && listed[2].count.is_some());
        let again = capped([listed.clone(), (0..50).map(|_| held("t")).collect()].concat());
        let weigh = |a: &[Attempt], h: bool| -> u64 {
            a.iter().filter(|x| x.held == h).map(Attempt::weight).sum()
        };
        assert_eq!(weigh(&again, false), 2);
        assert_eq!(weigh(&again, true), 251);
        assert_eq!(again[1].time, "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn hand_outs_without_kept_attempts_are_listed_without_details() {
        assert!(unrecorded(0).is_empty());
        let earlier = unrecorded(2);
        assert_eq!(earlier.len(), 2);
        assert!(
            earlier.iter().all(|a| a.status.is_none()
                && a.error.as_deref().is_some_and(|e| e.contains("no details")))
        );
    }
}
