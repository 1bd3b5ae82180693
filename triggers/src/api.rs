//! The dead-letter part of the management API (`spec/management-api.md`): list with filters and
//! pages, show one with every attempt, redrive, purge. `jetstream` serves the same routes on
//! the JetStream engine. `resources` is the resources with status (brokers, triggers,
//! sources; pause and resume), over either engine (`figures`).

#[cfg(test)]
mod chunk_tests;
mod destinations;
pub mod figures;
pub mod jetstream;
mod progress;
pub mod replay;
pub mod resources;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use switchyard_broker::audit::AuditEntry;
use switchyard_broker::auth::Caller;
use switchyard_broker::log::{EventLog, Table, WriteOp, blocking};
use switchyard_broker::problem::Problem;
use switchyard_broker::tasks::Tasks;

use crate::dispatch::{EmbeddedSource, RunningTriggers};
use crate::records::{self, DeadLetter, RetryEntry};
pub use destinations::redrive_prefix;
use destinations::{may_send, redrive_uri};
use progress::with_progress;

/// Where a broker's dead letters are, on either engine.
const DEAD_LETTERS: &str = "/api/v1/namespaces/{namespace}/brokers/{broker}/deadletters";
/// The most records one page holds.
pub const MAX_PAGE: usize = 1000;
/// The largest redrive request body (axum's default for a buffered body).
const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// Dead letters a purge or redrive of a filter (or of all) holds in memory at once: it works
/// through the store in chunks of this many, each one write.
const CHUNK: usize = 100;
/// Records one scan of the dead-letter table reads at most.
const SCAN: usize = 256;

struct ApiState {
    log: Arc<dyn EventLog>,
    /// Serialises the handlers that change dead letters, so two redrives of the same one
    /// cannot both schedule it.
    mutate: tokio::sync::Mutex<()>,
    /// Triggers by (broker id, trigger name).
    triggers: RunningTriggers,
    /// URL prefixes a redrive may name besides the triggers' own destinations.
    redrive_allow: Vec<url::Url>,
    /// The redrives and purges under way (each runs to its end, whatever its caller does).
    bulk: std::sync::Mutex<Tasks>,
}

/// The routes, to merge into the server's router. A redrive's `uri` must be where the dead
/// letter's trigger delivers, or under one of `redrive_allow` ([`redrive_prefix`]s; others
/// are passed over).
pub fn routes(
    log: Arc<dyn EventLog>,
    triggers: RunningTriggers,
    redrive_allow: Vec<String>,
) -> Router {
    let state = Arc::new(ApiState {
        log,
        mutate: tokio::sync::Mutex::new(()),
        triggers,
        redrive_allow: redrive_allow
            .iter()
            .filter_map(|p| redrive_prefix(p).ok())
            .collect(),
        bulk: std::sync::Mutex::new(Tasks::new("dead-letter redrives and purges")),
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

/// Which dead letters a request is about.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Only this trigger's.
    pub trigger: Option<String>,
    /// Only events of this `type`.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Only events of this `source`.
    pub source: Option<String>,
    /// Only those whose last answer had this status.
    pub status: Option<u16>,
    /// Only those dead-lettered at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only those dead-lettered before this time (RFC 3339).
    pub until: Option<String>,
    /// Page: ids after this one.
    pub after: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// With DELETE and no other filter: confirms purging everything.
    pub all: Option<bool>,
}

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "urn:switchyard:problem:bad-request",
        "bad request",
        detail,
    )
}

fn storage(e: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "urn:switchyard:problem:storage",
        "storage failure",
        e.to_string(),
    )
}

fn time_ms(field: &str, v: &Option<String>) -> Result<Option<u64>, Problem> {
    v.as_ref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| u64::try_from(d.timestamp_millis()).unwrap_or(0))
                .map_err(|_| bad_request(format!("`{field}` must be an RFC 3339 time, not `{t}`")))
        })
        .transpose()
}

struct Compiled {
    sel: Selector,
    since: Option<u64>,
    until: Option<u64>,
}

