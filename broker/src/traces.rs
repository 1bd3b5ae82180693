//! OpenTelemetry traces (docs/observability.md, "Traces"): off unless an OTLP endpoint is
//! configured by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turn them off again), exported over OTLP/HTTP with protobuf.
//! While off, nothing here allocates or takes a lock: [`Span`] is empty and its methods
//! return at once.
//!
//! The spans follow an event: ingress (`receive`, a child of the producer's `traceparent`
//! header or of the event's `traceparent` extension), each delivery attempt (`send`, a child
//! of the event's extension), the reply a subscriber answers with (`receive`, a child of the
//! attempt), a source's event (`receive`, a child of the message's `traceparent` header when
//! it has one). An event stored without the Distributed Tracing extension gets one, the
//! context of the span that took it in; one that has it keeps it: the extension is never
//! rewritten. Attributes follow the CloudEvents and messaging semantic conventions.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use switchyard_core::{CloudEvent, ExtValue};

/// The extension that carries an event's trace context (CloudEvents Distributed Tracing).
pub const TRACEPARENT: &str = "traceparent";
/// Its companion, vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceSetupError {
    /// The variables ask for something this build does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The exporter could not be built.
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// The tracer provider while traces are on; [`Traces::shutdown`] sends what is buffered.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Sends the spans not yet exported and stops (blocking: call it off the async workers,
    /// or after the runtime is gone).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Turns traces on when the `OTEL_*` variables configure an OTLP endpoint; `None` when they
