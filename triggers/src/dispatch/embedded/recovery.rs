//! What the dispatcher does at start, before routing: it forgets the cursors of triggers that
//! are gone (they would hold retention back), turns their retries into dead letters, finds
//! the retries each trigger still has, and sends again the dead letters a dead-letter sink
//! had not taken before the last stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use switchyard_broker::log::{EventLog, LogError, Table, WriteOp, blocking};

use crate::dispatch::scan;

use super::EmbeddedSource;
use super::dead_letter::orphaned_retries_to_dead_letters;
use crate::records;

/// How many retry records a trigger has, and the offsets at or past `start` they cover, read
/// in chunks and parsing only the offsets (the records also carry event copies).
pub(super) fn retry_offsets(
    log: &dyn EventLog,
    prefix: &[u8],
    start: u64,
) -> Result<(usize, HashSet<u64>), LogError> {
    #[derive(serde::Deserialize)]
    struct OffsetOnly {
        offset: u64,
    }
    const CHUNK: usize = 1000;
    let end = records::prefix_end(prefix);
    let mut from = prefix.to_vec();
    let (mut count, mut skip) = (0, HashSet::new());
    loop {
        let chunk = log.scan(Table::Retries, &from, &end, CHUNK)?;
        let n = chunk.len();
        count += n;
        for (key, value) in chunk {
            if let Ok(e) = serde_json::from_slice::<OffsetOnly>(&value)
                && e.offset >= start
            {
                skip.insert(e.offset);
            }
            from = key;
            from.push(0);
        }
        if n < CHUNK {
            return Ok((count, skip));
        }
    }
}

/// Cleans up after triggers that were removed from the configuration of `broker`, whose
/// configured triggers are `triggers`.
pub(super) async fn forget_removed_triggers(
    log: &Arc<dyn EventLog>,
    broker: &str,
    triggers: &[Arc<EmbeddedSource>],
) -> Result<(), LogError> {
    let known: HashSet<&str> = triggers.iter().map(|t| t.consumer.as_str()).collect();
    let id = broker.to_owned();
    let stale: Vec<WriteOp> = blocking(log, move |log| log.consumers(&id))
        .await?
        .into_iter()
        .filter(|(c, _)| records::is_trigger_consumer(c) && !known.contains(c.as_str()))
        .map(|(consumer, _)| WriteOp::ForgetCursor {
            broker: broker.to_owned(),
            consumer,
        })
        .collect();
    if !stale.is_empty() {
        log.write(stale).await?;
    }
    let names: HashSet<&str> = triggers.iter().map(|t| t.trigger.id.name()).collect();
    orphaned_retries_to_dead_letters(log, broker, &names).await
}

/// Sends again, in the background, the dead letters of `broker` that its triggers' dead-letter
/// sinks had not taken before the last stop: each such trigger's pump is woken, and reads its
/// markers from the store. Markers whose trigger or sink is gone are removed (those of dead
/// letters redriven or purged meanwhile go when their pump reaches them). The markers are read
/// in chunks, so a long backlog is never in memory at once.
pub(super) async fn resend_to_dead_letter_sinks(
    log: &Arc<dyn EventLog>,
    broker: &str,
    triggers: &[Arc<EmbeddedSource>],
) -> Result<(), LogError> {
    const CHUNK: usize = 500;
    let by_name: HashMap<&[u8], &Arc<EmbeddedSource>> = triggers
        .iter()
        .filter(|t| t.trigger.config.dead_letter_sink.is_some())
        .map(|t| (t.trigger.id.name().as_bytes(), t))
        .collect();
    let prefix = records::dls_pending_prefix(broker);
    let end = records::prefix_end(&prefix);
    let prefix_len = prefix.len();
    let mut cursor = prefix;
    let mut owing = HashSet::new();
    loop {
        let markers = scan(log, Table::DeadLetters, cursor.clone(), end.clone(), CHUNK).await?;
        let n = markers.len();
        let mut gone = Vec::new();
        for (marker, trigger) in markers {
            cursor.clone_from(&marker);
            cursor.push(0);
            // The pumps read markers in id order: ids of this run must come after these.
            if let Some(id) = marker.get(prefix_len..).and_then(|b| b.try_into().ok()) {
                records::ids_after(u64::from_be_bytes(id));
            }
            match by_name.get(trigger.as_slice()) {
                Some(t) => {
                    owing.insert(t.trigger.id.name());
                }
                None => gone.push(WriteOp::Delete {
                    table: Table::DeadLetters,
                    key: marker,
                }),
            }
        }
        if !gone.is_empty() {
            log.write(gone).await?;
        }
        if n < CHUNK {
            break;
        }
    }
    for t in triggers {
        if owing.contains(t.trigger.id.name()) {
            t.wake_dead_letter_pump();
        }
    }
    Ok(())
}
