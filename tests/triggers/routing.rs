//! Routing: which Trigger gets which event (filters, the subscriptions API's dialects, a
//! backlog past the hot queue), and how it is sent (structured mode, a rate, no redirects,
//! https without CA certificates).

use super::*;

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
