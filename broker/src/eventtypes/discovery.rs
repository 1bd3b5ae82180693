//! The event types brokers in `record` mode discover: counts per (broker, type, source), the
//! first sighting persisted at once (store table `eventtypes`), counts flushed periodically,
//! and the listing the API serves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;
use switchyard_core::id::BrokerId;

use crate::log::{EventLog, LogError, Table, WriteOp};

use super::registry::Registry;

/// Counts of one (type, source) a broker stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// When it was first seen (RFC 3339).
    pub first_seen: String,
    /// When it was last seen (RFC 3339).
    pub last_seen: String,
    /// How many events of it were stored.
    pub count: u64,
    #[serde(skip)]
    dirty: bool,
}

/// (broker id, type, source).
pub type SeenKey = (String, String, String);

/// The (type, source) pairs stored by brokers in `record` mode (from ingress, sources and replies), kept in memory and
/// persisted in the store's `EventTypes` table: a new pair at once, counts every few seconds
/// and at shutdown.
///
/// Shared by several replicas (the JetStream engine, [`Discovery::shared`]), it keeps only
/// what this replica saw since its last flush, and the store adds each flush into the totals
/// ([`Seen::add`]): the listing reads the store's totals plus what is not flushed yet.
///
/// A broker records at most [`MAX_PAIRS_PER_BROKER`] pairs, each of a type and a source of at
/// most [`MAX_RECORDED_BYTES`]: they come from producers, and one that sends a new source with
/// every event would otherwise grow this map and the table without end. Past either, events
/// are stored and delivered as ever but their pair is not recorded (a warning says so, once
/// per broker and run); known pairs go on counting.
#[derive(Debug, Default)]
pub struct Discovery {
    inner: Mutex<Inner>,
    shared: bool,
}

/// Most (type, source) pairs a broker in `record` mode records.
pub const MAX_PAIRS_PER_BROKER: usize = 1_000;
/// Longest type or source, in bytes, whose pair is recorded.
pub const MAX_RECORDED_BYTES: usize = 1_024;

#[derive(Debug, Default)]
struct Inner {
    /// The counts: every pair recorded, or (shared) what was seen since the last flush.
    seen: BTreeMap<SeenKey, Seen>,
    /// Shared only: every pair recorded, in the store at start or by this replica since
    /// (`seen` forgets them at each flush).
    known: HashSet<SeenKey>,
    /// Pairs each broker has recorded, for the cap.
    per_broker: HashMap<String, usize>,
    /// Brokers told, in this run, that a pair was not recorded.
    warned: HashSet<String>,
}

impl Inner {
    fn counted(seen: BTreeMap<SeenKey, Seen>, known: HashSet<SeenKey>) -> Inner {
        let mut per_broker: HashMap<String, usize> = HashMap::new();
        for (b, _, _) in seen.keys().chain(known.iter()) {
            *per_broker.entry(b.clone()).or_default() += 1;
        }
        Inner {
            seen,
            known,
            per_broker,
            warned: HashSet::new(),
        }
    }

    /// Whether the pair of `key` is recorded, or may be now (it is then counted as recorded).
    fn admit(&mut self, shared: bool, key: &SeenKey) -> bool {
        let known = if shared {
            self.known.contains(key)
        } else {
            self.seen.contains_key(key)
        };
        if known {
            return true;
        }
        let (broker, ty, source) = key;
        let recorded = self.per_broker.get(broker).copied().unwrap_or(0);
        if recorded >= MAX_PAIRS_PER_BROKER
            || ty.len() > MAX_RECORDED_BYTES
            || source.len() > MAX_RECORDED_BYTES
        {
            if self.warned.insert(broker.clone()) {
                tracing::warn!(
                    broker = %broker,
                    max_pairs = MAX_PAIRS_PER_BROKER,
                    max_bytes = MAX_RECORDED_BYTES,
                    "an event type (type and source) is not recorded: the broker has recorded as many as it may, or they are too long; such events are stored but not recorded"
                );
            }
            return false;
        }
        *self.per_broker.entry(broker.clone()).or_default() += 1;
        if shared {
            self.known.insert(key.clone());
        }
        true
    }
}

impl Seen {
    /// Adds `more` (what was seen since) into these counts: the counts add, the first and
    /// last sightings widen.
    pub fn add(&mut self, more: &Seen) {
        self.count += more.count;
        if more.first_seen < self.first_seen {
            self.first_seen.clone_from(&more.first_seen);
        }
        if more.last_seen > self.last_seen {
            self.last_seen.clone_from(&more.last_seen);
        }
    }
}

