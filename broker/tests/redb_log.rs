//! The embedded log against a real redb file: appends, reads, cursors, reopening, retention
//! (with an injected clock, so "two hours later" takes no time).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::clock::Clock;
use switchyard_broker::log::{EventLog, LogError, RetentionPolicy, Table, WriteOp};
use switchyard_broker::redb_log::{RedbLog, RedbOptions};

const B: &str = "default/default";
const T0: u64 = 1_800_000_000_000;

/// A manual clock standing at `ms` since the epoch.
fn clock_at(ms: u64) -> Clock {
    Clock::manual(at(ms))
}

fn at(ms: u64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap()).unwrap()
}

fn open(dir: &std::path::Path, clock: &Clock) -> RedbLog {
    let options = RedbOptions {
        // Retention runs only when a test asks for it.
        retention_interval: Duration::from_secs(3600),
        clock: clock.clone(),
        ..RedbOptions::default()
    };
    RedbLog::open(dir, options, Box::new(|_| {})).unwrap()
}

fn events(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| vec![u8::try_from(i % 256).unwrap(); size])
        .collect()
}

#[tokio::test]
async fn appends_read_back_in_order_and_offsets_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at(T0);
    {
        let log = open(dir.path(), &clock);
        assert_eq!(log.append(B, events(3, 10)).await.unwrap(), 0..3);
        assert_eq!(log.append(B, events(2, 10)).await.unwrap(), 3..5);
        assert_eq!(log.append("other/b", events(1, 10)).await.unwrap(), 0..1);
        let read = log.read(B, 1, 3).unwrap();
        let offsets: Vec<u64> = read.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [1, 2, 3]);
        assert_eq!(read[0].event.as_ref(), &[1u8; 10]);
        assert_eq!(read[0].arrival_ms, T0);
        let stats = log.stats(B).unwrap();
        assert_eq!((stats.first, stats.next, stats.bytes), (0, 5, 50));
        log.commit(B, "trigger-a", 4).unwrap();
        log.shutdown();
        assert!(matches!(
            log.append(B, events(1, 1)).await,
            Err(LogError::ShuttingDown)
        ));
    }
    let log = open(dir.path(), &clock);
    assert_eq!(log.committed(B, "trigger-a").unwrap(), Some(4));
    assert_eq!(log.committed(B, "nobody").unwrap(), None);
    assert_eq!(log.append(B, events(1, 10)).await.unwrap(), 5..6);
    assert!(log.read("nope/nope", 0, 10).unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_appends_get_distinct_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at(T0);
    let log = Arc::new(open(dir.path(), &clock));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(
            async move { log.append(B, events(3, 8)).await },
        ));
    }
    let mut ranges = Vec::new();
    for t in tasks {
        ranges.push(t.await.unwrap().unwrap());
    }
    ranges.sort_by_key(|r| r.start);
    for (i, r) in ranges.iter().enumerate() {
        assert_eq!(
            *r,
            (i as u64 * 3)..(i as u64 * 3 + 3),
            "each request's events are contiguous"
        );
    }
    assert_eq!(log.stats(B).unwrap().next, 300);
}

#[tokio::test]
async fn retention_by_age_deletes_old_events_and_offsets_do_not_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at(T0);
    let log = open(dir.path(), &clock);
    log.append(B, events(5, 10)).await.unwrap();
    clock.set(at(T0 + 30 * 60_000)).unwrap();
    log.append(B, events(5, 10)).await.unwrap();
    log.set_retention(
        B,
        RetentionPolicy {
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: None,
        },
    )
    .unwrap();
    // 45 minutes after T0: nothing is an hour old.
    clock.set(at(T0 + 45 * 60_000)).unwrap();
    assert_eq!(log.run_retention().await.unwrap(), 0);
    // 70 minutes after T0: the first five are.
    clock.set(at(T0 + 70 * 60_000)).unwrap();
    assert_eq!(log.run_retention().await.unwrap(), 5);
    let stats = log.stats(B).unwrap();
    assert_eq!((stats.first, stats.next, stats.bytes), (5, 10, 50));
    // Three hours later: all gone, and the next append continues the numbering.
    clock.set(at(T0 + 3 * 3_600_000)).unwrap();
    assert_eq!(log.run_retention().await.unwrap(), 5);
    assert_eq!(log.append(B, events(1, 10)).await.unwrap(), 10..11);
    log.shutdown();
    drop(log);
    let log = open(dir.path(), &clock);
    assert_eq!(log.append(B, events(1, 10)).await.unwrap(), 11..12);
}

#[tokio::test]
async fn retention_by_size_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at(T0);
    let log = open(dir.path(), &clock);
    log.append(B, events(10, 100)).await.unwrap();
    log.set_retention(
        B,
        RetentionPolicy {
            max_age: None,
            max_bytes: Some(350),
        },
    )
    .unwrap();
    assert_eq!(log.run_retention().await.unwrap(), 7);
    let stats = log.stats(B).unwrap();
    assert_eq!((stats.first, stats.next, stats.bytes), (7, 10, 300));
}

