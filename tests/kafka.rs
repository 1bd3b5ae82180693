//! Black-box tests of the Kafka source and sink (spec/streams.md) against a real
//! Kafka-protocol broker (tansu, started by `scripts/test`): records in all three shapes,
//! a crash in the middle of a backlog (nothing lost, no offset committed before its event was
//! stored), a record over the event limit skipped, a trigger writing to a topic a plain
//! consumer reads back, and a sink and a source that reach a broker only over TLS.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::sink::Sink;
use common::{Switchyard, eventually, kafka_bootstrap, moto::unique};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(60);

fn client_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka_bootstrap());
    c
}

async fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let results = admin
        .create_topics(
            [&NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

fn producer() -> FutureProducer {
    client_config().set("acks", "all").create().unwrap()
}

async fn produce(
    p: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    headers: &[(&str, &str)],
    value: &str,
) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic).payload(value).headers(h);
    if let Some(k) = key {
        r = r.key(k);
    }
    if let Some(part) = partition {
        r = r.partition(part);
    }
    p.send(r, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

fn kafka_source(name: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"
---
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: {name}}}
spec:
  bootstrapServers: ['{}']
  topics: ['{topic}']
  initialOffset: earliest
  {extra}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
"#,
        kafka_bootstrap()
    )
}

#[tokio::test]
async fn raw_binary_and_structured_records_reach_the_trigger() {
    let sink = Sink::ok().await;
    let topic = format!("orders-{}", unique());
    create_topic(&topic, 1).await;
    let p = producer();
    produce(
        &p,
        &topic,
        None,
        Some("cust-1"),
        &[("content-type", "application/json"), ("X-Trace", "abc")],
        r#"{"total":42}"#,
    )
    .await;
    produce(
        &p,
        &topic,
        None,
        Some("cust-2"),
        &[
            ("ce_specversion", "1.0"),
            ("ce_id", "bin-1"),
            ("ce_source", "/shop"),
            ("ce_type", "com.example.order.created"),
            ("ce_subject", "café 1"),
            ("content-type", "application/json"),
        ],
        r#"{"total":7}"#,
    )
    .await;
    produce(
        &p,
        &topic,
        None,
        None,
        &[("content-type", "application/cloudevents+json; charset=utf-8")],
        r#"{"specversion":"1.0","id":"st-1","source":"/shop","type":"com.example.order.paid","data":{"total":9}}"#,
    )
    .await;
    let config = format!(
        "{}{}",
        common::broker_and_trigger("orders", "filter: {}", &sink.url),
        kafka_source("orders", &topic, &format!("consumerGroup: sy-{topic}")),
    );
    let sy = Switchyard::start(&config);
    let got = sink.wait_for(3, WAIT).await;
    let by_id: BTreeMap<String, _> = got
        .iter()
        .map(|r| (r.event.as_ref().unwrap().id.clone(), r))
        .collect();
    let raw = by_id["partition:0/offset:0"];
    let e = raw.event.as_ref().unwrap();
    assert_eq!(e.ty, "dev.knative.kafka.event");
    assert_eq!(
        e.source,
        format!("/apis/v1/namespaces/default/kafkasources/orders#{topic}")
    );
    assert_eq!(e.subject.as_deref(), Some("partition:0#0"));
    assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(e.attribute("key").as_deref(), Some("cust-1"));
    assert_eq!(e.attribute("partitionkey").as_deref(), Some("cust-1"));
    assert_eq!(e.attribute("kafkaheaderxtrace").as_deref(), Some("abc"));
    assert!(e.time.is_some(), "the record's timestamp");
    assert_eq!(&raw.body[..], br#"{"total":42}"#);
    let bin = by_id["bin-1"];
    let e = bin.event.as_ref().unwrap();
    assert_eq!(
        (e.ty.as_str(), e.subject.as_deref()),
        ("com.example.order.created", Some("café 1"))
    );
    assert_eq!(
        e.attribute("key"),
        None,
        "a CloudEvent passes through unchanged"
    );
    assert_eq!(&bin.body[..], br#"{"total":7}"#);
    let st = by_id["st-1"];
    assert_eq!(st.event.as_ref().unwrap().ty, "com.example.order.paid");
    assert_eq!(&st.body[..], br#"{"total":9}"#);
    drop(sy);
}

/// (partition, offset) of every wrapped record stored.
fn stored_positions(sy: &mut Switchyard) -> BTreeSet<(i32, i64)> {
    sy.stored("default/default")
        .into_iter()
        .filter_map(|(_, e)| {
            let rest = e.id.strip_prefix("partition:")?;
            let (p, o) = rest.split_once("/offset:")?;
            Some((p.parse().unwrap(), o.parse().unwrap()))
        })
        .collect()
}

fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: StreamConsumer = client_config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            (e.partition(), o)
        })
        .collect()
}

