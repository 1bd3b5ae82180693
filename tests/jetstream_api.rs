//! The JetStream engine's management side (spec/jetstream.md), with real processes on
//! loopback as in `jetstream.rs`: consumers made again, the dead-letter API and redrives
//! through any replica, events read and followed, EventTypes discovered, batches.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::jetstream::{Cluster, config, post, replicas};
use common::sink::{Answer, Sink};
use common::{Switchyard, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_whose_consumer_was_deleted_delivers_again() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let sys = replicas(2, &cluster, &config(&all.url, &orders.url, ""));
    assert_eq!(post(&sys[0], "before", "other").await, 202);
    all.wait_for(1, Duration::from_secs(30)).await;
    // An operator deletes the trigger's consumer by hand.
    let js = async_nats::jetstream::new(cluster.client().await);
    js.get_stream("SY_EV_default_default")
        .await
        .unwrap()
        .delete_consumer("all")
        .await
        .unwrap();
    // The replicas make it again (at the stream's end: what came meanwhile is not the
    // trigger's), and the trigger delivers what comes after.
    let mut i = 0;
    common::eventually(
        "the trigger delivers again",
        Duration::from_secs(60),
        || {
            i += 1;
            let sy = &sys[i % 2];
            let all = &all;
            async move {
                assert_eq!(post(sy, &format!("after{i}"), "other").await, 202);
                tokio::time::sleep(Duration::from_millis(200)).await;
                all.ids()
                    .iter()
                    .any(|id| id.starts_with("after"))
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dead_letter_api_answers_alike_on_every_replica() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let failing = Sink::start(|_, _| Answer::status(500)).await;
    let sys = replicas(
        2,
        &cluster,
        &config(&failing.url, &failing.url, "delivery: {retry: 0}"),
    );
    // Orders are dead letters of both triggers; the others of `all` only.
    for (i, ty) in ["order", "order", "other", "other"].iter().enumerate() {
        assert_eq!(post(&sys[i % 2], &format!("d{i}"), ty).await, 202);
    }
    let api = |sy: &Switchyard, rest: &str| {
        sy.url(&format!(
            "/api/v1/namespaces/default/brokers/default/deadletters{rest}"
        ))
    };
    let items = |v: &serde_json::Value| v["items"].as_array().unwrap().clone();
    common::eventually("six dead letters listed", Duration::from_secs(30), || {
        let url = api(&sys[0], "");
        async move { (items(&common::get_json(&url).await).len() == 6).then_some(()) }
    })
    .await;

    // Filters and pages, from the other replica.
    let orders = items(&common::get_json(&api(&sys[1], "?trigger=orders")).await);
    assert_eq!(orders.len(), 2);
    assert!(
        orders
            .iter()
            .all(|d| d["type"] == "order" && d["trigger"] == "orders")
    );
    let page = common::get_json(&api(&sys[1], "?limit=4")).await;
    assert_eq!(items(&page).len(), 4);
    let next = page["next"].as_str().unwrap().to_owned();
    let rest = common::get_json(&api(&sys[0], &format!("?limit=4&after={next}"))).await;
    assert_eq!(items(&rest).len(), 2);
    assert!(rest["next"].is_null());

    // One in full, from either replica.
    let id = orders[0]["id"].as_str().unwrap().to_owned();
    let one = common::get_json(&api(&sys[0], &format!("/{id}"))).await;
    assert_eq!(one["eventId"], orders[0]["eventId"]);
    assert_eq!(one["status"], 500);
    assert_eq!(one["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(one["event"]["type"], "order");
    assert_eq!(one["deadLetterSinkPending"], false);

    // Delete one, purge by filter, by trigger, then all.
    let deleted = client()
        .delete(api(&sys[1], &format!("/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = client()
        .get(api(&sys[0], &format!("/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let purge = |url: String| async move {
        let r = client().delete(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = purge(api(&sys[0], "?type=other")).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(2)));
    let (status, body) = purge(api(&sys[1], "?trigger=orders")).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)));
    let (status, body) = purge(api(&sys[1], "")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = purge(api(&sys[0], "?all=true")).await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(2)));
    assert!(items(&common::get_json(&api(&sys[1], "")).await).is_empty());
    // Each change is in the audit log, whichever replica made it, read from either.
    let audit = common::get_json(&sys[1].url("/api/v1/namespaces/default/audit")).await;
    let entries: Vec<(String, u64)> = items(&audit)
        .iter()
        .map(|e| {
            let action = e["action"].as_str().unwrap().to_owned();
            (action, e["count"].as_u64().unwrap())
        })
        .collect();
    let expected =
        [("delete", 1), ("purge", 2), ("purge", 1), ("purge", 2)].map(|(a, c)| (a.to_owned(), c));
    assert_eq!(entries, expected);

    let unknown = client()
        .get(sys[0].url("/api/v1/namespaces/default/brokers/nope/deadletters"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_redriven_through_any_replica_are_delivered_again() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (sink, healthy) = Sink::switchable(Answer::status(500)).await;
    let sys = replicas(
        2,
        &cluster,
        &config(&sink.url, &sink.url, "delivery: {retry: 0}"),
    );
    for (i, ty) in ["order", "other", "other"].iter().enumerate() {
        assert_eq!(post(&sys[i % 2], &format!("d{i}"), ty).await, 202);
    }
    let api = |sy: &Switchyard, rest: &str| {
        sy.url(&format!(
            "/api/v1/namespaces/default/brokers/default/deadletters{rest}"
        ))
    };
    let listed = |sy: &Switchyard| {
        let url = api(sy, "");
        async move {
            common::get_json(&url).await["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    common::eventually("four dead letters", Duration::from_secs(30), || {
        let l = listed(&sys[0]);
        async move { (l.await.len() == 4).then_some(()) }
    })
    .await;
    let redrive = |sy: &Switchyard, body: serde_json::Value| {
        let url = api(sy, "/redrive");
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let arrivals = |id: &str| sink.ids().iter().filter(|x| *x == id).count();

    // By id, through one replica; by filter, through the other.
    let orders = common::get_json(&api(&sys[1], "?trigger=orders")).await;
    let id = orders["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = redrive(&sys[1], serde_json::json!({"ids": [id]})).await;
    assert_eq!(
        (status, body["redriven"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, body) = redrive(
        &sys[0],
        serde_json::json!({"filter": {"trigger": "all", "type": "other"}}),
    )
    .await;
    assert_eq!(
        (status, body["redriven"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    common::eventually(
        "the redriven events delivered",
        Duration::from_secs(30),
        || {
            let done = arrivals("d0") >= 3 && arrivals("d1") >= 2 && arrivals("d2") >= 2;
            async move { done.then_some(()) }
        },
    )
    .await;
    let left = listed(&sys[1]).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (&left[0]["trigger"], &left[0]["eventId"]),
        (&"all".into(), &"d0".into())
    );

    // Refused: somewhere the trigger does not deliver; no selection.
    let (status, _) = redrive(
        &sys[0],
        serde_json::json!({"all": true, "uri": "http://127.0.0.1:9/elsewhere"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = redrive(&sys[0], serde_json::json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(
        listed(&sys[0]).await.len(),
        1,
        "nothing redriven by a refusal"
    );

    // A redrive that fails again is a dead letter again, at the event's own offset.
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    let before = common::get_json(&api(
        &sys[0],
        &format!("/{}", left[0]["id"].as_str().unwrap()),
    ))
    .await;
    let (status, body) = redrive(&sys[1], serde_json::json!({"all": true, "uri": sink.url})).await;
    assert_eq!(
        (status, body["redriven"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let again = common::eventually("dead-lettered again", Duration::from_secs(30), || {
        let l = listed(&sys[0]);
        let old = left[0]["id"].clone();
        async move {
            let l = l.await;
            (l.len() == 1 && l[0]["id"] != old).then(|| l[0].clone())
        }
    })
    .await;
    assert_eq!(again["eventId"], "d0");
    let after = common::get_json(&api(
        &sys[1],
        &format!("/{}", again["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(after["offset"], before["offset"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_brokers_events_are_read_and_followed_from_any_replica() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let sys = replicas(2, &cluster, &config(&all.url, &orders.url, ""));
    for (i, ty) in ["order", "other", "order"].iter().enumerate() {
        assert_eq!(post(&sys[0], &format!("e{i}"), ty).await, 202);
    }
    let events = |sy: &Switchyard, query: &str| {
        sy.url(&format!(
            "/api/v1/namespaces/default/brokers/default/events?{query}"
        ))
    };
    // Event ids and offsets of a JSON-lines answer (empty keep-alive lines skipped).
    let lines = |text: &str| -> Vec<(u64, String)> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let offset = v["offset"].as_u64().unwrap();
                (offset, v["event"]["id"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let stored = lines(&common::events_text(&sys[1], "from=start&follow=false").await);
    let ids: Vec<&str> = stored.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["e0", "e1", "e2"], "what the other replica stored");
    assert!(stored.windows(2).all(|w| w[0].0 < w[1].0), "{stored:?}");
    let only_orders =
        lines(&common::events_text(&sys[0], "from=start&follow=false&type=order").await);
    let ids: Vec<&str> = only_orders.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["e0", "e2"]);

    // Following from the end: the next event stored, through either replica, arrives.
    let following = client()
        .get(events(&sys[1], "from=end&limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(following.status(), 200);
    assert_eq!(post(&sys[0], "e3", "other").await, 202);
    let next = tokio::time::timeout(Duration::from_secs(30), following.text())
        .await
        .expect("the followed event within 30 s")
        .unwrap();
    assert_eq!(
        lines(&next)
            .iter()
            .map(|(_, id)| id.as_str())
            .collect::<Vec<_>>(),
        ["e3"]
    );

    let unknown = client()
        .get(sys[0].url("/api/v1/namespaces/default/brokers/nope/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_types_discovered_on_every_replica_add_up() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let config = config(&all.url, &orders.url, "").replacen(
        "metadata: {name: default}",
        "metadata: {name: default}\nspec: {eventTypes: record}",
        1,
    );
    let sys = replicas(2, &cluster, &config);
    for (i, ty) in ["order", "order", "order", "refund", "order", "order"]
        .iter()
        .enumerate()
    {
        assert_eq!(post(&sys[i % 2], &format!("t{i}"), ty).await, 202);
    }
    // Each replica flushes what it saw every few seconds; any replica lists the totals.
    for sy in &sys {
        let url = sy.url("/api/v1/namespaces/default/brokers/default/eventtypes");
        let counts = common::eventually(
            "the totals of both replicas",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let listed = common::get_json(&url).await;
                    let counts: HashMap<String, u64> = listed["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| {
                            (
                                t["type"].as_str().unwrap().to_owned(),
                                t["count"].as_u64().unwrap(),
                            )
                        })
                        .collect();
                    (counts.get("order") == Some(&5) && counts.get("refund") == Some(&1))
                        .then_some(counts)
                }
            },
        )
        .await;
        assert_eq!(counts.len(), 2, "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_is_stored_as_one_and_a_retried_batch_stores_only_what_is_new() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (all, orders) = (Sink::ok().await, Sink::ok().await);
    let sys = replicas(2, &cluster, &config(&all.url, &orders.url, ""));
    let js = async_nats::jetstream::new(cluster.client().await);
    let mut stream = js.get_stream("SY_EV_default_default").await.unwrap();
    // nats-server 2.12+ stores a batch request's events all or none.
    assert!(stream.info().await.unwrap().config.allow_atomic_publish);
    let ids = |r: std::ops::Range<usize>| r.map(|i| format!("b{i}")).collect::<Vec<_>>();
    common::post_batch(&sys[0], "/default/default", ids(0..3)).await;
    // A producer's retry of a batch that was stored in part, through the other replica: the
    // new events are stored, the old ones recognised.
    common::post_batch(&sys[1], "/default/default", ids(2..5)).await;
    common::post_batch(&sys[0], "/default/default", ids(0..5)).await;
    all.wait_for(5, Duration::from_secs(30)).await;
    all.assert_stays_at(5, Duration::from_millis(800)).await;
    let mut got = all.ids();
    got.sort();
    assert_eq!(got, ids(0..5));
    assert_eq!(stream.info().await.unwrap().state.messages, 5);
}
