//! Faults beyond kill -9 (tests/crash.rs): the store's disk filling up (the data directory a
//! small tmpfs, so those tests need root, as CI has; elsewhere each skips with a line), at
//! ingress and for a pull source (a NatsSource on the machine's JetStream), and its budget;
//! slow clients and slow bodies, connection caps, a damaged store file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::sink::{Answer, Sink};
use common::{Switchyard, binary, client, eventually, minimal, problem, skip};

/// A tmpfs mounted for one test, unmounted when dropped (after the server, declared later,
/// is gone).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts `size_mib` MiB at `at`, or says why not.
    fn mount(at: &Path, size_mib: u32) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs(at.to_owned()))
    }

    /// Fills the file system with `filler` until nothing is left but `leave_bytes` (rounded
    /// to what the file system gives out); returns the filler's path.
    fn fill(&self, leave_bytes: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let free = free_bytes(&self.0);
        let size = free.saturating_sub(leave_bytes);
        let chunk = vec![0xa5u8; 1 << 20];
        let mut file = std::fs::File::create(&filler).unwrap();
        let mut written = 0u64;
        while written < size {
            let n = (size - written).min(chunk.len() as u64) as usize;
            match std::io::Write::write(&mut file, &chunk[..n]) {
                Ok(w) => written += w as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("cannot fill the tmpfs: {e}"),
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// A data directory on a fresh tmpfs of `size_mib` MiB, or `None` (having said why).
fn tmpfs_data_dir(size_mib: u32) -> Option<(tempfile::TempDir, Tmpfs)> {
    let tmp = tempfile::tempdir().unwrap();
    match Tmpfs::mount(&tmp.path().join("data"), size_mib) {
        Ok(fs) => Some((tmp, fs)),
        Err(why) => {
            skip(&format!(
                "cannot mount a tmpfs for the data directory: {why}"
            ));
            None
        }
    }
}

fn config(sink: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  delivery: {{retry: 100, backoffPolicy: linear, backoffDelay: PT0.2S}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: '{sink}'}}
---
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {{name: hook}}
spec:
  sink: {{ref: {{kind: Broker, name: default}}}}
  auth: {{bearerToken: {{value: let-me-in}}}}
"#
    )
}

/// Posts a webhook to the WebhookSource `hook`.
async fn post_webhook(sy: &Switchyard) -> reqwest::Response {
    client()
        .post(sy.url("/sources/default/hook"))
        .bearer_auth("let-me-in")
        .header("content-type", "application/json")
        .body(r#"{"pushed":1}"#)
        .send()
        .await
        .unwrap()
}

/// Posts event `id` with a body of `body_bytes`.
async fn post(sy: &Switchyard, id: &str, body_bytes: usize) -> reqwest::Response {
    let attrs = minimal(id);
    let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    binary(&client(), &sy.url("/default/default"), &attrs)
        .body(vec![b'x'; body_bytes])
        .send()
        .await
        .unwrap()
}

/// Waits until the ids `sink` got that start with `prefix`, each once, are `expected` (sorted).
async fn wait_delivered(sink: &Sink, prefix: &str, expected: &[String], within: Duration) {
    eventually("every accepted event is delivered", within, || async {
        let mut ids = sink.ids();
        ids.sort();
        ids.dedup();
        ids.retain(|id| id.starts_with(prefix));
        (ids == expected).then_some(())
    })
    .await;
}

/// Asserts `/readyz` is 503 with a reason that names `why`.
async fn assert_not_ready(sy: &Switchyard, why: &str) {
    let (status, body) = readyz(sy).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["reason"].as_str().unwrap().contains(why), "{body}");
}

async fn readyz(sy: &Switchyard) -> (u16, serde_json::Value) {
    let r = client().get(sy.url("/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Asserts `resp` is the disk-full answer: 507, `Retry-After`, a problem body.
async fn assert_disk_full(resp: reqwest::Response) {
    assert_eq!(resp.status().as_u16(), 507);
    assert!(
        resp.headers().get("retry-after").is_some(),
        "a 507 says when to retry"
    );
    let body = problem(resp).await;
    assert_eq!(body["type"], "urn:switchyard:problem:disk-full", "{body}");
}

/// The disk fills up completely (no reserve): the commit that finds no space fails, and the
/// store refuses with 507 until space is freed, then takes events again — the same process,
/// no restart — and every event it accepted is delivered.
#[tokio::test]
async fn a_full_disk_is_refused_with_507_and_writes_resume_when_space_is_back() {
    let Some((tmp, fs)) = tmpfs_data_dir(32) else {
        return;
    };
    let sink = Sink::ok().await;
    let sy = Switchyard::start_in(tmp, &config(&sink.url), &["--min-free-disk-bytes", "0"]);
    assert_eq!(post(&sy, "first", 10).await.status().as_u16(), 202);
    let filler = fs.fill(0);

    // Events go in until the store finds no page to write to; then 507, never a 500 or a
    // 202 for what was not stored.
    let mut accepted = vec!["first".to_owned()];
    let mut refused = None;
    for i in 0..2000 {
        let id = format!("e{i}");
        let resp = post(&sy, &id, 16 * 1024).await;
        match resp.status().as_u16() {
            202 => accepted.push(id),
            507 => {
                refused = Some(resp);
                break;
            }
            other => panic!("{id}: {other} {}", resp.text().await.unwrap()),
        }
    }
    let refused = refused.expect("a full disk refuses events");
    assert_disk_full(refused).await;
    let (status, body) = readyz(&sy).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("disk is full"),
        "{body}"
    );

    std::fs::remove_file(filler).unwrap();
    eventually(
        "the store takes events again",
        Duration::from_secs(20),
        || async {
            let resp = post(&sy, "after", 10).await;
            (resp.status().as_u16() == 202).then_some(())
        },
    )
    .await;
    accepted.push("after".to_owned());
    let (status, body) = readyz(&sy).await;
    assert_eq!(status, 200, "{body}");

    accepted.sort();
    wait_delivered(&sink, "", &accepted, Duration::from_secs(30)).await;
}

/// Below the free-space reserve, events are refused (507 at ingress and at a WebhookSource,
/// `/readyz` 503) while the delivery
/// side goes on: retries stored before are delivered. Freeing space lets events in again.
#[tokio::test]
async fn below_the_free_space_reserve_events_are_refused_and_delivery_goes_on() {
    let Some((tmp, fs)) = tmpfs_data_dir(32) else {
        return;
    };
    let (sink, healthy) = Sink::switchable(Answer::status(503)).await;
    let sy = Switchyard::start_in(
        tmp,
        &config(&sink.url),
        &["--min-free-disk-bytes", &(8u64 << 20).to_string()],
    );
    for id in ["a", "b", "c"] {
        assert_eq!(post(&sy, id, 10).await.status().as_u16(), 202);
    }
    // Each failed once and waits for its retry, stored.
    sink.wait_for(3, Duration::from_secs(10)).await;

    let filler = fs.fill(4 << 20);
    let refused = post(&sy, "refused", 10).await;
    assert_disk_full(refused).await;
    // A source's endpoint answers the same: the producer retries later.
    assert_disk_full(post_webhook(&sy).await).await;
    assert_not_ready(&sy, "--min-free-disk-bytes").await;

    healthy.store(true, Ordering::SeqCst);
    eventually(
        "the stored events are delivered",
        Duration::from_secs(20),
        || async {
            let ok: Vec<String> = sink
                .received()
                .iter()
                .skip(3)
                .filter_map(|r| r.event.as_ref().map(|e| e.id.clone()))
                .collect();
            (ok.len() >= 3).then_some(())
        },
    )
    .await;
    assert_disk_full(post(&sy, "still refused", 10).await).await;

    std::fs::remove_file(filler).unwrap();
    eventually(
        "events are taken again",
        Duration::from_secs(20),
        || async { (post(&sy, "after", 10).await.status().as_u16() == 202).then_some(()) },
    )
    .await;
    eventually(
        "/readyz is ready again",
        Duration::from_secs(10),
        || async { (readyz(&sy).await.0 == 200).then_some(()) },
    )
    .await;
    let ids = sink.ids();
    assert!(!ids.iter().any(|id| id.contains("refused")), "{ids:?}");
}

/// A pull source on a full disk: below the free-space reserve, a NatsSource reading a
/// JetStream stream is handed messages it cannot store, so it acks none of them (the
/// server's ack floor stays where the store is) and the server hands them over again; once
/// space is back they are stored and delivered, without a restart, none lost. (Kafka and
/// MQTT share the sources' store-first path: `adapters/tests/store_first.rs`.)
#[tokio::test]
async fn a_pull_source_acks_nothing_on_a_full_disk_and_catches_up_when_space_is_back() {
    use async_nats::jetstream;
    let Some((tmp, fs)) = tmpfs_data_dir(32) else {
        return;
    };
    let u = common::moto::unique().replace('-', "");
    let (stream, subject) = (format!("FULL{u}"), format!("full{u}.readings"));
    let js = jetstream::new(async_nats::connect(common::nats_url()).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let publish = |i: u32| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            js.publish(subject, format!("reading {i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let sink = Sink::ok().await;
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: NatsSource
metadata: {{name: readings}}
spec:
  servers: ['{}']
  subject: '{subject}'
  jetstream: {{stream: {stream}, consumer: switchyard-readings, ackWait: PT1S}}
  sink: {{ref: {{kind: Broker, name: default}}}}
"#,
        config(&sink.url),
        common::nats_url()
    );
    let sy = Switchyard::start_in(
        tmp,
        &config,
        &["--min-free-disk-bytes", &(8u64 << 20).to_string()],
    );
    publish(1).await;
    sink.wait_for(1, Duration::from_secs(30)).await;

    let filler = fs.fill(4 << 20);
    for i in 2..=6 {
        publish(i).await;
    }
    // The store finds the disk short when the source tries to append them.
    eventually(
        "/readyz says the disk is short",
        Duration::from_secs(10),
        || async { (readyz(&sy).await.0 == 503).then_some(()) },
    )
    .await;
    assert_not_ready(&sy, "--min-free-disk-bytes").await;
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_consumer("switchyard-readings")
        .await
        .unwrap();
    let consumer = &consumer;
    // The server hands the source every message, and again once it has nak'ed them.
    eventually(
        "the server handed the messages over more than once",
        Duration::from_secs(30),
        || async move {
            let info = consumer.get_info().await.unwrap();
            (info.delivered.stream_sequence == 6 && info.delivered.consumer_sequence > 6)
                .then_some(())
        },
    )
    .await;
    let info = consumer.get_info().await.unwrap();
    assert_eq!(
        info.ack_floor.stream_sequence, 1,
        "acked what was not stored"
    );
    assert_eq!(sink.ids().len(), 1, "delivered what was not stored");

    std::fs::remove_file(filler).unwrap();
    let got = sink.wait_for(6, Duration::from_secs(30)).await;
    let mut bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies,
        (1..=6).map(|i| format!("reading {i}")).collect::<Vec<_>>()
    );
    eventually(
        "every message acked",
        Duration::from_secs(30),
        || async move {
            let info = consumer.get_info().await.unwrap();
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence == 6)
                .then_some(())
        },
    )
    .await;
    js.delete_stream(&stream).await.unwrap();
}

/// `--max-store-bytes`: while undelivered events fill the budget, new ones are refused with
/// 507 (and `/readyz` is 503), none of the stored ones is dropped; once they are delivered,
/// retention deletes them and events are taken again; a stream of events several times the
/// budget then goes through, the delivered ones making room, the store kept within it.
#[tokio::test]
async fn the_store_budget_refuses_events_while_undelivered_ones_fill_it_and_drops_delivered_ones() {
    const BUDGET: u64 = 64 * 1024;
    let (sink, healthy) = Sink::switchable(Answer::status(503)).await;
    let sy = Switchyard::start_with(
        &config(&sink.url),
        &[
            "--max-store-bytes",
            &BUDGET.to_string(),
            "--min-free-disk-bytes",
            "0",
        ],
    );

    // 1 KiB events are taken until the undelivered ones fill the budget. A failed event is
    // in the log and in its retry record until retention deletes the first: a 507 while
    // retention catches up is tried again; one that lasts 3 s (three passes) means full.
    let mut accepted = Vec::new();
    let mut refused = None;
    'fill: for i in 0..200 {
        let id = format!("held-{i:03}");
        let first_refusal = std::time::Instant::now();
        loop {
            let resp = post(&sy, &id, 1024).await;
            match resp.status().as_u16() {
                202 => {
                    accepted.push(id);
                    break;
                }
                507 if first_refusal.elapsed() > Duration::from_secs(3) => {
                    refused = Some(resp);
                    break 'fill;
                }
                507 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("{id}: {other} {}", resp.text().await.unwrap()),
            }
        }
    }
    let refused = refused.expect("a full budget refuses events");
    let n = accepted.len();
    assert!(
        (30..=64).contains(&n),
        "{n} events of 1 KiB in a 64 KiB budget"
    );
    assert!(refused.headers().get("retry-after").is_some());
    let body = problem(refused).await;
    assert_eq!(body["type"], "urn:switchyard:problem:store-full", "{body}");
    assert_not_ready(&sy, "--max-store-bytes").await;

    healthy.store(true, Ordering::SeqCst);
    accepted.sort();
    wait_delivered(&sink, "held-", &accepted, Duration::from_secs(60)).await;
    eventually(
        "the delivered events make room",
        Duration::from_secs(20),
        || async { (post(&sy, "more-room", 1024).await.status().as_u16() == 202).then_some(()) },
    )
    .await;
    let (status, body) = readyz(&sy).await;
    assert_eq!(status, 200, "{body}");

    // Four budgets' worth more: each is taken (at most after a 507 while retention catches
    // up), delivered, and the store holds no more than the budget.
    let mut more = vec!["more-room".to_owned()];
    for i in 0..256 {
        let id = format!("more-{i:03}");
        eventually(
            &format!("{id} is taken"),
            Duration::from_secs(20),
            || async {
                match post(&sy, &id, 1024).await.status().as_u16() {
                    202 => Some(()),
                    507 => None,
                    other => panic!("{id}: {other}"),
                }
            },
        )
        .await;
        more.push(id);
    }
    more.sort();
    wait_delivered(&sink, "more-", &more, Duration::from_secs(60)).await;
    let broker = common::get_json(&sy.url("/api/v1/namespaces/default/brokers/default")).await;
    let stored = broker["status"]["stored"]["bytes"].as_u64().unwrap();
    assert!(stored <= BUDGET, "{stored} bytes stored: {broker}");
}

/// A SIGTERM that comes as soon as the server says it listens (an orchestrator stopping a
/// pod that has just started) stops it gracefully, with exit status 0: the handler is in place
/// before the line is printed, so the signal's default action never kills it.
#[test]
fn a_sigterm_right_after_listening_is_a_graceful_stop() {
    // Many at once, so the servers' starts crowd the cores and stretch the time between the
    // line and the serving loop, where the signal used to kill them.
    let stops: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(|| {
                let mut sy = Switchyard::start(common::TWO_BROKERS);
                sy.stop();
            })
        })
        .collect();
    for stop in stops {
        stop.join().expect("each server stops gracefully");
    }
}

