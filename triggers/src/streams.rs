//! Subscribers that are streams, not HTTP endpoints: a Trigger whose `subscriber.ref` (or
//! `deadLetterSink.ref`) names a KafkaSink or a NatsSink delivers through a [`StreamSink`].
//!
//! The dispatcher resolves such a subscriber, named by its address `kafkasink:{ns}/{name}`
//! or `natssink:{ns}/{name}` (see [`address`]), to its writer in the [`StreamSinks`] the
//! server started with, once at start (`delivery::Subscriber`); the writers themselves live in the adapters crate, with their client
//! libraries. Retries, dead-lettering and ordering are the trigger's, as for HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_core::CloudEvent;

/// Why a stream did not take an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StreamSinkError {
    /// Whether trying again may work (a broker down, a timeout), or never will (a record too
    /// large, a topic that does not exist and is not created): then the event is
    /// dead-lettered at once.
    pub retryable: bool,
    /// What went wrong, as the stream's client said it.
    pub message: String,
}

/// A stream a trigger delivers to.
pub trait StreamSink: Send + Sync + std::fmt::Debug {
    /// Writes one event; `Ok` once the stream holds it (as far as the sink's kind promises:
    /// acknowledged by Kafka with `acks=all`, by JetStream, or flushed to a NATS server).
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), StreamSinkError>>;

    /// Whether the sink is given the event's `knativebrokerttl` (a broker, which counts the
    /// hop); the broker's loop guard is removed from what other sinks get, as from what
    /// subscribers get.
    fn takes_ttl(&self) -> bool {
        false
    }
}

/// The stream sinks of a configuration, by [`address`].
pub type StreamSinks = Arc<HashMap<String, Arc<dyn StreamSink>>>;

/// The address by which triggers know the stream sink `kind` `ns/name`.
pub fn address(kind: &str, ns: &str, name: &str) -> String {
    format!("{}:{ns}/{name}", kind.to_ascii_lowercase())
}

/// Whether a destination's address is a stream sink's (made by [`address`]), not a URL.
pub fn is_stream_address(address: &str) -> bool {
    address.starts_with("kafkasink:")
        || address.starts_with("natssink:")
        || address.starts_with("broker:")
}

/// The address by which triggers know the Broker `ns/name` as a subscriber or dead-letter
/// sink: delivered to inside the server, through the broker's appender, not over HTTP.
pub fn broker_address(ns: &str, name: &str) -> String {
    format!("broker:{ns}/{name}")
}

/// A Broker of this server as a subscriber: the event is stored in it through the appender
/// every way in shares (its `eventTypes`, its TTL, its arrival time), as ingress would, but
/// without the trip over HTTP — and so without TLS to itself, or the front door, which
/// governs outside callers: the configuration made this delivery, as it makes a source's.
#[derive(Debug)]
pub struct BrokerSink {
    appender: switchyard_broker::append::Appender,
    /// `namespace/name`.
    broker: String,
    /// The receiving broker's default TTL (the most an event forwarded to it keeps).
    ttl: i32,
}

impl BrokerSink {
    /// The sink of broker `broker` (`namespace/name`) with default TTL `ttl`.
    pub fn new(appender: switchyard_broker::append::Appender, broker: String, ttl: i32) -> Self {
        BrokerSink {
            appender,
            broker,
            ttl,
        }
    }
}

impl StreamSink for BrokerSink {
    fn takes_ttl(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), StreamSinkError>> {
        Box::pin(async move {
            // Forwarding to a broker is a hop, as a reply is: one less TTL, so two brokers
            // whose triggers point at each other cannot pass an event round for ever.
            let ttl = switchyard_broker::append::reply_ttl(event).min(i64::from(self.ttl));
            if ttl <= 0 {
                return Err(StreamSinkError {
                    retryable: false,
                    message: format!(
                        "broker {} refuses the event: its TTL ran out (a loop between brokers?)",
                        self.broker
                    ),
                });
            }
            let mut events = [event.clone()];
            let batch = self
                .appender
                .prepare(
                    &self.broker,
                    switchyard_broker::append::Ttl::Set(i32::try_from(ttl).unwrap_or(i32::MAX)),
                    &mut events,
                )
                .map_err(|e| StreamSinkError {
                    retryable: false,
                    message: format!("broker {} refuses the event: {e}", self.broker),
                })?;
            self.appender
                .append(batch)
                .await
                .map(|_| ())
                .map_err(|e| StreamSinkError {
                    retryable: true,
                    message: format!("broker {} cannot store the event now: {e}", self.broker),
                })
        })
    }
}
