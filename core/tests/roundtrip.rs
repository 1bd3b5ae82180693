//! Property tests: encode → decode is the identity in every mode, for valid events.
//!
//! The generated events use printable Unicode text (spaces, `%`, `"`, `\`, non-ASCII, emoji;
//! no control characters) for `id`, `type`, `subject` and string extensions, URI-references
//! for `source`, RFC 3339 `time` values with varied offsets (`Z`, `z`, `+hh:mm`, `-hh:mm`),
//! fractions and `T`/`t`, absolute URIs for `dataschema` (URI-references for 0.3's
//! `schemaurl`), and extension names `[a-z0-9]{1,20}` that are not context attribute names or
//! `data`.
//!
//! Each mode has a canonical form, the set of events it can carry exactly; the generators
//! produce events in that form:
//!
//! - **Binary mode** (`http::encode_binary` → `http::decode`): headers are untyped, so
//!   extensions are only `ExtValue::String`; the body is bytes, so data is only `Data::Absent`
//!   or a non-empty `Data::Binary` (an empty body decodes as absent data, and a `Data::Json`
//!   comes back as the bytes of its text, with `Content-Type: application/json` when it had no
//!   content type). `datacontenttype` is any media type that is not a CloudEvents one
//!   (parameters, quotes and `%` included, as Content-Type is written as it is).
//! - **Structured and batch mode** (`http::encode_structured` / `http::encode_batch` →
//!   `http::decode`): extensions are `String`, `Integer` or `Boolean` (the JSON types); data is
//!   `Data::Absent`, `Data::Json` (raw JSON text written by serde_json from a generated value,
//!   compact or pretty, `null` included) with no or a JSON content type, or, in 1.0 events,
//!   `Data::Binary` with no content type or a non-JSON, non-text one such as
//!   `application/octet-stream` (so it is written as `data_base64`). 0.3 has no `data_base64`,
//!   so 0.3 events carry no `Data::Binary`. All events of a batch share one `specversion`, as
//!   spec.md requires.
//! - **Storage** (`store::encode` → `store::decode`): every variant, including
//!   `ExtValue::Binary`, `Uri`, `UriRef` and `Timestamp`, empty `Data::Binary` and any data
//!   with any content type.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use switchyard_core::event::CORE_ATTRIBUTES;
use switchyard_core::http::{self as binding, Mode};
use switchyard_core::{CloudEvent, Data, ExtValue, SpecVersion, store};

// ---------------------------------------------------------------------------------------------
// Generators

/// Printable text: any non-control Unicode (`\PC`), or a mix weighted towards the characters
/// that need escaping somewhere (space, `%`, `"`, `\`, non-ASCII, emoji).
fn text(min: usize, max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        proptest::string::string_regex(&format!("\\PC{{{min},{max}}}")).unwrap(),
        proptest::string::string_regex(&format!("[ %\"\\\\a-zA-Z0-9'<>€é😀中]{{{min},{max}}}"))
            .unwrap(),
    ]
    .boxed()
}

fn regex(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern).unwrap().boxed()
}

