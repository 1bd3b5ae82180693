//! The embedded event log on redb, with group commit and a write-ahead log.
//!
//! One writer thread owns every write transaction. Append requests queue up in a bounded
//! channel; the writer takes everything queued (up to a byte cap), writes it in one redb
//! transaction, appends the same changes to the write-ahead log (one write, one
//! `fdatasync`), commits the transaction without an fsync, and only then answers each
//! request. Every `checkpoint_interval` a durable redb commit makes the file itself catch up,
//! and the log's segments are used again. Under light load a batch is one request; under
//! heavy load batches grow by themselves, which is what makes durable ingest fast. The layout
//! is described in `spec/storage.md`.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

mod layout;
mod redo;
#[cfg(test)]
mod tests;
mod wal;
mod writer;

use layout::*;
use writer::Writer;

/// What redb answers on a handle that an earlier I/O error left unusable. The earlier error
/// (a full disk, say) stays the reason writes are refused: the writer keeps reporting it.
const PREVIOUS_IO: &str =
    "the store's file failed an earlier write and is opened again before writes resume";

use crate::clock::Clock;
use crate::log::{
    AppendFuture, BrokerId, Committed, EventLog, LogError, LogRecord, LogStats, RetentionPolicy,
    SideRecord, Table, WriteFuture, WriteOp,
};

