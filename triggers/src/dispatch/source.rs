//! The delivery-source seam: where a trigger's work comes from and where its outcomes go.
//!
//! The delivery core (`deliver.rs`: attempts, the reply check, [`decide`](super::decide),
//! concurrency and rate bounds, ordered keys) is written once against [`DeliverySource`] and
//! knows nothing of the store behind it. The embedded source (`embedded/`) is the router, the
//! trigger's queue and cursor over the embedded log, and its retry records; a JetStream source
//! (issue 19) is a durable pull consumer per trigger: `Delivered` acks, `Retry` naks with a
//! delay, `DeadLetter` stores the dead letter and terms the message.

use std::future::Future;
use std::sync::Arc;

use switchyard_broker::log::LogError;
use switchyard_core::CloudEvent;

use super::Outcome;
use crate::records::Attempt;

/// One event a trigger owes its subscriber, as a delivery source hands it out.
#[derive(Debug)]
pub struct Work<T> {
    /// Where the event stands in its source (a log offset; a stream sequence).
    pub position: u64,
    /// The event.
    pub event: Arc<CloudEvent>,
    /// The attempts made before this one (none for a first delivery or a redrive).
    pub attempts: Vec<Attempt>,
    /// Deliver here instead of the trigger's subscriber (a redrive to another URL).
    pub redirect: Option<String>,
    /// A first delivery, as routed; `false` for a retry the source scheduled. First
    /// deliveries (and retries of events held while the subscriber was down) count against
    /// the trigger's rate; first deliveries of ordered triggers wait behind
    /// their `partitionkey` (an ordered trigger retries in place, so its scheduled retries
    /// are redrives).
    pub first: bool,
    /// What the source needs to settle it (a retry record's key, a message's ack handle).
    pub ticket: T,
}

/// Where a trigger's work comes from and where its outcomes go.
pub trait DeliverySource: Send + Sync + 'static {
    /// The source's own handle on a piece of work.
    type Ticket: Send + Sync + 'static;

    /// The next event to deliver, waiting until there is one. One loop calls it at a time.
    fn next(&self) -> impl Future<Output = Work<Self::Ticket>> + Send;

    /// Makes `outcome` of `work` durable: only once this returned `Ok` may the source forget
    /// the work. It keeps trying while its store fails and returns an error only when it is
    /// shutting down, in which case the work is owed again after a restart (at-least-once).
    fn settle(
        &self,
        work: Work<Self::Ticket>,
        outcome: Outcome,
    ) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Says `work`, taken and not started yet, is still being held (it waits for its turn
    /// under the trigger's rate), for a source whose work has a lease. By default nothing.
    fn hold(&self, work: &Work<Self::Ticket>) -> impl Future<Output = ()> + Send {
        let _ = work;
        std::future::ready(())
    }

    /// The trigger is paused: the loop takes no work until it is resumed, and calls this
    /// every few seconds meanwhile. A source that has taken work ahead (a JetStream pull's
    /// messages) keeps it, its leases renewed, so that nothing it holds is handed out again
    /// and counted as an attempt. By default nothing.
    fn idle(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// Gives back `work` taken and not started, because the loop is draining: it is owed
    /// again, and a source shared with other processes lets them have it now. By default it
    /// is dropped, the source keeping it (the embedded source's cursor is not past it).
    fn release(&self, work: Work<Self::Ticket>) -> impl Future<Output = ()> + Send {
        drop(work);
        std::future::ready(())
    }
}