/// A store file that cannot be read stops `serve` with one line that names the file and the
/// way out, whether redb finds it is no database at all or stops inside a damaged page.
#[test]
fn a_damaged_store_file_is_named_at_start_with_what_to_do() {
    // Not a redb file at all.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("events.redb"), vec![0x5a; 100_000]).unwrap();
    assert_damaged_refusal(dir.path());

    // A real store with pages overwritten in the middle.
    let dir = tempfile::tempdir().unwrap();
    let mut sy = Switchyard::start_in(
        tempfile::TempDir::new_in(dir.path()).unwrap(),
        common::TWO_BROKERS,
        &[],
    );
    let data = sy.dir.join("data");
    sy.stop();
    let file = data.join("events.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    bytes[4096..len.min(4096 + 20_000)].fill(0xff);
    std::fs::write(&file, bytes).unwrap();
    assert_damaged_refusal(&sy.dir);
}

/// Runs `serve` on `dir/data` (with `dir/config.yaml`, written), which must refuse to start
/// with one line: that line.
fn serve_refusal_in(dir: &Path) -> String {
    std::fs::write(dir.join("config.yaml"), common::TWO_BROKERS).unwrap();
    let mut serve = Command::new(common::bin());
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.join("data"));
    common::refusal(serve)
}

/// Runs `serve` on `dir/data` and checks it refuses with the damaged-file line.
fn assert_damaged_refusal(dir: &Path) {
    let err = serve_refusal_in(dir);
    let file = dir.join("data/events.redb");
    assert!(
        err.contains(&format!("{} is damaged", file.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("mv {0} {0}.damaged", file.display())),
        "{err}"
    );
}

/// A write-ahead log record that is whole (its checksum holds) but does not parse, as a log
/// written by another version would be, stops `serve` with one line that names the log and
/// the way out; doing what it says starts the server from the last checkpoint.
#[tokio::test]
async fn a_wal_record_that_does_not_parse_is_named_at_start_with_what_to_do() {
    // No checkpoint but the one at start: the event is in the log only.
    let mut sy = Switchyard::start_with(
        common::TWO_BROKERS,
        &["--checkpoint-interval-ms", "3600000"],
    );
    assert_eq!(post(&sy, "logged", 10).await.status().as_u16(), 202);
    sy.kill9();
    let wal = sy.dir.join("data/wal");
    assert!(
        rewrite_wal_record(&wal, 1, |payload| payload.fill(0xff)),
        "no record 1 in {}",
        wal.display()
    );

    let err = serve_refusal_in(&sy.dir);
    let w = wal.display();
    assert!(
        err.contains(&format!("the write-ahead log in {w} cannot be replayed")),
        "{err}"
    );
    assert!(err.contains(&format!("mv {w} {w}.damaged")), "{err}");

    // As it says: the log moved aside, the store opens at its checkpoint, without the event.
    std::fs::rename(&wal, sy.dir.join("data/wal.damaged")).unwrap();
    sy.restart();
    assert_eq!(post(&sy, "after", 10).await.status().as_u16(), 202);
    let stored = sy.stored("default/default");
    let ids: Vec<&str> = stored.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["after"]);
}

