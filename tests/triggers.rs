//! Black-box tests of triggers and delivery (spec/delivery.md): the real binary, real HTTP
//! sinks in this process. The scenarios follow Knative's conformance tests for Broker and
//! Trigger (routing, filters, delivery precedence, redelivery timing, dead letters, replies).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::sink::{Answer, Sink};
use common::{Switchyard, client};

const WAIT: Duration = Duration::from_secs(20);
const BROKER: &str = "/default/default";

fn broker(delivery: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\nspec: {{ttl: 255{}}}\n---\n",
        if delivery.is_empty() {
            String::new()
        } else {
            format!(", delivery: {delivery}")
        }
    )
}

fn trigger(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec: {{broker: default, {spec}}}\n---\n"
    )
}

/// A trigger that takes events of one `type` to `url`, with extra spec fields (may be empty).
fn typed(name: &str, ty: &str, url: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    trigger(
        name,
        &format!("filter: {{attributes: {{type: {ty}}}}}, subscriber: {{uri: '{url}'}}{extra}"),
    )
}

async fn send(sy: &Switchyard, id: &str, ty: &str, extra: &[(&str, &str)]) {
    let mut req = client()
        .post(sy.url(BROKER))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests")
        .header("ce-type", ty);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req
        .body("{\"n\":1}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "event {id}");
}

#[tokio::test]
async fn routing_with_two_triggers() {
    let a = Sink::ok().await;
    let b = Sink::ok().await;
    let config = broker("")
        + &typed("a", "com.example.a", &a.url, "")
        + &typed("b", "com.example.b", &b.url, "");
    let sy = Switchyard::start(&config);
    send(&sy, "1", "com.example.a", &[]).await;
    send(&sy, "2", "com.example.b", &[]).await;
    send(&sy, "3", "com.example.a", &[]).await;
    send(&sy, "4", "com.example.c", &[]).await;
    a.wait_for(2, WAIT).await;
    b.wait_for(1, WAIT).await;
    let mut a_ids = a.ids();
    a_ids.sort();
    assert_eq!(a_ids, ["1", "3"]);
    assert_eq!(b.ids(), ["2"]);
    // Delivered in binary mode with the broker's loop guard removed, arrival time kept, and
    // the data as sent.
    let r = &a.received()[0];
    assert_eq!(r.headers["ce-specversion"], "1.0");
    assert_eq!(r.headers["prefer"], "reply");
    assert!(r.headers.get("ce-knativebrokerttl").is_none());
    assert!(r.headers.get("ce-knativearrivaltime").is_some());
    assert_eq!(r.body.as_ref(), b"{\"n\":1}");
}

#[tokio::test]
async fn many_triggers_matrix_on_type_source_and_extensions() {
    // Knative's "many triggers" conformance: every combination of type, source and an
    // extension in the legacy filter ("" = any non-empty value).
    let cases: [(&str, &str); 6] = [
        ("all", "{}"),
        ("type", "{type: t1}"),
        ("source", "{source: /s1}"),
        ("both", "{type: t1, source: /s1}"),
        ("ext", "{myext: v1}"),
        ("anyext", "{myext: ''}"),
    ];
    let mut sinks = Vec::new();
    let mut config = broker("");
    for (name, attrs) in cases {
        let s = Sink::ok().await;
        config += &trigger(
            name,
            &format!(
                "filter: {{attributes: {attrs}}}, subscriber: {{uri: '{}'}}",
                s.url
            ),
        );
        sinks.push((name, s));
    }
    let sy = Switchyard::start(&config);
    let events: [(&str, &str, &str, Option<&str>); 5] = [
        ("e1", "t1", "/s1", None),
        ("e2", "t1", "/s2", Some("v1")),
        ("e3", "t2", "/s1", Some("v2")),
        ("e4", "t2", "/s2", None),
        ("e5", "t1", "/s1", Some("v1")),
    ];
    for (id, ty, source, ext) in events {
        let mut req = client()
            .post(sy.url(BROKER))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", source)
            .header("ce-type", ty);
        if let Some(v) = ext {
            req = req.header("ce-myext", v);
        }
        assert_eq!(req.send().await.unwrap().status(), 202);
    }
    let expected: [(&str, &[&str]); 6] = [
        ("all", &["e1", "e2", "e3", "e4", "e5"]),
        ("type", &["e1", "e2", "e5"]),
        ("source", &["e1", "e3", "e5"]),
        ("both", &["e1", "e5"]),
        ("ext", &["e2", "e5"]),
        ("anyext", &["e2", "e3", "e5"]),
    ];
    for (name, ids) in expected {
        let sink = &sinks.iter().find(|(n, _)| *n == name).unwrap().1;
        sink.wait_for(ids.len(), WAIT).await;
        let mut got = sink.ids();
        got.sort();
        assert_eq!(got, ids, "trigger {name}");
    }
    // "all" got five; by then every other trigger had its chance at all five events.
    sinks[0].1.wait_for(5, WAIT).await;
}

#[tokio::test]
async fn subscriptions_api_dialects_accept_and_reject() {
    let dialects: [(&str, &str, &[&str]); 10] = [
        (
            "exact",
            "[{exact: {type: com.example.order.created}}]",
            &["1"],
        ),
        (
            "prefix",
            "[{prefix: {type: com.example.order.}}]",
            &["1", "2"],
        ),
        ("suffix", "[{suffix: {type: .created}}]", &["1", "3"]),
        (
            "all",
            "[{all: [{prefix: {type: com.example.}}, {suffix: {type: created}}]}]",
            &["1"],
        ),
        (
            "any",
            "[{any: [{exact: {type: com.example.order.deleted}}, {exact: {subject: s3}}]}]",
            &["2", "3"],
        ),
        ("not", "[{not: {prefix: {type: com.example.}}}]", &["3"]),
        (
            "cesql",
            "[{cesql: \"type LIKE 'com.example.%' AND subject = 's2'\"}]",
            &["2"],
        ),
        ("sql", "[{sql: \"subject IN ('s1', 's3')\"}]", &["1", "3"]),
        (
            "anynotcesql",
            "[{any: [{cesql: \"subject = 's1'\"}, {not: {cesql: \"type LIKE '%.deleted' OR type LIKE 'com.%'\"}}]}]",
            &["1", "3"],
        ),
        (
            "allcesql",
            "[{all: [{cesql: \"type LIKE '%.created'\"}, {prefix: {type: com.}}]}]",
            &["1"],
        ),
    ];
    let mut config = broker("");
    let mut sinks = Vec::new();
    for (name, filters, _) in dialects {
        let s = Sink::ok().await;
        config += &trigger(
            name,
            &format!("filters: {filters}, subscriber: {{uri: '{}'}}", s.url),
        );
        sinks.push(s);
    }
    // `filters` overrides the legacy `filter`.
    let over = Sink::ok().await;
    config += &trigger(
        "override",
        &format!(
            "filter: {{attributes: {{type: never}}}}, filters: [{{exact: {{subject: s1}}}}], subscriber: {{uri: '{}'}}",
            over.url
        ),
    );
    let all = Sink::ok().await;
    config += &trigger("everything", &format!("subscriber: {{uri: '{}'}}", all.url));
    let sy = Switchyard::start(&config);
    send(
        &sy,
        "1",
        "com.example.order.created",
        &[("ce-subject", "s1")],
    )
    .await;
    send(
        &sy,
        "2",
        "com.example.order.deleted",
        &[("ce-subject", "s2")],
    )
    .await;
    send(&sy, "3", "org.other.created", &[("ce-subject", "s3")]).await;
    all.wait_for(3, WAIT).await;
    for ((name, _, ids), sink) in dialects.iter().zip(&sinks) {
        sink.wait_for(ids.len(), WAIT).await;
        let mut got = sink.ids();
        got.sort();
        assert_eq!(&got, ids, "dialect {name}");
    }
    over.wait_for(1, WAIT).await;
    assert_eq!(over.ids(), ["1"]);
}

fn failing(
    times: usize,
    counter: Arc<AtomicUsize>,
) -> impl Fn(usize, &switchyard_core::CloudEvent) -> Answer {
    move |_, _| {
        if counter.fetch_add(1, Ordering::SeqCst) < times {
            Answer::status(500)
        } else {
            Answer::status(200)
        }
    }
}

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
async fn unprocessable_goes_to_the_dead_letter_sink_once_with_the_error_attributes() {
    let sink = Sink::start(|_, _| Answer::status(422).body("field `amount` is negative")).await;
    let empty = Sink::start(|_, _| Answer::status(400)).await;
    let dls = Sink::ok().await;
    let config = broker(&format!(
        "{{retry: 5, backoffDelay: PT0.05S, deadLetterSink: {{uri: '{}'}}}}",
        dls.url
    )) + &typed("t", "t", &sink.url, "")
        + &typed("e", "e", &empty.url, "");
    let sy = Switchyard::start(&config);
    send(&sy, "bad", "t", &[]).await;
    let got = dls.wait_for(1, WAIT).await;
    let h = &got[0].headers;
    assert_eq!(h["ce-id"], "bad");
    assert_eq!(h["ce-knativeerrorcode"], "422");
    assert_eq!(h["ce-knativeerrordest"].to_str().unwrap(), sink.url);
    let data = base64::engine::general_purpose::STANDARD
        .decode(h["ce-knativeerrordata"].as_bytes())
        .unwrap();
    assert_eq!(data, b"field `amount` is negative");
    assert_eq!(
        got[0].body.as_ref(),
        b"{\"n\":1}",
        "the original event, data included"
    );
    dls.assert_stays_at(1, Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1, "a 422 is not retried");
    // An empty error body: no knativeerrordata.
    send(&sy, "bad2", "e", &[]).await;
    let got = dls.wait_for(2, WAIT).await;
    assert_eq!(got[1].headers["ce-knativeerrorcode"], "400");
    assert!(got[1].headers.get("ce-knativeerrordata").is_none());
}

#[tokio::test]
async fn unreachable_subscriber_is_dead_lettered_naming_it() {
    let dls = Sink::ok().await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/fn", l.local_addr().unwrap())
    };
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{closed}'}}, delivery: {{retry: 1, backoffDelay: PT0.05S, deadLetterSink: {{uri: '{}'}}}}",
                dls.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "lost", "t", &[]).await;
    let got = dls.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].headers["ce-knativeerrordest"].to_str().unwrap(),
        closed
    );
    assert!(got[0].headers.get("ce-knativeerrorcode").is_none());
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
async fn reply_chain_from_one_trigger_to_the_next() {
    let a = Sink::start(|_, e| Answer::reply("com.example.b", &format!("reply-to-{}", e.id))).await;
    let b = Sink::ok().await;
    let config = broker("")
        + &typed("a", "com.example.a", &a.url, "")
        + &typed("b", "com.example.b", &b.url, "");
    let mut sy = Switchyard::start(&config);
    send(&sy, "start", "com.example.a", &[]).await;
    let got = b.wait_for(1, WAIT).await;
    let reply = got[0].event.as_ref().unwrap();
    assert_eq!(reply.id, "reply-to-start");
    assert_eq!(reply.source, "/sink");
    // The reply was stored in the broker with the TTL decremented.
    let stored = sy.stored("default/default");
    let r = stored
        .iter()
        .find(|(_, e)| e.id == "reply-to-start")
        .unwrap();
    assert_eq!(
        r.1.extensions.get("knativebrokerttl"),
        Some(&switchyard_core::ExtValue::Integer(254))
    );
}

