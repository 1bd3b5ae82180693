//! The sink inside the harness: it records each delivery's end-to-end latency from the
//! event's intended send time, and ids for loss and duplicates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// The `p` quantile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What the in-process sink has seen. Each trigger delivers to its own path, so loss and
/// duplicates are counted per (path, id).
#[derive(Default)]
pub(super) struct SinkState {
    pub(super) e2e_us: Vec<u64>,
    pub(super) seen: std::collections::HashMap<String, Vec<u8>>,
    pub(super) duplicates: u64,
    pub(super) count: u64,
    /// When the last delivery arrived (µs since the epoch): the delivered rate is taken over
    /// the time until then, not over the generator's window (deliveries go on while the
    /// broker drains its backlog).
    pub(super) last_us: u64,
}

pub(super) type SinkShared = Arc<Mutex<SinkState>>;

pub(super) async fn sink_handler(
    State(state): State<SinkShared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> StatusCode {
    // The isolation workload's bad subscriber: slow, then failing. Not counted.
    if uri.path().starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(200)).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let now = now_us();
    let sent = headers
        .get("ce-benchsent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.count += 1;
    s.last_us = now;
    if let Some(sent) = sent {
        s.e2e_us.push(now.saturating_sub(sent));
    }
    if let Some(id) = id {
        let seen = s.seen.entry(uri.path().to_owned()).or_default();
        if seen.len() <= id {
            seen.resize(id + 1, 0);
        }
        let before = seen[id];
        seen[id] = before.saturating_add(1);
        if before > 0 {
            s.duplicates += 1;
        }
    }
    StatusCode::OK
}

pub(super) async fn start_sink() -> Result<(String, SinkShared)> {
    let state: SinkShared = Arc::default();
    let app = Router::new()
        .fallback(sink_handler)
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, state))
}

/// Waits until the sink has `expected` deliveries or nothing arrives for two seconds.
pub(super) async fn drain(sink: &SinkShared, expected: u64) {
    let mut last = 0;
    let mut idle = Instant::now();
    loop {
        let count = sink.lock().map_or(0, |s| s.count);
        if count >= expected {
            return;
        }
        if count != last {
            last = count;
            idle = Instant::now();
        } else if idle.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