#[tokio::test]
async fn a_crash_loses_nothing_and_commits_nothing_early() {
    let sink = Sink::ok().await;
    let topic = format!("readings-{}", unique());
    let group = format!("sy-{topic}");
    create_topic(&topic, 2).await;
    let p = producer();
    // Produced concurrently: a backlog of several batches (at most 500 records each).
    let values: Vec<String> = (0..2000).map(|i| format!("reading {i}")).collect();
    futures_util::future::join_all(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| produce(&p, &topic, Some(i32::from(i % 2 == 1)), None, &[], v)),
    )
    .await;
    let config = format!(
        "{}{}",
        common::broker_and_trigger("readings", "filter: {}", &sink.url),
        // Two group members share the two partitions: the restart is also a rebalance.
        kafka_source(
            "readings",
            &topic,
            &format!("consumerGroup: {group}\n  consumers: 2"),
        ),
    );
    let mut sy = Switchyard::start(&config);
    sink.wait_for(1, WAIT).await;
    sy.kill9();
    let stored = stored_positions(&mut sy);
    // Every offset below a committed one is in the store.
    for (partition, next) in committed(&group, &topic, 2) {
        for offset in 0..next {
            assert!(
                stored.contains(&(partition, offset)),
                "offset {offset} of partition {partition} committed but not stored"
            );
        }
    }

    // The source's warnings and librdkafka's go to the test's output, to tell a stalled
    // rebalance from a commit that does not come, should the wait below give up.
    sy.set_env(
        "RUST_LOG",
        "error,switchyard_adapters::kafka=info,librdkafka=info,rdkafka=warn",
    );
    sy.restart();
    let all: BTreeMap<i32, i64> = [(0, 1000), (1, 1000)].into();
    common::eventually_or_explain(
        "every offset committed",
        WAIT,
        || {
            let now = committed(&group, &topic, 2);
            let all = &all;
            async move { (now == *all).then_some(()) }
        },
        || async {
            let text = common::events_text(&sy, "from=start&follow=false").await;
            let mut stored_per_partition: BTreeMap<String, usize> = BTreeMap::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let id = v["event"]["id"].as_str().unwrap_or_default();
                let partition = id.split('/').next().unwrap_or_default().to_owned();
                *stored_per_partition.entry(partition).or_default() += 1;
            }
            format!(
                "; committed {:?}, records stored per partition {stored_per_partition:?}",
                committed(&group, &topic, 2)
            )
        },
    )
    .await;
    let stored = stored_positions(&mut sy);
    let expected: BTreeSet<(i32, i64)> = (0..2)
        .flat_map(|p| (0..1000).map(move |o| (p, o)))
        .collect();
    assert_eq!(stored, expected, "a record was lost");
}

