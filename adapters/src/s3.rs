//! The S3 notification source (`S3Source`): S3 bucket notifications as CloudEvents, one per
//! record, following the CloudEvents AWS S3 adapter (`spec/sources.md`). Three ways in:
//! webhook (MinIO, Ceph RGW, any sender posting S3's JSON), SNS over HTTP(S), and SQS polling.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError};
use switchyard_broker::problem::Problem;
use switchyard_core::backoff::Backoff;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::sources::S3Source;
use switchyard_core::{CloudEvent, Data};

use crate::BackgroundTasks;
use crate::aws::{Credentials, Queue};
use crate::target::Target;
use crate::webhook::{Auth, check_auth};

/// Prefix of every S3 event type (the adapter's).
pub const TYPE_PREFIX: &str = "com.amazonaws.s3.";

/// Why a notification could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an S3 notification: {0}")]
pub struct Malformed(pub String);

fn field<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// S3's key encoding undone: `+` is a space, then percent-decoding (UTF-8; bytes that are not
/// UTF-8 become U+FFFD; a `%` not followed by two hex digits stays as it is).
pub fn decode_key(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `eventTime` as RFC 3339: kept when it has an offset of `Z`; without an offset it is UTC
/// (`Z` is added); another offset is converted to UTC.
pub fn normalise_time(text: &str) -> Result<String, Malformed> {
    let t = text.trim();
    if let Ok(parsed) = chrono::DateTime::parse_from_rfc3339(t) {
        if t.ends_with('Z') || t.ends_with('z') {
            return Ok(format!("{}Z", &t[..t.len() - 1]));
        }
        return Ok(parsed
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    }
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|_| format!("{t}Z"))
        .map_err(|_| Malformed(format!("eventTime `{text}` is not a date-time")))
}

/// The CloudEvents of one notification body (AWS's `{"Records": [...]}`, MinIO's envelope
/// around it, or an `s3:TestEvent`, which gives none).
pub fn map_notification(body: &[u8]) -> Result<Vec<CloudEvent>, Malformed> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "Records", borrow)]
        records: Option<Vec<&'a RawValue>>,
        #[serde(rename = "Event")]
        event: Option<String>,
    }
    let env: Envelope<'_> = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("the body is not the expected JSON: {e}")))?;
    let Some(records) = env.records else {
        if env.event.as_deref() == Some("s3:TestEvent") {
            return Ok(Vec::new());
        }
        return Err(Malformed("no `Records` array".into()));
    };
    let mut events: Vec<CloudEvent> = Vec::with_capacity(records.len());
    let mut ids = HashSet::new();
    for (i, raw) in records.iter().enumerate() {
        let mut event =
            map_record(raw).map_err(|Malformed(m)| Malformed(format!("record {i}: {m}")))?;
        if !ids.insert(event.id.clone()) {
            event.id = format!("{}#{i}", event.id);
            ids.insert(event.id.clone());
        }
        events.push(event);
    }
    Ok(events)
}

fn map_record(raw: &RawValue) -> Result<CloudEvent, Malformed> {
    let record: serde_json::Value =
        serde_json::from_str(raw.get()).map_err(|e| Malformed(e.to_string()))?;
    let need = |path: &[&str]| {
        field(&record, path).ok_or_else(|| Malformed(format!("`{}` is missing", path.join("."))))
    };
    let event_name = need(&["eventName"])?;
    let bucket = need(&["s3", "bucket", "name"])?;
    let raw_key = need(&["s3", "object", "key"])?;
    let event_source = field(&record, &["eventSource"]).unwrap_or("aws:s3");
    let region = field(&record, &["awsRegion"]).unwrap_or("");
    let name = event_name.strip_prefix("s3:").unwrap_or(event_name);
    let id = match (
        field(&record, &["responseElements", "x-amz-request-id"]),
        field(&record, &["responseElements", "x-amz-id-2"]),
    ) {
        (Some(r), Some(id2)) if !r.is_empty() && !id2.is_empty() => format!("{r}.{id2}"),
        (Some(r), _) if !r.is_empty() => r.to_owned(),
        _ => {
            let digest = Sha256::digest(
                format!(
                    "{bucket}/{raw_key}/{}/{event_name}/{}",
                    field(&record, &["s3", "object", "sequencer"]).unwrap_or(""),
                    field(&record, &["eventTime"]).unwrap_or("")
                )
                .as_bytes(),
            );
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("s3-{hex}")
        }
    };
    let mut event = CloudEvent::new(
        id,
        format!("{event_source}.{region}.{bucket}"),
        format!("{TYPE_PREFIX}{name}"),
    )
    .map_err(|e| Malformed(e.to_string()))?;
    let subject = decode_key(raw_key);
    event.subject = (!subject.is_empty()).then_some(subject);
    if let Some(t) = field(&record, &["eventTime"]) {
        event.time = Some(normalise_time(t)?);
    }
    event.datacontenttype = Some("application/json".into());
    event.data = Data::Json(raw.get().into());
    event.validate().map_err(|e| Malformed(e.to_string()))?;
    Ok(event)
}

