//! The generator: the event shape, the closed-loop and open-loop senders, and one measured
//! step (load, drain, CPU and RSS, percentiles).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

/// What the generator sends: the payload and the attributes that go with it.
#[derive(Debug, Clone)]
pub(super) struct Shape {
    pub(super) payload: Bytes,
    pub(super) ty: &'static str,
    pub(super) source: &'static str,
    pub(super) content_type: &'static str,
}

impl Shape {
    /// The binary-mode POST of event `id` to `url`, due at `sent_us` (`ce-benchsent`).
    pub(super) fn request(
        &self,
        client: &reqwest::Client,
        url: &str,
        id: u64,
        sent_us: u64,
    ) -> reqwest::RequestBuilder {
        client
            .post(url)
            .header("ce-specversion", "1.0")
            .header("ce-id", id.to_string())
            .header("ce-source", self.source)
            .header("ce-type", self.ty)
            .header("ce-benchsent", sent_us.to_string())
            .header("content-type", self.content_type)
            .body(self.payload.clone())
    }

    /// `n` bytes of opaque data, type `com.example.bench`.
    pub(super) fn opaque(n: usize) -> Shape {
        Shape {
            payload: Bytes::from(vec![b'x'; n]),
            ty: "com.example.bench",
            source: "/bench",
            content_type: "application/octet-stream",
        }
    }

    /// The 1 KiB order of `bench/fixtures/order.json`, valid against its EventType.
    pub(super) fn order() -> Shape {
        Shape {
            payload: Bytes::from_static(ORDER.trim_ascii_end().as_bytes()),
            ty: "com.example.order.created",
            source: "/orders/eu",
            content_type: "application/json",
        }
    }
}

/// The order workload's broker (`shop/orders`, enforcing) and EventTypes.
pub(super) const ORDERS: &str = include_str!("../../fixtures/orders.yaml");
/// A 1 KiB order event's data.
pub(super) const ORDER: &str = include_str!("../../fixtures/order.json");

/// Closed-loop load: `connections` senders back to back for `seconds`, spread over `urls`
/// (sender `c` sends to `urls[c % len]`). Returns accepted count, the ack latencies (µs) and
/// non-2xx count.
pub(super) async fn closed_loop(
    urls: &[String],
    connections: usize,
    seconds: u64,
    shape: &Shape,
    next_id: &Arc<AtomicU64>,
) -> (u64, Vec<u64>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (url, shape, next_id, stop) = (
            urls[c % urls.len()].clone(),
            shape.clone(),
            Arc::clone(next_id),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .no_proxy()
                .build()
                .unwrap_or_default();
            let mut acks = Vec::new();
            let mut failed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let sent = now_us();
                let r = shape.request(&client, &url, id, sent).send().await;
                match r {
                    Ok(r) if r.status().is_success() => acks.push(now_us().saturating_sub(sent)),
                    _ => failed += 1,
                }
            }
            (acks, failed)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acks = Vec::new();
    let mut failed = 0;
    for t in tasks {
        if let Ok((a, f)) = t.await {
            acks.extend(a);
            failed += f;
        }
    }
    acks.sort_unstable();
    (acks.len() as u64, acks, failed)
}

pub(super) struct Step {
    pub(super) system: String,
    pub(super) workload: String,
    /// Deliveries each accepted event makes (0: ingest only).
    pub(super) triggers: usize,
    /// How the generator sends.
    pub(super) load: Load,
    /// What each event is.
    pub(super) shape: Shape,
}

/// How the generator sends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Load {
    /// `connections` senders back to back: the saturation rate.
    Closed,
    /// A fixed rate (events per second), latency counted from each event's intended send time.
    Open(f64),
}

/// Open-loop load: event `i` is due at `start + i / rate` and is sent then, to
/// `urls[i % len]` (up to 1024 in flight; beyond that it waits, and its wait counts in its
/// latency, since `ce-benchsent` is the time it was due). Returns accepted count, the ack
/// latencies (µs, from the due time) and the failed count.
pub(super) async fn open_loop(
    urls: &[String],
    rate: f64,
    seconds: u64,
    shape: &Shape,
    next_id: &Arc<AtomicU64>,
) -> (u64, Vec<u64>, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let slots = Arc::new(tokio::sync::Semaphore::new(1024));
    let results = Arc::new(Mutex::new((Vec::new(), 0u64)));
    let total = (rate * seconds as f64) as u64;
    let start_us = now_us();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0u64;
    while i < total {
        let due_now = (started.elapsed().as_secs_f64() * rate) as u64;
        while i < due_now.min(total) {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let intended = start_us + (i as f64 * 1e6 / rate) as u64;
            let (client, url, shape, results) = (
                client.clone(),
                urls[usize::try_from(i).unwrap_or(0) % urls.len()].clone(),
                shape.clone(),
                Arc::clone(&results),
            );
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                let r = shape.request(&client, &url, id, intended).send().await;
                let mut res = results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match r {
                    Ok(r) if r.status().is_success() => {
                        res.0.push(now_us().saturating_sub(intended))
                    }
                    _ => res.1 += 1,
                }
                drop(permit);
            });
            i += 1;
        }
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while tasks.join_next().await.is_some() {}
    let (mut acks, failed) = std::mem::take(
        &mut *results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    acks.sort_unstable();
    (acks.len() as u64, acks, failed)
}

