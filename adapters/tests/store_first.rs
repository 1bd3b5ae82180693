//! The stream sources' promise, "stored before acknowledged", against the real NATS,
//! Mosquitto and Kafka broker, with a real redb log behind a wrapper that misbehaves:
//!
//! - it refuses the first appends with `Overloaded`, as the log does when its writer's queue
//!   is full: a JetStream message is nak'ed and redelivered, an MQTT message retried in place;
//!   either way it is stored once the store takes it;
//! - it never answers (an append that never commits): the source is then stopped and started
//!   again on a working log, and every message it had received comes again, because nothing
//!   was acknowledged (PUBACK, JetStream ack, Kafka offset) while the store had not committed.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchyard_broker::log::{AppendFuture, BrokerId, Delegating, EventLog, LogError, WriteOp};
use switchyard_broker::redb_log::{RedbLog, RedbOptions};
use switchyard_core::config::parse_text;

/// A real log whose first `refuse` appends fail with `Overloaded`, or, with `hang`, whose
/// appends never finish (the events they were given are kept in `attempted`).
struct Refusing {
    inner: RedbLog,
    refuse: AtomicUsize,
    refused: AtomicUsize,
    hang: bool,
    attempted: std::sync::Mutex<Vec<switchyard_core::CloudEvent>>,
}

impl Refusing {
    /// What the source tried to store, as payloads.
    fn attempted_payloads(&self) -> Vec<String> {
        self.attempted
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e.data_bytes())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    fn hangs(&self, events: &[Vec<u8>]) -> bool {
        if self.hang {
            self.attempted.lock().unwrap().extend(
                events
                    .iter()
                    .map(|e| switchyard_core::store::decode(e).unwrap()),
            );
        }
        self.hang
    }

    fn refuses(&self) -> bool {
        let left = self.refuse.load(Ordering::SeqCst);
        if left == 0 {
            return false;
        }
        self.refuse.store(left - 1, Ordering::SeqCst);
        self.refused.fetch_add(1, Ordering::SeqCst);
        true
    }
}

impl Delegating for Refusing {
    fn inner(&self) -> &dyn EventLog {
        &self.inner
    }
    fn append(&self, broker: &BrokerId, events: Vec<Vec<u8>>) -> AppendFuture {
        if self.hangs(&events) {
            return Box::pin(std::future::pending());
        }
        if self.refuses() {
            return Box::pin(async { Err(LogError::Overloaded) });
        }
        self.inner.append(broker, events)
    }
    fn append_with(
        &self,
        broker: &BrokerId,
        events: Vec<Vec<u8>>,
        ops: Vec<WriteOp>,
    ) -> AppendFuture {
        if self.hangs(&events) {
            return Box::pin(std::future::pending());
        }
        if self.refuses() {
            return Box::pin(async { Err(LogError::Overloaded) });
        }
        self.inner.append_with(broker, events, ops)
    }
}

fn refusing(dir: &std::path::Path, refuse: usize) -> Arc<Refusing> {
    log(dir, refuse, false)
}

fn hanging(dir: &std::path::Path) -> Arc<Refusing> {
    log(dir, 0, true)
}

fn log(dir: &std::path::Path, refuse: usize, hang: bool) -> Arc<Refusing> {
    let inner = RedbLog::open(
        dir,
        RedbOptions {
            fsync: false,
            ..Default::default()
        },
        Box::new(|_| {}),
    )
    .unwrap();
    Arc::new(Refusing {
        inner,
        refuse: AtomicUsize::new(refuse),
        refused: AtomicUsize::new(0),
        hang,
        attempted: std::sync::Mutex::default(),
    })
}

