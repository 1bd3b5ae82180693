//! Sources that connect Switchyard to the outside world: webhooks ([`webhook`]), cron
//! schedules ([`ping`]), S3 bucket notifications (`s3`, the `s3` feature), Kafka topics
//! (`kafka`, the `kafka` feature), NATS subjects ([`nats`]) and MQTT topics ([`mqtt`]). Each
//! turns what arrives into CloudEvents and stores them in its broker before it acknowledges
//! anything; [`clock`] is the wall clock schedules run by (manual in tests), `aws` the bit of
//! AWS the S3 source speaks (SigV4, SQS). Without a feature its kind refuses its sources
//! (`absent.rs`; the edge build). The stream sinks (KafkaSink, NatsSink) that triggers deliver to live here too, next to
//! their client libraries.
//!
//! Every source kind is registered once, in [`KINDS`] (`kind.rs`); [`start`] runs each source
//! on its own, so [`Sources::reconfigure`] restarts only what a reload changed (the HTTP ones
//! share `POST /sources/{namespace}/{name}`), [`describe`] and [`check`] serve
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
use switchyard_broker::ingress::{drain, read_body};
use switchyard_broker::log::EventLog;
use switchyard_broker::problem::Problem;
use switchyard_broker::tasks::Tasks;
use switchyard_core::EventError;
use switchyard_core::config::Config;
use switchyard_core::kinds::{Group, Resource};
use switchyard_triggers::api::resources::{SourceStatus, SourcesView};
use switchyard_triggers::streams::{StreamSink, StreamSinks, address};

use kind::{HttpSource, Setup};
pub use kind::{KINDS, Kind, check, describe};

#[cfg(not(all(feature = "kafka", feature = "s3")))]
mod absent;
#[cfg(feature = "s3")]
pub mod aws;
pub mod clock;
#[cfg(feature = "kafka")]
pub mod kafka;
mod kind;
pub mod mqtt;
pub mod nats;
pub mod ping;
#[cfg(feature = "s3")]
pub mod s3;
mod target;
pub mod webhook;

/// The optional parts this build has, as `switchyard --version` says them: `kafka s3` for the
/// full build, `none (the edge build)` without either (`--no-default-features`).
pub const FEATURES: &str = if cfg!(all(feature = "kafka", feature = "s3")) {
    "kafka s3"
} else if cfg!(feature = "kafka") {
    "kafka"
} else if cfg!(feature = "s3") {
    "s3"
} else {
    "none (the edge build)"
};

/// Refuses, with one line naming the cargo feature, a configuration with a source or sink
/// this build left out (a KafkaSource, KafkaSink or S3Source without `kafka` or `s3`), its
/// Broker there or not. `serve` calls it before it starts anything; `check` covers
/// `validate` and reloads.
pub fn refuse_absent(config: &Config) -> Result<(), SourceError> {
    #[cfg(not(all(feature = "kafka", feature = "s3")))]
    absent::refuse(config)?;
    let _ = config;
    Ok(())
}

/// Largest request body an HTTP source takes, and the largest payload a stream source (Kafka,
/// NATS, MQTT) stores: the most an event may carry, as at ingress.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The largest payload a stream source stores into `log`: [`MAX_BODY_BYTES`], or less where
/// the log takes less (the JetStream engine: what fits in the servers' messages).
pub(crate) fn max_payload_bytes(log: &dyn EventLog) -> usize {
    log.max_data_bytes()
        .map_or(MAX_BODY_BYTES, |b| b.min(MAX_BODY_BYTES))
}

/// Refuses a stream message's payload over `max_bytes` ([`max_payload_bytes`]): the message is
/// malformed, and its source lets it go the way it lets any malformed message go.
pub(crate) fn payload_within_limit(
    payload_bytes: usize,
    max_bytes: usize,
) -> Result<(), EventError> {
    if payload_bytes > max_bytes {
        return Err(EventError::invalid(
            "data",
            format!(
                "the payload is {payload_bytes} bytes, more than the {max_bytes} a stored event may have"
            ),
        ));
    }
    Ok(())
}

