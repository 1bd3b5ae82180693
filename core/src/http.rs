//! The HTTP protocol binding (bindings/http-protocol-binding.md): binary, structured and
//! batched content modes, both ways.
//!
//! Header values are percent-encoded strictly (space, `"`, `%` and everything outside
//! U+0021–U+007E) and decoded leniently (double-quoted strings unescaped first, lower-case hex
//! and needless escapes accepted), but an escape that decodes to invalid UTF-8 is an error.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::error::EventError;
use crate::event::{CloudEvent, Data, ExtValue, SpecVersion};
use crate::json;

/// Media type of a structured-mode JSON event.
pub const STRUCTURED_JSON: &str = "application/cloudevents+json";
/// Media type of a JSON batch.
pub const BATCH_JSON: &str = "application/cloudevents-batch+json";

/// The content mode of an HTTP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in `ce-` headers, data in the body.
    Binary,
    /// One event in the body, in an event format.
    Structured,
    /// Several events in the body, in a batch format.
    Batch,
}

/// Finds the content mode from `Content-Type`, case-insensitively. A `cloudevents` media type
/// in a format other than JSON is [`EventError::UnsupportedFormat`].
pub fn detect_mode(headers: &HeaderMap) -> Result<Mode, EventError> {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return Ok(Mode::Binary);
    };
    let Ok(ct) = ct.to_str() else {
        return Ok(Mode::Binary);
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if let Some(format) = essence.strip_prefix("application/cloudevents-batch") {
        return match format {
            "+json" => Ok(Mode::Batch),
            _ => Err(EventError::UnsupportedFormat(essence)),
        };
    }
    if let Some(format) = essence.strip_prefix("application/cloudevents") {
        return match format {
            "+json" => Ok(Mode::Structured),
            _ => Err(EventError::UnsupportedFormat(essence)),
        };
    }
    Ok(Mode::Binary)
}

/// Decodes the events of an HTTP request (or response) in whichever mode it uses.
pub fn decode(headers: &HeaderMap, body: Bytes) -> Result<(Mode, Vec<CloudEvent>), EventError> {
    let mode = detect_mode(headers)?;
    let events = match mode {
        Mode::Binary => vec![decode_binary(headers, body)?],
        Mode::Structured => vec![json::decode_event(&body)?],
        Mode::Batch => json::decode_batch(&body)?,
    };
    Ok((mode, events))
}

/// Percent-encodes an attribute value for a header, as the binding requires.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (0x21..=0x7E).contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
    out
}

/// Decodes a header value: unquotes an RFC 7230 quoted string, then one round of
/// percent-decoding; the result must be UTF-8.
pub fn decode_header_value(raw: &[u8]) -> Result<String, String> {
    let unquoted: Vec<u8>;
    let bytes = if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
        let mut out = Vec::with_capacity(raw.len());
        let mut iter = raw[1..raw.len() - 1].iter();
        while let Some(&b) = iter.next() {
            if b == b'\\' {
                match iter.next() {
                    Some(&escaped) => out.push(escaped),
                    None => return Err("ends a quoted string with a lone backslash".into()),
                }
            } else {
                out.push(b);
            }
        }
        unquoted = out;
        &unquoted[..]
    } else {
        raw
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    // Two hex digits make a value below 256.
                    out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                    i += 3;
                    continue;
                }
                _ => return Err("has a `%` that is not followed by two hex digits".into()),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "is not valid UTF-8 after percent-decoding".to_owned())
}

/// The one value of header `name`, if present; a header given twice is refused.
fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, EventError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        let attr = name.as_str().strip_prefix("ce-").unwrap_or(name.as_str());
        return Err(EventError::DuplicateAttribute(attr.to_owned()));
    }
    Ok(Some(first))
}

/// The percent-decoded text of `ce-` header `name`, if present.
fn header_text(headers: &HeaderMap, name: &HeaderName) -> Result<Option<String>, EventError> {
    let Some(value) = single_header(headers, name)? else {
        return Ok(None);
    };
    decode_header_value(value.as_bytes())
        .map(Some)
        .map_err(|rule| EventError::InvalidHeader {
            header: name.as_str().to_owned(),
            rule,
        })
}

/// Content-Type is an HTTP header with its own syntax (RFC 7231), not one of the `ce-`
/// metadata headers that are percent-encoded: it is taken as it is.
fn content_type_header(headers: &HeaderMap) -> Result<Option<String>, EventError> {
    single_header(headers, &CONTENT_TYPE)?
        .map(|v| {
            std::str::from_utf8(v.as_bytes())
                .map(str::to_owned)
                .map_err(|_| EventError::InvalidHeader {
                    header: CONTENT_TYPE.as_str().to_owned(),
                    rule: "is not valid UTF-8".to_owned(),
                })
        })
        .transpose()
}

