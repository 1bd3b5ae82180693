//! Tests of the cron source (PingSource, spec/sources.md) under a manual clock, events read at
//! a trigger's real HTTP sink: in-process through `switchyard::run` with an injected clock,
//! and, where the process is killed and restarted, the real (debug) binary with
//! `SWITCHYARD_TEST_CLOCK`, the clock moved with `POST /debug/clock`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Switchyard;
use common::sink::{Answer, Sink};

const WAIT: Duration = Duration::from_secs(20);
const CLOCK: &str = "SWITCHYARD_TEST_CLOCK";

fn broker_and_trigger(sink: &str) -> String {
    common::broker_and_trigger(
        "pings",
        "filter: {attributes: {type: dev.knative.sources.ping}}",
        sink,
    )
}

fn distinct_ids(sink: &Sink) -> usize {
    let mut ids = sink.ids();
    ids.sort();
    ids.dedup();
    ids.len()
}

fn ids_of(sink: &Sink, source: &str) -> Vec<String> {
    let mut ids: Vec<String> = sink
        .received()
        .iter()
        .filter_map(|r| r.event.as_ref())
        .filter(|e| e.source.ends_with(&format!("/pingsources/{source}")))
        .map(|e| e.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test]
async fn fires_on_schedule_and_never_twice_across_a_crash() {
    let sink = Sink::ok().await;
    let config = format!(
        r#"{}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: heartbeat}}
spec:
  schedule: "*/5 * * * *"
  contentType: application/json
  data: '{{"hello": "world"}}'
  ceOverrides: {{extensions: {{team: core}}}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
"#,
        broker_and_trigger(&sink.url)
    );
    let mut sy = Switchyard::start_with_env(&config, &[(CLOCK, "2026-11-28T10:03:00Z")]);
    common::set_clock(&sy, "2026-11-28T10:05:00Z").await;
    let got = sink.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().unwrap();
    assert_eq!(e.id, "heartbeat-20261128T100500Z");
    assert_eq!(e.ty, "dev.knative.sources.ping");
    assert_eq!(
        e.source,
        "/apis/v1/namespaces/default/pingsources/heartbeat"
    );
    assert_eq!(e.time.as_deref(), Some("2026-11-28T10:05:00Z"));
    assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(&got[0].body[..], br#"{"hello": "world"}"#);
    assert_eq!(
        e.extensions.get("team"),
        Some(&switchyard_core::ExtValue::String("core".into()))
    );

    // A crash, and a restart whose clock reads the fired slot again: it does not fire twice.
    sy.kill9();
    sy.set_env(CLOCK, "2026-11-28T10:05:00Z");
    sy.restart();
    common::set_clock(&sy, "2026-11-28T10:10:00Z").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ids_of(&sink, "heartbeat").contains(&"heartbeat-20261128T101000Z".to_owned()) {
        assert!(tokio::time::Instant::now() < deadline, "10:10 never fired");
        sink.wait_for(sink.received().len() + 1, WAIT).await;
    }
    // The store is the authority on what fired (the trigger may deliver 10:05 again after
    // the crash: delivery is at least once).
    sy.stop();
    let fired: Vec<String> = sy
        .stored("default/default")
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    assert_eq!(
        fired,
        ["heartbeat-20261128T100500Z", "heartbeat-20261128T101000Z"]
    );
}

#[tokio::test]
async fn catches_up_missed_slots_per_policy() {
    let sink = Sink::ok().await;
    let source = |name: &str, catch_up: &str| {
        format!(
            r#"
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: {name}}}
spec:
  schedule: "* * * * *"
  {catch_up}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#
        )
    };
    let config = format!(
        "{}{}{}{}",
        broker_and_trigger(&sink.url),
        source("all", "catchUp: {policy: all, window: PT3M}"),
        source("last", "catchUp: {policy: last}"),
        source("none", ""),
    );
    let mut sy = Switchyard::start_with_env(&config, &[(CLOCK, "2026-11-28T10:00:30Z")]);
    common::set_clock(&sy, "2026-11-28T10:01:00Z").await;
    sink.wait_for(3, WAIT).await;

    // Down from 10:01:00 to 10:05:30: slots 10:02 … 10:05 were missed.
    sy.stop();
    sy.set_env(CLOCK, "2026-11-28T10:05:30Z");
    sy.restart();
    common::set_clock(&sy, "2026-11-28T10:06:00Z").await;
    // 3 before + all: 10:03, 10:04, 10:05 (3-minute window) + last: 10:05 + 3 at 10:06.
    // A delivery in flight at the stop may come twice (at-least-once), so the sink is read by
    // distinct ids, and the store judges that each slot fired once.
    common::eventually("ten distinct slots delivered", WAIT, || {
        let n = distinct_ids(&sink);
        async move { (n >= 10).then_some(()) }
    })
    .await;
    let mut stored: Vec<String> = sy
        .stored("default/default")
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    let fired = stored.len();
    stored.sort();
    stored.dedup();
    assert_eq!(fired, 10, "a slot fired twice or one too many: {stored:?}");
    assert_eq!(stored.len(), 10);
    let at = |name: &str, times: &[&str]| -> Vec<String> {
        times
            .iter()
            .map(|t| format!("{name}-20261128T10{t}00Z"))
            .collect()
    };
    assert_eq!(
        ids_of(&sink, "all"),
        at("all", &["01", "03", "04", "05", "06"])
    );
    assert_eq!(ids_of(&sink, "last"), at("last", &["01", "05", "06"]));
    assert_eq!(ids_of(&sink, "none"), at("none", &["01", "06"]));
}

/// A server run in-process by the library, with a clock the test holds.
struct InProcess {
    clock: switchyard::Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), switchyard::RunError>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(config: &str, now: &str) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let config = switchyard::Config::load(&path).unwrap();
        let options = switchyard::ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            max_body_bytes: 1024 * 1024,
            store: switchyard::RedbOptions::default(),
            jetstream: None,
            auth: switchyard::AuthOptions::default(),
            tls: None,
            egress: Default::default(),
            connections: Default::default(),
        };
        let start = chrono::DateTime::parse_from_rfc3339(now).unwrap();
        let clock = switchyard::Clock::manual(start.with_timezone(&chrono::Utc));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(switchyard::run(
            config,
            options,
            clock.clone(),
            move |addr| {
                let _ = ready_tx.send(addr);
            },
            async move {
                let _ = stopped.await;
            },
        ));
        tokio::time::timeout(WAIT, ready_rx).await.unwrap().unwrap();
        InProcess {
            clock,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    fn set_clock(&self, now: &str) {
        let t = chrono::DateTime::parse_from_rfc3339(now).unwrap();
        self.clock.set(t.with_timezone(&chrono::Utc)).unwrap();
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_time_skipped_by_daylight_saving_fires_once_after_the_gap() {
    let sink = Sink::ok().await;
    let config = format!(
        r#"{}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: nightly}}
spec:
  schedule: "30 2 * * *"
  timezone: Europe/Berlin
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        broker_and_trigger(&sink.url)
    );
    // Berlin skips 02:00–03:00 on 2026-03-29; 02:30 that night does not exist.
    let sy = InProcess::start(&config, "2026-03-29T00:00:00Z").await;
    sy.set_clock("2026-03-29T01:00:00Z"); // 03:00 CEST
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].event.as_ref().unwrap().time.as_deref(),
        Some("2026-03-29T01:00:00Z")
    );
    sy.set_clock("2026-03-30T00:30:00Z"); // 02:30 CEST the next night
    sink.wait_for(2, WAIT).await;
    sink.assert_stays_at(2, Duration::from_millis(300)).await;
    sy.stop().await;
}

