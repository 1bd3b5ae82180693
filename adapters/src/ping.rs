//! The cron source (`PingSource`): fires one event per slot of its schedule into its broker.
//!
//! Each fired slot is stored together with the source's "last fired" record, in one
//! transaction, so after a restart (or a crash) the source resumes after that slot and never
//! fires it again. Slots missed while the server was down are fired per `catchUp`
//! (`spec/sources.md`). The event's `id` is made from the source's name and the slot, so a
//! duplicate anywhere downstream is recognisable.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError, Table, WriteOp, blocking};
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::schedule::Schedule;
use switchyard_core::sources::{CatchUp, CatchUpPolicy, MAX_CATCH_UP_SLOTS};
use switchyard_core::{CloudEvent, Data};

use crate::SourceError;
use crate::clock::Clock;
use crate::kind::{Kind, Setup, StartFuture, Started};
use crate::target::Target;
use switchyard_broker::tasks::Tasks;

/// `type` of every PingSource event (Knative's).
pub const PING_TYPE: &str = "dev.knative.sources.ping";

/// Why the PingSources could not start.
#[derive(Debug, thiserror::Error)]
#[error("PingSource {source_id}: {message}")]
pub struct PingError {
    /// `namespace/name`.
    pub source_id: String,
    /// What is wrong.
    pub message: String,
}

/// What one PingSource sends: the event of each slot, and where it goes.
struct Ping {
    id: String,
    name: String,
    source: String,
    content_type: Option<String>,
    data: Option<Bytes>,
    target: Target,
}

/// One PingSource, ready to run.
struct Runner {
    ping: Ping,
    state_key: Vec<u8>,
    schedule: Schedule,
    catch_up: CatchUp,
    log: Arc<dyn EventLog>,
    clock: Clock,
}

/// A PingSource checked and ready to run, but for the store and the clock.
struct Planned {
    ping: Ping,
    state_key: Vec<u8>,
    schedule: Schedule,
    catch_up: CatchUp,
}

