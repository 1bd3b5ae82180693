//! What becomes of an event after an attempt: a pure function of the attempt's result, the
//! attempts before it, the trigger's delivery settings and the time, so the rules of
//! `spec/delivery.md` are one table of cases (the tests below). Applying an outcome to the
//! store is `settle.rs`'s job, and only its.

use switchyard_core::CloudEvent;

use crate::delivery::{AttemptResult, DeliverySettings, Verdict};
use crate::records::{self, Attempt, DeadLetterReason};

/// Where an event stands for a trigger after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The subscriber took it; these replies go to the broker.
    Delivered {
        /// Reply events (none for a 202, a non-event body, or a stream sink).
        replies: Vec<CloudEvent>,
    },
    /// Try again at `due_ms`.
    Retry {
        /// Every attempt so far, this one last.
        attempts: Vec<Attempt>,
        /// When, in milliseconds since the epoch.
        due_ms: u64,
    },
    /// Give up: the event goes to the dead-letter store (and sink).
    DeadLetter {
        /// Every attempt, this one last.
        attempts: Vec<Attempt>,
        /// Why.
        reason: DeadLetterReason,
        /// `knativeerrordata`: the last response body, base64, at most 1024 characters.
        error_data: Option<String>,
    },
}

/// Decides what follows attempt `result`, after the `earlier` attempts, at `now_ms`. `unit` is a
/// uniform random number in [0, 1) for the backoff's jitter.
pub fn decide(
    result: AttemptResult,
    earlier: Vec<Attempt>,
    settings: &DeliverySettings,
    now_ms: u64,
    unit: f64,
) -> Outcome {
    // Attempts held while the subscriber was down do not count against `retry`.
    let counted: u64 = earlier
        .iter()
        .filter(|a| !a.held)
        .map(Attempt::weight)
        .sum();
    let reason = match result.verdict {
        Verdict::Delivered => {
            return Outcome::Delivered {
                replies: result.replies,
            };
        }
        Verdict::Retry if result.held => None,
        Verdict::Retry if counted < u64::from(settings.retry) => None,
        Verdict::Retry => Some(DeadLetterReason::RetriesExhausted),
        Verdict::DeadLetter => Some(DeadLetterReason::NotRetryable),
    };
    let mut attempts = earlier;
    attempts.push(Attempt::of(&result));
    match reason {
        // Held: tried again at once; the trigger's probe turns pace it (`down.rs`).
        None if result.held => Outcome::Retry {
            attempts,
            due_ms: now_ms,
        },
        None => {
            let k: u64 = attempts
                .iter()
                .filter(|a| !a.held)
                .map(Attempt::weight)
                .sum();
            let k = u32::try_from(k).unwrap_or(u32::MAX);
            let delay = settings.backoff(k, result.retry_after, unit);
            let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            Outcome::Retry {
                attempts,
                due_ms: now_ms.saturating_add(delay_ms),
            }
        }
        Some(reason) => Outcome::DeadLetter {
            attempts,
            reason,
            error_data: records::error_data(&result.body),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use switchyard_core::resources::BackoffPolicy;

    use super::*;
    use crate::delivery::AttemptError;

    const NOW: u64 = 1_000_000;

    fn settings(retry: u32) -> DeliverySettings {
        DeliverySettings {
            retry,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(5),
            ..DeliverySettings::resolve(None)
        }
    }

    fn result(status: Option<u16>, verdict: Verdict) -> AttemptResult {
        AttemptResult {
            started: SystemTime::UNIX_EPOCH,
            status,
            error: status
                .is_none()
                .then(|| AttemptError::Connect("refused".into())),
            latency: Duration::from_millis(3),
            body: Bytes::new(),
            retry_after: None,
            replies: Vec::new(),
            verdict,
            held: false,
        }
    }

    fn earlier(n: usize) -> Vec<Attempt> {
        (0..n)
            .map(|_| Attempt::of(&result(Some(500), Verdict::Retry)))
            .collect()
    }

    /// What a case expects: delivered, a retry after this many ms, or a dead letter.
    #[derive(Debug, PartialEq)]
    enum Want {
        Delivered,
        RetryAfterMs(u64),
        Dead(DeadLetterReason),
    }

    /// A case: its name, the attempt's status and verdict, the attempts before it, a
    /// `Retry-After` in seconds, and what follows.
    type Case = (&'static str, Option<u16>, Verdict, usize, Option<u64>, Want);

    #[test]
    fn the_outcome_table() {
        use DeadLetterReason::*;
        use Want::*;
        let table: &[Case] = &[
            ("2xx", Some(200), Verdict::Delivered, 0, None, Delivered),
            (
                "2xx after failures",
                Some(204),
                Verdict::Delivered,
                3,
                None,
                Delivered,
            ),
            (
                "first failure",
                Some(500),
                Verdict::Retry,
                0,
                None,
                RetryAfterMs(100),
            ),
            (
                "second failure",
                Some(503),
                Verdict::Retry,
                1,
                None,
                RetryAfterMs(200),
            ),
            (
                "third failure",
                None,
                Verdict::Retry,
                2,
                None,
                RetryAfterMs(400),
            ),
            (
                "capped by backoffMax",
                Some(500),
                Verdict::Retry,
                5,
                None,
                RetryAfterMs(1000),
            ),
            (
                "Retry-After longer",
                Some(429),
                Verdict::Retry,
                0,
                Some(3),
                RetryAfterMs(3000),
            ),
            (
                "Retry-After capped",
                Some(503),
                Verdict::Retry,
                0,
                Some(60),
                RetryAfterMs(5000),
            ),
            (
                "last retry used",
                Some(500),
                Verdict::Retry,
                6,
                None,
                Dead(RetriesExhausted),
            ),
            (
                "not retryable",
                Some(400),
                Verdict::DeadLetter,
                0,
                None,
                Dead(NotRetryable),
            ),
            (
                "not retryable late",
                Some(410),
                Verdict::DeadLetter,
                2,
                None,
                Dead(NotRetryable),
            ),
        ];
        let s = settings(6);
        for (case, status, verdict, before, retry_after, want) in table {
            let mut r = result(*status, *verdict);
            r.retry_after = retry_after.map(Duration::from_secs);
            let got = match decide(r, earlier(*before), &s, NOW, 0.0) {
                Outcome::Delivered { .. } => Delivered,
                Outcome::Retry { attempts, due_ms } => {
                    assert_eq!(attempts.len(), before + 1, "{case}");
                    RetryAfterMs(due_ms - NOW)
                }
                Outcome::DeadLetter {
                    attempts, reason, ..
                } => {
                    assert_eq!(attempts.len(), before + 1, "{case}");
                    assert_eq!(attempts.last().and_then(|a| a.status), *status, "{case}");
                    Dead(reason)
                }
            };
            assert_eq!(&got, want, "{case}");
        }
    }

    #[test]
    fn no_retries_dead_letters_the_first_failure() {
        let got = decide(
            result(None, Verdict::Retry),
            Vec::new(),
            &settings(0),
            NOW,
            0.5,
        );
        let Outcome::DeadLetter {
            attempts, reason, ..
        } = got
        else {
            panic!("{got:?}");
        };
        assert_eq!(reason, DeadLetterReason::RetriesExhausted);
        assert_eq!(
            attempts[0].error.as_deref(),
            Some("connection failed: refused")
        );
    }

    #[test]
    fn replies_are_carried_and_bodies_become_error_data() {
        let mut ok = result(Some(200), Verdict::Delivered);
        let Ok(reply) = switchyard_core::CloudEvent::new("r", "/s", "t") else {
            panic!("a valid event");
        };
        ok.replies = vec![reply.clone()];
        assert_eq!(
            decide(ok, Vec::new(), &settings(1), NOW, 0.0),
            Outcome::Delivered {
                replies: vec![reply]
            }
        );
        let mut bad = result(Some(422), Verdict::DeadLetter);
        bad.body = Bytes::from(vec![b'x'; 2000]);
        let Outcome::DeadLetter { error_data, .. } =
            decide(bad, Vec::new(), &settings(1), NOW, 0.0)
        else {
            panic!("not a dead letter");
        };
        assert_eq!(error_data.map(|d| d.len()), Some(1024));
    }

    #[test]
    fn attempts_held_while_the_subscriber_is_down_do_not_count_against_retry() {
        let held = || {
            let mut r = result(None, Verdict::Retry);
            r.held = true;
            r
        };
        // Out of retries, but held: tried again at once, the attempt kept and marked.
        let Outcome::Retry { attempts, due_ms } =
            decide(held(), earlier(2), &settings(2), 1_000, 0.5)
        else {
            panic!("a held attempt is retried");
        };
        assert_eq!((attempts.len(), due_ms), (3, 1_000));
        assert!(attempts[2].held);
        // Twenty held attempts later, one retry is still left of two, with the backoff of
        // the second retry.
        let mut so_far = attempts[2..].to_vec();
        for _ in 0..20 {
            so_far.push(Attempt::of(&held()));
        }
        so_far.insert(0, Attempt::of(&result(Some(500), Verdict::Retry)));
        let Outcome::Retry { due_ms, .. } = decide(
            result(Some(503), Verdict::Retry),
            so_far.clone(),
            &settings(2),
            1_000,
            0.5,
        ) else {
            panic!("one retry is left");
        };
        assert_eq!(due_ms, 1_200, "the backoff of retry 2: 100 ms · 2");
        so_far.push(Attempt::of(&result(Some(503), Verdict::Retry)));
        assert!(matches!(
            decide(
                result(Some(503), Verdict::Retry),
                so_far,
                &settings(2),
                1_000,
                0.5
            ),
            Outcome::DeadLetter {
                reason: DeadLetterReason::RetriesExhausted,
                ..
            }
        ));
    }
}
