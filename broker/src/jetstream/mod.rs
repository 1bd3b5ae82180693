//! The JetStream engine's log (`serve --jetstream`): each Broker's events in a JetStream
//! stream, so any number of stateless replicas share them. spec/jetstream.md is the reader's
//! version: the names, the headers, and what each promise rests on.
//!
//! A Broker `ns/name` has the stream `SY_EV_ns_name` on the subjects `sy.ev.ns.name.{p}`, one
//! per partition `p` (the hash of the event's `partitionkey`, so an ordered trigger's
//! consumer per partition sees each key's events in order); an event is a message holding
//! its storage encoding (`switchyard_core::store`), published with a `Nats-Msg-Id` so that a
//! producer's retry within the stream's duplicate window is stored once. An append resolves once JetStream acknowledged every event (`PubAck`): stored on a
//! majority of the stream's replicas. Dead letters go to `SY_DL_ns_name`, on
//! `sy.dl.ns.name.{trigger}`. Triggers read the stream through durable consumers
//! (`switchyard_triggers::dispatch::jetstream`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use sha2::Digest;
use switchyard_core::config::Config;

use crate::log::{
    AppendFuture, BrokerId, Committed, EventLog, LogError, LogRecord, LogStats, RetentionPolicy,
    SideRecord, Table, WriteFuture, WriteOp,
};

mod kv;
mod names;
mod publish;

use kv::{Kv, bucket_of};
pub use names::{Names, Route, event_msg_id, partition_of};
use names::{duplicate_window, routes};
pub use publish::ATOMIC_MAX_EVENTS;
use publish::{publish, publish_batch};

/// The oldest nats-server the engine runs on: 2.10 is the first that honours
/// `sync_interval` and has the stream settings the engine sets.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);
/// How long a stream remembers message ids, so a producer's retry is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The first nats-server with atomic batch publish (ADR-50): a batch request's events are
/// stored all or none.
pub const ATOMIC_SERVER_VERSION: (u64, u64) = (2, 12);
/// Room a message needs beyond its event's body: attributes, headers, and a dead letter's
/// record (at most 100 attempts, each with 1 KiB of the answer).
pub const ENVELOPE_BYTES: usize = 192 * 1024;
/// How long a replica waits at start for the cluster to create or update its streams.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a side-table write, or the opening of a key-value bucket, keeps trying while
/// the cluster cannot answer (a bucket's stream just created and electing its leader, a
/// leader moving): about what one API call can wait before it answers 503.
pub const SIDE_TABLE_PATIENCE: Duration = Duration::from_secs(10);
/// Partitions of a broker's stream unless `--jetstream-partitions` says otherwise.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// The stream metadata key that records a stream's partitions, which every replica must use.
const PARTITIONS_KEY: &str = "switchyard.partitions";
/// The header of a redriven event that names where to deliver it instead of the trigger's
/// subscriber.
pub const REDRIVE_URI_HEADER: &str = "Switchyard-Redrive-Uri";
/// The header of a redriven event that carries its offset in the broker's stream.
pub const REDRIVE_OFFSET_HEADER: &str = "Switchyard-Offset";
/// The key-value bucket that holds what sources remember (`Table::SourceState`: a
/// PingSource's last fired slot), shared by the replicas.
pub const SOURCE_STATE_BUCKET: &str = "SY_SOURCESTATE";
/// The key-value bucket of the event types brokers in `record` mode discovered
/// (`Table::EventTypes`): the totals every replica's counts add into.
pub const EVENT_TYPES_BUCKET: &str = "SY_EVENTTYPES";
/// The key-value bucket of the attempts made at deliveries being retried, so the dead
/// letter of an event lists every one whichever replicas made them.
pub const ATTEMPTS_BUCKET: &str = "SY_ATTEMPTS";
/// How long an attempt history outlives its last write: one left behind (a trigger removed
/// while it retried) goes then.
pub const ATTEMPTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The key-value bucket of the audit log (`Table::Audit`): who redrove, purged and deleted
/// dead letters, shared by the replicas.
pub const AUDIT_BUCKET: &str = "SY_AUDIT";

