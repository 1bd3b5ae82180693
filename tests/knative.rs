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
        "{BROKER_AND_TRIGGER_TO}    ref: {{apiVersion: batch.example.com/v1, kind: JobDefinition, name: steps}}\n"
    ));
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("Trigger default/t: spec.subscriber.ref: nothing gives JobDefinition default/steps (batch.example.com/v1) an address")
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

/// The corpus of published manifests (tests/knative/ORIGINS.md says where each is from):
/// (file name, whether Knative accepts it).
fn corpus() -> Vec<(String, bool)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/knative");
    let origins = std::fs::read_to_string(root.join("ORIGINS.md")).unwrap();
    let mut out = Vec::new();
    for line in origins.lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(file) = cells
            .first()
            .and_then(|c| c.strip_prefix("| `"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let valid = cells.last().is_some_and(|c| c.starts_with("yes"));
        out.push((file.to_owned(), valid));
    }
    out
}

/// The manifest files named in docs/knative-compatibility.md's corpus section.
fn listed_in_the_compatibility_doc() -> std::collections::BTreeSet<String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/knative-compatibility.md"),
    )
    .unwrap();
    let section = doc
        .split("<!-- corpus: refused -->")
        .nth(1)
        .and_then(|s| s.split("<!-- /corpus -->").next())
        .unwrap_or_default();
    section
        .split('`')
        .filter(|w| w.ends_with(".yaml") && w.len() > 4 && w.as_bytes()[0].is_ascii_digit())
        .map(str::to_owned)
        .collect()
}

/// A refusal's reason without the file, resource and names: what groups refusals.
fn reason(stderr: &str) -> String {
    let line = stderr.lines().next().unwrap_or_default();
    let line = line.strip_prefix("switchyard: ").unwrap_or(line);
    // FILE: Kind ns/name: field: message → field: message
    let parts: Vec<&str> = line.splitn(3, ": ").collect();
    let rest = parts.get(2).copied().unwrap_or(line);
    let mut out = String::new();
    for (i, piece) in rest.split('`').enumerate() {
        out.push_str(if i % 2 == 1 { "…" } else { piece });
    }
    out.chars().take(110).collect()
}

#[test]
fn published_knative_manifests_load_or_are_refused_for_a_listed_reason() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/knative/manifests");
    let corpus = corpus();
    assert!(
        corpus.len() >= 50,
        "the corpus lost its files: {}",
        corpus.len()
    );
    let (mut clean, mut with_notes, mut refused_valid, mut loaded_invalid) =
        (0, 0, Vec::new(), Vec::new());
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    // Documents across the corpus: (loaded, of them ignoring fields, skipped, refused).
    let mut docs = [0usize; 4];
    for (file, valid) in &corpus {
        let out = Command::new(common::bin())
            .args(["validate", "--config"])
            .arg(dir.join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(line) = stdout.lines().rev().find(|l| l.contains(" loaded (")) {
            let numbers: Vec<usize> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [_, loaded, ignoring, skipped, refused] = numbers[..] {
                for (total, n) in docs.iter_mut().zip([loaded, ignoring, skipped, refused]) {
                    *total += n;
                }
            }
        }
        if out.status.success() {
            if !valid {
                loaded_invalid.push(file.clone());
            } else if stdout.contains(": ignored: ") || stdout.contains("not ready: ") {
                with_notes += 1;
            } else {
                clean += 1;
            }
        } else {
            *reasons.entry(reason(&stderr)).or_default() += 1;
            if *valid {
                refused_valid.push(file.clone());
            }
        }
    }
    let valid = corpus.iter().filter(|(_, v)| *v).count();
    let mut summary = format!(
        "knative corpus: {} published manifests, {valid} valid for Knative: {clean} load, {with_notes} load with ignored fields or not ready, {} refused; {} that Knative refuses load\n",
        corpus.len(),
        refused_valid.len(),
        loaded_invalid.len()
    );
    summary.push_str(&format!(
        "  documents: {} loaded ({} of them ignoring fields), {} skipped (Kubernetes and Knative Serving resources), {} refused\n",
        docs[0], docs[1], docs[2], docs[3]
    ));
    for (r, n) in &reasons {
        summary.push_str(&format!("  {n:>3} refused: {r}\n"));
    }
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("knative-corpus.txt"), &summary);

    // Every valid manifest that does not load is listed, with its reason, in
    // docs/knative-compatibility.md; and nothing listed there loads now.
    let listed = listed_in_the_compatibility_doc();
    let refused: std::collections::BTreeSet<String> = refused_valid.iter().cloned().collect();
    let unlisted: Vec<_> = refused.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&refused).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "docs/knative-compatibility.md is out of step: refused but not listed {unlisted:?}, listed but not refused {stale:?}\n{summary}"
    );
}

