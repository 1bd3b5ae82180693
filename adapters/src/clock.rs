//! The `/debug/clock` routes that move a manual [`Clock`] from outside, for the black-box
//! tests that kill the process (a debug build only; see `switchyard_broker::clock`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use switchyard_broker::ingress::read_body;
use switchyard_broker::problem::Problem;

pub use switchyard_broker::clock::{Clock, TEST_CLOCK_ENV};

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

async fn set(State(clock): State<Clock>, body: axum::body::Body) -> Response {
    // Read as every other body is: bounded in size and time.
    let body = match read_body(body, 4096).await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
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
