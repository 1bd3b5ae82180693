//! The delivery core driven by an in-process delivery source (a fake of the seam, as a
//! JetStream source will drive it), delivering over real HTTP to a sink on loopback: what the
//! core hands back to `settle` for each answer, redrives, and ordered keys.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::LogError;
use switchyard_core::config::{Config, parse_text};
use switchyard_core::{CloudEvent, ExtValue};
use tokio::sync::Notify;

use super::trigger::{Context, TriggerRuntime};
use super::{DeliverySource, HOT_QUEUE, Outcome, Work, deliver, lock};
use crate::records::DeadLetterReason;

/// Work handed out in order; outcomes kept by position.
#[derive(Default)]
struct FakeSource {
    work: Mutex<VecDeque<Work<()>>>,
    wake: Notify,
    settled: Mutex<Vec<(u64, Outcome)>>,
    changed: Notify,
}

impl FakeSource {
    fn push(&self, work: Work<()>) {
        lock(&self.work).push_back(work);
        self.wake.notify_one();
    }

    /// The outcomes once `n` were settled (fails the test after 10 s).
    async fn settled(&self, n: usize) -> Vec<(u64, Outcome)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.changed.notified();
            let got = lock(&self.settled).clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "only {got:?} settled"
            );
        }
    }
}

impl DeliverySource for FakeSource {
    type Ticket = ();

    async fn next(&self) -> Work<()> {
        loop {
            let notified = self.wake.notified();
            if let Some(w) = lock(&self.work).pop_front() {
                return w;
            }
            notified.await;
        }
    }

    async fn settle(&self, work: Work<()>, outcome: Outcome) -> Result<(), LogError> {
        lock(&self.settled).push((work.position, outcome));
        self.changed.notify_waiters();
        Ok(())
    }
}

/// A subscriber on loopback: `ce-type` says how it answers (`ok` 202, `fail` 500, `bad` 400,
/// `flaky` 500 the first time an id is seen and 202 after, `slow` 202 after 300 ms); it keeps
/// the ids in arrival order.
async fn sink() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let flaky: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap| {
            let (log, flaky) = (Arc::clone(&log), Arc::clone(&flaky));
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let id = h("ce-id");
                lock(&log).push(id.clone());
                match h("ce-type").as_str() {
                    "ok" => StatusCode::ACCEPTED,
                    "slow" => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        StatusCode::ACCEPTED
                    }
                    "bad" => StatusCode::BAD_REQUEST,
                    "flaky" if !lock(&flaky).insert(id) => StatusCode::ACCEPTED,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}/", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// A store for the trigger's Context (only a subscriber that is a Broker writes to it; none
/// here does), in a directory removed once it is open.
fn store() -> Arc<dyn switchyard_broker::log::EventLog> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = switchyard_broker::RedbLog::open(
        dir.path(),
        switchyard_broker::RedbOptions::default(),
        Box::new(|_| {}),
    )
    .expect("a store");
    Arc::new(log)
}

/// Trigger `default/t` delivering to `url` with `spec` (YAML flow mapping entries).
fn trigger(url: &str, spec: &str) -> Arc<TriggerRuntime> {
    let text = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default}}\n---\n\
         apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\n\
         spec: {{broker: default, subscriber: {{uri: '{url}'}}, {spec}}}\n"
    );
    let resources = parse_text(&text, "test.yaml").expect("a valid config");
    let config = Config::from_resources(resources.into_iter().map(|r| ("test.yaml".to_owned(), r)))
        .expect("a valid config");
    let event_types =
        Arc::new(EventTypePolicy::new(&config, Arc::default()).expect("a valid policy"));
    let cx = Context {
        config: &config,
        event_types: &event_types,
        log: &store(),
        egress: &switchyard_core::egress::EgressPolicy::default(),
        streams: &Arc::new(HashMap::new()),
    };
    let key = ("default".to_owned(), "t".to_owned());
    Arc::new(TriggerRuntime::build(&cx, "default", "t", &config.triggers[&key]).expect("built"))
}

/// A drain signal that never comes.
fn never_stopped() -> tokio::sync::watch::Receiver<bool> {
    tokio::sync::watch::channel(false).1
}

