//! The thumbnail function on its own, over HTTP: what it ignores, and that an unreachable
//! store is a 503 (the broker retries) rather than a 4xx (the broker would dead-letter).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the function against a store nobody listens on.
fn start() -> (Killed, String) {
    // A port that was free a moment ago: nothing answers there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut child = Command::new(env!("CARGO_BIN_EXE_thumbnail"))
        .env("THUMBNAIL_LISTEN", "127.0.0.1:0")
        .env("S3_ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    (Killed(child), url)
}

async fn post(url: &str, ty: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-1")
        .header("ce-source", "aws:s3.us-east-1.photos")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"s3":{{"bucket":{{"name":"photos"}},"object":{{"key":"{key}"}}}}}}"#
        ))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ignores_other_events_and_its_own_output_and_answers_503_when_the_store_is_down() {
    let (_f, url) = start();
    // Another type: 200, no reply.
    let resp = post(&url, "com.amazonaws.s3.ObjectRemoved:Delete", "a.jpg").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("ce-type").is_none());
    // Its own output (same bucket, under the prefix): 200, no reply, the store is not asked.
    let resp = post(
        &url,
        "com.amazonaws.s3.ObjectCreated:Put",
        "thumbnails/a.jpg",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("ce-type").is_none());
    // An image it should make a thumbnail of, with the store down: 503, retried by the broker.
    let resp = post(&url, "com.amazonaws.s3.ObjectCreated:Put", "a.jpg").await;
    assert_eq!(resp.status(), 503);
    // Not an S3 record at all: 422, dead-lettered.
    let resp = reqwest::Client::new()
        .post(&url)
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-2")
        .header("ce-source", "/x")
        .header("ce-type", "com.amazonaws.s3.ObjectCreated:Put")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}
