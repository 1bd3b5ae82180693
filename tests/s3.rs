//! Black-box tests of the S3 notification source (S3Source, spec/sources.md): recorded
//! MinIO/AWS/SNS payloads posted to the real binary, and real uploads to a local moto server
//! whose bucket notifies an SQS queue the source polls.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::sink::Sink;
use common::{Switchyard, client, metrics, moto, problem};

const WAIT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures/s3")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn broker_and_trigger(sink: &str) -> String {
    common::broker_and_trigger(
        "uploads",
        "filters: [{prefix: {type: com.amazonaws.s3.}}]",
        sink,
    )
}

#[tokio::test]
async fn webhook_mode_maps_minio_and_aws_payloads_and_refuses_bad_ones() {
    let sink = Sink::ok().await;
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: S3Source
metadata: {{name: minio}}
spec:
  sink: {{ref: {{kind: Broker, name: default}}}}
  webhook:
    auth: {{bearerToken: {{value: minio-token}}}}
"#,
        broker_and_trigger(&sink.url)
    );
    let mut sy = Switchyard::start(&config);
    let c = client();
    let post = |body: Vec<u8>, token: Option<&str>| {
        let mut req = c
            .post(sy.url("/sources/default/minio"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // Refused: no token, a wrong token, a body that is not a notification.
    assert_eq!(
        post(fixture("minio_put.json"), None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(fixture("minio_put.json"), Some("nope"))
            .await
            .unwrap()
            .status(),
        401
    );
    let resp = post(br#"{"hello": 1}"#.to_vec(), Some("minio-token"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let p = problem(resp).await;
    assert_eq!(p["type"], "urn:switchyard:problem:malformed-notification");
    assert!(p["detail"].as_str().unwrap().contains("Records"), "{p}");
    // The test event is acknowledged, not forwarded.
    assert_eq!(
        post(fixture("test_event.json"), Some("minio-token"))
            .await
            .unwrap()
            .status(),
        200
    );

    assert_eq!(
        post(fixture("minio_put.json"), Some("minio-token"))
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        post(fixture("aws_delete_two_records.json"), Some("minio-token"))
            .await
            .unwrap()
            .status(),
        202
    );
    let got = sink.wait_for(3, WAIT).await;
    let events: Vec<_> = got.iter().map(|r| r.event.clone().unwrap()).collect();
    let minio = events
        .iter()
        .find(|e| e.source.starts_with("minio:s3"))
        .unwrap();
    assert_eq!(minio.ty, "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(minio.source, "minio:s3..media");
    assert_eq!(
        minio.subject.as_deref(),
        Some("uploads/2026/naïve café/menu été.pdf")
    );
    let subjects: Vec<_> = events.iter().filter_map(|e| e.subject.clone()).collect();
    assert!(
        subjects.contains(&"invoices/2026/INV-1042+credit note.pdf".to_owned()),
        "{subjects:?}"
    );
    sink.assert_stays_at(3, Duration::from_millis(300)).await;
    sy.stop();
    assert_eq!(
        sy.stored("default/default").len(),
        3,
        "refused requests stored nothing"
    );
}

#[tokio::test]
async fn sns_mode_confirms_allowed_subscriptions_and_unwraps_notifications() {
    let sink = Sink::ok().await;
    // SNS's SubscribeURL answers a plain GET.
    let confirmed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&confirmed);
    let app = axum::Router::new().fallback(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "<ConfirmSubscriptionResponse/>" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let confirm_url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: S3Source
metadata: {{name: from-sns}}
spec:
  sink: {{ref: {{kind: Broker, name: default}}}}
  sns:
    allowedHosts: [127.0.0.1]
---
apiVersion: sources.switchyard.dev/v1
kind: S3Source
metadata: {{name: from-sns-wild}}
spec:
  sink: {{ref: {{kind: Broker, name: default}}}}
  sns:
    allowedHosts: ['127.0.0.*']
"#,
        broker_and_trigger(&sink.url)
    );
    let sy = Switchyard::start(&config);
    let c = client();
    let mut confirmation: serde_json::Value =
        serde_json::from_slice(&fixture("sns_subscription_confirmation.json")).unwrap();
    let post = |body: Vec<u8>| {
        c.post(sy.url("/sources/default/from-sns"))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "SubscriptionConfirmation")
            .body(body)
            .send()
    };
    // The recorded URL points at AWS, which is not in this source's allow-list.
    let resp = post(serde_json::to_vec(&confirmation).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        problem(resp).await["detail"]
            .as_str()
            .unwrap()
            .contains("sns.us-east-1.amazonaws.com")
    );
    confirmation["SubscribeURL"] =
        format!("{confirm_url}?Action=ConfirmSubscription&Token=abc").into();
    let resp = post(serde_json::to_vec(&confirmation).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "confirmed before answering");
    assert_eq!(
        confirmed.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the allowed SubscribeURL was fetched once, the other not at all"
    );
    // A host only a wildcard admits must not lead inside: the same URL is refused there,
    // and not fetched.
    let resp = c
        .post(sy.url("/sources/default/from-sns-wild"))
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", "SubscriptionConfirmation")
        .body(serde_json::to_vec(&confirmation).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        problem(resp).await["detail"]
            .as_str()
            .unwrap()
            .contains("loopback")
    );
    assert_eq!(confirmed.load(std::sync::atomic::Ordering::SeqCst), 1);

    let resp = post(fixture("sns_notification.json")).await.unwrap();
    assert_eq!(resp.status(), 202);
    let got = sink.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().unwrap();
    assert_eq!(e.ty, "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(e.source, "aws:s3.us-east-1.switchyard-photos");
    assert_eq!(
        e.subject.as_deref(),
        Some("photos/2026/Été à Nice/plage 01 – coucher de soleil.jpg")
    );
}

#[tokio::test]
async fn sqs_mode_a_real_upload_reaches_a_trigger_and_malformed_messages_move_aside() {
    let unique = moto::unique();
    let bucket = format!("photos-{unique}");
    let queue = moto::bucket_notifying_queue(&bucket, &format!("uploads-{unique}")).await;
    let dlq = moto::sqs(
        "CreateQueue",
        serde_json::json!({ "QueueName": format!("bad-{unique}") }),
    )
    .await["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();

    let sink = Sink::ok().await;
    let config = format!(
        r#"{}
---
apiVersion: sources.switchyard.dev/v1
kind: S3Source
metadata: {{name: bucket}}
spec:
  sink: {{ref: {{kind: Broker, name: default}}}}
  sqs:
    queueUrl: '{queue}'
    region: us-east-1
    endpoint: '{}'
    waitTimeSeconds: 1
    deadLetterQueueUrl: '{dlq}'
    credentials:
      accessKeyId: {{value: test}}
      secretAccessKey: {{value: test}}
"#,
        broker_and_trigger(&sink.url),
        moto::url()
    );
    let sy = Switchyard::start(&config);

    let key = "incoming/my photo été.jpg";
    moto::s3_put(
        &format!("{bucket}/{key}"),
        "image/jpeg",
        vec![0xFFu8, 0xD8, 0xFF, 0xE0],
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().unwrap();
    assert_eq!(e.ty, "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(e.source, format!("aws:s3.us-east-1.{bucket}"));
    assert_eq!(e.subject.as_deref(), Some(key));
    let data: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(data["s3"]["bucket"]["name"], bucket.as_str());
    assert!(e.time.as_deref().unwrap().ends_with('Z'));

    // A message that is not a notification is moved to the dead-letter queue, with a metric.
    moto::sqs(
        "SendMessage",
        serde_json::json!({ "QueueUrl": queue, "MessageBody": "not json at all" }),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let moved = loop {
        let r = moto::sqs(
            "ReceiveMessage",
            serde_json::json!({ "QueueUrl": dlq, "WaitTimeSeconds": 1, "MessageAttributeNames": ["All"] }),
        )
        .await;
        if let Some(m) = r["Messages"].as_array().and_then(|m| m.first()).cloned() {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing reached the DLQ"
        );
    };
    assert_eq!(moved["Body"], "not json at all");
    // The metric follows the move (poll: it is counted once the message left the queue).
    loop {
        let m = metrics(&sy).await;
        if m.lines().any(|l| {
            l.starts_with("switchyard_source_malformed_total")
                && l.contains("action=\"moved\"")
                && l.ends_with(" 1")
        }) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no metric: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stored upload was deleted from the queue; nothing more reached the sink.
    let left = moto::sqs(
        "ReceiveMessage",
        serde_json::json!({ "QueueUrl": queue, "WaitTimeSeconds": 1 }),
    )
    .await;
    assert!(
        left["Messages"].as_array().is_none_or(Vec::is_empty),
        "{left}"
    );
    assert_eq!(sink.received().len(), 1);
}
