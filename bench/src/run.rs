//! `switchyard-bench run`: generator and sink in this process, systems under test as real
//! processes, every system measured in the same run so ratios are comparable.
//!
//! Each event carries its intended send time (`ce-benchsent`, µs since the Unix epoch) and a
//! sequence number as its id; the sink records end-to-end latency from the intended send time
//! (so a slow system cannot hide its latency behind a slow generator) and checks loss and
//! duplicates by id.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The switchyard binary to measure.
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    /// Where the JSON and Markdown reports go.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// Seconds per measured step.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections of the closed-loop generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Short steps (3 s) for a smoke run.
    #[arg(long)]
    quick: bool,
    /// The NATS server (with JetStream) of the NATS-BRIDGE and NATS-RAW peers.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Leave out the NATS peers.
    #[arg(long)]
    no_nats: bool,
}

/// The `p` quantile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What the in-process sink has seen. Each trigger delivers to its own path, so loss and
/// duplicates are counted per (path, id).
#[derive(Default)]
struct SinkState {
    e2e_us: Vec<u64>,
    seen: std::collections::HashMap<String, Vec<u8>>,
    duplicates: u64,
    count: u64,
    /// When the last delivery arrived (µs since the epoch): the delivered rate is taken over
    /// the time until then, not over the generator's window (deliveries go on while the
    /// broker drains its backlog).
    last_us: u64,
}

type SinkShared = Arc<Mutex<SinkState>>;

async fn sink_handler(
    State(state): State<SinkShared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> StatusCode {
    // The isolation workload's bad subscriber: slow, then failing. Not counted.
    if uri.path().starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(200)).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let now = now_us();
    let sent = headers
        .get("ce-benchsent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.count += 1;
    s.last_us = now;
    if let Some(sent) = sent {
        s.e2e_us.push(now.saturating_sub(sent));
    }
    if let Some(id) = id {
        let seen = s.seen.entry(uri.path().to_owned()).or_default();
        if seen.len() <= id {
            seen.resize(id + 1, 0);
        }
        let before = seen[id];
        seen[id] = before.saturating_add(1);
        if before > 0 {
            s.duplicates += 1;
        }
    }
    StatusCode::OK
}

async fn start_sink() -> Result<(String, SinkShared)> {
    let state: SinkShared = Arc::default();
    let app = Router::new()
        .fallback(sink_handler)
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, state))
}

/// What the generator sends: the payload and the attributes that go with it.
#[derive(Debug, Clone)]
struct Shape {
    payload: Bytes,
    ty: &'static str,
    source: &'static str,
    content_type: &'static str,
}

impl Shape {
    /// `n` bytes of opaque data, type `com.example.bench`.
    fn opaque(n: usize) -> Shape {
        Shape {
            payload: Bytes::from(vec![b'x'; n]),
            ty: "com.example.bench",
            source: "/bench",
            content_type: "application/octet-stream",
        }
    }

    /// The 1 KiB order of `bench/fixtures/order.json`, valid against its EventType.
    fn order() -> Shape {
        Shape {
            payload: Bytes::from_static(ORDER.trim_ascii_end().as_bytes()),
            ty: "com.example.order.created",
            source: "/orders/eu",
            content_type: "application/json",
        }
    }
}

/// The order workload's broker (`shop/orders`, enforcing) and EventTypes.
const ORDERS: &str = include_str!("../fixtures/orders.yaml");
/// A 1 KiB order event's data.
const ORDER: &str = include_str!("../fixtures/order.json");

/// Closed-loop load: `connections` senders back to back for `seconds`. Returns accepted
/// count, the ack latencies (µs) and non-2xx count.
async fn closed_loop(
    url: &str,
    connections: usize,
    seconds: u64,
    shape: &Shape,
    next_id: &Arc<AtomicU64>,
) -> (u64, Vec<u64>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, shape, next_id, stop) = (
            url.to_owned(),
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
                let r = client
                    .post(&url)
                    .header("ce-specversion", "1.0")
                    .header("ce-id", id.to_string())
                    .header("ce-source", shape.source)
                    .header("ce-type", shape.ty)
                    .header("ce-benchsent", sent.to_string())
                    .header("content-type", shape.content_type)
                    .body(shape.payload.clone())
                    .send()
                    .await;
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

/// The pid of the machine's `nats-server`, whose CPU and memory are part of NATS-BRIDGE's.
fn nats_server_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "nats-server").then_some(pid)
    })
}

/// CPU time (user + system, seconds) and RSS (bytes) summed over processes.
fn usage_of(pids: &[u32]) -> (f64, u64) {
    pids.iter()
        .map(|p| proc_usage(*p))
        .fold((0.0, 0), |(c, r), (c2, r2)| (c + c2, r + r2))
}

/// `/proc/<pid>` CPU time (user + system) in seconds, and RSS in bytes.
fn proc_usage(pid: u32) -> (f64, u64) {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    (ticks / 100.0, rss * 1024)
}