/// Rewrites the payload of record `lsn` of the write-ahead log in `dir` with `change`, its
/// checksum made to hold again (the layout is in spec/storage.md); false if there is none.
fn rewrite_wal_record(dir: &Path, lsn: u64, change: impl Fn(&mut [u8])) -> bool {
    const HEADER: usize = 24;
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        while at + HEADER <= bytes.len() && word(&bytes, at) == 0x3157_5953 {
            let len = word(&bytes, at + 4) as usize;
            let found = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
            let salt = word(&bytes, at + 20);
            let payload = at + HEADER..at + HEADER + len;
            if found == lsn {
                change(&mut bytes[payload.clone()]);
                let mut crc = crc32fast::Hasher::new();
                crc.update(&found.to_le_bytes());
                crc.update(&(len as u32).to_le_bytes());
                crc.update(&salt.to_le_bytes());
                crc.update(&bytes[payload]);
                bytes[at + 16..at + 20].copy_from_slice(&crc.finalize().to_le_bytes());
                std::fs::write(&path, bytes).unwrap();
                return true;
            }
            at = payload.end;
        }
    }
    false
}

/// Raises this process's open-file limit to at least `needed`, if the hard limit allows.
fn open_files_for(needed: u64) -> bool {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c >= needed) {
        return true;
    }
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).is_ok()
        && getrlimit(Resource::Nofile)
            .current
            .is_none_or(|c| c >= needed)
}

