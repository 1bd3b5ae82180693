//! The event-log abstraction every storage backend implements.
//!
//! A log holds, per broker, an append-only sequence of stored events numbered by offset from
//! 0, plus per-consumer committed offsets. `append` resolves only once the events are durable
//! (for backends that promise durability); that is what lets ingress answer 202.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

/// Identifies a broker's log: `namespace/name`.
pub type BrokerId = str;

/// Why a log operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The writer's queue is full; retry after a short pause.
    #[error("the store is busy: the write queue is full")]
    Overloaded,
    /// The log is shutting down and takes no more writes.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The store's disk is full: nothing more is written until space is freed. Retry later;
    /// the writer tries again on its own and takes writes as soon as one commits.
    #[error("the store's disk is full: {0}")]
    DiskFull(String),
    /// The store holds what its budget allows (`--max-store-bytes`) and what fills it is not
    /// delivered yet: no new events until delivery makes room. Retry later.
    #[error("the store is full: {0}")]
    OverBudget(String),
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The store cannot be reached right now (a JetStream cluster without a leader, a lost
    /// connection); retry later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl LogError {
    /// [`LogError::Unavailable`]: `what` failed because of `e`.
    pub fn unavailable(what: &str, e: &dyn std::fmt::Display) -> LogError {
        LogError::Unavailable(format!("{what}: {e}"))
    }
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its position in the broker's log.
    pub offset: u64,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub arrival_ms: u64,
    /// The event in the storage encoding (`switchyard_core::store`).
    pub event: Bytes,
}

/// When a broker's events may be deleted. Events a consumer has not committed are never
/// deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete events older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest events while the log holds more bytes than this.
    pub max_bytes: Option<u64>,
}

/// What [`EventLog::append`] returns: the offsets given to the events, once durable.
pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Range<u64>, LogError>> + Send>>;

/// First offset still stored, next offset to be written, and bytes stored, of one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// The oldest offset still stored (equal to `next` when the log is empty).
    pub first: u64,
    /// The offset the next event will get.
    pub next: u64,
    /// Bytes of stored events (encodings, without the engine's overhead).
    pub bytes: u64,
}

/// Events a commit made durable, as the writer announces them to an observer (the trigger
/// router), in commit order. An observer that falls behind misses announcements, never events:
/// it notices the gap in offsets and reads the log.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The broker whose log grew.
    pub broker: std::sync::Arc<str>,
    /// Offset of the first event.
    pub first: u64,
    /// The events in the storage encoding, at `first`, `first + 1`, …
    pub events: Vec<Bytes>,
}

/// Side tables that live next to the logs and are written in the same group commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Scheduled retries of failed deliveries.
    Retries,
    /// The dead-letter store.
    DeadLetters,
    /// Event types discovered in `record` mode, with their counts.
    EventTypes,
    /// What sources remember across restarts (a PingSource's last fired slot).
    SourceState,
    /// The audit log: every redrive and purge, who asked and what it touched.
    Audit,
}

/// One change to the store, written durably with [`EventLog::write`].
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Insert or replace a record of a side table.
    Put {
        /// The table.
        table: Table,
        /// The key (ordered bytewise).
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a record of a side table (absent is fine).
    Delete {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
    /// Drop a consumer's cursor, so retention no longer waits for it.
    ForgetCursor {
        /// The broker.
        broker: String,
        /// The consumer.
        consumer: String,
    },
}

/// A record of a side table: key and value.
pub type SideRecord = (Vec<u8>, Vec<u8>);

/// What [`EventLog::write`] returns: resolves once the changes are durable.
pub type WriteFuture = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send>>;

/// Runs a store call (the log's calls block: they read files) on tokio's blocking pool, off
/// the async workers, so a long scan never stalls requests or deliveries.
pub async fn blocking<T: Send + 'static>(
    log: &std::sync::Arc<dyn EventLog>,
    call: impl FnOnce(&dyn EventLog) -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    let log = std::sync::Arc::clone(log);
    tokio::task::spawn_blocking(move || call(log.as_ref()))
        .await
        .map_err(|e| LogError::Storage(format!("store task failed: {e}")))?
}

/// How much of its disk a store uses, and how much is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// The bytes the store's own files take on disk (for the embedded store: `events.redb`
    /// and the write-ahead log's segments, which are allocated whole).
    pub store_bytes: u64,
    /// Bytes free for the server on the store's file system.
    pub free_bytes: u64,
    /// The size of that file system, in bytes.
    pub size_bytes: u64,
}