/// Why the JetStream engine could not start or do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// The servers could not be reached.
    #[error("cannot connect to NATS {servers}: {message}")]
    Connect {
        /// The URLs tried.
        servers: String,
        /// Why.
        message: String,
    },
    /// The server cannot keep the engine's promises.
    #[error("{0}")]
    Server(String),
    /// A stream could not be created or changed.
    #[error("stream {stream}: {message}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        message: String,
    },
}

/// How to reach JetStream and how to keep streams (`serve --jetstream …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// NATS server URLs (any of the cluster's; the client learns the rest).
    pub servers: Vec<String>,
    /// Copies of each stream: 1, 3 or 5 (`--jetstream-replicas`).
    pub replicas: usize,
    /// Partition subjects of each broker's stream (`--jetstream-partitions`): how many keys an
    /// ordered trigger delivers at once. Fixed when the stream is created.
    pub partitions: u32,
    /// This replica's name among the others (`--replica-id`; `None`: `{hostname}-{port}`).
    pub replica_id: Option<String>,
    /// How long audit entries are kept (`--audit-max-age-days`; `None`: for ever).
    pub audit_max_age: Option<Duration>,
}

impl JetStreamOptions {
    /// This replica's name: `--replica-id`, or the host's name and the port it serves on.
    pub fn replica_name(&self, port: u16) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "switchyard".to_owned());
            format!("{host}-{port}")
        })
    }
}

/// The largest event body a server whose messages are at most `max_payload_bytes` stores,
/// dead letter included: the inverse of the check `connect` makes of `--max-body-bytes`.
fn max_data_bytes(max_payload_bytes: usize) -> usize {
    max_payload_bytes.saturating_sub(ENVELOPE_BYTES) / 4 * 3
}

