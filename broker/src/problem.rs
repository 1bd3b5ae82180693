//! RFC 9457 problem bodies (`application/problem+json`) for every error the HTTP API gives.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
    pub attribute: Option<String>,
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
        }
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
        response
    }
}