/// What an SNS message asks of the source.
#[derive(Debug, PartialEq, Eq)]
pub enum SnsMessage {
    /// Confirm the subscription by fetching this URL.
    Confirm {
        /// The topic.
        topic_arn: String,
        /// `SubscribeURL`.
        url: String,
    },
    /// A notification carrying this message (an S3 notification as JSON text).
    Notification {
        /// The topic.
        topic_arn: String,
        /// `Message`.
        message: String,
    },
    /// An `UnsubscribeConfirmation`: nothing to do.
    Unsubscribed,
}

/// Reads an SNS HTTP(S) delivery body.
pub fn parse_sns(body: &[u8]) -> Result<SnsMessage, Malformed> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("the SNS body is not JSON: {e}")))?;
    let get = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Malformed(format!("the SNS message has no `{k}`")))
    };
    match get("Type")?.as_str() {
        "SubscriptionConfirmation" => Ok(SnsMessage::Confirm {
            topic_arn: get("TopicArn")?,
            url: get("SubscribeURL")?,
        }),
        "Notification" => Ok(SnsMessage::Notification {
            topic_arn: get("TopicArn")?,
            message: get("Message")?,
        }),
        "UnsubscribeConfirmation" => Ok(SnsMessage::Unsubscribed),
        other => Err(Malformed(format!("unknown SNS message type `{other}`"))),
    }
}

/// Whether `host` matches one of the patterns (`*` stands for one or more leading labels).
pub fn host_allowed(host: &str, patterns: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        if let Some((head, tail)) = p.split_once('*') {
            host.len() > head.len() + tail.len() && host.starts_with(head) && host.ends_with(tail)
        } else {
            host == p
        }
    })
}

/// One S3Source taking HTTP requests (webhook or SNS mode).
pub(crate) struct HttpSource {
    id: String,
    target: Target,
    auth: Auth,
    sns: Option<SnsSettings>,
    client: reqwest::Client,
}

struct SnsSettings {
    allowed_hosts: Vec<String>,
    topic_arns: Vec<String>,
}

fn malformed_problem(m: &Malformed) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "urn:switchyard:problem:malformed-notification",
        "malformed notification",
        m.to_string(),
    )
}

impl HttpSource {
    /// The S3Sources of `config` in an HTTP mode, by `namespace/name`.
    pub fn resolve_all(
        config: &Config,
        event_types: &Arc<EventTypePolicy>,
        client: &reqwest::Client,
    ) -> Result<Vec<(String, HttpSource)>, String> {
        let mut out = Vec::new();
        for ((ns, name), s) in &config.s3_sources {
            let id = SourceId::new(ns, name).to_string();
            let spec = &s.spec;
            let (auth, sns) = match (&spec.webhook, &spec.sns) {
                (Some(w), _) => (
                    Auth::resolve(w.auth.as_ref(), "spec.webhook.auth")
                        .map_err(|m| format!("S3Source {id}: {m}"))?,
                    None,
                ),
                (None, Some(sns)) => (
                    Auth::resolve(sns.auth.as_ref(), "spec.sns.auth")
                        .map_err(|m| format!("S3Source {id}: {m}"))?,
                    Some(SnsSettings {
                        allowed_hosts: sns.allowed_hosts(),
                        topic_arns: sns.topic_arns.clone(),
                    }),
                ),
                (None, None) => continue,
            };
            out.push((
                id.clone(),
                HttpSource {
                    id,
                    target: Target::resolve(
                        config,
                        event_types,
                        "S3Source",
                        ns,
                        name,
                        &spec.sink,
                        spec.ce_overrides.as_ref(),
                    ),
                    auth,
                    sns,
                    client: client.clone(),
                },
            ));
        }
        Ok(out)
    }