/// The brokers' logs in JetStream.
pub struct JetStreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
    partitions: u32,
    audit_max_age: Option<Duration>,
    /// Whether the server stores a batch atomically (2.12 and later).
    atomic: bool,
    /// The server's largest message, in bytes.
    max_payload_bytes: usize,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("replicas", &self.replicas)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// `major.minor` of a server version such as `2.10.7` or `v2.15.1-beta`.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl JetStreamLog {
    /// Connects to `options.servers` and checks that the server can keep the engine's
    /// promises: JetStream on, version 2.10 or later, and messages large enough for events of
    /// `max_body_bytes`.
    pub async fn connect(
        options: &JetStreamOptions,
        max_body_bytes: usize,
    ) -> Result<JetStreamLog, JetStreamError> {
        let servers = options.servers.join(",");
        if ![1, 3, 5].contains(&options.replicas) {
            return Err(JetStreamError::Server(format!(
                "--jetstream-replicas must be 1, 3 or 5, not {}",
                options.replicas
            )));
        }
        if !(1..=MAX_PARTITIONS).contains(&options.partitions) {
            return Err(JetStreamError::Server(format!(
                "--jetstream-partitions must be between 1 and {MAX_PARTITIONS}, not {}",
                options.partitions
            )));
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("switchyard")
            .connect(options.servers.as_slice())
            .await
            .map_err(|e| JetStreamError::Connect {
                servers: servers.clone(),
                message: e.to_string(),
            })?;
        let info = client.server_info();
        let version = major_minor(&info.version);
        if version.is_none_or(|v| v < MIN_SERVER_VERSION) {
            return Err(JetStreamError::Server(format!(
                "nats-server {} at {servers} is too old: the JetStream engine needs {}.{} or later (older servers ignore sync_interval)",
                info.version, MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
            )));
        }
        if !info.jetstream {
            return Err(JetStreamError::Server(format!(
                "nats-server at {servers} runs without JetStream: start it with -js (or a jetstream block)"
            )));
        }
        // A dead letter holds its event in base64 (4/3 of it), and attempts.
        let needed = max_body_bytes.saturating_mul(4) / 3 + ENVELOPE_BYTES;
        if info.max_payload < needed {
            return Err(JetStreamError::Server(format!(
                "nats-server at {servers} takes messages of at most {} bytes; events of --max-body-bytes {max_body_bytes} need {needed} (a dead letter holds its event in base64): raise the server's max_payload, or lower --max-body-bytes",
                info.max_payload
            )));
        }
        let js = jetstream::new(client.clone());
        Ok(JetStreamLog {
            client,
            js,
            replicas: options.replicas,
            partitions: options.partitions,
            audit_max_age: options.audit_max_age,
            atomic: version.is_some_and(|v| v >= ATOMIC_SERVER_VERSION),
            max_payload_bytes: info.max_payload,
        })
    }

    /// The JetStream context, for the triggers' consumers.
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Partition subjects of each broker's stream.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Publishes `events` (storage encodings) to broker `broker`'s stream with the message
    /// ids `ids` (one per event), and waits for every acknowledgement. Resolves to the span
    /// of stream sequences they got (other replicas' events may be interleaved).
    pub async fn publish(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ids: Vec<String>,
    ) -> Result<Range<u64>, LogError> {
        let names = Names::of(broker);
        let routes = routes(&events, self.partitions)?;
        let targets = routes
            .into_iter()
            .zip(ids)
            .map(|(r, id)| (names.partition_subject(r.partition), id))
            .collect();
        publish_batch(&self.js, self.atomic, events, targets).await
    }

    /// The bucket of attempt histories ([`ATTEMPTS_BUCKET`]), created when missing.
    pub async fn attempts_bucket(&self) -> Result<jetstream::kv::Store, LogError> {
        kv::key_value(
            &self.js,
            jetstream::kv::Config {
                bucket: ATTEMPTS_BUCKET.to_owned(),
                description: "Switchyard: the attempts at deliveries being retried".to_owned(),
                history: 1,
                max_age: ATTEMPTS_MAX_AGE,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            },
        )
        .await
    }

    /// Whether a batch of events is stored all or none (the server has atomic batches).
    pub fn atomic(&self) -> bool {
        self.atomic
    }

    /// Publishes one dead letter (its JSON record) for `trigger` of `broker`, with message id
    /// `msg_id`, and waits for the acknowledgement.
    pub async fn publish_dead_letter(
        &self,
        broker: &BrokerId,
        trigger: &str,
        record: Vec<u8>,
        msg_id: String,
    ) -> Result<u64, LogError> {
        let subject = Names::of(broker).dead_letter_subject(trigger);
        publish(&self.js, vec![record], vec![(subject, msg_id)])
            .await
            .map(|r| r.start)
    }

    /// Publishes dead letter `id`'s event (its storage encoding) for `trigger` of `broker` to
    /// deliver again (to `uri` instead of the trigger's subscriber, when given), and waits
    /// for the acknowledgement. The message id is the dead letter's, so a redrive of it sent
    /// twice within the duplicate window is stored once.
    pub async fn publish_redrive(
        &self,
        broker: &BrokerId,
        trigger: &str,
        id: u64,
        event: Vec<u8>,
        offset: u64,
        uri: Option<&str>,
    ) -> Result<u64, LogError> {
        let msg_id = format!("{}:{id}", Names::of(broker).dead_letter_stream);
        self.publish_to_trigger(broker, trigger, msg_id, event, offset, uri)
            .await
    }

    /// Publishes `event` (its storage encoding; stored at `offset` in the broker's stream)
    /// on `trigger`'s redrive subject, for that trigger alone to deliver (to `uri` instead of
    /// its subscriber, when given), with message id `msg_id`; waits for the acknowledgement.
    /// A redrive and a replay go this way.
    pub async fn publish_to_trigger(
        &self,
        broker: &BrokerId,
        trigger: &str,
        msg_id: String,
        event: Vec<u8>,
        offset: u64,
        uri: Option<&str>,
    ) -> Result<u64, LogError> {
        let names = Names::of(broker);
        let mut message = PublishMessage::build()
            .payload(event.into())
            .message_id(msg_id)
            .header(REDRIVE_OFFSET_HEADER, offset.to_string().as_str());
        if let Some(uri) = uri {
            message = message.header(REDRIVE_URI_HEADER, uri);
        }
        let ack = self
            .js
            .send_publish(names.redrive_subject(trigger), message)
            .await
            .map_err(|e| LogError::unavailable("cannot publish to JetStream", &e))?
            .await
            .map_err(|e| LogError::unavailable("JetStream did not acknowledge", &e))?;
        Ok(ack.sequence)
    }

    /// Creates the streams of `config`'s brokers, or brings existing ones to the brokers'
    /// retention and the engine's settings.
    pub async fn ensure_brokers(&self, config: &Config) -> Result<(), JetStreamError> {
        for ((ns, name), broker) in &config.brokers {
            let id = switchyard_core::id::join(ns, name);
            let retention = Some(crate::server::retention_policy(broker));
            let names = Names::of(&id);
            let events = stream::Config {
                name: names.stream.clone(),
                subjects: vec![names.subjects.clone()],
                metadata: HashMap::from([(PARTITIONS_KEY.to_owned(), self.partitions.to_string())]),
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: duplicate_window(retention.and_then(|r| r.max_age)),
                allow_direct: true,
                max_age: retention.and_then(|r| r.max_age).unwrap_or_default(),
                max_bytes: retention
                    .and_then(|r| r.max_bytes)
                    .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
                // A stream at its byte limit refuses new events (ingress answers 503)
                // rather than deleting old ones a trigger may not have delivered.
                discard: stream::DiscardPolicy::New,
                allow_atomic_publish: self.atomic,
                description: Some(format!("Switchyard: the events of Broker {id}")),
                ..Default::default()
            };
            self.ensure_stream(events).await?;
            let dead_letters = stream::Config {
                name: names.dead_letter_stream.clone(),
                subjects: vec![format!("{}.*", names.dead_letter_prefix)],
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                allow_direct: true,
                description: Some(format!("Switchyard: the dead letters of Broker {id}")),
                ..Default::default()
            };
            self.ensure_stream(dead_letters).await?;
            let redrives = stream::Config {
                name: names.redrive_stream.clone(),
                subjects: vec![format!("{}.*", names.redrive_prefix)],
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: DUPLICATE_WINDOW,
                retention: stream::RetentionPolicy::WorkQueue,
                allow_direct: true,
                description: Some(format!(
                    "Switchyard: the redriven dead letters of Broker {id}"
                )),
                ..Default::default()
            };
            self.ensure_stream(redrives).await?;
        }
        Ok(())
    }

    /// Creates or updates one stream, trying again for up to [`SETTLE_TIMEOUT`] while the
    /// cluster cannot answer (it is electing a leader, or forming as the replicas start).
    async fn ensure_stream(&self, config: stream::Config) -> Result<(), JetStreamError> {
        let what = format!("stream {}", config.name);
        when_settled(SETTLE_TIMEOUT, &what, || {
            self.try_ensure_stream(config.clone())
        })
        .await
        .map_err(|e| JetStreamError::Stream {
            stream: config.name.clone(),
            message: match e {
                LogError::Unavailable(message) | LogError::Storage(message) => message,
                other => other.to_string(),
            },
        })
    }

    /// One try of [`Self::ensure_stream`]: [`LogError::Unavailable`] when the cluster cannot
    /// answer yet, [`LogError::Storage`] when it can and the stream cannot be used as asked.
    async fn try_ensure_stream(&self, config: stream::Config) -> Result<(), LogError> {
        let not_ready = |e: &dyn std::fmt::Display| LogError::Unavailable(e.to_string());
        match self.js.get_stream(&config.name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|e| not_ready(&e))?;
                let now = &info.config;
                let recorded = now.metadata.get(PARTITIONS_KEY);
                let wanted = config.metadata.get(PARTITIONS_KEY);
                if recorded.is_some() && recorded != wanted {
                    return Err(LogError::Storage(format!(
                        "it was created with {} partitions, and changing them would break the order of ordered triggers: start every replica with --jetstream-partitions {0}",
                        recorded.map_or("?", String::as_str)
                    )));
                }
                if now.subjects != config.subjects
                    || now.metadata.get(PARTITIONS_KEY) != wanted
                    || now.num_replicas != config.num_replicas
                    || now.max_age != config.max_age
                    || now.max_bytes != config.max_bytes
                    || now.discard != config.discard
                    || now.allow_atomic_publish != config.allow_atomic_publish
                    || now.duplicate_window != config.duplicate_window
                    || !now.allow_direct
                {
                    self.js
                        .update_stream(config)
                        .await
                        .map_err(|e| not_ready(&e))?;
                }
            }
            Err(_) => {
                self.js
                    .create_stream(config)
                    .await
                    .map_err(|e| not_ready(&e))?;
            }
        }
        Ok(())
    }

    fn kv(&self) -> Kv {
        Kv {
            js: self.js.clone(),
            replicas: self.replicas,
            audit_max_age: self.audit_max_age,
        }
    }

    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, LogError>>,
    ) -> Result<T, LogError> {
        // The log's reads are called on tokio's blocking pool (`log::blocking`).
        tokio::runtime::Handle::try_current()
            .map_err(|_| LogError::Storage("a JetStream read outside the runtime".into()))?
            .block_on(f)
    }
}

