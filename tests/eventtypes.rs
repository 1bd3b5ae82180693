//! Black-box tests of EventTypes (spec/eventtypes.md): schema enforcement at ingress in each
//! broker mode, discovery over the API and `switchyard get eventtypes`, load-time refusals, and
//! the same rules for events from sources (a WebhookSource, a NatsSource against the machine's
//! nats-server from `SWITCHYARD_TEST_NATS`, a PingSource refused at load) and for replies.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::sink::{Answer, Sink};
use common::{Switchyard, bin, client, problem};
use serde_json::{Value, json};

/// Four brokers in `shop`, one per mode, and the EventTypes that reference them. The order
/// schema (draft 7, given as a JSON string like Knative does) `$ref`s the address schema
/// (2020-12, given as a mapping) by its `schema` URI.
fn config() -> String {
    let mut yaml = String::new();
    for (name, spec) in [
        ("enforced", "eventTypes: enforce"),
        ("strict", "{eventTypes: enforce, eventTypesStrict: true}"),
        ("warned", "eventTypes: warn"),
        ("recorded", "eventTypes: record"),
    ] {
        let spec = if spec.starts_with('{') {
            spec.to_owned()
        } else {
            format!("{{{spec}}}")
        };
        yaml.push_str(&format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n---\n"
        ));
    }
    yaml.push_str(
        r#"apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: address, namespace: shop}
spec:
  type: com.example.address
  schema: https://schemas.example.com/address.json
  description: a postal address
  schemaData:
    $schema: https://json-schema.org/draft/2020-12/schema
    type: object
    required: [city]
    properties:
      city: {type: string}
      zip: {type: string}
"#,
    );
    for broker in ["enforced", "strict", "warned", "recorded"] {
        yaml.push_str(&format!(
            r#"---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {{name: order-created-{broker}, namespace: shop}}
spec:
  type: com.example.order.created
  source: /orders*
  schema: https://schemas.example.com/order-{broker}.json
  description: an order was placed
  reference: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: {broker}}}
  schemaData: '{ORDER_SCHEMA}'
"#
        ));
    }
    yaml
}

/// [`config`] plus a Trigger `name` of broker `broker` in `shop`, `spec` its other fields
/// (one YAML line each, indented by two), delivering to `sink`.
fn with_trigger(name: &str, broker: &str, spec: &str, sink: &str) -> String {
    format!(
        "{}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  broker: {broker}\n  subscriber: {{uri: '{sink}'}}\n{spec}",
        config()
    )
}

const ORDER_SCHEMA: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","required":["orderId","total","customer"],"properties":{"orderId":{"type":"string"},"total":{"type":"number","minimum":0},"customer":{"type":"object","required":["email"],"properties":{"email":{"type":"string"}}},"shipTo":{"$ref":"https://schemas.example.com/address.json"},"items":{"type":"array"}}}"#;

fn order(id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/orders/eu",
        "type": "com.example.order.created",
        "datacontenttype": "application/json",
        "data": data,
    })
}

fn valid_data() -> Value {
    json!({
        "orderId": "o-1",
        "total": 12.5,
        "customer": {"email": "ada@example.com"},
        "shipTo": {"city": "Ghent", "zip": "9000"},
        "items": [{"sku": "A-1", "qty": 2}]
    })
}

