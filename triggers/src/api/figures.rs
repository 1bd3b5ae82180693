//! The live figures of the resources API (`resources.rs`), from whichever engine runs the
//! triggers: a trigger's backlog, a broker's stored events, dead letters by trigger.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use switchyard_broker::jetstream::{JetStreamLog, Names};
use switchyard_broker::log::{EventLog, LogError, Table, blocking};
use switchyard_core::id::TriggerId;

use crate::dispatch::RunningTriggers;
use crate::dispatch::jetstream::JetStreamTriggers;
use crate::records;

/// Dead letters counted per broker at most: beyond, the count says "at least".
pub const MAX_COUNTED: usize = 100_000;
/// Retry records read for a trigger's oldest undelivered event at most (the earliest due).
const MAX_RETRIES_READ: usize = 10_000;
/// Records read from the store at a time.
const SCAN_CHUNK: usize = 500;

/// The engine the triggers run on, as the resources API reads it.
#[derive(Clone)]
pub enum Engine {
    /// The embedded store.
    Embedded {
        /// The running triggers' sources.
        running: RunningTriggers,
        /// The store.
        log: Arc<dyn EventLog>,
    },
    /// JetStream.
    JetStream {
        /// The triggers this replica runs.
        triggers: JetStreamTriggers,
        /// The streams.
        log: Arc<JetStreamLog>,
    },
}

/// What a trigger owes its subscriber.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    /// Events not yet delivered (queued, in flight, waiting to be retried); on JetStream, the
    /// events the trigger's consumers have not had acknowledged, filtered out or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// How long ago the oldest of them arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_undelivered_age_ms: Option<u64>,
}

/// A broker's stored events.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    /// How many are kept.
    pub events: u64,
    /// Their size.
    pub bytes: u64,
    /// The oldest one's offset (or stream sequence).
    pub first_offset: u64,
    /// The offset the next one will get.
    pub next_offset: u64,
}

/// Dead letters by trigger name, and whether counting stopped at [`MAX_COUNTED`].
pub type DeadLetterCounts = (HashMap<String, u64>, bool);

fn age_ms(arrival_ms: u64) -> u64 {
    records::now_ms().saturating_sub(arrival_ms)
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Embedded { .. } => f.write_str("Engine::Embedded"),
            Engine::JetStream { .. } => f.write_str("Engine::JetStream"),
        }
    }
}

impl Engine {
    /// The store, for the writes the API makes (pauses, audit entries).
    pub fn log(&self) -> Arc<dyn EventLog> {
        match self {
            Engine::Embedded { log, .. } => Arc::clone(log),
            Engine::JetStream { log, .. } => Arc::clone(log) as Arc<dyn EventLog>,
        }
    }

    /// Whether trigger `id` of `broker` runs here.
    pub fn runs(&self, id: &TriggerId, broker: &str) -> bool {
        match self {
            Engine::Embedded { running, .. } => running.get(broker, id.name()).is_some(),
            Engine::JetStream { triggers, .. } => triggers.consumers(id).is_some(),
        }
    }

    /// What trigger `id` of `broker` owes its subscriber (empty when it does not run here).
    pub async fn backlog(&self, id: &TriggerId, broker: &str) -> Backlog {
        match self {
            Engine::Embedded { running, log } => {
                let Some(source) = running.get(broker, id.name()) else {
                    return Backlog::default();
                };
                let lag = u64::try_from(source.lag()).unwrap_or(0);
                let mut backlog = Backlog {
                    lag: Some(lag),
                    oldest_undelivered_age_ms: None,
                };
                if lag > 0 {
                    let (cursor, broker) = (source.cursor(), broker.to_owned());
                    let prefix = source.retry_prefix().to_vec();
                    let oldest = blocking(log, move |log| {
                        // The oldest is the one at the cursor, or an earlier one waiting to
                        // be retried.
                        #[derive(serde::Deserialize)]
                        struct Only {
                            offset: u64,
                        }
                        let mut from = prefix.clone();
                        let mut to = prefix.clone();
                        to.push(0xff);
                        let mut offset = cursor;
                        let mut read = 0;
                        while read < MAX_RETRIES_READ {
                            let chunk = log.scan(Table::Retries, &from, &to, SCAN_CHUNK)?;
                            read += chunk.len();
                            for (_, v) in &chunk {
                                if let Ok(o) = serde_json::from_slice::<Only>(v) {
                                    offset = offset.min(o.offset);
                                }
                            }
                            match chunk.last() {
                                Some((key, _)) if chunk.len() == SCAN_CHUNK => {
                                    from = key.clone();
                                    from.push(0);
                                }
                                _ => break,
                            }
                        }
                        log.read(&broker, offset, 1)
                    })
                    .await;
                    if let Ok(records) = oldest {
                        backlog.oldest_undelivered_age_ms =
                            records.first().map(|r| age_ms(r.arrival_ms));
                    }
                }
                backlog
            }
            Engine::JetStream { triggers, log } => {
                let Some(consumers) = triggers.consumers(id) else {
                    return Backlog::default();
                };
                jetstream_backlog(log, broker, &consumers)
                    .await
                    .unwrap_or_default()
            }
        }
    }

