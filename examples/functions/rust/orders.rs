//! An order-confirming function for Switchyard, written with the official CloudEvents SDK for
//! Rust (`cloudevents-sdk`, its axum integration). The same contract as `../python/orders.py`
//! (docs/sink-authors.md): 200 with a reply event, 204 for events that are not ours, 422 for
//! an order without a numeric total (dead-lettered at once), 503 on the first attempt of a
//! `"simulate": "flaky"` order (retried). PORT (default 8093; 0 picks one).
//!
//! Run it with `cargo run --example orders-function`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudevents::Event;
use cloudevents::event::{AttributesReader as _, Data, EventBuilder as _, EventBuilderV10};

/// The events whose first attempt already failed (for `"simulate": "flaky"`).
type FailedOnce = Arc<Mutex<HashSet<(String, String)>>>;

fn problem(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

async fn handle(failed_once: FailedOnce, event: Event) -> Response {
    if event.ty() != "com.example.order.placed" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let data: serde_json::Value = match event.data() {
        Some(Data::Json(v)) => v.clone(),
        Some(Data::Binary(b)) => serde_json::from_slice(b).unwrap_or_default(),
        Some(Data::String(s)) => serde_json::from_str(s).unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    let Some(total) = data.get("total").filter(|t| t.is_number()).cloned() else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "data.total must be a number",
        );
    };
    if data.get("simulate").and_then(|s| s.as_str()) == Some("flaky") {
        let key = (event.source().to_string(), event.id().to_owned());
        let first = failed_once
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key);
        if first {
            return problem(StatusCode::SERVICE_UNAVAILABLE, "busy, try again");
        }
    }
    let order_id = data.get("orderId").cloned().unwrap_or_default();
    let mut reply = EventBuilderV10::new()
        .id(format!("{}.confirmed", event.id()))
        .source("/functions/orders/rust")
        .ty("com.example.order.confirmed")
        .data(
            "application/json",
            serde_json::json!({ "orderId": order_id, "total": total }),
        );
    if let Some(id) = order_id.as_str() {
        reply = reply.subject(id);
    }
    match reply.build() {
        Ok(e) => (StatusCode::OK, e).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8093".into());
    let failed_once = FailedOnce::default();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |event: Event| handle(Arc::clone(&failed_once), event)),
    );
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "orders function listening on http://{}/",
            listener.local_addr()?
        );
    }
    axum::serve(listener, app).await
}
