//! The NATS peers of `switchyard-bench run`, against the machine's nats-server:
//!
//! - **NATS-BRIDGE** (`switchyard-bench nats-bridge`, its own process): the fair peer a user
//!   could build instead of Switchyard. HTTP in (axum, as Switchyard), publish to JetStream and
//!   wait for the stream's ack, then 202; a pull consumer posts each message to the sink
//!   (reqwest, as Switchyard) and acks on 2xx. JetStream's file storage acknowledges a publish
//!   once the message is written, and flushes to disk on an interval (`sync_interval`, 2 min by
//!   default), not per message: its 202 is not Switchyard's fsynced 202.
//! - **NATS-RAW** (in this process): JetStream publish (waiting for each ack) and a pull
//!   consumer, no HTTP: what the storage alone does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt as _;

/// Arguments of `switchyard-bench nats-bridge`.
#[derive(Debug, clap::Args)]
pub struct BridgeArgs {
    /// Where to listen for events.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The JetStream stream to use (created, with subject `{stream}.events`).
    #[arg(long)]
    stream: String,
    /// Where the consumer delivers.
    #[arg(long)]
    sink: String,
    /// Deliveries in flight at most.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
}

/// The headers a bridge carries over (the CloudEvents binary-mode ones and the content type).
fn carried(headers: &HeaderMap) -> async_nats::HeaderMap {
    let mut out = async_nats::HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if (n.starts_with("ce-") || n == "content-type")
            && let Ok(v) = value.to_str()
        {
            out.insert(n, v);
        }
    }
    out
}

struct Bridge {
    js: jetstream::Context,
    subject: String,
}

