//! Replay jobs (spec/management-api.md, "Replay"): a broker's stored events in an offset or
//! time range, optionally filtered by CESQL, delivered again to one trigger only, at a rate,
//! as a job with a preview, progress and cancel. The trigger's own filter applies, as
//! EventBridge's rules apply to a replay. Each selected event is handed to the
//! trigger as a redrive is: a retry record due now (embedded) or a message on the trigger's
//! redrive subject (JetStream), so it goes through the trigger's own delivery, retries and
//! dead letters, and to no other trigger. Replayed events carry the extension
//! `switchyardreplay` (the job's id).
//!
//! A job's record is kept in the store (table `SourceState`, key `replay/{ns}/{id}`) and
//! written as it goes, so any replica can show it and cancel it; the job runs in the process
//! that accepted it, and one whose process stopped shows as `interrupted`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_broker::audit::AuditEntry;
use switchyard_broker::log::{EventLog, LogError, Table, WriteOp, blocking};
use switchyard_broker::problem::Problem;
use switchyard_core::CloudEvent;
use switchyard_core::id::TriggerId;

use super::figures::Engine;
use super::resources::ConfigView;
use super::{CallerExt, json as answer, who};
use crate::cesql::Expression;
use crate::records;

/// The extension a replayed event carries: the job's id.
pub const REPLAY_EXTENSION: &str = "switchyardreplay";
/// Events read from the log at a time.
const CHUNK: usize = 256;
/// How often a running job writes its progress, and reads whether it was cancelled.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// A job whose record was not written for this long while running is shown `interrupted`.
const STALE_AFTER_MS: u64 = 10_000;
/// Events a job hands to its trigger ahead of what the trigger delivered, at most.
const MAX_AHEAD: u64 = 1_000;
/// The default pace.
const DEFAULT_RATE_PER_SECOND: f64 = 100.0;
/// The slowest and the fastest pace a job may ask for.
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1_000_000.0;
/// The longest a job waits without writing its progress and looking for a cancel.
const BEAT: Duration = Duration::from_millis(250);

const PREFIX: &str = "replay/";

/// What to replay: `POST …/triggers/{name}/replays`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selection {
    /// The first offset (stream sequence on JetStream) to replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_offset: Option<u64>,
    /// Replay up to this offset, not included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_offset: Option<u64>,
    /// Replay events stored at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time: Option<String>,
    /// Replay events stored before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time: Option<String>,
    /// Only events this CESQL expression matches, besides the trigger's own filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Events handed to the trigger per second at most (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// Count what would be replayed, and replay nothing.
    #[serde(default, skip_serializing)]
    pub dry_run: bool,
}

/// A job as the store keeps it and the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Its id.
    pub id: String,
    /// The trigger's namespace.
    pub namespace: String,
    /// The trigger.
    pub trigger: String,
    /// Its broker.
    pub broker: String,
    /// What was asked for.
    pub selection: Selection,
    /// `running`, `done`, `cancelling`, `cancelled`, `failed` or `interrupted`.
    pub state: String,
    /// Events read from the log.
    pub scanned: u64,
    /// Events in the range that the filter passed.
    pub matched: u64,
    /// Events handed to the trigger.
    pub sent: u64,
    /// The next offset it would read.
    pub position: u64,
    /// Who started it.
    pub by: String,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// When its record was last written (ms since the epoch).
    pub updated_ms: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Api {
    config: ConfigView,
    engine: Engine,
    tasks: std::sync::Mutex<switchyard_broker::tasks::Tasks>,
}

/// The routes, to merge into the server's router.
pub fn routes(config: ConfigView, engine: Engine) -> Router {
    const NS: &str = "/api/v1/namespaces/{namespace}";
    Router::new()
        .route(
            &format!("{NS}/triggers/{{trigger}}/replays"),
            axum::routing::post(start),
        )
        .route(&format!("{NS}/replays"), get(list))
        .route(&format!("{NS}/replays/{{id}}"), get(show).delete(cancel))
        .with_state(Arc::new(Api {
            config,
            engine,
            tasks: std::sync::Mutex::new(switchyard_broker::tasks::Tasks::new("replay jobs")),
        }))
}

