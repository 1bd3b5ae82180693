//! Validation cost per event: a typical 1 KiB `com.example.order.created` event checked
//! against its EventType's schema (draft 7, with a `$ref` to a second registered schema), as
//! ingress does in `enforce` mode. Run with `cargo bench -p switchyard-broker --bench schema`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_broker::eventtypes::{Check, Registry};
use switchyard_core::config::{Config, parse_text};
use switchyard_core::{CloudEvent, Data};

/// The broker, the order EventType and the address schema it `$ref`s.
const CONFIG: &str = include_str!("../../bench/fixtures/orders.yaml");
/// A typical 1 KiB order: the data of the event checked.
const ORDER: &str = include_str!("../../bench/fixtures/order.json");

fn order_event() -> CloudEvent {
    let data = ORDER.trim_end();
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
    // The share of the check that is parsing the data into a `serde_json::Value`.
    let data = ORDER.trim_end();
    group.bench_function("parse_1KiB_order", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(data)).unwrap())
    });
    group.bench_function("validate_1KiB_order_invalid", |b| {
        b.iter(|| black_box(registry.check("shop/orders", black_box(&invalid))).is_valid())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