async fn post(sy: &Switchyard, broker: &str, event: &Value) -> reqwest::Response {
    client()
        .post(sy.url(&format!("/shop/{broker}")))
        .header("content-type", "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await
        .unwrap()
}

async fn post_batch(sy: &Switchyard, broker: &str, events: &[Value]) -> reqwest::Response {
    client()
        .post(sy.url(&format!("/shop/{broker}")))
        .header("content-type", "application/cloudevents-batch+json")
        .body(Value::from(events.to_vec()).to_string())
        .send()
        .await
        .unwrap()
}

fn pointers(body: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            (
                e["pointer"].as_str().unwrap().to_owned(),
                e["keyword"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn enforce_accepts_a_valid_order_and_refuses_an_invalid_one() {
    let mut sy = Switchyard::start(&config());
    let resp = post(&sy, "enforced", &order("ok-1", valid_data())).await;
    assert_eq!(resp.status(), 202);

    let mut bad = valid_data();
    bad["total"] = json!("twelve");
    let resp = post(&sy, "enforced", &order("bad-1", bad)).await;
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(body["type"], "urn:switchyard:problem:schema-violation");
    assert_eq!(body["attribute"], "data");
    assert!(body.get("index").is_none());
    assert_eq!(pointers(&body), [("/total".to_owned(), "type".to_owned())]);
    assert!(body["detail"].as_str().unwrap().contains("/total"));

    // Binary mode with JSON data is validated the same way.
    let resp = client()
        .post(sy.url("/shop/enforced"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "bad-2")
        .header("ce-source", "/orders/us")
        .header("ce-type", "com.example.order.created")
        .header("content-type", "application/json")
        .body(r#"{"orderId": "o-2", "total": -1, "customer": {}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(
        pointers(&body),
        [
            ("/customer".to_owned(), "required".to_owned()),
            ("/total".to_owned(), "minimum".to_owned())
        ]
    );

    // A type with no EventType passes when the broker is not strict.
    let mut other = order("other-1", json!("anything"));
    other["type"] = json!("com.example.unregistered");
    assert_eq!(post(&sy, "enforced", &other).await.status(), 202);

    let stored = sy.stored("shop/enforced");
    let ids: Vec<&str> = stored.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["ok-1", "other-1"]);
}

/// Data is checked as JSON up to serde_json's nesting limit: a valid order nested
/// [`MAX_DATA_DEPTH`] levels deep passes; one level more is checked as text, which the order
/// schema (an object) refuses with 400, and the server stays up.
#[tokio::test]
async fn data_is_checked_as_json_up_to_its_nesting_limit() {
    let mut sy = Switchyard::start(&config());
    // An order whose `items` (an array, as the schema wants) nests to `depth` levels in all.
    let nested = |depth: usize| {
        format!(
            r#"{{"orderId":"o","total":1,"customer":{{"email":"e"}},"items":{}{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    };
    let send = |id: &'static str, data: String| {
        client()
            .post(sy.url("/shop/enforced"))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "/orders/eu")
            .header("ce-type", "com.example.order.created")
            .header("content-type", "application/json")
            .body(data)
            .send()
    };
    let at_limit = send("deep-ok", nested(MAX_DATA_DEPTH)).await.unwrap();
    assert_eq!(at_limit.status(), 202);
    let past = send("too-deep", nested(MAX_DATA_DEPTH + 1)).await.unwrap();
    assert_eq!(past.status(), 400);
    let body = problem(past).await;
    assert_eq!(body["type"], "urn:switchyard:problem:schema-violation");
    assert_eq!(pointers(&body), [(String::new(), "type".to_owned())]);
    let stored = sy.stored("shop/enforced");
    let ids: Vec<&str> = stored.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["deep-ok"]);
}

/// The deepest JSON data the schema check parses (spec/limits.md).
const MAX_DATA_DEPTH: usize = 127;

#[tokio::test]
async fn a_ref_to_another_registered_schema_is_resolved_locally() {
    let sy = Switchyard::start(&config());
    let mut bad = valid_data();
    bad["shipTo"] = json!({"city": 9000});
    let resp = post(&sy, "enforced", &order("ref-1", bad)).await;
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(
        pointers(&body),
        [("/shipTo/city".to_owned(), "type".to_owned())]
    );

    // An event naming the address schema as its dataschema is checked against it, whatever
    // its type.
    let mut addressed = order("addr-1", json!({"zip": "9000"}));
    addressed["type"] = json!("com.example.something");
    addressed["dataschema"] = json!("https://schemas.example.com/address.json");
    let resp = post(&sy, "enforced", &addressed).await;
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(pointers(&body), [(String::new(), "required".to_owned())]);
    addressed["data"] = json!({"city": "Ghent"});
    assert_eq!(post(&sy, "enforced", &addressed).await.status(), 202);
}

#[tokio::test]
async fn a_batch_with_one_invalid_event_is_refused_with_its_index() {
    let mut sy = Switchyard::start(&config());
    let mut bad = valid_data();
    bad["orderId"] = json!(7);
    let batch = [
        order("b-0", valid_data()),
        order("b-1", valid_data()),
        order("b-2", bad),
    ];
    let resp = post_batch(&sy, "enforced", &batch).await;
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(body["type"], "urn:switchyard:problem:schema-violation");
    assert_eq!(body["index"], 2);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("event 2 of the batch")
    );
    assert_eq!(
        pointers(&body),
        [("/orderId".to_owned(), "type".to_owned())]
    );
    assert!(sy.stored("shop/enforced").is_empty());
}

#[tokio::test]
async fn strict_refuses_unregistered_types() {
    let mut sy = Switchyard::start(&config());
    assert_eq!(
        post(&sy, "strict", &order("s-1", valid_data()))
            .await
            .status(),
        202
    );
    let mut unknown = order("s-2", json!({}));
    unknown["type"] = json!("com.example.unregistered");
    let resp = post(&sy, "strict", &unknown).await;
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(
        body["type"],
        "urn:switchyard:problem:unregistered-event-type"
    );
    assert_eq!(body["attribute"], "type");
    // A source outside the EventType's prefix is not registered either.
    let mut elsewhere = order("s-3", valid_data());
    elsewhere["source"] = json!("/payments");
    assert_eq!(post(&sy, "strict", &elsewhere).await.status(), 400);
    let ids: Vec<String> = sy
        .stored("shop/strict")
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    assert_eq!(ids, ["s-1"]);
}

#[tokio::test]
async fn refused_events_matched_by_dataschema_add_no_event_type_labels() {
    let sy = Switchyard::start(&config());
    // Each of a producer's own types, refused: counted, but none gets a series of its own.
    for i in 0..20 {
        let mut event = order(&format!("flood-{i}"), json!({"zip": "9000"}));
        event["type"] = json!(format!("com.example.random{i}"));
        event["dataschema"] = json!("https://schemas.example.com/address.json");
        assert_eq!(post(&sy, "enforced", &event).await.status(), 400);
    }
    // Nor does an event that passed, in a batch refused for another one.
    let mut passing = order("mate-1", json!({"city": "Ghent"}));
    passing["type"] = json!("com.example.batchmate");
    passing["dataschema"] = json!("https://schemas.example.com/address.json");
    let failing = order("mate-2", json!({"total": "x"}));
    assert_eq!(
        post_batch(&sy, "enforced", &[passing, failing])
            .await
            .status(),
        400
    );
    let text = common::metrics(&sy).await;
    assert!(!text.contains("com.example.random"), "{text}");
    assert!(!text.contains("com.example.batchmate"), "{text}");
    // All counted, under `(other)`: the 20, the batch's failing order and its passing mate.
    for needle in [
        r#"switchyard_schema_validations_total{namespace_name="shop",broker_name="enforced",event_type="(other)",result="failed"} 21"#,
        r#"switchyard_schema_validations_total{namespace_name="shop",broker_name="enforced",event_type="(other)",result="passed"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[tokio::test]
async fn warn_stores_invalid_events_and_counts_them() {
    let mut sy = Switchyard::start(&config());
    assert_eq!(
        post(&sy, "warned", &order("w-1", valid_data()))
            .await
            .status(),
        202
    );
    let resp = post(&sy, "warned", &order("w-2", json!({"total": "x"}))).await;
    assert_eq!(resp.status(), 202);
    let text = common::metrics(&sy).await;
    for needle in [
        r#"switchyard_schema_validations_total{namespace_name="shop",broker_name="warned",event_type="com.example.order.created",result="passed"} 1"#,
        r#"switchyard_schema_validations_total{namespace_name="shop",broker_name="warned",event_type="com.example.order.created",result="failed"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert_eq!(sy.stored("shop/warned").len(), 2);
}

fn get_eventtypes(sy: &Switchyard, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(["get", "eventtypes", "--server", &sy.base])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A producer that sends a new source with every event does not grow the record without end:
/// a broker records 1,000 (type, source) pairs, stores every event past them, and holds the
/// cap after a restart, while the pairs it knows go on counting.
#[tokio::test]
async fn record_keeps_at_most_a_thousand_pairs_per_broker_and_stores_every_event() {
    let mut sy = Switchyard::start(&config());
    let ping = |i: usize| {
        json!({"specversion": "1.0", "id": format!("p-{i}"), "source": format!("/device/{i}"),
               "type": "com.example.ping"})
    };
    let batch: Vec<Value> = (0..1001).map(ping).collect();
    assert_eq!(post_batch(&sy, "recorded", &batch).await.status(), 202);
    let pings = |sy: &Switchyard| {
        let url = sy.url("/api/v1/namespaces/shop/brokers/recorded/eventtypes");
        async move {
            let v: Value = common::get_json(&url).await;
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["type"] == "com.example.ping")
                .map(|i| {
                    (
                        i["source"].as_str().unwrap().to_owned(),
                        i["count"].as_u64().unwrap(),
                    )
                })
                .collect::<std::collections::BTreeMap<String, u64>>()
        }
    };
    let recorded = pings(&sy).await;
    assert_eq!(recorded.len(), 1000);
    assert!(
        !recorded.contains_key("/device/1000"),
        "the pair past the cap"
    );

    sy.stop();
    sy.restart();
    let mut again = ping(0);
    again["id"] = json!("p-0-again");
    assert_eq!(post(&sy, "recorded", &again).await.status(), 202);
    assert_eq!(post(&sy, "recorded", &ping(2000)).await.status(), 202);
    let recorded = pings(&sy).await;
    assert_eq!(recorded.len(), 1000, "the cap holds after a restart");
    assert_eq!(recorded["/device/0"], 2, "a known pair goes on counting");
    assert_eq!(
        sy.stored("shop/recorded").len(),
        1003,
        "every event is stored"
    );
}

#[tokio::test]
async fn record_lists_a_new_type_after_the_first_event_and_keeps_it() {
    let mut sy = Switchyard::start(&config());
    let api = "/api/v1/namespaces/shop/brokers/recorded/eventtypes";
    let list = |sy: &Switchyard| {
        let url = sy.url(api);
        async move {
            let v: Value = common::get_json(&url).await;
            v["items"].as_array().unwrap().clone()
        }
    };
    let before = list(&sy).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["origin"], "config");
    assert_eq!(before[0]["count"], 0);

    let mut new = order("r-1", json!({"sku": "A-1"}));
    new["type"] = json!("com.example.stock.reserved");
    new["source"] = json!("/stock");
    assert_eq!(post(&sy, "recorded", &new).await.status(), 202);
    let items = list(&sy).await;
    let found: Vec<&Value> = items
        .iter()
        .filter(|i| i["type"] == "com.example.stock.reserved")
        .collect();
    assert_eq!(found.len(), 1, "{items:?}");
    let d = found[0];
    assert_eq!(d["origin"], "discovered");
    assert_eq!(d["source"], "/stock");
    assert_eq!(d["broker"], "shop/recorded");
    assert_eq!(d["count"], 1);
    assert!(d["firstSeen"].as_str().is_some());
    assert_eq!(d["firstSeen"], d["lastSeen"]);

    new["id"] = json!("r-2");
    assert_eq!(post(&sy, "recorded", &new).await.status(), 202);
    // A configured type's counts come from the events that match it.
    assert_eq!(
        post(&sy, "recorded", &order("r-3", valid_data()))
            .await
            .status(),
        202
    );

    // The namespace listing holds every EventType of the namespace and the discovered type.
    let v: Value = common::get_json(&sy.url("/api/v1/namespaces/shop/eventtypes")).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 6, "{v}");

    let (ok, out, err) = get_eventtypes(&sy, &["--broker", "shop/recorded", "--output", "json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let items = v["items"].as_array().unwrap();
    let stock = items
        .iter()
        .find(|i| i["type"] == "com.example.stock.reserved")
        .unwrap();
    assert_eq!(stock["count"], 2);
    let configured = items.iter().find(|i| i["origin"] == "config").unwrap();
    assert_eq!(configured["count"], 1);

    let (ok, out, err) = get_eventtypes(&sy, &["--broker", "shop/recorded"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("BROKER"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("com.example.stock.reserved") && l.contains("discovered")),
        "{out}"
    );

    // Discovered types and their counts survive a restart.
    sy.stop();
    sy.restart();
    let after = list(&sy).await;
    let stock = after
        .iter()
        .find(|i| i["type"] == "com.example.stock.reserved")
        .unwrap();
    assert_eq!(stock["count"], 2, "{after:?}");

    let (ok, _, err) = get_eventtypes(&sy, &["--broker", "shop/nope"]);
    assert!(!ok);
    assert!(
        err.starts_with("switchyard: the server answered 404"),
        "{err}"
    );
}

/// Runs `validate` and `serve` on `config`; both must fail with one line on stderr, which is
/// returned (from `serve`).
fn load_error(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let validate = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let serve = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let mut last = String::new();
    for (cmd, out) in [("validate", validate), ("serve", serve)] {
        assert!(!out.status.success(), "{cmd} accepted the config");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{cmd}: {err}");
        last = err;
    }
    last
}

#[test]
fn an_invalid_schema_is_refused_at_load_with_the_reason() {
    let bad = config().replace(
        "      city: {type: string}\n",
        "      city: {type: strin}\n",
    );
    let err = load_error(&bad);
    assert!(
        err.contains("EventType shop/address: spec.schemaData: invalid JSON Schema"),
        "{err}"
    );
    assert!(err.contains("config.yaml"), "{err}");

    let remote = config().replace(
        "\"$ref\":\"https://schemas.example.com/address.json\"",
        "\"$ref\":\"https://elsewhere.example.com/address.json\"",
    );
    let err = load_error(&remote);
    assert!(err.contains("spec.schemaData"), "{err}");
    assert!(err.contains("does not fetch schemas"), "{err}");

    // A reference to a Broker that is not in the configuration loads not ready (Knative's
    // BrokerDoesNotExist), and says so.
    let dangling = config().replace("name: enforced}", "name: missing}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), dangling).unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("not ready: ")
            && listed.contains("spec.reference: no Broker `missing` in namespace `shop`"),
        "{listed}"
    );
}

/// The metric line's value, 0 when the series does not exist yet.
fn counted(metrics: &str, prefix: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Sources store into brokers too, and are held to the same EventTypes: a WebhookSource
/// into an `enforce` broker answers an invalid order with the same 400 as ingress, and one
/// into a `record` broker registers its type.
#[tokio::test]
async fn sources_are_held_to_their_brokers_event_types() {
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {{name: web-orders, namespace: shop}}
spec:
  sink: {{ref: {{kind: Broker, name: enforced}}}}
  type: com.example.order.created
  source: /orders/web
---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {{name: web-stock, namespace: shop}}
spec:
  sink: {{ref: {{kind: Broker, name: recorded}}}}
  type: com.example.stock.counted
  source: /stock/web
"#,
        config()
    );
    let mut sy = Switchyard::start(&config);
    let hook = |name: &str, body: Value| {
        client()
            .post(sy.url(&format!("/sources/shop/{name}")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(
        hook("web-orders", valid_data()).await.unwrap().status(),
        202
    );
    let mut invalid = valid_data();
    invalid["total"] = json!(-1);
    let resp = hook("web-orders", invalid).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = problem(resp).await;
    assert_eq!(body["type"], "urn:switchyard:problem:schema-violation");
    assert_eq!(
        pointers(&body),
        [("/total".to_owned(), "minimum".to_owned())]
    );

    assert_eq!(
        hook("web-stock", json!({"sku": "A-1", "count": 3}))
            .await
            .unwrap()
            .status(),
        202
    );
    let listed: Value =
        common::get_json(&sy.url("/api/v1/namespaces/shop/brokers/recorded/eventtypes")).await;
    let stock: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "com.example.stock.counted")
        .collect();
    assert_eq!(stock.len(), 1, "{listed}");
    assert_eq!(stock[0]["source"], "/stock/web");
    assert_eq!(stock[0]["origin"], "discovered");
    assert_eq!(stock[0]["count"], 1);

    let stored = sy.stored("shop/enforced");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1.source, "/orders/web");
}

/// A stream source takes messages one by one: one whose data breaks its schema in an
/// `enforce` broker is counted as malformed and dropped, and the messages around it are
/// stored and delivered.
#[tokio::test]
async fn a_stream_source_drops_what_its_enforcing_broker_refuses() {
    let sink = Sink::ok().await;
    let u = common::moto::unique().replace('-', "");
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: nats-orders, namespace: shop}}
spec:
  servers: ['{}']
  subject: 'et{u}.orders'
  sink: {{ref: {{kind: Broker, name: enforced}}}}
"#,
        with_trigger("orders", "enforced", "", &sink.url),
        common::nats_url(),
    );
    let mut sy = Switchyard::start(&config);
    let nats = async_nats::connect(common::nats_url()).await.unwrap();
    let subject = format!("et{u}.orders");
    let publish = |id: &str, data: Value| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("content-type", "application/cloudevents+json");
        let body = order(id, data).to_string();
        let nats = nats.clone();
        let subject = subject.clone();
        async move {
            nats.publish_with_headers(subject, headers, body.into())
                .await
                .unwrap();
            nats.flush().await.unwrap();
        }
    };
    // The subscription is made in the background (core NATS drops what is published before
    // it): publish valid orders until one is delivered.
    let mut probes = 0;
    common::eventually("the source subscribed", Duration::from_secs(30), || {
        probes += 1;
        let sent = publish(&format!("probe-{probes}"), valid_data());
        let sink = &sink;
        async move {
            sent.await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            (!sink.received().is_empty()).then_some(())
        }
    })
    .await;

    publish("bad", json!({"orderId": "o-2", "total": "a lot"})).await;
    publish("after", valid_data()).await;
    // The subscription hands messages over in order: once "after" is delivered, "bad" was
    // judged.
    sink.wait_for_where(1, Duration::from_secs(30), |r| {
        r.event.as_ref().is_some_and(|e| e.id == "after")
    })
    .await;
    let m = common::metrics(&sy).await;
    assert_eq!(
        counted(
            &m,
            "switchyard_source_malformed_total",
            &["kind=\"NatsSource\"", "action=\"dropped\""],
        ),
        1.0,
        "{m}"
    );
    assert!(!sink.ids().contains(&"bad".to_owned()), "{:?}", sink.ids());
    let ids: Vec<String> = sy
        .stored("shop/enforced")
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    assert!(ids.contains(&"after".to_owned()), "{ids:?}");
    assert!(!ids.contains(&"bad".to_owned()), "{ids:?}");
}

/// A PingSource's event is the same at every slot: data its enforcing broker would refuse is
/// refused at load, by `validate` and `serve`, not found at the first slot.
#[test]
fn a_ping_source_the_broker_would_refuse_is_refused_at_load() {
    let config = format!(
        r#"{}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {{name: tick, namespace: shop}}
spec:
  type: dev.knative.sources.ping
  reference: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: enforced}}
  schemaData: {{type: object, required: [tick]}}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: heartbeat, namespace: shop}}
spec:
  schedule: "*/5 * * * *"
  contentType: application/json
  data: '{{"beat": 1}}'
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: enforced}}}}
"#,
        config()
    );
    let err = load_error(&config);
    assert!(
        err.contains("PingSource shop/heartbeat: broker shop/enforced would refuse its events"),
        "{err}"
    );
    assert!(err.contains("EventType shop/tick"), "{err}");
    // The same data with the field the schema requires loads.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config.replace(r#"{"beat": 1}"#, r#"{"tick": 1}"#)).unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replies are stored in the trigger's broker, so they are held to its EventTypes too: a
