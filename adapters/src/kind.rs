//! The source kinds, registered in one place ([`KINDS`]). A kind's module holds its whole run
//! side: config (the resource in `switchyard-core`) → build (resolve secrets, clients) → run
//! (tasks, or an HTTP handler); here it is one [`Kind`] entry: how it starts, how `switchyard
//! validate` describes its sources, and what can be checked offline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use switchyard_broker::clock::Clock;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::EventLog;
use switchyard_broker::problem::Problem;
use switchyard_broker::tasks::Tasks;
use switchyard_core::config::Config;

#[cfg(feature = "kafka")]
use crate::kafka;
#[cfg(feature = "s3")]
use crate::s3;
use crate::{SourceError, mqtt, nats, ping, webhook};

/// Every source kind, in the order they start and `validate` lists them. A kind left out of
/// the build (`--no-default-features`) is there as one that refuses its sources
/// (`absent.rs`).
pub const KINDS: &[Kind] = &[
    webhook::KIND,
    ping::KIND,
    #[cfg(feature = "s3")]
    s3::KIND,
    #[cfg(not(feature = "s3"))]
    crate::absent::S3,
    #[cfg(feature = "kafka")]
    kafka::KIND,
    #[cfg(not(feature = "kafka"))]
    crate::absent::KAFKA,
    nats::KIND,
    mqtt::KIND,
];

/// What starting a kind's sources needs.
pub(crate) struct Setup<'a> {
    pub config: &'a Config,
    pub event_types: &'a Arc<EventTypePolicy>,
    pub log: &'a Arc<dyn EventLog>,
    pub clock: &'a Clock,
    /// The HTTP client sources that speak HTTP share.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub client: &'a reqwest::Client,
    /// This process's name among replicas that share the brokers (the JetStream engine), or
    /// `None` when it is the only one. Stream sources then consume as a group: each message
    /// to one replica.
    pub replica: Option<&'a str>,
}

/// What starting a kind's sources gave.
#[derive(Default)]
pub(crate) struct Started {
    /// Background sources (consumers, pollers, schedules), stopped at shutdown.
    pub tasks: Option<Tasks>,
    /// Sources served at `POST /sources/{namespace}/{name}`, by `namespace/name`.
    pub http: Vec<(String, HttpSource)>,
}

impl Started {
    /// Background sources only.
    pub fn background(tasks: Tasks) -> Started {
        Started {
            tasks: Some(tasks),
            http: Vec::new(),
        }
    }
}

/// A source served at `POST /sources/{namespace}/{name}`.
pub(crate) enum HttpSource {
    /// A WebhookSource.
    Webhook(webhook::Resolved),
    /// An S3Source in `webhook` or `sns` mode.
    #[cfg(feature = "s3")]
    S3(s3::HttpSource),
}

impl HttpSource {
    /// Checks what can be checked before the body is read: the bearer token and the
    /// signature header the source asks for.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let auth = match self {
            HttpSource::Webhook(w) => &w.auth,
            #[cfg(feature = "s3")]
            HttpSource::S3(s) => s.auth(),
        };
        webhook::check_headers(auth, headers).map(|_| ())
    }

    /// Handles one request: 202 once its events are stored.
    pub async fn handle(
        &self,
        log: &Arc<dyn EventLog>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, Problem> {
        match self {
            HttpSource::Webhook(w) => webhook::handle(w, log, headers, body).await,
            #[cfg(feature = "s3")]
            HttpSource::S3(s) => s.handle(log, headers, body).await,
        }
    }
}

/// A kind's offline check.
pub type Check = fn(&Config, &Arc<EventTypePolicy>) -> Result<(), SourceError>;

/// What a kind's `start` returns.
pub(crate) type StartFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Started, SourceError>> + Send + 'a>>;

/// One source kind.
pub struct Kind {
    /// The kind's name, as in manifests.
    pub name: &'static str,
    /// A line per source of this kind in `config`, for `switchyard validate`.
    pub describe: fn(&Config) -> Vec<String>,
    /// What can be checked without starting anything (beyond what loading checked).
    pub check: Option<Check>,
    /// Starts every source of this kind in `config`.
    pub(crate) start: for<'a> fn(&'a Setup<'a>) -> StartFuture<'a>,
}

/// A line per source of `config`, kind by kind.
pub fn describe(config: &Config) -> Vec<String> {
    KINDS.iter().flat_map(|k| (k.describe)(config)).collect()
}

/// Runs every kind's offline checks on `config`.
pub fn check(config: &Config, event_types: &Arc<EventTypePolicy>) -> Result<(), SourceError> {
    KINDS
        .iter()
        .filter_map(|k| k.check)
        .try_for_each(|check| check(config, event_types))
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
