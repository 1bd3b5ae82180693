//! Dead letters beyond the store: sending them to a trigger's `deadLetterSink` with the
//! `knativeerror*` attributes (again after a restart, until the sink answers), and turning
//! the retries of removed triggers into dead letters.

use std::collections::HashSet;
use std::sync::Arc;

use switchyard_broker::log::{EventLog, LogError, Table, WriteOp};

use super::EmbeddedSource;
use crate::dispatch::{scan, unit_random};
use switchyard_core::id::TriggerId;

use crate::delivery::{Deliverer, DeliverySettings, Subscriber, Verdict};
use crate::records::{self, DeadLetter, DeadLetterReason, Origin, RetryEntry};

/// What sending a dead letter to a trigger's `deadLetterSink` needs, taken from the trigger so
/// the send (a side task) holds no reference to the trigger itself: dropping the trigger
/// drops its side tasks, which stops them.
pub(super) struct DeadLetterSender {
    trigger: TriggerId,
    broker: Arc<str>,
    sink: Subscriber,
    settings: DeliverySettings,
    deliverer: Deliverer,
    log: Arc<dyn EventLog>,
}

impl EmbeddedSource {
    /// The sender to this trigger's `deadLetterSink`, if it has one.
    pub(super) fn dead_letter_sender(&self) -> Option<DeadLetterSender> {
        Some(DeadLetterSender {
            trigger: self.trigger.id.clone(),
            broker: Arc::clone(&self.trigger.broker),
            sink: self.trigger.config.dead_letter_sink.clone()?,
            settings: self.trigger.config.settings.clone(),
            deliverer: self.trigger.deliverer.clone(),
            log: Arc::clone(&self.log),
        })
    }

    /// Sends `letter` to the `deadLetterSink` in a side task (see [`DeadLetterSender::send`]).
    /// At most [`DLS_CONCURRENCY`] sends of a trigger are under way; the others wait holding
    /// only the dead letter's id, and read it back from the store when their turn comes (one
    /// redriven or purged meanwhile is not sent), so a flood of dead letters to a slow sink
    /// costs a small task each, not its event in memory.
    pub(super) fn send_to_dead_letter_sink(&self, letter: DeadLetter) {
        if let Some(sender) = self.dead_letter_sender() {
            let slots = Arc::clone(&self.dls_slots);
            let id = letter.id;
            drop(letter);
            self.spawn_side_task(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                match sender.load(id).await {
                    Ok(Some(letter)) => sender.send(&letter).await,
                    Ok(None) => sender.forget(id).await,
                    Err(e) => {
                        tracing::warn!(trigger = %sender.trigger, id, error = %e, "cannot read a dead letter back; it goes to the dead-letter sink after a restart");
                    }
                }
            });
        }
    }
}

/// Sends to one trigger's dead-letter sink under way at once.
pub(super) const DLS_CONCURRENCY: usize = 16;

impl DeadLetterSender {
    /// Dead letter `id` as the store holds it now (`None`: redriven or purged).
    async fn load(&self, id: u64) -> Result<Option<DeadLetter>, LogError> {
        let key = records::deadletter_key(&self.broker, id);
        let mut end = key.clone();
        end.push(0);
        let found = switchyard_broker::log::blocking(&self.log, move |log| {
            log.scan(Table::DeadLetters, &key, &end, 1)
        })
        .await?;
        Ok(found
            .into_iter()
            .next()
            .and_then(|(_, v)| serde_json::from_slice(&v).ok()))
    }

    /// Stops owing dead letter `id` to the sink (it is gone from the store).
    async fn forget(&self, id: u64) {
        let _ = self
            .log
            .write(vec![WriteOp::Delete {
                table: Table::DeadLetters,
                key: records::dls_pending_key(&self.broker, id),
            }])
            .await;
    }

    /// Sends a dead-lettered event to the `deadLetterSink` with the `knativeerror*`
    /// attributes, retrying as the trigger would. The dead-letter store keeps it either way.
    async fn send(&self, letter: &DeadLetter) {
        let Some(event) = letter.event() else {
            return;
        };
        let dls = &self.sink;
        let mut extra = vec![("knativeerrordest", letter.destination.clone())];
        if let Some(status) = letter.status {
            extra.push(("knativeerrorcode", status.to_string()));
        }
        if let Some(data) = &letter.error_data {
            extra.push(("knativeerrordata", data.clone()));
        }
        let settings = &self.settings;
        for k in 0..=settings.retry {
            if k > 0 {
                tokio::time::sleep(settings.backoff(k, None, unit_random())).await;
            }
            let r = self.deliverer.attempt(dls, &event, settings, &extra).await;
            let marker = WriteOp::Delete {
                table: Table::DeadLetters,
                key: records::dls_pending_key(&self.broker, letter.id),
            };
            match r.verdict {
                Verdict::Delivered => {
                    if let Err(e) = self.log.write(vec![marker]).await {
                        tracing::warn!(trigger = %self.trigger, error = %e, "cannot clear a dead-letter-sink marker; the sink may get the event again after a restart");
                    }
                    return;
                }
                Verdict::DeadLetter => {
                    // The sink refuses it for good: stop owing it (the store still has it).
                    let _ = self.log.write(vec![marker]).await;
                    tracing::error!(trigger = %self.trigger, event = %event.id, sink = dls.address(), status = ?r.status, "the dead-letter sink refused the event; it stays in the dead-letter store");
                    return;
                }
                Verdict::Retry => {}
            }
        }
        tracing::error!(trigger = %self.trigger, event = %event.id, sink = dls.address(), "the dead-letter sink did not take the event; it stays in the dead-letter store and is sent again after a restart");
    }
}

/// Retries still scheduled for triggers that are no longer configured become dead letters
/// (reason `trigger removed`), so removing a trigger drops nothing silently and the records
/// stay inspectable and redrivable once the trigger is back.
pub(super) async fn orphaned_retries_to_dead_letters(
    log: &Arc<dyn EventLog>,
    broker: &str,
    known: &HashSet<&str>,
) -> Result<(), LogError> {
    const CHUNK: usize = 500;
    let (mut cursor, to) = records::retries_of_broker(broker);
    loop {
        let chunk = scan(log, Table::Retries, cursor.clone(), to.clone(), CHUNK).await?;
        let n = chunk.len();
        let mut ops = Vec::new();
        for (key, value) in chunk {
            cursor = key.clone();
            cursor.push(0);
            let trigger = records::retry_trigger(broker, &key).unwrap_or_default();
            if known.contains(trigger) {
                continue;
            }
            let Ok(entry) = serde_json::from_slice::<RetryEntry>(&value) else {
                continue;
            };
            let origin = Origin {
                broker,
                trigger,
                offset: entry.offset,
                event: entry.event,
                destination: entry.uri.unwrap_or_default(),
            };
            let letter = DeadLetter::new(
                origin,
                DeadLetterReason::TriggerRemoved,
                entry.attempts,
                None,
            );
            tracing::warn!(broker, trigger, event = %letter.event_id, "a retry of a removed trigger was moved to the dead-letter store");
            ops.push(WriteOp::Put {
                table: Table::DeadLetters,
                key: records::deadletter_key(broker, letter.id),
                value: records::to_value(&letter)?,
            });
            ops.push(WriteOp::Delete {
                table: Table::Retries,
                key,
            });
        }
        if !ops.is_empty() {
            log.write(ops).await?;
        }
        if n < CHUNK {
            return Ok(());
        }
    }
}