/// do not (or turn traces off).
pub fn init_from_env() -> Result<Option<Traces>, TraceSetupError> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        Some("none") => return Ok(None),
        None | Some("otlp") => {}
        Some(other) => {
            return Err(TraceSetupError::Unsupported(format!(
                "OTEL_TRACES_EXPORTER={other} is not supported: use otlp (or none)"
            )));
        }
    }
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        if let Some(p) = var(name)
            && p != "http/protobuf"
        {
            return Err(TraceSetupError::Unsupported(format!(
                "{name}={p} is not supported: traces are exported over OTLP/HTTP with protobuf (http/protobuf, port 4318)"
            )));
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TraceSetupError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(var("OTEL_SERVICE_NAME").unwrap_or_else(|| "switchyard".to_owned()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let _ = TRACER.set(opentelemetry::trace::TracerProvider::tracer(
        &provider,
        "switchyard",
    ));
    Ok(Some(Traces { provider }))
}

/// Whether traces are on.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The context a `traceparent` (and `tracestate`) value names, if it parses.
fn remote(traceparent: &str, tracestate: Option<&str>) -> Option<Context> {
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Whether `value` is a valid W3C `traceparent`.
pub fn is_traceparent(value: &str) -> bool {
    remote(value, None).is_some()
}

/// An event's own trace context: its `traceparent` extension, when it has a valid one.
fn of_event(event: &CloudEvent) -> Option<Context> {
    let text = |name| match event.extensions.get(name) {
        Some(ExtValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    remote(text(TRACEPARENT)?, text(TRACESTATE))
}

/// The trace id of `event`'s `traceparent` extension (32 hex digits), if it has one.
pub fn trace_id_of(event: &CloudEvent) -> Option<&str> {
    match event.extensions.get(TRACEPARENT) {
        Some(ExtValue::String(tp)) => tp.split('-').nth(1).filter(|id| id.len() == 32),
        _ => None,
    }
}

/// While traces are on, a log span for the work on `event` by `trigger`, with the event's
/// `trace_id`: the log lines written within it carry it (a JSON line lists it under
/// `spans`), so logs and traces join. Nothing while traces are off.
pub fn log_span(trigger: &dyn std::fmt::Display, event: &CloudEvent) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "delivery",
        trigger = %trigger,
        event_id = %event.id,
        trace_id = trace_id_of(event).unwrap_or_default(),
    )
}

/// The attribute naming a subscriber: `url.full` for an HTTP one (without credentials),
/// `switchyard.subscriber` for a stream sink's address.
fn destination(address: &str) -> KeyValue {
    let Some((scheme, rest)) = address.split_once("://") else {
        return KeyValue::new("switchyard.subscriber", address.to_owned());
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let url = match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => address.to_owned(),
    };
    KeyValue::new("url.full", url)
}

/// The trace context an attempt sends its subscriber, as W3C headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// `traceparent`.
    pub traceparent: String,
    /// `tracestate`, when there is one.
    pub tracestate: Option<String>,
}

/// One span, or nothing while traces are off.
#[derive(Debug, Default)]
pub struct Span(Option<SpanInner>);

#[derive(Debug)]
struct SpanInner {
    cx: Context,
}

fn event_attributes(event: &CloudEvent, into: &mut Vec<KeyValue>) {
    into.push(KeyValue::new("messaging.message.id", event.id.clone()));
    into.push(KeyValue::new("cloudevents.event_id", event.id.clone()));
    into.push(KeyValue::new(
        "cloudevents.event_source",
        event.source.clone(),
    ));
    into.push(KeyValue::new("cloudevents.event_type", event.ty.clone()));
    into.push(KeyValue::new(
        "cloudevents.event_spec_version",
        event.specversion.as_str(),
    ));
    if let Some(subject) = &event.subject {
        into.push(KeyValue::new("cloudevents.event_subject", subject.clone()));
    }
}

fn start(name: String, kind: SpanKind, parent: Option<Context>, attributes: Vec<KeyValue>) -> Span {
    let Some(tracer) = TRACER.get() else {
        return Span(None);
    };
    let parent = parent.unwrap_or_default();
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    Span(Some(SpanInner {
        cx: parent.with_span(span),
    }))
}

impl Span {
    /// The span of `broker`'s ingress taking `event` in: a child of the request's
    /// `traceparent` header (`header`, with `tracestate`), else of the event's extension.
    pub fn ingress(broker: &str, event: &CloudEvent, header: Option<(&str, Option<&str>)>) -> Span {
        if !enabled() {
            return Span(None);
        }
        let parent = header
            .and_then(|(tp, ts)| remote(tp, ts))
            .or_else(|| of_event(event));
        let mut attributes = vec![
            KeyValue::new("messaging.system", "switchyard"),
            KeyValue::new("messaging.operation.type", "receive"),
            KeyValue::new("messaging.operation.name", "receive"),
            KeyValue::new("messaging.destination.name", broker.to_owned()),
        ];
        event_attributes(event, &mut attributes);
        start(
            format!("receive {broker}"),
            SpanKind::Server,
            parent,
            attributes,
        )
    }

    /// The span of a reply to an event, stored in `broker`: a child of the attempt that
    /// brought it (`attempt`), or of the reply's own extension when the subscriber set one.
    pub fn reply(broker: &str, reply: &CloudEvent, attempt: Option<&Hop>) -> Span {
        if !enabled() {
            return Span(None);
        }
        let parent = of_event(reply).or_else(|| {
            attempt.and_then(|hop| remote(&hop.traceparent, hop.tracestate.as_deref()))
        });
        let mut attributes = vec![
            KeyValue::new("messaging.system", "switchyard"),
            KeyValue::new("messaging.operation.type", "receive"),
            KeyValue::new("messaging.operation.name", "receive"),
            KeyValue::new("messaging.destination.name", broker.to_owned()),
            KeyValue::new("switchyard.reply", true),
        ];
        event_attributes(reply, &mut attributes);
        start(
            format!("receive {broker}"),
            SpanKind::Consumer,
            parent,
            attributes,
        )
    }

    /// The span of a source (`kind`, `namespace/name`) taking `event` in: a child of the
    /// message's `traceparent` header when it carried one, else of the event's extension,
    /// else a new trace.
    pub fn source(kind: &str, source: &str, event: &CloudEvent, header: Option<&str>) -> Span {
        if !enabled() {
            return Span(None);
        }
        let parent = header
            .and_then(|tp| remote(tp, None))
            .or_else(|| of_event(event));
        let mut attributes = vec![
            KeyValue::new("messaging.system", "switchyard"),
            KeyValue::new("messaging.operation.type", "receive"),
            KeyValue::new("messaging.operation.name", "receive"),
            KeyValue::new("messaging.destination.name", source.to_owned()),
            KeyValue::new("switchyard.source.kind", kind.to_owned()),
        ];
        event_attributes(event, &mut attributes);
        start(
            format!("receive {kind} {source}"),
            SpanKind::Consumer,
            parent,
            attributes,
        )
    }

    /// The span of one delivery attempt of `event` by trigger `trigger` (`namespace/name`)
    /// to `url`, the `attempt`th: a child of the event's extension.
    pub fn attempt(
        trigger: &dyn std::fmt::Display,
        event: &CloudEvent,
        url: &str,
        attempt: usize,
    ) -> Span {
        if !enabled() {
            return Span(None);
        }
        let trigger = trigger.to_string();
        let mut attributes = vec![
            KeyValue::new("messaging.system", "switchyard"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", trigger.clone()),
            destination(url),
            KeyValue::new(
                "switchyard.attempt",
                i64::try_from(attempt).unwrap_or(i64::MAX),
            ),
        ];
        event_attributes(event, &mut attributes);
        start(
            format!("send {trigger}"),
            SpanKind::Client,
            of_event(event),
            attributes,
        )
    }

    /// This span's context as W3C headers (for the next hop, or for an event's extensions),
    /// while traces are on.
    pub fn hop(&self) -> Option<Hop> {
        let inner = self.0.as_ref()?;
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&inner.cx, &mut carrier);
        Some(Hop {
            traceparent: carrier.remove(TRACEPARENT)?,
            tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
        })
    }

    /// The trace's id (32 hex digits), for log lines.
    pub fn trace_id(&self) -> Option<String> {
        let inner = self.0.as_ref()?;
        Some(inner.cx.span().span_context().trace_id().to_string())
    }

    /// Gives `event` this span's context as its `traceparent` (and `tracestate`) extension,
    /// unless it has one.
    pub fn stamp(&self, event: &mut CloudEvent) {
        if event.extensions.contains_key(TRACEPARENT) {
            return;
        }
        if let Some(hop) = self.hop() {
            event
                .extensions
                .insert(TRACEPARENT.to_owned(), ExtValue::String(hop.traceparent));
            if let Some(state) = hop.tracestate {
                event
                    .extensions
                    .insert(TRACESTATE.to_owned(), ExtValue::String(state));
            }
        }
    }

    /// Records an attribute.
    pub fn set(&self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(inner) = &self.0 {
            inner.cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Ends the span as failed, saying why.
    pub fn fail(self, why: impl Into<String>) {
        if let Some(inner) = self.0 {
            let span = inner.cx.span();
            span.set_status(Status::error(why.into()));
            span.end();
        }
    }

    /// Ends the span.
    pub fn end(self) {
        if let Some(inner) = self.0 {
            inner.cx.span().end();
        }
    }
}
