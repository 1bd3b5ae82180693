//! The audit log: every redrive, purge and deletion of dead letters — who asked, what they
//! selected, how many it touched, when — kept in the store (table `audit`) in the same
//! transaction as the change it records, and read with
//! `GET /api/v1/namespaces/{namespace}/audit`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::log::{Table, WriteOp, blocking};
use crate::problem::Problem;

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When (RFC 3339, milliseconds).
    pub time: String,
    /// The caller's subject, or `anonymous` when authentication is off.
    pub who: String,
    /// `redrive`, `purge` or `delete`.
    pub action: String,
    /// The namespace.
    pub namespace: String,
    /// The broker.
    pub broker: String,
    /// What was asked for: the ids, or the filter.
    pub selection: serde_json::Value,
    /// How many dead letters it touched.
    pub count: usize,
    /// Where a redrive sent them, when not to the trigger's subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Distinguishes entries written in the same millisecond.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// This process, among the replicas writing one audit log: its id and the time it first
/// wrote an entry.
fn process_tag() -> u64 {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (u64::from(std::process::id()) << 32) | u64::from(nanos)
    })
}

/// The time (ms since the epoch) in an audit entry's key, and the length of the key's
/// namespace prefix (its 0 byte included): keys are `namespace 0 millis sequence process`, so a
/// namespace's entries are in time order.
pub(crate) fn key_time(key: &[u8]) -> Option<(usize, u64)> {
    let zero = key.iter().position(|b| *b == 0)?;
    let millis: [u8; 8] = key.get(zero + 1..zero + 9)?.try_into().ok()?;
    Some((zero + 1, u64::from_be_bytes(millis)))
}

fn key_prefix(namespace: &str) -> Vec<u8> {
    let mut key = namespace.as_bytes().to_vec();
    key.push(0);
    key
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn now(
        who: String,
        action: &str,
        (namespace, broker): (&str, &str),
        selection: serde_json::Value,
        count: usize,
    ) -> AuditEntry {
        let mut selection = selection;
        if let Some(fields) = selection.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        AuditEntry {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            who,
            action: action.to_owned(),
            namespace: namespace.to_owned(),
            broker: broker.to_owned(),
            selection,
            count,
            uri: None,
        }
    }

    /// The write that records it, to go in the same [`crate::log::EventLog::write`] as the
    /// (first part of the) change; [`AuditEntry::log`] once that write succeeded.
    pub fn op(&self) -> WriteOp {
        self.op_at(self.new_key())
    }

    /// A key of its own for this entry, for a change made in several writes: each write puts
    /// the entry again under the same key with the count so far ([`AuditEntry::op_at`]), so
    /// the entry always says what was done, even when a later write fails.
    pub fn new_key(&self) -> Vec<u8> {
        let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let mut key = key_prefix(&self.namespace);
        key.extend_from_slice(&millis.to_be_bytes());
        key.extend_from_slice(&SEQUENCE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        // Replicas sharing one audit log (the JetStream engine) count from 0 each: the
        // process tells their entries of the same millisecond apart.
        key.extend_from_slice(&process_tag().to_be_bytes());
        key
    }

    /// The write that records it under `key`.
    pub fn op_at(&self, key: Vec<u8>) -> WriteOp {
        WriteOp::Put {
            table: Table::Audit,
            key,
            value: serde_json::to_vec(self).unwrap_or_default(),
        }
    }

    /// The log line (target `switchyard::audit`), for after the entry is stored.
    pub fn log(&self) {
        tracing::info!(
            target: "switchyard::audit",
            who = %self.who,
            action = %self.action,
            namespace = %self.namespace,
            broker = %self.broker,
            count = self.count,
            uri = self.uri.as_deref().unwrap_or(""),
            selection = %self.selection,
            "audit"
        );
    }
}

/// The query of `GET …/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// The most entries (default 100, at most 1000), newest last.
    limit: Option<usize>,
}

/// `GET /api/v1/namespaces/{namespace}/audit`: the namespace's entries, oldest first (the
/// last `limit` of them).
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    Path(namespace): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Problem> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let from = key_prefix(&namespace);
    let mut to = namespace.as_bytes().to_vec();
    to.push(1);
    // The newest `limit`, read without the older ones.
    let rows = blocking(&app.log, move |log| {
        log.scan_last(Table::Audit, &from, &to, limit)
    })
    .await
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "urn:switchyard:problem:storage",
            "storage failure",
            e.to_string(),
        )
    })?;
    let items: Vec<AuditEntry> = rows
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap_or_default();
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