/// Whether this process has said at info that JetStream is not ready, and not yet that it is
/// again. An outage spans many waits (the pause follow loop starts one every second, each
/// dispatcher its own): it is told once at info when it begins and once when it ends, whichever
/// waits see it.
static NOT_READY_SAID: AtomicBool = AtomicBool::new(false);

/// Calls `call` again, with the store's backoff, while it fails with
/// [`LogError::Unavailable`] (the cluster is electing a leader or forming, a bucket's stream
/// was just created) and `within` has not passed; otherwise what `call` returned last. Only
/// for what is safe to do twice: a put of the same value, a delete, opening a bucket, a read.
pub async fn when_settled<T, F, Fut>(
    within: Duration,
    what: &str,
    mut call: F,
) -> Result<T, LogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LogError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = switchyard_core::backoff::Backoff::STORE;
    let mut tries = 0_u32;
    loop {
        match call().await {
            Err(LogError::Unavailable(error)) if tokio::time::Instant::now() < deadline => {
                tries += 1;
                if NOT_READY_SAID.swap(true, Ordering::Relaxed) {
                    tracing::debug!(what, %error, tries, "JetStream is still not ready");
                } else {
                    tracing::info!(what, %error, "JetStream is not ready; trying again");
                }
                tokio::time::sleep(backoff.next_pause()).await;
            }
            Ok(value) => {
                if NOT_READY_SAID.load(Ordering::Relaxed)
                    && NOT_READY_SAID.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(what, "JetStream is ready again");
                }
                return Ok(value);
            }
            other => return other,
        }
    }
}

