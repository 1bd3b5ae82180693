//! The wall clock sources schedule by, and a manual one tests move.
//!
//! In-process tests give `switchyard::run` a [`Clock::manual`] and [`set`](Clock::set) it.
//! Black-box tests that kill the process need the clock moved from outside: a debug build of
//! `switchyard serve` (what `cargo test` runs) uses a manual clock when `SWITCHYARD_TEST_CLOCK`
//! holds an RFC 3339 time, moved with `POST /debug/clock` (see `spec/sources.md`). A release
//! build has neither: it always runs by the system clock.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use switchyard_broker::problem::Problem;
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

/// `GET`/`POST /debug/clock`, mounted only for a manual clock in a debug build.
pub fn routes(clock: Clock) -> Router {
    if matches!(clock, Clock::System) || !cfg!(debug_assertions) {
        return Router::new();
    }
    Router::new()
        .route("/debug/clock", get(show).post(set))
        .with_state(clock)
}

async fn show(State(clock): State<Clock>) -> Response {
    axum::Json(serde_json::json!({ "now": clock.now().to_rfc3339() })).into_response()
}

async fn set(State(clock): State<Clock>, body: axum::body::Bytes) -> Response {
    let bad = |detail: String| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "urn:switchyard:problem:invalid-request",
            "invalid request",
            detail,
        )
        .into_response()
    };
    let Some(text) = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("now").and_then(|n| n.as_str()).map(str::to_owned))
    else {
        return bad("send {\"now\": \"<RFC 3339 time>\"}".into());
    };
    let Ok(t) = DateTime::parse_from_rfc3339(&text) else {
        return bad(format!("`{text}` is not an RFC 3339 time"));
    };
    match clock.set(t.with_timezone(&Utc)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad(e),
    }
}
