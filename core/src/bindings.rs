//! The CloudEvents protocol bindings for streams: Kafka, MQTT and NATS, as pure functions
//! over names, values and bytes, so the client libraries stay in the adapters.
//!
//! - Kafka: a `content-type` header starting with `application/cloudevents` means structured
//!   mode; otherwise `ce_`-prefixed headers carry the attributes (UTF-8, not percent-encoded)
//!   and `content-type` is `datacontenttype`.
//! - MQTT 5: the Content Type property decides the mode the same way; in binary mode user
//!   properties carry the attributes under their own names. MQTT 3.1.1 is structured only.
//! - NATS: the same headers, names and percent-encoding as HTTP, so it goes through
//!   [`crate::http`] (see [`nats_headers_to_http`]).

use bytes::Bytes;

use crate::EventError;
use crate::event::{CloudEvent, Data, ExtValue, SpecVersion};

/// Whether a content type names a CloudEvents event format (`application/cloudevents…`,
/// matched case-insensitively): the mark of structured mode in every binding.
pub fn is_structured(content_type: Option<&str>) -> bool {
    const MEDIA_TYPE: &str = "application/cloudevents";
    content_type.is_some_and(|ct| {
        ct.trim_start()
            .get(..MEDIA_TYPE.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(MEDIA_TYPE))
    })
}

/// Decodes a structured-mode payload. Only the JSON format exists for streams; a batch is not
/// a single message's format.
pub fn decode_structured(
    content_type: Option<&str>,
    payload: &[u8],
) -> Result<CloudEvent, EventError> {
    let ct = content_type.unwrap_or(crate::http::STRUCTURED_JSON);
    let format = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if format != crate::http::STRUCTURED_JSON {
        return Err(EventError::invalid(
            "datacontenttype",
            format!(
                "the event format `{format}` is not supported; use {}",
                crate::http::STRUCTURED_JSON
            ),
        ));
    }
    crate::json::decode_event(payload)
}

/// Builds a binary-mode event from its attributes (names without any prefix, values in their
/// canonical string form), the message's content type and its payload.
///
/// A `datacontenttype` attribute is taken when the message has no content type of its own,
/// and must agree with it otherwise (MQTT senders may give both).
pub fn decode_binary<'a>(
    attributes: impl IntoIterator<Item = (&'a str, String)>,
    content_type: Option<String>,
    payload: Option<Bytes>,
) -> Result<CloudEvent, EventError> {
    let mut attrs: Vec<(&str, String)> = Vec::new();
    for (name, value) in attributes {
        if attrs.iter().any(|(n, _)| *n == name) {
            return Err(EventError::DuplicateAttribute(name.to_owned()));
        }
        attrs.push((name, value));
    }
    let take = |name: &str| {
        attrs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    let Some(spec) = take("specversion") else {
        return Err(EventError::NotACloudEvent);
    };
    let specversion = SpecVersion::parse(&spec)?;
    let datacontenttype = match (content_type, take("datacontenttype")) {
        (Some(ct), Some(attr)) if ct != attr => {
            return Err(EventError::invalid(
                "datacontenttype",
                format!("`{attr}` disagrees with the message's content type `{ct}`"),
            ));
        }
        (Some(ct), _) => Some(ct),
        (None, attr) => attr,
    };
    let mut event = CloudEvent {
        specversion,
        id: take("id").ok_or(EventError::MissingAttribute("id"))?,
        source: take("source").ok_or(EventError::MissingAttribute("source"))?,
        ty: take("type").ok_or(EventError::MissingAttribute("type"))?,
        datacontenttype,
        dataschema: None,
        subject: take("subject"),
        time: take("time"),
        datacontentencoding: None,
        extensions: Default::default(),
        data: match payload {
            Some(p) if !p.is_empty() => Data::Binary(p),
            _ => Data::Absent,
        },
    };
    for (name, value) in attrs {
        match name {
            "specversion" | "id" | "source" | "type" | "datacontenttype" | "subject" | "time" => {}
            "dataschema" if specversion == SpecVersion::V10 => event.dataschema = Some(value),
            "schemaurl" if specversion == SpecVersion::V03 => event.dataschema = Some(value),
            "datacontentencoding" if specversion == SpecVersion::V03 => {
                event.datacontentencoding = Some(value);
            }
            ext => {
                crate::validate::extension_name(ext)?;
                event
                    .extensions
                    .insert(ext.to_owned(), ExtValue::String(value));
            }
        }
    }
    event.validate()?;
    Ok(event)
}

/// The attributes of an event for binary mode, in canonical string form, without
/// `datacontenttype` (carried as the message's content type) and without `skip`.
pub fn binary_attributes(event: &CloudEvent, skip: &[&str]) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "specversion".to_owned(),
            event.specversion.as_str().to_owned(),
        ),
        ("id".to_owned(), event.id.clone()),
        ("source".to_owned(), event.source.clone()),
        ("type".to_owned(), event.ty.clone()),
    ];
    let optional = [
        (event.dataschema_name(), &event.dataschema),
        ("subject", &event.subject),
        ("time", &event.time),
        ("datacontentencoding", &event.datacontentencoding),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            out.push((name.to_owned(), v.clone()));
        }
    }
    for (name, value) in &event.extensions {
        out.push((name.clone(), value.to_canonical_string()));
    }
    out.retain(|(n, _)| !skip.contains(&n.as_str()));
    out
}

