//! Switchyard as a library: [`run`] serves one configuration (the broker with its store,
//! the dispatcher, the stream sinks, the sources and the management API) until told to stop.
//! The `switchyard` binary is a thin command line over it; tests that need to hold the
//! clock call it in-process with a manual [`Clock`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use switchyard_adapters::SourceError;
pub use switchyard_adapters::clock::Clock;
use switchyard_broker::server::ServeError;
pub use switchyard_broker::{RedbOptions, ServerOptions};
pub use switchyard_core::config::Config;
use switchyard_triggers::dispatch::{self, DispatchError, Dispatcher};

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
}

/// Serves `config` with `options`, PingSources scheduled by `clock`, until `shutdown`
/// resolves; then drains (requests in flight answered, queued appends committed, cursors
/// persisted) and returns. `ready` is called with the bound address once everything runs
/// (`options.listen` may have port 0).
pub async fn run(
    config: Config,
    options: ServerOptions,
    clock: Clock,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    dispatch::check_filters(&config)?;
    for ignored in &config.ignored {
        tracing::warn!("{ignored}");
    }
    for not_ready in &config.not_ready {
        tracing::warn!("not ready: {not_ready}");
    }
    let server = switchyard_broker::Server::bind(&config, options).await?;
    let addr = server.local_addr()?;
    let stream_sinks = switchyard_adapters::start_sinks(&config).await?;
    let dispatcher = Dispatcher::start(
        &config,
        server.log(),
        server.event_types(),
        &format!("http://{addr}"),
        Arc::clone(&stream_sinks.sinks),
    )
    .await?;
    let sources =
        switchyard_adapters::start(&config, &server.event_types(), server.log(), clock).await?;
    let api = switchyard_triggers::api::routes(server.log(), dispatcher.sources())
        .merge(sources.routes.clone())
        .merge(switchyard_triggers::tail::routes(
            server.log(),
            config
                .brokers
                .keys()
                .map(|(ns, name)| switchyard_core::id::join(ns, name))
                .collect(),
        ));
    tracing::info!(
        %addr,
        brokers = config.brokers.len(),
        triggers = config.triggers.len(),
        "switchyard is serving"
    );
    ready(addr);
    server
        .serve(api, async move {
            shutdown.await;
            sources.shutdown().await;
            dispatcher.shutdown().await;
            stream_sinks.shutdown().await;
        })
        .await?;
    Ok(())
}
