//! Live configuration: the config file or directory `serve` was started with is the source of
//! truth. A change to it (seen by polling its files every [`WATCH_INTERVAL`]), a SIGHUP or a
//! `POST /api/v1/reload` loads it again; a configuration that loads and checks is taken in
//! place of the running one, part by part (stream sinks, triggers, brokers and EventTypes,
//! sources), each part restarting only what changed. One that does not keeps the running one
//! and says why: in the log, in `/readyz` (`config.error`), in the metric
//! `switchyard_config_reloads_total{result="refused"}` and in the API's answer. The rules are in
//! spec/reload.md.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use switchyard_adapters::{SourceChanges, Sources, StreamSinkWriters};
use switchyard_broker::jetstream::JetStreamLog;
use switchyard_broker::problem::Problem;
use switchyard_broker::server::{ConfigStatus, Reconfigure};
use switchyard_core::config::Config;
use switchyard_triggers::dispatch::jetstream::JetStreamDispatcher;
use switchyard_triggers::dispatch::{self, DispatchError, Dispatcher, TriggerChanges};
use switchyard_triggers::streams::StreamSinks;
use tokio::sync::{mpsc, oneshot, watch};

/// How often the configuration's files are read to see whether they changed.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long the files must stay unchanged before a change is loaded.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Why a reload did not go through whole.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The configuration did not load or check: nothing changed.
    Refused(String),
    /// It was taken, but a part of it could not start (a source, a trigger's store access):
    /// what it did, and why not the rest.
    Partly(Box<Reloaded>, String),
}

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reloaded {
    /// The configuration's generation now (1 at start, one more per reload applied).
    pub generation: u64,
    /// Triggers started, restarted and stopped (`namespace/name`).
    pub triggers: Changes,
    /// Sources started, restarted and stopped (`Kind namespace/name`).
    pub sources: Changes,
    /// Brokers added and removed (`namespace/name`).
    pub brokers: Changes,
}

/// Names added, changed and removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Changes {
    /// Started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Restarted with new settings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Stopped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl From<TriggerChanges> for Changes {
    fn from(c: TriggerChanges) -> Changes {
        let names =
            |v: Vec<switchyard_core::id::TriggerId>| v.iter().map(ToString::to_string).collect();
        Changes {
            added: names(c.added),
            changed: names(c.changed),
            removed: names(c.removed),
        }
    }
}

impl From<SourceChanges> for Changes {
    /// (Sources that failed are the reload's error, not a change.)
    fn from(c: SourceChanges) -> Changes {
        Changes {
            added: c.added,
            changed: c.changed,
            removed: c.removed,
        }
    }
}

/// The triggers, on the engine `serve` runs.
pub(crate) enum Engine {
    /// The embedded store's dispatcher.
    Embedded(Dispatcher),
    /// The JetStream engine's: the brokers' streams are made before their triggers start.
    JetStream {
        dispatcher: JetStreamDispatcher,
        log: Arc<JetStreamLog>,
    },
}

impl Engine {
    /// Makes what the triggers of `config` need before they start: on JetStream, the streams
    /// of its Brokers (a new one's, or one whose retention changed).
    async fn prepare(&self, config: &Config) -> Result<(), String> {
        match self {
            Engine::Embedded(_) => Ok(()),
            Engine::JetStream { log, .. } => {
                log.ensure_brokers(config).await.map_err(|e| e.to_string())
            }
        }
    }

    async fn reconfigure(
        &mut self,
        config: &Config,
        policy: Arc<switchyard_broker::eventtypes::EventTypePolicy>,
        streams: StreamSinks,
        event_types_changed: bool,
        restarted: &std::collections::HashSet<String>,
    ) -> Result<TriggerChanges, DispatchError> {
        match self {
            Engine::Embedded(d) => {
                d.reconfigure(config, policy, streams, event_types_changed, restarted)
                    .await
            }
            Engine::JetStream { dispatcher, .. } => {
                dispatcher
                    .reconfigure(config, policy, streams, event_types_changed, restarted)
                    .await
            }
        }
    }

