//! What one WAL record says: the changes of one group commit, enough to make them again on a
//! store that lost them (events at their offsets, side-table changes, cursor positions).
//!
//! ```text
//! version u8 (1) | arrival ms u64
//! appends u32, each: broker str | first offset u64 | events u32, each: bytes
//! ops u32, each: 0 table u8 key value (put) | 1 table u8 key (delete) | 2 broker consumer (forget cursor)
//! cursors u32, each: key str | offset u64
//! ```
//!
//! Integers little-endian; `str` and `bytes` are a u32 length and the bytes.

use crate::log::{LogError, Table, WriteOp};

const VERSION: u8 = 1;

/// Events appended to one broker from `first` on.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RedoAppend {
    pub(super) broker: String,
    pub(super) first: u64,
    pub(super) events: Vec<Vec<u8>>,
}

/// One commit's changes, decoded.
#[derive(Debug)]
pub(super) struct Redo {
    pub(super) arrival_ms: u64,
    pub(super) appends: Vec<RedoAppend>,
    pub(super) ops: Vec<WriteOp>,
    pub(super) cursors: Vec<(String, u64)>,
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Every length here is bounded by the commit's size, which the log refuses at 4 GiB.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

fn table_code(t: Table) -> u8 {
    match t {
        Table::Retries => 0,
        Table::DeadLetters => 1,
        Table::EventTypes => 2,
        Table::SourceState => 3,
        Table::Audit => 4,
    }
}

fn table_of(code: u8) -> Option<Table> {
    Some(match code {
        0 => Table::Retries,
        1 => Table::DeadLetters,
        2 => Table::EventTypes,
        3 => Table::SourceState,
        4 => Table::Audit,
        _ => return None,
    })
}

/// Appends the encoding of one commit to `out`.
pub(super) fn encode<'a>(
    out: &mut Vec<u8>,
    arrival_ms: u64,
    appends: &[(&str, u64, &[Vec<u8>])],
    ops: impl Iterator<Item = &'a WriteOp> + Clone,
    cursors: &[(String, u64)],
) {
    out.push(VERSION);
    out.extend_from_slice(&arrival_ms.to_le_bytes());
    put_u32(out, appends.len());
    for (broker, first, events) in appends {
        put_bytes(out, broker.as_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        put_u32(out, events.len());
        for e in *events {
            put_bytes(out, e);
        }
    }
    put_u32(out, ops.clone().count());
    for op in ops {
        match op {
            WriteOp::Put { table, key, value } => {
                out.push(0);
                out.push(table_code(*table));
                put_bytes(out, key);
                put_bytes(out, value);
            }
            WriteOp::Delete { table, key } => {
                out.push(1);
                out.push(table_code(*table));
                put_bytes(out, key);
            }
            WriteOp::ForgetCursor { broker, consumer } => {
                out.push(2);
                put_bytes(out, broker.as_bytes());
                put_bytes(out, consumer.as_bytes());
            }
        }
    }
    put_u32(out, cursors.len());
    for (key, offset) in cursors {
        put_bytes(out, key.as_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
}

/// Reads a record's payload; what does not parse is a damaged log, said as such.
struct Reader<'a>(&'a [u8]);

fn damaged() -> LogError {
    LogError::Storage("a WAL record does not parse: the log is damaged".into())
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(damaged)?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, LogError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, LogError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b) as usize)
    }

    fn u64(&mut self) -> Result<u64, LogError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, LogError> {
        let n = self.u32()?;
        Ok(self.take(n)?.to_vec())
    }

    fn string(&mut self) -> Result<String, LogError> {
        String::from_utf8(self.bytes()?).map_err(|_| damaged())
    }

    fn table(&mut self) -> Result<Table, LogError> {
        table_of(self.u8()?).ok_or_else(damaged)
    }

    /// A count of items each at least `min_bytes` long, checked against what is left (so a
    /// damaged count cannot ask for a huge allocation).
    fn count(&mut self, min_bytes: usize) -> Result<usize, LogError> {
        let n = self.u32()?;
        if n.saturating_mul(min_bytes) > self.0.len() {
            return Err(damaged());
        }
        Ok(n)
    }
}

/// Decodes one record's payload.
pub(super) fn decode(payload: &[u8]) -> Result<Redo, LogError> {
    let mut r = Reader(payload);
    if r.u8()? != VERSION {
        return Err(LogError::Storage(
            "a WAL record has a format this version does not know".into(),
        ));
    }
    let arrival_ms = r.u64()?;
    let n_appends = r.count(16)?;
    let mut appends = Vec::with_capacity(n_appends);
    for _ in 0..n_appends {
        let broker = r.string()?;
        let first = r.u64()?;
        let n = r.count(4)?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(r.bytes()?);
        }
        appends.push(RedoAppend {
            broker,
            first,
            events,
        });
    }
    let n_ops = r.count(6)?;
    let mut ops = Vec::with_capacity(n_ops);
    for _ in 0..n_ops {
        ops.push(match r.u8()? {
            0 => WriteOp::Put {
                table: r.table()?,
                key: r.bytes()?,
                value: r.bytes()?,
            },
            1 => WriteOp::Delete {
                table: r.table()?,
                key: r.bytes()?,
            },
            2 => WriteOp::ForgetCursor {
                broker: r.string()?,
                consumer: r.string()?,
            },
            _ => return Err(damaged()),
        });
    }
    let n_cursors = r.count(12)?;
    let mut cursors = Vec::with_capacity(n_cursors);
    for _ in 0..n_cursors {
        cursors.push((r.string()?, r.u64()?));
    }
    if !r.0.is_empty() {
        return Err(damaged());
    }
    Ok(Redo {
        arrival_ms,
        appends,
        ops,
        cursors,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_commit_comes_back_as_it_was_written() {
        let events = vec![b"one".to_vec(), Vec::new(), vec![0xff; 300]];
        let other = vec![b"x".to_vec()];
        let ops = [
            WriteOp::Put {
                table: Table::DeadLetters,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            WriteOp::Delete {
                table: Table::Audit,
                key: vec![0, 1],
            },
            WriteOp::ForgetCursor {
                broker: "default/b".into(),
                consumer: "t".into(),
            },
        ];
        let mut out = Vec::new();
        encode(
            &mut out,
            42,
            &[("default/b", 7, &events), ("default/c", 0, &other)],
            ops.iter(),
            &[("default/b#t".into(), 9)],
        );
        let redo = decode(&out).unwrap();
        assert_eq!(redo.arrival_ms, 42);
        assert_eq!(
            redo.appends,
            [
                RedoAppend {
                    broker: "default/b".into(),
                    first: 7,
                    events
                },
                RedoAppend {
                    broker: "default/c".into(),
                    first: 0,
                    events: other
                }
            ]
        );
        assert_eq!(format!("{:?}", redo.ops), format!("{ops:?}"));
        assert_eq!(redo.cursors, [("default/b#t".to_string(), 9)]);
        // Any cut of it is refused, never a panic.
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "cut at {cut}");
        }
    }
}