impl EventLog for JetStreamLog {
    fn append(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        let js = self.js.clone();
        let names = Names::of(broker);
        let partitions = self.partitions;
        let atomic = self.atomic;
        Box::pin(async move {
            let targets = routes(&events, partitions)?
                .into_iter()
                .map(|r| (names.partition_subject(r.partition), r.msg_id))
                .collect();
            publish_batch(&js, atomic, events, targets).await
        })
    }

    /// Publishes the events, then applies `ops`: not one transaction, as the embedded store's
    /// is. A crash between the two leaves the events stored and the state not: a PingSource
    /// then fires the slot again, which the stream keeps once within its duplicate window
    /// (the event's id is the slot's).
    fn append_with(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
    ) -> AppendFuture {
        let appended = self.append(broker, events);
        let kv = self.kv();
        Box::pin(async move {
            let offsets = appended.await?;
            kv.write_ops(ops).await?;
            Ok(offsets)
        })
    }

    fn read(&self, broker: &BrokerId, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let names = Names::of(broker);
        self.block_on(async {
            let stream = self
                .js
                .get_stream_no_info(&names.stream)
                .await
                .map_err(|e| LogError::unavailable("cannot open the stream", &e))?;
            let mut records = Vec::new();
            let mut next = from.max(1);
            while records.len() < max {
                match stream
                    .direct_get_next_for_subject(names.subjects.clone(), Some(next))
                    .await
                {
                    Ok(m) => {
                        next = m.sequence + 1;
                        let arrival_ms = u64::try_from(m.time.unix_timestamp_nanos() / 1_000_000)
                            .unwrap_or_default();
                        records.push(LogRecord {
                            offset: m.sequence,
                            arrival_ms,
                            event: m.payload,
                        });
                    }
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
                    {
                        break;
                    }
                    Err(e) => return Err(LogError::unavailable("cannot read the stream", &e)),
                }
            }
            Ok(records)
        })
    }

    fn stats(&self, broker: &BrokerId) -> Result<LogStats, LogError> {
        let names = Names::of(broker);
        self.block_on(async {
            let stream = self
                .js
                .get_stream(&names.stream)
                .await
                .map_err(|e| LogError::unavailable("cannot open the stream", &e))?;
            let state = &stream.cached_info().state;
            Ok(LogStats {
                first: state.first_sequence,
                next: state.last_sequence + 1,
                bytes: state.bytes,
            })
        })
    }

