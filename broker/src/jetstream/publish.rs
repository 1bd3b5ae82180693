//! Publishing to the brokers' streams: event by event, or a batch as one atomic batch
//! (ADR-50) where the server has them.

use super::*;

/// Events published before their acknowledgements are awaited.
const PUBLISH_CHUNK: usize = 256;
/// The most events one atomic batch may hold (the server's limit); a larger batch request is
/// published event by event.
pub const ATOMIC_MAX_EVENTS: usize = 1000;
/// The server's error code for an atomic batch holding a message id it stored before.
const ATOMIC_DUPLICATE: u64 = 10201;
/// Publishes a batch of `events` to their subjects with their message ids (`targets`, one
/// per event): as one atomic batch where the server has them and the batch is of 2 to
/// [`ATOMIC_MAX_EVENTS`] events, otherwise (and for a batch that holds an event stored
/// before: a producer's retry of a batch stored in part or whole) event by event, which
/// stores what is new and recognises the rest by its id.
pub(super) async fn publish_batch(
    js: &jetstream::Context,
    atomic: bool,
    events: Vec<Vec<u8>>,
    targets: Vec<(String, String)>,
) -> Result<Range<u64>, LogError> {
    if atomic && (2..=ATOMIC_MAX_EVENTS).contains(&events.len()) {
        match publish_atomic(js, &events, &targets).await? {
            Some(span) => return Ok(span),
            None => tracing::debug!(
                events = events.len(),
                "an atomic batch holds events stored before; publishing it event by event"
            ),
        }
    }
    publish(js, events, targets).await
}

/// The reply to an atomic batch's commit: a publish acknowledgement, or an error.
#[derive(serde::Deserialize)]
struct CommitReply {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    error: Option<CommitError>,
}

#[derive(serde::Deserialize)]
struct CommitError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Publishes `events` as one atomic batch (ADR-50: `Nats-Batch-Id`, `Nats-Batch-Sequence`,
/// `Nats-Batch-Commit` on the last): stored all or none. `None` when the server refused it
/// (for holding a message id it stored before, or any other reason: nothing is stored).
async fn publish_atomic(
    js: &jetstream::Context,
    events: &[Vec<u8>],
    targets: &[(String, String)],
) -> Result<Option<Range<u64>>, LogError> {
    let client = js.client();
    let batch = batch_id();
    let failed = |e: &dyn std::fmt::Display| {
        LogError::Unavailable(format!("cannot publish an atomic batch to JetStream: {e}"))
    };
    let last = events.len() - 1;
    let mut reply = None;
    for (i, (event, (subject, id))) in events.iter().zip(targets).enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Nats-Batch-Id", batch.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        if i == last {
            headers.insert("Nats-Batch-Commit", "1");
        }
        let payload = bytes::Bytes::from(event.clone());
        if i == 0 || i == last {
            // The first opens the batch (an empty reply), the last commits it (the
            // acknowledgement); both answer an error at once.
            let answer = client
                .request_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| failed(&e))?;
            reply = Some(answer.payload);
        } else {
            client
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| failed(&e))?;
        }
        if i == 0 && i != last {
            let opened = reply.take().unwrap_or_default();
            if !opened.is_empty() {
                return commit_reply(&opened, events.len());
            }
        }
    }
    commit_reply(&reply.unwrap_or_default(), events.len())
}

/// An id no other batch in flight has: the process, the time and a count.
fn batch_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos:x}-{n:x}", std::process::id())
}

/// The span of sequences a committed batch of `n` events got, or `None` for a batch the
/// server refused (nothing of it stored), or the error of an answer that is not one.
fn commit_reply(reply: &[u8], n: usize) -> Result<Option<Range<u64>>, LogError> {
    let reply: CommitReply = serde_json::from_slice(reply).map_err(|e| {
        LogError::Unavailable(format!("JetStream answered an atomic batch with {e}"))
    })?;
    match reply.error {
        Some(e) if e.err_code == ATOMIC_DUPLICATE => Ok(None),
        // Refused whole, so nothing of it is stored: atomic publish turned off on the stream
        // (a server older than the replica's during an upgrade), a server limit on batches
        // lower than ours, too many batches in flight. Event by event instead.
        Some(e) => {
            tracing::warn!(code = e.err_code, error = %e.description, "JetStream refused an atomic batch; publishing it event by event");
            Ok(None)
        }
        None => {
            let n = reply.count.unwrap_or(n as u64);
            Ok(Some((reply.seq + 1).saturating_sub(n)..reply.seq + 1))
        }
    }
}

/// Publishes each of `events` to its subject with its message id (`targets`, one per event)
/// and waits for every acknowledgement.
pub(super) async fn publish(
    js: &jetstream::Context,
    events: Vec<Vec<u8>>,
    targets: Vec<(String, String)>,
) -> Result<Range<u64>, LogError> {
    let mut span: Option<Range<u64>> = None;
    let mut acks = Vec::with_capacity(events.len().min(PUBLISH_CHUNK));
    let mut events = events.into_iter().zip(targets).peekable();
    while events.peek().is_some() {
        // A chunk at a time: the client has a bounded number of acknowledgements pending,
        // shared by every publisher of the replica, so one large batch must not take them all.
        for (event, (subject, id)) in events.by_ref().take(PUBLISH_CHUNK) {
            let message = PublishMessage::build().payload(event.into()).message_id(id);
            let ack = js
                .send_publish(subject, message)
                .await
                .map_err(|e| LogError::unavailable("cannot publish to JetStream", &e))?;
            acks.push(ack);
        }
        for ack in acks.drain(..) {
            let ack = ack
                .await
                .map_err(|e| LogError::unavailable("JetStream did not acknowledge", &e))?;
            span = Some(match span {
                None => ack.sequence..ack.sequence + 1,
                Some(r) => r.start.min(ack.sequence)..r.end.max(ack.sequence + 1),
            });
        }
    }
    Ok(span.unwrap_or(0..0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_batch_commit_is_read_as_a_span_a_duplicate_or_an_error() {
        let committed = br#"{"stream":"S","seq":12,"batch":"b","count":3}"#;
        assert_eq!(commit_reply(committed, 3).ok(), Some(Some(10..13)));
        let duplicate = br#"{"error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"},"stream":"S","seq":0}"#;
        assert_eq!(commit_reply(duplicate, 3).ok(), Some(None));
        let refused = br#"{"error":{"code":400,"err_code":10174,"description":"atomic publish is disabled"}}"#;
        assert_eq!(
            commit_reply(refused, 3).ok(),
            Some(None),
            "refused whole: published event by event"
        );
        assert!(commit_reply(b"", 3).is_err(), "no answer is not a commit");
    }
}
