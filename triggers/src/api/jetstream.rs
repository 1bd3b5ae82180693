//! The dead-letter API on the JetStream engine (`serve --jetstream`; spec/jetstream.md): the
//! embedded mode's routes, filters, pages and answers, over the broker's dead-letter stream
//! (`SY_DL_ns_name`), so any replica answers alike. A dead letter's id is its sequence in
//! that stream. A redrive publishes each dead letter's event to the broker's redrive stream
//! on its trigger's subject, where the trigger's redrive consumer takes it
//! (`dispatch::jetstream`), and then deletes the dead letter.

use std::sync::Arc;

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use switchyard_broker::audit::AuditEntry;
use switchyard_broker::jetstream::{JetStreamLog, Names};
use switchyard_broker::problem::Problem;

use super::{
    CHUNK, CallerExt, Compiled, DEAD_LETTERS, MAX_PAGE, Selector, broker_id, json, may_send,
    parse_id, purge_selection, read_redrive, redrive_filter, redrive_ids, redrive_prefix, summary,
    trigger_gone, who, with_progress,
};
use crate::dispatch::TriggerRuntime;
use crate::dispatch::jetstream::JetStreamTriggers;
use crate::records::DeadLetter;

struct JsApi {
    log: Arc<JetStreamLog>,
    /// Serialises the handlers that change dead letters.
    mutate: tokio::sync::Mutex<()>,
    /// The triggers this replica runs: a redrive goes only to one of them.
    triggers: JetStreamTriggers,
    /// URL prefixes a redrive may name besides the triggers' own destinations.
    redrive_allow: Vec<url::Url>,
    /// The redrives and purges under way (each runs to its end, whatever its caller does).
    bulk: std::sync::Mutex<switchyard_broker::tasks::Tasks>,
}

impl JsApi {
    fn trigger(&self, broker: &str, name: &str) -> Option<Arc<TriggerRuntime>> {
        self.triggers.get(broker, name)
    }
}

/// The routes, to merge into the server's router. `triggers` are the replica's running
/// triggers; `redrive_allow` as for the embedded mode's [`routes`](super::routes).
pub fn routes(
    log: Arc<JetStreamLog>,
    triggers: JetStreamTriggers,
    redrive_allow: &[String],
) -> Router {
    let state = Arc::new(JsApi {
        log,
        mutate: tokio::sync::Mutex::new(()),
        triggers,
        redrive_allow: redrive_allow
            .iter()
            .filter_map(|p| redrive_prefix(p).ok())
            .collect(),
        bulk: std::sync::Mutex::new(switchyard_broker::tasks::Tasks::new(
            "dead-letter redrives and purges",
        )),
    });
    Router::new()
        .route(DEAD_LETTERS, get(list).delete(purge))
        .route(&format!("{DEAD_LETTERS}/redrive"), post(redrive))
        .route(
            &format!("{DEAD_LETTERS}/{{id}}"),
            get(show).delete(delete_one),
        )
        .with_state(state)
}

/// 503: JetStream did not answer.
fn unavailable(e: &dyn std::fmt::Display) -> Problem {
    Problem::overloaded(&format!("JetStream did not answer: {e}"))
}

/// The dead-letter stream of broker `ns/b` (404 when the broker has none).
async fn stream(state: &JsApi, ns: &str, b: &str) -> Result<(Stream, Names), Problem> {
    let names = Names::of(&broker_id(ns, b));
    match state
        .log
        .context()
        .get_stream(&names.dead_letter_stream)
        .await
    {
        Ok(stream) => Ok((stream, names)),
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            ) || matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::InvalidStreamName
            ) =>
        {
            Err(Problem::not_found(format!("no broker {ns}/{b}")))
        }
        Err(e) => Err(unavailable(&e)),
    }
}

/// Keeps `audit` in the audit log (`GET /api/v1/namespaces/{ns}/audit`, any replica) and
/// logs it. It is written after the change, not with it: a replica that fails to write it
/// says so in its log, and the change stands.
async fn record(state: &JsApi, audit: &AuditEntry) {
    use switchyard_broker::log::EventLog as _;
    if let Err(e) = state.log.write(vec![audit.op()]).await {
        tracing::warn!(error = %e, action = %audit.action, "cannot keep an audit entry; it is only in this log");
    }
    audit.log();
}

