//! Table tests of bad input: each case asserts the exact `EventError` variant and that the
//! error names the attribute (or header, or part of the message) it is about. A few tables of
//! lenient input that must be accepted sit next to the ones they border on.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use switchyard_core::http::{self as binding, Mode};
use switchyard_core::{CloudEvent, Data, EventError, ExtValue, SpecVersion, json};

/// What a case expects.
#[derive(Debug)]
enum Expect {
    /// This exact error.
    Exact(EventError),
    /// `InvalidAttribute` about this attribute (the rule's wording is free).
    Invalid(&'static str),
    /// `InvalidHeader` about this header; the rule mentions the given text.
    Header(&'static str, &'static str),
    /// `MalformedJson` whose message mentions the given text.
    Malformed(&'static str),
}

fn check(case: &str, result: Result<impl std::fmt::Debug, EventError>, expect: &Expect) {
    let err = match result {
        Ok(v) => panic!("{case}: accepted, expected {expect:?}: {v:?}"),
        Err(e) => e,
    };
    let text = err.to_string();
    match expect {
        Expect::Exact(expected) => {
            assert_eq!(&err, expected, "{case}");
            if let Some(name) = expected.attribute() {
                assert!(
                    text.contains(name),
                    "{case}: {text:?} does not name `{name}`"
                );
            }
        }
        Expect::Invalid(name) => {
            assert!(
                matches!(&err, EventError::InvalidAttribute { name: n, .. } if n == name),
                "{case}: expected InvalidAttribute `{name}`, got {err:?}"
            );
            assert_eq!(err.attribute(), Some(*name), "{case}");
            assert!(
                text.contains(&format!("`{name}`")),
                "{case}: {text:?} does not name `{name}`"
            );
        }
        Expect::Header(header, rule_mentions) => {
            let EventError::InvalidHeader { header: h, rule } = &err else {
                panic!("{case}: expected InvalidHeader `{header}`, got {err:?}");
            };
            assert_eq!(h, header, "{case}");
            assert!(rule.contains(rule_mentions), "{case}: {rule:?}");
            assert!(text.contains(header), "{case}: {text:?}");
        }
        Expect::Malformed(mentions) => {
            let EventError::MalformedJson(message) = &err else {
                panic!("{case}: expected MalformedJson, got {err:?}");
            };
            assert!(message.contains(mentions), "{case}: {message:?}");
        }
    }
}

fn exact(e: EventError) -> Expect {
    Expect::Exact(e)
}

fn missing(name: &'static str) -> Expect {
    Expect::Exact(EventError::MissingAttribute(name))
}

fn bad_name(name: &str) -> Expect {
    Expect::Exact(EventError::InvalidAttributeName(name.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Binary mode

const BASE_HEADERS: &[(&str, &str)] = &[
    ("ce-specversion", "1.0"),
    ("ce-id", "1234"),
    ("ce-source", "/mycontext"),
    ("ce-type", "com.example.someevent"),
];

/// A header name and its raw value.
type Header<'a> = (&'a str, &'a [u8]);

/// The base headers without `without`, then `extra` appended (so a name given twice is a
/// duplicate header).
fn headers(without: &[&str], extra: &[Header<'_>]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in BASE_HEADERS {
        if !without.contains(name) {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
    }
    for (name, value) in extra {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    h
}

fn decode_binary(h: &HeaderMap) -> Result<CloudEvent, EventError> {
    let (mode, mut events) = binding::decode(h, Bytes::from_static(b"{}"))?;
    assert_eq!(mode, Mode::Binary);
    Ok(events.remove(0))
}

#[test]
fn binary_mode_missing_required_attributes() {
    for name in ["id", "source", "type"] {
        let h = headers(&[&format!("ce-{name}")], &[]);
        check(name, decode_binary(&h), &missing(name));
    }
    // Without `ce-specversion` the message is not recognised as a binary-mode CloudEvent, and
    // the error says which header is missing.
    let h = headers(&["ce-specversion"], &[]);
    let err = decode_binary(&h).unwrap_err();
    assert_eq!(err, EventError::NotACloudEvent);
    assert!(err.to_string().contains("`ce-specversion`"), "{err}");
    // Nor is a request without any CloudEvents header.
    assert_eq!(
        binding::decode(&HeaderMap::new(), Bytes::from_static(b"x")),
        Err(EventError::NotACloudEvent)
    );
}

#[test]
fn binary_mode_bad_headers() {
    let long = "ce-abcdefghijklmnopqrstu"; // 21 characters after `ce-`
    let cases: &[(&str, &[Header<'_>], Expect)] = &[
        (
            "underscore in name",
            &[("ce-my_ext", b"x")],
            bad_name("my_ext"),
        ),
        ("name over 20", &[(long, b"x")], bad_name(&long[3..])),
        ("empty name", &[("ce-", b"x")], bad_name("")),
        (
            "reserved name data",
            &[("ce-data", b"x")],
            Expect::Invalid("data"),
        ),
        (
            "ce-datacontenttype",
            &[("ce-datacontenttype", b"application/json")],
            Expect::Invalid("datacontenttype"),
        ),
        (
            "duplicate ce-id",
            &[("ce-id", b"5678")],
            exact(EventError::DuplicateAttribute("id".into())),
        ),
        (
            "duplicate extension",
            &[("ce-myext", b"a"), ("ce-myext", b"b")],
            exact(EventError::DuplicateAttribute("myext".into())),
        ),
        (
            "duplicate Content-Type",
            &[
                ("content-type", b"text/plain"),
                ("content-type", b"text/xml"),
            ],
            exact(EventError::DuplicateAttribute("content-type".into())),
        ),
        (
            "%ZZ",
            &[("ce-subject", b"a%ZZb")],
            Expect::Header("ce-subject", "two hex digits"),
        ),
        (
            "% at the end",
            &[("ce-subject", b"abc%4")],
            Expect::Header("ce-subject", "two hex digits"),
        ),
        (
            "overlong %C0%A0",
            &[("ce-subject", b"a%C0%A0b")],
            Expect::Header("ce-subject", "UTF-8"),
        ),
        (
            "truncated %E2%82",
            &[("ce-subject", b"Euro%20%E2%82")],
            Expect::Header("ce-subject", "UTF-8"),
        ),
        (
            "lone surrogate %ED%A0%80",
            &[("ce-myext", b"%ED%A0%80")],
            Expect::Header("ce-myext", "UTF-8"),
        ),
        (
            "quoted string ending in a lone backslash",
            &[("ce-subject", b"\"abc\\\"")],
            Expect::Header("ce-subject", "backslash"),
        ),
        (
            "time not RFC 3339",
            &[("ce-time", b"2018-04-05%2017:31:00Z")],
            Expect::Invalid("time"),
        ),
        (
            "time without offset",
            &[("ce-time", b"2018-04-05T17:31:00")],
            Expect::Invalid("time"),
        ),
        (
            "dataschema not absolute",
            &[("ce-dataschema", b"/schemas/v1")],
            Expect::Invalid("dataschema"),
        ),
        (
            "datacontenttype not a media type",
            &[("content-type", b"json")],
            Expect::Invalid("datacontenttype"),
        ),
        (
            "empty subject",
            &[("ce-subject", b"")],
            Expect::Invalid("subject"),
        ),
        (
            "control character in subject",
            &[("ce-subject", b"a%07b")],
            Expect::Invalid("subject"),
        ),
        (
            "C1 control character in an extension",
            &[("ce-myext", b"%C2%85")],
            Expect::Invalid("myext"),
        ),
    ];
    for (case, extra, expect) in cases {
        check(case, decode_binary(&headers(&[], extra)), expect);
    }
}

/// Cases that replace one of the required headers.
#[test]
fn binary_mode_bad_required_values() {
    let cases: &[(&str, &str, &[u8], Expect)] = &[
        (
            "source with a space",
            "ce-source",
            b"my context",
            Expect::Invalid("source"),
        ),
        (
            "source with an encoded space",
            "ce-source",
            b"my%20context",
            Expect::Invalid("source"),
        ),
        ("empty source", "ce-source", b"", Expect::Invalid("source")),
        ("empty id", "ce-id", b"", Expect::Invalid("id")),
        (
            "control character in id",
            "ce-id",
            b"a%0Ab",
            Expect::Invalid("id"),
        ),
        ("empty type", "ce-type", b"", Expect::Invalid("type")),
        (
            "unknown specversion",
            "ce-specversion",
            b"2.0",
            exact(EventError::UnsupportedSpecVersion("2.0".into())),
        ),
        (
            "specversion 1",
            "ce-specversion",
            b"1",
            exact(EventError::UnsupportedSpecVersion("1".into())),
        ),
        (
            "specversion 1.0.0",
            "ce-specversion",
            b"1.0.0",
            exact(EventError::UnsupportedSpecVersion("1.0.0".into())),
        ),
    ];
    for (case, name, value, expect) in cases {
        let h = headers(&[name], &[(name, value)]);
        check(case, decode_binary(&h), expect);
    }
    let err =
        decode_binary(&headers(&["ce-specversion"], &[("ce-specversion", b"2.0")])).unwrap_err();
    assert_eq!(err.attribute(), Some("specversion"));
}

/// bindings_http-protocol-binding.md, 3.1.3.2: "any HTTP header value MUST first be unescaped
/// with respect to double-quoted strings [...] including processing backslash escapes";
/// "decoding MUST accept lower-case values"; "values that have been unnecessarily
/// percent-encoded MUST be accepted". And 3.1.3.1: "header names are case-insensitive".
#[test]
fn binary_mode_lenient_header_values_are_accepted() {
    let cases: &[(&[u8], &str)] = &[
        (br#""a \"quoted\" \\ value""#, r#"a "quoted" \ value"#),
        (br#""Euro%20%E2%82%AC""#, "Euro €"),
        (br#""plain""#, "plain"),
        (b"%e2%82%ac%f0%9f%98%80", "€😀"),
        (b"%41%42%2f%2F", "AB//"),
        (br#"a"b"#, r#"a"b"#),
        (b"100%25", "100%"),
        // Non-ASCII bytes (obs-text) that are UTF-8 are taken as they are.
        ("é".as_bytes(), "é"),
    ];
    for (raw, expected) in cases {
        let h = headers(&[], &[("ce-subject", raw)]);
        let e = decode_binary(&h).unwrap();
        assert_eq!(e.subject.as_deref(), Some(*expected), "{raw:?}");
        assert_eq!(
            binding::decode_header_value(raw).as_deref(),
            Ok(*expected),
            "{raw:?}"
        );
    }

    let mut h = HeaderMap::new();
    for (name, value) in [
        ("CE-SpecVersion", "1.0"),
        ("Ce-Id", "1"),
        ("CE-SOURCE", "/s"),
        ("ce-Type", "t"),
        ("CE-MyExtension", "v"),
    ] {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static(value),
        );
    }
    let e = decode_binary(&h).unwrap();
    assert_eq!(
        (e.id.as_str(), e.source.as_str(), e.ty.as_str()),
        ("1", "/s", "t")
    );
    assert_eq!(
        e.extensions.get("myextension"),
        Some(&ExtValue::String("v".into()))
    );
}

// ---------------------------------------------------------------------------------------------
// Structured mode

fn structured(body: &[u8]) -> Result<CloudEvent, EventError> {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents+json"),
    );
    let (mode, mut events) = binding::decode(&h, Bytes::copy_from_slice(body))?;
    assert_eq!(mode, Mode::Structured);
    Ok(events.remove(0))
}

/// A valid event with `members` (raw JSON, `"name": value` pairs) added at the end.
fn event_with(members: &str) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"1234","source":"/mycontext","type":"com.example.someevent"{}{members}}}"#,
        if members.is_empty() { "" } else { "," }
    )
}

#[test]
fn structured_mode_missing_required_attributes() {
    let cases = [
        ("id", r#"{"specversion":"1.0","source":"/s","type":"t"}"#),
        ("source", r#"{"specversion":"1.0","id":"1","type":"t"}"#),
        ("type", r#"{"specversion":"1.0","id":"1","source":"/s"}"#),
        ("specversion", r#"{"id":"1","source":"/s","type":"t"}"#),
        // formats_json-format.md, 2.2: "a `null` value [...] MUST be treated as the equivalent
        // of unset or omitted."
        (
            "id",
            r#"{"specversion":"1.0","id":null,"source":"/s","type":"t"}"#,
        ),
        (
            "specversion",
            r#"{"specversion":null,"id":"1","source":"/s","type":"t"}"#,
        ),
    ];
    for (name, body) in cases {
        check(body, structured(body.as_bytes()), &missing(name));
        let err = structured(body.as_bytes()).unwrap_err();
        assert_eq!(err.attribute(), Some(name));
    }
}

#[test]
fn structured_mode_bad_members() {
    let long = "abcdefghijklmnopqrstu"; // 21 characters
    let cases: Vec<(String, Expect)> = vec![
        (
            r#"{"specversion":"2.0","id":"1","source":"/s","type":"t"}"#.into(),
            exact(EventError::UnsupportedSpecVersion("2.0".into())),
        ),
        (
            r#"{"specversion":1.0,"id":"1","source":"/s","type":"t"}"#.into(),
            Expect::Invalid("specversion"),
        ),
        // Attribute names.
        (event_with(r#""myExt":"x""#), bad_name("myExt")),
        (event_with(r#""ID":"x""#), bad_name("ID")),
        (event_with(&format!(r#""{long}":"x""#)), bad_name(long)),
        (event_with(r#""my_ext":"x""#), bad_name("my_ext")),
        (event_with(r#""":"x""#), bad_name("")),
        (event_with(r#""my-ext":"x""#), bad_name("my-ext")),
        // Types of attributes.
        (
            r#"{"specversion":"1.0","id":1234,"source":"/s","type":"t"}"#.into(),
            Expect::Invalid("id"),
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":{"a":1},"type":"t"}"#.into(),
            Expect::Invalid("source"),
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"/s","type":true}"#.into(),
            Expect::Invalid("type"),
        ),
        (event_with(r#""time":1522949460"#), Expect::Invalid("time")),
        (event_with(r#""subject":["a"]"#), Expect::Invalid("subject")),
        (event_with(r#""myext":{"a":1}"#), Expect::Invalid("myext")),
        (event_with(r#""myext":[1]"#), Expect::Invalid("myext")),
        (
            event_with(r#""myext":2147483648"#),
            Expect::Invalid("myext"),
        ),
        (
            event_with(r#""myext":-2147483649"#),
            Expect::Invalid("myext"),
        ),
        (event_with(r#""myext":1.5"#), Expect::Invalid("myext")),
        (event_with(r#""myext":1e3"#), Expect::Invalid("myext")),
        (
            event_with(r#""myext":"a\u0007b""#),
            Expect::Invalid("myext"),
        ),
        // Duplicate members (spec.md: "Each context attribute MUST only appear at most once").
        (
            r#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}"#.into(),
            exact(EventError::DuplicateAttribute("id".into())),
        ),
        (
            r#"{"specversion":"1.0","i\u0064":"1","id":"2","source":"/s","type":"t"}"#.into(),
            exact(EventError::DuplicateAttribute("id".into())),
        ),
        (
            event_with(r#""myext":1,"myext":2"#),
            exact(EventError::DuplicateAttribute("myext".into())),
        ),
        (
            event_with(r#""subject":null,"subject":"x""#),
            exact(EventError::DuplicateAttribute("subject".into())),
        ),
        (
            event_with(r#""data":1,"data":2"#),
            exact(EventError::DuplicateAttribute("data".into())),
        ),
        // data and data_base64: "the presence of the `data` and `data_base64` members is
        // mutually exclusive" (formats_json-format.md 3.1.1).
        (
            event_with(r#""data":{"a":1},"data_base64":"AAEC""#),
            Expect::Invalid("data_base64"),
        ),
        (
            event_with(r#""data_base64":"AAEC","data":null"#),
            Expect::Invalid("data_base64"),
        ),
        (
            event_with(r#""data_base64":"!!!!""#),
            Expect::Invalid("data_base64"),
        ),
        (
            event_with(r#""data_base64":"YQ""#),
            Expect::Invalid("data_base64"),
        ),
        (
            event_with(r#""data_base64":42"#),
            Expect::Invalid("data_base64"),
        ),
        // Values.
        (
            event_with(r#""time":"2018-04-05 17:31:00Z""#),
            Expect::Invalid("time"),
        ),
        (event_with(r#""time":"yesterday""#), Expect::Invalid("time")),
        (
            event_with(r#""time":"2019-02-29T00:00:00Z""#),
            Expect::Invalid("time"),
        ),
        (
            event_with(r#""dataschema":"/schemas/v1""#),
            Expect::Invalid("dataschema"),
        ),
        (
            event_with(r#""dataschema":"""#),
            Expect::Invalid("dataschema"),
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"my context","type":"t"}"#.into(),
            Expect::Invalid("source"),
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"","type":"t"}"#.into(),
            Expect::Invalid("source"),
        ),
        (
            r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#.into(),
            Expect::Invalid("id"),
        ),
        (event_with(r#""subject":"""#), Expect::Invalid("subject")),
        (
            event_with(r#""subject":"line\nbreak""#),
            Expect::Invalid("subject"),
        ),
        (
            event_with(r#""datacontenttype":"json""#),
            Expect::Invalid("datacontenttype"),
        ),
        // 0.3-only members in a 0.3 sense do not exist in 1.0, and 1.0's data_base64 does not
        // exist in 0.3.
        (
            r#"{"specversion":"0.3","id":"1","source":"/s","type":"t","data_base64":"AAEC"}"#
                .into(),
            bad_name("data_base64"),
        ),
    ];
    for (body, expect) in &cases {
        check(body, structured(body.as_bytes()), expect);
    }
}

#[test]
fn structured_mode_integer_extension_bounds_are_accepted() {
    let e = structured(
        event_with(r#""max":2147483647,"min":-2147483648,"t":true,"f":false"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(e.extensions["max"], ExtValue::Integer(i32::MAX));
    assert_eq!(e.extensions["min"], ExtValue::Integer(i32::MIN));
    assert_eq!(e.extensions["t"], ExtValue::Boolean(true));
    assert_eq!(e.extensions["f"], ExtValue::Boolean(false));
}

#[test]
fn garbage_bodies_are_malformed_json() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("not JSON", b"hello", "expected"),
        ("invalid UTF-8", b"\xff\xfe{}", ""),
        (
            "invalid UTF-8 in a string",
            b"{\"specversion\":\"1.0\",\"id\":\"\xff\",\"source\":\"/s\",\"type\":\"t\"}",
            "",
        ),
        (
            "invalid UTF-8 in data",
            b"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"data\":\"\xc0\xa0\"}",
            "",
        ),
        ("empty body", b"", "EOF"),
        ("whitespace only", b"  \n", "EOF"),
        (
            "truncated",
            br#"{"specversion":"1.0","id":"1","source":"/s""#,
            "EOF",
        ),
        (
            "trailing characters",
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"} x"#,
            "trailing",
        ),
        ("an array", br#"[{"specversion":"1.0"}]"#, "object"),
        ("null", b"null", "object"),
        ("a string", br#""event""#, "object"),
    ];
    for (case, body, mentions) in cases {
        check(case, structured(body), &Expect::Malformed(mentions));
        // The JSON format's own decoder says the same.
        check(case, json::decode_event(body), &Expect::Malformed(mentions));
    }
}

// ---------------------------------------------------------------------------------------------
// Batches

fn batch(body: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents-batch+json"),
    );
    let (mode, events) = binding::decode(&h, Bytes::copy_from_slice(body))?;
    assert_eq!(mode, Mode::Batch);
    Ok(events)
}

#[test]
fn batches_that_are_not_arrays() {
    for body in [
        event_with("").into_bytes(),
        b"null".to_vec(),
        b"".to_vec(),
        b"[".to_vec(),
        b"not json".to_vec(),
    ] {
        let case = String::from_utf8_lossy(&body).into_owned();
        check(&case, batch(&body), &Expect::Malformed("array"));
    }
}

#[test]
fn batch_with_one_bad_event_names_its_index() {
    let good = event_with("");
    let cases: Vec<(String, usize, EventError)> = vec![
        (
            format!(r#"[{good},{good},{{"specversion":"1.0","source":"/s","type":"t"}}]"#),
            2,
            EventError::MissingAttribute("id"),
        ),
        (
            format!(r#"[{},{good}]"#, event_with(r#""Bad":1"#)),
            0,
            EventError::InvalidAttributeName("Bad".into()),
        ),
        (
            format!(r#"[{good},{}]"#, event_with(r#""x":1,"x":2"#)),
            1,
            EventError::DuplicateAttribute("x".into()),
        ),
    ];
    for (body, index, inner) in cases {
        let err = batch(body.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            EventError::InBatch {
                index,
                source: Box::new(inner.clone())
            },
            "{body}"
        );
        assert_eq!(err.attribute(), inner.attribute());
        assert!(
            err.to_string()
                .starts_with(&format!("event {index} of the batch: "))
        );
    }
    // Not even an object.
    let err = batch(format!("[{good},1]").as_bytes()).unwrap_err();
    let EventError::InBatch { index: 1, source } = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(**source, EventError::MalformedJson(_)), "{err:?}");
    // A bad value inside an event.
    let err =
        batch(format!(r#"[{good},{good},{good},{}]"#, event_with(r#""time":"x""#)).as_bytes())
            .unwrap_err();
    let EventError::InBatch { index: 3, source } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(&**source, EventError::InvalidAttribute { name, .. } if name == "time"),
        "{err:?}"
    );
}

/// spec.md, Message: "all CloudEvents within the same batch MUST have the same value for the
/// `specversion` attribute."
#[test]
fn batch_with_mixed_specversions_is_refused() {
    let v10 = event_with("");
    let v03 = r#"{"specversion":"0.3","id":"2","source":"/s","type":"t"}"#;
    let err = batch(format!("[{v10},{v10},{v03}]").as_bytes()).unwrap_err();
    let EventError::InBatch { index: 2, source } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(&**source, EventError::InvalidAttribute { name, .. } if name == "specversion"),
        "{err:?}"
    );
    // One version throughout is fine, 0.3 included.
    assert_eq!(batch(format!("[{v03},{v03}]").as_bytes()).unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Content modes

/// bindings_http-protocol-binding.md, 3: "If the value is prefixed with the CloudEvents media
/// type `application/cloudevents` (matched case-insensitively) [...] the receiver uses
/// _structured_ mode. If the value is prefixed with `application/cloudevents-batch`, the
/// receiver uses the _batched_ mode. Otherwise it defaults to _binary_ mode."
#[test]
fn content_mode_detection() {
    let mode = |ct: &str| {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        binding::detect_mode(&h)
    };
    let cases: &[(&str, Result<Mode, EventError>)] = &[
        ("application/cloudevents+json", Ok(Mode::Structured)),
        (
            "Application/CloudEvents+JSON; charset=utf-8",
            Ok(Mode::Structured),
        ),
        (
            "application/cloudevents+json;charset=UTF-8",
            Ok(Mode::Structured),
        ),
        ("application/cloudevents-batch+json", Ok(Mode::Batch)),
        (
            "APPLICATION/CLOUDEVENTS-BATCH+JSON; charset=utf-8",
            Ok(Mode::Batch),
        ),
        ("application/json", Ok(Mode::Binary)),
        ("text/plain", Ok(Mode::Binary)),
        (
            "application/cloudevents+xml",
            Err(EventError::UnsupportedFormat(
                "application/cloudevents+xml".into(),
            )),
        ),
        (
            "Application/CloudEvents+Avro; charset=utf-8",
            Err(EventError::UnsupportedFormat(
                "application/cloudevents+avro".into(),
            )),
        ),
        (
            "application/cloudevents-batch+xml",
            Err(EventError::UnsupportedFormat(
                "application/cloudevents-batch+xml".into(),
            )),
        ),
    ];
    for (ct, expected) in cases {
        assert_eq!(&mode(ct), expected, "{ct}");
        if let Err(e) = expected {
            assert!(e.is_unsupported_media_type());
            assert!(e.to_string().contains("JSON"), "{e}");
        }
    }
    assert_eq!(binding::detect_mode(&HeaderMap::new()), Ok(Mode::Binary));

    // And the case-insensitive match decodes.
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("Application/CloudEvents+JSON; charset=utf-8"),
    );
    let (mode, events) = binding::decode(&h, Bytes::from(event_with(""))).unwrap();
    assert_eq!(mode, Mode::Structured);
    assert_eq!(events[0].id, "1234");

    // A structured-mode body with a binary-mode content type is not a CloudEvent.
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    assert_eq!(
        binding::decode(&h, Bytes::from(event_with(""))),
        Err(EventError::NotACloudEvent)
    );
    // Other errors are 400s, not 415s.
    assert!(!EventError::NotACloudEvent.is_unsupported_media_type());
}

// ---------------------------------------------------------------------------------------------
// CloudEvents 0.3

#[test]
fn v03_structured_event_with_schemaurl_and_datacontentencoding_is_accepted() {
    let body = br#"{"specversion":"0.3","id":"1","source":"/s","type":"t","schemaurl":"/schemas/v1","datacontenttype":"application/octet-stream","datacontentencoding":"base64","data":"AAEC"}"#;
    let e = structured(body).unwrap();
    assert_eq!(e.specversion, SpecVersion::V03);
    assert_eq!(e.dataschema.as_deref(), Some("/schemas/v1"));
    assert_eq!(e.attribute("schemaurl").as_deref(), Some("/schemas/v1"));
    assert_eq!(e.attribute("dataschema"), None);
    assert_eq!(e.datacontentencoding.as_deref(), Some("base64"));
    assert_eq!(e.data, Data::Json(r#""AAEC""#.into()));
    assert!(e.extensions.is_empty());

    // Passed through as a 0.3 event.
    let encoded = json::encode_event(&e);
    let value: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
    assert_eq!(value["specversion"], "0.3");
    assert_eq!(value["schemaurl"], "/schemas/v1");
    assert_eq!(value.get("dataschema"), None);
    assert_eq!(value["datacontentencoding"], "base64");
    assert_eq!(json::decode_event(&encoded).unwrap(), e);
    let (headers, body) = binding::encode_binary(&e);
    assert_eq!(headers.get("ce-schemaurl").unwrap(), "/schemas/v1");
    assert_eq!(headers.get("ce-datacontentencoding").unwrap(), "base64");
    let back = binding::decode_binary(&headers, body).unwrap();
    assert_eq!(back.specversion, SpecVersion::V03);
    assert_eq!(back.dataschema, e.dataschema);
    assert_eq!(back.datacontentencoding, e.datacontentencoding);
}

#[test]
fn v03_binary_event_with_schemaurl_and_datacontentencoding_is_accepted() {
    let h = headers(
        &["ce-specversion"],
        &[
            ("ce-specversion", b"0.3"),
            ("ce-schemaurl", b"https://example.com/schema"),
            ("ce-datacontentencoding", b"base64"),
            ("content-type", b"application/octet-stream"),
        ],
    );
    let e = decode_binary(&h).unwrap();
    assert_eq!(e.specversion, SpecVersion::V03);
    assert_eq!(e.dataschema.as_deref(), Some("https://example.com/schema"));
    assert_eq!(e.datacontentencoding.as_deref(), Some("base64"));
    assert_eq!(
        e.datacontenttype.as_deref(),
        Some("application/octet-stream")
    );
    assert!(e.extensions.is_empty());
    assert_eq!(e.data, Data::Binary(Bytes::from_static(b"{}")));
}

/// In 1.0 `schemaurl` and `datacontentencoding` are not attributes: they are extensions like
/// any other name.
#[test]
fn v10_event_with_03_names_has_them_as_extensions() {
    let e = structured(event_with(r#""schemaurl":"/x","datacontentencoding":"base64""#).as_bytes())
        .unwrap();
    assert_eq!(e.dataschema, None);
    assert_eq!(e.datacontentencoding, None);
    assert_eq!(e.extensions["schemaurl"], ExtValue::String("/x".into()));
    assert_eq!(
        e.extensions["datacontentencoding"],
        ExtValue::String("base64".into())
    );
}
