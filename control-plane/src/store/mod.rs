//! Durable storage behind a small trait: tables of ordered keys, atomic
//! batches that are on disk when `write` returns, prefix scans and prefix
//! deletes. Every key begins with the tenant id (then the event id where the
//! data is event-scoped), so a tenant's or an event's data is one range.
//!
//! RocksDB is the backend: a plain `DB` whose `WriteBatch` is atomic across
//! column families (OptimisticTransactionDB's range deletes are not), with
//! the WAL synced on every write. Read-modify-write sequences are serialised
//! by the caller ([`crate::repo::Repo`] holds the one write lock).

use std::path::{Path, PathBuf};

mod postgres;
pub mod presence;
pub use postgres::PgStore;
pub use presence::{Counted, MemoryPresence, Presence, Present};

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, Env, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Tenants,
    Users,
    Events,
    Streams,
    Participants,
    Sites,
    Edges,
    Sessions,
    Links,
    Audit,
    Consent,
    Revocations,
    /// Relay and peer-agent credentials as issued (no secrets).
    Credentials,
    /// Secondary indexes (blind e-mail hashes → ids, slugs → ids).
    Index,
    Meta,
    /// Key store only: wrapped data keys.
    Keys,
    /// Key store only: tenants and events deleted, replayed after a restore.
    Journal,
}

impl Table {
    pub const DATA: [Table; 15] = [
        Table::Tenants,
        Table::Users,
        Table::Events,
        Table::Streams,
        Table::Participants,
        Table::Sites,
        Table::Edges,
        Table::Sessions,
        Table::Links,
        Table::Audit,
        Table::Consent,
        Table::Revocations,
        Table::Credentials,
        Table::Index,
        Table::Meta,
    ];
    pub const KEYS: [Table; 2] = [Table::Keys, Table::Journal];

    pub fn name(self) -> &'static str {
        match self {
            Table::Tenants => "tenants",
            Table::Users => "users",
            Table::Events => "events",
            Table::Streams => "streams",
            Table::Participants => "participants",
            Table::Sites => "sites",
            Table::Edges => "edges",
            Table::Sessions => "sessions",
            Table::Links => "links",
            Table::Audit => "audit",
            Table::Consent => "consent",
            Table::Revocations => "revocations",
            Table::Credentials => "credentials",
            Table::Index => "index",
            Table::Meta => "meta",
            Table::Keys => "keys",
            Table::Journal => "journal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Backend(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Backend(e.into_string())
    }
}

/// One atomic set of changes.
#[derive(Default, Debug)]
pub struct Batch {
    pub ops: Vec<Op>,
}

#[derive(Debug)]
pub enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    DeletePrefix(Table, Vec<u8>),
}

