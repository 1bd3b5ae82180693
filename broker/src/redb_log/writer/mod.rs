//! The writer thread: the only code that opens write transactions. It gathers every queued
//! append and side-table write into one transaction (group commit), logs it in the
//! write-ahead log, commits, answers each request, announces the commit, persists cursors,
//! checkpoints, and runs retention in bounded chunks.

mod budget;
mod durability;

use super::wal::Wal;
use super::*;
use budget::{BUDGET_RETENTION, side_bytes_of};
use durability::{add_stored, begin_on, store_events};

/// Refuses the appends of new events in `batch` with `error`, keeping those that may use the
/// free-space reserve (replies).
fn refuse_new_events(batch: &mut Vec<AppendRequest>, error: &LogError) {
    let (keep, refused): (Vec<_>, Vec<_>) =
        std::mem::take(batch).into_iter().partition(|r| r.reserved);
    *batch = keep;
    for req in refused {
        let _ = req.reply.send(Err(error.clone()));
    }
}

/// Answers every request of a batch that was not written with `error`.
fn refuse(batch: &mut Vec<AppendRequest>, writes: &mut PendingWrites, error: &LogError) {
    for req in batch.drain(..) {
        let _ = req.reply.send(Err(error.clone()));
    }
    for (_, reply) in writes.drain(..) {
        let _ = reply.send(Err(error.clone()));
    }
}

/// Applies side-table changes in `txn`, keeping the count of the event copies' bytes
/// ([`SIDE_BYTES_KEY`]) that the store budget adds to the logs'; returns how much that
/// count changed.
fn apply_ops<'a>(
    txn: &redb::WriteTransaction,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> Result<i64, LogError> {
    let mut delta: i64 = 0;
    let size = |key: &[u8], value_len: usize| i64::try_from(key.len() + value_len).unwrap_or(0);
    for op in ops {
        match op {
            WriteOp::Put { table, key, value } => {
                let mut t = txn.open_table(side_table(*table)).map_err(storage)?;
                let old = t
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(storage)?
                    .map(|old| old.value().len());
                if counted(*table) {
                    delta += size(key, value.len()) - old.map_or(0, |len| size(key, len));
                }
            }
            WriteOp::Delete { table, key } => {
                let mut t = txn.open_table(side_table(*table)).map_err(storage)?;
                let old = t
                    .remove(key.as_slice())
                    .map_err(storage)?
                    .map(|old| old.value().len());
                if counted(*table)
                    && let Some(len) = old
                {
                    delta -= size(key, len);
                }
            }
            WriteOp::ForgetCursor { broker, consumer } => {
                let mut t = txn.open_table(CURSORS).map_err(storage)?;
                t.remove(cursor_key(broker, consumer).as_str())
                    .map_err(storage)?;
            }
        }
    }
    if delta != 0 {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let recorded = meta
            .get(SIDE_BYTES_KEY)
            .map_err(storage)?
            .map(|v| v.value());
        let total = match recorded {
            Some(before) => before.saturating_add_signed(delta),
            // A store from before the count: counted once, with this transaction's changes.
            None => side_bytes_of(txn)?,
        };
        meta.insert(SIDE_BYTES_KEY, total).map_err(storage)?;
    }
    Ok(delta)
}

/// The first pause after a failed write before the writer tries a commit again; it doubles
/// up to [`MAX_RETRY_PAUSE`] while the writes keep failing.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two tries while writes fail (`Retry-After` of a 507 says as much).
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// How often the free space is looked at while it is low and nothing is appended.
const SPACE_CHECK_WHILE_LOW: Duration = Duration::from_secs(1);
/// How soon the next retention pass runs after one that stopped at its chunk with more to
/// delete (instead of `retention_interval`): 10,000 deletions every ~100 ms keep up with any
/// ingest rate the writer can take, and appends are committed between the passes.
const RETENTION_CATCH_UP: Duration = Duration::from_millis(100);

