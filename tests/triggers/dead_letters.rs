//! Dead letters: what is dead-lettered and with which attributes, and the operator's list,
//! show, redrive and purge.

use super::*;

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

/// A purge or redrive of all works through the dead letters a chunk at a time and counts
/// every one: 1,001 dead letters (many chunks) are redriven, dead-lettered again, and
/// purged, and the audit log counts 1,001 each time. A page holds at most 1,000 of them,
/// however many are asked for, and says where the next one starts.
#[tokio::test]
async fn redrive_and_purge_of_all_go_through_many_dead_letters_in_chunks() {
    const N: usize = 1_001;
    // Each round delivers and dead-letters a thousand events one by one.
    const LONG: Duration = Duration::from_secs(60);
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
    // Asks for more than a page holds: the first page is cut at 1,000, the second has the rest.
    let pages = || {
        let api = api.clone();
        async move {
            let first = common::get_json(&format!("{api}?limit=1001")).await;
            let mut sizes = vec![first["items"].as_array().unwrap().len()];
            if let Some(next) = first["next"].as_str() {
                let rest = common::get_json(&format!("{api}?limit=1000&after={next}")).await;
                sizes.push(rest["items"].as_array().unwrap().len());
            }
            sizes
        }
    };
    let dead_letters = || async { pages().await.iter().sum::<usize>() };
    common::eventually("all dead-lettered", LONG, || async {
        (dead_letters().await == N).then_some(())
    })
    .await;
    assert_eq!(pages().await, [1_000, 1], "a page holds at most 1,000");

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
    refusing.wait_for(2 * N, LONG).await;
    common::eventually("all dead-lettered again", LONG, || async {
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
    let sy = Switchyard::start(&dead_lettering(&refusing, &dls));
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
    let sy = Switchyard::start(&dead_lettering(&refusing, &dls));
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

/// A Broker and a Trigger `t` to `subscriber` with no retries, whose dead letters go to `dls`.
fn dead_lettering(subscriber: &Sink, dls: &Sink) -> String {
    broker("")
        + &trigger(
            "t",
            &format!(
                "subscriber: {{uri: '{}'}}, delivery: {{retry: 0, deadLetterSink: {{uri: '{}'}}}}",
                subscriber.url, dls.url
            ),
        )
}
