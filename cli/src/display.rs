//! `switchyard display`: a subscriber that prints every CloudEvent it receives, one line each
//! (Knative's `event_display`), so what a Trigger delivers can be watched. It takes any content
//! mode, answers 200 with no reply, and 400 with the reason to a request that is not a
//! CloudEvent.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use switchyard_core::CloudEvent;
use switchyard_core::event::Data;

/// The line printed for `event`.
pub fn line(event: &CloudEvent) -> String {
    let data = match &event.data {
        Data::Absent => String::new(),
        _ => match event.data_bytes() {
            Some(bytes) => match std::str::from_utf8(&bytes) {
                // One event, one line, whatever the data's layout.
                Ok(text) => text.replace(['\r', '\n'], " "),
                Err(_) => format!("<{} bytes>", bytes.len()),
            },
            None => String::new(),
        },
    };
    format!(
        "{}  {}  subject={}  id={}  {data}",
        event.ty,
        event.source,
        event.subject.as_deref().unwrap_or("-"),
        event.id
    )
    .trim_end()
    .to_owned()
}

async fn receive(headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    match switchyard_core::http::decode(&headers, body) {
        Ok((_, events)) => {
            #[allow(clippy::print_stdout)]
            for e in &events {
                println!("{}", line(e));
            }
            (StatusCode::OK, String::new())
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("not a CloudEvent: {e}\n")),
    }
}

/// Listens on `listen` and prints what arrives until the process is stopped.
pub async fn run(listen: SocketAddr) -> Result<()> {
    let app = axum::Router::new().fallback(axum::routing::post(receive));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "switchyard display listening on http://{}",
            listener.local_addr()?
        );
    }
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_event_and_shows_text_data() {
        let mut e = CloudEvent::new("1", "/curl", "com.example.hello").expect("a valid event");
        e.data = Data::Json(r#"{"hello":"world"}"#.into());
        assert_eq!(
            line(&e),
            r#"com.example.hello  /curl  subject=-  id=1  {"hello":"world"}"#
        );
        e.subject = Some("a b".into());
        e.data = Data::Binary(Bytes::from_static(&[0xff, 0xfe]));
        assert_eq!(
            line(&e),
            "com.example.hello  /curl  subject=a b  id=1  <2 bytes>"
        );
    }
}