    async fn shutdown(self) {
        match self {
            Engine::Embedded(d) => d.shutdown().await,
            Engine::JetStream { dispatcher, .. } => dispatcher.shutdown().await,
        }
    }
}

/// The parts a reload changes, and the configuration they run.
pub(crate) struct Running {
    pub config: Config,
    pub generation: u64,
    pub server: Reconfigure,
    pub sinks: StreamSinkWriters,
    pub engine: Engine,
    pub sources: Sources,
    pub brokers: switchyard_triggers::tail::Brokers,
    /// The configuration in force, as the resources API reads it.
    pub view: switchyard_triggers::api::resources::ConfigView,
    /// The store (a removed trigger's pause is forgotten in it).
    pub log: Arc<dyn switchyard_broker::EventLog>,
    /// When the configuration in force was taken (RFC 3339).
    pub loaded_at: String,
    /// A source of the configuration in force failed to start: the next reload tries again
    /// even when the files are the same.
    pub incomplete: bool,
}

/// What the brokers' `eventTypes` policy is made of: when it differs, every trigger (replies)
/// and source applies the new one.
fn policy_inputs(config: &Config) -> impl PartialEq + use<> {
    let modes: Vec<_> = config
        .brokers
        .iter()
        .map(|(k, b)| (k.clone(), b.spec.event_types, b.spec.event_types_strict))
        .collect();
    (config.event_types.clone(), modes)
}

/// The brokers of `config` as the events endpoint (`tail`) knows them, shared with it.
pub(crate) fn tail_brokers(config: &Config) -> switchyard_triggers::tail::Brokers {
    Arc::new(std::sync::RwLock::new(
        broker_names(config).into_iter().collect(),
    ))
}

fn broker_names(config: &Config) -> std::collections::BTreeSet<String> {
    config
        .brokers
        .keys()
        .map(|(ns, name)| switchyard_core::id::join(ns, name))
        .collect()
}

