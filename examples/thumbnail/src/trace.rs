//! OpenTelemetry for the function, as a sink author would add it: off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; then a span per event, a child of the request's
//! `traceparent` header (the broker's attempt), and the reply carries the span's context as
//! its `traceparent` extension, so the trace goes on through the broker.

use std::collections::HashMap;

use axum::http::HeaderMap;
use cloudevents::AttributesReader as _;
use cloudevents::Event;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The exporter and tracer, when the variables ask for them.
pub struct Traces {
    /// Kept for the life of the process: its batch thread exports the spans (every
    /// `OTEL_BSP_SCHEDULE_DELAY` ms, 5 s by default).
    _provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// Sets up traces when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set.
pub fn init_from_env() -> anyhow::Result<Option<Traces>> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "thumbnail".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "thumbnail");
    Ok(Some(Traces {
        _provider: provider,
        tracer,
    }))
}

impl Traces {
    /// The span of handling `event`, a child of the request's `traceparent` header.
    pub fn start(&self, headers: &HeaderMap, event: &Event) -> Context {
        let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|k| Some((k.to_owned(), headers.get(k)?.to_str().ok()?.to_owned())))
            .collect();
        let parent = TraceContextPropagator::new().extract(&carrier);
        let span = self
            .tracer
            .span_builder("make thumbnail")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("cloudevents.event_id", event.id().to_owned()),
                KeyValue::new("cloudevents.event_source", event.source().to_string()),
                KeyValue::new("cloudevents.event_type", event.ty().to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }
}

/// `cx`'s span context as a `traceparent` value.
pub fn traceparent(cx: &Context) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Ends `cx`'s span with the answer's status.
pub fn end(cx: &Context, status: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 400 {
        span.set_status(Status::error(format!("answered {status}")));
    }
    span.end();
}
