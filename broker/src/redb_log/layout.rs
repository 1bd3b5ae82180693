//! The store's layout: redb's tables and the keys in them. The only code that knows them
//! (`spec/storage.md` describes them for people).

use redb::TableDefinition;

use crate::log::{BrokerId, Table};

pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(super) const CURSORS: TableDefinition<'_, &str, u64> = TableDefinition::new("cursors");
pub(super) const RETRIES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("retries");
pub(super) const DEADLETTERS: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("deadletters");
pub(super) const EVENTTYPES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("eventtypes");
pub(super) const SOURCESTATE: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("sourcestate");
pub(super) const AUDIT: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("audit");

pub(super) fn side_table(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match table {
        Table::Retries => RETRIES,
        Table::DeadLetters => DEADLETTERS,
        Table::EventTypes => EVENTTYPES,
        Table::SourceState => SOURCESTATE,
        Table::Audit => AUDIT,
    }
}

pub(super) fn events_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

pub(super) fn table_name(broker: &BrokerId) -> String {
    format!("events/{broker}")
}

/// The `meta` key of the last write-ahead log record whose changes the file holds.
pub(super) const WAL_LSN_KEY: &str = "wal/lsn";
/// `meta`: the bytes (keys and values) of the retries and dead letters, the side tables that
/// hold copies of events; absent in a store from before it was kept (counted at first use).
pub(super) const SIDE_BYTES_KEY: &str = "sidebytes";

/// Whether `table`'s bytes count towards the store budget (`SIDE_BYTES_KEY`): the tables of
/// event copies, which grow with traffic. Event types, sources' state and audit entries are
/// small, or pruned by age.
pub(super) fn counted(table: Table) -> bool {
    matches!(table, Table::Retries | Table::DeadLetters)
}

/// The `meta` key of the offset `broker`'s next event gets, kept when retention empties its
/// table.
pub(super) fn next_key(broker: &BrokerId) -> String {
    format!("next/{broker}")
}

pub(super) fn bytes_key(broker: &BrokerId) -> String {
    format!("bytes/{broker}")
}

pub(super) fn cursor_key(broker: &BrokerId, consumer: &str) -> String {
    format!("{broker}#{consumer}")
}