#[tokio::test]
async fn a_trigger_whose_broker_is_missing_loads_not_ready_and_the_rest_runs() {
    let sink = Sink::ok().await;
    let config = format!(
        "{BROKER_AND_TRIGGER_TO}    uri: {url}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: early}}\nspec:\n  broker: later\n  subscriber: {{uri: {url}}}\n",
        url = sink.url
    );
    let (ok, out, err) = validate(&config);
    assert!(ok, "{err}");
    assert!(
        out.contains("not ready: ")
            && out.contains("Trigger default/early: spec.broker: no Broker `later`"),
        "{out}"
    );
    assert!(
        out.contains("3 resources loaded, 0 ignored, 1 not ready"),
        "{out}"
    );
    // `serve` starts, and the Trigger on the Broker that exists delivers.
    let sy = Switchyard::start(&config);
    send(&sy, "e-1", "com.example.any").await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "e-1");
}

#[test]
fn strict_validation_refuses_what_would_be_ignored() {
    let config = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\nspec:\n  config: {apiVersion: v1, kind: ConfigMap, name: config-br-defaults}\n";
    let (ok, out, _) = validate(config);
    assert!(ok);
    assert!(
        out.contains("Broker default/default: spec.config: ignored: "),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), config).unwrap();
    let out = Command::new(common::bin())
        .args(["validate", "--strict", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.config: ignored: ") && err.contains("--strict"),
        "{err}"
    );
}

const SIGNED_WEBHOOK: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {name: github}
spec:
  sink: {ref: {kind: Broker, name: default}}
  auth:
    hmac:
      secret: {secretKeyRef: {name: github-webhook, key: secret}}
"#;

/// GitHub's `X-Hub-Signature-256` of `body` with `secret`.
fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test]
async fn secret_key_refs_are_read_from_the_secrets_directory_as_kubernetes_mounts_them() {
    // A Secret `github-webhook` with a key `secret`, as a Secret volume mounted at
    // {dir}/github-webhook lays it out.
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir(secrets.path().join("github-webhook")).unwrap();
    std::fs::write(secrets.path().join("github-webhook/secret"), "s3cr3t").unwrap();
    let dir = secrets.path().to_str().unwrap();
    let sy = Switchyard::start_with_env(SIGNED_WEBHOOK, &[("SWITCHYARD_SECRETS_DIR", dir)]);
    let body = br#"{"repository":{"full_name":"octo/repo"}}"#;
    let post = |sig: String| {
        client()
            .post(sy.url("/sources/default/github"))
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(body.to_vec())
            .send()
    };
    assert_eq!(post(signature("s3cr3t", body)).await.unwrap().status(), 202);
    assert_eq!(post(signature("wrong", body)).await.unwrap().status(), 401);

    // A key that is not there stops serve with one line that names the file.
    let empty = tempfile::tempdir().unwrap();
    let err = common::serve_refusal(
        SIGNED_WEBHOOK,
        &[("SWITCHYARD_SECRETS_DIR", empty.path().to_str().unwrap())],
    );
    assert!(
        err.contains("WebhookSource default/github")
            && err.contains("key `secret` of Secret `github-webhook`")
            && err.contains(&format!("{}/github-webhook/secret", empty.path().display())),
        "{err}"
    );
}

/// A sink that replies with an event of type `ty` whose id is the received id plus `suffix`.
async fn replying(ty: &'static str, suffix: &'static str) -> Sink {
    Sink::start(move |_, e| Answer::reply(ty, &format!("{}{suffix}", e.id))).await
}

/// A Broker `default` with a Trigger `in` taking `com.example.start` to `flow` (a ref) and a
/// Trigger `out` taking the types with `prefix` to `out`; then `rest`.
fn flow_config(flow: &str, prefix: &str, out: &Sink, rest: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: in}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.start}}}}
  subscriber: {{ref: {flow}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: out}}
spec:
  broker: default
  filters: [{{prefix: {{type: "{prefix}"}}}}]
  subscriber: {{uri: {out}}}
---
{rest}"#,
        out = out.url
    )
}

/// [`flow_config`] with a Sequence `steps` of two steps, `one` and `two` (with `two_extra`
/// under the second step, `spec_extra` in its spec), replying into the Broker `default`,
/// whose Trigger `out` takes `com.example.two` to `out`.
fn sequence_config(
    one: &Sink,
    two: &Sink,
    two_extra: &str,
    spec_extra: &str,
    out: &Sink,
) -> String {
    let sequence = format!(
        "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {{name: steps}}\nspec:\n{spec_extra}  steps:\n    - uri: {}\n    - uri: {}\n{two_extra}  reply: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}\n",
        one.url, two.url
    );
    flow_config(
        "{apiVersion: flows.knative.dev/v1, kind: Sequence, name: steps}",
        "com.example.two",
        out,
        &sequence,
    )
}

