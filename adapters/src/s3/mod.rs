//! The S3 notification source (`S3Source`): S3 bucket notifications as CloudEvents, one per
//! record, following the CloudEvents AWS S3 adapter (`spec/sources.md`). Three ways in:
//! webhook (MinIO, Ceph RGW, any sender posting S3's JSON), SNS over HTTP(S), and SQS polling.
//!
//! This file maps notifications to CloudEvents; [`http`] serves the webhook and SNS ways in,
//! [`sqs`] polls queues.

use std::collections::HashSet;

use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use switchyard_core::{CloudEvent, Data};

use crate::SourceError;
use crate::kind::{Kind, Setup, StartFuture, Started};

mod http;
mod signature;
mod sqs;

pub(crate) use http::HttpSource;
pub use sqs::start_pollers;

/// Where S3Source `ns/name`'s events go, whichever way they come in.
fn target(
    config: &switchyard_core::config::Config,
    event_types: &std::sync::Arc<switchyard_broker::eventtypes::EventTypePolicy>,
    ns: &str,
    name: &str,
    spec: &switchyard_core::sources::S3SourceSpec,
) -> crate::target::Target {
    let overrides = spec.ce_overrides.as_ref();
    crate::target::Target::resolve(
        config,
        event_types,
        "S3Source",
        ns,
        name,
        &spec.sink,
        overrides,
    )
}

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
    parse_sns_value(&sns_json(body)?)
}

/// An SNS HTTP(S) delivery body as JSON.
pub fn sns_json(body: &[u8]) -> Result<serde_json::Value, Malformed> {
    serde_json::from_slice(body).map_err(|e| Malformed(format!("the SNS body is not JSON: {e}")))
}

/// What an SNS message (as JSON) asks of the source.
pub fn parse_sns_value(v: &serde_json::Value) -> Result<SnsMessage, Malformed> {
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
    host_match(host, patterns).is_some()
}

/// Whether a DNS label is an AWS region's name (`us-east-1`, `cn-north-1`, `us-gov-west-1`).
fn aws_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// How `host` matched `patterns`: `Some(true)` by a pattern with a wildcard, `Some(false)` by
/// an exact one, `None` not at all. In a pattern, `*` stands for one DNS label (never a dot,
/// so `sns.*.amazonaws.com` cannot match an S3 bucket's `sns.attacker.s3.amazonaws.com`), and
/// `{region}` for an AWS region's name (so the default cannot match `sns.s3.amazonaws.com`,
/// the virtual host of a bucket named `sns`).
pub fn host_match(host: &str, patterns: &[String]) -> Option<bool> {
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let mut found = None;
    for p in patterns {
        let p = p.to_ascii_lowercase();
        let want: Vec<&str> = p.split('.').collect();
        if want.len() != labels.len() {
            continue;
        }
        let mut wild = false;
        let ok = want.iter().zip(&labels).all(|(w, l)| match *w {
            "*" => {
                wild = true;
                !l.is_empty()
            }
            "{region}" => {
                wild = true;
                aws_region(l)
            }
            w => w == *l,
        });
        if ok {
            if !wild {
                return Some(false);
            }
            found = Some(true);
        }
    }
    found
}

/// S3Sources that speak https to AWS (an SQS queue, an SNS subscription to confirm) need the
/// system's CA certificates: refused at start, naming the source, where there are none.
fn check_trust_roots(config: &switchyard_core::config::Config) -> Result<(), SourceError> {
    use switchyard_triggers::delivery::needs_trust_roots;
    for ((ns, name), s) in &config.s3_sources {
        let id = switchyard_core::id::SourceId::new(ns, name);
        if let Some(sqs) = &s.spec.sqs {
            let url = sqs.endpoint.as_deref().unwrap_or(&sqs.queue_url);
            needs_trust_roots(&format!("S3Source {id}: its SQS endpoint"), url)
                .map_err(SourceError)?;
        }
        if s.spec.sns.is_some() {
            let confirm = "https://sns.amazonaws.com/";
            needs_trust_roots(&format!("S3Source {id}: SNS confirmation"), confirm)
                .map_err(SourceError)?;
        }
    }
    Ok(())
}

/// The S3Source kind: HTTP sources in `webhook` and `sns` mode, pollers in `sqs` mode.
pub(crate) const KIND: Kind = Kind {
    name: "S3Source",
    describe: |config| {
        config
            .s3_sources
            .iter()
            .map(|((ns, name), s)| {
                let how = match (&s.spec.webhook, &s.spec.sns, &s.spec.sqs) {
                    (Some(_), _, _) => format!("webhook at POST /sources/{ns}/{name}"),
                    (_, Some(_), _) => format!("SNS at POST /sources/{ns}/{name}"),
                    (_, _, Some(q)) => format!("polling SQS {}", q.queue_url),
                    _ => String::new(),
                };
                format!("S3Source {ns}/{name}: {how}")
            })
            .collect()
    },
    check: None,
    start: start_kind,
};

fn start_kind<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        check_trust_roots(s.config)?;
        let http = HttpSource::resolve_all(s.config, s.event_types, s.client)
            .map_err(SourceError)?
            .into_iter()
            .map(|(key, h)| (key, crate::kind::HttpSource::S3(h)))
            .collect();
        let pollers =
            start_pollers(s.config, s.event_types, s.log, s.client).map_err(SourceError)?;
        Ok(Started {
            tasks: Some(pollers),
            http,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::sqs::unwrap_sqs_body;
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
        assert_eq!(host_match("127.0.0.1", &p), Some(false));
        assert_eq!(host_match("sns.us-east-1.amazonaws.com", &p), Some(true));
        assert!(!host_allowed("sns..amazonaws.com", &p));
        assert!(!host_allowed("evil.example.com", &p));
        assert!(!host_allowed("sns.us-east-1.amazonaws.com.evil.com", &p));
        // An S3 bucket's virtual host is never an SNS host.
        assert!(!host_allowed("sns.attacker.s3.amazonaws.com", &p));
        let default = switchyard_core::sources::S3Sns::default_allowed_hosts();
        assert!(host_allowed("sns.eu-west-1.amazonaws.com", &default));
        assert!(host_allowed("sns.us-gov-west-1.amazonaws.com", &default));
        assert!(host_allowed("sns.cn-north-1.amazonaws.com.cn", &default));
        assert!(!host_allowed("sns.s3.amazonaws.com", &default));
        assert!(!host_allowed("sns.s3-eu-west-1.amazonaws.com", &default));
        assert!(!host_allowed("sns.attacker.s3.amazonaws.com", &default));
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
        let direct = include_str!("../../tests/fixtures/s3/aws_put.json");
        let via_sns = include_str!("../../tests/fixtures/s3/sns_notification.json");
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
