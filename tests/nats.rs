//! Black-box tests of the NATS source and sink (spec/streams.md) against the machine's real
//! nats-server with JetStream: core subjects in a queue group, a JetStream durable consumer
//! across a crash (redelivery of what was fetched but never stored, and an ack floor that
//! never passes what the store holds), a message over the event limit terminated (on a server
//! of the test's own), and a trigger publishing to a subject a plain subscriber reads back.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use common::sink::Sink;
use common::{Switchyard, eventually, moto::unique, nats_url};
use futures_util::StreamExt as _;

const WAIT: Duration = Duration::from_secs(30);

async fn nats() -> async_nats::Client {
    async_nats::connect(nats_url()).await.unwrap()
}

fn trigger_on(filter: &str, sink: &str) -> String {
    common::broker_and_trigger("from-nats", filter, sink)
}

#[tokio::test]
async fn core_messages_raw_binary_and_structured_reach_the_trigger() {
    let sink = Sink::ok().await;
    let u = unique().replace('-', "");
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: sensors}}
spec:
  servers: ['{}']
  subject: 'core{u}.sensors.>'
  queueGroup: switchyard
  type: com.example.sensor.reading
  ceOverrides: {{extensions: {{site: lab}}}}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        trigger_on("filter: {}", &sink.url),
        nats_url()
    );
    let sy = Switchyard::start(&config);
    let client = nats().await;
    // The subscription is made in the background: publish until the first one lands.
    let probe = format!("core{u}.sensors.probe");
    eventually("the source subscribed", WAIT, || {
        let client = client.clone();
        let probe = probe.clone();
        let sink = &sink;
        async move {
            client.publish(probe, "probe".into()).await.unwrap();
            client.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            (!sink.received().is_empty()).then_some(())
        }
    })
    .await;

    let mut raw = async_nats::HeaderMap::new();
    raw.insert("Content-Type", "text/plain");
    client
        .publish_with_headers(format!("core{u}.sensors.room1"), raw, "21.5".into())
        .await
        .unwrap();
    let mut binary = async_nats::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "b-1"),
        ("ce-source", "/gateway/1"),
        ("ce-type", "com.example.binary"),
        ("ce-subject", "caf%C3%A9"),
        // The NATS binding carries datacontenttype as a `ce-` header like the rest.
        ("ce-datacontenttype", "application/json"),
    ] {
        binary.insert(k, v);
    }
    client
        .publish_with_headers(
            format!("core{u}.sensors.room2"),
            binary,
            r#"{"t":1}"#.into(),
        )
        .await
        .unwrap();
    // A CloudEvent that has been through too many brokers (TTL 0): not storable, counted,
    // and it does not take the messages it arrived with down with it.
    let mut exhausted = async_nats::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "ttl-0"),
        ("ce-source", "/loop"),
        ("ce-type", "com.example.loop"),
        ("ce-knativebrokerttl", "0"),
    ] {
        exhausted.insert(k, v);
    }
    client
        .publish_with_headers(format!("core{u}.sensors.room9"), exhausted, "".into())
        .await
        .unwrap();
    let mut structured = async_nats::HeaderMap::new();
    structured.insert("Content-Type", "application/cloudevents+json");
    client
        .publish_with_headers(
            format!("core{u}.sensors.room3"),
            structured,
            r#"{"specversion":"1.0","id":"s-1","source":"/gateway/2","type":"com.example.structured","data":{"t":2}}"#.into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();

    // Probes (subject `….probe`) may still arrive; they are not what is checked.
    let got = sink
        .wait_for_where(3, WAIT, |r| {
            !r.event
                .as_ref()
                .unwrap()
                .subject
                .as_deref()
                .unwrap_or("")
                .ends_with(".probe")
        })
        .await;
    let events: Vec<_> = got
        .iter()
        .map(|r| (r.event.clone().unwrap(), r.body.clone()))
        .collect();
    let (raw, body) = events
        .iter()
        .find(|(e, _)| e.ty == "com.example.sensor.reading")
        .unwrap();
    assert_eq!(
        raw.source,
        "/apis/v1/namespaces/default/natssources/sensors"
    );
    assert_eq!(
        raw.subject.as_deref(),
        Some(format!("core{u}.sensors.room1").as_str())
    );
    assert_eq!(raw.datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(raw.attribute("site").as_deref(), Some("lab"));
    assert!(raw.time.is_some());
    assert_eq!(&body[..], b"21.5");
    let (bin, body) = events.iter().find(|(e, _)| e.id == "b-1").unwrap();
    assert_eq!(
        (bin.ty.as_str(), bin.subject.as_deref()),
        ("com.example.binary", Some("café"))
    );
    assert_eq!(bin.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(&body[..], br#"{"t":1}"#);
    assert!(events.iter().all(|(e, _)| e.id != "ttl-0"));
    let (st, body) = events.iter().find(|(e, _)| e.id == "s-1").unwrap();
    assert_eq!(st.ty, "com.example.structured");
    assert_eq!(&body[..], br#"{"t":2}"#);
    let m = common::metrics(&sy).await;
    // Three events and the probes, counted after they were stored.
    let stored: f64 = m
        .lines()
        .find(|l| {
            l.starts_with("switchyard_source_events_total")
                && l.contains("kind=\"NatsSource\"")
                && l.contains("source=\"default/sensors\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no source events counted: {m}"));
    assert!(stored >= 4.0, "{m}");
    assert_eq!(
        common::malformed(&sy, "default/sensors", "dropped").await,
        1.0
    );
    drop(sy);
}

async fn stream_sequences(sy: &mut Switchyard, stream: &str) -> BTreeSet<u64> {
    sy.stored("default/default")
        .into_iter()
        .filter_map(|(_, e)| {
            e.id.strip_prefix(&format!("{stream}-"))
                .map(|s| s.parse::<u64>().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn jetstream_redelivers_what_was_not_stored_and_acks_nothing_early() {
    let sink = Sink::ok().await;
    let u = unique().replace('-', "");
    let stream = format!("SY{u}");
    let subject = format!("js{u}.orders");
    let js = jetstream::new(nats().await);
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("js{u}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    // Published before Switchyard runs: the new durable consumer starts at the first.
    for i in 1..=3 {
        js.publish(subject.clone(), format!("order {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: orders}}
spec:
  servers: ['{}']
  subject: '{subject}'
  jetstream: {{stream: {stream}, consumer: switchyard-orders, ackWait: PT1S}}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        trigger_on("filter: {}", &sink.url),
        nats_url()
    );
    let mut sy = Switchyard::start(&config);
    let got = sink.wait_for(3, WAIT).await;
    // The stream sequence is the id, so a redelivered message is the same event.
    let first = got
        .iter()
        .find(|r| r.event.as_ref().unwrap().id == format!("{stream}-1"))
        .unwrap();
    let e = first.event.as_ref().unwrap();
    assert_eq!(e.ty, "dev.switchyard.nats.message");
    assert_eq!(e.subject.as_deref(), Some(subject.as_str()));
    assert_eq!(&first.body[..], b"order 1");

    // Frozen, the source holds a pending pull: the server hands it the next messages, which
    // it can neither store nor ack. Then it dies.
    sy.freeze();
    for i in 4..=40 {
        js.publish(subject.clone(), format!("order {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_consumer("switchyard-orders")
        .await
        .unwrap();
    let consumer = &consumer;
    eventually(
        "the server delivered to the frozen source",
        WAIT,
        || async move {
            let info = consumer.get_info().await.unwrap();
            (info.num_ack_pending > 0).then_some(())
        },
    )
    .await;
    sy.kill9();
    // Nothing acked beyond what the store holds.
    let ack_floor = consumer.get_info().await.unwrap().ack_floor.stream_sequence;
    let stored = stream_sequences(&mut sy, &stream).await;
    assert!(
        (1..=ack_floor).all(|s| stored.contains(&s)),
        "ack floor {ack_floor} passes the stored sequences {stored:?}"
    );

    sy.restart();
    eventually("every message stored and acked", WAIT, || async move {
        let info = consumer.get_info().await.unwrap();
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    let info = consumer.get_info().await.unwrap();
    // Each delivery, first or again, takes a consumer sequence: more of them than messages
    // means the server redelivered what the frozen source never acked.
    assert!(
        info.delivered.consumer_sequence > info.delivered.stream_sequence,
        "nothing was redelivered: {info:?}"
    );
    let stored = stream_sequences(&mut sy, &stream).await;
    assert_eq!(stored, (1..=40).collect(), "a message was lost");
    js.delete_stream(&stream).await.unwrap();
}

/// A NatsSource stores payloads up to the event limit (4 MiB) and lets a larger one go as
/// malformed: terminated, so the server neither redelivers it nor holds the messages after it.
/// On a JetStream server of the test's own whose `max_payload` lets such a message in.
#[tokio::test]
async fn a_jetstream_message_over_the_event_limit_is_terminated_and_the_rest_are_stored() {
    const LIMIT: usize = 4 * 1024 * 1024;
    let Some(cluster) = common::jetstream::Cluster::start_with_max_payload(1, "8MB").await else {
        return;
    };
    let sink = Sink::ok().await;
    let u = unique().replace('-', "");
    let stream = format!("BIG{u}");
    let subject = format!("big{u}.blobs");
    let js = jetstream::new(cluster.client().await);
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let payloads = [
        vec![b'a'; 1],
        vec![b'b'; LIMIT + 1],
        vec![b'c'; LIMIT],
        vec![b'd'; 1],
    ];
    for p in &payloads {
        js.publish(subject.clone(), p.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: blobs}}
spec:
  servers: ['{}']
  subject: '{subject}'
  jetstream: {{stream: {stream}, consumer: switchyard-blobs}}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        trigger_on("filter: {}", &sink.url),
        cluster.urls()
    );
    let sy = Switchyard::start(&config);
    let got = sink.wait_for(3, WAIT).await;
    assert_eq!(
        common::sink::ids_and_sizes(&got),
        [
            (format!("{stream}-1"), 1),
            (format!("{stream}-3"), LIMIT),
            (format!("{stream}-4"), 1)
        ],
        "the payload at the limit is stored, the one past it is not"
    );
    common::jetstream::settled(&js, &stream, "switchyard-blobs", 4).await;
    assert_eq!(
        common::malformed(&sy, "default/blobs", "terminated").await,
        1.0
    );
    let stored = common::events_text(&sy, "from=start&follow=false").await;
    assert_eq!(stored.lines().filter(|l| !l.is_empty()).count(), 3);
}

#[tokio::test]
async fn a_trigger_publishes_to_a_subject_a_plain_subscriber_reads_back() {
    let u = unique().replace('-', "");
    let subject = format!("out{u}.events");
    let client = nats().await;
    let mut sub = client.subscribe(subject.clone()).await.unwrap();
    client.flush().await.unwrap();
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: switchyard.dev/v1
kind: NatsSink
metadata: {{name: audit}}
spec:
  servers: ['{}']
  subject: '{subject}'
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: to-nats}}
spec:
  broker: default
  subscriber: {{ref: {{apiVersion: switchyard.dev/v1, kind: NatsSink, name: audit}}}}
"#,
        nats_url()
    );
    let sy = Switchyard::start(&config);
    let resp = common::binary(
        &common::client(),
        &sy.url("/default/default"),
        &[
            ("specversion", "1.0"),
            ("id", "n-1"),
            ("source", "/shop"),
            ("type", "com.example.order.created"),
            ("subject", "caf%C3%A9 42"),
            ("tenant", "acme"),
        ],
    )
    .header("content-type", "application/json")
    .body(r#"{"total":42}"#)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    let h = m.headers.unwrap();
    let get = |n: &str| h.get(n).map(|v| v.as_str().to_owned());
    assert_eq!(get("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(get("ce-id").as_deref(), Some("n-1"));
    assert_eq!(get("ce-source").as_deref(), Some("/shop"));
    assert_eq!(get("ce-type").as_deref(), Some("com.example.order.created"));
    // Percent-encoded as the binding says; decoded, the same subject.
    assert_eq!(get("ce-subject").as_deref(), Some("caf%C3%A9%2042"));
    assert_eq!(get("ce-tenant").as_deref(), Some("acme"));
    assert_eq!(
        get("ce-datacontenttype").as_deref(),
        Some("application/json")
    );
    assert_eq!(get("Content-Type").as_deref(), Some("application/json"));
    assert_eq!(
        get("ce-knativebrokerttl"),
        None,
        "the broker's loop guard stays inside"
    );
    assert_eq!(&m.payload[..], br#"{"total":42}"#);
    // The attempt is counted as a stream's acceptance, not as a failed connection.
    let counted = r#"switchyard_delivery_count_total{namespace_name="default",broker_name="default",trigger_name="to-nats",response_code="stream_accepted",outcome="delivered"} 1"#;
    common::eventually("the delivery counted", WAIT, || async {
        common::metrics(&sy).await.contains(counted).then_some(())
    })
    .await;
    drop(sy);
}

/// A NatsSource and a NatsSink reach a nats-server of the test's own that requires TLS (its
/// certificate signed by a test CA, client certificates verified), trusting the CA and
/// presenting the client certificate their `tls` gives; what the source takes in, a trigger
/// publishes through the sink, read back by a plain TLS client.
#[tokio::test]
async fn a_source_and_a_sink_reach_a_nats_server_that_requires_tls() {
    if !common::tools_or_skip(&["openssl", "nats-server"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = common::tls::TestCa::new(dir.path(), "nats");
    let port = common::free_port();
    let _server = common::Children::quiet(vec![
        std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["--tlsverify", "--tlscert", &ca.file("server.pem")])
            .args(["--tlskey", &ca.file("server.key")])
            .args(["--tlscacert", &ca.file("ca.pem")]),
    ]);
    common::wait_listening(port, "nats-server listening").await;
    let url = format!("tls://127.0.0.1:{port}");
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.file("ca.pem").into())
        .add_client_certificate(ca.file("client.pem").into(), ca.file("client.key").into())
        .connect(&url)
        .await
        .unwrap();
    let mut out = client.subscribe("secure.out").await.unwrap();
    let tls =
        "tls: {caCert: {fromEnv: NATS_CA}, cert: {fromEnv: NATS_CERT}, key: {fromEnv: NATS_KEY}}";
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: secure-in}}
spec:
  servers: ['{url}']
  subject: secure.in
  {tls}
  sink: {{ref: {{kind: Broker, name: default}}}}
---
apiVersion: switchyard.dev/v1
kind: NatsSink
metadata: {{name: secure-out}}
spec:
  servers: ['{url}']
  subject: secure.out
  {tls}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: relay}}
spec:
  broker: default
  subscriber: {{ref: {{apiVersion: switchyard.dev/v1, kind: NatsSink, name: secure-out}}}}
"#
    );
    let read = |f: &str| std::fs::read_to_string(ca.file(f)).unwrap();
    let (ca_pem, cert, key) = (read("ca.pem"), read("client.pem"), read("client.key"));
    let _sy = Switchyard::start_with_env(
        &config,
        &[
            ("NATS_CA", &ca_pem),
            ("NATS_CERT", &cert),
            ("NATS_KEY", &key),
        ],
    );
    // The source subscribes in the background: publish until the sink's message comes back.
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        client
            .publish("secure.in", "over tls".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), out.next()).await {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing came back through source, trigger and sink"
        );
    };
    assert_eq!(got.payload.as_ref(), b"over tls");
}
