//! `switchyard-bench run`: generator and sink in this process, systems under test as real
//! processes, every system measured in the same run so ratios are comparable.
//!
//! Each event carries its intended send time (`ce-benchsent`, µs since the Unix epoch) and a
//! sequence number as its id; the sink records end-to-end latency from the intended send time
//! (so a slow system cannot hide its latency behind a slow generator) and checks loss and
//! duplicates by id.

use std::path::PathBuf;

use anyhow::Result;
use bytes::Bytes;
use serde_json::{Value, json};

mod enforce;
mod jetstream;
mod load;
mod memory;
mod report;
mod restart;
mod scrape;
mod sink;
mod systems;

use enforce::*;
pub use jetstream::{JetStreamArgs, jetstream};
use load::*;
pub use memory::{MemoryArgs, memory};
use report::*;
use restart::*;
use scrape::*;
pub(crate) use sink::now_us;
pub use sink::percentile;
use sink::*;
use systems::*;
pub(crate) use systems::{proc_usage, tempfile_dir};

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

/// One run: its settings, the measuring sink, and every step's result so far.
struct Run<'a> {
    args: &'a RunArgs,
    seconds: u64,
    /// The payload size of most steps.
    kib: usize,
    sink_url: String,
    sink: SinkShared,
    results: Vec<Value>,
}

