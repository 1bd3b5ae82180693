//! The web console (`/ui`; docs/console.md): one page of plain HTML, a stylesheet and a script,
//! compiled into the binary, that read and change the server through its management API with
//! the caller's bearer token. The assets hold no data, so they are served to anyone; what a
//! page shows is what the token may read (the same front door as the API). Nothing is fetched
//! from elsewhere: a Content-Security-Policy of `'self'` says so to the browser.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// What the browser may load and do: only this server's own assets, no framing.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// The console's routes: every page is the same document, whose script renders the page its
/// path names. No page is two segments long, so `/ui/{broker}` stays the ingress of a Broker
/// in a namespace called `ui`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/triggers/{name}", get(index))
        .route("/ui/deadletters/{broker}", get(index))
        .route("/ui/deadletters/{broker}/{id}", get(index))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/assets/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}
