//! The operator's desk on the JetStream engine (spec/reload.md, spec/jetstream.md,
//! spec/management-api.md): replicas each watching their own copy of the configuration take
//! an edit without a restart — a trigger added, changed (its filter, then from unordered to
//! ordered) and removed while events flow; the removed trigger's retries become dead letters
//! and its consumer goes; a broken edit is refused and the running configuration keeps
//! working. A trigger paused through one replica is paused on all, holds what arrives, and
//! delivers it once resumed through another; a replay through one replica is delivered once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::jetstream::{Cluster, counts, post, replicas};
use common::sink::{Answer, Sink};
use common::{Switchyard, eventually, get_json};

const WAIT: Duration = Duration::from_secs(60);

/// Broker `default/default` and `triggers`, each (name, filter, ordering, subscriber).
fn config(triggers: &[(&str, &str, &str, &str)]) -> String {
    let mut yaml =
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n".to_owned();
    for (name, filter, delivery, sink) in triggers {
        yaml += &format!(
            "---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {name}}}
spec:
  broker: default
  ordering: {delivery}
  {filter}
  subscriber: {{uri: '{sink}'}}
  delivery: {{retry: 10, backoffPolicy: linear, backoffDelay: PT0.5S}}
"
        );
    }
    yaml
}

/// Writes `config` for every replica and waits until each took it as generation `n`.
async fn reload(sys: &[Switchyard], config: &str, n: u64) {
    for sy in sys {
        sy.rewrite_config(config);
    }
    for sy in sys {
        eventually(&format!("generation {n}"), WAIT, || async {
            (get_json(&sy.url("/readyz")).await["config"]["generation"] == n).then_some(())
        })
        .await;
    }
}

/// The consumers on the broker's events stream.
async fn consumers(cluster: &Cluster) -> HashSet<String> {
    let js = async_nats::jetstream::new(cluster.client().await);
    let stream = js.get_stream("SY_EV_default_default").await.unwrap();
    futures_util::TryStreamExt::try_collect(stream.consumer_names())
        .await
        .unwrap()
}