fn work(position: u64, ty: &str) -> Work<()> {
    let event = CloudEvent::new(format!("e{position}"), "/test", ty).expect("a valid event");
    Work {
        position,
        event: Arc::new(event),
        attempts: Vec::new(),
        redirect: None,
        first: true,
        ticket: (),
    }
}

#[tokio::test]
async fn each_answer_becomes_the_outcome_the_source_settles() {
    let (url, _) = sink().await;
    let t = trigger(&url, "delivery: {retry: 1, backoffDelay: PT10S}");
    let source = Arc::new(FakeSource::default());
    let core = tokio::spawn(deliver::dispatch_loop(
        t,
        Arc::clone(&source),
        never_stopped(),
    ));
    let before_ms = crate::records::now_ms();
    for (p, ty) in [(1, "ok"), (2, "fail"), (3, "bad")] {
        source.push(work(p, ty));
    }
    let mut got = source.settled(3).await;
    got.sort_by_key(|(p, _)| *p);
    assert_eq!(got[0].1, Outcome::Delivered { replies: vec![] });
    let Outcome::Retry { attempts, due_ms } = &got[1].1 else {
        panic!("a 500 is retried: {:?}", got[1].1);
    };
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(500));
    assert!(*due_ms >= before_ms + 10_000, "due after the backoff");
    assert!(
        matches!(&got[2].1, Outcome::DeadLetter { reason: DeadLetterReason::NotRetryable, attempts, .. } if attempts.len() == 1),
        "a 400 is dead-lettered at once: {:?}",
        got[2].1
    );

    // The scheduled retry of event 2 comes back with its attempt; out of retries, it is
    // dead-lettered with both attempts.
    let mut retry = work(2, "fail");
    retry.attempts = attempts.clone();
    retry.first = false;
    source.push(retry);
    let got = source.settled(4).await;
    assert!(
        matches!(&got[3].1, Outcome::DeadLetter { reason: DeadLetterReason::RetriesExhausted, attempts, .. } if attempts.len() == 2),
        "{:?}",
        got[3].1
    );
    core.abort();
}

#[tokio::test]
async fn a_redrive_goes_to_the_url_it_names() {
    let (subscriber, at_subscriber) = sink().await;
    let (elsewhere, at_elsewhere) = sink().await;
    let t = trigger(&subscriber, "delivery: {retry: 0}");
    let source = Arc::new(FakeSource::default());
    let core = tokio::spawn(deliver::dispatch_loop(
        t,
        Arc::clone(&source),
        never_stopped(),
    ));
    let mut redrive = work(7, "ok");
    redrive.redirect = Some(elsewhere);
    redrive.first = false;
    source.push(redrive);
    let got = source.settled(1).await;
    assert_eq!(got[0], (7, Outcome::Delivered { replies: vec![] }));
    assert_eq!(*lock(&at_elsewhere), ["e7"]);
    assert!(lock(&at_subscriber).is_empty());
    core.abort();
}

#[tokio::test]
async fn an_ordered_trigger_retries_in_place_and_holds_only_its_key() {
    let (url, seen) = sink().await;
    let t = trigger(
        &url,
        "ordering: ordered, delivery: {retry: 3, backoffDelay: PT0.2S}",
    );
    let source = Arc::new(FakeSource::default());
    let core = tokio::spawn(deliver::dispatch_loop(
        t,
        Arc::clone(&source),
        never_stopped(),
    ));
    for (p, ty, key) in [(1, "flaky", "a"), (2, "ok", "a"), (3, "ok", "b")] {
        let mut w = work(p, ty);
        let mut event = (*w.event).clone();
        event
            .extensions
            .insert("partitionkey".into(), ExtValue::String(key.into()));
        w.event = Arc::new(event);
        source.push(w);
    }
    let got = source.settled(3).await;
    assert!(
        got.iter()
            .all(|(_, o)| matches!(o, Outcome::Delivered { .. }))
    );
    // Key b is not held up by key a's retry; a's second event waits for its first.
    let order: Vec<u64> = got.iter().map(|(p, _)| *p).collect();
    assert_eq!(order, [3, 1, 2], "settled in this order");
    let seen = lock(&seen).clone();
    let pos = |id: &str| seen.iter().rposition(|s| s == id).expect("delivered");
    assert_eq!(seen.iter().filter(|s| *s == "e1").count(), 2, "{seen:?}");
    assert!(pos("e1") < pos("e2"), "{seen:?}");
    core.abort();
}

