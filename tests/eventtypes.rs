//! Black-box tests of EventTypes (spec/eventtypes.md): schema enforcement at ingress in each
//! broker mode, discovery over the API and `switchyard get eventtypes`, load-time refusals.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

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

#[tokio::test]
async fn record_lists_a_new_type_after_the_first_event_and_keeps_it() {
    let mut sy = Switchyard::start(&config());
    let api = "/api/v1/namespaces/shop/brokers/recorded/eventtypes";
    let list = |sy: &Switchyard| {
        let url = sy.url(api);
        async move {
            let v: Value = client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
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
    let v: Value = client()
        .get(sy.url("/api/v1/namespaces/shop/eventtypes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

    let dangling = config().replace("name: enforced}", "name: missing}");
    let err = load_error(&dangling);
    assert!(
        err.contains("spec.reference: no Broker `missing` in namespace `shop`"),
        "{err}"
    );
}
