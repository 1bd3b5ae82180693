//! The one way events enter a broker's log, for ingress, every source and subscribers'
//! replies alike: the broker's `eventTypes` check, the broker's own attributes (the
//! `knativebrokerttl` loop guard and `knativearrivaltime`; this module is their one owner),
//! the storage encoding, one durable append, and `record`-mode discovery once stored.
//!
//! Refusals are typed ([`Refused`]); the HTTP layer turns them into problem bodies
//! (`problem.rs`), the other callers into log lines or attempt errors.

use std::ops::Range;
use std::sync::Arc;

use switchyard_core::{CloudEvent, EventError, ExtValue};

use crate::eventtypes::{EventTypePolicy, EventTypeRefusal};
use crate::log::{EventLog, LogError, WriteOp};
use switchyard_core::resources::EventTypeMode;

pub use switchyard_core::resources::{ARRIVAL_EXTENSION, TTL_EXTENSION};

/// How an appended event gets its `knativebrokerttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Keep the event's own (refused when it is not above 0; lowered to this broker default
    /// when above it), or set the default.
    KeepOrDefault(i32),
    /// Set this value whatever the event carries (a reply: one less than its original's).
    Set(i32),
}

/// The TTL a reply to `original` gets: one less than the original's. A reply whose TTL would
/// be 0 or less is dropped (that is how reply loops die).
pub fn reply_ttl(original: &CloudEvent) -> i64 {
    original
        .extensions
        .get(TTL_EXTENSION)
        .and_then(ExtValue::as_i64)
        .unwrap_or(i64::from(switchyard_core::resources::DEFAULT_BROKER_TTL))
        - 1
}