/// Why the sources could not start: a one-line reason naming the source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// A source by kind, namespace and name.
type SourceKey = (&'static str, String, String);

/// One running source: what it was started from, its background tasks, its HTTP endpoint.
struct RunningSource {
    resource: Resource,
    tasks: Option<Tasks>,
    http: Vec<String>,
}

/// What a reload changed among the sources, each as `Kind namespace/name`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceChanges {
    /// Sources that started.
    pub added: Vec<String>,
    /// Sources restarted with new settings.
    pub changed: Vec<String>,
    /// Sources stopped.
    pub removed: Vec<String>,
    /// Why sources could not start (they do not run; the next reload tries them again).
    pub failed: Vec<String>,
}

/// The running sources, each started on its own so a reload restarts only those that
/// changed; [`shutdown`](Sources::shutdown) (or dropping it) stops the background ones. Each
/// stores before it acknowledges, so stopping one at any point loses nothing.
pub struct Sources {
    /// Routes of the HTTP sources (and `/debug/clock` for a manual clock).
    pub routes: Router,
    http: Arc<HttpSources>,
    running: HashMap<SourceKey, RunningSource>,
    clock: clock::Clock,
    client: reqwest::Client,
    /// This process's name among replicas ([`Setup::replica`](kind::Setup)).
    replica: Option<String>,
    /// Which run and why the others do not, for the resources API.
    status: SourcesView,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

struct HttpSources {
    log: Arc<dyn EventLog>,
    /// By `namespace/name`.
    by_key: std::sync::RwLock<HashMap<String, Arc<HttpSource>>>,
}

impl HttpSources {
    fn get(&self, key: &str) -> Option<Arc<HttpSource>> {
        let map = self
            .by_key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key).cloned()
    }