    /// The dead letters of `broker`, counted by trigger.
    pub async fn dead_letters(&self, broker: &str) -> Result<DeadLetterCounts, LogError> {
        match self {
            Engine::Embedded { log, .. } => {
                let broker = broker.to_owned();
                blocking(log, move |log| {
                    #[derive(serde::Deserialize)]
                    struct Only {
                        trigger: String,
                    }
                    let mut from = records::deadletter_prefix(&broker);
                    let mut to = broker.as_bytes().to_vec();
                    to.push(1);
                    let mut counts = HashMap::new();
                    let mut counted = 0usize;
                    // A chunk in memory at a time.
                    loop {
                        let chunk = log.scan(Table::DeadLetters, &from, &to, SCAN_CHUNK)?;
                        for (_, v) in &chunk {
                            if let Ok(only) = serde_json::from_slice::<Only>(v) {
                                *counts.entry(only.trigger).or_insert(0) += 1;
                            }
                        }
                        counted += chunk.len();
                        match chunk.last() {
                            Some((key, _)) if chunk.len() == SCAN_CHUNK => {
                                if counted >= MAX_COUNTED {
                                    return Ok((counts, true));
                                }
                                from = key.clone();
                                from.push(0);
                            }
                            _ => return Ok((counts, false)),
                        }
                    }
                })
                .await
            }
            Engine::JetStream { log, .. } => {
                let names = Names::of(broker);
                let stream = log
                    .context()
                    .get_stream(&names.dead_letter_stream)
                    .await
                    .map_err(|e| LogError::unavailable("cannot open the dead-letter stream", &e))?;
                let prefix = format!("{}.", names.dead_letter_prefix);
                let mut subjects = stream
                    .info_with_subjects(format!("{prefix}*"))
                    .await
                    .map_err(|e| LogError::unavailable("cannot read the dead-letter stream", &e))?;
                let mut counts = HashMap::new();
                while let Some(Ok((subject, n))) = subjects.next().await {
                    if let Some(trigger) = subject.strip_prefix(&prefix) {
                        counts.insert(trigger.to_owned(), n as u64);
                    }
                }
                Ok((counts, false))
            }
        }
    }

    /// `broker`'s stored events.
    pub async fn stored(&self, broker: &str) -> Result<Stored, LogError> {
        match self {
            Engine::Embedded { log, .. } => {
                let id = broker.to_owned();
                let stats = blocking(log, move |log| log.stats(&id)).await?;
                Ok(Stored {
                    events: stats.next.saturating_sub(stats.first),
                    bytes: stats.bytes,
                    first_offset: stats.first,
                    next_offset: stats.next,
                })
            }
            Engine::JetStream { log, .. } => {
                let mut stream = log
                    .context()
                    .get_stream(&Names::of(broker).stream)
                    .await
                    .map_err(|e| LogError::unavailable("cannot open the broker's stream", &e))?;
                let info = stream
                    .info()
                    .await
                    .map_err(|e| LogError::unavailable("cannot read the broker's stream", &e))?;
                Ok(Stored {
                    events: info.state.messages,
                    bytes: info.state.bytes,
                    first_offset: info.state.first_sequence,
                    next_offset: info.state.last_sequence + 1,
                })
            }
        }
    }
}

