//! `switchyard-bench jetstream`: the JetStream engine (spec/jetstream.md) in one run beside
//! what it is weighed against: DIRECT, the embedded mode, and NATS-BRIDGE on the same
//! nats-server. The run starts a nats-server of its own (2.10 or later; the machine's may be
//! older) with `sync_interval: always`, so that every system fsyncs before it answers, as the
//! embedded mode does. Switchyard on JetStream is measured with 1, 2 and 3 replicas, the
//! generator's connections spread over them, for durable ingest and for one trigger end to
//! end; CPU per event counts the replicas and the nats-server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::*;

#[derive(Debug, clap::Args)]
pub struct JetStreamArgs {
    /// The switchyard binary to measure.
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    /// A nats-server 2.10 or later (scripts/test installs one in target/test-venv).
    #[arg(long, default_value = "target/test-venv/bin/nats-server")]
    nats_server: PathBuf,
    /// Numbers of replicas to measure, in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    replicas: Vec<usize>,
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
    /// The nats-server's `sync_interval`: `always` (an fsync per write before the ack, the
    /// embedded mode's promise) or a duration such as `2m` (nats-server's default).
    #[arg(long, default_value = "always")]
    sync_interval: String,
}

/// A nats-server of the run's own, on loopback; stopped and its store removed on drop.
struct NatsServer {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `bin` with JetStream, `sync_interval` and messages of up to 2 MB.
async fn start_nats(bin: &Path, sync_interval: &str) -> Result<NatsServer> {
    let dir = tempfile_dir()?;
    let port = free_port()?;
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 2MB\njetstream {{ store_dir: \"{}\", sync_interval: {sync_interval} }}\n",
            dir.join("js").display()
        ),
    )?;
    let log = std::fs::File::create(dir.join("nats.log"))?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (bash scripts/test installs it, or pass --nats-server)",
                bin.display()
            )
        })?;
    let server = NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(client) = async_nats::connect(&server.url).await {
            if client.server_info().jetstream {
                return Ok(server);
            }
            bail!("{} runs without JetStream", bin.display());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not start; its log is {}",
                bin.display(),
                server.dir.join("nats.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the streams a previous step's replicas made, so each step starts empty.
async fn reset_streams(nats: &str) -> Result<()> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await?);
    for stream in [
        "SY_EV_default_default",
        "SY_DL_default_default",
        "SY_RD_default_default",
    ] {
        let _ = js.delete_stream(stream).await;
    }
    Ok(())
}

/// `n` replicas of `config` on `nats`, each its own process.
fn start_replicas(bin: &PathBuf, config: &str, nats: &str, n: usize) -> Result<Vec<Broker>> {
    (0..n)
        .map(|_| {
            let dir = tempfile_dir()?;
            std::fs::write(dir.join("config.yaml"), config)?;
            let extra = ["--jetstream".to_owned(), nats.to_owned()];
            let (child, base) = spawn_switchyard(bin, &dir, true, &extra)?;
            Ok(Broker { child, base, dir })
        })
        .collect()
}

/// The system name of `n` replicas on JetStream.
fn js_system(n: usize) -> String {
    format!("SWITCHYARD-JS×{n}")
}