#[tokio::test]
async fn a_sequence_passes_each_steps_reply_to_the_next_and_the_last_to_its_reply() {
    let one = replying("com.example.one", ".1").await;
    let two = replying("com.example.two", ".2").await;
    let out = Sink::ok().await;
    // As Knative's docs publish it, channelTemplate included (ignored here).
    let config = sequence_config(
        &one,
        &two,
        "",
        "  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel}\n",
        &out,
    );
    let sy = Switchyard::start(&config);
    send(&sy, "a", "com.example.start").await;
    let got = out.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().unwrap();
    assert_eq!((e.ty.as_str(), e.id.as_str()), ("com.example.two", "a.1.2"));
    assert_eq!(one.received()[0].event.as_ref().unwrap().id, "a");
    assert_eq!(
        two.received()[0].event.as_ref().unwrap().ty,
        "com.example.one"
    );
}

/// `switchyard dlq …` against `sy`, for the Broker `broker`: stdout.
fn dlq(sy: &Switchyard, broker: &str, args: &[&str]) -> String {
    let out = Command::new(common::bin())
        .arg("dlq")
        .args(args)
        .args(["--server", &sy.url(""), "--broker", broker])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_failed_sequence_step_is_dead_lettered_and_redriven_like_any_delivery() {
    let one = replying("com.example.one", ".1").await;
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = std::sync::Arc::clone(&healthy);
    let two = Sink::start(move |_, e| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            Answer::reply("com.example.two", &format!("{}.2", e.id))
        } else {
            Answer::status(500)
        }
    })
    .await;
    let out = Sink::ok().await;
    let config = sequence_config(
        &one,
        &two,
        "      delivery: {retry: 1, backoffDelay: PT0.1S}\n",
        "",
        &out,
    );
    let sy = Switchyard::start(&config);
    send(&sy, "b", "com.example.start").await;
    two.wait_for(2, WAIT).await;
    // The second step's Broker holds the dead letter, as a Trigger's would.
    let step = "default/steps-kn-sequence-1";
    let deadline = std::time::Instant::now() + WAIT;
    while !dlq(&sy, step, &["list", "--output", "json"]).contains("\"attempts\": 2") {
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letter at {step}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(dlq(&sy, step, &["redrive", "--all"]).contains("redriven: 1"));
    let got = out.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "b.1.2");
}

#[tokio::test]
async fn a_parallel_sends_each_event_through_every_branchs_filter_to_its_subscriber() {
    // Branch 0's filter passes everything (replies with the event); branch 1's drops it.
    let pass = Sink::start(|_, e| Answer::reply(&e.ty, &e.id)).await;
    let drop = Sink::ok().await;
    let a = replying("com.example.branch.a", ".a").await;
    let b = replying("com.example.branch.b", ".b").await;
    let out = Sink::ok().await;
    let parallel = format!(
        r#"apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {{name: fan}}
spec:
  branches:
    - filter: {{uri: {pass}}}
      subscriber: {{uri: {a}}}
    - filter: {{uri: {drop}}}
      subscriber: {{uri: {b}}}
  reply: {{ref: {{kind: Broker, name: default}}}}
"#,
        pass = pass.url,
        drop = drop.url,
        a = a.url,
        b = b.url
    );
    let config = flow_config(
        "{apiVersion: flows.knative.dev/v1, kind: Parallel, name: fan}",
        "com.example.branch.",
        &out,
        &parallel,
    );
    let sy = Switchyard::start(&config);
    send(&sy, "c", "com.example.start").await;
    let got = out.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().unwrap();
    assert_eq!(
        (e.ty.as_str(), e.id.as_str()),
        ("com.example.branch.a", "c.a")
    );
    drop.wait_for(1, WAIT).await;
    assert!(
        b.received().is_empty(),
        "branch 1's filter dropped the event"
    );
}

#[test]
fn validate_reports_every_document_and_goes_on_past_a_refused_one() {
    let config = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
spec: {config: {apiVersion: v1, kind: ConfigMap, name: config-br-defaults}}
---
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata: {name: heartbeats}
spec: {template: {spec: {containers: [{image: example/heartbeats}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: display}
spec: {}
"#;
    let (ok, out, err) = validate(config);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("ContainerSource default/heartbeats: kind: ContainerSource is not supported"),
        "{err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("loaded   ")
            && lines[0].ends_with("Broker default/default (ignoring spec.config)"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("refused  ")
            && lines[1].contains("ContainerSource default/heartbeats"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("skipped  ")
            && lines[2].contains("Deployment default/display: a Kubernetes workload"),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "3 documents: 1 loaded (1 ignoring fields), 1 skipped, 1 refused"
    );
}