#[tokio::test]
async fn a_reply_loop_dies_by_ttl() {
    // The sink answers every event with an event of the same type: a loop.
    let looping = Sink::start(|n, _| Answer::reply("com.example.loop", &format!("r{n}"))).await;
    let config = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\nspec: {ttl: 5}\n---\n".to_owned()
        + &trigger("loop", &format!("filter: {{attributes: {{type: com.example.loop}}}}, subscriber: {{uri: '{}'}}", looping.url));
    let sy = Switchyard::start(&config);
    send(&sy, "seed", "com.example.loop", &[]).await;
    // TTL 5 at ingress: deliveries with TTL 5, 4, 3, 2, 1; the reply to the last is dropped.
    looping.wait_for(5, WAIT).await;
    looping.assert_stays_at(5, Duration::from_millis(800)).await;
}

/// Two brokers whose triggers forward to each other pass an event round only as long as its
/// TTL lasts: each forward is a hop, as a reply is. Then the event is dead-lettered, once.
#[tokio::test]
async fn a_loop_between_two_brokers_dies_by_ttl() {
    let dls = Sink::ok().await;
    let forward = |name: &str, from: &str, to: &str| {
        format!(
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec: {{broker: {from}, subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: {to}}}}}, delivery: {{retry: 0, deadLetterSink: {{uri: '{}'}}}}}}\n---\n",
            dls.url
        )
    };
    let config = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: a}\nspec: {ttl: 5}\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\nspec: {ttl: 5}\n---\n".to_owned()
        + &forward("a-to-b", "a", "b")
        + &forward("b-to-a", "b", "a");
    let mut sy = Switchyard::start(&config);
    let resp = client()
        .post(sy.url("/default/a"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "round")
        .header("ce-source", "/tests")
        .header("ce-type", "t")
        // A producer's TTL above the broker's is lowered to it.
        .header("ce-knativebrokerttl", "1000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // Stored in a with 5, b 4, a 3, b 2, a 1; the forward to b finds nothing left.
    let got = dls.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "round");
    dls.assert_stays_at(1, Duration::from_millis(500)).await;
    let ttls = |broker: &str, sy: &mut Switchyard| -> Vec<i64> {
        sy.stored(broker)
            .iter()
            .map(|(_, e)| e.extensions["knativebrokerttl"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ttls("default/a", &mut sy), [5, 3, 1]);
    assert_eq!(ttls("default/b", &mut sy), [4, 2]);
}

/// A batch of replies shares its original's TTL: with TTL 9, two replies get 4 each, their
/// two replies 1 each, and theirs are dropped; a subscriber that doubles every event makes 1 + 2
/// + 4 events, not 2⁹.
#[tokio::test]
async fn a_batch_of_replies_shares_the_ttl_of_its_original() {
    let doubling = Sink::start(|n, _| {
        Answer::status(200)
            .header("content-type", "application/cloudevents-batch+json")
            .body(format!(
                r#"[{{"specversion":"1.0","id":"r{n}a","source":"/d","type":"com.example.twice"}},{{"specversion":"1.0","id":"r{n}b","source":"/d","type":"com.example.twice"}}]"#
            ))
    })
    .await;
    let config = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\nspec: {ttl: 9}\n---\n".to_owned()
        + &trigger("twice", &format!("filter: {{attributes: {{type: com.example.twice}}}}, subscriber: {{uri: '{}'}}", doubling.url));
    let sy = Switchyard::start(&config);
    send(&sy, "seed", "com.example.twice", &[]).await;
    doubling.wait_for(7, WAIT).await;
    doubling
        .assert_stays_at(7, Duration::from_millis(800))
        .await;
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

#[tokio::test]
async fn a_backlog_past_the_hot_queue_is_delivered_whole() {
    // One batch of 3,000 events is routed at once: each trigger's queue keeps the first 1,024
    // (the dispatcher's HOT_QUEUE) with their event and the rest as runs of offsets, read back
    // from the log in blocks. The "even" trigger's filter leaves a gap after every match, so
    // its runs are one long.
    let all = Sink::ok().await;
    let even = Sink::ok().await;
    let config = broker("")
        + &trigger("all", &format!("subscriber: {{uri: '{}'}}", all.url))
        + &trigger(
            "even",
            &format!(
                "filter: {{attributes: {{parity: even}}}}, subscriber: {{uri: '{}'}}",
                even.url
            ),
        );
    let sy = Switchyard::start(&config);
    let n = 3000;
    let batch: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "specversion": "1.0", "id": format!("e{i}"), "source": "/tests", "type": "bulk",
                "parity": if i % 2 == 0 { "even" } else { "odd" }, "data": {"i": i}
            })
        })
        .collect();
    let resp = client()
        .post(sy.url(BROKER))
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&batch).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let distinct = |sink: &Sink| sink.ids().into_iter().collect::<HashSet<String>>();
    for (sink, want) in [(&all, n), (&even, n / 2)] {
        common::eventually("every event delivered", WAIT, || async {
            (distinct(sink).len() >= want).then_some(())
        })
        .await;
    }
    let expected_all: HashSet<String> = (0..n).map(|i| format!("e{i}")).collect();
    let expected_even: HashSet<String> = (0..n).step_by(2).map(|i| format!("e{i}")).collect();
    assert_eq!(distinct(&all), expected_all);
    assert_eq!(distinct(&even), expected_even);
    // A delivered event is the stored one, data included, whether it came from the hot part
    // of the queue or was read back.
    let last = all
        .received()
        .into_iter()
        .find(|r| r.event.as_ref().is_some_and(|e| e.id == "e2999"))
        .unwrap();
    assert_eq!(last.body.as_ref(), b"{\"i\":2999}");
}

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

