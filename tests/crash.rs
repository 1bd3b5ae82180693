//! The durability bar: `kill -9` at any moment loses no event that got a 202, and the log
//! holds no event twice; also when every event since the start lives only in the
//! write-ahead log (the kill lands between the log's write and redb's checkpoint).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Switchyard, TWO_BROKERS, client};

const PRODUCERS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_mid_load_loses_no_accepted_event() {
    kill9_mid_load(&[]).await;
}

/// No checkpoint after the one at start (an hour apart, and a log segment larger than the
/// load): at the kill, every accepted event is durable only in the write-ahead log, and redb's
/// file holds none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_between_the_log_write_and_the_checkpoint_loses_nothing() {
    kill9_mid_load(&[
        "--checkpoint-interval-ms",
        "3600000",
        "--wal-segment-bytes",
        "67108864",
    ])
    .await;
}

async fn kill9_mid_load(extra: &[&str]) {
    let mut sy = Switchyard::start_with(TWO_BROKERS, extra);
    let url = sy.url("/default/default");
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = vec![b'x'; 1024];
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (url, accepted, stop, payload) = (
            url.clone(),
            Arc::clone(&accepted),
            Arc::clone(&stop),
            payload.clone(),
        );
        producers.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("p{p}-{i}");
                i += 1;
                let sent = c
                    .post(&url)
                    .header("ce-specversion", "1.0")
                    .header("ce-id", &id)
                    .header("ce-source", "/crash")
                    .header("ce-type", "t")
                    .body(payload.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => accepted.lock().unwrap().push(id),
                    Ok(r) => panic!("unexpected status {} before the kill", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill once a good number of events are in, while all producers are still sending.
    let deadline = Instant::now() + Duration::from_secs(120);
    while accepted.lock().unwrap().len() < 3000 {
        assert!(Instant::now() < deadline, "producers made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sy.kill9();
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    let accepted: Vec<String> = accepted.lock().unwrap().clone();

    // It must come back on the same store and keep appending after what is there.
    sy.restart();
    let resp = client()
        .post(sy.url("/default/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "after-restart")
        .header("ce-source", "/crash")
        .header("ce-type", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let stored = sy.stored("default/default");
    let mut ids = HashSet::new();
    for (_, e) in &stored {
        assert!(ids.insert(e.id.clone()), "event {} stored twice", e.id);
    }
    let lost: Vec<&String> = accepted.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} accepted events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let offsets: Vec<u64> = stored.iter().map(|(o, _)| *o).collect();
    let expected: Vec<u64> = (0..stored.len() as u64).collect();
    assert_eq!(offsets, expected, "offsets are contiguous from 0");
    assert_eq!(stored.last().unwrap().1.id, "after-restart");
    assert!(accepted.len() >= 3000);
}
