//! The command line: bad configuration and bad settings end with a one-line message and a
//! non-zero exit, naming the file, the resource and the field.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

fn serve_with(config: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(common::bin())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_configs_are_refused_with_file_resource_and_field() {
    let cases = [
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\nspec: {delivery: {retries: 3}}\n",
            vec!["bad.yaml", "Broker default/b", "spec.delivery", "retries"],
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\nspec: {config: {kind: ConfigMap, name: x}}\n",
            vec!["Broker default/b", "spec.config", "not supported"],
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {broker: missing, subscriber: {uri: 'http://127.0.0.1:1/'}}\n",
            vec!["Trigger default/t", "spec.broker", "missing"],
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: Bad_Name}\n",
            vec!["metadata.name", "Bad_Name"],
        ),
        (
            "apiVersion: sources.knative.dev/v1\nkind: Flux\nmetadata: {name: f}\n",
            vec!["kind", "Flux", "not supported"],
        ),
        ("{ not yaml", vec!["bad.yaml", "invalid YAML"]),
    ];
    for (config, needles) in cases {
        let (ok, stderr) = serve_with(config, &[]);
        assert!(!ok, "accepted: {config}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("switchyard: "), "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{n:?} not in {stderr:?}");
        }
    }
}

#[test]
fn a_body_limit_below_64_kib_is_refused() {
    let (ok, stderr) = serve_with(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n",
        &["--max-body-bytes", "1000"],
    );
    assert!(!ok);
    assert!(stderr.contains("at least 65536"), "{stderr}");
}

#[test]
fn validate_lists_what_a_config_defines() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(examples)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Broker default/default"));
}

#[test]
fn events_refuses_a_bad_broker_name_and_a_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    for (broker, needle) in [("nonamespace", "namespace/name"), ("a/b", "no store")] {
        let out = Command::new(common::bin())
            .args(["events", "--broker", broker, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
}

const EXPLAIN_CONFIG: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: orders}
spec:
  broker: default
  filters:
    - exact: {source: /shop}
    - cesql: "type LIKE 'com.example.order.%' AND amount > 100"
  subscriber: {uri: "http://127.0.0.1:9/"}
"#;

fn explain(event: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), EXPLAIN_CONFIG).unwrap();
    std::fs::write(dir.path().join("e.json"), event).unwrap();
    let out = Command::new(common::bin())
        .args(["explain", "--trigger", "default/orders", "--config"])
        .arg(dir.path().join("c.yaml"))
        .arg("--event")
        .arg(dir.path().join("e.json"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn explain_says_which_part_of_a_filter_fails() {
    let (ok, out) = explain(
        r#"{"specversion":"1.0","id":"1","source":"/shop","type":"com.example.order.created","amount":250}"#,
    );
    assert!(ok, "{out}");
    assert!(
        out.starts_with("match: Trigger default/orders takes event 1"),
        "{out}"
    );

    let (ok, out) = explain(
        r#"{"specversion":"1.0","id":"2","source":"/other","type":"com.example.order.created","amount":50}"#,
    );
    assert!(ok, "{out}");
    assert!(out.starts_with("no match"), "{out}");
    assert!(
        out.contains("exact `source` = '/shop': it is '/other'"),
        "{out}"
    );
    assert!(out.contains("`amount > 100` is false"), "{out}");

    let (ok, out) = explain("not json");
    assert!(!ok);
    assert!(out.contains("is not a valid JSON event"), "{out}");
}

#[test]
fn a_cesql_filter_that_does_not_compile_is_refused_at_load_with_its_position() {
    let config = EXPLAIN_CONFIG.replace("amount > 100", "amount >> 100");
    let (ok, stderr) = serve_with(&config, &[]);
    assert!(!ok);
    assert!(stderr.contains("Trigger default/orders"), "{stderr}");
    assert!(stderr.contains("spec.filters[1].cesql"), "{stderr}");
    assert!(stderr.contains("column"), "{stderr}");
    let config = EXPLAIN_CONFIG.replace("amount > 100", "NOPE(amount)");
    let (ok, stderr) = serve_with(&config, &[]);
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("nope"), "{stderr}");
}
