//! The store budget (`--max-store-bytes`, `spec/storage.md` "A store budget"): what the
//! store holds (the logs' bytes, and the retries' and dead letters' as `apply_ops` counts
//! them), the refusal of appends that would pass it, and the excess retention deletes.

use super::*;

/// How often retention runs while appends are refused for the store budget.
pub(super) const BUDGET_RETENTION: Duration = Duration::from_secs(1);
/// The share of `max_store_bytes` retention brings the store down to (in tenths), so that
/// appends find room between two passes.
const BUDGET_TARGET_TENTHS: u64 = 9;

/// The bytes of the side tables the store budget counts, read from the tables themselves.
pub(super) fn side_bytes_of(txn: &redb::WriteTransaction) -> Result<u64, LogError> {
    let mut total = 0u64;
    for table in [Table::Retries, Table::DeadLetters] {
        let t = txn.open_table(side_table(table)).map_err(storage)?;
        total += table_bytes(&t)?;
    }
    Ok(total)
}

/// The bytes of every key and value of `table`.
fn table_bytes(table: &impl ReadableTable<&'static [u8], &'static [u8]>) -> Result<u64, LogError> {
    let mut total = 0u64;
    for item in table.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        total += (k.value().len() + v.value().len()) as u64;
    }
    Ok(total)
}

/// The event bytes each broker's log holds (the `bytes/` counters of `meta`).
fn stored_per_broker(
    meta: &impl redb::ReadableTable<&'static str, u64>,
) -> Result<Vec<(String, u64)>, LogError> {
    let mut stored = Vec::new();
    for item in meta.range("bytes/".."bytes0").map_err(storage)? {
        let (key, value) = item.map_err(storage)?;
        if let Some(broker) = key.value().strip_prefix("bytes/") {
            stored.push((broker.to_owned(), value.value()));
        }
    }
    Ok(stored)
}

impl Writer {
    /// The event bytes the store holds, all brokers together: the `bytes/` counters of
    /// `meta`, read once and then kept up to date by commits.
    pub(super) fn stored_bytes(&mut self) -> Result<u64, LogError> {
        if let Some(total) = self.stored_bytes {
            return Ok(total);
        }
        let txn = self.shared.db()?.begin_read().map_err(storage)?;
        let (events, side) = match txn.open_table(META) {
            Ok(meta) => (
                stored_per_broker(&meta)?
                    .iter()
                    .map(|(_, b)| b)
                    .sum::<u64>(),
                meta.get(SIDE_BYTES_KEY)
                    .map_err(storage)?
                    .map(|v| v.value()),
            ),
            Err(redb::TableError::TableDoesNotExist(_)) => (0, None),
            Err(e) => return Err(storage(e)),
        };
        let side = match side {
            Some(side) => side,
            // A store from before the count: read from the tables (once: the next write of
            // a retry or dead letter records it).
            None => {
                let mut total = 0;
                for table in [Table::Retries, Table::DeadLetters] {
                    match txn.open_table(side_table(table)) {
                        Ok(t) => total += table_bytes(&t)?,
                        Err(redb::TableError::TableDoesNotExist(_)) => {}
                        Err(e) => return Err(storage(e)),
                    }
                }
                total
            }
        };
        let total = events + side;
        self.stored_bytes = Some(total);
        Ok(total)
    }

    /// What retention brings the store down to under a budget: nine tenths of it.
    pub(super) fn budget_target(&self) -> u64 {
        self.options.max_store_bytes / 10 * BUDGET_TARGET_TENTHS
    }

    /// Holds `batch`'s new events to `max_store_bytes`: a request that would take the store
    /// past it is refused with [`LogError::OverBudget`] (replies, which may use the reserve,
    /// are not).
    pub(super) fn check_budget(&mut self, batch: &mut Vec<AppendRequest>) {
        let max = self.options.max_store_bytes;
        let Ok(mut total) = self.stored_bytes() else {
            // Not knowing is not a reason to refuse: the commit itself will tell.
            return;
        };
        let mut refused = None;
        let mut kept = Vec::with_capacity(batch.len());
        for req in batch.drain(..) {
            let bytes: u64 = req.events.iter().map(|e| e.len() as u64).sum();
            if req.reserved || total.saturating_add(bytes) <= max {
                total = total.saturating_add(bytes);
                kept.push(req);
                continue;
            }
            let error = refused.get_or_insert_with(|| {
                LogError::OverBudget(format!(
                    "the store holds {total} bytes of events (logs, retries and dead letters) \
                     and may hold {max} (--max-store-bytes); delivered events are deleted to \
                     make room, undelivered ones are kept, and dead letters until they are \
                     redriven or purged"
                ))
            });
            let _ = req.reply.send(Err(error.clone()));
        }
        *batch = kept;
        match refused {
            Some(error) => {
                if self.over_budget.is_none() {
                    tracing::warn!(error = %error, "new events are refused until delivered ones can be deleted");
                }
                self.over_budget = Some(error);
                self.publish();
            }
            None => {
                if self.over_budget.take().is_some() {
                    tracing::info!("the store is within its budget again; appends are taken");
                    self.publish();
                }
            }
        }
    }

    /// After retention: appends are taken again once the store is below its budget.
    pub(super) fn budget_freed(&mut self) {
        if self.over_budget.is_none() {
            return;
        }
        if self
            .stored_bytes()
            .is_ok_and(|total| total < self.options.max_store_bytes)
        {
            self.over_budget = None;
            tracing::info!("retention made room within the store budget; appends are taken");
            self.publish();
        }
    }

    /// Retention's brokers and how many event bytes it must delete beyond their own
    /// policies: with a store budget and the store past nine tenths of it, the excess, and
    /// every broker with events stored (a removed one with no policy).
    pub(super) fn with_budget(
        &self,
        txn: &redb::WriteTransaction,
        mut policies: Policies,
    ) -> Result<(Policies, u64), LogError> {
        let max = self.options.max_store_bytes;
        if max == 0 {
            return Ok((policies, 0));
        }
        let meta = txn.open_table(META).map_err(storage)?;
        let stored = stored_per_broker(&meta)?;
        let side = match meta.get(SIDE_BYTES_KEY).map_err(storage)? {
            Some(v) => v.value(),
            None => side_bytes_of(txn)?,
        };
        let total: u64 = stored.iter().map(|(_, b)| b).sum::<u64>() + side;
        let excess = total.saturating_sub(self.budget_target());
        if excess > 0 {
            for (broker, _) in stored {
                if !policies.iter().any(|(b, _)| **b == *broker) {
                    policies.push((
                        Arc::from(broker),
                        RetentionPolicy {
                            max_age: None,
                            max_bytes: None,
                        },
                    ));
                }
            }
        }
        Ok((policies, excess))
    }
}
