//! What every source shares: the broker its events go to, the `ceOverrides` extensions, the
//! broker's `eventTypes` setting (checked before the append, recorded after it, as broker
//! ingress does), the durable append (with the answers HTTP sources give when it fails), and
//! the source metrics (`switchyard_source_events_total` counted here after each append,
//! malformed input through [`Target::malformed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::ingress::{invalid_event, overloaded, stamp};
use switchyard_broker::log::{EventLog, LogError, WriteOp};
use switchyard_broker::metrics::{SOURCE_EVENTS, SOURCE_MALFORMED};
use switchyard_broker::problem::Problem;
use switchyard_core::config::Config;
use switchyard_core::resources::{DEFAULT_BROKER_TTL, EventTypeMode};
use switchyard_core::sources::CeOverrides;
use switchyard_core::{CloudEvent, ExtValue};

/// Events ready for one append: encoded for the log, with the (type, source) pairs a broker
/// in `record` mode counts once they are stored.
#[derive(Debug)]
pub(crate) struct Batch {
    encoded: Vec<Vec<u8>>,
    pairs: Vec<(String, String)>,
    /// The events' `knativearrivaltime`, taken once per batch.
    arrival: String,
}

impl Batch {
    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.encoded.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }
}

/// Where one source's events go.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `namespace/name` of the broker.
    pub broker: String,
    /// The source's kind (`WebhookSource`, …), for metrics.
    kind: &'static str,
    /// `namespace/name` of the source, for metrics and logs.
    source: String,
    ttl: i32,
    extensions: Vec<(String, String)>,
    /// The brokers' `eventTypes` settings.
    event_types: Arc<EventTypePolicy>,
    /// Whether the broker counts the pairs it stores (`record`).
    record: bool,
    /// Whether the broker validates what it stores (`warn`, `enforce`): the stream sources
    /// check event by event, so the others skip the policy altogether.
    validates: bool,
}

