//! A subscriber's replies, as every delivery source stores them: stamped for the trigger's
//! reply broker with the TTL decremented and shared.

use switchyard_broker::append::{Batch, Ttl, reply_ttl};
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::LogError;
use switchyard_broker::metrics as m;
use switchyard_core::CloudEvent;

use super::TriggerRuntime;

/// The batch that stores `replies` to `original` in `t`'s reply broker, or `None` when they
/// are dropped: the flow has no reply, or the TTL ran out. A batch of `k` replies to an event
/// with TTL `t` gets `(t - 1) / k` each, so the events one event can lead to are at most its
/// TTL, however wide the replies fan out; replies whose TTL runs out are dropped (that is
/// how reply loops die) and counted.
pub(super) fn reply_batch(
    t: &TriggerRuntime,
    policy: &EventTypePolicy,
    original: &CloudEvent,
    mut replies: Vec<CloudEvent>,
) -> Result<Option<Batch>, LogError> {
    let Some(reply_broker) = &t.reply_broker else {
        tracing::debug!(trigger = %t.id, event = %original.id, "replies dropped: the flow has no reply");
        return Ok(None);
    };
    let ttl = reply_ttl(original) / i64::try_from(replies.len().max(1)).unwrap_or(i64::MAX);
    if ttl <= 0 {
        tracing::warn!(trigger = %t.id, event = %original.id, "reply dropped: TTL exhausted (a reply loop?)");
        metrics::counter!(m::REPLIES_DROPPED, t.labels()).increment(replies.len() as u64);
        return Ok(None);
    }
    let ttl = Ttl::Set(i32::try_from(ttl).unwrap_or(i32::MAX));
    Batch::stamped(policy, reply_broker, ttl, &mut replies)
        .map(Some)
        .map_err(|e| LogError::Storage(format!("cannot stamp a reply: {e}")))
}