/// The fuzz target of the write-ahead log (`fuzz/`, target `wal`): `segment` as the only
/// segment file of a log, replayed from the start; every record that replays must decode,
/// and encode back to the same bytes. Never panics on any input but for a broken promise.
#[doc(hidden)]
pub fn fuzz_wal_segment(segment: &[u8]) {
    let dir = std::env::temp_dir().join(format!("switchyard-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join("00000000.wal"), segment).is_err()
    {
        return;
    }
    let Ok(mut wal) = wal::Wal::open(&dir, 1 << 20) else {
        return;
    };
    let _ = wal.replay(0, |_, payload| {
        let redo = redo::decode(payload)?;
        let appends: Vec<(&str, u64, &[Vec<u8>])> = redo
            .appends
            .iter()
            .map(|a| (a.broker.as_str(), a.first, a.events.as_slice()))
            .collect();
        let mut again = Vec::new();
        redo::encode(
            &mut again,
            redo.arrival_ms,
            &appends,
            redo.ops.iter(),
            &redo.cursors,
        );
        assert_eq!(
            again, payload,
            "a WAL record does not encode back to its bytes"
        );
        Ok(())
    });
}

/// Side-table changes waiting for a commit, each with whom to tell.
type PendingWrites = Vec<(Vec<WriteOp>, oneshot::Sender<Result<(), LogError>>)>;

/// A redb error as the log reports it: a full disk (or quota) as [`LogError::DiskFull`], so
/// callers can answer "retry later" instead of "failed".
fn storage<E: Into<redb::Error>>(e: E) -> LogError {
    let e: redb::Error = e.into();
    match &e {
        redb::Error::PreviousIo => LogError::Storage(PREVIOUS_IO.to_owned()),
        redb::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            LogError::DiskFull(e.to_string())
        }
        _ => LogError::Storage(e.to_string()),
    }
}

/// Why the store file at `path` could not be opened, with what to do when it is damaged.
fn open_error(path: &Path, e: redb::DatabaseError) -> LogError {
    let damaged_file = matches!(
        &e,
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
            | redb::DatabaseError::UpgradeRequired(_)
    ) || matches!(
        &e,
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData
    );
    let text = e.to_string();
    match storage(e) {
        LogError::DiskFull(_) => LogError::DiskFull(format!("{}: {text}", path.display())),
        _ if damaged_file => damaged(path, &text),
        _ => LogError::Storage(format!("cannot open {}: {text}", path.display())),
    }
}

/// A store file that cannot be read, and the way out: move it aside with its write-ahead log
/// and start empty (its events are not delivered), or put a backup in its place.
fn damaged(path: &Path, why: &str) -> LogError {
    let p = path.display();
    let wal = path.with_file_name("wal");
    let w = wal.display();
    LogError::Storage(format!(
        "{p} is damaged and cannot be opened ({why}); move it aside to start with an empty \
         store (`mv {p} {p}.damaged && mv {w} {w}.damaged`: the events in them are not \
         delivered), or put a backup in its place"
    ))
}

/// A write-ahead log record that is whole (its checksum holds) but does not parse: a log
/// written by another version of Switchyard, or damaged in a way its checksum cannot see. The
/// ways out: let the version that wrote it replay it and checkpoint at its stop; or move the
/// log aside and start from the store's last checkpoint (a fresh log goes on from the
/// checkpoint's LSN); or restore a backup.
fn unreplayable(dir: &Path, lsn: u64, why: &LogError) -> LogError {
    let w = dir.display();
    let why = match why {
        LogError::Storage(why) => why.clone(),
        other => other.to_string(),
    };
    LogError::Storage(format!(
        "the write-ahead log in {w} cannot be replayed: its record {lsn} does not parse ({why}); \
         if another version of Switchyard wrote it, start that version once and stop it \
         (SIGTERM) to replay and checkpoint it; otherwise move it aside to start from the \
         store's last checkpoint (`mv {w} {w}.damaged`: the events and changes logged after \
         that checkpoint are lost), or restore a backup of the data directory"
    ))
}

/// Opens the database file (again, after a write failure left the handle unusable).
type Opener = Box<dyn Fn() -> Result<Database, LogError> + Send + Sync>;

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// redb's page cache, in bytes.
    pub cache_size_bytes: usize,
    /// Make every commit durable before it is answered (the default), through the
    /// write-ahead log. Off only for benchmarks: events that got a 202 can then be lost in a
    /// crash (those since the last checkpoint).
    pub fsync: bool,
    /// How often redb's file is made durable (a checkpoint), after which the write-ahead
    /// log's records up to then are no longer needed. Longer: fewer, larger checkpoints and
    /// more log to replay after a crash.
    pub checkpoint_interval: Duration,
    /// Size of each write-ahead log segment, in bytes (rounded up to whole MiB); a commit
    /// larger than that gets a segment of its own.
    pub wal_segment_bytes: u64,
    /// Append requests that may wait for the writer before ingress answers 503.
    pub queue_capacity: usize,
    /// Event bytes that may wait for the writer before appends are refused (503): with
    /// `queue_capacity` alone, 4,096 queued 1 MiB requests would hold 4 GiB. One request is
    /// always taken when nothing waits, whatever its size.
    pub queue_max_bytes: usize,
    /// The most event bytes one commit gathers.
    pub max_batch_bytes: usize,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// The most events one retention pass deletes per broker (so ingest is never held up).
    pub retention_chunk: usize,
    /// Source of arrival times and of "now" for retention.
    pub clock: Clock,
    /// How long audit entries are kept (retention deletes older ones); `None`: for ever.
    pub audit_max_age: Option<Duration>,
    /// Free space the data directory's file system must keep: while less is free, appends
    /// are refused with [`LogError::DiskFull`] and `/readyz` says why, while cursor, retry
    /// and dead-letter writes still go through (delivery goes on; a purge frees space), as
    /// RabbitMQ's disk alarm blocks publishers only. 0 turns the check off.
    pub min_free_disk_bytes: u64,
    /// The most event bytes the store holds, all brokers together (0: no budget). Past
    /// nine tenths of it retention deletes delivered events, oldest first; an append that
    /// would take it past the budget is refused with [`LogError::OverBudget`] (events a trigger
    /// has not finished with are never deleted for it), and `/readyz` says why.
    pub max_store_bytes: u64,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            cache_size_bytes: 64 * 1024 * 1024,
            fsync: true,
            checkpoint_interval: Duration::from_millis(250),
            wal_segment_bytes: 8 << 20,
            queue_capacity: 4096,
            queue_max_bytes: 64 * 1024 * 1024,
            max_batch_bytes: 4 * 1024 * 1024,
            retention_interval: Duration::from_secs(5),
            retention_chunk: 10_000,
            clock: Clock::System,
            audit_max_age: Some(Duration::from_secs(90 * 24 * 3600)),
            min_free_disk_bytes: 64 * 1024 * 1024,
            max_store_bytes: 0,
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
    /// May use the free-space reserve (replies to stored events).
    reserved: bool,
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
    /// The open database; `None` while the writer reopens it after a failed write (redb
    /// refuses every transaction after an I/O error until the handle is dropped and the file
    /// opened again).
    db: RwLock<Option<Arc<Database>>>,
    opener: Opener,
    /// Why the writer refuses writes at the moment (a full disk, a failed commit), for
    /// `/readyz`; `None` while commits succeed.
    refusing: Mutex<Option<LogError>>,
    queued: AtomicUsize,
    /// Event bytes of the append requests waiting for the writer.
    queued_bytes: AtomicUsize,
    /// The most that may wait (`RedbOptions::queue_max_bytes`).
    queue_max_bytes: usize,
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
    /// The data directory (`None` for a test's backend).
    dir: Option<std::path::PathBuf>,
    sender: RwLock<Option<SyncSender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedbLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbLog").finish_non_exhaustive()
    }
}

