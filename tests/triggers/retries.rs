//! Retries: the delivery settings that apply, the backoff's timing, `Retry-After`, timeouts and
//! misbehaving subscribers, isolation between Triggers, and retries that survive a kill -9.

use super::*;

#[tokio::test]
async fn broker_delivery_applies_unless_the_trigger_has_its_own() {
    // Broker: retry 3. Trigger "inherits" has no delivery; "own" says retry 0.
    let dls = Sink::ok().await;
    let three = Sink::start(failing(3, Arc::default())).await;
    let four = Sink::start(failing(4, Arc::default())).await;
    let own = Sink::start(failing(1, Arc::default())).await;
    let delivery = format!(
        "{{retry: 3, backoffDelay: PT0.05S, deadLetterSink: {{uri: '{}'}}}}",
        dls.url
    );
    let config = broker(&delivery)
        + &typed("three", "three", &three.url, "")
        + &typed("four", "four", &four.url, "")
        + &trigger(
            "own",
            &format!(
                "filter: {{attributes: {{type: own}}}}, subscriber: {{uri: '{}'}}, delivery: {{retry: 0, deadLetterSink: {{uri: '{}'}}}}",
                own.url, dls.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "e3", "three", &[]).await;
    send(&sy, "e4", "four", &[]).await;
    send(&sy, "eo", "own", &[]).await;
    // 3 failures then success: delivered on the 4th attempt, nothing dead-lettered for it.
    three.wait_for(4, WAIT).await;
    // 4 failures with 3 retries: dead letter.
    four.wait_for(4, WAIT).await;
    own.wait_for(1, WAIT).await;
    let letters = dls.wait_for(2, WAIT).await;
    let mut ids: Vec<String> = letters
        .iter()
        .map(|r| r.event.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["e4", "eo"]);
    dls.assert_stays_at(2, Duration::from_millis(500)).await;
    assert_eq!(three.received().len(), 4);
    assert_eq!(four.received().len(), 4);
    assert_eq!(
        own.received().len(),
        1,
        "the trigger's retry 0 replaced the broker's retry 3"
    );
}

fn gaps_ms(sink: &Sink) -> Vec<u128> {
    let r = sink.received();
    r.windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect()
}

#[tokio::test]
async fn linear_and_exponential_redelivery_timing() {
    let exp = Sink::start(|_, _| Answer::status(503)).await;
    let lin = Sink::start(|_, _| Answer::status(503)).await;
    let config = broker("")
        + &trigger(
            "exp",
            &format!(
                "filter: {{attributes: {{type: exp}}}}, subscriber: {{uri: '{}'}}, delivery: {{retry: 3, backoffPolicy: exponential, backoffDelay: PT0.2S}}",
                exp.url
            ),
        )
        + &trigger(
            "lin",
            &format!(
                "filter: {{attributes: {{type: lin}}}}, subscriber: {{uri: '{}'}}, delivery: {{retry: 3, backoffPolicy: linear, backoffDelay: PT0.2S}}",
                lin.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "x", "exp", &[]).await;
    send(&sy, "l", "lin", &[]).await;
    exp.wait_for(4, WAIT).await;
    lin.wait_for(4, WAIT).await;
    // The delay before retry k is 200·2^(k-1) ms, or 200·k ms: never shorter.
    let (e, l) = (gaps_ms(&exp), gaps_ms(&lin));
    for (gap, min) in e.iter().zip([200, 400, 800]) {
        assert!(*gap >= min, "exponential gaps {e:?}");
    }
    for (gap, min) in l.iter().zip([200, 400, 600]) {
        assert!(*gap >= min, "linear gaps {l:?}");
    }
    // And they grow the way the policy says (the third exponential gap is longer than the
    // third linear one).
    assert!(e[2] > l[2], "exponential {e:?} vs linear {l:?}");
}

#[tokio::test]
async fn retry_after_is_honoured_on_429() {
    let sink = Sink::start(|n, _| {
        if n == 0 {
            Answer::status(429).header("retry-after", "1")
        } else {
            Answer::status(200)
        }
    })
    .await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 2, backoffDelay: PT0.01S, retryAfterMax: PT5S}}",
                sink.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "r", "t", &[]).await;
    sink.wait_for(2, WAIT).await;
    let gap = gaps_ms(&sink)[0];
    assert!(gap >= 1000, "retried after {gap} ms despite Retry-After: 1");
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried_then_dead_lettered_once() {
    let slow = Sink::start(|_, _| Answer::status(200).delay(Duration::from_secs(3))).await;
    let dls = Sink::ok().await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 1, backoffDelay: PT0.05S, timeout: PT0.3S, deadLetterSink: {{uri: '{}'}}}}",
                slow.url, dls.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "slow", "t", &[]).await;
    dls.wait_for(1, WAIT).await;
    assert_eq!(slow.received().len(), 2);
    dls.assert_stays_at(1, Duration::from_millis(500)).await;
}

