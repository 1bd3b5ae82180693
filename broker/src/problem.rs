//! RFC 9457 problem bodies (`application/problem+json`) for every error the HTTP API gives.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_core::EventError;

use crate::append::{Refusal, Refused, TTL_EXTENSION};
use crate::eventtypes::EventTypeRefusal;

/// A problem: what went wrong, for a person and for a program.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URN naming the kind of problem (listed in `spec/ingress.md`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What exactly is wrong with this request.
    pub detail: String,
    /// The CloudEvents attribute at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute: Option<Box<str>>,
    /// The position of the event at fault in a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Each way the event's data breaks its schema (`schema-violation` only); boxed to keep
    /// `Result<_, Problem>` small.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(clippy::box_collection)]
    pub errors: Option<Box<Vec<crate::eventtypes::Violation>>>,
    /// Seconds to wait before retrying, when the answer is 429 or 503.
    #[serde(skip)]
    pub retry_after_secs: Option<u16>,
    /// Methods the resource allows, for 405.
    #[serde(skip)]
    pub allow: Option<&'static str>,
    /// For 401 and 403: the challenge, and the scope that was missing; boxed to keep
    /// `Result<_, Problem>` small.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<AuthDetail>>,
}

/// What a 401 or 403 adds to a problem.
#[derive(Debug, Clone, Serialize)]
pub struct AuthDetail {
    /// The `WWW-Authenticate` challenge.
    #[serde(skip)]
    pub challenge: String,
    /// The scope the caller lacked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
}

impl Problem {
    /// A problem with the given status, kind, title and detail.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            attribute: None,
            index: None,
            errors: None,
            retry_after_secs: None,
            allow: None,
            auth: None,
        }
    }

    /// 401: no credentials, or credentials that do not hold (`invalid` says why), with a
    /// Bearer challenge (RFC 6750).
    pub fn unauthenticated(invalid: Option<&str>) -> Self {
        let (detail, challenge) = match invalid {
            None => (
                "this needs a bearer token: send `Authorization: Bearer TOKEN` (spec/security.md)"
                    .to_owned(),
                r#"Bearer realm="switchyard""#.to_owned(),
            ),
            Some(why) => (
                format!("the bearer token was not accepted: {why}"),
                format!(
                    r#"Bearer realm="switchyard", error="invalid_token", error_description="{}""#,
                    why.chars()
                        .map(|c| {
                            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                                '\''
                            } else {
                                c
                            }
                        })
                        .collect::<String>()
                ),
            ),
        };
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "urn:switchyard:problem:unauthenticated",
            "unauthenticated",
            detail,
        );
        p.auth = Some(Box::new(AuthDetail {
            challenge,
            scope: None,
        }));
        p
    }

    /// 403: the caller is known but lacks `scope` here.
    pub fn missing_scope(scope: &'static str, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(
            StatusCode::FORBIDDEN,
            "urn:switchyard:problem:forbidden",
            "forbidden",
            detail,
        );
        p.auth = Some(Box::new(AuthDetail {
            challenge: format!(
                r#"Bearer realm="switchyard", error="insufficient_scope", scope="{scope}""#
            ),
            scope: Some(scope),
        }));
        p
    }

    /// 403: the caller is known but not allowed (an EventPolicy, a redrive destination).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::FORBIDDEN,
            "urn:switchyard:problem:forbidden",
            "forbidden",
            detail,
        )
    }

    /// 415 for a mutating API call that is not `application/json` (a cross-site form post).
    pub fn json_only(got: Option<&str>) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "urn:switchyard:problem:json-only",
            "JSON only",
            format!(
                "API calls that change something take `Content-Type: application/json` only, not {}",
                got.map_or_else(|| "none".to_owned(), |c| format!("`{c}`"))
            ),
        )
    }

    /// 404 for a path or broker that does not exist.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "urn:switchyard:problem:not-found",
            "not found",
            detail,
        )
    }

    /// 405 with the `Allow` header.
    pub fn method_not_allowed(method: &str, allow: &'static str) -> Self {
        let mut p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "urn:switchyard:problem:method-not-allowed",
            "method not allowed",
            format!("{method} is not allowed here; allowed: {allow}"),
        );
        p.allow = Some(allow);
        p
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl Problem {
    /// 400 (or 415 for an unsupported format) for a request that holds no valid CloudEvent.
    pub fn invalid_event(e: &EventError) -> Problem {
        let (status, kind, title) = if e.is_unsupported_media_type() {
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "urn:switchyard:problem:unsupported-format",
                "unsupported event format",
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                "urn:switchyard:problem:invalid-event",
                "invalid CloudEvent",
            )
        };
        let mut p = Problem::new(status, kind, title, e.to_string());
        p.attribute = e.attribute().map(Box::from);
        if let EventError::InBatch { index, .. } = e {
            p.index = u32::try_from(*index).ok();
        }
        p
    }

    /// 503 with `Retry-After: 1`: the store cannot take events right now.
    pub fn overloaded(detail: &str) -> Problem {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:switchyard:problem:overloaded",
            "broker overloaded",
            detail,
        );
        p.retry_after_secs = Some(1);
        p
    }

    /// 503 with `Retry-After: 1`: the server is stopping (past its shutdown drain window);
    /// another instance, or this one once restarted, takes the same request.
    pub fn shutting_down() -> Problem {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:switchyard:problem:shutting-down",
            "broker shutting down",
            "the broker is shutting down; retry against another instance or after the given delay",
        );
        p.retry_after_secs = Some(1);
        p
    }

    /// 507 with `Retry-After: 5`: the store is at its budget (`--max-store-bytes`) with events
    /// not yet delivered; nothing was accepted, and the same request can succeed once delivery
    /// has made room.
    pub fn store_full() -> Problem {
        let mut p = Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "urn:switchyard:problem:store-full",
            "store full",
            "the broker's store holds as many events as its budget allows, not yet delivered; \
             the event was not accepted. Retry after the given delay",
        );
        p.retry_after_secs = Some(5);
        p
    }

    /// 507 with `Retry-After: 5`: the store's disk is full; nothing was accepted, and the same
    /// request can succeed once space is freed.
    pub fn disk_full() -> Problem {
        let mut p = Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "urn:switchyard:problem:disk-full",
            "disk full",
            "the broker's disk is full; the event was not accepted. Retry after the given delay",
        );
        // The writer tries a commit again at most this long after a refusal.
        p.retry_after_secs = Some(5);
        p
    }

    /// 500: the store failed; nothing was accepted.
    pub fn storage_failure() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "urn:switchyard:problem:storage",
            "storage failure",
            "the event could not be stored; it was not accepted",
        )
    }
}

