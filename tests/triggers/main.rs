//! Black-box tests of triggers and delivery (spec/delivery.md): the real binary, real HTTP
//! sinks in this process. The scenarios follow Knative's conformance tests for Broker and
//! Trigger (routing, filters, delivery precedence, redelivery timing, dead letters, replies).
//! One module per theme; this file holds what they share: the manifests they write, sending an
//! event, and waiting for a subscriber to be marked down.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod dead_letters;
mod down;
mod metrics;
mod ordered;
mod replies;
mod retries;
mod routing;
mod shutdown;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::sink::{Answer, Sink};
use common::{Switchyard, client};

const WAIT: Duration = Duration::from_secs(20);
const BROKER: &str = "/default/default";

fn broker(delivery: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\nspec: {{ttl: 255{}}}\n---\n",
        if delivery.is_empty() {
            String::new()
        } else {
            format!(", delivery: {delivery}")
        }
    )
}

fn trigger(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec: {{broker: default, {spec}}}\n---\n"
    )
}

/// A trigger that takes events of one `type` to `url`, with extra spec fields (may be empty).
fn typed(name: &str, ty: &str, url: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    trigger(
        name,
        &format!("filter: {{attributes: {{type: {ty}}}}}, subscriber: {{uri: '{url}'}}{extra}"),
    )
}

async fn send(sy: &Switchyard, id: &str, ty: &str, extra: &[(&str, &str)]) {
    let mut req = client()
        .post(sy.url(BROKER))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests")
        .header("ce-type", ty);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req
        .body("{\"n\":1}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "event {id}");
}

fn failing(
    times: usize,
    counter: Arc<AtomicUsize>,
) -> impl Fn(usize, &switchyard_core::CloudEvent) -> Answer {
    move |_, _| {
        if counter.fetch_add(1, Ordering::SeqCst) < times {
            Answer::status(500)
        } else {
            Answer::status(200)
        }
    }
}

/// A port nothing listens on (yet): its connections are refused, as a function scaled to
/// zero's are.
fn unused_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Waits until Trigger `name`'s status says its subscriber is down; that status.
async fn wait_until_down(sy: &Switchyard, name: &str) -> serde_json::Value {
    let status = sy.url(&format!("/api/v1/namespaces/default/triggers/{name}"));
    common::eventually("the subscriber marked down", WAIT, || async {
        let s = common::get_json(&status).await;
        (s["status"]["conditions"][0]["reason"] == "SubscriberDown").then_some(s)
    })
    .await
}

/// The number in `series` of `text`, 0 when absent.
fn counted(text: &str, series: &str) -> f64 {
    common::metric_value(text, series).unwrap_or(0.0)
}
