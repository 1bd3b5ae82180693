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

/// An SNS signing key, and its certificate served over https by a TLS terminator (socat) in
/// front of a plain server that also answers SubscribeURLs; the terminator's certificate is a
/// test CA's, which switchyard trusts through `SSL_CERT_FILE`.
struct FakeSns {
    dir: tempfile::TempDir,
    ca: common::tls::TestCa,
    /// Where the signing certificate is: `https://127.0.0.1:{port}/…pem`.
    cert_url: String,
    /// Where SubscribeURLs go: `http://127.0.0.1:{port}/`.
    confirm_url: String,
    cert_fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    confirmations: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _terminator: common::Children,
}

impl FakeSns {
    async fn start() -> FakeSns {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let ca = common::tls::TestCa::new(dir.path(), "sns");
        let key = dir.path().join("signing.key");
        let cert = dir.path().join("signing.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=sns.us-east-1.amazonaws.com", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let pem = std::fs::read_to_string(&cert).unwrap();
        let (cert_fetches, confirmations) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (fetches, confirmed) = (Arc::clone(&cert_fetches), Arc::clone(&confirmations));
        let app = axum::Router::new()
            .route(
                "/SimpleNotificationService-test.pem",
                axum::routing::get(move || {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let pem = pem.clone();
                    async move { pem }
                }),
            )
            .fallback(move || {
                confirmed.fetch_add(1, Ordering::SeqCst);
                async { "<ConfirmSubscriptionResponse/>" }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (port, terminator) = ca.terminator(&plain.to_string()).await;
        FakeSns {
            dir,
            ca,
            cert_url: format!("https://127.0.0.1:{port}/SimpleNotificationService-test.pem"),
            confirm_url: format!("http://{plain}/"),
            cert_fetches,
            confirmations,
            _terminator: terminator,
        }
    }

    /// Signs `message` as SNS does (SignatureVersion `version`: 1 is SHA1, 2 SHA256), with
    /// the string to sign written out here from AWS's description, not taken from the code.
    fn sign(&self, message: &mut serde_json::Value, version: &str) {
        use base64::Engine as _;
        message["SignatureVersion"] = version.into();
        message["SigningCertURL"] = self.cert_url.clone().into();
        let fields: &[&str] = if message["Type"] == "Notification" {
            &[
                "Message",
                "MessageId",
                "Subject",
                "Timestamp",
                "TopicArn",
                "Type",
            ]
        } else {
            &[
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        };
        let mut signed = String::new();
        for f in fields {
            if let Some(v) = message[*f].as_str() {
                signed.push_str(&format!("{f}\n{v}\n"));
            }
        }
        let path = self.dir.path().join("to-sign");
        std::fs::write(&path, signed).unwrap();
        let digest = if version == "1" { "-sha1" } else { "-sha256" };
        let out = std::process::Command::new("openssl")
            .args(["dgst", digest, "-sign"])
            .arg(self.dir.path().join("signing.key"))
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        message["Signature"] = base64::engine::general_purpose::STANDARD
            .encode(out.stdout)
            .into();
    }

    fn fetches(&self) -> usize {
        self.cert_fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn confirmations(&self) -> usize {
        self.confirmations.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_mode_checks_signatures_confirms_allowed_subscriptions_and_unwraps_notifications() {
    if !common::tools_or_skip(&["openssl", "socat"]) {
        return;
    }
    let sink = Sink::ok().await;
    let sns = FakeSns::start().await;
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
---
apiVersion: sources.switchyard.dev/v1
kind: S3Source
metadata: {{name: emulated}}
spec:
  sink: {{ref: {{kind: Broker, name: default}}}}
  sns:
    insecureSkipSignatureVerification: true
"#,
        broker_and_trigger(&sink.url)
    );
    let sy = Switchyard::start_with_env(&config, &[("SSL_CERT_FILE", &sns.ca.file("ca.pem"))]);
    let c = client();
    let post = |source: &str, body: &serde_json::Value| {
        c.post(sy.url(&format!("/sources/default/{source}")))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(serde_json::to_vec(body).unwrap())
            .send()
    };
    let detail = |v: serde_json::Value| v["detail"].as_str().unwrap().to_owned();

    // As recorded from AWS: its SigningCertURL's host is not this source's to fetch from.
    let recorded: serde_json::Value =
        serde_json::from_slice(&fixture("sns_subscription_confirmation.json")).unwrap();
    let resp = post("from-sns", &recorded).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body = problem(resp).await;
    assert_eq!(body["type"], "urn:switchyard:problem:bad-signature");
    assert!(detail(body).contains("sns.us-east-1.amazonaws.com"));

    // Signed, but its SubscribeURL points at AWS, which is not in this source's allow-list.
    let mut confirmation = recorded.clone();
    sns.sign(&mut confirmation, "1");
    let resp = post("from-sns", &confirmation).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        detail(problem(resp).await).contains("SubscribeURL host `sns.us-east-1.amazonaws.com`")
    );
    assert_eq!(
        sns.fetches(),
        1,
        "the certificate was fetched to check the signature"
    );

    confirmation["SubscribeURL"] =
        format!("{}?Action=ConfirmSubscription&Token=abc", sns.confirm_url).into();
    sns.sign(&mut confirmation, "1");
    // Changed after signing: refused, and the SubscribeURL is not fetched.
    let mut forged = confirmation.clone();
    forged["SubscribeURL"] = format!("{}?Action=Elsewhere", sns.confirm_url).into();
    let resp = post("from-sns", &forged).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(detail(problem(resp).await).contains("signature does not match"));
    assert_eq!(sns.confirmations(), 0);

    let resp = post("from-sns", &confirmation).await.unwrap();
    assert_eq!(resp.status(), 200, "confirmed before answering");
    assert_eq!(
        sns.confirmations(),
        1,
        "the signed SubscribeURL was fetched once"
    );
    // A host only a wildcard admits must not lead inside: the same signed message is refused
    // there, and neither URL is fetched.
    let resp = post("from-sns-wild", &confirmation).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(detail(problem(resp).await).contains("loopback"));
    assert_eq!(sns.confirmations(), 1);

    // Notifications, signed both ways SNS signs: stored; the certificate is fetched once in all.
    let recorded_notification: serde_json::Value =
        serde_json::from_slice(&fixture("sns_notification.json")).unwrap();
    for version in ["1", "2"] {
        let mut notification = recorded_notification.clone();
        notification["MessageId"] = format!("message-v{version}").into();
        sns.sign(&mut notification, version);
        assert_eq!(post("from-sns", &notification).await.unwrap().status(), 202);
    }
    assert_eq!(sns.fetches(), 1, "the certificate is kept");
    let got = sink.wait_for(2, WAIT).await;
    let e = got[0].event.as_ref().unwrap();
    assert_eq!(e.ty, "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(e.source, "aws:s3.us-east-1.switchyard-photos");
    assert_eq!(
        e.subject.as_deref(),
        Some("photos/2026/Été à Nice/plage 01 – coucher de soleil.jpg")
    );

    // A notification whose object was changed after signing stores nothing.
    let mut tampered = recorded_notification.clone();
    sns.sign(&mut tampered, "2");
    tampered["Message"] = tampered["Message"]
        .as_str()
        .unwrap()
        .replace("plage+01", "plage+02")
        .into();
    assert_eq!(post("from-sns", &tampered).await.unwrap().status(), 403);
    // Unsigned: 400, naming what is missing.
    let mut unsigned = recorded_notification.clone();
    unsigned.as_object_mut().unwrap().remove("Signature");
    let resp = post("from-sns", &unsigned).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(detail(problem(resp).await).contains("`Signature`"));

    // A source that skips the check takes the recorded (unverifiable) notification.
    assert_eq!(
        post("emulated", &recorded_notification)
            .await
            .unwrap()
            .status(),
        202
    );
    sink.wait_for(3, WAIT).await;
    sink.assert_stays_at(3, Duration::from_millis(300)).await;
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
