//! Sources and sinks that connect Switchyard to the outside world. Today: the webhook source
//! ([`webhook`]); cron, S3, Kafka, NATS and MQTT follow (see the open issues).

pub mod webhook;