impl Running {
    /// Loads `path` and takes it in place of the running configuration: `None` when it is
    /// the one running.
    async fn reload(&mut self, path: &Path) -> Result<Option<Reloaded>, Failure> {
        let load = path.to_owned();
        let config = tokio::task::spawn_blocking(move || Config::load(&load))
            .await
            .map_err(|e| Failure::Refused(format!("loading failed: {e}")))?
            .map_err(|e| Failure::Refused(e.to_string()))?;
        if config == self.config && !self.incomplete {
            // The front door is rebuilt all the same: an Identity's token file or a
            // TokenIssuer's key file may have changed under an unchanged configuration
            // (rotation without a restart, spec/security.md).
            self.server
                .refresh_front_door(&config)
                .map_err(|e| Failure::Refused(e.to_string()))?;
            return Ok(None);
        }
        let refused = |e: &dyn std::fmt::Display| Failure::Refused(e.to_string());
        dispatch::check_filters(&config).map_err(|e| refused(&e))?;
        let policy = self.server.check(&config).map_err(|e| refused(&e))?;
        switchyard_adapters::check(&config, &policy).map_err(|e| refused(&e))?;
        for ignored in &config.ignored {
            tracing::warn!("{ignored}");
        }
        for not_ready in &config.not_ready {
            tracing::warn!("not ready: {not_ready}");
        }
        self.engine
            .prepare(&config)
            .await
            .map_err(|e| refused(&e))?;
        // Checked: from here on each part applies it. Triggers before brokers, so a new
        // broker's triggers are routed to before ingress takes its first event. Until the
        // triggers have started changing, a failure changes nothing they deliver with.
        let event_types_changed = policy_inputs(&config) != policy_inputs(&self.config);
        let restarted = self
            .sinks
            .reconfigure(&config)
            .await
            .map_err(|e| refused(&e))?;
        let mut errors = Vec::new();
        let triggers = match self
            .engine
            .reconfigure(
                &config,
                Arc::clone(&policy),
                Arc::clone(&self.sinks.sinks),
                event_types_changed,
                &restarted,
            )
            .await
        {
            Ok(changes) => changes,
            Err(DispatchError::Partly { changes, error }) => {
                errors.push(error.to_string());
                changes
            }
            // Every trigger is built before any stops: nothing changed.
            Err(e) => return Err(refused(&e)),
        };
        for id in &triggers.removed {
            if let Err(e) = dispatch::pause::forget(&self.log, id).await {
                errors.push(format!(
                    "cannot forget the pause of removed trigger {id}: {e}"
                ));
            }
        }
        self.sinks.retire().await;
        let policy = match self.server.apply(&config) {
            Ok(policy) => policy,
            Err(e) => {
                errors.push(e.to_string());
                policy
            }
        };
        let (old, new) = (broker_names(&self.config), broker_names(&config));
        *self
            .brokers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new.iter().cloned().collect();
        let brokers = Changes {
            added: new.difference(&old).cloned().collect(),
            changed: Vec::new(),
            removed: old.difference(&new).cloned().collect(),
        };
        let mut sources = self
            .sources
            .reconfigure(&config, &policy, event_types_changed)
            .await;
        errors.append(&mut sources.failed);
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config.clone());
        self.config = config;
        self.generation += 1;
        self.loaded_at = now();
        self.incomplete = !errors.is_empty();
        let reloaded = Reloaded {
            generation: self.generation,
            triggers: triggers.into(),
            sources: sources.into(),
            brokers,
        };
        if errors.is_empty() {
            Ok(Some(reloaded))
        } else {
            Err(Failure::Partly(Box::new(reloaded), errors.join("; ")))
        }
    }

    /// Reloads, logs and reports the outcome.
    async fn reload_and_report(&mut self, path: &Path) -> Result<Reloaded, Failure> {
        let outcome = self.reload(path).await;
        let result = match &outcome {
            Ok(Some(_)) => "applied",
            Ok(None) => "unchanged",
            Err(Failure::Partly(..)) => "partly_applied",
            Err(Failure::Refused(_)) => "refused",
        };
        metrics::counter!(switchyard_broker::metrics::CONFIG_RELOADS, "result" => result)
            .increment(1);
        match outcome {
            Ok(Some(reloaded)) => {
                tracing::info!(
                    generation = reloaded.generation,
                    triggers = ?reloaded.triggers,
                    sources = ?reloaded.sources,
                    brokers = ?reloaded.brokers,
                    "configuration reloaded"
                );
                self.report(None);
                Ok(reloaded)
            }
            Ok(None) => {
                // The files are back to what runs: a refusal before is moot.
                self.report(None);
                Ok(Reloaded {
                    generation: self.generation,
                    ..Reloaded::default()
                })
            }
            Err(Failure::Refused(error)) => {
                tracing::error!(%error, "configuration refused; the running one stays in force");
                self.report(Some(error.clone()));
                Err(Failure::Refused(error))
            }
            Err(Failure::Partly(reloaded, error)) => {
                tracing::error!(
                    generation = reloaded.generation,
                    %error,
                    "configuration reloaded, but a part of it could not start; a reload (SIGHUP) tries it again"
                );
                self.report(Some(error.clone()));
                Err(Failure::Partly(reloaded, error))
            }
        }
    }

    pub(crate) fn report(&self, error: Option<String>) {
        self.server.report(ConfigStatus {
            generation: self.generation,
            loaded_at: self.loaded_at.clone(),
            error,
        });
    }

    /// Stops the sources, the triggers and the stream sinks, in that order.
    pub(crate) async fn shutdown(self) {
        self.sources.shutdown().await;
        self.engine.shutdown().await;
        self.sinks.shutdown().await;
    }
}

/// Now, as `/readyz` writes times.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A reload asked for over the API, answered with its outcome.
type Request = oneshot::Sender<Result<Reloaded, Failure>>;

/// `POST /api/v1/reload`, which asks the watcher to reload now.
pub(crate) fn routes(requests: mpsc::Sender<Request>) -> Router {
    Router::new()
        .route("/api/v1/reload", post(reload_now))
        .with_state(requests)
}