fn bad(detail: String) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "urn:switchyard:problem:bad-request",
        "bad request",
        detail,
    )
    .into_response()
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    Problem::overloaded(&format!("the store did not answer: {e}")).into_response()
}

fn millis(time: &str, field: &str) -> Result<u64, String> {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| u64::try_from(t.timestamp_millis()).unwrap_or(0))
        .map_err(|e| format!("{field}: not an RFC 3339 time: {e}"))
}

/// A selection checked and compiled.
struct Compiled {
    from: u64,
    to: Option<u64>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    filter: Option<Expression>,
    /// The trigger's own filter.
    trigger: crate::filter::Filter,
    rate: f64,
}

impl Compiled {
    fn new(
        s: &Selection,
        trigger: &switchyard_core::resources::Trigger,
    ) -> Result<Compiled, String> {
        if s.from_offset.is_none() && s.from_time.is_none() {
            return Err("say where the replay starts: fromOffset or fromTime (a replay of everything is fromOffset 0)".into());
        }
        let filter = match &s.filter {
            Some(text) => Some(Expression::parse(text).map_err(|e| format!("filter: {e}"))?),
            None => None,
        };
        let rate = s.rate_per_second.unwrap_or(DEFAULT_RATE_PER_SECOND);
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(format!(
                "ratePerSecond must be between {MIN_RATE} and {MAX_RATE}"
            ));
        }
        Ok(Compiled {
            from: s.from_offset.unwrap_or(0),
            to: s.to_offset,
            from_ms: s
                .from_time
                .as_deref()
                .map(|t| millis(t, "fromTime"))
                .transpose()?,
            to_ms: s
                .to_time
                .as_deref()
                .map(|t| millis(t, "toTime"))
                .transpose()?,
            filter,
            trigger: crate::filter::Filter::compile(&trigger.spec)
                .map_err(|e| format!("the trigger's filter: {e}"))?,
            rate,
        })
    }

    /// Whether the scan is past the range.
    fn past(&self, offset: u64, arrival_ms: u64) -> bool {
        self.to.is_some_and(|to| offset >= to) || self.to_ms.is_some_and(|to| arrival_ms >= to)
    }

    fn selects(&self, arrival_ms: u64, event: &CloudEvent) -> bool {
        self.from_ms.is_none_or(|from| arrival_ms >= from)
            && self.trigger.matches(event)
            && self.filter.as_ref().is_none_or(|f| f.matches(event))
    }
}

/// The next chunk of `broker`'s log from `from` (empty at its end).
async fn read(
    log: &Arc<dyn EventLog>,
    broker: &str,
    from: u64,
) -> Result<Vec<switchyard_broker::log::LogRecord>, LogError> {
    let broker = broker.to_owned();
    blocking(log, move |log| {
        let stats = log.stats(&broker)?;
        log.read(&broker, from.max(stats.first), CHUNK)
    })
    .await
}

fn key(ns: &str, id: &str) -> Vec<u8> {
    format!("{PREFIX}{ns}/{id}").into_bytes()
}

/// The key that asks job `id` to stop: apart from the job's record, which the job itself
/// keeps writing, so that no progress write can undo a cancel.
fn cancel_key(ns: &str, id: &str) -> Vec<u8> {
    format!("replay-cancel/{ns}/{id}").into_bytes()
}

/// Whether record `key` exists in the `SourceState` table.
async fn exists(log: &Arc<dyn EventLog>, key: Vec<u8>) -> Result<bool, LogError> {
    let mut to = key.clone();
    to.push(0);
    let found = blocking(log, move |log| log.scan(Table::SourceState, &key, &to, 1)).await?;
    Ok(!found.is_empty())
}

async fn store(log: &Arc<dyn EventLog>, job: &Job, audit: Option<WriteOp>) -> Result<(), LogError> {
    let mut ops = vec![WriteOp::Put {
        table: Table::SourceState,
        key: key(&job.namespace, &job.id),
        value: serde_json::to_vec(job).unwrap_or_default(),
    }];
    ops.extend(audit);
    log.write(ops).await
}

