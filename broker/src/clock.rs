//! The one clock Switchyard reads where tests must control time: PingSource schedules and
//! the store (arrival times, retention). The system clock in production; a manual one that
//! moves only when set in tests (injected into `switchyard::run` or `RedbOptions`, or, in a
//! debug build, from `SWITCHYARD_TEST_CLOCK` with `POST /debug/clock`, see `spec/sources.md`).

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// The environment variable that switches `serve` to a manual clock starting at its value.
pub const TEST_CLOCK_ENV: &str = "SWITCHYARD_TEST_CLOCK";

/// A source of the current time that can be waited on.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// A clock that moves only when set.
    Manual(watch::Sender<DateTime<Utc>>),
}

impl Clock {
    /// A manual clock standing at `start`.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock::Manual(watch::Sender::new(start))
    }

    /// The clock `serve` uses: in a debug build, manual when [`TEST_CLOCK_ENV`] is set;
    /// otherwise the system clock.
    pub fn for_serve() -> Result<Clock, String> {
        let Ok(text) = std::env::var(TEST_CLOCK_ENV) else {
            return Ok(Clock::System);
        };
        if !cfg!(debug_assertions) {
            tracing::warn!("{TEST_CLOCK_ENV} is ignored: a release build runs by the system clock");
            return Ok(Clock::System);
        }
        DateTime::parse_from_rfc3339(text.trim())
            .map(|t| Clock::manual(t.with_timezone(&Utc)))
            .map_err(|e| format!("{TEST_CLOCK_ENV}=`{text}` is not an RFC 3339 time: {e}"))
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.now().timestamp_millis()).unwrap_or(0)
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(tx) => *tx.borrow(),
        }
    }

    /// Moves a manual clock to `t` (never backwards).
    pub fn set(&self, t: DateTime<Utc>) -> Result<(), String> {
        match self {
            Clock::System => Err("the system clock cannot be set".into()),
            Clock::Manual(tx) => {
                let now = *tx.borrow();
                if t < now {
                    return Err(format!("the clock stands at {now} and does not go back"));
                }
                tx.send_replace(t);
                Ok(())
            }
        }
    }

    /// Resolves once the clock reads `t` or later. The system clock is re-read at least every
    /// 30 s, so a wall-clock step (NTP, suspend) is followed.
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        match self {
            Clock::System => loop {
                let left = t - Utc::now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(std::time::Duration::from_secs(30))).await;
            },
            Clock::Manual(tx) => {
                let mut rx = tx.subscribe();
                let _ = rx.wait_for(|now| *now >= t).await;
            }
        }
    }
}