/// A stored record's key, as (broker, type, source).
fn parse_key(key: &[u8]) -> Option<SeenKey> {
    let text = String::from_utf8_lossy(key);
    let mut parts = text.splitn(3, '\0');
    let (b, t, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some((b.to_owned(), t.to_owned(), s.to_owned()))
}

fn seen_key(key: &SeenKey) -> Vec<u8> {
    format!("{}\0{}\0{}", key.0, key.1, key.2).into_bytes()
}

fn seen_put(key: &SeenKey, seen: &Seen) -> WriteOp {
    WriteOp::Put {
        table: Table::EventTypes,
        key: seen_key(key),
        value: serde_json::to_vec(seen).unwrap_or_default(),
    }
}

/// Every record of the store's `EventTypes` table (unreadable ones skipped, with a warning).
fn stored(log: &dyn EventLog) -> Result<BTreeMap<SeenKey, Seen>, LogError> {
    let mut seen = BTreeMap::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let batch = log.scan(Table::EventTypes, &from, &[0xff], 1000)?;
        let Some((last, _)) = batch.last() else { break };
        from = last.clone();
        from.push(0);
        for (k, v) in &batch {
            let Some(key) = parse_key(k) else {
                continue;
            };
            match serde_json::from_slice::<Seen>(v) {
                Ok(record) => {
                    seen.insert(key, record);
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable event type record"),
            }
        }
    }
    Ok(seen)
}

impl Discovery {
    /// A discovery several replicas share through the store (module docs): it starts empty
    /// and each flush writes what was seen since the last, for the store to add up.
    pub fn shared() -> Discovery {
        Discovery {
            inner: Mutex::default(),
            shared: true,
        }
    }

    /// A [`Discovery::shared`] one that counts the pairs the store already holds as recorded,
    /// so the cap holds across restarts (replicas started together may each record up to the
    /// cap of new pairs before they see each other's).
    pub fn load_shared(log: &dyn EventLog) -> Result<Discovery, LogError> {
        let known = stored(log)?.into_keys().collect();
        Ok(Discovery {
            inner: Mutex::new(Inner::counted(BTreeMap::new(), known)),
            shared: true,
        })
    }

    /// Whether the totals are the store's ([`Discovery::shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Every (broker, type, source) the store holds with `add`ed counts, and what this
    /// replica has not flushed yet: the totals of a [`Discovery::shared`] one.
    pub fn totals(&self, log: &dyn EventLog) -> Result<Vec<(SeenKey, Seen)>, LogError> {
        let mut totals = stored(log)?;
        for (key, unflushed) in self.snapshot() {
            totals
                .entry(key)
                .and_modify(|t: &mut Seen| t.add(&unflushed))
                .or_insert(unflushed);
        }
        Ok(totals.into_iter().collect())
    }

    /// Loads what earlier runs recorded.
    pub fn load(log: &dyn EventLog) -> Result<Discovery, LogError> {
        Ok(Discovery {
            inner: Mutex::new(Inner::counted(stored(log)?, HashSet::new())),
            shared: false,
        })
    }

    /// Counts the stored events of a request; returns the writes that persist pairs seen for
    /// the first time.
    pub fn observe<'a>(
        &self,
        broker: &str,
        events: impl Iterator<Item = (&'a str, &'a str)>,
        now: &str,
    ) -> Vec<WriteOp> {
        let mut ops = Vec::new();
        let Ok(mut inner) = self.inner.lock() else {
            return ops;
        };
        let inner = &mut *inner;
        for (ty, source) in events {
            let key = (broker.to_owned(), ty.to_owned(), source.to_owned());
            if !inner.admit(self.shared, &key) {
                continue;
            }
            match inner.seen.get_mut(&key) {
                Some(s) => {
                    s.last_seen = now.to_owned();
                    s.count += 1;
                    s.dirty = true;
                }
                None => {
                    let s = Seen {
                        first_seen: now.to_owned(),
                        last_seen: now.to_owned(),
                        count: 1,
                        // Shared, the next flush writes it (the store adds it up); otherwise
                        // it is written at once, and again by the next flush should that
                        // write fail.
                        dirty: true,
                    };
                    if !self.shared {
                        ops.push(seen_put(&key, &s));
                    }
                    inner.seen.insert(key, s);
                }
            }
        }
        ops
    }

    /// The writes that persist every count changed since the last flush.
    pub fn flush(&self) -> Vec<WriteOp> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        let seen = &mut inner.seen;
        if self.shared {
            // What was seen since the last flush, handed to the store to add; forgotten here.
            return std::mem::take(seen)
                .iter()
                .map(|(k, s)| seen_put(k, s))
                .collect();
        }
        seen.iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(k, s)| {
                s.dirty = false;
                seen_put(k, s)
            })
            .collect()
    }

    /// Everything seen, as (broker, type, source, counts).
    pub fn snapshot(&self) -> Vec<(SeenKey, Seen)> {
        self.inner
            .lock()
            .map(|i| i.seen.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// One entry of the discovery API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// The EventType's namespace (for a discovered one, its broker's).
    pub namespace: String,
    /// The EventType's name; `null` for a discovered type.
    pub name: Option<String>,
    /// The broker, `namespace/name`.
    pub broker: Option<String>,
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The source (a configured one may be a prefix ending in `*`).
    pub source: Option<String>,
    /// The schema URI.
    pub schema: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// `config` or `discovered`.
    pub origin: &'static str,
    /// First stored event of the type (record mode only).
    pub first_seen: Option<String>,
    /// Last stored event of the type (record mode only).
    pub last_seen: Option<String>,
    /// Stored events of the type (record mode only).
    pub count: u64,
}

/// Lists the configured and discovered types of a namespace, or of one broker when `broker`
/// (`namespace/name`) is given. A configured type shows the counts of the pairs it matches.
pub fn list(
    registry: &Registry,
    seen: Vec<(SeenKey, Seen)>,
    namespace: &str,
    broker: Option<&str>,
) -> Vec<Listed> {
    let in_scope = |b: &str| match broker {
        Some(id) => b == id,
        None => BrokerId::parse(b).is_ok_and(|id| id.namespace() == namespace),
    };
    let mut out = Vec::new();
    for r in registry.types() {
        let wanted = match broker {
            Some(id) => r.broker.as_deref() == Some(id),
            None => r.namespace == namespace,
        };
        if !wanted {
            continue;
        }
        let mut item = Listed {
            namespace: r.namespace.clone(),
            name: Some(r.name.clone()),
            broker: r.broker.clone(),
            ty: r.ty.clone(),
            source: r.source.clone(),
            schema: r.schema.clone(),
            description: r.description.clone(),
            origin: "config",
            first_seen: None,
            last_seen: None,
            count: 0,
        };
        for ((b, t, s), counts) in &seen {
            if r.broker.as_deref() == Some(b.as_str()) && r.matches(t, s) {
                item.count += counts.count;
                if item
                    .first_seen
                    .as_ref()
                    .is_none_or(|f| counts.first_seen < *f)
                {
                    item.first_seen = Some(counts.first_seen.clone());
                }
                if item
                    .last_seen
                    .as_ref()
                    .is_none_or(|l| counts.last_seen > *l)
                {
                    item.last_seen = Some(counts.last_seen.clone());
                }
            }
        }
        out.push(item);
    }
    for ((b, t, s), counts) in seen {
        if !in_scope(&b) || registry.find(&b, &t, &s).is_some() {
            continue;
        }
        out.push(Listed {
            namespace: BrokerId::parse(&b)
                .map(|id| id.namespace().to_owned())
                .unwrap_or_default(),
            name: None,
            broker: Some(b),
            ty: t,
            source: Some(s),
            schema: None,
            description: None,
            origin: "discovered",
            first_seen: Some(counts.first_seen),
            last_seen: Some(counts.last_seen),
            count: counts.count,
        });
    }
    out.sort_by(|a, b| (&a.broker, &a.ty, &a.source).cmp(&(&b.broker, &b.ty, &b.source)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_shared_discovery_counts_what_the_store_held_at_start_against_the_cap() {
        let known: HashSet<SeenKey> = (0..MAX_PAIRS_PER_BROKER - 1)
            .map(|i| ("ns/b".to_owned(), "t".to_owned(), format!("/s{i}")))
            .collect();
        let d = Discovery {
            inner: Mutex::new(Inner::counted(BTreeMap::new(), known)),
            shared: true,
        };
        let _ = d.observe(
            "ns/b",
            [("t", "/s0"), ("t", "/new-1"), ("t", "/new-2")].into_iter(),
            NOW,
        );
        let flushed: Vec<String> = d
            .flush()
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, .. } => String::from_utf8_lossy(key).into_owned(),
                other => panic!("a put: {other:?}"),
            })
            .collect();
        assert_eq!(
            flushed,
            ["ns/b\0t\0/new-1", "ns/b\0t\0/s0"],
            "a stored pair counts on; one new pair fits under the cap, the next does not"
        );
    }

    #[test]
    fn a_pair_of_a_type_or_source_over_the_length_limit_is_not_recorded() {
        let d = Discovery::default();
        let long = "x".repeat(MAX_RECORDED_BYTES + 1);
        let at = "x".repeat(MAX_RECORDED_BYTES);
        let ops = d.observe(
            "ns/b",
            [
                ("t", long.as_str()),
                (long.as_str(), "/s"),
                ("t", at.as_str()),
            ]
            .into_iter(),
            NOW,
        );
        assert_eq!(ops.len(), 1, "only the pair at the limit");
        assert_eq!(d.snapshot().len(), 1);
    }
}