impl Compiled {
    fn new(sel: Selector) -> Result<Self, Problem> {
        let since = time_ms("since", &sel.since)?;
        let until = time_ms("until", &sel.until)?;
        Ok(Compiled { sel, since, until })
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        let s = &self.sel;
        s.trigger.as_ref().is_none_or(|t| *t == d.trigger)
            && s.ty.as_ref().is_none_or(|t| *t == d.ty)
            && s.source.as_ref().is_none_or(|x| *x == d.source)
            && s.status.is_none_or(|x| Some(x) == d.status)
            && self.since.is_none_or(|x| d.time_ms >= x)
            && self.until.is_none_or(|x| d.time_ms < x)
    }

    fn is_unfiltered(&self) -> bool {
        let s = &self.sel;
        s.trigger.is_none()
            && s.ty.is_none()
            && s.source.is_none()
            && s.status.is_none()
            && s.since.is_none()
            && s.until.is_none()
    }
}

fn parse_id(id: &str) -> Result<u64, Problem> {
    id.parse()
        .map_err(|_| bad_request(format!("`{id}` is not a dead-letter id")))
}

/// Dead letters with their keys, and whether more may follow.
type Selection = (Vec<(Vec<u8>, DeadLetter)>, bool);

/// Scans matching records from `after`, at most `limit`; also says whether more may follow.
async fn select(
    state: &ApiState,
    broker: &str,
    filter: &Compiled,
    after: Option<u64>,
    limit: usize,
) -> Result<Selection, Problem> {
    let prefix = records::deadletter_prefix(broker);
    let end = records::prefix_end(&prefix);
    let mut from = match after {
        Some(id) => records::deadletter_key(broker, id.saturating_add(1)),
        None => prefix.clone(),
    };
    let mut out = Vec::new();
    loop {
        let (lo, hi) = (from.clone(), end.clone());
        let chunk = blocking(&state.log, move |log| {
            log.scan(Table::DeadLetters, &lo, &hi, SCAN)
        })
        .await
        .map_err(storage)?;
        let exhausted = chunk.len() < SCAN;
        for (key, value) in chunk {
            from = key.clone();
            from.push(0);
            let Ok(d) = serde_json::from_slice::<DeadLetter>(&value) else {
                continue;
            };
            if filter.matches(&d) {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push((key, d));
            }
        }
        if exhausted {
            return Ok((out, false));
        }
    }
}

/// The writes that remove a dead letter: the record and its dead-letter-sink marker.
fn removal(broker: &str, id: u64, key: Vec<u8>) -> Vec<WriteOp> {
    vec![
        WriteOp::Delete {
            table: Table::DeadLetters,
            key,
        },
        WriteOp::Delete {
            table: Table::DeadLetters,
            key: records::dls_pending_key(broker, id),
        },
    ]
}

fn broker_id(ns: &str, b: &str) -> String {
    switchyard_core::id::join(ns, b)
}

/// A dead letter as the list shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    id: String,
    trigger: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    source: &'a str,
    event_id: &'a str,
    status: Option<u16>,
    reason: &'a str,
    destination: &'a str,
    time: &'a str,
    attempts: usize,
}

fn summary(d: &DeadLetter) -> Summary<'_> {
    Summary {
        id: d.id.to_string(),
        trigger: &d.trigger,
        ty: &d.ty,
        source: &d.source,
        event_id: &d.event_id,
        status: d.status,
        reason: d.reason.as_str(),
        destination: &d.destination,
        time: &d.time,
        attempts: d.attempts.len(),
    }
}

fn json(status: StatusCode, v: &impl Serialize) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn list(
    State(state): State<Arc<ApiState>>,
    Path((ns, b)): Path<(String, String)>,
    Query(sel): Query<Selector>,
) -> Result<Response, Problem> {
    let limit = sel.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let after = sel.after.as_deref().map(parse_id).transpose()?;
    let filter = Compiled::new(sel)?;
    let (items, more) = select(&state, &broker_id(&ns, &b), &filter, after, limit).await?;
    let next = more
        .then(|| items.last().map(|(_, d)| d.id.to_string()))
        .flatten();
    let items: Vec<Summary<'_>> = items.iter().map(|(_, d)| summary(d)).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "items": items, "next": next }),
    ))
}