#[tokio::test]
async fn a_uri_sink_gets_the_events_with_a_triggers_retries() {
    let sink = Sink::start(|i, _| {
        if i == 0 {
            Answer::status(503)
        } else {
            Answer::status(200)
        }
    })
    .await;
    let config = format!(
        r#"
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {{name: tick}}
spec:
  schedule: "0 * * * *"
  sink: {{uri: '{}'}}
"#,
        sink.url
    );
    let sy = Switchyard::start_with_env(&config, &[(CLOCK, "2026-11-28T09:59:00Z")]);
    common::set_clock(&sy, "2026-11-28T10:00:00Z").await;
    let got = sink.wait_for(2, WAIT).await;
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.event.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(ids, ["tick-20261128T100000Z", "tick-20261128T100000Z"]);
}

#[tokio::test]
async fn bad_schedules_and_zones_are_refused_at_load() {
    for (spec, field, reason) in [
        (
            "schedule: \"61 * * * *\"",
            "spec.schedule",
            "not a cron schedule",
        ),
        ("schedule: \"* * * *\"", "spec.schedule", "4 fields"),
        // croner took `,` for a field that selects nothing and searched to the year 5000.
        ("schedule: \", * * * *\"", "spec.schedule", "empty item"),
        // No day is the month's last and a weekday of an empty list (`+`, croner's AND); the
        // check that it fires walked from 1970 to the year 5000 (fuzz/found/config/hang-7).
        ("schedule: \"*/1 * L * +\"", "spec.schedule", "never fires"),
        (
            "{schedule: \"0 9 * * *\", timezone: Mars/Olympus}",
            "spec.timezone",
            "IANA time zone",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let spec = if spec.starts_with('{') {
            spec.trim_matches(['{', '}']).replace(", ", "\n  ")
        } else {
            spec.to_owned()
        };
        std::fs::write(
            &path,
            format!(
                "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: bad}}\nspec:\n  sink: {{uri: 'http://127.0.0.1:1/'}}\n  {spec}\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(common::bin())
            .arg("validate")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec}");
        assert!(
            stderr.contains("PingSource default/bad")
                && stderr.contains(field)
                && stderr.contains(reason),
            "{spec}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
