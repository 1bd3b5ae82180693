//! Black-box tests of broker ingress (spec/ingress.md): the real binary, real sockets, and
//! the store read back with `switchyard events`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Switchyard, TWO_BROKERS, binary, client, minimal, problem};
use switchyard_core::{Data, ExtValue, SpecVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEFAULT: &str = "/default/default";

fn attrs<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    list.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn binary_mode_is_stored_exactly_as_sent() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    let body = br#"{ "hello" :  "world" }"#.to_vec();
    let resp = binary(
        &c,
        &sy.url(DEFAULT),
        &[
            ("specversion", "1.0"),
            ("id", "e-1"),
            ("source", "https://example.com/src"),
            ("type", "com.example.created"),
            ("subject", "orders/1"),
            ("time", "2018-04-05T17:31:00.123+02:00"),
            ("dataschema", "https://example.com/schema.json"),
            ("myext", "some value"),
        ],
    )
    .header("content-type", "application/json; charset=utf-8")
    .body(body.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(resp.bytes().await.unwrap().is_empty());

    let stored = sy.stored("default/default");
    assert_eq!(stored.len(), 1);
    let (offset, e) = &stored[0];
    assert_eq!(*offset, 0);
    assert_eq!(e.id, "e-1");
    assert_eq!(e.source, "https://example.com/src");
    assert_eq!(e.ty, "com.example.created");
    assert_eq!(e.subject.as_deref(), Some("orders/1"));
    // The time text and its offset are kept, not converted to UTC.
    assert_eq!(e.time.as_deref(), Some("2018-04-05T17:31:00.123+02:00"));
    assert_eq!(
        e.dataschema.as_deref(),
        Some("https://example.com/schema.json")
    );
    assert_eq!(
        e.datacontenttype.as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        e.extensions.get("myext"),
        Some(&ExtValue::String("some value".into()))
    );
    assert_eq!(e.data_bytes().unwrap().as_ref(), body.as_slice());
    assert_eq!(
        e.extensions.get("knativebrokerttl"),
        Some(&ExtValue::Integer(255))
    );
    let arrival = e.extensions.get("knativearrivaltime").unwrap();
    assert!(switchyard_core::validate::is_rfc3339(
        &arrival.to_canonical_string()
    ));
}

#[tokio::test]
async fn structured_mode_is_detected_case_insensitively_and_data_kept_raw() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let body = r#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t.structured",
        "datacontenttype":"application/json","data": { "b" : [1, 2.50, "x"] } ,"count":7,"flag":true}"#;
    let resp = client()
        .post(sy.url(DEFAULT))
        .header(
            "content-type",
            "Application/CloudEvents+JSON; charset=UTF-8",
        )
        // ce- headers must be ignored in structured mode.
        .header("ce-id", "not-this-one")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let stored = sy.stored("default/default");
    let e = &stored[0].1;
    assert_eq!(e.id, "s-1");
    assert_eq!(e.data, Data::Json(r#"{ "b" : [1, 2.50, "x"] }"#.into()));
    assert_eq!(e.extensions.get("count"), Some(&ExtValue::Integer(7)));
    assert_eq!(e.extensions.get("flag"), Some(&ExtValue::Boolean(true)));
}

#[tokio::test]
async fn batch_mode_is_stored_all_or_nothing() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    let good = r#"[
        {"specversion":"1.0","id":"b-1","source":"/b","type":"t"},
        {"specversion":"1.0","id":"b-2","source":"/b","type":"t","data_base64":"AAEC"},
        {"specversion":"1.0","id":"b-3","source":"/b","type":"t","data":null}
    ]"#;
    let resp = c
        .post(sy.url(DEFAULT))
        .header("content-type", "application/cloudevents-batch+json")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let bad = r#"[
        {"specversion":"1.0","id":"x-1","source":"/b","type":"t"},
        {"specversion":"1.0","id":"x-2","source":"/b"},
        {"specversion":"1.0","id":"x-3","source":"/b","type":"t"}
    ]"#;
    let resp = c
        .post(sy.url(DEFAULT))
        .header("content-type", "application/cloudevents-batch+json")
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let p = problem(resp).await;
    assert_eq!(p["index"], 1);
    assert_eq!(p["attribute"], "type");

    let resp = c
        .post(sy.url(DEFAULT))
        .header("content-type", "application/cloudevents-batch+json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        202,
        "an empty batch is accepted and stores nothing"
    );

    let stored = sy.stored("default/default");
    let ids: Vec<&str> = stored.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["b-1", "b-2", "b-3"]);
    assert_eq!(stored[1].1.data, Data::Binary(vec![0u8, 1, 2].into()));
    assert_eq!(stored[2].1.data, Data::Json("null".into()));
    let offsets: Vec<u64> = stored.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [0, 1, 2]);
}