/// The one record at `key` of the dead-letter table, if any, read off the async workers.
async fn one_record(state: &ApiState, key: Vec<u8>) -> Result<Option<Vec<u8>>, Problem> {
    let mut end = key.clone();
    end.push(0);
    let found = blocking(&state.log, move |log| {
        log.scan(Table::DeadLetters, &key, &end, 1)
    })
    .await
    .map_err(storage)?;
    Ok(found.into_iter().next().map(|(_, v)| v))
}

async fn find(state: &ApiState, broker: &str, id: u64) -> Result<DeadLetter, Problem> {
    let found = one_record(state, records::deadletter_key(broker, id)).await?;
    found
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(|| Problem::not_found(format!("no dead letter {id} in broker {broker}")))
}

async fn show(
    State(state): State<Arc<ApiState>>,
    Path((ns, b, id)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let d = find(&state, &broker_id(&ns, &b), parse_id(&id)?).await?;
    let event: serde_json::Value = d
        .event()
        .map(|e| {
            serde_json::from_slice(&switchyard_core::json::encode_event(&e)).unwrap_or_default()
        })
        .unwrap_or_default();
    let pending = one_record(&state, records::dls_pending_key(&d.broker, d.id))
        .await?
        .is_some();
    let mut v = serde_json::to_value(summary(&d)).unwrap_or_default();
    v["offset"] = d.offset.into();
    v["deadLetterSinkPending"] = pending.into();
    v["event"] = event;
    v["attempts"] = serde_json::to_value(&d.attempts).unwrap_or_default();
    Ok(json(StatusCode::OK, &v))
}

/// The caller a request came from, as the front door found it.
type CallerExt = Option<axum::Extension<Caller>>;

fn who(caller: &CallerExt) -> String {
    caller
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |c| c.0.who())
}