/// The Kafka binding's header prefix.
pub const KAFKA_PREFIX: &str = "ce_";

/// Decodes a Kafka record that is a CloudEvent: `Ok(None)` when it is not one (no
/// CloudEvents content type, no `ce_specversion` header). `headers` are (name, value) pairs;
/// a header without a value is `None`.
pub fn decode_kafka<'a>(
    headers: &'a [(&'a str, Option<&'a [u8]>)],
    value: Option<&[u8]>,
) -> Result<Option<CloudEvent>, EventError> {
    let text = |name: &str, v: Option<&[u8]>| -> Result<String, EventError> {
        std::str::from_utf8(v.unwrap_or_default())
            .map(str::to_owned)
            .map_err(|_| EventError::InvalidHeader {
                header: name.to_owned(),
                rule: "is not valid UTF-8".to_owned(),
            })
    };
    let mut content_type = None;
    for (name, v) in headers {
        if name.eq_ignore_ascii_case("content-type") {
            if content_type.is_some() {
                return Err(EventError::DuplicateAttribute("datacontenttype".into()));
            }
            content_type = Some(text(name, *v)?);
        }
    }
    if is_structured(content_type.as_deref()) {
        return decode_structured(content_type.as_deref(), value.unwrap_or_default()).map(Some);
    }
    let mut attrs = Vec::new();
    for (name, v) in headers {
        if let Some(attr) = name.strip_prefix(KAFKA_PREFIX) {
            attrs.push((attr, text(name, *v)?));
        }
    }
    if !attrs.iter().any(|(n, _)| *n == "specversion") {
        return Ok(None);
    }
    decode_binary(attrs, content_type, value.map(Bytes::copy_from_slice)).map(Some)
}

/// A Kafka record for an event: headers, key and value. Binary mode puts the attributes in
/// `ce_` headers and `datacontenttype` in `content-type`; structured mode the JSON format in
/// the value. The key is the `partitionkey` extension, when the event has one.
pub fn encode_kafka(event: &CloudEvent, structured: bool) -> KafkaRecord {
    let key = event.partition_key().map(String::into_bytes);
    if structured {
        return KafkaRecord {
            headers: vec![(
                "content-type".to_owned(),
                crate::http::STRUCTURED_JSON.as_bytes().to_vec(),
            )],
            key,
            value: Some(crate::json::encode_event(event)),
        };
    }
    let mut headers: Vec<(String, Vec<u8>)> = binary_attributes(event, &[])
        .into_iter()
        .map(|(n, v)| (format!("{KAFKA_PREFIX}{n}"), v.into_bytes()))
        .collect();
    if let Some(ct) = &event.datacontenttype {
        headers.push(("content-type".to_owned(), ct.clone().into_bytes()));
    }
    KafkaRecord {
        headers,
        key,
        value: event.data_bytes().map(|b| b.to_vec()),
    }
}

/// What a Kafka producer writes for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Header names and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The record value (`None` for an event without data in binary mode).
    pub value: Option<Vec<u8>>,
}

