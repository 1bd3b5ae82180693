//! Black-box tests of the MQTT source (spec/streams.md) against the machine's real Mosquitto:
//! MQTT 5 messages in all three shapes (raw, binary with user properties, structured),
//! MQTT 3.1.1 messages (raw and structured), and QoS 1 messages in flight when Switchyard
//! freezes and dies, which the broker redelivers to the restarted source.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::sink::Sink;
use common::{Switchyard, eventually, moto::unique, mqtt_addr};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

const WAIT: Duration = Duration::from_secs(30);

/// An MQTT 5 publisher; the counter is the PUBACKs it got from the broker.
fn publisher5(id: &str) -> (rumqttc::v5::AsyncClient, Arc<AtomicUsize>) {
    let (host, port) = mqtt_addr();
    let mut o = rumqttc::v5::MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(o, 100);
    let acks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&acks);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_))) => {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, acks)
}

/// An MQTT 3.1.1 publisher.
fn publisher311(id: &str) -> rumqttc::AsyncClient {
    let (host, port) = mqtt_addr();
    let (client, mut eventloop) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new(id, host, port), 100);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

/// An MqttSource with a client id of its own: a persistent session left on the broker by an
/// earlier run (same default id) would otherwise hand this run that run's queued messages.
fn source(name: &str, version: &str, topic: &str, extra: &str) -> String {
    let (host, port) = mqtt_addr();
    let client_id = format!("{name}-{}", unique());
    format!(
        r#"
---
apiVersion: sources.switchyard.dev/v1
kind: MqttSource
metadata: {{name: {name}}}
spec:
  broker: mqtt://{host}:{port}
  topics: ['{topic}']
  protocolVersion: '{version}'
  clientId: {client_id}
  {extra}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#
    )
}

