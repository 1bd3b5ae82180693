//! The edge example (examples/edge) on real parts: its `switchyard.yaml` (addresses
//! substituted) in the real binary, the machine's Mosquitto, the example's Python function.
//! LoRaWAN-style uplinks published over MQTT 3.1.1 reach the function through the trigger's
//! prefix + CESQL filter; a warm reading becomes an alert routed back through the broker.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sink::Sink;
use common::{Switchyard, eventually, moto::unique, mqtt_addr};

const WAIT: Duration = Duration::from_secs(30);
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/edge");

struct Function(Child);

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts comfort.py on a free port; its URL.
fn start_function() -> (Function, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(python)
        .arg(format!("{EXAMPLE}/comfort.py"))
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("comfort function listening"), "{line}");
    (Function(child), format!("http://127.0.0.1:{port}/"))
}

fn uplink(device: &str, celsius: f64) -> String {
    format!(
        r#"{{"deviceInfo":{{"deviceName":"{device}"}},"object":{{"temperature":{celsius},"humidity":41}}}}"#
    )
}

#[tokio::test]
async fn warm_rooms_raise_alerts_and_other_applications_are_filtered_out() {
    let alerts = Sink::ok().await;
    let (_function, function_url) = start_function();
    let (host, port) = mqtt_addr();
    let u = unique();
    // The shipped config, pointed at this test's parts. A unique topic root and client id
    // keep runs sharing the broker apart.
    let config = std::fs::read_to_string(format!("{EXAMPLE}/switchyard.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8090/alerts", &alerts.url)
        .replace("http://127.0.0.1:8090/", &function_url)
        .replace("mqtt://127.0.0.1:1883", &format!("mqtt://{host}:{port}"))
        .replace("application/", &format!("t{u}/application/"))
        .replace("  qos: 1\n", &format!("  qos: 1\n  clientId: edge-{u}\n"));
    let sy = Switchyard::start(&config);

    let (client, mut eventloop) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new(format!("gw-{u}"), host, port),
        100,
    );
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let publish = |app: &str, device: &str, celsius: f64| {
        let client = client.clone();
        let topic = format!("t{u}/application/{app}/device/0004a30b{device}/event/up");
        let body = uplink(device, celsius);
        async move {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
        }
    };
    // The source subscribes in the background: a warm probe until its alert comes back.
    eventually("the source subscribed", WAIT, || {
        let sent = publish("rooms", "probe", 40.0);
        async {
            sent.await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            (!alerts.received().is_empty()).then_some(())
        }
    })
    .await;

    publish("greenhouse", "gh-1", 35.0).await; // another application: not for `comfort`
    publish("rooms", "room-102", 21.0).await; // comfortable: no alert
    publish("rooms", "room-101", 27.4).await; // too warm
    // Alerts for the probe may still arrive; they are not what is checked.
    let not_probe =
        |r: &common::sink::Received| r.event.as_ref().unwrap().subject.as_deref() != Some("probe");
    let got = alerts.wait_for_where(1, WAIT, not_probe).await;
    let alert = got[0].event.clone().unwrap();
    assert_eq!(alert.ty, "com.example.room.too-warm");
    assert_eq!(alert.source, "/functions/comfort");
    assert_eq!(alert.subject.as_deref(), Some("room-101"));
    assert!(alert.id.ends_with(".too-warm"));
    let data: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(data["temperature"], 27.4);
    // Routing goes in offset order: the earlier uplinks were decided before this alert.
    assert!(
        alerts.received().iter().filter(|r| not_probe(r)).all(|r| r
            .event
            .as_ref()
            .unwrap()
            .subject
            .as_deref()
            == Some("room-101")),
        "only room-101 was too warm for `comfort`"
    );

    // All uplinks are stored, with the topic as subject and the site from ceOverrides.
    let mut sy = sy;
    let stored = sy.stored("default/sensors");
    let uplinks: Vec<_> = stored
        .iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e.ty == "com.example.lorawan.uplink" && !e.subject.as_deref().unwrap().contains("probe")
        })
        .collect();
    assert_eq!(uplinks.len(), 3);
    assert!(
        uplinks
            .iter()
            .all(|e| e.attribute("site").as_deref() == Some("hq"))
    );
    assert!(uplinks.iter().any(|e| e.subject.as_deref()
        == Some(&format!(
            "t{u}/application/greenhouse/device/0004a30bgh-1/event/up"
        ))));
}

