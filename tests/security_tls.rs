//! The front door's listener and egress (spec/security.md), black-box: `serve` refusing an
//! open address without identities; HTTPS ingress from the Python SDK, certificates reloaded,
//! client certificates required; a subscriber behind a private CA reached with its
//! `caCerts`; internal destinations refused when asked unless allowed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::sink::Sink;
use common::{Switchyard, client};

const WAIT: Duration = Duration::from_secs(20);

/// A binary-mode event `id` of type `ty`, posted to `url`.
fn event_to(url: &str, id: &str, ty: &str) -> reqwest::RequestBuilder {
    client()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/test")
        .header("ce-type", ty)
        .body("{}")
}

/// Posts one binary-mode event with `client` to `url`; the status, or the error's text.
async fn post_with(client: &reqwest::Client, url: &str, id: &str) -> Result<u16, String> {
    client
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tls")
        .header("ce-type", "com.example.tls")
        .body("{}")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_ingress_from_the_python_sdk_certificates_reloaded_and_client_certificates() {
    if !common::tools_or_skip(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let one = common::tls::TestCa::new(dir.path(), "one");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::copy(one.file("server.pem"), &cert).unwrap();
    std::fs::copy(one.file("server.key"), &key).unwrap();
    let tls = [
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ];
    let mut sy = Switchyard::start_with(common::TWO_BROKERS, &tls);
    assert!(sy.base.starts_with("https://127.0.0.1:"), "{}", sy.base);
    let ingress = sy.url("/default/default");

    // The Python SDK over HTTPS, trusting the test CA.
    let out = std::process::Command::new(common::python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/send_with_token.py"))
        .args([&ingress, "unused", "com.example.python.tls"])
        .env("SSL_CERT_FILE", one.file("ca.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "202");
    // A client that trusts only another CA is refused at the handshake.
    let two = common::tls::TestCa::new(dir.path(), "two");
    let refused = post_with(&two.client(false), &ingress, "early")
        .await
        .unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    // The certificate is replaced on disk: new connections get the new one, no restart.
    std::fs::copy(two.file("server.key"), &key).unwrap();
    std::fs::copy(two.file("server.pem"), &cert).unwrap();
    common::eventually("the new certificate served", WAIT, || {
        let (client, url) = (two.client(false), ingress.clone());
        async move { (post_with(&client, &url, "rotated").await == Ok(202)).then_some(()) }
    })
    .await;
    let stored: Vec<String> = sy
        .stored("default/default")
        .into_iter()
        .map(|(_, e)| e.ty)
        .collect();
    assert_eq!(stored, ["com.example.python.tls", "com.example.tls"]);

    // With --tls-client-ca-file, a client without a certificate of that CA is refused.
    let mut with_ca = tls.to_vec();
    let ca = two.file("ca.pem");
    with_ca.extend(["--tls-client-ca-file", &ca]);
    let sy = Switchyard::start_with(common::TWO_BROKERS, &with_ca);
    let ingress = sy.url("/default/default");
    let refused = post_with(&two.client(false), &ingress, "anonymous")
        .await
        .unwrap_err()
        .to_lowercase();
    // The server ends the handshake: the client reads its alert ("certificate required"), or,
    // when it was already writing the request, sees the connection end under it.
    assert!(
        refused.contains("certificate") || refused.contains("connection"),
        "{refused}"
    );
    assert_eq!(
        post_with(&two.client(true), &ingress, "known").await,
        Ok(202)
    );
    // The CLI presents one too.
    let out = std::process::Command::new(common::bin())
        .args(["dlq", "list", "--server", &sy.base, "--ca-file", &ca])
        .args(["--client-cert-file", &two.file("client.pem")])
        .args(["--client-key-file", &two.file("client.key")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_a_private_ca_is_reached_with_its_cacerts() {
    if !common::tools_or_skip(&["openssl", "socat"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = common::tls::TestCa::new(dir.path(), "private");
    let sink = Sink::ok().await;
    let plain = sink.url.trim_start_matches("http://").trim_end_matches('/');
    let (port, _terminator) = ca.terminator(plain).await;
    let pem = std::fs::read_to_string(ca.file("ca.pem")).unwrap();
    let indented: String = pem.lines().map(|l| format!("      {l}\n")).collect();
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: private}}
spec:
  broker: default
  subscriber:
    uri: https://127.0.0.1:{port}/
    CACerts: |
{indented}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: without-ca}}
spec:
  broker: default
  subscriber: {{uri: 'https://127.0.0.1:{port}/'}}
  delivery: {{retry: 0}}
"#
    );
    let sy = Switchyard::start(&config);
    let resp = event_to(
        &sy.url("/default/default"),
        "behind-ca",
        "com.example.private",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "behind-ca");
    // Without the CA the same subscriber is not trusted: dead-lettered, naming the reason.
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let id = common::eventually("the untrusted delivery dead-lettered", WAIT, || {
        let api = api.clone();
        async move {
            let v = common::get_json(&api).await;
            v["items"][0]["id"].as_str().map(str::to_owned)
        }
    })
    .await;
    let one = common::get_json(&format!("{api}/{id}")).await;
    assert_eq!(one["trigger"], "without-ca");
    let error = one["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_destinations_are_refused_when_asked_unless_allowed() {
    let sink = Sink::ok().await;
    let port = sink.url.rsplit(':').next().unwrap().trim_end_matches('/');
    // One subscriber by address, one by a name that resolves to loopback.
    let config = format!(
        "{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: by-name}}\nspec:\n  broker: default\n  subscriber: {{uri: 'http://localhost:{port}/'}}\n  delivery: {{retry: 0}}\n",
        common::broker_and_trigger("by-address", "delivery: {retry: 0}", &sink.url)
    );
    let sy = Switchyard::start_with(&config, &["--deny-internal-destinations"]);
    let send = |sy: &Switchyard, id: &'static str| {
        event_to(&sy.url("/default/default"), id, "com.example.inside").send()
    };
    assert_eq!(send(&sy, "inside").await.unwrap().status(), 202);
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let items = common::eventually("two dead letters", WAIT, || {
        let api = api.clone();
        async move {
            let v = common::get_json(&api).await;
            let items = v["items"].as_array()?.clone();
            (items.len() == 2).then_some(items)
        }
    })
    .await;
    for item in &items {
        let one = common::get_json(&format!("{api}/{}", item["id"].as_str().unwrap())).await;
        let error = one["attempts"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains("loopback"), "{}: {error}", item["trigger"]);
    }
    assert!(sink.received().is_empty());
    drop(sy);

    // Allowed by range: delivered.
    let sy = Switchyard::start_with(
        &config,
        &[
            "--deny-internal-destinations",
            "--egress-allow",
            "127.0.0.0/8",
            "--egress-allow",
            "::1",
        ],
    );
    assert_eq!(send(&sy, "allowed").await.unwrap().status(), 202);
    sink.wait_for(2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_open_address_without_identities_unless_told() {
    let config = common::TWO_BROKERS;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), config).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(dir.path().join("c.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--allow-unauthenticated"), "{err}");
    assert!(err.contains("Identity"), "{err}");

    let sy = Switchyard::start_with(
        config,
        &["--listen", "0.0.0.0:0", "--allow-unauthenticated"],
    );
    let ready = common::get_json(&sy.url("/readyz")).await;
    assert!(
        ready["warning"]
            .as_str()
            .unwrap()
            .contains("without authentication"),
        "{ready}"
    );
    drop(sy);

    let with_identity = format!(
        "{config}\n---\napiVersion: switchyard.dev/v1\nkind: Identity\nmetadata: {{name: ops}}\nspec:\n  token: {{value: t}}\n  scopes: ['admin@*']\n"
    );
    let sy = Switchyard::start_with(&with_identity, &["--listen", "0.0.0.0:0"]);
    let ready = common::get_json(&sy.url("/readyz")).await;
    assert!(ready.get("warning").is_none(), "{ready}");
    // A reload that would leave nobody able to authenticate is refused; the token still holds.
    sy.rewrite_config(config);
    let resp = client()
        .post(sy.url("/api/v1/reload"))
        .bearer_auth("t")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(
        common::problem(resp).await["detail"]
            .as_str()
            .unwrap()
            .contains("--allow-unauthenticated")
    );
}
