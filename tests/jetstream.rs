//! The JetStream engine (`serve --jetstream`, spec/jetstream.md) with real processes on
//! loopback: a three-node JetStream cluster of current nats-servers, R3 streams, and several
//! `switchyard` replicas on the same configuration, producers spread over them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::jetstream::{Cluster, config, counts, post, post_with, replicas, replicas_with_env};
use common::sink::{Answer, Sink};
use common::{Switchyard, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_the_triggers_and_deliver_every_event_once() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let sys = replicas(3, &cluster, &config(&all.url, &orders.url, ""));
    let n = 300;
    for i in 0..n {
        let ty = if i % 3 == 0 { "order" } else { "other" };
        assert_eq!(post(&sys[i % 3], &format!("e{i}"), ty).await, 202, "e{i}");
    }
    // A producer that did not see its 202 sends again, to another replica: stored once.
    assert_eq!(post(&sys[1], "e0", "order").await, 202);
    assert_eq!(post(&sys[2], "e3", "order").await, 202);

    all.wait_for(n, Duration::from_secs(60)).await;
    orders.wait_for(n / 3, Duration::from_secs(60)).await;
    all.assert_stays_at(n, Duration::from_millis(500)).await;
    orders
        .assert_stays_at(n / 3, Duration::from_millis(500))
        .await;
    let all_ids: HashSet<String> = all.ids().into_iter().collect();
    assert_eq!(all_ids.len(), n, "every event once, none twice");
    let order_ids: HashSet<String> = orders.ids().into_iter().collect();
    assert_eq!(
        order_ids,
        (0..n)
            .step_by(3)
            .map(|i| format!("e{i}"))
            .collect::<HashSet<_>>(),
        "the filter is applied by whichever replica takes the event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_delivery_loses_nothing() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    // A slow subscriber, so that each replica holds deliveries in flight when one dies.
    let all = Sink::start(|_, _| Answer::status(200).delay(Duration::from_millis(100))).await;
    let orders = Sink::ok().await;
    let mut sys = replicas(
        3,
        &cluster,
        &config(&all.url, &orders.url, "delivery: {timeout: PT2S}"),
    );
    let n = 200;
    for i in 0..n {
        assert_eq!(post(&sys[i % 3], &format!("k{i}"), "other").await, 202);
    }
    all.wait_for(40, Duration::from_secs(30)).await;
    sys[0].kill9();
    // What the dead replica held is handed to the others once its ack wait (timeout + 5 s)
    // runs out.
    common::eventually("every event delivered", Duration::from_secs(60), || {
        let got = counts(&all);
        async move { ((0..n).all(|i| got.contains_key(&format!("k{i}")))).then_some(()) }
    })
    .await;
    let duplicates: usize = counts(&all).values().map(|c| c - 1).sum();
    // At most what the dead replica had in flight or had delivered without acking yet.
    assert!(
        duplicates <= 64,
        "{duplicates} duplicates: more than one replica's deliveries in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_then_one_dead_letter_in_the_dead_letter_stream() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let failing = Sink::start(|_, _| Answer::status(500)).await;
    let orders = Sink::ok().await;
    let sys = replicas(
        2,
        &cluster,
        &config(
            &failing.url,
            &orders.url,
            "delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT0.2S}",
        ),
    );
    for i in 0..3 {
        assert_eq!(post(&sys[i % 2], &format!("d{i}"), "other").await, 202);
    }
    // Three attempts each (the first and two retries), shared by the replicas.
    failing.wait_for(9, Duration::from_secs(30)).await;
    let js = async_nats::jetstream::new(cluster.client().await);
    let stream = common::eventually("three dead letters", Duration::from_secs(30), || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("SY_DL_default_default").await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.messages >= 3).then_some(stream)
        }
    })
    .await;
    failing.assert_stays_at(9, Duration::from_millis(800)).await;
    let mut ids = HashSet::new();
    for seq in 1..=3 {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(m.subject.as_str(), "sy.dl.default.default.all");
        let letter: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(letter["reason"], "retries exhausted");
        assert_eq!(letter["trigger"], "all");
        let attempts = letter["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3);
        // Every attempt in full, whichever replica made it.
        assert!(
            attempts
                .iter()
                .all(|a| a["status"] == 500 && a["time"].as_str().is_some_and(|t| !t.is_empty())),
            "{attempts:?}"
        );
        assert_eq!(letter["status"], 500);
        ids.insert(letter["eventId"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 3, "one dead letter per event: {ids:?}");
    let mut stream = stream;
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    // The attempt histories go once the events are dead letters.
    let histories = js.get_key_value("SY_ATTEMPTS").await.unwrap();
    let left: Vec<String> =
        futures_util::TryStreamExt::try_collect(histories.keys().await.unwrap())
            .await
            .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_server_too_old_for_the_engine_is_refused_with_one_line() {
    // The machine's NATS (Debian's 2.9) ignores sync_interval; the engine must say so.
    let url = common::nats_url();
    let version = async_nats::connect(&url)
        .await
        .unwrap()
        .server_info()
        .version;
    if !version.starts_with("2.9.") {
        common::skip(&format!("the NATS at {url} is {version}, not a 2.9 server"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        config("http://127.0.0.1:9/", "http://127.0.0.1:9/", ""),
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jetstream",
            &url,
            "--config",
        ])
        .arg(dir.path().join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("too old") && err.contains("2.10"), "{err}");
}

/// A subscriber whose connections are refused (scaled to zero) holds the events on every
/// replica without using their retries, and gets them all once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_scaled_to_zero_holds_events_on_every_replica_until_it_is_up() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let orders = Sink::ok().await;
    let sys = replicas(
        2,
        &cluster,
        &config(
            &format!("http://{addr}/"),
            &orders.url,
            "delivery: {retry: 4, backoffDelay: PT0.1S}",
        ),
    );
    for i in 0..4 {
        assert_eq!(post(&sys[i % 2], &format!("z{i}"), "other").await, 202);
    }
    // Each replica finds the subscriber down for itself (or from an event another one held):
    // at most two refusals each count, fewer than an event's five attempts. Without the hold,
    // a 0.1 s backoff dead-letters all four within two seconds.
    let js = async_nats::jetstream::new(cluster.client().await);
    let dead_letters = || {
        let js = js.clone();
        async move {
            match js.get_stream("SY_DL_default_default").await {
                Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
                Err(_) => 0,
            }
        }
    };
    for _ in 0..30 {
        assert_eq!(dead_letters().await, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sink = Sink::start_at(&addr, |_, _| Answer::status(200)).await;
    let ids: Vec<String> = (0..4).map(|i| format!("z{i}")).collect();
    all_delivered(&sink, &ids, Duration::from_secs(45)).await;
    assert_eq!(dead_letters().await, 0);
}

/// Posts events `{prefix}{i}` to the replicas in turn (skipping those `down` says are down)
/// until `stop`, and returns the ids that were answered 202: what must be delivered.
async fn produce(
    targets: Vec<String>,
    prefix: &'static str,
    down: std::sync::Arc<std::sync::Mutex<HashSet<usize>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<String> {
    let mut accepted = Vec::new();
    let mut i = 0usize;
    while !*stop.borrow() {
        let target = i % targets.len();
        if down.lock().unwrap().contains(&target) {
            i += 1;
            continue;
        }
        let id = format!("{prefix}{i}");
        let status = client()
            .post(format!("{}/default/default", targets[target]))
            .header("ce-specversion", "1.0")
            .header("ce-id", &id)
            .header("ce-source", "/tests/jetstream")
            .header("ce-type", "other")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        if status == 202 {
            accepted.push(id);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    accepted
}

/// Waits until `sink` received every one of `ids`.
async fn all_delivered(sink: &Sink, ids: &[String], within: Duration) {
    common::eventually(
        &format!("all {} accepted events delivered", ids.len()),
        within,
        || {
            let got = counts(sink);
            let missing = ids.iter().filter(|id| !got.contains_key(*id)).count();
            async move { (missing == 0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_node_killed_and_restarted_loses_no_acknowledged_event() {
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let sys = replicas(2, &cluster, &config(&all.url, &orders.url, ""));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let down = std::sync::Arc::default();
    let producer = tokio::spawn(produce(
        sys.iter().map(|s| s.base.clone()).collect(),
        "n",
        down,
        stopped,
    ));
    all.wait_for(100, Duration::from_secs(30)).await;
    cluster.kill9(0);
    let seen = all.received().len();
    all.wait_for(seen + 100, Duration::from_secs(60)).await;
    cluster.restart(0).await;
    cluster.wait_ready().await;
    let seen = all.received().len();
    all.wait_for(seen + 100, Duration::from_secs(60)).await;
    stop.send_replace(true);
    let accepted = producer.await.unwrap();
    all_delivered(&all, &accepted, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_replica_loses_nothing() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let mut sys = replicas(3, &cluster, &config(&all.url, &orders.url, ""));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let down: std::sync::Arc<std::sync::Mutex<HashSet<usize>>> = std::sync::Arc::default();
    // The replicas keep their addresses across restarts, as behind a Service.
    let bases: Vec<String> = sys.iter().map(|s| s.base.clone()).collect();
    let producer = tokio::spawn(produce(bases.clone(), "r", down.clone(), stopped));
    all.wait_for(50, Duration::from_secs(30)).await;
    for (i, sy) in sys.iter_mut().enumerate() {
        down.lock().unwrap().insert(i);
        sy.stop();
        sy.restart();
        assert_eq!(sy.base, bases[i]);
        down.lock().unwrap().remove(&i);
        let seen = all.received().len();
        all.wait_for(seen + 50, Duration::from_secs(30)).await;
    }
    stop.send_replace(true);
    let accepted = producer.await.unwrap();
    all_delivered(&all, &accepted, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_trigger_does_not_slow_the_others() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    // `all`'s subscriber answers nothing within the timeout, for ever.
    let stalled = Sink::start(|_, _| Answer::status(200).delay(Duration::from_secs(3600))).await;
    let orders = Sink::ok().await;
    let sys = replicas(
        2,
        &cluster,
        &config(
            &stalled.url,
            &orders.url,
            "delivery: {timeout: PT1S, retry: 100}",
        ),
    );
    for i in 0..200 {
        assert_eq!(post(&sys[i % 2], &format!("s{i}"), "order").await, 202);
    }
    orders.wait_for(200, Duration::from_secs(20)).await;
    assert!(
        stalled.received().len() >= 64,
        "the stalled trigger is being tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_reach_the_dead_letter_sink_once_it_takes_them() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let failing = Sink::start(|_, _| Answer::status(500)).await;
    let orders = Sink::ok().await;
    // The dead-letter sink is down for its first two requests.
    let dls = Sink::start(|n, _| Answer::status(if n < 2 { 503 } else { 200 })).await;
    let sys = replicas(
        2,
        &cluster,
        &config(
            &failing.url,
            &orders.url,
            &format!(
                "delivery: {{retry: 1, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}",
                dls.url
            ),
        ),
    );
    for i in 0..3 {
        assert_eq!(post(&sys[i % 2], &format!("x{i}"), "other").await, 202);
    }
    common::eventually(
        "the dead-letter sink took all three",
        Duration::from_secs(60),
        || {
            let taken: HashSet<String> = dls
                .received()
                .iter()
                .skip(2)
                .filter_map(|r| r.event.as_ref().map(|e| e.id.clone()))
                .collect();
            async move { (taken.len() == 3).then_some(()) }
        },
    )
    .await;
    for r in dls.received() {
        assert_eq!(r.headers["ce-knativeerrorcode"], "500");
        assert_eq!(r.headers["ce-knativeerrordest"], failing.url.as_str());
    }
    dls.assert_stays_at(dls.received().len(), Duration::from_millis(800))
        .await;
    assert_eq!(dls.received().len(), 5, "two refused, then each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ping_source_fires_each_slot_once_across_three_replicas() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let config = format!(
        r#"{}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: heartbeat}}
spec:
  schedule: "* * * * *"
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
"#,
        config(&all.url, &orders.url, "")
    );
    // Every replica holds the test clock at 10:00 and then moves it to 10:05: each fires
    // the five slots between.
    let sys = replicas_with_env(
        3,
        &cluster,
        &config,
        &[("SWITCHYARD_TEST_CLOCK", "2026-11-28T10:00:30Z")],
    );
    for sy in &sys {
        common::set_clock(sy, "2026-11-28T10:05:30Z").await;
    }
    all.wait_for(5, Duration::from_secs(30)).await;
    all.assert_stays_at(5, Duration::from_secs(2)).await;
    let mut ids = all.ids();
    ids.sort();
    assert_eq!(
        ids,
        (1..=5)
            .map(|m| format!("heartbeat-20261128T10{m:02}00Z"))
            .collect::<Vec<_>>(),
        "each slot once, though three replicas fired it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordered_trigger_keeps_each_keys_order_through_a_replica_kill() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    // A slow subscriber that fails the first attempt at every seventh event: a retry must
    // hold its key, and the replica killed holds deliveries in flight.
    let fails_first = |i: usize| i % 7 == 3;
    let failed_once = std::sync::Mutex::new(HashSet::new());
    let sink = Sink::start(move |_, e| {
        let i: usize = e.id.split('-').nth(1).unwrap().parse().unwrap();
        if fails_first(i) && failed_once.lock().unwrap().insert(e.id.clone()) {
            return Answer::status(500);
        }
        Answer::status(200).delay(Duration::from_millis(30))
    })
    .await;
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: ordered}}
spec:
  broker: default
  ordering: ordered
  subscriber: {{uri: '{}'}}
  delivery: {{timeout: PT2S, retry: 5, backoffDelay: PT0.3S}}
"#,
        sink.url
    );
    let urls = cluster.urls();
    let mut sys: Vec<Switchyard> = (0..3)
        .map(|_| {
            Switchyard::start_full(
                &config,
                &[
                    "--jetstream",
                    &urls,
                    "--jetstream-replicas",
                    "3",
                    "--jetstream-partitions",
                    "4",
                ],
                Vec::new(),
            )
        })
        .collect();
    let (keys, per_key) = (6, 25);
    // Each key's events are posted one after another (a 202 before the next), spread over
    // the replicas: the stream holds them in that order.
    for i in 0..per_key {
        for k in 0..keys {
            let id = format!("k{k}-{i}");
            let key = format!("k{k}");
            let status = post_with(
                &sys[(i * keys + k) % 3],
                &id,
                "order",
                &[("ce-partitionkey", &key)],
            )
            .await;
            assert_eq!(status, 202, "{id}");
        }
    }
    sink.wait_for(40, Duration::from_secs(30)).await;
    sys[0].kill9();
    // Every event answered 200: once, or after its failed first attempt.
    // The killed replica's partition waits out its ack wait (timeout + 5 s), then goes on.
    common::eventually("every event delivered", Duration::from_secs(90), || {
        let got = counts(&sink);
        let done = (0..keys).all(|k| {
            (0..per_key).all(|i| {
                let needed = if fails_first(i) { 2 } else { 1 };
                got.get(&format!("k{k}-{i}")).is_some_and(|n| *n >= needed)
            })
        });
        async move { done.then_some(()) }
    })
    .await;
    let mut last: HashMap<String, usize> = HashMap::new();
    for id in sink.ids() {
        let (key, i) = id.split_once('-').unwrap();
        let i: usize = i.parse().unwrap();
        let before = last.insert(key.to_owned(), i).unwrap_or(0);
        // A retry or a redelivery of the event in flight comes again; nothing comes back
        // after a later event of its key.
        assert!(i >= before, "{key}: event {i} after event {before}");
    }

    // The stream's partitions are fixed: a replica that would place keys elsewhere is refused.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), &config).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--jetstream", &urls])
        .args(["--jetstream-replicas", "3", "--jetstream-partitions", "8"])
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("SY_EV_default_default") && err.contains("--jetstream-partitions 4"),
        "{err}"
    );
}

/// The events `sy`'s source `ns/name` took, by its metric (0 before the first).
async fn source_events(sy: &Switchyard, source: &str) -> u64 {
    let needle = format!("source=\"{source}\"");
    common::metrics(sy)
        .await
        .lines()
        .filter(|l| l.starts_with("switchyard_source_events_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// An MQTT client that publishes at QoS 1 (3.1.1 or 5) and drives its connection.
fn mqtt_publisher(version: &str) -> Box<dyn Fn(String, String) -> tokio::task::JoinHandle<()>> {
    let (host, port) = common::mqtt_addr();
    let id = format!("sy-js-pub-{version}-{}", common::moto::unique());
    if version == "5" {
        let (client, mut eventloop) =
            rumqttc::v5::AsyncClient::new(rumqttc::v5::MqttOptions::new(id, host, port), 100);
        tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Box::new(move |topic, payload| {
            let client = client.clone();
            tokio::spawn(async move {
                let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                client.publish(topic, qos, false, payload).await.unwrap();
            })
        })
    } else {
        let (client, mut eventloop) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new(id, host, port), 100);
        tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Box::new(move |topic, payload| {
            let client = client.clone();
            tokio::spawn(async move {
                let qos = rumqttc::QoS::AtLeastOnce;
                client.publish(topic, qos, false, payload).await.unwrap();
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_sources_take_each_message_once_across_replicas() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let sink = Sink::ok().await;
    let tag = common::moto::unique();
    let (host, port) = common::mqtt_addr();
    let nats_subject = format!("sy-js-in.{tag}");
    let mqtt_topic = |v: &str| format!("sy-js/{tag}/v{v}");
    // A core NATS subject without a queue group, and MQTT 5 and 3.1.1 subscriptions: on
    // their own, each replica would take every message.
    let mut config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: '{}'}}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: nats-in}}
spec:
  servers: ['{}']
  subject: '{nats_subject}'
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        sink.url,
        cluster.urls().split(',').next().unwrap(),
    );
    for v in ["5", "3.1.1"] {
        let name = if v == "5" { "mqtt5-in" } else { "mqtt311-in" };
        config.push_str(&format!(
            r#"---
apiVersion: sources.switchyard.dev/v1
kind: MqttSource
metadata: {{name: {name}}}
spec:
  broker: mqtt://{host}:{port}
  topics: ['{}']
  protocolVersion: '{v}'
  clientId: sy-js-{name}-{tag}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
            mqtt_topic(v)
        ));
    }
    let sys = replicas(2, &cluster, &config);
    let nats = cluster.client().await;
    let (mqtt5, mqtt311) = (mqtt_publisher("5"), mqtt_publisher("3.1.1"));
    let publish_all = |payload: &str| {
        let (nats, payload) = (nats.clone(), payload.to_owned());
        let subject = nats_subject.clone();
        let v5 = mqtt5(mqtt_topic("5"), format!("{payload}-v5"));
        let v311 = mqtt311(mqtt_topic("3.1.1"), format!("{payload}-v311"));
        async move {
            nats.publish(subject, format!("{payload}-nats").into())
                .await
                .unwrap();
            nats.flush().await.unwrap();
            v5.await.unwrap();
            v311.await.unwrap();
        }
    };
    // Probes until every replica took a message from each source: all are subscribed.
    let sources = ["default/nats-in", "default/mqtt5-in", "default/mqtt311-in"];
    let mut probe = 0;
    common::eventually(
        "both replicas subscribed to every source",
        Duration::from_secs(60),
        || {
            probe += 1;
            let sent = publish_all(&format!("probe{probe}"));
            let sys = &sys;
            async move {
                sent.await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                for sy in sys {
                    for s in sources {
                        if source_events(sy, s).await == 0 {
                            return None;
                        }
                    }
                }
                Some(())
            }
        },
    )
    .await;
    let n = 30;
    for i in 0..n {
        publish_all(&format!("m{i}")).await;
    }
    let is_main = |body: &[u8]| body.starts_with(b"m");
    sink.wait_for_where(3 * n, Duration::from_secs(30), |r| is_main(&r.body))
        .await;
    // Long enough for a second copy from the other replica to have come.
    sink.assert_stays_at(sink.received().len(), Duration::from_millis(1500))
        .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in sink.received().iter().filter(|r| is_main(&r.body)) {
        *seen
            .entry(String::from_utf8_lossy(&r.body).into_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3 * n, "every message: {seen:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "taken by both replicas: {twice:?}");
}

/// A stream source holds its events to what the engine's servers can store (their
/// `max_payload`, less the envelope and a dead letter's base64): a larger payload is let go as
/// malformed, not tried again for ever (the consumer's ack floor held behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_event_larger_than_the_engine_stores_is_let_go_and_the_rest_flow() {
    // The engine's servers take 2 MB messages (what the default --max-body-bytes needs); the
    // source's own server takes 8 MB, as a Kafka or NATS system with large messages might.
    let (Some(engine), Some(upstream)) = (
        Cluster::start(1).await,
        Cluster::start_with_max_payload(1, "8MB").await,
    ) else {
        return;
    };
    const MAX_PAYLOAD: usize = 2 * 1024 * 1024;
    let limit = (MAX_PAYLOAD - 192 * 1024) / 4 * 3;
    let sink = Sink::ok().await;
    let tag = common::moto::unique().replace('-', "");
    let stream = format!("UP{tag}");
    let js = async_nats::jetstream::new(upstream.client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("up{tag}")],
        ..Default::default()
    })
    .await
    .unwrap();
    for size in [1, 3_000_000, limit, 1] {
        js.publish(format!("up{tag}"), vec![b'x'; size].into())
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
metadata: {{name: upstream}}
spec:
  servers: ['{}']
  subject: 'up{tag}'
  jetstream: {{stream: {stream}, consumer: switchyard}}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        common::broker_and_trigger("all", "filter: {}", &sink.url),
        upstream.urls(),
    );
    let engine_urls = engine.urls();
    let sy = Switchyard::start_with(
        &config,
        &["--jetstream", &engine_urls, "--jetstream-replicas", "1"],
    );
    let got = sink.wait_for(3, Duration::from_secs(60)).await;
    assert_eq!(
        common::sink::ids_and_sizes(&got),
        [
            (format!("{stream}-1"), 1),
            (format!("{stream}-3"), limit),
            (format!("{stream}-4"), 1)
        ],
        "the payload the engine can store is delivered, the larger one is not"
    );
    common::jetstream::settled(&js, &stream, "switchyard", 4).await;
    assert_eq!(
        common::malformed(&sy, "default/upstream", "terminated").await,
        1.0
    );
}
