//! The NatsSink writer: a trigger's events published to a NATS subject in the NATS binding.

use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use switchyard_core::CloudEvent;
use switchyard_core::streams::{ContentMode, NatsSink};
use switchyard_triggers::streams::{StreamSink, StreamSinkError};

use super::connect;
use crate::SourceError;

/// Publishes a trigger's events to a NATS subject.
#[derive(Debug)]
struct NatsPublisher {
    client: async_nats::Client,
    jetstream: Option<jetstream::Context>,
    subject: String,
    structured: bool,
}

impl NatsPublisher {
    fn message(&self, event: &CloudEvent) -> (async_nats::HeaderMap, Bytes) {
        let (headers, body) = if self.structured {
            switchyard_core::http::encode_structured(event)
        } else {
            switchyard_core::http::encode_binary(event)
        };
        let mut out = async_nats::HeaderMap::new();
        for (name, value) in &headers {
            if let Ok(v) = value.to_str() {
                out.append(canonical_header_name(name.as_str()), v);
            }
        }
        // The NATS binding maps datacontenttype to `ce-datacontenttype` like any attribute;
        // `Content-Type` stays as well, for consumers that read it.
        if !self.structured
            && let Some(ct) = &event.datacontenttype
        {
            out.insert(
                "ce-datacontenttype",
                switchyard_core::http::percent_encode(ct).as_str(),
            );
        }
        (out, body)
    }
}

/// `ce-specversion` → `ce-specversion`, `content-type` → `Content-Type`: NATS header names are
/// case-insensitive by the binding, but clients compare them exactly, so the well-known one is
/// written as the binding writes it.
fn canonical_header_name(name: &str) -> String {
    if name == "content-type" {
        "Content-Type".to_owned()
    } else {
        name.to_owned()
    }
}

impl StreamSink for NatsPublisher {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), StreamSinkError>> {
        Box::pin(async move {
            let (headers, body) = self.message(event);
            let retry = |message: String| StreamSinkError {
                retryable: true,
                message,
            };
            match &self.jetstream {
                Some(js) => {
                    let ack = js
                        .publish_with_headers(self.subject.clone(), headers, body)
                        .await
                        .map_err(|e| retry(format!("JetStream publish: {e}")))?;
                    ack.await
                        .map(|_| ())
                        .map_err(|e| retry(format!("JetStream did not acknowledge: {e}")))
                }
                None => {
                    self.client
                        .publish_with_headers(self.subject.clone(), headers, body)
                        .await
                        .map_err(|e| retry(format!("NATS publish: {e}")))?;
                    self.client
                        .flush()
                        .await
                        .map_err(|e| retry(format!("NATS flush: {e}")))
                }
            }
        })
    }
}

/// The writer of a NatsSink.
pub(crate) async fn sink(
    ns: &str,
    name: &str,
    s: &NatsSink,
) -> Result<Arc<dyn StreamSink>, SourceError> {
    let client = connect(
        &s.spec.servers,
        s.spec.auth.as_ref(),
        s.spec.tls.as_ref(),
        &format!("switchyard sink {ns}/{name}"),
    )
    .await
    .map_err(|e| SourceError(format!("NatsSink {ns}/{name}: {e}")))?;
    Ok(Arc::new(NatsPublisher {
        jetstream: s
            .spec
            .jetstream
            .unwrap_or(false)
            .then(|| jetstream::new(client.clone())),
        client,
        subject: s.spec.subject.clone(),
        structured: s.spec.content_mode == Some(ContentMode::Structured),
    }))
}
