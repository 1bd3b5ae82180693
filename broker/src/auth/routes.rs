//! Who may call each route: the one table ([`need`]) and the middleware that applies it to
//! every route of the server, whichever crate defined the route. A route missing from the
//! table needs `admin` everywhere, so a new route is closed until it is listed here.
//!
//! The one exception is a broker's ingress, the hot path: it is served outside the
//! middleware (whose boxing and bookkeeping cost ingest about 5 %), and its handler calls
//! [`admit_sender`], which applies the same rules.

use std::collections::HashMap;
use std::sync::Arc;

use axum::RequestExt as _;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use switchyard_core::auth::Scope;

use super::{Auth, Caller, SendPermit};
use crate::app::App;
use crate::problem::Problem;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: probes, and sources, which check their own credentials (HMAC, a bearer
    /// token) before they read a body.
    Open,
    /// A broker's ingress: its EventPolicies, or the default mode, applied by the handler
    /// itself ([`admit_sender`]).
    Send,
    /// A scope in the namespace the path names.
    InNamespace(Scope),
    /// A scope in every namespace (what the route shows or changes spans them).
    Everywhere(Scope),
}

/// The table: what `method` on the route `path` (as the router wrote it) needs.
pub(crate) fn need(method: &Method, path: Option<&str>) -> Need {
    const DL: &str = "/api/v1/namespaces/{namespace}/brokers/{broker}/deadletters";
    let Some(path) = path else {
        // Unrouted: the fallback answers 404.
        return Need::Open;
    };
    let get = method == Method::GET || method == Method::HEAD;
    match path {
        "/healthz" | "/readyz" | "/sources/{namespace}/{name}" => Need::Open,
        // The console's assets hold no data; its pages read the API with the caller's token.
        "/ui"
        | "/ui/triggers/{name}"
        | "/ui/deadletters/{broker}"
        | "/ui/deadletters/{broker}/{id}"
        | "/ui/assets/app.js"
        | "/ui/assets/app.css"
            if get =>
        {
            Need::Open
        }
        "/{namespace}/{broker}" => Need::Send,
        "/api/v1/namespaces/{namespace}/brokers/{broker}/events"
        | "/api/v1/namespaces/{namespace}/eventtypes"
        | "/api/v1/namespaces/{namespace}/eventtypes/{name}"
        | "/api/v1/namespaces/{namespace}/brokers/{broker}/eventtypes"
            if get =>
        {
            Need::InNamespace(Scope::EventsRead)
        }
        DL if get => Need::InNamespace(Scope::DeadLettersRead),
        "/api/v1/namespaces/{namespace}/brokers/{broker}/deadletters/{id}" if get => {
            Need::InNamespace(Scope::DeadLettersReadData)
        }
        "/api/v1/namespaces/{namespace}/brokers/{broker}/deadletters/redrive" => {
            Need::InNamespace(Scope::DeadLettersRedrive)
        }
        DL | "/api/v1/namespaces/{namespace}/brokers/{broker}/deadletters/{id}"
            if method == Method::DELETE =>
        {
            Need::InNamespace(Scope::DeadLettersPurge)
        }
        "/api/v1/namespaces/{namespace}/brokers"
        | "/api/v1/namespaces/{namespace}/brokers/{broker}"
        | "/api/v1/namespaces/{namespace}/triggers"
        | "/api/v1/namespaces/{namespace}/triggers/{trigger}"
        | "/api/v1/namespaces/{namespace}/sources"
        | "/api/v1/namespaces/{namespace}/sources/{source}"
        | "/api/v1/namespaces/{namespace}/replays"
        | "/api/v1/namespaces/{namespace}/replays/{id}"
            if get =>
        {
            Need::InNamespace(Scope::ResourcesRead)
        }
        "/api/v1/namespaces/{namespace}/triggers/{trigger}/pause"
        | "/api/v1/namespaces/{namespace}/triggers/{trigger}/resume"
        | "/api/v1/namespaces/{namespace}/triggers/{trigger}/replays"
            if method == Method::POST =>
        {
            Need::InNamespace(Scope::TriggersOperate)
        }
        "/api/v1/namespaces/{namespace}/replays/{id}" if method == Method::DELETE => {
            Need::InNamespace(Scope::TriggersOperate)
        }
        "/api/v1/namespaces/{namespace}/audit" if get => Need::InNamespace(Scope::Admin),
        "/metrics" if get => Need::Everywhere(Scope::MetricsRead),
        _ => Need::Everywhere(Scope::Admin),
    }
}

/// Whether `host` (a `Host` header) names this machine's loopback: what a browser sends to a
/// server on loopback, unless a page rebound a name of its own to 127.0.0.1.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Without authentication a server on loopback is open to local programs; a web page that
/// rebinds its own name to 127.0.0.1 reaches it with its name in `Host`, and could read what
/// the management API shows or write events through ingress. Such requests are refused.
fn check_local_host(app: &App, auth: &Auth, headers: &HeaderMap) -> Result<(), Problem> {
    if auth.enabled || !app.listen.ip().is_loopback() {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if loopback_host(host) {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "without authentication this server answers only requests for localhost, not for `{host}`; configure an Identity or TokenIssuer to serve other names (spec/security.md)"
        )))
    }
}

