//! Applying an [`Outcome`] to the store, the one place that does: replies appended, a retry
//! record written (or rewritten), or a dead letter written, each removing the retry record
//! the attempt came from in the same write. Only once this returned is the event done for
//! the trigger, so the cursor may pass it.

use std::time::Duration;

use switchyard_broker::log::{LogError, Table, WriteOp};
use switchyard_broker::metrics as m;
use switchyard_core::CloudEvent;
use switchyard_core::backoff::Backoff;

use super::EmbeddedSource;
use crate::dispatch::Outcome;
use crate::dispatch::replies::reply_batch;
use crate::records::{self, Attempt, DeadLetter, DeadLetterReason, Origin, RetryEntry};

/// An event a trigger is working on, and where the attempt came from.
#[derive(Debug, Clone)]
pub(super) struct Job<'a> {
    /// Its offset in the broker's log.
    pub offset: u64,
    /// The event.
    pub event: &'a CloudEvent,
    /// The retry record this attempt came from (removed when the outcome is written).
    pub retry_key: Option<Vec<u8>>,
    /// Deliver here instead of the trigger's subscriber (a redrive to another URI).
    pub uri: Option<String>,
}

impl EmbeddedSource {
    /// [`settle`](Self::settle), tried again while the store fails (a full disk, say), so an
    /// outcome is never dropped and the cursor is not pinned until a restart. Gives up only
    /// at shutdown.
    pub(super) async fn settle_durably(
        &self,
        job: &Job<'_>,
        outcome: Outcome,
    ) -> Result<(), LogError> {
        let mut backoff = Backoff::STORE;
        loop {
            match self.settle(job, outcome.clone()).await {
                Err(LogError::Storage(e) | LogError::DiskFull(e)) => {
                    tracing::error!(trigger = %self.trigger.id, offset = job.offset, error = %e, "cannot record the delivery's outcome; trying again");
                    tokio::time::sleep(backoff.next_pause()).await;
                }
                other => return other,
            }
        }
    }

    /// Writes `outcome` for `job`: done, a (re)scheduled retry, or a dead letter.
    async fn settle(&self, job: &Job<'_>, outcome: Outcome) -> Result<(), LogError> {
        let delete_old = job.retry_key.clone().map(|key| WriteOp::Delete {
            table: Table::Retries,
            key,
        });
        let had_old = delete_old.is_some();
        match outcome {
            Outcome::Delivered { replies } => {
                if !replies.is_empty() {
                    self.ingest_replies(job.event, replies).await?;
                }
                if let Some(op) = delete_old {
                    self.log.write(vec![op]).await?;
                    self.retries.removed();
                }
            }
            Outcome::Retry { attempts, due_ms } => {
                let held = attempts.last().is_some_and(|a| a.held);
                let entry = RetryEntry {
                    offset: job.offset,
                    event: records::encode_event(job.event),
                    attempts,
                    uri: job.uri.clone(),
                };
                let mut ops = vec![WriteOp::Put {
                    table: Table::Retries,
                    key: records::retry_key(&self.retries.prefix, due_ms, records::new_id()),
                    value: records::to_value(&entry)?,
                }];
                ops.extend(delete_old);
                self.log.write(ops).await?;
                if had_old {
                    self.retries.wake.notify_one();
                } else {
                    self.retries.added();
                }
                if !held {
                    metrics::counter!(m::DELIVERY_RETRIES, self.trigger.labels()).increment(1);
                }
            }
            Outcome::DeadLetter {
                attempts,
                reason,
                error_data,
            } => {
                let (letter, writing) = self.dls_pump.write(
                    || self.dead_letter(job, reason, attempts, error_data),
                    |l| l.id,
                );
                let mut ops = vec![WriteOp::Put {
                    table: Table::DeadLetters,
                    key: records::deadletter_key(&self.trigger.broker, letter.id),
                    value: records::to_value(&letter)?,
                }];
                // The dead-letter sink is owed this event until it answers 2xx; the marker
                // makes a restart send it again.
                if self.trigger.config.dead_letter_sink.is_some() {
                    ops.push(WriteOp::Put {
                        table: Table::DeadLetters,
                        key: records::dls_pending_key(&self.trigger.broker, letter.id),
                        value: self.trigger.id.name().as_bytes().to_vec(),
                    });
                }
                ops.extend(delete_old);
                let written = self.log.write(ops).await;
                drop(writing);
                written?;
                if had_old {
                    self.retries.removed();
                }
                self.dead_lettered(job, letter);
            }
        }
        Ok(())
    }

    /// The dead letter of `job`.
    fn dead_letter(
        &self,
        job: &Job<'_>,
        reason: DeadLetterReason,
        attempts: Vec<Attempt>,
        error_data: Option<String>,
    ) -> DeadLetter {
        let origin = Origin {
            broker: &self.trigger.broker,
            trigger: self.trigger.id.name(),
            offset: job.offset,
            event: records::encode_event(job.event),
            destination: job
                .uri
                .clone()
                .unwrap_or_else(|| self.trigger.config.subscriber.address().to_owned()),
        };
        DeadLetter::new(origin, reason, attempts, error_data)
    }

    /// After `letter` was stored: logged, counted, and sent to the dead-letter sink.
    fn dead_lettered(&self, job: &Job<'_>, letter: DeadLetter) {
        let reason = letter.reason;
        let last = letter.attempts.last();
        tracing::warn!(trigger = %self.trigger.id, event = %job.event.id, %reason, status = ?letter.status, error = ?last.and_then(|a| a.error.as_deref()), "dead-lettered");
        let mut labels = self.trigger.labels();
        labels.push(metrics::Label::new("reason", reason.as_str()));
        metrics::counter!(m::DEAD_LETTERS, labels).increment(1);
        drop(letter);
        // Its marker is stored with it: the pump sends it.
        self.wake_dead_letter_pump();
    }

    /// Stores reply events in the trigger's reply broker ([`reply_batch`]).
    async fn ingest_replies(
        &self,
        original: &CloudEvent,
        replies: Vec<CloudEvent>,
    ) -> Result<(), LogError> {
        let Some(batch) = reply_batch(&self.trigger, self.appender.policy(), original, replies)?
        else {
            return Ok(());
        };
        loop {
            match self.appender.append_reply(batch.clone()).await {
                Ok(_) => return Ok(()),
                Err(LogError::Overloaded) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(e),
            }
        }
    }
}