/// What a build leaves out it refuses, with one line naming the feature: `switchyard
/// --version` says which optional parts the build has, and a configuration with a
/// KafkaSource, a KafkaSink or an S3Source (its Broker there or not) is taken by a build that
/// has it and refused (`validate`, `serve`, a reload) by one that does not. scripts/test runs this file again with the edge build
/// (`--no-default-features`) in `SWITCHYARD_TEST_BIN`, so both sides are exercised.
#[test]
fn a_build_refuses_with_one_line_the_sources_it_left_out() {
    let out = Command::new(common::bin())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    let features = version
        .lines()
        .find_map(|l| l.strip_prefix("features: "))
        .unwrap_or_else(|| panic!("a features line: {version}"))
        .to_owned();
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";
    let kafka = format!(
        "{broker}---\napiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\n\
         metadata: {{name: readings}}\nspec:\n  bootstrapServers: ['127.0.0.1:9']\n  \
         topics: [readings]\n  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}\n"
    );
    let s3 = format!(
        "{broker}---\napiVersion: sources.switchyard.dev/v1\nkind: S3Source\n\
         metadata: {{name: photos}}\nspec:\n  sink: {{ref: {{kind: Broker, name: default}}}}\n  \
         webhook: {{}}\n"
    );
    let sink = format!(
        "{broker}---\napiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\n\
         metadata: {{name: audit}}\nspec:\n  topic: audit\n  bootstrapServers: ['127.0.0.1:9']\n"
    );
    // A source whose Broker is missing is set aside as not ready; a build without its kind
    // refuses it all the same (it could never run).
    let parked = kafka.replace("metadata: {name: default}", "metadata: {name: other}");
    for (config, feature, kind) in [
        (kafka, "kafka", "KafkaSource"),
        (sink, "kafka", "KafkaSink"),
        (parked, "kafka", "KafkaSource"),
        (s3, "s3", "S3Source"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, &config).unwrap();
        let validate = Command::new(common::bin())
            .args(["validate", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let has = features.split_whitespace().any(|f| f == feature);
        assert_eq!(
            validate.status.success(),
            has,
            "{kind} with `{features}`: {validate:?}"
        );
        if !has {
            let err = String::from_utf8_lossy(&validate.stderr).trim().to_owned();
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(
                err.contains(&format!("built without {kind}s")) && err.contains(feature),
                "{err}"
            );
            let refused = common::serve_refusal(&config, &[]);
            assert!(
                refused.contains(&format!("built without {kind}s")),
                "{refused}"
            );
        }
    }
}

/// A reload that brings in what the build left out is refused, and the running configuration
/// stays (the full build takes it: nothing to check there).
#[tokio::test]
async fn a_reload_with_what_the_build_left_out_is_refused() {
    let out = Command::new(common::bin())
        .arg("--version")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&out.stdout).contains("kafka") {
        return;
    }
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";
    let sy = Switchyard::start(broker);
    sy.rewrite_config(&format!(
        "{broker}---\napiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\n\
         metadata: {{name: readings}}\nspec:\n  bootstrapServers: ['127.0.0.1:9']\n  \
         topics: [readings]\n  sink: {{ref: {{kind: Broker, name: default}}}}\n"
    ));
    let error = eventually("the reload refused", WAIT, || async {
        let status: serde_json::Value = common::client()
            .get(sy.url("/readyz"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        status["config"]["error"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("built without KafkaSources"), "{error}");
}

/// The gateway's configuration in the store-and-forward tests: MQTT readings from
/// `t{u}/sensors/+/up` into Broker `default`, and Trigger `uplink` (ordered, holding while
/// down) to `centre`'s Broker, with `spec` and `delivery` added to its own.
fn gateway_config(u: &str, centre: &str, spec: &str, delivery: &str) -> String {
    let (host, port) = mqtt_addr();
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: sources.switchyard.dev/v1
kind: MqttSource
metadata: {{name: sensors}}
spec:
  broker: mqtt://{host}:{port}
  topics: ['t{u}/sensors/+/up']
  protocolVersion: '3.1.1'
  qos: 1
  clientId: gw-src-{u}
  type: com.example.reading
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: uplink}}
spec:
  broker: default
  ordering: ordered
  subscriber: {{uri: 'http://{centre}/default/default'}}
  delivery: {{retry: 10, backoffPolicy: exponential, backoffDelay: PT0.2S, holdWhileDown: P1D{delivery}}}
{spec}"#
    )
}

/// The centre's configuration: Broker `default` and an ordered Trigger to `function`, so
/// what the gateway sends in order (a batch at once) reaches the function in that order.
fn centre_config(function: &str) -> String {
    // `broker_and_trigger` puts its second argument into the Trigger's spec as it is.
    common::broker_and_trigger("function", "ordering: ordered", function)
}

/// Three sensors publishing numbered readings over MQTT (QoS 1), as JSON
/// `{"device": …, "n": …}` on `t{u}/sensors/{device}/up`.
struct Sensors {
    client: rumqttc::AsyncClient,
    u: String,
    /// The next reading's number.
    next: i64,
}

impl Sensors {
    const DEVICES: [&str; 3] = ["d1", "d2", "d3"];

    fn connect(u: &str) -> Sensors {
        let (host, port) = mqtt_addr();
        let (client, mut eventloop) = rumqttc::AsyncClient::new(
            rumqttc::MqttOptions::new(format!("sensors-{u}"), host, port),
            1000,
        );
        tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Sensors {
            client,
            u: u.to_owned(),
            next: 0,
        }
    }

    async fn publish(&self, device: &str, n: i64) {
        let topic = format!("t{}/sensors/{device}/up", self.u);
        let body = format!(r#"{{"device":"{device}","n":{n}}}"#);
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }

    /// Publishes probes until one reaches `function` (the source subscribes in the
    /// background).
    async fn until_delivered(&self, function: &Sink) {
        eventually("the chain is up", WAIT, || async {
            self.publish("probe", -1).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (!function.received().is_empty()).then_some(())
        })
        .await;
    }

    /// `count` rounds of one reading per device, 20 ms apart.
    async fn rounds(&mut self, count: i64) {
        for _ in 0..count {
            for d in Self::DEVICES {
                self.publish(d, self.next).await;
            }
            self.next += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A reading the function got (not a probe), as JSON.
fn reading(r: &common::sink::Received) -> Option<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .filter(|v| v["device"] != "probe")
}

/// Asserts `got` holds readings 0..n of every device, in order, each once.
fn assert_in_order(got: &[common::sink::Received], n: i64) {
    for d in Sensors::DEVICES {
        let seq: Vec<i64> = got
            .iter()
            .filter_map(|r| reading(r).filter(|v| v["device"] == d)?["n"].as_i64())
            .collect();
        assert_eq!(
            seq,
            (0..n).collect::<Vec<_>>(),
            "{d}: every reading, in order, each once"
        );
    }
}

/// Waits (up to 90 s) until `function` got `n` distinct readings (by `id`: a redelivery does
/// not count twice); what it got by then.
async fn wait_for_readings(function: &Sink, n: usize) -> Vec<common::sink::Received> {
    eventually("every reading arrives", Duration::from_secs(90), || async {
        let got = function.received();
        let ids: std::collections::HashSet<&str> = got
            .iter()
            .filter(|r| reading(r).is_some())
            .filter_map(|r| r.headers.get("ce-id")?.to_str().ok())
            .collect();
        (ids.len() >= n).then_some(got.clone())
    })
    .await
}

/// Asserts the gateway dead-lettered nothing.
async fn assert_no_dead_letters(gateway: &Switchyard) {
    let letters =
        common::get_json(&gateway.url("/api/v1/namespaces/default/brokers/default/deadletters"))
            .await;
    assert_eq!(
        letters["items"].as_array().map(Vec::len),
        Some(0),
        "{letters}"
    );
}

/// Store and forward to the centre (issue 24): a gateway Switchyard takes sensor readings over
/// MQTT and forwards them, through an ordered Trigger with a long `holdWhileDown` and
/// `batch`, to a central Switchyard's ingress, whose Trigger hands them to the function. The
/// centre stops for a while as readings keep coming, then comes back: every reading reaches
/// the function once, in publish order per device (the centre's stop lets the attempt in
/// flight settle), the backlog in batches, and nothing is dead-lettered on the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_wait_on_the_gateway_while_the_centre_is_down_and_arrive_in_order() {
    let function = Sink::ok().await;
    let u = unique();
    let centre_addr = format!("127.0.0.1:{}", common::free_port());
    let mut centre =
        Switchyard::start_with(&centre_config(&function.url), &["--listen", &centre_addr]);
    // What waits on the gateway goes to the centre several to a request.
    let gateway = Switchyard::start(&gateway_config(
        &u,
        &centre_addr,
        "  batch: {maxEvents: 50}\n",
        "",
    ));
    let mut sensors = Sensors::connect(&u);
    sensors.until_delivered(&function).await;

    sensors.rounds(10).await;
    centre.stop();
    sensors.rounds(20).await; // the link is down
    tokio::time::sleep(Duration::from_secs(2)).await;
    centre.restart();
    sensors.rounds(10).await;

    let got = wait_for_readings(&function, 120).await;
    assert_no_dead_letters(&gateway).await;
    // The link was down long enough to count: the gateway held attempts (not counted against
    // `retry`) while the centre refused connections.
    let metrics = common::metrics(&gateway).await;
    let held: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_delivery_count_total{") && l.contains(r#"outcome="held""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(held > 0.0, "no held attempt:\n{metrics}");
    // The backlog went in batches: the centre (since its restart) took more events than
    // requests.
    let centre_metrics = common::metrics(&centre).await;
    let total = |prefix: &str| -> f64 {
        centre_metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(r#"response_code="202""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (events, requests) = (
        total("switchyard_event_count_total{"),
        total("switchyard_ingress_latency_seconds_count{"),
    );
    assert!(
        events > requests,
        "{events} events in {requests} requests:\n{centre_metrics}"
    );
    // The centre's stop let its attempt in flight settle: nothing came twice.
    assert_in_order(&got, 40);
}

/// A TCP link from the gateway to the centre that can drop every packet, as an uplink does:
/// while it is down, what is sent on the connections already made goes nowhere (they are
/// kept open, unanswered) and a new connection is never made (the listener stops accepting
/// and its accept queue is kept full, so the kernel drops new SYNs and the gateway's connect
/// times out, where a stopped centre would refuse it).
struct Link {
    addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    /// Connections parked while the link is down, closed when it comes back.
    parked: std::sync::Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>>,
}

impl Link {
    /// A link to `to`, up.
    async fn start(to: String) -> Link {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = tokio::sync::watch::channel(true);
        let parked = std::sync::Arc::default();
        let link = Link { addr, up, parked };
        let parked = std::sync::Arc::clone(&link.parked);
        tokio::spawn(async move {
            let mut rx = up_rx.clone();
            let mut was_up = true;
            loop {
                // Nothing is accepted while the link is down.
                was_up &= *rx.borrow();
                if rx.wait_for(|up| *up).await.is_err() {
                    return;
                }
                if !was_up {
                    // What queued while the link was down never got through: closed unread.
                    while let Ok(Ok((stale, _))) =
                        tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
                    {
                        drop(stale);
                    }
                    was_up = true;
                }
                let conn = tokio::select! {
                    conn = listener.accept() => conn,
                    _ = rx.changed() => continue,
                };
                let Ok((inbound, _)) = conn else { continue };
                let (to, rx, parked) = (to.clone(), up_rx.clone(), std::sync::Arc::clone(&parked));
                tokio::spawn(relay(inbound, to, rx, parked));
            }
        });
        link
    }

    /// Drops every packet from now on.
    async fn drop_packets(&self) {
        self.up.send_replace(false);
        // Fill the accept queue with connections of our own (kept, not accepted): past it, the
        // kernel drops a new connection's SYN.
        for _ in 0..16 {
            let connect = tokio::net::TcpStream::connect(self.addr);
            match tokio::time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(filler)) => self.parked.lock().unwrap().push(filler),
                _ => return,
            }
        }
        panic!("the link's accept queue never filled");
    }

    /// Carries packets again.
    fn restore(&self) {
        self.parked.lock().unwrap().clear();
        self.up.send_replace(true);
    }
}

/// Copies bytes both ways between `inbound` and a connection to `to` until either closes or
/// the link drops; then parks both (open, unanswered).
async fn relay(
    mut inbound: tokio::net::TcpStream,
    to: String,
    mut up: tokio::sync::watch::Receiver<bool>,
    parked: std::sync::Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>>,
) {
    let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = up.wait_for(|up| !*up) => {
            let mut parked = parked.lock().unwrap();
            parked.push(inbound);
            parked.push(outbound);
        }
    }
}

/// The process's own memory (`RssAnon`, in bytes): what the broker allocates, apart from the
/// pages of its binary.
fn private_memory_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Store and forward over a link that drops packets (issue 24), with the gateway run in the
/// memory budget docs/edge.md gives: the uplink drops while sensors keep publishing; the
/// gateway's connections time out, it finds the centre down and holds the readings (not
/// counted against `retry`); the link comes back and the backlog drains at the trigger's
/// `rateLimit`; the centre's function gets every reading in publish order per device, once,
/// with the `id`, `source` and `time` the gateway stored; nothing is dead-lettered; the
/// gateway's own memory stayed within the budget throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_wait_while_the_uplink_drops_packets_and_drain_at_the_trigger_rate() {
    const RATE: f64 = 20.0;
    const MEMORY_BUDGET_BYTES: u64 = 64 << 20;
    let function = Sink::ok().await;
    let u = unique();
    let centre_addr = format!("127.0.0.1:{}", common::free_port());
    let _centre =
        Switchyard::start_with(&centre_config(&function.url), &["--listen", &centre_addr]);
    let link = Link::start(centre_addr.clone()).await;
    let gateway = Switchyard::start_full(
        &gateway_config(
            &u,
            &link.addr.to_string(),
            &format!("  rateLimit: {RATE}\n"),
            ", timeout: PT2S",
        ),
        &[
            "--cache-size-bytes",
            "16777216",
            "--queue-max-bytes",
            "8388608",
            "--max-store-bytes",
            "268435456",
        ],
        vec![("MIMALLOC_ARENA_EAGER_COMMIT".into(), "0".into())],
    );
    let pid = gateway.child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            while let Some(bytes) = private_memory_bytes(pid) {
                peak.fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut sensors = Sensors::connect(&u);
    sensors.until_delivered(&function).await;

    sensors.rounds(5).await;
    function
        .wait_for_where(15, WAIT, |r| reading(r).is_some())
        .await;
    // Nothing in flight when the link drops (an answer lost on the way would have the
    // gateway send that reading again, and the centre keep it twice).
    let status = gateway.url("/api/v1/namespaces/default/triggers/uplink");
    eventually("the gateway has nothing in flight", WAIT, || async {
        (common::get_json(&status).await["status"]["lag"] == 0).then_some(())
    })
    .await;
    link.drop_packets().await;
    sensors.rounds(20).await;
    // Connections that time out, not refusals, mark the centre down.
    let down = eventually("the gateway finds the centre down", WAIT, || async {
        let s = common::get_json(&status).await;
        (s["status"]["conditions"][0]["reason"] == "SubscriberDown").then_some(s)
    })
    .await;
    assert!(
        down["status"]["subscriberDown"]["since"].is_string(),
        "{down}"
    );
    sensors.rounds(10).await;
    let before = function.received().len();
    link.restore();

    let got = wait_for_readings(&function, 105).await;
    assert_in_order(&got, 35);
    // The backlog drained at the rate: its deliveries span at least (n − 1) / rate.
    let drained: Vec<_> = function.received()[before..]
        .iter()
        .filter(|r| reading(r).is_some())
        .map(|r| r.at)
        .collect();
    let span = drained.last().unwrap().duration_since(drained[0]);
    let least = Duration::from_secs_f64((drained.len() - 1) as f64 / RATE * 0.9);
    assert!(
        span >= least,
        "{} held readings drained in {span:?}, faster than {RATE}/s",
        drained.len()
    );
    // They arrive as the gateway stored them, so the centre can tell a redelivery.
    let stored = common::events_text(&gateway, "from=start&follow=false").await;
    let stored: std::collections::HashMap<String, serde_json::Value> = stored
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].take())
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v))
        .collect();
    for r in got.iter().filter(|r| reading(r).is_some()) {
        let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
        let original = &stored[header("ce-id").unwrap()];
        assert_eq!(
            header("ce-source"),
            original["source"].as_str(),
            "{original}"
        );
        assert_eq!(header("ce-time"), original["time"].as_str(), "{original}");
    }
    assert_no_dead_letters(&gateway).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak > 0, "the gateway's memory was read");
    assert!(
        peak < MEMORY_BUDGET_BYTES,
        "the gateway's own memory peaked at {} MiB",
        peak >> 20
    );
}
