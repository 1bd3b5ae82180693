//! What the dispatcher keeps in the store's side tables: scheduled retries and dead letters.
//! Both carry a copy of the event (retention of the log does not reach them) and every
//! attempt so far. Layouts are in `spec/delivery.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use switchyard_core::CloudEvent;

use crate::delivery::AttemptResult;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The longest body excerpt kept per attempt, in bytes.
pub const BODY_EXCERPT_BYTES: usize = 1024;

/// One attempt, as kept with a retry or a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When it started (RFC 3339).
    pub time: String,
    /// The HTTP status, when an answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there was no usable answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub latency_ms: u64,
    /// The start of the response body, as text (lossy UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// It failed while the subscriber was down, so it did not count against `retry`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// For a line that stands for attempts not listed (a long history cut short): how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Attempt {
    /// Records an attempt's result.
    pub fn of(r: &AttemptResult) -> Attempt {
        let body = (!r.body.is_empty()).then(|| {
            let end = r.body.len().min(BODY_EXCERPT_BYTES);
            String::from_utf8_lossy(&r.body[..end]).into_owned()
        });
        Attempt {
            time: rfc3339(r.started),
            status: r.status,
            error: r.error.as_ref().map(ToString::to_string),
            latency_ms: u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
            body,
            held: r.held,
            count: None,
        }
    }

    /// How many attempts this line stands for: 1, or a summary's count.
    pub fn weight(&self) -> u64 {
        self.count.unwrap_or(1)
    }

    /// When it started, in milliseconds since the epoch (`None` if the record's time does
    /// not parse).
    pub fn started_ms(&self) -> Option<u64> {
        let t = chrono::DateTime::parse_from_rfc3339(&self.time).ok()?;
        u64::try_from(t.timestamp_millis()).ok()
    }
}

/// A scheduled retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryEntry {
    /// The event's offset in the broker's log.
    pub offset: u64,
    /// The event, storage encoding, base64.
    pub event: String,
    /// Attempts made so far.
    pub attempts: Vec<Attempt>,
    /// Deliver here instead of the trigger's subscriber (a redrive to another URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl RetryEntry {
    /// The event.
    pub fn event(&self) -> Option<CloudEvent> {
        let bytes = B64.decode(&self.event).ok()?;
        switchyard_core::store::decode(&bytes).ok()
    }
}

/// Encodes an event for a record.
pub fn encode_event(e: &CloudEvent) -> String {
    B64.encode(switchyard_core::store::encode(e))
}

/// A dead letter: an event a trigger could not deliver, with every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its id in the broker's dead-letter store.
    pub id: u64,
    /// The broker, `namespace/name`.
    pub broker: String,
    /// The trigger's name.
    pub trigger: String,
    /// The event's offset in the broker's log.
    pub offset: u64,
    /// When it was dead-lettered (RFC 3339) and in ms since the epoch.
    pub time: String,
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    /// Why it was dead-lettered.
    pub reason: DeadLetterReason,
    /// The subscriber it was for.
    pub destination: String,
    /// The last status, if any answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The event's `type`, for filtering.
    #[serde(rename = "type")]
    pub ty: String,
    /// The event's `source`, for filtering.
    pub source: String,
    /// The event's `id`.
    pub event_id: String,
    /// The event, storage encoding, base64.
    pub event: String,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// `knativeerrordata` for the dead-letter sink: the last body, base64, at most 1024
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<String>,
}

/// Why an event was dead-lettered; stored and shown as its text (`retries exhausted`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterReason {
    /// Every retry failed.
    #[serde(rename = "retries exhausted")]
    RetriesExhausted,
    /// The subscriber's answer is not retryable (a 400, a 410, a redirect, …).
    #[serde(rename = "not retryable")]
    NotRetryable,
    /// The trigger was removed from the configuration while a retry was scheduled.
    #[serde(rename = "trigger removed")]
    TriggerRemoved,
}

impl DeadLetterReason {
    /// The reason as stored, shown and counted (the `reason` label).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries exhausted",
            DeadLetterReason::NotRetryable => "not retryable",
            DeadLetterReason::TriggerRemoved => "trigger removed",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a dead letter came from: the event, whose subscriber it was for, and which trigger
/// gave up on it.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The broker, `namespace/name`.
    pub broker: &'a str,
    /// The trigger's name.
    pub trigger: &'a str,
    /// The event's offset in the broker's log.
    pub offset: u64,
    /// The event, storage encoding, base64 (as [`encode_event`] makes it).
    pub event: String,
    /// The subscriber it was for.
    pub destination: String,
}

