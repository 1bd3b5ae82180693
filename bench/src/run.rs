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
}

type SinkShared = Arc<Mutex<SinkState>>;

async fn sink_handler(
    State(state): State<SinkShared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> StatusCode {
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

/// Closed-loop load: `connections` senders back to back for `seconds`. Returns accepted
/// count, the ack latencies (µs) and non-2xx count.
async fn closed_loop(
    url: &str,
    connections: usize,
    seconds: u64,
    payload: &Bytes,
    next_id: &Arc<AtomicU64>,
) -> (u64, Vec<u64>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, payload, next_id, stop) = (
            url.to_owned(),
            payload.clone(),
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
                    .header("ce-source", "/bench")
                    .header("ce-type", "com.example.bench")
                    .header("ce-benchsent", sent.to_string())
                    .header("content-type", "application/octet-stream")
                    .body(payload.clone())
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

fn start_switchyard(bin: &PathBuf, triggers: usize, sink: &str, fsync: bool) -> Result<Broker> {
    use std::io::BufRead as _;
    let dir = tempfile_dir()?;
    let mut config =
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n".to_owned();
    for i in 0..triggers {
        config.push_str(&format!(
            "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t{i}}}\nspec: {{broker: default, subscriber: {{uri: '{sink}t{i}'}}}}\n"
        ));
    }
    std::fs::write(dir.join("config.yaml"), config)?;
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
    Ok(Broker {
        child,
        base: base.to_owned(),
        dir,
    })
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
    triggers: usize,
}

async fn measure(
    step: &Step,
    target: &str,
    sink: &SinkShared,
    pids: &[u32],
    args: &RunArgs,
    seconds: u64,
) -> Value {
    *sink
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = SinkState::default();
    let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
    let next_id = Arc::new(AtomicU64::new(0));
    let cpu_before = usage_of(pids).0;
    let started = Instant::now();
    let (accepted, acks, failed) =
        closed_loop(target, args.connections, seconds, &payload, &next_id).await;
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
    json!({
        "system": step.system,
        "workload": step.workload,
        "triggers": step.triggers,
        "seconds": elapsed,
        "accepted_per_s": accepted as f64 / elapsed,
        "delivered_per_s": delivered as f64 / elapsed,
        "failed": failed,
        "ack_us": {"p50": percentile(&acks, 0.5), "p90": percentile(&acks, 0.9), "p99": percentile(&acks, 0.99), "p999": percentile(&acks, 0.999)},
        "e2e_us": {"p50": percentile(&s.e2e_us, 0.5), "p90": percentile(&s.e2e_us, 0.9), "p99": percentile(&s.e2e_us, 0.99), "p999": percentile(&s.e2e_us, 0.999)},
        "lost": lost,
        "duplicates": s.duplicates,
        "cpu_us_per_accepted_event": if accepted > 0 { (cpu_after - cpu_before) * 1e6 / accepted as f64 } else { 0.0 },
        "rss_bytes": rss,
    })
}

pub async fn run(args: RunArgs) -> Result<()> {
    let seconds = if args.quick { 3 } else { args.seconds };
    let (p4_50, p4_99) = fsync_probe(4096, 200)?;
    let (p256_50, p256_99) = fsync_probe(256 * 1024, 100)?;
    let (sink_url, sink) = start_sink().await?;
    let mut results = Vec::new();

    let direct = Step {
        system: "DIRECT".into(),
        workload: "saturation".into(),
        triggers: 0,
    };
    results.push(measure(&direct, &sink_url, &sink, &[], &args, seconds).await);

    for (system, fsync, triggers) in [
        ("SWITCHYARD", true, 0),
        ("SWITCHYARD-nofsync", false, 0),
        ("SWITCHYARD", true, 1),
        ("SWITCHYARD", true, 10),
    ] {
        let broker = start_switchyard(&args.switchyard, triggers, &sink_url, fsync)?;
        let target = format!("{}/default/default", broker.base);
        let step = Step {
            system: system.into(),
            workload: if triggers == 0 {
                "saturation ingest".into()
            } else {
                format!("saturation, {triggers} trigger(s)")
            },
            triggers,
        };
        results.push(measure(&step, &target, &sink, &[broker.child.id()], &args, seconds).await);
        drop(broker);
    }

    if !args.no_nats {
        let bridge = start_nats_bridge(&args.nats, &format!("{sink_url}bridge"))?;
        let step = Step {
            system: "NATS-BRIDGE".into(),
            workload: "saturation, 1 consumer".into(),
            triggers: 1,
        };
        results.push(
            measure(
                &step,
                &format!("{}/", bridge.base),
                &sink,
                // The bridge and the JetStream server both do its work.
                &[Some(bridge.child.id()), nats_server_pid()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>(),
                &args,
                seconds,
            )
            .await,
        );
        drop(bridge);
        let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
        let stream = format!("BENCHRAW{}", std::process::id());
        let r = crate::nats::raw(&args.nats, &stream, args.connections, seconds, &payload).await?;
        results.push(json!({
            "system": "NATS-RAW",
            "workload": "publish + pull, no HTTP",
            "triggers": 1,
            "seconds": r.seconds,
            "accepted_per_s": r.accepted as f64 / r.seconds,
            "delivered_per_s": r.delivered as f64 / r.seconds,
            "failed": 0,
            "ack_us": {"p50": percentile(&r.acks, 0.5), "p90": percentile(&r.acks, 0.9), "p99": percentile(&r.acks, 0.99), "p999": percentile(&r.acks, 0.999)},
            "e2e_us": {"p50": percentile(&r.e2e, 0.5), "p90": percentile(&r.e2e, 0.9), "p99": percentile(&r.e2e, 0.99), "p999": percentile(&r.e2e, 0.999)},
            "lost": r.accepted.saturating_sub(r.delivered),
            "duplicates": 0,
            "cpu_us_per_accepted_event": 0.0,
            "rss_bytes": 0,
        }));
    }

    let rate = |system: &str, workload: &str, key: &str| {
        results
            .iter()
            .find(|r| {
                r["system"] == system
                    && r["workload"]
                        .as_str()
                        .is_some_and(|w| w.starts_with(workload))
            })
            .and_then(|r| r[key].as_f64())
            .unwrap_or(0.0)
    };
    let direct_rate = rate("DIRECT", "saturation", "accepted_per_s");
    let one = rate("SWITCHYARD", "saturation, 1 trigger", "delivered_per_s");
    let bridge = rate("NATS-BRIDGE", "saturation", "delivered_per_s");
    let ratios = json!({
        "ingest_vs_direct": rate("SWITCHYARD", "saturation ingest", "accepted_per_s") / direct_rate,
        "one_trigger_e2e_vs_direct": one / direct_rate,
        "one_trigger_e2e_vs_nats_bridge": if bridge > 0.0 { one / bridge } else { 0.0 },
        "fanout10_vs_fanout1_deliveries": rate("SWITCHYARD", "saturation, 10 trigger", "delivered_per_s") / one,
    });
    let report = json!({
        "machine": {"cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get)},
        "fsync_us": {"4KiB": {"p50": p4_50, "p99": p4_99}, "256KiB": {"p50": p256_50, "p99": p256_99}},
        "payload_bytes": args.payload_bytes,
        "connections": args.connections,
        "results": results,
        "ratios": ratios,
    });
    let mut md = format!(
        "fsync p50/p99: 4 KiB {p4_50}/{p4_99} µs, 256 KiB {p256_50}/{p256_99} µs; {} B events, {} connections, {seconds} s per step\n\n| system | workload | accepted/s | delivered/s | ack p50/p99 (µs) | e2e p50/p99 (µs) | lost | dup | CPU µs/accepted event | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|\n",
        args.payload_bytes, args.connections
    );
    for r in report["results"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {}/{} | {}/{} | {} | {} | {:.1} | {:.1} |\n",
            r["system"].as_str().unwrap_or(""),
            r["workload"].as_str().unwrap_or(""),
            r["accepted_per_s"].as_f64().unwrap_or(0.0),
            r["delivered_per_s"].as_f64().unwrap_or(0.0),
            r["ack_us"]["p50"],
            r["ack_us"]["p99"],
            r["e2e_us"]["p50"],
            r["e2e_us"]["p99"],
            r["lost"],
            r["duplicates"],
            r["cpu_us_per_accepted_event"].as_f64().unwrap_or(0.0),
            r["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        ));
    }
    md.push_str(&format!(
        "\nRatios: ingest / DIRECT = {:.2} (bar 0.6); 1-trigger end-to-end / DIRECT = {:.2} (bar 0.35); 1-trigger end-to-end / NATS-BRIDGE = {:.2} (bar 1.25); fan-out 10 / fan-out 1 deliveries = {:.2} (bar 0.8)\n\nNATS-BRIDGE and NATS-RAW: JetStream file storage acknowledges a publish once written and flushes to disk on an interval, not per message; SWITCHYARD's 202 comes after an fsync. NATS-BRIDGE's CPU and RSS are the bridge's plus nats-server's; NATS-RAW runs in the harness's process (no CPU figure).\n",
        ratios["ingest_vs_direct"].as_f64().unwrap_or(0.0),
        ratios["one_trigger_e2e_vs_direct"].as_f64().unwrap_or(0.0),
        ratios["one_trigger_e2e_vs_nats_bridge"].as_f64().unwrap_or(0.0),
        ratios["fanout10_vs_fanout1_deliveries"].as_f64().unwrap_or(0.0),
    ));
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
