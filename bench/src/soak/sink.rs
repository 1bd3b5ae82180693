//! The subscriber of both triggers: it counts every delivery by trigger and event id, refuses
//! the poison events with a 400 (the only ones that may be dead-lettered), and flaps between
//! healthy, 503, too slow and not listening at all as the schedule says.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::sync::oneshot;

/// How the subscriber answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// 200, except 400 for poison events.
    Healthy,
    /// 503 for everything.
    Unavailable,
    /// Answers after 3 s (past the triggers' 2 s timeout), with a 503.
    Slow,
    /// Not listening: connections are refused.
    Refused,
}

/// Is event `id` one the subscriber always refuses?
pub(super) fn poison(id: u64) -> bool {
    id % 499 == 7
}

#[derive(Debug, Default)]
pub(super) struct SinkState {
    mode: Mutex<Option<Mode>>,
    /// Per path (`all`, `orders`, and `dls`, the dead-letter sink of `all`, which takes the
    /// poison events): how many times each id was delivered (answered 200).
    pub(super) seen: Mutex<HashMap<String, Vec<u8>>>,
    delivered: AtomicU64,
    /// Poison deliveries answered 400.
    pub(super) refused: AtomicU64,
    /// Answers of 503 (both failing modes).
    pub(super) failed: AtomicU64,
    /// Deliveries without a numeric `ce-id`.
    pub(super) unknown: AtomicU64,
}

impl SinkState {
    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn mode(&self) -> Mode {
        self.mode
            .lock()
            .ok()
            .and_then(|m| *m)
            .unwrap_or(Mode::Healthy)
    }
}

pub(super) struct Sink {
    addr: SocketAddr,
    pub(super) state: Arc<SinkState>,
    /// Stops the listener (for `Refused`); `None` while it is stopped.
    shutdown: Option<oneshot::Sender<()>>,
}

impl Sink {
    pub(super) async fn start() -> Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut sink = Sink {
            addr: listener.local_addr()?,
            state: Arc::default(),
            shutdown: None,
        };
        sink.serve(listener);
        Ok(sink)
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = oneshot::channel();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&self.state));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.shutdown = Some(tx);
    }

    pub(super) async fn set_mode(&mut self, mode: Mode) {
        if let Ok(mut m) = self.state.mode.lock() {
            *m = Some(mode);
        }
        match (mode, self.shutdown.is_some()) {
            (Mode::Refused, true) => {
                if let Some(tx) = self.shutdown.take() {
                    let _ = tx.send(());
                }
            }
            (Mode::Refused, false) | (_, true) => {}
            (_, false) => {
                // Listen again on the same port (it may take a moment to be free).
                for _ in 0..100 {
                    if let Ok(l) = tokio::net::TcpListener::bind(self.addr).await {
                        self.serve(l);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                super::progress("the subscriber could not listen again");
            }
        }
    }
}

async fn handle(State(state): State<Arc<SinkState>>, uri: Uri, headers: HeaderMap) -> StatusCode {
    match state.mode() {
        Mode::Healthy | Mode::Refused => {}
        Mode::Unavailable => {
            state.failed.fetch_add(1, Ordering::Relaxed);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            state.failed.fetch_add(1, Ordering::Relaxed);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let Some(id) = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        state.unknown.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    };
    let path = uri.path().trim_start_matches('/');
    if poison(id) && path != "dls" {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    }
    if let Ok(mut seen) = state.seen.lock() {
        let seen = seen.entry(path.to_owned()).or_default();
        let i = usize::try_from(id).unwrap_or(usize::MAX);
        if seen.len() <= i {
            seen.resize(i + 1, 0);
        }
        seen[i] = seen[i].saturating_add(1);
    }
    state.delivered.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}
