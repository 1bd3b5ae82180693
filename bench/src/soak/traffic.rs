//! The producers: mixed valid traffic at a steady rate (binary 1 KiB and 16 KiB, structured
//! JSON, batches of ten), retried as a careful producer would (on 5xx, 408, 429 and broken
//! connections, honouring `Retry-After`), with every event's fate in a ledger; and the bursts
//! of malformed requests and slow connections.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// The type the `orders` trigger takes: one event in five.
pub(super) const ORDER_TYPE: &str = "com.example.soak.order";
const OTHER_TYPE: &str = "com.example.soak.reading";

pub(super) fn type_of(id: u64) -> &'static str {
    if id.is_multiple_of(5) {
        ORDER_TYPE
    } else {
        OTHER_TYPE
    }
}

/// Each event's fate at the producer.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Not yet answered (or never sent).
    Pending = 0,
    /// 2xx: the broker promised it.
    Acked = 1,
    /// A 4xx other than 408 and 429: a valid event refused, which should never happen.
    Rejected = 2,
    /// Still refused or unanswered after two minutes of retries.
    GaveUp = 3,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) fates: Mutex<Vec<u8>>,
    acked: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    transport_errors: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
}

impl Counters {
    pub(super) fn acked_events(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    fn settle(&self, ids: std::ops::Range<u64>, fate: Fate) {
        if fate == Fate::Acked {
            self.acked.fetch_add(ids.end - ids.start, Ordering::Relaxed);
        }
        if let Ok(mut f) = self.fates.lock() {
            let end = usize::try_from(ids.end).unwrap_or(usize::MAX);
            if f.len() < end {
                f.resize(end, Fate::Pending as u8);
            }
            for id in ids {
                f[id as usize] = fate as u8;
            }
        }
    }

    fn status(&self, status: u16) {
        if let Ok(mut s) = self.statuses.lock() {
            *s.entry(status).or_default() += 1;
        }
    }

    pub(super) fn summary(&self) -> Value {
        let fates = self.fates.lock().map(|f| f.clone()).unwrap_or_default();
        let count = |fate: Fate| fates.iter().filter(|f| **f == fate as u8).count();
        json!({
            "events": fates.len(),
            "acked": count(Fate::Acked),
            "rejected": count(Fate::Rejected),
            "gave_up": count(Fate::GaveUp),
            "pending": count(Fate::Pending),
            "requests": self.requests.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "transport_errors": self.transport_errors.load(Ordering::Relaxed),
            "statuses": self.statuses.lock().map(|s| s.clone()).unwrap_or_default(),
        })
    }
}

pub(super) struct Generator {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    pub(super) counters: Arc<Counters>,
}

/// Producers sending at once; enough to keep the rate through a slow answer or two.
const WORKERS: usize = 64;

impl Generator {
    /// Starts sending `rate` events per second to the broker `default/default` at `base`.
    pub(super) fn start(base: &str, rate: u64) -> Generator {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let permits = Arc::new(Semaphore::new(0));
        let next_request = Arc::new(AtomicU64::new(0));
        let next_id = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        // Permits at the rate, every 10 ms; at most half a second's worth pile up while the
        // producers are stuck (a restart), the rest of the offered load is not sent.
        tasks.spawn({
            let (stop, permits) = (Arc::clone(&stop), Arc::clone(&permits));
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut owed = 0.0;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    owed += rate as f64 / 100.0;
                    let whole = owed as usize;
                    owed -= whole as f64;
                    if permits.available_permits() < (rate as usize / 2).max(20) {
                        permits.add_permits(whole);
                    }
                }
                permits.close();
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(WORKERS)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let url = format!("{base}/default/default");
        for _ in 0..WORKERS {
            let (client, url, counters, permits, next_request, next_id) = (
                client.clone(),
                url.clone(),
                Arc::clone(&counters),
                Arc::clone(&permits),
                Arc::clone(&next_request),
                Arc::clone(&next_id),
            );
            tasks.spawn(async move {
                loop {
                    let kind = next_request.fetch_add(1, Ordering::Relaxed) % 20;
                    let events = if kind == 17 || kind == 18 { 10 } else { 1 };
                    let Ok(permit) = permits.acquire_many(events).await else {
                        return;
                    };
                    permit.forget();
                    let first = next_id.fetch_add(u64::from(events), Ordering::Relaxed);
                    let ids = first..first + u64::from(events);
                    let request = request(&client, &url, kind, ids.clone());
                    let fate = send(&counters, request).await;
                    counters.settle(ids, fate);
                }
            });
        }
        Generator {
            stop,
            tasks,
            counters,
        }
    }

    /// Stops offering new events and waits for the requests under way (and their retries).
    pub(super) async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The request for `ids`: by `kind` (0–19), 14 in 20 binary 1 KiB, 3 structured JSON, 2 a
/// batch of ten, 1 binary 16 KiB.
fn request(
    client: &reqwest::Client,
    url: &str,
    kind: u64,
    ids: std::ops::Range<u64>,
) -> reqwest::RequestBuilder {
    let structured = |id: u64| {
        json!({
            "specversion": "1.0", "id": id.to_string(), "source": "/soak/producer",
            "type": type_of(id), "subject": format!("item-{}", id % 1000),
            "datacontenttype": "application/json",
            "data": {"reading": id, "unit": "celsius", "note": "x".repeat(400)},
        })
    };
    let post = client.post(url);
    match kind {
        0..=13 | 19 => {
            let id = ids.start;
            let size = if kind == 19 { 16 * 1024 } else { 1024 };
            post.header("ce-specversion", "1.0")
                .header("ce-id", id.to_string())
                .header("ce-source", "/soak/producer")
                .header("ce-type", type_of(id))
                .header("content-type", "application/octet-stream")
                .body(Bytes::from(vec![b'r'; size]))
        }
        14..=16 => post
            .header("content-type", "application/cloudevents+json")
            .body(structured(ids.start).to_string()),
        _ => post
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::Array(ids.map(structured).collect()).to_string()),
    }
}

/// Sends with retries for up to two minutes; the events' fate.
async fn send(counters: &Counters, request: reqwest::RequestBuilder) -> Fate {
    let started = Instant::now();
    loop {
        let Some(attempt) = request.try_clone() else {
            return Fate::GaveUp;
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let wait = match attempt.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                counters.status(status);
                if r.status().is_success() {
                    return Fate::Acked;
                }
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    return Fate::Rejected;
                }
                r.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::from_millis(100), |s| {
                        Duration::from_secs(s.min(5))
                    })
            }
            Err(_) => {
                counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                Duration::from_millis(100)
            }
        };
        if started.elapsed() > Duration::from_secs(120) {
            return Fate::GaveUp;
        }
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

/// Malformed requests, eight at a time for `seconds`, beside 500 connections that send half
/// a request header and then nothing; every answer should be a 4xx, and `/healthz` should
/// keep answering quickly. Returns the answers by status and `/healthz`'s slowest answer.
pub(super) async fn malformed_burst(base: &str, seconds: u64) -> Value {
    let until = Instant::now() + Duration::from_secs(seconds);
    let host = base.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..500 {
        if let Ok(c) = tokio::net::TcpStream::connect(&host).await {
            if c.writable().await.is_ok() {
                let _ =
                    c.try_write(b"POST /default/default HTTP/1.1\r\nHost: soak\r\nce-id: 1\r\n");
            }
            slow.push(c);
        }
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let statuses: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..8u64 {
        let (client, base, statuses) = (client.clone(), base.to_owned(), Arc::clone(&statuses));
        senders.spawn(async move {
            let mut i = worker;
            while Instant::now() < until {
                let key = match bad_request(&client, &base, i % BAD_KINDS).send().await {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(_) => "transport error".to_owned(),
                };
                if let Ok(mut s) = statuses.lock() {
                    *s.entry(key).or_default() += 1;
                }
                i += 8;
            }
        });
    }
    let mut healthz_max_ms: f64 = 0.0;
    let mut healthz_failures = 0u64;
    while Instant::now() < until {
        let t = Instant::now();
        let ok = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        healthz_max_ms = healthz_max_ms.max(t.elapsed().as_secs_f64() * 1e3);
        if !ok {
            healthz_failures += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while senders.join_next().await.is_some() {}
    let slow_open = slow.len();
    drop(slow);
    let statuses = statuses.lock().map(|s| s.clone()).unwrap_or_default();
    let server_errors: u64 = statuses
        .iter()
        .filter(|(k, _)| k.starts_with('5'))
        .map(|(_, v)| v)
        .sum();
    json!({
        "statuses": statuses,
        "server_errors": server_errors,
        "slow_connections": slow_open,
        "healthz_max_ms": healthz_max_ms,
        "healthz_failures": healthz_failures,
    })
}

const BAD_KINDS: u64 = 12;

/// Malformed request number `kind`.
fn bad_request(client: &reqwest::Client, base: &str, kind: u64) -> reqwest::RequestBuilder {
    let url = format!("{base}/default/default");
    let binary = |b: reqwest::RequestBuilder| {
        b.header("ce-specversion", "1.0")
            .header("ce-id", "bad")
            .header("ce-source", "/soak/bad")
            .header("ce-type", "com.example.soak.bad")
    };
    let structured = "application/cloudevents+json";
    match kind {
        // Not JSON.
        0 => client
            .post(&url)
            .header("content-type", structured)
            .body("{\"specversion\": \"1.0\", \"id\": "),
        // No id.
        1 => client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-source", "/soak/bad")
            .header("ce-type", "com.example.soak.bad")
            .body("x"),
        // An unknown spec version.
        2 => binary(client.post(&url)).header("ce-specversion", "9.9").body("x"),
        // Larger than the event limit.
        3 => binary(client.post(&url)).body(vec![b'x'; 8 << 20]),
        // A batch that is not an array.
        4 => client
            .post(&url)
            .header("content-type", "application/cloudevents-batch+json")
            .body("{\"a\": 1}"),
        // An unknown broker.
        5 => binary(client.post(format!("{base}/default/nope"))).body("x"),
        // A method ingress does not take.
        6 => binary(client.put(&url)).body("x"),
        // A structured event without a type.
        7 => client
            .post(&url)
            .header("content-type", structured)
            .body(r#"{"specversion":"1.0","id":"bad","source":"/soak/bad"}"#),
        // A 64 KiB header.
        8 => binary(client.post(&url))
            .header("ce-huge", "h".repeat(64 * 1024))
            .body("x"),
        // data_base64 that is not base64.
        9 => client.post(&url).header("content-type", structured).body(
            r#"{"specversion":"1.0","id":"bad","source":"/s","type":"t","data_base64":"!!"}"#,
        ),
        // A time that is not a time.
        10 => binary(client.post(&url))
            .header("ce-time", "yesterday")
            .body("x"),
        // A batch with one bad event among good ones.
        _ => client
            .post(&url)
            .header("content-type", "application/cloudevents-batch+json")
            .body(r#"[{"specversion":"1.0","id":"b1","source":"/s","type":"t"},{"specversion":"1.0"}]"#),
    }
}
