//! A purge or redrive of every dead letter works through the store a chunk at a time: each
//! write carries at most [`CHUNK`] dead letters and each scan at most [`SCAN`] records, so
//! memory does not grow with the number of dead letters (spec/limits.md). A black-box test
//! can only count what is gone; these count the writes and scans themselves, through a log
//! that passes everything to a real store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{Delegating, LogError, SideRecord, WriteFuture};
use switchyard_core::CloudEvent;
use switchyard_core::config::{Config, parse_text};

use super::*;
use crate::dispatch::{Dispatcher, lock};
use crate::records::DeadLetterReason;

/// More dead letters than ten chunks hold.
const LETTERS: usize = 10 * CHUNK + 1;
const BROKER: &str = "default/default";

/// A store that records the size of every write and of every dead-letter scan.
struct Counting {
    inner: Arc<dyn EventLog>,
    /// Operations per write.
    writes: Mutex<Vec<usize>>,
    /// Records per scan of the dead-letter table.
    scans: Mutex<Vec<usize>>,
}

impl Delegating for Counting {
    fn inner(&self) -> &dyn EventLog {
        &*self.inner
    }
    fn write(&self, ops: Vec<WriteOp>) -> WriteFuture {
        lock(&self.writes).push(ops.len());
        self.inner.write(ops)
    }
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        let found = self.inner.scan(table, from, to, max)?;
        if table == Table::DeadLetters {
            lock(&self.scans).push(found.len());
        }
        Ok(found)
    }
}

/// A store in a temporary directory (kept for the test's length), with [`LETTERS`] dead
/// letters of trigger `t` written into it.
async fn store_with_letters() -> (tempfile::TempDir, Arc<dyn EventLog>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log: Arc<dyn EventLog> = Arc::new(
        switchyard_broker::RedbLog::open(
            dir.path(),
            switchyard_broker::RedbOptions::default(),
            Box::new(|_| {}),
        )
        .expect("a store"),
    );
    let event = CloudEvent::new("e", "/test", "com.example.test").expect("a valid event");
    let ops = (1..=LETTERS as u64)
        .map(|id| {
            let letter = DeadLetter {
                id,
                broker: BROKER.to_owned(),
                trigger: "t".to_owned(),
                offset: id,
                time: "2026-12-06T00:00:00Z".to_owned(),
                time_ms: 1_796_515_200_000,
                reason: DeadLetterReason::RetriesExhausted,
                destination: "http://127.0.0.1:9/".to_owned(),
                status: Some(503),
                ty: event.ty.clone(),
                source: event.source.clone(),
                event_id: format!("e{id}"),
                event: records::encode_event(&event),
                attempts: Vec::new(),
                error_data: None,
            };
            WriteOp::Put {
                table: Table::DeadLetters,
                key: records::deadletter_key(BROKER, id),
                value: serde_json::to_vec(&letter).expect("a dead letter encodes"),
            }
        })
        .collect();
    log.write(ops).await.expect("the dead letters are stored");
    (dir, log)
}

/// The management API's state over `log`, counting what passes through it.
fn api(log: &Arc<dyn EventLog>, triggers: RunningTriggers) -> (ApiState, Arc<Counting>) {
    let counting = Arc::new(Counting {
        inner: Arc::clone(log),
        writes: Mutex::default(),
        scans: Mutex::default(),
    });
    let state = ApiState {
        log: Arc::clone(&counting) as Arc<dyn EventLog>,
        mutate: tokio::sync::Mutex::new(()),
        triggers,
        redrive_allow: Vec::new(),
        bulk: std::sync::Mutex::new(Tasks::new("test")),
    };
    (state, counting)
}

/// The dead letters left in the store.
fn letters_left(log: &Arc<dyn EventLog>) -> usize {
    let prefix = records::deadletter_prefix(BROKER);
    log.scan(
        Table::DeadLetters,
        &prefix,
        &records::prefix_end(&prefix),
        usize::MAX,
    )
    .expect("the store scans")
    .len()
}

/// Every write held at most a chunk of dead letters (`per_letter` operations each, and the
/// audit entry), and there were as many writes as chunks; no scan read more than [`SCAN`].
fn assert_chunked(counting: &Counting, per_letter: usize) {
    let writes = lock(&counting.writes).clone();
    assert_eq!(writes.len(), LETTERS.div_ceil(CHUNK), "writes: {writes:?}");
    assert!(
        writes.iter().all(|&ops| ops <= CHUNK * per_letter + 1),
        "a write held more than {CHUNK} dead letters: {writes:?}"
    );
    let scans = lock(&counting.scans).clone();
    assert!(
        scans.iter().all(|&n| n <= SCAN),
        "a scan read more than {SCAN} records: {scans:?}"
    );
}

#[tokio::test]
async fn a_purge_of_all_deletes_a_chunk_per_write() {
    let (_dir, log) = store_with_letters().await;
    let (state, counting) = api(&log, RunningTriggers::default());
    let all = Selector {
        all: Some(true),
        ..Selector::default()
    };
    let (selection, filter) = purge_selection(all).expect("a purge of all");
    let (progress, seen) = tokio::sync::watch::channel(0);

    let purged = purge_all(
        &state,
        ("default", "default"),
        "test".to_owned(),
        selection,
        &filter,
        &progress,
    )
    .await
    .expect("the purge succeeds");

    assert_eq!(purged, LETTERS);
    assert_eq!(*seen.borrow(), LETTERS);
    assert_eq!(letters_left(&log), 0);
    // Two deletions per dead letter: the letter and its dead-letter-sink marker.
    assert_chunked(&counting, 2);
}

#[tokio::test]
async fn a_redrive_of_all_schedules_a_chunk_per_write() {
    let (_dir, log) = store_with_letters().await;
    // Trigger `t` runs (a redrive goes only to a running trigger); its subscriber refuses
    // connections and its next retry is an hour away, so the redriven events stay retries.
    let text = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n---\n\
         apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n\
         spec: {broker: default, subscriber: {uri: 'http://127.0.0.1:9/'}, \
         delivery: {retry: 3, backoffDelay: PT1H}}\n";
    let resources = parse_text(text, "test.yaml").expect("a valid config");
    let config = Config::from_resources(resources.into_iter().map(|r| ("test.yaml".to_owned(), r)))
        .expect("a valid config");
    let event_types =
        Arc::new(EventTypePolicy::new(&config, Arc::default()).expect("a valid policy"));
    let dispatcher = Dispatcher::start(
        &config,
        Arc::clone(&log),
        event_types,
        Arc::new(HashMap::new()),
        switchyard_core::egress::EgressPolicy::default(),
    )
    .await
    .expect("the trigger starts");
    let (state, counting) = api(&log, dispatcher.running());
    let all = RedriveRequest {
        all: true,
        ..RedriveRequest::default()
    };
    let (progress, seen) = tokio::sync::watch::channel(0);

    let redriven = redrive_all(
        &state,
        ("default", "default"),
        "test".to_owned(),
        all,
        None,
        serde_json::json!({ "all": true }),
        progress,
    )
    .await
    .expect("the redrive succeeds");

    assert_eq!(redriven, LETTERS);
    assert_eq!(*seen.borrow(), LETTERS);
    assert_eq!(letters_left(&log), 0);
    // Per dead letter: its retry, and the two deletions.
    assert_chunked(&counting, 3);
    dispatcher.shutdown().await;
}