/// A durable, per-broker event log.
pub trait EventLog: Send + Sync + 'static {
    /// Appends the events of one request, all or nothing, in order. Fails at once with
    /// [`LogError::Overloaded`] when the writer cannot take more.
    fn append(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture;

    /// Like [`EventLog::append`], and applies `ops` in the same transaction: both are durable
    /// or neither is (a PingSource stores its event and its last fired slot together).
    fn append_with(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
    ) -> AppendFuture;

    /// Like [`EventLog::append`], for events that follow from events already stored (a
    /// subscriber's replies): they may use the free-space reserve that new events may not, so
    /// delivery never stalls on a disk below it.
    fn append_reply(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        self.append(broker, events)
    }

    /// Reads up to `max` records starting at offset `from`.
    fn read(&self, broker: &BrokerId, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError>;

    /// Offsets and size of a broker's log.
    fn stats(&self, broker: &BrokerId) -> Result<LogStats, LogError>;

    /// The offset a consumer committed (the next one it needs), if any.
    fn committed(&self, broker: &BrokerId, consumer: &str) -> Result<Option<u64>, LogError>;

    /// Records that `consumer` is done with everything before `offset`. Cheap: backends may
    /// persist it with the next commit rather than at once.
    fn commit(&self, broker: &BrokerId, consumer: &str, offset: u64) -> Result<(), LogError>;

    /// Sets how long a broker's events are kept.
    fn set_retention(&self, broker: &BrokerId, policy: RetentionPolicy) -> Result<(), LogError>;

    /// How many append requests are waiting for the writer.
    fn queue_depth(&self) -> usize;

    /// The disk the store keeps its files on, read now (`None`: the log keeps none of its
    /// own, as with JetStream); `/metrics` reports it. It reads the file system: call it
    /// off the async workers.
    fn disk_usage(&self) -> Option<DiskUsage> {
        None
    }

    /// Why appends are refused right now (the disk is full, a commit failed), or `None` while
    /// they are taken; `/readyz` reports it.
    fn write_failure(&self) -> Option<String> {
        None
    }

    /// The largest event body (its `data`) this log can always store, dead letter included,
    /// where it has a limit of its own (`None`: only the callers' limits apply). Sources hold
    /// their events to it, so an event the log would refuse is let go as malformed rather than
    /// tried again for ever.
    fn max_data_bytes(&self) -> Option<usize> {
        None
    }

    /// Applies the changes in one transaction, durably. Waits for room in the writer's queue
    /// rather than failing with `Overloaded`: these are the broker's own records.
    fn write(&self, ops: Vec<WriteOp>) -> WriteFuture;

    /// Records of a side table with `from <= key < to`, in key order, at most `max`.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError>;

    /// The last `max` records of a side table with `from <= key < to`, in key order (the
    /// newest of a time-ordered table, read without the older ones).
    fn scan_last(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        let mut all = self.scan(table, from, to, usize::MAX)?;
        let older = all.len().saturating_sub(max);
        Ok(all.split_off(older))
    }

    /// Every consumer of a broker with its committed offset.
    fn consumers(&self, broker: &BrokerId) -> Result<Vec<(String, u64)>, LogError>;

    /// Sends every later commit's events to `observer` (replacing any earlier observer).
    fn observe_commits(&self, observer: tokio::sync::mpsc::Sender<Committed>);
}

/// A log that hands every call on to another: for a wrapper that watches or changes a few
/// calls of a real store (a test's counting or refusing log). Implement [`Delegating::inner`]
/// and the calls to change; the wrapper is an [`EventLog`] whose every other call, the ones
/// with a default included, goes to `inner`, so a wrapper cannot lose a call by forgetting it.
pub trait Delegating: Send + Sync + 'static {
    /// The log every call goes to unless the wrapper changes it.
    fn inner(&self) -> &dyn EventLog;

    /// See [`EventLog::append`].
    fn append(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        self.inner().append(broker, events)
    }

    /// See [`EventLog::append_with`].
    fn append_with(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
    ) -> AppendFuture {
        self.inner().append_with(broker, events, ops)
    }

    /// See [`EventLog::append_reply`].
    fn append_reply(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        self.inner().append_reply(broker, events)
    }

    /// See [`EventLog::read`].
    fn read(&self, broker: &BrokerId, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        self.inner().read(broker, from, max)
    }

    /// See [`EventLog::stats`].
    fn stats(&self, broker: &BrokerId) -> Result<LogStats, LogError> {
        self.inner().stats(broker)
    }

    /// See [`EventLog::committed`].
    fn committed(&self, broker: &BrokerId, consumer: &str) -> Result<Option<u64>, LogError> {
        self.inner().committed(broker, consumer)
    }

    /// See [`EventLog::commit`].
    fn commit(&self, broker: &BrokerId, consumer: &str, offset: u64) -> Result<(), LogError> {
        self.inner().commit(broker, consumer, offset)
    }

    /// See [`EventLog::set_retention`].
    fn set_retention(&self, broker: &BrokerId, policy: RetentionPolicy) -> Result<(), LogError> {
        self.inner().set_retention(broker, policy)
    }

    /// See [`EventLog::queue_depth`].
    fn queue_depth(&self) -> usize {
        self.inner().queue_depth()
    }

    /// See [`EventLog::disk_usage`].
    fn disk_usage(&self) -> Option<DiskUsage> {
        self.inner().disk_usage()
    }

    /// See [`EventLog::write_failure`].
    fn write_failure(&self) -> Option<String> {
        self.inner().write_failure()
    }

    /// See [`EventLog::max_data_bytes`].
    fn max_data_bytes(&self) -> Option<usize> {
        self.inner().max_data_bytes()
    }

    /// See [`EventLog::write`].
    fn write(&self, ops: Vec<WriteOp>) -> WriteFuture {
        self.inner().write(ops)
    }

    /// See [`EventLog::scan`].
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        self.inner().scan(table, from, to, max)
    }

    /// See [`EventLog::scan_last`].
    fn scan_last(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        self.inner().scan_last(table, from, to, max)
    }

    /// See [`EventLog::consumers`].
    fn consumers(&self, broker: &BrokerId) -> Result<Vec<(String, u64)>, LogError> {
        self.inner().consumers(broker)
    }

    /// See [`EventLog::observe_commits`].
    fn observe_commits(&self, observer: tokio::sync::mpsc::Sender<Committed>) {
        self.inner().observe_commits(observer);
    }
}