fn unique() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn stored_payloads(log: &Refusing, at_least: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = log.inner.read("default/default", 0, 1000).unwrap();
        let payloads: Vec<String> = records
            .iter()
            .map(|r| switchyard_core::store::decode(&r.event).unwrap())
            .filter_map(|e| e.data_bytes())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        if payloads.len() >= at_least {
            return payloads;
        }
        assert!(Instant::now() < deadline, "stored only {payloads:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The NATS server `scripts/test` found or started.
fn nats_url() -> String {
    std::env::var("SWITCHYARD_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The MQTT broker `scripts/test` found or started, `host:port`.
fn mqtt_addr() -> String {
    std::env::var("SWITCHYARD_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into())
}

/// An MQTT 5 client publishing to the broker at `host`:`port`, its event loop driven.
fn publisher(id: &str, host: &str, port: &str) -> rumqttc::v5::AsyncClient {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(
        rumqttc::v5::MqttOptions::new(id, host, port.parse().unwrap()),
        10,
    );
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
}

/// A new JetStream stream taking `{prefix}.>` (named `prefix` in capitals), holding one
/// message, `payload`.
async fn stream_with(
    nats_url: &str,
    prefix: &str,
    payload: &'static str,
) -> (async_nats::jetstream::Context, String) {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let stream = prefix.to_ascii_uppercase();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish(format!("{prefix}.x"), payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    (js, stream)
}

const BROKER: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";

fn config(source: &str) -> switchyard_core::config::Config {
    let text = format!("{BROKER}---\n{source}");
    let resources = parse_text(&text, "test.yaml").unwrap();
    switchyard_core::config::Config::from_resources(
        resources.into_iter().map(|r| ("test.yaml".to_owned(), r)),
    )
    .unwrap()
}

#[tokio::test]
async fn jetstream_naks_what_the_broker_refused_and_stores_it_when_redelivered() {
    let nats_url = nats_url();
    let u = unique();
    let (js, stream) = stream_with(&nats_url, &format!("pb{u}"), "refused at first").await;

    let dir = tempfile::tempdir().unwrap();
    let log = refusing(dir.path(), 2);
    let cfg = config(&format!(
        "apiVersion: sources.switchyard.dev/v1\nkind: NatsSource\nmetadata: {{name: n}}\nspec:\n  servers: ['{nats_url}']\n  subject: 'pb{u}.>'\n  jetstream: {{stream: {stream}, nakDelay: PT0.1S}}\n  sink: {{ref: {{kind: Broker, name: default}}}}\n"
    ));
    let sources = start(&cfg, &log).await;
    let stored = stored_payloads(&log, 1).await;
    assert_eq!(stored, ["refused at first"]);
    assert_eq!(log.refused.load(Ordering::SeqCst), 2);
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("switchyard-default-n")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    // Delivered three times: refused, refused, stored.
    assert_eq!(info.delivered.consumer_sequence, 3, "{info:?}");
    drop(sources);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn mqtt_retries_in_place_without_acking_and_stores() {
    let addr = mqtt_addr();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let u = unique();
    let dir = tempfile::tempdir().unwrap();
    let log = refusing(dir.path(), 3);
    let cfg = config(&format!(
        "apiVersion: sources.switchyard.dev/v1\nkind: MqttSource\nmetadata: {{name: m}}\nspec:\n  broker: mqtt://{addr}\n  topics: ['pb{u}/#']\n  clientId: pb-{u}\n  sink: {{ref: {{kind: Broker, name: default}}}}\n"
    ));
    let sources = start(&cfg, &log).await;
    let client = publisher(&format!("pub-{u}"), host, port);
    // Publish until the source is subscribed and something is stored (the first appends are
    // refused and retried in place, the messages kept in order).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    loop {
        client
            .publish(
                format!("pb{u}/t"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                format!("m{sent}"),
            )
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !log.inner.read("default/default", 0, 1).unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "nothing stored");
    }
    assert_eq!(log.refused.load(Ordering::SeqCst), 3);
    let stored = stored_payloads(&log, 1).await;
    assert!(stored.iter().all(|p| p.starts_with('m')), "{stored:?}");
    drop(sources);
}

async fn start(
    cfg: &switchyard_core::config::Config,
    log: &Arc<Refusing>,
) -> switchyard_adapters::Sources {
    let event_types =
        switchyard_broker::eventtypes::EventTypePolicy::new(cfg, Arc::default()).unwrap();
    switchyard_adapters::start(
        cfg,
        &Arc::new(event_types),
        Arc::clone(log) as Arc<dyn EventLog>,
        switchyard_adapters::clock::Clock::System,
        None,
    )
    .await
    .unwrap()
}

/// Waits until the hanging log was handed something to store.
async fn wait_attempted(log: &Refusing) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = log.attempted_payloads();
        if !got.is_empty() {
            return got;
        }
        assert!(Instant::now() < deadline, "the source never tried to store");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn mqtt_acks_nothing_the_store_has_not_committed() {
    let addr = mqtt_addr();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let u = unique();
    let cfg = config(&format!(
        "apiVersion: sources.switchyard.dev/v1\nkind: MqttSource\nmetadata: {{name: m}}\nspec:\n  broker: mqtt://{addr}\n  topics: ['hang{u}/#']\n  clientId: hang-{u}\n  sink: {{ref: {{kind: Broker, name: default}}}}\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let stuck = hanging(&dir.path().join("stuck"));
    let sources = start(&cfg, &stuck).await;
    let client = publisher(&format!("pub-{u}"), host, port);
    // Publish until the source has received something and tried to store it.
    let mut sent = 0;
    let received = loop {
        client
            .publish(
                format!("hang{u}/t"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                format!("m{sent}"),
            )
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = stuck.attempted_payloads();
        if !got.is_empty() {
            break got;
        }
        assert!(sent < 300, "the source never received anything");
    };
    // Stopped with its append unfinished: nothing may have been PUBACKed.
    drop(sources);
    let working = refusing(&dir.path().join("working"), 0);
    let sources = start(&cfg, &working).await;
    let stored = stored_payloads(&working, received.len()).await;
    for p in &received {
        assert!(
            stored.contains(p),
            "{p} was acked before it was stored: {stored:?}"
        );
    }
    drop(sources);
}

#[tokio::test]
async fn jetstream_acks_nothing_the_store_has_not_committed() {
    let nats_url = nats_url();
    let u = unique();
    let (js, stream) = stream_with(&nats_url, &format!("hang{u}"), "the one").await;
    let cfg = config(&format!(
        "apiVersion: sources.switchyard.dev/v1\nkind: NatsSource\nmetadata: {{name: n}}\nspec:\n  servers: ['{nats_url}']\n  subject: 'hang{u}.>'\n  jetstream: {{stream: {stream}, ackWait: PT1S}}\n  sink: {{ref: {{kind: Broker, name: default}}}}\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let stuck = hanging(&dir.path().join("stuck"));
    let sources = start(&cfg, &stuck).await;
    assert_eq!(wait_attempted(&stuck).await, ["the one"]);
    let consumer = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("switchyard-default-n")
        .await
        .unwrap();
    let info = consumer.get_info().await.unwrap();
    assert_eq!(
        info.ack_floor.stream_sequence, 0,
        "acked before stored: {info:?}"
    );
    drop(sources);
    let working = refusing(&dir.path().join("working"), 0);
    let sources = start(&cfg, &working).await;
    assert_eq!(stored_payloads(&working, 1).await, ["the one"]);
    drop(sources);
    js.delete_stream(&stream).await.unwrap();
}

// Only where the crate has Kafka (the `kafka` feature, on by default).
#[cfg(feature = "kafka")]
#[tokio::test]
async fn kafka_commits_nothing_the_store_has_not_committed() {
    use rdkafka::consumer::Consumer as _;
    let bootstrap = std::env::var("SWITCHYARD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!("SWITCHYARD_TEST_KAFKA is not set: run scripts/test, which starts a Kafka broker")
    });
    let u = unique();
    let topic = format!("hang-{u}");
    let group = format!("sy-{topic}");
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", &bootstrap);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        cc.create().unwrap();
    for r in admin
        .create_topics(
            [&rdkafka::admin::NewTopic::new(
                &topic,
                1,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let producer: rdkafka::producer::FutureProducer = cc.create().unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::<str, str>::to(&topic).payload("the one"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let cfg = config(&format!(
        "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {{name: k}}\nspec:\n  bootstrapServers: ['{bootstrap}']\n  topics: ['{topic}']\n  consumerGroup: {group}\n  initialOffset: earliest\n  sink: {{ref: {{kind: Broker, name: default}}}}\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let stuck = hanging(&dir.path().join("stuck"));
    let sources = start(&cfg, &stuck).await;
    assert_eq!(wait_attempted(&stuck).await, ["the one"]);
    let committed = || {
        let c: rdkafka::consumer::BaseConsumer =
            cc.clone().set("group.id", &group).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        c.committed_offsets(tpl, Duration::from_secs(10))
            .unwrap()
            .elements()[0]
            .offset()
    };
    assert_eq!(
        committed(),
        rdkafka::Offset::Invalid,
        "committed before stored"
    );
    drop(sources);
    let working = refusing(&dir.path().join("working"), 0);
    let sources = start(&cfg, &working).await;
    assert_eq!(stored_payloads(&working, 1).await, ["the one"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed() != rdkafka::Offset::Offset(1) {
        assert!(Instant::now() < deadline, "the offset was never committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sources);
}