/// The PingSources of `config`, checked: a bad schedule or zone, or data the broker would
/// refuse, is an error.
fn resolve_all(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    now: DateTime<Utc>,
) -> Result<Vec<Planned>, PingError> {
    let mut out = Vec::new();
    for ((ns, name), p) in &config.ping_sources {
        let err = |message: String| PingError {
            source_id: SourceId::new(ns, name).to_string(),
            message,
        };
        let schedule = p.schedule().map_err(|e| err(e.to_string()))?;
        let data = p.data_bytes().map_err(|e| err(e.to_string()))?;
        let ping = Ping {
            id: SourceId::new(ns, name).to_string(),
            name: name.clone(),
            source: format!("/apis/v1/namespaces/{ns}/pingsources/{name}"),
            content_type: p.spec.content_type.clone(),
            data: data.map(Bytes::from),
            target: Target::resolve(
                config,
                event_types,
                "PingSource",
                ns,
                name,
                &p.spec.sink,
                p.spec.ce_overrides.as_ref(),
            ),
        };
        ping.check(now)?;
        out.push(Planned {
            ping,
            state_key: state_key(ns, name),
            schedule,
            catch_up: p.spec.catch_up.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Checks every PingSource of `config` as [`start`] does, without starting any (for
/// `switchyard validate`).
pub fn check(config: &Config, event_types: &Arc<EventTypePolicy>) -> Result<(), PingError> {
    resolve_all(config, event_types, Utc::now()).map(|_| ())
}

/// Starts every PingSource of `config`.
pub async fn start(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: Arc<dyn EventLog>,
    clock: Clock,
) -> Result<Tasks, PingError> {
    let mut tasks = Tasks::new("PingSources");
    // Every runner counts from this moment, not from whenever its task first runs: a clock
    // moved right after `serve` started must not skip a slot.
    let now = clock.now();
    for p in resolve_all(config, event_types, now)? {
        let r = Runner {
            ping: p.ping,
            state_key: p.state_key,
            schedule: p.schedule,
            catch_up: p.catch_up,
            log: Arc::clone(&log),
            clock: clock.clone(),
        };
        let last = r.last_fired().await.map_err(|e| PingError {
            source_id: r.ping.id.clone(),
            message: format!("cannot read its state: {e}"),
        })?;
        tasks.spawn(r.run(last, now));
    }
    Ok(tasks)
}

fn state_key(ns: &str, name: &str) -> Vec<u8> {
    format!("pingsource/{ns}/{name}").into_bytes()
}

/// The slots to fire at start-up: those after `last` (the last fired) up to `now`, as the
/// policy says, oldest first.
pub fn missed_slots(
    schedule: &Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: &CatchUp,
) -> Vec<DateTime<Utc>> {
    if catch_up.policy == CatchUpPolicy::None || now <= last {
        return Vec::new();
    }
    let window = chrono::Duration::from_std(catch_up.window()).unwrap_or(chrono::Duration::MAX);
    let oldest = now.checked_sub_signed(window).unwrap_or(last).max(last);
    let mut slots = std::collections::VecDeque::new();
    // Start just before the window so a slot exactly at its edge counts.
    let mut t = if oldest > last {
        oldest - chrono::Duration::nanoseconds(1)
    } else {
        last
    };
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        slots.push_back(next);
        if slots.len() > MAX_CATCH_UP_SLOTS {
            slots.pop_front();
        }
        t = next;
    }
    match catch_up.policy {
        CatchUpPolicy::None => Vec::new(),
        CatchUpPolicy::Last => slots.pop_back().into_iter().collect(),
        CatchUpPolicy::All => slots.into(),
    }
}

/// The `id` of the event of `slot`: the source's name and the slot in UTC.
pub fn slot_id(name: &str, slot: DateTime<Utc>) -> String {
    format!("{name}-{}", slot.format("%Y%m%dT%H%M%SZ"))
}

impl Ping {
    /// Every slot's event is the same but for its id and time: one the broker would refuse
    /// (its data breaks the schema of an EventType the broker enforces) is refused at load,
    /// instead of at every slot.
    fn check(&self, now: DateTime<Utc>) -> Result<(), PingError> {
        let err = |message: String| PingError {
            source_id: self.id.clone(),
            message,
        };
        let sample = self.event(now).map_err(|e| err(e.to_string()))?;
        self.target.refusal(&[sample]).map_err(|detail| {
            err(format!(
                "broker {} would refuse its events: {detail}",
                self.target.broker
            ))
        })?;
        Ok(())
    }

    fn event(&self, slot: DateTime<Utc>) -> Result<CloudEvent, switchyard_core::EventError> {
        let mut event = CloudEvent::new(slot_id(&self.name, slot), self.source.clone(), PING_TYPE)?;
        event.time = Some(slot.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
        event.datacontenttype.clone_from(&self.content_type);
        if let Some(d) = &self.data {
            event.data = Data::Binary(d.clone());
        }
        Ok(event)
    }
}

impl Runner {
    async fn last_fired(&self) -> Result<Option<DateTime<Utc>>, LogError> {
        let lo = self.state_key.clone();
        let mut hi = lo.clone();
        hi.push(0);
        let found = blocking(&self.log, move |log| {
            log.scan(Table::SourceState, &lo, &hi, 1)
        })
        .await?;
        Ok(found
            .first()
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Fires the slots after `last` (catching up those missed before `now`, by the policy),
    /// then every slot as the clock reaches it. `now` is when the source started.
    async fn run(self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let mut cursor = match last {
            Some(last) => {
                let missed = missed_slots(&self.schedule, last, now, &self.catch_up);
                if !missed.is_empty() {
                    tracing::info!(source = %self.ping.id, slots = missed.len(), policy = ?self.catch_up.policy, "catching up missed slots");
                }
                for slot in missed {
                    if self.fire(slot).await.is_err() {
                        return;
                    }
                }
                now.max(last)
            }
            None => now,
        };
        loop {
            let Some(next) = self.schedule.next_after(cursor) else {
                tracing::info!(source = %self.ping.id, "the schedule has no further slot");
                return;
            };
            self.clock.sleep_until(next).await;
            if self.fire(next).await.is_err() {
                return;
            }
            cursor = next;
        }
    }

    /// Stores the slot's event and the "last fired" record together.
    async fn fire(&self, slot: DateTime<Utc>) -> Result<(), LogError> {
        let mut events = match self.ping.event(slot) {
            Ok(e) => vec![e],
            Err(e) => {
                tracing::error!(source = %self.ping.id, error = %e, "cannot build the event");
                return Err(LogError::Storage(e.to_string()));
            }
        };
        let encoded = match self.ping.target.prepare(&mut events) {
            Ok(e) => e,
            Err(refused) => {
                tracing::error!(source = %self.ping.id, %refused, "the broker refuses the event; the source stops");
                return Err(LogError::Storage(refused.to_string()));
            }
        };
        let ops = vec![WriteOp::Put {
            table: Table::SourceState,
            key: self.state_key.clone(),
            value: slot
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .into_bytes(),
        }];
        self.ping
            .target
            .append_until_stored(&self.log, encoded, ops)
            .await?;
        tracing::debug!(source = %self.ping.id, %slot, "fired");
        Ok(())
    }
}

/// The PingSource kind.
pub(crate) const KIND: Kind = Kind {
    name: "PingSource",
    describe: |config| {
        config
            .ping_sources
            .iter()
            .map(|((ns, name), p)| {
                let tz = p.spec.timezone.as_deref().unwrap_or("UTC");
                format!("PingSource {ns}/{name} on `{}` ({tz})", p.spec.schedule)
            })
            .collect()
    },
    check: Some(|config, event_types| {
        check(config, event_types).map_err(|e| SourceError(e.to_string()))
    }),
    start: start_kind,
};

fn start_kind<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        let tasks = start(s.config, s.event_types, Arc::clone(s.log), s.clock.clone())
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        Ok(Started::background(tasks))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::resources::Duration;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn missed(policy: CatchUpPolicy, window_s: Option<u64>, last: &str, now: &str) -> Vec<String> {
        let s = Schedule::parse("*/10 * * * *", None).expect("parses");
        let c = CatchUp {
            policy,
            window: window_s.map(|w| Duration(std::time::Duration::from_secs(w))),
        };
        missed_slots(&s, utc(last), utc(now), &c)
            .into_iter()
            .map(|t| t.format("%H:%M").to_string())
            .collect()
    }

    #[test]
    fn catch_up_policies() {
        let (last, now) = ("2026-11-28T10:00:00Z", "2026-11-28T10:45:00Z");
        assert!(missed(CatchUpPolicy::None, None, last, now).is_empty());
        assert_eq!(missed(CatchUpPolicy::Last, None, last, now), ["10:40"]);
        assert_eq!(
            missed(CatchUpPolicy::All, None, last, now),
            ["10:10", "10:20", "10:30", "10:40"]
        );
        // Only slots inside the window: 10:25..10:45.
        assert_eq!(
            missed(CatchUpPolicy::All, Some(20 * 60), last, now),
            ["10:30", "10:40"]
        );
        // A slot exactly at the window's edge counts.
        assert_eq!(
            missed(
                CatchUpPolicy::All,
                Some(25 * 60),
                last,
                "2026-11-28T10:45:00Z"
            ),
            ["10:20", "10:30", "10:40"]
        );
        // Nothing missed when the last fired slot is the latest one, or the clock went back.
        assert!(missed(CatchUpPolicy::All, None, "2026-11-28T10:40:00Z", now).is_empty());
        assert!(missed(CatchUpPolicy::All, None, now, last).is_empty());
    }

    #[test]
    fn catch_up_all_is_bounded() {
        let s = Schedule::parse("* * * * * *", None).expect("parses");
        let c = CatchUp {
            policy: CatchUpPolicy::All,
            window: Some(Duration(std::time::Duration::from_secs(7200))),
        };
        let slots = missed_slots(
            &s,
            utc("2026-11-28T08:00:00Z"),
            utc("2026-11-28T10:00:00Z"),
            &c,
        );
        assert_eq!(slots.len(), MAX_CATCH_UP_SLOTS);
        assert_eq!(slots.last().copied(), Some(utc("2026-11-28T10:00:00Z")));
    }

    #[test]
    fn ids_name_the_slot() {
        assert_eq!(
            slot_id("heartbeat", utc("2026-11-28T10:00:00Z")),
            "heartbeat-20261128T100000Z"
        );
    }
}
