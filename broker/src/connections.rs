//! Serving HTTP/1 connections with bounds (spec/limits.md): at most `max_connections` at once
//! (past it, new ones wait in the kernel's backlog until one closes), a deadline for each
//! request's headers, which is also how long a kept-alive connection may sit idle, and one for
//! its whole body. A slow or silent client therefore holds one connection slot for a bounded
//! time and nothing else.
//!
//! axum's own `serve` sets no timer on hyper, so it has none of these bounds; this loop is the
//! same otherwise, graceful shutdown included.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
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
    /// How long a request's whole body may take to arrive once its headers have: past it,
    /// reading the body fails with [`BodyTimeout`], which handlers answer with 408.
    pub body_read_timeout: Duration,
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
            body_read_timeout: Duration::from_secs(60),
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
        let service = TowerToHyperService::new(Deadlined {
            router: router.clone(),
            body_read_timeout: limits.body_read_timeout,
        });
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

/// The router, with a deadline put on each request's body as the request comes in.
#[derive(Clone)]
struct Deadlined {
    /// The server's routes.
    router: Router,
    /// How long each body may take ([`ConnectionLimits::body_read_timeout`]).
    body_read_timeout: Duration,
}

impl tower_service::Service<http::Request<Incoming>> for Deadlined {
    type Response = <Router as tower_service::Service<http::Request<Body>>>::Response;
    type Error = <Router as tower_service::Service<http::Request<Body>>>::Error;
    type Future = <Router as tower_service::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<http::Request<Body>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        let timeout = self.body_read_timeout;
        self.router
            .call(request.map(|body| Body::new(DeadlineBody::new(body, timeout))))
    }
}

/// Reading a request's body failed because it did not all arrive in time
/// ([`ConnectionLimits::body_read_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .after.as_millis())]
pub struct BodyTimeout {
    /// The deadline, counted from when the headers had arrived.
    pub after: Duration,
}

impl BodyTimeout {
    /// Whether `error`, or an error it was caused by, is a [`BodyTimeout`].
    pub fn caused<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimeout> {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
                return Some(timeout);
            }
            cause = e.source();
        }
        None
    }
}

/// A request body that fails with [`BodyTimeout`] when it has not all arrived by its deadline.
/// The deadline is looked at only when the body would wait: what has already arrived is
/// handed over, however late it is read. The timer is set the first time the body has to
/// wait, so a body that came with its headers costs one clock read.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    /// The body as it arrives.
    inner: B,
    /// When the body must have arrived whole.
    deadline: tokio::time::Instant,
    /// The deadline counted from the headers, for the error.
    after: Duration,
    /// The timer for `deadline`, once the body has had to wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The deadline has passed and the error was given: the body is over.
    expired: bool,
}

impl<B> DeadlineBody<B> {
    /// `inner`, which must have arrived whole within `after` from now.
    pub fn new(inner: B, after: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: tokio::time::Instant::now() + after,
            after,
            timer: None,
            expired: false,
        }
    }
}

impl<B> hyper::body::Body for DeadlineBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired = true;
                Poll::Ready(Some(Err(BodyTimeout { after: this.after }.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.expired {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// A body whose next bytes never come.
    pub(crate) struct Stalled;

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_at_its_deadline_and_one_that_came_does_not() {
        let started = tokio::time::Instant::now();
        let mut stalled = DeadlineBody::new(Stalled, Duration::from_secs(60));
        let error = stalled.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        let timeout = BodyTimeout::caused(error.as_ref()).unwrap();
        assert_eq!(timeout.after, Duration::from_secs(60));
        assert!(
            stalled.frame().await.is_none(),
            "the body ends after its error"
        );

        let whole = DeadlineBody::new(
            http_body_util::Full::new(Bytes::from("abc")),
            Duration::ZERO,
        );
        assert_eq!(&whole.collect().await.unwrap().to_bytes()[..], b"abc");
    }

    #[tokio::test]
    async fn a_timeout_is_found_through_axum_s_error() {
        let mut body = Body::new(DeadlineBody::new(Stalled, Duration::from_millis(10)));
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(BodyTimeout::caused(&error).is_some(), "{error}");
    }
}