/// A KafkaSource stores values up to the event limit (4 MiB) and skips a larger one as
/// malformed: its offset is committed with the rest, so the group does not stop at it.
#[tokio::test]
async fn a_record_over_the_event_limit_is_skipped_and_the_rest_are_stored() {
    const LIMIT: usize = 4 * 1024 * 1024;
    let sink = Sink::ok().await;
    let topic = format!("blobs-{}", unique());
    let group = format!("sy-{topic}");
    create_topic(&topic, 1).await;
    // librdkafka's producer refuses a message over 1 MB unless told otherwise.
    let p: FutureProducer = client_config()
        .set("acks", "all")
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    let values = [
        vec![b'a'; 1],
        vec![b'b'; LIMIT + 1],
        vec![b'c'; LIMIT],
        vec![b'd'; 1],
    ];
    for v in &values {
        let r: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&topic).payload(v.as_slice()).partition(0);
        p.send(r, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let config = format!(
        "{}{}",
        common::broker_and_trigger("blobs", "filter: {}", &sink.url),
        kafka_source("blobs", &topic, &format!("consumerGroup: {group}")),
    );
    let sy = Switchyard::start(&config);
    let got = sink.wait_for(3, WAIT).await;
    assert_eq!(
        common::sink::ids_and_sizes(&got),
        [
            ("partition:0/offset:0".to_owned(), 1),
            ("partition:0/offset:2".to_owned(), LIMIT),
            ("partition:0/offset:3".to_owned(), 1)
        ],
        "the value at the limit is stored, the one past it is not"
    );
    eventually("every offset committed", WAIT, || {
        let now = committed(&group, &topic, 1);
        async move { (now == BTreeMap::from([(0, 4)])).then_some(()) }
    })
    .await;
    assert_eq!(
        common::malformed(&sy, "default/blobs", "skipped").await,
        1.0
    );
    let stored = common::events_text(&sy, "from=start&follow=false").await;
    assert_eq!(stored.lines().filter(|l| !l.is_empty()).count(), 3);
}

/// The first record of partition 0 of `topic`, read by a plain consumer (waiting for the
/// topic, which a sink creates in the background).
async fn first_record(topic: &str) -> rdkafka::message::OwnedMessage {
    first_record_with(client_config(), topic).await
}

/// The same, read by a consumer with `config` (its broker and security settings).
async fn first_record_with(
    mut config: ClientConfig,
    topic: &str,
) -> rdkafka::message::OwnedMessage {
    let reader: StreamConsumer = config
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    eventually("the record arrived", WAIT, || {
        let reader = &reader;
        async move {
            match tokio::time::timeout(Duration::from_secs(1), reader.recv()).await {
                Ok(Ok(m)) => Some(m.detach()),
                _ => None,
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_trigger_writes_to_a_topic_a_plain_consumer_reads_back() {
    let topic = format!("audit-{}", unique());
    let config = sink_config(&topic, &kafka_bootstrap(), None);
    let sy = Switchyard::start(&config);
    let resp = common::binary(
        &common::client(),
        &sy.url("/default/default"),
        &[
            ("specversion", "1.0"),
            ("id", "k-1"),
            ("source", "/shop"),
            ("type", "com.example.order.created"),
            ("subject", "caf%C3%A9"),
            ("partitionkey", "cust-9"),
        ],
    )
    .header("content-type", "application/json")
    .body(r#"{"total":42}"#)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);

    let m = first_record(&topic).await;
    let headers: BTreeMap<String, String> = m
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_id"], "k-1");
    assert_eq!(headers["ce_source"], "/shop");
    assert_eq!(headers["ce_type"], "com.example.order.created");
    // Kafka headers are UTF-8: not percent-encoded.
    assert_eq!(headers["ce_subject"], "café");
    assert_eq!(headers["ce_partitionkey"], "cust-9");
    assert_eq!(headers["content-type"], "application/json");
    assert!(!headers.contains_key("ce_knativebrokerttl"));
    assert_eq!(
        m.key(),
        Some(b"cust-9".as_slice()),
        "partitionkey is the record key"
    );
    assert_eq!(m.payload(), Some(br#"{"total":42}"#.as_slice()));
    // The attempt is counted as a stream's acceptance, not as a failed connection.
    let counted = r#"switchyard_delivery_count_total{namespace_name="default",broker_name="default",trigger_name="to-kafka",response_code="stream_accepted",outcome="delivered"} 1"#;
    eventually("the delivery counted", WAIT, || async {
        common::metrics(&sy).await.contains(counted).then_some(())
    })
    .await;
    drop(sy);
}

#[tokio::test]
async fn a_kafka_sink_connects_as_its_knative_auth_secret_says() {
    let topic = format!("audit-auth-{}", unique());
    let config = sink_config(&topic, &kafka_bootstrap(), Some("kafka-auth"));
    // The Secret as Kubernetes mounts it: a file per key (`echo` leaves a newline).
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir(secrets.path().join("kafka-auth")).unwrap();
    std::fs::write(secrets.path().join("kafka-auth/protocol"), "PLAINTEXT\n").unwrap();
    let dir = secrets.path().to_str().unwrap().to_owned();
    let sy = Switchyard::start_with_env(&config, &[("SWITCHYARD_SECRETS_DIR", &dir)]);
    send_order(&sy, "auth-1").await;
    assert_eq!(ce_id(&first_record(&topic).await), b"auth-1");
    drop(sy);

    // A Secret without `protocol` stops serve with one line that names the file.
    std::fs::remove_file(secrets.path().join("kafka-auth/protocol")).unwrap();
    let err = common::serve_refusal(&config, &[("SWITCHYARD_SECRETS_DIR", &dir)]);
    assert!(
        err.contains(
            "KafkaSink default/audit: auth: the Secret `kafka-auth` has no key `protocol`"
        ) && err.contains("kafka-auth/protocol"),
        "{err}"
    );
}

/// A Broker `default` and a Trigger `to-kafka` (events from `/shop`) writing to the KafkaSink
/// `audit` on `topic` at `bootstrap`, which connects as the Secret `secret` says (if any).
fn sink_config(topic: &str, bootstrap: &str, secret: Option<&str>) -> String {
    let auth = secret.map_or_else(String::new, |name| {
        format!("\n  auth: {{secret: {{ref: {{name: {name}}}}}}}")
    });
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {{name: audit}}
spec:
  topic: {topic}
  bootstrapServers: ['{bootstrap}']
  numPartitions: 1{auth}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: to-kafka}}
spec:
  broker: default
  subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: audit}}}}
  filters: [{{exact: {{source: /shop}}}}]
"#
    )
}

/// Posts an order event `id` from `/shop` to the broker `default`.
async fn send_order(sy: &Switchyard, id: &str) {
    let resp = common::binary(
        &common::client(),
        &sy.url("/default/default"),
        &[
            ("specversion", "1.0"),
            ("id", id),
            ("source", "/shop"),
            ("type", "com.example.order.created"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
}

/// A record's `ce_id` header.
fn ce_id(m: &rdkafka::message::OwnedMessage) -> Vec<u8> {
    m.headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "ce_id")
        .and_then(|h| h.value)
        .unwrap()
        .to_vec()
}

/// A self-signed certificate for 127.0.0.1 in `dir`: `cert.pem` and `key.pem`.
fn self_signed_for_loopback(dir: &std::path::Path) {
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
}

/// KafkaSink `auth` with protocol `SSL` (Knative's Secret keys `protocol` and `ca.crt`): the
/// sink reaches a broker that speaks only TLS, trusting the CA its Secret gives; a
/// KafkaSource's `net.tls` (`caCert.secretKeyRef`) reads it back the same way. The broker is
/// a tansu of the test's own behind a TLS terminator (socat), since tansu's own TLS listener
/// cannot be configured (its `--cert` and `--key` refuse each other).
#[tokio::test]
async fn a_kafka_sink_reaches_a_broker_over_tls_with_the_ca_its_secret_gives() {
    if !common::tools_or_skip(&["openssl", "socat", "tansu"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    self_signed_for_loopback(dir.path());
    let (plain, tls) = (common::free_port(), common::free_port());
    let _children = common::Children::quiet(vec![
        std::process::Command::new("tansu")
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .arg(format!("--listener-url=tcp://127.0.0.1:{plain}"))
            .arg(format!("--advertised-listener-url=tcp://127.0.0.1:{tls}")),
        std::process::Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                path("cert.pem"),
                path("key.pem")
            ))
            .arg(format!("TCP:127.0.0.1:{plain}")),
    ]);
    for port in [plain, tls] {
        common::wait_listening(port, "the port is open").await;
    }

    let topic = format!("audit-tls-{}", unique());
    let copies = Sink::ok().await;
    let config = sink_config(&topic, &format!("127.0.0.1:{tls}"), Some("kafka-tls"))
        + &format!(
            r#"---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: copies}}
---
apiVersion: sources.knative.dev/v1
kind: KafkaSource
metadata: {{name: audit-reader}}
spec:
  bootstrapServers: ['127.0.0.1:{tls}']
  topics: ['{topic}']
  initialOffset: earliest
  net:
    tls:
      enable: true
      caCert: {{secretKeyRef: {{name: kafka-tls, key: ca.crt}}}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: copies}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: copies}}
spec:
  broker: copies
  subscriber: {{uri: '{copies}'}}
"#,
            copies = copies.url
        );
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("kafka-tls");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("protocol"), "SSL\n").unwrap();
    std::fs::copy(path("cert.pem"), secret.join("ca.crt")).unwrap();
    let secrets_dir = secrets.path().to_str().unwrap().to_owned();
    let sy = Switchyard::start_with_env(&config, &[("SWITCHYARD_SECRETS_DIR", &secrets_dir)]);
    send_order(&sy, "over-tls").await;

    let mut reader = ClientConfig::new();
    reader
        .set("bootstrap.servers", format!("127.0.0.1:{tls}"))
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", path("cert.pem"));
    let m = first_record_with(reader, &topic).await;
    assert_eq!(ce_id(&m), b"over-tls");
    let got = copies.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "over-tls");
}