async fn load(log: &Arc<dyn EventLog>, ns: &str, id: &str) -> Result<Option<Job>, LogError> {
    let k = key(ns, id);
    let mut to = k.clone();
    to.push(0);
    let found = blocking(log, move |log| log.scan(Table::SourceState, &k, &to, 1)).await?;
    let Some(mut job) = found
        .first()
        .and_then(|(_, v)| serde_json::from_slice::<Job>(v).ok())
    else {
        return Ok(None);
    };
    if job.state == "running" && exists(log, cancel_key(ns, id)).await? {
        job.state = "cancelling".into();
    }
    Ok(Some(shown(job)))
}

/// A job as shown: one left `running` by a process that stopped is `interrupted`.
fn shown(mut job: Job) -> Job {
    if matches!(job.state.as_str(), "running" | "cancelling")
        && records::now_ms().saturating_sub(job.updated_ms) > STALE_AFTER_MS
    {
        job.state = "interrupted".into();
    }
    job
}

async fn start(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    caller: CallerExt,
    body: axum::body::Body,
) -> Response {
    // Read as ingress reads bodies: by the body deadline (`--body-read-timeout-ms`, else 408)
    // and at most 2 MiB (else 413).
    let body = match switchyard_broker::ingress::read_body(body, super::MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    let selection: Selection = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad(format!("the body is not a replay: {e}")),
    };
    let config = Arc::clone(
        &api.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let Some(t) = config.triggers.get(&(ns.clone(), name.clone())) else {
        return Problem::not_found(format!(
            "no Trigger {ns}/{name} in the configuration in force"
        ))
        .into_response();
    };
    let compiled = match Compiled::new(&selection, t) {
        Ok(c) => c,
        Err(why) => return bad(why),
    };
    let broker = switchyard_core::id::join(&ns, &t.spec.broker);
    let id = TriggerId::new(&ns, &name);
    if !api.engine.runs(&id, &broker) {
        return Problem::new(
            StatusCode::CONFLICT,
            "urn:switchyard:problem:trigger-not-running",
            "trigger not running",
            format!(
                "Trigger {id} does not run here (its Broker is missing, or it could not start)"
            ),
        )
        .into_response();
    }
    let log = api.engine.log();
    if selection.dry_run {
        return match preview(&log, &broker, &compiled).await {
            Ok((scanned, matched, to)) => answer(
                StatusCode::OK,
                &json!({"matched": matched, "scanned": scanned,
                        "fromOffset": compiled.from, "toOffset": to}),
            ),
            Err(e) => unavailable(&e),
        };
    }
    let by = who(&caller);
    let job = Job {
        id: job_id(),
        namespace: ns.clone(),
        trigger: name.clone(),
        broker: broker.clone(),
        selection: selection.clone(),
        state: "running".into(),
        scanned: 0,
        matched: 0,
        sent: 0,
        position: compiled.from,
        by: by.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        updated_ms: records::now_ms(),
        error: None,
    };
    let audit = AuditEntry::now(
        by,
        "replay",
        (&ns, &t.spec.broker),
        json!({"trigger": name, "job": job.id, "selection": selection}),
        0,
    );
    if let Err(e) = store(&log, &job, Some(audit.op())).await {
        return unavailable(&e);
    }
    audit.log();
    let location = format!("/api/v1/namespaces/{ns}/replays/{}", job.id);
    api.tasks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .spawn(run(api.engine.clone(), job.clone(), compiled));
    let mut r = answer(StatusCode::ACCEPTED, &job);
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A new job's id: unique across replicas too (the process's id sequence, then a part that
/// differs between processes).
fn job_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}{:05}",
        records::new_id(),
        (std::process::id() ^ nanos) % 100_000
    )
}

/// Counts what `compiled` selects: (scanned, matched, the offset the scan stopped at).
async fn preview(
    log: &Arc<dyn EventLog>,
    broker: &str,
    compiled: &Compiled,
) -> Result<(u64, u64, u64), LogError> {
    let (mut scanned, mut matched, mut at) = (0u64, 0u64, compiled.from);
    loop {
        let chunk = read(log, broker, at).await?;
        let Some(last) = chunk.last() else { break };
        let next = last.offset + 1;
        for r in &chunk {
            if compiled.past(r.offset, r.arrival_ms) {
                return Ok((scanned, matched, r.offset));
            }
            scanned += 1;
            if let Ok(e) = switchyard_core::store::decode(&r.event)
                && compiled.selects(r.arrival_ms, &e)
            {
                matched += 1;
            }
        }
        at = next;
    }
    Ok((scanned, matched, at))
}

