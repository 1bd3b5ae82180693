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
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use sha2::Digest;
use switchyard_core::config::Config;

use crate::log::{
    AppendFuture, BrokerId, Committed, EventLog, LogError, LogRecord, LogStats, RetentionPolicy,
    SideRecord, Table, WriteFuture, WriteOp,
};

/// The oldest nats-server the engine runs on: 2.10 is the first that honours
/// `sync_interval` and has the stream settings the engine sets.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);
/// How long a stream remembers message ids, so a producer's retry is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Events published before their acknowledgements are awaited.
const PUBLISH_CHUNK: usize = 256;
/// The first nats-server with atomic batch publish (ADR-50): a batch request's events are
/// stored all or none.
pub const ATOMIC_SERVER_VERSION: (u64, u64) = (2, 12);
/// The most events one atomic batch may hold (the server's limit); a larger batch request is
/// published event by event.
pub const ATOMIC_MAX_EVENTS: usize = 1000;
/// The server's error code for an atomic batch holding a message id it stored before.
const ATOMIC_DUPLICATE: u64 = 10201;
/// Room a message needs beyond its event's body: attributes, headers, and a dead letter's
/// record (at most 100 attempts, each with 1 KiB of the answer).
pub const ENVELOPE_BYTES: usize = 192 * 1024;
/// How long a replica waits at start for the cluster to create or update its streams.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
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

/// The JetStream names of one Broker (`namespace/name`; both are DNS labels, so they are
/// valid stream names and subject tokens as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The events' stream.
    pub stream: String,
    /// The stream's subjects: `{prefix}.*`, one per partition.
    pub subjects: String,
    /// The prefix of the partitions' subjects (partition `p`'s is `{prefix}.{p}`).
    pub subject_prefix: String,
    /// The dead letters' stream.
    pub dead_letter_stream: String,
    /// The prefix of the dead letters' subjects (a trigger's is `{prefix}.{trigger}`).
    pub dead_letter_prefix: String,
    /// The stream of redriven dead letters, each waiting for its trigger (work-queue
    /// retention: gone once the trigger settled it).
    pub redrive_stream: String,
    /// The prefix of the redrives' subjects (a trigger's is `{prefix}.{trigger}`).
    pub redrive_prefix: String,
}

impl Names {
    /// The names of broker `id` (`namespace/name`).
    pub fn of(id: &BrokerId) -> Names {
        let (ns, name) = id.split_once('/').unwrap_or(("default", id));
        Names {
            stream: format!("SY_EV_{ns}_{name}"),
            subjects: format!("sy.ev.{ns}.{name}.*"),
            subject_prefix: format!("sy.ev.{ns}.{name}"),
            dead_letter_stream: format!("SY_DL_{ns}_{name}"),
            dead_letter_prefix: format!("sy.dl.{ns}.{name}"),
            redrive_stream: format!("SY_RD_{ns}_{name}"),
            redrive_prefix: format!("sy.rd.{ns}.{name}"),
        }
    }

    /// The subject of partition `p`.
    pub fn partition_subject(&self, p: u32) -> String {
        format!("{}.{p}", self.subject_prefix)
    }

    /// The subject of `trigger`'s dead letters.
    pub fn dead_letter_subject(&self, trigger: &str) -> String {
        format!("{}.{trigger}", self.dead_letter_prefix)
    }

    /// The subject of `trigger`'s redriven dead letters.
    pub fn redrive_subject(&self, trigger: &str) -> String {
        format!("{}.{trigger}", self.redrive_prefix)
    }
}

/// The duplicate window of a stream whose events are kept `max_age`: JetStream refuses a
/// window longer than the age limit.
fn duplicate_window(max_age: Option<Duration>) -> Duration {
    match max_age {
        Some(age) if !age.is_zero() => DUPLICATE_WINDOW.min(age),
        _ => DUPLICATE_WINDOW,
    }
}

/// The message id an event is published with: its `source` and `id`, which name it
/// (CloudEvents: producers must make the pair unique), hashed to a header-safe token.
pub fn event_msg_id(source: &str, id: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The partition of an event with `partitionkey` `key` (absent: the empty key) among
/// `partitions`: FNV-1a, which every replica and version computes alike.
pub fn partition_of(key: Option<&str>, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.unwrap_or_default().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(h % u64::from(partitions.max(1))).unwrap_or(0)
}

/// Where an event goes in its broker's stream and how it is named there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// Its partition.
    pub partition: u32,
}

