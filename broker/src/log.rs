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
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Storage(String),
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

/// A durable, per-broker event log.
pub trait EventLog: Send + Sync + 'static {
    /// Appends the events of one request, all or nothing, in order. Fails at once with
    /// [`LogError::Overloaded`] when the writer cannot take more.
    fn append(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture;

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
}