/// Decodes an MQTT 5 message that is a CloudEvent: structured when the Content Type is a
/// CloudEvents format; binary when the user properties hold `specversion`; `Ok(None)`
/// otherwise. User properties whose names cannot be attribute names are not attributes and
/// are left out.
pub fn decode_mqtt5(
    content_type: Option<&str>,
    user_properties: &[(String, String)],
    payload: &[u8],
) -> Result<Option<CloudEvent>, EventError> {
    if is_structured(content_type) {
        return decode_structured(content_type, payload).map(Some);
    }
    if !user_properties.iter().any(|(n, _)| n == "specversion") {
        return Ok(None);
    }
    let attrs = user_properties
        .iter()
        .filter(|(n, _)| {
            crate::event::CORE_ATTRIBUTES.contains(&n.as_str())
                || crate::validate::extension_name(n).is_ok()
        })
        .map(|(n, v)| (n.as_str(), v.clone()));
    decode_binary(
        attrs,
        content_type.map(str::to_owned),
        Some(Bytes::copy_from_slice(payload)),
    )
    .map(Some)
}

/// Decodes an MQTT 3.1.1 payload: structured mode is the only mode, so a payload is a
/// CloudEvent when it is a JSON object with `specversion`; `Ok(None)` for anything else.
pub fn decode_mqtt311(payload: &[u8]) -> Result<Option<CloudEvent>, EventError> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload) {
        Ok(object) if object.contains_key("specversion") => {
            crate::json::decode_event(payload).map(Some)
        }
        _ => Ok(None),
    }
}

