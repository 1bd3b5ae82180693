//! Resources with status, read like `kubectl get` (spec/management-api.md, "Resources"):
//! `GET /api/v1/namespaces/{ns}/{brokers|triggers|sources}[/{name}]` answers the configuration
//! in force with Knative-style conditions and live figures; `POST …/triggers/{name}/pause`
//! and `…/resume` pause and resume a trigger (`dispatch/pause.rs`), audited. The same on both
//! engines; the figures come from `figures.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use switchyard_broker::audit::AuditEntry;
use switchyard_broker::problem::Problem;
use switchyard_core::config::Config;
use switchyard_core::id::TriggerId;
use switchyard_core::kinds::{Group, Resource};
use switchyard_core::resources::{Target, Trigger};

use super::figures::{DeadLetterCounts, Engine};
use super::{CallerExt, json as answer, who};
use crate::dispatch::down::Down;
use crate::dispatch::health::Health;
use crate::dispatch::pause::{self, Pause, PauseRecord};

/// The configuration in force, replaced by each reload.
pub type ConfigView = Arc<RwLock<Arc<Config>>>;

/// Which sources run, and why the others do not (`Kind namespace/name` → error), as the
/// sources keep it.
#[derive(Debug, Default)]
pub struct SourceStatus {
    /// The sources running.
    pub running: HashSet<String>,
    /// Sources that could not start, with the error.
    pub failed: HashMap<String, String>,
}

/// [`SourceStatus`], shared with the sources.
pub type SourcesView = Arc<RwLock<SourceStatus>>;

struct Api {
    config: ConfigView,
    engine: Engine,
    sources: SourcesView,
}

impl Api {
    fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The routes, to merge into the server's router.
pub fn routes(config: ConfigView, engine: Engine, sources: SourcesView) -> Router {
    const NS: &str = "/api/v1/namespaces/{namespace}";
    Router::new()
        .route(&format!("{NS}/brokers"), get(list_brokers))
        .route(&format!("{NS}/brokers/{{broker}}"), get(one_broker))
        .route(&format!("{NS}/triggers"), get(list_triggers))
        .route(&format!("{NS}/triggers/{{trigger}}"), get(one_trigger))
        .route(
            &format!("{NS}/triggers/{{trigger}}/pause"),
            post(pause_trigger),
        )
        .route(
            &format!("{NS}/triggers/{{trigger}}/resume"),
            post(resume_trigger),
        )
        .route(
            &format!("{NS}/triggers/{{trigger}}/backlog"),
            get(trigger_backlog),
        )
        .route(&format!("{NS}/sources"), get(list_sources))
        .route(&format!("{NS}/sources/{{source}}"), get(one_source))
        .with_state(Arc::new(Api {
            config,
            engine,
            sources,
        }))
}

/// A Knative condition.
fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }});
    if !reason.is_empty() {
        c["reason"] = reason.into();
    }
    if !message.is_empty() {
        c["message"] = message.into();
    }
    c
}

fn list(items: Vec<Value>) -> Response {
    answer(StatusCode::OK, &json!({ "items": items }))
}

fn not_found(kind: &str, ns: &str, name: &str) -> Response {
    Problem::not_found(format!(
        "no {kind} {ns}/{name} in the configuration in force"
    ))
    .into_response()
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    Problem::overloaded(&format!("the store did not answer: {e}")).into_response()
}

// ---- Brokers --------------------------------------------------------------------------

async fn broker_item(api: &Api, config: &Config, ns: &str, name: &str, host: &str) -> Value {
    let key = (ns.to_owned(), name.to_owned());
    let mut item = config
        .brokers
        .get(&key)
        .map(|b| Resource::Broker(b.clone()).to_manifest())
        .unwrap_or_default();
    let id = switchyard_core::id::join(ns, name);
    let triggers: Vec<&String> = config
        .triggers
        .iter()
        .filter(|((tns, _), t)| tns == ns && t.spec.broker == name)
        .map(|((_, n), _)| n)
        .collect();
    let mut status = json!({
        "conditions": [condition("Ready", true, "", "")],
        "address": {"url": format!("http://{host}/{ns}/{name}")},
        "triggers": triggers.len(),
    });
    match api.engine.stored(&id).await {
        Ok(stored) => status["stored"] = json!(stored),
        Err(e) => status["storedError"] = e.to_string().into(),
    }
    if let Ok((counts, capped)) = api.engine.dead_letters(&id).await {
        status["deadLetters"] = counts.values().sum::<u64>().into();
        if capped {
            status["deadLettersCapped"] = true.into();
        }
    }
    item["status"] = status;
    item
}

fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned()
}

async fn list_brokers(
    State(api): State<Arc<Api>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
) -> Response {
    let config = api.config();
    let mut items = Vec::new();
    for (bns, name) in config.brokers.keys().filter(|(bns, _)| *bns == ns) {
        items.push(broker_item(&api, &config, bns, name, &host(&headers)).await);
    }
    list(items)
}

