//! Dead letters beyond the store: sending them to a trigger's `deadLetterSink` with the
//! `knativeerror*` attributes (again after a restart, until the sink answers), and turning
//! the retries of removed triggers into dead letters.
//!
//! What a sink is owed is in the store: a marker per dead letter (`dls_pending_key`, its
//! value the trigger's name). One pump per trigger reads the markers in order and keeps at
//! most [`DLS_CONCURRENCY`] sends under way; a new dead letter only wakes it. So a flood of
//! dead letters to a slow sink costs the store its markers and the process nothing per
//! letter. Dead letters of one trigger are written concurrently, so a marker can commit after
//! one with a larger id: the pump never reads past the smallest id still being written
//! ([`DeadLetterPump::write`]), so its cursor never passes a marker that is not there yet.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use switchyard_broker::log::{EventLog, LogError, Table, WriteOp};

use super::EmbeddedSource;
use crate::dispatch::{scan, unit_random};
use switchyard_core::id::TriggerId;

use crate::delivery::{Deliverer, DeliverySettings, Subscriber, Verdict};
use crate::records::{self, DeadLetter, DeadLetterReason, Origin, RetryEntry};

/// What sending a dead letter to a trigger's `deadLetterSink` needs, taken from the trigger so
/// the pump (a side task) holds no reference to the trigger itself: dropping the trigger
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

    /// Wakes the trigger's dead-letter-sink pump (starting it the first time): it sends what
    /// the markers say, in order, [`DLS_CONCURRENCY`] at a time. Called when the trigger
    /// starts (a reload's new trigger takes over what its old self still owed) and after a
    /// marker was stored.
    pub(super) fn wake_dead_letter_pump(&self) {
        if self.trigger.config.dead_letter_sink.is_none() {
            return;
        }
        if !self.dls_pump.started.swap(true, Ordering::AcqRel)
            && let Some(sender) = self.dead_letter_sender()
        {
            let pump = Arc::clone(&self.dls_pump);
            self.spawn_side_task(pump.run(sender));
        }
        self.dls_pump.wake.notify_one();
    }

    /// Lets the pump finish the sends under way and start no more (a drain).
    pub(super) fn close_dead_letter_pump(&self) {
        self.dls_pump.closing.store(true, Ordering::Release);
        self.dls_pump.wake.notify_one();
    }
}

/// Sends to one trigger's dead-letter sink under way at once.
pub(super) const DLS_CONCURRENCY: usize = 16;
/// Markers read from the store in one step of the pump.
const DLS_SCAN: usize = 256;

/// The state a trigger shares with its dead-letter-sink pump.
#[derive(Debug, Default)]
pub(super) struct DeadLetterPump {
    /// A marker was stored (a permit is kept when the pump is busy, so none is missed).
    wake: Notify,
    started: AtomicBool,
    /// Finish the sends under way, start none.
    closing: AtomicBool,
    /// Ids of this trigger's dead letters taken but not yet written (or failed): the pump
    /// reads markers below the smallest only.
    writing: Mutex<BTreeSet<u64>>,
}

/// A dead letter being written: its id is in [`DeadLetterPump::write`]'s set until this is
/// dropped (written, failed or cancelled), which wakes the pump.
pub(super) struct Writing<'a> {
    pump: &'a DeadLetterPump,
    id: u64,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.pump.writing.lock() {
            w.remove(&self.id);
        }
        self.pump.wake.notify_one();
    }
}

impl DeadLetterPump {
    /// Makes a dead letter with `make` (which takes its id) and holds its id as being written
    /// until the guard is dropped; under the lock the pump reads, so no id is taken unseen.
    pub(super) fn write<T>(
        &self,
        make: impl FnOnce() -> T,
        id_of: impl FnOnce(&T) -> u64,
    ) -> (T, Writing<'_>) {
        let mut w = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let made = make();
        let id = id_of(&made);
        w.insert(id);
        (made, Writing { pump: self, id })
    }

    /// Where the pump may read up to: the marker of the smallest id being written, or `end`.
    fn read_limit(&self, broker: &str, end: &[u8]) -> Vec<u8> {
        let w = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.first()
            .map_or_else(|| end.to_vec(), |id| records::dls_pending_key(broker, *id))
    }

    /// Reads the broker's markers in key order (ids grow with time, so new dead letters come
    /// after the ones already read) and sends this trigger's, at most [`DLS_CONCURRENCY`] at
    /// once; waits for a wake at the end. A send whose retries run out keeps its marker and is
    /// sent again after a restart, when the pump starts from the first marker.
    async fn run(self: Arc<Self>, sender: DeadLetterSender) {
        let sender = Arc::new(sender);
        let name = sender.trigger.name().as_bytes().to_vec();
        let prefix = records::dls_pending_prefix(&sender.broker);
        let end = records::prefix_end(&prefix);
        let mut cursor = prefix.clone();
        let mut sending = JoinSet::new();
        loop {
            while !self.closing.load(Ordering::Acquire) && sending.len() < DLS_CONCURRENCY {
                let limit = self.read_limit(&sender.broker, &end);
                if cursor >= limit {
                    break;
                }
                let chunk = match scan(
                    &sender.log,
                    Table::DeadLetters,
                    cursor.clone(),
                    limit,
                    DLS_SCAN,
                )
                .await
                {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        tracing::warn!(trigger = %sender.trigger, error = %e, "cannot read the dead letters owed to the dead-letter sink; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if chunk.is_empty() {
                    break;
                }
                for (key, owner) in chunk {
                    cursor.clone_from(&key);
                    cursor.push(0);
                    let id = key
                        .get(prefix.len()..)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes);
                    if let (true, Some(id)) = (owner == name, id) {
                        let sender = Arc::clone(&sender);
                        sending.spawn(async move { sender.send_owed(id).await });
                        if sending.len() >= DLS_CONCURRENCY {
                            break;
                        }
                    }
                }
            }
            let closing = self.closing.load(Ordering::Acquire);
            if sending.is_empty() {
                if closing {
                    return;
                }
                self.wake.notified().await;
                continue;
            }
            tokio::select! {
                _ = sending.join_next() => {}
                () = self.wake.notified(), if !closing => {}
            }
        }
    }
}

impl DeadLetterSender {
    /// Sends dead letter `id` as the store holds it now; one redriven or purged meanwhile is
    /// not sent, and its marker goes.
    async fn send_owed(&self, id: u64) {
        match self.load(id).await {
            Ok(Some(letter)) => self.send(&letter).await,
            Ok(None) => self.forget(id).await,
            Err(e) => {
                tracing::warn!(trigger = %self.trigger, id, error = %e, "cannot read a dead letter back; it goes to the dead-letter sink after a restart");
            }
        }
    }

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
        let extra = letter.error_extensions();
        let settings = &self.settings;
        for k in 0..=settings.retry {
            if k > 0 {
                tokio::time::sleep(settings.backoff(k, None, unit_random())).await;
            }
            let r = self
                .deliverer
                .attempt(dls, &event, settings, &extra, None)
                .await;
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