/// Publishes `probe` payloads until the sink has one: the source subscribes in the background.
async fn wait_subscribed(sink: &Sink, publish: impl Fn() -> tokio::task::JoinHandle<()>) {
    eventually("the source subscribed", WAIT, || {
        let sent = publish();
        async move {
            sent.await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            (!sink.received().is_empty()).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn mqtt5_and_mqtt311_messages_arrive_in_every_mode() {
    let sink = Sink::ok().await;
    let u = unique();
    let config = format!(
        "{}{}{}",
        common::broker_and_trigger("sensors", "filter: {}", &sink.url),
        source(
            "rooms",
            "5",
            &format!("sy{u}/+/temperature"),
            "type: com.example.room.reading"
        ),
        source("legacy", "3.1.1", &format!("sy{u}/legacy/#"), ""),
    );
    let sy = Switchyard::start(&config);
    let (p5, _) = publisher5(&format!("pub5-{u}"));
    let p3 = publisher311(&format!("pub3-{u}"));
    let probe5 = format!("sy{u}/probe/temperature");
    wait_subscribed(&sink, || {
        let (c, t) = (p5.clone(), probe5.clone());
        tokio::spawn(async move {
            c.publish(t, QoS::AtLeastOnce, false, "probe")
                .await
                .unwrap()
        })
    })
    .await;
    let probe3 = format!("sy{u}/legacy/probe");
    let seen = sink.received().len();
    eventually("the 3.1.1 source subscribed", WAIT, || {
        let (c, t) = (p3.clone(), probe3.clone());
        let sink = &sink;
        async move {
            c.publish(t, rumqttc::QoS::AtLeastOnce, false, "probe")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            sink.received()[seen..]
                .iter()
                .any(|r| {
                    r.event
                        .as_ref()
                        .unwrap()
                        .source
                        .ends_with("/mqttsources/legacy")
                })
                .then_some(())
        }
    })
    .await;

    // MQTT 5, raw.
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    p5.publish_with_properties(
        format!("sy{u}/room1/temperature"),
        QoS::AtLeastOnce,
        false,
        "21.5",
        props,
    )
    .await
    .unwrap();
    // MQTT 5, binary mode: attributes in user properties, datacontenttype as Content Type.
    let props = PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: [
            ("specversion", "1.0"),
            ("id", "lora-1"),
            ("source", "/lorawan/gw-7"),
            ("type", "com.example.lorawan.uplink"),
            ("devaddr", "26011b2c"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect(),
        ..Default::default()
    };
    p5.publish_with_properties(
        format!("sy{u}/room2/temperature"),
        QoS::AtLeastOnce,
        false,
        r#"{"t":19.0}"#,
        props,
    )
    .await
    .unwrap();
    // MQTT 5, structured mode.
    let props = PublishProperties {
        content_type: Some("application/cloudevents+json".into()),
        ..Default::default()
    };
    p5.publish_with_properties(
        format!("sy{u}/room3/temperature"),
        QoS::AtLeastOnce,
        false,
        r#"{"specversion":"1.0","id":"st-5","source":"/gw","type":"com.example.structured5","data":{"t":3}}"#,
        props,
    )
    .await
    .unwrap();
    // MQTT 3.1.1: structured JSON, and a raw payload.
    p3.publish(
        format!("sy{u}/legacy/room4"),
        rumqttc::QoS::AtLeastOnce,
        false,
        r#"{"specversion":"1.0","id":"st-3","source":"/gw","type":"com.example.structured311","data":{"t":4}}"#,
    )
    .await
    .unwrap();
    p3.publish(
        format!("sy{u}/legacy/room5"),
        rumqttc::QoS::AtLeastOnce,
        false,
        r#"{"t":5}"#,
    )
    .await
    .unwrap();

    // Probes (topics with a `probe` level) may still arrive; they are not what is checked.
    let got = sink
        .wait_for_where(5, WAIT, |r| {
            let e = r.event.as_ref().unwrap();
            !e.subject.as_deref().unwrap_or("").contains("/probe") && r.body.as_ref() != b"probe"
        })
        .await;
    let events: Vec<_> = got
        .iter()
        .map(|r| (r.event.clone().unwrap(), r.body.clone()))
        .collect();
    let find = |pred: &dyn Fn(&switchyard_core::CloudEvent) -> bool| {
        events
            .iter()
            .find(|(e, _)| pred(e))
            .unwrap_or_else(|| panic!("missing in {events:?}"))
            .clone()
    };
    let (raw, body) = find(&|e| {
        e.ty == "com.example.room.reading"
            && e.subject.as_deref() == Some(&format!("sy{u}/room1/temperature"))
    });
    assert_eq!(raw.source, "/apis/v1/namespaces/default/mqttsources/rooms");
    assert_eq!(raw.datacontenttype.as_deref(), Some("text/plain"));
    assert_eq!(&body[..], b"21.5");
    let (bin, body) = find(&|e| e.id == "lora-1");
    assert_eq!(bin.ty, "com.example.lorawan.uplink");
    assert_eq!(bin.source, "/lorawan/gw-7");
    assert_eq!(bin.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(bin.attribute("devaddr").as_deref(), Some("26011b2c"));
    assert_eq!(&body[..], br#"{"t":19.0}"#);
    let (st5, body) = find(&|e| e.id == "st-5");
    assert_eq!(st5.ty, "com.example.structured5");
    assert_eq!(&body[..], br#"{"t":3}"#);
    let (st3, _) = find(&|e| e.id == "st-3");
    assert_eq!(st3.ty, "com.example.structured311");
    let (raw3, body) = find(&|e| e.subject.as_deref() == Some(&format!("sy{u}/legacy/room5")));
    assert_eq!(raw3.ty, "dev.switchyard.mqtt.message");
    assert_eq!(
        raw3.source,
        "/apis/v1/namespaces/default/mqttsources/legacy"
    );
    assert_eq!(&body[..], br#"{"t":5}"#);
    drop(sy);
}

fn payloads(stored: &[(u64, switchyard_core::CloudEvent)]) -> BTreeSet<String> {
    stored
        .iter()
        .filter_map(|(_, e)| e.data_bytes())
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .filter(|p| p.starts_with("reading "))
        .collect()
}

#[tokio::test]
async fn qos1_messages_in_flight_at_a_crash_are_redelivered_and_stored() {
    let sink = Sink::ok().await;
    let u = unique();
    let topic = format!("sy{u}/crash/temperature");
    let config = format!(
        "{}{}",
        common::broker_and_trigger("sensors", "filter: {}", &sink.url),
        source("crashy", "5", &format!("sy{u}/crash/#"), "qos: 1"),
    );
    let mut sy = Switchyard::start(&config);
    let (p, acks) = publisher5(&format!("pub-{u}"));
    wait_subscribed(&sink, || {
        let (c, t) = (p.clone(), topic.clone());
        tokio::spawn(async move {
            c.publish(t, QoS::AtLeastOnce, false, "probe")
                .await
                .unwrap()
        })
    })
    .await;
    let acked_before = acks.load(Ordering::SeqCst);

    // Frozen, the source can neither store nor acknowledge: the broker keeps the messages in
    // flight (or queued) for the session.
    sy.freeze();
    for i in 0..50 {
        p.publish(
            topic.clone(),
            QoS::AtLeastOnce,
            false,
            format!("reading {i}"),
        )
        .await
        .unwrap();
    }
    eventually("the broker took all 50", WAIT, || {
        let n = acks.load(Ordering::SeqCst);
        async move { (n >= acked_before + 50).then_some(()) }
    })
    .await;
    sy.kill9();

    // The same client id and a persistent session: the broker hands everything over again.
    sy.restart();
    eventually("every reading delivered", WAIT, || {
        let n = sink
            .received()
            .iter()
            .filter(|r| r.body.starts_with(b"reading "))
            .map(|r| r.body.clone())
            .collect::<BTreeSet<_>>()
            .len();
        async move { (n == 50).then_some(()) }
    })
    .await;
    let stored = payloads(&sy.stored("default/default"));
    assert_eq!(
        stored,
        (0..50).map(|i| format!("reading {i}")).collect(),
        "a reading was lost"
    );
}

/// A message over the event limit (4 MiB) never stalls the source. An MQTT 3.1.1 client cannot
/// refuse it, so the source takes it and drops it as malformed (counted); an MQTT 5 client
/// announces its Maximum Packet Size, so the broker never sends it (nothing counted, no 5 MiB
/// in the source's memory).
#[tokio::test]
async fn an_oversized_message_is_dropped_without_stalling_the_source() {
    for (version, counted) in [("3.1.1", true), ("5", false)] {
        oversized_message(version, counted).await;
    }
}

async fn oversized_message(version: &str, counted: bool) {
    let sink = Sink::ok().await;
    let u = unique();
    let topic = format!("sy{u}/big/data");
    let config = format!(
        "{}{}",
        common::broker_and_trigger("big", "filter: {}", &sink.url),
        source("big", version, &format!("sy{u}/big/#"), ""),
    );
    let sy = Switchyard::start(&config);
    let (p, _) = publisher5(&format!("pub-{u}"));
    wait_subscribed(&sink, || {
        let (c, t) = (p.clone(), topic.clone());
        tokio::spawn(async move {
            c.publish(t, QoS::AtLeastOnce, false, "probe")
                .await
                .unwrap()
        })
    })
    .await;
    // 5 MiB: more than an event may carry (4 MiB), and far more than MQTT clients take by
    // default; then an ordinary reading behind it.
    p.publish(
        topic.clone(),
        QoS::AtLeastOnce,
        false,
        vec![b'x'; 5 * 1024 * 1024],
    )
    .await
    .unwrap();
    p.publish(topic.clone(), QoS::AtLeastOnce, false, "after the big one")
        .await
        .unwrap();
    sink.wait_for_where(1, WAIT, |r| r.body.as_ref() == b"after the big one")
        .await;
    assert!(sink.received().iter().all(|r| r.body.len() < 1024));
    let m = common::metrics(&sy).await;
    let dropped = m.lines().any(|l| {
        l.starts_with("switchyard_source_malformed_total")
            && l.contains("kind=\"MqttSource\"")
            && l.ends_with(" 1")
    });
    assert_eq!(dropped, counted, "MQTT {version}: {m}");
}

/// An MqttSource reaches an `mqtts://` broker (a Mosquitto of the test's own with a TLS
/// listener, its certificate signed by a test CA) trusting the CA its `tls.caCert` gives.
#[tokio::test]
async fn an_mqtts_broker_is_reached_trusting_the_ca_its_tls_gives() {
    if !common::tools_or_skip(&["openssl", "mosquitto", "mosquitto_pub"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = common::tls::TestCa::new(dir.path(), "mqtt");
    let port = common::free_port();
    let conf = dir.path().join("mosquitto.conf");
    // `user root`: run as root, Mosquitto would otherwise drop to its own user, which cannot
    // read the key in the test's private directory (ignored when not run as root).
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous true\npersistence false\nuser root\n",
            ca.file("ca.pem"),
            ca.file("server.pem"),
            ca.file("server.key")
        ),
    )
    .unwrap();
    let _mosquitto = common::Children::quiet(vec![
        std::process::Command::new("mosquitto").arg("-c").arg(&conf),
    ]);
    common::wait_listening(port, "Mosquitto's TLS listener").await;
    let sink = Sink::ok().await;
    let config = format!(
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
kind: MqttSource
metadata: {{name: secure}}
spec:
  broker: mqtts://127.0.0.1:{port}
  topics: ['plant/#']
  clientId: secure-{}
  tls: {{caCert: {{fromEnv: MQTT_CA}}}}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        sink.url,
        unique()
    );
    let pem = std::fs::read_to_string(ca.file("ca.pem")).unwrap();
    let _sy = Switchyard::start_with_env(&config, &[("MQTT_CA", &pem)]);
    let ca_file = ca.file("ca.pem");
    let port_text = port.to_string();
    wait_subscribed(&sink, || {
        let (ca_file, port) = (ca_file.clone(), port_text.clone());
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("mosquitto_pub")
                .args(["--cafile", &ca_file, "-h", "127.0.0.1", "-p", &port])
                .args(["-q", "1", "-t", "plant/boiler", "-m", "over tls"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        })
    })
    .await;
    let got = sink.received();
    assert_eq!(got[0].body.as_ref(), b"over tls");
    assert_eq!(
        got[0]
            .event
            .as_ref()
            .unwrap()
            .attribute("subject")
            .as_deref(),
        Some("plant/boiler")
    );
}
