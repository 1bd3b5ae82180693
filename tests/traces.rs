//! Traces (docs/observability.md, "Traces"): a real OTLP/HTTP receiver, built on the
//! OpenTelemetry project's own protobuf definitions (`opentelemetry-proto`), takes the spans
//! the binary exports; one event with a producer's `traceparent` goes through a trigger to a
//! function that fails once and then replies, and the trace holds every hop, each under the
//! right parent.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::otlp::{Receiver, attribute, hex, ids, unhex};
use common::sink::{Answer, Sink};
use common::{Switchyard, client};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};

const WAIT: Duration = Duration::from_secs(30);

fn config(function: &str, done: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: fn}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.image.uploaded}}}}
  subscriber: {{uri: '{function}'}}
  delivery: {{retry: 3, backoffDelay: PT0.1S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: done}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.thumbnail.created}}}}
  subscriber: {{uri: '{done}'}}
"#
    )
}

async fn post(sy: &Switchyard, id: &str, traceparent: Option<&str>) {
    post_with(sy, id, traceparent, &[]).await;
}

async fn post_with(
    sy: &Switchyard,
    id: &str,
    traceparent: Option<&str>,
    headers: &[(&str, &str)],
) -> u16 {
    let mut req = client()
        .post(sy.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/uploads")
        .header("ce-type", "com.example.image.uploaded")
        .header("content-type", "application/json")
        .body(r#"{"key":"photos/1.jpg"}"#);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let status = req.send().await.unwrap().status().as_u16();
    if headers.is_empty() {
        assert_eq!(status, 202);
    }
    status
}

/// One trace from the producer to the reply's delivery: ingress under the producer's span,
/// both attempts (the failed one marked) under ingress, the function's span under the
/// attempt it answered, the reply's span under that attempt, and the reply's delivery under
/// the reply's span. The stored event carries the ingress context as its extension; each
/// attempt sends its own as the hop's `traceparent`.
#[tokio::test]
async fn one_trace_follows_an_event_through_ingress_attempts_the_function_and_its_reply() {
    let receiver = Receiver::start().await;
    let function = Sink::start(|i, e| {
        if i == 0 {
            Answer::status(503)
        } else {
            Answer::reply("com.example.thumbnail.created", &format!("{}.thumb", e.id))
        }
    })
    .await;
    let done = Sink::ok().await;
    let sy = Switchyard::start_with_env(
        &config(&function.url, &done.url),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "switchyard-under-test"),
        ],
    );
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    post_with(
        &sy,
        "img-1",
        Some(&format!("00-{trace_hex}-{producer_span}-01")),
        &[("tracestate", "vendor=abc")],
    )
    .await;
    done.wait_for(1, WAIT).await;
    let attempts = function.wait_for(2, WAIT).await;
    let trace = unhex(trace_hex);

    // What the function received: the event's extension (the ingress span's context) and,
    // per attempt, a fresh hop.
    let header = |i: usize, name: &str| {
        attempts[i]
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (ext_trace, ingress_id) = ids(&header(0, "ce-traceparent"));
    assert_eq!(ext_trace, trace);
    assert_eq!(header(1, "ce-traceparent"), header(0, "ce-traceparent"));
    let (hop_trace, first_hop) = ids(&header(0, "traceparent"));
    let (_, second_hop) = ids(&header(1, "traceparent"));
    assert_eq!(hop_trace, trace);
    assert_ne!(first_hop, second_hop, "a fresh hop per attempt");
    // The producer's trace state travels with the context, in the extension and the hop.
    assert_eq!(header(0, "ce-tracestate"), "vendor=abc");
    assert_eq!(header(0, "tracestate"), "vendor=abc");

    // The function's own span, under the hop it answered, as its SDK would export it.
    receiver
        .export(Span {
            trace_id: trace.clone(),
            span_id: unhex("1111111111111111"),
            parent_span_id: second_hop.clone(),
            name: "make thumbnail".into(),
            kind: SpanKind::Server as i32,
            ..Default::default()
        })
        .await;

    let spans = common::eventually("the spans of both deliveries", WAIT, || async {
        let spans = receiver.spans_of(&trace);
        let sends = spans.iter().filter(|s| s.name.starts_with("send ")).count();
        (sends >= 3).then_some(spans)
    })
    .await;
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let names: Vec<(String, String)> = spans
        .iter()
        .map(|s| (s.name.clone(), hex(&s.parent_span_id)))
        .collect();

    let ingress = by_id[&ingress_id];
    assert_eq!(ingress.name, "receive default/default", "{names:?}");
    assert_eq!(ingress.kind, SpanKind::Server as i32);
    assert_eq!(hex(&ingress.parent_span_id), producer_span, "{names:?}");
    assert_eq!(
        attribute(ingress, "cloudevents.event_id").as_deref(),
        Some("img-1")
    );
    assert_eq!(
        attribute(ingress, "cloudevents.event_type").as_deref(),
        Some("com.example.image.uploaded")
    );
    assert_eq!(
        attribute(ingress, "messaging.destination.name").as_deref(),
        Some("default/default")
    );

    let failed = by_id[&first_hop];
    let delivered = by_id[&second_hop];
    for (attempt, status, n) in [(failed, "503", "1"), (delivered, "200", "2")] {
        assert_eq!(attempt.name, "send default/fn", "{names:?}");
        assert_eq!(attempt.parent_span_id, ingress_id, "{names:?}");
        assert_eq!(
            attribute(attempt, "http.response.status_code").as_deref(),
            Some(status)
        );
        assert_eq!(attribute(attempt, "switchyard.attempt").as_deref(), Some(n));
    }
    // Status code 2 is ERROR in OTLP.
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "{failed:?}"
    );
    assert_ne!(delivered.status.as_ref().map(|s| s.code), Some(2));

    let function_span = spans.iter().find(|s| s.name == "make thumbnail").unwrap();
    assert_eq!(function_span.parent_span_id, second_hop);

    let reply = spans
        .iter()
        .find(|s| attribute(s, "switchyard.reply").as_deref() == Some("true"))
        .unwrap_or_else(|| panic!("no reply span: {names:?}"));
    assert_eq!(reply.parent_span_id, second_hop, "{names:?}");
    assert_eq!(
        attribute(reply, "cloudevents.event_id").as_deref(),
        Some("img-1.thumb")
    );
    let reply_delivery = spans
        .iter()
        .find(|s| s.name == "send default/done")
        .unwrap_or_else(|| panic!("no delivery of the reply: {names:?}"));
    assert_eq!(reply_delivery.parent_span_id, reply.span_id, "{names:?}");
    // The reply delivered carries the reply span's context as its extension.
    let got = done.received();
    let (_, reply_ext) = ids(got[0]
        .headers
        .get("ce-traceparent")
        .unwrap()
        .to_str()
        .unwrap());
    assert_eq!(reply_ext, reply.span_id);
}