/// SASL over TLS: a KafkaSink whose Secret says `SASL_SSL` with `SCRAM-SHA-512`, and a
/// KafkaSource with Knative's `net.sasl` (`SCRAM-SHA-256`) and `net.tls`, both authenticate
/// to a broker that takes nothing else; a wrong password is refused. The broker is tansu
/// behind tests/interop/kafka_sasl_gateway.py, which does the server's half of Kafka's SASL
/// exchange and TLS: tansu keeps no users, and no broker that does (Apache Kafka, Redpanda)
/// is installable here. librdkafka, inside switchyard, is the real client.
#[tokio::test]
async fn sasl_scram_over_tls_with_a_knative_secret_and_net_sasl() {
    if !common::tools_or_skip(&["openssl", "tansu"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    self_signed_for_loopback(dir.path());
    let (plain, gateway) = (common::free_port(), common::free_port());
    let log = std::fs::File::create(path("gateway.log")).unwrap();
    let mut children = common::Children::quiet(vec![
        std::process::Command::new("tansu")
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .arg(format!("--listener-url=tcp://127.0.0.1:{plain}"))
            .arg(format!(
                "--advertised-listener-url=tcp://127.0.0.1:{gateway}"
            )),
    ]);
    children.0.push(
        std::process::Command::new(common::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/interop/kafka_sasl_gateway.py"
            ))
            .args(["--listen", &gateway.to_string()])
            .args(["--upstream", &format!("127.0.0.1:{plain}")])
            .args(["--user", "alice:alice-secret"])
            .args(["--cert", &path("cert.pem"), "--key", &path("key.pem")])
            .stdout(log)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for port in [plain, gateway] {
        common::wait_listening(port, "the broker and its SASL gateway listening").await;
    }
    let gateway_log = || std::fs::read_to_string(path("gateway.log")).unwrap();

    let topic = format!("audit-sasl-{}", unique());
    let bootstrap = format!("127.0.0.1:{gateway}");
    let copies = Sink::ok().await;
    let config = sink_config(&topic, &bootstrap, Some("kafka-sasl"))
        + &format!(
            r#"---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: copies}}
---
apiVersion: sources.knative.dev/v1
kind: KafkaSource
metadata: {{name: audit-reader}}
spec:
  bootstrapServers: ['{bootstrap}']
  topics: ['{topic}']
  initialOffset: earliest
  net:
    sasl:
      enable: true
      user: {{value: alice}}
      password: {{secretKeyRef: {{name: kafka-sasl, key: password}}}}
      type: {{value: SCRAM-SHA-256}}
    tls:
      enable: true
      caCert: {{secretKeyRef: {{name: kafka-sasl, key: ca.crt}}}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: copies}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: copies}}
spec:
  broker: copies
  subscriber: {{uri: '{copies}'}}
"#,
            copies = copies.url
        );
    // Knative's Secret for a KafkaSink: protocol, sasl.mechanism, user, password, ca.crt.
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("kafka-sasl");
    std::fs::create_dir(&secret).unwrap();
    for (key, value) in [
        ("protocol", "SASL_SSL\n"),
        ("sasl.mechanism", "SCRAM-SHA-512\n"),
        ("user", "alice"),
        ("password", "alice-secret"),
    ] {
        std::fs::write(secret.join(key), value).unwrap();
    }
    std::fs::copy(path("cert.pem"), secret.join("ca.crt")).unwrap();
    let secrets_dir = secrets.path().to_str().unwrap().to_owned();
    let sy = Switchyard::start_with_env(&config, &[("SWITCHYARD_SECRETS_DIR", &secrets_dir)]);
    send_order(&sy, "over-sasl").await;

    let mut reader = ClientConfig::new();
    reader
        .set("bootstrap.servers", &bootstrap)
        .set("security.protocol", "sasl_ssl")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", "alice")
        .set("sasl.password", "alice-secret")
        .set("ssl.ca.location", path("cert.pem"));
    let m = first_record_with(reader, &topic).await;
    assert_eq!(ce_id(&m), b"over-sasl");
    let got = copies.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "over-sasl");
    let said = gateway_log();
    for line in [
        "authenticated alice with SCRAM-SHA-512",
        "authenticated alice with SCRAM-SHA-256",
        "authenticated alice with PLAIN",
    ] {
        assert!(said.contains(line), "{line}: {said}");
    }
    assert!(!said.contains("refused"), "{said}");
    drop(sy);

    // The same sink with a wrong password is refused by the broker.
    std::fs::write(secret.join("password"), "wrong").unwrap();
    let sy = Switchyard::start_with_env(
        &sink_config(&topic, &bootstrap, Some("kafka-sasl")),
        &[("SWITCHYARD_SECRETS_DIR", &secrets_dir)],
    );
    send_order(&sy, "wrong-password").await;
    common::eventually("the wrong password refused", WAIT, || async {
        gateway_log()
            .contains("refused alice with SCRAM-SHA-512: wrong password")
            .then_some(())
    })
    .await;
}

