//! How the writer makes what it commits durable: a write-ahead log record per commit
//! (`log_commit`), checkpoints (redb's durable commits), and the replay of the log into a
//! freshly opened file (`recover`). `spec/storage.md` ("Group commit") says why and how.

use super::super::redo::{self, Redo};
use super::super::wal::HEADER_BYTES;
use super::*;

/// A write-ahead log failure as the log reports it (a full disk as [`LogError::DiskFull`]).
fn wal_error(e: &std::io::Error) -> LogError {
    let text = format!("cannot write the write-ahead log: {e}");
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            LogError::DiskFull(text)
        }
        _ => LogError::Storage(text),
    }
}

/// Stores `events` of `broker` at offsets from `first` with their arrival time; returns their
/// bytes. `value` is scratch space.
pub(super) fn store_events(
    txn: &redb::WriteTransaction,
    broker: &str,
    first: u64,
    arrival_ms: u64,
    events: &[Vec<u8>],
    value: &mut Vec<u8>,
) -> Result<u64, LogError> {
    let name = table_name(broker);
    let mut table = txn.open_table(events_table(&name)).map_err(storage)?;
    if first.checked_add(events.len() as u64).is_none() {
        return Err(LogError::Storage(format!(
            "offsets past the largest there is for {broker}"
        )));
    }
    let arrival = arrival_ms.to_le_bytes();
    let mut bytes = 0u64;
    for (offset, event) in (first..).zip(events) {
        value.clear();
        value.extend_from_slice(&arrival);
        value.extend_from_slice(event);
        table.insert(offset, value.as_slice()).map_err(storage)?;
        bytes += event.len() as u64;
    }
    Ok(bytes)
}

/// Counts `bytes` more stored for `broker` and moves its next offset to at least `next`.
pub(super) fn add_stored(
    txn: &redb::WriteTransaction,
    broker: &str,
    next: u64,
    bytes: u64,
) -> Result<(), LogError> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    let key = bytes_key(broker);
    let old = meta
        .get(key.as_str())
        .map_err(storage)?
        .map_or(0, |v| v.value());
    meta.insert(key.as_str(), old + bytes).map_err(storage)?;
    let next_key = next_key(broker);
    let recorded = meta
        .get(next_key.as_str())
        .map_err(storage)?
        .map_or(0, |v| v.value());
    meta.insert(next_key.as_str(), next.max(recorded))
        .map_err(storage)?;
    Ok(())
}

fn write_cursor_values(
    txn: &redb::WriteTransaction,
    cursors: &[(String, u64)],
) -> Result<(), LogError> {
    if cursors.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(CURSORS).map_err(storage)?;
    for (key, offset) in cursors {
        table.insert(key.as_str(), *offset).map_err(storage)?;
    }
    Ok(())
}

fn set_wal_lsn(txn: &redb::WriteTransaction, lsn: u64) -> Result<(), LogError> {
    let mut meta = txn.open_table(META).map_err(storage)?;
    meta.insert(WAL_LSN_KEY, lsn).map_err(storage)?;
    Ok(())
}

/// Makes the changes of one write-ahead log record again, in the order the writer made them.
fn apply_redo(txn: &redb::WriteTransaction, redo: &Redo, lsn: u64) -> Result<(), LogError> {
    let mut value = Vec::new();
    for a in &redo.appends {
        let bytes = store_events(
            txn,
            &a.broker,
            a.first,
            redo.arrival_ms,
            &a.events,
            &mut value,
        )?;
        add_stored(txn, &a.broker, a.first + a.events.len() as u64, bytes)?;
    }
    write_cursor_values(txn, &redo.cursors)?;
    apply_ops(txn, redo.ops.iter())?;
    set_wal_lsn(txn, lsn)
}

/// A write transaction on `db`: see [`Writer::begin`].
pub(super) fn begin_on(db: &Database, durable: bool) -> Result<redb::WriteTransaction, LogError> {
    let mut txn = db.begin_write().map_err(storage)?;
    if durable {
        txn.set_quick_repair(true);
    } else {
        txn.set_durability(Durability::None).map_err(storage)?;
    }
    Ok(txn)
}

impl Writer {
    /// Applies the write-ahead log's records past the file's last checkpoint to the open
    /// database (at open, and after the file was opened again), then tries a checkpoint. The
    /// new handle is not published before this is done, so readers never see the file
    /// without what it already answered for.
    pub(in crate::redb_log) fn recover(&mut self) -> Result<(), LogError> {
        let db = self.shared.db()?;
        self.recover_into(&db)
    }

