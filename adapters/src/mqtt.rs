//! MQTT: the MqttSource, subscribing to topic filters on an MQTT 3.1.1 or 5 broker.
//!
//! Messages follow the CloudEvents MQTT binding: MQTT 5 messages are structured when their
//! Content Type is a CloudEvents format and binary when their user properties carry
//! `specversion`; MQTT 3.1.1 messages are structured when the payload is a JSON event. Any
//! other payload is wrapped into an event of the source's `type`, with the topic as `subject`.
//!
//! QoS 1 messages are acked (PUBACK) only after their events are stored, and the session is
//! persistent (a fixed client id, no clean start), so the broker redelivers what was not
//! acked and keeps what arrives while Switchyard is down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::EventLog;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::streams::{MqttSource, MqttVersion};
use switchyard_core::{CloudEvent, Data, EventError};
use tokio::sync::mpsc;

use crate::SourceError;
use crate::kind::{Kind, Setup, StartFuture, Started};
use crate::target::{Target, new_id};
use switchyard_broker::tasks::Tasks;

/// How long a persistent MQTT 5 session outlives its connection on the broker: a week of
/// downtime loses nothing (the broker may cap it lower).
const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;
/// Messages stored in one transaction at most.
const MAX_BATCH: usize = 256;
/// MQTT 3.1.1's own limit on a packet (256 MiB - 1). A 3.1.1 client cannot tell the broker
/// what it takes, and an oversized packet would break the connection (and, with a persistent
/// session, every reconnect after it), so the client takes whatever the broker sends; a
/// payload over [`crate::MAX_BODY_BYTES`] is let go as soon as the client hands it over
/// ([`Incoming::oversized_bytes`]), not queued for the worker.
const MQTT_MAX_PACKET_BYTES: usize = 268_435_455;
/// The largest packet an MQTT 5 client takes, announced in its CONNECT (Maximum Packet Size):
/// the event limit and room for the topic and properties. The broker does not send a larger
/// one to this client (MQTT 5, 3.1.2.11.4: it discards it), so memory is bounded by it.
const MQTT5_MAX_PACKET_BYTES: u32 = (crate::MAX_BODY_BYTES + 64 * 1024) as u32;
/// Requests (acks, subscriptions) the client may queue for its event loop.
const CLIENT_QUEUE: usize = 1024;

/// One received message, with the way to acknowledge it.
struct Incoming {
    topic: String,
    payload: Bytes,
    /// The size of a payload over the event limit, which was let go as soon as it was read
    /// (`payload` is then empty): the worker drops the message as malformed and acks it.
    oversized_bytes: Option<usize>,
    /// MQTT 5 only.
    content_type: Option<String>,
    /// MQTT 5 only.
    user_properties: Vec<(String, String)>,
    ack: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>,
}

/// The event an MQTT message carries, or wraps.
fn message_event(
    version: MqttVersion,
    ty: &str,
    source: &str,
    m: &Incoming,
    max_payload_bytes: usize,
) -> Result<CloudEvent, EventError> {
    crate::payload_within_limit(
        m.oversized_bytes.unwrap_or(m.payload.len()),
        max_payload_bytes,
    )?;
    let carried = match version {
        MqttVersion::V5 => switchyard_core::bindings::decode_mqtt5(
            m.content_type.as_deref(),
            &m.user_properties,
            &m.payload,
        )?,
        MqttVersion::V311 => switchyard_core::bindings::decode_mqtt311(&m.payload)?,
    };
    if let Some(e) = carried {
        return Ok(e);
    }
    let mut event = CloudEvent::new(new_id(), source, ty)?;
    event.subject = Some(m.topic.clone());
    event.time = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    event.datacontenttype = crate::target::content_type(m.content_type.as_deref());
    if !m.payload.is_empty() {
        event.data = Data::Binary(m.payload.clone());
    }
    event.validate()?;
    Ok(event)
}

struct Worker {
    id: String,
    version: MqttVersion,
    ty: String,
    source: String,
    target: Target,
    log: Arc<dyn EventLog>,
}