impl Run<'_> {
    /// Keeps a step's result (and logs it).
    fn keep(&mut self, r: Value) -> Value {
        tracing_line(&r);
        self.results.push(r.clone());
        r
    }

    /// A step of `system`, closed or open loop, with `bytes`-byte payloads.
    fn step(system: &str, workload: String, triggers: usize, load: Load, bytes: usize) -> Step {
        Step {
            system: system.into(),
            workload,
            triggers,
            load,
            shape: Shape::opaque(bytes),
        }
    }

    /// DIRECT: the generator straight to the sink.
    async fn direct(&mut self, workload: String, load: Load, bytes: usize) -> Value {
        let step = Self::step("DIRECT", workload, 0, load, bytes);
        let r = measure(
            &step,
            std::slice::from_ref(&self.sink_url),
            &self.sink,
            &[],
            self.args,
            self.seconds,
        )
        .await;
        self.keep(r)
    }

    /// A Switchyard process with `config`, measured with `step`.
    async fn switchyard(&mut self, config: &str, fsync: bool, step: Step) -> Result<Value> {
        let r = switchyard_step(self.args, config, fsync, step, &self.sink, self.seconds).await?;
        Ok(self.keep(r))
    }

    /// Saturation ingest: DIRECT, Switchyard with and without fsync, 1 KiB and 128 B; and
    /// Switchyard with 64 KiB events (its MB/s against the disk's own sequential write rate).
    async fn ingest(&mut self) -> Result<()> {
        let kib = self.kib;
        for bytes in [kib, 128] {
            self.direct(format!("saturation, {bytes} B"), Load::Closed, bytes)
                .await;
        }
        for (system, fsync, bytes) in [
            ("SWITCHYARD", true, kib),
            ("SWITCHYARD-nofsync", false, kib),
            ("SWITCHYARD", true, 128),
            ("SWITCHYARD", true, LARGE_EVENT_BYTES),
        ] {
            let workload = format!("saturation ingest, {bytes} B");
            let step = Self::step(system, workload, 0, Load::Closed, bytes);
            self.switchyard(BROKER, fsync, step).await?;
        }
        Ok(())
    }

    /// Schema enforcement's cost: 1 KiB orders into a broker with their EventType, validated
    /// (`eventTypes: enforce`) or not (`off`). The two differ by a few per cent while steps of
    /// one run drift by ten, so the modes alternate (off, enforce, enforce, off, …) in shorter
    /// steps and the ratio is taken over all of them.
    async fn enforcement(&mut self) -> Result<()> {
        let enforce_seconds = (self.seconds / 2).max(2);
        for round in 1..=enforce_rounds(self.args.quick) {
            let modes = if round % 2 == 1 {
                ["off", "enforce"]
            } else {
                ["enforce", "off"]
            };
            for mode in modes {
                let r = enforce_step(self.args, mode, round, &self.sink, enforce_seconds).await?;
                self.keep(r);
            }
        }
        Ok(())
    }

    /// Fan-out to 1, 10 and 100 match-all triggers; 1,000 exact filters that never match
    /// beside one match-all; one healthy trigger beside one whose subscriber is slow and
    /// failing.
    async fn triggers(&mut self) -> Result<()> {
        let (kib, url) = (self.kib, self.sink_url.clone());
        for triggers in [1, 10, 100] {
            let workload = format!("saturation, {triggers} trigger(s)");
            let step = Self::step("SWITCHYARD", workload, triggers, Load::Closed, kib);
            self.switchyard(&match_all(triggers, &url), true, step)
                .await?;
        }
        let mut filtered = match_all(1, &url);
        for i in 0..1000 {
            filtered.push_str(&trigger(
                &format!("miss{i}"),
                &format!("filter: {{attributes: {{type: com.example.other{i}}}}}, "),
                &format!("{url}miss"),
                "",
            ));
        }
        let workload = "saturation, 1,000 non-matching + 1 trigger".to_owned();
        let step = Self::step("SWITCHYARD", workload, 1, Load::Closed, kib);
        self.switchyard(&filtered, true, step).await?;
        let slow = trigger(
            "bad",
            "",
            &format!("{url}slow"),
            "delivery: {retry: 2, backoffDelay: PT0.1S}, ",
        );
        let isolated = format!("{}{slow}", match_all(1, &url));
        let workload = "saturation, 1 trigger + 1 slow failing".to_owned();
        let step = Self::step("SWITCHYARD", workload, 1, Load::Closed, kib);
        self.switchyard(&isolated, true, step).await?;
        Ok(())
    }

    /// The open-loop ladder with one trigger, as fractions of its closed-loop rate, up to the
    /// knee (the highest rate it kept up with); then latency at half the knee, against DIRECT
    /// at the same rate. Returns the knee, half of it, and the two half-knee results.
    async fn ladder(&mut self) -> Result<(f64, f64, Value, Value)> {
        let (kib, one) = (self.kib, match_all(1, &self.sink_url));
        let saturation = rate_of(
            &self.results,
            "SWITCHYARD",
            "saturation, 1 trigger(s)",
            "delivered_per_s",
        );
        let mut knee = 0.0;
        let mut lightest_p99_us = None;
        for fraction in [0.25, 0.5, 0.75, 0.9, 1.0, 1.1] {
            let rate = (saturation * fraction).max(100.0);
            let workload = format!("open loop {rate:.0}/s, 1 trigger");
            let step = Self::step("SWITCHYARD", workload, 1, Load::Open(rate), kib);
            let r = self.switchyard(&one, true, step).await?;
            let lightest = *lightest_p99_us.get_or_insert(r["e2e_us"]["p99"].as_u64().unwrap_or(0));
            if !sustained(&r, lightest) {
                break;
            }
            knee = rate;
        }
        let half = (knee / 2.0).max(100.0);
        // The bar's p99 is the slowest 1 % of one step's events: the two half-the-knee steps
        // run HALF_KNEE_STEP_FACTOR times as long, so one bad second of the shared machine
        // neither decides it nor escapes it.
        let usual = self.seconds;
        self.seconds = usual * HALF_KNEE_STEP_FACTOR;
        let workload = format!("open loop {half:.0}/s (half the knee)");
        let direct_half = self.direct(workload, Load::Open(half), kib).await;
        let workload = format!("open loop {half:.0}/s (half the knee), 1 trigger");
        let step = Self::step("SWITCHYARD", workload, 1, Load::Open(half), kib);
        let sy_half = self.switchyard(&one, true, step).await;
        self.seconds = usual;
        Ok((knee, half, direct_half, sy_half?))
    }

    /// The NATS peers: NATS-BRIDGE (its own process, with nats-server's CPU counted) and
    /// NATS-RAW.
    async fn nats(&mut self) -> Result<()> {
        let (args, kib) = (self.args, self.kib);
        let bridge = start_nats_bridge(&args.nats, &format!("{}bridge", self.sink_url))?;
        let pids: Vec<u32> = [Some(bridge.child.id()), nats_server_pid()]
            .into_iter()
            .flatten()
            .collect();
        let workload = "saturation, 1 consumer".to_owned();
        let step = Self::step("NATS-BRIDGE", workload, 1, Load::Closed, kib);
        let target = format!("{}/", bridge.base);
        let r = measure(&step, &[target], &self.sink, &pids, args, self.seconds).await;
        self.keep(r);
        drop(bridge);
        let payload = Bytes::from(vec![b'x'; kib]);
        let stream = format!("BENCHRAW{}", std::process::id());
        let r = crate::nats::raw(
            &args.nats,
            &stream,
            args.connections,
            self.seconds,
            &payload,
        )
        .await?;
        self.keep(raw_result(&r, kib));
        Ok(())
    }
}

/// The large events' size in the ingest steps: 64 KiB.
const LARGE_EVENT_BYTES: usize = 64 * 1024;
/// How many times a step's length the half-the-knee steps (DIRECT and SWITCHYARD) run.
const HALF_KNEE_STEP_FACTOR: u64 = 3;

