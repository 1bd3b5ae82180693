//! Talking to the moto server `scripts/test` starts (a local S3 + SQS): its URL, SQS calls in
//! the JSON protocol, and S3 object reads and writes as the owner. moto routes a request by
//! the service named in its credential scope and does not check signatures, so a fixed
//! `Authorization` header stands in for SigV4 here (the sources sign for real).
#![allow(dead_code, clippy::unwrap_used)]

/// moto's base URL.
pub fn url() -> String {
    std::env::var("SWITCHYARD_TEST_MOTO").unwrap_or_else(|_| {
        panic!("SWITCHYARD_TEST_MOTO is not set: run scripts/test, which starts moto_server")
    })
}

fn auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20261128/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

/// An SQS call (`CreateQueue`, `SendMessage`, `ReceiveMessage`, …); the answer's JSON.
pub async fn sqs(action: &str, body: serde_json::Value) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/", url()))
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .header("authorization", auth("sqs"))
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{action}: {}", resp.status());
    let bytes = resp.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

/// A key percent-encoded for an S3 path (`/` kept).
pub fn encode_path(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A PUT to S3 as the owner: a bucket (`path` = bucket), its notification
/// (`bucket?notification`) or an object (`bucket/key`, encoded here). Asserts success.
pub async fn s3_put(path: &str, content_type: &str, body: Vec<u8>) {
    let resp = reqwest::Client::new()
        .put(format!("{}/{}", url(), encode_path_query(path)))
        .header("authorization", auth("s3"))
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
}

/// A GET of an object as the owner.
pub async fn s3_get(bucket: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/{bucket}/{}", url(), encode_path(key)))
        .header("authorization", auth("s3"))
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .send()
        .await
        .unwrap()
}

fn encode_path_query(path: &str) -> String {
    match path.split_once('?') {
        Some((p, q)) => format!("{}?{q}", encode_path(p)),
        None => encode_path(path),
    }
}

/// A queue and a bucket whose `ObjectCreated` notifications go to it, named with `unique`;
/// returns the queue's URL.
pub async fn bucket_notifying_queue(bucket: &str, queue: &str) -> String {
    let queue_url = sqs("CreateQueue", serde_json::json!({ "QueueName": queue })).await["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    s3_put(bucket, "application/xml", Vec::new()).await;
    s3_put(
        &format!("{bucket}?notification"),
        "application/xml",
        format!(
            "<NotificationConfiguration><QueueConfiguration><Id>uploads</Id><Queue>arn:aws:sqs:us-east-1:123456789012:{queue}</Queue><Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>"
        )
        .into_bytes(),
    )
    .await;
    queue_url
}

/// A name part unique to this test run.
pub fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
