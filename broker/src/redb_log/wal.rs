//! The write-ahead log in front of redb: what makes a commit durable with one sequential write
//! and one `fdatasync`.
//!
//! Each group commit is one record, appended to a segment file that was filled with zeros when
//! it was made, so an `fdatasync` writes the record and no file-system metadata (no block
//! allocation, no size change). redb commits the same changes without an fsync; every
//! `checkpoint_interval` a durable redb commit (a checkpoint) makes everything before it
//! durable in the file itself and records the last record it holds (`wal/lsn` in `meta`).
//! Segments whose records are all checkpointed are used again from their start.
//!
//! At open, and after a failed write made the writer open the file again, the records after
//! the checkpointed one are applied again (replay). A record is
//!
//! ```text
//! magic u32 | payload length u32 | lsn u64 | crc32 u32 (of lsn, length, salt, payload) | salt u32 | payload
//! ```
//!
//! all little-endian. The salt is drawn at random each time a segment is written again from
//! its start, and every record of that use carries it: bytes left from the segment's earlier
//! use (which hold events, that is, producers' bytes) cannot pass for a record of this use.
//! The log is the chain of valid records with consecutive LSNs from the checkpointed one on;
//! it ends at the first record that is torn, stale (left from a segment's previous use: a
//! lower LSN or another salt) or absent. The layout is in `spec/storage.md`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::log::LogError;

/// "SYW1": a Switchyard WAL record, format 1.
const MAGIC: u32 = 0x3157_5953;
/// Bytes before each record's payload.
pub(super) const HEADER_BYTES: usize = 24;
/// Segments are made (and zero-filled) in multiples of this.
const ALLOCATION_BYTES: u64 = 1 << 20;
/// Free segments kept for reuse after a checkpoint; more are deleted.
const SPARE_SEGMENTS: usize = 2;

/// One segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    len: u64,
    /// The highest LSN this segment holds since its current use began; 0 when it holds none.
    last_lsn: u64,
    /// The salt of its current use.
    salt: u32,
}

/// The last record appended, so that it can be taken back ([`Wal::retract_last`]).
#[derive(Debug, Clone, Copy)]
struct Appended {
    lsn: u64,
    segment: usize,
    position: u64,
    bytes: u64,
    /// The segment's `last_lsn` before it.
    previous_last_lsn: u64,
}

/// Where a record of the chain is, found while scanning.
#[derive(Debug, Clone, Copy)]
struct Found {
    segment: usize,
    position: u64,
    payload_bytes: usize,
}

/// The write-ahead log: its segments, where the next record goes and its LSN.
#[derive(Debug)]
pub(super) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    current: usize,
    position: u64,
    next_lsn: u64,
    checkpointed: u64,
    /// Record bytes written since the last checkpoint.
    since_checkpoint_bytes: u64,
    /// The number in the next new segment's file name.
    next_name: u64,
    /// Where a record whose write or `fdatasync` failed may still sit: its header is erased
    /// (durably) as soon as its requests are refused ([`Wal::erase_failed`]), or, where that
    /// fails, before the next record is written anywhere or the log replayed, so that no two
    /// records with the same LSN can both be found and no refused one is replayed.
    failed_at: Option<(usize, u64)>,
    last_append: Option<Appended>,
    /// Makes syncs fail, for tests.
    #[cfg(test)]
    pub(super) sync_fault: std::sync::Arc<SyncFault>,
}

