//! The HTTP server: ingress, health, readiness and metrics on one listener, and the order of
//! a graceful shutdown (stop taking requests, answer the ones in flight, commit what is
//! queued, persist cursors).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use switchyard_core::config::{Config, ConfigError};

use crate::app::{App, BrokerState};
use crate::auth::{Auth, AuthError, AuthOptions};
use crate::eventtypes::{Discovery, EventTypePolicy};

use crate::ingress::broker_endpoint;
use crate::log::{EventLog, LogError, RetentionPolicy, blocking};
use crate::metrics as m;
use crate::problem::Problem;
use crate::redb_log::{CommitReport, OnCommit, RedbLog, RedbOptions};
use crate::tasks::Tasks;

/// The smallest body limit that may be configured.
pub const MIN_BODY_LIMIT_BYTES: usize = 64 * 1024;
/// The body limit when none is configured.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Retention when a broker sets none.
pub const DEFAULT_RETENTION_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] LogError),
    /// The configuration could not be applied (an EventType's schema does not compile).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The front door could not be built (a token or key file unreadable, nobody could
    /// authenticate on an open address).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running (its listener's address could not be read).
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Settings of `switchyard serve`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the store keeps its files.
    pub data_dir: PathBuf,
    /// Largest request body taken, in bytes (at least 64 KiB).
    pub max_body_bytes: usize,
    /// Settings of the embedded store.
    pub store: RedbOptions,
    /// Keep the brokers' events in JetStream instead (`--jetstream`): the engine of
    /// stateless replicas (spec/jetstream.md); `store` and `data_dir` are then unused.
    pub jetstream: Option<crate::jetstream::JetStreamOptions>,
    /// The front door's settings.
    pub auth: AuthOptions,
    /// Serve HTTPS with these files (`--tls-cert-file`, …), or plain HTTP.
    pub tls: Option<crate::tls::TlsOptions>,
    /// Bounds on client connections (`--max-connections`, `--header-read-timeout-ms`,
    /// `--body-read-timeout-ms`).
    pub connections: crate::connections::ConnectionLimits,
    /// Where subscribers, dead-letter sinks and redrives may send
    /// (`--deny-internal-destinations`, `--egress-allow`); the server itself does not use it.
    pub egress: switchyard_core::egress::EgressPolicy,
}

/// The listener: plain TCP, or TLS in front of it.
enum Listening {
    Plain(tokio::net::TcpListener),
    Tls(crate::tls::TlsListener),
}

/// The front door of `config`, refused when nobody could authenticate on an address other
/// than loopback and the operator did not allow that.
fn front_door(app: &App, config: &Config) -> Result<Auth, ServeError> {
    let auth = Auth::build(config, &app.auth_options)?;
    if !auth.enabled && !app.listen.ip().is_loopback() && !app.auth_options.allow_unauthenticated {
        return Err(AuthError::Unauthenticated { listen: app.listen }.into());
    }
    Ok(auth)
}

/// What `broker`'s `retention` says, with the default age limit when it sets none.
pub fn retention_policy(broker: &switchyard_core::resources::Broker) -> RetentionPolicy {
    let retention = broker.spec.retention.clone().unwrap_or_default();
    RetentionPolicy {
        max_age: Some(retention.max_age.map_or(DEFAULT_RETENTION_MAX_AGE, |d| d.0)),
        max_bytes: retention.max_bytes,
    }
}

/// Takes `config`'s brokers, EventTypes and front door into `app`, whole; the new
/// `eventTypes` policy.
fn apply(app: &App, config: &Config) -> Result<Arc<EventTypePolicy>, ServeError> {
    let policy = Arc::new(EventTypePolicy::new(config, Arc::clone(&app.discovery))?);
    // The new rules first: a Broker added with an EventPolicy is never served under the old
    // rules, which have no policy for it.
    let auth = Arc::new(front_door(app, config)?);
    if let Ok(mut a) = app.auth.write() {
        *a = auth;
    }
    let mut brokers = HashMap::new();
    for ((ns, name), broker) in &config.brokers {
        let id = switchyard_core::id::join(ns, name);
        app.log.set_retention(&id, retention_policy(broker))?;
        brokers.insert(
            id.clone(),
            Arc::new(BrokerState {
                id,
                ttl: broker.ttl(),
            }),
        );
    }
    if let Ok(mut b) = app.brokers.write() {
        *b = brokers;
    }
    if let Ok(mut r) = app.event_types.write() {
        *r = Arc::clone(&policy);
    }
    Ok(policy)
}

