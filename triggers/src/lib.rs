//! Triggers: the filter engine ([`filter`], with [`cesql`] expressions) and the dispatcher
//! ([`dispatch`]) that routes each stored event once to the matching triggers and delivers
//! it over HTTP or to a stream sink ([`delivery`], [`streams`]) with retries kept in the store and dead letters ([`records`]),
//! which the management API ([`api`]) lists, redrives and purges; [`tail`] streams a broker's
//! events as they are stored (`switchyard tail`).

pub mod api;
pub mod cesql;
pub mod delivery;
pub mod dispatch;
pub mod egress;
pub mod filter;
pub mod http_client;
mod queue;
pub mod records;
pub mod streams;
pub mod tail;

pub use dispatch::{DispatchError, Dispatcher};
