//! Live configuration (spec/reload.md): the config file or directory is watched, and a change
//! is taken without a restart, trigger by trigger, losing and duplicating nothing; a broken
//! edit is refused and the running configuration keeps working; a Trigger whose Broker is
//! missing starts delivering when the Broker appears (Knative's `BrokerDoesNotExist`, issue 16).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::sink::{Answer, Sink};
use common::{Switchyard, client, eventually, get_json};

const WAIT: Duration = Duration::from_secs(20);
const BROKER: &str = "/default/default";

const BROKER_YAML: &str = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
";

fn trigger(name: &str, filter: &str, sink: &str) -> String {
    format!(
        "---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {name}}}
spec:
  broker: default
  {filter}
  subscriber: {{uri: '{sink}'}}
"
    )
}

async fn send(sy_base: &str, id: &str, ty: &str) -> u16 {
    client()
        .post(format!("{sy_base}{BROKER}"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `/readyz`'s account of the configuration in force.
async fn config_status(sy: &Switchyard) -> serde_json::Value {
    get_json(&sy.url("/readyz")).await["config"].clone()
}

/// Waits until the configuration's generation is `n` (a reload was applied).
async fn generation(sy: &Switchyard, n: u64) {
    eventually(&format!("configuration generation {n}"), WAIT, || async {
        (config_status(sy).await["generation"] == n).then_some(())
    })
    .await;
}

/// While triggers are added, changed and removed by editing the file, events keep flowing: a
/// trigger that stays gets every one exactly once, a new trigger gets what arrives after it,
/// a changed filter applies to what arrives after the change, a removed trigger gets no more,
/// and the process is the same throughout.
#[tokio::test]
async fn triggers_added_changed_and_removed_while_events_flow() {
    let all = Sink::ok().await;
    let other = Sink::ok().await;
    let base = BROKER_YAML.to_owned() + &trigger("all", "", &all.url);
    let mut sy = Switchyard::start(&base);
    let pid = sy.child.id();
    generation(&sy, 1).await;

    // A steady stream of events, alternately of type `a` and `b`, until told to stop.
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (url, sent, done) = (sy.base.clone(), Arc::clone(&sent), Arc::clone(&done));
        tokio::spawn(async move {
            let mut i = 0usize;
            while !done.load(Ordering::SeqCst) {
                let ty = if i.is_multiple_of(2) { "a" } else { "b" };
                assert_eq!(send(&url, &format!("e{i}"), ty).await, 202);
                i += 1;
                sent.store(i, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let ids_now = |sink: &Sink| sink.ids().into_iter().collect::<HashSet<_>>();

    // Added: `picky` takes type `a`.
    sy.rewrite_config(
        &(base.clone() + &trigger("picky", "filter: {attributes: {type: a}}", &other.url)),
    );
    generation(&sy, 2).await;
    let from = sent.load(Ordering::SeqCst);
    other
        .wait_for_where(3, WAIT, |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.id[1..].parse::<usize>().unwrap() >= from)
        })
        .await;
    assert!(
        other
            .received()
            .iter()
            .all(|r| r.event.as_ref().unwrap().ty == "a"),
        "the new trigger's filter holds"
    );

    // Changed: `picky` takes type `b` now.
    sy.rewrite_config(
        &(base.clone() + &trigger("picky", "filter: {attributes: {type: b}}", &other.url)),
    );
    generation(&sy, 3).await;
    let changed_at = sent.load(Ordering::SeqCst);
    let after_change = other
        .wait_for_where(3, WAIT, |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.id[1..].parse::<usize>().unwrap() > changed_at)
        })
        .await;
    assert!(
        after_change
            .iter()
            .all(|r| r.event.as_ref().unwrap().ty == "b"),
        "after the change, the new filter applies"
    );

    // Removed: `picky` gets nothing more.
    sy.rewrite_config(&base);
    generation(&sy, 4).await;
    let removed_at = sent.load(Ordering::SeqCst);
    done.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    let total = sent.load(Ordering::SeqCst);
    assert!(
        !other
            .ids()
            .iter()
            .any(|id| id[1..].parse::<usize>().unwrap() > removed_at),
        "a removed trigger gets nothing sent after its removal"
    );

    // The trigger that stayed got every event once.
    all.wait_for(total, WAIT).await;
    all.assert_stays_at(total, Duration::from_millis(500)).await;
    assert_eq!(
        ids_now(&all).len(),
        total,
        "no event lost or delivered twice"
    );
    let picky = other.ids();
    assert_eq!(
        picky.iter().collect::<HashSet<_>>().len(),
        picky.len(),
        "the changed trigger delivered nothing twice"
    );
    assert_eq!(sy.child.id(), pid);
    assert!(sy.child.try_wait().unwrap().is_none(), "no restart");
    let metrics = common::metrics(&sy).await;
    assert!(
        metrics.contains(r#"switchyard_config_reloads_total{result="applied"} 3"#),
        "{metrics}"
    );
}

/// A broken edit is refused, says why (readyz, the reload API, the metric), and the running
/// configuration keeps delivering; fixing the file applies it.
#[tokio::test]
async fn a_broken_edit_is_refused_and_the_running_configuration_keeps_working() {
    let sink = Sink::ok().await;
    let good = BROKER_YAML.to_owned() + &trigger("t", "", &sink.url);
    let sy = Switchyard::start(&good);
    let gauges = |metrics: &str| {
        (
            common::metric_value(metrics, "switchyard_config_generation"),
            common::metric_value(metrics, "switchyard_config_last_reload_successful"),
            common::metric_value(
                metrics,
                "switchyard_config_last_reload_success_timestamp_seconds",
            ),
        )
    };
    let started = common::metrics(&sy).await;
    let (generation_at_start, successful, taken_at) = gauges(&started);
    assert_eq!(
        (generation_at_start, successful),
        (Some(1.0), Some(1.0)),
        "{started}"
    );
    let taken_at = taken_at.expect("when the configuration was taken");
    let version = format!(
        "switchyard_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        common::metric_value(&started, &version),
        Some(1.0),
        "{started}"
    );
    sy.rewrite_config(
        &(good.clone() + &trigger("bad", "filters: [{cesql: \"type = \"}]", &sink.url)),
    );
    let error = eventually("the refusal", WAIT, || async {
        config_status(&sy).await["error"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(error.contains("Trigger default/bad"), "{error}");
    assert_eq!(config_status(&sy).await["generation"], 1);

    // Still delivering with the configuration before the edit.
    assert_eq!(send(&sy.base, "still", "x").await, 202);
    sink.wait_for(1, WAIT).await;
    assert_eq!(sink.ids(), ["still"]);

    // Asking for a reload gets the same refusal, as a problem.
    let resp = client()
        .post(sy.url("/api/v1/reload"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let problem = common::problem(resp).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Trigger default/bad"),
        "{problem}"
    );
    let metrics = common::metrics(&sy).await;
    assert!(
        metrics.contains(r#"switchyard_config_reloads_total{result="refused"}"#),
        "{metrics}"
    );
    assert_eq!(
        gauges(&metrics),
        (Some(1.0), Some(0.0), Some(taken_at)),
        "a refusal keeps the generation and the time of the last success: {metrics}"
    );

    // Fixed: applied, and the error is gone.
    sy.rewrite_config(&(good + &trigger("fixed", "filter: {attributes: {type: y}}", &sink.url)));
    generation(&sy, 2).await;
    assert!(config_status(&sy).await.get("error").is_none());
    let metrics = common::metrics(&sy).await;
    let (generation_now, successful, taken_again) = gauges(&metrics);
    assert_eq!(
        (generation_now, successful),
        (Some(2.0), Some(1.0)),
        "{metrics}"
    );
    assert!(taken_again.is_some_and(|t| t >= taken_at), "{metrics}");
    assert_eq!(send(&sy.base, "twice", "y").await, 202);
    sink.wait_for(3, WAIT).await;
    assert_eq!(
        sink.ids().iter().filter(|id| *id == "twice").count(),
        2,
        "both triggers deliver"
    );
}

/// Knative's `BrokerDoesNotExist`: a Trigger whose Broker is in no file loads not ready; when a
/// file with the Broker is added to the directory, the Trigger starts delivering.
#[tokio::test]
async fn a_trigger_whose_broker_appears_later_starts_delivering() {
    let sink = Sink::ok().await;
    let sy = Switchyard::start_dir(&[("trigger.yaml", &trigger("late", "", &sink.url))]);
    assert_eq!(send(&sy.base, "early", "x").await, 404, "no broker yet");

    std::fs::write(sy.config_path().join("broker.yaml"), BROKER_YAML).unwrap();
    generation(&sy, 2).await;
    assert_eq!(send(&sy.base, "on-time", "x").await, 202);
    sink.wait_for(1, WAIT).await;
    assert_eq!(sink.ids(), ["on-time"]);
}

/// A changed trigger keeps its scheduled retries: they go to its new subscriber, even when
/// the same edit removes another trigger of its broker (whose retries become dead letters).
#[tokio::test]
async fn a_changed_trigger_keeps_its_retries() {
    let failing = Sink::start(|_, _| Answer::status(503)).await;
    let healthy = Sink::ok().await;
    let delivery = "delivery: {retry: 5, backoffPolicy: linear, backoffDelay: PT2S}";
    let sy = Switchyard::start(
        &(BROKER_YAML.to_owned()
            + &trigger("t", delivery, &failing.url)
            + &trigger("gone", delivery, &failing.url)),
    );
    assert_eq!(send(&sy.base, "pending", "x").await, 202);
    failing.wait_for(2, WAIT).await;
    sy.rewrite_config(&(BROKER_YAML.to_owned() + &trigger("t", delivery, &healthy.url)));
    generation(&sy, 2).await;
    healthy.wait_for(1, WAIT).await;
    assert_eq!(healthy.ids(), ["pending"]);
    healthy.assert_stays_at(1, Duration::from_millis(500)).await;
    let letters = get_json(&sy.url("/api/v1/namespaces/default/brokers/default/deadletters")).await;
    let items = letters["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{letters}");
    assert_eq!(items[0]["trigger"], "gone");
    assert_eq!(items[0]["reason"], "trigger removed");
}

/// A WebhookSource added by an edit takes requests; removed, its path is gone. SIGHUP reloads
/// (and does not end the process, as it would by default).
#[tokio::test]
async fn sources_follow_the_file_and_sighup_reloads() {
    let sink = Sink::ok().await;
    let base = BROKER_YAML.to_owned() + &trigger("t", "", &sink.url);
    let sy = Switchyard::start(&base);
    let hook = sy.url("/sources/default/hook");
    let post = || async {
        client()
            .post(&hook)
            .header("content-type", "application/json")
            .body(r#"{"n":1}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post().await, 404);
    let source = "---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {name: hook}
spec:
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
";
    sy.rewrite_config(&(base.clone() + source));
    generation(&sy, 2).await;
    assert_eq!(post().await, 202);
    sink.wait_for(1, WAIT).await;
    sy.rewrite_config(&base);
    generation(&sy, 3).await;
    assert_eq!(post().await, 404);

    common::signal(sy.child.id(), "-HUP");
    eventually("the SIGHUP reload", WAIT, || async {
        common::metrics(&sy)
            .await
            .contains(r#"switchyard_config_reloads_total{result="unchanged"} 1"#)
            .then_some(())
    })
    .await;
    assert_eq!(get_json(&sy.url("/readyz")).await["status"], "ready");
}

/// A Trigger removed and later added again is a new Trigger: it sees what arrives after it
/// is back, not what arrived while it was gone (its cursor was forgotten with it).
#[tokio::test]
async fn a_trigger_removed_and_added_again_starts_afresh() {
    let sink = Sink::ok().await;
    let with = BROKER_YAML.to_owned() + &trigger("t", "", &sink.url);
    let sy = Switchyard::start(&with);
    assert_eq!(send(&sy.base, "before", "x").await, 202);
    sink.wait_for(1, WAIT).await;
    sy.rewrite_config(BROKER_YAML);
    generation(&sy, 2).await;
    assert_eq!(send(&sy.base, "while-gone", "x").await, 202);
    sy.rewrite_config(&with);
    generation(&sy, 3).await;
    assert_eq!(send(&sy.base, "after", "x").await, 202);
    sink.wait_for(2, WAIT).await;
    sink.assert_stays_at(2, Duration::from_millis(500)).await;
    assert_eq!(sink.ids(), ["before", "after"]);
}
