//! The writer under storage faults, with a backend that fails its writes on demand as a full
//! disk does (the black-box test on a full tmpfs is `tests/faults.rs`).

#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicBool;

use redb::StorageBackend;
use redb::backends::InMemoryBackend;

use super::*;

const B: &str = "default/b";

/// Memory that outlives each database handle (so a reopen finds what was committed) and, while
/// `full` is set, cannot grow: as on a full disk, writing over what the file already holds
/// works, and making it longer fails with ENOSPC.
#[derive(Debug)]
struct Disk {
    memory: Arc<InMemoryBackend>,
    full: Arc<AtomicBool>,
}

fn no_space() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::StorageFull)
}

impl StorageBackend for Disk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.memory.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.memory.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) && len > self.memory.len()? {
            return Err(no_space());
        }
        self.memory.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.memory.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) && offset + data.len() as u64 > self.memory.len()? {
            return Err(no_space());
        }
        self.memory.write(offset, data)
    }
}

/// A log on `memory` (a "file" that outlives each handle) with its write-ahead log in `wal`.
fn open_on(
    memory: &Arc<InMemoryBackend>,
    wal: &Path,
    full: &Arc<AtomicBool>,
) -> (RedbLog, Arc<AtomicUsize>) {
    open_with_sync_fault(memory, wal, full, &Arc::default())
}

/// [`open_on`], with the write-ahead log's syncs under `fault`.
fn open_with_sync_fault(
    memory: &Arc<InMemoryBackend>,
    wal: &Path,
    full: &Arc<AtomicBool>,
    fault: &Arc<wal::SyncFault>,
) -> (RedbLog, Arc<AtomicUsize>) {
    let memory = Arc::clone(memory);
    let opens = Arc::new(AtomicUsize::new(0));
    let (full, counted) = (Arc::clone(full), Arc::clone(&opens));
    let opener: Opener = Box::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Database::builder()
            .create_with_backend(Disk {
                memory: Arc::clone(&memory),
                full: Arc::clone(&full),
            })
            .map_err(storage)
    });
    let options = RedbOptions {
        retention_interval: Duration::from_secs(3600),
        // Checkpoints only when a test asks for one (at shutdown).
        checkpoint_interval: Duration::from_secs(3600),
        ..RedbOptions::default()
    };
    let mut wal = wal::Wal::open(wal, options.wal_segment_bytes).unwrap();
    wal.sync_fault = Arc::clone(fault);
    let log = RedbLog::open_with(opener, None, wal, options, Box::new(|_| {})).unwrap();
    (log, opens)
}

fn open(full: &Arc<AtomicBool>) -> (RedbLog, Arc<AtomicUsize>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (log, opens) = open_on(&Arc::new(InMemoryBackend::new()), dir.path(), full);
    (log, opens, dir)
}

fn stored(log: &RedbLog) -> Vec<Vec<u8>> {
    log.read(B, 0, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.event.to_vec())
        .collect()
}