impl Batch {
    pub fn put(&mut self, t: Table, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(t, k.into(), v.into()));
    }
    pub fn delete(&mut self, t: Table, k: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(t, k.into()));
    }
    pub fn delete_prefix(&mut self, t: Table, prefix: impl Into<Vec<u8>>) {
        self.ops.push(Op::DeletePrefix(t, prefix.into()));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

pub trait Store: Send + Sync + 'static {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    fn scan(&self, t: Table, prefix: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError>;
    /// Entries with key > `after` (and starting with `prefix`).
    fn scan_after(
        &self,
        t: Table,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Applies the batch atomically; durable (WAL synced) when it returns.
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// Writes a consistent backup of the store into `dir` (incremental).
    fn backup(&self, dir: &Path) -> Result<(), StoreError>;
    /// Opens a write section: until the returned value is dropped no other
    /// process sharing this store opens one (within one process the
    /// repository's own lock serialises sections). A store only one
    /// process can open needs nothing more, which is the default.
    fn exclusive(&self) -> Result<Exclusive<'_>, StoreError> {
        Ok(Exclusive::none())
    }
    /// Where short-lived state shared by the processes using this store
    /// lives ([`Presence`]); `None` for a store one process opens, which
    /// keeps such state in memory.
    fn shared_presence(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn Presence>> {
        None
    }
}

/// An open write section of a [`Store`]; closed when dropped.
pub struct Exclusive<'a> {
    release: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a> Exclusive<'a> {
    pub fn none() -> Self {
        Self { release: None }
    }

    pub fn new(release: impl FnOnce() + Send + 'a) -> Self {
        Self {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// The RocksDB store.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
}

fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl RocksStore {
    pub fn open(path: &Path, tables: &[Table]) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_keep_log_file_num(4);
        let cfs = tables
            .iter()
            .map(|t| ColumnFamilyDescriptor::new(t.name(), Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    /// A read-only view that follows a store another process has open
    /// (for audit verification while the control plane runs).
    pub fn open_secondary(
        primary: &Path,
        secondary: &Path,
        tables: &[Table],
    ) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.set_max_open_files(-1);
        let names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
        let db = DB::open_cf_as_secondary(&opts, primary, secondary, names)?;
        db.try_catch_up_with_primary()?;
        Ok(Self {
            db,
            path: primary.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, t: Table) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(t.name())
            .ok_or_else(|| StoreError::Backend(format!("table {} not in this store", t.name())))
    }

    /// Restores the newest backup in `backup_dir` into `path` (which must not
    /// be open).
    pub fn restore(backup_dir: &Path, path: &Path) -> Result<(), StoreError> {
        let env = Env::new()?;
        let opts = BackupEngineOptions::new(backup_dir)?;
        let mut engine = BackupEngine::open(&opts, &env)?;
        std::fs::create_dir_all(path).map_err(|e| StoreError::Backend(e.to_string()))?;
        engine.restore_from_latest_backup(path, path, &RestoreOptions::default())?;
        Ok(())
    }

    fn collect(
        &self,
        t: Table,
        prefix: &[u8],
        start: &[u8],
        skip_start: bool,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let cf = self.cf(t)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(start, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if skip_start && &*k == start {
                continue;
            }
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

impl Store for RocksStore {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(t)?, key)?)
    }

    fn scan(&self, t: Table, prefix: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.collect(t, prefix, prefix, false, limit)
    }

    fn scan_after(
        &self,
        t: Table,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let start = if after < prefix { prefix } else { after };
        self.collect(t, prefix, start, start == after, limit)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                Op::Put(t, k, v) => wb.put_cf(self.cf(t)?, k, v),
                Op::Delete(t, k) => wb.delete_cf(self.cf(t)?, k),
                Op::DeletePrefix(t, p) => match prefix_end(&p) {
                    Some(end) => wb.delete_range_cf(self.cf(t)?, p, end),
                    None => return Err(StoreError::Backend("empty prefix delete refused".into())),
                },
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(wb, &wo)?;
        Ok(())
    }

    fn backup(&self, dir: &Path) -> Result<(), StoreError> {
        let env = Env::new()?;
        let opts = BackupEngineOptions::new(dir)?;
        let mut engine = BackupEngine::open(&opts, &env)?;
        engine.create_new_backup_flush(&self.db, true)?;
        engine.purge_old_backups(30)?;
        Ok(())
    }
}

/// A store in memory, with the same contract as [`RocksStore`] (ordered
/// keys, atomic batches, prefix scans and deletes). For unit tests of the
/// repository, and the contract a second backend (PostgreSQL) must meet:
/// `contract` below runs against both.
#[derive(Default)]
pub struct MemStore {
    tables: std::sync::Mutex<
        std::collections::HashMap<Table, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
    >,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<Table, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
    > {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables().get(&t).and_then(|m| m.get(key).cloned()))
    }

    fn scan(&self, t: Table, prefix: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self
            .tables()
            .get(&t)
            .map(|m| {
                m.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn scan_after(
        &self,
        t: Table,
        prefix: &[u8],
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        use std::ops::Bound;
        let start = if after < prefix {
            Bound::Included(prefix.to_vec())
        } else {
            Bound::Excluded(after.to_vec())
        };
        Ok(self
            .tables()
            .get(&t)
            .map(|m| {
                m.range((start, Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        if batch
            .ops
            .iter()
            .any(|op| matches!(op, Op::DeletePrefix(_, p) if prefix_end(p).is_none()))
        {
            return Err(StoreError::Backend("empty prefix delete refused".into()));
        }
        let mut tables = self.tables();
        for op in batch.ops {
            match op {
                Op::Put(t, k, v) => {
                    tables.entry(t).or_default().insert(k, v);
                }
                Op::Delete(t, k) => {
                    tables.entry(t).or_default().remove(&k);
                }
                Op::DeletePrefix(t, p) => {
                    tables
                        .entry(t)
                        .or_default()
                        .retain(|k, _| !k.starts_with(&p));
                }
            }
        }
        Ok(())
    }

    fn backup(&self, _dir: &Path) -> Result<(), StoreError> {
        Err(StoreError::Backend(
            "an in-memory store has no backups".into(),
        ))
    }
}

/// The contract every [`Store`] meets, run against each backend (the
/// PostgreSQL run is in `tests/tests/postgres.rs`, which starts a server).
#[doc(hidden)]
pub mod contract {
    use super::*;

    /// Panics where `store` breaks the contract; expects an empty store.
    pub fn check(store: &dyn Store) {
        let mut b = Batch::default();
        for k in ["t1/a", "t1/b", "t1/c", "t2/a", "t10/a"] {
            b.put(Table::Events, k.as_bytes().to_vec(), k.as_bytes().to_vec());
        }
        b.put(Table::Users, b"t1/a".to_vec(), b"user".to_vec());
        store.write(b).unwrap();
        let keys = |kv: Vec<KeyValue>| -> Vec<String> {
            kv.into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect()
        };
        assert_eq!(
            keys(store.scan(Table::Events, b"t1/", 10).unwrap()),
            ["t1/a", "t1/b", "t1/c"]
        );
        assert_eq!(
            keys(store.scan(Table::Events, b"t1/", 2).unwrap()),
            ["t1/a", "t1/b"]
        );
        assert_eq!(
            keys(
                store
                    .scan_after(Table::Events, b"t1/", b"t1/a", 10)
                    .unwrap()
            ),
            ["t1/b", "t1/c"]
        );
        assert_eq!(
            keys(store.scan_after(Table::Events, b"t1/", b"", 10).unwrap()),
            ["t1/a", "t1/b", "t1/c"]
        );
        assert_eq!(store.get(Table::Users, b"t1/a").unwrap().unwrap(), b"user");
        assert_eq!(store.get(Table::Users, b"t1/b").unwrap(), None);
        // A prefix delete takes its range of one table, nothing else.
        let mut b = Batch::default();
        b.delete_prefix(Table::Events, b"t1/".to_vec());
        b.delete(Table::Events, b"t2/a".to_vec());
        store.write(b).unwrap();
        assert!(store.scan(Table::Events, b"t1/", 10).unwrap().is_empty());
        assert!(store.get(Table::Events, b"t2/a").unwrap().is_none());
        assert!(store.get(Table::Events, b"t10/a").unwrap().is_some());
        assert!(store.get(Table::Users, b"t1/a").unwrap().is_some());
        // An empty prefix delete is refused and the batch changes nothing.
        let mut b = Batch::default();
        b.put(Table::Users, b"t9/x".to_vec(), b"x".to_vec());
        b.delete_prefix(Table::Users, Vec::new());
        assert!(store.write(b).is_err());
        assert!(store.get(Table::Users, b"t9/x").unwrap().is_none());
    }

    #[cfg(test)]
    #[test]
    fn the_memory_store_meets_the_contract() {
        check(&MemStore::new());
    }

    #[cfg(test)]
    #[test]
    fn rocksdb_meets_the_contract() {
        let dir = std::env::temp_dir().join(format!("strom-store-contract-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = RocksStore::open(&dir, &Table::DATA).unwrap();
        check(&store);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Builds keys from parts joined by `/` (ids never contain it).
pub fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("/").into_bytes()
}

/// A prefix ending in `/` so `t1` does not match `t10`.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(b'/');
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_scans_and_prefix_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), &Table::DATA).unwrap();
        let mut b = Batch::default();
        for k in ["t1/a", "t1/b", "t10/a", "t2/a"] {
            b.put(Table::Events, k, k);
        }
        b.put(Table::Participants, "t1/e1/p1", "x");
        store.write(b).unwrap();
        let got = store.scan(Table::Events, &prefix(&["t1"]), 100).unwrap();
        assert_eq!(got.len(), 2);
        let after = store
            .scan_after(Table::Events, &prefix(&["t1"]), b"t1/a", 100)
            .unwrap();
        assert_eq!(after.len(), 1);
        let mut b = Batch::default();
        b.delete_prefix(Table::Events, prefix(&["t1"]));
        b.delete_prefix(Table::Participants, prefix(&["t1"]));
        store.write(b).unwrap();
        assert!(store
            .scan(Table::Events, &prefix(&["t1"]), 100)
            .unwrap()
            .is_empty());
        assert_eq!(store.scan(Table::Events, b"t", 100).unwrap().len(), 2);
        assert!(store
            .get(Table::Participants, b"t1/e1/p1")
            .unwrap()
            .is_none());
    }

    #[test]
    fn backup_and_restore_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("backups");
        {
            let store = RocksStore::open(&dir.path().join("db"), &Table::DATA).unwrap();
            let mut b = Batch::default();
            b.put(Table::Tenants, "t1", "acme");
            store.write(b).unwrap();
            store.backup(&backups).unwrap();
        }
        RocksStore::restore(&backups, &dir.path().join("restored")).unwrap();
        let store = RocksStore::open(&dir.path().join("restored"), &Table::DATA).unwrap();
        assert_eq!(store.get(Table::Tenants, b"t1").unwrap().unwrap(), b"acme");
    }
}