/// 5,000 connections that send part of a request's headers and then nothing (slowloris) do
/// not keep the server from answering `/healthz`: it answers while every one of them is still
/// open, not once their deadline has closed them. And each is closed once its header deadline
/// has passed, so they cannot pile up.
#[tokio::test]
async fn slow_clients_do_not_stop_health_checks_and_are_closed_at_their_deadline() {
    use std::io::Read as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SLOW: usize = 5_000;
    const HEAD: &[u8] = b"POST /default/default HTTP/1.1\r\nHost: localhost\r\nce-id: 1\r\n";
    if !open_files_for(SLOW as u64 + 500) {
        skip("cannot open 5,000 files in this process (ulimit -n)");
        return;
    }
    // A deadline well past the time 5,000 connections take to open on a loaded machine (20 s
    // and more has been seen), and past the client's 30 s timeout: a `/healthz` that waited
    // for the slow connections to close would time out.
    let sy = Switchyard::start_with(common::TWO_BROKERS, &["--header-read-timeout-ms", "60000"]);
    let addr = sy.base.trim_start_matches("http://").to_owned();
    // The first, the oldest, is a blocking socket, so whether it is still open can be asked
    // without waiting (a peek that would block: open, nothing to read).
    let mut first = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut first, HEAD).unwrap();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 1..SLOW {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(HEAD).await.unwrap();
        slow.push(s);
    }
    let health = client().get(sy.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    first.set_nonblocking(true).unwrap();
    let peeked = first.peek(&mut [0u8; 1]);
    assert!(
        matches!(&peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "/healthz answered only after the slow connections were closed: {peeked:?}"
    );
    // Each slow connection is closed by the server (end of stream, or a reset).
    let mut buf = [0u8; 256];
    first.set_nonblocking(false).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let read = first.read(&mut buf);
    let reset = |e: &std::io::Error| {
        !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    assert!(
        matches!(read, Ok(0)) || read.as_ref().is_err_and(reset),
        "the first slow connection was not closed: {read:?}"
    );
    for s in &mut slow {
        let read = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "a slow connection was not closed: {read:?}"
        );
    }
    // And the server still serves.
    assert_eq!(post(&sy, "after", 10).await.status().as_u16(), 202);
}

/// A kept-alive connection that sits idle after its answer is closed once the header
/// deadline (`--header-read-timeout-ms`, also the idle timeout) has passed, so idle clients
/// cannot hold connection slots for ever.
#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sy = Switchyard::start_with(common::TWO_BROKERS, &["--header-read-timeout-ms", "1000"]);
    let addr = sy.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The answer, then nothing: the server closes the connection it keeps alive.
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Kept alive by the answer: closed for being idle, not for having answered.
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        matches!(closed, Ok(Ok(_) | Err(_))),
        "an idle connection was kept open: {answer}"
    );
}

