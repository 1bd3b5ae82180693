//! The command line: bad configuration and bad settings end with a one-line message and a
//! non-zero exit, naming the file, the resource and the field.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

fn serve_with(config: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(common::bin())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A config that should be refused but is not would serve forever: give up after 30 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (true, "still serving after 30 s".to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_configs_are_refused_with_file_resource_and_field() {
    let cases = [
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\nspec: {delivery: {retries: 3}}\n",
            vec!["bad.yaml", "Broker default/b", "spec.delivery", "retries"],
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {broker: b, brokerRef: {name: b, namespace: other}, subscriber: {uri: 'http://127.0.0.1:1/'}}\n",
            vec!["Trigger default/t", "spec.brokerRef", "not supported"],
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec: {broker: b, subscriber: {ref: {kind: Sink, name: missing}}}\n",
            vec![
                "Trigger default/t",
                "spec.subscriber.ref",
                "no Sink `missing`",
            ],
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: Bad_Name}\n",
            vec!["metadata.name", "Bad_Name"],
        ),
        (
            "apiVersion: sources.knative.dev/v1\nkind: Flux\nmetadata: {name: f}\n",
            vec!["kind", "Flux", "not supported"],
        ),
        ("{ not yaml", vec!["bad.yaml", "invalid YAML"]),
    ];
    for (config, needles) in cases {
        let (ok, stderr) = serve_with(config, &[]);
        assert!(!ok, "accepted: {config}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("switchyard: "), "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{n:?} not in {stderr:?}");
        }
    }
}

#[test]
fn a_body_limit_below_64_kib_is_refused() {
    let (ok, stderr) = serve_with(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n",
        &["--max-body-bytes", "1000"],
    );
    assert!(!ok);
    assert!(stderr.contains("at least 65536"), "{stderr}");
}

#[test]
fn validate_lists_what_a_config_defines() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(examples)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Broker default/default"));
}

