//! Checkpoints off the writer's path. A checkpoint (redb's durable commit) takes milliseconds;
//! while it runs on a thread of its own, the writer keeps logging group commits in the
//! write-ahead log, answers them and announces their events, and holds their changes until
//! the checkpoint ends, when one transaction applies them to the database. Until then reads of
//! those offsets find nothing yet (never "gone"). spec/storage.md, "Checkpoints", says why.

use std::sync::mpsc::{Receiver, TryRecvError};

use super::super::redo;
use super::super::wal::HEADER_BYTES;
use super::durability::{add_stored, begin_on, set_wal_lsn, store_events, wal_error};
use super::*;

/// A checkpoint whose durable commit runs on its own thread.
pub(super) struct InFlight {
    /// The last log record the checkpoint holds.
    lsn: u64,
    started: Instant,
    /// The cursor commits its transaction carries.
    cursors: Vec<(String, u64)>,
    done: Receiver<Result<(), LogError>>,
}

/// A group commit logged and answered while a checkpoint ran, not yet in the database.
pub(super) struct Held {
    /// Its log record.
    lsn: u64,
    arrival_ms: u64,
    /// Broker, first offset, events.
    appends: Vec<(Arc<str>, u64, Vec<Bytes>)>,
    ops: Vec<WriteOp>,
    /// The side-table writers, answered once the changes are in the database (they read
    /// their own writes back).
    replies: Vec<oneshot::Sender<Result<(), LogError>>>,
}

impl Writer {
    /// Starts a checkpoint: its transaction (the cursors waiting, the log position) is made
    /// here and committed durably on a thread of its own.
    pub(super) fn start_checkpoint(&mut self) -> Result<(), LogError> {
        let db = self.shared.db()?;
        self.checkpointed_at = Instant::now();
        let txn = begin_on(&db, true)?;
        let lsn = self.wal.last_lsn();
        let written = self
            .write_cursors(&txn)
            .and_then(|()| set_wal_lsn(&txn, lsn));
        if let Err(e) = written {
            let _ = txn.abort();
            self.cursors_settled(false);
            return Err(e);
        }
        let cursors = std::mem::take(&mut self.cursors_in_txn);
        let (tx, done) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("switchyard-checkpoint".into())
            .spawn(move || {
                let _ = tx.send(txn.commit().map_err(storage));
            });
        if let Err(e) = spawned {
            // The transaction went with the closure and was dropped: nothing was committed.
            self.cursors_in_txn = cursors;
            self.cursors_settled(false);
            return Err(LogError::Storage(format!(
                "cannot start a checkpoint thread: {e}"
            )));
        }
        self.in_flight = Some(InFlight {
            lsn,
            started: self.checkpointed_at,
            cursors,
            done,
        });
        Ok(())
    }

