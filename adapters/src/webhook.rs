//! The webhook source: `POST /sources/{namespace}/{name}` turns a request into CloudEvents in
//! the source's broker (`spec/sources.md`). A CloudEvent request (any mode) passes through; any
//! other body becomes an event with the source's `type`/`source`, a `subject` from a header
//! or a JSON pointer, an `id` from a delivery-id header (or a new one), and the body as data.
//! Bearer-token and HMAC-SHA256 checks run before anything is stored; 202 only after the
//! append committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use hmac::{KeyInit as _, Mac as _};
use switchyard_broker::ingress::{invalid_event, overloaded, read_body, stamp};
use switchyard_broker::log::{EventLog, LogError};
use switchyard_broker::problem::Problem;
use switchyard_core::config::Config;
use switchyard_core::resources::{DEFAULT_BROKER_TTL, SubjectFrom};
use switchyard_core::{CloudEvent, Data, EventError, ExtValue};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Default `type` of events built from plain requests.
pub const DEFAULT_TYPE: &str = "dev.switchyard.webhook";
/// Largest request body a source takes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why the webhook sources could not start.
#[derive(Debug, thiserror::Error)]
#[error("WebhookSource {source_id}: {message}")]
pub struct WebhookError {
    /// `namespace/name`.
    pub source_id: String,
    /// What is wrong.
    pub message: String,
}

struct Hmac {
    header: String,
    prefix: String,
    secret: Vec<u8>,
}

/// One source, resolved at start: secrets read, broker found.
struct Resolved {
    broker: String,
    ttl: i32,
    ty: String,
    source: String,
    subject: Option<SubjectFrom>,
    id_header: Option<String>,
    extensions: Vec<(String, String)>,
    bearer: Option<String>,
    hmac: Option<Hmac>,
}

struct Sources {
    log: Arc<dyn EventLog>,
    by_key: HashMap<String, Resolved>,
}

/// The routes of every WebhookSource of `config`, to merge into the server's router.
pub fn routes(config: &Config, log: Arc<dyn EventLog>) -> Result<Router, WebhookError> {
    let mut by_key = HashMap::new();
    for ((ns, name), w) in &config.webhook_sources {
        let id = format!("{ns}/{name}");
        let err = |message: String| WebhookError {
            source_id: id.clone(),
            message,
        };
        let spec = &w.spec;
        let r = spec
            .sink
            .reference
            .as_ref()
            .ok_or_else(|| err("spec.sink: needs a ref to a Broker".into()))?;
        let broker_ns = r.namespace.clone().unwrap_or_else(|| ns.clone());
        let ttl = config
            .brokers
            .get(&(broker_ns.clone(), r.name.clone()))
            .map_or(DEFAULT_BROKER_TTL, switchyard_core::resources::Broker::ttl);
        let auth = spec.auth.clone().unwrap_or_default();
        let bearer = auth
            .bearer_token
            .map(|t| t.resolve())
            .transpose()
            .map_err(|m| err(format!("spec.auth.bearerToken: {m}")))?;
        let hmac = auth
            .hmac
            .map(|h| {
                h.secret.resolve().map(|secret| Hmac {
                    header: h
                        .header
                        .unwrap_or_else(|| "x-hub-signature-256".into())
                        .to_ascii_lowercase(),
                    prefix: h.prefix.unwrap_or_else(|| "sha256=".into()),
                    secret: secret.into_bytes(),
                })
            })
            .transpose()
            .map_err(|m| err(format!("spec.auth.hmac.secret: {m}")))?;
        by_key.insert(
            id,
            Resolved {
                broker: format!("{broker_ns}/{}", r.name),
                ttl,
                ty: spec.ty.clone().unwrap_or_else(|| DEFAULT_TYPE.into()),
                source: spec
                    .source
                    .clone()
                    .unwrap_or_else(|| format!("/apis/v1/namespaces/{ns}/webhooksources/{name}")),
                subject: spec.subject.clone(),
                id_header: spec.id_header.clone(),
                extensions: spec
                    .ce_overrides
                    .as_ref()
                    .map(|o| {
                        o.extensions
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                bearer,
                hmac,
            },
        );
    }
    let state = Arc::new(Sources { log, by_key });
    Ok(Router::new()
        .route("/sources/{namespace}/{name}", post(receive))
        .with_state(state))
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "urn:switchyard:problem:unauthorized",
        "unauthorized",
        detail,
    )
}

/// Equal in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn check_auth(s: &Resolved, headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
    if let Some(token) = &s.bearer {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(unauthorized("missing or wrong bearer token"));
        }
    }
    if let Some(h) = &s.hmac {
        let signature = headers
            .get(h.header.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix(h.prefix.as_str()))
            .and_then(decode_hex)
            .ok_or_else(|| {
                unauthorized(&format!(
                    "missing or malformed signature header `{}`",
                    h.header
                ))
            })?;
        let mut mac = HmacSha256::new_from_slice(&h.secret)
            .map_err(|_| unauthorized("the source's HMAC secret is unusable"))?;
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(&signature)
            .map_err(|_| unauthorized("the signature does not match the body"))?;
    }
    Ok(())
}