/// reply an `enforce` broker refuses fails the attempt like a malformed reply (retried, then
/// dead-lettered with the reason); a valid reply is stored.
#[tokio::test]
async fn a_reply_the_enforcing_broker_refuses_fails_the_delivery() {
    let sink = Sink::start(|_, e| {
        let data = if e.id == "o-valid" {
            valid_data()
        } else {
            json!({"orderId": "o-9", "total": -5, "customer": {"email": "x@example.com"}})
        };
        Answer::reply("com.example.order.created", &format!("priced-{}", e.id))
            .header("ce-source", "/orders/priced")
            .header("content-type", "application/json")
            .body(data.to_string())
    })
    .await;
    let config = with_trigger(
        "pricing",
        "enforced",
        "  filter: {attributes: {source: /orders/eu}}\n  delivery: {retry: 1, backoffDelay: PT0.01S}\n",
        &sink.url,
    );
    let mut sy = Switchyard::start(&config);
    for id in ["o-valid", "o-invalid"] {
        assert_eq!(
            post(&sy, "enforced", &order(id, valid_data()))
                .await
                .status(),
            202
        );
    }
    let api = sy.url("/api/v1/namespaces/shop/brokers/enforced/deadletters");
    let letters = common::eventually("the dead letter", Duration::from_secs(30), || async {
        let v: Value = common::get_json(&api).await;
        let items = v["items"].as_array().unwrap().clone();
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["eventId"], "o-invalid", "{letters:?}");
    assert_eq!(letters[0]["reason"], "retries exhausted");
    assert_eq!(letters[0]["attempts"], 2);
    let letter: Value =
        common::get_json(&format!("{api}/{}", letters[0]["id"].as_str().unwrap())).await;
    let attempts = letter["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for a in attempts {
        let error = a["error"].as_str().unwrap();
        assert!(
            error.starts_with("reply refused by the broker: the data of event `priced-o-invalid`"),
            "{error}"
        );
    }
    // The valid reply is stored before its delivery counts as done; wait for it.
    let events = sy.url(
        "/api/v1/namespaces/shop/brokers/enforced/events?from=start&source=/orders/priced&limit=1",
    );
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        client()
            .get(events)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await
    .expect("the valid reply was not stored within 30 s");
    assert!(line.contains("priced-o-valid"), "{line}");
    let mut ids: Vec<String> = sy
        .stored("shop/enforced")
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["o-invalid", "o-valid", "priced-o-valid"]);
}

/// In `record` mode a reply's type is discovered like an event posted to ingress.
#[tokio::test]
async fn a_reply_type_is_discovered_in_record_mode() {
    let sink = Sink::start(|_, e| {
        Answer::reply("com.example.stock.priced", &format!("priced-{}", e.id))
            .header("ce-source", "/stock/priced")
    })
    .await;
    let config = with_trigger(
        "stock",
        "recorded",
        "  filter: {attributes: {source: /stock}}\n",
        &sink.url,
    );
    let sy = Switchyard::start(&config);
    let mut reserved = order("s-1", json!({"sku": "A-1"}));
    reserved["type"] = json!("com.example.stock.reserved");
    reserved["source"] = json!("/stock");
    assert_eq!(post(&sy, "recorded", &reserved).await.status(), 202);
    let api = sy.url("/api/v1/namespaces/shop/brokers/recorded/eventtypes");
    let priced = common::eventually("the reply's type", Duration::from_secs(30), || async {
        let v: Value = common::get_json(&api).await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "com.example.stock.priced")
            .cloned()
    })
    .await;
    assert_eq!(priced["origin"], "discovered");
    assert_eq!(priced["source"], "/stock/priced");
    assert_eq!(priced["count"], 1);
}