    fn malformed(&self, m: &Malformed) -> Problem {
        tracing::warn!(source = %self.id, error = %m, "refused a malformed notification");
        self.target.malformed("rejected");
        malformed_problem(m)
    }

    /// Handles one request: 202 once its events are stored, 200 for a test event or a
    /// confirmed subscription, 400 for a malformed notification.
    pub async fn handle(
        &self,
        log: &Arc<dyn EventLog>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, Problem> {
        check_auth(&self.auth, headers, &body)?;
        let notification = match &self.sns {
            None => body,
            Some(sns) => match parse_sns(&body).map_err(|m| self.malformed(&m))? {
                SnsMessage::Confirm { topic_arn, url } => {
                    return self.confirm(sns, &topic_arn, &url).await;
                }
                SnsMessage::Unsubscribed => return Ok(StatusCode::OK.into_response()),
                SnsMessage::Notification { topic_arn, message } => {
                    if !sns.topic_arns.is_empty() && !sns.topic_arns.contains(&topic_arn) {
                        return Err(Problem::new(
                            StatusCode::FORBIDDEN,
                            "urn:switchyard:problem:forbidden",
                            "topic not allowed",
                            format!("topic `{topic_arn}` is not in spec.sns.topicArns"),
                        ));
                    }
                    Bytes::from(message)
                }
            },
        };
        let mut events = map_notification(&notification).map_err(|m| self.malformed(&m))?;
        if events.is_empty() {
            tracing::info!(source = %self.id, "acknowledged a test event");
            return Ok(StatusCode::OK.into_response());
        }
        let encoded = self.target.prepare(&mut events)?;
        self.target.append(log, encoded).await?;
        Ok(StatusCode::ACCEPTED.into_response())
    }

    async fn confirm(
        &self,
        sns: &SnsSettings,
        topic_arn: &str,
        url: &str,
    ) -> Result<Response, Problem> {
        let forbidden = |detail: String| {
            tracing::warn!(source = %self.id, %detail, "refused an SNS subscription");
            Problem::new(
                StatusCode::FORBIDDEN,
                "urn:switchyard:problem:forbidden",
                "subscription refused",
                detail,
            )
        };
        if !sns.topic_arns.is_empty() && !sns.topic_arns.iter().any(|t| t == topic_arn) {
            return Err(forbidden(format!(
                "topic `{topic_arn}` is not in spec.sns.topicArns"
            )));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| self.malformed(&Malformed(format!("SubscribeURL `{url}`: {e}"))))?;
        let host = parsed.host_str().unwrap_or("");
        if !host_allowed(host, &sns.allowed_hosts) {
            return Err(forbidden(format!(
                "SubscribeURL host `{host}` is not in spec.sns.allowedHosts ({})",
                sns.allowed_hosts.join(", ")
            )));
        }
        match self
            .client
            .get(parsed)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                tracing::info!(source = %self.id, topic = %topic_arn, "confirmed the SNS subscription");
                Ok(StatusCode::OK.into_response())
            }
            Ok(r) => Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "urn:switchyard:problem:confirmation-failed",
                "subscription confirmation failed",
                format!("SubscribeURL answered {}", r.status()),
            )),
            Err(e) => Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "urn:switchyard:problem:confirmation-failed",
                "subscription confirmation failed",
                format!("SubscribeURL could not be fetched: {e}"),
            )),
        }
    }
}

struct Poller {
    id: String,
    queue: Queue,
    dead_letters: Option<Queue>,
    target: Target,
    log: Arc<dyn EventLog>,
    max_messages: u32,
    wait_s: u32,
}

fn credentials(s: &S3Source) -> Result<Credentials, String> {
    match s.spec.sqs.as_ref().and_then(|q| q.credentials.as_ref()) {
        Some(c) => Ok(Credentials {
            access_key_id: c
                .access_key_id
                .resolve()
                .map_err(|m| format!("spec.sqs.credentials.accessKeyId: {m}"))?,
            secret_access_key: c
                .secret_access_key
                .resolve()
                .map_err(|m| format!("spec.sqs.credentials.secretAccessKey: {m}"))?,
            session_token: c
                .session_token
                .as_ref()
                .map(|t| t.resolve())
                .transpose()
                .map_err(|m| format!("spec.sqs.credentials.sessionToken: {m}"))?,
        }),
        None => {
            let var = |name: &str| {
                std::env::var(name).map_err(|_| {
                    format!(
                        "no spec.sqs.credentials and the environment variable `{name}` is not set"
                    )
                })
            };
            Ok(Credentials {
                access_key_id: var("AWS_ACCESS_KEY_ID")?,
                secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            })
        }
    }
}