impl DeadLetter {
    /// A new dead letter (a fresh id, the time now) for an event `origin` names.
    pub fn new(
        origin: Origin<'_>,
        reason: DeadLetterReason,
        attempts: Vec<Attempt>,
        error_data: Option<String>,
    ) -> DeadLetter {
        let event = B64
            .decode(&origin.event)
            .ok()
            .and_then(|b| switchyard_core::store::decode(&b).ok());
        let (ty, source, event_id) = event.map(|e| (e.ty, e.source, e.id)).unwrap_or_default();
        DeadLetter {
            id: new_id(),
            broker: origin.broker.to_owned(),
            trigger: origin.trigger.to_owned(),
            offset: origin.offset,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            time_ms: now_ms(),
            reason,
            destination: origin.destination,
            status: attempts.last().and_then(|a| a.status),
            ty,
            source,
            event_id,
            event: origin.event,
            attempts,
            error_data,
        }
    }

    /// The `knativeerror*` attributes a dead-letter sink gets with the event (Knative's
    /// data plane): where it was going, the last status, the start of the last body.
    pub fn error_extensions(&self) -> Vec<(&'static str, String)> {
        let mut extra = vec![("knativeerrordest", self.destination.clone())];
        if let Some(status) = self.status {
            extra.push(("knativeerrorcode", status.to_string()));
        }
        if let Some(data) = &self.error_data {
            extra.push(("knativeerrordata", data.clone()));
        }
        extra
    }

    /// The event.
    pub fn event(&self) -> Option<CloudEvent> {
        let bytes = B64.decode(&self.event).ok()?;
        switchyard_core::store::decode(&bytes).ok()
    }
}

/// `knativeerrordata` for a failed attempt's response body: base64, at most 1024 characters.
pub fn error_data(body: &[u8]) -> Option<String> {
    (!body.is_empty()).then(|| {
        let mut data = B64.encode(body);
        data.truncate(1024);
        data
    })
}

/// A record as the store keeps it (JSON). The records are plain data, so this cannot fail in
/// practice; should it, the write fails rather than storing an empty value.
pub fn to_value(record: &impl Serialize) -> Result<Vec<u8>, switchyard_broker::log::LogError> {
    serde_json::to_vec(record).map_err(|e| {
        switchyard_broker::log::LogError::Storage(format!("cannot encode a record: {e}"))
    })
}

/// The last id [`new_id`] handed out.
static LAST_ID: AtomicU64 = AtomicU64::new(0);

/// Ids that sort by time and are unique within the process (ms << 16 | counter).
pub fn new_id() -> u64 {
    let candidate = now_ms() << 16;
    let mut prev = LAST_ID.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(prev + 1);
        match LAST_ID.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// Makes every id [`new_id`] hands out from now on larger than `id`: a store's ids from an
/// earlier run stay below this run's even when the clock went back in between.
pub fn ids_after(id: u64) {
    LAST_ID.fetch_max(id, Ordering::Relaxed);
}

/// The cursor a trigger keeps in its broker's log: `trigger/{name}`.
pub fn trigger_consumer(trigger: &str) -> String {
    format!("trigger/{trigger}")
}

/// Whether a cursor of a broker's log is a trigger's.
pub fn is_trigger_consumer(consumer: &str) -> bool {
    consumer.starts_with("trigger/")
}

/// Prefix of a trigger's retry keys: `{broker}#{trigger}` and a zero byte.
pub fn retry_prefix(broker: &str, trigger: &str) -> Vec<u8> {
    let mut k = format!("{broker}#{trigger}").into_bytes();
    k.push(0);
    k
}

/// A retry key: prefix, due time (ms, big-endian), id (big-endian).
pub fn retry_key(prefix: &[u8], due_ms: u64, id: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The range of keys of every trigger's retries in `broker`.
pub fn retries_of_broker(broker: &str) -> (Vec<u8>, Vec<u8>) {
    (
        format!("{broker}#").into_bytes(),
        format!("{broker}$").into_bytes(),
    )
}

/// The trigger name of a key of `broker`'s retries.
pub fn retry_trigger<'k>(broker: &str, key: &'k [u8]) -> Option<&'k str> {
    let rest = key.get(broker.len() + 1..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Due time of a retry key.
pub fn retry_due(prefix_len: usize, key: &[u8]) -> u64 {
    key.get(prefix_len..prefix_len + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Prefix of a broker's dead-letter keys.
pub fn deadletter_prefix(broker: &str) -> Vec<u8> {
    let mut k = broker.as_bytes().to_vec();
    k.push(0);
    k
}

/// A dead-letter key: prefix and id (big-endian).
pub fn deadletter_key(broker: &str, id: u64) -> Vec<u8> {
    let mut k = deadletter_prefix(broker);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Prefix of a broker's "still to send to the dead-letter sink" markers (same table as the
/// dead letters, a different separator so listings never see them).
pub fn dls_pending_prefix(broker: &str) -> Vec<u8> {
    let mut k = broker.as_bytes().to_vec();
    k.push(1);
    k
}

/// The marker that dead letter `id` still has to reach the dead-letter sink.
pub fn dls_pending_key(broker: &str, id: u64) -> Vec<u8> {
    let mut k = dls_pending_prefix(broker);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The smallest key above every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xFF);
    end.extend_from_slice(&[0xFF; 16]);
    end
}
