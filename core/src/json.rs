//! The JSON event format (formats/json-format.md), single events and batches, both ways.
//!
//! Decoding keeps `data` as its raw JSON text and `data_base64` as the decoded bytes, so an
//! event passes through the broker unchanged. Duplicate members are refused.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::EventError;
use crate::event::{CloudEvent, Data, ExtValue, SpecVersion};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Whether a `datacontenttype` says the data is JSON. An absent content type counts as JSON,
/// as the JSON format implies `application/json` for it.
pub fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    // The format's rule: the media type, stripped of parameters, is `*/json` or `*/*+json`.
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((_, subtype)) = essence.split_once('/') else {
        return false;
    };
    subtype.eq_ignore_ascii_case("json")
        || subtype
            .get(subtype.len().saturating_sub(5)..)
            .is_some_and(|s| s.eq_ignore_ascii_case("+json"))
}

/// Whether binary data can be written as the JSON format's `data` member: only when a
/// `datacontenttype` is present and says JSON (with none, "no assumptions can be made as to the
/// format of the data", json-format.md 3.1.1), and the bytes are UTF-8 JSON text.
fn binary_is_json(content_type: Option<&str>, bytes: &[u8]) -> bool {
    content_type.is_some()
        && is_json_media_type(content_type)
        && std::str::from_utf8(bytes)
            .is_ok_and(|text| serde_json::from_str::<de::IgnoredAny>(text).is_ok())
}

fn is_text_media_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.trim_start()
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("text/"))
    })
}

/// The members of a JSON object in document order, values kept raw (duplicates are kept here
/// and refused by [`event_from_members`], so the error can name the attribute).
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(12);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn malformed(e: serde_json::Error) -> EventError {
    EventError::MalformedJson(e.to_string())
}

/// Decodes one event in the JSON format.
pub fn decode_event(body: &[u8]) -> Result<CloudEvent, EventError> {
    let members: Members<'_> = serde_json::from_slice(body).map_err(malformed)?;
    event_from_members(members)
}

/// Decodes a JSON batch (an array of events). One invalid event refuses the whole batch, and
/// the error says which.
pub fn decode_batch(body: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        EventError::MalformedJson(format!("a batch must be a JSON array of events: {e}"))
    })?;
    let mut first_version = None;
    items
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            serde_json::from_str::<Members<'_>>(raw.get())
                .map_err(malformed)
                .and_then(event_from_members)
                .and_then(|event| {
                    // spec.md, Message: "all CloudEvents within the same batch MUST have the
                    // same value for the `specversion` attribute".
                    let first = *first_version.get_or_insert(event.specversion);
                    if event.specversion == first {
                        Ok(event)
                    } else {
                        Err(EventError::invalid(
                            "specversion",
                            format!(
                                "must be the same for every event of a batch: `{}`, as in the first event",
                                first.as_str()
                            ),
                        ))
                    }
                })
                .map_err(|e| EventError::InBatch {
                    index,
                    source: Box::new(e),
                })
        })
        .collect()
}

/// A string-typed attribute; `null` means absent.
fn string_member(name: &str, raw: &RawValue) -> Result<Option<String>, EventError> {
    serde_json::from_str::<Option<String>>(raw.get())
        .map_err(|_| EventError::invalid(name, "must be a JSON string"))
}

fn extension_member(name: &str, raw: &RawValue) -> Result<Option<ExtValue>, EventError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => Ok(string_member(name, raw)?.map(ExtValue::String)),
        Some(b't') => Ok(Some(ExtValue::Boolean(true))),
        Some(b'f') => Ok(Some(ExtValue::Boolean(false))),
        Some(b'n') => Ok(None),
        Some(b'-' | b'0'..=b'9') => text
            .parse::<i32>()
            .map(|i| Some(ExtValue::Integer(i)))
            .map_err(|_| {
                EventError::invalid(
                    name,
                    format!("must be an integer from -2147483648 to 2147483647, not {text}"),
                )
            }),
        _ => Err(EventError::invalid(
            name,
            "must be a JSON string, integer or boolean",
        )),
    }
}

/// The event's `specversion`, once no attribute is given twice.
fn specversion_of(members: &Members<'_>) -> Result<SpecVersion, EventError> {
    let members = &members.0;
    let mut seen = std::collections::HashSet::with_capacity(members.len());
    if let Some((dup, _)) = members.iter().find(|(k, _)| !seen.insert(k.as_ref())) {
        return Err(EventError::DuplicateAttribute(dup.to_string()));
    }
    let spec_raw = members
        .iter()
        .find(|(k, _)| k == "specversion")
        .map(|(_, v)| *v)
        .ok_or(EventError::MissingAttribute("specversion"))?;
    SpecVersion::parse(
        &string_member("specversion", spec_raw)?
            .ok_or(EventError::MissingAttribute("specversion"))?,
    )
}

