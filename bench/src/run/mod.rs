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
mod load;
mod report;
mod restart;
mod scrape;
mod sink;
mod systems;

use enforce::*;
use load::*;
use report::*;
use restart::*;
use scrape::*;
pub(crate) use sink::now_us;
pub use sink::percentile;
use sink::*;
use systems::*;

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