/// Writes `job`'s progress (which also says it is alive) at most every [`PROGRESS_EVERY`];
/// whether it was asked to stop.
async fn beat(log: &Arc<dyn EventLog>, job: &mut Job, last: &mut tokio::time::Instant) -> bool {
    if last.elapsed() < PROGRESS_EVERY {
        return false;
    }
    *last = tokio::time::Instant::now();
    if cancelled(log, job).await {
        return true;
    }
    job.updated_ms = records::now_ms();
    if let Err(e) = store(log, job, None).await {
        tracing::debug!(job = %job.id, error = %e, "cannot store a replay's progress");
    }
    false
}

/// Runs `job` to its end, writing its progress.
async fn run(engine: Engine, mut job: Job, compiled: Compiled) {
    let log = engine.log();
    let id = TriggerId::new(&job.namespace, &job.trigger);
    let pace = Duration::from_secs_f64(1.0 / compiled.rate);
    let mut next_send = tokio::time::Instant::now();
    let mut last = tokio::time::Instant::now();
    let outcome: Result<&str, String> = 'job: loop {
        let chunk = match read(&log, &job.broker, job.position).await {
            Ok(chunk) => chunk,
            Err(e) => break 'job Err(e.to_string()),
        };
        if chunk.is_empty() {
            break 'job Ok("done");
        }
        for r in chunk {
            if compiled.past(r.offset, r.arrival_ms) {
                break 'job Ok("done");
            }
            job.scanned += 1;
            job.position = r.offset + 1;
            if beat(&log, &mut job, &mut last).await {
                break 'job Ok("cancelled");
            }
            let Ok(mut event) = switchyard_core::store::decode(&r.event) else {
                continue;
            };
            if !compiled.selects(r.arrival_ms, &event) {
                continue;
            }
            job.matched += 1;
            // The trigger takes them at its own pace: no more than MAX_AHEAD waiting; and
            // the job keeps to its rate. Either wait goes on beating.
            loop {
                let now = tokio::time::Instant::now();
                let ahead = engine.replays_waiting(&id, &job.broker).await >= MAX_AHEAD;
                if !ahead && now >= next_send {
                    break;
                }
                let until = if ahead {
                    now + BEAT
                } else {
                    next_send.min(now + BEAT)
                };
                tokio::time::sleep_until(until).await;
                if beat(&log, &mut job, &mut last).await {
                    break 'job Ok("cancelled");
                }
            }
            next_send = tokio::time::Instant::now().max(next_send) + pace;
            event.extensions.insert(
                REPLAY_EXTENSION.into(),
                switchyard_core::ExtValue::String(job.id.clone()),
            );
            if let Err(e) = engine
                .hand_to_trigger(&id, &job.broker, r.offset, &event, &job.id)
                .await
            {
                break 'job Err(e.to_string());
            }
            job.sent += 1;
        }
        if cancelled(&log, &job).await {
            break 'job Ok("cancelled");
        }
    };
    match outcome {
        Ok(state) => job.state = state.into(),
        Err(e) => {
            tracing::error!(job = %job.id, trigger = %id, error = %e, "a replay failed");
            job.state = "failed".into();
            job.error = Some(e);
        }
    }
    job.updated_ms = records::now_ms();
    tracing::info!(job = %job.id, trigger = %id, state = %job.state, sent = job.sent, "replay ended");
    if let Err(e) = store(&log, &job, None).await {
        tracing::warn!(job = %job.id, error = %e, "cannot store a replay's end");
    }
}

/// Whether someone asked to cancel `job`.
async fn cancelled(log: &Arc<dyn EventLog>, job: &Job) -> bool {
    exists(log, cancel_key(&job.namespace, &job.id))
        .await
        .unwrap_or(false)
}

async fn list(State(api): State<Arc<Api>>, Path(ns): Path<String>) -> Response {
    let log = api.engine.log();
    let from = format!("{PREFIX}{ns}/").into_bytes();
    let mut to = from.clone();
    to.push(0xff);
    match blocking(&log, move |log| {
        // The newest thousand (ids grow with time).
        log.scan_last(Table::SourceState, &from, &to, 1000)
    })
    .await
    {
        Ok(found) => {
            let items: Vec<Job> = found
                .iter()
                .filter_map(|(_, v)| serde_json::from_slice::<Job>(v).ok())
                .map(shown)
                .collect();
            answer(StatusCode::OK, &json!({ "items": items }))
        }
        Err(e) => unavailable(&e),
    }
}