fn event_from_members(members: Members<'_>) -> Result<CloudEvent, EventError> {
    let specversion = specversion_of(&members)?;
    let members = members.0;
    let mut id = None;
    let mut source = None;
    let mut ty = None;
    let mut event = CloudEvent {
        specversion,
        id: String::new(),
        source: String::new(),
        ty: String::new(),
        datacontenttype: None,
        dataschema: None,
        subject: None,
        time: None,
        datacontentencoding: None,
        extensions: Default::default(),
        data: Data::Absent,
    };
    let mut data_base64 = None;
    for (name, raw) in members {
        let name = name.as_ref();
        match name {
            "specversion" => {}
            "id" => id = string_member(name, raw)?,
            "source" => source = string_member(name, raw)?,
            "type" => ty = string_member(name, raw)?,
            "datacontenttype" => event.datacontenttype = string_member(name, raw)?,
            "subject" => event.subject = string_member(name, raw)?,
            "time" => event.time = string_member(name, raw)?,
            "dataschema" if specversion == SpecVersion::V10 => {
                event.dataschema = string_member(name, raw)?;
            }
            "schemaurl" if specversion == SpecVersion::V03 => {
                event.dataschema = string_member(name, raw)?;
            }
            "datacontentencoding" if specversion == SpecVersion::V03 => {
                event.datacontentencoding = string_member(name, raw)?;
            }
            "data" => event.data = Data::Json(raw.get().into()),
            "data_base64" if specversion == SpecVersion::V10 => data_base64 = Some(raw),
            _ => {
                crate::validate::extension_name(name)?;
                if let Some(value) = extension_member(name, raw)? {
                    event.extensions.insert(name.to_owned(), value);
                }
            }
        }
    }
    if let Some(raw) = data_base64 {
        if event.data != Data::Absent {
            return Err(EventError::invalid(
                "data_base64",
                "must not be given together with `data`",
            ));
        }
        if let Some(text) = string_member("data_base64", raw)? {
            let bytes = B64.decode(text.trim()).map_err(|e| {
                EventError::invalid("data_base64", format!("is not valid base64: {e}"))
            })?;
            event.data = Data::Binary(Bytes::from(bytes));
        }
    }
    event.id = id.ok_or(EventError::MissingAttribute("id"))?;
    event.source = source.ok_or(EventError::MissingAttribute("source"))?;
    event.ty = ty.ok_or(EventError::MissingAttribute("type"))?;
    event.validate()?;
    Ok(event)
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_member(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b',');
    push_str(out, name);
    out.push(b':');
    push_str(out, value);
}

/// Appends one event in the JSON format to `out`.
pub fn encode_event_into(event: &CloudEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"specversion\":");
    push_str(out, event.specversion.as_str());
    push_member(out, "id", &event.id);
    push_member(out, "source", &event.source);
    push_member(out, "type", &event.ty);
    if let Some(v) = &event.datacontenttype {
        push_member(out, "datacontenttype", v);
    }
    if let Some(v) = &event.dataschema {
        push_member(out, event.dataschema_name(), v);
    }
    if let Some(v) = &event.subject {
        push_member(out, "subject", v);
    }
    if let Some(v) = &event.time {
        push_member(out, "time", v);
    }
    let mut encoding = event.datacontentencoding.as_deref();
    let binary_as_base64_string = event.specversion == SpecVersion::V03
        && matches!(&event.data, Data::Binary(b) if !json_or_text(event, b));
    if binary_as_base64_string && encoding.is_none() {
        encoding = Some("base64");
    }
    if let Some(v) = encoding {
        push_member(out, "datacontentencoding", v);
    }
    for (name, value) in &event.extensions {
        out.push(b',');
        push_str(out, name);
        out.push(b':');
        match value {
            ExtValue::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
            ExtValue::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            other => push_str(out, &other.to_canonical_string()),
        }
    }
    match &event.data {
        Data::Absent => {}
        Data::Json(raw) => {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(raw.as_bytes());
        }
        Data::Binary(bytes) => {
            let ct = event.datacontenttype.as_deref();
            if binary_is_json(ct, bytes) {
                out.extend_from_slice(b",\"data\":");
                out.extend_from_slice(bytes);
            } else if let (true, Ok(text)) = (is_text_media_type(ct), std::str::from_utf8(bytes)) {
                out.extend_from_slice(b",\"data\":");
                push_str(out, text);
            } else if event.specversion == SpecVersion::V03 {
                out.extend_from_slice(b",\"data\":");
                push_str(out, &B64.encode(bytes));
            } else {
                out.extend_from_slice(b",\"data_base64\":");
                push_str(out, &B64.encode(bytes));
            }
        }
    }
    out.push(b'}');
}

fn json_or_text(event: &CloudEvent, bytes: &[u8]) -> bool {
    let ct = event.datacontenttype.as_deref();
    binary_is_json(ct, bytes) || (is_text_media_type(ct) && std::str::from_utf8(bytes).is_ok())
}

/// One event in the JSON format.
pub fn encode_event(event: &CloudEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_event_into(event, &mut out);
    out
}

/// Appends one line `{"offset":N,"event":{…}}` and a newline: the stored-event line of
/// `switchyard events` and `switchyard tail`. Raw `data` may be pretty-printed; a line break
/// in JSON text outside a string is whitespace (inside strings it is always escaped), so it
/// becomes a space and the event stays on its line with its meaning.
pub fn encode_record_line(offset: u64, event: &CloudEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"offset\":");
    out.extend_from_slice(offset.to_string().as_bytes());
    out.extend_from_slice(b",\"event\":");
    let start = out.len();
    encode_event_into(event, out);
    for b in &mut out[start..] {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    out.extend_from_slice(b"}\n");
}

/// A JSON batch of events.
pub fn encode_batch(events: &[CloudEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * events.len() + 2);
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        encode_event_into(event, &mut out);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_stay_on_one_line_with_the_same_meaning() {
        let mut e = CloudEvent::new("1", "/s", "t").expect("valid");
        e.data = Data::Json("{\n  \"a\": \"x\\ny\"\n}".into());
        let mut out = Vec::new();
        encode_record_line(7, &e, &mut out);
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["event"]["data"]["a"], "x\ny");
    }
}