/// The routes of `events` (storage encodings): the message id of each event's `source` and
/// `id`, and the partition of its `partitionkey`.
fn routes(events: &[Vec<u8>], partitions: u32) -> Result<Vec<Route>, LogError> {
    events
        .iter()
        .map(|e| {
            let event = switchyard_core::store::decode(e)
                .map_err(|e| LogError::Storage(format!("an event to publish: {e}")))?;
            Ok(Route {
                msg_id: event_msg_id(&event.source, &event.id),
                partition: partition_of(event.partition_key().as_deref(), partitions),
            })
        })
        .collect()
}

/// The side tables this engine keeps, in key-value buckets (a handle the log's futures own).
#[derive(Clone)]
struct Kv {
    js: jetstream::Context,
    replicas: usize,
    /// How long audit entries are kept (`None`: for ever).
    audit_max_age: Option<Duration>,
}

/// The bucket that keeps side table `table`, and what it holds; `None` for the tables this
/// engine keeps elsewhere (dead letters: their stream) or not at all.
fn bucket_of(table: Table) -> Option<(&'static str, &'static str)> {
    match table {
        Table::SourceState => Some((
            SOURCE_STATE_BUCKET,
            "Switchyard: what sources remember across restarts",
        )),
        Table::Audit => Some((
            AUDIT_BUCKET,
            "Switchyard: who redrove, purged and deleted dead letters",
        )),
        Table::EventTypes => Some((
            EVENT_TYPES_BUCKET,
            "Switchyard: the event types brokers in record mode stored",
        )),
        _ => None,
    }
}

impl Kv {
    /// The bucket of `table`, created when missing.
    async fn bucket(&self, table: Table) -> Result<jetstream::kv::Store, LogError> {
        let Some((bucket, description)) = bucket_of(table) else {
            return Err(side_tables());
        };
        if let Ok(store) = self.js.get_key_value(bucket).await {
            return Ok(store);
        }
        let max_age = match table {
            Table::Audit => self.audit_max_age.unwrap_or_default(),
            _ => Duration::ZERO,
        };
        self.js
            .create_key_value(jetstream::kv::Config {
                bucket: bucket.to_owned(),
                description: description.to_owned(),
                history: 1,
                max_age,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| LogError::unavailable("cannot create a key-value bucket", &e))
    }

    /// Applies `ops` (to the tables [`bucket_of`] keeps), in order.
    async fn write_ops(&self, ops: Vec<WriteOp>) -> Result<(), LogError> {
        let mut stores: Vec<(Table, jetstream::kv::Store)> = Vec::new();
        for op in ops {
            let table = match &op {
                WriteOp::Put { table, .. } | WriteOp::Delete { table, .. } => *table,
                // Triggers' places are their consumers'.
                WriteOp::ForgetCursor { .. } => continue,
            };
            let store = match stores.iter().find(|(t, _)| *t == table) {
                Some((_, store)) => store.clone(),
                None => {
                    let store = self.bucket(table).await?;
                    stores.push((table, store.clone()));
                    store
                }
            };
            match op {
                WriteOp::Put {
                    table: Table::EventTypes,
                    key,
                    value,
                } => add_counts(&store, &kv_key(&key), &value).await?,
                WriteOp::Put { key, value, .. } => {
                    store
                        .put(kv_key(&key), value.into())
                        .await
                        .map_err(|e| LogError::unavailable("cannot write a side record", &e))?;
                }
                WriteOp::Delete { key, .. } => {
                    store
                        .delete(kv_key(&key))
                        .await
                        .map_err(|e| LogError::unavailable("cannot delete a side record", &e))?;
                }
                WriteOp::ForgetCursor { .. } => {}
            }
        }
        Ok(())
    }

    /// The records of `table` with `from <= key < to`, in key order, at most `max`.
    async fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        let store = self.bucket(table).await?;
        let listing = |e: &dyn std::fmt::Display| {
            LogError::Unavailable(format!("cannot list a key-value bucket: {e}"))
        };
        let keys = store.keys().await.map_err(|e| listing(&e))?;
        let mut keys: Vec<Vec<u8>> = futures_util::TryStreamExt::try_collect::<Vec<String>>(keys)
            .await
            .map_err(|e| listing(&e))?
            .iter()
            .filter_map(|k| from_kv_key(k))
            .filter(|k| k.as_slice() >= from && k.as_slice() < to)
            .collect();
        keys.sort();
        keys.truncate(max);
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = store
                .get(kv_key(&key))
                .await
                .map_err(|e| LogError::unavailable("cannot read a side record", &e))?
            {
                records.push((key, value.to_vec()));
            }
        }
        Ok(records)
    }
}

