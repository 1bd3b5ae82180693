//! The operator's desk from the command line (spec/management-api.md, "Resources"): resources
//! with status (`switchyard get`, `describe`), and a trigger paused and resumed — the pause
//! holds routed events across a restart, nothing is attempted meanwhile, and resume delivers
//! them in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::sink::{Answer, Sink};
use common::{Switchyard, bin, client, eventually, get_json};

const WAIT: Duration = Duration::from_secs(20);

async fn send(sy: &Switchyard, id: &str) -> u16 {
    client()
        .post(sy.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests/operate")
        .header("ce-type", "order")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Runs `switchyard ARGS --server …` and returns its standard output; it must succeed.
fn cli(sy: &Switchyard, args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .args(["--server", &sy.base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchyard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn trigger(sy: &Switchyard, name: &str) -> serde_json::Value {
    get_json(&sy.url(&format!("/api/v1/namespaces/default/triggers/{name}"))).await
}

fn ready(t: &serde_json::Value) -> (String, String) {
    let c = t["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_trigger_holds_its_events_across_a_restart_and_resume_delivers_them_in_order() {
    let sink = Sink::ok().await;
    let config = format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  ordering: ordered
  subscriber: {{uri: '{}'}}
",
        sink.url
    );
    let mut sy = Switchyard::start(&config);
    for i in 0..3 {
        assert_eq!(send(&sy, &format!("before{i}")).await, 202);
    }
    sink.wait_for(3, WAIT).await;

    let said = cli(&sy, &["pause", "orders"]);
    assert!(said.starts_with("trigger default/orders paused"), "{said}");
    for i in 0..5 {
        assert_eq!(send(&sy, &format!("held{i}")).await, 202);
    }
    sink.assert_stays_at(3, Duration::from_secs(1)).await;
    let t = trigger(&sy, "orders").await;
    assert_eq!(t["status"]["paused"], true);
    assert_eq!(t["status"]["lag"], 5);
    assert_eq!(ready(&t), ("False".into(), "Paused".into()));
    let table = cli(&sy, &["get", "triggers"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("orders") && l.contains("Paused")),
        "{table}"
    );

    // The pause is stored: a restart keeps it.
    sy.stop();
    sy.restart();
    sink.assert_stays_at(3, Duration::from_secs(1)).await;
    assert_eq!(trigger(&sy, "orders").await["status"]["paused"], true);

    let said = cli(&sy, &["resume", "orders"]);
    assert_eq!(said, "trigger default/orders running\n");
    sink.wait_for(8, WAIT).await;
    let ids = sink.ids();
    assert_eq!(
        &ids[3..],
        &["held0", "held1", "held2", "held3", "held4"],
        "what waited, in order"
    );
    let t = trigger(&sy, "orders").await;
    assert_eq!(t["status"]["paused"], false);
    assert_eq!(ready(&t), ("True".into(), String::new()));

    // Both are in the audit log.
    let audit = get_json(&sy.url("/api/v1/namespaces/default/audit")).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"pause") && actions.contains(&"resume"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_a_trigger_fails_and_describe_shows_its_dead_letters() {
    let failing = Sink::start(|_, _| Answer::status(503).body("down for maintenance")).await;
    let ok = Sink::ok().await;
    let config = format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: failing}}
spec:
  broker: default
  subscriber: {{uri: '{}'}}
  delivery: {{retry: 1, backoffDelay: PT0.1S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: healthy}}
spec:
  broker: default
  subscriber: {{uri: '{}'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orphan}}
spec:
  broker: elsewhere
  subscriber: {{uri: '{}'}}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {{name: order}}
spec: {{type: order, description: an order was placed}}
---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {{name: hooks}}
spec:
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
",
        failing.url, ok.url, ok.url
    );
    let sy = Switchyard::start(&config);
    for i in 0..2 {
        assert_eq!(send(&sy, &format!("e{i}")).await, 202);
    }
    ok.wait_for(2, WAIT).await;
    let t = eventually("two dead letters", WAIT, || async {
        let t = trigger(&sy, "failing").await;
        (t["status"]["deadLetters"] == 2).then_some(t)
    })
    .await;
    assert_eq!(ready(&t), ("False".into(), "SubscriberFailing".into()));
    let d = &t["status"]["deliveries"];
    assert_eq!(
        (d["attempts"].as_u64(), d["delivered"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(d["lastError"]["status"], 503);
    assert_eq!(t["status"]["subscriberUri"], failing.url.as_str());

    let healthy = trigger(&sy, "healthy").await;
    assert_eq!(ready(&healthy), ("True".into(), String::new()));
    assert_eq!(healthy["status"]["deliveries"]["delivered"], 2);
    assert_eq!(healthy["status"]["lag"], 0);
    let orphan = trigger(&sy, "orphan").await;
    assert_eq!(
        ready(&orphan),
        ("False".into(), "BrokerDoesNotExist".into())
    );

    let table = cli(&sy, &["get", "triggers", "-o", "wide"]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {table}"))
            .to_owned()
    };
    assert!(row("failing").contains("SubscriberFailing"), "{table}");
    assert!(row("failing").contains("503"), "{table}");
    assert!(row("healthy").contains("100.0%"), "{table}");
    assert!(row("orphan").contains("BrokerDoesNotExist"), "{table}");

    let described = cli(&sy, &["describe", "trigger", "failing"]);
    assert!(described.contains("Recent dead letters"), "{described}");
    let attempts: Vec<&str> = described
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(
        attempts.len(),
        4,
        "two dead letters, two attempts each: {described}"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.contains("503") && a.contains("down for maintenance")),
        "{described}"
    );

    let brokers = get_json(&sy.url("/api/v1/namespaces/default/brokers/default")).await;
    assert_eq!(brokers["status"]["stored"]["events"], 2);
    assert_eq!(brokers["status"]["deadLetters"], 2);
    assert_eq!(brokers["status"]["triggers"], 2);
    let hooked = client()
        .post(sy.url("/sources/default/hooks"))
        .header("content-type", "application/json")
        .body(r#"{"hello":"hook"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(hooked.status(), 202);
    let source = get_json(&sy.url("/api/v1/namespaces/default/sources/hooks")).await;
    assert_eq!(source["status"]["events"]["stored"], 1, "{source}");
    assert!(
        source["status"]["events"]["lastStored"].is_string(),
        "{source}"
    );
    let sources = cli(&sy, &["get", "sources"]);
    assert!(
        sources
            .lines()
            .any(|l| l.starts_with("hooks") && l.contains("WebhookSource") && l.contains("True")),
        "{sources}"
    );
    let yaml = cli(&sy, &["get", "broker", "default", "-o", "yaml"]);
    assert!(
        yaml.starts_with("apiVersion: eventing.knative.dev/v1\nkind: Broker\n"),
        "{yaml}"
    );

    let et = cli(&sy, &["get", "eventtypes", "order", "-o", "json"]);
    let et: serde_json::Value = serde_json::from_str(&et).unwrap();
    assert_eq!(
        (et["name"].as_str(), et["type"].as_str()),
        (Some("order"), Some("order"))
    );

    // An unknown one is a 404 and a one-line error.
    let out = Command::new(bin())
        .args(["describe", "trigger", "nope", "--server", &sy.base])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no Trigger default/nope"), "{err}");
}

/// Sends ten events, `e0` to `e9` (offsets 0 to 9), of type `order` when even, `other` when
/// odd.
async fn ten(sy: &Switchyard) {
    for i in 0..10 {
        let ty = if i % 2 == 0 { "order" } else { "other" };
        let status = client()
            .post(sy.url("/default/default"))
            .header("ce-specversion", "1.0")
            .header("ce-id", format!("e{i}"))
            .header("ce-source", "/tests/operate")
            .header("ce-type", ty)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 202);
    }
}

/// Runs `switchyard ARGS --server …`: (exit success, stdout, stderr).
fn cli_full(sy: &Switchyard, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .args(["--server", &sy.base])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_delivers_exactly_the_selected_range_to_one_trigger() {
    let orders = Sink::ok().await;
    let audit = Sink::ok().await;
    let config = format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  filter: {{attributes: {{type: order}}}}
  subscriber: {{uri: '{}'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: audit}}
spec:
  broker: default
  subscriber: {{uri: '{}'}}
",
        orders.url, audit.url
    );
    let sy = Switchyard::start(&config);
    ten(&sy).await;
    orders.wait_for(5, WAIT).await;
    audit.wait_for(10, WAIT).await;

    // The preview: offsets 2 to 8 hold e2…e7, of which the trigger's filter takes e2, e4, e6;
    // a CESQL filter narrows it further.
    let said = cli(
        &sy,
        &[
            "replay",
            "start",
            "orders",
            "--from",
            "2",
            "--to",
            "8",
            "--dry-run",
        ],
    );
    assert_eq!(
        said,
        "3 events to replay to trigger default/orders (offsets 2 to 8, 6 read)\n"
    );
    let args = [
        "replay",
        "start",
        "orders",
        "--from",
        "2",
        "--to",
        "8",
        "--filter",
        "id <> 'e4'",
        "--rate",
        "50",
    ];
    let (ok, out, err) = cli_full(&sy, &args);
    assert!(ok, "{err}");
    assert!(err.starts_with("2 events to replay"), "{err}");
    assert!(err.contains(", done"), "the progress ends: {err}");
    let (_, job) = out.trim_end().split_once("replay ").unwrap();
    let id = job.split_once(' ').unwrap().0.to_owned();
    assert!(
        out.ends_with("done: 2 events handed to the trigger\n"),
        "{out}"
    );

    let got = orders.wait_for(7, WAIT).await;
    orders.assert_stays_at(7, Duration::from_millis(500)).await;
    audit.assert_stays_at(10, Duration::from_millis(500)).await;
    let replayed: Vec<(String, String)> = got[5..]
        .iter()
        .map(|r| {
            let e = r.event.as_ref().unwrap();
            let ext = r.headers["ce-switchyardreplay"]
                .to_str()
                .unwrap()
                .to_owned();
            (e.id.clone(), ext)
        })
        .collect();
    assert_eq!(
        replayed,
        [("e2".to_owned(), id.clone()), ("e6".to_owned(), id.clone())],
        "exactly the selection, to this trigger alone, marked as replayed"
    );

    // Nothing in the range: said, and nothing started.
    let said = cli(
        &sy,
        &[
            "replay",
            "start",
            "orders",
            "--from-time",
            "2999-01-01T00:00:00Z",
        ],
    );
    assert!(said.starts_with("0 events to replay"), "{said}");

    // A slow job is cancelled half-way: it stops, and says so.
    let said = cli(
        &sy,
        &[
            "replay", "start", "audit", "--from", "0", "--rate", "2", "--detach",
        ],
    );
    let slow = said
        .strip_prefix("replay ")
        .and_then(|s| s.strip_suffix(" started\n"))
        .unwrap()
        .to_owned();
    audit.wait_for(11, WAIT).await;
    assert_eq!(
        cli(&sy, &["replay", "cancel", &slow]),
        format!("replay {slow}: cancelling\n")
    );
    let job = eventually("the job cancelled", WAIT, || async {
        let j = get_json(&sy.url(&format!("/api/v1/namespaces/default/replays/{slow}"))).await;
        (j["state"] == "cancelled").then_some(j)
    })
    .await;
    let sent = job["sent"].as_u64().unwrap();
    assert!((1..10).contains(&sent), "{job}");
    audit
        .assert_stays_at(10 + sent as usize, Duration::from_secs(1))
        .await;
    let list = cli(&sy, &["replay", "list"]);
    assert!(
        list.contains(&id) && list.contains(&slow) && list.contains("cancelled"),
        "{list}"
    );

    // A replay must say where it starts.
    let (ok, _, err) = cli_full(&sy, &["replay", "start", "orders"]);
    assert!(!ok && err.contains("--from"), "{err}");
    let refused = client()
        .post(sy.url("/api/v1/namespaces/default/triggers/orders/replays"))
        .json(&serde_json::json!({"toOffset": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // Its body is read as ingress reads one (spec/limits.md): past 2 MiB, a 413 problem.
    let filter = format!("type = '{}'", "x".repeat(3 << 20));
    let refused = client()
        .post(sy.url("/api/v1/namespaces/default/triggers/orders/replays"))
        .json(&serde_json::json!({"fromOffset": 0, "filter": filter}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    common::problem(refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redrive_and_purge_show_their_progress() {
    let (sink, good) = Sink::switchable(Answer::status(500)).await;
    let sy = Switchyard::start(&format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  subscriber: {{uri: '{}'}}
  delivery: {{retry: 0}}
",
        sink.url
    ));
    for i in 0..30 {
        assert_eq!(send(&sy, &format!("d{i}")).await, 202);
    }
    eventually("30 dead letters", WAIT, || async {
        let t = trigger(&sy, "orders").await;
        (t["status"]["deadLetters"] == 30).then_some(())
    })
    .await;

    // A caller that asks for the progress as JSON lines still gets a refusal as a 4xx, and
    // a plain answer when there is nothing to do.
    let redrive = sy.url("/api/v1/namespaces/default/brokers/default/deadletters/redrive");
    let ask = |body: serde_json::Value| {
        client()
            .post(&redrive)
            .header("accept", "application/x-ndjson")
            .json(&body)
            .send()
    };
    let refused = ask(serde_json::json!({"ids": ["12345"]})).await.unwrap();
    assert_eq!(refused.status(), 404);
    let nothing = ask(serde_json::json!({"filter": {"source": "/nowhere"}}))
        .await
        .unwrap();
    assert_eq!(nothing.text().await.unwrap(), r#"{"redriven":0}"#);

    good.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, out, err) = cli_full(&sy, &["dlq", "redrive", "--all"]);
    assert!(ok, "{err}");
    assert_eq!(out, "redriven: 30\n");
    assert_eq!(err.lines().last(), Some("redriving: 30, done"), "{err}");
    // Every redriven one delivered (and answered) before the subscriber fails again.
    eventually("the redriven ones delivered", WAIT, || async {
        let s = trigger(&sy, "orders").await["status"].clone();
        (s["deliveries"]["delivered"] == 30 && s["lag"] == 0 && s["deadLetters"] == 0).then_some(())
    })
    .await;

    // Purge: 10 more dead letters, then all of them.
    good.store(false, std::sync::atomic::Ordering::SeqCst);
    for i in 0..10 {
        assert_eq!(send(&sy, &format!("p{i}")).await, 202);
    }
    eventually("10 dead letters", WAIT, || async {
        let t = trigger(&sy, "orders").await;
        (t["status"]["deadLetters"] == 10).then_some(())
    })
    .await;
    let (ok, out, err) = cli_full(&sy, &["dlq", "purge", "--all"]);
    assert!(ok, "{err}");
    assert_eq!(out, "purged: 10\n");
    assert_eq!(err.lines().last(), Some("purging: 10, done"), "{err}");
}