    fn edit(&self, f: impl FnOnce(&mut HashMap<String, Arc<HttpSource>>)) {
        f(&mut self
            .by_key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// Starts every source of `config` ([`KINDS`]): resolves secrets, starts the background ones,
/// and returns the routes of the HTTP ones. `replica` names this process among replicas that
/// share the brokers (the JetStream engine; `None`: the only one), so that stream sources
/// consume as a group (spec/jetstream.md).
pub async fn start(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: Arc<dyn EventLog>,
    clock: clock::Clock,
    replica: Option<String>,
) -> Result<Sources, SourceError> {
    let client = switchyard_triggers::delivery::build_client(reqwest::Client::builder())
        .map_err(|e| SourceError(format!("cannot build the HTTP client: {e}")))?;
    let http = Arc::new(HttpSources {
        log,
        by_key: std::sync::RwLock::default(),
    });
    let routes = Router::new()
        .route("/sources/{namespace}/{name}", post(receive))
        .with_state(Arc::clone(&http))
        .merge(clock::routes(clock.clone()));
    let mut sources = Sources {
        routes,
        http,
        running: HashMap::new(),
        clock,
        client,
        replica,
        status: SourcesView::default(),
    };
    let changes = sources.reconfigure(config, event_types, true).await;
    match changes.failed.into_iter().next() {
        Some(first) => Err(SourceError(first)),
        None => Ok(sources),
    }
}

impl Sources {
    /// Which sources run and why the others do not, kept up to date by each reload.
    pub fn status(&self) -> SourcesView {
        Arc::clone(&self.status)
    }

    /// Takes `config` in place of the running one, source by source: one whose resource is
    /// the same keeps running untouched (unless the brokers' `eventTypes` changed,
    /// `event_types_changed`, which every source applies); one that changed is stopped and
    /// started again; a new one starts; a removed one stops. A source that fails to start does
    /// not stop the others: they all run, and `failed` says why it does not (the next reload
    /// tries it again).
    pub async fn reconfigure(
        &mut self,
        config: &Config,
        event_types: &Arc<EventTypePolicy>,
        event_types_changed: bool,
    ) -> SourceChanges {
        let wanted: HashMap<SourceKey, Resource> = Resource::all_in(config, Group::Source)
            .into_iter()
            .map(|(kind, (ns, name), r)| ((kind, ns, name), r))
            .collect();
        let mut changes = SourceChanges::default();
        let stopping: Vec<SourceKey> = self
            .running
            .iter()
            .filter(|(key, running)| {
                event_types_changed || wanted.get(*key) != Some(&running.resource)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stopping {
            let Some(running) = self.running.remove(&key) else {
                continue;
            };
            // A changed HTTP source keeps answering with its old settings until the new one
            // takes its place (no 404 in between); a removed one is gone at once.
            if !wanted.contains_key(&key) {
                self.http.edit(|map| {
                    for k in &running.http {
                        map.remove(k);
                    }
                });
            }
            if let Some(tasks) = running.tasks {
                tasks.shutdown().await;
            }
            let (kind, ns, name) = &key;
            let named = format!("{kind} {ns}/{name}");
            if wanted.contains_key(&key) {
                changes.changed.push(named);
            } else {
                changes.removed.push(named);
            }
        }
        let log = Arc::clone(&self.http.log);
        let mut wanted: Vec<(SourceKey, Resource)> = wanted.into_iter().collect();
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut failed = HashMap::new();
        for (key, resource) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let (kind_name, ns, name) = &key;
            let Some(kind) = KINDS.iter().find(|k| k.name == *kind_name) else {
                continue;
            };
            // The kind starts what its part of the configuration holds: this source only.
            let mut own = config.clone();
            Resource::retain_in(&mut own, Group::Source, |k, (kns, kname)| {
                k == *kind_name && kns == ns && kname == name
            });
            let setup = Setup {
                config: &own,
                event_types,
                log: &log,
                clock: &self.clock,
                client: &self.client,
                replica: self.replica.as_deref(),
            };
            let started = match (kind.start)(&setup).await {
                Ok(started) => started,
                Err(e) => {
                    failed.insert(format!("{kind_name} {ns}/{name}"), e.0.clone());
                    changes.failed.push(e.0);
                    continue;
                }
            };
            let http: Vec<String> = started.http.iter().map(|(k, _)| k.clone()).collect();
            self.http.edit(|map| {
                for (k, h) in started.http {
                    map.insert(k, Arc::new(h));
                }
            });
            let named = format!("{kind_name} {ns}/{name}");
            if !changes.changed.contains(&named) {
                changes.added.push(named);
            }
            self.running.insert(
                key,
                RunningSource {
                    resource,
                    tasks: started.tasks,
                    http,
                },
            );
        }
        // HTTP endpoints a changed source no longer has.
        let serving: std::collections::HashSet<&String> =
            self.running.values().flat_map(|r| &r.http).collect();
        self.http.edit(|map| map.retain(|k, _| serving.contains(k)));
        let running = self
            .running
            .keys()
            .map(|(kind, ns, name)| format!("{kind} {ns}/{name}"))
            .collect();
        *self
            .status
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = SourceStatus { running, failed };
        changes
    }

    /// Stops every background source and waits until each has ended.
    pub async fn shutdown(self) {
        for (_, running) in self.running {
            if let Some(tasks) = running.tasks {
                tasks.shutdown().await;
            }
        }
    }
}

/// One stream sink's writer and what it was made from.
struct RunningSink {
    resource: Resource,
    writer: Arc<dyn StreamSink>,
    tasks: Tasks,
}

/// The writers of the stream sinks (KafkaSinks, NatsSinks) triggers deliver to.
pub struct StreamSinkWriters {
    /// The writers by address, for the dispatcher (a reload replaces it).
    pub sinks: StreamSinks,
    running: HashMap<String, RunningSink>,
    /// Writers a reload replaced, kept until [`retire`](Self::retire): triggers may still
    /// deliver through them until they are rebuilt.
    replaced: Vec<RunningSink>,
}

impl std::fmt::Debug for StreamSinkWriters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSinkWriters")
            .field("sinks", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl StreamSinkWriters {
    /// Makes a writer for each KafkaSink and NatsSink of `config` that is new or changed,
    /// keeps the others, and returns the addresses of those it made anew or dropped (the
    /// triggers that deliver to them must be rebuilt). The writers replaced stay open until
    /// [`retire`](Self::retire).
    pub async fn reconfigure(
        &mut self,
        config: &Config,
    ) -> Result<std::collections::HashSet<String>, SourceError> {
        let wanted: HashMap<String, Resource> = Resource::all_in(config, Group::Sink)
            .into_iter()
            .filter(|(kind, _, _)| matches!(*kind, "KafkaSink" | "NatsSink"))
            .map(|(kind, (ns, name), r)| (address(kind, &ns, &name), r))
            .collect();
        let mut made = HashMap::new();
        for (addr, resource) in &wanted {
            if self
                .running
                .get(addr)
                .is_some_and(|r| &r.resource == resource)
            {
                continue;
            }
            #[cfg_attr(not(feature = "kafka"), allow(unused_mut))]
            let mut tasks = Tasks::new("stream sinks");
            let writer = match resource {
                #[cfg(feature = "kafka")]
                Resource::KafkaSink(s) => {
                    kafka::sink(&s.metadata.namespace, &s.metadata.name, s, &mut tasks)?
                }
                #[cfg(not(feature = "kafka"))]
                Resource::KafkaSink(s) => {
                    return Err(absent::refusal(
                        "KafkaSink",
                        &s.metadata.namespace,
                        &s.metadata.name,
                        "kafka",
                    ));
                }
                Resource::NatsSink(s) => {
                    nats::sink(&s.metadata.namespace, &s.metadata.name, s).await?
                }
                _ => continue,
            };
            made.insert(
                addr.clone(),
                RunningSink {
                    resource: resource.clone(),
                    writer,
                    tasks,
                },
            );
        }
        let mut restarted: std::collections::HashSet<String> = made.keys().cloned().collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|a| !wanted.contains_key(*a))
            .cloned()
            .collect();
        for addr in gone {
            if let Some(old) = self.running.remove(&addr) {
                self.replaced.push(old);
            }
            restarted.insert(addr);
        }
        for (addr, sink) in made {
            if let Some(old) = self.running.insert(addr, sink) {
                self.replaced.push(old);
            }
        }
        self.sinks = Arc::new(
            self.running
                .iter()
                .map(|(a, r)| (a.clone(), Arc::clone(&r.writer)))
                .collect(),
        );
        Ok(restarted)
    }

    /// Stops the writers a reload replaced, once no trigger delivers through them.
    pub async fn retire(&mut self) {
        for old in std::mem::take(&mut self.replaced) {
            old.tasks.shutdown().await;
        }
    }

    /// Stops the writers' background tasks and waits until each has ended.
    pub async fn shutdown(mut self) {
        self.retire().await;
        for (_, r) in self.running {
            r.tasks.shutdown().await;
        }
    }
}

/// Makes a writer for every KafkaSink and NatsSink of `config`. Connections are made in the
/// background: a stream that is down at start only delays deliveries (they are retried).
pub async fn start_sinks(config: &Config) -> Result<StreamSinkWriters, SourceError> {
    let mut writers = StreamSinkWriters {
        sinks: StreamSinks::default(),
        running: HashMap::new(),
        replaced: Vec::new(),
    };
    writers.reconfigure(config).await?;
    Ok(writers)
}

async fn receive(
    State(sources): State<Arc<HttpSources>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = switchyard_core::id::join(&namespace, &name);
    // The source and the caller's credentials are checked before the body is read; a
    // refusal reads (and throws away) a bounded amount of it, so the caller reads the answer.
    let Some(s) = sources.get(&key) else {
        drain(&headers, body).await;
        return Problem::not_found(format!(
            "no WebhookSource or S3Source (webhook or sns mode) `{name}` in namespace `{namespace}`"
        ))
        .into_response();
    };
    if let Err(p) = s.check_headers(&headers) {
        drain(&headers, body).await;
        return p.into_response();
    }
    let answer = async {
        let body = read_body(body, MAX_BODY_BYTES).await?;
        s.handle(&sources.log, &headers, body).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}