/// On the JetStream engine (spec/jetstream.md), the replicas of a KafkaSource are one
/// consumer group: each record reaches the broker once, whichever replica read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_jetstream_are_one_consumer_group() {
    let Some(cluster) = common::jetstream::Cluster::start(3).await else {
        return;
    };
    let sink = Sink::ok().await;
    let topic = format!("js-readings-{}", unique());
    create_topic(&topic, 2).await;
    let config = format!(
        "{}{}",
        common::broker_and_trigger("readings", "filter: {}", &sink.url),
        kafka_source("readings", &topic, &format!("consumerGroup: sy-{topic}")),
    );
    let urls = cluster.urls();
    let args = ["--jetstream", urls.as_str(), "--jetstream-replicas", "3"];
    let _sys: Vec<Switchyard> = (0..2)
        .map(|_| Switchyard::start_with(&config, &args))
        .collect();
    let p = producer();
    let n = 200;
    for i in 0..n {
        let partition = i32::from(i % 2 == 1);
        produce(
            &p,
            &topic,
            Some(partition),
            None,
            &[],
            &format!("reading {i}"),
        )
        .await;
    }
    sink.wait_for(n, WAIT).await;
    sink.assert_stays_at(n, Duration::from_millis(1500)).await;
    let values: BTreeSet<String> = sink
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(values.len(), n, "each record once");
}