/// Starts a poller for every S3Source in SQS mode.
pub fn start_pollers(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: &Arc<dyn EventLog>,
    client: &reqwest::Client,
) -> Result<BackgroundTasks, String> {
    let mut pollers = Vec::new();
    for ((ns, name), s) in &config.s3_sources {
        let Some(sqs) = &s.spec.sqs else { continue };
        let id = SourceId::new(ns, name).to_string();
        let err = |m: String| format!("S3Source {id}: {m}");
        let creds = credentials(s).map_err(err)?;
        let queue = Queue::new(
            client.clone(),
            &sqs.queue_url,
            sqs.endpoint.as_deref(),
            &sqs.region,
            creds.clone(),
        )
        .map_err(err)?;
        let dead_letters = sqs
            .dead_letter_queue_url
            .as_deref()
            .map(|u| {
                Queue::new(
                    client.clone(),
                    u,
                    sqs.endpoint.as_deref(),
                    &sqs.region,
                    creds,
                )
            })
            .transpose()
            .map_err(err)?;
        pollers.push(Poller {
            id: id.clone(),
            queue,
            dead_letters,
            target: Target::resolve(
                config,
                event_types,
                "S3Source",
                ns,
                name,
                &s.spec.sink,
                s.spec.ce_overrides.as_ref(),
            ),
            log: Arc::clone(log),
            max_messages: sqs.max_messages.unwrap_or(10),
            wait_s: sqs.wait_time_seconds.unwrap_or(20),
        });
    }
    let mut tasks = BackgroundTasks::default();
    for p in pollers {
        tasks.spawn(p.run());
    }
    Ok(tasks)
}

/// The S3 notification inside an SQS message body: SNS-in-SQS is unwrapped.
fn unwrap_sqs_body(body: &str) -> Result<Vec<CloudEvent>, Malformed> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Malformed(format!("the message body is not JSON: {e}")))?;
    if v.get("Type").and_then(|t| t.as_str()) == Some("Notification")
        && let Some(message) = v.get("Message").and_then(|m| m.as_str())
    {
        return map_notification(message.as_bytes());
    }
    map_notification(body.as_bytes())
}