/// Adds a replica's event-type counts (`Seen`, JSON) since its last flush into the totals at
/// `key`: a compare-and-set on the key's revision, tried again when another replica wrote
/// in between.
async fn add_counts(store: &jetstream::kv::Store, key: &str, value: &[u8]) -> Result<(), LogError> {
    use crate::eventtypes::Seen;
    let more: Seen = serde_json::from_slice(value)
        .map_err(|e| LogError::Storage(format!("event-type counts to add: {e}")))?;
    let failed = |e: &dyn std::fmt::Display| {
        LogError::Unavailable(format!("cannot add event-type counts: {e}"))
    };
    for _ in 0..100 {
        let written = match store.entry(key).await.map_err(|e| failed(&e))? {
            Some(entry) if entry.operation == jetstream::kv::Operation::Put => {
                let mut total: Seen =
                    serde_json::from_slice(&entry.value).unwrap_or_else(|_| more.clone());
                if serde_json::from_slice::<Seen>(&entry.value).is_ok() {
                    total.add(&more);
                }
                let bytes = serde_json::to_vec(&total).unwrap_or_default();
                store
                    .update(key, bytes.into(), entry.revision)
                    .await
                    .is_ok()
            }
            _ => store.create(key, value.to_vec().into()).await.is_ok(),
        };
        if written {
            return Ok(());
        }
    }
    Err(failed(&"other replicas kept writing the same counts"))
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
    /// Each broker's retention, as the configuration says; applied by
    /// [`ensure_brokers`](Self::ensure_brokers).
    retention: Mutex<HashMap<String, RetentionPolicy>>,
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
            retention: Mutex::new(HashMap::new()),
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
        if let Ok(store) = self.js.get_key_value(ATTEMPTS_BUCKET).await {
            return Ok(store);
        }
        self.js
            .create_key_value(jetstream::kv::Config {
                bucket: ATTEMPTS_BUCKET.to_owned(),
                description: "Switchyard: the attempts at deliveries being retried".to_owned(),
                history: 1,
                max_age: ATTEMPTS_MAX_AGE,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| LogError::unavailable("cannot create the attempts bucket", &e))
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
        let names = Names::of(broker);
        let mut message = PublishMessage::build()
            .payload(event.into())
            .message_id(format!("{}:{id}", names.dead_letter_stream))
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
        for (ns, name) in config.brokers.keys() {
            let id = switchyard_core::id::join(ns, name);
            let retention = self
                .retention
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .copied();
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
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let mut backoff = switchyard_core::backoff::Backoff::STORE;
        loop {
            match self.try_ensure_stream(config.clone()).await {
                Ok(()) => return Ok(()),
                Err(Ensure::Refused(message)) => {
                    return Err(JetStreamError::Stream {
                        stream: config.name,
                        message,
                    });
                }
                Err(Ensure::NotReady(message)) if tokio::time::Instant::now() >= deadline => {
                    return Err(JetStreamError::Stream {
                        stream: config.name,
                        message,
                    });
                }
                Err(Ensure::NotReady(message)) => {
                    tracing::info!(stream = %config.name, %message, "JetStream is not ready; trying again");
                    tokio::time::sleep(backoff.next_pause()).await;
                }
            }
        }
    }

    async fn try_ensure_stream(&self, config: stream::Config) -> Result<(), Ensure> {
        let not_ready = |e: &dyn std::fmt::Display| Ensure::NotReady(e.to_string());
        match self.js.get_stream(&config.name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|e| not_ready(&e))?;
                let now = &info.config;
                let recorded = now.metadata.get(PARTITIONS_KEY);
                let wanted = config.metadata.get(PARTITIONS_KEY);
                if recorded.is_some() && recorded != wanted {
                    return Err(Ensure::Refused(format!(
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

/// A side-table key as a key-value key (which allows only a few characters): hex.
fn kv_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_kv_key(key: &str) -> Option<Vec<u8>> {
    key.len()
        .is_multiple_of(2)
        .then(|| {
            (0..key.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(key.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

/// Why a stream could not be created or brought up to date.
enum Ensure {
    /// The cluster cannot answer yet: try again.
    NotReady(String),
    /// It can, and the stream cannot be used as asked.
    Refused(String),
}

/// Publishes a batch of `events` to their subjects with their message ids (`targets`, one
/// per event): as one atomic batch where the server has them and the batch is of 2 to
/// [`ATOMIC_MAX_EVENTS`] events, otherwise (and for a batch that holds an event stored
/// before: a producer's retry of a batch stored in part or whole) event by event, which
/// stores what is new and recognises the rest by its id.
async fn publish_batch(
    js: &jetstream::Context,
    atomic: bool,
    events: Vec<Vec<u8>>,
    targets: Vec<(String, String)>,
) -> Result<Range<u64>, LogError> {
    if atomic && (2..=ATOMIC_MAX_EVENTS).contains(&events.len()) {
        match publish_atomic(js, &events, &targets).await? {
            Some(span) => return Ok(span),
            None => tracing::debug!(
                events = events.len(),
                "an atomic batch holds events stored before; publishing it event by event"
            ),
        }
    }
    publish(js, events, targets).await
}

/// The reply to an atomic batch's commit: a publish acknowledgement, or an error.
#[derive(serde::Deserialize)]
struct CommitReply {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<CommitError>,
}

#[derive(serde::Deserialize)]
struct CommitError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Publishes `events` as one atomic batch (ADR-50: `Nats-Batch-Id`, `Nats-Batch-Sequence`,
/// `Nats-Batch-Commit` on the last): stored all or none. `None` when the server refused it
/// (for holding a message id it stored before, or any other reason: nothing is stored).
async fn publish_atomic(
    js: &jetstream::Context,
    events: &[Vec<u8>],
    targets: &[(String, String)],
) -> Result<Option<Range<u64>>, LogError> {
    let client = js.client();
    let batch = batch_id();
    let failed = |e: &dyn std::fmt::Display| {
        LogError::Unavailable(format!("cannot publish an atomic batch to JetStream: {e}"))
    };
    let last = events.len() - 1;
    let mut reply = None;
    for (i, (event, (subject, id))) in events.iter().zip(targets).enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Nats-Batch-Id", batch.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        if i == last {
            headers.insert("Nats-Batch-Commit", "1");
        }
        let payload = bytes::Bytes::from(event.clone());
        if i == 0 || i == last {
            // The first opens the batch (an empty reply), the last commits it (the
            // acknowledgement); both answer an error at once.
            let answer = client
                .request_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| failed(&e))?;
            reply = Some(answer.payload);
        } else {
            client
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| failed(&e))?;
        }
        if i == 0 && i != last {
            let opened = reply.take().unwrap_or_default();
            if !opened.is_empty() {
                return commit_reply(&opened, events.len());
            }
        }
    }
    commit_reply(&reply.unwrap_or_default(), events.len())
}

/// An id no other batch in flight has: the process, the time and a count.
fn batch_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos:x}-{n:x}", std::process::id())
}

/// The span of sequences a committed batch of `n` events got, or `None` for a batch the
/// server refused (nothing of it stored), or the error of an answer that is not one.
fn commit_reply(reply: &[u8], n: usize) -> Result<Option<Range<u64>>, LogError> {
    let reply: CommitReply = serde_json::from_slice(reply).map_err(|e| {
        LogError::Unavailable(format!("JetStream answered an atomic batch with {e}"))
    })?;
    match reply.error {
        Some(e) if e.err_code == ATOMIC_DUPLICATE => Ok(None),
        // Refused whole, so nothing of it is stored: atomic publish turned off on the stream
        // (a server older than the replica's during an upgrade), a server limit on batches
        // lower than ours, too many batches in flight. Event by event instead.
        Some(e) => {
            tracing::warn!(code = e.err_code, error = %e.description, "JetStream refused an atomic batch; publishing it event by event");
            Ok(None)
        }
        None => {
            let n = reply.count.unwrap_or(n as u64);
            Ok(Some((reply.seq + 1).saturating_sub(n)..reply.seq + 1))
        }
    }
}

/// Publishes each of `events` to its subject with its message id (`targets`, one per event)
/// and waits for every acknowledgement.
async fn publish(
    js: &jetstream::Context,
    events: Vec<Vec<u8>>,
    targets: Vec<(String, String)>,
) -> Result<Range<u64>, LogError> {
    let mut span: Option<Range<u64>> = None;
    let mut acks = Vec::with_capacity(events.len().min(PUBLISH_CHUNK));
    let mut events = events.into_iter().zip(targets).peekable();
    while events.peek().is_some() {
        // A chunk at a time: the client has a bounded number of acknowledgements pending,
        // shared by every publisher of the replica, so one large batch must not take them all.
        for (event, (subject, id)) in events.by_ref().take(PUBLISH_CHUNK) {
            let message = PublishMessage::build().payload(event.into()).message_id(id);
            let ack = js
                .send_publish(subject, message)
                .await
                .map_err(|e| LogError::unavailable("cannot publish to JetStream", &e))?;
            acks.push(ack);
        }
        for ack in acks.drain(..) {
            let ack = ack
                .await
                .map_err(|e| LogError::unavailable("JetStream did not acknowledge", &e))?;
            span = Some(match span {
                None => ack.sequence..ack.sequence + 1,
                Some(r) => r.start.min(ack.sequence)..r.end.max(ack.sequence + 1),
            });
        }
    }
    Ok(span.unwrap_or(0..0))
}

fn side_tables() -> LogError {
    LogError::Storage(
        "the JetStream engine keeps no side tables but sources' state and the audit log (spec/jetstream.md, \"Not yet\")".into(),
    )
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

    fn set_retention(&self, broker: &BrokerId, policy: RetentionPolicy) -> Result<(), LogError> {
        self.retention
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(broker.to_owned(), policy);
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        0
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
    fn names_are_valid_stream_names_and_subjects() {
        let n = Names::of("team-a/orders");
        assert_eq!(n.stream, "SY_EV_team-a_orders");
        assert_eq!(n.subjects, "sy.ev.team-a.orders.*");
        assert_eq!(n.partition_subject(3), "sy.ev.team-a.orders.3");
        assert_eq!(n.dead_letter_stream, "SY_DL_team-a_orders");
        assert_eq!(n.dead_letter_subject("audit"), "sy.dl.team-a.orders.audit");
        assert_eq!(n.redrive_stream, "SY_RD_team-a_orders");
        assert_eq!(n.redrive_subject("audit"), "sy.rd.team-a.orders.audit");
    }

    #[test]
    fn message_ids_name_the_event_not_the_bytes() {
        assert_eq!(event_msg_id("/s", "1"), event_msg_id("/s", "1"));
        assert_ne!(event_msg_id("/s", "1"), event_msg_id("/s", "2"));
        // The separator keeps ("/s1", "") and ("/s", "1") apart.
        assert_ne!(event_msg_id("/s1", ""), event_msg_id("/s", "1"));
        assert_eq!(event_msg_id("/s", "1").len(), 32);
    }

    #[test]
    fn an_atomic_batch_commit_is_read_as_a_span_a_duplicate_or_an_error() {
        let committed = br#"{"stream":"S","seq":12,"batch":"b","count":3}"#;
        assert_eq!(commit_reply(committed, 3).ok(), Some(Some(10..13)));
        let duplicate = br#"{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"},"stream":"S","seq":0}"#;
        assert_eq!(commit_reply(duplicate, 3).ok(), Some(None));
        let refused = br#"{"error":{"code":400,"err_code":10174,"description":"atomic publish is disabled"}}"#;
        assert_eq!(
            commit_reply(refused, 3).ok(),
            Some(None),
            "refused whole: published event by event"
        );
        assert!(commit_reply(b"", 3).is_err(), "no answer is not a commit");
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: every replica and every version must place a key alike.
        assert_eq!(partition_of(None, 16), partition_of(Some(""), 16));
        assert_eq!(
            partition_of(Some("room-1"), 16),
            partition_of(Some("room-1"), 16)
        );
        assert_eq!(partition_of(Some("a"), 1), 0);
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            u64::from(partition_of(Some("a"), 16)),
            0xaf63_dc4c_8601_ec8c % 16
        );
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|i| partition_of(Some(&format!("k{i}")), 16))
            .collect();
        assert_eq!(used.len(), 16, "200 keys use every partition");
        assert!(used.iter().all(|p| *p < 16));
    }

    #[test]
    fn side_table_keys_survive_the_key_value_alphabet() {
        let key = b"default/ping\x00\xff".to_vec();
        let k = kv_key(&key);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(from_kv_key(&k), Some(key));
        assert_eq!(from_kv_key("abc"), None);
        assert_eq!(from_kv_key("zz"), None);
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