impl Target {
    /// The target of source `kind` `ns/name` with this sink and overrides.
    pub fn resolve(
        config: &Config,
        event_types: &Arc<EventTypePolicy>,
        kind: &'static str,
        ns: &str,
        name: &str,
        sink: &switchyard_core::resources::Destination,
        overrides: Option<&CeOverrides>,
    ) -> Target {
        let (bns, bname) = Config::source_broker(kind, ns, name, sink);
        let ttl = config
            .brokers
            .get(&(bns.clone(), bname.clone()))
            .map_or(DEFAULT_BROKER_TTL, switchyard_core::resources::Broker::ttl);
        let broker = format!("{bns}/{bname}");
        let mode = event_types.mode(&broker).mode;
        Target {
            record: mode == EventTypeMode::Record,
            validates: matches!(mode, EventTypeMode::Warn | EventTypeMode::Enforce),
            event_types: Arc::clone(event_types),
            broker,
            kind,
            source: format!("{ns}/{name}"),
            ttl,
            extensions: overrides
                .map(|o| {
                    o.extensions
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// An empty batch of events arriving now.
    pub fn batch(&self, capacity: usize) -> Batch {
        Batch {
            encoded: Vec::with_capacity(capacity),
            pairs: Vec::new(),
            arrival: arrival_now(),
        }
    }

    /// Checks the events against the broker's EventTypes, adds the overrides and the broker's
    /// stamps, and encodes them for the log: the problem to answer when one of them cannot be
    /// stored (in `enforce` mode its data breaks its schema, or with `eventTypesStrict` no
    /// EventType registers its type; a `knativebrokerttl` of 0).
    pub fn prepare(&self, events: &mut [CloudEvent]) -> Result<Batch, Problem> {
        self.event_types.check(&self.broker, events)?;
        let mut batch = self.batch(events.len());
        for event in events.iter_mut() {
            self.stamp(event, &batch.arrival)?;
            self.push(&mut batch, event);
        }
        Ok(batch)
    }

    /// Whether the broker's EventTypes would refuse these events (`enforce`), without
    /// counting or logging: for a PingSource's check at load.
    pub fn refusal(&self, events: &[CloudEvent]) -> Result<(), Problem> {
        self.event_types.refusal(&self.broker, events)
    }

    /// [`prepare`](Self::prepare) for one event of a stream, added to `batch`; the reason
    /// when it cannot be stored. Stream sources take events one by one, so one such event is
    /// handled as malformed instead of failing the batch it arrived with.
    pub fn add(&self, batch: &mut Batch, mut event: CloudEvent) -> Result<(), String> {
        if self.validates {
            self.event_types
                .check(&self.broker, std::slice::from_ref(&event))
                .map_err(|p| p.detail)?;
        }
        self.stamp(&mut event, &batch.arrival)
            .map_err(|p| p.detail)?;
        self.push(batch, &event);
        Ok(())
    }

    fn push(&self, batch: &mut Batch, event: &CloudEvent) {
        batch.encoded.push(switchyard_core::store::encode(event));
        if self.record {
            batch.pairs.push((event.ty.clone(), event.source.clone()));
        }
    }

    /// The `ceOverrides` extensions and the broker's stamps, as ingress adds them.
    fn stamp(&self, event: &mut CloudEvent, arrival: &str) -> Result<(), Problem> {
        for (k, v) in &self.extensions {
            event
                .set_extension(k, ExtValue::String(v.clone()))
                .map_err(|e| invalid_event(&e))?;
        }
        stamp(event, self.ttl, arrival)
    }

    /// After `n` events were stored: counts them, and in `record` mode their `pairs`.
    async fn stored(
        &self,
        log: &Arc<dyn EventLog>,
        n: usize,
        pairs: &[(String, String)],
        arrival: &str,
    ) {
        metrics::counter!(SOURCE_EVENTS, "kind" => self.kind, "source" => self.source.clone())
            .increment(n as u64);
        if self.record {
            let pairs = pairs.iter().map(|(t, s)| (t.as_str(), s.as_str()));
            self.event_types
                .record(log.as_ref(), &self.broker, pairs, arrival)
                .await;
        }
    }

    /// Counts one notification or message that could not be stored, and what became of it
    /// (`action`, see `spec/metrics.md`).
    pub fn malformed(&self, action: &'static str) {
        metrics::counter!(SOURCE_MALFORMED, "kind" => self.kind, "source" => self.source.clone(), "action" => action)
            .increment(1);
    }

    /// Appends once: Ok once the events are stored (and counted).
    pub async fn append_once(&self, log: &Arc<dyn EventLog>, batch: Batch) -> Result<(), LogError> {
        let Batch {
            encoded,
            pairs,
            arrival,
        } = batch;
        if encoded.is_empty() {
            return Ok(());
        }
        let n = encoded.len();
        log.append(&self.broker, encoded).await?;
        self.stored(log, n, &pairs, &arrival).await;
        Ok(())
    }

    /// Appends for an HTTP source: the problem to answer when the store refuses.
    pub async fn append(&self, log: &Arc<dyn EventLog>, batch: Batch) -> Result<(), Problem> {
        let source = self.source.as_str();
        match self.append_once(log, batch).await {
            Ok(()) => Ok(()),
            Err(LogError::Overloaded | LogError::ShuttingDown) => Err(overloaded(
                "the broker cannot take events right now; retry after the given delay",
            )),
            Err(e @ LogError::Storage(_)) => {
                tracing::error!(source, error = %e, "append failed");
                Err(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "urn:switchyard:problem:storage",
                    "storage failure",
                    "the event could not be stored; it was not accepted",
                ))
            }
        }
    }

    /// Appends for a pulling or scheduled source: retries (with a growing pause, up to 5 s)
    /// until the store takes the events and `ops`, so an accepted slot or message is never
    /// dropped; gives up only when the store shuts down.
    pub async fn append_until_stored(
        &self,
        log: &Arc<dyn EventLog>,
        batch: Batch,
        ops: Vec<WriteOp>,
    ) -> Result<(), LogError> {
        let mut pause = Duration::from_millis(50);
        let source = self.source.as_str();
        loop {
            match log
                .append_with(&self.broker, batch.encoded.clone(), ops.clone())
                .await
            {
                Ok(_) => {
                    self.stored(log, batch.len(), &batch.pairs, &batch.arrival)
                        .await;
                    return Ok(());
                }
                Err(LogError::ShuttingDown) => return Err(LogError::ShuttingDown),
                Err(e) => {
                    tracing::warn!(source, error = %e, retry_in_ms = pause.as_millis() as u64, "the broker did not take the source's events; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The `knativearrivaltime` of events arriving now.
fn arrival_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A new event id, unique across restarts and processes: for events built from input that
/// has no id of its own.
pub(crate) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A content type a wrapped message declares, if it can be the event's `datacontenttype`: a
/// message whose header holds something else (`json`, an empty string) is still wrapped,
/// without one.
pub(crate) fn content_type(value: Option<&str>) -> Option<String> {
    value
        .filter(|v| switchyard_core::validate::media_type("datacontenttype", v).is_ok())
        .map(str::to_owned)
}
