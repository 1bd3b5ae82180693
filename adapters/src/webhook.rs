//! The webhook source: `POST /sources/{namespace}/{name}` turns a request into CloudEvents in
//! the source's broker (`spec/sources.md`). A CloudEvent request (any mode) passes through; any
//! other body becomes an event with the source's `type`/`source`, a `subject` from a header
//! or a JSON pointer, an `id` from a delivery-id header (or a new one), and the body as data.
//! Bearer-token and HMAC-SHA256 checks run before anything is stored; 202 only after the
//! append committed.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hmac::{KeyInit as _, Mac as _};
use switchyard_broker::eventtypes::EventTypePolicy;

use switchyard_broker::log::EventLog;
use switchyard_broker::problem::Problem;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::sources::{SubjectFrom, WebhookAuth};
use switchyard_core::{CloudEvent, Data, EventError};

use crate::SourceError;
use crate::kind::{HttpSource, Kind, Setup, StartFuture, Started};
use crate::target::{Target, new_id};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Default `type` of events built from plain requests.
pub const DEFAULT_TYPE: &str = "dev.switchyard.webhook";

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

/// A source's auth checks with their secrets read.
#[derive(Default)]
pub(crate) struct Auth {
    bearer: Option<String>,
    hmac: Option<Hmac>,
}

impl Auth {
    /// Reads the secrets of `auth` (from the environment where named); the error names the
    /// field under `field`.
    pub(crate) fn resolve(auth: Option<&WebhookAuth>, field: &str) -> Result<Auth, String> {
        let auth = auth.cloned().unwrap_or_default();
        let bearer = auth
            .bearer_token
            .map(|t| t.resolve())
            .transpose()
            .map_err(|m| format!("{field}.bearerToken: {m}"))?;
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
            .map_err(|m| format!("{field}.hmac.secret: {m}"))?;
        Ok(Auth { bearer, hmac })
    }
}

/// One source, resolved at start: secrets read, broker found.
pub(crate) struct Resolved {
    target: Target,
    ty: String,
    source: String,
    subject: Option<SubjectFrom>,
    id_header: Option<String>,
    pub(crate) auth: Auth,
}

/// The WebhookSources of `config`, by `namespace/name`, with their secrets read.
pub(crate) fn resolve_all(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
) -> Result<Vec<(String, Resolved)>, WebhookError> {
    let mut by_key = Vec::new();
    for ((ns, name), w) in &config.webhook_sources {
        let id = SourceId::new(ns, name).to_string();
        let err = |message: String| WebhookError {
            source_id: id.clone(),
            message,
        };
        let spec = &w.spec;
        let auth = Auth::resolve(spec.auth.as_ref(), "spec.auth").map_err(err)?;
        by_key.push((
            id,
            Resolved {
                target: Target::resolve(
                    config,
                    event_types,
                    "WebhookSource",
                    ns,
                    name,
                    &spec.sink,
                    spec.ce_overrides.as_ref(),
                ),
                ty: spec.ty.clone().unwrap_or_else(|| DEFAULT_TYPE.into()),
                source: spec
                    .source
                    .clone()
                    .unwrap_or_else(|| format!("/apis/v1/namespaces/{ns}/webhooksources/{name}")),
                subject: spec.subject.clone(),
                id_header: spec.id_header.clone(),
                auth,
            },
        ));
    }
    Ok(by_key)
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

/// Checks the bearer token and the HMAC signature a source asks for.
pub(crate) fn check_auth(s: &Auth, headers: &HeaderMap, body: &[u8]) -> Result<(), Problem> {
    if let (Some(h), Some(signature)) = (&s.hmac, check_headers(s, headers)?) {
        let mut mac = HmacSha256::new_from_slice(&h.secret)
            .map_err(|_| unauthorized("the source's HMAC secret is unusable"))?;
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(&signature)
            .map_err(|_| unauthorized("the signature does not match the body"))?;
    }
    Ok(())
}

/// What of [`check_auth`] needs no body: the bearer token, and that the signature header is
/// there and readable (its bytes, when the source asks for one). Run before the body is read,
/// so a caller without credentials costs no body.
pub(crate) fn check_headers(s: &Auth, headers: &HeaderMap) -> Result<Option<Vec<u8>>, Problem> {
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
    let Some(h) = &s.hmac else {
        return Ok(None);
    };
    headers
        .get(h.header.as_str())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix(h.prefix.as_str()))
        .and_then(decode_hex)
        .map(Some)
        .ok_or_else(|| {
            unauthorized(&format!(
                "missing or malformed signature header `{}`",
                h.header
            ))
        })
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

/// Handles one request to a WebhookSource: 202 once its events are stored.
pub(crate) async fn handle(
    s: &Resolved,
    log: &Arc<dyn EventLog>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    check_auth(&s.auth, headers, &body)?;
    let mut events = if is_cloudevent(headers) {
        switchyard_core::http::decode(headers, body)
            .map_err(|e| Problem::invalid_event(&e))?
            .1
    } else {
        vec![build_event(s, headers, body).map_err(|e| Problem::invalid_event(&e))?]
    };
    let encoded = s.target.prepare(&mut events)?;
    s.target.append(log, encoded).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The WebhookSource kind.
pub(crate) const KIND: Kind = Kind {
    name: "WebhookSource",
    describe: |config| {
        config
            .webhook_sources
            .keys()
            .map(|(ns, name)| format!("WebhookSource {ns}/{name} at POST /sources/{ns}/{name}"))
            .collect()
    },
    check: None,
    start: start_kind,
};

fn start_kind<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        let http = resolve_all(s.config, s.event_types)
            .map_err(|e| SourceError(e.to_string()))?
            .into_iter()
            .map(|(key, w)| (key, HttpSource::Webhook(w)))
            .collect();
        Ok(Started { tasks: None, http })
    })
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
