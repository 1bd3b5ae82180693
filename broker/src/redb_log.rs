//! The embedded event log on redb, with group commit.
//!
//! One writer thread owns every write transaction. Append requests queue up in a bounded
//! channel; the writer takes everything queued (up to a byte cap), writes it in one
//! transaction, commits (one fsync), and only then answers each request. Under light load a
//! batch is one request; under heavy load batches grow by themselves, which is what makes
//! durable ingest fast. The layout is described in `spec/storage.md`.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::log::{
    AppendFuture, BrokerId, Committed, EventLog, LogError, LogRecord, LogStats, RetentionPolicy,
    SideRecord, Table, WriteFuture, WriteOp,
};

/// Side-table changes waiting for a commit, each with whom to tell.
type PendingWrites = Vec<(Vec<WriteOp>, oneshot::Sender<Result<(), LogError>>)>;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const CURSORS: TableDefinition<'_, &str, u64> = TableDefinition::new("cursors");
const RETRIES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("retries");
const DEADLETTERS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("deadletters");
const EVENTTYPES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("eventtypes");
const SOURCESTATE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("sourcestate");

fn side_table(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match table {
        Table::Retries => RETRIES,
        Table::DeadLetters => DEADLETTERS,
        Table::EventTypes => EVENTTYPES,
        Table::SourceState => SOURCESTATE,
    }
}

fn events_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

fn table_name(broker: &BrokerId) -> String {
    format!("events/{broker}")
}

fn bytes_key(broker: &BrokerId) -> String {
    format!("bytes/{broker}")
}

fn cursor_key(broker: &BrokerId, consumer: &str) -> String {
    format!("{broker}#{consumer}")
}

fn storage<E: std::fmt::Display>(e: E) -> LogError {
    LogError::Storage(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall clock the log stamps arrival times with and judges retention by, in milliseconds
/// since the Unix epoch. Tests inject their own.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(now_ms))
    }

    fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// redb's page cache, in bytes.
    pub cache_size_bytes: usize,
    /// fsync every commit (the default). Off only for benchmarks: events that got a 202 can
    /// then be lost in a crash.
    pub fsync: bool,
    /// Append requests that may wait for the writer before ingress answers 503.
    pub queue_capacity: usize,
    /// The most event bytes one commit gathers.
    pub max_batch_bytes: usize,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// The most events one retention pass deletes per broker (so ingest is never held up).
    pub retention_chunk: usize,
    /// Source of arrival times and of "now" for retention.
    pub clock: Clock,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            cache_size_bytes: 64 * 1024 * 1024,
            fsync: true,
            queue_capacity: 4096,
            max_batch_bytes: 4 * 1024 * 1024,
            retention_interval: Duration::from_secs(5),
            retention_chunk: 10_000,
            clock: Clock::system(),
        }
    }
}

struct AppendRequest {
    /// When ingress handed it to the writer.
    enqueued: Instant,
    broker: Arc<str>,
    events: Vec<Vec<u8>>,
    /// Side-table changes committed in the same transaction as the events.
    ops: Vec<WriteOp>,
    reply: oneshot::Sender<Result<Range<u64>, LogError>>,
}

/// What the writer reports after each commit that stored events (for metrics).
#[derive(Debug)]
pub struct CommitReport<'a> {
    /// Events the commit stored.
    pub events: usize,
    /// How long the commit took, fsync included.
    pub took: Duration,
    /// For each append request in the commit, how long it waited for the writer to start it.
    pub waited: &'a [Duration],
}