async fn reload_now(State(requests): State<mpsc::Sender<Request>>) -> Response {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "urn:switchyard:problem:no-reload",
            "cannot reload",
            "the configuration is fixed (this server was not started from a config path) or it is shutting down".to_owned(),
        )
        .into_response()
    };
    if requests.send(tx).await.is_err() {
        return unavailable();
    }
    match rx.await {
        Ok(Ok(reloaded)) => axum::Json(reloaded).into_response(),
        Ok(Err(Failure::Refused(error))) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "urn:switchyard:problem:config-refused",
            "configuration refused",
            format!("{error}; the running configuration stays in force"),
        )
        .into_response(),
        Ok(Err(Failure::Partly(reloaded, error))) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "urn:switchyard:problem:config-partly-applied",
            "configuration partly applied",
            format!(
                "generation {} is in force, but {error}; a reload tries it again",
                reloaded.generation
            ),
        )
        .into_response(),
        Err(_) => unavailable(),
    }
}

/// A fingerprint of the configuration at `path`: the names and contents of the files
/// [`Config::load`] reads (other files in the directory, a log say, do not count). `None`
/// when they cannot be listed.
fn fingerprint(path: &Path) -> Option<u64> {
    let mut h = DefaultHasher::new();
    for p in switchyard_core::config::config_files(path).ok()? {
        p.hash(&mut h);
        if let Ok(bytes) = std::fs::read(&p) {
            bytes.hash(&mut h);
        }
    }
    Some(h.finish())
}

async fn fingerprint_of(path: &Path) -> Option<u64> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || fingerprint(&path))
        .await
        .ok()
        .flatten()
}

/// The configuration's path, what its files held when they were last loaded, and SIGHUP.
pub(crate) struct Watched {
    pub path: PathBuf,
    seen: Option<u64>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Watched {
    /// `path`, its files' fingerprint taken now (before they are loaded); from now on SIGHUP
    /// asks for a reload instead of ending the process.
    pub fn new(path: PathBuf) -> Watched {
        let seen = fingerprint(&path);
        Watched {
            path,
            seen,
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }
}

/// Reloads `running` from the watched path when its files change, on SIGHUP and on each
/// request, until `stop` turns true; then shuts the parts down.
pub(crate) async fn watch(
    mut running: Running,
    watched: Option<Watched>,
    mut requests: mpsc::Receiver<Request>,
    mut stop: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    let (path, mut seen, mut hangup) = match watched {
        Some(w) => (Some(w.path), w.seen, w.hangup),
        None => (None, None, None),
    };
    #[cfg(not(unix))]
    let (path, mut seen) = match watched {
        Some(w) => (Some(w.path), w.seen),
        None => (None, None),
    };
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hung_up = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hung_up = std::future::pending::<()>();
        let answer = tokio::select! {
            biased;
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            request = requests.recv() => match request {
                Some(tx) => Some(tx),
                None => break,
            },
            () = hung_up => {
                tracing::info!("SIGHUP: reloading the configuration");
                None
            }
            _ = tick.tick() => {
                let Some(p) = &path else { continue };
                let mut now = fingerprint_of(p).await;
                if now == seen {
                    continue;
                }
                // A file being written is read again until it holds still, so a half-written
                // file is not taken for the new configuration (shutting down ends the wait).
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(SETTLE) => {}
                        () = async { let _ = stop.wait_for(|s| *s).await; } => break,
                    }
                    let again = fingerprint_of(p).await;
                    if again == now {
                        break;
                    }
                    now = again;
                }
                if *stop.borrow() {
                    continue;
                }
                tracing::info!(path = %p.display(), "the configuration changed: reloading");
                None
            }
        };
        let outcome = match &path {
            Some(p) => {
                // What is reloaded now is what the watcher has seen.
                seen = fingerprint_of(p).await;
                running.reload_and_report(p).await
            }
            None => Err(Failure::Refused(
                "this server was started with a fixed configuration".to_owned(),
            )),
        };
        if let Some(tx) = answer {
            let _ = tx.send(outcome);
        }
    }
    running.shutdown().await;
}

/// The channel `POST /api/v1/reload` asks the watcher through.
pub(crate) fn requests() -> (mpsc::Sender<Request>, mpsc::Receiver<Request>) {
    mpsc::channel(4)
}

impl Reloaded {
    /// No trigger, source or broker changed.
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty() && self.sources.is_empty() && self.brokers.is_empty()
    }
}
