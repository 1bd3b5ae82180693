//! NATS: the NatsSource, consuming a core subject (optionally in a queue group) or a JetStream
//! stream through a durable pull consumer, and the NatsSink a trigger delivers to.
//!
//! Messages follow the CloudEvents NATS binding: `Content-Type: application/cloudevents…` is
//! structured mode, `ce-` headers binary mode (both read by the HTTP codec, which shares the
//! header rules); anything else is wrapped into an event of the source's `type`.
//!
//! JetStream messages are acked only after their events are stored; when the broker cannot
//! take them they are nak'ed with a delay, and what was never acked is redelivered by the
//! server after `ackWait`. Core NATS has no redelivery: a message in flight when Switchyard
//! stops is lost, which is why JetStream is the mode to use for events that matter.

mod sink;

pub(crate) use sink::sink;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::StreamExt as _;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError};
use switchyard_core::backoff::Backoff;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::streams::{NatsAuth, NatsDeliverPolicy, NatsJetStream, NatsSource};
use switchyard_core::{CloudEvent, Data, EventError};

use crate::SourceError;
use crate::kind::{Kind, Setup, StartFuture, Started};
use crate::target::{Target, new_id};
use switchyard_broker::tasks::Tasks;

/// The pause after a JetStream pull that failed or ended, before pulling again.
const PULL_PAUSE: Duration = Duration::from_millis(200);

/// Connects to NATS; the connection is made (and remade) in the background, so a server that
/// is down at start does not stop Switchyard.
async fn connect(
    servers: &[String],
    auth: Option<&NatsAuth>,
    tls: Option<&switchyard_core::streams::ClientTls>,
    name: &str,
) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        options = options
            .require_tls(true)
            .tls_client_config(switchyard_broker::tls::client_config_of(Some(tls))?);
    }
    if let Some(a) = auth {
        if let Some(t) = &a.token {
            options = options.token(t.resolve().map_err(|e| format!("auth.token: {e}"))?);
        }
        if let (Some(u), Some(p)) = (&a.user, &a.password) {
            options = options.user_and_password(
                u.resolve().map_err(|e| format!("auth.user: {e}"))?,
                p.resolve().map_err(|e| format!("auth.password: {e}"))?,
            );
        }
        if let Some(f) = &a.credentials_file {
            options = options
                .credentials_file(f)
                .await
                .map_err(|e| format!("auth.credentialsFile `{f}`: {e}"))?;
        }
    }
    options
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS {}: {e}", servers.join(",")))
}

/// What a NatsSource builds events with.
#[derive(Debug, Clone)]
struct Wrapping {
    ty: String,
    source: String,
}

/// Where a JetStream message sits in its stream: the wrapped event's id and time come from it,
/// so a redelivered message becomes the same event.
#[derive(Debug, Clone, Copy)]
struct StreamPosition<'a> {
    stream: &'a str,
    sequence: u64,
    published_unix_ns: i128,
}

fn rfc3339_from_unix_ns(ns: i128) -> Option<String> {
    let secs = i64::try_from(ns.div_euclid(1_000_000_000)).ok()?;
    let nanos = u32::try_from(ns.rem_euclid(1_000_000_000)).ok()?;
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// The text of header `name` of a NATS message.
fn header_text<'h>(headers: Option<&'h async_nats::HeaderMap>, name: &str) -> Option<&'h str> {
    headers?.get(name).map(async_nats::HeaderValue::as_str)
}

/// The event a NATS message carries, or wraps.
fn message_event(
    wrapping: &Wrapping,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: Bytes,
    position: Option<StreamPosition<'_>>,
    max_payload_bytes: usize,
) -> Result<CloudEvent, EventError> {
    crate::payload_within_limit(payload.len(), max_payload_bytes)?;
    let http_headers = switchyard_core::bindings::nats_headers_to_http(
        headers
            .into_iter()
            .flat_map(|h| h.iter())
            .flat_map(|(name, values)| values.iter().map(move |v| (name.as_ref(), v.as_str()))),
    )?;
    match switchyard_core::http::decode(&http_headers, payload.clone()) {
        Ok((_, mut events)) if events.len() == 1 => return Ok(events.remove(0)),
        Ok(_) => {
            return Err(EventError::invalid(
                "datacontenttype",
                "a batch is not a NATS message's format",
            ));
        }
        Err(EventError::NotACloudEvent) => {}
        Err(e) => return Err(e),
    }
    let id = position.map_or_else(new_id, |p| format!("{}-{}", p.stream, p.sequence));
    let mut event = CloudEvent::new(id, wrapping.source.clone(), wrapping.ty.clone())?;
    event.subject = Some(subject.to_owned());
    event.time = position
        .and_then(|p| rfc3339_from_unix_ns(p.published_unix_ns))
        .or_else(|| Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)));
    event.datacontenttype = crate::target::content_type(
        http_headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    if !payload.is_empty() {
        event.data = Data::Binary(payload);
    }
    event.validate()?;
    Ok(event)
}

