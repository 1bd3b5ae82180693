//! `GET /api/v1/namespaces/{ns}/brokers/{broker}/events`: a broker's stored events as JSON
//! lines (`{"offset": N, "event": {…}}`), from an offset or from the end, optionally filtered
//! (exact `type`/`source`, a CESQL expression), following new events as they are stored
//! (`switchyard tail`). The stream ends when the client goes away.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use switchyard_broker::log::{EventLog, blocking};
use switchyard_broker::problem::Problem;
use switchyard_core::CloudEvent;

use crate::cesql::Expression;

/// How often a following stream looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The most records one step of a scan reads without finding one to send; then the stream
/// sends an empty line and goes on (see [`KEEP_ALIVE`]).
const SCAN_STEP_RECORDS: usize = 10_000;
/// The longest one step of a scan runs without finding a record to send.
const SCAN_STEP_TIME: Duration = Duration::from_millis(250);
/// How long a stream stays silent at most: then it sends an empty line. Writing is how a
/// server learns that its client went away, so a scan that finds nothing, or a follower
/// waiting for new events, ends within this long of its client leaving instead of scanning
/// or polling for nobody. Clients skip empty lines.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What a request asks for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailQuery {
    /// First offset, `start` (the oldest stored) or `end` (the default: only new events).
    pub from: Option<String>,
    /// Keep the stream open for new events (default `true`).
    pub follow: Option<bool>,
    /// Only events of this `type`.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Only events of this `source`.
    pub source: Option<String>,
    /// Only events this CESQL expression matches.
    pub filter: Option<String>,
    /// Stop after this many events.
    pub limit: Option<u64>,
}

struct Selection {
    ty: Option<String>,
    source: Option<String>,
    filter: Option<Expression>,
}

impl Selection {
    fn matches(&self, e: &CloudEvent) -> bool {
        self.ty.as_deref().is_none_or(|t| t == e.ty)
            && self.source.as_deref().is_none_or(|s| s == e.source)
            && self.filter.as_ref().is_none_or(|f| f.matches(e))
    }
}

/// The configured brokers, `namespace/name`, as a reload leaves them.
pub type Brokers = Arc<std::sync::RwLock<HashSet<String>>>;

struct TailState {
    log: Arc<dyn EventLog>,
    /// The configured brokers, `namespace/name`.
    brokers: Brokers,
    /// Turns true when the server shuts down: every stream ends.
    stop: tokio::sync::watch::Receiver<bool>,
}

/// The route, to merge into the server's router; `brokers` are the configured ones
/// (`namespace/name`), others get 404. Every stream ends once `stop` turns true.
pub fn routes(
    log: Arc<dyn EventLog>,
    brokers: Brokers,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/brokers/{broker}/events",
            get(tail),
        )
        .with_state(Arc::new(TailState { log, brokers, stop }))
}

fn bad(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "urn:switchyard:problem:invalid-request",
        "invalid request",
        detail,
    )
}

struct Cursor {
    log: Arc<dyn EventLog>,
    broker: String,
    next: u64,
    left: u64,
    follow: bool,
    selection: Arc<Selection>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// When the stream last sent something.
    sent: tokio::time::Instant,
}

/// What one read of the store gave a scan.
struct Step {
    /// The offset after the last record looked at, or `None` when there were none.
    next: Option<u64>,
    /// Records looked at.
    read: usize,
    /// Events selected, at most the `left` asked for.
    sent: u64,
    /// Their JSON lines.
    lines: Vec<u8>,
}

/// Decodes `records` and encodes the first `left` that `selection` matches as JSON lines.
fn select(records: &[switchyard_broker::log::LogRecord], selection: &Selection, left: u64) -> Step {
    let mut step = Step {
        next: None,
        read: 0,
        sent: 0,
        lines: Vec::new(),
    };
    for r in records {
        step.next = Some(r.offset + 1);
        step.read += 1;
        let Ok(event) = switchyard_core::store::decode(&r.event) else {
            continue;
        };
        if !selection.matches(&event) {
            continue;
        }
        switchyard_core::json::encode_record_line(r.offset, &event, &mut step.lines);
        step.sent += 1;
        if step.sent == left {
            break;
        }
    }
    step
}

impl Cursor {
    /// The next chunk of lines (or an empty line to keep the stream alive), or `None` when
    /// the stream is over.
    async fn chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let item = self.lines().await;
        self.sent = tokio::time::Instant::now();
        item
    }

    async fn lines(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        let began = tokio::time::Instant::now();
        let mut scanned = 0usize;
        loop {
            if self.left == 0 || *self.stop.borrow() {
                return None;
            }
            if scanned >= SCAN_STEP_RECORDS || began.elapsed() >= SCAN_STEP_TIME {
                return Some(Ok(Bytes::from_static(b"\n")));
            }
            let (broker, next, left) = (self.broker.clone(), self.next, self.left);
            let selection = Arc::clone(&self.selection);
            // Read, decode, match and encode on the blocking pool: a CESQL filter over
            // thousands of records is work the async workers must not do.
            let read = blocking(&self.log, move |log| {
                Ok(select(&log.read(&broker, next, 256)?, &selection, left))
            })
            .await;
            let step = match read {
                Ok(step) => step,
                Err(e) => return Some(Err(std::io::Error::other(e.to_string()))),
            };
            let Some(next) = step.next else {
                if !self.follow {
                    return None;
                }
                // Retention may have deleted what we were about to read.
                let broker = self.broker.clone();
                if let Ok(stats) = blocking(&self.log, move |log| log.stats(&broker)).await {
                    self.next = self.next.max(stats.first);
                }
                if self.sent.elapsed() >= KEEP_ALIVE {
                    return Some(Ok(Bytes::from_static(b"\n")));
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                    Ok(()) = self.stop.changed() => {}
                }
                continue;
            };
            scanned += step.read;
            self.next = next;
            self.left -= step.sent;
            if !step.lines.is_empty() {
                return Some(Ok(Bytes::from(step.lines)));
            }
        }
    }
}

async fn tail(
    State(state): State<Arc<TailState>>,
    Path((ns, b)): Path<(String, String)>,
    Query(q): Query<TailQuery>,
) -> Result<Response, Problem> {
    let broker = switchyard_core::id::join(&ns, &b);
    let configured = state
        .brokers
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&broker);
    if !configured {
        return Err(Problem::not_found(format!(
            "no Broker `{b}` in namespace `{ns}`"
        )));
    }
    let log = Arc::clone(&state.log);
    let stats = {
        let broker = broker.clone();
        blocking(&log, move |log| log.stats(&broker))
            .await
            .map_err(|e| bad(e.to_string()))?
    };
    let next = match q.from.as_deref() {
        None | Some("end") => stats.next,
        Some("start") => stats.first,
        Some(n) => n
            .parse::<u64>()
            .map_err(|_| bad(format!("from=`{n}`: give an offset, `start` or `end`")))?,
    };
    let filter = q
        .filter
        .as_deref()
        .map(Expression::parse)
        .transpose()
        .map_err(|e| bad(format!("filter: {e}")))?;
    let cursor = Cursor {
        log,
        broker,
        next,
        left: q.limit.unwrap_or(u64::MAX),
        follow: q.follow.unwrap_or(true),
        selection: Arc::new(Selection {
            ty: q.ty,
            source: q.source,
            filter,
        }),
        stop: state.stop.clone(),
        sent: tokio::time::Instant::now(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        c.chunk().await.map(|item| (item, c))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
