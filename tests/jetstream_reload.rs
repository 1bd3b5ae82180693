//! Live configuration on the JetStream engine (spec/reload.md, spec/jetstream.md): replicas
//! each watching their own copy of the configuration take an edit without a restart; a
//! trigger added, changed (its filter, then from unordered to ordered) and removed while
//! events flow; the removed trigger's retries become dead letters and its consumer goes; a
//! broken edit is refused and the running configuration keeps working.
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
    let sys = replicas(2, &cluster, &first);
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
    let names = consumers(&cluster).await;
    assert!(!names.contains("gone"), "{names:?}");

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
    let names = consumers(&cluster).await;
    assert!(
        !names.contains("late") && names.contains("late_p0"),
        "{names:?}"
    );

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
}