    fn committed(&self, _broker: &BrokerId, _consumer: &str) -> Result<Option<u64>, LogError> {
        // A trigger's place is its durable consumer's, kept by JetStream.
        Ok(None)
    }

    fn commit(&self, _broker: &BrokerId, _consumer: &str, _offset: u64) -> Result<(), LogError> {
        Ok(())
    }

    fn set_retention(&self, _broker: &BrokerId, _policy: RetentionPolicy) -> Result<(), LogError> {
        // A stream's limits are its retention: set by `ensure_brokers`, from the
        // configuration itself, before the server takes it.
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        0
    }

    fn max_data_bytes(&self) -> Option<usize> {
        Some(max_data_bytes(self.max_payload_bytes))
    }

    fn write_failure(&self) -> Option<String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => None,
            state => Some(format!("NATS connection {state}")),
        }
    }

    fn write(&self, ops: Vec<WriteOp>) -> WriteFuture {
        let kv = self.kv();
        Box::pin(async move { kv.write_ops(ops).await })
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        match table {
            t if bucket_of(t).is_some() => self.block_on(self.kv().scan(t, from, to, max)),
            _ => Ok(Vec::new()),
        }
    }

    fn consumers(&self, _broker: &BrokerId) -> Result<Vec<(String, u64)>, LogError> {
        Ok(Vec::new())
    }

    fn observe_commits(&self, _observer: tokio::sync::mpsc::Sender<Committed>) {
        // Triggers read the streams through their consumers; nothing is announced.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_a_server_stores_is_what_the_body_limit_check_asks_for() {
        assert_eq!(max_data_bytes(2 * 1024 * 1024), 1_425_408);
        assert_eq!(max_data_bytes(ENVELOPE_BYTES), 0);
        for max_payload in [
            ENVELOPE_BYTES + 1,
            1_048_576,
            2_097_152,
            6_000_000,
            8_388_608,
        ] {
            let data = max_data_bytes(max_payload);
            // A body of that size passes the check `connect` makes, one of 4 bytes more not.
            assert!(
                data * 4 / 3 + ENVELOPE_BYTES <= max_payload,
                "{max_payload}"
            );
            assert!(
                (data + 4) * 4 / 3 + ENVELOPE_BYTES > max_payload,
                "{max_payload}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn what_cannot_answer_yet_is_tried_again_until_the_patience_runs_out() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = AtomicU32::new(0);
        let unavailable = || LogError::Unavailable("no leader".into());
        // Unavailable twice, then taken: the caller sees it taken.
        let got = when_settled(SIDE_TABLE_PATIENCE, "test", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(unavailable()),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(got.ok(), Some(2));
        // Never available: the last error, once the patience has passed and not long after.
        let start_2 = tokio::time::Instant::now();
        let got: Result<(), _> =
            when_settled(SIDE_TABLE_PATIENCE, "test", || async { Err(unavailable()) }).await;
        assert!(matches!(got, Err(LogError::Unavailable(_))));
        let waited = start_2.elapsed();
        assert!(waited >= SIDE_TABLE_PATIENCE, "{waited:?}");
        assert!(
            waited <= SIDE_TABLE_PATIENCE + Duration::from_secs(5),
            "{waited:?}"
        );
        // Any other failure is not tried again.
        calls.store(0, Ordering::SeqCst);
        let start_3 = tokio::time::Instant::now();
        let got: Result<(), _> = when_settled(SIDE_TABLE_PATIENCE, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(LogError::Storage("broken".into()))
        })
        .await;
        assert!(matches!(got, Err(LogError::Storage(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(start_3.elapsed(), Duration::ZERO);
    }

    #[test]
    fn server_versions_are_read_as_major_minor() {
        assert_eq!(major_minor("2.9.10"), Some((2, 9)));
        assert_eq!(major_minor("v2.15.1"), Some((2, 15)));
        assert_eq!(major_minor("2.10.0-beta.3"), Some((2, 10)));
        assert_eq!(major_minor("nonsense"), None);
        assert!(major_minor("2.9.10") < Some(MIN_SERVER_VERSION));
        assert!(major_minor("2.10.1") >= Some(MIN_SERVER_VERSION));
    }
}