/// Who may post events to the broker `namespace/broker`: the front door of ingress, which
/// its handler calls before it reads the body (ingress is served outside [`guard`]).
pub(crate) async fn admit_sender(
    app: &App,
    headers: &HeaderMap,
    namespace: &str,
    broker: &str,
) -> Result<SendPermit, Problem> {
    let auth = app.auth();
    check_local_host(app, &auth, headers)?;
    if !auth.checks_senders() {
        return Ok(SendPermit::default());
    }
    let principal = auth
        .authenticate(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .await
        .map_err(|why| Problem::unauthenticated(Some(&why)))?;
    auth.may_send(&Caller(principal), namespace, broker)
}

/// A call that changes something must be JSON: a browser sends a cross-site form (or
/// `text/plain`) without asking, but not `application/json`.
fn check_json(request: &Request) -> Result<(), Problem> {
    let path = request.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/debug/");
    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !api || !mutating {
        return Ok(());
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let json = content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    // A DELETE carries no body; a browser cannot send one cross-site without asking first.
    if json || (content_type.is_none() && *request.method() == Method::DELETE) {
        Ok(())
    } else {
        Err(Problem::json_only(content_type))
    }
}

/// The middleware: authenticates the caller, applies the table, and leaves the [`Caller`] in
/// the request's extensions.
pub(crate) async fn guard(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Response {
    let need = need(
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    // Ingress decides in its handler ([`admit_sender`]), wherever it is served.
    if matches!(need, Need::Open | Need::Send) {
        return next.run(request).await;
    }
    if let Err(p) = check_json(&request) {
        return p.into_response();
    }
    let auth = app.auth();
    if let Err(p) = check_local_host(&app, &auth, request.headers()) {
        return p.into_response();
    }
    // The path's parameters as the handlers see them (percent-decoded), so the check and the
    // handler agree on which namespace the request is about.
    let needs_params = matches!(need, Need::InNamespace(_)) && auth.enabled;
    let params: HashMap<String, String> = if needs_params {
        match request
            .extract_parts::<Path<HashMap<String, String>>>()
            .await
        {
            Ok(Path(p)) => p,
            Err(_) => HashMap::new(),
        }
    } else {
        HashMap::new()
    };
    let principal = match auth
        .authenticate(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .map(axum::http::HeaderValue::as_bytes),
        )
        .await
    {
        Ok(p) => p,
        Err(why) => return Problem::unauthenticated(Some(&why)).into_response(),
    };
    let caller = Caller(principal);
    let (scope, namespace) = match need {
        Need::Open | Need::Send => (None, None),
        Need::InNamespace(s) => (Some(s), params.get("namespace").cloned()),
        Need::Everywhere(s) => (Some(s), None),
    };
    if let Some(scope) = scope
        && auth.enabled
    {
        let Some(p) = caller.0.as_deref() else {
            return Problem::unauthenticated(None).into_response();
        };
        if !p.may(scope, namespace.as_deref()) {
            let place = namespace.map_or_else(
                || "in every namespace (`@*`)".to_owned(),
                |ns| format!("in namespace `{ns}`"),
            );
            return Problem::missing_scope(
                scope.as_str(),
                format!("`{}` lacks scope `{}` {place}", p.subject, scope.as_str()),
            )
            .into_response();
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_needs_a_scope_and_unknown_ones_need_admin() {
        let dl = "/api/v1/namespaces/{namespace}/brokers/{broker}/deadletters";
        assert_eq!(
            need(&Method::GET, Some(dl)),
            Need::InNamespace(Scope::DeadLettersRead)
        );
        assert_eq!(
            need(&Method::DELETE, Some(dl)),
            Need::InNamespace(Scope::DeadLettersPurge)
        );
        assert_eq!(
            need(&Method::GET, Some(&format!("{dl}/{{id}}"))),
            Need::InNamespace(Scope::DeadLettersReadData)
        );
        assert_eq!(
            need(&Method::POST, Some("/api/v1/reload")),
            Need::Everywhere(Scope::Admin)
        );
        assert_eq!(
            need(&Method::POST, Some("/debug/clock")),
            Need::Everywhere(Scope::Admin)
        );
        assert_eq!(need(&Method::GET, Some("/readyz")), Need::Open);
        assert_eq!(
            need(&Method::POST, Some("/{namespace}/{broker}")),
            Need::Send
        );
        assert_eq!(need(&Method::GET, None), Need::Open);
    }

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.0.0.2",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "",
            "10.0.0.1:80",
            "localhost.evil",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
