//! What every source shares: the broker its events go to, the `ceOverrides` extensions, the
//! broker's appender (`switchyard_broker::append`: `eventTypes` checked before the append,
//! recorded after it, the broker's attributes, as for ingress), the durable append (with the
//! answers HTTP sources give when it fails), and the source metrics (`switchyard_source_events_total` counted here after each append,
//! malformed input through [`Target::malformed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_broker::append::{self, Appender, Batch, Refused, Ttl};
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError, WriteOp};
use switchyard_broker::metrics::{SOURCE_EVENTS, SOURCE_MALFORMED};
use switchyard_broker::problem::Problem;
use switchyard_broker::traces;
use switchyard_core::backoff::Backoff;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::resources::DEFAULT_BROKER_TTL;
use switchyard_core::sources::CeOverrides;
use switchyard_core::{CloudEvent, ExtValue};
use switchyard_triggers::dispatch::health::Health;

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
    /// The source's recent appends, for its status (looked up once, not per batch).
    health: Arc<Health>,
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
        Target {
            event_types: Arc::clone(event_types),
            broker: switchyard_core::id::join(&bns, &bname),
            kind,
            source: SourceId::new(ns, name).to_string(),
            health: Health::of_source(&SourceId::new(ns, name).to_string()),
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
        Batch::new(&self.event_types, &self.broker, capacity)
    }

    /// Adds the overrides, checks the events against the broker's EventTypes and adds the
    /// broker's attributes, as ingress does, and encodes them for the log; the refusal when
    /// one of them cannot be stored (in `enforce` mode its data breaks its schema, or with
    /// `eventTypesStrict` no EventType registers its type; a `knativebrokerttl` of 0), which
    /// an HTTP source answers as ingress would.
    pub fn prepare(&self, events: &mut [CloudEvent]) -> Result<Batch, Refused> {
        let count = events.len();
        for (index, event) in events.iter_mut().enumerate() {
            self.override_extensions(event).map_err(|e| Refused {
                index: (count > 1).then_some(index),
                reason: e.into(),
            })?;
        }
        append::check(&self.event_types, &self.broker, events)?;
        Batch::stamped(&self.event_types, &self.broker, self.ttl(), events)
    }

    /// Whether the broker's EventTypes would refuse these events (`enforce`), without
    /// counting or logging: for a PingSource's check at load.
    pub fn refusal(&self, events: &[CloudEvent]) -> Result<(), String> {
        self.event_types
            .refusal(&self.broker, events)
            .map_err(|(_, r)| r.to_string())
    }

    /// [`prepare`](Self::prepare) for one event of a stream, added to `batch`; the reason
    /// when it cannot be stored. Stream sources take events one by one, so one such event is
    /// handled as malformed instead of failing the batch it arrived with. `traceparent` is
    /// the message's own W3C header (an instrumented producer's), which the event continues
    /// while traces are on when it carries no `traceparent` extension of its own.
    pub fn add(
        &self,
        batch: &mut Batch,
        mut event: CloudEvent,
        traceparent: Option<&str>,
    ) -> Result<(), String> {
        if let Some(tp) = traceparent
            && traces::enabled()
            && !event.extensions.contains_key(traces::TRACEPARENT)
            && traces::is_traceparent(tp)
        {
            event.extensions.insert(
                traces::TRACEPARENT.to_owned(),
                ExtValue::String(tp.to_owned()),
            );
        }
        self.override_extensions(&mut event)
            .map_err(|e| e.to_string())?;
        batch
            .add(&self.event_types, self.ttl(), event)
            .map_err(|r| r.to_string())
    }

    fn ttl(&self) -> Ttl {
        Ttl::KeepOrDefault(self.ttl)
    }

    /// The `ceOverrides` extensions; and while traces are on, the source's span: a child of
    /// the event's `traceparent` extension (which a stream message's `traceparent` header
    /// sets when the event has none), else a new trace, its context given to the event
    /// unless it has one.
    fn override_extensions(
        &self,
        event: &mut CloudEvent,
    ) -> Result<(), switchyard_core::EventError> {
        for (k, v) in &self.extensions {
            event.set_extension(k, ExtValue::String(v.clone()))?;
        }
        if traces::enabled() {
            let span = traces::Span::source(self.kind, &self.source, event, None);
            span.stamp(event);
            span.end();
        }
        Ok(())
    }

    fn appender(&self, log: &Arc<dyn EventLog>) -> Appender {
        Appender::new(Arc::clone(log), Arc::clone(&self.event_types))
    }

    /// After `n` events were stored: counts them (and in the source's status).
    fn stored(&self, n: usize) {
        metrics::counter!(SOURCE_EVENTS, "kind" => self.kind, "source" => self.source.clone())
            .increment(n as u64);
        self.health.succeeded(n as u64);
    }

    /// Counts one notification or message that could not be stored, and what became of it
    /// (`action`, see `spec/metrics.md`).
    pub fn malformed(&self, action: &'static str) {
        metrics::counter!(SOURCE_MALFORMED, "kind" => self.kind, "source" => self.source.clone(), "action" => action)
            .increment(1);
        self.health
            .failed(format!("a malformed message ({action})"));
    }

    /// Notes in the source's status that the store did not take its events.
    fn refused(&self, e: &LogError) {
        self.health
            .failed(format!("the store did not take its events: {e}"));
    }

    /// Appends once: Ok once the events are stored (and counted).
    pub async fn append_once(&self, log: &Arc<dyn EventLog>, batch: Batch) -> Result<(), LogError> {
        let n = batch.len();
        self.appender(log).append(batch).await?;
        if n > 0 {
            self.stored(n);
        }
        Ok(())
    }

    /// Appends for an HTTP source: the problem to answer when the store refuses.
    pub async fn append(&self, log: &Arc<dyn EventLog>, batch: Batch) -> Result<(), Problem> {
        let source = self.source.as_str();
        let appended = self.append_once(log, batch).await;
        if let Err(e) = &appended {
            self.refused(e);
        }
        match appended {
            Ok(()) => Ok(()),
            Err(LogError::Overloaded | LogError::ShuttingDown | LogError::Unavailable(_)) => {
                Err(Problem::overloaded(
                    "the broker cannot take events right now; retry after the given delay",
                ))
            }
            Err(LogError::DiskFull(_)) => Err(Problem::disk_full()),
            Err(LogError::OverBudget(_)) => Err(Problem::store_full()),
            Err(e @ LogError::Storage(_)) => {
                tracing::error!(source, error = %e, "append failed");
                Err(Problem::storage_failure())
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
        let mut backoff = Backoff::STORE;
        let source = self.source.as_str();
        let appender = self.appender(log);
        loop {
            match appender.append_with(&batch, ops.clone()).await {
                Ok(_) => {
                    self.stored(batch.len());
                    return Ok(());
                }
                Err(LogError::ShuttingDown) => return Err(LogError::ShuttingDown),
                Err(e) => {
                    self.refused(&e);
                    let pause = backoff.next_pause();
                    tracing::warn!(source, error = %e, retry_in_ms = pause.as_millis() as u64, "the broker did not take the source's events; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
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