#[test]
fn events_refuses_a_bad_broker_name_and_a_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    for (broker, needle) in [("nonamespace", "namespace/name"), ("a/b", "no store")] {
        let out = Command::new(common::bin())
            .args(["events", "--broker", broker, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
}

const EXPLAIN_CONFIG: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: orders}
spec:
  broker: default
  filters:
    - exact: {source: /shop}
    - cesql: "type LIKE 'com.example.order.%' AND amount > 100"
  subscriber: {uri: "http://127.0.0.1:9/"}
"#;

fn explain(event: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), EXPLAIN_CONFIG).unwrap();
    std::fs::write(dir.path().join("e.json"), event).unwrap();
    let out = Command::new(common::bin())
        .args(["explain", "--trigger", "default/orders", "--config"])
        .arg(dir.path().join("c.yaml"))
        .arg("--event")
        .arg(dir.path().join("e.json"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn explain_says_which_part_of_a_filter_fails() {
    let (ok, out) = explain(
        r#"{"specversion":"1.0","id":"1","source":"/shop","type":"com.example.order.created","amount":250}"#,
    );
    assert!(ok, "{out}");
    assert!(
        out.starts_with("match: Trigger default/orders takes event 1"),
        "{out}"
    );

    let (ok, out) = explain(
        r#"{"specversion":"1.0","id":"2","source":"/other","type":"com.example.order.created","amount":50}"#,
    );
    assert!(ok, "{out}");
    assert!(out.starts_with("no match"), "{out}");
    assert!(
        out.contains("exact `source` = '/shop': it is '/other'"),
        "{out}"
    );
    assert!(out.contains("`amount > 100` is false"), "{out}");

    let (ok, out) = explain("not json");
    assert!(!ok);
    assert!(out.contains("is not a valid JSON event"), "{out}");
}

#[test]
fn a_cesql_filter_that_does_not_compile_is_refused_at_load_with_its_position() {
    let config = EXPLAIN_CONFIG.replace("amount > 100", "amount >> 100");
    let (ok, stderr) = serve_with(&config, &[]);
    assert!(!ok);
    assert!(stderr.contains("Trigger default/orders"), "{stderr}");
    assert!(stderr.contains("spec.filters[1].cesql"), "{stderr}");
    assert!(stderr.contains("column"), "{stderr}");
    let config = EXPLAIN_CONFIG.replace("amount > 100", "NOPE(amount)");
    let (ok, stderr) = serve_with(&config, &[]);
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("nope"), "{stderr}");
}

fn send(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::bin())
        .arg("send")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn send_posts_an_event_in_either_mode_and_refusals_are_one_line() {
    let sink = common::sink::Sink::ok().await;
    let sy = common::Switchyard::start(&format!(
        "{}---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: all}}\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n",
        common::TWO_BROKERS,
        sink.url
    ));
    let base = sy.base.clone();
    let args: Vec<String> = [
        "--server",
        &base,
        "--type",
        "com.example.greeting",
        "--id",
        "g-1",
        "--subject",
        "hi",
        "--data",
        r#"{"hello":"world"}"#,
        "--ext",
        "team=core",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        send(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.starts_with("sent g-1 to "), "{out}");
    for (id, mode) in [("g-2", "structured"), ("g-3", "batch")] {
        let base2 = sy.base.clone();
        let (ok, _, err) = tokio::task::spawn_blocking(move || {
            send(&[
                "--server",
                &base2,
                "--type",
                "com.example.greeting",
                "--id",
                id,
                "--mode",
                mode,
                "--data",
                "[1,2]",
            ])
        })
        .await
        .unwrap();
        assert!(ok, "{mode}: {err}");
    }
    let got = sink.wait_for(3, std::time::Duration::from_secs(20)).await;
    let mut ids: Vec<_> = got.iter().map(|r| r.event.clone().unwrap()).collect();
    ids.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(ids[0].subject.as_deref(), Some("hi"));
    assert_eq!(
        ids[0].extensions.get("team"),
        Some(&switchyard_core::ExtValue::String("core".into()))
    );
    assert_eq!((ids[1].id.as_str(), ids[2].id.as_str()), ("g-2", "g-3"));

    // Refused by the server (no such broker) and refused before sending (a bad extension).
    let base3 = sy.base.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        send(&["--server", &base3, "--broker", "nope/none", "--type", "t"])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, _, err) = send(&["--type", "t", "--ext", "Bad=1"]);
    assert!(!ok);
    assert!(err.contains("--ext `Bad=1`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

fn tail(args: &[&str]) -> std::process::Child {
    Command::new(common::bin())
        .arg("tail")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn tail_streams_stored_and_new_events_with_filters() {
    let sy = common::Switchyard::start(common::TWO_BROKERS);
    let base = sy.base.clone();
    let post = |id: &'static str, ty: &'static str, subject: &'static str| {
        let base = base.clone();
        async move {
            let (ok, _, err) = tokio::task::spawn_blocking(move || {
                send(&[
                    "--server",
                    &base,
                    "--type",
                    ty,
                    "--id",
                    id,
                    "--subject",
                    subject,
                ])
            })
            .await
            .unwrap();
            assert!(ok, "{err}");
        }
    };
    post("1", "com.example.a", "x").await;
    post("2", "com.example.b", "x").await;
    post("3", "com.example.a", "y").await;

    // What is stored, filtered by type, then the stream ends.
    let out = tail(&[
        "--server",
        &sy.base,
        "--from-beginning",
        "--no-follow",
        "--type",
        "com.example.a",
        "-o",
        "json",
    ])
    .wait_with_output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["1", "3"]);

    // Following from the end with a CESQL filter: only the new matching event, then the limit
    // ends it. The stream is open once the server has answered; a first event shows that.
    let follower = tail(&[
        "--server",
        &sy.base,
        "--filter",
        "subject = 'wanted'",
        "--limit",
        "1",
    ]);
    // Events keep coming until the follower has seen one (it may start after the first).
    let mut n = 0u32;
    let child = std::sync::Arc::new(std::sync::Mutex::new(follower));
    loop {
        post("skip", "com.example.a", "other").await;
        post("want", "com.example.a", "wanted").await;
        n += 1;
        if child.lock().unwrap().try_wait().unwrap().is_some() {
            break;
        }
        assert!(n < 200, "tail never saw the event");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let child = std::sync::Arc::try_unwrap(child)
        .unwrap()
        .into_inner()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("subject=wanted") && text.contains("id=want"),
        "{text}"
    );

    // An unknown broker is one line and a non-zero exit.
    let out = tail(&["--server", &sy.base, "--broker", "nope/none", "--no-follow"])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404") && err.trim().lines().count() == 1,
        "{err}"
    );
}

/// A CESQL filter that does not compile is a load error like the others: one line naming the
/// file, the Trigger and the field, said once (issue 25 found it without the file and twice).
#[test]
fn a_bad_cesql_filter_is_one_load_error_line_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.yaml");
    std::fs::write(
        &config,
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n---\n\
         apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\n\
         spec: {broker: default, filters: [{cesql: 'type = '}], subscriber: {uri: 'http://127.0.0.1:1/'}}\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "switchyard: {}: Trigger default/t: spec.filters[0].cesql: line 1, column 8: expected an expression, found the end of the expression\n",
        config.display()
    );
    assert_eq!(stderr, want);
}

#[test]
fn display_prints_each_event_it_receives_and_refuses_what_is_not_one() {
    use std::io::{BufRead, BufReader};
    let mut display = Command::new(common::bin())
        .args(["display", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(display.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("switchyard display listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let sent = Command::new(common::bin())
        .args([
            "send",
            "--to",
            &url,
            "--type",
            "com.example.hello",
            "--source",
            "/curl",
        ])
        .args(["--data", r#"{"hello":"world"}"#, "--ext", "team=core"])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let printed = lines.next().unwrap().unwrap();
    assert!(
        printed.starts_with("com.example.hello  /curl  subject=-  id=")
            && printed.ends_with(r#"  {"hello":"world"}"#),
        "{printed}"
    );
    let refused = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            "plain",
            &url,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "400");
    let _ = display.kill();
    let _ = display.wait();
}

/// A scan that finds nothing to send still sends: an empty line every 10,000 records or
/// 250 ms (which `switchyard tail` skips), so the scan yields and a client that left is
/// noticed at the next write instead of after the whole scan.
#[tokio::test]
async fn a_long_scan_that_finds_nothing_keeps_its_stream_alive() {
    let sy = common::Switchyard::start(common::TWO_BROKERS);
    for chunk in 0..25 {
        common::post_batch(
            &sy,
            "/default/default",
            (0..1000).map(|i| format!("e{chunk}-{i}")),
        )
        .await;
    }
    let body = common::events_text(&sy, "from=start&follow=false&type=none").await;
    assert!(!body.is_empty(), "a scan of 25,000 records sent nothing");
    assert!(body.chars().all(|c| c == '\n'), "{body:?}");
    // The CLI shows nothing for them.
    let out = tail(&[
        "--server",
        &sy.base,
        "--from-beginning",
        "--no-follow",
        "--type",
        "none",
    ])
    .wait_with_output()
    .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A following stream whose client goes away ends: the server closes its side of each
/// connection promptly (here the clients close theirs; one that vanishes without a word is
/// noticed at the next keep-alive line, within 5 s) rather than polling for nobody.
#[tokio::test]
async fn following_streams_end_when_their_clients_go_away() {
    const STREAMS: usize = 10;
    let sy = common::Switchyard::start(common::TWO_BROKERS);
    let fds = format!("/proc/{}/fd", sy.child.id());
    // The server's open sockets (its listener among them).
    let sockets = || {
        std::fs::read_dir(&fds)
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    };
    let before = sockets();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        // A client each, so dropping it closes its connection.
        let client = reqwest::Client::new();
        let stream = client
            .get(sy.url("/api/v1/namespaces/default/brokers/default/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        streams.push((client, stream));
    }
    let open = sockets();
    assert!(open >= before + STREAMS, "{before} sockets, then {open}");
    drop(streams);
    common::eventually(
        "the server closes the streams' connections",
        std::time::Duration::from_secs(30),
        || async { (sockets() <= before).then_some(()) },
    )
    .await;
}

/// A following stream ends when the server shuts down, so it does not hold the shutdown
/// for the grace period (30 s) that cuts off requests in flight.
#[tokio::test]
async fn a_following_stream_ends_at_shutdown() {
    let mut sy = common::Switchyard::start(common::TWO_BROKERS);
    let mut stream = common::client()
        .get(sy.url("/api/v1/namespaces/default/brokers/default/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let asked = std::time::Instant::now();
    let stopping = tokio::task::spawn_blocking(move || sy.stop());
    // The stream ends (or breaks off) rather than waiting for events that will not come.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            match stream.chunk().await {
                Ok(Some(c)) if c.iter().all(|b| *b == b'\n') => continue,
                other => break other.map(|c| c.is_none()).unwrap_or(true),
            }
        }
    })
    .await
    .unwrap();
    assert!(ended);
    stopping.await.unwrap();
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(15),
        "the shutdown waited {:?} for the stream",
        asked.elapsed()
    );
}

/// `serve --log-format json` writes one JSON object per stderr line, with the event's fields
/// beside `message` (what a log collector indexes); the default stays text.
#[test]
fn serve_writes_json_log_lines_when_asked() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let serve = |format: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, common::TWO_BROKERS).unwrap();
        let mut cmd = Command::new(common::bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(format) = format {
            cmd.args(["--log-format", format]);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("switchyard listening on "), "{line}");
        common::signal(child.id(), "-TERM");
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{:?}", out.status);
        String::from_utf8(out.stderr).unwrap()
    };

    let json = serve(Some("json"));
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["message"] == "switchyard is serving")
        .unwrap_or_else(|| panic!("no start line in\n{json}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert_eq!(
        serving["brokers"], 2,
        "the event's fields, flattened: {serving}"
    );
    assert!(serving["timestamp"].is_string(), "{serving}");
    assert!(
        lines.iter().any(|l| l["message"] == "store closed"),
        "the graceful stop is logged too:\n{json}"
    );

    // Why it stopped, when it cannot serve, is a JSON line too (an address already taken).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), common::TWO_BROKERS).unwrap();
    let out = Command::new(common::bin())
        .args(["serve", "--log-format", "json", "--listen"])
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}):\n{stderr}"));
    assert_eq!(last["message"], "switchyard stopped", "{last}");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{last}"
    );

    let text = serve(None);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_err() && first.contains("INFO"),
        "text by default: {first}"
    );
}

