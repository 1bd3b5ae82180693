//! The alert rules and the dashboard of `deploy/monitoring/` (docs/observability.md): they are
//! what `switchyard monitoring` writes from the server's metric names, `promtool` takes them
//! and their unit tests pass, and every metric they name is in a live scrape of a server that
//! has done the things those metrics count.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::sink::{Answer, Sink};
use common::{Switchyard, client, nats_url};

const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn monitoring_dir() -> PathBuf {
    repo().join("deploy/monitoring")
}

fn generated(what: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["monitoring", what])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool`, or `None` with a line saying why the test is skipped.
fn promtool() -> Option<&'static str> {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => Some("promtool"),
        _ => {
            eprintln!("skipped: promtool is not installed (Debian's prometheus package has it)");
            None
        }
    }
}

fn promtool_ok(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    common::succeeded(&out, &format!("promtool {args:?}"));
}

/// Every PromQL expression of the dashboard.
fn dashboard_queries() -> Vec<String> {
    let d: serde_json::Value = serde_json::from_str(&generated("dashboard")).unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// The metric names in `text`: `switchyard_…` words.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchyard_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        names.insert(word);
    }
    names
}

#[test]
fn the_checked_in_rules_and_dashboard_are_what_the_binary_writes() {
    for (what, file) in [
        ("alerts", "switchyard-alerts.yaml"),
        ("dashboard", "switchyard-dashboard.json"),
    ] {
        let kept = std::fs::read_to_string(monitoring_dir().join(file)).unwrap();
        assert!(
            kept == generated(what),
            "deploy/monitoring/{file} is not what the code writes: run \
             `cargo run -q -- monitoring {what} > deploy/monitoring/{file}`"
        );
    }
}

#[test]
fn promtool_takes_the_rules_and_the_dashboards_queries_and_the_rule_tests_pass() {
    let Some(_) = promtool() else { return };
    let dir = monitoring_dir();
    promtool_ok(&["check", "rules", "switchyard-alerts.yaml"], &dir);
    promtool_ok(&["test", "rules", "switchyard-alerts.test.yaml"], &dir);
    // The dashboard's queries, as recording rules, so that promtool parses each.
    let tmp = tempfile::tempdir().unwrap();
    let rules: Vec<serde_json::Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(
            |(i, expr)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}),
        )
        .collect();
    assert!(rules.len() > 15, "{rules:?}");
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(tmp.path().join("queries.yaml"), file.to_string()).unwrap();
    promtool_ok(&["check", "rules", "queries.yaml"], tmp.path());
}

/// A server that has accepted, refused, delivered, retried, dead-lettered, dropped a reply
/// and taken events from a source exports every metric the dashboard and the alerts name.
#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_name_is_in_a_live_scrape() {
    // The first attempt fails and is retried; the reply comes back to a trigger that replies.
    let flaky = Sink::start(|i, _| Answer::status(if i == 0 { 503 } else { 200 })).await;
    let refusing = Sink::start(|_, _| Answer::status(400)).await;
    let echo = Sink::start(|i, _| Answer::reply("echo", &format!("reply-{i}"))).await;
    let u = std::process::id();
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: flaky}}
spec:
  broker: default
  filter: {{attributes: {{type: t}}}}
  subscriber: {{uri: '{flaky}'}}
  delivery: {{retry: 3, backoffDelay: PT0.2S, jitter: 0}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: refusing}}
spec:
  broker: default
  filter: {{attributes: {{type: bad}}}}
  subscriber: {{uri: '{refusing}'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: echo}}
spec:
  broker: default
  filter: {{attributes: {{type: echo}}}}
  subscriber: {{uri: '{echo}'}}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: sensors}}
spec:
  servers: ['{nats}']
  subject: 'monitoring{u}.>'
  type: t
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        flaky = flaky.url,
        refusing = refusing.url,
        echo = echo.url,
        nats = nats_url(),
    );
    let sy = Switchyard::start(&config);
    let send = |id: &'static str, ty: &'static str, ttl: Option<&'static str>| {
        let mut req = client()
            .post(sy.url("/default/default"))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/tests")
            .header("ce-type", ty);
        if let Some(ttl) = ttl {
            req = req.header("ce-knativebrokerttl", ttl);
        }
        async move {
            let resp = req.body("{}").send().await.unwrap();
            assert_eq!(resp.status(), 202);
        }
    };
    send("retried", "t", None).await;
    send("refused", "bad", None).await;
    // TTL 1: the reply to it has none left and is dropped.
    send("looping", "echo", Some("1")).await;
    let unknown = client()
        .post(sy.url("/default/nowhere"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "x")
        .header("ce-source", "/tests")
        .header("ce-type", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // The source: core NATS drops what is published before the subscription, so publish
    // until one event is stored; then a message it cannot store (TTL 0).
    let nats = async_nats::connect(nats_url()).await.unwrap();
    common::eventually("the NATS source to store an event", WAIT, || {
        let nats = nats.clone();
        let flaky = &flaky;
        async move {
            nats.publish(format!("monitoring{u}.probe"), "1".into())
                .await
                .unwrap();
            nats.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            (flaky.received().len() > 2).then_some(())
        }
    })
    .await;
    let mut exhausted = async_nats::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "ttl-0"),
        ("ce-source", "/loop"),
        ("ce-type", "t"),
        ("ce-knativebrokerttl", "0"),
    ] {
        exhausted.insert(k, v);
    }
    nats.publish_with_headers(format!("monitoring{u}.bad"), exhausted, "".into())
        .await
        .unwrap();
    nats.flush().await.unwrap();

    let mut wanted = metric_names(&generated("alerts"));
    wanted.extend(dashboard_queries().iter().flat_map(|q| metric_names(q)));
    // The gauges sampled every 5 s, and the counters of what was done above.
    let scrape = common::eventually("every named metric in the scrape", WAIT, || async {
        let text = common::metrics(&sy).await;
        let have = metric_names(&text);
        let missing: Vec<&String> = wanted.iter().filter(|w| !have.contains(*w)).collect();
        if missing.is_empty() {
            Some(text)
        } else {
            eprintln!("not yet in the scrape: {missing:?}");
            None
        }
    })
    .await;
    if promtool().is_some() {
        // Prometheus's own lint of the exposition.
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The documents of a YAML file.
fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect()
}

/// The KEDA recipes of `deploy/keda/` ask the server for what it serves: the metrics-api
/// scaler's URL answers JSON with a number at its `valueLocation` (the trigger's lag, which
/// counts an event held for a subscriber scaled to zero), and the Prometheus scaler's query
/// names a series the server exports, with the trigger's labels.
#[tokio::test]
async fn the_keda_recipes_read_what_the_server_serves() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sy = Switchyard::start(&format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\n\
         apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: resize}}\n\
         spec: {{broker: default, subscriber: {{uri: 'http://{unused}/'}}}}\n"
    ));
    let resp = client()
        .post(sy.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "img-1")
        .header("ce-source", "/uploads")
        .header("ce-type", "com.example.image.uploaded")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let keda = repo().join("deploy/keda");
    let (mut metrics_api, mut prometheus) = (0, 0);
    for file in std::fs::read_dir(&keda).unwrap() {
        let path = file.unwrap().path();
        for doc in yaml_documents(&path) {
            if doc["kind"] != "ScaledObject" {
                continue;
            }
            assert_eq!(doc["apiVersion"], "keda.sh/v1alpha1", "{path:?}");
            assert_eq!(doc["spec"]["minReplicaCount"], 0, "scale to zero: {path:?}");
            for trigger in doc["spec"]["triggers"].as_array().unwrap() {
                let meta = &trigger["metadata"];
                match trigger["type"].as_str().unwrap() {
                    "metrics-api" => {
                        metrics_api += 1;
                        let url = meta["url"].as_str().unwrap();
                        let path_at = url.find("/api/").unwrap();
                        let location = meta["valueLocation"].as_str().unwrap();
                        common::eventually("the lag KEDA reads", WAIT, || async {
                            let answer = common::get_json(&sy.url(&url[path_at..])).await;
                            (answer[location] == 1).then_some(())
                        })
                        .await;
                    }
                    "prometheus" => {
                        prometheus += 1;
                        let query = meta["query"].as_str().unwrap();
                        let names = metric_names(query);
                        assert!(!names.is_empty(), "{query}");
                        common::eventually("the series KEDA queries", WAIT, || async {
                            let text = common::metrics(&sy).await;
                            let found = names.iter().all(|n| {
                                text.lines().any(|l| {
                                    l.starts_with(&format!("{n}{{"))
                                        && l.contains("trigger_name=\"resize\"")
                                        && l.ends_with(" 1")
                                })
                            });
                            found.then_some(())
                        })
                        .await;
                    }
                    other => panic!("a recipe with a {other} scaler in {path:?}"),
                }
            }
        }
    }
    assert_eq!((metrics_api, prometheus), (1, 1));
}