struct Consumer {
    id: String,
    target: Target,
    log: Arc<dyn EventLog>,
    wrapping: Wrapping,
}

impl Consumer {
    fn malformed(&self, subject: &str, error: &str, action: &'static str) {
        tracing::error!(source = %self.id, subject, error, action, "a NATS message cannot be stored as a CloudEvent");
        self.target.malformed(action);
    }

    /// Core NATS: subscribe and store each message (retrying while the broker pushes back).
    async fn run_core(self, client: async_nats::Client, subject: String, queue: Option<String>) {
        loop {
            let subscribed = match &queue {
                Some(q) => client.queue_subscribe(subject.clone(), q.clone()).await,
                None => client.subscribe(subject.clone()).await,
            };
            let mut sub = match subscribed {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(source = %self.id, error = %e, "cannot subscribe; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            tracing::info!(source = %self.id, subject, "consuming NATS");
            while let Some(first) = sub.next().await {
                // Take what else has already arrived, to store it in one transaction.
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match futures_util::FutureExt::now_or_never(sub.next()) {
                        Some(Some(m)) => batch.push(m),
                        _ => break,
                    }
                }
                let mut encoded = self.target.batch(batch.len());
                let max_payload = crate::max_payload_bytes(self.log.as_ref());
                for m in batch {
                    let built = message_event(
                        &self.wrapping,
                        m.subject.as_str(),
                        m.headers.as_ref(),
                        m.payload,
                        None,
                        max_payload,
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|e| {
                        let tp = header_text(m.headers.as_ref(), "traceparent");
                        self.target.add(&mut encoded, e, tp)
                    });
                    match built {
                        Ok(()) => {}
                        Err(e) => self.malformed(m.subject.as_str(), &e, "dropped"),
                    }
                }
                if encoded.is_empty() {
                    continue;
                }
                if self
                    .target
                    .append_until_stored(&self.log, encoded, Vec::new())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            tracing::warn!(source = %self.id, "the NATS subscription ended; subscribing again");
        }
    }

    /// JetStream: pull from the durable consumer, store what has arrived in one transaction,
    /// then ack it; nak with a delay when the broker cannot take it.
    async fn run_jetstream(
        self,
        client: async_nats::Client,
        subject: String,
        js: NatsJetStream,
        durable: String,
    ) {
        let context = jetstream::new(client);
        let nak_delay = js
            .nak_delay
            .map_or(NatsJetStream::DEFAULT_NAK_DELAY, |d| d.0);
        let batch = js.batch.unwrap_or(100) as usize;
        let mut backoff = Backoff::new(PULL_PAUSE, Duration::from_secs(10));
        loop {
            let consumer = match get_consumer(&context, &js, &durable, &subject).await {
                Ok(c) => c,
                Err(e) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(source = %self.id, error = %e, retry_in_ms = pause.as_millis() as u64, "cannot reach the JetStream consumer; retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            backoff.reset();
            tracing::info!(source = %self.id, stream = js.stream, consumer = durable, "consuming JetStream");
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(batch)
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(source = %self.id, error = %e, "cannot pull from JetStream; retrying");
                    tokio::time::sleep(PULL_PAUSE).await;
                    continue;
                }
            };
            while let Some(first) = messages.next().await {
                // Take what else has already arrived, to store it in one transaction.
                let mut taken = Vec::new();
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Ok(m) => taken.push(m),
                        Err(e) => {
                            tracing::warn!(source = %self.id, error = %e, "JetStream pull error")
                        }
                    }
                    if taken.len() < batch {
                        next = futures_util::FutureExt::now_or_never(messages.next()).flatten();
                    }
                }
                if taken.is_empty() {
                    // Only errors (a missed heartbeat, a consumer deleted): do not spin.
                    tokio::time::sleep(PULL_PAUSE).await;
                } else if !self.store_jetstream(taken, nak_delay).await {
                    return;
                }
            }
            tracing::warn!(source = %self.id, "the JetStream pull ended; pulling again");
            tokio::time::sleep(PULL_PAUSE).await;
        }
    }