fn fsync_probe(size: usize, n: usize) -> Result<(u64, u64)> {
    use std::io::Write as _;
    let dir = tempfile_dir()?;
    let path = dir.join("probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![7u8; size];
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&buf)?;
        let t = Instant::now();
        f.sync_data()?;
        us.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    let _ = std::fs::remove_dir_all(&dir);
    us.sort_unstable();
    Ok((percentile(&us, 0.5), percentile(&us, 0.99)))
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-bench-{}-{}",
        std::process::id(),
        now_us()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A system under test running as its own process, killed (and its data removed) on drop.
struct Broker {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A config: the Broker `default` and `triggers` match-all Triggers delivering to
/// `{sink}t{i}`.
fn match_all(triggers: usize, sink: &str) -> String {
    let mut config = BROKER.to_owned();
    for i in 0..triggers {
        config.push_str(&trigger(&format!("t{i}"), "", &format!("{sink}t{i}"), ""));
    }
    config
}

const BROKER: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";

/// One Trigger document; `filter` and `extra` are spec fields (`filter: {…}, `), may be empty.
fn trigger(name: &str, filter: &str, uri: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec: {{broker: default, {filter}{extra}subscriber: {{uri: '{uri}'}}}}\n"
    )
}

fn start_switchyard(bin: &PathBuf, config: &str, fsync: bool) -> Result<Broker> {
    let dir = tempfile_dir()?;
    std::fs::write(dir.join("config.yaml"), config)?;
    let (child, base) = spawn_switchyard(bin, &dir, fsync)?;
    Ok(Broker { child, base, dir })
}

/// Starts `switchyard serve` on `dir` (its config.yaml and data/); the child and its base URL.
fn spawn_switchyard(bin: &PathBuf, dir: &std::path::Path, fsync: bool) -> Result<(Child, String)> {
    use std::io::BufRead as _;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped());
    if !fsync {
        cmd.arg("--no-fsync");
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("switchyard listening on ") else {
        bail!("unexpected first line from switchyard: {line:?}");
    };
    Ok((child, base.to_owned()))
}

/// Starts the NATS-BRIDGE peer (this binary's `nats-bridge`) delivering to `sink`.
fn start_nats_bridge(nats: &str, sink: &str) -> Result<Broker> {
    use std::io::BufRead as _;
    let dir = tempfile_dir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["nats-bridge", "--nats", nats, "--sink", sink])
        .arg("--stream")
        .arg(format!("BENCHBRIDGE{}", std::process::id()))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the NATS bridge")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("nats-bridge listening on ") else {
        bail!("the NATS bridge did not start: {line:?}");
    };
    Ok(Broker {
        child,
        base: base.to_owned(),
        dir,
    })
}

/// Waits until the sink has `expected` deliveries or nothing arrives for two seconds.
async fn drain(sink: &SinkShared, expected: u64) {
    let mut last = 0;
    let mut idle = Instant::now();
    loop {
        let count = sink.lock().map_or(0, |s| s.count);
        if count >= expected {
            return;
        }
        if count != last {
            last = count;
            idle = Instant::now();
        } else if idle.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Step {
    system: String,
    workload: String,
    /// Deliveries each accepted event makes (0: ingest only).
    triggers: usize,
    /// How the generator sends.
    load: Load,
    /// What each event is.
    shape: Shape,
}

/// How the generator sends.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// `connections` senders back to back: the saturation rate.
    Closed,
    /// A fixed rate (events per second), latency counted from each event's intended send time.
    Open(f64),
}

/// Open-loop load: event `i` is due at `start + i / rate` and is sent then (up to 1024 in
/// flight; beyond that it waits, and its wait counts in its latency, since `ce-benchsent` is
/// the time it was due). Returns accepted count, the ack latencies (µs, from the due time)
/// and the failed count.
async fn open_loop(
    url: &str,
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
                url.to_owned(),
                shape.clone(),
                Arc::clone(&results),
            );
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                let r = client
                    .post(&url)
                    .header("ce-specversion", "1.0")
                    .header("ce-id", id.to_string())
                    .header("ce-source", shape.source)
                    .header("ce-type", shape.ty)
                    .header("ce-benchsent", intended.to_string())
                    .header("content-type", shape.content_type)
                    .body(shape.payload)
                    .send()
                    .await;
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

async fn measure(
    step: &Step,
    target: &str,
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
        Load::Closed => closed_loop(target, args.connections, seconds, shape, &next_id).await,
        Load::Open(rate) => open_loop(target, rate, seconds, shape, &next_id).await,
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
async fn switchyard_step(
    args: &RunArgs,
    config: &str,
    fsync: bool,
    step: Step,
    sink: &SinkShared,
    seconds: u64,
) -> Result<Value> {
    let broker = start_switchyard(&args.switchyard, config, fsync)?;
    let target = format!("{}/default/default", broker.base);
    let mut r = measure(&step, &target, sink, &[broker.child.id()], args, seconds).await;
    r["store"] = store_commits(&broker.base).await;
    check_stored(&mut r);
    drop(broker);
    Ok(r)
}

/// The store's group commits during a step, from the broker's own histograms: how many, how
/// many events each held on average, their mean and p99 bound, how many took longer than
/// 100 ms, and the p99 bounds of an append's queue wait, of ingress's wait for the store and
/// of the whole 202 (a stall in the step's tail is the store's when these show it, and
/// elsewhere when not).
async fn store_commits(base: &str) -> Value {
    let text = match reqwest::get(format!("{base}/metrics")).await {
        Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
        _ => String::new(),
    };
    let sample = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    };
    // Without the histograms (the scrape failed) there is nothing to report, and no loss
    // can be judged from them.
    let (Some(commits), Some(events)) = (
        sample("switchyard_store_commit_seconds_count "),
        sample("switchyard_store_commit_batch_events_sum "),
    ) else {
        return Value::Null;
    };
    let within = sample("switchyard_store_commit_seconds_bucket{le=\"0.1\"} ").unwrap_or(commits);
    let seconds = sample("switchyard_store_commit_seconds_sum ").unwrap_or(0.0);
    json!({
        "events": events,
        "commits": commits,
        "commit_p99_at_most_ms": p99_bound_ms(&text, "switchyard_store_commit_seconds_bucket{", ""),
        "ingress_202_p99_at_most_ms": p99_bound_ms(&text, "switchyard_ingress_latency_seconds_bucket{", "response_code=\"202\""),
        "append_queue_p99_at_most_ms": p99_bound_ms(&text, "switchyard_store_append_queue_seconds_bucket{", ""),
        "ingress_append_p99_at_most_ms": p99_bound_ms(&text, "switchyard_ingress_append_seconds_bucket{", ""),
        "commits_over_100ms": commits - within,
        "events_per_commit": if commits > 0.0 { events / commits } else { 0.0 },
        "mean_commit_us": if commits > 0.0 { seconds * 1e6 / commits } else { 0.0 },
    })
}

/// The smallest bucket bound (in ms) that holds 99 % of a histogram's samples: an upper bound
/// of its p99. `prefix` names the histogram's bucket lines; lines must also contain `label`.
/// Buckets of several label sets (brokers) are added up.
fn p99_bound_ms(text: &str, prefix: &str, label: &str) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
    {
        let Some((labels, count)) = line.rsplit_once("} ") else {
            continue;
        };
        let Some(le) = labels
            .rsplit_once("le=\"")
            .and_then(|(_, v)| v.split('"').next())
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let Ok(count) = count.trim().parse::<f64>() else {
            continue;
        };
        match buckets.iter_mut().find(|(b, _)| b.total_cmp(&le).is_eq()) {
            Some(entry) => entry.1 += count,
            None => buckets.push((le, count)),
        }
    }
    let total = text
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label) && l.contains("le=\"+Inf\""))
        .filter_map(|l| {
            l.rsplit_once("} ")
                .and_then(|(_, c)| c.trim().parse::<f64>().ok())
        })
        .sum::<f64>();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
        .into_iter()
        .find(|&(_, count)| total > 0.0 && count >= 0.99 * total)
        .map(|(le, _)| le * 1e3)
}

