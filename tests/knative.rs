//! Black-box tests of Knative compatibility (docs/knative-compatibility.md): refs resolved as
//! Knative resolves addressables — Kubernetes and Knative Services, a `uri` relative to its
//! `ref`, the AddressTable — with the real binary and real HTTP sinks in this process.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::sink::{Answer, Sink};
use common::{Switchyard, client};

const WAIT: Duration = Duration::from_secs(20);

/// Posts one event of type `ty` to the Broker `default/default`.
async fn send(sy: &Switchyard, id: &str, ty: &str) {
    let resp = common::binary(
        &client(),
        &sy.url("/default/default"),
        &[
            ("specversion", "1.0"),
            ("id", id),
            ("source", "/tests"),
            ("type", ty),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
}

/// `http://127.0.0.1:PORT/` of a sink, without the trailing slash.
fn base(sink: &Sink) -> &str {
    sink.url.trim_end_matches('/')
}

#[tokio::test]
async fn refs_to_services_reach_the_urls_an_address_table_gives_them() {
    let display = Sink::ok().await;
    let down = Sink::start(|_, _| Answer::status(500)).await;
    let dead = Sink::ok().await;
    // Manifests as Knative users write them: a Knative Service subscriber with a relative
    // uri, a Kubernetes Service subscriber, a Knative Service as dead-letter sink; the table
    // says where those Services are on this machine.
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: switchyard.dev/v1
kind: AddressTable
metadata: {{name: laptop}}
spec:
  addresses:
    - ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: event-display}}
      url: {display}/fn/
    - ref: {{apiVersion: v1, kind: Service, name: orders}}
      url: {down}
    - ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: dead-letters}}
      url: {dead}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: display}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.shown}}}}
  subscriber:
    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: event-display}}
    uri: hook?from=trigger
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.order}}}}
  subscriber:
    ref: {{apiVersion: v1, kind: Service, name: orders}}
  delivery:
    retry: 0
    deadLetterSink:
      ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: dead-letters}}
      uri: /dead
"#,
        display = base(&display),
        down = base(&down),
        dead = base(&dead),
    );
    let sy = Switchyard::start(&config);
    send(&sy, "s-1", "com.example.shown").await;
    send(&sy, "o-1", "com.example.order").await;

    let shown = display.wait_for(1, WAIT).await;
    assert_eq!(
        shown[0].path, "/fn/hook?from=trigger",
        "the uri resolved against the ref"
    );
    assert_eq!(shown[0].event.as_ref().unwrap().id, "s-1");
    down.wait_for(1, WAIT).await;
    let dead_lettered = dead.wait_for(1, WAIT).await;
    assert_eq!(dead_lettered[0].path, "/dead");
    assert_eq!(dead_lettered[0].event.as_ref().unwrap().id, "o-1");
}

/// Runs `switchyard validate` on `config`: (success, stdout, stderr).
fn validate(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BROKER_AND_TRIGGER_TO: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  broker: default
  subscriber:
"#;

#[test]
fn without_a_table_services_resolve_to_their_cluster_dns_names_and_other_kinds_are_refused() {
    let (ok, out, err) = validate(&format!(
        "{BROKER_AND_TRIGGER_TO}    ref: {{apiVersion: serving.knative.dev/v1, kind: Service, name: fn, namespace: apps}}\n    uri: /events\n"
    ));
    assert!(ok, "{err}");
    assert!(
        out.contains("Trigger default/t -> broker default, subscriber http://fn.apps.svc.cluster.local/events"),
        "{out}"
    );

    // A kind nothing resolves: one line that says what to add, and exit 1.
    let (ok, _, err) = validate(&format!(
        "{BROKER_AND_TRIGGER_TO}    ref: {{apiVersion: flows.knative.dev/v1, kind: Sequence, name: steps}}\n"
    ));
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("Trigger default/t: spec.subscriber.ref: nothing gives Sequence default/steps (flows.knative.dev/v1) an address")
            && err.contains("AddressTable"),
        "{err}"
    );

    // An absolute uri next to a ref is Knative's error too.
    let (ok, _, err) = validate(&format!(
        "{BROKER_AND_TRIGGER_TO}    ref: {{apiVersion: v1, kind: Service, name: fn}}\n    uri: http://elsewhere.example/\n"
    ));
    assert!(!ok);
    assert!(
        err.contains("spec.subscriber.uri: `http://elsewhere.example/` is absolute"),
        "{err}"
    );
}