/// Sends `head` (a request's line and headers, which announce a 100-byte body) and then the
/// body one byte every 200 ms, and returns the whole answer once the server closes the
/// connection (within 20 s).
async fn trickle(addr: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let sender = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"{").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut answer))
        .await
        .expect("the server answered and closed the connection")
        .ok();
    sender.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request whose body does not all arrive within `--body-read-timeout-ms` (here one byte
/// every 200 ms: steady, but too slow) is answered 408 with a problem, at ingress, at a
/// source's endpoint and at the management API, and nothing of it is stored.
#[tokio::test]
async fn a_body_that_arrives_too_slowly_is_answered_408_and_nothing_is_stored() {
    let sink = Sink::ok().await;
    let sy = Switchyard::start_with(&config(&sink.url), &["--body-read-timeout-ms", "1000"]);
    let addr = sy.base.trim_start_matches("http://").to_owned();
    let ingress = "POST /default/default HTTP/1.1\r\nHost: localhost\r\n\
        ce-specversion: 1.0\r\nce-id: slow\r\nce-source: /test\r\nce-type: t\r\n\
        content-type: application/json\r\ncontent-length: 100\r\n\r\n";
    let source = "POST /sources/default/hook HTTP/1.1\r\nHost: localhost\r\n\
        authorization: Bearer let-me-in\r\ncontent-type: application/json\r\n\
        content-length: 100\r\n\r\n";
    let api = "POST /api/v1/namespaces/default/brokers/default/deadletters/redrive HTTP/1.1\r\n\
        Host: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    for (what, head) in [("ingress", ingress), ("source", source), ("api", api)] {
        // The whole body would take 20 s; the answer comes at the deadline.
        let answer = trickle(&addr, head).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer}");
        assert!(
            answer.contains("urn:switchyard:problem:body-timeout")
                && answer.contains("did not arrive within 1000 ms"),
            "{what}: {answer}"
        );
    }
    let stored = common::events_text(&sy, "from=start&follow=false").await;
    assert_eq!(stored, "", "nothing of a timed-out body is stored");
    // The server goes on taking bodies that come in time.
    assert_eq!(post(&sy, "after", 10).await.status().as_u16(), 202);
}

