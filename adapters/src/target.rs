//! What every source shares: the broker its events go to, the `ceOverrides` extensions, the
//! durable append (with the answers HTTP sources give when it fails), and the source metrics
//! (`switchyard_source_events_total` counted here after each append, malformed input through
//! [`Target::malformed`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use switchyard_broker::ingress::{invalid_event, overloaded, stamp};
use switchyard_broker::log::{EventLog, LogError, WriteOp};
use switchyard_broker::metrics::{SOURCE_EVENTS, SOURCE_MALFORMED};
use switchyard_broker::problem::Problem;
use switchyard_core::config::Config;
use switchyard_core::resources::DEFAULT_BROKER_TTL;
use switchyard_core::sources::CeOverrides;
use switchyard_core::{CloudEvent, ExtValue};

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
}

impl Target {
    /// The target of source `kind` `ns/name` with this sink and overrides.
    pub fn resolve(
        config: &Config,
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
            broker: format!("{bns}/{bname}"),
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

    /// Adds the overrides and the broker's stamps, and encodes the events for the log.
    pub fn prepare(&self, events: &mut [CloudEvent]) -> Result<Vec<Vec<u8>>, Problem> {
        let arrival = arrival_now();
        for event in events.iter_mut() {
            self.stamp(event, &arrival)?;
        }
        Ok(events.iter().map(switchyard_core::store::encode).collect())
    }

    /// Adds the overrides and the broker's stamps to one event and encodes it for the log; the
    /// reason when the event cannot be stored (a `knativebrokerttl` of 0 or not an integer).
    /// Stream sources stamp event by event, so one such event is handled as malformed
    /// instead of failing the batch it arrived with. `arrival` is [`arrival_now`], taken once
    /// per batch.
    pub fn encode_one(&self, mut event: CloudEvent, arrival: &str) -> Result<Vec<u8>, String> {
        self.stamp(&mut event, arrival).map_err(|p| p.detail)?;
        Ok(switchyard_core::store::encode(&event))
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

    /// Counts `n` events stored.
    pub fn stored(&self, n: usize) {
        metrics::counter!(SOURCE_EVENTS, "kind" => self.kind, "source" => self.source.clone())
            .increment(n as u64);
    }

    /// Counts one notification or message that could not be stored, and what became of it
    /// (`action`, see `spec/metrics.md`).
    pub fn malformed(&self, action: &'static str) {
        metrics::counter!(SOURCE_MALFORMED, "kind" => self.kind, "source" => self.source.clone(), "action" => action)
            .increment(1);
    }

    /// Appends for an HTTP source: the problem to answer when the store refuses.
    pub async fn append(
        &self,
        log: &Arc<dyn EventLog>,
        encoded: Vec<Vec<u8>>,
    ) -> Result<(), Problem> {
        if encoded.is_empty() {
            return Ok(());
        }
        let n = encoded.len();
        let source = self.source.as_str();
        match log.append(&self.broker, encoded).await {
            Ok(_) => {
                self.stored(n);
                Ok(())
            }
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
        encoded: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
    ) -> Result<(), LogError> {
        let mut pause = Duration::from_millis(50);
        let source = self.source.as_str();
        loop {
            match log
                .append_with(&self.broker, encoded.clone(), ops.clone())
                .await
            {
                Ok(_) => {
                    self.stored(encoded.len());
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
pub(crate) fn arrival_now() -> String {
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
