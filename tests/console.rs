//! The web console (`/ui`, docs/console.md) end to end in a real browser: Playwright (Python)
//! drives Debian's Chromium, headless, through `tests/console/drive.py`: the overview shows a
//! failing trigger, its dead letter is found, opened and redriven after a preview, and is
//! delivered; the trigger is paused and resumed; a replay is previewed. The screenshots go to
//! `target/console-screenshots` (docs/console.md shows them).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::sink::{Answer, Sink};
use common::{Switchyard, client, eventually, get_json, python, skip};

const WAIT: Duration = Duration::from_secs(20);
const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether the browser and Playwright are installed (scripts/test installs both).
fn browser_or_skip() -> bool {
    if !std::path::Path::new(CHROMIUM).exists() {
        skip("no Chromium at /usr/bin/chromium (scripts/test installs Debian's chromium)");
        return false;
    }
    let has_playwright = Command::new(python())
        .args(["-c", "import playwright.sync_api"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_playwright {
        skip("no Playwright for Python (scripts/test installs it into target/test-venv)");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_dead_letter_redrives_it_and_pauses_a_trigger_in_the_console() {
    if !browser_or_skip() {
        return;
    }
    let (orders, good) =
        Sink::switchable(Answer::status(503).body("the warehouse is closed")).await;
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
  filter: {{attributes: {{type: com.example.order}}}}
  subscriber: {{uri: '{}'}}
  delivery: {{retry: 1, backoffDelay: PT0.1S}}
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
    let sent = client()
        .post(sy.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "order-1")
        .header("ce-source", "/shop")
        .header("ce-type", "com.example.order")
        .header("content-type", "application/json")
        .body(r#"{"sku":"teapot","qty":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    eventually("the dead letter", WAIT, || async {
        let t = get_json(&sy.url("/api/v1/namespaces/default/triggers/orders")).await;
        (t["status"]["deadLetters"] == 1).then_some(())
    })
    .await;
    // The warehouse opens again: a redrive will be delivered.
    good.store(true, Ordering::SeqCst);

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/console/drive.py");
    let base = sy.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(base)
            .arg(&shots)
            .arg(CHROMIUM)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the console test failed after:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The redrive was delivered, once.
    let got = orders.wait_for(3, WAIT).await;
    orders.assert_stays_at(3, Duration::from_millis(500)).await;
    assert_eq!(got[2].event.as_ref().unwrap().id, "order-1");
    let t = get_json(&sy.url("/api/v1/namespaces/default/triggers/orders")).await;
    assert_eq!(t["status"]["deadLetters"], 0);
    assert_eq!(t["status"]["paused"], false);
    let audit_log = get_json(&sy.url("/api/v1/namespaces/default/audit")).await;
    let actions: Vec<&str> = audit_log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["redrive", "pause", "resume"], "{audit_log}");
}
