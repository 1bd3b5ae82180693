//! A trigger's `deadLetterSink` on the JetStream engine: a durable consumer on the broker's
//! dead-letter stream, filtered to the trigger's subject and shared by every replica, whose
//! messages (dead-letter records) are sent to the sink with the `knativeerror*` attributes.
//! A 2xx acks the message; a refusal for good (a 4xx other than 408 and 429) acks it too, the
//! record staying in the stream; anything else naks it with the trigger's backoff, capped by
//! its `backoffMax`, for as long as it takes: the sink is owed every dead letter until it
//! takes it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures_util::StreamExt;
use switchyard_broker::jetstream::{JetStreamLog, Names};
use switchyard_broker::log::LogError;
use switchyard_core::backoff::Backoff;
use tokio::task::JoinSet;

use super::{ACK_WAIT_MARGIN, ack, pull_from, settled};
use crate::delivery::{Subscriber, Verdict};
use crate::dispatch::{TriggerRuntime, unit_random};
use crate::records::DeadLetter;

/// Sends to one dead-letter sink at most this many at once.
const DLS_CONCURRENCY: usize = 16;

/// The consumer of `trigger`'s dead letters (created when missing), with what makes it again
/// should it go away. It starts at the beginning of the trigger's subject: dead letters
/// written before it existed are owed too.
pub(super) struct DeadLetterConsumer {
    stream: async_nats::jetstream::stream::Stream,
    config: pull::Config,
    consumer: PullConsumer,
}

/// Creates (or finds) the consumer of `trigger`'s dead letters.
pub(super) async fn consumer(
    trigger: &TriggerRuntime,
    log: &JetStreamLog,
) -> Result<DeadLetterConsumer, LogError> {
    let names = Names::of(&trigger.broker);
    let stream = settled(trigger, || async {
        log.context()
            .get_stream(&names.dead_letter_stream)
            .await
            .map_err(|e| LogError::unavailable("cannot open the dead-letter stream", &e))
    })
    .await?;
    let config = pull::Config {
        durable_name: Some(trigger.id.name().to_owned()),
        description: Some(format!(
            "Switchyard: the deadLetterSink of Trigger {}",
            trigger.id
        )),
        filter_subject: names.dead_letter_subject(trigger.id.name()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: trigger.config.settings.timeout + ACK_WAIT_MARGIN,
        max_deliver: -1,
        max_ack_pending: i64::try_from(DLS_CONCURRENCY).unwrap_or(16),
        ..Default::default()
    };
    let consumer = settled(trigger, || async {
        stream
            .create_consumer(config.clone())
            .await
            .map_err(|e| LogError::unavailable("cannot create the dead-letter sink's consumer", &e))
    })
    .await?;
    Ok(DeadLetterConsumer {
        stream,
        config,
        consumer,
    })
}

/// Sends the trigger's dead letters to `sink` until stopped (its `Tasks` abort it).
pub(super) async fn pump(
    trigger: Arc<TriggerRuntime>,
    sink: Subscriber,
    consumer: DeadLetterConsumer,
) {
    let mut backoff = Backoff::STORE;
    loop {
        let mut messages = match pull_from(&consumer.consumer, DLS_CONCURRENCY).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(trigger = %trigger.id, error = %e, "cannot pull dead letters; trying again");
                tokio::time::sleep(backoff.next_pause()).await;
                continue;
            }
        };
        let mut sends = JoinSet::new();
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as Kind;
                    tracing::warn!(trigger = %trigger.id, error = %e, "pulling dead letters failed; trying again");
                    tokio::time::sleep(backoff.next_pause()).await;
                    // No consumer to answer: make it again (below).
                    if matches!(e.kind(), Kind::ConsumerDeleted | Kind::NoResponders) {
                        break;
                    }
                    continue;
                }
            };
            backoff.reset();
            while sends.len() >= DLS_CONCURRENCY {
                sends.join_next().await;
            }
            sends.spawn(send(Arc::clone(&trigger), sink.clone(), message));
        }
        // The pull ended: wait for the sends, make sure the consumer is there (one deleted by
        // hand is made again), then pull again.
        while sends.join_next().await.is_some() {}
        tokio::time::sleep(backoff.next_pause()).await;
        if let Err(e) = consumer
            .stream
            .create_consumer(consumer.config.clone())
            .await
        {
            tracing::warn!(trigger = %trigger.id, error = %e, "cannot make the dead-letter sink's consumer again; trying again");
        }
    }
}

/// One attempt at one dead letter; its message acked or nak'ed with the delay to the next.
async fn send(
    trigger: Arc<TriggerRuntime>,
    sink: Subscriber,
    message: async_nats::jetstream::Message,
) {
    let delivered = message.info().map_or(1, |i| i.delivered);
    let letter: DeadLetter = match serde_json::from_slice(&message.payload) {
        Ok(letter) => letter,
        Err(e) => {
            tracing::error!(trigger = %trigger.id, error = %e, "a damaged dead-letter record; skipped");
            let _ = ack(&message, AckKind::Term).await;
            return;
        }
    };
    let Some(event) = letter.event() else {
        tracing::error!(trigger = %trigger.id, "a dead-letter record without its event; skipped");
        let _ = ack(&message, AckKind::Term).await;
        return;
    };
    let settings = &trigger.config.settings;
    let r = trigger
        .deliverer
        .attempt(&sink, &event, settings, &letter.error_extensions(), None)
        .await;
    let kind = match r.verdict {
        Verdict::Delivered => AckKind::Ack,
        Verdict::DeadLetter => {
            tracing::error!(trigger = %trigger.id, event = %event.id, sink = sink.address(), status = ?r.status, "the dead-letter sink refused the event; it stays in the dead-letter stream");
            AckKind::Ack
        }
        Verdict::Retry => {
            let k = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
            let delay = settings
                .backoff(k, r.retry_after, unit_random())
                .min(settings.backoff_max.max(Duration::from_secs(1)));
            AckKind::Nak(Some(delay))
        }
    };
    if let Err(e) = ack(&message, kind).await {
        tracing::warn!(trigger = %trigger.id, error = %e, "cannot acknowledge a dead letter; the sink may get it again");
    }
}