fn is_cloudevent(headers: &HeaderMap) -> bool {
    headers.contains_key("ce-specversion")
        || headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/cloudevents")
            })
}

fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn build_event(s: &Resolved, headers: &HeaderMap, body: Bytes) -> Result<CloudEvent, EventError> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let id = s
        .id_header
        .as_deref()
        .and_then(header_text)
        .unwrap_or_else(new_id);
    let mut event = CloudEvent::new(id, s.source.clone(), s.ty.clone())?;
    event.datacontenttype = header_text("content-type");
    event.subject = match &s.subject {
        Some(SubjectFrom {
            header: Some(h), ..
        }) => header_text(h),
        Some(SubjectFrom {
            json_pointer: Some(p),
            ..
        }) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer(p).map(|x| match x {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .filter(|v| !v.is_empty()),
        _ => None,
    };
    if !body.is_empty() {
        event.data = Data::Binary(body);
    }
    event.validate()?;
    Ok(event)
}

async fn receive(
    State(sources): State<Arc<Sources>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&sources, &namespace, &name, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    sources: &Sources,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let key = format!("{namespace}/{name}");
    let s = sources.by_key.get(&key).ok_or_else(|| {
        Problem::not_found(format!(
            "no WebhookSource `{name}` in namespace `{namespace}`"
        ))
    })?;
    let body = read_body(body, MAX_BODY_BYTES).await?;
    check_auth(s, headers, &body)?;
    let mut events = if is_cloudevent(headers) {
        switchyard_core::http::decode(headers, body)
            .map_err(|e| invalid_event(&e))?
            .1
    } else {
        vec![build_event(s, headers, body).map_err(|e| invalid_event(&e))?]
    };
    let arrival = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for event in &mut events {
        for (k, v) in &s.extensions {
            event
                .set_extension(k, ExtValue::String(v.clone()))
                .map_err(|e| invalid_event(&e))?;
        }
        stamp(event, s.ttl, &arrival)?;
    }
    if events.is_empty() {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let encoded = events.iter().map(switchyard_core::store::encode).collect();
    match sources.log.append(&s.broker, encoded).await {
        Ok(_) => Ok(StatusCode::ACCEPTED.into_response()),
        Err(LogError::Overloaded | LogError::ShuttingDown) => Err(overloaded(
            "the broker cannot take events right now; retry after the given delay",
        )),
        Err(e @ LogError::Storage(_)) => {
            tracing::error!(source = %key, error = %e, "append failed");
            Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "urn:switchyard:problem:storage",
                "storage failure",
                "the event could not be stored; it was not accepted",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_constant_time_compare() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