/// Loss in a step without triggers, where the sink sees nothing: events that got a 202 but
/// were not in any of the store's commits (`switchyard_store_commit_batch_events_sum`).
/// Steps with triggers are checked by id at the sink instead.
fn check_stored(r: &mut Value) {
    if r["triggers"].as_u64() != Some(0) {
        return;
    }
    let Some(stored) = r["store"]["events"].as_f64() else {
        return;
    };
    let accepted = r["accepted"].as_u64().unwrap_or(0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let stored = stored as u64;
    r["lost"] = json!(accepted.saturating_sub(stored));
}

/// Rounds of the schema-enforcement comparison (each runs both modes): six in a full run,
/// four with `--quick`. An even number, so each mode goes first as often as the other and a
/// drift across the comparison cancels out.
fn enforce_rounds(quick: bool) -> u32 {
    if quick { 4 } else { 6 }
}

/// How many enforcement rounds a run's results hold.
fn rounds_in(results: &[Value]) -> u32 {
    (1..)
        .take_while(|&round| {
            results
                .iter()
                .any(|r| r["workload"].as_str() == Some(enforce_workload("off", round).as_str()))
        })
        .count()
        .try_into()
        .unwrap_or(0)
}

/// The workload name of one enforcement step.
fn enforce_workload(mode: &str, round: u32) -> String {
    format!("saturation ingest, 1 KiB orders, eventTypes {mode}, round {round}")
}

/// One enforcement step: 1 KiB orders into a fresh broker with `eventTypes: {mode}`, then an
/// order with a quantity of 0 (it breaks the schema) as proof that validation ran, or did not.
async fn enforce_step(
    args: &RunArgs,
    mode: &str,
    round: u32,
    sink: &SinkShared,
    seconds: u64,
) -> Result<Value> {
    let config = ORDERS.replace(
        "spec: {eventTypes: enforce}",
        &format!("spec: {{eventTypes: {mode}}}"),
    );
    let broker = start_switchyard(&args.switchyard, &config, true)?;
    let step = Step {
        system: "SWITCHYARD".into(),
        workload: enforce_workload(mode, round),
        triggers: 0,
        load: Load::Closed,
        shape: Shape::order(),
    };
    let url = format!("{}/shop/orders", broker.base);
    let mut r = measure(&step, &url, sink, &[broker.child.id()], args, seconds).await;
    r["store"] = store_commits(&broker.base).await;
    check_stored(&mut r);
    let invalid = ORDER.replacen("\"qty\":1,", "\"qty\":0,", 1);
    let status = reqwest::Client::new()
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "invalid-order")
        .header("ce-source", "/orders/eu")
        .header("ce-type", "com.example.order.created")
        .header("content-type", "application/json")
        .body(invalid)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    drop(broker);
    r["invalid_order_status"] = json!(status);
    Ok(r)
}

/// Enforce / off over every round: accepted events, and CPU per event (enforce minus off).
fn enforce_vs_off(results: &[Value]) -> (f64, f64) {
    let sum = |mode: &str, key: &str| -> f64 {
        (1..=rounds_in(results))
            .map(|round| rate_of(results, "SWITCHYARD", &enforce_workload(mode, round), key))
            .sum()
    };
    let off = sum("off", "accepted_per_s");
    let ratio = if off > 0.0 {
        sum("enforce", "accepted_per_s") / off
    } else {
        0.0
    };
    let rounds = f64::from(rounds_in(results).max(1));
    let cpu = (sum("enforce", "cpu_us_per_accepted_event")
        - sum("off", "cpu_us_per_accepted_event"))
        / rounds;
    (ratio, cpu)
}

