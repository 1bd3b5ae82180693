//! What a step reads from Switchyard's own `/metrics`: group commits, queue and append waits,
//! the 202's server-side latency, and events stored (for loss in ingest-only steps).

use serde_json::{Value, json};

/// The store's group commits during a step, from the broker's own histograms: how many, how
/// many events each held on average, their mean and p99 bound, how many took longer than
/// 100 ms, and the p99 bounds of an append's queue wait, of ingress's wait for the store and
/// of the whole 202 (a stall in the step's tail is the store's when these show it, and
/// elsewhere when not).
pub(super) async fn store_commits(base: &str) -> Value {
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
    let checkpoints = sample("switchyard_store_checkpoint_seconds_count ").unwrap_or(0.0);
    let checkpoint_seconds = sample("switchyard_store_checkpoint_seconds_sum ").unwrap_or(0.0);
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
        "checkpoints": checkpoints,
        "mean_checkpoint_ms": if checkpoints > 0.0 { checkpoint_seconds * 1e3 / checkpoints } else { 0.0 },
    })
}

/// The smallest bucket bound (in ms) that holds 99 % of a histogram's samples: an upper bound
/// of its p99. `prefix` names the histogram's bucket lines; lines must also contain `label`.
/// Buckets of several label sets (brokers) are added up.
pub(super) fn p99_bound_ms(text: &str, prefix: &str, label: &str) -> Option<f64> {
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
pub(super) fn check_stored(r: &mut Value) {
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
