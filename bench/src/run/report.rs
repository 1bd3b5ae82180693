//! The report: results as JSON rows, the Markdown tables, and the lookups the targets use.

use serde_json::{Value, json};

use super::*;

pub(super) fn raw_result(r: &crate::nats::RawResult, payload_bytes: usize) -> Value {
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

/// A progress line on stderr per step, so a long run shows where it is.
pub(super) fn tracing_line(r: &Value) {
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
pub(super) fn status_of(results: &[Value], workload: &str) -> u64 {
    results
        .iter()
        .find(|r| r["workload"] == workload)
        .and_then(|r| r["invalid_order_status"].as_u64())
        .unwrap_or(0)
}

/// A result's `key` by system and workload, both exact (0 when absent).
pub(super) fn rate_of(results: &[Value], system: &str, workload: &str, key: &str) -> f64 {
    results
        .iter()
        .find(|r| r["system"] == system && r["workload"].as_str().is_some_and(|w| w == workload))
        .and_then(|r| r[key].as_f64())
        .unwrap_or(0.0)
}

/// The Markdown report: the table, the restart figures, and each target met or not.
pub(super) fn markdown(report: &Value, seconds: u64) -> String {
    let mut md = steps_table(report, seconds);
    md.push_str(&store_table(report));
    md.push_str(&restart_line(report));
    let lines = [throughput_targets(report), restart_targets(report)].concat();
    md.push_str("\nTargets (the design brief's quality bars):\n\n");
    for l in lines {
        md.push_str(&format!("- {l}\n"));
    }
    md.push_str("\nNATS-BRIDGE and NATS-RAW: JetStream file storage acknowledges a publish once written and flushes to disk on an interval, not per message; SWITCHYARD's 202 comes after an fsync. NATS-BRIDGE's CPU and RSS are the bridge's plus nats-server's; NATS-RAW runs in the harness's process (no CPU figure). Open-loop latencies count from each event's due time.\n");
    md
}

/// The table of every step: rates, latencies, loss, CPU and memory.
pub(super) fn steps_table(report: &Value, seconds: u64) -> String {
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
    md
}

/// The table of each Switchyard step's store and server histograms.
fn store_table(report: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut md = String::new();
    md.push_str("\nThe store's group commits in each Switchyard step, and inside the server: how long appends waited for the writer, how long ingress waited for the store's answer (queue wait, commit and wake-up), and how long it took to answer 202 (handler start to response, without the sockets), and its checkpoints (redb's durable commits behind the write-ahead log; none in a binary without one); from its `/metrics`, each p99 being the histogram bucket that holds it:\n\n| system | workload | commits | events/commit | mean commit µs | commit p99 ≤ ms | over 100 ms | queue wait p99 ≤ ms | append p99 ≤ ms | 202 in the server, p99 ≤ ms | checkpoints | mean checkpoint ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
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
            "| {} | {} | {:.0} | {:.1} | {:.0} | {} | {:.0} | {} | {} | {} | {:.0} | {:.1} |\n",
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
            f(&st["checkpoints"]),
            f(&st["mean_checkpoint_ms"]),
        ));
    }
    md
}

/// The restart step's figures.
fn restart_line(report: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let rs = &report["restart"];
    format!(
        "\nRestart after `kill -9` with {} events queued (filled in {:.1} s): listening after {:.0} ms, taking events after {:.0} ms, all re-queued after {:.0} ms. RSS idle {:.1} MiB, with half the backlog {:.1} MiB, with all of it {:.1} MiB ({:.1} B per queued event in all, {:.1} B per event of the second half), after the restart {:.1} MiB ({:.1} B per queued event).{}\n",
        rs["queued"],
        f(&rs["fill_s"]),
        f(&rs["restart_listening_ms"]),
        f(&rs["restart_accepting_ms"]),
        f(&rs["restart_requeued_ms"]),
        f(&rs["rss_idle_bytes"]) / 1_048_576.0,
        f(&rs["rss_half_bytes"]) / 1_048_576.0,
        f(&rs["rss_full_bytes"]) / 1_048_576.0,
        f(&rs["rss_bytes_per_queued_event"]),
        f(&rs["rss_bytes_per_queued_event_marginal"]),
        f(&rs["rss_restarted_bytes"]) / 1_048_576.0,
        f(&rs["rss_bytes_per_queued_event_after_restart"]),
        if rs["complete"] == true {
            ""
        } else {
            " INCOMPLETE: the trigger never reported the whole backlog queued within 120 s; these figures are not comparable."
        },
    )
}

/// The targets on throughput, latency, enforcement, fan-out, filtering and isolation.
fn throughput_targets(report: &Value) -> Vec<String> {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let r = &report["ratios"];
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    vec![
        format!(
            "durable ingest / DIRECT = {:.2} (bar ≥ 0.6): {}; with 128 B events {:.2}",
            f(&r["ingest_vs_direct"]),
            check(f(&r["ingest_vs_direct"]) >= 0.6),
            f(&r["ingest_128B_vs_direct_128B"])
        ),
        format!(
            "durable ingest of 64 KiB events = {:.0} MB/s against the disk's sequential write rate (1 MiB writes, fdatasync each) of {:.0} MB/s in this run = {:.2} (no bar; the physical limit)",
            f(&r["ingest_large_mb_per_s"]),
            f(&r["disk_write_mb_per_s"]),
            f(&r["ingest_large_mb_per_s"]) / f(&r["disk_write_mb_per_s"]).max(1e-9)
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
    ]
}

/// The targets on the restart, memory and loss.
fn restart_targets(report: &Value) -> Vec<String> {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let rs = &report["restart"];
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    vec![
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
    ]
}