/// The answer to events the broker refuses (the appender's [`Refused`]).
impl From<Refused> for Problem {
    fn from(refused: Refused) -> Problem {
        let detail = refused.to_string();
        let bad_request = |kind, title, attribute: &str, detail| {
            let mut p = Problem::new(StatusCode::BAD_REQUEST, kind, title, detail);
            p.attribute = Some(Box::from(attribute));
            p
        };
        let mut p = match refused.reason {
            Refusal::TtlExhausted => bad_request(
                "urn:switchyard:problem:ttl-exhausted",
                "event TTL exhausted",
                TTL_EXTENSION,
                detail,
            ),
            Refusal::TtlNotInteger => bad_request(
                "urn:switchyard:problem:invalid-event",
                "invalid CloudEvent",
                TTL_EXTENSION,
                detail,
            ),
            Refusal::EventType(EventTypeRefusal::SchemaViolation { violations, .. }) => {
                let mut p = bad_request(
                    "urn:switchyard:problem:schema-violation",
                    "event data violates its schema",
                    "data",
                    detail,
                );
                p.errors = Some(Box::new(violations));
                p
            }
            Refusal::EventType(EventTypeRefusal::Unregistered { .. }) => bad_request(
                "urn:switchyard:problem:unregistered-event-type",
                "unregistered event type",
                "type",
                detail,
            ),
            Refusal::Invalid(e) => {
                let mut p = Problem::invalid_event(&e);
                p.detail = detail;
                p
            }
        };
        if let Some(i) = refused.index {
            p.index = u32::try_from(i).ok();
        }
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(c) = self
            .auth
            .as_ref()
            .and_then(|a| HeaderValue::from_str(&a.challenge).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        response
    }
}