/// Decodes a binary-mode message: attributes from `ce-` headers, `datacontenttype` from
/// `Content-Type`, data from the body.
pub fn decode_binary(headers: &HeaderMap, body: Bytes) -> Result<CloudEvent, EventError> {
    let content_type = content_type_header(headers)?;
    let spec_name = HeaderName::from_static("ce-specversion");
    let Some(spec) = header_text(headers, &spec_name)? else {
        return Err(EventError::NotACloudEvent);
    };
    let specversion = SpecVersion::parse(&spec)?;
    let mut event = CloudEvent {
        specversion,
        id: String::new(),
        source: String::new(),
        ty: String::new(),
        datacontenttype: content_type,
        dataschema: None,
        subject: None,
        time: None,
        datacontentencoding: None,
        extensions: Default::default(),
        data: if body.is_empty() {
            Data::Absent
        } else {
            Data::Binary(body)
        },
    };
    let (mut id, mut source, mut ty) = (None, None, None);
    for name in headers.keys() {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = header_text(headers, name)?;
        match attr {
            "specversion" => {}
            "id" => id = value,
            "source" => source = value,
            "type" => ty = value,
            "subject" => event.subject = value,
            "time" => event.time = value,
            "dataschema" if specversion == SpecVersion::V10 => event.dataschema = value,
            "schemaurl" if specversion == SpecVersion::V03 => event.dataschema = value,
            "datacontentencoding" if specversion == SpecVersion::V03 => {
                event.datacontentencoding = value;
            }
            "datacontenttype" => {
                return Err(EventError::invalid(
                    "datacontenttype",
                    "is carried in the Content-Type header in binary mode, not in ce-datacontenttype",
                ));
            }
            ext => {
                crate::validate::extension_name(ext)?;
                if let Some(value) = value {
                    event
                        .extensions
                        .insert(ext.to_owned(), ExtValue::String(value));
                }
            }
        }
    }
    event.id = id.ok_or(EventError::MissingAttribute("id"))?;
    event.source = source.ok_or(EventError::MissingAttribute("source"))?;
    event.ty = ty.ok_or(EventError::MissingAttribute("type"))?;
    event.validate()?;
    Ok(event)
}

fn header(value: &str) -> HeaderValue {
    // A percent-encoded value is printable ASCII, always a valid header value.
    HeaderValue::from_str(&percent_encode(value)).unwrap_or(HeaderValue::from_static(""))
}

fn insert_ce(headers: &mut HeaderMap, name: &str, value: &str) {
    if let Ok(name) = HeaderName::from_bytes(format!("ce-{name}").as_bytes()) {
        headers.insert(name, header(value));
    }
}

/// Encodes an event in binary mode.
pub fn encode_binary(event: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(8 + event.extensions.len());
    insert_ce(&mut headers, "specversion", event.specversion.as_str());
    insert_ce(&mut headers, "id", &event.id);
    insert_ce(&mut headers, "source", &event.source);
    insert_ce(&mut headers, "type", &event.ty);
    match (&event.datacontenttype, &event.data) {
        (Some(ct), _) => {
            // Written as it is (not percent-encoded): it is a media type, not a `ce-` header.
            // A valid `datacontenttype` has no control characters, so this does not fail.
            let value = HeaderValue::from_str(ct).unwrap_or_else(|_| header(ct));
            headers.insert(CONTENT_TYPE, value);
        }
        (None, Data::Json(_)) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        (None, _) => {}
    }
    if let Some(v) = &event.dataschema {
        insert_ce(&mut headers, event.dataschema_name(), v);
    }
    if let Some(v) = &event.subject {
        insert_ce(&mut headers, "subject", v);
    }
    if let Some(v) = &event.time {
        insert_ce(&mut headers, "time", v);
    }
    if let Some(v) = &event.datacontentencoding {
        insert_ce(&mut headers, "datacontentencoding", v);
    }
    for (name, value) in &event.extensions {
        insert_ce(&mut headers, name, &value.to_canonical_string());
    }
    (headers, event.data_bytes().unwrap_or_default())
}

/// Encodes an event in structured mode (JSON format).
pub fn encode_structured(event: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(STRUCTURED_JSON));
    (headers, Bytes::from(json::encode_event(event)))
}

/// Encodes events in batched mode (JSON batch format).
pub fn encode_batch(events: &[CloudEvent]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::with_capacity(1);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BATCH_JSON));
    (headers, Bytes::from(json::encode_batch(events)))
}
