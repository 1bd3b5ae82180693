//! A subscriber that is down: its connections refused, as a function scaled to zero is until
//! its platform (KEDA, Knative Serving, OpenFaaS) starts a replica, or never made, as over an
//! uplink that drops packets (the connect timeout, `DeliverySettings::connect_timeout`). After [`DOWN_AFTER`]
//! connection failures in a row the trigger stops per-event attempts: one attempt at a time
//! (a probe, with a real event) waits for its turn, the turns spaced from [`FIRST_PROBE`]
//! doubling up to [`MAX_PROBE`]; the attempts that fail meanwhile are held, not counted
//! against the event's `retry` (bounded by `holdWhileDown` instead, `outcome.rs`); the first
//! answer of any kind ends it and the trigger goes back to full concurrency. The events wait
//! in the trigger's retries, so its lag (what an autoscaler scales on) keeps counting them.
//! Kept per trigger id (the status reads it there); a trigger starts with its subscriber up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use switchyard_core::id::TriggerId;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::lock;
use crate::delivery::{AttemptError, AttemptResult};
use crate::records::{self, Attempt};

/// Connection failures in a row that mark the subscriber down.
pub const DOWN_AFTER: u32 = 3;
/// The wait before the first probe.
pub const FIRST_PROBE: Duration = Duration::from_secs(1);
/// The longest wait between two probes.
pub const MAX_PROBE: Duration = Duration::from_secs(30);

/// Whether a trigger's subscriber is down, and the turns of its probes.
#[derive(Debug, Default)]
pub struct Down {
    /// `state.since_ms.is_some()`, read without the lock by the delivery loop per event.
    down: AtomicBool,
    state: Mutex<State>,
    /// Held by the one attempt in flight while down.
    turn: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct State {
    /// Connection failures in a row.
    failures: u32,
    /// Since when it is down (ms since the epoch), if it is.
    since_ms: Option<u64>,
    /// The wait after the next failed probe.
    interval: Duration,
    /// The wait before the next probe, as last scheduled.
    wait: Duration,
    /// When the next probe may start.
    next_probe: Option<Instant>,
}

/// What the trigger's status shows while its subscriber is down.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DownStatus {
    /// Since when (RFC 3339).
    pub since: String,
    /// Connection failures in a row.
    pub connection_failures: u32,
    /// The wait before the next probe, in milliseconds.
    pub probe_interval_ms: u64,
}

/// A permit to attempt while the subscriber is down: one at a time.
pub type Turn = OwnedMutexGuard<()>;

impl Down {
    /// The state of trigger `id`'s subscriber (made on first use).
    pub fn of(id: &TriggerId) -> Arc<Down> {
        static ALL: OnceLock<Mutex<HashMap<TriggerId, Arc<Down>>>> = OnceLock::new();
        let mut all = lock(ALL.get_or_init(Mutex::default));
        Arc::clone(all.entry(id.clone()).or_default())
    }

    /// Forgets what was seen: the subscriber is up (a trigger started or changed by a
    /// reload starts so, and one with `holdWhileDown: PT0S` stays so).
    pub fn reset(&self) {
        *lock(&self.state) = State::default();
        self.down.store(false, Ordering::Relaxed);
    }

