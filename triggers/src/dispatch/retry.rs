//! A trigger's retry loop: it reads the trigger's retry records that are due (the keys sort by
//! due time), attempts each within the trigger's concurrency bound, and settles it, which
//! removes the record and writes the next one or a dead letter.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_broker::log::{Table, WriteOp};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::outcome::decide;
use super::settle::Job;
use super::trigger::TriggerRuntime;
use super::{lock, scan, unit_random};
use crate::delivery::Subscriber;
use crate::records::{self, RetryEntry};

/// Retry records being attempted, by key, so a later scan does not start them twice.
type InProgress = Arc<Mutex<HashSet<Vec<u8>>>>;

/// The most due records started per scan.
const DUE_BATCH: usize = 256;

impl TriggerRuntime {
    /// A scheduled retry that came due.
    async fn retry(
        self: Arc<Self>,
        key: Vec<u8>,
        value: Vec<u8>,
        in_progress: InProgress,
        _permit: OwnedSemaphorePermit,
    ) {
        self.retry_once(&key, &value).await;
        lock(&in_progress).remove(&key);
    }

    async fn retry_once(self: &Arc<Self>, key: &[u8], value: &[u8]) {
        let entry: Option<RetryEntry> = serde_json::from_slice(value).ok();
        let Some((entry, event)) = entry.and_then(|e| e.event().map(|ev| (e, ev))) else {
            tracing::error!(trigger = %self.id, "unreadable retry record; removing it");
            let delete = WriteOp::Delete {
                table: Table::Retries,
                key: key.to_vec(),
            };
            if self.log.write(vec![delete]).await.is_ok() {
                self.retries.removed();
            }
            return;
        };
        // The scan that found this record may predate another task settling it (and leaving
        // `in_progress`): only a fresh read says whether it is still owed.
        let mut end = key.to_vec();
        end.push(0);
        match scan(&self.log, Table::Retries, key.to_vec(), end, 1).await {
            Ok(found) if found.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(trigger = %self.id, error = %e, "cannot read a retry record; trying later");
                return;
            }
        }
        // A redrive may name another URL than the subscriber's.
        let redirect = entry.uri.clone().map(Subscriber::Http);
        let r = self
            .attempt(redirect.as_ref().unwrap_or(&self.config.subscriber), &event)
            .await;
        let outcome = decide(
            r,
            entry.attempts,
            &self.config.settings,
            records::now_ms(),
            unit_random(),
        );
        let job = Job {
            offset: entry.offset,
            event: &event,
            retry_key: Some(key.to_vec()),
            uri: entry.uri,
        };
        if let Err(e) = self.settle_durably(&job, outcome).await {
            tracing::error!(trigger = %self.id, error = %e, "cannot record a retry's outcome; it will be retried");
        }
    }
}

/// Attempts the trigger's retries as they come due, until the dispatcher's `Tasks` stop it. Ordered
/// triggers retry in place; their retry records come only from redrives.
pub(super) async fn retry_loop(t: Arc<TriggerRuntime>) {
    let in_progress: InProgress = Arc::default();
    let mut retries = JoinSet::new();
    let prefix = t.retries.prefix.clone();
    let end = records::prefix_end(&prefix);
    loop {
        while retries.try_join_next().is_some() {}
        let now = records::now_ms();
        let due_end = records::retry_key(&prefix, now + 1, 0);
        let due = scan(
            &t.log,
            Table::Retries,
            prefix.clone(),
            due_end.clone(),
            DUE_BATCH,
        )
        .await
        .unwrap_or_default();
        let mut started = 0;
        for (key, value) in due {
            if !lock(&in_progress).insert(key.clone()) {
                continue;
            }
            let Ok(permit) = Arc::clone(&t.slots).acquire_owned().await else {
                return;
            };
            started += 1;
            retries.spawn(Arc::clone(&t).retry(key, value, Arc::clone(&in_progress), permit));
        }
        let next_due = scan(&t.log, Table::Retries, due_end, end.clone(), 1)
            .await
            .ok()
            .and_then(|v| v.first().map(|(k, _)| records::retry_due(prefix.len(), k)));
        let wait = match next_due {
            Some(d) => Duration::from_millis(d.saturating_sub(records::now_ms()).clamp(1, 1000)),
            None => Duration::from_secs(1),
        };
        let wait = if started == 0 && !lock(&in_progress).is_empty() {
            wait.max(Duration::from_millis(10))
        } else {
            wait
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = t.retries.wake.notified() => {}
        }
    }
}
