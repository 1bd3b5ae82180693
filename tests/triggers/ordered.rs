//! Ordered Triggers: one event per `partitionkey` at a time, in order, and batches of what
//! waits behind a key.

use super::*;

#[tokio::test]
async fn ordered_trigger_delivers_one_event_per_key_at_a_time_in_order() {
    let fail_first = Arc::new(AtomicUsize::new(0));
    let ff = Arc::clone(&fail_first);
    let sink = Sink::start(move |_, e| {
        // The first event of key "a" fails twice, holding key "a" back but not key "b".
        if e.id == "a1" && ff.fetch_add(1, Ordering::SeqCst) < 2 {
            Answer::status(500)
        } else {
            Answer::status(200)
        }
    })
    .await;
    let config = broker("")
        + &trigger(
            "o",
            &format!(
                "ordering: ordered, subscriber: {{uri: '{}'}}, delivery: {{retry: 5, backoffDelay: PT0.2S}}",
                sink.url
            ),
        );
    let sy = Switchyard::start(&config);
    for (id, key) in [
        ("a1", "a"),
        ("b1", "b"),
        ("a2", "a"),
        ("b2", "b"),
        ("a3", "a"),
    ] {
        send(&sy, id, "t", &[("ce-partitionkey", key)]).await;
    }
    sink.wait_for(7, WAIT).await;
    let ids = sink.ids();
    let a: Vec<&String> = ids.iter().filter(|i| i.starts_with('a')).collect();
    assert_eq!(a, ["a1", "a1", "a1", "a2", "a3"]);
    let pos = |x: &str| ids.iter().position(|i| i == x).unwrap();
    assert!(
        pos("b2") < pos("a2"),
        "key b was not held back by key a: {ids:?}"
    );
}

/// `batch` (issue 24): an ordered trigger sends the events waiting behind a key several to a
/// request, as a JSON batch: the first request fails, the 24 events sent meanwhile wait behind
/// it, and then go in batches of at most `maxEvents`, each event once, in order.
#[tokio::test]
async fn an_ordered_trigger_with_batch_sends_waiting_events_in_batches_in_order() {
    let sink = Sink::start(|n, _| Answer::status(if n == 0 { 503 } else { 200 })).await;
    let _sy = batching_to(&sink).await;

    let all: Vec<String> = (0..25).map(|i| format!("e{i:02}")).collect();
    // The event ids of each request after the first (which failed), in the order they came.
    let got = common::eventually("every event is delivered", WAIT, || async {
        let got: Vec<Vec<String>> = sink.received().iter().skip(1).map(request_ids).collect();
        (got.concat().len() >= 25).then_some(got)
    })
    .await;
    assert_eq!(got.concat(), all, "each event once, in order: {got:?}");
    assert!(got.iter().all(|r| r.len() <= 10), "{got:?}");
    assert!(
        got.iter().any(|r| r.len() == 10),
        "the waiting events went in batches: {got:?}"
    );
    // The request that failed was retried as it was.
    assert_eq!(got[0], request_ids(&sink.received()[0]), "{got:?}");
}

/// A subscriber that refuses batches (415, as Knative's broker ingress does) gets the events
/// of a refused batch one by one: every event is delivered once, in order, none
/// dead-lettered.
#[tokio::test]
async fn a_batch_the_subscriber_refuses_is_sent_again_one_event_at_a_time() {
    let sink = Sink::start(|n, _| Answer::status(if n == 0 { 503 } else { 200 })).await;
    sink.refuse_batches(415);
    let sy = batching_to(&sink).await;
    let all: Vec<String> = (0..25).map(|i| format!("e{i:02}")).collect();
    let delivered = |received: &[common::sink::Received]| -> Vec<String> {
        received
            .iter()
            .skip(1)
            .filter(|r| !is_batch(r))
            .map(|r| r.event.as_ref().expect("an event").id.clone())
            .collect()
    };
    let got = common::eventually("every event is delivered", WAIT, || async {
        let got = delivered(&sink.received());
        (got.len() >= 25).then_some(got)
    })
    .await;
    assert_eq!(got, all, "each event once, in order");
    assert!(sink.received().iter().any(is_batch), "a batch was tried");
    let letters =
        common::get_json(&sy.url("/api/v1/namespaces/default/brokers/default/deadletters")).await;
    assert_eq!(
        letters["items"].as_array().map(Vec::len),
        Some(0),
        "{letters}"
    );
}

/// A Switchyard with an ordered Trigger that batches up to 10 events to `sink`, and 25 events
/// (`e00` … `e24`) sent to it in one request.
async fn batching_to(sink: &Sink) -> Switchyard {
    let config = broker("")
        + &trigger(
            "o",
            &format!(
                "ordering: ordered, batch: {{maxEvents: 10}}, subscriber: {{uri: '{}'}}, \
                 delivery: {{retry: 5, backoffDelay: PT0.5S}}",
                sink.url
            ),
        );
    let sy = Switchyard::start(&config);
    common::post_batch(&sy, BROKER, (0..25).map(|i| format!("e{i:02}"))).await;
    sy
}

/// Whether a subscriber got request `r` as a JSON batch.
fn is_batch(r: &common::sink::Received) -> bool {
    r.headers
        .get("content-type")
        .is_some_and(|v| v == "application/cloudevents-batch+json")
}

/// The ids of the events a subscriber got in one request: a JSON batch's, or the one event's.
fn request_ids(r: &common::sink::Received) -> Vec<String> {
    if is_batch(r) {
        serde_json::from_slice::<Vec<serde_json::Value>>(&r.body)
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    } else {
        vec![r.event.as_ref().expect("an event").id.clone()]
    }
}

/// A `batch` on an unordered trigger is refused with the field and why.
#[test]
fn batch_needs_an_ordered_trigger() {
    let config = broker("")
        + &trigger(
            "u",
            "batch: {maxEvents: 10}, subscriber: {uri: 'http://127.0.0.1:9/'}",
        );
    let refusal = common::serve_refusal(&config, &[]);
    assert!(
        refusal.contains("spec.batch") && refusal.contains("ordering: ordered"),
        "{refusal}"
    );
}