/// Past `--max-connections`, a new connection waits until one closes, and is then served.
#[tokio::test]
async fn past_the_connection_cap_new_connections_wait_for_a_free_slot() {
    let sy = Switchyard::start_with(
        common::TWO_BROKERS,
        &[
            "--max-connections",
            "8",
            "--header-read-timeout-ms",
            "60000",
        ],
    );
    // Eight idle connections take every slot (each was served one request, so they count).
    let mut idle = Vec::new();
    for _ in 0..8 {
        let c = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        assert_eq!(
            c.get(sy.url("/healthz")).send().await.unwrap().status(),
            200
        );
        idle.push(c);
    }
    let waiting = tokio::spawn({
        let url = sy.url("/healthz");
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a ninth connection was served while eight were open"
    );
    // One idle connection closes: its slot goes to the one waiting.
    idle.pop();
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting connection was served once a slot was free")
        .unwrap();
    assert_eq!(status, 200);
}

/// Limits that would leave the server unable to serve are refused at start, in one line.
#[test]
fn connection_limits_that_cannot_serve_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), common::TWO_BROKERS).unwrap();
    for (args, says) in [
        (
            ["--header-read-timeout-ms", "0"],
            "--header-read-timeout-ms must be at least 100, not 0",
        ),
        (
            ["--body-read-timeout-ms", "99"],
            "--body-read-timeout-ms must be at least 100, not 99",
        ),
        (
            ["--max-connections", "0"],
            "--max-connections must be at least 1, not 0",
        ),
    ] {
        let out = Command::new(common::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(dir.path().join("config.yaml"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
}
