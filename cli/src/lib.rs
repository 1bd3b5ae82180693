//! Switchyard as a library: [`run`] serves one configuration (the broker with its store,
//! the dispatcher, the stream sinks, the sources and the management API) until told to stop.
//! The `switchyard` binary is a thin command line over it; tests that need to hold the
//! clock call it in-process with a manual [`Clock`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use switchyard_adapters::SourceError;
pub use switchyard_adapters::clock::Clock;
pub use switchyard_broker::auth::{AuthOptions, AuthorizationMode};
use switchyard_broker::server::ServeError;
pub use switchyard_broker::{RedbOptions, ServerOptions};
pub use switchyard_core::config::Config;
use switchyard_triggers::api::figures::Engine;
use switchyard_triggers::api::replay;
use switchyard_triggers::api::resources::{self, ConfigView};
use switchyard_triggers::dispatch::{self, DispatchError, Dispatcher};

mod reload;
pub use reload::{Changes, Reloaded, WATCH_INTERVAL};

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The server (its store, its listener) could not start or failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The dispatcher could not start (a filter, the store).
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// A source or a stream sink could not start.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] switchyard_core::config::ConfigError),
    /// The JetStream engine could not start, or cannot run the configuration.
    #[error("{0}")]
    JetStream(String),
}

impl From<switchyard_broker::jetstream::JetStreamError> for RunError {
    fn from(e: switchyard_broker::jetstream::JetStreamError) -> Self {
        RunError::JetStream(e.to_string())
    }
}

/// Serves `config` with `options`, PingSources scheduled by `clock`, until `shutdown`
/// resolves; then drains (requests in flight answered, queued appends committed, cursors
/// persisted) and returns. `ready` is called with the bound address once everything runs
/// (`options.listen` may have port 0). The configuration is fixed: see [`run_watching`].
pub async fn run(
    config: Config,
    options: ServerOptions,
    clock: Clock,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    serve(config, None, options, clock, ready, shutdown).await
}

/// Like [`run`], with the configuration loaded from `path` and reloaded when its files change,
/// on SIGHUP and on `POST /api/v1/reload` (`reload.rs`; spec/reload.md).
pub async fn run_watching(
    path: PathBuf,
    options: ServerOptions,
    clock: Clock,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // What the files hold is noted before they are read, so an edit made while `serve` starts
    // is seen by the watcher.
    let watched = reload::Watched::new(path);
    let config = Config::load(&watched.path)?;
    serve(config, Some(watched), options, clock, ready, shutdown).await
}

async fn serve(
    config: Config,
    watched: Option<reload::Watched>,
    options: ServerOptions,
    clock: Clock,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    dispatch::check_filters(&config)?;
    // What this build left out is refused before anything binds or consumes.
    switchyard_adapters::refuse_absent(&config)?;
    for ignored in &config.ignored {
        tracing::warn!("{ignored}");
    }
    for not_ready in &config.not_ready {
        tracing::warn!("not ready: {not_ready}");
    }
    let mut options = options;
    options.auth.filters = event_filters();
    if let Some(jetstream) = options.jetstream.clone() {
        return serve_jetstream(config, watched, jetstream, options, clock, ready, shutdown).await;
    }
    let redrive_allow = options.auth.redrive_allow_uris.clone();
    let egress = options.egress.clone();
    let server = switchyard_broker::Server::bind(&config, options).await?;
    let addr = server.local_addr()?;
    let stream_sinks = switchyard_adapters::start_sinks(&config).await?;
    // Paused triggers stay paused across a restart: known before any takes work.
    dispatch::pause::load(&server.log())
        .await
        .map_err(|e| RunError::Dispatch(e.into()))?;
    let dispatcher = Dispatcher::start(
        &config,
        server.log(),
        server.event_types(),
        Arc::clone(&stream_sinks.sinks),
        egress,
    )
    .await?;
    let sources =
        switchyard_adapters::start(&config, &server.event_types(), server.log(), clock, None)
            .await?;
    let brokers = reload::tail_brokers(&config);
    let (requests, requested) = reload::requests();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let view: ConfigView = Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));
    let engine = Engine::Embedded {
        running: dispatcher.running(),
        log: server.log(),
    };
    // Ends when `stop` is sent.
    tokio::spawn(switchyard_triggers::api::figures::sample_gauges(
        Arc::clone(&view),
        engine.clone(),
        stopped.clone(),
    ));
    let resources = resources::routes(Arc::clone(&view), engine.clone(), sources.status())
        .merge(replay::routes(Arc::clone(&view), engine));
    let api = switchyard_triggers::api::routes(server.log(), dispatcher.running(), redrive_allow)
        .merge(resources)
        .merge(sources.routes.clone())
        .merge(switchyard_triggers::tail::routes(
            server.log(),
            Arc::clone(&brokers),
            stopped.clone(),
        ))
        .merge(reload::routes(requests));
    tracing::info!(
        %addr,
        brokers = config.brokers.len(),
        triggers = config.triggers.len(),
        "switchyard is serving"
    );
    let running = reload::Running {
        config,
        generation: 1,
        server: server.reconfigure(),
        sinks: stream_sinks,
        engine: reload::Engine::Embedded(dispatcher),
        sources,
        brokers,
        view,
        log: server.log(),
        loaded_at: reload::now(),
        incomplete: false,
    };
    running.report(None);
    let mut watcher = AbortOnDrop(tokio::spawn(reload::watch(
        running, watched, requested, stopped,
    )));
    ready(addr);
    server
        .serve(api, shutdown, async move {
            // The watcher stops the sources, the triggers and the stream sinks.
            stop.send_replace(true);
            if let Err(e) = (&mut watcher.0).await {
                tracing::error!(error = %e, "the configuration watcher failed");
            }
        })
        .await?;
    Ok(())
}