/// URI-references (RFC 3986 4.1), absolute or relative, as `source` is.
fn uri_reference() -> BoxedStrategy<String> {
    prop_oneof![
        regex(
            "https?://[a-z0-9.-]{1,15}(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@-]{0,8}){0,3}(\\?[a-z0-9=&]{0,10})?(#[a-z]{0,5})?"
        ),
        regex("urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        regex("mailto:[a-z]{1,8}@[a-z]{1,8}\\.io"),
        regex("/[A-Za-z0-9/._~-]{0,20}"),
        regex("[0-9]-[0-9]{3}-[0-9]{3}-[0-9]{4}"),
        regex("/sensors/(%[0-9A-Fa-f]{2}|[a-z€😀]){1,10}"),
        regex("[a-z][a-z0-9+.-]{0,5}:[a-z/]{0,10}"),
    ]
    .boxed()
}

/// Absolute URIs (RFC 3986 4.3), as 1.0's `dataschema` is.
fn absolute_uri() -> BoxedStrategy<String> {
    prop_oneof![
        regex("https://[a-z]{1,10}\\.example/schemas/[a-z0-9]{1,10}(\\.json)?"),
        regex("urn:example:[a-z0-9]{1,10}"),
    ]
    .boxed()
}

/// Valid RFC 3339 date-times with varied offsets and fractions.
fn timestamp() -> BoxedStrategy<String> {
    let offset = prop_oneof![
        Just("Z".to_owned()),
        Just("z".to_owned()),
        (any::<bool>(), 0u32..=23, 0u32..=59)
            .prop_map(|(plus, h, m)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
    ];
    (
        (0u32..=9999, 1u32..=12, 1u32..=28),
        (0u32..=23, 0u32..=59, 0u32..=60),
        proptest::option::of(regex("[0-9]{1,9}")),
        prop_oneof![Just('T'), Just('t')],
        offset,
    )
        .prop_map(|((y, mo, d), (h, mi, s), frac, t, off)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
        .boxed()
}

/// Extension names: `[a-z0-9]{1,20}`, not a context attribute name (of either version) or
/// `data`.
fn extension_name() -> BoxedStrategy<String> {
    regex("[a-z0-9]{1,20}")
        .prop_filter("not a reserved name", |n| {
            !CORE_ATTRIBUTES.contains(&n.as_str())
                && !matches!(n.as_str(), "data" | "schemaurl" | "datacontentencoding")
        })
        .boxed()
}

fn extensions(values: BoxedStrategy<ExtValue>) -> BoxedStrategy<BTreeMap<String, ExtValue>> {
    proptest::collection::btree_map(extension_name(), values, 0..6).boxed()
}

fn string_ext() -> BoxedStrategy<ExtValue> {
    text(0, 20).prop_map(ExtValue::String).boxed()
}

fn json_ext() -> BoxedStrategy<ExtValue> {
    prop_oneof![
        string_ext(),
        any::<i32>().prop_map(ExtValue::Integer),
        any::<bool>().prop_map(ExtValue::Boolean),
    ]
    .boxed()
}

fn any_ext() -> BoxedStrategy<ExtValue> {
    prop_oneof![
        json_ext(),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(ExtValue::Binary),
        absolute_uri().prop_map(ExtValue::Uri),
        uri_reference().prop_map(ExtValue::UriRef),
        timestamp().prop_map(ExtValue::Timestamp),
    ]
    .boxed()
}

/// A JSON value: any JSON, strings with any characters (control characters are escaped).
fn json_value() -> BoxedStrategy<serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Raw JSON text as serde_json writes it, compact or pretty.
fn json_text() -> BoxedStrategy<Box<str>> {
    (json_value(), any::<bool>())
        .prop_map(|(v, pretty)| {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            text.into_boxed_str()
        })
        .boxed()
}

fn non_empty_bytes() -> BoxedStrategy<Bytes> {
    proptest::collection::vec(any::<u8>(), 1..64)
        .prop_map(Bytes::from)
        .boxed()
}

fn one_of(items: &'static [&'static str]) -> BoxedStrategy<Option<String>> {
    proptest::sample::select(items)
        .prop_map(|s| Some(s.to_owned()))
        .boxed()
}

/// Media types that are not CloudEvents formats, including parameters, quotes and `%`.
const MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "text/xml; charset=\"utf-8\"",
    "application/octet-stream",
    "application/vnd.apache.thrift.binary",
    "application/x-www-form-urlencoded; q=100%",
    "image/png",
];
const JSON_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/json",
    "application/vnd.example+json",
];
const BINARY_MEDIA_TYPES: &[&str] = &[
    "application/octet-stream",
    "image/png",
    "application/vnd.apache.thrift.binary",
];

fn maybe(s: BoxedStrategy<Option<String>>) -> BoxedStrategy<Option<String>> {
    prop_oneof![Just(None), s].boxed()
}

/// The attributes every mode carries exactly; no extensions, no data.
fn base(specversion: SpecVersion) -> BoxedStrategy<CloudEvent> {
    let schema = match specversion {
        SpecVersion::V10 => absolute_uri(),
        SpecVersion::V03 => uri_reference(),
    };
    let encoding = match specversion {
        SpecVersion::V10 => Just(None).boxed(),
        SpecVersion::V03 => maybe(one_of(&["base64"])),
    };
    (
        text(1, 30),
        uri_reference(),
        text(1, 30),
        proptest::option::of(text(1, 30)),
        proptest::option::of(timestamp()),
        proptest::option::of(schema),
        encoding,
    )
        .prop_map(
            move |(id, source, ty, subject, time, dataschema, datacontentencoding)| CloudEvent {
                specversion,
                id,
                source,
                ty,
                datacontenttype: None,
                dataschema,
                subject,
                time,
                datacontentencoding,
                extensions: BTreeMap::new(),
                data: Data::Absent,
            },
        )
        .boxed()
}