/// A purge or redrive of all works through the dead letters a chunk at a time and counts
/// every one: 250 dead letters (more than two chunks) are redriven, dead-lettered again, and
/// purged, and the audit log counts 250 each time.
#[tokio::test]
async fn redrive_and_purge_of_all_go_through_many_dead_letters_in_chunks() {
    const N: usize = 250;
    let refusing = Sink::start(|_, _| Answer::status(422)).await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 0}}",
                refusing.url
            ),
        );
    let sy = Switchyard::start(&config);
    common::post_batch(&sy, BROKER, (0..N).map(|i| format!("e{i}"))).await;
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let dead_letters = || {
        let api = api.clone();
        async move {
            let list = common::get_json(&format!("{api}?limit=1000")).await;
            list["items"].as_array().unwrap().len()
        }
    };
    common::eventually("all dead-lettered", WAIT, || async {
        (dead_letters().await == N).then_some(())
    })
    .await;

    let redriven = client()
        .post(format!("{api}/redrive"))
        .json(&serde_json::json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(redriven.status(), 200);
    let body: serde_json::Value = redriven.json().await.unwrap();
    assert_eq!(body["redriven"], N);
    // Each is delivered again, refused again, and dead-lettered again.
    refusing.wait_for(2 * N, WAIT).await;
    common::eventually("all dead-lettered again", WAIT, || async {
        (dead_letters().await == N).then_some(())
    })
    .await;

    let purged = client()
        .delete(format!("{api}?all=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    let body: serde_json::Value = purged.json().await.unwrap();
    assert_eq!(body["purged"], N);
    assert_eq!(dead_letters().await, 0);
    let audit = common::get_json(&sy.url("/api/v1/namespaces/default/audit")).await;
    let counts: Vec<(String, u64)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("redrive".to_owned(), N as u64),
            ("purge".to_owned(), N as u64)
        ]
    );
}