    /// Whether the subscriber is down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Its status while down.
    pub fn status(&self) -> Option<DownStatus> {
        let st = lock(&self.state);
        let since = st.since_ms?;
        Some(DownStatus {
            since: chrono::DateTime::from_timestamp_millis(i64::try_from(since).unwrap_or(0))
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            connection_failures: st.failures,
            probe_interval_ms: u64::try_from(st.wait.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Takes in the result of an attempt at the subscriber (`probe`: one that held the turn;
    /// `known`: the event's last attempt was held, so another replica found the subscriber
    /// down, and one refusal is enough here); answers whether it failed to connect while the
    /// subscriber is down (this failure may be the one that marks it).
    pub fn observe(
        &self,
        r: &AttemptResult,
        probe: bool,
        known: bool,
        trigger: &TriggerId,
    ) -> bool {
        let mut st = lock(&self.state);
        if !refused(r) {
            st.failures = 0;
            if st.since_ms.take().is_some() {
                self.down.store(false, Ordering::Relaxed);
                st.next_probe = None;
                tracing::info!(%trigger, "the subscriber answers again: delivering at full concurrency");
            }
            return false;
        }
        st.failures = st.failures.saturating_add(1);
        if st.since_ms.is_none() {
            if st.failures < DOWN_AFTER && !known {
                return false;
            }
            st.since_ms = Some(records::now_ms());
            self.down.store(true, Ordering::Relaxed);
            st.interval = FIRST_PROBE * 2;
            st.wait = FIRST_PROBE;
            st.next_probe = Some(Instant::now() + FIRST_PROBE);
            let error = r
                .error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            tracing::warn!(%trigger, failures = st.failures, %error,
                "the subscriber is down (its connections are refused): holding its events and probing it one attempt at a time");
            return true;
        }
        // Only a failed probe moves the turns: attempts in flight when the subscriber went
        // down fail too, and must not push the next probe out.
        if probe {
            st.wait = st.interval;
            st.next_probe = Some(Instant::now() + st.wait);
            st.interval = (st.wait * 2).min(MAX_PROBE);
        }
        true
    }

    /// While the subscriber is down, waits for the next probe's turn and gives it (one
    /// attempt at a time, spaced); `None` at once when it is up.
    pub async fn turn(&self) -> Option<Turn> {
        if !self.is_down() {
            return None;
        }
        let turn = Arc::clone(&self.turn).lock_owned().await;
        loop {
            let next = {
                let st = lock(&self.state);
                // Up again while this one waited in line: no turn needed.
                st.since_ms?;
                st.next_probe
            };
            match next {
                Some(at) if at > Instant::now() => tokio::time::sleep_until(at).await,
                _ => return Some(turn),
            }
        }
    }
}

/// Whether attempt `r` found the subscriber's connections refused: no answer, a connection
/// that could not be made (refused, unreachable, or not made within the connect timeout),
/// and not for TLS (a certificate the server does not trust is a
/// misconfiguration to report, not a function scaled to zero).
fn refused(r: &AttemptResult) -> bool {
    match (&r.status, &r.error) {
        (None, Some(AttemptError::Connect(detail))) => {
            let d = detail.to_ascii_lowercase();
            !(d.contains("certificate") || d.contains("tls") || d.contains("handshake"))
        }
        _ => false,
    }
}

/// Whether an event whose attempts so far are `earlier` may still be held: it was first held
/// less than `bound` ago (or never).
pub fn may_hold(earlier: &[Attempt], bound: Duration, now_ms: u64) -> bool {
    let first = earlier
        .iter()
        .filter(|a| a.held)
        .filter_map(Attempt::started_ms)
        .min();
    let bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    first.is_none_or(|t| now_ms.saturating_sub(t) < bound_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::delivery::Verdict;

    fn result(status: Option<u16>, error: Option<AttemptError>) -> AttemptResult {
        AttemptResult {
            started: SystemTime::now(),
            status,
            error,
            latency: Duration::ZERO,
            body: Bytes::new(),
            retry_after: None,
            replies: Vec::new(),
            verdict: Verdict::Retry,
            held: false,
        }
    }

    fn refused() -> AttemptResult {
        result(None, Some(AttemptError::Connect("refused".into())))
    }

    #[tokio::test(start_paused = true)]
    async fn three_refusals_mark_it_down_probes_back_off_and_an_answer_ends_it() {
        let id = TriggerId::new("default", "down-test");
        let down = Down::default();
        assert!(!down.observe(&refused(), false, false, &id));
        assert!(!down.observe(&refused(), false, false, &id));
        assert!(down.turn().await.is_none(), "up: no turns");
        assert!(
            down.observe(&refused(), false, false, &id),
            "the third marks it down"
        );
        assert!(down.is_down());
        assert_eq!(down.status().unwrap().probe_interval_ms, 1_000);
        // Attempts in flight when it went down fail too: held, and the turns do not move.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(down.observe(&refused(), false, false, &id));
        let start = Instant::now() - Duration::from_millis(1_500);
        let mut waits = Vec::new();
        for _ in 0..7 {
            let turn = down.turn().await.unwrap();
            waits.push(Instant::now().duration_since(start).as_secs());
            assert!(down.observe(&refused(), true, false, &id));
            drop(turn);
        }
        // Probes 1 s after it went down, then 2, 4, 8, 16 and 30 s apart.
        assert_eq!(waits, [1, 3, 7, 15, 31, 61, 91]);
        assert_eq!(down.status().unwrap().probe_interval_ms, 30_000);
        // A 503 is an answer: the subscriber is up.
        assert!(!down.observe(&result(Some(503), None), true, false, &id));
        assert!(!down.is_down());
        assert!(down.turn().await.is_none());
        // Timeouts and other failures neither mark it down nor count towards it.
        // One refusal of an event another replica found the subscriber down for is enough.
        let other = Down::default();
        assert!(other.observe(&refused(), false, true, &id));
        assert!(other.is_down());
        // Nor do TLS failures: a certificate not trusted is a misconfiguration to report.
        let tls = AttemptError::Connect("invalid peer certificate: UnknownIssuer".into());
        for error in [AttemptError::Timeout(String::new()), tls] {
            for _ in 0..5 {
                assert!(!down.observe(&result(None, Some(error.clone())), false, false, &id));
            }
        }
        assert!(!down.is_down());
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time() {
        let id = TriggerId::new("default", "down-turns");
        let down = Arc::new(Down::default());
        for _ in 0..3 {
            down.observe(&refused(), false, false, &id);
        }
        let first = down.turn().await.unwrap();
        let d = Arc::clone(&down);
        let second = tokio::spawn(async move { d.turn().await.is_some() });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!second.is_finished(), "the second waits for the first");
        drop(first);
        assert!(second.await.unwrap());
    }

    #[test]
    fn an_event_is_held_for_at_most_the_bound_from_its_first_held_attempt() {
        let mut held = Attempt::of(&refused());
        held.held = true;
        held.time = "2026-01-01T00:00:00.000Z".into();
        let t0 = held.started_ms().unwrap();
        let bound = Duration::from_secs(60);
        assert!(may_hold(&[], bound, t0));
        assert!(may_hold(&[Attempt::of(&refused())], bound, t0 + 3_600_000));
        assert!(may_hold(std::slice::from_ref(&held), bound, t0 + 59_999));
        assert!(!may_hold(&[held], bound, t0 + 60_000));
    }
}