/// Whether `name` can be a trigger's (a DNS label), so a subject token without wildcards.
fn trigger_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The dead letter at `m`, its id its sequence.
fn letter(sequence: u64, payload: &[u8]) -> Option<DeadLetter> {
    let mut d: DeadLetter = serde_json::from_slice(payload).ok()?;
    d.id = sequence;
    Some(d)
}

/// Dead letters matching `filter` after sequence `after`, at most `limit`, and whether more
/// may follow.
async fn select(
    stream: &Stream,
    names: &Names,
    filter: &Compiled,
    after: Option<u64>,
    limit: usize,
) -> Result<(Vec<DeadLetter>, bool), Problem> {
    let subject = match &filter.sel.trigger {
        Some(t) if trigger_name(t) => names.dead_letter_subject(t),
        Some(_) => return Ok((Vec::new(), false)),
        None => format!("{}.*", names.dead_letter_prefix),
    };
    let mut next = after.map_or(1, |a| a.saturating_add(1));
    let mut out = Vec::new();
    loop {
        match stream
            .direct_get_next_for_subject(subject.clone(), Some(next))
            .await
        {
            Ok(m) => {
                next = m.sequence + 1;
                let Some(d) = letter(m.sequence, &m.payload) else {
                    continue;
                };
                if filter.matches(&d) {
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(d);
                }
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok((out, false)),
            Err(e) => return Err(unavailable(&e)),
        }
    }
}

async fn list(
    State(state): State<Arc<JsApi>>,
    Path((ns, b)): Path<(String, String)>,
    Query(sel): Query<Selector>,
) -> Result<Response, Problem> {
    let limit = sel.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let after = sel.after.as_deref().map(parse_id).transpose()?;
    let filter = Compiled::new(sel)?;
    let (stream, names) = stream(&state, &ns, &b).await?;
    let (items, more) = select(&stream, &names, &filter, after, limit).await?;
    let next = more
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten();
    let items: Vec<_> = items.iter().map(summary).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "items": items, "next": next }),
    ))
}

/// Dead letter `id` of the broker whose dead-letter stream is `stream`.
async fn find(stream: &Stream, names: &Names, id: u64) -> Result<DeadLetter, Problem> {
    let not_found = || Problem::not_found(format!("no dead letter {id} in this broker"));
    match stream.direct_get(id).await {
        Ok(m)
            if m.subject
                .starts_with(&format!("{}.", names.dead_letter_prefix)) =>
        {
            letter(m.sequence, &m.payload).ok_or_else(not_found)
        }
        Ok(_) => Err(not_found()),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Err(not_found()),
        Err(e) => Err(unavailable(&e)),
    }
}

/// Whether the trigger's dead-letter sink has yet to take dead letter `d`: its consumer on
/// the dead-letter stream has not acknowledged that far.
async fn sink_pending(stream: &Stream, d: &DeadLetter) -> bool {
    match stream.consumer_info(&d.trigger).await {
        Ok(info) => d.id > info.ack_floor.stream_sequence,
        Err(_) => false,
    }
}