/// An event that carries the extension keeps it: ingress continues it and does not rewrite
/// it. With traces off, nothing is added.
#[tokio::test]
async fn the_extension_is_never_rewritten_and_nothing_is_added_while_traces_are_off() {
    let receiver = Receiver::start().await;
    let function = Sink::ok().await;
    let done = Sink::ok().await;
    let sy = Switchyard::start_with_env(
        &config(&function.url, &done.url),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let resp = client()
        .post(sy.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "kept")
        .header("ce-source", "/uploads")
        .header("ce-type", "com.example.image.uploaded")
        .header("ce-traceparent", theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let got = function.wait_for(1, WAIT).await;
    assert_eq!(got[0].headers["ce-traceparent"], theirs);
    let (trace, span) = ids(theirs);
    let spans = common::eventually("the ingress span", WAIT, || async {
        let spans = receiver.spans_of(&trace);
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    let ingress = spans
        .iter()
        .find(|s| s.name.starts_with("receive"))
        .unwrap();
    assert_eq!(ingress.parent_span_id, span);
    let attempt = spans.iter().find(|s| s.name.starts_with("send")).unwrap();
    assert_eq!(
        attempt.parent_span_id, span,
        "the attempt's parent is the extension"
    );

    // An event refused at ingress (its TTL is spent) has its span end in error.
    let refused_trace = "1af7651916cd43dd8448eb211c80319c";
    let status = post_with(
        &sy,
        "spent",
        Some(&format!("00-{refused_trace}-b7ad6b7169203331-01")),
        &[("ce-knativebrokerttl", "0")],
    )
    .await;
    assert_eq!(status, 400);
    let refused = common::eventually("the refused event's span", WAIT, || async {
        receiver.spans_of(&unhex(refused_trace)).into_iter().next()
    })
    .await;
    assert_eq!(
        refused.status.as_ref().map(|s| s.code),
        Some(2),
        "{refused:?}"
    );
    assert_eq!(
        attribute(&refused, "http.response.status_code").as_deref(),
        Some("400")
    );

    // Traces off: no extension, no hop.
    let plain = Switchyard::start(&config(&function.url, &done.url));
    post(&plain, "untraced", None).await;
    let got = function.wait_for(2, WAIT).await;
    assert!(got[1].headers.get("ce-traceparent").is_none());
    assert!(got[1].headers.get("traceparent").is_none());
}

/// gRPC is not what this build exports: asked for it, `serve` refuses with one line.
#[test]
fn an_otlp_protocol_other_than_http_protobuf_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"), "{err}");
}

/// With traces on, the log lines written while an event is delivered carry its trace id, so
/// a JSON log line and its trace join.
// Multi-threaded: the receiver must answer while this test waits for the server to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_log_lines_carry_the_events_trace_id() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let receiver = Receiver::start().await;
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        config(&format!("http://{unused}/"), &format!("http://{unused}/")),
    )
    .unwrap();
    let mut child = std::process::Command::new(common::bin())
        .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("switchyard listening on ")
        .unwrap()
        .to_owned();
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    for i in 0..3 {
        let resp = client()
            .post(format!("{base}/default/default"))
            .header("ce-specversion", "1.0")
            .header("ce-id", format!("logged-{i}"))
            .header("ce-source", "/uploads")
            .header("ce-type", "com.example.image.uploaded")
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let status = format!("{base}/api/v1/namespaces/default/triggers/fn");
    common::eventually("the subscriber down", WAIT, || async {
        let s = common::get_json(&status).await;
        (s["status"]["conditions"][0]["reason"] == "SubscriberDown").then_some(())
    })
    .await;
    common::signal(child.id(), "-TERM");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let down = stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the subscriber is down"))
        })
        .unwrap_or_else(|| panic!("no line saying the subscriber is down:\n{stderr}"));
    let spans = down["spans"].as_array().unwrap_or_else(|| panic!("{down}"));
    assert!(
        spans
            .iter()
            .any(|s| s["trace_id"] == trace && s["trigger"] == "default/fn"),
        "{down}"
    );
    // The spans still buffered (the batch delay is 5 s) were sent at the graceful stop.
    let sent = receiver.spans_of(&unhex(trace));
    let ingress = sent.iter().filter(|s| s.name == "receive default/default");
    assert_eq!(
        ingress.count(),
        3,
        "{:?}\n{stderr}",
        sent.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

/// A source continues the trace of a message whose producer's instrumentation put a
/// `traceparent` header on it (here a core NATS message): the event carries that context
/// as its extension and the source's span is its child.
#[tokio::test]
async fn a_nats_source_continues_the_trace_of_a_message_header() {
    let receiver = Receiver::start().await;
    let sink = Sink::ok().await;
    let u = std::process::id();
    let _sy = Switchyard::start_with_env(
        &format!(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec: {{broker: default, subscriber: {{uri: '{sink}'}}}}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: sensors}}
spec:
  servers: ['{nats}']
  subject: 'traced{u}.>'
  type: com.example.reading
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
            sink = sink.url,
            nats = common::nats_url(),
        ),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let nats = async_nats::connect(common::nats_url()).await.unwrap();
    let trace = "2af7651916cd43dd8448eb211c80319c";
    let producer = "c7ad6b7169203331";
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace}-{producer}-01").as_str());
    // Core NATS drops what is published before the subscription: publish until one lands.
    let got = common::eventually("a message through the source", WAIT, || {
        let (nats, headers, sink) = (nats.clone(), headers.clone(), &sink);
        async move {
            nats.publish_with_headers(format!("traced{u}.room1"), headers, "21.5".into())
                .await
                .unwrap();
            nats.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            sink.received().into_iter().next()
        }
    })
    .await;
    let carried = got.headers["ce-traceparent"].to_str().unwrap().to_owned();
    assert_eq!(carried, format!("00-{trace}-{producer}-01"));
    let source_span = common::eventually("the source's span", WAIT, || async {
        receiver
            .spans_of(&unhex(trace))
            .into_iter()
            .find(|s| s.name == "receive NatsSource default/sensors")
    })
    .await;
    assert_eq!(hex(&source_span.parent_span_id), producer);
    assert_eq!(source_span.kind, SpanKind::Consumer as i32);
}