/// Called by the writer after each commit that stored events.
pub type OnCommit = Box<dyn Fn(&CommitReport<'_>) + Send + Sync>;

/// What the writer thread is asked to do.
enum Command {
    Append(AppendRequest),
    /// Run one retention pass now and say how many events it deleted.
    Retention(oneshot::Sender<Result<u64, LogError>>),
    /// Apply changes to side tables and cursors.
    Write(Vec<WriteOp>, oneshot::Sender<Result<(), LogError>>),
}

/// State shared between the handle and the writer thread.
struct Shared {
    db: Database,
    queued: AtomicUsize,
    /// Cursor commits not yet written, by cursor key.
    pending_cursors: Mutex<HashMap<String, u64>>,
    retention: Mutex<HashMap<Arc<str>, RetentionPolicy>>,
    /// Observer of each commit's size (events), for metrics.
    on_commit: OnCommit,
    /// Where committed events are announced.
    observer: Mutex<Option<tokio::sync::mpsc::Sender<Committed>>>,
}

/// The embedded, durable event log.
pub struct RedbLog {
    shared: Arc<Shared>,
    sender: RwLock<Option<SyncSender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedbLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbLog").finish_non_exhaustive()
    }
}

impl RedbLog {
    /// Opens (or creates) the log in `dir/events.redb` and starts its writer thread. After a
    /// crash, redb's quick repair makes opening fast whatever the file's size.
    pub fn open(
        dir: &Path,
        options: RedbOptions,
        on_commit: OnCommit,
    ) -> Result<RedbLog, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            LogError::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("events.redb");
        let db = Database::builder()
            .set_cache_size(options.cache_size_bytes)
            .set_repair_callback(|_| {})
            .create(&path)
            .map_err(|e| LogError::Storage(format!("cannot open {}: {e}", path.display())))?;
        {
            let mut txn = db.begin_write().map_err(storage)?;
            txn.set_quick_repair(true);
            txn.open_table(META).map_err(storage)?;
            txn.open_table(CURSORS).map_err(storage)?;
            txn.open_table(RETRIES).map_err(storage)?;
            txn.open_table(DEADLETTERS).map_err(storage)?;
            txn.open_table(EVENTTYPES).map_err(storage)?;
            txn.open_table(SOURCESTATE).map_err(storage)?;
            txn.commit().map_err(storage)?;
        }
        let shared = Arc::new(Shared {
            db,
            queued: AtomicUsize::new(0),
            pending_cursors: Mutex::new(HashMap::new()),
            retention: Mutex::new(HashMap::new()),
            on_commit,
            observer: Mutex::new(None),
        });
        let (tx, rx) = sync_channel(options.queue_capacity);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("switchyard-writer".into())
            .spawn(move || Writer::new(writer_shared, options).run(&rx))
            .map_err(|e| LogError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(RedbLog {
            shared,
            sender: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Stops taking appends, lets the writer commit everything already queued, and waits for
    /// it. Appends after this fail with [`LogError::ShuttingDown`].
    pub fn shutdown(&self) {
        if let Ok(mut sender) = self.sender.write() {
            sender.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl RedbLog {
    /// Runs one retention pass now (it also runs on its own every `retention_interval`) and
    /// resolves to the number of events deleted.
    pub async fn run_retention(&self) -> Result<u64, LogError> {
        let (reply, answer) = oneshot::channel();
        {
            let guard = self.sender.read().map_err(|_| LogError::ShuttingDown)?;
            let tx = guard.as_ref().ok_or(LogError::ShuttingDown)?;
            // Blocking send: a retention request must not be refused for a full queue.
            tx.send(Command::Retention(reply))
                .map_err(|_| LogError::ShuttingDown)?;
        }
        answer.await.unwrap_or(Err(LogError::ShuttingDown))
    }
}

impl Drop for RedbLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl EventLog for RedbLog {
    fn append(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        self.append_with(broker, events, Vec::new())
    }

    fn append_with(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
    ) -> AppendFuture {
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            enqueued: Instant::now(),
            broker: Arc::from(broker),
            events,
            ops,
            reply,
        };
        let sent = match self.sender.read() {
            Ok(guard) => match guard.as_ref() {
                Some(tx) => {
                    self.shared.queued.fetch_add(1, Ordering::Relaxed);
                    tx.try_send(Command::Append(request)).map_err(|e| {
                        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                        match e {
                            TrySendError::Full(_) => LogError::Overloaded,
                            TrySendError::Disconnected(_) => LogError::ShuttingDown,
                        }
                    })
                }
                None => Err(LogError::ShuttingDown),
            },
            Err(_) => Err(LogError::ShuttingDown),
        };
        Box::pin(async move {
            sent?;
            answer.await.unwrap_or(Err(LogError::ShuttingDown))
        })
    }

    fn read(&self, broker: &BrokerId, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let name = table_name(broker);
        let table = match txn.open_table(events_table(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
        };
        let mut out = Vec::with_capacity(max.min(1024));
        for item in table.range(from..).map_err(storage)?.take(max) {
            let (k, v) = item.map_err(storage)?;
            let value = v.value();
            let (arrival, event) = value
                .split_at_checked(8)
                .ok_or_else(|| LogError::Storage(format!("record {} is truncated", k.value())))?;
            let mut ms = [0u8; 8];
            ms.copy_from_slice(arrival);
            out.push(LogRecord {
                offset: k.value(),
                arrival_ms: u64::from_le_bytes(ms),
                event: Bytes::copy_from_slice(event),
            });
        }
        Ok(out)
    }

    fn stats(&self, broker: &BrokerId) -> Result<LogStats, LogError> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let name = table_name(broker);
        let table = match txn.open_table(events_table(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(LogStats::default()),
            Err(e) => return Err(storage(e)),
        };
        let next_stored = table.last().map_err(storage)?.map(|(k, _)| k.value() + 1);
        let meta = txn.open_table(META).map_err(storage)?;
        let next_meta = meta
            .get(format!("next/{broker}").as_str())
            .map_err(storage)?
            .map(|v| v.value());
        let next = next_stored.max(next_meta).unwrap_or(0);
        let first = table
            .first()
            .map_err(storage)?
            .map_or(next, |(k, _)| k.value());
        let bytes = meta
            .get(bytes_key(broker).as_str())
            .map_err(storage)?
            .map_or(0, |v| v.value());
        Ok(LogStats { first, next, bytes })
    }

    fn committed(&self, broker: &BrokerId, consumer: &str) -> Result<Option<u64>, LogError> {
        let key = cursor_key(broker, consumer);
        if let Some(v) = self
            .shared
            .pending_cursors
            .lock()
            .ok()
            .and_then(|p| p.get(&key).copied())
        {
            return Ok(Some(v));
        }
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let table = txn.open_table(CURSORS).map_err(storage)?;
        Ok(table.get(key.as_str()).map_err(storage)?.map(|v| v.value()))
    }

    fn commit(&self, broker: &BrokerId, consumer: &str, offset: u64) -> Result<(), LogError> {
        self.shared
            .pending_cursors
            .lock()
            .map_err(|_| LogError::Storage("cursor map poisoned".into()))?
            .insert(cursor_key(broker, consumer), offset);
        Ok(())
    }

    fn set_retention(&self, broker: &BrokerId, policy: RetentionPolicy) -> Result<(), LogError> {
        self.shared
            .retention
            .lock()
            .map_err(|_| LogError::Storage("retention map poisoned".into()))?
            .insert(Arc::from(broker), policy);
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    fn write(&self, ops: Vec<WriteOp>) -> WriteFuture {
        let sender = self.sender.read().ok().and_then(|g| g.clone());
        Box::pin(async move {
            let tx = sender.ok_or(LogError::ShuttingDown)?;
            let (reply, answer) = oneshot::channel();
            let mut command = Command::Write(ops, reply);
            loop {
                match tx.try_send(command) {
                    Ok(()) => break,
                    Err(TrySendError::Full(c)) => {
                        command = c;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(LogError::ShuttingDown),
                }
            }
            drop(tx);
            answer.await.unwrap_or(Err(LogError::ShuttingDown))
        })
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let t = txn.open_table(side_table(table)).map_err(storage)?;
        let mut out = Vec::new();
        for item in t.range(from..to).map_err(storage)?.take(max) {
            let (k, v) = item.map_err(storage)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn consumers(&self, broker: &BrokerId) -> Result<Vec<(String, u64)>, LogError> {
        let prefix = format!("{broker}#");
        let mut found: std::collections::BTreeMap<String, u64> = Default::default();
        {
            let txn = self.shared.db.begin_read().map_err(storage)?;
            let table = txn.open_table(CURSORS).map_err(storage)?;
            let hi = format!("{broker}$");
            for item in table.range(prefix.as_str()..hi.as_str()).map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                found.insert(k.value()[prefix.len()..].to_owned(), v.value());
            }
        }
        if let Ok(pending) = self.shared.pending_cursors.lock() {
            for (k, v) in pending.iter() {
                if let Some(consumer) = k.strip_prefix(&prefix) {
                    found.insert(consumer.to_owned(), *v);
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    fn observe_commits(&self, observer: tokio::sync::mpsc::Sender<Committed>) {
        if let Ok(mut o) = self.shared.observer.lock() {
            *o = Some(observer);
        }
    }
}

fn apply_ops<'a>(
    txn: &redb::WriteTransaction,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> Result<(), LogError> {
    for op in ops {
        match op {
            WriteOp::Put { table, key, value } => {
                let mut t = txn.open_table(side_table(*table)).map_err(storage)?;
                t.insert(key.as_slice(), value.as_slice())
                    .map_err(storage)?;
            }
            WriteOp::Delete { table, key } => {
                let mut t = txn.open_table(side_table(*table)).map_err(storage)?;
                t.remove(key.as_slice()).map_err(storage)?;
            }
            WriteOp::ForgetCursor { broker, consumer } => {
                let mut t = txn.open_table(CURSORS).map_err(storage)?;
                t.remove(cursor_key(broker, consumer).as_str())
                    .map_err(storage)?;
            }
        }
    }
    Ok(())
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    options: RedbOptions,
    /// Next offset per broker, loaded from the table on first use.
    next: HashMap<Arc<str>, u64>,
    /// Cursor commits written into the transaction being built.
    cursors_in_txn: Vec<(String, u64)>,
}

impl Writer {
    fn new(shared: Arc<Shared>, options: RedbOptions) -> Self {
        Writer {
            shared,
            options,
            next: HashMap::new(),
            cursors_in_txn: Vec::new(),
        }
    }

    fn run(mut self, rx: &Receiver<Command>) {
        let mut last_retention = Instant::now();
        let mut batch: Vec<AppendRequest> = Vec::new();
        let mut retention_asked: Vec<oneshot::Sender<Result<u64, LogError>>> = Vec::new();
        let mut writes: PendingWrites = Vec::new();
        loop {
            let wait = self
                .options
                .retention_interval
                .saturating_sub(last_retention.elapsed());
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
                self.commit_batch(&mut batch, &mut writes);
            }
            if !retention_asked.is_empty()
                || last_retention.elapsed() >= self.options.retention_interval
            {
                let result = self.retention_pass();
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "retention pass failed");
                }
                for reply in retention_asked.drain(..) {
                    let _ = reply.send(result.clone());
                }
                last_retention = Instant::now();
            }
            if disconnected {
                if let Err(e) = self.flush_cursors() {
                    tracing::warn!(error = %e, "could not persist cursors at shutdown");
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
        let stored = table.last().map_err(storage)?.map(|(k, _)| k.value() + 1);
        let meta = txn.open_table(META).map_err(storage)?;
        let recorded = meta
            .get(format!("next/{broker}").as_str())
            .map_err(storage)?
            .map(|v| v.value());
        let n = stored.max(recorded).unwrap_or(0);
        self.next.insert(Arc::clone(broker), n);
        Ok(n)
    }

    fn write_batch(
        &mut self,
        txn: &redb::WriteTransaction,
        batch: &[AppendRequest],
    ) -> Result<Vec<Range<u64>>, LogError> {
        let arrival = self.options.clock.now_ms().to_le_bytes();
        let mut ranges = Vec::with_capacity(batch.len());
        let mut added: HashMap<Arc<str>, (u64, u64)> = HashMap::new();
        let mut value = Vec::new();
        for req in batch {
            let start = self.next_offset(txn, &req.broker)?;
            let name = table_name(&req.broker);
            let mut table = txn.open_table(events_table(&name)).map_err(storage)?;
            let mut offset = start;
            let mut bytes = 0u64;
            for event in &req.events {
                value.clear();
                value.extend_from_slice(&arrival);
                value.extend_from_slice(event);
                table.insert(offset, value.as_slice()).map_err(storage)?;
                bytes += event.len() as u64;
                offset += 1;
            }
            self.next.insert(Arc::clone(&req.broker), offset);
            let entry = added.entry(Arc::clone(&req.broker)).or_default();
            entry.0 = offset;
            entry.1 += bytes;
            ranges.push(start..offset);
        }
        let mut meta = txn.open_table(META).map_err(storage)?;
        for (broker, (next, bytes)) in added {
            let key = bytes_key(&broker);
            let old = meta
                .get(key.as_str())
                .map_err(storage)?
                .map_or(0, |v| v.value());
            meta.insert(key.as_str(), old + bytes).map_err(storage)?;
            meta.insert(format!("next/{broker}").as_str(), next)
                .map_err(storage)?;
        }
        drop(meta);
        self.write_cursors(txn)?;
        Ok(ranges)
    }

    fn begin(&self) -> Result<redb::WriteTransaction, LogError> {
        let mut txn = self.shared.db.begin_write().map_err(storage)?;
        txn.set_quick_repair(true);
        if !self.options.fsync {
            txn.set_durability(Durability::None).map_err(storage)?;
        }
        Ok(txn)
    }

    fn commit_batch(&mut self, batch: &mut Vec<AppendRequest>, writes: &mut PendingWrites) {
        let started = Instant::now();
        let waited: Vec<Duration> = batch
            .iter()
            .map(|r| started.saturating_duration_since(r.enqueued))
            .collect();
        let result = self.begin().and_then(|txn| {
            let ranges = self.write_batch(&txn, batch).and_then(|r| {
                let appended = batch.iter().flat_map(|req| &req.ops);
                apply_ops(&txn, appended.chain(writes.iter().flat_map(|(ops, _)| ops))).map(|()| r)
            });
            match ranges {
                Ok(r) => txn.commit().map_err(storage).map(|()| r),
                Err(e) => {
                    let _ = txn.abort();
                    Err(e)
                }
            }
        });
        self.cursors_settled(result.is_ok());
        let events: usize = batch.iter().map(|r| r.events.len()).sum();
        match result {
            Ok(ranges) => {
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
                // The in-memory offsets may have moved past what was committed.
                self.next.clear();
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(e.clone()));
                }
                for (_, reply) in writes.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
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

    fn flush_cursors(&mut self) -> Result<(), LogError> {
        let txn = self.begin()?;
        self.write_cursors(&txn)?;
        let result = txn.commit().map_err(storage);
        self.cursors_settled(result.is_ok());
        result
    }

    /// Deletes, per broker, up to `retention_chunk` of the oldest events that the policy lets
    /// go and that every consumer has committed.
    fn retention_pass(&mut self) -> Result<u64, LogError> {
        let policies: Vec<(Arc<str>, RetentionPolicy)> = match self.shared.retention.lock() {
            Ok(r) => r.iter().map(|(k, v)| (Arc::clone(k), *v)).collect(),
            Err(_) => return Err(LogError::Storage("retention map poisoned".into())),
        };
        let txn = self.begin()?;
        self.write_cursors(&txn)?;
        let now = self.options.clock.now_ms();
        let mut total = 0u64;
        for (broker, policy) in policies {
            if policy.max_age.is_none() && policy.max_bytes.is_none() {
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
                let too_big = policy.max_bytes.is_some_and(|m| bytes > m);
                if !too_old && !too_big {
                    break;
                }
                table.remove(offset).map_err(storage)?;
                bytes = bytes.saturating_sub(len);
                deleted += 1;
            }
            if deleted > 0 {
                total += deleted as u64;
                meta.insert(key.as_str(), bytes).map_err(storage)?;
                tracing::debug!(broker = %broker, deleted, "retention deleted events");
            }
        }
        let committed = txn.commit().map_err(storage);
        self.cursors_settled(committed.is_ok());
        committed?;
        Ok(total)
    }
}