/// NATS headers as HTTP headers, so [`crate::http::decode`] reads the NATS binding: the same
/// `ce-` names (case-insensitive) and percent-encoding, and `Content-Type` deciding the mode.
/// One difference: the NATS binding maps `datacontenttype` to `ce-datacontenttype` like every
/// attribute, where HTTP uses `Content-Type`; it is moved there (and must agree with a
/// `Content-Type` the message also has). Headers whose names or values HTTP cannot carry are
/// left out.
pub fn nats_headers_to_http<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<http::HeaderMap, EventError> {
    let mut out = http::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            out.append(n, v);
        }
    }
    let dct = http::HeaderName::from_static("ce-datacontenttype");
    let given: Vec<http::HeaderValue> = out.get_all(&dct).iter().cloned().collect();
    out.remove(&dct);
    let structured = is_structured(
        out.get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    match given.as_slice() {
        [] => {}
        // In structured mode the attributes are in the payload; headers are not read.
        _ if structured => {}
        [one] => {
            let value = crate::http::decode_header_value(one.as_bytes()).map_err(|rule| {
                EventError::InvalidHeader {
                    header: dct.as_str().to_owned(),
                    rule,
                }
            })?;
            match out.get(http::header::CONTENT_TYPE) {
                Some(ct) if ct.as_bytes() != value.as_bytes() => {
                    return Err(EventError::invalid(
                        "datacontenttype",
                        format!(
                            "ce-datacontenttype `{value}` disagrees with Content-Type `{}`",
                            String::from_utf8_lossy(ct.as_bytes())
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    let v = http::HeaderValue::from_str(&value).map_err(|_| {
                        EventError::invalid("datacontenttype", "is not a valid media type")
                    })?;
                    out.insert(http::header::CONTENT_TYPE, v);
                }
            }
        }
        _ => return Err(EventError::DuplicateAttribute("datacontenttype".into())),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> CloudEvent {
        let mut e = CloudEvent::new("1", "/sensors/room-1", "com.example.reading")
            .unwrap_or_else(|e| panic!("{e}"));
        e.datacontenttype = Some("application/json".into());
        e.subject = Some("rooms/1".into());
        e.time = Some("2026-11-28T10:00:00Z".into());
        e.extensions
            .insert("partitionkey".into(), ExtValue::String("room-1".into()));
        e.extensions.insert("sequence".into(), ExtValue::Integer(7));
        e.data = Data::Json(r#"{"t":21.5}"#.into());
        e
    }

    #[test]
    fn kafka_binary_round_trip() {
        let r = encode_kafka(&event(), false);
        assert_eq!(r.key.as_deref(), Some(b"room-1".as_slice()));
        assert!(r.headers.contains(&("ce_id".into(), b"1".to_vec())));
        assert!(
            r.headers
                .contains(&("content-type".into(), b"application/json".to_vec()))
        );
        assert_eq!(r.value.as_deref(), Some(br#"{"t":21.5}"#.as_slice()));
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), Some(v.as_slice())))
            .collect();
        let back = decode_kafka(&headers, r.value.as_deref())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not an event"));
        assert_eq!(back.id, "1");
        assert_eq!(back.subject.as_deref(), Some("rooms/1"));
        assert_eq!(back.attribute("sequence").as_deref(), Some("7"));
        assert_eq!(back.data_bytes(), event().data_bytes());
    }

    #[test]
    fn kafka_structured_and_not_an_event() {
        let r = encode_kafka(&event(), true);
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), Some(v.as_slice())))
            .collect();
        let back = decode_kafka(&headers, r.value.as_deref())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not an event"));
        assert_eq!(back.data, Data::Json(r#"{"t":21.5}"#.into()));
        assert_eq!(
            decode_kafka(&[("content-type", Some(b"text/plain"))], Some(b"hi")),
            Ok(None)
        );
        assert_eq!(decode_kafka(&[], None), Ok(None));
        // ce_ headers without a required attribute, or a format we do not read: errors.
        assert!(
            decode_kafka(
                &[("ce_specversion", Some(b"1.0")), ("ce_id", Some(b"1"))],
                None
            )
            .is_err()
        );
        assert!(
            decode_kafka(
                &[("content-type", Some(b"application/cloudevents+avro"))],
                Some(b"x")
            )
            .is_err()
        );
        assert!(
            decode_kafka(
                &[
                    ("ce_specversion", Some(b"1.0")),
                    ("ce_specversion", Some(b"1.0"))
                ],
                None
            )
            .is_err()
        );
    }

    #[test]
    fn mqtt_modes() {
        let props: Vec<(String, String)> = binary_attributes(&event(), &[])
            .into_iter()
            .chain([("room id".to_owned(), "ignored".to_owned())])
            .collect();
        let e = decode_mqtt5(Some("application/json"), &props, br#"{"t":21.5}"#)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not an event"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert!(!e.extensions.contains_key("room id"));
        // The example of the binding: datacontenttype given both ways, agreeing.
        let mut both = props.clone();
        both.push(("datacontenttype".into(), "application/json".into()));
        assert!(decode_mqtt5(Some("application/json"), &both, b"{}").is_ok());
        assert!(decode_mqtt5(Some("text/plain"), &both, b"{}").is_err());
        assert_eq!(decode_mqtt5(None, &[], b"21.5"), Ok(None));
        let structured = crate::json::encode_event(&event());
        assert!(
            decode_mqtt5(Some("application/cloudevents+json"), &[], &structured)
                .is_ok_and(|e| e.is_some())
        );
        assert!(decode_mqtt311(&structured).is_ok_and(|e| e.is_some()));
        assert_eq!(decode_mqtt311(br#"{"t":21.5}"#), Ok(None));
        assert_eq!(decode_mqtt311(b"not json"), Ok(None));
        assert!(decode_mqtt311(br#"{"specversion":"1.0"}"#).is_err());
    }

    #[test]
    fn nats_datacontenttype_header() {
        let h =
            |pairs: &[(&'static str, &'static str)]| nats_headers_to_http(pairs.iter().copied());
        let m = h(&[
            ("ce-specversion", "1.0"),
            ("ce-datacontenttype", "text/plain%3B charset=utf-8"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.get("content-type").map(|v| v.as_bytes()),
            Some(b"text/plain; charset=utf-8".as_slice())
        );
        assert!(m.get("ce-datacontenttype").is_none());
        assert!(
            h(&[
                ("ce-datacontenttype", "text/plain"),
                ("Content-Type", "text/plain")
            ])
            .is_ok()
        );
        assert!(
            h(&[
                ("ce-datacontenttype", "text/plain"),
                ("Content-Type", "application/json")
            ])
            .is_err()
        );
        assert!(h(&[("ce-datacontenttype", "a/b"), ("ce-datacontenttype", "a/b")]).is_err());
        // Structured mode: the header is not an attribute.
        assert!(
            h(&[
                ("ce-datacontenttype", "a/b"),
                ("Content-Type", "application/cloudevents+json")
            ])
            .is_ok()
        );
    }

    #[test]
    fn mqtt311_json_that_is_not_an_event_object() {
        assert_eq!(decode_mqtt311(b"[21.5]"), Ok(None));
        assert_eq!(decode_mqtt311(br#"["on"]"#), Ok(None));
        assert_eq!(decode_mqtt311(b"21.5"), Ok(None));
    }

    #[test]
    fn structured_detection() {
        assert!(is_structured(Some(
            "application/cloudevents+json; charset=utf-8"
        )));
        assert!(is_structured(Some("Application/CloudEvents+json")));
        assert!(!is_structured(Some("application/json")));
        assert!(!is_structured(None));
    }
}