/// The `knativearrivaltime` of events arriving now.
pub fn arrival_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Why the broker does not take an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Its `knativebrokerttl` is 0 or less.
    #[error(
        "attribute `{TTL_EXTENSION}` is 0 or less: the event has been through too many brokers or replies (a loop?)"
    )]
    TtlExhausted,
    /// Its `knativebrokerttl` is not an integer.
    #[error("attribute `{TTL_EXTENSION}` must be an integer")]
    TtlNotInteger,
    /// The broker's `eventTypes` refuse it.
    #[error(transparent)]
    EventType(#[from] EventTypeRefusal),
    /// An attribute the source adds makes it invalid.
    #[error(transparent)]
    Invalid(#[from] EventError),
}

/// A refusal, and which event of several it is about.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{reason}", match .index { Some(i) => format!("event {i} of the batch: "), None => String::new() })]
pub struct Refused {
    /// The position of the refused event, when there were several.
    pub index: Option<usize>,
    /// Why.
    pub reason: Refusal,
}

impl Refused {
    fn of(index: usize, count: usize, reason: impl Into<Refusal>) -> Refused {
        Refused {
            index: (count > 1).then_some(index),
            reason: reason.into(),
        }
    }
}

/// Sets the broker's attributes on an accepted event: the TTL by `ttl`'s rule and the
/// arrival time.
pub fn stamp(event: &mut CloudEvent, ttl: Ttl, arrival: &str) -> Result<(), Refusal> {
    let ttl = match (ttl, event.extensions.get(TTL_EXTENSION)) {
        (Ttl::Set(t) | Ttl::KeepOrDefault(t), None) | (Ttl::Set(t), Some(_)) => t,
        (Ttl::KeepOrDefault(default), Some(v)) => match v.as_i64() {
            // A producer cannot buy a longer loop than the broker allows.
            Some(t) if t > 0 => i32::try_from(t).unwrap_or(i32::MAX).min(default),
            Some(_) => return Err(Refusal::TtlExhausted),
            None => return Err(Refusal::TtlNotInteger),
        },
    };
    event
        .extensions
        .insert(TTL_EXTENSION.to_owned(), ExtValue::Integer(ttl));
    event.extensions.insert(
        ARRIVAL_EXTENSION.to_owned(),
        ExtValue::Timestamp(arrival.to_owned()),
    );
    Ok(())
}

/// Events ready for one append to one broker: encoded for the log, with the (type, source)
/// pairs a broker in `record` mode counts once they are stored.
#[derive(Debug, Clone)]
pub struct Batch {
    broker: String,
    encoded: Vec<Vec<u8>>,
    pairs: Vec<(String, String)>,
    /// The events' `knativearrivaltime`, taken once per batch.
    arrival: String,
    /// Whether the broker counts the pairs it stores (`record`).
    record: bool,
    /// Whether the broker validates what it stores (`warn`, `enforce`).
    validates: bool,
}

/// Checks `events` against `broker`'s EventTypes (counted, and logged in `warn`): in
/// `enforce`, the first failing event refuses them all.
pub fn check(policy: &EventTypePolicy, broker: &str, events: &[CloudEvent]) -> Result<(), Refused> {
    policy
        .check(broker, events)
        .map_err(|(index, r)| Refused::of(index, events.len(), r))
}

impl Batch {
    /// An empty batch for `broker`, of events arriving now.
    pub fn new(policy: &EventTypePolicy, broker: &str, capacity: usize) -> Batch {
        let mode = policy.mode(broker).mode;
        Batch {
            broker: broker.to_owned(),
            encoded: Vec::with_capacity(capacity),
            pairs: Vec::new(),
            arrival: arrival_now(),
            record: mode == EventTypeMode::Record,
            validates: matches!(mode, EventTypeMode::Warn | EventTypeMode::Enforce),
        }
    }

    /// The broker's attributes on each of `events` and their encoding, for events already
    /// [`check`]ed: all of them, or the refusal of one.
    pub fn stamped(
        policy: &EventTypePolicy,
        broker: &str,
        ttl: Ttl,
        events: &mut [CloudEvent],
    ) -> Result<Batch, Refused> {
        let mut batch = Batch::new(policy, broker, events.len());
        let count = events.len();
        for (index, event) in events.iter_mut().enumerate() {
            stamp(event, ttl, &batch.arrival).map_err(|r| Refused::of(index, count, r))?;
            batch.push(event);
        }
        Ok(batch)
    }

    /// One event of a stream, checked (when its broker validates), stamped and added: a
    /// stream takes events one by one, so one that cannot be stored is handled on its own
    /// instead of failing the batch it arrived with.
    pub fn add(
        &mut self,
        policy: &EventTypePolicy,
        ttl: Ttl,
        mut event: CloudEvent,
    ) -> Result<(), Refusal> {
        if self.validates {
            policy
                .check(&self.broker, std::slice::from_ref(&event))
                .map_err(|(_, r)| r)?;
        }
        stamp(&mut event, ttl, &self.arrival)?;
        self.push(&event);
        Ok(())
    }

    fn push(&mut self, event: &CloudEvent) {
        self.encoded.push(switchyard_core::store::encode(event));
        if self.record {
            self.pairs.push((event.ty.clone(), event.source.clone()));
        }
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.encoded.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    /// The broker, `namespace/name`.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The events' `knativearrivaltime`.
    pub fn arrival(&self) -> &str {
        &self.arrival
    }

    /// The events in the storage encoding (for a log that publishes them itself, with ids
    /// of its own: the JetStream engine's replies).
    pub fn encoded(&self) -> &[Vec<u8>] {
        &self.encoded
    }
}

/// A batch the log holds, whose (type, source) pairs `record` mode has yet to count.
#[derive(Debug)]
#[must_use = "pass it to Appender::recorded"]
pub struct Stored {
    offsets: Range<u64>,
    broker: String,
    pairs: Vec<(String, String)>,
    arrival: String,
}

/// Appends events to brokers' logs under the brokers' `eventTypes` settings.
#[derive(Clone)]
pub struct Appender {
    log: Arc<dyn EventLog>,
    policy: Arc<EventTypePolicy>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

impl Appender {
    /// An appender to `log` under `policy`.
    pub fn new(log: Arc<dyn EventLog>, policy: Arc<EventTypePolicy>) -> Self {
        Appender { log, policy }
    }

    /// The log it appends to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The `eventTypes` settings it applies.
    pub fn policy(&self) -> &Arc<EventTypePolicy> {
        &self.policy
    }

    /// [`check`], then [`Batch::stamped`].
    pub fn prepare(
        &self,
        broker: &str,
        ttl: Ttl,
        events: &mut [CloudEvent],
    ) -> Result<Batch, Refused> {
        check(&self.policy, broker, events)?;
        Batch::stamped(&self.policy, broker, ttl, events)
    }

    /// Appends the batch in one transaction; once it is durable, `record` mode counts its
    /// pairs. Resolves to the offsets the events got.
    pub async fn append(&self, batch: Batch) -> Result<Range<u64>, LogError> {
        let stored = self.store(batch).await?;
        Ok(self.recorded(stored).await)
    }

    /// [`append`](Self::append) in two steps, for a caller that times the store alone
    /// (ingress): the append, then [`recorded`](Self::recorded), which must follow.
    pub async fn store(&self, batch: Batch) -> Result<Stored, LogError> {
        self.store_as(batch, false).await
    }

    /// [`append`](Self::append) for a subscriber's replies, which may use the store's
    /// free-space reserve ([`EventLog::append_reply`]).
    pub async fn append_reply(&self, batch: Batch) -> Result<Range<u64>, LogError> {
        let stored = self.store_as(batch, true).await?;
        Ok(self.recorded(stored).await)
    }

    async fn store_as(&self, batch: Batch, reply: bool) -> Result<Stored, LogError> {
        let Batch {
            broker,
            encoded,
            pairs,
            arrival,
            record,
            ..
        } = batch;
        let offsets = if encoded.is_empty() {
            0..0
        } else if reply {
            self.log.append_reply(&broker, encoded).await?
        } else {
            self.log.append(&broker, encoded).await?
        };
        Ok(Stored {
            offsets,
            broker,
            pairs: if record { pairs } else { Vec::new() },
            arrival,
        })
    }

    /// After [`store`](Self::store): `record` mode counts the stored pairs. The offsets.
    pub async fn recorded(&self, stored: Stored) -> Range<u64> {
        if !stored.pairs.is_empty() {
            self.record(&stored.broker, &stored.pairs, &stored.arrival)
                .await;
        }
        stored.offsets
    }

    /// Appends the batch and `ops` (side-table writes) in one transaction; the batch is kept,
    /// so a caller may try again.
    pub async fn append_with(
        &self,
        batch: &Batch,
        ops: Vec<WriteOp>,
    ) -> Result<Range<u64>, LogError> {
        let offsets = self
            .log
            .append_with(&batch.broker, batch.encoded.clone(), ops)
            .await?;
        if batch.record {
            self.record(&batch.broker, &batch.pairs, &batch.arrival)
                .await;
        }
        Ok(offsets)
    }

    async fn record(&self, broker: &str, pairs: &[(String, String)], arrival: &str) {
        let pairs = pairs.iter().map(|(t, s)| (t.as_str(), s.as_str()));
        self.policy
            .record(self.log.as_ref(), broker, pairs, arrival)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ttl: Option<ExtValue>) -> CloudEvent {
        let Ok(mut e) = CloudEvent::new("1", "/s", "t") else {
            panic!("a valid event");
        };
        if let Some(v) = ttl {
            e.extensions.insert(TTL_EXTENSION.to_owned(), v);
        }
        e
    }

    fn ttl_after(e: &mut CloudEvent, rule: Ttl) -> Result<Option<i64>, String> {
        stamp(e, rule, "2026-12-03T00:00:00Z").map_err(|r| r.to_string())?;
        Ok(e.extensions.get(TTL_EXTENSION).and_then(ExtValue::as_i64))
    }

    #[test]
    fn the_ttl_rules() {
        use ExtValue::{Integer, String as Text};
        let keep = Ttl::KeepOrDefault(255);
        assert_eq!(ttl_after(&mut event(None), keep), Ok(Some(255)));
        assert_eq!(ttl_after(&mut event(Some(Integer(7))), keep), Ok(Some(7)));
        // Above the broker's default, clamped to it.
        assert_eq!(
            ttl_after(&mut event(Some(Integer(100_000))), keep),
            Ok(Some(255))
        );
        assert_eq!(
            ttl_after(&mut event(Some(Text("99999999999".into()))), keep),
            Ok(Some(255))
        );
        assert_eq!(
            ttl_after(&mut event(Some(Text("7".into()))), keep),
            Ok(Some(7))
        );
        let exhausted = ttl_after(&mut event(Some(Integer(0))), keep);
        assert!(exhausted.is_err_and(|e| e.contains("0 or less")));
        let text = ttl_after(&mut event(Some(Text("x".into()))), keep);
        assert!(text.is_err_and(|e| e.contains("must be an integer")));
        // A reply's TTL is set whatever it carried.
        assert_eq!(
            ttl_after(&mut event(Some(Integer(200))), Ttl::Set(9)),
            Ok(Some(9))
        );
        let mut e = event(None);
        let _ = ttl_after(&mut e, Ttl::Set(3));
        assert!(e.extensions.contains_key(ARRIVAL_EXTENSION));
    }

    #[test]
    fn a_refusal_in_a_batch_names_its_event() {
        let one = Refused::of(0, 1, Refusal::TtlExhausted);
        assert!(one.to_string().starts_with("attribute"));
        let third = Refused::of(2, 5, Refusal::TtlExhausted);
        assert!(
            third
                .to_string()
                .starts_with("event 2 of the batch: attribute")
        );
    }
}
