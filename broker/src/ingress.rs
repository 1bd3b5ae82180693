//! Broker ingress: `POST /{namespace}/{broker}` takes CloudEvents in any HTTP content mode,
//! stores them durably and answers 202 only after the commit. The contract, status by status,
//! is in `spec/ingress.md`.

use std::sync::Arc;
use std::time::Instant;

use crate::app::{App, BrokerState};
use crate::append::{Appender, Ttl};
use crate::auth::SendPermit;
use crate::connections::BodyTimeout;
use crate::log::LogError;
use crate::metrics as m;
use crate::problem::Problem;
use crate::traces;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

/// Methods a broker's ingress URL allows.
const ALLOW: &str = "POST, OPTIONS";
/// The longest `ce-` header value taken, in bytes; a longer one is refused with 431.
pub const MAX_HEADER_VALUE_BYTES: usize = 16 * 1024;

fn count_rejected(reason: &'static str) {
    metrics::counter!(m::INGRESS_REJECTED, "reason" => reason).increment(1);
}

/// The most of a refused request's body read and thrown away before the answer, and for how
/// long at most (see [`drain`]).
pub const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;
/// See [`DRAIN_MAX_BYTES`].
pub const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and throws away what is left of a refused request's body, up to [`DRAIN_MAX_BYTES`]
/// and for at most [`DRAIN_MAX_TIME`], before the answer goes out: nginx's lingering close.
/// A client that sends its whole body before it reads (Python's `urllib`, many HTTP clients) then
/// reads the 4xx, instead of a connection reset under its feet, which it would retry — a
/// request that can never succeed. Past either bound the connection is closed anyway.
///
/// A client that sent `Expect: 100-continue` has sent no body yet and waits for leave to: it
/// gets the answer at once, and nothing is read (reading would invite the upload).
pub async fn drain(headers: &HeaderMap, body: Body) {
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !expects_continue {
        discard(body).await;
    }
}

/// Reads and throws away up to [`DRAIN_MAX_BYTES`] of `body`, for at most [`DRAIN_MAX_TIME`].
async fn discard(body: Body) {
    let mut body = body;
    let mut left = DRAIN_MAX_BYTES;
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if data.len() >= left {
                    return;
                }
                left -= data.len();
            }
        }
    })
    .await;
}

/// Reads the body, refusing it as soon as it passes `limit` bytes (and then [`drain`]ing the
/// rest, so the client reads the 413), or when it has not all come by its deadline (408; the
/// server puts one on every request's body, `--body-read-timeout-ms`, see
/// [`crate::connections::DeadlineBody`]).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "urn:switchyard:problem:too-large",
            "request too large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let mut body = body;
    let mut buf = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| match BodyTimeout::caused(&e) {
                Some(timeout) => Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "urn:switchyard:problem:body-timeout",
                    "body too slow",
                    format!("{timeout}; nothing was stored"),
                ),
                None => Problem::new(
                    StatusCode::BAD_REQUEST,
                    "urn:switchyard:problem:bad-body",
                    "unreadable body",
                    format!("the request body could not be read: {e}"),
                ),
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match read.await {
        Ok(()) => Ok(buf.freeze()),
        Err(p) => {
            if p.status() == StatusCode::PAYLOAD_TOO_LARGE {
                // Reading began, so any 100-continue was sent: the rest is on its way.
                discard(body).await;
            }
            Err(p)
        }
    }
}