/// The statuses the invalid order got in every round of `mode`, if they were all the same.
fn invalid_order_status(results: &[Value], mode: &str) -> u64 {
    let statuses: Vec<u64> = (1..=rounds_in(results))
        .map(|round| status_of(results, &enforce_workload(mode, round)))
        .collect();
    if statuses.windows(2).all(|w| w[0] == w[1]) {
        statuses.first().copied().unwrap_or(0)
    } else {
        0
    }
}

/// Whether an open-loop step kept up: at least 97% of the offered rate delivered, and an
/// end-to-end p99 no worse than 10 times the lightest step's (at least 10 ms): past the knee
/// a queue builds up and the tail grows by orders of magnitude.
fn sustained(r: &Value, lightest_p99_us: u64) -> bool {
    let offered = r["offered_per_s"].as_f64().unwrap_or(0.0);
    let delivered = r["delivered_per_s"].as_f64().unwrap_or(0.0);
    let bound = (10 * lightest_p99_us).max(10_000);
    delivered >= 0.97 * offered && r["e2e_us"]["p99"].as_u64().unwrap_or(u64::MAX) <= bound
}

/// Posts `batches` copies of the batch `body` to `url`, 16 at a time, retrying refusals.
async fn fill_batches(client: &reqwest::Client, url: &str, body: &Bytes, batches: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, body, next) = (
            client.clone(),
            url.to_owned(),
            body.clone(),
            Arc::clone(&next),
        );
        senders.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < batches {
                for _ in 0..1000 {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(body.clone())
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
}

/// Waits (up to 120 s) until the trigger owes about `events` (within 10: the held trigger
/// may deliver one now and then); `switchyard_trigger_lag_events` updates every second.
async fn wait_lag(client: &reqwest::Client, metrics_url: &str, events: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lag = async {
            let text = client
                .get(metrics_url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .find(|l| l.starts_with("switchyard_trigger_lag_events"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        }
        .await;
        if lag.unwrap_or(0.0) >= events - 10.0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The restart workload: `n` events queued behind a trigger that is (nearly) never allowed to
/// deliver, RSS before and after, then `kill -9` and the time until the restarted broker
/// takes an event again and until its trigger has all `n` queued again.
async fn restart_with_backlog(args: &RunArgs, sink_url: &str, n: u64) -> Result<Value> {
    let config = format!(
        "{BROKER}{}",
        trigger("held", "", &format!("{sink_url}held"), "rateLimit: 0.001, ")
    );
    let broker = start_switchyard(&args.switchyard, &config, true)?;
    let pid = broker.child.id();
    let client = reqwest::Client::builder().no_proxy().build()?;
    // Let the idle server settle before reading its baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = proc_usage(pid).1;
    // Batches of 100 events, 16 in flight.
    let per_batch = 100u64;
    let event = json!({
        "specversion": "1.0", "id": "x", "source": "/bench", "type": "com.example.bench",
        "datacontenttype": "text/plain", "data": "x".repeat(args.payload_bytes),
    });
    let body = Bytes::from(serde_json::to_vec(&vec![event; per_batch as usize])?);
    let url = format!("{}/default/default", broker.base);
    let batches = n.div_ceil(per_batch);
    let queued = batches * per_batch;
    let lag_url = format!("{}/metrics", broker.base);
    // Half the backlog, then the rest: RSS at both shows what each queued event adds once
    // redb's page cache (bounded, 64 MiB by default) has filled.
    let fill_started = Instant::now();
    fill_batches(&client, &url, &body, batches / 2).await;
    let mut complete = wait_lag(&client, &lag_url, (batches / 2 * per_batch) as f64).await;
    let rss_half = proc_usage(pid).1;
    fill_batches(&client, &url, &body, batches - batches / 2).await;
    let fill_s = fill_started.elapsed().as_secs_f64();
    // The trigger may deliver one event a while (rateLimit 0.001/s): "all" is within 10.
    let all = queued as f64;
    complete &= wait_lag(&client, &lag_url, all).await;
    let rss_full = proc_usage(pid).1;
    let mut broker = broker;
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let restart_started = Instant::now();
    let (child, base) = spawn_switchyard(&args.switchyard, &broker.dir, true)?;
    broker.child = child;
    broker.base = base;
    let listening_ms = restart_started.elapsed().as_secs_f64() * 1e3;
    let url = format!("{}/default/default", broker.base);
    loop {
        let r = client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", "after-restart")
            .header("ce-source", "/bench")
            .header("ce-type", "com.example.bench")
            .body("x")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().as_u16() == 202) {
            break;
        }
        if restart_started.elapsed() > Duration::from_secs(120) {
            bail!("the restarted broker took no event within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let accepting_ms = restart_started.elapsed().as_secs_f64() * 1e3;
    let lag_url = format!("{}/metrics", broker.base);
    complete &= wait_lag(&client, &lag_url, all).await;
    let requeued_ms = restart_started.elapsed().as_secs_f64() * 1e3;
    let rss_restarted = proc_usage(broker.child.id()).1;
    drop(broker);
    Ok(json!({
        "queued": queued,
        "fill_s": fill_s,
        "restart_listening_ms": listening_ms,
        "restart_accepting_ms": accepting_ms,
        "restart_requeued_ms": requeued_ms,
        "rss_idle_bytes": rss_idle,
        "rss_half_bytes": rss_half,
        "rss_full_bytes": rss_full,
        "rss_bytes_per_queued_event_marginal": (rss_full.saturating_sub(rss_half)) as f64 / ((batches - batches / 2) * per_batch) as f64,
        "complete": complete,
        "rss_restarted_bytes": rss_restarted,
        "rss_bytes_per_queued_event": (rss_full.saturating_sub(rss_idle)) as f64 / queued as f64,
        "rss_bytes_per_queued_event_after_restart": (rss_restarted.saturating_sub(rss_idle)) as f64 / queued as f64,
    }))
}

fn raw_result(r: &crate::nats::RawResult, payload_bytes: usize) -> Value {
    json!({
        "system": "NATS-RAW",
        "workload": "publish + pull, no HTTP",
        "triggers": 1,
        "payload_bytes": payload_bytes,
        "offered_per_s": Value::Null,
        "seconds": r.seconds,
        "accepted_per_s": r.accepted as f64 / r.seconds,
        "delivered_per_s": r.delivered as f64 / r.delivered_seconds,
        "failed": 0,
        "ack_us": {"p50": percentile(&r.acks, 0.5), "p90": percentile(&r.acks, 0.9), "p99": percentile(&r.acks, 0.99), "p999": percentile(&r.acks, 0.999)},
        "e2e_us": {"p50": percentile(&r.e2e, 0.5), "p90": percentile(&r.e2e, 0.9), "p99": percentile(&r.e2e, 0.99), "p999": percentile(&r.e2e, 0.999)},
        "lost": r.accepted.saturating_sub(r.delivered),
        "duplicates": 0,
        "cpu_us_per_accepted_event": 0.0,
        "rss_bytes": 0,
    })
}

pub async fn run(args: RunArgs) -> Result<()> {
    let seconds = if args.quick { 3 } else { args.seconds };
    let kib = args.payload_bytes;
    let (p4_50, p4_99) = fsync_probe(4096, 200)?;
    let (p256_50, p256_99) = fsync_probe(256 * 1024, 100)?;
    let (sink_url, sink) = start_sink().await?;
    let mut results: Vec<Value> = Vec::new();
    let step = |system: &str, workload: String, triggers: usize, load: Load, shape: Shape| Step {
        system: system.into(),
        workload,
        triggers,
        load,
        shape,
    };
    let log = |r: &Value| {
        tracing_line(r);
    };

    for bytes in [kib, 128] {
        let r = measure(
            &step(
                "DIRECT",
                format!("saturation, {bytes} B"),
                0,
                Load::Closed,
                Shape::opaque(bytes),
            ),
            &sink_url,
            &sink,
            &[],
            &args,
            seconds,
        )
        .await;
        log(&r);
        results.push(r);
    }
    for (system, fsync, bytes) in [
        ("SWITCHYARD", true, kib),
        ("SWITCHYARD-nofsync", false, kib),
        ("SWITCHYARD", true, 128),
    ] {
        let r = switchyard_step(
            &args,
            BROKER,
            fsync,
            step(
                system,
                format!("saturation ingest, {bytes} B"),
                0,
                Load::Closed,
                Shape::opaque(bytes),
            ),
            &sink,
            seconds,
        )
        .await?;
        log(&r);
        results.push(r);
    }
    // Schema enforcement's cost: 1 KiB orders into a broker with their EventType, validated
    // (`eventTypes: enforce`) or not (`off`). The two differ by a few per cent while steps of
    // one run drift by ten, so the modes alternate (off, enforce, enforce, off, …) in shorter
    // steps and the ratio is taken over all of them.
    let enforce_seconds = (seconds / 2).max(2);
    for round in 1..=enforce_rounds(args.quick) {
        let modes = if round % 2 == 1 {
            ["off", "enforce"]
        } else {
            ["enforce", "off"]
        };
        for mode in modes {
            let r = enforce_step(&args, mode, round, &sink, enforce_seconds).await?;
            log(&r);
            results.push(r);
        }
    }
    for triggers in [1, 10, 100] {
        let r = switchyard_step(
            &args,
            &match_all(triggers, &sink_url),
            true,
            step(
                "SWITCHYARD",
                format!("saturation, {triggers} trigger(s)"),
                triggers,
                Load::Closed,
                Shape::opaque(kib),
            ),
            &sink,
            seconds,
        )
        .await?;
        log(&r);
        results.push(r);
    }
    // Filter cost: 1,000 exact filters that never match, and one match-all.
    let mut filtered = match_all(1, &sink_url);
    for i in 0..1000 {
        filtered.push_str(&trigger(
            &format!("miss{i}"),
            &format!("filter: {{attributes: {{type: com.example.other{i}}}}}, "),
            &format!("{sink_url}miss"),
            "",
        ));
    }
    let r = switchyard_step(
        &args,
        &filtered,
        true,
        step(
            "SWITCHYARD",
            "saturation, 1,000 non-matching + 1 trigger".into(),
            1,
            Load::Closed,
            Shape::opaque(kib),
        ),
        &sink,
        seconds,
    )
    .await?;
    log(&r);
    results.push(r);
    // Isolation: one healthy trigger next to one whose subscriber is slow and failing.
    let isolated = format!(
        "{}{}",
        match_all(1, &sink_url),
        trigger(
            "bad",
            "",
            &format!("{sink_url}slow"),
            "delivery: {retry: 2, backoffDelay: PT0.1S}, "
        )
    );
    let r = switchyard_step(
        &args,
        &isolated,
        true,
        step(
            "SWITCHYARD",
            "saturation, 1 trigger + 1 slow failing".into(),
            1,
            Load::Closed,
            Shape::opaque(kib),
        ),
        &sink,
        seconds,
    )
    .await?;
    log(&r);
    results.push(r);

    // Open-loop ladder with one trigger, as fractions of its closed-loop rate, to the knee.
    let saturation = rate_of(
        &results,
        "SWITCHYARD",
        "saturation, 1 trigger(s)",
        "delivered_per_s",
    );
    let mut knee = 0.0;
    let mut lightest_p99_us = None;
    for fraction in [0.25, 0.5, 0.75, 0.9, 1.0, 1.1] {
        let rate = (saturation * fraction).max(100.0);
        let r = switchyard_step(
            &args,
            &match_all(1, &sink_url),
            true,
            step(
                "SWITCHYARD",
                format!("open loop {rate:.0}/s, 1 trigger"),
                1,
                Load::Open(rate),
                Shape::opaque(kib),
            ),
            &sink,
            seconds,
        )
        .await?;
        log(&r);
        let lightest = *lightest_p99_us.get_or_insert(r["e2e_us"]["p99"].as_u64().unwrap_or(0));
        let kept_up = sustained(&r, lightest);
        results.push(r);
        if !kept_up {
            break;
        }
        knee = rate;
    }
    // Latency at half the knee, against DIRECT at the same rate.
    let half = (knee / 2.0).max(100.0);
    let direct_half = measure(
        &step(
            "DIRECT",
            format!("open loop {half:.0}/s (half the knee)"),
            0,
            Load::Open(half),
            Shape::opaque(kib),
        ),
        &sink_url,
        &sink,
        &[],
        &args,
        seconds,
    )
    .await;
    log(&direct_half);
    let sy_half = switchyard_step(
        &args,
        &match_all(1, &sink_url),
        true,
        step(
            "SWITCHYARD",
            format!("open loop {half:.0}/s (half the knee), 1 trigger"),
            1,
            Load::Open(half),
            Shape::opaque(kib),
        ),
        &sink,
        seconds,
    )
    .await?;
    log(&sy_half);
    results.push(direct_half.clone());
    results.push(sy_half.clone());

    if !args.no_nats {
        let bridge = start_nats_bridge(&args.nats, &format!("{sink_url}bridge"))?;
        let pids: Vec<u32> = [Some(bridge.child.id()), nats_server_pid()]
            .into_iter()
            .flatten()
            .collect();
        let r = measure(
            &step(
                "NATS-BRIDGE",
                "saturation, 1 consumer".into(),
                1,
                Load::Closed,
                Shape::opaque(kib),
            ),
            &format!("{}/", bridge.base),
            &sink,
            // The bridge and the JetStream server both do its work.
            &pids,
            &args,
            seconds,
        )
        .await;
        log(&r);
        results.push(r);
        drop(bridge);
        let payload = Bytes::from(vec![b'x'; kib]);
        let stream = format!("BENCHRAW{}", std::process::id());
        let r = crate::nats::raw(&args.nats, &stream, args.connections, seconds, &payload).await?;
        let r = raw_result(&r, kib);
        log(&r);
        results.push(r);
    }

    let backlog = if args.quick { 100_000 } else { 1_000_000 };
    let restart = restart_with_backlog(&args, &sink_url, backlog).await?;

    let direct_rate = rate_of(
        &results,
        "DIRECT",
        &format!("saturation, {kib} B"),
        "accepted_per_s",
    );
    let one = rate_of(
        &results,
        "SWITCHYARD",
        "saturation, 1 trigger(s)",
        "delivered_per_s",
    );
    let bridge = rate_of(
        &results,
        "NATS-BRIDGE",
        "saturation, 1 consumer",
        "delivered_per_s",
    );
    let p99 = |r: &Value| r["e2e_us"]["p99"].as_f64().unwrap_or(0.0);
    let ratios = json!({
        "ingest_vs_direct": rate_of(&results, "SWITCHYARD", &format!("saturation ingest, {kib} B"), "accepted_per_s") / direct_rate,
        "ingest_128B_vs_direct_128B": rate_of(&results, "SWITCHYARD", "saturation ingest, 128 B", "accepted_per_s") / rate_of(&results, "DIRECT", "saturation, 128 B", "accepted_per_s"),
        "one_trigger_e2e_vs_direct": one / direct_rate,
        "one_trigger_e2e_vs_nats_bridge": if bridge > 0.0 { one / bridge } else { 0.0 },
        "fanout10_vs_fanout1_deliveries": rate_of(&results, "SWITCHYARD", "saturation, 10 trigger(s)", "delivered_per_s") / one,
        "fanout100_vs_fanout1_deliveries": rate_of(&results, "SWITCHYARD", "saturation, 100 trigger(s)", "delivered_per_s") / one,
        "filter_1000_vs_1_trigger": rate_of(&results, "SWITCHYARD", "saturation, 1,000 non-matching + 1 trigger", "delivered_per_s") / one,
        "invalid_order_status_enforce": invalid_order_status(&results, "enforce"),
        "invalid_order_status_off": invalid_order_status(&results, "off"),
        "enforce_vs_off_ingest": enforce_vs_off(&results).0,
        "enforce_cpu_us_per_event_extra": enforce_vs_off(&results).1,
        "enforce_rounds": rounds_in(&results),
        "isolation_vs_1_trigger": rate_of(&results, "SWITCHYARD", "saturation, 1 trigger + 1 slow failing", "delivered_per_s") / one,
        "knee_per_s": knee,
        "p99_at_half_knee_us": p99(&sy_half),
        "half_knee_per_s": half,
        "p99_bar_us": 2.0 * p99(&direct_half) + p4_99 as f64,
    });
    let lost: u64 = results
        .iter()
        .map(|r| r["lost"].as_u64().unwrap_or(0))
        .sum();
    let report = json!({
        "machine": {"cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get)},
        "fsync_us": {"4KiB": {"p50": p4_50, "p99": p4_99}, "256KiB": {"p50": p256_50, "p99": p256_99}},
        "payload_bytes": kib,
        "connections": args.connections,
        "seconds_per_step": seconds,
        "results": results,
        "restart": restart,
        "ratios": ratios,
        "lost_total": lost,
    });
    let md = markdown(&report, seconds);
    std::fs::create_dir_all(&args.out_dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    std::fs::write(
        args.out_dir.join(format!("{stamp}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out_dir.join(format!("{stamp}.md")), &md)?;
    #[allow(clippy::print_stdout)]
    {
        print!("{md}");
    }
    Ok(())
}

/// A progress line on stderr per step, so a long run shows where it is.
fn tracing_line(r: &Value) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "{} | {} | accepted {:.0}/s delivered {:.0}/s e2e p99 {} µs",
            r["system"].as_str().unwrap_or(""),
            r["workload"].as_str().unwrap_or(""),
            r["accepted_per_s"].as_f64().unwrap_or(0.0),
            r["delivered_per_s"].as_f64().unwrap_or(0.0),
            r["e2e_us"]["p99"],
        );
    }
}

/// The status an invalid order got in an enforce step (0 when absent).
fn status_of(results: &[Value], workload: &str) -> u64 {
    results
        .iter()
        .find(|r| r["workload"] == workload)
        .and_then(|r| r["invalid_order_status"].as_u64())
        .unwrap_or(0)
}

/// A result's `key` by system and workload, both exact (0 when absent).
fn rate_of(results: &[Value], system: &str, workload: &str, key: &str) -> f64 {
    results
        .iter()
        .find(|r| r["system"] == system && r["workload"].as_str().is_some_and(|w| w == workload))
        .and_then(|r| r[key].as_f64())
        .unwrap_or(0.0)
}

/// The Markdown report: the table, the restart figures, and each target met or not.
fn markdown(report: &Value, seconds: u64) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let fs = &report["fsync_us"];
    let mut md = format!(
        "fsync p50/p99: 4 KiB {}/{} µs, 256 KiB {}/{} µs; {} B events unless the workload says, {} connections (closed loop), {seconds} s per step\n\n| system | workload | offered/s | accepted/s | refused | delivered/s | ack p50/p99 (µs) | e2e p50/p90/p99/p99.9 (µs) | lost | dup | CPU µs/accepted event | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        fs["4KiB"]["p50"],
        fs["4KiB"]["p99"],
        fs["256KiB"]["p50"],
        fs["256KiB"]["p99"],
        report["payload_bytes"],
        report["connections"],
    );
    for r in report["results"].as_array().into_iter().flatten() {
        let offered = r["offered_per_s"]
            .as_f64()
            .map_or_else(|| "closed".to_owned(), |o| format!("{o:.0}"));
        md.push_str(&format!(
            "| {} | {} | {offered} | {:.0} | {} | {:.0} | {}/{} | {}/{}/{}/{} | {} | {} | {:.1} | {:.1} |\n",
            r["system"].as_str().unwrap_or(""),
            r["workload"].as_str().unwrap_or(""),
            f(&r["accepted_per_s"]),
            r["failed"],
            f(&r["delivered_per_s"]),
            r["ack_us"]["p50"], r["ack_us"]["p99"],
            r["e2e_us"]["p50"], r["e2e_us"]["p90"], r["e2e_us"]["p99"], r["e2e_us"]["p999"],
            r["lost"], r["duplicates"],
            f(&r["cpu_us_per_accepted_event"]),
            f(&r["rss_bytes"]) / 1_048_576.0,
        ));
    }
    md.push_str("\nThe store's group commits in each Switchyard step, and inside the server: how long appends waited for the writer, how long ingress waited for the store's answer (queue wait, commit and wake-up), and how long it took to answer 202 (handler start to response, without the sockets); from its `/metrics`, each p99 being the histogram bucket that holds it:\n\n| system | workload | commits | events/commit | mean commit µs | commit p99 ≤ ms | over 100 ms | queue wait p99 ≤ ms | append p99 ≤ ms | 202 in the server, p99 ≤ ms |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in report["results"].as_array().into_iter().flatten() {
        let st = &r["store"];
        if st.is_null() {
            continue;
        }
        let bound = |v: &Value| {
            v.as_f64()
                .map_or_else(|| "–".to_owned(), |v| format!("{v}"))
        };
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {:.0} | {} | {:.0} | {} | {} | {} |\n",
            r["system"].as_str().unwrap_or(""),
            r["workload"].as_str().unwrap_or(""),
            f(&st["commits"]),
            f(&st["events_per_commit"]),
            f(&st["mean_commit_us"]),
            bound(&st["commit_p99_at_most_ms"]),
            f(&st["commits_over_100ms"]),
            bound(&st["append_queue_p99_at_most_ms"]),
            bound(&st["ingress_append_p99_at_most_ms"]),
            bound(&st["ingress_202_p99_at_most_ms"]),
        ));
    }
    let rs = &report["restart"];
    md.push_str(&format!(
        "\nRestart after `kill -9` with {} events queued (filled in {:.1} s): listening after {:.0} ms, taking events after {:.0} ms, all re-queued after {:.0} ms. RSS idle {:.1} MiB, with half the backlog {:.1} MiB, with all of it {:.1} MiB ({:.1} B per queued event in all, {:.1} B per event of the second half), after the restart {:.1} MiB ({:.1} B per queued event).{}\n",
        rs["queued"], f(&rs["fill_s"]), f(&rs["restart_listening_ms"]), f(&rs["restart_accepting_ms"]), f(&rs["restart_requeued_ms"]),
        f(&rs["rss_idle_bytes"]) / 1_048_576.0, f(&rs["rss_half_bytes"]) / 1_048_576.0, f(&rs["rss_full_bytes"]) / 1_048_576.0, f(&rs["rss_bytes_per_queued_event"]), f(&rs["rss_bytes_per_queued_event_marginal"]),
        f(&rs["rss_restarted_bytes"]) / 1_048_576.0, f(&rs["rss_bytes_per_queued_event_after_restart"]),
        if rs["complete"] == true { "" } else { " INCOMPLETE: the trigger never reported the whole backlog queued within 120 s; these figures are not comparable." },
    ));
    let r = &report["ratios"];
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    let lines = [
        format!(
            "durable ingest / DIRECT = {:.2} (bar ≥ 0.6): {}; with 128 B events {:.2}",
            f(&r["ingest_vs_direct"]),
            check(f(&r["ingest_vs_direct"]) >= 0.6),
            f(&r["ingest_128B_vs_direct_128B"])
        ),
        format!(
            "1-trigger end-to-end / DIRECT = {:.2} (bar ≥ 0.35): {}",
            f(&r["one_trigger_e2e_vs_direct"]),
            check(f(&r["one_trigger_e2e_vs_direct"]) >= 0.35)
        ),
        format!(
            "1-trigger end-to-end / NATS-BRIDGE = {:.2} (bar ≥ 1.25): {}",
            f(&r["one_trigger_e2e_vs_nats_bridge"]),
            check(f(&r["one_trigger_e2e_vs_nats_bridge"]) >= 1.25)
        ),
        format!(
            "e2e p99 at half the knee ({:.0}/s; knee {:.0}/s{}) = {:.0} µs (bar ≤ 2 × DIRECT p99 + fsync p99 = {:.0} µs): {}",
            f(&r["half_knee_per_s"]),
            f(&r["knee_per_s"]),
            if f(&r["knee_per_s"]) == 0.0 {
                ": no rung kept up, so 100/s was used"
            } else {
                ""
            },
            f(&r["p99_at_half_knee_us"]),
            f(&r["p99_bar_us"]),
            check(f(&r["p99_at_half_knee_us"]) <= f(&r["p99_bar_us"]))
        ),
        format!(
            "ingest with eventTypes enforce / off (1 KiB orders, {} alternating rounds) = {:.2} (bar ≥ 0.9, the event types issue): {} (an invalid order got {} with enforce, {} with off; enforce costs {:.1} µs of CPU per event more)",
            r["enforce_rounds"],
            f(&r["enforce_vs_off_ingest"]),
            if r["invalid_order_status_enforce"] == 400 {
                check(f(&r["enforce_vs_off_ingest"]) >= 0.9)
            } else {
                "not comparable: validation did not reject an invalid order"
            },
            r["invalid_order_status_enforce"],
            r["invalid_order_status_off"],
            f(&r["enforce_cpu_us_per_event_extra"])
        ),
        format!(
            "fan-out 10 / fan-out 1 deliveries = {:.2} (bar ≥ 0.8): {}",
            f(&r["fanout10_vs_fanout1_deliveries"]),
            check(f(&r["fanout10_vs_fanout1_deliveries"]) >= 0.8)
        ),
        format!(
            "fan-out 100 / fan-out 1 deliveries = {:.2} (no bar)",
            f(&r["fanout100_vs_fanout1_deliveries"])
        ),
        format!(
            "1,000 non-matching + 1 / 1 trigger = {:.2} (matching alone: the criterion benchmark, bar ≤ 1 µs/event)",
            f(&r["filter_1000_vs_1_trigger"])
        ),
        format!(
            "1 trigger next to a slow, failing one / 1 trigger alone = {:.2} (no bar; isolation)",
            f(&r["isolation_vs_1_trigger"])
        ),
        format!(
            "restart with {} queued: taking events after {:.0} ms (bar ≤ 2000 ms): {}",
            rs["queued"],
            f(&rs["restart_accepting_ms"]),
            if rs["complete"] == true {
                check(f(&rs["restart_accepting_ms"]) <= 2000.0)
            } else {
                "not comparable: the backlog was never fully queued"
            }
        ),
        format!(
            "RAM per queued event = {:.1} B once redb's bounded page cache is full (the second half of the backlog; {:.1} B counting the cache) (bar ≤ 32 B): {}",
            f(&rs["rss_bytes_per_queued_event_marginal"]),
            f(&rs["rss_bytes_per_queued_event"]),
            if rs["complete"] == true {
                check(f(&rs["rss_bytes_per_queued_event_marginal"]) <= 32.0)
            } else {
                "not comparable: the backlog was never fully queued"
            }
        ),
        format!(
            "loss (steps that deliver: by id at the sink; ingest-only steps: 202s against the events the store committed) = {} (bar 0): {}",
            report["lost_total"],
            check(report["lost_total"].as_u64() == Some(0))
        ),
    ];
    md.push_str("\nTargets (the design brief's quality bars):\n\n");
    for l in lines {
        md.push_str(&format!("- {l}\n"));
    }
    md.push_str("\nNATS-BRIDGE and NATS-RAW: JetStream file storage acknowledges a publish once written and flushes to disk on an interval, not per message; SWITCHYARD's 202 comes after an fsync. NATS-BRIDGE's CPU and RSS are the bridge's plus nats-server's; NATS-RAW runs in the harness's process (no CPU figure). Open-loop latencies count from each event's due time.\n");
    md
}