async fn one_broker(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let config = api.config();
    if !config.brokers.contains_key(&(ns.clone(), name.clone())) {
        return not_found("Broker", &ns, &name);
    }
    answer(
        StatusCode::OK,
        &broker_item(&api, &config, &ns, &name, &host(&headers)).await,
    )
}

// ---- Triggers -------------------------------------------------------------------------

/// Where a destination of trigger `t` resolves to, as its status shows it.
fn resolved(config: &Config, ns: &str, dest: &switchyard_core::resources::Destination) -> String {
    match config.resolve(ns, dest) {
        Ok(Target::Url(url)) => url,
        Ok(Target::Broker { namespace, name }) => format!("broker:{namespace}/{name}"),
        Ok(Target::Stream {
            kind,
            namespace,
            name,
        }) => crate::streams::address(&kind, &namespace, &name),
        Err(e) => format!("(unresolved: {e})"),
    }
}

/// Dead-letter counts by broker, read once per request.
type Counts = BTreeMap<String, Option<DeadLetterCounts>>;

async fn trigger_item(
    api: &Api,
    config: &Config,
    (ns, name): (&str, &str),
    t: &Trigger,
    counts: &mut Counts,
) -> Value {
    let mut item = Resource::Trigger(t.clone()).to_manifest();
    let id = TriggerId::new(ns, name);
    let broker = switchyard_core::id::join(ns, &t.spec.broker);
    let broker_exists = config
        .brokers
        .contains_key(&(ns.to_owned(), t.spec.broker.clone()));
    let runs = api.engine.runs(&id, &broker);
    let health = Health::of(&id).recent();
    let paused = Pause::of(&id).get();
    let down = Down::of(&id).status();

    let subscriber = resolved(config, ns, &t.spec.subscriber);
    let mut conditions = vec![
        if broker_exists {
            condition("BrokerReady", true, "", "")
        } else {
            condition(
                "BrokerReady",
                false,
                "BrokerDoesNotExist",
                &format!("Broker {broker} is not in the configuration"),
            )
        },
        condition("SubscriberResolved", true, "", &subscriber),
    ];
    let (ready, reason, message) = if !broker_exists {
        (
            false,
            "BrokerDoesNotExist".to_owned(),
            format!("Broker {broker} is not in the configuration"),
        )
    } else if !runs {
        (
            false,
            "NotRunning".to_owned(),
            "it could not start; /readyz and the log say why, and a reload tries again".to_owned(),
        )
    } else if let Some(p) = &paused {
        (
            false,
            "Paused".to_owned(),
            format!("paused since {} by {}", p.since, p.by),
        )
    } else if let Some(down) = &down {
        (
            false,
            "SubscriberDown".to_owned(),
            format!(
                "its connections are refused ({} in a row, since {}): its events are held, not counted against retry, and it is probed one attempt at a time",
                down.connection_failures, down.since
            ),
        )
    } else if health.failing {
        let last = health
            .last_error
            .as_ref()
            .map_or_else(String::new, |e| e.error.clone());
        (false, "SubscriberFailing".to_owned(), last)
    } else {
        (true, String::new(), String::new())
    };
    conditions.insert(0, condition("Ready", ready, &reason, &message));

    let mut status = json!({
        "conditions": conditions,
        "subscriberUri": subscriber,
        "paused": paused.is_some(),
        "deliveries": health,
    });
    if let Some(p) = paused {
        status["pausedSince"] = p.since.into();
        status["pausedBy"] = p.by.into();
    }
    if let Some(down) = down {
        status["subscriberDown"] = serde_json::to_value(down).unwrap_or_default();
    }
    if let Some(dls) = t
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.dead_letter_sink.as_ref())
    {
        status["deadLetterSinkUri"] = resolved(config, ns, dls).into();
    }
    let backlog = api.engine.backlog(&id, &broker).await;
    if let Some(lag) = backlog.lag {
        status["lag"] = lag.into();
    }
    if let Some(age) = backlog.oldest_undelivered_age_ms {
        status["oldestUndeliveredAgeMs"] = age.into();
    }
    if !counts.contains_key(&broker) {
        let read = api.engine.dead_letters(&broker).await.ok();
        counts.insert(broker.clone(), read);
    }
    if let Some(Some((by_trigger, capped))) = counts.get(&broker) {
        status["deadLetters"] = by_trigger.get(name).copied().unwrap_or(0).into();
        if *capped {
            status["deadLettersCapped"] = true.into();
        }
    }
    item["status"] = status;
    item
}

async fn list_triggers(State(api): State<Arc<Api>>, Path(ns): Path<String>) -> Response {
    let config = api.config();
    let mut counts = Counts::new();
    let mut items = Vec::new();
    for ((tns, name), t) in config.triggers.iter().filter(|((tns, _), _)| *tns == ns) {
        items.push(trigger_item(&api, &config, (tns, name), t, &mut counts).await);
    }
    list(items)
}

