//! The eventTypes enforce/off rounds: schema enforcement's cost on ingest.

use anyhow::Result;
use serde_json::{Value, json};

use super::*;

/// Rounds of the schema-enforcement comparison (each runs both modes): six in a full run,
/// four with `--quick`. An even number, so each mode goes first as often as the other and a
/// drift across the comparison cancels out.
pub(super) fn enforce_rounds(quick: bool) -> u32 {
    if quick { 4 } else { 6 }
}

/// How many enforcement rounds a run's results hold.
pub(super) fn rounds_in(results: &[Value]) -> u32 {
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
pub(super) fn enforce_workload(mode: &str, round: u32) -> String {
    format!("saturation ingest, 1 KiB orders, eventTypes {mode}, round {round}")
}

/// One enforcement step: 1 KiB orders into a fresh broker with `eventTypes: {mode}`, then an
/// order with a quantity of 0 (it breaks the schema) as proof that validation ran, or did not.
pub(super) async fn enforce_step(
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
    let mut r = measure(
        &step,
        std::slice::from_ref(&url),
        sink,
        &[broker.child.id()],
        args,
        seconds,
    )
    .await;
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
pub(super) fn enforce_vs_off(results: &[Value]) -> (f64, f64) {
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
pub(super) fn invalid_order_status(results: &[Value], mode: &str) -> u64 {
    let statuses: Vec<u64> = (1..=rounds_in(results))
        .map(|round| status_of(results, &enforce_workload(mode, round)))
        .collect();
    if statuses.windows(2).all(|w| w[0] == w[1]) {
        statuses.first().copied().unwrap_or(0)
    } else {
        0
    }
}