/// The server's side of a reload: the brokers ingress takes events for, their `eventTypes`,
/// and what `/readyz` says of the configuration.
#[derive(Debug, Clone)]
pub struct Reconfigure {
    app: Arc<App>,
}

impl Reconfigure {
    /// Checks what `config` needs of the server (its EventTypes' schemas compile) without
    /// applying anything; the `eventTypes` policy it would be.
    pub fn check(&self, config: &Config) -> Result<Arc<EventTypePolicy>, ServeError> {
        front_door(&self.app, config)?;
        Ok(Arc::new(EventTypePolicy::new(
            config,
            Arc::clone(&self.app.discovery),
        )?))
    }

    /// Takes `config`'s brokers and EventTypes in place of the running ones; the new
    /// `eventTypes` policy, for the sources and triggers.
    pub fn apply(&self, config: &Config) -> Result<Arc<EventTypePolicy>, ServeError> {
        apply(&self.app, config)
    }

    /// Builds `config`'s front door again (reading its token and key files) and takes it in
    /// place of the running one; on failure the running one stays.
    pub fn refresh_front_door(&self, config: &Config) -> Result<(), ServeError> {
        let auth = Arc::new(front_door(&self.app, config)?);
        if let Ok(mut a) = self.app.auth.write() {
            *a = auth;
        }
        Ok(())
    }

    /// What `/readyz` reports of the configuration: the reload that last succeeded (its
    /// generation, 1 at start) and the error of a later one that failed, if any.
    pub fn report(&self, status: ConfigStatus) {
        metrics::gauge!(m::CONFIG_GENERATION).set(status.generation as f64);
        metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESSFUL).set(if status.error.is_none() {
            1.0
        } else {
            0.0
        });
        if status.error.is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP).set(now);
        }
        if let Ok(mut s) = self.app.config_status.write() {
            *s = status;
        }
    }
}

/// The longest the triggers and sources get to stop at shutdown (each engine's attempts in
/// flight settle within the triggers' drain timeout, 30 s). Past it, what is still running is
/// dropped, and owed again after the restart.
const WIND_DOWN_MAX: std::time::Duration = std::time::Duration::from_secs(35);