impl Worker {
    /// Stores what the connection hands over, in arrival order, and acks each message after
    /// its batch is stored.
    async fn run(self, mut rx: mpsc::Receiver<Incoming>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut encoded = self.target.batch(batch.len());
            let mut acks = Vec::with_capacity(batch.len());
            let max_payload = crate::max_payload_bytes(self.log.as_ref());
            for m in batch {
                // MQTT 5 carries an instrumented producer's context as a user property.
                let tp = m
                    .user_properties
                    .iter()
                    .find(|(k, _)| k == "traceparent")
                    .map(|(_, v)| v.as_str());
                let built = message_event(self.version, &self.ty, &self.source, &m, max_payload)
                    .map_err(|e| e.to_string())
                    .and_then(|e| self.target.add(&mut encoded, e, tp));
                match built {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(source = %self.id, topic = m.topic, error = %e, "an MQTT message cannot be stored as a CloudEvent; acked and dropped");
                        self.target.malformed("dropped");
                    }
                }
                acks.push(m.ack);
            }
            if !encoded.is_empty()
                && self
                    .target
                    .append_until_stored(&self.log, encoded, Vec::new())
                    .await
                    .is_err()
            {
                // Shutting down: nothing is acked, the broker redelivers after a restart.
                return;
            }
            for ack in acks {
                ack().await;
            }
        }
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    if q == 0 {
        rumqttc::QoS::AtMostOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    if q == 0 {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce
    } else {
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce
    }
}