/// One step of `step`'s load sent to `targets` (spread over them), with the CPU and memory of
/// `pids` counted.
pub(super) async fn measure(
    step: &Step,
    targets: &[String],
    sink: &SinkShared,
    pids: &[u32],
    args: &RunArgs,
    seconds: u64,
) -> Value {
    let (load, shape) = (step.load, &step.shape);
    let payload_bytes = shape.payload.len();
    *sink
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = SinkState::default();
    let next_id = Arc::new(AtomicU64::new(0));
    let cpu_before = usage_of(pids).0;
    let started = Instant::now();
    let started_us = now_us();
    let (accepted, acks, failed) = match load {
        Load::Closed => closed_loop(targets, args.connections, seconds, shape, &next_id).await,
        Load::Open(rate) => open_loop(targets, rate, seconds, shape, &next_id).await,
    };
    let elapsed = started.elapsed().as_secs_f64();
    let expected = accepted * step.triggers.max(1) as u64;
    if step.triggers > 0 || step.system == "DIRECT" {
        drain(sink, expected).await;
    }
    let (cpu_after, rss) = usage_of(pids);
    let mut s = std::mem::take(
        &mut *sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    s.e2e_us.sort_unstable();
    let delivered = s.count;
    let lost = if step.triggers > 0 || step.system == "DIRECT" {
        expected.saturating_sub(delivered - s.duplicates)
    } else {
        0
    };
    let offered = match load {
        Load::Closed => Value::Null,
        Load::Open(rate) => json!(rate),
    };
    json!({
        "system": step.system,
        "workload": step.workload,
        "triggers": step.triggers,
        "payload_bytes": payload_bytes,
        "offered_per_s": offered,
        "seconds": elapsed,
        "accepted": accepted,
        "accepted_per_s": accepted as f64 / elapsed,
        "delivered_per_s": if delivered > 0 {
            delivered as f64 / (s.last_us.saturating_sub(started_us) as f64 / 1e6).max(elapsed)
        } else {
            0.0
        },
        "failed": failed,
        "ack_us": {"p50": percentile(&acks, 0.5), "p90": percentile(&acks, 0.9), "p99": percentile(&acks, 0.99), "p999": percentile(&acks, 0.999)},
        "e2e_us": {"p50": percentile(&s.e2e_us, 0.5), "p90": percentile(&s.e2e_us, 0.9), "p99": percentile(&s.e2e_us, 0.99), "p999": percentile(&s.e2e_us, 0.999)},
        "lost": lost,
        "duplicates": s.duplicates,
        "cpu_us_per_accepted_event": if accepted > 0 { (cpu_after - cpu_before) * 1e6 / accepted as f64 } else { 0.0 },
        "rss_bytes": rss,
    })
}

/// Runs one step against a fresh Switchyard with `config`.
pub(super) async fn switchyard_step(
    args: &RunArgs,
    config: &str,
    fsync: bool,
    step: Step,
    sink: &SinkShared,
    seconds: u64,
) -> Result<Value> {
    let broker = start_switchyard(&args.switchyard, config, fsync)?;
    let target = format!("{}/default/default", broker.base);
    let mut r = measure(&step, &[target], sink, &[broker.child.id()], args, seconds).await;
    r["store"] = store_commits(&broker.base).await;
    check_stored(&mut r);
    drop(broker);
    Ok(r)
}

/// Whether an open-loop step kept up: at least 97% of the offered rate delivered, and an
/// end-to-end p99 no worse than 10 times the lightest step's (at least 10 ms): past the knee
/// a queue builds up and the tail grows by orders of magnitude.
pub(super) fn sustained(r: &Value, lightest_p99_us: u64) -> bool {
    let offered = r["offered_per_s"].as_f64().unwrap_or(0.0);
    let delivered = r["delivered_per_s"].as_f64().unwrap_or(0.0);
    let bound = (10 * lightest_p99_us).max(10_000);
    delivered >= 0.97 * offered && r["e2e_us"]["p99"].as_u64().unwrap_or(u64::MAX) <= bound
}