async fn show(State(api): State<Arc<Api>>, Path((ns, id)): Path<(String, String)>) -> Response {
    match load(&api.engine.log(), &ns, &id).await {
        Ok(Some(job)) => answer(StatusCode::OK, &job),
        Ok(None) => Problem::not_found(format!("no replay {id} in namespace {ns}")).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// `DELETE …/replays/{id}`: asks a running job to stop (it stops within a second); a job that
/// ended is left as it is.
async fn cancel(
    State(api): State<Arc<Api>>,
    Path((ns, id)): Path<(String, String)>,
    caller: CallerExt,
) -> Response {
    let log = api.engine.log();
    let mut job = match load(&log, &ns, &id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            return Problem::not_found(format!("no replay {id} in namespace {ns}")).into_response();
        }
        Err(e) => return unavailable(&e),
    };
    // An `interrupted` one may only look so (its process is slow to write): asked too.
    if matches!(job.state.as_str(), "running" | "interrupted") {
        let audit = AuditEntry::now(
            who(&caller),
            "replay-cancel",
            (&ns, job.broker.split_once('/').map_or("", |(_, b)| b)),
            json!({"trigger": job.trigger, "job": job.id}),
            0,
        );
        let ops = vec![
            WriteOp::Put {
                table: Table::SourceState,
                key: cancel_key(&ns, &id),
                value: b"{}".to_vec(),
            },
            audit.op(),
        ];
        if let Err(e) = log.write(ops).await {
            return unavailable(&e);
        }
        audit.log();
        job.state = "cancelling".into();
    }
    answer(StatusCode::OK, &job)
}

impl Engine {
    /// Events trigger `id` of `broker` has waiting (all of them on the embedded engine: its
    /// lag; on JetStream, its redrives and replays not yet delivered).
    async fn replays_waiting(&self, id: &TriggerId, broker: &str) -> u64 {
        match self {
            Engine::Embedded { running, .. } => running
                .get(broker, id.name())
                .map_or(0, |s| u64::try_from(s.lag()).unwrap_or(0)),
            Engine::JetStream { log, .. } => {
                use futures_util::StreamExt;
                let names = switchyard_broker::jetstream::Names::of(broker);
                let Ok(stream) = log.context().get_stream(&names.redrive_stream).await else {
                    return 0;
                };
                let subject = names.redrive_subject(id.name());
                let Ok(mut subjects) = stream.info_with_subjects(&subject).await else {
                    return 0;
                };
                let mut n = 0;
                while let Some(Ok((_, count))) = subjects.next().await {
                    n += count as u64;
                }
                n
            }
        }
    }

    /// Hands `event` (stored at `offset`) to trigger `id` alone, as a redrive: a retry record
    /// due now, or a message on its redrive subject (stored once per job and offset).
    async fn hand_to_trigger(
        &self,
        id: &TriggerId,
        broker: &str,
        offset: u64,
        event: &CloudEvent,
        job: &str,
    ) -> Result<(), LogError> {
        match self {
            Engine::Embedded { running, log } => {
                let Some(source) = running.get(broker, id.name()) else {
                    return Err(LogError::Storage(format!(
                        "Trigger {id} stopped running (a reload removed or is changing it)"
                    )));
                };
                let entry = records::RetryEntry {
                    offset,
                    event: records::encode_event(event),
                    attempts: Vec::new(),
                    uri: None,
                };
                log.write(vec![WriteOp::Put {
                    table: Table::Retries,
                    key: records::retry_key(
                        source.retry_prefix(),
                        records::now_ms(),
                        records::new_id(),
                    ),
                    value: serde_json::to_vec(&entry).unwrap_or_default(),
                }])
                .await?;
                source.retry_scheduled();
                Ok(())
            }
            Engine::JetStream { log, .. } => log
                .publish_to_trigger(
                    broker,
                    id.name(),
                    format!("replay:{job}:{offset}"),
                    switchyard_core::store::encode(event),
                    offset,
                    None,
                )
                .await
                .map(drop),
        }
    }
}