pub async fn run(args: RunArgs) -> Result<()> {
    let seconds = if args.quick { 3 } else { args.seconds };
    let fsync = [fsync_probe(4096, 200)?, fsync_probe(256 * 1024, 100)?];
    let disk_mb_per_s = disk_write_probe()?;
    let (sink_url, sink) = start_sink().await?;
    let mut run = Run {
        args: &args,
        seconds,
        kib: args.payload_bytes,
        sink_url,
        sink,
        results: Vec::new(),
    };
    run.ingest().await?;
    run.enforcement().await?;
    run.triggers().await?;
    let knee = run.ladder().await?;
    if !args.no_nats {
        run.nats().await?;
    }
    let backlog = if args.quick { 100_000 } else { 1_000_000 };
    let restart = restart_with_backlog(&args, &run.sink_url, backlog).await?;
    let mut report = report(&args, seconds, fsync, run.results, restart, knee);
    let large = rate_of(
        &report["results"].as_array().cloned().unwrap_or_default(),
        "SWITCHYARD",
        &format!("saturation ingest, {LARGE_EVENT_BYTES} B"),
        "accepted_per_s",
    );
    report["ratios"]["disk_write_mb_per_s"] = json!(disk_mb_per_s);
    report["ratios"]["ingest_large_mb_per_s"] = json!(large * LARGE_EVENT_BYTES as f64 / 1e6);
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

/// The report: the machine, the fsync probe, every step, the restart, and the ratios against
/// DESIGN.md's bars. `fsync` is the (p50, p99) µs of 4 KiB and 256 KiB writes; `ladder` what
/// [`Run::ladder`] returned.
fn report(
    args: &RunArgs,
    seconds: u64,
    fsync: [(u64, u64); 2],
    results: Vec<Value>,
    restart: Value,
    ladder: (f64, f64, Value, Value),
) -> Value {
    let [(p4_50, p4_99), (p256_50, p256_99)] = fsync;
    let (knee, half, direct_half, sy_half) = ladder;
    let kib = args.payload_bytes;
    let rate = |system: &str, workload: &str, key: &str| rate_of(&results, system, workload, key);
    let direct_rate = rate("DIRECT", &format!("saturation, {kib} B"), "accepted_per_s");
    let one = rate("SWITCHYARD", "saturation, 1 trigger(s)", "delivered_per_s");
    let bridge = rate("NATS-BRIDGE", "saturation, 1 consumer", "delivered_per_s");
    let p99 = |r: &Value| r["e2e_us"]["p99"].as_f64().unwrap_or(0.0);
    let ratios = json!({
        "ingest_vs_direct": rate("SWITCHYARD", &format!("saturation ingest, {kib} B"), "accepted_per_s") / direct_rate,
        "ingest_128B_vs_direct_128B": rate("SWITCHYARD", "saturation ingest, 128 B", "accepted_per_s") / rate("DIRECT", "saturation, 128 B", "accepted_per_s"),
        "one_trigger_e2e_vs_direct": one / direct_rate,
        "one_trigger_e2e_vs_nats_bridge": if bridge > 0.0 { one / bridge } else { 0.0 },
        "fanout10_vs_fanout1_deliveries": rate("SWITCHYARD", "saturation, 10 trigger(s)", "delivered_per_s") / one,
        "fanout100_vs_fanout1_deliveries": rate("SWITCHYARD", "saturation, 100 trigger(s)", "delivered_per_s") / one,
        "filter_1000_vs_1_trigger": rate("SWITCHYARD", "saturation, 1,000 non-matching + 1 trigger", "delivered_per_s") / one,
        "invalid_order_status_enforce": invalid_order_status(&results, "enforce"),
        "invalid_order_status_off": invalid_order_status(&results, "off"),
        "enforce_vs_off_ingest": enforce_vs_off(&results).0,
        "enforce_cpu_us_per_event_extra": enforce_vs_off(&results).1,
        "enforce_rounds": rounds_in(&results),
        "isolation_vs_1_trigger": rate("SWITCHYARD", "saturation, 1 trigger + 1 slow failing", "delivered_per_s") / one,
        "knee_per_s": knee,
        "p99_at_half_knee_us": p99(&sy_half),
        "half_knee_per_s": half,
        "p99_bar_us": 2.0 * p99(&direct_half) + p4_99 as f64,
    });
    let lost: u64 = results
        .iter()
        .map(|r| r["lost"].as_u64().unwrap_or(0))
        .sum();
    json!({
        "machine": {"cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get)},
        "fsync_us": {"4KiB": {"p50": p4_50, "p99": p4_99}, "256KiB": {"p50": p256_50, "p99": p256_99}},
        "payload_bytes": kib,
        "connections": args.connections,
        "seconds_per_step": seconds,
        "results": results,
        "restart": restart,
        "ratios": ratios,
        "lost_total": lost,
    })
}
