//! The storage encoding: a compact, exact binary form of a [`CloudEvent`].
//!
//! Unlike the wire formats it keeps everything the model distinguishes (extension types, `data`
//! vs `data_base64`, `data: null` vs absent), so what the broker stores is what it received.
//! Layout (version 1), all integers little-endian, strings as `u32` length + UTF-8 bytes:
//!
//! ```text
//! u8 format version (1) | u8 specversion (0 = 0.3, 1 = 1.0) | str id | str source | str type
//! 5 × optional str: datacontenttype, dataschema, subject, time, datacontentencoding
//!     (u8 0 = absent, 1 = present followed by str)
//! u16 extension count, then per extension: str name | u8 type tag | value
//!     (0 string: str, 1 integer: i32, 2 boolean: u8, 3 binary: bytes, 4 uri: str,
//!      5 uri-ref: str, 6 timestamp: str)
//! u8 data tag: 0 absent | 1 JSON text: str | 2 bytes: u32 length + bytes
//! ```

use bytes::Bytes;

use crate::event::{CloudEvent, Data, ExtValue, SpecVersion};

const FORMAT_VERSION: u8 = 1;

/// A stored record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt stored event: {0}")]
pub struct CorruptRecord(&'static str);

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Events are bounded by the body limit, far below 4 GiB.
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, v: Option<&String>) {
    match v {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
    }
}

/// Appends the storage encoding of `event` to `out`.
pub fn encode_into(event: &CloudEvent, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    out.push(match event.specversion {
        SpecVersion::V03 => 0,
        SpecVersion::V10 => 1,
    });
    put_bytes(out, event.id.as_bytes());
    put_bytes(out, event.source.as_bytes());
    put_bytes(out, event.ty.as_bytes());
    put_opt(out, event.datacontenttype.as_ref());
    put_opt(out, event.dataschema.as_ref());
    put_opt(out, event.subject.as_ref());
    put_opt(out, event.time.as_ref());
    put_opt(out, event.datacontentencoding.as_ref());
    let count = u16::try_from(event.extensions.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in event.extensions.iter().take(usize::from(count)) {
        put_bytes(out, name.as_bytes());
        match value {
            ExtValue::String(s) => {
                out.push(0);
                put_bytes(out, s.as_bytes());
            }
            ExtValue::Integer(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            ExtValue::Boolean(b) => {
                out.push(2);
                out.push(u8::from(*b));
            }
            ExtValue::Binary(b) => {
                out.push(3);
                put_bytes(out, b);
            }
            ExtValue::Uri(s) => {
                out.push(4);
                put_bytes(out, s.as_bytes());
            }
            ExtValue::UriRef(s) => {
                out.push(5);
                put_bytes(out, s.as_bytes());
            }
            ExtValue::Timestamp(s) => {
                out.push(6);
                put_bytes(out, s.as_bytes());
            }
        }
    }
    match &event.data {
        Data::Absent => out.push(0),
        Data::Json(raw) => {
            out.push(1);
            put_bytes(out, raw.as_bytes());
        }
        Data::Binary(b) => {
            out.push(2);
            put_bytes(out, b);
        }
    }
}

/// The storage encoding of `event`.
pub fn encode(event: &CloudEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + event.id.len() + event.source.len() + event.ty.len());
    encode_into(event, &mut out);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.buf.len() < n {
            return Err(CorruptRecord("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CorruptRecord> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CorruptRecord> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CorruptRecord> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, CorruptRecord> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| CorruptRecord("a string is not UTF-8"))
    }
    fn opt(&mut self) -> Result<Option<String>, CorruptRecord> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(CorruptRecord("bad optional tag")),
        }
    }
}

/// Decodes a record written by [`encode`].
pub fn decode(record: &[u8]) -> Result<CloudEvent, CorruptRecord> {
    let mut r = Reader { buf: record };
    if r.u8()? != FORMAT_VERSION {
        return Err(CorruptRecord("unknown format version"));
    }
    let specversion = match r.u8()? {
        0 => SpecVersion::V03,
        1 => SpecVersion::V10,
        _ => return Err(CorruptRecord("bad specversion tag")),
    };
    let id = r.string()?;
    let source = r.string()?;
    let ty = r.string()?;
    let datacontenttype = r.opt()?;
    let dataschema = r.opt()?;
    let subject = r.opt()?;
    let time = r.opt()?;
    let datacontentencoding = r.opt()?;
    let mut extensions = std::collections::BTreeMap::new();
    for _ in 0..r.u16()? {
        let name = r.string()?;
        let value = match r.u8()? {
            0 => ExtValue::String(r.string()?),
            1 => ExtValue::Integer(r.u32()?.cast_signed()),
            2 => ExtValue::Boolean(r.u8()? != 0),
            3 => ExtValue::Binary(r.bytes()?.to_vec()),
            4 => ExtValue::Uri(r.string()?),
            5 => ExtValue::UriRef(r.string()?),
            6 => ExtValue::Timestamp(r.string()?),
            _ => return Err(CorruptRecord("bad extension type tag")),
        };
        extensions.insert(name, value);
    }
    let data = match r.u8()? {
        0 => Data::Absent,
        1 => Data::Json(r.string()?.into_boxed_str()),
        2 => Data::Binary(Bytes::copy_from_slice(r.bytes()?)),
        _ => return Err(CorruptRecord("bad data tag")),
    };
    if !r.buf.is_empty() {
        return Err(CorruptRecord("trailing bytes"));
    }
    Ok(CloudEvent {
        specversion,
        id,
        source,
        ty,
        datacontenttype,
        dataschema,
        subject,
        time,
        datacontentencoding,
        extensions,
        data,
    })
}
