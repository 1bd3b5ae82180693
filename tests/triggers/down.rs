//! A subscriber that is down (its connections refused, as a function scaled to zero's): its
//! events are held, probed for, and bounded by `holdWhileDown`.

use super::*;

/// A subscriber whose connections are refused (scaled to zero) is marked down after three
/// refusals: its events wait without using their retries, it is probed one attempt at a
/// time (not hammered), its lag keeps counting them for an autoscaler, and when it comes up
/// every event is delivered, none dead-lettered.
#[tokio::test]
async fn a_subscriber_scaled_to_zero_holds_events_without_burning_retries_until_it_is_up() {
    let addr = unused_addr();
    let config = broker("")
        + &trigger(
            "fn",
            &format!(
                "subscriber: {{uri: 'http://{addr}/'}}, delivery: {{retry: 1, backoffDelay: PT0.1S}}"
            ),
        );
    let sy = Switchyard::start(&config);
    // In one request, so the four first attempts are refused before any retry falls due
    // (sent one by one on a loaded machine, the first could run out of retries before the
    // third refusal marks the subscriber down).
    common::post_batch(&sy, BROKER, (0..4).map(|i| format!("e{i}"))).await;
    let down = wait_until_down(&sy, "fn").await;
    let status = sy.url("/api/v1/namespaces/default/triggers/fn");
    let failures = down["status"]["subscriberDown"]["connectionFailures"].as_u64();
    assert!(failures.is_some_and(|n| n >= 3), "{down}");
    // Without the hold, retry 1 and a 0.1 s backoff dead-letter all four within a second.
    let deadletters = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let refused = r#"switchyard_delivery_count_total{namespace_name="default",broker_name="default",trigger_name="fn",response_code="connection_error""#;
    for _ in 0..30 {
        let list = common::get_json(&deadletters).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = common::metrics(&sy).await;
    let held = counted(&text, &format!(r#"{refused},outcome="held"}}"#));
    let all = held + counted(&text, &format!(r#"{refused},outcome="retryable"}}"#));
    assert!(held >= 1.0, "{text}");
    // 4 first attempts and their retries until it was down, then probes at 1, 2 and 4 s.
    assert!(
        all <= 10.0,
        "probed, not hammered: {all} attempts in 3 s\n{text}"
    );
    let backlog = common::get_json(&format!("{status}/backlog")).await;
    assert_eq!(backlog["lag"], 4, "the held events are owed: {backlog}");

    // The function scales up where it was expected.
    let sink = Sink::start_at(&addr, |_, _| Answer::status(200)).await;
    sink.wait_for(4, Duration::from_secs(30)).await;
    sink.assert_stays_at(4, Duration::from_millis(300)).await;
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(ids, ["e0", "e1", "e2", "e3"]);
    let list = common::get_json(&deadletters).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let up = common::get_json(&status).await;
    assert_eq!(up["status"]["conditions"][0]["status"], "True", "{up}");
    assert!(up["status"].get("subscriberDown").is_none(), "{up}");
}

/// `holdWhileDown` bounds the hold: an event held that long counts its attempts again and is
/// dead-lettered when they run out, its held attempts listed and marked.
#[tokio::test]
async fn hold_while_down_bounds_how_long_an_event_waits_for_a_subscriber_that_stays_down() {
    let addr = unused_addr();
    let config = broker("")
        + &trigger(
            "fn",
            &format!(
                "subscriber: {{uri: 'http://{addr}/'}}, delivery: {{retry: 1, backoffDelay: PT0.1S, holdWhileDown: PT1S}}"
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "a", "t", &[]).await;
    send(&sy, "b", "t", &[]).await;
    let deadletters = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let list = common::eventually("both dead-lettered", WAIT, || async {
        let list = common::get_json(&deadletters).await;
        (list["items"].as_array().unwrap().len() == 2).then_some(list)
    })
    .await;
    let mut held = 0;
    for item in list["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let letter = common::get_json(&format!("{deadletters}/{id}")).await;
        assert_eq!(letter["reason"], "retries exhausted", "{letter}");
        let attempts = letter["attempts"].as_array().unwrap();
        let counted = attempts.iter().filter(|a| a.get("held").is_none()).count();
        assert_eq!(counted, 2, "retry 1: two attempts counted: {letter}");
        held += attempts.len() - counted;
    }
    assert!(held >= 1, "{list}");
}
