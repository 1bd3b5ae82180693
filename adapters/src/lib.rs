//! Sources that connect Switchyard to the outside world: webhooks ([`webhook`]), cron
//! schedules ([`ping`]), S3 bucket notifications ([`s3`]), Kafka topics ([`kafka`]), NATS
//! subjects ([`nats`]) and MQTT topics ([`mqtt`]). Each turns what arrives into CloudEvents
//! and stores them in its broker before it acknowledges anything; [`clock`] is the wall clock
//! schedules run by (manual in tests), [`aws`] the bit of AWS the S3 source speaks (SigV4,
//! SQS). The stream sinks (KafkaSink, NatsSink) that triggers deliver to live here too, next to
//! their client libraries.
//!
//! Every source kind is registered once, in [`KINDS`] (`kind.rs`); [`start`] runs them all
//! (the HTTP ones share `POST /sources/{namespace}/{name}`), [`describe`] and [`check`] serve
//! `switchyard validate`; [`start_sinks`] makes the stream sinks' writers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::ingress::read_body;
use switchyard_broker::log::EventLog;
use switchyard_broker::problem::Problem;
use switchyard_broker::tasks::Tasks;
use switchyard_core::config::Config;
use switchyard_triggers::streams::{StreamSink, StreamSinks, address};

use kind::{HttpSource, Setup};
pub use kind::{KINDS, Kind, check, describe};

pub mod aws;
pub mod clock;
pub mod kafka;
mod kind;
pub mod mqtt;
pub mod nats;
pub mod ping;
pub mod s3;
mod target;
pub mod webhook;

/// Largest request body an HTTP source takes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Why the sources could not start: a one-line reason naming the source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The running sources; [`shutdown`](Sources::shutdown) (or dropping it) stops the background
/// ones. Each stores before it acknowledges, so stopping one at any point loses nothing.
#[derive(Debug)]
pub struct Sources {
    /// Routes of the HTTP sources (and `/debug/clock` for a manual clock).
    pub routes: Router,
    /// Each kind's background sources.
    tasks: Vec<Tasks>,
}

impl Sources {
    /// Stops every background source and waits until each has ended.
    pub async fn shutdown(self) {
        for tasks in self.tasks {
            tasks.shutdown().await;
        }
    }
}

struct HttpSources {
    log: Arc<dyn EventLog>,
    /// By `namespace/name`.
    by_key: HashMap<String, HttpSource>,
}

/// Starts every source of `config`, kind by kind ([`KINDS`]): resolves secrets, starts the
/// background ones, and returns the routes of the HTTP ones.
pub async fn start(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: Arc<dyn EventLog>,
    clock: clock::Clock,
) -> Result<Sources, SourceError> {
    let client = switchyard_triggers::delivery::build_client(reqwest::Client::builder())
        .map_err(|e| SourceError(format!("cannot build the HTTP client: {e}")))?;
    let setup = Setup {
        config,
        event_types,
        log: &log,
        clock: &clock,
        client: &client,
    };
    let (mut tasks, mut by_key) = (Vec::new(), HashMap::new());
    for kind in KINDS {
        let started = (kind.start)(&setup).await?;
        tasks.extend(started.tasks);
        by_key.extend(started.http);
    }
    let state = Arc::new(HttpSources { log, by_key });
    let routes = Router::new()
        .route("/sources/{namespace}/{name}", post(receive))
        .with_state(state)
        .merge(clock::routes(clock));
    Ok(Sources { routes, tasks })
}

/// The writers of the stream sinks (KafkaSinks, NatsSinks) triggers deliver to.
#[derive(Debug)]
pub struct StreamSinkWriters {
    /// The writers by address, for the dispatcher.
    pub sinks: StreamSinks,
    tasks: Tasks,
}

impl StreamSinkWriters {
    /// Stops the writers' background tasks and waits until each has ended.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

/// Makes a writer for every KafkaSink and NatsSink of `config`. Connections are made in the
/// background: a stream that is down at start only delays deliveries (they are retried).
pub async fn start_sinks(config: &Config) -> Result<StreamSinkWriters, SourceError> {
    let mut tasks = Tasks::new("stream sinks");
    let mut sinks: HashMap<String, Arc<dyn StreamSink>> = HashMap::new();
    for ((ns, name), s) in &config.kafka_sinks {
        sinks.insert(
            address("KafkaSink", ns, name),
            kafka::sink(ns, name, s, &mut tasks)?,
        );
    }
    for ((ns, name), s) in &config.nats_sinks {
        sinks.insert(
            address("NatsSink", ns, name),
            nats::sink(ns, name, s).await?,
        );
    }
    Ok(StreamSinkWriters {
        sinks: Arc::new(sinks),
        tasks,
    })
}

async fn receive(
    State(sources): State<Arc<HttpSources>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = switchyard_core::id::join(&namespace, &name);
    let answer = async {
        let body = read_body(body, MAX_BODY_BYTES).await?;
        if let Some(s) = sources.by_key.get(&key) {
            s.handle(&sources.log, &headers, body).await
        } else {
            Err(Problem::not_found(format!(
                "no WebhookSource or S3Source (webhook or sns mode) `{name}` in namespace `{namespace}`"
            )))
        }
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}
