//! Filter cost per event with 1,000 exact-match triggers (DESIGN.md: ≤ 1 µs per event).
//!
//! `cargo bench -p switchyard-triggers --bench filter`
//!
//! - `index/1000-exact/hit`: the event's type is one trigger's; the index finds it.
//! - `index/1000-exact/miss`: no trigger wants the event.
//! - `index/1000-exact+10-prefix/hit`: ten unindexable triggers are evaluated as well.
//! - `scan/1000-exact/hit`: every filter evaluated in turn, what the index saves.
//! - `cesql/*`: typical CESQL filters, one at a time.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_core::CloudEvent;
use switchyard_triggers::filter::{Attr, Filter, FilterIndex};

fn event(ty: &str) -> CloudEvent {
    let json = format!(
        r#"{{"specversion":"1.0","id":"1","source":"/bench","type":"{ty}","subject":"orders/42","myext":"v","amount":250}}"#
    );
    switchyard_core::json::decode_event(json.as_bytes()).expect("a valid event")
}

fn exact(n: usize) -> Vec<Filter> {
    (0..n)
        .map(|i| Filter::Exact(Attr::Type, format!("com.example.type{i}")))
        .collect()
}

fn bench(c: &mut Criterion) {
    let hit = event("com.example.type500");
    let miss = event("org.other.thing");

    let index = FilterIndex::new(exact(1000));
    c.bench_function("index/1000-exact/hit", |b| {
        b.iter(|| {
            let mut n = 0;
            index.for_each_match(black_box(&hit), |_| n += 1);
            n
        })
    });
    c.bench_function("index/1000-exact/miss", |b| {
        b.iter(|| {
            let mut n = 0;
            index.for_each_match(black_box(&miss), |_| n += 1);
            n
        })
    });

    let mut mixed = exact(1000);
    mixed.extend((0..10).map(|i| Filter::Prefix(Attr::Subject, format!("orders/{i}"))));
    let index = FilterIndex::new(mixed);
    c.bench_function("index/1000-exact+10-prefix/hit", |b| {
        b.iter(|| {
            let mut n = 0;
            index.for_each_match(black_box(&hit), |_| n += 1);
            n
        })
    });

    let all = exact(1000);
    c.bench_function("scan/1000-exact/hit", |b| {
        b.iter(|| all.iter().filter(|f| f.matches(black_box(&hit))).count())
    });

    // Typical CESQL filters, one compiled expression each, on a matching event.
    let expressions = [
        ("cesql/equality", "type = 'com.example.type500'"),
        (
            "cesql/like-and",
            "type LIKE 'com.example.%' AND (subject = 'orders/42' OR myext = 'x')",
        ),
        (
            "cesql/in",
            "subject IN ('orders/1', 'orders/42', 'orders/99')",
        ),
        ("cesql/exists-and-int", "EXISTS amount AND amount > 100"),
        (
            "cesql/functions",
            "LOWER(source) = '/bench' AND LENGTH(subject) < 20",
        ),
    ];
    for (name, text) in expressions {
        let expr = switchyard_triggers::cesql::Expression::parse(text).expect("a valid expression");
        let filter = Filter::Cesql(Box::new(expr));
        c.bench_function(name, |b| b.iter(|| filter.matches(black_box(&hit))));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