/// Once the server is shutting down (`/readyz` 503), ingress's and `/readyz`'s answers ask
/// the client to close its connection, so that a kept-alive producer reconnects, through its
/// load balancer, to an instance that stays. (A header set by the two handlers rather than a
/// middleware on every route: ingress is the hot path.)
pub(crate) fn close_when_stopping(app: &App, response: &mut Response) {
    if !app.ready.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// What `/readyz` says of the configuration in force.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConfigStatus {
    /// How many configurations were taken: 1 at start, one more per reload that succeeded.
    pub generation: u64,
    /// When the configuration in force was taken (RFC 3339).
    pub loaded_at: String,
    /// Why the last reload was refused, when it was (the configuration in force is then the
    /// one before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A server that has bound its listener and opened its store, ready to serve.
pub struct Server {
    app: Arc<App>,
    log: Arc<dyn EventLog>,
    /// The embedded store, which the server closes when it stops (`None`: the caller's log).
    redb: Option<Arc<RedbLog>>,
    listener: Listening,
    connections: crate::connections::ConnectionLimits,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the embedded store, applies the configuration and binds the listener.
    pub async fn bind(config: &Config, options: ServerOptions) -> Result<Server, ServeError> {
        check_options(&options)?;
        let on_commit: OnCommit = Box::new(|c: &CommitReport<'_>| {
            metrics::histogram!(m::COMMIT_BATCH_EVENTS).record(c.events as f64);
            metrics::histogram!(m::COMMIT_SECONDS).record(c.took.as_secs_f64());
            let queue = metrics::histogram!(m::APPEND_QUEUE_SECONDS);
            for w in c.waited {
                queue.record(w.as_secs_f64());
            }
        });
        let data_dir = options.data_dir.clone();
        let store = options.store.clone();
        let log = tokio::task::spawn_blocking(move || RedbLog::open(&data_dir, store, on_commit))
            .await
            .map_err(|e| ServeError::Setting(format!("store task failed: {e}")))??;
        let log = Arc::new(log);
        Server::bind_to(
            config,
            options,
            Arc::clone(&log) as Arc<dyn EventLog>,
            Some(log),
        )
        .await
    }

    /// Like [`bind`](Self::bind), over a log the caller opened (the JetStream engine's),
    /// which it closes itself.
    pub async fn bind_to_log(
        config: &Config,
        options: ServerOptions,
        log: Arc<dyn EventLog>,
    ) -> Result<Server, ServeError> {
        check_options(&options)?;
        Server::bind_to(config, options, log, None).await
    }

    async fn bind_to(
        config: &Config,
        options: ServerOptions,
        log: Arc<dyn EventLog>,
        redb: Option<Arc<RedbLog>>,
    ) -> Result<Server, ServeError> {
        let metrics = m::install();
        // Shared by the replicas of the JetStream engine, whose counts add up in the store.
        let shared = options.jetstream.is_some();
        let discovery = {
            let log = Arc::clone(&log);
            tokio::task::spawn_blocking(move || {
                if shared {
                    Discovery::load_shared(log.as_ref())
                } else {
                    Discovery::load(log.as_ref())
                }
            })
            .await
            .map_err(|e| ServeError::Setting(format!("store task failed: {e}")))??
        };
        let app = Arc::new(App {
            config_status: RwLock::new(ConfigStatus::default()),
            brokers: RwLock::new(HashMap::new()),
            event_types: RwLock::new(Arc::default()),
            discovery: Arc::new(discovery),
            log: Arc::clone(&log),
            max_body_bytes: options.max_body_bytes,
            metrics,
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            auth: RwLock::new(Arc::default()),
            auth_options: options.auth.clone(),
            listen: options.listen,
        });
        apply(&app, config)?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: options.listen,
                source,
            })?;
        let listener = match options.tls {
            None => Listening::Plain(listener),
            Some(tls) => Listening::Tls(
                crate::tls::TlsListener::new(listener, tls).map_err(ServeError::Setting)?,
            ),
        };
        let mut connections = options.connections;
        connections.max_connections = crate::connections::connections_that_fit(
            connections.max_connections,
            matches!(listener, Listening::Tls(_)),
        );
        Ok(Server {
            app,
            log,
            redb,
            listener,
            connections,
        })
    }
}

/// Refuses settings out of their ranges.
fn check_options(options: &ServerOptions) -> Result<(), ServeError> {
    if options.max_body_bytes < MIN_BODY_LIMIT_BYTES {
        return Err(ServeError::Setting(format!(
            "the body limit must be at least {MIN_BODY_LIMIT_BYTES} bytes (64 KiB), not {}",
            options.max_body_bytes
        )));
    }
    let limits = &options.connections;
    for (flag, timeout) in [
        ("--header-read-timeout-ms", limits.header_read_timeout),
        ("--body-read-timeout-ms", limits.body_read_timeout),
    ] {
        if timeout < Duration::from_millis(100) {
            return Err(ServeError::Setting(format!(
                "{flag} must be at least 100, not {}",
                timeout.as_millis()
            )));
        }
    }
    if limits.max_connections == 0 {
        return Err(ServeError::Setting(
            "--max-connections must be at least 1, not 0".to_owned(),
        ));
    }
    Ok(())
}

impl Server {
    /// The event log, for the components that run beside ingress (the dispatcher).
    pub fn log(&self) -> Arc<dyn EventLog> {
        Arc::clone(&self.log)
    }

    /// The brokers' `eventTypes` settings, for the sources, which apply them as ingress does.
    pub fn event_types(&self) -> Arc<EventTypePolicy> {
        self.app.event_types()
    }

