//! What the soak found: acknowledged against delivered and dead-lettered, per trigger, and
//! the report in JSON and Markdown.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use serde_json::Value;

use super::sink::{SinkState, poison};
use super::traffic::{Counters, Fate, ORDER_TYPE, type_of};

/// The dead letters' (trigger, event id) pairs, every page.
pub(super) async fn dead_letters(url: &str) -> Result<HashSet<(String, u64)>> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut all = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page_url = match &after {
            Some(a) => format!("{url}?limit=1000&after={a}"),
            None => format!("{url}?limit=1000"),
        };
        let page: Value = serde_json::from_slice(
            &client
                .get(page_url)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?,
        )?;
        for item in page["items"].as_array().context("no items")? {
            let trigger = item["trigger"].as_str().unwrap_or_default().to_owned();
            let id = item["eventId"]
                .as_str()
                .and_then(|i| i.parse().ok())
                .unwrap_or(u64::MAX);
            all.insert((trigger, id));
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return Ok(all),
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub(super) struct Outcome {
    /// Events the broker answered 2xx for.
    pub(super) acked: u64,
    /// Deliveries owed: each acknowledged event to each trigger it matches.
    pub(super) owed: u64,
    /// Owed deliveries answered 200 by the subscriber.
    pub(super) delivered: u64,
    /// Owed deliveries of poison events that are dead letters, as they should be.
    pub(super) dead_lettered_poison: u64,
    /// Poison events of `all` owed to its dead-letter sink, and how many it got.
    pub(super) dls_owed: u64,
    pub(super) dls_received: u64,
    /// Owed deliveries neither delivered nor (for poison) dead-lettered and sent to the
    /// dead-letter sink: lost.
    pub(super) missing: u64,
    /// Examples of what is missing, (trigger, id).
    pub(super) missing_examples: Vec<(String, u64)>,
    /// Deliveries beyond the first of the same event to the same trigger.
    pub(super) duplicates: u64,
    /// Events delivered whose producer never got a 2xx (sent again, or answered while the
    /// server was killed): not owed, not lost.
    pub(super) delivered_unacked: u64,
    /// Dead letters of events the subscriber never refused.
    pub(super) dead_letters_unexpected: u64,
    pub(super) dead_letters: u64,
    /// Poison deliveries the subscriber answered 400.
    pub(super) refused: u64,
    /// Answers of 503 (the flapping subscriber).
    pub(super) failed: u64,
}

impl Outcome {
    pub(super) fn compute(
        counters: &Counters,
        sink: &SinkState,
        dead: &HashSet<(String, u64)>,
    ) -> Outcome {
        let fates = counters.fates.lock().map(|f| f.clone()).unwrap_or_default();
        let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let mut o = Outcome {
            dead_letters: dead.len() as u64,
            refused: sink.refused.load(Ordering::Relaxed),
            failed: sink.failed.load(Ordering::Relaxed),
            ..Outcome::default()
        };
        let dls = seen.get("dls").map_or(&[][..], Vec::as_slice);
        for trigger in ["all", "orders"] {
            let counts = seen.get(trigger).map_or(&[][..], Vec::as_slice);
            for (id, fate) in fates.iter().enumerate() {
                let id64 = id as u64;
                let matches = trigger == "all" || type_of(id64) == ORDER_TYPE;
                let n = counts.get(id).copied().unwrap_or(0);
                o.duplicates += u64::from(n.saturating_sub(1));
                if !matches {
                    continue;
                }
                if *fate != Fate::Acked as u8 {
                    o.delivered_unacked += u64::from(n > 0);
                    continue;
                }
                o.owed += 1;
                let done = if poison(id64) {
                    let d = dead.contains(&(trigger.to_owned(), id64));
                    o.dead_lettered_poison += u64::from(d);
                    if trigger == "all" {
                        let sent = dls.get(id).copied().unwrap_or(0) > 0;
                        o.dls_owed += 1;
                        o.dls_received += u64::from(sent);
                        o.duplicates +=
                            u64::from(dls.get(id).copied().unwrap_or(0).saturating_sub(1));
                        d && sent
                    } else {
                        d
                    }
                } else {
                    o.delivered += u64::from(n > 0);
                    n > 0
                };
                if !done {
                    o.missing += 1;
                    if o.missing_examples.len() < 20 {
                        o.missing_examples.push((trigger.to_owned(), id64));
                    }
                }
            }
        }
        o.acked = fates.iter().filter(|f| **f == Fate::Acked as u8).count() as u64;
        o.dead_letters_unexpected = dead.iter().filter(|(_, id)| !poison(*id)).count() as u64;
        o
    }
}

fn mib(bytes: &Value) -> String {
    format!("{:.1}", bytes.as_f64().unwrap_or(0.0) / 1048576.0)
}

/// Writes `soak-<time>.json` and `.md` into `out_dir`, and the Markdown to stderr.
pub(super) fn write(out_dir: &Path, r: &Value) -> Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    std::fs::write(
        out_dir.join(format!("soak-{stamp}.json")),
        serde_json::to_vec_pretty(r)?,
    )?;
    let md = markdown(r);
    std::fs::write(out_dir.join(format!("soak-{stamp}.md")), &md)?;
    super::progress(&format!("\n{md}"));
    Ok(())
}

