//! Validation cost per event: a typical 1 KiB `com.example.order.created` event checked
//! against its EventType's schema (draft 7, with a `$ref` to a second registered schema), as
//! ingress does in `enforce` mode. Run with `cargo bench -p switchyard-broker --bench schema`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_broker::eventtypes::{Check, Registry};
use switchyard_core::config::{Config, parse_text};
use switchyard_core::{CloudEvent, Data};

const CONFIG: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: orders, namespace: shop}
spec: {eventTypes: enforce}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: address, namespace: shop}
spec:
  type: com.example.address
  schema: https://schemas.example.com/address.json
  schemaData:
    type: object
    required: [street, city, zip, country]
    properties:
      street: {type: string}
      city: {type: string}
      zip: {type: string, pattern: "^[0-9A-Z -]{3,10}$"}
      country: {type: string, minLength: 2, maxLength: 2}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: order-created, namespace: shop}
spec:
  type: com.example.order.created
  source: /orders*
  schema: https://schemas.example.com/order.json
  reference: {kind: Broker, name: orders}
  schemaData:
    $schema: http://json-schema.org/draft-07/schema#
    type: object
    required: [orderId, createdAt, customer, items, total, currency]
    properties:
      orderId: {type: string}
      createdAt: {type: string}
      currency: {type: string, enum: [EUR, USD, GBP]}
      total: {type: number, minimum: 0}
      customer:
        type: object
        required: [id, email]
        properties:
          id: {type: string}
          email: {type: string}
          name: {type: string}
      shipTo: {$ref: "https://schemas.example.com/address.json"}
      items:
        type: array
        minItems: 1
        items:
          type: object
          required: [sku, qty, price]
          properties:
            sku: {type: string}
            qty: {type: integer, minimum: 1}
            price: {type: number, minimum: 0}
            title: {type: string}
"#;

fn order_event() -> CloudEvent {
    let items: Vec<String> = (0..9)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:04}","qty":{},"price":{}.99,"title":"A fine article, number {i}"}}"#,
                i + 1,
                10 + i
            )
        })
        .collect();
    let data = format!(
        r#"{{"orderId":"ord-2026-000123","createdAt":"2026-03-01T12:00:00Z","currency":"EUR","total":183.94,"customer":{{"id":"cus-42","email":"ada@example.com","name":"Ada Lovelace"}},"shipTo":{{"street":"Veldstraat 1","city":"Ghent","zip":"9000","country":"BE"}},"items":[{}],"note":"leave at the door, ring twice"}}"#,
        items.join(",")
    );
    let mut e = CloudEvent::new("e-1", "/orders/eu", "com.example.order.created").unwrap();
    e.datacontenttype = Some("application/json".into());
    e.data = Data::Json(data.into());
    e
}

fn bench(c: &mut Criterion) {
    let resources = parse_text(CONFIG, "bench.yaml").unwrap();
    let config =
        Config::from_resources(resources.into_iter().map(|r| ("bench.yaml".to_owned(), r)))
            .unwrap();
    let registry = Registry::compile(&config).unwrap();
    let event = order_event();
    let size = match &event.data {
        Data::Json(raw) => raw.len(),
        _ => 0,
    };
    assert!((900..=1200).contains(&size), "data is {size} bytes");
    assert!(matches!(
        registry.check("shop/orders", &event),
        Check::Passed(_)
    ));
    let mut invalid = event.clone();
    if let Data::Json(raw) = &invalid.data {
        invalid.data = Data::Json(raw.replace("\"qty\":1,", "\"qty\":0,").into());
    }
    assert!(matches!(
        registry.check("shop/orders", &invalid),
        Check::Failed(..)
    ));
    let mut group = c.benchmark_group("schema");
    group.throughput(criterion::Throughput::Bytes(size as u64));
    group.bench_function("validate_1KiB_order_valid", |b| {
        b.iter(|| black_box(registry.check("shop/orders", black_box(&event))).is_valid())
    });
    group.bench_function("validate_1KiB_order_invalid", |b| {
        b.iter(|| black_box(registry.check("shop/orders", black_box(&invalid))).is_valid())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