/// [`serve`] on the JetStream engine: ingress publishes to the brokers' streams, triggers
/// deliver from their durable consumers, which every replica on the same configuration
/// shares.
async fn serve_jetstream(
    config: Config,
    watched: Option<reload::Watched>,
    jetstream: switchyard_broker::jetstream::JetStreamOptions,
    options: ServerOptions,
    clock: Clock,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    use switchyard_broker::jetstream::JetStreamLog;
    use switchyard_triggers::dispatch::jetstream::JetStreamDispatcher;

    // What this build left out is refused before any stream is made.
    switchyard_adapters::refuse_absent(&config)?;
    let egress = options.egress.clone();
    let redrive_allow = options.auth.redrive_allow_uris.clone();
    let log = Arc::new(JetStreamLog::connect(&jetstream, options.max_body_bytes).await?);
    let server = switchyard_broker::Server::bind_to_log(
        &config,
        options,
        Arc::clone(&log) as Arc<dyn switchyard_broker::EventLog>,
    )
    .await?;
    log.ensure_brokers(&config).await?;
    let addr = server.local_addr()?;
    let sinks = switchyard_adapters::start_sinks(&config).await?;
    dispatch::pause::load(&server.log())
        .await
        .map_err(|e| RunError::Dispatch(e.into()))?;
    let dispatcher = JetStreamDispatcher::start(
        &config,
        Arc::clone(&log),
        server.event_types(),
        Arc::clone(&sinks.sinks),
        egress,
    )
    .await?;
    // Stream sources consume as a group of the replicas (spec/jetstream.md).
    let replica = jetstream.replica_name(addr.port());
    let sources = switchyard_adapters::start(
        &config,
        &server.event_types(),
        server.log(),
        clock,
        Some(replica.clone()),
    )
    .await?;
    tracing::info!(
        %addr,
        servers = %jetstream.servers.join(","),
        replicas = jetstream.replicas,
        %replica,
        brokers = config.brokers.len(),
        triggers = config.triggers.len(),
        "switchyard is serving on JetStream"
    );
    let brokers = reload::tail_brokers(&config);
    let (requests, requested) = reload::requests();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Another replica may pause or resume a trigger: each follows the store.
    let mut follow = switchyard_broker::tasks::Tasks::new("pause follower");
    follow.spawn(dispatch::pause::follow(server.log(), stopped.clone()));
    let view: ConfigView = Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));
    let engine = Engine::JetStream {
        triggers: dispatcher.triggers(),
        log: Arc::clone(&log),
    };
    // Ends when `stop` is sent.
    tokio::spawn(switchyard_triggers::api::figures::sample_gauges(
        Arc::clone(&view),
        engine.clone(),
        stopped.clone(),
    ));
    let resources = resources::routes(Arc::clone(&view), engine.clone(), sources.status())
        .merge(replay::routes(Arc::clone(&view), engine));
    let api = switchyard_triggers::api::jetstream::routes(
        Arc::clone(&log),
        dispatcher.triggers(),
        &redrive_allow,
    )
    .merge(sources.routes.clone())
    .merge(switchyard_triggers::tail::routes(
        Arc::clone(&log) as Arc<dyn switchyard_broker::EventLog>,
        Arc::clone(&brokers),
        stopped.clone(),
    ))
    .merge(reload::routes(requests))
    .merge(resources);
    let running = reload::Running {
        config,
        generation: 1,
        server: server.reconfigure(),
        sinks,
        engine: reload::Engine::JetStream {
            dispatcher,
            log: Arc::clone(&log),
        },
        sources,
        brokers,
        view,
        log: server.log(),
        loaded_at: reload::now(),
        incomplete: false,
    };
    running.report(None);
    let mut watcher = AbortOnDrop(tokio::spawn(reload::watch(
        running, watched, requested, stopped,
    )));
    ready(addr);
    server
        .serve(api, shutdown, async move {
            // Following streams of events end; the watcher stops the sources, the triggers
            // and the stream sinks.
            stop.send_replace(true);
            if let Err(e) = (&mut watcher.0).await {
                tracing::error!(error = %e, "the configuration watcher failed");
            }
            follow.shutdown().await;
        })
        .await?;
    // The last acks and hand-backs are buffered in the client: send them before exiting.
    match tokio::time::timeout(std::time::Duration::from_secs(5), log.client().flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => tracing::warn!(
            "cannot flush the last acknowledgements to NATS; those events will be delivered again"
        ),
    }
    Ok(())
}

/// The filter engine, for EventPolicies' `filters` (the broker does not depend on it).
fn event_filters() -> switchyard_broker::auth::FilterCompiler {
    use switchyard_broker::auth::{EventPredicate, FilterCompiler};
    FilterCompiler(Arc::new(|filters| {
        let filter =
            switchyard_triggers::filter::Filter::compile_all(filters).map_err(|e| e.to_string())?;
        Ok(Arc::new(move |e: &switchyard_core::CloudEvent| filter.matches(e)) as EventPredicate)
    }))
}

/// The configuration watcher's task, aborted if its handle is dropped: when the wind-down runs
/// out of time the server drops it, and nothing of the running configuration (a reload's
/// drain that overlapped the stop, say) then outlives the store.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
