//! Serving HTTP/1 connections with bounds (spec/limits.md): at most `max_connections` at once
//! (past it, new ones wait in the kernel's backlog until one closes), and a deadline for each
//! request's headers, which is also how long a kept-alive connection may sit idle. A slow or
//! silent client therefore holds one connection slot for a bounded time and nothing else.
//!
//! axum's own `serve` sets no timer on hyper, so it has neither bound; this loop is the same
//! otherwise, graceful shutdown included.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// Bounds on the server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; past it, new connections wait until one closes.
    pub max_connections: usize,
    /// How long a client has to send a request's headers once the server waits for them: on a
    /// new connection, and on a kept-alive one between requests (so also its idle timeout).
    pub header_read_timeout: Duration,
    /// After SIGTERM, how long the server keeps taking requests while `/readyz` says it is
    /// shutting down, so that a load balancer stops sending before it refuses
    /// (`--shutdown-drain-ms`; spec/limits.md).
    pub shutdown_drain: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            shutdown_drain: Duration::ZERO,
        }
    }
}

/// File descriptors kept for everything but client connections (the store, clients to
/// subscribers and sources' systems, the listener).
const RESERVED_FDS: u64 = 512;

/// How long requests in flight have at shutdown before their connections are dropped (a
/// `tail` that follows never ends by itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Raises the process's soft limit on open files to its hard limit (as nginx's
/// `worker_rlimit_nofile` and Go's runtime do) and returns how many connections fit under it,
/// at most `wanted`. With `tls`, the handshakes under way (which the cap does not count) get
/// room of their own.
pub fn connections_that_fit(wanted: usize, tls: bool) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
            limit = getrlimit(Resource::Nofile);
        }
    }
    let Some(fds) = limit.current else {
        return wanted;
    };
    let reserved = RESERVED_FDS
        + if tls {
            crate::tls::MAX_PENDING_CONNECTIONS
        } else {
            0
        };
    let fit = usize::try_from(fds.saturating_sub(reserved).max(16)).unwrap_or(usize::MAX);
    if fit < wanted {
        tracing::warn!(
            open_file_limit = fds,
            max_connections = fit,
            "the open-file limit allows fewer connections than --max-connections; raise it (ulimit -n) to serve more"
        );
    }
    fit.min(wanted)
}

/// Serves `router` on the connections of `listener` within `limits` until `shutdown`
/// resolves, then lets the requests in flight finish.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "requests still in flight after the grace period were cut off"
        );
    }
}