/// A test's hold on the syncs of records [`Wal::append`] writes (not those of erasures or
/// replays): each waits while `hold` is set (counted in `held`, so that more can queue up
/// meanwhile); the next one fails when `fail` is set.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct SyncFault {
    pub(super) fail: std::sync::atomic::AtomicBool,
    pub(super) hold: std::sync::atomic::AtomicBool,
    pub(super) held: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl SyncFault {
    fn check(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.hold.load(SeqCst) {
            self.held.fetch_add(1, SeqCst);
            while self.hold.load(SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        if self.fail.swap(false, SeqCst) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        Ok(())
    }
}

/// A salt for a segment's new use.
fn new_salt() -> u32 {
    // `RandomState` draws its keys from the operating system's randomness once per thread
    // and changes them for every new state.
    let h = RandomState::new().hash_one(std::time::SystemTime::now());
    (h ^ (h >> 32)) as u32
}

fn crc(lsn: u64, len: u32, salt: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(&salt.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A record read back: its LSN, its segment use's salt and its payload.
struct Read {
    lsn: u64,
    salt: u32,
    payload: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The record at `position` of `file`, or `None` where there is no valid one: the end of the
/// segment's records.
fn read_record(file: &File, len: u64, position: u64) -> io::Result<Option<Read>> {
    if position.saturating_add(HEADER_BYTES as u64) > len {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut header, position)?;
    let payload_len = u32_at(&header, 4);
    if u32_at(&header, 0) != MAGIC || position + HEADER_BYTES as u64 + u64::from(payload_len) > len
    {
        return Ok(None);
    }
    let (lsn, salt) = (u64_at(&header, 8), u32_at(&header, 20));
    let mut payload = vec![0u8; payload_len as usize];
    file.read_exact_at(&mut payload, position + HEADER_BYTES as u64)?;
    if crc(lsn, payload_len, salt, &payload) != u32_at(&header, 16) {
        return Ok(None);
    }
    Ok(Some(Read { lsn, salt, payload }))
}

impl Wal {
    /// Opens the log in `dir` (made when absent). Nothing is replayed yet: see [`Self::replay`].
    pub(super) fn open(dir: &Path, segment_bytes: u64) -> io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let segment_bytes = segment_bytes
            .max(ALLOCATION_BYTES)
            .next_multiple_of(ALLOCATION_BYTES);
        let mut segments = Vec::new();
        let mut next_name = 0;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let number = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(number) = number {
                names.push((number, path));
            }
        }
        names.sort();
        for (number, path) in names {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = file.metadata()?.len();
            next_name = next_name.max(number.saturating_add(1));
            segments.push(Segment {
                path,
                file,
                len,
                last_lsn: 0,
                salt: 0,
            });
        }
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            current: 0,
            position: 0,
            next_lsn: 1,
            checkpointed: 0,
            since_checkpoint_bytes: 0,
            next_name,
            failed_at: None,
            last_append: None,
            #[cfg(test)]
            sync_fault: std::sync::Arc::default(),
        };
        if wal.segments.is_empty() {
            wal.current = wal.make_segment(segment_bytes)?;
        }
        Ok(wal)
    }

    /// Finds the records after `checkpointed` and hands each to `apply`, in order; the next
    /// record is written after the last of them. Returns how many there were.
    pub(super) fn replay(
        &mut self,
        checkpointed: u64,
        mut apply: impl FnMut(u64, &[u8]) -> Result<(), LogError>,
    ) -> Result<u64, LogError> {
        // A record whose write was refused (its fdatasync failed) may still be whole in the
        // page cache: it is erased before anything is read, or a reopen by the running writer
        // would store what it refused.
        self.erase_failed().map_err(|e| {
            LogError::Storage(format!(
                "cannot erase a refused record of the write-ahead log in {}: {e}",
                self.dir.display()
            ))
        })?;
        let dir = self.dir.clone();
        let read_error = |e: io::Error| {
            LogError::Storage(format!(
                "cannot read the write-ahead log in {}: {e}",
                dir.display()
            ))
        };
        // Every segment's run of valid records of its current use (one salt) with consecutive
        // LSNs, from its start. An LSN found twice (a record whose write failed, left where the
        // writer could not erase it) is resolved by which copy the next LSN follows.
        let mut found: BTreeMap<u64, Vec<Found>> = BTreeMap::new();
        for (index, segment) in self.segments.iter_mut().enumerate() {
            segment.last_lsn = 0;
            segment.salt = 0;
            let mut position = 0;
            let mut previous: Option<(u64, u32)> = None;
            while let Some(r) =
                read_record(&segment.file, segment.len, position).map_err(read_error)?
            {
                if previous
                    .is_some_and(|(lsn, salt)| Some(r.lsn) != lsn.checked_add(1) || r.salt != salt)
                {
                    break;
                }
                found.entry(r.lsn).or_default().push(Found {
                    segment: index,
                    position,
                    payload_bytes: r.payload.len(),
                });
                previous = Some((r.lsn, r.salt));
                position += (HEADER_BYTES + r.payload.len()) as u64;
            }
        }
        self.checkpointed = checkpointed;
        self.next_lsn = checkpointed.saturating_add(1);
        self.since_checkpoint_bytes = 0;
        self.failed_at = None;
        self.last_append = None;
        let mut replayed = 0;
        while let Some(candidates) = found.get(&self.next_lsn) {
            let next = found.get(&self.next_lsn.saturating_add(1));
            let followed = |c: &&Found| {
                next.is_some_and(|n| {
                    n.iter().any(|f| {
                        f.segment == c.segment
                            && f.position == c.position + (HEADER_BYTES + c.payload_bytes) as u64
                    })
                })
            };
            let Some(at) = candidates
                .iter()
                .find(followed)
                .or(candidates.first())
                .copied()
            else {
                break;
            };
            let segment = &mut self.segments[at.segment];
            let Some(r) =
                read_record(&segment.file, segment.len, at.position).map_err(read_error)?
            else {
                break;
            };
            apply(r.lsn, &r.payload)?;
            segment.last_lsn = r.lsn;
            segment.salt = r.salt;
            self.current = at.segment;
            self.position = at.position + (HEADER_BYTES + at.payload_bytes) as u64;
            self.since_checkpoint_bytes += (HEADER_BYTES + at.payload_bytes) as u64;
            self.next_lsn = self.next_lsn.saturating_add(1);
            replayed += 1;
        }
        if replayed == 0 {
            // Nothing to keep: start over at the beginning of the first segment, in a new use.
            self.current = 0;
            self.position = 0;
            self.segments[0].salt = new_salt();
        }
        Ok(replayed)
    }

    /// The directory of its segments.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The LSN the next record gets.
    pub(super) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// The LSN of the last record written (0: none yet).
    pub(super) fn last_lsn(&self) -> u64 {
        self.next_lsn.saturating_sub(1)
    }

    /// Record bytes written since the last checkpoint.
    pub(super) fn since_checkpoint_bytes(&self) -> u64 {
        self.since_checkpoint_bytes
    }

    /// Writes `record` ([`HEADER_BYTES`] of room for the header, then the payload) as the
    /// next record and makes it durable; returns its LSN. On failure nothing moves: the next
    /// try writes the same LSN (at the same place, unless it no longer fits there), after
    /// erasing what the failed one may have left.
    pub(super) fn append(&mut self, record: &mut [u8]) -> io::Result<u64> {
        let payload_len = u32::try_from(record.len() - HEADER_BYTES)
            .map_err(|_| io::Error::other("a commit of 4 GiB or more cannot be logged"))?;
        self.erase_failed()?;
        let lsn = self.next_lsn;
        let need = record.len() as u64;
        if self.position + need > self.segments[self.current].len {
            self.switch(need)?;
        }
        let salt = self.segments[self.current].salt;
        let checksum = crc(lsn, payload_len, salt, &record[HEADER_BYTES..]);
        record[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        record[4..8].copy_from_slice(&payload_len.to_le_bytes());
        record[8..16].copy_from_slice(&lsn.to_le_bytes());
        record[16..20].copy_from_slice(&checksum.to_le_bytes());
        record[20..24].copy_from_slice(&salt.to_le_bytes());
        let (current, position) = (self.current, self.position);
        #[cfg(test)]
        let fault = std::sync::Arc::clone(&self.sync_fault);
        let segment = &mut self.segments[current];
        let written = segment.file.write_all_at(record, position).and_then(|()| {
            #[cfg(test)]
            fault.check()?;
            let syncing = std::time::Instant::now();
            segment.file.sync_data()?;
            metrics::histogram!(crate::metrics::FSYNC_SECONDS)
                .record(syncing.elapsed().as_secs_f64());
            Ok(())
        });
        if let Err(e) = written {
            self.failed_at = Some((current, position));
            return Err(e);
        }
        self.last_append = Some(Appended {
            lsn,
            segment: current,
            position,
            bytes: need,
            previous_last_lsn: segment.last_lsn,
        });
        segment.last_lsn = lsn;
        self.position += need;
        self.since_checkpoint_bytes += need;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Takes back the record [`Self::append`] just wrote (its commit failed after it): its
    /// header is erased durably and the next record takes its LSN and place. Fails when the
    /// erasure cannot be made durable; then it is tried again before the next record.
    pub(super) fn retract_last(&mut self) -> io::Result<()> {
        let Some(last) = self.last_append.take() else {
            return Ok(());
        };
        if last.lsn + 1 != self.next_lsn {
            return Ok(());
        }
        self.next_lsn = last.lsn;
        self.current = last.segment;
        self.position = last.position;
        self.since_checkpoint_bytes = self.since_checkpoint_bytes.saturating_sub(last.bytes);
        let segment = &mut self.segments[last.segment];
        segment.last_lsn = last.previous_last_lsn;
        // Erased before anything else is written (by the next append, if not now).
        self.failed_at = Some((last.segment, last.position));
        self.erase_failed()
    }

    /// Makes every segment durable as it stands: before a replay, so that a record whose
    /// `fdatasync` had not returned when the process was killed (whole in the page cache) is
    /// on disk before anything it holds is read.
    pub(super) fn sync_segments(&self) -> io::Result<()> {
        self.segments.iter().try_for_each(|s| s.file.sync_data())
    }

    /// Erases, durably, the header of a record whose write failed or that was taken back
    /// (nothing to do when there is none). The writer calls it as soon as it has refused a
    /// failed record's requests; it runs again before the next record and before a replay.
    pub(super) fn erase_failed(&mut self) -> io::Result<()> {
        if let Some((segment, position)) = self.failed_at {
            let file = &self.segments[segment].file;
            file.write_all_at(&[0u8; HEADER_BYTES], position)?;
            file.sync_data()?;
            self.failed_at = None;
        }
        Ok(())
    }

    /// Everything up to `lsn` is durable in redb: segments holding nothing newer may be used
    /// again; spares past [`SPARE_SEGMENTS`] and oversized ones are deleted.
    pub(super) fn checkpointed(&mut self, lsn: u64) {
        self.checkpointed = lsn;
        self.since_checkpoint_bytes = 0;
        let mut spares = 0;
        let mut index = 0;
        while index < self.segments.len() {
            let segment = &self.segments[index];
            let free = index != self.current && segment.last_lsn <= lsn;
            // A segment where a failed write may have left a record is kept until that
            // record is erased (a deletion is not durable without more fsyncs).
            let holds_failed = self.failed_at.is_some_and(|(s, _)| s == index);
            if free
                && !holds_failed
                && (spares >= SPARE_SEGMENTS || segment.len > self.segment_bytes)
            {
                if let Err(e) = std::fs::remove_file(&segment.path) {
                    tracing::warn!(error = %e, path = %segment.path.display(), "cannot delete a spare WAL segment");
                    index += 1;
                    continue;
                }
                self.segments.remove(index);
                // Indices past the removed one move down by one.
                let shift = |i: &mut usize| {
                    if *i > index {
                        *i -= 1;
                    }
                };
                shift(&mut self.current);
                if let Some((s, _)) = &mut self.failed_at {
                    shift(s);
                }
                if let Some(a) = &mut self.last_append {
                    shift(&mut a.segment);
                }
                continue;
            }
            if free {
                spares += 1;
            }
            index += 1;
        }
    }

    /// Moves to a segment with room for `need` bytes: a free one, or a new one.
    fn switch(&mut self, need: u64) -> io::Result<()> {
        let free = (0..self.segments.len()).find(|&i| {
            i != self.current
                && self.segments[i].last_lsn <= self.checkpointed
                && self.segments[i].len >= need
        });
        let next = match free {
            Some(i) => i,
            None => self.make_segment(
                self.segment_bytes
                    .max(need.next_multiple_of(ALLOCATION_BYTES)),
            )?,
        };
        self.segments[next].last_lsn = 0;
        self.segments[next].salt = new_salt();
        self.current = next;
        self.position = 0;
        Ok(())
    }

    /// Makes a segment of `len` bytes, written with zeros and made durable with its directory
    /// entry, so that appending to it later changes no file-system metadata.
    fn make_segment(&mut self, len: u64) -> io::Result<usize> {
        let path = self.dir.join(format!("{:08}.wal", self.next_name));
        let made = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let zeros = vec![0u8; ALLOCATION_BYTES as usize];
            let mut at = 0;
            while at < len {
                file.write_all_at(&zeros, at)?;
                at += ALLOCATION_BYTES;
            }
            file.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            Ok(file)
        })();
        // The name is used up even when making the file failed (and it could not be
        // removed), so the next try does not stumble on it.
        self.next_name += 1;
        let file = match made {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        self.segments.push(Segment {
            path,
            file,
            len,
            last_lsn: 0,
            salt: new_salt(),
        });
        Ok(self.segments.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut r = vec![0; HEADER_BYTES];
        r.extend_from_slice(payload);
        r
    }

    /// A record as `append` writes it, made by hand.
    fn valid_record(lsn: u64, salt: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        let mut r = Vec::new();
        r.extend_from_slice(&MAGIC.to_le_bytes());
        r.extend_from_slice(&len.to_le_bytes());
        r.extend_from_slice(&lsn.to_le_bytes());
        r.extend_from_slice(&crc(lsn, len, salt, payload).to_le_bytes());
        r.extend_from_slice(&salt.to_le_bytes());
        r.extend_from_slice(payload);
        r
    }

    fn replayed(wal: &mut Wal, after: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        wal.replay(after, |lsn, p| {
            out.push((lsn, p.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn records_after_the_checkpoint_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        let big = vec![5u8; 300 * 1024];
        for _ in 0..10 {
            wal.append(&mut record(&big)).unwrap();
        }
        assert!(wal.segments.len() >= 3, "{} segments", wal.segments.len());
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        let got = replayed(&mut again, 4);
        assert_eq!(
            got.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            (5..=10).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|(_, p)| *p == big));
        // The next record follows the last one.
        assert_eq!(again.append(&mut record(b"next")).unwrap(), 11);
    }

    #[test]
    fn reused_segments_and_a_torn_record_end_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        let big = vec![1u8; 400 * 1024];
        for _ in 0..6 {
            wal.append(&mut record(&big)).unwrap();
        }
        wal.checkpointed(6);
        // Reused from the start: stale records of the first use follow the new ones.
        for _ in 0..3 {
            wal.append(&mut record(b"fresh")).unwrap();
        }
        assert_eq!(
            wal.segments.len(),
            3,
            "the checkpointed segments were used again"
        );
        let (segment, position) = (wal.current, wal.position);
        drop(wal);
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            replayed(&mut again, 6),
            vec![
                (7, b"fresh".to_vec()),
                (8, b"fresh".to_vec()),
                (9, b"fresh".to_vec())
            ]
        );
        // A record torn by a crash (only its header written) is not part of the log.
        let mut torn = record(b"torn record");
        torn[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        torn[4..8].copy_from_slice(&11u32.to_le_bytes());
        torn[8..16].copy_from_slice(&10u64.to_le_bytes());
        again.segments[segment]
            .file
            .write_all_at(&torn[..HEADER_BYTES + 3], position)
            .unwrap();
        drop(again);
        let mut third = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(replayed(&mut third, 6).len(), 3);
        assert_eq!(third.append(&mut record(b"after")).unwrap(), 10);
        drop(third);
        let mut fourth = Wal::open(dir.path(), 1 << 20).unwrap();
        let lsns: Vec<u64> = replayed(&mut fourth, 6)
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(lsns, [7, 8, 9, 10]);
    }

    #[test]
    fn a_record_taken_back_is_not_replayed_and_the_next_one_takes_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        wal.append(&mut record(b"one")).unwrap();
        assert_eq!(wal.append(&mut record(b"refused")).unwrap(), 2);
        wal.retract_last().unwrap();
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(replayed(&mut again, 0), vec![(1, b"one".to_vec())]);
        assert_eq!(wal.append(&mut record(b"two")).unwrap(), 2);
        let mut third = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            replayed(&mut third, 0),
            vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
        );
    }

    /// A write of `lsn` that reached the file whole but whose fdatasync failed, as `append`
    /// leaves it; returns its segment.
    fn leave_failed_write(wal: &mut Wal, lsn: u64) -> usize {
        let (segment, position) = (wal.current, wal.position);
        let failed = valid_record(lsn, wal.segments[segment].salt, b"refused");
        wal.segments[segment]
            .file
            .write_all_at(&failed, position)
            .unwrap();
        wal.failed_at = Some((segment, position));
        segment
    }

    #[test]
    fn a_failed_write_left_behind_is_erased_before_its_lsn_is_written_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        wal.append(&mut record(&vec![1u8; 900 << 10])).unwrap();
        // The writer answered "refused" and will write LSN 2 again.
        let segment = leave_failed_write(&mut wal, 2);
        // The next commit is too large for what is left of the segment: LSN 2 goes elsewhere.
        let big = vec![2u8; 200 << 10];
        assert_eq!(wal.append(&mut record(&big)).unwrap(), 2);
        assert_ne!(wal.current, segment);
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        let got = replayed(&mut again, 0);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], (2, big));
    }

    #[test]
    fn a_refused_record_is_not_replayed_by_the_writer_that_refused_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        wal.append(&mut record(b"one")).unwrap();
        leave_failed_write(&mut wal, 2);
        // The writer opens the file again (after a failed checkpoint) and replays its log.
        assert_eq!(replayed(&mut wal, 0), vec![(1, b"one".to_vec())]);
        assert_eq!(wal.append(&mut record(b"two")).unwrap(), 2);
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            replayed(&mut again, 0),
            vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
        );
    }

    #[test]
    fn bytes_left_from_a_segments_earlier_use_cannot_pass_for_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        // A producer's event holding, at offset 64 of this segment, what looks like the
        // record that will follow LSN 2 once the segment is used again, with a correct
        // checksum, salted as this use is.
        let forged = valid_record(3, wal.segments[0].salt, b"forged");
        let mut payload = vec![0u8; 40];
        payload.extend_from_slice(&forged);
        wal.append(&mut record(&payload)).unwrap();
        wal.checkpointed(1);
        // The segment is used again from its start; its first record ends at offset 64.
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        assert!(replayed(&mut again, 1).is_empty());
        again.append(&mut record(&[0u8; 40])).unwrap();
        assert_eq!(again.position, 64);
        drop(again);
        let mut third = Wal::open(dir.path(), 1 << 20).unwrap();
        let lsns: Vec<u64> = replayed(&mut third, 1)
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(
            lsns,
            [2],
            "only the real record; the forged LSN 3 is another use's"
        );
    }

    #[test]
    fn deleting_spare_segments_keeps_the_last_record_retractable() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        let big = vec![3u8; 700 << 10];
        for _ in 0..5 {
            wal.append(&mut record(&big)).unwrap();
        }
        // Five segments, the last one current; checkpointing deletes two of the four free.
        assert_eq!(wal.segments.len(), 5);
        wal.checkpointed(4);
        assert_eq!(wal.segments.len(), 3);
        assert_eq!(wal.segments[wal.current].last_lsn, 5);
        wal.retract_last().unwrap();
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        assert!(replayed(&mut again, 4).is_empty(), "LSN 5 was taken back");
    }

    #[test]
    fn a_record_larger_than_a_segment_gets_its_own_and_it_is_deleted_once_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 1 << 20).unwrap();
        let huge = vec![9u8; 3 << 20];
        wal.append(&mut record(&huge)).unwrap();
        let more = vec![8u8; 600 << 10];
        wal.append(&mut record(&more)).unwrap();
        // No room left in the oversized segment: on to the first one again.
        wal.append(&mut record(&more)).unwrap();
        let mut again = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(replayed(&mut again, 0).len(), 3);
        wal.checkpointed(3);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, wal.segments.len());
        assert!(wal.segments.iter().all(|s| s.len <= 1 << 20));
    }
}