    /// The handle a reload changes the server through.
    pub fn reconfigure(&self) -> Reconfigure {
        Reconfigure {
            app: Arc::clone(&self.app),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(match &self.listener {
            Listening::Plain(l) => l.local_addr()?,
            Listening::Tls(l) => axum::serve::Listener::local_addr(l)?,
        })
    }

    /// Serves until `shutdown` resolves, then drains: requests in flight are answered, queued
    /// appends are committed, and cursors are persisted before this returns. `extra` routes
    /// (the management API of other components) are served beside ingress.
    pub async fn serve(
        self,
        extra: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
        wind_down: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server {
            app,
            redb,
            listener,
            connections,
            ..
        } = self;
        app.ready.store(true, Ordering::SeqCst);
        // Every route behind the front door's middleware but ingress, the hot path, whose
        // handler applies the same rules itself (auth::routes::admit_sender).
        let router = extra
            .merge(router(Arc::clone(&app)))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&app),
                crate::auth::routes::guard,
            ))
            .merge(
                Router::new()
                    .route("/{namespace}/{broker}", any(broker_endpoint))
                    .with_state(Arc::clone(&app)),
            );
        let ready_app = Arc::clone(&app);
        let mut housekeeping = Tasks::new("server");
        {
            let app = Arc::clone(&app);
            housekeeping.spawn(async move {
                let mut tick = tokio::time::interval(DISCOVERY_FLUSH_INTERVAL);
                loop {
                    tick.tick().await;
                    flush_discovery(&app).await;
                }
            });
        }
        // The graceful stop: `/readyz` says so at once; requests are still taken for the drain
        // window (a load balancer takes a while to stop sending); then ingress refuses with
        // 503 and `Retry-After` while `wind_down` stops the triggers and sources (deliveries
        // in flight settle); then connections close once their requests are answered, and the
        // store is closed.
        let drain = connections.shutdown_drain;
        let shutdown = async move {
            shutdown.await;
            ready_app.ready.store(false, Ordering::SeqCst);
            if !drain.is_zero() {
                tracing::info!(
                    drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
                    "shutting down: not ready, still taking requests for the drain window"
                );
                tokio::time::sleep(drain).await;
            }
            ready_app.stopping.store(true, Ordering::SeqCst);
            if tokio::time::timeout(WIND_DOWN_MAX, wind_down)
                .await
                .is_err()
            {
                tracing::warn!(
                    "the triggers and sources did not stop within {} s; stopping anyway (what they had in flight is owed again)",
                    WIND_DOWN_MAX.as_secs()
                );
            }
            tracing::info!("shutting down: finishing requests in flight");
        };
        match listener {
            Listening::Plain(l) => {
                crate::connections::serve(l, router, connections, shutdown).await;
            }
            Listening::Tls(l) => crate::connections::serve(l, router, connections, shutdown).await,
        }
        housekeeping.shutdown().await;
        flush_discovery(&app).await;
        if let Some(log) = redb {
            tokio::task::spawn_blocking(move || log.shutdown())
                .await
                .map_err(|e| ServeError::Setting(format!("store shutdown failed: {e}")))?;
            tracing::info!("store closed");
        }
        Ok(())
    }
}

/// How often the counts of discovered event types are persisted.
pub const DISCOVERY_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