pub async fn jetstream(args: JetStreamArgs) -> Result<()> {
    let seconds = if args.quick { 3 } else { args.seconds };
    // `measure` reads the generator's settings from a run's arguments.
    let run_args = RunArgs {
        switchyard: args.switchyard.clone(),
        out_dir: args.out_dir.clone(),
        seconds,
        connections: args.connections,
        payload_bytes: args.payload_bytes,
        quick: args.quick,
        nats: String::new(),
        no_nats: true,
    };
    let fsync = [fsync_probe(4096, 200)?, fsync_probe(256 * 1024, 100)?];
    let nats = start_nats(&args.nats_server, &args.sync_interval).await?;
    let nats_pid = nats.child.id();
    let (sink_url, sink) = start_sink().await?;
    let bytes = args.payload_bytes;
    let step = |system: &str, workload: &str, triggers: usize| Step {
        system: system.to_owned(),
        workload: workload.to_owned(),
        triggers,
        load: Load::Closed,
        shape: Shape::opaque(bytes),
    };
    let mut results = Vec::new();
    let mut keep = |r: Value| {
        tracing_line(&r);
        results.push(r);
    };

    let direct = step("DIRECT", "saturation", 0);
    let targets = [sink_url.clone()];
    keep(measure(&direct, &targets, &sink, &[], &run_args, seconds).await);
    for (workload, triggers) in [("ingest", 0), ("1 trigger", 1)] {
        let config = match_all(triggers, &sink_url);
        let s = step("SWITCHYARD", workload, triggers);
        keep(switchyard_step(&run_args, &config, true, s, &sink, seconds).await?);
    }
    {
        let bridge = start_nats_bridge(&nats.url, &format!("{sink_url}bridge"))?;
        let s = step("NATS-BRIDGE", "1 trigger", 1);
        let pids = [bridge.child.id(), nats_pid];
        let targets = [format!("{}/", bridge.base)];
        keep(measure(&s, &targets, &sink, &pids, &run_args, seconds).await);
    }
    for &n in &args.replicas {
        for (workload, triggers) in [("ingest", 0), ("1 trigger", 1)] {
            reset_streams(&nats.url).await?;
            let config = match_all(triggers, &sink_url);
            let replicas = start_replicas(&args.switchyard, &config, &nats.url, n)?;
            let targets: Vec<String> = replicas
                .iter()
                .map(|r| format!("{}/default/default", r.base))
                .collect();
            let mut pids: Vec<u32> = replicas.iter().map(|r| r.child.id()).collect();
            pids.push(nats_pid);
            let s = step(&js_system(n), workload, triggers);
            let nats_before = proc_usage(nats_pid).0;
            let mut r = measure(&s, &targets, &sink, &pids, &run_args, seconds).await;
            let accepted = r["accepted"].as_f64().unwrap_or(0.0);
            if accepted > 0.0 {
                r["nats_server_cpu_us_per_event"] =
                    json!((proc_usage(nats_pid).0 - nats_before) * 1e6 / accepted);
            }
            r["replicas"] = json!(n);
            keep(r);
        }
    }
    drop(nats);

    let report = json!({
        "machine": {"cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get)},
        "fsync_us": {"4KiB": {"p50": fsync[0].0, "p99": fsync[0].1}, "256KiB": {"p50": fsync[1].0, "p99": fsync[1].1}},
        "payload_bytes": bytes,
        "connections": args.connections,
        "seconds_per_step": seconds,
        "sync_interval": args.sync_interval,
        "scaling": scaling(&results, &args.replicas),
        "results": results,
    });
    let md = format!(
        "nats-server sync_interval: {}\n\n{}\n{}",
        args.sync_interval,
        steps_table(&report, seconds),
        scaling_table(&report)
    );
    std::fs::create_dir_all(&args.out_dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    std::fs::write(
        args.out_dir.join(format!("jetstream-{stamp}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out_dir.join(format!("jetstream-{stamp}.md")), &md)?;
    #[allow(clippy::print_stdout)]
    {
        print!("{md}");
    }
    Ok(())
}

/// Per workload and number of replicas: the rate, the scaling efficiency (rate over `n`
/// times the one-replica rate), the CPU per event of the whole system (replicas and
/// nats-server), the events per second one core would carry at that cost, and the ratios to
/// the embedded mode and to NATS-BRIDGE.
fn scaling(results: &[Value], replicas: &[usize]) -> Value {
    let mut rows = Vec::new();
    for (workload, key) in [
        ("ingest", "accepted_per_s"),
        ("1 trigger", "delivered_per_s"),
    ] {
        let one = rate_of(results, &js_system(1), workload, key);
        let embedded = rate_of(results, "SWITCHYARD", workload, key);
        let bridge = rate_of(results, "NATS-BRIDGE", "1 trigger", key);
        for &n in replicas {
            let rate = rate_of(results, &js_system(n), workload, key);
            let cpu = rate_of(
                results,
                &js_system(n),
                workload,
                "cpu_us_per_accepted_event",
            );
            let nats_cpu = rate_of(
                results,
                &js_system(n),
                workload,
                "nats_server_cpu_us_per_event",
            );
            let ratio = |to: f64| if to > 0.0 { rate / to } else { 0.0 };
            rows.push(json!({
                "workload": workload,
                "replicas": n,
                "per_s": rate,
                "efficiency": if one > 0.0 { rate / (one * n as f64) } else { 0.0 },
                "cpu_us_per_event": cpu,
                "nats_server_cpu_us_per_event": nats_cpu,
                "per_core_per_s": if cpu > 0.0 { 1e6 / cpu } else { 0.0 },
                "vs_embedded": ratio(embedded),
                "vs_nats_bridge": if workload == "1 trigger" { ratio(bridge) } else { 0.0 },
            }));
        }
    }
    Value::Array(rows)
}

fn scaling_table(report: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut md = String::from(
        "| workload | replicas | events/s | scaling efficiency | CPU µs/event (replicas + nats-server) | of which nats-server | events/s per core at that cost | vs embedded | vs NATS-BRIDGE |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in report["scaling"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0} | {:.2} | {} |\n",
            r["workload"].as_str().unwrap_or(""),
            r["replicas"],
            f(&r["per_s"]),
            f(&r["efficiency"]),
            f(&r["cpu_us_per_event"]),
            f(&r["nats_server_cpu_us_per_event"]),
            f(&r["per_core_per_s"]),
            f(&r["vs_embedded"]),
            match f(&r["vs_nats_bridge"]) {
                x if x > 0.0 => format!("{x:.2}"),
                _ => "–".to_owned(),
            },
        ));
    }
    md
}
