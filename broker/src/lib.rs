//! The broker: the ingress service that takes CloudEvents over HTTP and answers 202 only once
//! they are durably stored, the [`append::Appender`] every way in shares, the [`log::EventLog`] abstraction with its embedded redb backend
//! ([`redb_log`], group commit), the front door ([`auth`]: who may send, read and operate),
//! problem bodies, metrics, and the server that ties them up. [`jetstream`] is the log of
//! the JetStream engine, which replicas share.

pub mod app;
pub mod append;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod connections;
pub mod console;
pub mod eventtypes;
pub mod ingress;
pub mod jetstream;
pub mod log;
pub mod metrics;
pub mod problem;
pub mod redb_log;
pub mod server;
pub mod tasks;
pub mod tls;
pub mod traces;

pub use log::{EventLog, LogError, LogRecord};
pub use redb_log::{RedbLog, RedbOptions};
pub use server::{Server, ServerOptions};