async fn show(
    State(state): State<Arc<JsApi>>,
    Path((ns, b, id)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let (stream, names) = stream(&state, &ns, &b).await?;
    let d = find(&stream, &names, parse_id(&id)?).await?;
    let event: serde_json::Value = d
        .event()
        .map(|e| {
            serde_json::from_slice(&switchyard_core::json::encode_event(&e)).unwrap_or_default()
        })
        .unwrap_or_default();
    let mut v = serde_json::to_value(summary(&d)).unwrap_or_default();
    v["offset"] = d.offset.into();
    v["deadLetterSinkPending"] = sink_pending(&stream, &d).await.into();
    v["event"] = event;
    v["attempts"] = serde_json::to_value(&d.attempts).unwrap_or_default();
    Ok(json(StatusCode::OK, &v))
}

async fn delete_one(
    State(state): State<Arc<JsApi>>,
    Path((ns, b, id)): Path<(String, String, String)>,
    caller: CallerExt,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let (stream, names) = stream(&state, &ns, &b).await?;
    let _guard = state.mutate.lock().await;
    find(&stream, &names, id).await?;
    if !remove(&stream, id).await? {
        return Err(Problem::not_found(format!(
            "no dead letter {id} in this broker"
        )));
    }
    let audit = AuditEntry::now(
        who(&caller),
        "delete",
        (&ns, &b),
        serde_json::json!({ "ids": [id.to_string()] }),
        1,
    );
    record(&state, &audit).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn purge(
    State(state): State<Arc<JsApi>>,
    Path((ns, b)): Path<(String, String)>,
    Query(sel): Query<Selector>,
    caller: CallerExt,
    headers: axum::http::HeaderMap,
) -> Result<Response, Problem> {
    let (selection, filter) = purge_selection(sel)?;
    let who = who(&caller);
    let tasks = Arc::clone(&state);
    with_progress(
        &tasks.bulk,
        &headers,
        "purged",
        move |progress| async move {
            purge_all(&state, (&ns, &b), who, selection, &filter, &progress).await
        },
    )
    .await
}

/// Purges what `filter` selects of broker `ns/b`, reporting the count to `progress`.
async fn purge_all(
    state: &JsApi,
    (ns, b): (&str, &str),
    who: String,
    selection: serde_json::Value,
    filter: &Compiled,
    progress: &tokio::sync::watch::Sender<usize>,
) -> Result<usize, Problem> {
    let (stream, names) = stream(state, ns, b).await?;
    let _guard = state.mutate.lock().await;
    let only_trigger = filter.sel.trigger.as_deref().filter(|t| {
        let s = &filter.sel;
        trigger_name(t)
            && s.ty.is_none()
            && s.source.is_none()
            && s.status.is_none()
            && s.since.is_none()
            && s.until.is_none()
    });
    // A whole trigger's or a whole broker's in one request to the stream; otherwise one
    // dead letter at a time, a chunk of the selection in memory at once.
    let purged = if filter.is_unfiltered() || only_trigger.is_some() {
        let request = stream.purge();
        let response = match only_trigger {
            Some(t) => request.filter(names.dead_letter_subject(t)).await,
            None => request.await,
        };
        response.map_err(|e| unavailable(&e))?.purged
    } else {
        let mut purged = 0u64;
        let removed = purge_selected(&stream, &names, filter, &mut purged, progress).await;
        // What was removed is recorded even when a later deletion failed.
        let count = usize::try_from(purged).unwrap_or(usize::MAX);
        if purged > 0 {
            let audit = AuditEntry::now(who, "purge", (ns, b), selection, count);
            record(state, &audit).await;
        }
        removed?;
        return Ok(count);
    };
    let count = usize::try_from(purged).unwrap_or(usize::MAX);
    if purged > 0 {
        let audit = AuditEntry::now(who, "purge", (ns, b), selection, count);
        record(state, &audit).await;
    }
    Ok(count)
}

/// Deletes the dead letters `filter` selects, one by one, a chunk in memory at a time,
/// counting them in `purged`.
async fn purge_selected(
    stream: &Stream,
    names: &Names,
    filter: &Compiled,
    purged: &mut u64,
    progress: &tokio::sync::watch::Sender<usize>,
) -> Result<(), Problem> {
    let mut after = None;
    loop {
        let (items, more) = select(stream, names, filter, after, CHUNK).await?;
        let Some(last) = items.last() else { break };
        after = Some(last.id);
        for d in &items {
            if remove(stream, d.id).await? {
                *purged += 1;
                progress.send_replace(usize::try_from(*purged).unwrap_or(usize::MAX));
            }
        }
        if !more {
            break;
        }
    }
    Ok(())
}

/// Deletes dead letter `id`: `false` when it was gone already (another replica, or
/// retention, removed it meanwhile).
async fn remove(stream: &Stream, id: u64) -> Result<bool, Problem> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::stream::DeleteMessageErrorKind as Kind;
    match stream.delete_message(id).await {
        Ok(deleted) => Ok(deleted),
        Err(e)
            if matches!(
                e.kind(),
                Kind::JetStream(j) if j.error_code() == ErrorCode::NO_MESSAGE_FOUND
                    || j.error_code() == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(unavailable(&e)),
    }
}

async fn redrive(
    State(state): State<Arc<JsApi>>,
    Path((ns, b)): Path<(String, String)>,
    caller: CallerExt,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Problem> {
    let (req, uri, selection) = read_redrive(body).await?;
    let who = who(&caller);
    let tasks = Arc::clone(&state);
    with_progress(
        &tasks.bulk,
        &headers,
        "redriven",
        move |progress| async move {
            redrive_all(&state, (&ns, &b), who, req, uri, selection, progress).await
        },
    )
    .await
}

/// Redrives what `req` selects of broker `ns/b`, reporting the count to `progress`.
async fn redrive_all(
    state: &JsApi,
    (ns, b): (&str, &str),
    who: String,
    req: super::RedriveRequest,
    uri: Option<url::Url>,
    selection: serde_json::Value,
    progress: tokio::sync::watch::Sender<usize>,
) -> Result<usize, Problem> {
    let (stream, names) = stream(state, ns, b).await?;
    let broker = broker_id(ns, b);
    let _guard = state.mutate.lock().await;
    let mut done = Redriving {
        state,
        stream: &stream,
        broker: &broker,
        uri: uri.as_ref(),
        uri_text: req.uri.as_deref(),
        count: 0,
        progress,
    };
    let result = if req.ids.is_empty() {
        done.by_filter(&names, &redrive_filter(req.filter, req.all)?)
            .await
    } else {
        let mut selected = Vec::with_capacity(req.ids.len());
        for id in redrive_ids(&req.ids)? {
            let d = find(&stream, &names, id).await?;
            done.check(&d)?;
            selected.push(d);
        }
        done.all(&selected).await
    };
    if done.count > 0 {
        let mut audit = AuditEntry::now(who, "redrive", (ns, b), selection, done.count);
        audit.uri = req.uri.clone();
        record(state, &audit).await;
    }
    result?;
    Ok(done.count)
}

/// A redrive under way.
struct Redriving<'a> {
    state: &'a JsApi,
    stream: &'a Stream,
    broker: &'a str,
    uri: Option<&'a url::Url>,
    uri_text: Option<&'a str>,
    count: usize,
    /// How many so far, for a caller following the progress.
    progress: tokio::sync::watch::Sender<usize>,
}

impl Redriving<'_> {
    /// Whether dead letter `d` may be redriven: its trigger runs here, and a `uri` is where
    /// it delivers or under an allowed prefix.
    fn check(&self, d: &DeadLetter) -> Result<(), Problem> {
        let Some(t) = self.state.trigger(self.broker, &d.trigger) else {
            return Err(trigger_gone(d));
        };
        if let Some(uri) = self.uri {
            may_send(
                uri,
                &d.trigger,
                t.destination_urls(),
                &self.state.redrive_allow,
            )?;
        }
        Ok(())
    }

    /// Publishes `d`'s event for its trigger, then deletes the dead letter. A crash between
    /// the two leaves both; a second redrive of it within the duplicate window stores nothing
    /// more.
    async fn one(&mut self, d: &DeadLetter) -> Result<(), Problem> {
        let Some(event) = d.event() else {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:switchyard:problem:damaged-dead-letter",
                "damaged dead letter",
                format!("dead letter {} holds no readable event; purge it", d.id),
            ));
        };
        self.state
            .log
            .publish_redrive(
                self.broker,
                &d.trigger,
                d.id,
                switchyard_core::store::encode(&event),
                d.offset,
                self.uri_text,
            )
            .await
            .map_err(|e| unavailable(&e))?;
        // Gone already: another replica redrove or purged it meanwhile.
        remove(self.stream, d.id).await?;
        self.count += 1;
        self.progress.send_replace(self.count);
        Ok(())
    }

    async fn all(&mut self, selected: &[DeadLetter]) -> Result<(), Problem> {
        for d in selected {
            self.one(d).await?;
        }
        Ok(())
    }

    /// Every dead letter `filter` selects: all checked first, a chunk in memory at a time,
    /// then redriven up to the last one checked (one that came after waits for another
    /// redrive).
    async fn by_filter(&mut self, names: &Names, filter: &Compiled) -> Result<(), Problem> {
        let mut after = None;
        loop {
            let (items, more) = select(self.stream, names, filter, after, CHUNK).await?;
            let Some(last) = items.last() else { break };
            after = Some(last.id);
            for d in &items {
                self.check(d)?;
            }
            if !more {
                break;
            }
        }
        let Some(last) = after else {
            return Ok(());
        };
        let mut from = None;
        loop {
            let (items, more) = select(self.stream, names, filter, from, CHUNK).await?;
            let items: Vec<_> = items.into_iter().filter(|d| d.id <= last).collect();
            let Some(end) = items.last() else { break };
            from = Some(end.id);
            self.all(&items).await?;
            if !more {
                break;
            }
        }
        Ok(())
    }
}