    /// Stores one fetched batch and acks it; `false` when the store shut down.
    async fn store_jetstream(&self, taken: Vec<jetstream::Message>, nak_delay: Duration) -> bool {
        let mut encoded = self.target.batch(taken.len());
        let mut stored = Vec::with_capacity(taken.len());
        let max_payload = crate::max_payload_bytes(self.log.as_ref());
        for m in taken {
            let built = match m.info() {
                Ok(info) => message_event(
                    &self.wrapping,
                    m.subject.as_str(),
                    m.headers.as_ref(),
                    m.payload.clone(),
                    Some(StreamPosition {
                        stream: info.stream,
                        sequence: info.stream_sequence,
                        published_unix_ns: info.published.unix_timestamp_nanos(),
                    }),
                    max_payload,
                ),
                Err(e) => Err(EventError::invalid(
                    "id",
                    format!("not a JetStream message: {e}"),
                )),
            }
            .map_err(|e| e.to_string())
            .and_then(|e| {
                let tp = header_text(m.headers.as_ref(), "traceparent");
                self.target.add(&mut encoded, e, tp)
            });
            match built {
                Ok(()) => stored.push(m),
                Err(e) => {
                    // Redelivering it would never help: terminate it (JetStream emits an
                    // advisory, and it stays in the stream for inspection).
                    self.malformed(m.subject.as_str(), &e, "terminated");
                    if let Err(e) = m.ack_with(AckKind::Term).await {
                        tracing::warn!(source = %self.id, error = %e, "cannot terminate a malformed message");
                    }
                }
            }
        }
        if encoded.is_empty() {
            return true;
        }
        match self.target.append_once(&self.log, encoded).await {
            Ok(()) => {
                for m in stored {
                    // A lost ack means a redelivery: a duplicate, never a loss.
                    if let Err(e) = m.double_ack().await {
                        tracing::warn!(source = %self.id, error = %e, "ack failed; the message will be redelivered");
                    }
                }
                true
            }
            Err(LogError::ShuttingDown) => false,
            Err(e) => {
                tracing::warn!(source = %self.id, error = %e, nak_delay_ms = nak_delay.as_millis() as u64, "the broker did not take the messages; nak'ed for redelivery");
                for m in stored {
                    let _ = m.ack_with(AckKind::Nak(Some(nak_delay))).await;
                }
                true
            }
        }
    }
}

