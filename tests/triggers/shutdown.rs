//! A graceful stop (SIGTERM): readiness off, the drain, the attempts in flight, and waits that
//! cannot gain anything.

use super::*;

/// A graceful stop does not wait where nothing can come of it: an ordered Trigger whose
/// subscriber is down holds its event, retrying in place at the probe's pace, and SIGTERM hands
/// it back at once instead of waiting out the 30 s drain. After the restart, with the
/// subscriber up, it is delivered once and nothing is dead-lettered.
#[tokio::test]
async fn sigterm_does_not_wait_for_an_ordered_trigger_whose_subscriber_is_down() {
    let addr = unused_addr();
    let config = broker("")
        + &trigger(
            "fn",
            &format!(
                "ordering: ordered, subscriber: {{uri: 'http://{addr}/'}}, delivery: {{retry: 5, backoffDelay: PT0.1S}}"
            ),
        );
    let mut sy = Switchyard::start(&config);
    send(&sy, "e0", "t", &[]).await;
    wait_until_down(&sy, "fn").await;
    let asked = std::time::Instant::now();
    sy.stop();
    let took = asked.elapsed();
    // Not the drain's 30 s timeout: the event was handed back, not waited on.
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    let sink = Sink::start_at(&addr, |_, _| Answer::status(200)).await;
    sy.restart();
    sink.wait_for(1, WAIT).await;
    sink.assert_stays_at(1, Duration::from_millis(300)).await;
    assert_eq!(sink.ids(), ["e0"]);
    let deadletters = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let list = common::get_json(&deadletters).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}

/// A rolling update's stop: at SIGTERM `/readyz` turns 503 at once while events are still
/// taken for `--shutdown-drain-ms`; after it, ingress refuses (503 with `Retry-After` on a
/// connection still open, or no connection), the attempt in flight is waited for and its
/// outcome recorded, and the server exits cleanly. After the restart the event that attempt
/// delivered is not sent again; what the drain took is delivered.
#[tokio::test]
async fn sigterm_turns_readyz_off_drains_then_stops_once_the_attempt_in_flight_settles() {
    let slow_once = Arc::new(AtomicUsize::new(0));
    let first = Arc::clone(&slow_once);
    // Slower than the drain window, so the attempt is still in flight as the triggers stop.
    let sink = Sink::start(move |_, _| {
        let delay = if first.fetch_add(1, Ordering::SeqCst) == 0 {
            10
        } else {
            0
        };
        Answer::status(200).delay(Duration::from_secs(delay))
    })
    .await;
    // One attempt at a time, so after the restart anything owed again would be sent before
    // the event that marks the end.
    let config = broker("")
        + &trigger(
            "slow",
            &format!("subscriber: {{uri: '{}'}}, maxInFlight: 1", sink.url),
        );
    let mut sy = Switchyard::start_with(&config, &["--shutdown-drain-ms", "3000"]);
    send(&sy, "in-flight", "t", &[]).await;
    sink.wait_for(1, WAIT).await;
    common::signal(sy.child.id(), "-TERM");
    let readyz = sy.url("/readyz");
    let off = common::eventually("readyz off", WAIT, || async {
        let r = client().get(&readyz).send().await.ok()?;
        (r.status() == 503).then_some(r)
    })
    .await;
    // Kept-alive clients are told to reconnect (through their load balancer, elsewhere).
    assert_eq!(off.headers()["connection"], "close");
    // Within the drain window: still taken.
    send(&sy, "during-drain", "t", &[]).await;
    // After it: refused.
    let refused = common::eventually("ingress refusing", WAIT, || async {
        let r = client()
            .post(sy.url(BROKER))
            .header("ce-specversion", "1.0")
            .header("ce-id", "late")
            .header("ce-source", "/tests")
            .header("ce-type", "t")
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 202 => None,
            Ok(r) => Some(Some(r)),
            Err(_) => Some(None),
        }
    })
    .await;
    if let Some(r) = refused {
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"), "{r:?}");
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = sy.child.wait();
        (sy, status)
    })
    .await
    .unwrap();
    let (mut sy, status) = status;
    assert!(status.unwrap().success(), "a graceful stop");
    assert_eq!(
        sink.completed(),
        1,
        "the stop waited for the attempt's answer"
    );
    sy.restart();
    send(&sy, "after-restart", "t", &[]).await;
    sink.wait_for_where(1, WAIT, |r| {
        r.event.as_ref().is_some_and(|e| e.id == "after-restart")
    })
    .await;
    // (What the drain window took while the test waited for the refusal is `late`.)
    let ids: Vec<String> = sink.ids().into_iter().filter(|id| id != "late").collect();
    assert_eq!(
        ids,
        ["in-flight", "during-drain", "after-restart"],
        "each once: the attempt in flight at the stop was recorded as delivered"
    );
}