/// A slow dead-letter sink gets at most 16 sends of a trigger at once; the rest wait in the
/// store and all arrive.
#[tokio::test]
async fn sends_to_a_slow_dead_letter_sink_are_bounded() {
    let dls = Sink::start(|_, _| Answer::status(200).delay(Duration::from_secs(2))).await;
    let refusing = Sink::start(|_, _| Answer::status(422)).await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 0, deadLetterSink: {{uri: '{}'}}}}",
                refusing.url, dls.url
            ),
        );
    let sy = Switchyard::start(&config);
    common::post_batch(&sy, BROKER, (0..40).map(|i| format!("d{i}"))).await;
    dls.wait_for(16, WAIT).await;
    // None of the first sixteen is answered for 2 s: no seventeenth starts meanwhile.
    dls.assert_stays_at(16, Duration::from_millis(1000)).await;
    dls.wait_for(40, Duration::from_secs(60)).await;
    let mut ids = dls.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
}

/// Dead letters of one trigger are written concurrently and commit in any order: a burst of
/// them all reaches the dead-letter sink without a restart, and all are in the store.
#[tokio::test]
async fn a_burst_of_dead_letters_all_reaches_the_dead_letter_sink() {
    let dls = Sink::ok().await;
    let refusing = Sink::start(|_, _| Answer::status(422)).await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 0, deadLetterSink: {{uri: '{}'}}}}",
                refusing.url, dls.url
            ),
        );
    let sy = Switchyard::start(&config);
    for round in 0..5 {
        common::post_batch(&sy, BROKER, (0..100).map(|i| format!("b{round}-{i}"))).await;
    }
    dls.wait_for(500, WAIT).await;
    let mut ids = dls.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 500);
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters?limit=1000");
    let list = common::get_json(&api).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 500);
}

