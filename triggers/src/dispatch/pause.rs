//! Paused triggers. A paused trigger takes no more work: the events routed to it and its
//! retries wait (in its queue and retry records, or in its JetStream consumer), nothing is
//! attempted, dropped or dead-lettered, and the attempts in flight when it was paused finish.
//! Resumed, it goes on where it was, in order. The pause is kept in the store (table
//! `SourceState`, key `pause/{namespace}/{name}`), so it holds across restarts, and on the
//! JetStream engine every replica follows it ([`follow`]). The flags are the process's: two
//! servers run in one process (a test) share them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_broker::log::{EventLog, LogError, Table, WriteOp, blocking};
use switchyard_core::id::TriggerId;
use tokio::sync::watch;

use super::lock;

/// How often a replica reads the pauses again (the JetStream engine: another replica may
/// have paused or resumed a trigger).
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

const PREFIX: &str = "pause/";

/// Whether one trigger is paused.
#[derive(Debug)]
pub struct Pause(watch::Sender<Option<PauseRecord>>);

/// What the store keeps of a pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseRecord {
    /// When it was paused (RFC 3339).
    pub since: String,
    /// Who paused it.
    pub by: String,
}

/// Serialises the changes and the reads of the store's pauses, so that a pause and a resume
/// (or a read racing either) leave the store and the flags agreeing.
static GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn all() -> &'static Mutex<HashMap<TriggerId, Arc<Pause>>> {
    static ALL: OnceLock<Mutex<HashMap<TriggerId, Arc<Pause>>>> = OnceLock::new();
    ALL.get_or_init(Mutex::default)
}

impl Pause {
    /// The pause of trigger `id` (kept for the life of the process).
    pub fn of(id: &TriggerId) -> Arc<Pause> {
        let mut all = lock(all());
        Arc::clone(
            all.entry(id.clone())
                .or_insert_with(|| Arc::new(Pause(watch::channel(None).0))),
        )
    }

    /// The pause in force, if the trigger is paused.
    pub fn get(&self) -> Option<PauseRecord> {
        self.0.borrow().clone()
    }

    /// Whether the trigger is paused.
    pub fn is_paused(&self) -> bool {
        self.0.borrow().is_some()
    }

    fn set(&self, record: Option<PauseRecord>) {
        self.0.send_if_modified(|now| {
            let changed = *now != record;
            *now = record;
            changed
        });
    }

    /// Resolves once the trigger is not paused.
    pub async fn resumed(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(Option::is_none).await;
    }
}

/// The store key of trigger `id`'s pause.
fn key(id: &TriggerId) -> Vec<u8> {
    format!("{PREFIX}{id}").into_bytes()
}

/// Pauses trigger `id` (`record` says since when and by whom) or resumes it (`None`): stored
/// first (with `audit`, in the same write), then in force.
pub async fn set(
    log: &Arc<dyn EventLog>,
    id: &TriggerId,
    record: Option<PauseRecord>,
    audit: Option<WriteOp>,
) -> Result<(), LogError> {
    let _gate = GATE.lock().await;
    let mut ops = vec![match &record {
        Some(r) => WriteOp::Put {
            table: Table::SourceState,
            key: key(id),
            value: serde_json::to_vec(r).unwrap_or_default(),
        },
        None => WriteOp::Delete {
            table: Table::SourceState,
            key: key(id),
        },
    }];
    ops.extend(audit);
    log.write(ops).await?;
    Pause::of(id).set(record);
    Ok(())
}

/// Reads every pause from the store and puts them in force (and lifts those no longer
/// stored). At start, before the triggers take work, and then every [`FOLLOW_INTERVAL`].
pub async fn load(log: &Arc<dyn EventLog>) -> Result<(), LogError> {
    let _gate = GATE.lock().await;
    let stored = blocking(log, |log| {
        let mut to = PREFIX.as_bytes().to_vec();
        to.push(0xff);
        log.scan(Table::SourceState, PREFIX.as_bytes(), &to, usize::MAX)
    })
    .await?;
    let mut paused = HashSet::new();
    for (k, v) in stored {
        let Some(id) = std::str::from_utf8(&k)
            .ok()
            .and_then(|k| k.strip_prefix(PREFIX))
            .and_then(|id| TriggerId::parse(id).ok())
        else {
            continue;
        };
        let record = serde_json::from_slice(&v).unwrap_or(PauseRecord {
            since: String::new(),
            by: String::new(),
        });
        Pause::of(&id).set(Some(record));
        paused.insert(id);
    }
    let known: Vec<(TriggerId, Arc<Pause>)> = lock(all())
        .iter()
        .map(|(id, p)| (id.clone(), Arc::clone(p)))
        .collect();
    for (id, pause) in known {
        if !paused.contains(&id) {
            pause.set(None);
        }
    }
    Ok(())
}

/// Forgets trigger `id`'s pause (it was removed from the configuration).
pub async fn forget(log: &Arc<dyn EventLog>, id: &TriggerId) -> Result<(), LogError> {
    if !Pause::of(id).is_paused() {
        return Ok(());
    }
    set(log, id, None, None).await
}

/// Reads the pauses again every [`FOLLOW_INTERVAL`] until `stop` turns true, so a replica
/// follows a pause or a resume another replica stored.
pub async fn follow(log: Arc<dyn EventLog>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = load(&log).await {
            tracing::debug!(error = %e, "cannot read the paused triggers; trying again");
        }
    }
}
