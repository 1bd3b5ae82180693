//! A trigger's retry scanner: it reads the trigger's retry records that are due (their keys
//! sort by due time) and hands them to the delivery loop as work, which settles each (removing
//! the record and writing the next one or a dead letter). A record handed out stays claimed
//! until it is settled, so a later scan never hands it out twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::log::{LogError, SideRecord, Table, WriteOp};

use super::{EmbeddedSource, Ticket};
use crate::dispatch::source::Work;
use crate::dispatch::{lock, scan};
use crate::records::{self, RetryEntry};

/// The most due records handed out per scan, and the most waiting to be taken.
const DUE_BATCH: usize = 256;

/// Hands the trigger's retries to its delivery loop as they come due, until the dispatcher's
/// `Tasks` stop it. Ordered triggers retry in place; their retry records come only from
/// redrives.
pub(super) async fn scan_due(s: Arc<EmbeddedSource>) {
    let prefix = s.retries.prefix.clone();
    let end = records::prefix_end(&prefix);
    loop {
        let due_end = records::retry_key(&prefix, records::now_ms() + 1, 0);
        let mut handed_out = 0;
        if lock(&s.retries.due).len() < DUE_BATCH {
            let found = scan(
                &s.log,
                Table::Retries,
                prefix.clone(),
                due_end.clone(),
                DUE_BATCH,
            )
            .await
            .unwrap_or_default();
            handed_out = s.hand_out(found).await;
        }
        let next_due = scan(&s.log, Table::Retries, due_end, end.clone(), 1)
            .await
            .ok()
            .and_then(|v| v.first().map(|(k, _)| records::retry_due(prefix.len(), k)));
        let wait = match next_due {
            Some(d) => Duration::from_millis(d.saturating_sub(records::now_ms()).clamp(1, 1000)),
            None => Duration::from_secs(1),
        };
        let wait = if handed_out == 0 && !lock(&s.retries.in_progress).is_empty() {
            wait.max(Duration::from_millis(10))
        } else {
            wait
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = s.retries.wake.notified() => {}
        }
    }
}

impl EmbeddedSource {
    /// Claims the due records `found` that are not claimed yet and queues them as work;
    /// returns how many.
    async fn hand_out(&self, found: Vec<SideRecord>) -> usize {
        let claimed: Vec<SideRecord> = {
            let mut in_progress = lock(&self.retries.in_progress);
            found
                .into_iter()
                .filter(|(key, _)| in_progress.insert(key.clone()))
                .collect()
        };
        let (Some((first, _)), Some((last, _))) = (claimed.first(), claimed.last()) else {
            return 0;
        };
        // The scan may predate a settle that removed a record and then released its claim:
        // only a fresh read, after claiming, says which are still owed.
        let mut to = last.clone();
        to.push(0);
        let fresh: Result<HashSet<Vec<u8>>, LogError> =
            scan(&self.log, Table::Retries, first.clone(), to, 4 * DUE_BATCH)
                .await
                .map(|v| v.into_iter().map(|(k, _)| k).collect());
        let mut handed_out = 0;
        for (key, value) in claimed {
            if !fresh.as_ref().is_ok_and(|f| f.contains(&key)) {
                // Settled meanwhile, or unreadable just now: the next scan looks again.
                lock(&self.retries.in_progress).remove(&key);
                continue;
            }
            match work_of(&value) {
                Some(mut work) => {
                    work.ticket = Ticket::Retry(key);
                    lock(&self.retries.due).push_back(work);
                    handed_out += 1;
                }
                None => self.remove_unreadable(key).await,
            }
        }
        if handed_out > 0 {
            self.wake.notify_one();
        }
        handed_out
    }

    async fn remove_unreadable(&self, key: Vec<u8>) {
        tracing::error!(trigger = %self.trigger.id, "unreadable retry record; removing it");
        let delete = WriteOp::Delete {
            table: Table::Retries,
            key: key.clone(),
        };
        if self.log.write(vec![delete]).await.is_ok() {
            self.retries.removed();
        }
        lock(&self.retries.in_progress).remove(&key);
    }
}

/// The work a retry record stands for (its ticket still to be set), or `None` when it
/// cannot be read.
fn work_of(value: &[u8]) -> Option<Work<Ticket>> {
    let entry: RetryEntry = serde_json::from_slice(value).ok()?;
    let event = entry.event()?;
    Some(Work {
        position: entry.offset,
        event: Arc::new(event),
        attempts: entry.attempts,
        redirect: entry.uri,
        first: false,
        ticket: Ticket::Routed,
    })
}
