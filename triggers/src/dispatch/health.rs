//! What a trigger's deliveries (or a source's appends) looked like lately, for its status
//! (`GET …/triggers/{name}`, `…/sources/{name}`, `switchyard describe`): attempts and
//! successes over the last [`WINDOW_S`] seconds in buckets of [`BUCKET_S`], the last error and
//! the last success. Kept per trigger or source for the life of the process, so one restarted
//! by a reload keeps its history. Figures are this process's: on the JetStream engine each
//! replica counts its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchyard_core::id::TriggerId;

use super::lock;
use crate::delivery::AttemptResult;

/// How far back the figures look.
pub const WINDOW_S: u64 = 300;
/// The width of one bucket.
const BUCKET_S: u64 = 10;

/// A trigger's recent attempts.
#[derive(Debug, Default)]
pub struct Health(Mutex<Window>);

#[derive(Debug, Default)]
struct Window {
    /// (bucket start, attempts, successes), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    last_error: Option<LastError>,
    last_success_ms: Option<u64>,
    /// Whether the last attempt failed.
    failing: bool,
}

/// The last attempt that failed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// When (RFC 3339).
    pub time: String,
    /// The subscriber's status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong.
    pub error: String,
}

/// The figures of [`Health::recent`].
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recent {
    /// The span the figures cover.
    pub window_seconds: u64,
    /// Attempts made (first deliveries and retries).
    pub attempts: u64,
    /// Attempts the subscriber took (a 2xx).
    pub delivered: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Deliveries per second over the window.
    pub delivered_per_second: f64,
    /// `delivered / attempts`; absent without attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_ratio: Option<f64>,
    /// The last failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// When an attempt last succeeded (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_delivered: Option<String>,
    /// Whether the last attempt failed.
    pub failing: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(0))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Health {
    /// The history of trigger `id`, made on first use.
    pub fn of(id: &TriggerId) -> Arc<Health> {
        Self::keyed(format!("trigger {id}"))
    }

    /// The history of source `namespace/name` (sources share one name space per
    /// namespace), made on first use.
    pub fn of_source(source: &str) -> Arc<Health> {
        Self::keyed(format!("source {source}"))
    }

    fn keyed(key: String) -> Arc<Health> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Health>>>> = OnceLock::new();
        let mut all = lock(ALL.get_or_init(Mutex::default));
        Arc::clone(all.entry(key).or_default())
    }

    /// Counts `n` successes (a source's events stored).
    pub fn succeeded(&self, n: u64) {
        self.count(now_ms(), n, true, None);
    }

    /// Counts one failure, `error` saying what.
    pub fn failed(&self, error: String) {
        let error = LastError {
            time: rfc3339(now_ms()),
            status: None,
            error,
        };
        self.count(now_ms(), 1, false, Some(error));
    }

    /// Counts attempt `r`.
    pub(super) fn record(&self, r: &AttemptResult) {
        let ok = r.error.is_none() && r.status.is_none_or(|s| (200..300).contains(&s));
        let error = (!ok).then(|| LastError {
            time: rfc3339(now_ms()),
            status: r.status,
            error: match (&r.error, r.status) {
                (Some(e), _) => e.to_string(),
                (None, Some(s)) => format!("the subscriber answered {s}"),
                (None, None) => "failed".to_owned(),
            },
        });
        self.count(now_ms(), 1, ok, error);
    }

    /// Counts `n` attempts with the same outcome.
    fn count(&self, now_ms: u64, n: u64, ok: bool, error: Option<LastError>) {
        let mut w = lock(&self.0);
        let start = now_ms / 1000 / BUCKET_S * BUCKET_S;
        let good = if ok { n } else { 0 };
        match w.buckets.back_mut() {
            Some(b) if b.0 == start => {
                b.1 += n;
                b.2 += good;
            }
            _ => w.buckets.push_back((start, n, good)),
        }
        let oldest = start.saturating_sub(WINDOW_S);
        while w.buckets.front().is_some_and(|b| b.0 < oldest) {
            w.buckets.pop_front();
        }
        w.failing = !ok;
        if ok {
            w.last_success_ms = Some(now_ms);
        } else {
            w.last_error = error;
        }
    }

    /// The figures now.
    pub fn recent(&self) -> Recent {
        self.recent_at(now_ms())
    }

    fn recent_at(&self, now_ms: u64) -> Recent {
        let w = lock(&self.0);
        let since = (now_ms / 1000).saturating_sub(WINDOW_S);
        let (attempts, delivered) = w
            .buckets
            .iter()
            .filter(|b| b.0 >= since)
            .fold((0, 0), |(a, d), b| (a + b.1, d + b.2));
        #[allow(clippy::cast_precision_loss)]
        let (rate, ratio) = (
            delivered as f64 / WINDOW_S as f64,
            (attempts > 0).then(|| delivered as f64 / attempts as f64),
        );
        Recent {
            window_seconds: WINDOW_S,
            attempts,
            delivered,
            failed: attempts - delivered,
            delivered_per_second: (rate * 1000.0).round() / 1000.0,
            success_ratio: ratio.map(|r| (r * 1000.0).round() / 1000.0),
            last_error: w.last_error.clone(),
            last_delivered: w.last_success_ms.map(rfc3339),
            failing: w.failing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> Option<LastError> {
        Some(LastError {
            time: "t".into(),
            status: Some(500),
            error: "the subscriber answered 500".into(),
        })
    }

    #[test]
    fn the_window_counts_the_last_five_minutes_only() {
        let h = Health::default();
        let t0 = 1_000_000_000;
        h.count(t0, 1, true, None);
        h.count(t0 + 1_000, 1, false, error());
        h.count(t0 + 2_000, 1, true, None);
        let r = h.recent_at(t0 + 3_000);
        assert_eq!((r.attempts, r.delivered, r.failed), (3, 2, 1));
        assert_eq!(r.success_ratio, Some(0.667));
        assert!(!r.failing);
        assert_eq!(r.last_error, error());
        // Six minutes later, nothing is recent, but the last error is still known.
        let later = h.recent_at(t0 + 360_000);
        assert_eq!(later.attempts, 0);
        assert_eq!(later.success_ratio, None);
        assert_eq!(later.last_error, error());
    }

    #[test]
    fn the_last_attempt_decides_whether_it_is_failing() {
        let h = Health::default();
        h.count(5_000, 1, true, None);
        h.count(6_000, 1, false, error());
        assert!(h.recent_at(7_000).failing);
    }
}