/// Drives an MQTT 3.1.1 connection: (re)subscribes on every connect and hands messages over.
async fn run_v311(
    id: String,
    options: rumqttc::MqttOptions,
    topics: Vec<String>,
    qos: u8,
    tx: mpsc::Sender<Incoming>,
) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, CLIENT_QUEUE);
    // Subscriptions made after each ConnAck; they end with this loop.
    let mut subscribing = Tasks::new("MQTT subscriptions");
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                tracing::info!(source = %id, session_present = ack.session_present, "connected to the MQTT broker");
                // From another task: the request queue is drained only by this loop.
                let (c, topics, id) = (client.clone(), topics.clone(), id.clone());
                subscribing.spawn(async move {
                    for t in topics {
                        if let Err(e) = c.subscribe(t.clone(), qos4(qos)).await {
                            tracing::warn!(source = %id, topic = t, error = %e, "cannot subscribe");
                        }
                    }
                });
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(mut p))) => {
                // Over the event limit (3.1.1 cannot announce a smaller packet): let go of
                // the payload now, so that oversized packets do not wait in the queue.
                let oversized_bytes =
                    (p.payload.len() > crate::MAX_BODY_BYTES).then_some(p.payload.len());
                if oversized_bytes.is_some() {
                    p.payload = Bytes::new();
                }
                let c = client.clone();
                let message = Incoming {
                    topic: p.topic.clone(),
                    payload: p.payload.clone(),
                    oversized_bytes,
                    content_type: None,
                    user_properties: Vec::new(),
                    ack: Box::new(move || {
                        Box::pin(async move {
                            let _ = c.ack(&p).await;
                        })
                    }),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(source = %id, error = %e, "MQTT connection failed; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Drives an MQTT 5 connection, as [`run_v311`].
async fn run_v5(
    id: String,
    options: rumqttc::v5::MqttOptions,
    topics: Vec<String>,
    qos: u8,
    tx: mpsc::Sender<Incoming>,
) {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, CLIENT_QUEUE);
    // Subscriptions made after each ConnAck; they end with this loop.
    let mut subscribing = Tasks::new("MQTT subscriptions");
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::v5::Event::Incoming(Packet5::ConnAck(ack))) => {
                tracing::info!(source = %id, session_present = ack.session_present, "connected to the MQTT broker");
                // From another task: the request queue is drained only by this loop.
                let (c, topics, id) = (client.clone(), topics.clone(), id.clone());
                subscribing.spawn(async move {
                    for t in topics {
                        if let Err(e) = c.subscribe(t.clone(), qos5(qos)).await {
                            tracing::warn!(source = %id, topic = t, error = %e, "cannot subscribe");
                        }
                    }
                });
            }
            Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(p))) => {
                let c = client.clone();
                let (content_type, user_properties) = p
                    .properties
                    .as_ref()
                    .map(|pr| (pr.content_type.clone(), pr.user_properties.clone()))
                    .unwrap_or_default();
                let message = Incoming {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.clone(),
                    // The broker sends nothing larger than the CONNECT announced.
                    oversized_bytes: None,
                    content_type,
                    user_properties,
                    ack: Box::new(move || {
                        Box::pin(async move {
                            let _ = c.ack(&p).await;
                        })
                    }),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(source = %id, error = %e, "MQTT connection failed; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The user name and password of `s`'s `auth`, read from where they are kept.
/// The TLS transport of an `mqtts://` broker, or `None` for plain TCP.
fn transport(s: &MqttSource) -> Result<Option<rumqttc::Transport>, String> {
    if !s.uses_tls() {
        return Ok(None);
    }
    let config = switchyard_broker::tls::client_config_of(s.spec.tls.as_ref())?;
    Ok(Some(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    )))
}

fn credentials(s: &MqttSource) -> Result<Option<(String, String)>, String> {
    let Some(a) = s.spec.auth.as_ref() else {
        return Ok(None);
    };
    let user = a
        .username
        .resolve()
        .map_err(|e| format!("auth.username: {e}"))?;
    let password = a
        .password
        .as_ref()
        .map(|p| p.resolve().map_err(|e| format!("auth.password: {e}")))
        .transpose()?
        .unwrap_or_default();
    Ok(Some((user, password)))
}

/// Starts every MqttSource of `config`. Among replicas (`replica`), each connects with a
/// client id of its own ([`replica_client_id`]) and subscribes through a shared subscription
/// ([`shared_topic`]), so each message reaches one replica.
pub(crate) fn start_sources(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: &Arc<dyn EventLog>,
    replica: Option<&str>,
    tasks: &mut Tasks,
) -> Result<(), SourceError> {
    for ((ns, name), s) in &config.mqtt_sources {
        let id = SourceId::new(ns, name).to_string();
        let err = |m: String| SourceError(format!("MqttSource {id}: {m}"));
        let (host, port) = s.host_port().map_err(|e| err(e.message))?;
        let credentials = credentials(s).map_err(err)?;
        let transport = transport(s).map_err(err)?;
        let version = s.spec.protocol_version.unwrap_or_default();
        let qos = s.spec.qos.unwrap_or(1);
        let clean = s.spec.clean_session.unwrap_or(false);
        let worker = Worker {
            id: id.clone(),
            version,
            ty: s
                .spec
                .ty
                .clone()
                .unwrap_or_else(|| MqttSource::DEFAULT_TYPE.to_owned()),
            source: format!("/apis/v1/namespaces/{ns}/mqttsources/{name}"),
            target: Target::resolve(
                config,
                event_types,
                "MqttSource",
                ns,
                name,
                &s.spec.sink,
                s.spec.ce_overrides.as_ref(),
            ),
            log: Arc::clone(log),
        };
        let (tx, rx) = mpsc::channel(1024);
        tasks.spawn(worker.run(rx));
        let (client_id, topics) = match replica {
            None => (s.client_id(), s.spec.topics.clone()),
            Some(replica) => (
                replica_client_id(&s.client_id(), replica),
                s.spec
                    .topics
                    .iter()
                    .map(|t| shared_topic(ns, name, t))
                    .collect(),
            ),
        };
        match version {
            MqttVersion::V311 => {
                let mut o = rumqttc::MqttOptions::new(client_id, host, port);
                o.set_clean_session(clean)
                    .set_manual_acks(true)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(MQTT_MAX_PACKET_BYTES, 64 * 1024);
                if let Some((u, p)) = credentials {
                    o.set_credentials(u, p);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                tasks.spawn(run_v311(id, o, topics, qos, tx));
            }
            MqttVersion::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(client_id, host, port);
                o.set_clean_start(clean)
                    .set_manual_acks(true)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(Some(MQTT5_MAX_PACKET_BYTES));
                if !clean {
                    o.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
                }
                if let Some((u, p)) = credentials {
                    o.set_credentials(u, p);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                tasks.spawn(run_v5(id, o, topics, qos, tx));
            }
        }
    }
    Ok(())
}

/// A replica's client id: the source's, then the replica's name (two clients with one id
/// would take the connection from each other).
pub fn replica_client_id(client_id: &str, replica: &str) -> String {
    format!("{client_id}-{replica}")
}

/// Topic filter `topic` as a shared subscription of MqttSource `ns/name`'s replicas
/// (`$share/switchyard-ns-name/topic`; MQTT 5, 4.8.2, and Mosquitto's for 3.1.1 clients too),
/// unless it is one already.
pub fn shared_topic(ns: &str, name: &str, topic: &str) -> String {
    if topic.starts_with("$share/") {
        topic.to_owned()
    } else {
        format!("$share/switchyard-{ns}-{name}/{topic}")
    }
}

/// The MqttSource kind.
pub(crate) const KIND: Kind = Kind {
    name: "MqttSource",
    describe: |config| {
        config
            .mqtt_sources
            .iter()
            .map(|((ns, name), s)| {
                format!(
                    "MqttSource {ns}/{name}: {} from {} as {}",
                    s.spec.topics.join(","),
                    s.spec.broker,
                    s.client_id()
                )
            })
            .collect()
    },
    check: None,
    start: start_kind,
};

fn start_kind<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        let mut tasks = Tasks::new("MqttSources");
        start_sources(s.config, s.event_types, s.log, s.replica, &mut tasks)?;
        Ok(Started::background(tasks))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(payload: &'static [u8], ct: Option<&str>, props: &[(&str, &str)]) -> Incoming {
        Incoming {
            topic: "building/1/room/2/temperature".into(),
            payload: Bytes::from_static(payload),
            oversized_bytes: None,
            content_type: ct.map(str::to_owned),
            user_properties: props
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            ack: Box::new(|| Box::pin(async {})),
        }
    }

    #[test]
    fn replicas_share_a_subscription_and_each_has_its_own_client_id() {
        assert_eq!(
            shared_topic("default", "sensors", "building/+/temp"),
            "$share/switchyard-default-sensors/building/+/temp"
        );
        assert_eq!(
            shared_topic("default", "sensors", "$share/mine/building/#"),
            "$share/mine/building/#",
            "a shared subscription the user named is kept"
        );
        assert_eq!(replica_client_id("gw", "host-8080"), "gw-host-8080");
    }

    #[test]
    fn raw_payloads_are_wrapped_with_the_topic_as_subject() {
        for version in [MqttVersion::V311, MqttVersion::V5] {
            let e = message_event(
                version,
                "t",
                "/s",
                &incoming(b"21.5", None, &[]),
                crate::MAX_BODY_BYTES,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(e.subject.as_deref(), Some("building/1/room/2/temperature"));
            assert_eq!(e.ty, "t");
            assert_eq!(e.data, Data::Binary(Bytes::from_static(b"21.5")));
        }
    }

    /// An MQTT 3.1.1 payload over the event limit is let go as it is read; the worker still
    /// refuses the message, naming its size.
    #[test]
    fn a_payload_let_go_as_oversized_is_refused_with_its_size() {
        let mut m = incoming(b"", None, &[]);
        m.oversized_bytes = Some(crate::MAX_BODY_BYTES + 1);
        let refused = message_event(MqttVersion::V311, "t", "/s", &m, crate::MAX_BODY_BYTES);
        let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            why.contains(&format!("{} bytes", crate::MAX_BODY_BYTES + 1)),
            "{why}"
        );
    }

    #[test]
    fn binary_mode_only_in_mqtt5() {
        let props = [
            ("specversion", "1.0"),
            ("id", "r-1"),
            ("source", "/lorawan/gw-1"),
            ("type", "com.example.reading"),
        ];
        let m = incoming(br#"{"t":21.5}"#, Some("application/json"), &props);
        let e = message_event(MqttVersion::V5, "t", "/s", &m, crate::MAX_BODY_BYTES)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.id.as_str(), e.ty.as_str()),
            ("r-1", "com.example.reading")
        );
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        // 3.1.1 has no properties: the same payload is raw.
        let m = incoming(br#"{"t":21.5}"#, None, &[]);
        let e = message_event(MqttVersion::V311, "t", "/s", &m, crate::MAX_BODY_BYTES)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.ty, "t");
    }
}
