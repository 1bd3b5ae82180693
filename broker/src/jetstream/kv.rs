//! The side tables the JetStream engine keeps, each in a key-value bucket: what sources
//! remember, the audit log, and the event types `record` mode discovered (whose writes add
//! into the totals).

use super::*;

/// The side tables this engine keeps, in key-value buckets (a handle the log's futures own).
#[derive(Clone)]
pub(super) struct Kv {
    pub(super) js: jetstream::Context,
    pub(super) replicas: usize,
    /// How long audit entries are kept (`None`: for ever).
    pub(super) audit_max_age: Option<Duration>,
}

/// The bucket that keeps side table `table`, and what it holds; `None` for the tables this
/// engine keeps elsewhere (dead letters: their stream) or not at all.
pub(super) fn bucket_of(table: Table) -> Option<(&'static str, &'static str)> {
    match table {
        Table::SourceState => Some((
            SOURCE_STATE_BUCKET,
            "Switchyard: what sources remember across restarts",
        )),
        Table::Audit => Some((
            AUDIT_BUCKET,
            "Switchyard: who redrove, purged and deleted dead letters",
        )),
        Table::EventTypes => Some((
            EVENT_TYPES_BUCKET,
            "Switchyard: the event types brokers in record mode stored",
        )),
        _ => None,
    }
}

impl Kv {
    /// The bucket of `table`, created when missing.
    async fn bucket(&self, table: Table) -> Result<jetstream::kv::Store, LogError> {
        let Some((bucket, description)) = bucket_of(table) else {
            return Err(side_tables());
        };
        let max_age = match table {
            Table::Audit => self.audit_max_age.unwrap_or_default(),
            _ => Duration::ZERO,
        };
        key_value(
            &self.js,
            jetstream::kv::Config {
                bucket: bucket.to_owned(),
                description: description.to_owned(),
                history: 1,
                max_age,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            },
        )
        .await
    }

    /// Applies `ops` (to the tables [`bucket_of`] keeps), in order.
    pub(super) async fn write_ops(&self, ops: Vec<WriteOp>) -> Result<(), LogError> {
        let mut stores: Vec<(Table, jetstream::kv::Store)> = Vec::new();
        for op in ops {
            let table = match &op {
                WriteOp::Put { table, .. } | WriteOp::Delete { table, .. } => *table,
                // Triggers' places are their consumers'.
                WriteOp::ForgetCursor { .. } => continue,
            };
            let store = match stores.iter().find(|(t, _)| *t == table) {
                Some((_, store)) => store.clone(),
                None => {
                    let store = self.bucket(table).await?;
                    stores.push((table, store.clone()));
                    store
                }
            };
            match op {
                WriteOp::Put {
                    table: Table::EventTypes,
                    key,
                    value,
                } => add_counts(&store, &kv_key(&key), &value).await?,
                // A put of the same value and a delete can be made twice: each is tried
                // again while the bucket's stream has no leader (just created, or moving).
                WriteOp::Put { key, value, .. } => {
                    let (key, value) = (kv_key(&key), bytes::Bytes::from(value));
                    when_settled(SIDE_TABLE_PATIENCE, "write a side record", || async {
                        store
                            .put(&key, value.clone())
                            .await
                            .map_err(|e| LogError::unavailable("cannot write a side record", &e))
                    })
                    .await?;
                }
                WriteOp::Delete { key, .. } => {
                    let key = kv_key(&key);
                    when_settled(SIDE_TABLE_PATIENCE, "delete a side record", || async {
                        store
                            .delete(&key)
                            .await
                            .map_err(|e| LogError::unavailable("cannot delete a side record", &e))
                    })
                    .await?;
                }
                WriteOp::ForgetCursor { .. } => {}
            }
        }
        Ok(())
    }

    /// The records of `table` with `from <= key < to`, in key order, at most `max`.
    pub(super) async fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        max: usize,
    ) -> Result<Vec<SideRecord>, LogError> {
        let store = self.bucket(table).await?;
        let listing = |e: &dyn std::fmt::Display| {
            LogError::Unavailable(format!("cannot list a key-value bucket: {e}"))
        };
        let keys = store.keys().await.map_err(|e| listing(&e))?;
        let mut keys: Vec<Vec<u8>> = futures_util::TryStreamExt::try_collect::<Vec<String>>(keys)
            .await
            .map_err(|e| listing(&e))?
            .iter()
            .filter_map(|k| from_kv_key(k))
            .filter(|k| k.as_slice() >= from && k.as_slice() < to)
            .collect();
        keys.sort();
        keys.truncate(max);
        let mut records = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = store
                .get(kv_key(&key))
                .await
                .map_err(|e| LogError::unavailable("cannot read a side record", &e))?
            {
                records.push((key, value.to_vec()));
            }
        }
        Ok(records)
    }
}

/// Key-value bucket `config.bucket`, created when missing (by this replica, or by another
/// racing it), tried again for up to [`SIDE_TABLE_PATIENCE`] while the cluster cannot answer.
pub(super) async fn key_value(
    js: &jetstream::Context,
    config: jetstream::kv::Config,
) -> Result<jetstream::kv::Store, LogError> {
    when_settled(SIDE_TABLE_PATIENCE, "open a key-value bucket", || async {
        if let Ok(store) = js.get_key_value(&config.bucket).await {
            return Ok(store);
        }
        js.create_key_value(config.clone())
            .await
            .map_err(|e| LogError::unavailable("cannot create a key-value bucket", &e))
    })
    .await
}

/// Adds a replica's event-type counts (`Seen`, JSON) since its last flush into the totals at
/// `key`: a compare-and-set on the key's revision, tried again when another replica wrote
/// in between.
async fn add_counts(store: &jetstream::kv::Store, key: &str, value: &[u8]) -> Result<(), LogError> {
    use crate::eventtypes::Seen;
    let more: Seen = serde_json::from_slice(value)
        .map_err(|e| LogError::Storage(format!("event-type counts to add: {e}")))?;
    let failed = |e: &dyn std::fmt::Display| {
        LogError::Unavailable(format!("cannot add event-type counts: {e}"))
    };
    for _ in 0..100 {
        let written = match store.entry(key).await.map_err(|e| failed(&e))? {
            Some(entry) if entry.operation == jetstream::kv::Operation::Put => {
                let mut total: Seen =
                    serde_json::from_slice(&entry.value).unwrap_or_else(|_| more.clone());
                if serde_json::from_slice::<Seen>(&entry.value).is_ok() {
                    total.add(&more);
                }
                let bytes = serde_json::to_vec(&total).unwrap_or_default();
                store
                    .update(key, bytes.into(), entry.revision)
                    .await
                    .is_ok()
            }
            _ => store.create(key, value.to_vec().into()).await.is_ok(),
        };
        if written {
            return Ok(());
        }
    }
    Err(failed(&"other replicas kept writing the same counts"))
}

/// A side-table key as a key-value key (which allows only a few characters): hex.
fn kv_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_kv_key(key: &str) -> Option<Vec<u8>> {
    key.len()
        .is_multiple_of(2)
        .then(|| {
            (0..key.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(key.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

pub(super) fn side_tables() -> LogError {
    LogError::Storage(
        "the JetStream engine keeps no side tables but sources' state and the audit log (spec/jetstream.md, \"Not yet\")".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_table_keys_survive_the_key_value_alphabet() {
        let key = b"default/ping\x00\xff".to_vec();
        let k = kv_key(&key);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(from_kv_key(&k), Some(key));
        assert_eq!(from_kv_key("abc"), None);
        assert_eq!(from_kv_key("zz"), None);
    }
}