fn spec_version() -> BoxedStrategy<SpecVersion> {
    prop_oneof![Just(SpecVersion::V10), Just(SpecVersion::V03)].boxed()
}

type DataAndType = (Data, Option<String>);

/// Binary mode: absent or non-empty bytes, with any (non-CloudEvents) content type or none.
fn binary_mode_data() -> BoxedStrategy<DataAndType> {
    (
        prop_oneof![Just(Data::Absent), non_empty_bytes().prop_map(Data::Binary)],
        maybe(one_of(MEDIA_TYPES)),
    )
        .boxed()
}

/// Structured mode: JSON text with a JSON content type (or none), bytes (1.0 only) with a
/// binary content type (or none), or nothing with any content type.
fn structured_mode_data(specversion: SpecVersion) -> BoxedStrategy<DataAndType> {
    let json = (
        json_text().prop_map(Data::Json),
        maybe(one_of(JSON_MEDIA_TYPES)),
    );
    let absent = (Just(Data::Absent), maybe(one_of(MEDIA_TYPES)));
    match specversion {
        SpecVersion::V10 => prop_oneof![
            json,
            absent,
            (
                proptest::collection::vec(any::<u8>(), 0..64)
                    .prop_map(|b| Data::Binary(Bytes::from(b))),
                maybe(one_of(BINARY_MEDIA_TYPES)),
            ),
        ]
        .boxed(),
        SpecVersion::V03 => prop_oneof![json, absent].boxed(),
    }
}

/// Storage: anything.
fn any_data() -> BoxedStrategy<DataAndType> {
    (
        prop_oneof![
            Just(Data::Absent),
            json_text().prop_map(Data::Json),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| Data::Binary(Bytes::from(b))),
        ],
        maybe(one_of(MEDIA_TYPES)),
    )
        .boxed()
}

fn assemble(
    specversion: SpecVersion,
    ext: BoxedStrategy<ExtValue>,
    data: BoxedStrategy<DataAndType>,
) -> BoxedStrategy<CloudEvent> {
    (base(specversion), extensions(ext), data)
        .prop_map(|(mut e, ext, (data, ct))| {
            e.extensions = ext;
            e.data = data;
            e.datacontenttype = ct;
            e
        })
        .boxed()
}

fn binary_mode_event() -> BoxedStrategy<CloudEvent> {
    spec_version()
        .prop_flat_map(|v| assemble(v, string_ext(), binary_mode_data()))
        .boxed()
}

fn structured_mode_event_of(specversion: SpecVersion) -> BoxedStrategy<CloudEvent> {
    assemble(specversion, json_ext(), structured_mode_data(specversion))
}

fn structured_mode_event() -> BoxedStrategy<CloudEvent> {
    spec_version()
        .prop_flat_map(structured_mode_event_of)
        .boxed()
}

fn batch() -> BoxedStrategy<Vec<CloudEvent>> {
    spec_version()
        .prop_flat_map(|v| proptest::collection::vec(structured_mode_event_of(v), 0..5))
        .boxed()
}

fn storage_event() -> BoxedStrategy<CloudEvent> {
    spec_version()
        .prop_flat_map(|v| assemble(v, any_ext(), any_data()))
        .boxed()
}

/// Bodies that test the structured encoder's choice between `data` and `data_base64`: random
/// bytes, JSON text, JSON-looking text with bytes that are not UTF-8, and plain UTF-8 text.
fn tricky_body() -> BoxedStrategy<Bytes> {
    prop_oneof![
        non_empty_bytes(),
        json_text().prop_map(|t| Bytes::from(t.into_string())),
        (
            text(0, 10),
            prop_oneof![Just(0xFFu8), Just(0xC0), Just(0x80)]
        )
            .prop_map(|(t, bad)| {
                let mut b = vec![b'"'];
                b.extend_from_slice(t.as_bytes());
                b.push(bad);
                b.push(b'"');
                Bytes::from(b)
            }),
        text(1, 30).prop_map(|t| Bytes::from(t.into_bytes())),
    ]
    .boxed()
}

