//! `event-display`: an HTTP sink that prints every CloudEvent it receives, one line each (like
//! Knative's `event_display`). The thumbnail quickstart points its second trigger at it.

use anyhow::{Context as _, Result};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use cloudevents::Event;
use cloudevents::event::AttributesReader as _;

#[tokio::main]
async fn main() -> Result<()> {
    let listen = std::env::var("DISPLAY_LISTEN").unwrap_or_else(|_| "127.0.0.1:9091".into());
    let router = Router::new().route(
        "/",
        post(|event: Event| async move {
            let data = match event.data() {
                Some(cloudevents::Data::Json(v)) => v.to_string(),
                Some(cloudevents::Data::String(s)) => s.clone(),
                // Binary mode delivers JSON as bytes: show it as text when it is text.
                Some(cloudevents::Data::Binary(b)) => {
                    String::from_utf8(b.clone()).unwrap_or_else(|_| format!("<{} bytes>", b.len()))
                }
                None => String::new(),
            };
            // cloudevents-sdk 0.9 leaves `ce-` headers percent-encoded, as the HTTP binding
            // sends them (a space is `%20`); decode the subject for people to read.
            let subject = event.subject().map_or_else(
                || "-".to_owned(),
                |s| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                },
            );
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "{} {} subject={subject} id={} {data}",
                    event.ty(),
                    event.source(),
                    event.id()
                );
            }
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "event-display listening on http://{}",
            listener.local_addr()?
        );
    }
    axum::serve(listener, router).await?;
    Ok(())
}