async fn delete_one(
    State(state): State<Arc<ApiState>>,
    Path((ns, b, id)): Path<(String, String, String)>,
    caller: CallerExt,
) -> Result<Response, Problem> {
    let broker = broker_id(&ns, &b);
    let id = parse_id(&id)?;
    let _guard = state.mutate.lock().await;
    find(&state, &broker, id).await?;
    let audit = AuditEntry::now(
        who(&caller),
        "delete",
        (&ns, &b),
        serde_json::json!({ "ids": [id.to_string()] }),
        1,
    );
    let mut ops = removal(&broker, id, records::deadletter_key(&broker, id));
    ops.push(audit.op());
    state.log.write(ops).await.map_err(storage)?;
    audit.log();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn purge(
    State(state): State<Arc<ApiState>>,
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

/// A purge's selection as the audit entry records it, and compiled; refused when it selects
/// everything without `all=true`.
fn purge_selection(sel: Selector) -> Result<(serde_json::Value, Compiled), Problem> {
    let all = sel.all == Some(true);
    let selection = serde_json::to_value(&sel).unwrap_or_default();
    let filter = Compiled::new(sel)?;
    if filter.is_unfiltered() && !all {
        return Err(bad_request(
            "purging every dead letter needs `all=true`; or give a filter (trigger, type, source, status, since, until)",
        ));
    }
    Ok((selection, filter))
}

/// Purges what `filter` selects of broker `ns/b`, reporting the count to `progress`.
async fn purge_all(
    state: &ApiState,
    (ns, b): (&str, &str),
    who: String,
    selection: serde_json::Value,
    filter: &Compiled,
    progress: &tokio::sync::watch::Sender<usize>,
) -> Result<usize, Problem> {
    let broker = broker_id(ns, b);
    let _guard = state.mutate.lock().await;
    // In chunks, so a purge of millions holds a hundred in memory. The audit entry goes with
    // every chunk's deletions, under one key, with the count so far: nothing is deleted
    // unrecorded, even when a later chunk fails. A purge that finds nothing is not recorded.
    let mut audit = AuditEntry::now(who, "purge", (ns, b), selection, 0);
    let audit_key = audit.new_key();
    let mut after = None;
    loop {
        let (items, more) = select(state, &broker, filter, after, CHUNK).await?;
        let Some((_, last)) = items.last() else { break };
        after = Some(last.id);
        audit.count += items.len();
        let mut ops: Vec<WriteOp> = items
            .into_iter()
            .flat_map(|(key, d)| removal(&broker, d.id, key))
            .collect();
        ops.push(audit.op_at(audit_key.clone()));
        state.log.write(ops).await.map_err(storage)?;
        progress.send_replace(audit.count);
        if !more {
            break;
        }
    }
    if audit.count > 0 {
        audit.log();
    }
    Ok(audit.count)
}

/// The body of a redrive request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// These dead letters (ids as strings or numbers).
    #[serde(default)]
    pub ids: Vec<serde_json::Value>,
    /// Or every one matching this filter (`{}` with `all: true` for all).
    #[serde(default)]
    pub filter: Option<Selector>,
    /// Confirms redriving everything when the filter is empty.
    #[serde(default)]
    pub all: bool,
    /// Deliver to this URL instead of the trigger's subscriber.
    #[serde(default)]
    pub uri: Option<String>,
}

async fn redrive(
    State(state): State<Arc<ApiState>>,
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
    state: &ApiState,
    (ns, b): (&str, &str),
    who: String,
    req: RedriveRequest,
    uri: Option<url::Url>,
    selection: serde_json::Value,
    progress: tokio::sync::watch::Sender<usize>,
) -> Result<usize, Problem> {
    let broker = broker_id(ns, b);
    let _guard = state.mutate.lock().await;
    let mut audit = AuditEntry::now(who, "redrive", (ns, b), selection, 0);
    audit.uri = req.uri.clone();
    let mut done = Redriving {
        state,
        broker: &broker,
        uri: uri.as_ref(),
        uri_text: req.uri.clone(),
        key: audit.new_key(),
        audit,
        progress,
    };
    let result = if req.ids.is_empty() {
        done.by_filter(&redrive_filter(req.filter, req.all)?).await
    } else {
        let mut selected = Vec::with_capacity(req.ids.len());
        for id in redrive_ids(&req.ids)? {
            selected.push((
                records::deadletter_key(&broker, id),
                find(state, &broker, id).await?,
            ));
        }
        done.listed(selected).await
    };
    if done.audit.count > 0 {
        done.audit.log();
    }
    result?;
    Ok(done.audit.count)
}

/// A redrive request's body, read as ingress reads bodies (by the body deadline, else 408; at most
/// 2 MiB, else 413): the request, its checked `uri`, and the selection as the audit entry
/// records it.
async fn read_redrive(
    body: axum::body::Body,
) -> Result<(RedriveRequest, Option<url::Url>, serde_json::Value), Problem> {
    let body = switchyard_broker::ingress::read_body(body, MAX_REQUEST_BYTES).await?;
    let req: RedriveRequest = if body.is_empty() {
        RedriveRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("invalid redrive request: {e}")))?
    };
    let uri = redrive_uri(req.uri.as_deref())?;
    let selection = serde_json::json!({
        "ids": req.ids,
        "filter": req.filter.as_ref().map(|f| serde_json::to_value(f).unwrap_or_default()),
        "all": req.all,
    });
    Ok((req, uri, selection))
}

/// A redrive's filter, which must select something or say `all`.
fn redrive_filter(filter: Option<Selector>, all: bool) -> Result<Compiled, Problem> {
    let filter = Compiled::new(filter.unwrap_or_default())?;
    if filter.is_unfiltered() && !all {
        return Err(bad_request(
            "name the dead letters (`ids`), give a `filter`, or set `all: true`",
        ));
    }
    Ok(filter)
}

/// A redrive's `ids` (strings or numbers), sorted, each once.
fn redrive_ids(ids: &[serde_json::Value]) -> Result<Vec<u64>, Problem> {
    let mut ids = ids
        .iter()
        .map(|id| parse_id(&id.as_str().map_or_else(|| id.to_string(), str::to_owned)))
        .collect::<Result<Vec<u64>, Problem>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// 409: the trigger a dead letter belongs to does not run.
fn trigger_gone(d: &DeadLetter) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "urn:switchyard:problem:no-trigger",
        "trigger gone",
        format!(
            "dead letter {} belongs to trigger `{}`, which no longer exists; purge it or give it to another trigger's configuration",
            d.id, d.trigger
        ),
    )
}

