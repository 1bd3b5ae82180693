//! Replies: a subscriber's answer goes back to the broker as a new event, and a loop dies by
//! its TTL.

use super::*;

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
