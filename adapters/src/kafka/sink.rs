//! The KafkaSink writer: a trigger's events produced to a Kafka topic in the Kafka binding.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchyard_broker::tasks::Tasks;
use switchyard_core::CloudEvent;
use switchyard_core::backoff::Backoff;
use switchyard_core::id::SourceId;
use switchyard_core::streams::{ContentMode, KafkaSink};
use switchyard_triggers::streams::{StreamSink, StreamSinkError};

use super::security;
use crate::SourceError;

/// Writes a trigger's events to a Kafka topic.
struct KafkaProducer {
    producer: FutureProducer,
    topic: String,
    structured: bool,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl StreamSink for KafkaProducer {
    fn send<'a>(&'a self, event: &'a CloudEvent) -> BoxFuture<'a, Result<(), StreamSinkError>> {
        Box::pin(async move {
            let record = switchyard_core::bindings::encode_kafka(event, self.structured);
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut out: FutureRecord<'_, Vec<u8>, Vec<u8>> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = &record.key {
                out = out.key(k);
            }
            if let Some(v) = &record.value {
                out = out.payload(v);
            }
            match self.producer.send(out, Duration::from_secs(5)).await {
                Ok(_) => Ok(()),
                Err((e, _)) => Err(StreamSinkError {
                    retryable: !matches!(
                        e,
                        KafkaError::MessageProduction(
                            RDKafkaErrorCode::MessageSizeTooLarge
                                | RDKafkaErrorCode::InvalidMessage
                                | RDKafkaErrorCode::InvalidMessageSize
                                | RDKafkaErrorCode::InvalidRecord
                        )
                    ),
                    message: format!("Kafka produce to `{}`: {e}", self.topic),
                }),
            }
        })
    }
}

/// The writer of a KafkaSink; creates its topic in the background when `numPartitions` says
/// to (an existing topic is left as it is).
pub(crate) fn sink(
    ns: &str,
    name: &str,
    s: &KafkaSink,
    tasks: &mut Tasks,
) -> Result<Arc<dyn StreamSink>, SourceError> {
    let err = |m: String| SourceError(format!("KafkaSink {ns}/{name}: {m}"));
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", s.spec.bootstrap_servers.join(","))
        .set("client.id", format!("switchyard-sink-{ns}-{name}"))
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000");
    security(&mut cc, s.spec.net.as_ref()).map_err(err)?;
    if let Some(auth) = &s.spec.auth {
        super::secret_security(&mut cc, &auth.secret.reference.name).map_err(err)?;
    }
    let producer: FutureProducer = cc.create().map_err(|e| err(e.to_string()))?;
    if let Some(partitions) = s.spec.num_partitions {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            cc.create().map_err(|e| err(e.to_string()))?;
        let topic = s.spec.topic.clone();
        let replication = s.spec.replication_factor.unwrap_or(1);
        let id = SourceId::new(ns, name).to_string();
        tasks.spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            loop {
                let new = rdkafka::admin::NewTopic::new(
                    &topic,
                    partitions,
                    rdkafka::admin::TopicReplication::Fixed(replication),
                );
                let options = rdkafka::admin::AdminOptions::new()
                    .request_timeout(Some(Duration::from_secs(10)));
                match admin.create_topics([&new], &options).await {
                    Ok(results) => {
                        for r in results {
                            match r {
                                Ok(t) => tracing::info!(sink = %id, topic = t, "created the topic"),
                                Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                                    tracing::debug!(sink = %id, topic = t, "the topic exists");
                                }
                                Err((t, code)) => {
                                    tracing::error!(sink = %id, topic = t, error = %code, "cannot create the topic");
                                }
                            }
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(sink = %id, error = %e, "cannot reach Kafka to create the topic; retrying");
                        tokio::time::sleep(backoff.next_pause()).await;
                    }
                }
            }
        });
    }
    Ok(Arc::new(KafkaProducer {
        producer,
        topic: s.spec.topic.clone(),
        structured: s.spec.content_mode == Some(ContentMode::Structured),
    }))
}