/// How a misbehaving subscriber answers every request it gets.
#[derive(Clone, Copy, Debug)]
enum Misbehaving {
    /// Accepts the connection, reads the request, never answers.
    Silent,
    /// Answers 200 with a 1,000-byte body, one byte every 100 ms.
    Trickle,
    /// Answers 200 with a 4 GiB body, as fast as it is read.
    Flood,
}

/// A subscriber on a raw socket that answers as `how` says; counts the requests it got.
async fn misbehaving(how: Misbehaving) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let got = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                // The request is small: its head and body come in one read or two.
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(7).any(|w| w == b"{\"n\":1}") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                match how {
                    Misbehaving::Silent => {
                        let _ = conn.read(&mut buf).await;
                    }
                    Misbehaving::Trickle => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
                        if conn.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        for _ in 0..1000 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if conn.write_all(b"x").await.is_err() {
                                return;
                            }
                        }
                    }
                    Misbehaving::Flood => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 4294967296\r\n\r\n";
                        if conn.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let zeros = vec![0u8; 64 * 1024];
                        while conn.write_all(&zeros).await.is_ok() {}
                    }
                }
            });
        }
    });
    (url, got)
}

/// A subscriber that never answers, answers a byte at a time, or answers gigabytes costs an
/// attempt its timeout (the whole answer, body included, must come within it) or its 1 MiB
/// cap on an answer, and no more: each is retried, then dead-lettered with why.
#[tokio::test]
async fn silent_trickling_and_flooding_subscribers_are_bounded_by_the_timeout_and_the_cap() {
    for (how, error) in [
        (Misbehaving::Silent, "timeout"),
        (Misbehaving::Trickle, "timeout"),
        (Misbehaving::Flood, "larger than"),
    ] {
        let (url, got) = misbehaving(how).await;
        let dls = Sink::ok().await;
        let config = broker("")
            + &trigger(
                "t",
                &format!(
                    "subscriber: {{uri: '{url}'}}, delivery: {{retry: 1, backoffDelay: PT0.05S, timeout: PT1S, deadLetterSink: {{uri: '{}'}}}}",
                    dls.url
                ),
            );
        let sy = Switchyard::start(&config);
        send(&sy, "bad", "t", &[]).await;
        dls.wait_for(1, WAIT).await;
        assert_eq!(
            got.load(Ordering::SeqCst),
            2,
            "{how:?}: one attempt and one retry"
        );
        let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
        let list = common::get_json(&api).await;
        let id = list["items"][0]["id"].as_str().unwrap().to_owned();
        let letter = common::get_json(&format!("{api}/{id}")).await;
        let attempts = letter["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{how:?}: {letter}");
        for a in attempts {
            let text = a["error"].as_str().unwrap_or_default();
            assert!(text.contains(error), "{how:?}: {a}");
            assert!(a["latencyMs"].as_u64().unwrap() < 5_000, "{how:?}: {a}");
        }
    }
}

#[tokio::test]
async fn a_slow_or_failing_subscriber_does_not_delay_other_triggers() {
    let failing = Sink::start(|_, _| Answer::status(503)).await;
    let slow = Sink::start(|_, _| Answer::status(200).delay(Duration::from_secs(4))).await;
    let fast = Sink::ok().await;
    let config = broker("{retry: 100, backoffDelay: PT0.01S, backoffMax: PT0.05S}")
        + &trigger(
            "failing",
            &format!("subscriber: {{uri: '{}'}}", failing.url),
        )
        + &trigger("slow", &format!("subscriber: {{uri: '{}'}}", slow.url))
        + &trigger("fast", &format!("subscriber: {{uri: '{}'}}", fast.url));
    let sy = Switchyard::start(&config);
    for i in 0..20 {
        send(&sy, &format!("e{i}"), "t", &[]).await;
    }
    fast.wait_for(20, WAIT).await;
    // Every fast delivery happened while the slow subscriber had not answered even once.
    assert_eq!(
        slow.completed(),
        0,
        "the fast trigger waited for the slow one"
    );
    assert!(!failing.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_retries_pending_loses_nothing() {
    // Each event fails twice before it is taken; kill the server while retries are pending.
    let attempts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let a = Arc::clone(&attempts);
    let sink = Sink::start(move |_, e| {
        let mut m = a.lock().unwrap();
        let n = m.entry(e.id.clone()).or_default();
        *n += 1;
        if *n <= 2 {
            Answer::status(503)
        } else {
            Answer::status(200)
        }
    })
    .await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 10, backoffDelay: PT0.3S, backoffMax: PT0.3S}}",
                sink.url
            ),
        );
    let mut sy = Switchyard::start(&config);
    let ids: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    for id in &ids {
        send(&sy, id, "t", &[]).await;
    }
    // Every event has failed at least once: retries are pending in the store.
    sink.wait_for(50, WAIT).await;
    sy.kill9();
    sy.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = ids
            .iter()
            .all(|id| attempts.lock().unwrap().get(id).copied().unwrap_or(0) >= 3);
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every event was delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At-least-once, with duplicates bounded: nobody got more than its two failures, one
    // success, and a repeat of an attempt that was in flight at the kill.
    for (id, n) in attempts.lock().unwrap().iter() {
        assert!(*n <= 5, "{id} was attempted {n} times");
    }
}