fn markdown(r: &Value) -> String {
    let mut md = String::new();
    let o = &r["outcome"];
    let t = &r["traffic"];
    let _ = writeln!(
        md,
        "# Soak: {} s at {}/s\n",
        r["schedule"]["seconds"], r["rate_per_s"]
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let offered =
        r["rate_per_s"].as_u64().unwrap_or(0) * r["schedule"]["seconds"].as_u64().unwrap_or(0);
    let _ = writeln!(md, "| events offered (rate × seconds) | {offered} |");
    let pair = |a: &Value, b: &Value| format!("{a} / {b}");
    for (k, v) in [
        ("events sent (ids used)", t["events"].to_string()),
        ("acknowledged (2xx)", o["acked"].to_string()),
        (
            "refused with a 4xx (valid events)",
            t["rejected"].to_string(),
        ),
        ("given up after 2 min of retries", t["gave_up"].to_string()),
        ("requests / retries", pair(&t["requests"], &t["retries"])),
        (
            "producer transport errors",
            t["transport_errors"].to_string(),
        ),
        (
            "deliveries owed (acked × matching triggers)",
            o["owed"].to_string(),
        ),
        ("delivered", o["delivered"].to_string()),
        (
            "poison events dead-lettered",
            o["dead_lettered_poison"].to_string(),
        ),
        (
            "of them owed to / taken by the dead-letter sink",
            pair(&o["dls_owed"], &o["dls_received"]),
        ),
        ("**missing (lost)**", o["missing"].to_string()),
        ("duplicate deliveries", o["duplicates"].to_string()),
        (
            "delivered but never acknowledged",
            o["delivered_unacked"].to_string(),
        ),
        (
            "dead letters / of events never refused",
            pair(&o["dead_letters"], &o["dead_letters_unexpected"]),
        ),
        (
            "subscriber answers: 400 (poison) / 503",
            pair(&o["refused"], &o["failed"]),
        ),
        ("drain after the traffic, s", r["drain_s"].to_string()),
    ] {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "\nProducer answers by status: {}", t["statuses"]);
    let _ = writeln!(md, "\nRestarts after kill -9: {}", r["restarts"]);
    let _ = writeln!(md, "\nFull disk: {}", r["disk_full"]);
    let _ = writeln!(md, "\nMalformed bursts:");
    for b in r["malformed"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "- {b}");
    }
    let samples = r["samples"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        md,
        "\nEach server process from its second minute on (memory should be flat after warm-up):\n\n| pid | from (s) | to (s) | RSS min / max / last (MiB) | fds min / max / last |\n|---|---|---|---|---|"
    );
    let mut pids: Vec<&Value> = Vec::new();
    for s in &samples {
        if !pids.contains(&&s["pid"]) {
            pids.push(&s["pid"]);
        }
    }
    for pid in pids {
        // A sample taken just after a kill reads the dead process: left out.
        let of: Vec<&Value> = samples
            .iter()
            .filter(|s| &s["pid"] == pid && s["rss_bytes"].as_u64().unwrap_or(0) > 0)
            .collect();
        let start = of.first().and_then(|s| s["t_s"].as_f64()).unwrap_or(0.0);
        let warm: Vec<&&Value> = of
            .iter()
            .filter(|s| s["t_s"].as_f64().unwrap_or(0.0) >= start + 60.0)
            .collect();
        let (Some(first), Some(last)) = (warm.first(), warm.last()) else {
            continue;
        };
        let num = |s: &Value, k: &str| s[k].as_f64().unwrap_or(0.0);
        let min = |k: &str| warm.iter().map(|s| num(s, k)).fold(f64::MAX, f64::min);
        let max = |k: &str| warm.iter().map(|s| num(s, k)).fold(0.0, f64::max);
        let m = 1048576.0;
        let _ = writeln!(
            md,
            "| {pid} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {:.0} / {:.0} / {:.0} |",
            num(first, "t_s"),
            num(last, "t_s"),
            min("rss_bytes") / m,
            max("rss_bytes") / m,
            num(last, "rss_bytes") / m,
            min("fds"),
            max("fds"),
            num(last, "fds"),
        );
    }
    let _ = writeln!(
        md,
        "\n| t (s) | pid | RSS (MiB) | fds | store (MiB) | acked | delivered | lag |\n|---|---|---|---|---|---|---|---|"
    );
    for (i, s) in samples.iter().enumerate() {
        if i % 12 != 11 && i + 1 != samples.len() {
            continue;
        }
        let _ = writeln!(
            md,
            "| {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            s["t_s"].as_f64().unwrap_or(0.0),
            s["pid"],
            mib(&s["rss_bytes"]),
            s["fds"],
            mib(&s["store_bytes"]),
            s["acked"],
            s["delivered"],
            s["lag_events"]
        );
    }
    md
}