impl<T: Delegating> EventLog for T {
    fn append(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        Delegating::append(self, broker, events)
    }
    fn append_with(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
    ) -> AppendFuture {
        Delegating::append_with(self, broker, events, ops)
    }
    fn append_reply(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        Delegating::append_reply(self, broker, events)
    }
    fn read(&self, broker: &BrokerId, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        Delegating::read(self, broker, from, max)
    }
    fn stats(&self, broker: &BrokerId) -> Result<LogStats, LogError> {
        Delegating::stats(self, broker)
    }
    fn committed(&self, broker: &BrokerId, consumer: &str) -> Result<Option<u64>, LogError> {
        Delegating::committed(self, broker, consumer)
    }
    fn commit(&self, broker: &BrokerId, consumer: &str, offset: u64) -> Result<(), LogError> {
        Delegating::commit(self, broker, consumer, offset)
    }
    fn set_retention(&self, broker: &BrokerId, policy: RetentionPolicy) -> Result<(), LogError> {
        Delegating::set_retention(self, broker, policy)
    }
    fn queue_depth(&self) -> usize {
        Delegating::queue_depth(self)
    }
    fn disk_usage(&self) -> Option<DiskUsage> {
        Delegating::disk_usage(self)
    }
    fn write_failure(&self) -> Option<String> {
        Delegating::write_failure(self)
    }
    fn max_data_bytes(&self) -> Option<usize> {
        Delegating::max_data_bytes(self)
    }
    fn write(&self, ops: Vec<WriteOp>) -> WriteFuture {
        Delegating::write(self, ops)
    }
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        Delegating::scan(self, table, from, to, max)
    }
    fn scan_last(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        Delegating::scan_last(self, table, from, to, max)
    }
    fn consumers(&self, broker: &BrokerId) -> Result<Vec<(String, u64)>, LogError> {
        Delegating::consumers(self, broker)
    }
    fn observe_commits(&self, observer: tokio::sync::mpsc::Sender<Committed>) {
        Delegating::observe_commits(self, observer);
    }
}