#[tokio::test]
async fn percent_encoded_and_quoted_headers_are_decoded() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    let resp = binary(
        &c,
        &sy.url(DEFAULT),
        &[
            ("specversion", "1.0"),
            ("id", "p-1"),
            ("source", "/p"),
            ("type", "t"),
            ("subject", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
            ("lower", "%e2%82%ac"),
            ("quoted", r#""say \"hi\" %25""#),
            ("needless", "%41%42"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let stored = sy.stored("default/default");
    let e = &stored[0].1;
    assert_eq!(e.subject.as_deref(), Some("Euro € 😀"));
    assert_eq!(e.attribute("lower").as_deref(), Some("€"));
    assert_eq!(e.attribute("quoted").as_deref(), Some(r#"say "hi" %"#));
    assert_eq!(e.attribute("needless").as_deref(), Some("AB"));
    assert_eq!(e.data, Data::Absent);
}

#[tokio::test]
async fn cloudevents_0_3_is_accepted_in_both_modes() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    let resp = binary(
        &c,
        &sy.url(DEFAULT),
        &[
            ("specversion", "0.3"),
            ("id", "old-1"),
            ("source", "/old"),
            ("type", "t"),
            ("schemaurl", "/schema"),
        ],
    )
    .body("x")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = c
        .post(sy.url(DEFAULT))
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"0.3","id":"old-2","source":"/old","type":"t","datacontentencoding":"base64","data":"aGk="}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let stored = sy.stored("default/default");
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|(_, e)| e.specversion == SpecVersion::V03)
    );
    assert_eq!(stored[0].1.dataschema.as_deref(), Some("/schema"));
    assert_eq!(stored[1].1.datacontentencoding.as_deref(), Some("base64"));
}

#[tokio::test]
async fn invalid_events_get_400_naming_the_attribute() {
    let sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    // Each required attribute missing, in binary mode.
    for missing in ["id", "source", "type"] {
        let list: Vec<_> = minimal("m")
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let resp = binary(&c, &sy.url(DEFAULT), &attrs(&list))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "binary without {missing}");
        let p = problem(resp).await;
        assert_eq!(p["attribute"], missing);
        assert!(p["detail"].as_str().unwrap().contains(missing));
    }
    // ... and in structured mode, specversion included.
    for missing in ["specversion", "id", "source", "type"] {
        let mut obj = serde_json::json!({"specversion":"1.0","id":"m","source":"/s","type":"t"});
        obj.as_object_mut().unwrap().remove(missing);
        let resp = c
            .post(sy.url(DEFAULT))
            .header("content-type", "application/cloudevents+json")
            .body(obj.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "structured without {missing}");
        assert_eq!(problem(resp).await["attribute"], missing);
    }
    // Unknown specversion.
    let mut list = minimal("v");
    list[0].1 = "2.0".into();
    let resp = binary(&c, &sy.url(DEFAULT), &attrs(&list))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let p = problem(resp).await;
    assert_eq!(p["attribute"], "specversion");
    assert!(p["detail"].as_str().unwrap().contains("2.0"));
    // No ce-specversion and no structured content type: not a CloudEvent.
    let resp = c
        .post(sy.url(DEFAULT))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        problem(resp).await["detail"]
            .as_str()
            .unwrap()
            .contains("not a CloudEvent")
    );
    // A format other than JSON.
    let resp = c
        .post(sy.url(DEFAULT))
        .header("content-type", "application/cloudevents+xml")
        .body("<event/>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    problem(resp).await;
}

#[tokio::test]
async fn ttl_guard() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    for (ttl, status) in [("0", 400), ("-1", 400), ("abc", 400), ("5", 202)] {
        let mut list = minimal(&format!("ttl{ttl}"));
        list.push(("knativebrokerttl", ttl.to_owned()));
        let resp = binary(&c, &sy.url("/team-a/orders"), &attrs(&list))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "ttl {ttl}");
        if status == 400 {
            assert_eq!(problem(resp).await["attribute"], "knativebrokerttl");
        }
    }
    // Absent: the broker's spec.ttl (10 for team-a/orders).
    let resp = binary(&c, &sy.url("/team-a/orders"), &attrs(&minimal("no-ttl")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let stored = sy.stored("team-a/orders");
    let ttls: Vec<_> = stored
        .iter()
        .map(|(_, e)| (e.id.as_str(), e.extensions.get("knativebrokerttl").cloned()))
        .collect();
    assert_eq!(
        ttls,
        [
            ("ttl5", Some(ExtValue::Integer(5))),
            ("no-ttl", Some(ExtValue::Integer(10)))
        ]
    );
}

#[tokio::test]
async fn unknown_brokers_paths_and_methods() {
    let sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    let resp = binary(&c, &sy.url("/default/nope"), &attrs(&minimal("x")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        problem(resp).await["detail"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    let resp = c.get(sy.url("/a/b/c")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    problem(resp).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let resp = c
            .request(method.clone(), sy.url(DEFAULT))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        assert_eq!(resp.headers()["allow"], "POST, OPTIONS");
        problem(resp).await;
    }
}

#[tokio::test]
async fn webhook_handshake() {
    let sy = Switchyard::start(TWO_BROKERS);
    let resp = client()
        .request(reqwest::Method::OPTIONS, sy.url(DEFAULT))
        .header("WebHook-Request-Origin", "eventemitter.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["webhook-allowed-origin"],
        "eventemitter.example.com"
    );
    assert_eq!(resp.headers()["webhook-allowed-rate"], "*");
    assert_eq!(resp.headers()["allow"], "POST, OPTIONS");
}

#[tokio::test]
async fn body_limit_gives_413_with_and_without_content_length() {
    let mut sy = Switchyard::start_with(TWO_BROKERS, &["--max-body-bytes", "65536"]);
    let c = client();
    let resp = binary(&c, &sy.url(DEFAULT), &attrs(&minimal("big")))
        .body(vec![b'a'; 65_537])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    problem(resp).await;
    // Exactly at the limit is fine. (A new client: the server may close the connection it
    // answered 413 on before reading the rest, and a pooled client would reuse it.)
    let c = client();
    let resp = binary(&c, &sy.url(DEFAULT), &attrs(&minimal("at-limit")))
        .body(vec![b'a'; 65_536])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    // Chunked, so the limit is found while reading.
    let addr = sy.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /default/default HTTP/1.1\r\nHost: localhost\r\nce-specversion: 1.0\r\nce-id: chunked\r\nce-source: /c\r\nce-type: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'b'; 16 * 1024];
    for _ in 0..5 {
        let sent = async {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await
        };
        if sent.await.is_err() {
            break; // The server may answer and close before the whole body is sent.
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the status line and headers are in (or the server closes).
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf)).await
        {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let stored = sy.stored("default/default");
    let ids: Vec<&str> = stored.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["at-limit"]);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    assert_eq!(
        c.get(sy.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(c.get(sy.url("/readyz")).send().await.unwrap().status(), 200);
    let resp = binary(&c, &sy.url(DEFAULT), &attrs(&minimal("m-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = binary(&c, &sy.url(DEFAULT), &[("specversion", "1.0")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // The writer records a commit after it has answered the appends in it, so a scrape
    // right after the 202 may not show the commit yet: wait for it.
    let text = common::eventually(
        "commit metrics",
        std::time::Duration::from_secs(10),
        || async {
            let text = common::metrics(&sy).await;
            text.contains("switchyard_store_commit_batch_events_count 1")
                .then_some(text)
        },
    )
    .await;
    for needle in [
        r#"switchyard_event_count_total{namespace_name="default",broker_name="default",event_type="com.example.test",response_code="202"} 1"#,
        r#"response_code="400"} 1"#,
        "switchyard_ingress_latency_seconds_bucket",
        "switchyard_store_commit_batch_events_bucket",
        "switchyard_store_commit_seconds_bucket",
        "switchyard_store_writer_queue_depth",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // The commit's fsync is timed; the store's disk is reported for a "nearly full" alert.
    let value = |name: &str| {
        common::metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert!(
        value("switchyard_store_fsync_seconds_count") >= 1.0,
        "{text}"
    );
    let (store, free, size) = (
        value("switchyard_store_bytes"),
        value("switchyard_store_disk_free_bytes"),
        value("switchyard_store_disk_size_bytes"),
    );
    assert!(store > 0.0 && free > 0.0, "{text}");
    assert!(
        store + free <= size,
        "store {store}, free {free}, disk {size}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    let structured = |body: Vec<u8>| {
        c.post(sy.url(DEFAULT))
            .header("content-type", "application/cloudevents+json")
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("garbage", structured(b"\x00\x01garbage".to_vec()), 400),
        (
            "invalid UTF-8",
            structured(b"{\"id\":\"\xff\"}".to_vec()),
            400,
        ),
        ("empty structured body", structured(Vec::new()), 400),
        (
            "truncated JSON",
            structured(br#"{"specversion":"1.0","id":"#.to_vec()),
            400,
        ),
        ("array in structured mode", structured(b"[]".to_vec()), 400),
        (
            "id as a number",
            structured(br#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#.to_vec()),
            400,
        ),
        (
            "extension as an object",
            structured(
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{}}"#.to_vec(),
            ),
            400,
        ),
        (
            "integer out of range",
            structured(
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":2147483648}"#
                    .to_vec(),
            ),
            400,
        ),
        (
            "duplicate member",
            structured(
                br#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}"#.to_vec(),
            ),
            400,
        ),
        (
            "batch that is not an array",
            c.post(sy.url(DEFAULT))
                .header("content-type", "application/cloudevents-batch+json")
                .body("{}"),
            400,
        ),
        (
            "invalid UTF-8 in percent-encoding",
            binary(
                &c,
                &sy.url(DEFAULT),
                &[
                    ("specversion", "1.0"),
                    ("id", "%C0%A0"),
                    ("source", "/s"),
                    ("type", "t"),
                ],
            ),
            400,
        ),
        (
            "broken percent escape",
            binary(
                &c,
                &sy.url(DEFAULT),
                &[
                    ("specversion", "1.0"),
                    ("id", "a%ZZ"),
                    ("source", "/s"),
                    ("type", "t"),
                ],
            ),
            400,
        ),
        (
            "duplicate ce-id",
            binary(&c, &sy.url(DEFAULT), &attrs(&minimal("dup"))).header("ce-id", "again"),
            400,
        ),
        (
            "bad extension name",
            binary(&c, &sy.url(DEFAULT), &attrs(&minimal("n"))).header("ce-this_is_bad", "x"),
            400,
        ),
        (
            "time not RFC 3339",
            binary(&c, &sy.url(DEFAULT), &attrs(&minimal("t"))).header("ce-time", "yesterday"),
            400,
        ),
        (
            "huge header",
            binary(&c, &sy.url(DEFAULT), &attrs(&minimal("h")))
                .header("ce-subject", "s".repeat(20_000)),
            431,
        ),
    ];
    for (name, request, status) in cases {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        problem(resp).await;
    }
    // Far past hyper's own header limit the connection is refused with 431, without a body.
    let resp = binary(&c, &sy.url(DEFAULT), &attrs(&minimal("hh")))
        .header("ce-subject", "s".repeat(1_000_000))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status().as_u16(), 431);
    }
    // Still serving, and only the valid event is stored.
    let resp = binary(&c, &sy.url(DEFAULT), &attrs(&minimal("ok")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let stored = sy.stored("default/default");
    let ids: Vec<&str> = stored.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["ok"]);
}

/// A request refused before its body is read (too large by `Content-Length`, an unknown
/// broker or source, a source's caller without its token) or while chunks still come reaches
/// a client that sends its whole body before it reads the answer: Python's standard client,
/// sending 6 MiB, sees the 413, 404 or 401, not a reset connection it would retry. The server
/// reads and throws away up to 8 MiB first (lingering close); without that, this client
/// fails on every try past about 5 MiB on loopback (`requests`, which reads the answer after
/// a failed send, does not show it).
#[test]
fn a_client_still_sending_reads_the_early_refusal() {
    let config = format!(
        "{TWO_BROKERS}---\n{}",
        r#"
apiVersion: sources.switchyard.dev/v1
kind: WebhookSource
metadata: {name: tokened}
spec:
  sink: {ref: {kind: Broker, name: default}}
  auth: {bearerToken: {value: let-me-in}}
"#
    );
    let mut sy = Switchyard::start_with(&config, &["--max-body-bytes", "65536"]);
    let script = r#"
import sys, urllib.request
base = sys.argv[1]
headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/py", "ce-type": "t"}
big = b"a" * (6 << 20)
def chunks():
    for _ in range(96):
        yield b"c" * 65536
def post(path, body):
    try:
        return urllib.request.urlopen(urllib.request.Request(base + path, data=body, headers=headers)).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__
for path, body in [("/default/default", lambda: big), ("/nope/nope", lambda: big),
                   ("/default/default", chunks), ("/sources/default/tokened", lambda: big),
                   ("/sources/default/none", lambda: big)]:
    for _ in range(5):
        print(path, post(path, body()))
"#;
    let out = std::process::Command::new(common::python())
        .args(["-c", script, &sy.base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = String::from_utf8(out.stdout).unwrap();
    let expected = [
        "/default/default 413",
        "/nope/nope 404",
        "/default/default 413",
        "/sources/default/tokened 401",
        "/sources/default/none 404",
    ]
    .iter()
    .flat_map(|l| std::iter::repeat_n(*l, 5))
    .collect::<Vec<_>>();
    assert_eq!(answers.lines().collect::<Vec<_>>(), expected);
    assert!(sy.stored("default/default").is_empty());
}

/// `data` is kept as the producer sent it and scanned without recursion: 100,000 levels of
/// nesting are stored byte for byte (only the body size bounds them), and the server stays up.
#[tokio::test]
async fn deeply_nested_data_is_stored_without_recursion() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let depth = 100_000;
    let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let body =
        format!(r#"{{"specversion":"1.0","id":"deep","source":"/s","type":"t","data":{data}}}"#);
    let resp = client()
        .post(sy.url(DEFAULT))
        .header("content-type", "application/cloudevents+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let stored = sy.stored("default/default");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].1.data,
        Data::Json(data.into_boxed_str()),
        "stored as sent"
    );
}

/// The header limits at their edges (spec/limits.md): a header value of 16 KiB is taken and
/// one a byte longer is refused with 431 naming it; a request of 100 headers (hyper's limit)
/// is taken and one of 101 is refused with 431. What is refused is not stored, and the
/// server goes on serving.
#[tokio::test]
async fn header_limits_hold_at_their_edges() {
    let mut sy = Switchyard::start(TWO_BROKERS);
    let c = client();
    let subject = |id: &str, bytes: usize| {
        binary(&c, &sy.url(DEFAULT), &attrs(&minimal(id))).header("ce-subject", "s".repeat(bytes))
    };
    let at = subject("at-16k", 16 * 1024).send().await.unwrap();
    assert_eq!(at.status(), 202);
    let past = subject("past-16k", 16 * 1024 + 1).send().await.unwrap();
    assert_eq!(past.status().as_u16(), 431);
    let body = problem(past).await;
    assert!(
        body["detail"].as_str().unwrap().contains("ce-subject"),
        "{body}"
    );

    // A request of exactly `n` header lines: Host, Content-Length, Connection, the event's
    // four attributes, and extensions for the rest.
    let addr = sy.base.trim_start_matches("http://").to_owned();
    let answer_to = |id: &'static str, n: usize| {
        let addr = addr.clone();
        async move {
            let mut head = format!(
                "POST {DEFAULT} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\nce-specversion: 1.0\r\nce-id: {id}\r\nce-source: /s\r\nce-type: t\r\n"
            );
            for i in 0..n - 7 {
                head.push_str(&format!("ce-x{i}: v\r\n"));
            }
            head.push_str("\r\n");
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer).await;
            answer
        }
    };
    let taken = answer_to("h100", 100).await;
    assert!(taken.starts_with("HTTP/1.1 202"), "{taken}");
    let refused = answer_to("h101", 101).await;
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");

    let ok = binary(&c, &sy.url(DEFAULT), &attrs(&minimal("ok")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    let stored = sy.stored("default/default");
    let ids: Vec<&str> = stored.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["at-16k", "h100", "ok"]);
}
