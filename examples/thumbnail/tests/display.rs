//! `event-display`, the quickstart's second subscriber: it prints each event on one line, with
//! the subject decoded from the percent-encoding the HTTP binding gives `ce-` headers.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn prints_each_event_with_its_subject_decoded() {
    let mut display = Command::new(env!("CARGO_BIN_EXE_event-display"))
        .env("DISPLAY_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(display.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("event-display listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "t-1")
        .header("ce-source", "/switchyard/examples/thumbnail")
        .header("ce-type", "com.example.thumbnail.created")
        .header(
            "ce-subject",
            "thumbnails/holiday%20photos/plage%20%C3%A9t%C3%A9.jpg",
        )
        .header("content-type", "application/json")
        .body(r#"{"width":256}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let printed = lines.next().unwrap().unwrap();
    assert_eq!(
        printed,
        r#"com.example.thumbnail.created /switchyard/examples/thumbnail subject=thumbnails/holiday photos/plage été.jpg id=t-1 {"width":256}"#
    );
    let _ = display.kill();
    let _ = display.wait();
}