/// `switchyard healthcheck` (a container's health check, without a shell): 0 when the server
/// answers 200, 1 with one line otherwise; `--ready` asks `/readyz`.
#[test]
fn healthcheck_exits_zero_for_a_healthy_server_and_one_with_the_reason_otherwise() {
    let check = |args: &[&str]| {
        let out = Command::new(common::bin())
            .arg("healthcheck")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };
    let sy = common::Switchyard::start(common::TWO_BROKERS);
    let (code, out, _) = check(&["--server", &sy.base]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("/healthz: 200"), "{out}");
    assert_eq!(check(&["--server", &sy.base, "--ready"]).0, Some(0));

    // Alive but not ready: below its free-space reserve, /readyz is 503 and says why.
    let full = common::Switchyard::start_with(
        common::TWO_BROKERS,
        &["--min-free-disk-bytes", "18446744073709551615"],
    );
    assert_eq!(check(&["--server", &full.base]).0, Some(0), "alive");
    // An event refused for the disk is what finds it (as spec/limits.md says).
    let refused = Command::new(common::bin())
        .args([
            "send",
            "--type",
            "t",
            "--to",
            &format!("{}/default/default", full.base),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let (code, _, err) = check(&["--server", &full.base, "--ready"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not ready") && err.contains("503"), "{err}");

    // Nothing listening: one line, exit 1.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, err) = check(&[
        "--server",
        &format!("http://{unused}"),
        "--timeout-ms",
        "500",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not healthy"), "{err}");
}
