//! The functions of docs/sink-authors.md, one per official CloudEvents SDK — Python
//! (`cloudevents` from PyPI), JavaScript (`cloudevents` from npm), Rust (`cloudevents-sdk`) —
//! each run against the real broker: it receives an event, replies, fails and is retried, and
//! is dead-lettered.
//!
//! `scripts/test` installs the Python SDK in `target/test-venv` and the JavaScript one in
//! `target/test-node` (`SWITCHYARD_TEST_PYTHON`, `SWITCHYARD_TEST_NODE_MODULES` point
//! elsewhere); cargo builds the Rust one as the example `orders-function`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sink::Sink;
use common::{Switchyard, client};

const WAIT: Duration = Duration::from_secs(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A function's process, stopped when dropped, and its URL.
struct Function {
    child: Child,
    url: String,
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` with `PORT=0` and reads the URL it prints first.
fn start(mut command: Command) -> Function {
    let mut child = command
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("orders function listening on ")
        .unwrap_or_else(|| panic!("the function did not start: {first:?}"))
        .to_owned();
    Function { child, url }
}

fn python() -> Function {
    let python = std::env::var_os("SWITCHYARD_TEST_PYTHON")
        .map_or_else(|| repo().join("target/test-venv/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "no Python with the CloudEvents SDK at {}: run scripts/test, or set SWITCHYARD_TEST_PYTHON",
        python.display()
    );
    let mut c = Command::new(python);
    c.arg(repo().join("examples/functions/python/orders.py"));
    start(c)
}

fn javascript() -> Function {
    let modules = std::env::var_os("SWITCHYARD_TEST_NODE_MODULES").map_or_else(
        || repo().join("target/test-node/node_modules"),
        PathBuf::from,
    );
    assert!(
        modules.join("cloudevents").exists(),
        "no CloudEvents SDK for JavaScript in {}: run scripts/test, or set SWITCHYARD_TEST_NODE_MODULES",
        modules.display()
    );
    let mut c = Command::new("node");
    c.arg(repo().join("examples/functions/js/orders.js"))
        .env("NODE_PATH", modules);
    start(c)
}

fn rust() -> Function {
    let bin = Path::new(common::bin())
        .parent()
        .unwrap()
        .join("examples/orders-function");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it (with `--test functions` alone, run `cargo build --example orders-function` first)",
        bin.display()
    );
    start(Command::new(bin))
}

/// Posts a `com.example.order.placed` event with `data`.
async fn place(sy: &Switchyard, id: &str, data: &str) {
    let resp = common::binary(
        &client(),
        &sy.url("/default/default"),
        &[
            ("specversion", "1.0"),
            ("id", id),
            ("source", "/shop"),
            ("type", "com.example.order.placed"),
        ],
    )
    .header("content-type", "application/json")
    .body(data.to_owned())
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
}

/// The README's contract, for the function at `url`.
async fn receives_replies_is_retried_and_dead_lettered(function: &Function, language: &str) {
    let confirmed = Sink::ok().await;
    let config = format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 3, backoffDelay: PT0.1S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.order.placed}}}}
  subscriber: {{uri: {function}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: confirmed}}
spec:
  broker: default
  filter: {{attributes: {{type: com.example.order.confirmed}}}}
  subscriber: {{uri: {confirmed}}}
"#,
        function = function.url,
        confirmed = confirmed.url
    );
    let sy = Switchyard::start(&config);

    // Receive and reply: the reply is stored in the broker and routed like any event.
    place(&sy, "o-1", r#"{"orderId": "o-1", "total": 12}"#).await;
    let got = confirmed.wait_for(1, WAIT).await;
    let reply = got[0].event.as_ref().unwrap();
    assert_eq!(reply.id, "o-1.confirmed", "{language}");
    assert_eq!(reply.source, format!("/functions/orders/{language}"));
    assert_eq!(reply.subject.as_deref(), Some("o-1"));
    let data: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(data["total"], 12, "{language}");

    // 503 on the first attempt: retried, then replied.
    place(
        &sy,
        "o-2",
        r#"{"orderId": "o-2", "total": 5, "simulate": "flaky"}"#,
    )
    .await;
    let got = confirmed.wait_for(2, WAIT).await;
    assert_eq!(got[1].event.as_ref().unwrap().id, "o-2.confirmed");
    let metrics = common::metrics(&sy).await;
    assert!(
        metrics.contains(r#"trigger_name="orders",response_code="503",outcome="retryable"} 1"#),
        "{language}: the 503 was counted as one attempt\n{metrics}"
    );

    // 422: never retried, dead-lettered after one attempt with the function's reason.
    place(&sy, "o-3", r#"{"orderId": "o-3"}"#).await;
    let deadline = std::time::Instant::now() + WAIT;
    let letters = loop {
        let out = Command::new(common::bin())
            .args(["dlq", "list", "--output", "json", "--server", &sy.url("")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("\"eventId\": \"o-3\"") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{language}: no dead letter"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&letters).unwrap();
    let letter = &v["items"][0];
    assert_eq!(
        (letter["status"].as_i64(), letter["attempts"].as_i64()),
        (Some(422), Some(1)),
        "{language}: {letter}"
    );
}

#[tokio::test]
async fn the_python_function_receives_replies_is_retried_and_dead_lettered() {
    receives_replies_is_retried_and_dead_lettered(&python(), "python").await;
}

#[tokio::test]
async fn the_javascript_function_receives_replies_is_retried_and_dead_lettered() {
    receives_replies_is_retried_and_dead_lettered(&javascript(), "js").await;
}

#[tokio::test]
async fn the_rust_function_receives_replies_is_retried_and_dead_lettered() {
    receives_replies_is_retried_and_dead_lettered(&rust(), "rust").await;
}
