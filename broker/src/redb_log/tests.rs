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
    let wal = wal::Wal::open(wal, options.wal_segment_bytes).unwrap();
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

/// An event larger than any free space the file has: storing it makes the file grow.
fn big() -> Vec<u8> {
    vec![7; 4 << 20]
}

/// Appends until one is taken, or fails the test after 10 s.
async fn append_until_taken(log: &RedbLog, event: &[u8]) -> Range<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match log.append(B, vec![event.to_vec()]).await {
            Ok(range) => return range,
            Err(LogError::DiskFull(_)) if Instant::now() < deadline => {
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
    let range = append_until_taken(&log, b"after").await;
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

/// A "file" whose checkpoints' `fsync`s wait while `hold` is set (a checkpoint held in the
/// middle), and say when one is waiting.
#[derive(Debug)]
struct Gated {
    memory: Arc<InMemoryBackend>,
    hold: Arc<AtomicBool>,
    waiting: Arc<AtomicBool>,
}

impl StorageBackend for Gated {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.memory.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.memory.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.memory.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        // Only the checkpoint's: the writer's own (when a commit makes the file grow) go on.
        let checkpoint = std::thread::current().name() == Some("switchyard-checkpoint");
        while checkpoint && self.hold.load(Ordering::SeqCst) {
            self.waiting.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
        }
        self.waiting.store(false, Ordering::SeqCst);
        self.memory.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.memory.write(offset, data)
    }
}

/// A copy of `memory`, as a crash would leave the file at this moment.
fn snapshot(memory: &InMemoryBackend) -> Arc<InMemoryBackend> {
    let len = memory.len().unwrap();
    let mut bytes = vec![0; usize::try_from(len).unwrap()];
    memory.read(0, &mut bytes).unwrap();
    let copy = InMemoryBackend::new();
    copy.set_len(len).unwrap();
    copy.write(0, &bytes).unwrap();
    Arc::new(copy)
}

/// A log on a gated `memory` that checkpoints after every commit.
fn open_gated(
    memory: &Arc<InMemoryBackend>,
    wal: &Path,
    hold: &Arc<AtomicBool>,
    waiting: &Arc<AtomicBool>,
) -> RedbLog {
    let (memory, hold, waiting) = (Arc::clone(memory), Arc::clone(hold), Arc::clone(waiting));
    let opener: Opener = Box::new(move || {
        Database::builder()
            .create_with_backend(Gated {
                memory: Arc::clone(&memory),
                hold: Arc::clone(&hold),
                waiting: Arc::clone(&waiting),
            })
            .map_err(storage)
    });
    let options = RedbOptions {
        retention_interval: Duration::from_secs(3600),
        checkpoint_interval: Duration::ZERO,
        ..RedbOptions::default()
    };
    let wal = wal::Wal::open(wal, options.wal_segment_bytes).unwrap();
    RedbLog::open_with(opener, None, wal, options, Box::new(|_| {})).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn commits_are_answered_while_a_checkpoint_runs_and_applied_when_it_ends() {
    let memory = Arc::new(InMemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let (hold, waiting) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let log = open_gated(&memory, dir.path(), &hold, &waiting);
    hold.store(true, Ordering::SeqCst);
    let (announced, mut announcements) = tokio::sync::mpsc::channel(16);
    log.observe_commits(announced);
    assert_eq!(log.append(B, vec![b"one".to_vec()]).await.unwrap(), 0..1);
    // The commit is followed by a checkpoint, which now waits in its fsync.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiting.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no checkpoint began");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(announcements.recv().await.unwrap().first, 0);

    // Answered (durable in the write-ahead log) and announced with the checkpoint held.
    let answered =
        tokio::time::timeout(Duration::from_secs(5), log.append(B, vec![b"two".to_vec()]))
            .await
            .expect("an append waited for the checkpoint");
    assert_eq!(answered.unwrap(), 1..2);
    let two = announcements.recv().await.unwrap();
    assert_eq!((two.first, two.events[0].as_ref()), (1, &b"two"[..]));
    assert!(
        waiting.load(Ordering::SeqCst),
        "the checkpoint is still held"
    );
    // Not in the database yet: reads end before it, and say nothing is gone.
    assert_eq!(stored(&log), [b"one".to_vec()]);
    assert!(log.read(B, 1, 10).unwrap().is_empty());
    assert_eq!(log.stats(B).unwrap().next, 1);

    // A crash now: the file as it is and the log as it is bring back both.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    let image = snapshot(&memory);

    hold.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(&log).len() < 2 {
        assert!(Instant::now() < deadline, "the held commit was not applied");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(stored(&log), [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(log.append(B, vec![b"three".to_vec()]).await.unwrap(), 2..3);
    log.shutdown();

    let released = Arc::new(AtomicBool::new(false));
    let again = open_gated(&image, crashed.path(), &released, &waiting);
    assert_eq!(stored(&again), [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(
        again.append(B, vec![b"three".to_vec()]).await.unwrap(),
        2..3
    );
}
