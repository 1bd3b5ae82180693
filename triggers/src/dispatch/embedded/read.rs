//! Reading a queued event back from the log. Past its hot part a trigger's queue holds runs of
//! offsets only; when its turn comes the event is read again, and the records after it in the
//! same run are read along (up to [`READ_AHEAD`] records and [`READ_AHEAD_BYTES`]) so the next
//! pops find them without another trip to the store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::log::{LogError, LogRecord};
use switchyard_core::CloudEvent;

use super::EmbeddedSource;
use crate::dispatch::{lock, read_log};

/// Records a trigger reads from the log at a time for a run in the cold part of its queue.
const READ_AHEAD: usize = 64;
/// Bytes of stored events a trigger keeps read ahead (beyond the one it asked for).
const READ_AHEAD_BYTES: usize = 1024 * 1024;

impl EmbeddedSource {
    /// Reads a cold queue entry's event: an event that is gone is skipped (done), one that
    /// cannot be read is put back and tried again after a pause. `None` means "nothing to
    /// deliver for this entry".
    pub(super) async fn read_queued(&self, offset: u64, ahead: usize) -> Option<Arc<CloudEvent>> {
        // Only the delivery loop reads, one entry at a time: the read-ahead is taken out for
        // the read and put back after it.
        let mut read_ahead = std::mem::take(&mut *lock(&self.read_ahead));
        let read = self.load_event(offset, ahead, &mut read_ahead).await;
        *lock(&self.read_ahead) = read_ahead;
        match read {
            Ok(Some(e)) => Some(Arc::new(e)),
            Ok(None) => {
                tracing::error!(trigger = %self.trigger.id, offset, "event no longer in the log; skipped");
                self.done(offset);
                None
            }
            Err(e) => {
                tracing::warn!(trigger = %self.trigger.id, offset, error = %e, "cannot read a queued event; trying again");
                self.requeue(offset);
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
        }
    }

    /// The event at `offset`: `Ok(None)` only when a successful read shows it is gone. When
    /// `ahead` more offsets of the same run follow, the read takes them too into `read_ahead`.
    async fn load_event(
        &self,
        offset: u64,
        ahead: usize,
        read_ahead: &mut VecDeque<LogRecord>,
    ) -> Result<Option<CloudEvent>, LogError> {
        while read_ahead.front().is_some_and(|r| r.offset < offset) {
            read_ahead.pop_front();
        }
        if read_ahead.front().is_none_or(|r| r.offset != offset) {
            let broker = &self.trigger.broker;
            let want = ahead.saturating_add(1).min(READ_AHEAD);
            let records = match read_log(&self.log, broker, offset, want).await {
                // One unreadable record must not hold up its neighbours: read this one alone.
                Err(_) if want > 1 => read_log(&self.log, broker, offset, 1).await?,
                other => other?,
            };
            let mut bytes = 0usize;
            *read_ahead = records
                .into_iter()
                .take_while(|r| {
                    bytes += r.event.len();
                    r.offset == offset || bytes <= READ_AHEAD_BYTES
                })
                .collect();
        }
        let Some(record) = read_ahead.pop_front().filter(|r| r.offset == offset) else {
            read_ahead.clear();
            return Ok(None);
        };
        switchyard_core::store::decode(&record.event)
            .map(Some)
            .map_err(|e| LogError::Storage(e.to_string()))
    }
}