#[tokio::test]
async fn dead_letters_can_be_listed_shown_redriven_and_purged() {
    let (sink, healthy) = Sink::switchable(Answer::status(500).body("down")).await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 0}}",
                sink.url
            ),
        );
    // The redrive at the end sends to a subscriber the configuration does not name, which
    // the server is told to allow.
    let alt = Sink::ok().await;
    let sy = Switchyard::start_with(&config, &["--redrive-allow-uri", &alt.url]);
    for i in 0..3 {
        send(&sy, &format!("d{i}"), "com.example.dl", &[]).await;
    }
    send(&sy, "other", "com.example.keep", &[]).await;
    sink.wait_for(4, WAIT).await;
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let c = client();
    // Dead letters are written after the failed attempt; poll until all four are in.
    let deadline = tokio::time::Instant::now() + WAIT;
    let list = loop {
        let v: serde_json::Value = common::get_json(&api).await;
        if v["items"].as_array().unwrap().len() == 4 || tokio::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["trigger"], "t");
    assert_eq!(items[0]["status"], 500);
    assert_eq!(items[0]["reason"], "retries exhausted");
    // Filter and page.
    let v: serde_json::Value = serde_json::from_slice(
        &c.get(&api)
            .query(&[("type", "com.example.dl"), ("limit", "2")])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let next = v["next"].as_str().unwrap().to_owned();
    let v: serde_json::Value = serde_json::from_slice(
        &c.get(&api)
            .query(&[("type", "com.example.dl"), ("after", next.as_str())])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert!(v["next"].is_null());
    // One in full, with its attempt and event.
    let id = items[0]["id"].as_str().unwrap();
    let one: serde_json::Value = common::get_json(&format!("{api}/{id}")).await;
    assert_eq!(one["attempts"][0]["status"], 500);
    assert_eq!(one["attempts"][0]["body"], "down");
    assert_eq!(one["event"]["id"], items[0]["eventId"]);
    // Unknown ids and unfiltered purges are refused clearly.
    assert_eq!(
        c.get(format!("{api}/12345")).send().await.unwrap().status(),
        404
    );
    assert_eq!(c.delete(&api).send().await.unwrap().status(), 400);
    // Fix the sink and redrive the three of type dl with the CLI.
    healthy.store(true, Ordering::SeqCst);
    let out = std::process::Command::new(common::bin())
        .args([
            "dlq",
            "--server",
            &sy.base,
            "redrive",
            "--type",
            "com.example.dl",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "redriven: 3\n");
    sink.wait_for(7, WAIT).await;
    let redelivered: HashSet<String> = sink.ids()[4..].iter().cloned().collect();
    assert_eq!(
        redelivered,
        HashSet::from(["d0".into(), "d1".into(), "d2".into()])
    );
    // The CLI lists what is left as a table; then purge it.
    let out = std::process::Command::new(common::bin())
        .args(["dlq", "--server", &sy.base, "list"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("com.example.keep"));
    let out = std::process::Command::new(common::bin())
        .args([
            "dlq", "--server", &sy.base, "purge", "--all", "--output", "json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["purged"], 1);
    // Redrive one to another subscriber.
    healthy.store(false, Ordering::SeqCst);
    send(&sy, "late", "com.example.late", &[]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let id = loop {
        let v: serde_json::Value = common::get_json(&api).await;
        if let Some(id) = v["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter for `late`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = std::process::Command::new(common::bin())
        .args([
            "dlq", "--server", &sy.base, "redrive", &id, "--uri", &alt.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = alt.wait_for(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "late");
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

#[tokio::test]
async fn structured_delivery_rate_limit_and_no_redirects() {
    let structured = Sink::ok().await;
    let target = Sink::ok().await;
    let t = target.url.clone();
    let redirecting = Sink::start(move |_, _| Answer::status(302).header("location", &t)).await;
    let limited = Sink::ok().await;
    let dls = Sink::ok().await;
    let config = broker("")
        + &trigger(
            "json",
            &format!(
                "filter: {{attributes: {{type: json}}}}, subscriber: {{uri: '{}'}}, delivery: {{format: json}}",
                structured.url
            ),
        )
        + &trigger(
            "redirect",
            &format!(
                "filter: {{attributes: {{type: redirect}}}}, subscriber: {{uri: '{}'}}, delivery: {{retry: 3, deadLetterSink: {{uri: '{}'}}}}",
                redirecting.url, dls.url
            ),
        )
        + &trigger(
            "limited",
            &format!(
                "filter: {{attributes: {{type: limited}}}}, subscriber: {{uri: '{}'}}, rateLimit: 5",
                limited.url
            ),
        );
    let sy = Switchyard::start(&config);
    send(&sy, "j", "json", &[]).await;
    send(&sy, "r", "redirect", &[]).await;
    for i in 0..6 {
        send(&sy, &format!("l{i}"), "limited", &[]).await;
    }
    // format: json delivers in structured mode, the loop guard left out.
    let got = structured.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].headers["content-type"],
        "application/cloudevents+json"
    );
    let doc: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(doc["id"], "j");
    assert_eq!(doc["data"], serde_json::json!({"n": 1}));
    assert!(doc.get("knativebrokerttl").is_none());
    // A redirect is an answer, not followed and not retried: one attempt, then a dead letter.
    let letters = dls.wait_for(1, WAIT).await;
    assert_eq!(letters[0].headers["ce-knativeerrorcode"], "302");
    assert_eq!(redirecting.received().len(), 1);
    assert!(target.received().is_empty(), "the redirect was followed");
    // rateLimit: 5 per second, so six deliveries start over at least one second (seen at the
    // sink, less the first one's connection setup; unpaced, they take milliseconds).
    let got = limited.wait_for(6, WAIT).await;
    let span = got[5].at - got[0].at;
    assert!(
        span >= Duration::from_millis(800),
        "six deliveries in {span:?} at 5/s"
    );
}

#[tokio::test]
async fn a_dead_letter_the_sink_did_not_take_is_sent_again_after_a_restart() {
    let (dls, healthy) = Sink::switchable(Answer::status(503)).await;
    let sink = Sink::start(|_, _| Answer::status(422)).await;
    let config = broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 1, backoffDelay: PT0.05S, deadLetterSink: {{uri: '{}'}}}}",
                sink.url, dls.url
            ),
        );
    let mut sy = Switchyard::start(&config);
    send(&sy, "owed", "t", &[]).await;
    // The dead-letter sink refuses both attempts.
    dls.wait_for(2, WAIT).await;
    sy.stop();
    healthy.store(true, Ordering::SeqCst);
    sy.restart();
    let got = dls.wait_for(3, WAIT).await;
    assert_eq!(got[2].headers["ce-id"], "owed");
    assert_eq!(got[2].headers["ce-knativeerrorcode"], "422");
    // Taken now: the dead letter says so, and a further restart does not send it again.
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let list: serde_json::Value = common::get_json(&api).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let one: serde_json::Value = common::get_json(&format!("{api}/{id}")).await;
        if one["deadLetterSinkPending"] == false {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {one}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sy.stop();
    sy.restart();
    dls.assert_stays_at(3, Duration::from_millis(800)).await;
}

#[tokio::test]
async fn retries_of_a_removed_trigger_become_dead_letters() {
    let sink = Sink::start(|_, _| Answer::status(503)).await;
    let config = broker("")
        + &trigger(
            "doomed",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 5, backoffDelay: PT30S}}",
                sink.url
            ),
        );
    let mut sy = Switchyard::start(&config);
    send(&sy, "pending", "t", &[]).await;
    sink.wait_for(1, WAIT).await;
    // Wait until the retry is recorded (the counter moves after the write).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = common::metrics(&sy).await;
        if text.contains(r#"switchyard_delivery_retries_total{namespace_name="default",broker_name="default",trigger_name="doomed"} 1"#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retry was recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The retry is due in 30 s; remove the trigger and restart.
    sy.stop();
    sy.rewrite_config(&broker(""));
    sy.restart();
    let api = sy.url("/api/v1/namespaces/default/brokers/default/deadletters");
    let v: serde_json::Value = common::get_json(&api).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["trigger"], "doomed");
    assert_eq!(items[0]["reason"], "trigger removed");
    assert_eq!(items[0]["eventId"], "pending");
    assert_eq!(items[0]["status"], 503);
}

/// Where the system has no CA certificates (a slim container image), `serve` still starts and
/// delivers to plain-HTTP subscribers; a trigger with an https subscriber is refused at start
/// with a one-line reason instead (issue 25: the image could not start at all).
#[tokio::test]
async fn without_ca_certificates_http_delivers_and_https_is_refused_at_start() {
    let no_roots = [
        ("SSL_CERT_FILE", "/nonexistent"),
        ("SSL_CERT_DIR", "/nonexistent"),
    ];
    let sink = Sink::ok().await;
    let sy = Switchyard::start_with_env(&(broker("") + &typed("a", "t", &sink.url, "")), &no_roots);
    send(&sy, "1", "t", &[]).await;
    sink.wait_for(1, WAIT).await;
    assert_eq!(sink.ids(), ["1"]);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        broker("") + &typed("s", "t", "https://example.invalid/", ""),
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "off")
        .envs(no_roots)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Trigger default/s")
            && stderr.contains("https://example.invalid/")
            && stderr.contains("no CA certificates"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

/// A port nothing listens on (yet): its connections are refused, as a function scaled to
/// zero's are.
fn unused_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The number in `series` of `text`, 0 when absent.
fn counted(text: &str, series: &str) -> f64 {
    common::metric_value(text, series).unwrap_or(0.0)
}

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
    let status = sy.url("/api/v1/namespaces/default/triggers/fn");
    common::eventually("the subscriber marked down", WAIT, || async {
        let s = common::get_json(&status).await;
        (s["status"]["conditions"][0]["reason"] == "SubscriberDown").then_some(())
    })
    .await;
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
    let status = sy.url("/api/v1/namespaces/default/triggers/fn");
    let down = common::eventually("the subscriber marked down", WAIT, || async {
        let s = common::get_json(&status).await;
        (s["status"]["conditions"][0]["reason"] == "SubscriberDown").then_some(s)
    })
    .await;
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