async fn one_trigger(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let config = api.config();
    let Some(t) = config.triggers.get(&(ns.clone(), name.clone())) else {
        return not_found("Trigger", &ns, &name);
    };
    let item = trigger_item(&api, &config, (&ns, &name), t, &mut Counts::new()).await;
    answer(StatusCode::OK, &item)
}

/// What the trigger owes its subscriber, and nothing else: small and cheap enough for an
/// autoscaler to poll (KEDA's metrics-api scaler, `valueLocation: lag`).
async fn trigger_backlog(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let config = api.config();
    let Some(t) = config.triggers.get(&(ns.clone(), name.clone())) else {
        return not_found("Trigger", &ns, &name);
    };
    let id = TriggerId::new(&ns, &name);
    let broker = switchyard_core::id::join(&ns, &t.spec.broker);
    let backlog = api.engine.backlog(&id, &broker).await;
    answer(
        StatusCode::OK,
        &json!({
            "namespace": ns,
            "trigger": name,
            "broker": t.spec.broker,
            "running": api.engine.runs(&id, &broker),
            "lag": backlog.lag.unwrap_or(0),
            "oldestUndeliveredAgeSeconds": backlog.oldest_undelivered_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        }),
    )
}

async fn pause_trigger(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    caller: CallerExt,
) -> Response {
    set_paused(&api, &ns, &name, &caller, true).await
}

async fn resume_trigger(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    caller: CallerExt,
) -> Response {
    set_paused(&api, &ns, &name, &caller, false).await
}

/// Pauses or resumes trigger `ns/name`, answering with the trigger. Pausing a paused trigger
/// (or resuming a running one) changes nothing and is not audited.
async fn set_paused(api: &Api, ns: &str, name: &str, caller: &CallerExt, paused: bool) -> Response {
    let config = api.config();
    let Some(t) = config.triggers.get(&(ns.to_owned(), name.to_owned())) else {
        return not_found("Trigger", ns, name);
    };
    let id = TriggerId::new(ns, name);
    if Pause::of(&id).is_paused() != paused {
        let by = who(caller);
        let record = paused.then(|| PauseRecord {
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            by: by.clone(),
        });
        let audit = AuditEntry::now(
            by,
            if paused { "pause" } else { "resume" },
            (ns, &t.spec.broker),
            json!({ "trigger": name }),
            1,
        );
        if let Err(e) = pause::set(&api.engine.log(), &id, record, Some(audit.op())).await {
            return unavailable(&e);
        }
        audit.log();
    }
    let item = trigger_item(api, &config, (ns, name), t, &mut Counts::new()).await;
    answer(StatusCode::OK, &item)
}

// ---- Sources --------------------------------------------------------------------------

fn source_item(
    api: &Api,
    config: &Config,
    kind: &str,
    ns: &str,
    name: &str,
    r: &Resource,
) -> Value {
    let mut item = r.to_manifest();
    let named = format!("{kind} {ns}/{name}");
    let not_ready = config
        .not_ready
        .iter()
        .find(|e| e.resource.as_deref() == Some(named.as_str()));
    let status = api
        .sources
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ready = if let Some(e) = not_ready {
        let reason = if e.message.contains("does not exist") {
            "BrokerDoesNotExist"
        } else {
            "NotReady"
        };
        condition("Ready", false, reason, &e.message)
    } else if let Some(error) = status.failed.get(&named) {
        condition("Ready", false, "StartFailed", error)
    } else if status.running.contains(&named) {
        condition("Ready", true, "", "")
    } else {
        condition(
            "Ready",
            false,
            "NotRunning",
            "it does not run on this server",
        )
    };
    let recent = Health::of_source(&format!("{ns}/{name}")).recent();
    item["status"] = json!({
        "conditions": [ready],
        "events": {
            "windowSeconds": recent.window_seconds,
            "stored": recent.delivered,
            "storedPerSecond": recent.delivered_per_second,
            "failed": recent.failed,
            "lastStored": recent.last_delivered,
            "lastError": recent.last_error,
        },
    });
    item
}

fn sources_in(config: &Config, ns: &str) -> Vec<(&'static str, String, Resource)> {
    Resource::all_in(config, Group::Source)
        .into_iter()
        .filter(|(_, (sns, _), _)| sns == ns)
        .map(|(kind, (_, name), r)| (kind, name, r))
        .collect()
}

async fn list_sources(State(api): State<Arc<Api>>, Path(ns): Path<String>) -> Response {
    let config = api.config();
    let items = sources_in(&config, &ns)
        .iter()
        .map(|(kind, name, r)| source_item(&api, &config, kind, &ns, name, r))
        .collect();
    list(items)
}

async fn one_source(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let config = api.config();
    match sources_in(&config, &ns)
        .into_iter()
        .find(|(_, n, _)| *n == name)
    {
        Some((kind, name, r)) => answer(
            StatusCode::OK,
            &source_item(&api, &config, kind, &ns, &name, &r),
        ),
        None => not_found("source", &ns, &name),
    }
}