async fn send(sys: &[Switchyard], prefix: &str, n: usize, ty: impl Fn(usize) -> &'static str) {
    for i in 0..n {
        let id = format!("{prefix}{i}");
        assert_eq!(post(&sys[i % sys.len()], &id, ty(i)).await, 202, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_take_an_edited_configuration_without_a_restart() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let all = Sink::ok().await;
    let late = Sink::ok().await;
    let gone = Sink::start(|_, _| Answer::status(500)).await;
    let first = config(&[
        ("all", "", "unordered", &all.url),
        ("gone", "", "unordered", &gone.url),
    ]);
    let mut sys = replicas(2, &cluster, &first);
    let pids: Vec<u32> = sys.iter().map(|s| s.child.id()).collect();

    // Before: `all` takes everything; `gone` fails every attempt, so each event waits as a
    // retry.
    send(&sys, "a", 20, |i| if i % 2 == 0 { "keep" } else { "drop" }).await;
    all.wait_for(20, WAIT).await;
    gone.wait_for(20, WAIT).await;

    // `all` keeps only `keep`, `late` is added, `gone` is removed.
    let second = config(&[
        (
            "all",
            "filter: {attributes: {type: keep}}",
            "unordered",
            &all.url,
        ),
        ("late", "", "unordered", &late.url),
    ]);
    reload(&sys, &second, 2).await;
    let gone_before = gone.ids().len();
    send(&sys, "b", 20, |i| if i % 2 == 0 { "keep" } else { "drop" }).await;
    all.wait_for(30, WAIT).await;
    late.wait_for(20, WAIT).await;
    all.assert_stays_at(30, Duration::from_millis(500)).await;
    let seen = counts(&all);
    assert!(seen.values().all(|n| *n == 1), "none twice: {seen:?}");
    for i in 0..20 {
        assert!(
            seen.contains_key(&format!("a{i}")),
            "a{i}: every event of before"
        );
        let b = format!("b{i}");
        assert_eq!(
            seen.contains_key(&b),
            i % 2 == 0,
            "{b}: the new filter applies"
        );
    }
    assert_eq!(
        late.ids().into_iter().collect::<HashSet<_>>(),
        (0..20).map(|i| format!("b{i}")).collect(),
        "an added trigger sees what arrives after it"
    );

    // The removed trigger: no more attempts, its retries dead letters, its consumer gone.
    gone.assert_stays_at(gone_before, Duration::from_secs(2))
        .await;
    let letters = eventually("the removed trigger's dead letters", WAIT, || async {
        let page = get_json(
            &sys[1].url("/api/v1/namespaces/default/brokers/default/deadletters?trigger=gone"),
        )
        .await;
        let items = page["items"].as_array()?.clone();
        (items.len() == 20).then_some(items)
    })
    .await;
    assert!(
        letters.iter().all(|l| l["reason"] == "trigger removed"),
        "{letters:?}"
    );
    assert!(
        letters
            .iter()
            .all(|l| l["attempts"].as_u64().is_some_and(|n| n >= 1)),
        "the attempts made are kept: {letters:?}"
    );
    // Its consumers are deleted after its retries became dead letters.
    eventually("the removed trigger's consumer deleted", WAIT, || async {
        (!consumers(&cluster).await.contains("gone")).then_some(())
    })
    .await;

    // `late` becomes ordered: its consumer is replaced by one per partition, which start
    // where it had got to, so nothing is skipped.
    let third = config(&[
        (
            "all",
            "filter: {attributes: {type: keep}}",
            "unordered",
            &all.url,
        ),
        ("late", "", "ordered", &late.url),
    ]);
    reload(&sys, &third, 3).await;
    send(&sys, "c", 20, |_| "keep").await;
    late.wait_for(40, WAIT).await;
    // The unordered consumer is deleted once the partition consumers have taken over.
    eventually(
        "late's consumer replaced by one per partition",
        WAIT,
        || async {
            let names = consumers(&cluster).await;
            (!names.contains("late") && names.contains("late_p0")).then_some(())
        },
    )
    .await;

    // A broken edit is refused: the last good configuration keeps delivering.
    for sy in &sys {
        sy.rewrite_config(&third.replace("kind: Trigger", "kind: Trigger\nbogus: 1"));
    }
    for sy in &sys {
        eventually("the refusal in /readyz", WAIT, || async {
            let status = get_json(&sy.url("/readyz")).await;
            status["config"]["error"].as_str().map(drop)
        })
        .await;
    }
    send(&sys, "d", 4, |_| "keep").await;
    late.wait_for(44, WAIT).await;
    all.wait_for(54, WAIT).await;
    let now: Vec<u32> = sys.iter().map(|s| s.child.id()).collect();
    assert_eq!(pids, now, "no restart");

    // The ordered trigger changes again (its consumers keep where they start), and a replica
    // restarts on it.
    let fourth = config(&[
        (
            "all",
            "filter: {attributes: {type: keep}}",
            "unordered",
            &all.url,
        ),
        (
            "late",
            "filter: {attributes: {type: keep}}",
            "ordered",
            &late.url,
        ),
    ]);
    reload(&sys, &fourth, 4).await;
    send(&sys, "e", 4, |i| if i % 2 == 0 { "keep" } else { "drop" }).await;
    late.wait_for(46, WAIT).await;
    sys[0].stop();
    sys[0].restart();
    eventually("the restarted replica ready", WAIT, || async {
        (get_json(&sys[0].url("/readyz")).await["status"] == "ready").then_some(())
    })
    .await;
    send(&sys, "f", 4, |_| "keep").await;
    late.wait_for(50, WAIT).await;
    late.assert_stays_at(50, Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_paused_through_one_replica_waits_on_all_until_resumed_through_another() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let all = Sink::ok().await;
    let sys = replicas(2, &cluster, &config(&[("all", "", "unordered", &all.url)]));
    send(&sys, "a", 10, |_| "keep").await;
    all.wait_for(10, WAIT).await;

    let at = |sy: &Switchyard, what: &str| {
        sy.url(&format!("/api/v1/namespaces/default/triggers/all{what}"))
    };
    let paused = common::client()
        .post(at(&sys[0], "/pause"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = paused.status();
    assert_eq!(status, 200, "{}", paused.text().await.unwrap());
    // The other replica follows the store within a second or so.
    eventually("paused on the other replica", WAIT, || async {
        (get_json(&at(&sys[1], "")).await["status"]["paused"] == true).then_some(())
    })
    .await;
    send(&sys, "b", 20, |_| "keep").await;
    all.assert_stays_at(10, Duration::from_secs(2)).await;
    let status = get_json(&at(&sys[1], "")).await;
    assert_eq!(status["status"]["lag"], 20, "{status}");
    // The same backlog as gauges (sampled every 5 s) and for an autoscaler.
    let labels = r#"namespace_name="default",broker_name="default",trigger_name="all""#;
    eventually("the lag and age gauges", WAIT, || async {
        let text = common::metrics(&sys[1]).await;
        let lag =
            common::metric_value(&text, &format!("switchyard_trigger_lag_events{{{labels}}}"));
        let age = common::metric_value(
            &text,
            &format!("switchyard_trigger_oldest_undelivered_age_seconds{{{labels}}}"),
        );
        (lag == Some(20.0) && age.is_some_and(|a| a > 0.0)).then_some(())
    })
    .await;
    let backlog = get_json(&at(&sys[0], "/backlog")).await;
    assert_eq!(backlog["lag"], 20, "{backlog}");

    let resumed = common::client()
        .post(at(&sys[1], "/resume"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = resumed.status();
    assert_eq!(status, 200, "{}", resumed.text().await.unwrap());
    all.wait_for(30, WAIT).await;
    all.assert_stays_at(30, Duration::from_millis(500)).await;
    let seen = counts(&all);
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    let status = get_json(&at(&sys[0], "")).await;
    assert_eq!(status["status"]["paused"], false);
    assert_eq!(status["status"]["lag"], 0, "{status}");

    // A replay of the first ten (stream sequences 1 to 10) through one replica goes to this
    // trigger's redrives, which either replica delivers, each marked as replayed.
    let job = common::client()
        .post(at(&sys[0], "/replays"))
        .json(&serde_json::json!({"fromOffset": 1, "toOffset": 11, "ratePerSecond": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(job.status(), 202);
    let job: serde_json::Value = job.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let got = all.wait_for(40, WAIT).await;
    all.assert_stays_at(40, Duration::from_millis(500)).await;
    let mut replayed: Vec<String> = got[30..]
        .iter()
        .map(|r| {
            assert_eq!(r.headers["ce-switchyardreplay"], id.as_str());
            r.event.as_ref().unwrap().id.clone()
        })
        .collect();
    replayed.sort();
    let mut first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    first.sort();
    assert_eq!(replayed, first);
    let done = get_json(&sys[1].url(&format!("/api/v1/namespaces/default/replays/{id}"))).await;
    assert_eq!(
        (done["state"].as_str(), done["sent"].as_u64()),
        (Some("done"), Some(10))
    );
}