    pub(super) fn recover_into(&mut self, db: &Database) -> Result<(), LogError> {
        let wal = &mut self.wal;
        let started = Instant::now();
        let checkpointed = {
            let txn = db.begin_read().map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            meta.get(WAL_LSN_KEY)
                .map_err(storage)?
                .map_or(0, |v| v.value())
        };
        // A record whose fdatasync had not returned when the process was killed is whole in
        // the page cache: made durable before it is applied, so that what the replay makes
        // readable is on disk. A refused record still waiting to be erased is erased first,
        // so that the sync cannot make it durable.
        wal.erase_failed()
            .and_then(|()| wal.sync_segments())
            .map_err(|e| LogError::Storage(format!("cannot sync the write-ahead log: {e}")))?;
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        let dir = wal.dir().to_path_buf();
        let replayed = wal.replay(checkpointed, |lsn, payload| {
            let redo = redo::decode(payload).map_err(|e| unreplayable(&dir, lsn, &e))?;
            apply_redo(&txn, &redo, lsn)
        });
        let replayed = match replayed {
            Ok(n) => n,
            Err(e) => {
                let _ = txn.abort();
                return Err(e);
            }
        };
        txn.commit().map_err(storage)?;
        self.next.clear();
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                after_lsn = checkpointed,
                took_ms = started.elapsed().as_millis() as u64,
                "replayed the write-ahead log past the last checkpoint"
            );
        }
        // The file holds it all now, but not yet durably.
        self.dirty = true;
        if let Err(e) = self.checkpoint_into(db) {
            tracing::warn!(error = %e, "no checkpoint after the replay; the log keeps its records");
        }
        Ok(())
    }

    /// Logs the changes of the transaction being built in the write-ahead log (durably) and
    /// records its LSN in the transaction; says whether it wrote a record. Nothing to log (no
    /// events, no changes, no cursors) writes nothing, and nor does a log without fsync
    /// (`--no-fsync`: commits are durable at checkpoints only).
    pub(super) fn log_commit(
        &mut self,
        txn: &redb::WriteTransaction,
        batch: &[AppendRequest],
        ranges: &[Range<u64>],
        writes: &PendingWrites,
        arrival_ms: u64,
    ) -> Result<bool, LogError> {
        if !self.options.fsync {
            return Ok(false);
        }
        let ops = batch
            .iter()
            .flat_map(|req| &req.ops)
            .chain(writes.iter().flat_map(|(ops, _)| ops));
        if batch.is_empty() && ops.clone().next().is_none() && self.cursors_in_txn.is_empty() {
            return Ok(false);
        }
        let appends: Vec<(&str, u64, &[Vec<u8>])> = batch
            .iter()
            .zip(ranges)
            .map(|(req, range)| (&*req.broker, range.start, req.events.as_slice()))
            .collect();
        self.record.clear();
        self.record.resize(HEADER_BYTES, 0);
        redo::encode(
            &mut self.record,
            arrival_ms,
            &appends,
            ops,
            &self.cursors_in_txn,
        );
        set_wal_lsn(txn, self.wal.next_lsn())?;
        self.wal
            .append(&mut self.record)
            .map_err(|e| wal_error(&e))?;
        Ok(true)
    }

    /// Whether a checkpoint is due: something was committed since the last one (or cursor
    /// positions wait), and the interval has passed or the log holds a segment's worth.
    pub(super) fn checkpoint_due(&self) -> bool {
        let pending_cursors = self
            .shared
            .pending_cursors
            .lock()
            .is_ok_and(|p| !p.is_empty());
        if !self.dirty && !pending_cursors {
            return false;
        }
        self.checkpointed_at.elapsed() >= self.options.checkpoint_interval
            || self.wal.since_checkpoint_bytes() >= self.options.wal_segment_bytes
    }

    /// Makes the file durable with everything committed so far (and the cursors waiting),
    /// then lets the write-ahead log use its segments again.
    pub(super) fn checkpoint(&mut self) -> Result<(), LogError> {
        let db = self.shared.db()?;
        self.checkpoint_into(&db)
    }

    pub(super) fn checkpoint_into(&mut self, db: &Database) -> Result<(), LogError> {
        self.checkpointed_at = Instant::now();
        let txn = begin_on(db, true)?;
        let lsn = self.wal.last_lsn();
        let written = self
            .write_cursors(&txn)
            .and_then(|()| set_wal_lsn(&txn, lsn));
        if let Err(e) = written {
            let _ = txn.abort();
            self.cursors_settled(false);
            return Err(e);
        }
        let result = txn.commit().map_err(storage);
        self.cursors_settled(result.is_ok());
        result?;
        metrics::histogram!(crate::metrics::CHECKPOINT_SECONDS)
            .record(self.checkpointed_at.elapsed().as_secs_f64());
        self.dirty = false;
        self.wal.checkpointed(lsn);
        Ok(())
    }
}