async fn flush_discovery(app: &App) {
    let ops = app.discovery.flush();
    if !ops.is_empty()
        && let Err(e) = app.log.write(ops).await
    {
        tracing::warn!(error = %e, "cannot persist event type counts");
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/eventtypes",
            get(namespace_event_types),
        )
        .route(
            "/api/v1/namespaces/{namespace}/eventtypes/{name}",
            get(one_event_type),
        )
        .route(
            "/api/v1/namespaces/{namespace}/brokers/{broker}/eventtypes",
            get(broker_event_types),
        )
        .route(
            "/api/v1/namespaces/{namespace}/audit",
            get(crate::audit::list),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .merge(crate::console::routes())
        .fallback(not_found)
        .with_state(app)
}

fn json_items(items: Vec<crate::eventtypes::Listed>) -> Response {
    let body = serde_json::json!({ "items": items }).to_string();
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn namespace_event_types(
    State(app): State<Arc<App>>,
    Path(namespace): Path<String>,
) -> Response {
    let seen = seen_types(&app).await;
    json_items(crate::eventtypes::list(
        app.event_types().registry(),
        seen,
        &namespace,
        None,
    ))
}

/// One configured EventType, with what was seen of it.
async fn one_event_type(
    State(app): State<Arc<App>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let seen = seen_types(&app).await;
    let found = crate::eventtypes::list(app.event_types().registry(), seen, &namespace, None)
        .into_iter()
        .find(|t| t.name.as_deref() == Some(name.as_str()));
    match found {
        Some(t) => {
            let body = serde_json::to_string(&t).unwrap_or_default();
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        None => Problem::not_found(format!(
            "no EventType {namespace}/{name} in the configuration in force"
        ))
        .into_response(),
    }
}

/// The discovered (broker, type, source) pairs with their counts: this process's, or for a
/// discovery shared by replicas the store's totals (this process's alone if the store does
/// not answer).
async fn seen_types(app: &Arc<App>) -> Vec<(crate::eventtypes::SeenKey, crate::eventtypes::Seen)> {
    if !app.discovery.is_shared() {
        return app.discovery.snapshot();
    }
    let discovery = Arc::clone(&app.discovery);
    match blocking(&app.log, move |log| discovery.totals(log)).await {
        Ok(totals) => totals,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the shared event-type counts; listing this replica's");
            app.discovery.snapshot()
        }
    }
}

async fn broker_event_types(
    State(app): State<Arc<App>>,
    Path((namespace, broker)): Path<(String, String)>,
) -> Response {
    let Some(state) = app.broker(&namespace, &broker) else {
        return Problem::not_found(format!("no broker `{broker}` in namespace `{namespace}`"))
            .into_response();
    };
    let seen = seen_types(&app).await;
    json_items(crate::eventtypes::list(
        app.event_types().registry(),
        seen,
        &namespace,
        Some(&state.id),
    ))
}

async fn healthz() -> Response {
    json_status(StatusCode::OK, "ok")
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let config = app
        .config_status
        .read()
        .map(|c| c.clone())
        .unwrap_or_default();
    let config = serde_json::to_value(config).unwrap_or_default();
    if app.ready.load(Ordering::SeqCst) {
        let mut body = serde_json::json!({ "status": "ready", "config": config });
        if !app.auth().enabled && !app.listen.ip().is_loopback() {
            body["warning"] =
                "serving without authentication on an open address (--allow-unauthenticated)"
                    .into();
        }
        if let Some(reason) = app.log.write_failure() {
            // Events would be refused: take this instance out of rotation until the writer
            // takes writes again; what is stored is still delivered.
            body["status"] = "not ready".into();
            body["reason"] = reason.into();
            return json_body(StatusCode::SERVICE_UNAVAILABLE, body);
        }
        json_body(StatusCode::OK, body)
    } else {
        let mut r = json_status(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        close_when_stopping(&app, &mut r);
        r
    }
}

fn json_status(code: StatusCode, status: &str) -> Response {
    json_body(code, serde_json::json!({ "status": status }))
}

fn json_body(code: StatusCode, body: serde_json::Value) -> Response {
    let body = body.to_string();
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn metrics_endpoint(State(app): State<Arc<App>>) -> Response {
    metrics::gauge!(m::WRITER_QUEUE_DEPTH).set(app.log.queue_depth() as f64);
    // statvfs and a stat per file: off the async workers, as a hung disk would hold them.
    let log = Arc::clone(&app.log);
    let disk = tokio::task::spawn_blocking(move || log.disk_usage())
        .await
        .ok()
        .flatten();
    if let Some(disk) = disk {
        metrics::gauge!(m::STORE_BYTES).set(disk.store_bytes as f64);
        metrics::gauge!(m::STORE_DISK_FREE_BYTES).set(disk.free_bytes as f64);
        metrics::gauge!(m::STORE_DISK_SIZE_BYTES).set(disk.size_bytes as f64);
    }
    let mut r = app.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn not_found(uri: axum::http::Uri) -> Response {
    Problem::not_found(format!(
        "nothing at `{}`; a broker's ingress is /{{namespace}}/{{broker}}",
        uri.path()
    ))
    .into_response()
}