#[tokio::test]
async fn retention_never_deletes_what_a_consumer_has_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at(T0);
    let log = open(dir.path(), &clock);
    log.append(B, events(10, 10)).await.unwrap();
    log.commit(B, "slow", 4).unwrap();
    log.commit(B, "fast", 9).unwrap();
    log.set_retention(
        B,
        RetentionPolicy {
            max_age: Some(Duration::from_secs(1)),
            max_bytes: Some(0),
        },
    )
    .unwrap();
    clock.set(at(T0 + 86_400_000)).unwrap();
    assert_eq!(log.run_retention().await.unwrap(), 4);
    assert_eq!(log.stats(B).unwrap().first, 4);
    assert_eq!(
        log.run_retention().await.unwrap(),
        0,
        "offset 4 is still needed"
    );
    log.commit(B, "slow", 8).unwrap();
    assert_eq!(log.run_retention().await.unwrap(), 4);
    assert_eq!(log.stats(B).unwrap().first, 8);
}

/// A pass deletes at most a chunk; one that stops at its chunk is followed by another soon
/// (not a whole `retention_interval` later), so retention keeps up with any ingest rate.
#[tokio::test]
async fn retention_deletes_in_bounded_chunks_and_catches_up_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at(T0);
    let options = RedbOptions {
        retention_interval: Duration::from_secs(3600),
        retention_chunk: 3,
        clock: clock.clone(),
        ..RedbOptions::default()
    };
    let log = RedbLog::open(dir.path(), options, Box::new(|_| {})).unwrap();
    log.append(B, events(7, 1)).await.unwrap();
    log.set_retention(
        B,
        RetentionPolicy {
            max_age: None,
            max_bytes: Some(0),
        },
    )
    .unwrap();
    assert_eq!(log.run_retention().await.unwrap(), 3);
    // The interval is an hour: only catching up deletes the other four within seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.stats(B).unwrap().first < 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not catch up: first offset {}",
            log.stats(B).unwrap().first
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.run_retention().await.unwrap(), 0);
}

#[tokio::test]
async fn the_write_queue_is_bounded_by_bytes_not_only_by_requests() {
    let dir = tempfile::tempdir().unwrap();
    let options = RedbOptions {
        queue_max_bytes: 1 << 20,
        ..RedbOptions::default()
    };
    let log = RedbLog::open(dir.path(), options, Box::new(|_| {})).unwrap();
    // 64 requests of 256 KiB, queued at once: far fewer than the 4,096 requests the queue
    // takes, but 16 MiB where 1 MiB may wait.
    let appends: Vec<_> = (0..64)
        .map(|_| log.append(B, events(1, 256 * 1024)))
        .collect();
    let mut stored = 0;
    let mut refused = 0;
    for a in appends {
        match a.await {
            Ok(_) => stored += 1,
            Err(LogError::Overloaded) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "all 64 were queued");
    assert!(stored > 0);
    assert_eq!(log.stats(B).unwrap().next, stored);
    // Once the queue is empty again, one request larger than the cap is taken.
    log.append(B, events(1, 2 << 20)).await.unwrap();
}

#[tokio::test]
async fn scan_last_reads_the_newest_records_of_a_range_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &clock_at(T0));
    let ops = (0u8..10)
        .map(|i| WriteOp::Put {
            table: Table::Audit,
            key: vec![b'n', 0, i],
            value: vec![i],
        })
        .collect();
    log.write(ops).await.unwrap();
    let last = log.scan_last(Table::Audit, b"n\0", b"n\x01", 3).unwrap();
    let values: Vec<u8> = last.iter().map(|(_, v)| v[0]).collect();
    assert_eq!(values, [7, 8, 9]);
    assert_eq!(
        log.scan_last(Table::Audit, b"n\0", b"n\x01", 100)
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test]
async fn retention_deletes_audit_entries_past_their_age_in_every_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), &clock_at(T0));
    let day = 24 * 3600 * 1000;
    let key = |ns: &str, millis: u64, seq: u64| {
        let mut k = ns.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&millis.to_be_bytes());
        k.extend_from_slice(&seq.to_be_bytes());
        k
    };
    let entries = [
        ("a", T0 - 100 * day, 1),
        ("a", T0 - 100 * day, 2),
        ("a", T0 - day, 3),
        ("b", T0 - 95 * day, 4),
        ("b", T0 - 2 * day, 5),
    ];
    let ops = entries
        .iter()
        .map(|(ns, t, seq)| WriteOp::Put {
            table: Table::Audit,
            key: key(ns, *t, *seq),
            value: seq.to_be_bytes().to_vec(),
        })
        .collect();
    log.write(ops).await.unwrap();
    log.run_retention().await.unwrap();
    let left: Vec<u64> = log
        .scan(Table::Audit, b"", b"\xff", 100)
        .unwrap()
        .iter()
        .map(|(_, v)| u64::from_be_bytes(v.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(left, [3, 5], "the default keeps 90 days");
}