/// The backlog of a trigger reading `broker`'s stream through `consumers`.
async fn jetstream_backlog(
    log: &JetStreamLog,
    broker: &str,
    consumers: &[String],
) -> Result<Backlog, LogError> {
    let stream = log
        .context()
        .get_stream(&Names::of(broker).stream)
        .await
        .map_err(|e| LogError::unavailable("cannot open the broker's stream", &e))?;
    let mut lag = 0u64;
    let mut floor: Option<u64> = None;
    for name in consumers {
        let info = stream
            .consumer_info(name)
            .await
            .map_err(|e| LogError::unavailable("cannot read a trigger's consumer", &e))?;
        let owed = info.num_pending + info.num_ack_pending as u64;
        lag += owed;
        if owed > 0 {
            let acked = info.ack_floor.stream_sequence;
            floor = Some(floor.map_or(acked, |f| f.min(acked)));
        }
    }
    let mut backlog = Backlog {
        lag: Some(lag),
        oldest_undelivered_age_ms: None,
    };
    if let Some(floor) = floor
        && let Ok(message) = stream.direct_get(floor + 1).await
    {
        let arrival = message.time.unix_timestamp_nanos() / 1_000_000;
        backlog.oldest_undelivered_age_ms = Some(age_ms(u64::try_from(arrival).unwrap_or(0)));
    }
    Ok(backlog)
}

/// How often [`sample_gauges`] reads every trigger's backlog.
pub const GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Until `stopped`, every [`GAUGE_INTERVAL`] sets each running trigger's
/// `switchyard_trigger_oldest_undelivered_age_seconds` (0 when it owes nothing) and, on
/// JetStream, its `switchyard_trigger_lag_events` (the embedded engine sets that every second
/// from memory). A trigger a reload removed keeps its series until the process ends (the
/// exporter cannot drop one): its lag and age are set to 0 and its subscriber to healthy, so
/// alerts on it clear. Off the request path: the embedded store's scan runs on the blocking
/// pool.
pub async fn sample_gauges(
    config: super::resources::ConfigView,
    engine: Engine,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use switchyard_broker::metrics as m;
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampled: HashSet<[String; 3]> = HashSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let config = Arc::clone(
            &config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut now = HashSet::new();
        for ((ns, name), trigger) in &config.triggers {
            let id = TriggerId::new(ns, name);
            let broker = switchyard_core::id::join(ns, &trigger.spec.broker);
            if !engine.runs(&id, &broker) {
                continue;
            }
            let backlog = engine.backlog(&id, &broker).await;
            let key = [ns.clone(), trigger.spec.broker.clone(), name.clone()];
            let labels = gauge_labels(&key);
            let age_ms = match backlog.lag {
                Some(0) => Some(0),
                _ => backlog.oldest_undelivered_age_ms,
            };
            #[allow(clippy::cast_precision_loss)]
            if let Some(age_ms) = age_ms {
                metrics::gauge!(m::TRIGGER_OLDEST_UNDELIVERED_AGE, &labels)
                    .set(age_ms as f64 / 1000.0);
            }
            #[allow(clippy::cast_precision_loss)]
            if let (Engine::JetStream { .. }, Some(lag)) = (&engine, backlog.lag) {
                metrics::gauge!(m::TRIGGER_LAG, &labels).set(lag as f64);
            }
            now.insert(key);
        }
        for gone in sampled.difference(&now) {
            let labels = gauge_labels(gone);
            metrics::gauge!(m::TRIGGER_OLDEST_UNDELIVERED_AGE, &labels).set(0.0);
            metrics::gauge!(m::TRIGGER_LAG, &labels).set(0.0);
            metrics::gauge!(m::SUBSCRIBER_HEALTHY, &labels).set(1.0);
        }
        sampled = now;
    }
}

fn gauge_labels([ns, broker, name]: &[String; 3]) -> [(&'static str, String); 3] {
    [
        ("namespace_name", ns.clone()),
        ("broker_name", broker.clone()),
        ("trigger_name", name.clone()),
    ]
}