/// A redrive under way: where it sends, and its audit entry, put again with each chunk
/// written under one key with the count so far.
struct Redriving<'a> {
    state: &'a ApiState,
    broker: &'a str,
    uri: Option<&'a url::Url>,
    /// The `uri` as the caller wrote it, which the retries carry.
    uri_text: Option<String>,
    audit: AuditEntry,
    key: Vec<u8>,
    /// How many so far, for a caller following the progress.
    progress: tokio::sync::watch::Sender<usize>,
}

impl Redriving<'_> {
    /// The trigger that takes dead letter `d` again: it must still run, and a `uri` must be
    /// where it delivers or under an allowed prefix.
    fn check(&self, d: &DeadLetter) -> Result<Arc<EmbeddedSource>, Problem> {
        let Some(t) = self.state.triggers.get(self.broker, &d.trigger) else {
            return Err(trigger_gone(d));
        };
        if let Some(uri) = self.uri {
            may_send(
                uri,
                &d.trigger,
                t.trigger().destination_urls(),
                &self.state.redrive_allow,
            )?;
        }
        Ok(t)
    }

    /// Dead letters named by id: all checked, then redriven a chunk per write.
    async fn listed(&mut self, selected: Vec<(Vec<u8>, DeadLetter)>) -> Result<(), Problem> {
        let mut checked = Vec::with_capacity(selected.len());
        for (key, d) in selected {
            let t = self.check(&d)?;
            checked.push((key, d, t));
        }
        let mut checked = checked.into_iter().peekable();
        while checked.peek().is_some() {
            let chunk: Vec<_> = checked.by_ref().take(CHUNK).collect();
            self.write(chunk).await?;
        }
        Ok(())
    }

    /// Every dead letter `filter` selects, a chunk in memory at a time: all checked first (a
    /// first pass), then redriven up to the last one checked (a second pass; one that came
    /// after the first pass waits for another redrive).
    async fn by_filter(&mut self, filter: &Compiled) -> Result<(), Problem> {
        let (state, broker) = (self.state, self.broker);
        let mut after = None;
        loop {
            let (items, more) = select(state, broker, filter, after, CHUNK).await?;
            let Some((_, last)) = items.last() else { break };
            after = Some(last.id);
            for (_, d) in &items {
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
            let (items, more) = select(state, broker, filter, from, CHUNK).await?;
            let items: Vec<_> = items.into_iter().filter(|(_, d)| d.id <= last).collect();
            let Some((_, end)) = items.last() else { break };
            from = Some(end.id);
            // Checked again: a reload may have removed a trigger since the first pass (then
            // the redrive stops there with a 409, and the audit entry says how many went).
            let mut chunk = Vec::with_capacity(items.len());
            for (key, d) in items {
                let t = self.check(&d)?;
                chunk.push((key, d, t));
            }
            self.write(chunk).await?;
            if !more || from >= Some(last) {
                break;
            }
        }
        Ok(())
    }

    /// Schedules each dead letter of `chunk` as a retry of its trigger and removes it, with
    /// the audit entry, in one write.
    async fn write(
        &mut self,
        chunk: Vec<(Vec<u8>, DeadLetter, Arc<EmbeddedSource>)>,
    ) -> Result<(), Problem> {
        let uri = self.uri_text.clone();
        let mut ops = Vec::with_capacity(chunk.len() * 3 + 1);
        for (key, d, t) in &chunk {
            let entry = RetryEntry {
                offset: d.offset,
                event: d.event.clone(),
                attempts: Vec::new(),
                uri: uri.clone(),
            };
            ops.push(WriteOp::Put {
                table: Table::Retries,
                key: records::retry_key(t.retry_prefix(), records::now_ms(), records::new_id()),
                value: serde_json::to_vec(&entry).unwrap_or_default(),
            });
            ops.extend(removal(self.broker, d.id, key.clone()));
        }
        self.audit.count += chunk.len();
        ops.push(self.audit.op_at(self.key.clone()));
        if let Err(e) = self.state.log.write(ops).await {
            self.audit.count -= chunk.len();
            return Err(storage(e));
        }
        for (_, _, t) in &chunk {
            t.retry_scheduled();
        }
        self.progress.send_replace(self.audit.count);
        Ok(())
    }
}
