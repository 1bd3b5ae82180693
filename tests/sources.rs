//! Black-box tests of sources (spec/sources.md): the real binary, requests over real sockets,
//! events read back from the store and from a trigger's real HTTP sink.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{Switchyard, client, problem};
use hmac::{KeyInit as _, Mac as _};
use switchyard_core::ExtValue;

const WAIT: Duration = Duration::from_secs(20);

fn config(sink: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {{name: github}}
spec:
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
  type: com.github.push
  source: https://github.com/octo/repo
  idHeader: X-GitHub-Delivery
  subject: {{jsonPointer: /repository/full_name}}
  ceOverrides: {{extensions: {{team: core}}}}
  auth:
    hmac: {{secret: {{fromEnv: TEST_WEBHOOK_SECRET}}}}
---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {{name: tokened}}
spec:
  sink: {{ref: {{kind: Broker, name: default}}}}
  auth: {{bearerToken: {{value: let-me-in}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: pushes}}
spec:
  broker: default
  filter: {{attributes: {{type: com.github.push}}}}
  subscriber: {{uri: '{sink}'}}
"#
    )
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn start(sink: &str) -> Switchyard {
    Switchyard::start_with_env(&config(sink), &[("TEST_WEBHOOK_SECRET", "s3cr3t")])
}

#[tokio::test]
async fn a_signed_webhook_lands_in_the_broker_and_reaches_a_trigger() {
    let sink = Sink::ok().await;
    let sy = start(&sink.url);
    let body = br#"{"ref":"refs/heads/main","repository":{"full_name":"octo/repo"}}"#;
    let resp = client()
        .post(sy.url("/sources/default/github"))
        .header("content-type", "application/json")
        .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header("X-Hub-Signature-256", sign("s3cr3t", body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let got = sink.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().unwrap();
    assert_eq!(e.id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(e.ty, "com.github.push");
    assert_eq!(e.source, "https://github.com/octo/repo");
    assert_eq!(e.subject.as_deref(), Some("octo/repo"));
    assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(
        e.extensions.get("team"),
        Some(&ExtValue::String("core".into()))
    );
    assert_eq!(got[0].body.as_ref(), body);
}

#[tokio::test]
async fn bad_or_missing_signatures_and_tokens_are_refused_and_nothing_is_stored() {
    let sink = Sink::ok().await;
    let mut sy = start(&sink.url);
    let c = client();
    let body = br#"{"repository":{"full_name":"octo/repo"}}"#;
    let cases = [
        (
            "/sources/default/github",
            Some(("X-Hub-Signature-256", sign("wrong", body))),
        ),
        (
            "/sources/default/github",
            Some(("X-Hub-Signature-256", "sha256=zz".to_owned())),
        ),
        ("/sources/default/github", None),
        (
            "/sources/default/tokened",
            Some(("Authorization", "Bearer nope".to_owned())),
        ),
        ("/sources/default/tokened", None),
    ];
    for (path, header) in cases {
        let mut req = c.post(sy.url(path)).body(body.to_vec());
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        problem(resp).await;
    }
    let resp = c
        .post(sy.url("/sources/default/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // A signature over another body is refused too.
    let resp = c
        .post(sy.url("/sources/default/github"))
        .header("X-Hub-Signature-256", sign("s3cr3t", b"something else"))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(sy.stored("default/default").is_empty());
}

#[tokio::test]
async fn cloudevents_pass_through_a_source_unchanged_but_for_its_overrides() {
    let sink = Sink::ok().await;
    let mut sy = start(&sink.url);
    let c = client();
    let resp = c
        .post(sy.url("/sources/default/tokened"))
        .header("Authorization", "Bearer let-me-in")
        .header("ce-specversion", "1.0")
        .header("ce-id", "kept-id")
        .header("ce-source", "/elsewhere")
        .header("ce-type", "com.example.kept")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // A plain body through the token source gets the defaults.
    let resp = c
        .post(sy.url("/sources/default/tokened"))
        .header("Authorization", "Bearer let-me-in")
        .body("raw")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let stored = sy.stored("default/default");
    assert_eq!(stored.len(), 2);
    let e = &stored[0].1;
    assert_eq!(
        (e.id.as_str(), e.source.as_str(), e.ty.as_str()),
        ("kept-id", "/elsewhere", "com.example.kept")
    );
    assert_eq!(e.data_bytes().unwrap().as_ref(), b"hello");
    let plain = &stored[1].1;
    assert_eq!(plain.ty, "dev.switchyard.webhook");
    assert_eq!(
        plain.source,
        "/apis/v1/namespaces/default/webhooksources/tokened"
    );
    assert!(!plain.id.is_empty());
    assert_eq!(plain.data_bytes().unwrap().as_ref(), b"raw");
}

#[test]
fn a_source_whose_secret_is_missing_from_the_environment_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), config("http://127.0.0.1:9/")).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("c.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("TEST_WEBHOOK_SECRET")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WebhookSource default/github"), "{stderr}");
    assert!(stderr.contains("TEST_WEBHOOK_SECRET"), "{stderr}");
}