#[tokio::test]
async fn what_was_answered_after_the_last_checkpoint_comes_back_from_the_write_ahead_log() {
    let memory = Arc::new(InMemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let (log, _) = open_on(&memory, dir.path(), &full);
    log.append(B, vec![b"one".to_vec(), b"two".to_vec()])
        .await
        .unwrap();
    log.append_with(
        B,
        vec![b"three".to_vec()],
        vec![WriteOp::Put {
            table: Table::SourceState,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }],
    )
    .await
    .unwrap();
    log.commit(B, "t", 2).unwrap();
    log.write(vec![WriteOp::Put {
        table: Table::DeadLetters,
        key: b"d".to_vec(),
        value: b"x".to_vec(),
    }])
    .await
    .unwrap();
    // A crash: the handle and its writer are left as they are, with no checkpoint since the
    // open; the "file" holds only what the last checkpoint made durable.
    std::mem::forget(log);
    let (again, _) = open_on(&memory, dir.path(), &full);
    assert_eq!(
        stored(&again),
        [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    assert_eq!(again.stats(B).unwrap().next, 3);
    assert_eq!(
        again
            .scan(Table::SourceState, b"", b"\xff", 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        again
            .scan(Table::DeadLetters, b"", b"\xff", 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(again.committed(B, "t").unwrap(), Some(2));
    // And it goes on after them.
    assert_eq!(again.append(B, vec![b"four".to_vec()]).await.unwrap(), 3..4);
}

/// Waits for `done`, or fails the test after 10 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "still waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Lets a held sync go when a test ends, even by a failed assertion.
struct Release(Arc<wal::SyncFault>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.hold.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_failed_fdatasync_refuses_its_batch_and_takes_its_record_back() {
    let memory = Arc::new(InMemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let fault = Arc::new(wal::SyncFault::default());
    let (log, _) = open_with_sync_fault(&memory, dir.path(), &full, &fault);
    assert_eq!(log.append(B, vec![b"before".to_vec()]).await.unwrap(), 0..1);
    let _release = Release(Arc::clone(&fault));
    fault.hold.store(true, Ordering::SeqCst);
    fault.fail.store(true, Ordering::SeqCst);
    let refused = log.append(B, vec![b"refused".to_vec()]);
    until("the sync", || fault.held.load(Ordering::SeqCst) == 1).await;
    fault.hold.store(false, Ordering::SeqCst);
    assert!(matches!(refused.await, Err(LogError::Storage(_))));
    // Its record is erased once it is refused, before any next record: a restart now
    // (whose replay a second handle stands for) finds "before" alone.
    let replayed = || {
        let mut lsns = Vec::new();
        wal::Wal::open(dir.path(), RedbOptions::default().wal_segment_bytes)
            .unwrap()
            .replay(0, |lsn, _| {
                lsns.push(lsn);
                Ok(())
            })
            .unwrap();
        lsns
    };
    until("the refused record to be erased", || replayed() == [1]).await;
    // After the pause, writes are taken again, at the next offset.
    let after = append_until_taken(&log, b"after", |e| matches!(e, LogError::Storage(_))).await;
    assert_eq!(after, 1..2);
    // A crash: what comes back is what was answered, and nothing that was refused.
    std::mem::forget(log);
    let (again, _) = open_on(&memory, dir.path(), &full);
    assert_eq!(stored(&again), [b"before".to_vec(), b"after".to_vec()]);
    assert_eq!(again.append(B, vec![b"next".to_vec()]).await.unwrap(), 2..3);
}

#[tokio::test]
async fn while_the_disk_stalls_the_queue_fills_and_appends_are_refused_not_held_in_memory() {
    use std::task::Poll;
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(InMemoryBackend::new());
    let opener: Opener = Box::new(move || {
        Database::builder()
            .create_with_backend(Disk {
                memory: Arc::clone(&memory),
                full: Arc::default(),
            })
            .map_err(storage)
    });
    let options = RedbOptions {
        queue_capacity: 8,
        queue_max_bytes: 4096,
        max_batch_bytes: 1024,
        ..RedbOptions::default()
    };
    let mut wal = wal::Wal::open(dir.path(), options.wal_segment_bytes).unwrap();
    let fault = Arc::new(wal::SyncFault::default());
    wal.sync_fault = Arc::clone(&fault);
    let log = RedbLog::open_with(opener, None, wal, options, Box::new(|_| {})).unwrap();
    let _release = Release(Arc::clone(&fault));
    fault.hold.store(true, Ordering::SeqCst);
    let mut accepted = vec![log.append(B, vec![vec![1u8; 512]])];
    until("its sync", || fault.held.load(Ordering::SeqCst) == 1).await;
    // The writer waits for that sync: nothing more is taken, so the queue fills.
    let mut refused = false;
    for _ in 0..64 {
        let mut append = log.append(B, vec![vec![1u8; 512]]);
        let polled = std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await;
        match polled {
            Poll::Ready(Err(LogError::Overloaded)) => {
                refused = true;
                break;
            }
            Poll::Ready(other) => panic!("answered while the disk stalls: {other:?}"),
            Poll::Pending => accepted.push(append),
        }
    }
    assert!(
        refused,
        "64 appends of 512 B were all taken while no sync returned"
    );
    // The one whose sync is held, and a full queue.
    assert!(accepted.len() <= 1 + 8, "{} taken", accepted.len());
    fault.hold.store(false, Ordering::SeqCst);
    for append in accepted {
        append.await.unwrap();
    }
}

/// An event larger than any free space the file has: storing it makes the file grow.
fn big() -> Vec<u8> {
    vec![7; 4 << 20]
}

/// Appends until one is taken while the store refuses with what `refusing` expects, or fails
/// the test after 10 s (or at once on any other error).
async fn append_until_taken(
    log: &RedbLog,
    event: &[u8],
    refusing: impl Fn(&LogError) -> bool,
) -> Range<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match log.append(B, vec![event.to_vec()]).await {
            Ok(range) => return range,
            Err(e) if refusing(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the store did not take writes again: {e}"),
        }
    }
}

#[tokio::test]
async fn a_full_disk_refuses_appends_and_writes_resume_without_a_restart() {
    let full = Arc::new(AtomicBool::new(false));
    let (log, opens, _wal) = open(&full);
    assert_eq!(log.append(B, vec![b"before".to_vec()]).await.unwrap(), 0..1);
    assert_eq!(log.write_failure(), None);

    full.store(true, Ordering::SeqCst);
    let refused = log.append(B, vec![big()]).await;
    assert!(matches!(refused, Err(LogError::DiskFull(_))), "{refused:?}");
    let why = log.write_failure().expect("the failure is reported");
    assert!(why.contains("disk is full"), "{why}");
    // Until the pause is over, appends are refused without a try.
    assert!(matches!(
        log.append(B, vec![b"small".to_vec()]).await,
        Err(LogError::DiskFull(_))
    ));

    full.store(false, Ordering::SeqCst);
    // The same process takes writes again: the handle redb gave up on was replaced.
    let range = append_until_taken(&log, b"after", |e| matches!(e, LogError::DiskFull(_))).await;
    assert_eq!(range, 1..2, "no offset was used by what was refused");
    assert_eq!(log.write_failure(), None);
    assert!(
        opens.load(Ordering::SeqCst) >= 2,
        "the database was opened again"
    );
    assert_eq!(stored(&log), [b"before".to_vec(), b"after".to_vec()]);
}

#[tokio::test]
async fn stored_events_stay_readable_while_appends_are_refused() {
    let full = Arc::new(AtomicBool::new(false));
    let (log, _, _wal) = open(&full);
    log.append(B, vec![b"stored".to_vec()]).await.unwrap();
    full.store(true, Ordering::SeqCst);
    assert!(log.append(B, vec![big()]).await.is_err());
    // The handle was replaced at once (reopening writes only over what the file holds), so
    // delivery can read what is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = loop {
        match log.read(B, 0, 10) {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("stored events cannot be read: {e}"),
        }
    };
    assert_eq!(read.len(), 1);
    assert_eq!(&read[0].event[..], b"stored");
}