/// 1.0 events as binary mode decodes them, with bodies from [`tricky_body`].
fn binary_mode_event_for_transcoding() -> BoxedStrategy<CloudEvent> {
    assemble(
        SpecVersion::V10,
        string_ext(),
        (
            tricky_body().prop_map(Data::Binary),
            maybe(one_of(MEDIA_TYPES)),
        )
            .boxed(),
    )
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_events_are_valid(e in storage_event()) {
        prop_assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn binary_mode_roundtrip(e in binary_mode_event()) {
        prop_assert_eq!(e.validate(), Ok(()));
        let (headers, body) = binding::encode_binary(&e);
        // Every header value is printable ASCII (the binding's percent-encoding) except
        // Content-Type, which is written as it is.
        for (name, value) in &headers {
            if name != http::header::CONTENT_TYPE {
                prop_assert!(
                    value.as_bytes().iter().all(|b| (0x21..=0x7E).contains(b)
                        && *b != b'"'),
                    "{}: {:?}", name, value
                );
            }
        }
        let (mode, events) = binding::decode(&headers, body).unwrap();
        prop_assert_eq!(mode, Mode::Binary);
        prop_assert_eq!(events, vec![e]);
    }

    #[test]
    fn structured_mode_roundtrip(e in structured_mode_event()) {
        prop_assert_eq!(e.validate(), Ok(()));
        let (headers, body) = binding::encode_structured(&e);
        let (mode, events) = binding::decode(&headers, body.clone()).unwrap();
        prop_assert_eq!(mode, Mode::Structured);
        prop_assert_eq!(events, vec![e.clone()]);
        // The body is JSON, and `data` is written where the JSON format says.
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        match &e.data {
            Data::Absent => {
                prop_assert!(value.get("data").is_none() && value.get("data_base64").is_none());
            }
            Data::Json(_) => prop_assert!(value.get("data").is_some()),
            Data::Binary(_) => prop_assert!(value.get("data_base64").is_some()),
        }
    }

    /// Binary mode → structured mode (what the broker does when a trigger asks for `json`
    /// deliveries) keeps every attribute and the data: the same bytes, or for JSON media types
    /// the same JSON value (whitespace around it is not kept).
    #[test]
    fn binary_to_structured_keeps_attributes_and_data(e in binary_mode_event_for_transcoding()) {
        prop_assert_eq!(e.validate(), Ok(()));
        let (headers, body) = binding::encode_structured(&e);
        let (_, events) = binding::decode(&headers, body).unwrap();
        let d = &events[0];
        prop_assert_eq!(
            (&d.id, &d.source, &d.ty, &d.subject, &d.time, &d.dataschema, &d.extensions),
            (&e.id, &e.source, &e.ty, &e.subject, &e.time, &e.dataschema, &e.extensions)
        );
        prop_assert_eq!(&d.datacontenttype, &e.datacontenttype);
        let (before, after) = (e.data_bytes().unwrap(), d.data_bytes().unwrap());
        let is_json_type = e
            .datacontenttype
            .as_deref()
            .is_some_and(|ct| switchyard_core::json::is_json_media_type(Some(ct)));
        match serde_json::from_slice::<serde_json::Value>(&before) {
            Ok(value) if is_json_type => {
                prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(&after).unwrap(), value);
            }
            _ => prop_assert_eq!(after, before),
        }
    }

    #[test]
    fn batch_mode_roundtrip(events in batch()) {
        for e in &events {
            prop_assert_eq!(e.validate(), Ok(()));
        }
        let (headers, body) = binding::encode_batch(&events);
        let (mode, decoded) = binding::decode(&headers, body).unwrap();
        prop_assert_eq!(mode, Mode::Batch);
        prop_assert_eq!(decoded, events);
    }

    #[test]
    fn storage_roundtrip(e in storage_event()) {
        let record = store::encode(&e);
        prop_assert_eq!(store::decode(&record).unwrap(), e);
    }

    /// A record cut short, or with bytes after it, is refused, never misread.
    #[test]
    fn storage_refuses_truncated_or_extended_records(e in storage_event(), cut in any::<prop::sample::Index>()) {
        let record = store::encode(&e);
        let cut = cut.index(record.len());
        prop_assert!(store::decode(&record[..cut]).is_err());
        let mut longer = record.clone();
        longer.push(0);
        prop_assert!(store::decode(&longer).is_err());
    }

    /// Header values: percent-encoding then decoding is the identity for any string (the
    /// encoder also escapes control characters).
    #[test]
    fn header_value_roundtrip(s in any::<String>()) {
        let encoded = binding::percent_encode(&s);
        prop_assert!(encoded.bytes().all(|b| (0x21..=0x7E).contains(&b) && b != b'"'));
        prop_assert_eq!(binding::decode_header_value(encoded.as_bytes()).unwrap(), s);
    }
}