/// Each broker's retention policy, as retention goes through them.
type Policies = Vec<(Arc<str>, RetentionPolicy)>;

/// The writer after a failed write: what it answers until the next try, and when that is.
struct Refusing {
    error: LogError,
    retry_at: Instant,
    pause: Duration,
}

/// The writer thread's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    options: RedbOptions,
    /// Next offset per broker, loaded from the table on first use.
    next: HashMap<Arc<str>, u64>,
    /// Cursor commits written into the transaction being built.
    cursors_in_txn: Vec<(String, u64)>,
    /// Set after a write failed: requests are refused without a try until `retry_at`.
    refusing: Option<Refusing>,
    /// Whose file system's free space is watched (`None`: not watched).
    free_space_of: Option<std::path::PathBuf>,
    /// Set while less than `min_free_disk_bytes` is free: appends are refused with it.
    low_space: Option<LogError>,
    /// When the free space was last looked at while low.
    space_checked: Instant,
    /// The event bytes the store holds, all brokers together, when known (read from `meta`
    /// when not; forgotten after a failed write and after retention).
    stored_bytes: Option<u64>,
    /// Set while appends would take the store past `max_store_bytes`: new events are
    /// refused with it.
    over_budget: Option<LogError>,
    /// When the last retention pass ran.
    retained_at: Instant,
    /// Whether the last retention pass left the store past its budget's target: what fills
    /// it is undelivered.
    budget_stuck: bool,
    /// The write-ahead log (written only with fsync on; without, commits are durable only at
    /// checkpoints, but what an earlier run logged is still replayed).
    wal: Wal,
    /// Buffer of the write-ahead log record being made.
    record: Vec<u8>,
    /// Whether anything was committed since the last checkpoint.
    dirty: bool,
    /// When the last checkpoint was made (or tried).
    checkpointed_at: Instant,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        options: RedbOptions,
        free_space_of: Option<std::path::PathBuf>,
        wal: Wal,
    ) -> Self {
        let free_space_of = free_space_of.filter(|_| options.min_free_disk_bytes > 0);
        Writer {
            shared,
            options,
            next: HashMap::new(),
            cursors_in_txn: Vec::new(),
            refusing: None,
            free_space_of,
            low_space: None,
            space_checked: Instant::now(),
            stored_bytes: None,
            over_budget: None,
            retained_at: Instant::now(),
            budget_stuck: false,
            wal,
            record: Vec::new(),
            dirty: false,
            checkpointed_at: Instant::now(),
        }
    }

    pub(super) fn run(mut self, rx: &Receiver<Command>) {
        let mut retention_due = Instant::now() + self.options.retention_interval;
        let mut batch: Vec<AppendRequest> = Vec::new();
        let mut retention_asked: Vec<oneshot::Sender<Result<u64, LogError>>> = Vec::new();
        let mut writes: PendingWrites = Vec::new();
        loop {
            let mut wait = retention_due.saturating_duration_since(Instant::now());
            if let Some(r) = &self.refusing {
                // Wake for the next try even when nothing arrives, so `/readyz` recovers.
                wait = wait.min(r.retry_at.saturating_duration_since(Instant::now()));
            }
            if self.low_space.is_some() {
                wait = wait.min(SPACE_CHECK_WHILE_LOW);
            }
            if self.dirty {
                let due = self.checkpointed_at + self.options.checkpoint_interval;
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            let mut bytes = 0usize;
            let mut take = |command: Command, bytes: &mut usize| match command {
                Command::Append(req) => {
                    *bytes += req.events.iter().map(Vec::len).sum::<usize>();
                    batch.push(req);
                }
                Command::Retention(reply) => retention_asked.push(reply),
                Command::Write(ops, reply) => writes.push((ops, reply)),
            };
            let disconnected = match rx.recv_timeout(wait) {
                Ok(first) => {
                    take(first, &mut bytes);
                    while bytes < self.options.max_batch_bytes {
                        match rx.try_recv() {
                            Ok(more) => take(more, &mut bytes),
                            Err(_) => break,
                        }
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if !batch.is_empty() || !writes.is_empty() {
                self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
                self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                match self.may_write() {
                    Ok(()) => {
                        if batch.iter().any(|r| !r.reserved)
                            && let Err(e) = self.check_space(true)
                        {
                            // Only new events: side-table writes (cursors, retries, dead
                            // letters, purges) and replies still go through, so delivery
                            // goes on and can free space.
                            refuse_new_events(&mut batch, &e);
                        }
                        if self.options.max_store_bytes > 0 && batch.iter().any(|r| !r.reserved) {
                            self.check_budget(&mut batch);
                        }
                        if !batch.is_empty() || !writes.is_empty() {
                            self.commit_batch(&mut batch, &mut writes);
                        }
                    }
                    Err(e) => refuse(&mut batch, &mut writes, &e),
                }
                // Past nine tenths of the budget, retention runs soon to delete what has been
                // delivered: every 100 ms while it finds some, every second while what fills
                // the store is undelivered.
                if self.options.max_store_bytes > 0
                    && self.stored_bytes.is_some_and(|b| b > self.budget_target())
                {
                    let gap = if self.budget_stuck {
                        BUDGET_RETENTION.min(self.options.retention_interval)
                    } else {
                        RETENTION_CATCH_UP
                    };
                    retention_due = retention_due.min(self.retained_at + gap);
                }
            } else if self.refusing.is_some() && self.may_write().is_ok() {
                // Nothing to write, but the pause is over: find out whether the store takes
                // writes again (an empty commit), so `/readyz` says so without waiting for one.
                self.commit_batch(&mut batch, &mut writes);
            }
            // While space is low, looked at again every second whatever else is written, so
            // `/readyz` recovers as soon as space is back.
            if self.low_space.is_some() && self.space_checked.elapsed() >= SPACE_CHECK_WHILE_LOW {
                let _ = self.check_space(false);
            }
            if !retention_asked.is_empty() || Instant::now() >= retention_due {
                let result = self.may_write().and_then(|()| {
                    let result = self.retention_pass();
                    if let Err(e) = &result {
                        self.failed(e);
                    }
                    result
                });
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "retention pass failed");
                }
                // A pass that stopped at its chunk left work behind: the next one comes soon,
                // so retention keeps up with any ingest rate while commits go on in between.
                let behind = matches!(result, Ok((_, true)));
                for reply in retention_asked.drain(..) {
                    let _ = reply.send(result.clone().map(|(deleted, _)| deleted));
                }
                self.retained_at = Instant::now();
                retention_due = self.retained_at
                    + if behind {
                        RETENTION_CATCH_UP.min(self.options.retention_interval)
                    } else if self.over_budget.is_some() || self.budget_stuck {
                        BUDGET_RETENTION.min(self.options.retention_interval)
                    } else {
                        self.options.retention_interval
                    };
            }
            if self.checkpoint_due()
                && self.may_write().is_ok()
                && let Err(e) = self.checkpoint()
            {
                tracing::error!(error = %e, "checkpoint failed");
                self.failed(&e);
            }
            if disconnected {
                let open = self.shared.db.read().is_ok_and(|db| db.is_some());
                if !open {
                    let _ = self.reopen();
                }
                self.dirty = true;
                if let Err(e) = self.checkpoint() {
                    tracing::warn!(error = %e, "no checkpoint at shutdown; the write-ahead log keeps what it holds");
                }
                return;
            }
        }
    }

    fn next_offset(
        &mut self,
        txn: &redb::WriteTransaction,
        broker: &Arc<str>,
    ) -> Result<u64, LogError> {
        if let Some(n) = self.next.get(broker) {
            return Ok(*n);
        }
        let name = table_name(broker);
        let table = txn.open_table(events_table(&name)).map_err(storage)?;
        let meta = txn.open_table(META).map_err(storage)?;
        let n = next_offset(&table, &meta, broker)?;
        self.next.insert(Arc::clone(broker), n);
        Ok(n)
    }

    fn write_batch(
        &mut self,
        txn: &redb::WriteTransaction,
        batch: &[AppendRequest],
        arrival_ms: u64,
    ) -> Result<(Vec<Range<u64>>, u64), LogError> {
        let mut ranges = Vec::with_capacity(batch.len());
        let mut stored = 0u64;
        let mut added: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
        let mut value = Vec::new();
        for req in batch {
            let start = self.next_offset(txn, &req.broker)?;
            let bytes = store_events(txn, &req.broker, start, arrival_ms, &req.events, &mut value)?;
            let offset = start + req.events.len() as u64;
            self.next.insert(Arc::clone(&req.broker), offset);
            let entry = added.entry(Arc::clone(&req.broker)).or_default();
            entry.0 = offset;
            entry.1 += bytes;
            stored += bytes;
            ranges.push(start..offset);
        }
        for (broker, (next, bytes)) in added {
            add_stored(txn, &broker, next, bytes)?;
        }
        self.write_cursors(txn)?;
        Ok((ranges, stored))
    }

    /// A write transaction: committed without an fsync (the write-ahead log makes it
    /// durable), or, for a checkpoint, durably with quick repair's allocator state.
    fn begin(&self, durable: bool) -> Result<redb::WriteTransaction, LogError> {
        begin_on(&*self.shared.db()?, durable)
    }

    fn commit_batch(&mut self, batch: &mut Vec<AppendRequest>, writes: &mut PendingWrites) {
        let started = Instant::now();
        let waited: Vec<Duration> = batch
            .iter()
            .map(|r| started.saturating_duration_since(r.enqueued))
            .collect();
        let arrival_ms = self.options.clock.now_ms();
        let result = self.begin(false).and_then(|txn| {
            let ranges = self.write_batch(&txn, batch, arrival_ms).and_then(|(r, stored)| {
                let appended = batch.iter().flat_map(|req| &req.ops);
                let copies =
                    apply_ops(&txn, appended.chain(writes.iter().flat_map(|(ops, _)| ops)))?;
                let logged = self.log_commit(&txn, batch, &r, writes, arrival_ms)?;
                Ok((r, (stored, copies), logged))
            });
            match ranges {
                Ok((r, stored, logged)) => txn.commit().map_err(storage).map(|()| (r, stored)).inspect_err(|_| {
                    // Refused, so not stored: the record is taken back before anything can
                    // replay it (the reopen that follows does).
                    if logged && let Err(e) = self.wal.retract_last() {
                        tracing::error!(error = %e, "cannot take back the log record of a failed commit; if it is replayed, a refused request is stored");
                    }
                }),
                Err(e) => {
                    let _ = txn.abort();
                    Err(e)
                }
            }
        });
        self.dirty = true;
        self.cursors_settled(result.is_ok());
        let events: usize = batch.iter().map(|r| r.events.len()).sum();
        match result {
            Ok((ranges, (stored, copies))) => {
                // Kept only under a budget: the events' bytes and the change in the retries'
                // and dead letters'.
                if let Some(total) = &mut self.stored_bytes {
                    *total = total.saturating_add(stored).saturating_add_signed(copies);
                }
                self.recovered();
                let took = started.elapsed();
                let observer = self.shared.observer.lock().ok().and_then(|o| o.clone());
                for (req, range) in batch.drain(..).zip(ranges) {
                    let _ = req.reply.send(Ok(range.clone()));
                    if let Some(o) = &observer {
                        let _ = o.try_send(Committed {
                            broker: req.broker,
                            first: range.start,
                            events: req.events.into_iter().map(Bytes::from).collect(),
                        });
                    }
                }
                for (_, reply) in writes.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                // Reported after the answers went out, so metrics never delay them.
                if events > 0 {
                    (self.shared.on_commit)(&CommitReport {
                        events,
                        took,
                        waited: &waited,
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events, "commit failed; the batch is refused");
                // Said (to `/readyz`) before the answers go out.
                self.failed(&e);
                refuse(batch, writes, &e);
                // A record whose write or fdatasync failed may be whole in the page cache:
                // erased now that the refusals are out (not after a restart's replay), so
                // that not even a crash before the next record lets it be stored.
                if let Err(e) = self.wal.erase_failed() {
                    tracing::warn!(error = %e, "cannot erase a refused record of the write-ahead log yet; it is erased before the next one");
                }
            }
        }
    }

    /// Whether a write may be tried now: after a failure, not before the pause is over, and
    /// only with the database open again (reopened here when it is not).
    fn may_write(&mut self) -> Result<(), LogError> {
        let Some(r) = &self.refusing else {
            return Ok(());
        };
        let original = r.error.clone();
        if Instant::now() < r.retry_at {
            return Err(original);
        }
        let open = self.shared.db.read().is_ok_and(|db| db.is_some());
        if !open && let Err(e) = self.reopen() {
            // Still refused for what made the writer refuse (a full disk stays a 507).
            tracing::warn!(error = %e, "cannot open the store again yet; trying again later");
            self.failed(&original);
            return Err(original);
        }
        Ok(())
    }

    /// Whether the file system keeps `min_free_disk_bytes` free; looked at before every
    /// batch with appends (one `statvfs`), and every [`SPACE_CHECK_WHILE_LOW`] while low, so
    /// `/readyz` recovers without traffic.
    fn check_space(&mut self, appending: bool) -> Result<(), LogError> {
        let Some(dir) = &self.free_space_of else {
            return Ok(());
        };
        if !appending && self.low_space.is_none() {
            return Ok(());
        }
        self.space_checked = Instant::now();
        let free = match rustix::fs::statvfs(dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            // Not knowing is not a reason to refuse: the commit itself will tell.
            Err(_) => u64::MAX,
        };
        let min = self.options.min_free_disk_bytes;
        if free >= min {
            if self.low_space.take().is_some() {
                tracing::info!(
                    free_bytes = free,
                    "the store's disk has space again; appends are taken"
                );
                self.publish();
            }
            return Ok(());
        }
        let error = LogError::DiskFull(format!(
            "{free} bytes free in {}, less than the {min} kept free (--min-free-disk-bytes)",
            dir.display()
        ));
        if self.low_space.is_none() {
            tracing::error!(error = %error, "appends are refused until space is freed");
        }
        self.low_space = Some(error.clone());
        self.publish();
        Err(error)
    }

    /// Tells `/readyz` why writes are refused, or that they are not.
    fn publish(&self) {
        let why = self
            .refusing
            .as_ref()
            .map(|r| r.error.clone())
            .or_else(|| self.low_space.clone())
            .or_else(|| self.over_budget.clone());
        if let Ok(mut r) = self.shared.refusing.lock() {
            *r = why;
        }
    }

    /// After a write failed: refuse writes for a pause (doubling while they keep failing), say
    /// so to `/readyz`, and reopen the database when redb no longer takes transactions on the
    /// handle (any I/O error in a commit does that, until the file is opened again).
    fn failed(&mut self, error: &LogError) {
        // The in-memory offsets and sizes may have moved past what was committed.
        self.next.clear();
        self.stored_bytes = None;
        let pause = self
            .refusing
            .as_ref()
            .map_or(FIRST_RETRY_PAUSE, |r| (r.pause * 2).min(MAX_RETRY_PAUSE));
        if self.refusing.is_none() {
            tracing::error!(error = %error, "the store refuses writes until a commit succeeds again");
        }
        // A handle an earlier failure poisoned answers "previous I/O error" to every try:
        // the earlier failure (a full disk, with its 507) stays what `/readyz` and appends say.
        let error = match &self.refusing {
            Some(earlier) if matches!(error, LogError::Storage(t) if t == PREVIOUS_IO) => {
                earlier.error.clone()
            }
            _ => error.clone(),
        };
        self.refusing = Some(Refusing {
            error,
            retry_at: Instant::now() + pause,
            pause,
        });
        self.publish();
        // redb refuses transactions on the handle after an I/O error in a commit (PreviousIo),
        // and after any failed commit may ask to be reopened to repair its allocator state:
        // any refusal but "busy" means open it again. `try_` never waits.
        let unusable = match self.shared.db() {
            Ok(db) => match db.try_begin_write() {
                Ok(_) | Err(redb::TransactionError::WouldBlock) => false,
                Err(_) => true,
            },
            Err(_) => false,
        };
        if unusable {
            // Opened again at once, so reads (delivery of what is stored) go on. Opening
            // repairs the file, which writes: on a disk with no byte left it fails, and so
            // does opening while a reader still holds the old handle; then the next try
            // opens it (`may_write`), and reads wait until then.
            if let Ok(mut db) = self.shared.db.write() {
                *db = None;
            }
            if let Err(e) = self.reopen() {
                tracing::warn!(error = %e, "cannot open the store again yet; trying again later");
            }
        }
    }

    /// Opens the database file again after a failed write closed it, and replays the
    /// write-ahead log into it (the file went back to its last checkpoint).
    fn reopen(&mut self) -> Result<(), LogError> {
        let db = (self.shared.opener)()?;
        self.recover_into(&db)?;
        if let Ok(mut slot) = self.shared.db.write() {
            *slot = Some(Arc::new(db));
        }
        tracing::info!("the store's database was opened again after a failed write");
        Ok(())
    }

    /// After a commit succeeded: writes are taken again.
    fn recovered(&mut self) {
        if self.refusing.take().is_some() {
            tracing::info!("the store takes writes again");
            self.publish();
        }
    }

    /// Writes the pending cursor commits into `txn`. They stay pending until
    /// [`Self::cursors_settled`] learns the transaction committed, so a failed commit loses none.
    fn write_cursors(&mut self, txn: &redb::WriteTransaction) -> Result<(), LogError> {
        self.cursors_in_txn.clear();
        let pending: Vec<(String, u64)> = match self.shared.pending_cursors.lock() {
            Ok(p) => p.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => return Err(LogError::Storage("cursor map poisoned".into())),
        };
        if pending.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(CURSORS).map_err(storage)?;
        for (key, offset) in &pending {
            table.insert(key.as_str(), *offset).map_err(storage)?;
        }
        self.cursors_in_txn = pending;
        Ok(())
    }

    /// After a transaction: when it committed, drop the cursor commits it carried from the
    /// pending map (unless a newer position arrived meanwhile); when it failed, keep them.
    fn cursors_settled(&mut self, committed: bool) {
        let written = std::mem::take(&mut self.cursors_in_txn);
        if !committed || written.is_empty() {
            return;
        }
        if let Ok(mut p) = self.shared.pending_cursors.lock() {
            for (key, offset) in written {
                if p.get(&key) == Some(&offset) {
                    p.remove(&key);
                }
            }
        }
    }

    /// Deletes, per broker, up to `retention_chunk` of the oldest events that the policy lets
    /// go and that every consumer has committed (and audit entries past their age). Returns
    /// how many events it deleted, and whether it stopped at a chunk with more to delete.
    fn retention_pass(&mut self) -> Result<(u64, bool), LogError> {
        let policies: Policies = match self.shared.retention.lock() {
            Ok(r) => r.iter().map(|(k, v)| (Arc::clone(k), *v)).collect(),
            Err(_) => return Err(LogError::Storage("retention map poisoned".into())),
        };
        let txn = self.begin(false)?;
        self.dirty = true;
        self.write_cursors(&txn)?;
        let now = self.options.clock.now_ms();
        let mut total = 0u64;
        let mut behind = false;
        // Past nine tenths of the store budget, delivered events of any broker go too,
        // oldest first broker by broker, brokers no longer configured included.
        let (policies, mut excess) = self.with_budget(&txn, policies)?;
        for (broker, policy) in policies {
            if policy.max_age.is_none() && policy.max_bytes.is_none() && excess == 0 {
                continue;
            }
            let min_cursor = {
                let cursors = txn.open_table(CURSORS).map_err(storage)?;
                let lo = format!("{broker}#");
                let hi = format!("{broker}$");
                let mut min: Option<u64> = None;
                for item in cursors.range(lo.as_str()..hi.as_str()).map_err(storage)? {
                    let (_, v) = item.map_err(storage)?;
                    min = Some(min.map_or(v.value(), |m| m.min(v.value())));
                }
                min
            };
            let name = table_name(&broker);
            let mut table = txn.open_table(events_table(&name)).map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            let key = bytes_key(&broker);
            let mut bytes = meta
                .get(key.as_str())
                .map_err(storage)?
                .map_or(0, |v| v.value());
            let cutoff = policy
                .max_age
                .map(|a| now.saturating_sub(u64::try_from(a.as_millis()).unwrap_or(u64::MAX)));
            let mut deleted = 0usize;
            while deleted < self.options.retention_chunk {
                let Some((offset, arrival, len)) = table.first().map_err(storage)?.map(|(k, v)| {
                    let value = v.value();
                    let mut ms = [0u8; 8];
                    if let Some(prefix) = value.get(..8) {
                        ms.copy_from_slice(prefix);
                    }
                    (
                        k.value(),
                        u64::from_le_bytes(ms),
                        value.len().saturating_sub(8) as u64,
                    )
                }) else {
                    break;
                };
                if min_cursor.is_some_and(|c| offset >= c) {
                    break;
                }
                let too_old = cutoff.is_some_and(|c| arrival < c);
                let too_big = policy.max_bytes.is_some_and(|m| bytes > m) || excess > 0;
                if !too_old && !too_big {
                    break;
                }
                table.remove(offset).map_err(storage)?;
                bytes = bytes.saturating_sub(len);
                excess = excess.saturating_sub(len);
                deleted += 1;
            }
            behind |= deleted == self.options.retention_chunk;
            if deleted > 0 {
                total += deleted as u64;
                meta.insert(key.as_str(), bytes).map_err(storage)?;
                tracing::debug!(broker = %broker, deleted, "retention deleted events");
            }
        }
        if let Some(max_age) = self.options.audit_max_age {
            let cutoff = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
            let pruned = prune_audit(&txn, cutoff, self.options.retention_chunk)?;
            behind |= pruned == self.options.retention_chunk;
            if pruned > 0 {
                tracing::debug!(pruned, "retention deleted old audit entries");
            }
        }
        let committed = txn.commit().map_err(storage);
        self.cursors_settled(committed.is_ok());
        self.stored_bytes = None;
        committed?;
        self.budget_stuck = excess > 0;
        self.budget_freed();
        Ok((total, behind))
    }
}

/// Deletes up to `max` audit entries older than `cutoff_ms`, oldest first in each namespace
/// (a namespace's keys are in time order, so each is left at its first entry to keep).
fn prune_audit(
    txn: &redb::WriteTransaction,
    cutoff_ms: u64,
    max: usize,
) -> Result<usize, LogError> {
    let mut table = txn.open_table(AUDIT).map_err(storage)?;
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    while doomed.len() < max {
        let key = match table.range(from.as_slice()..).map_err(storage)?.next() {
            Some(item) => item.map_err(storage)?.0.value().to_vec(),
            None => break,
        };
        match crate::audit::key_time(&key) {
            Some((_, millis)) if millis < cutoff_ms => {
                from = key.clone();
                from.push(0);
                doomed.push(key);
            }
            // Young enough: the rest of this namespace is too; on to the next one.
            Some((prefix, _)) => {
                from = key[..prefix].to_vec();
                if let Some(zero) = from.last_mut() {
                    *zero = 1;
                }
            }
            None => {
                from = key;
                from.push(0);
            }
        }
    }
    for key in &doomed {
        table.remove(key.as_slice()).map_err(storage)?;
    }
    Ok(doomed.len())
}
