//! The CloudEvents model and codecs Switchyard's data plane is built on, and its resource types.
//!
//! - [`event`]: the [`CloudEvent`] model, which keeps what was received (attribute text, data
//!   bytes, `data` vs `data_base64`) so a broker passes events through unchanged.
//! - [`http`]: the HTTP binding (binary, structured and batched modes) and [`json`]: the JSON
//!   format; [`store`]: the exact binary form the broker stores.
//! - [`resources`] and [`config`]: Knative-shaped Broker, Trigger and Sink resources, loaded from
//!   YAML or JSON and validated with errors that name file, resource and field; [`sources`]:
//!   the WebhookSource, PingSource and S3Source kinds, and [`schedule`]: their cron schedules;
//!   [`streams`]: the Kafka, NATS and MQTT sources and the Kafka and NATS sinks; [`bindings`]:
//!   the Kafka, NATS and MQTT protocol bindings; [`backoff`]: the pauses of every loop that
//!   waits for the store or a server to come back; [`id`]: typed identities (`namespace/name`);
//!   [`auth`]: Identities, TokenIssuers, EventPolicies and scopes (the front door's rules).

pub mod auth;
pub mod backoff;
pub mod bindings;
pub mod compat;
pub mod config;
pub mod egress;
pub mod error;
pub mod event;
pub mod flows;
pub mod http;
pub mod id;
pub mod json;
pub mod kinds;
pub mod resources;
pub mod schedule;
pub mod sources;
pub mod store;
pub mod streams;
pub mod validate;

pub use error::EventError;
pub use event::{CloudEvent, Data, ExtValue, SpecVersion};