fn check_header_sizes(headers: &HeaderMap) -> Result<(), Problem> {
    for (name, value) in headers {
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "urn:switchyard:problem:header-too-large",
                "header too large",
                format!(
                    "header `{name}` is {} bytes; the limit is {MAX_HEADER_VALUE_BYTES}",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

/// The handler of `/{namespace}/{broker}` for every method.
pub async fn broker_endpoint(
    State(app): State<Arc<App>>,
    path: Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut response = endpoint(Arc::clone(&app), path, method, headers, body).await;
    crate::server::close_when_stopping(&app, &mut response);
    response
}

async fn endpoint(
    app: Arc<App>,
    Path((namespace, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // Who may send is decided before anything else is said of the broker (that it exists),
    // and before the body is read. A refusal is not timed: its labels would be whatever
    // the caller wrote in the path.
    let permit = if method == Method::POST {
        match crate::auth::routes::admit_sender(&app, &headers, &namespace, &name).await {
            Ok(permit) => Some(permit),
            Err(p) => {
                drain(&headers, body).await;
                return p.into_response();
            }
        }
    } else {
        None
    };
    // Past the shutdown's drain window (spec/ingress.md, "Shutdown").
    if permit.is_some() && app.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        drain(&headers, body).await;
        return Problem::shutting_down().into_response();
    }
    let Some(broker) = app.broker(&namespace, &name) else {
        count_rejected("unknown_broker");
        drain(&headers, body).await;
        return Problem::not_found(format!("no broker `{name}` in namespace `{namespace}`"))
            .into_response();
    };
    let response = match method {
        // Without the front door's permit nothing is stored (fail closed).
        Method::POST => match permit {
            Some(permit) => {
                ingest(&app, &broker, (&namespace, &name), permit, &headers, body).await
            }
            None => Err(Problem::forbidden(
                "no authorization decision was made for this request",
            )),
        }
        .unwrap_or_else(IntoResponse::into_response),
        Method::OPTIONS => handshake(&headers),
        other => {
            count_rejected("method_not_allowed");
            drain(&headers, body).await;
            Problem::method_not_allowed(other.as_str(), ALLOW).into_response()
        }
    };
    m::ingress_latency(&broker.id, (&namespace, &name), response.status().as_str())
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts a request's events at `broker` (its id, `namespace/name`).
fn count_events(
    broker: &BrokerState,
    (namespace, name): (&str, &str),
    types: &[String],
    status: StatusCode,
) {
    for ty in types {
        if status == StatusCode::ACCEPTED {
            m::count_accepted_event(&broker.id, (namespace, name), ty);
            continue;
        }
        metrics::counter!(
            m::EVENT_COUNT,
            "namespace_name" => namespace.to_owned(),
            "broker_name" => name.to_owned(),
            "event_type" => m::event_type_label(&broker.id, ty, status.is_success()),
            "response_code" => status.as_str().to_owned()
        )
        .increment(1);
    }
}

async fn ingest(
    app: &App,
    broker: &BrokerState,
    (namespace, name): (&str, &str),
    permit: SendPermit,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let reject = |p: Problem, types: &[String]| {
        if types.is_empty() {
            count_events(broker, (namespace, name), &[String::new()], p.status());
        } else {
            count_events(broker, (namespace, name), types, p.status());
        }
        p
    };
    if let Err(p) = check_header_sizes(headers) {
        drain(headers, body).await;
        return Err(reject(p, &[]));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|len| *len > app.max_body_bytes) {
        // A body that could not be read whole anyway is not read at all.
        if len <= DRAIN_MAX_BYTES {
            drain(headers, body).await;
        }
        return Err(reject(
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:switchyard:problem:too-large",
                "request too large",
                format!(
                    "the body is larger than the limit of {} bytes",
                    app.max_body_bytes
                ),
            ),
            &[],
        ));
    }
    let body = read_body(body, app.max_body_bytes)
        .await
        .map_err(|p| reject(p, &[]))?;
    let (_, mut events) = switchyard_core::http::decode(headers, body)
        .map_err(|e| reject(Problem::invalid_event(&e), &[]))?;
    let types: Vec<String> = events.iter().map(|e| e.ty.clone()).collect();
    if events.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    for (i, event) in events.iter().enumerate() {
        if let Err(policies) = permit.check(event) {
            let mut p = Problem::forbidden(format!(
                "event `{}` of type `{}` does not pass the filters of the EventPolicies that admit the sender ({policies})",
                event.id, event.ty
            ));
            if events.len() > 1 {
                p.index = u32::try_from(i).ok();
            }
            return Err(reject(p, &types));
        }
    }
    // A span per event while traces are on, its context given to the event unless it has one.
    let spans = ingress_spans(&broker.id, headers, &mut events);
    let appender = Appender::new(Arc::clone(&app.log), app.event_types());
    let prepared = appender.prepare(&broker.id, Ttl::KeepOrDefault(broker.ttl), &mut events);
    let answer = match prepared {
        Err(r) => Err(reject(r.into(), &types)),
        Ok(batch) => store(broker, (namespace, name), &appender, batch, &types, &reject).await,
    };
    let status = match &answer {
        Ok(r) => r.status(),
        Err(p) => p.status(),
    };
    for span in spans {
        span.set("http.response.status_code", i64::from(status.as_u16()));
        if status.is_success() {
            span.end();
        } else {
            span.fail(format!("the event was not stored: {status}"));
        }
    }
    answer
}

/// Stores `batch` and answers: 202, or why not.
async fn store(
    broker: &BrokerState,
    (namespace, name): (&str, &str),
    appender: &Appender,
    batch: crate::append::Batch,
    types: &[String],
    reject: &impl Fn(Problem, &[String]) -> Problem,
) -> Result<Response, Problem> {
    let appending = Instant::now();
    match appender.store(batch).await {
        Ok(stored) => {
            metrics::histogram!(m::INGRESS_APPEND_SECONDS)
                .record(appending.elapsed().as_secs_f64());
            appender.recorded(stored).await;
            count_events(broker, (namespace, name), types, StatusCode::ACCEPTED);
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Err(LogError::Overloaded) => Err(reject(
            Problem::overloaded("the broker's write queue is full; retry after the given delay"),
            types,
        )),
        Err(LogError::ShuttingDown) => Err(reject(
            Problem::overloaded(
                "the broker is shutting down; retry against another instance or later",
            ),
            types,
        )),
        Err(LogError::DiskFull(_)) => Err(reject(Problem::disk_full(), types)),
        Err(LogError::OverBudget(_)) => Err(reject(Problem::store_full(), types)),
        Err(e @ LogError::Unavailable(_)) => {
            tracing::warn!(error = %e, broker = %broker.id, "append failed");
            Err(reject(
                Problem::overloaded(
                    "the broker's store is unavailable; retry after the given delay",
                ),
                types,
            ))
        }
        Err(e @ LogError::Storage(_)) => {
            tracing::error!(error = %e, broker = %broker.id, "append failed");
            Err(reject(Problem::storage_failure(), types))
        }
    }
}

/// The ingress spans of `events` (none while traces are off): children of the request's
/// `traceparent` header, else of each event's own extension; an event without the extension
/// is given its span's context.
fn ingress_spans(
    broker: &str,
    headers: &HeaderMap,
    events: &mut [switchyard_core::CloudEvent],
) -> Vec<traces::Span> {
    if !traces::enabled() {
        return Vec::new();
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let header = text(traces::TRACEPARENT).map(|tp| (tp, text(traces::TRACESTATE)));
    events
        .iter_mut()
        .map(|event| {
            let span = traces::Span::ingress(broker, event, header);
            span.stamp(event);
            span
        })
        .collect()
}

/// The CloudEvents webhook validation handshake (http-webhook.md section 4): the sender asks
/// with `OPTIONS` and `WebHook-Request-Origin`; we allow any origin and any rate.
fn handshake(headers: &HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    if let Some(origin) = headers.get("webhook-request-origin") {
        h.insert("webhook-allowed-origin", origin.clone());
        h.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::connections::DeadlineBody;
    use crate::connections::tests::Stalled;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_a_408() {
        let body = Body::new(DeadlineBody::new(
            Stalled,
            std::time::Duration::from_secs(60),
        ));
        let slow = read_body(body, 1024).await.unwrap_err();
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        let whole = read_body(Body::from("abc"), 1024).await.unwrap();
        assert_eq!(&whole[..], b"abc");
    }
}