impl Poller {
    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        tracing::info!(source = %self.id, queue = %self.queue.url, "polling SQS");
        loop {
            match self.queue.receive(self.max_messages, self.wait_s).await {
                Ok(messages) => {
                    backoff.reset();
                    for m in messages {
                        if self.take(&m).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(source = %self.id, error = %e, retry_in_ms = pause.as_millis() as u64, "SQS receive failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Stores one message's events (waiting as long as the broker pushes back: no more
    /// messages are pulled meanwhile), then deletes it. Err only when the store shuts down.
    async fn take(&self, m: &crate::aws::Message) -> Result<(), LogError> {
        match unwrap_sqs_body(&m.body) {
            Ok(mut events) => {
                if !events.is_empty() {
                    let encoded = match self.target.prepare(&mut events) {
                        Ok(e) => e,
                        Err(refused) => {
                            self.set_aside(m, &refused.to_string()).await;
                            return Ok(());
                        }
                    };
                    self.target
                        .append_until_stored(&self.log, encoded, Vec::new())
                        .await?;
                }
                // The events are stored; a failed delete only means SQS delivers the message
                // again, and the same ids make the duplicate recognisable.
                if let Err(e) = self.queue.delete(&m.receipt_handle).await {
                    tracing::warn!(source = %self.id, message = %m.message_id, error = %e, "could not delete a stored message; SQS will deliver it again");
                }
            }
            Err(e) => self.set_aside(m, &e.to_string()).await,
        }
        Ok(())
    }

    async fn set_aside(&self, m: &crate::aws::Message, error: &str) {
        tracing::error!(source = %self.id, message = %m.message_id, %error, "malformed S3 notification");
        let action = match &self.dead_letters {
            Some(dlq) => match dlq
                .send(
                    &m.body,
                    &[("switchyard-error", error), ("switchyard-source", &self.id)],
                )
                .await
            {
                Ok(()) => match self.queue.delete(&m.receipt_handle).await {
                    Ok(()) => "moved",
                    Err(e) => {
                        tracing::warn!(source = %self.id, error = %e, "moved a malformed message but could not delete it");
                        "moved"
                    }
                },
                Err(e) => {
                    tracing::warn!(source = %self.id, error = %e, "could not move a malformed message to the dead-letter queue; it stays in the queue");
                    let _ = self.queue.hide(&m.receipt_handle, 300).await;
                    "kept"
                }
            },
            None => {
                // Left in the queue (hidden for 5 minutes) for the queue's redrive policy.
                let _ = self.queue.hide(&m.receipt_handle, 300).await;
                "kept"
            }
        };
        self.target.malformed(action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_plus_then_percent() {
        assert_eq!(decode_key("my+photo+%C3%A9t%C3%A9.jpg"), "my photo été.jpg");
        assert_eq!(decode_key("a%2Bb"), "a+b");
        assert_eq!(decode_key("100%"), "100%");
        assert_eq!(decode_key("x%zz%4"), "x%zz%4");
        assert_eq!(decode_key("%+1"), "% 1");
        assert_eq!(decode_key("%FF"), "\u{FFFD}");
    }

    #[test]
    fn times_become_utc_rfc3339() {
        assert_eq!(
            normalise_time("2026-11-28T10:00:00.123Z"),
            Ok("2026-11-28T10:00:00.123Z".into())
        );
        assert_eq!(
            normalise_time("2026-11-28T10:00:00.123456"),
            Ok("2026-11-28T10:00:00.123456Z".into())
        );
        assert_eq!(
            normalise_time("2026-11-28T11:00:00+01:00"),
            Ok("2026-11-28T10:00:00Z".into())
        );
        assert!(normalise_time("yesterday").is_err());
    }

    #[test]
    fn hosts_match_patterns() {
        let p = vec!["sns.*.amazonaws.com".to_owned(), "127.0.0.1".to_owned()];
        assert!(host_allowed("sns.us-east-1.amazonaws.com", &p));
        assert!(host_allowed("127.0.0.1", &p));
        assert!(!host_allowed("sns..amazonaws.com", &p));
        assert!(!host_allowed("evil.example.com", &p));
        assert!(!host_allowed("sns.us-east-1.amazonaws.com.evil.com", &p));
    }

    #[test]
    fn fallback_ids_differ_per_upload_and_repeat_per_notification() {
        let body = |time: &str| {
            format!(
                r#"{{"Records":[{{"eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"{time}","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k"}}}}}}]}}"#
            )
        };
        let a = map_notification(body("2026-11-28T10:00:00").as_bytes()).expect("maps");
        let b = map_notification(body("2026-11-28T10:00:01").as_bytes()).expect("maps");
        let a2 = map_notification(body("2026-11-28T10:00:00").as_bytes()).expect("maps");
        assert_ne!(a[0].id, b[0].id);
        assert_eq!(a[0].id, a2[0].id);
        assert!(a[0].id.starts_with("s3-"));
    }

    #[test]
    fn sqs_bodies_may_carry_sns_envelopes() {
        let direct = include_str!("../tests/fixtures/s3/aws_put.json");
        let via_sns = include_str!("../tests/fixtures/s3/sns_notification.json");
        let a = unwrap_sqs_body(direct).expect("maps");
        let b = unwrap_sqs_body(via_sns).expect("maps");
        assert_eq!((a.len(), b.len()), (1, 1));
        // The same event; only the data's whitespace differs (SNS carries it compact).
        let data = |e: &CloudEvent| match &e.data {
            Data::Json(raw) => serde_json::from_str::<serde_json::Value>(raw).ok(),
            _ => None,
        };
        assert_eq!(
            (&a[0].id, &a[0].subject, &a[0].time, data(&a[0])),
            (&b[0].id, &b[0].subject, &b[0].time, data(&b[0]))
        );
        assert!(unwrap_sqs_body(r#"{"Type":"Notification","Message":"nope"}"#).is_err());
    }

    #[test]
    fn malformed_bodies_say_why() {
        let err = |b: &str| map_notification(b.as_bytes()).expect_err(b).0;
        assert!(err("nope").contains("not the expected JSON"));
        assert!(err("{}").contains("no `Records`"));
        assert!(
            err(r#"{"Records":[{"eventName":"x"}]}"#)
                .contains("record 0: `s3.bucket.name` is missing")
        );
    }
}
