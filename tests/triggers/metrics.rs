//! Delivery metrics: attempts by outcome, lag, age, subscriber health and end-to-end latency.

use super::*;

/// Attempts are counted by response code and outcome; a trigger's lag, the age of its oldest
/// undelivered event and its subscriber's health are gauges, and `…/backlog` answers the lag
/// for an autoscaler.
#[tokio::test]
async fn delivery_metrics_lag_age_and_subscriber_health() {
    let sink = Sink::start(|_, _| Answer::status(500)).await;
    let refusing = Sink::start(|_, _| Answer::status(400)).await;
    let config = broker("")
        + &trigger(
            "m",
            &format!(
                "filter: {{attributes: {{type: t}}}}, subscriber: {{uri: '{}'}}, delivery: {{retry: 50, backoffDelay: PT10S}}",
                sink.url
            ),
        )
        + &trigger(
            "bad",
            &format!(
                "filter: {{attributes: {{type: bad}}}}, subscriber: {{uri: '{}'}}",
                refusing.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "m1", "t", &[]).await;
    send(&sy, "b1", "bad", &[]).await;
    sink.wait_for(1, WAIT).await;
    refusing.wait_for(1, WAIT).await;
    let m = r#"namespace_name="default",broker_name="default",trigger_name="m""#;
    let bad = r#"namespace_name="default",broker_name="default",trigger_name="bad""#;
    let want = [
        format!(
            r#"switchyard_delivery_count_total{{{m},response_code="500",outcome="retryable"}} 1"#
        ),
        format!(
            r#"switchyard_delivery_count_total{{{bad},response_code="400",outcome="not_retryable"}} 1"#
        ),
        format!("switchyard_delivery_retries_total{{{m}}} 1"),
        format!("switchyard_trigger_lag_events{{{m}}} 1"),
        format!("switchyard_trigger_lag_events{{{bad}}} 0"),
        format!("switchyard_subscriber_healthy{{{m}}} 0"),
        format!("switchyard_subscriber_healthy{{{bad}}} 0"),
        format!("switchyard_trigger_oldest_undelivered_age_seconds{{{bad}}} 0"),
        "switchyard_delivery_latency_seconds_bucket".to_owned(),
    ];
    // The age is sampled every 5 s: the event is at least that old when it shows.
    let age = format!("switchyard_trigger_oldest_undelivered_age_seconds{{{m}}}");
    common::eventually(
        "the metrics to show the attempts",
        Duration::from_secs(20),
        || async {
            let text = common::metrics(&sy).await;
            let aged = common::metric_value(&text, &age).is_some_and(|a| a > 0.0);
            (aged && want.iter().all(|w| text.contains(w.as_str()))).then_some(())
        },
    )
    .await;
    let backlog = reqwest::get(format!(
        "{}/api/v1/namespaces/default/triggers/m/backlog",
        sy.base
    ))
    .await
    .unwrap();
    assert_eq!(backlog.status(), 200);
    let backlog: serde_json::Value = backlog.json().await.unwrap();
    assert_eq!(backlog["lag"], 1, "{backlog}");
    assert_eq!(backlog["running"], true, "{backlog}");
    assert!(
        backlog["oldestUndeliveredAgeSeconds"].as_f64().unwrap() > 0.0,
        "{backlog}"
    );
    let missing = reqwest::get(format!(
        "{}/api/v1/namespaces/default/triggers/nope/backlog",
        sy.base
    ))
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);
}

/// `switchyard_delivery_e2e_latency_seconds` counts each delivered event once, from its
/// arrival at the broker to the answer that delivered it, retries included.
#[tokio::test]
async fn end_to_end_latency_counts_each_delivered_event_from_arrival_through_its_retries() {
    // The very first attempt fails; the retry a second later, and everything after, succeed.
    let sink = Sink::start(|i, _| Answer::status(if i == 0 { 503 } else { 200 })).await;
    let config = broker("")
        + &trigger(
            "e2e",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 3, backoffDelay: PT1S, jitter: 0}}",
                sink.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "retried", "t", &[]).await;
    sink.wait_for(2, WAIT).await;
    send(&sy, "at-once", "t", &[]).await;
    sink.wait_for(3, WAIT).await;
    let labels = r#"namespace_name="default",broker_name="default",trigger_name="e2e""#;
    let delivered = format!(
        "switchyard_delivery_count_total{{{labels},response_code=\"200\",outcome=\"delivered\"}}"
    );
    // Both deliveries counted first, so the histogram is read after the second one.
    let text = common::eventually("both deliveries counted", WAIT, || async {
        let text = common::metrics(&sy).await;
        (common::metric_value(&text, &delivered) == Some(2.0)).then_some(text)
    })
    .await;
    let e2e = |part: &str| {
        let series = format!("switchyard_delivery_e2e_latency_seconds_{part}{{{labels}}}");
        common::metric_value(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        e2e("count"),
        2.0,
        "once per delivered event, not per attempt"
    );
    let healthy = format!("switchyard_subscriber_healthy{{{labels}}}");
    assert_eq!(
        common::metric_value(&text, &healthy),
        Some(1.0),
        "the last attempt delivered"
    );
    let fast = format!("switchyard_delivery_e2e_latency_seconds_bucket{{{labels},le=\"0.5\"}}");
    assert_eq!(
        common::metric_value(&text, &fast),
        Some(1.0),
        "only the event delivered at once is under half a second:\n{text}"
    );
    let sum = e2e("sum");
    assert!(
        (0.99..30.0).contains(&sum),
        "two deliveries, one after a 1 s backoff: {sum} s in all"
    );
}