/// An ordered trigger gives a task only to as many keys as it may have deliveries in flight:
/// with every delivery stalled, 500 events of 500 distinct keys are not all taken from the
/// source (each would become a task waiting for a slot); at most `maxInFlight` are, and the
/// one the loop holds while it waits for a slot.
#[tokio::test]
async fn an_ordered_trigger_takes_new_keys_only_as_slots_free() {
    let (url, _) = sink().await;
    let t = trigger(&url, "ordering: ordered, maxInFlight: 2");
    let source = Arc::new(FakeSource::default());
    let core = tokio::spawn(deliver::dispatch_loop(
        t,
        Arc::clone(&source),
        never_stopped(),
    ));
    for p in 0..500u64 {
        source.push(keyed(work(p, "slow"), &format!("k{p}")));
    }
    // The first two deliveries take 300 ms; meanwhile the loop takes one more and waits.
    let first = source.settled(2).await;
    assert_eq!(first.len(), 2);
    assert!(
        lock(&source.work).len() >= 500 - 2 - 1 - 2,
        "{} taken while two were in flight",
        500 - lock(&source.work).len()
    );
    core.abort();
}

/// An ordered trigger parks at most `HOT_QUEUE` (1,024) events behind its busy keys: with one
/// key's deliveries stalled, 3,000 events of that key are taken from the source only up to
/// the cap (and one more for each delivered), the rest left with the source.
#[tokio::test]
async fn an_ordered_trigger_parks_at_most_the_hot_queue_behind_busy_keys() {
    const EVENTS: usize = 3_000;
    let (url, _) = sink().await;
    let t = trigger(&url, "ordering: ordered, maxInFlight: 1");
    let source = Arc::new(FakeSource::default());
    let core = tokio::spawn(deliver::dispatch_loop(
        t,
        Arc::clone(&source),
        never_stopped(),
    ));
    for p in 0..EVENTS as u64 {
        source.push(keyed(work(p, "slow"), "k"));
    }
    let taken = || EVENTS - lock(&source.work).len();
    // One in flight and HOT_QUEUE parked behind it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while taken() < HOT_QUEUE + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} taken",
            taken()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        // Read in this order, so a delivery settled between the two only loosens the bound.
        let (taken, settled) = (taken(), lock(&source.settled).len());
        assert!(
            taken <= HOT_QUEUE + 1 + settled,
            "{taken} taken with {settled} delivered"
        );
        source.settled(settled + 1).await;
    }
    core.abort();
}

/// `w` with `partitionkey` `key`.
fn keyed(mut w: Work<()>, key: &str) -> Work<()> {
    let mut event = (*w.event).clone();
    event
        .extensions
        .insert("partitionkey".into(), ExtValue::String(key.to_owned()));
    w.event = Arc::new(event);
    w
}

/// Draining (a reload stops or changes the trigger): the loop takes no more work, lets the
/// attempt in flight finish and settle, and returns.
#[tokio::test]
async fn a_draining_loop_settles_what_is_in_flight_and_takes_nothing_more() {
    let (url, seen) = sink().await;
    let t = trigger(&url, "delivery: {retry: 0}");
    let source = Arc::new(FakeSource::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let core = tokio::spawn(deliver::dispatch_loop(t, Arc::clone(&source), stopped));
    source.push(work(1, "slow"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lock(&seen).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "e1 was not sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send_replace(true);
    source.push(work(2, "ok"));
    tokio::time::timeout(Duration::from_secs(10), core)
        .await
        .expect("the loop returns once drained")
        .expect("it does not panic");
    assert_eq!(
        *lock(&source.settled),
        [(1, Outcome::Delivered { replies: vec![] })]
    );
    assert_eq!(*lock(&seen), ["e1"], "nothing taken after the stop");
    assert_eq!(lock(&source.work).len(), 1, "e2 stays with the source");
}
