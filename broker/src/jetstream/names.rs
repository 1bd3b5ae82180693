//! The JetStream names of a Broker (streams, subjects) and where an event goes: its message
//! id and its partition.

use super::*;

/// The JetStream names of one Broker (`namespace/name`; both are DNS labels, so they are
/// valid stream names and subject tokens as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The events' stream.
    pub stream: String,
    /// The stream's subjects: `{prefix}.*`, one per partition.
    pub subjects: String,
    /// The prefix of the partitions' subjects (partition `p`'s is `{prefix}.{p}`).
    pub subject_prefix: String,
    /// The dead letters' stream.
    pub dead_letter_stream: String,
    /// The prefix of the dead letters' subjects (a trigger's is `{prefix}.{trigger}`).
    pub dead_letter_prefix: String,
    /// The stream of redriven dead letters, each waiting for its trigger (work-queue
    /// retention: gone once the trigger settled it).
    pub redrive_stream: String,
    /// The prefix of the redrives' subjects (a trigger's is `{prefix}.{trigger}`).
    pub redrive_prefix: String,
}

impl Names {
    /// The names of broker `id` (`namespace/name`).
    pub fn of(id: &BrokerId) -> Names {
        let (ns, name) = id.split_once('/').unwrap_or(("default", id));
        Names {
            stream: format!("SY_EV_{ns}_{name}"),
            subjects: format!("sy.ev.{ns}.{name}.*"),
            subject_prefix: format!("sy.ev.{ns}.{name}"),
            dead_letter_stream: format!("SY_DL_{ns}_{name}"),
            dead_letter_prefix: format!("sy.dl.{ns}.{name}"),
            redrive_stream: format!("SY_RD_{ns}_{name}"),
            redrive_prefix: format!("sy.rd.{ns}.{name}"),
        }
    }

    /// The subject of partition `p`.
    pub fn partition_subject(&self, p: u32) -> String {
        format!("{}.{p}", self.subject_prefix)
    }

    /// The subject of `trigger`'s dead letters.
    pub fn dead_letter_subject(&self, trigger: &str) -> String {
        format!("{}.{trigger}", self.dead_letter_prefix)
    }

    /// The subject of `trigger`'s redriven dead letters.
    pub fn redrive_subject(&self, trigger: &str) -> String {
        format!("{}.{trigger}", self.redrive_prefix)
    }
}

/// The duplicate window of a stream whose events are kept `max_age`: JetStream refuses a
/// window longer than the age limit.
pub(super) fn duplicate_window(max_age: Option<Duration>) -> Duration {
    match max_age {
        Some(age) if !age.is_zero() => DUPLICATE_WINDOW.min(age),
        _ => DUPLICATE_WINDOW,
    }
}

/// The message id an event is published with: its `source` and `id`, which name it
/// (CloudEvents: producers must make the pair unique), hashed to a header-safe token.
pub fn event_msg_id(source: &str, id: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The partition of an event with `partitionkey` `key` (absent: the empty key) among
/// `partitions`: FNV-1a, which every replica and version computes alike.
pub fn partition_of(key: Option<&str>, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.unwrap_or_default().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(h % u64::from(partitions.max(1))).unwrap_or(0)
}

/// Where an event goes in its broker's stream and how it is named there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// Its partition.
    pub partition: u32,
}

/// The routes of `events` (storage encodings): the message id of each event's `source` and
/// `id`, and the partition of its `partitionkey`.
pub(super) fn routes(events: &[Vec<u8>], partitions: u32) -> Result<Vec<Route>, LogError> {
    events
        .iter()
        .map(|e| {
            let event = switchyard_core::store::decode(e)
                .map_err(|e| LogError::Storage(format!("an event to publish: {e}")))?;
            Ok(Route {
                msg_id: event_msg_id(&event.source, &event.id),
                partition: partition_of(event.partition_key().as_deref(), partitions),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_stream_names_and_subjects() {
        let n = Names::of("team-a/orders");
        assert_eq!(n.stream, "SY_EV_team-a_orders");
        assert_eq!(n.subjects, "sy.ev.team-a.orders.*");
        assert_eq!(n.partition_subject(3), "sy.ev.team-a.orders.3");
        assert_eq!(n.dead_letter_stream, "SY_DL_team-a_orders");
        assert_eq!(n.dead_letter_subject("audit"), "sy.dl.team-a.orders.audit");
        assert_eq!(n.redrive_stream, "SY_RD_team-a_orders");
        assert_eq!(n.redrive_subject("audit"), "sy.rd.team-a.orders.audit");
    }

    #[test]
    fn message_ids_name_the_event_not_the_bytes() {
        assert_eq!(event_msg_id("/s", "1"), event_msg_id("/s", "1"));
        assert_ne!(event_msg_id("/s", "1"), event_msg_id("/s", "2"));
        // The separator keeps ("/s1", "") and ("/s", "1") apart.
        assert_ne!(event_msg_id("/s1", ""), event_msg_id("/s", "1"));
        assert_eq!(event_msg_id("/s", "1").len(), 32);
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: every replica and every version must place a key alike.
        assert_eq!(partition_of(None, 16), partition_of(Some(""), 16));
        assert_eq!(
            partition_of(Some("room-1"), 16),
            partition_of(Some("room-1"), 16)
        );
        assert_eq!(partition_of(Some("a"), 1), 0);
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            u64::from(partition_of(Some("a"), 16)),
            0xaf63_dc4c_8601_ec8c % 16
        );
        let used: std::collections::HashSet<u32> = (0..200)
            .map(|i| partition_of(Some(&format!("k{i}")), 16))
            .collect();
        assert_eq!(used.len(), 16, "200 keys use every partition");
        assert!(used.iter().all(|p| *p < 16));
    }
}