    /// When the checkpoint in flight has ended (`wait`: waiting for it), settles it and
    /// applies the commits held meanwhile. Does nothing without one.
    pub(super) fn finish_checkpoint(&mut self, wait: bool) {
        let Some(in_flight) = &self.in_flight else {
            return;
        };
        let stopped = || LogError::Storage("the checkpoint thread stopped".into());
        let result = if wait {
            in_flight.done.recv().unwrap_or_else(|_| Err(stopped()))
        } else {
            match in_flight.done.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => Err(stopped()),
            }
        };
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        self.cursors_in_txn = in_flight.cursors;
        self.cursors_settled(result.is_ok());
        match result {
            Ok(()) => {
                metrics::histogram!(crate::metrics::CHECKPOINT_SECONDS)
                    .record(in_flight.started.elapsed().as_secs_f64());
                self.dirty = false;
                self.wal.checkpointed(in_flight.lsn);
                self.apply_held();
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed");
                self.abandon_held(&e);
            }
        }
    }

    /// A group commit while a checkpoint runs: offsets from memory, one log record (durable),
    /// the appends answered and announced, the changes held for [`Self::apply_held`].
    pub(super) fn commit_deferred(
        &mut self,
        batch: &mut Vec<AppendRequest>,
        writes: &mut PendingWrites,
    ) {
        let started = Instant::now();
        let waited: Vec<Duration> = batch
            .iter()
            .map(|r| started.saturating_duration_since(r.enqueued))
            .collect();
        let arrival_ms = self.options.clock.now_ms();
        let mut before: Vec<(Arc<str>, u64)> = Vec::new();
        let logged = self.take_offsets(batch, &mut before).and_then(|ranges| {
            self.log_deferred(batch, &ranges, writes, arrival_ms)
                .map(|lsn| (ranges, lsn))
        });
        let (ranges, lsn) = match logged {
            Ok(done) => done,
            Err(e) => {
                // Nothing was logged: the offsets go back to what they were.
                for (broker, next) in before {
                    self.next.insert(broker, next);
                }
                tracing::error!(error = %e, "commit failed; the batch is refused");
                self.failed(&e);
                refuse(batch, writes, &e);
                return;
            }
        };
        if let Ok(mut unapplied) = self.shared.unapplied.lock() {
            for (req, range) in batch.iter().zip(&ranges) {
                unapplied
                    .entry(Arc::clone(&req.broker))
                    .or_insert(range.start);
            }
        }
        self.shared.deferring.store(true, Ordering::Release);
        let observer = self.shared.observer.lock().ok().and_then(|o| o.clone());
        let events: usize = batch.iter().map(|r| r.events.len()).sum();
        let mut held = Held {
            lsn,
            arrival_ms,
            appends: Vec::with_capacity(batch.len()),
            ops: Vec::new(),
            replies: Vec::with_capacity(writes.len()),
        };
        for (req, range) in batch.drain(..).zip(ranges) {
            let stored: Vec<Bytes> = req.events.into_iter().map(Bytes::from).collect();
            let _ = req.reply.send(Ok(range.clone()));
            if let Some(o) = &observer {
                let _ = o.try_send(Committed {
                    broker: Arc::clone(&req.broker),
                    first: range.start,
                    events: stored.clone(),
                });
            }
            held.ops.extend(req.ops);
            held.appends.push((req.broker, range.start, stored));
        }
        for (ops, reply) in writes.drain(..) {
            held.ops.extend(ops);
            held.replies.push(reply);
        }
        self.held.push(held);
        if events > 0 {
            (self.shared.on_commit)(&CommitReport {
                events,
                took: started.elapsed(),
                waited: &waited,
            });
        }
    }

    /// The offsets of `batch`'s appends, taken from memory (or read once from the file);
    /// `before` gets each broker's next offset as it was.
    fn take_offsets(
        &mut self,
        batch: &[AppendRequest],
        before: &mut Vec<(Arc<str>, u64)>,
    ) -> Result<Vec<Range<u64>>, LogError> {
        let mut ranges = Vec::with_capacity(batch.len());
        for req in batch {
            let start = match self.next.get(&req.broker) {
                Some(n) => *n,
                None => {
                    let db = self.shared.db()?;
                    let txn = db.begin_read().map_err(storage)?;
                    let n = next_offset_read(&txn, &req.broker)?;
                    self.next.insert(Arc::clone(&req.broker), n);
                    n
                }
            };
            let end = start.checked_add(req.events.len() as u64).ok_or_else(|| {
                LogError::Storage(format!(
                    "offsets past the largest there is for {}",
                    req.broker
                ))
            })?;
            if !before.iter().any(|(b, _)| *b == req.broker) {
                before.push((Arc::clone(&req.broker), start));
            }
            self.next.insert(Arc::clone(&req.broker), end);
            ranges.push(start..end);
        }
        Ok(ranges)
    }

    /// Logs a held commit's record durably; returns its LSN.
    fn log_deferred(
        &mut self,
        batch: &[AppendRequest],
        ranges: &[Range<u64>],
        writes: &PendingWrites,
        arrival_ms: u64,
    ) -> Result<u64, LogError> {
        let ops = batch
            .iter()
            .flat_map(|req| &req.ops)
            .chain(writes.iter().flat_map(|(ops, _)| ops));
        let appends: Vec<(&str, u64, &[Vec<u8>])> = batch
            .iter()
            .zip(ranges)
            .map(|(req, range)| (&*req.broker, range.start, req.events.as_slice()))
            .collect();
        self.record.clear();
        self.record.resize(HEADER_BYTES, 0);
        // Cursors wait for the next ordinary commit, which logs them.
        redo::encode(&mut self.record, arrival_ms, &appends, ops, &[]);
        let lsn = self.wal.next_lsn();
        self.wal
            .append(&mut self.record)
            .map_err(|e| wal_error(&e))?;
        Ok(lsn)
    }

    /// Applies the held commits in one transaction (without an fsync: they are in the log).
    fn apply_held(&mut self) {
        let Some(last) = self.held.last().map(|h| h.lsn) else {
            return;
        };
        let applied = self.shared.db().and_then(|db| {
            let txn = begin_on(&db, false)?;
            let written = self.write_held(&txn, last);
            match written {
                Ok(()) => txn.commit().map_err(storage),
                Err(e) => {
                    let _ = txn.abort();
                    Err(e)
                }
            }
        });
        match applied {
            Ok(()) => {
                self.dirty = true;
                self.release_held();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot apply the commits logged during a checkpoint; the database is opened again and the log replayed");
                self.abandon_held(&e);
            }
        }
    }

    fn write_held(&self, txn: &redb::WriteTransaction, last_lsn: u64) -> Result<(), LogError> {
        let mut value = Vec::new();
        for held in &self.held {
            for (broker, first, events) in &held.appends {
                let bytes = store_events(txn, broker, *first, held.arrival_ms, events, &mut value)?;
                add_stored(txn, broker, first + events.len() as u64, bytes)?;
            }
            apply_ops(txn, held.ops.iter())?;
        }
        set_wal_lsn(txn, last_lsn)
    }

    /// The held commits are in the database (or will be, by the replay of the next open):
    /// their side-table writers are answered and reads see them.
    fn release_held(&mut self) {
        for held in self.held.drain(..) {
            for reply in held.replies {
                let _ = reply.send(Ok(()));
            }
        }
        if let Ok(mut unapplied) = self.shared.unapplied.lock() {
            unapplied.clear();
        }
        self.shared.deferring.store(false, Ordering::Release);
    }

    /// After a failed checkpoint or a failed apply: the database is opened again, which
    /// replays the log (the held records with the rest), then writes pause as after any
    /// failed write. Held records were answered and are durable in the log: they are never
    /// taken back.
    fn abandon_held(&mut self, error: &LogError) {
        self.dirty = true;
        if let Ok(mut db) = self.shared.db.write() {
            *db = None;
        }
        if let Err(e) = self.reopen() {
            // The next try opens it, and replays the log then.
            tracing::warn!(error = %e, "cannot open the store again yet; trying again later");
        }
        self.release_held();
        self.failed(error);
    }
}

/// The next offset of `broker` as the file has it (as `Writer::next_offset` finds it).
fn next_offset_read(txn: &redb::ReadTransaction, broker: &str) -> Result<u64, LogError> {
    let name = table_name(broker);
    let stored = match txn.open_table(events_table(&name)) {
        Ok(table) => table.last().map_err(storage)?.map(|(k, _)| k.value() + 1),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(storage(e)),
    };
    let meta = txn.open_table(META).map_err(storage)?;
    let recorded = meta
        .get(format!("next/{broker}").as_str())
        .map_err(storage)?
        .map(|v| v.value());
    Ok(stored.max(recorded).unwrap_or(0))
}