async fn get_consumer(
    context: &jetstream::Context,
    js: &NatsJetStream,
    durable: &str,
    subject: &str,
) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, String> {
    let stream = context
        .get_stream(&js.stream)
        .await
        .map_err(|e| format!("stream `{}`: {e}", js.stream))?;
    let deliver_policy = match js.deliver_policy.unwrap_or_default() {
        NatsDeliverPolicy::All => jetstream::consumer::DeliverPolicy::All,
        NatsDeliverPolicy::New => jetstream::consumer::DeliverPolicy::New,
        NatsDeliverPolicy::Last => jetstream::consumer::DeliverPolicy::Last,
    };
    stream
        .get_or_create_consumer(
            durable,
            jetstream::consumer::pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: subject.to_owned(),
                deliver_policy,
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: js.ack_wait.map_or(NatsJetStream::DEFAULT_ACK_WAIT, |d| d.0),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer `{durable}`: {e}"))
}

/// Starts every NatsSource of `config`. Among replicas (`replica`), a core subscription
/// without a `queueGroup` joins the group [`replica_queue_group`], so each message reaches
/// one replica; a JetStream durable is shared as it is.
pub(crate) async fn start_sources(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: &Arc<dyn EventLog>,
    replica: Option<&str>,
    tasks: &mut Tasks,
) -> Result<(), SourceError> {
    for ((ns, name), s) in &config.nats_sources {
        let id = SourceId::new(ns, name).to_string();
        let client = connect(
            &s.spec.servers,
            s.spec.auth.as_ref(),
            s.spec.tls.as_ref(),
            &format!("switchyard {id}"),
        )
        .await
        .map_err(|e| SourceError(format!("NatsSource {id}: {e}")))?;
        let consumer = Consumer {
            id: id.clone(),
            target: Target::resolve(
                config,
                event_types,
                "NatsSource",
                ns,
                name,
                &s.spec.sink,
                s.spec.ce_overrides.as_ref(),
            ),
            log: Arc::clone(log),
            wrapping: Wrapping {
                ty: s
                    .spec
                    .ty
                    .clone()
                    .unwrap_or_else(|| NatsSource::DEFAULT_TYPE.to_owned()),
                source: format!("/apis/v1/namespaces/{ns}/natssources/{name}"),
            },
        };
        let subject = s.spec.subject.clone();
        match (&s.spec.jetstream, s.consumer_name()) {
            (Some(js), Some(durable)) => {
                tasks.spawn(consumer.run_jetstream(client, subject, js.clone(), durable));
            }
            _ => {
                let queue = s
                    .spec
                    .queue_group
                    .clone()
                    .or_else(|| replica.map(|_| replica_queue_group(ns, name)));
                tasks.spawn(consumer.run_core(client, subject, queue));
            }
        }
    }
    Ok(())
}

/// The NatsSource kind.
pub(crate) const KIND: Kind = Kind {
    name: "NatsSource",
    describe: |config| {
        config
            .nats_sources
            .iter()
            .map(|((ns, name), s)| {
                let how = match &s.spec.jetstream {
                    Some(js) => format!(
                        "JetStream stream {} (consumer {})",
                        js.stream,
                        s.consumer_name().unwrap_or_default()
                    ),
                    None => "core NATS".to_owned(),
                };
                format!(
                    "NatsSource {ns}/{name}: `{}` from {}, {how}",
                    s.spec.subject,
                    s.spec.servers.join(",")
                )
            })
            .collect()
    },
    check: None,
    start: start_kind,
};

/// The queue group replicas share for NatsSource `ns/name` when it names none.
pub fn replica_queue_group(ns: &str, name: &str) -> String {
    format!("switchyard.{ns}.{name}")
}

fn start_kind<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        let mut tasks = Tasks::new("NatsSources");
        start_sources(s.config, s.event_types, s.log, s.replica, &mut tasks).await?;
        Ok(Started::background(tasks))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapping() -> Wrapping {
        Wrapping {
            ty: "dev.switchyard.nats.message".into(),
            source: "/apis/v1/namespaces/default/natssources/s".into(),
        }
    }

    #[test]
    fn raw_messages_are_wrapped() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Content-Type", "text/plain");
        let e = message_event(
            &wrapping(),
            "sensors.room1",
            Some(&h),
            Bytes::from_static(b"21.5"),
            Some(StreamPosition {
                stream: "SENSORS",
                sequence: 42,
                published_unix_ns: 1_795_000_000_123_000_000,
            }),
            crate::MAX_BODY_BYTES,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.id, "SENSORS-42");
        assert_eq!(e.subject.as_deref(), Some("sensors.room1"));
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(e.time.as_deref(), Some("2026-11-18T11:06:40.123Z"));
        assert_eq!(e.data, Data::Binary(Bytes::from_static(b"21.5")));
    }

    #[test]
    fn binary_and_structured_messages_pass_through() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("ce-specversion", "1.0");
        h.insert("ce-id", "abc");
        h.insert("ce-source", "/x");
        h.insert("ce-type", "t");
        h.insert("ce-subject", "caf%C3%A9");
        let e = message_event(
            &wrapping(),
            "s",
            Some(&h),
            Bytes::new(),
            None,
            crate::MAX_BODY_BYTES,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.id.as_str(), e.subject.as_deref()), ("abc", Some("café")));
        let mut h = async_nats::HeaderMap::new();
        h.insert("content-type", "application/cloudevents+json");
        let body =
            Bytes::from_static(br#"{"specversion":"1.0","id":"s1","source":"/y","type":"t2"}"#);
        let e = message_event(
            &wrapping(),
            "s",
            Some(&h),
            body,
            None,
            crate::MAX_BODY_BYTES,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.id, "s1");
        h.insert("content-type", "application/cloudevents+json");
        assert!(
            message_event(
                &wrapping(),
                "s",
                Some(&h),
                Bytes::from_static(b"{"),
                None,
                crate::MAX_BODY_BYTES
            )
            .is_err()
        );
        // A content type that is not a media type: still wrapped, without one.
        let mut h = async_nats::HeaderMap::new();
        h.insert("Content-Type", "json");
        let e = message_event(
            &wrapping(),
            "s",
            Some(&h),
            Bytes::from_static(b"1"),
            None,
            crate::MAX_BODY_BYTES,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.datacontenttype, None);
    }
}