/// The offset `broker`'s next event gets: after its last stored event, or what `meta` kept
/// when retention emptied its table, whichever is further.
fn next_offset(
    events: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, u64>,
    broker: &BrokerId,
) -> Result<u64, LogError> {
    let stored = events.last().map_err(storage)?.map(|(k, _)| k.value() + 1);
    let recorded = meta
        .get(next_key(broker).as_str())
        .map_err(storage)?
        .map(|v| v.value());
    Ok(stored.max(recorded).unwrap_or(0))
}

impl Shared {
    /// The database, unless the writer is reopening it.
    fn db(&self) -> Result<Arc<Database>, LogError> {
        self.db
            .read()
            .ok()
            .and_then(|db| db.clone())
            .ok_or_else(|| {
                LogError::Storage("the store is being reopened after a failed write".into())
            })
    }
}

impl RedbLog {
    /// Opens (or creates) the log in `dir/events.redb` with its write-ahead log in `dir/wal/`,
    /// replays what the log holds past the last checkpoint, and starts the writer thread.
    /// After a crash, redb's quick repair makes opening fast whatever the file's size.
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
        let free_space_of = Some(dir.to_path_buf());
        let path = dir.join("events.redb");
        let cache_size_bytes = options.cache_size_bytes;
        let opener = Box::new(move || {
            // redb panics on some damaged pages while it opens a file; that is a damaged
            // file to report, not a crash.
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Database::builder()
                    .set_cache_size(cache_size_bytes)
                    .set_repair_callback(|_| {})
                    .create(&path)
            }));
            match opened {
                Ok(Ok(db)) => Ok(db),
                Ok(Err(e)) => Err(open_error(&path, e)),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(damaged(&path, &format!("redb stopped reading it: {why}")))
                }
            }
        });
        // Opened (and replayed) with or without fsync: a store last served without it may
        // still hold records an earlier run logged.
        let wal_dir = dir.join("wal");
        let wal = wal::Wal::open(&wal_dir, options.wal_segment_bytes).map_err(|e| {
            LogError::Storage(format!(
                "cannot open the write-ahead log in {}: {e}",
                wal_dir.display()
            ))
        })?;
        Self::open_with(opener, free_space_of, wal, options, on_commit)
    }

    /// [`open`](Self::open) with the database opened by `opener` (a test's storage backend),
    /// the free space watched on the file system of `free_space_of`, and `wal` in front.
    fn open_with(
        opener: Opener,
        free_space_of: Option<std::path::PathBuf>,
        wal: wal::Wal,
        options: RedbOptions,
        on_commit: OnCommit,
    ) -> Result<RedbLog, LogError> {
        let db = opener()?;
        {
            let mut txn = db.begin_write().map_err(storage)?;
            txn.set_quick_repair(true);
            txn.open_table(META).map_err(storage)?;
            txn.open_table(CURSORS).map_err(storage)?;
            txn.open_table(RETRIES).map_err(storage)?;
            txn.open_table(DEADLETTERS).map_err(storage)?;
            txn.open_table(EVENTTYPES).map_err(storage)?;
            txn.open_table(SOURCESTATE).map_err(storage)?;
            txn.open_table(AUDIT).map_err(storage)?;
            txn.commit().map_err(storage)?;
        }
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            opener,
            refusing: Mutex::new(None),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            queue_max_bytes: options.queue_max_bytes,
            pending_cursors: Mutex::new(HashMap::new()),
            retention: Mutex::new(HashMap::new()),
            on_commit,
            observer: Mutex::new(None),
        });
        let (tx, rx) = sync_channel(options.queue_capacity);
        let dir = free_space_of.clone();
        let mut writer = Writer::new(Arc::clone(&shared), options, free_space_of, wal);
        writer.recover()?;
        let writer = std::thread::Builder::new()
            .name("switchyard-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| LogError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(RedbLog {
            shared,
            dir,
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
    /// Up to `max` records of a side table in `range`, in key order: the first ones, or the
    /// `last` ones (read newest first, without the older ones).
    fn side_records(
        &self,
        table: Table,
        range: std::ops::Range<&[u8]>,
        max: usize,
        last: bool,
    ) -> Result<Vec<SideRecord>, LogError> {
        let txn = self.shared.db()?.begin_read().map_err(storage)?;
        let t = txn.open_table(side_table(table)).map_err(storage)?;
        let items = t.range(range).map_err(storage)?;
        let items: Box<dyn Iterator<Item = _>> = if last {
            Box::new(items.rev())
        } else {
            Box::new(items)
        };
        let mut out = Vec::new();
        for item in items.take(max) {
            let (k, v) = item.map_err(storage)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        if last {
            out.reverse();
        }
        Ok(out)
    }

    /// Queues an append for the writer; `reserved` lets it use the free-space reserve.
    fn request(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
        reserved: bool,
    ) -> AppendFuture {
        let (reply, answer) = oneshot::channel();
        let bytes: usize = events.iter().map(Vec::len).sum();
        let request = AppendRequest {
            enqueued: Instant::now(),
            broker: Arc::from(broker),
            events,
            ops,
            reserved,
            reply,
        };
        let shared = &self.shared;
        let sent = match self.sender.read() {
            Ok(guard) => match guard.as_ref() {
                Some(tx) => {
                    let waiting = shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
                    shared.queued.fetch_add(1, Ordering::Relaxed);
                    let undo = || {
                        shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                        shared.queued.fetch_sub(1, Ordering::Relaxed);
                    };
                    if waiting > 0 && waiting + bytes > shared.queue_max_bytes {
                        undo();
                        Err(LogError::Overloaded)
                    } else {
                        tx.try_send(Command::Append(request)).map_err(|e| {
                            undo();
                            match e {
                                TrySendError::Full(_) => LogError::Overloaded,
                                TrySendError::Disconnected(_) => LogError::ShuttingDown,
                            }
                        })
                    }
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
        self.request(broker, events, ops, false)
    }

    fn append_reply(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        self.request(broker, events, Vec::new(), true)
    }

    fn read(&self, broker: &BrokerId, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let txn = self.shared.db()?.begin_read().map_err(storage)?;
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
        let txn = self.shared.db()?.begin_read().map_err(storage)?;
        let name = table_name(broker);
        let table = match txn.open_table(events_table(&name)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(LogStats::default()),
            Err(e) => return Err(storage(e)),
        };
        let meta = txn.open_table(META).map_err(storage)?;
        let next = next_offset(&table, &meta, broker)?;
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
        let txn = self.shared.db()?.begin_read().map_err(storage)?;
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

    fn disk_usage(&self) -> Option<crate::log::DiskUsage> {
        let dir = self.dir.as_ref()?;
        let fs = rustix::fs::statvfs(dir).ok()?;
        // Allocated bytes, not lengths: redb grows its file with holes in it.
        let len = |p: &Path| {
            std::fs::metadata(p).map_or(0, |m| {
                std::os::unix::fs::MetadataExt::blocks(&m).saturating_mul(512)
            })
        };
        let segments: u64 = std::fs::read_dir(dir.join("wal"))
            .map(|entries| entries.flatten().map(|e| len(&e.path())).sum())
            .unwrap_or(0);
        Some(crate::log::DiskUsage {
            store_bytes: len(&dir.join("events.redb")) + segments,
            free_bytes: fs.f_bavail.saturating_mul(fs.f_frsize),
            size_bytes: fs.f_blocks.saturating_mul(fs.f_frsize),
        })
    }

    fn write_failure(&self) -> Option<String> {
        self.shared
            .refusing
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(ToString::to_string))
    }

    fn write(&self, ops: Vec<WriteOp>) -> WriteFuture {
        // A cursor forgotten must not come back from a commit still pending (a trigger a
        // reload removed committed its last position just before).
        if let Ok(mut pending) = self.shared.pending_cursors.lock() {
            for op in &ops {
                if let WriteOp::ForgetCursor { broker, consumer } = op {
                    pending.remove(&cursor_key(broker, consumer));
                }
            }
        }
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
        self.side_records(table, from..to, max, false)
    }

    fn scan_last(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        self.side_records(table, from..to, max, true)
    }

    fn consumers(&self, broker: &BrokerId) -> Result<Vec<(String, u64)>, LogError> {
        let prefix = format!("{broker}#");
        let mut found: std::collections::BTreeMap<String, u64> = Default::default();
        {
            let txn = self.shared.db()?.begin_read().map_err(storage)?;
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