async fn ingress(State(b): State<Arc<Bridge>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let published =
        b.js.publish_with_headers(b.subject.clone(), carried(&headers), body)
            .await;
    match published {
        Ok(ack) => match ack.await {
            Ok(_) => StatusCode::ACCEPTED,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Creates (or recreates) the bench stream on file storage.
async fn fresh_stream(js: &jetstream::Context, stream: &str) -> Result<jetstream::stream::Stream> {
    let _ = js.delete_stream(stream).await;
    js.create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![format!("{stream}.events")],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot create the stream {stream}: {e}"))
}

async fn pull_consumer(
    stream: &jetstream::stream::Stream,
) -> Result<jetstream::consumer::PullConsumer> {
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the consumer: {e}"))
}

/// Runs the bridge until killed; prints `nats-bridge listening on http://…` first.
pub async fn bridge(args: BridgeArgs) -> Result<()> {
    let client = async_nats::connect(&args.nats)
        .await
        .with_context(|| format!("cannot connect to {}", args.nats))?;
    let js = jetstream::new(client);
    let stream = fresh_stream(&js, &args.stream).await?;
    let consumer = pull_consumer(&stream).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("http client")?;
    let sink = args.sink.clone();
    let in_flight = args.in_flight;
    tokio::spawn(async move {
        let Ok(messages) = consumer.messages().await else {
            return;
        };
        messages
            .for_each_concurrent(in_flight, |m| {
                let (http, sink) = (http.clone(), sink.clone());
                async move {
                    let Ok(m) = m else { return };
                    let mut request = http.post(&sink).body(m.payload.clone());
                    if let Some(h) = &m.headers {
                        for (name, values) in h.iter() {
                            for v in values {
                                request = request.header(name.as_ref() as &str, v.as_str());
                            }
                        }
                    }
                    // Acked on 2xx; otherwise left for JetStream to redeliver after ack_wait.
                    if let Ok(r) = request.send().await
                        && r.status().is_success()
                    {
                        let _ = m.ack().await;
                    }
                }
            })
            .await;
    });
    let app = Router::new().fallback(ingress).with_state(Arc::new(Bridge {
        js,
        subject: format!("{}.events", args.stream),
    }));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("nats-bridge listening on http://{}", listener.local_addr()?);
    }
    axum::serve(listener, app).await?;
    Ok(())
}

/// What a NATS-RAW run measured.
pub struct RawResult {
    /// Publishes acknowledged.
    pub accepted: u64,
    /// Publish-to-ack latencies, µs, sorted.
    pub acks: Vec<u64>,
    /// Messages consumed (and acked).
    pub delivered: u64,
    /// Seconds from the start until the last message was consumed (at least `seconds`).
    pub delivered_seconds: f64,
    /// Publish-to-consume latencies, µs, sorted.
    pub e2e: Vec<u64>,
    /// Seconds the publishers ran.
    pub seconds: f64,
}

/// Acks every message of `consumer`, counting them and their end-to-end latency.
async fn consume(
    consumer: jetstream::consumer::PullConsumer,
    delivered: Arc<AtomicU64>,
    last_us: Arc<AtomicU64>,
    e2e: Arc<std::sync::Mutex<Vec<u64>>>,
) {
    let Ok(mut messages) = consumer.messages().await else {
        return;
    };
    while let Some(Ok(m)) = messages.next().await {
        let sent = m
            .headers
            .as_ref()
            .and_then(|h| h.get("ce-benchsent"))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        let _ = m.ack().await;
        delivered.fetch_add(1, Ordering::Relaxed);
        last_us.store(crate::run::now_us(), Ordering::Relaxed);
        if let (Some(sent), Ok(mut e)) = (sent, e2e.lock()) {
            e.push(crate::run::now_us().saturating_sub(sent));
        }
    }
}

/// Publishes `payload` to `subject` one message at a time until `stop`; the µs each
/// acknowledgement took.
async fn publish(
    js: jetstream::Context,
    subject: String,
    payload: Bytes,
    stop: Arc<AtomicBool>,
) -> Vec<u64> {
    let mut acks = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = crate::run::now_us();
        let mut h = async_nats::HeaderMap::new();
        h.insert("ce-benchsent", sent.to_string().as_str());
        let Ok(ack) = js
            .publish_with_headers(subject.clone(), h, payload.clone())
            .await
        else {
            continue;
        };
        if ack.await.is_ok() {
            acks.push(crate::run::now_us().saturating_sub(sent));
        }
    }
    acks
}

/// Waits until `delivered` reaches `accepted`, or stalls for 2 s.
async fn catch_up(delivered: &AtomicU64, accepted: u64) {
    let mut last = 0;
    let mut idle = Instant::now();
    while delivered.load(Ordering::Relaxed) < accepted {
        let now = delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            idle = Instant::now();
        } else if idle.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// NATS-RAW: `publishers` closed-loop publishers (each waits for its ack) and one pull
/// consumer, for `seconds`.
pub async fn raw(
    url: &str,
    stream_name: &str,
    publishers: usize,
    seconds: u64,
    payload: &Bytes,
) -> Result<RawResult> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let js = jetstream::new(client);
    let stream = fresh_stream(&js, stream_name).await?;
    let consumer = pull_consumer(&stream).await?;
    let subject = format!("{stream_name}.events");
    let delivered = Arc::new(AtomicU64::new(0));
    let last_us = Arc::new(AtomicU64::new(0));
    let e2e = Arc::new(std::sync::Mutex::new(Vec::new()));
    let consuming = {
        let (delivered, e2e, last_us) = (
            Arc::clone(&delivered),
            Arc::clone(&e2e),
            Arc::clone(&last_us),
        );
        tokio::spawn(consume(consumer, delivered, last_us, e2e))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let started_us = crate::run::now_us();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let (js, subject, payload, stop) = (
            js.clone(),
            subject.clone(),
            payload.clone(),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(publish(js, subject, payload, stop)));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut acks = Vec::new();
    for t in tasks {
        if let Ok(a) = t.await {
            acks.extend(a);
        }
    }
    let accepted = acks.len() as u64;
    // Let the consumer catch up (or stall for 2 s).
    catch_up(&delivered, accepted).await;
    consuming.abort();
    let _ = js.delete_stream(stream_name).await;
    acks.sort_unstable();
    let mut e2e = std::mem::take(
        &mut *e2e
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    e2e.sort_unstable();
    Ok(RawResult {
        accepted,
        acks,
        delivered: delivered.load(Ordering::Relaxed),
        delivered_seconds: (last_us.load(Ordering::Relaxed).saturating_sub(started_us) as f64
            / 1e6)
            .max(elapsed),
        e2e,
        seconds: elapsed,
    })
}
