//! Moving up: an embedded installation (RocksDB) copied into PostgreSQL,
//! verified before anyone may use the copy.
//!
//! The copy is of the stores, table by table, byte for byte: sealed fields
//! stay sealed under the same data keys, the wrapped data keys move into
//! the target's key store, the master key stays where the operator keeps
//! it. Verified means:
//! - every table holds the same rows on both sides (count and a SHA-256
//!   over keys and values in key order);
//! - every tenant's audit chain verifies on the target;
//! - every user's and every participant's sealed fields open on the target
//!   with the installation's master key.
//!
//! A target that holds anything is refused, so a migration never mixes
//! into a running installation. The copy begins by marking the target
//! ([`MARKER`]); the mark goes only once verification passed, and a control
//! plane refuses to start on a marked store. A migration stopped half way
//! (Ctrl-C, a dead connection) leaves a marked target, which the next
//! `migrate` clears and fills again.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::keys::{KeyRing, MasterKeys};
use crate::repo::{Repo, RepoError};
use crate::store::{Batch, Store, StoreError, Table};

/// The `meta` key that marks a store a migration is filling.
pub const MARKER: &[u8] = b"migration-incomplete";

/// Rows per batch written to the target (one transaction each).
const BATCH_ROWS: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the target already holds a control plane ({rows} or more rows in `{table}`): \
         migrate only into an empty database"
    )]
    NotEmpty { table: &'static str, rows: usize },
    #[error("`{table}` differs after the copy: {source_rows} rows in the source, {target_rows} in the target")]
    Differs {
        table: &'static str,
        source_rows: u64,
        target_rows: u64,
    },
    #[error("the audit chain of {tenant} does not verify on the target: {findings}")]
    AuditBroken { tenant: String, findings: String },
    #[error("a sealed field does not open on the target ({what}): {error}")]
    Sealed { what: String, error: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("opening the target: {0}")]
    Repo(#[from] RepoError),
}

/// What one table held, on both sides once verified.
#[derive(Debug, Clone, PartialEq)]
pub struct TableFigures {
    pub table: Table,
    pub rows: u64,
    pub digest: [u8; 32],
}

/// The outcome of a verified migration.
#[derive(Debug, Clone)]
pub struct Migrated {
    pub tables: Vec<TableFigures>,
    /// Whether an interrupted migration's rows were cleared first.
    pub resumed: bool,
    /// Per tenant: audit records verified on the target.
    pub audit: Vec<(String, u64)>,
    pub users_opened: u64,
    pub participants_opened: u64,
}

/// The stores of one installation: data and (wrapped) keys.
pub struct Stores {
    pub data: Arc<dyn Store>,
    pub keys: Arc<dyn Store>,
}

impl Stores {
    fn parts(&self) -> [(&dyn Store, &'static [Table]); 2] {
        [(&*self.keys, &Table::KEYS), (&*self.data, &Table::DATA)]
    }
}

/// Copies `source` into `target` and verifies the copy with `master`;
/// `progress` hears each table's rows as they are copied. On success the
/// target is unmarked and ready to serve; on any error it stays marked.
pub fn migrate(
    source: &Stores,
    target: &Stores,
    master: MasterKeys,
    progress: &mut dyn FnMut(Table, u64),
) -> Result<Migrated, MigrateError> {
    let resumed = target.data.get(Table::Meta, MARKER)?.is_some();
    if resumed {
        for (store, tables) in target.parts() {
            for &t in tables {
                clear(store, t)?;
            }
        }
    } else {
        for (store, tables) in target.parts() {
            for &t in tables {
                let rows = store.scan(t, b"", 1)?.len();
                if rows > 0 {
                    return Err(MigrateError::NotEmpty {
                        table: t.name(),
                        rows,
                    });
                }
            }
        }
    }
    let mut mark = Batch::default();
    mark.put(Table::Meta, MARKER, time_now().into_bytes());
    target.data.write(mark)?;

    for ((from, tables), (to, _)) in source.parts().into_iter().zip(target.parts()) {
        for &t in tables {
            copy(from, to, t, progress)?;
        }
    }

    let mut figures = Vec::new();
    for ((from, tables), (to, _)) in source.parts().into_iter().zip(target.parts()) {
        for &t in tables {
            let (a, b) = (digest(from, t)?, digest(to, t)?);
            if a != b {
                return Err(MigrateError::Differs {
                    table: t.name(),
                    source_rows: a.rows,
                    target_rows: b.rows,
                });
            }
            figures.push(a);
        }
    }

    let (audit, users_opened, participants_opened) = verify_target(target, master)?;
    let mut unmark = Batch::default();
    unmark.delete(Table::Meta, MARKER);
    target.data.write(unmark)?;
    Ok(Migrated {
        tables: figures,
        resumed,
        audit,
        users_opened,
        participants_opened,
    })
}

/// Refuses a store a migration is still filling (for start-up).
pub fn check_not_marked(data: &dyn Store) -> Result<(), String> {
    match data.get(Table::Meta, MARKER) {
        Ok(None) => Ok(()),
        Ok(Some(at)) => Err(format!(
            "this database is the target of a migration that did not finish (started {}): \
             run `strom control-plane migrate` again to complete it",
            String::from_utf8_lossy(&at)
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn time_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn copy(
    from: &dyn Store,
    to: &dyn Store,
    t: Table,
    progress: &mut dyn FnMut(Table, u64),
) -> Result<(), StoreError> {
    let mut after = Vec::new();
    let mut rows = 0;
    loop {
        let page = from.scan_after(t, b"", &after, BATCH_ROWS)?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        rows += page.len() as u64;
        let mut batch = Batch::default();
        for (k, v) in page {
            batch.put(t, k, v);
        }
        to.write(batch)?;
        progress(t, rows);
    }
    Ok(())
}

/// Deletes every row of `t` (the store refuses an empty-prefix delete, so
/// row by row, a page per transaction).
fn clear(store: &dyn Store, t: Table) -> Result<(), StoreError> {
    loop {
        let page = store.scan(t, b"", BATCH_ROWS)?;
        if page.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for (k, _) in page {
            batch.delete(t, k);
        }
        store.write(batch)?;
    }
}

/// Rows and a SHA-256 over (key length, key, value length, value) in key
/// order; the migration's own mark is left out.
fn digest(store: &dyn Store, t: Table) -> Result<TableFigures, StoreError> {
    let mut hash = Sha256::new();
    let mut rows = 0;
    let mut after = Vec::new();
    loop {
        let page = store.scan_after(t, b"", &after, BATCH_ROWS)?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        for (k, v) in &page {
            if t == Table::Meta && k.as_slice() == MARKER {
                continue;
            }
            rows += 1;
            hash.update((k.len() as u64).to_be_bytes());
            hash.update(k);
            hash.update((v.len() as u64).to_be_bytes());
            hash.update(v);
        }
    }
    Ok(TableFigures {
        table: t,
        rows,
        digest: hash.finalize().into(),
    })
}

type Verified = (Vec<(String, u64)>, u64, u64);

/// The target as a control plane would open it: every audit chain, every
/// user's and participant's sealed fields.
fn verify_target(target: &Stores, master: MasterKeys) -> Result<Verified, MigrateError> {
    let ring = KeyRing::new(target.keys.clone(), master);
    let repo = Repo::new(target.data.clone(), target.keys.clone(), ring)?;
    let mut audit = Vec::new();
    let (mut users, mut participants) = (0, 0);
    for tenant in repo.tenants()? {
        let (records, findings) = crate::audit::verify(&*target.data, &tenant.id)?;
        if !findings.is_empty() {
            return Err(MigrateError::AuditBroken {
                tenant: tenant.id,
                findings: format!("{findings:?}"),
            });
        }
        audit.push((tenant.id.clone(), records));
        for u in repo.users(&tenant.id)? {
            repo.user_view(&u).map_err(|e| MigrateError::Sealed {
                what: format!("user {} of {}", u.id, tenant.id),
                error: e.to_string(),
            })?;
            users += 1;
        }
        for ev in repo.events(&tenant.id)? {
            for p in repo.participants(&tenant.id, &ev.id)? {
                repo.participant_view(&p)
                    .map_err(|e| MigrateError::Sealed {
                        what: format!("participant {} of {}", p.id, ev.id),
                        error: e.to_string(),
                    })?;
                participants += 1;
            }
        }
    }
    Ok((audit, users, participants))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::store::MemStore;

    fn stores() -> Stores {
        Stores {
            data: Arc::new(MemStore::new()),
            keys: Arc::new(MemStore::new()),
        }
    }

    fn populated(master: &MasterKeys) -> Stores {
        let s = stores();
        let repo = Repo::new(
            s.data.clone(),
            s.keys.clone(),
            KeyRing::new(s.keys.clone(), master.clone()),
        )
        .unwrap();
        let t = repo.create_tenant("Acme").unwrap().id;
        repo.create_user(
            "system",
            &t,
            "owner@example.com",
            "Owner",
            Role::Owner,
            None,
        )
        .unwrap();
        s
    }

    #[test]
    fn a_copy_verifies_and_unmarks_the_target() {
        let master = MasterKeys::generate();
        let source = populated(&master);
        let target = stores();
        let mut heard = Vec::new();
        let m = migrate(&source, &target, master, &mut |t, n| heard.push((t, n))).unwrap();
        assert!(!m.resumed);
        assert_eq!(m.users_opened, 1);
        assert_eq!(m.audit.len(), 1);
        assert!(m.audit[0].1 >= 1, "creating the owner is audited");
        assert!(heard.iter().any(|(t, _)| *t == Table::Users));
        assert!(check_not_marked(&*target.data).is_ok());
        for f in &m.tables {
            assert_eq!(digest(&*target.data_or_keys(f.table), f.table).unwrap(), *f);
        }
    }

    #[test]
    fn a_target_holding_anything_is_refused_and_left_alone() {
        let master = MasterKeys::generate();
        let source = populated(&master);
        let target = populated(&master);
        let before = digest(&*target.data, Table::Users).unwrap();
        let e = migrate(&source, &target, master, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, MigrateError::NotEmpty { .. }), "{e}");
        assert_eq!(digest(&*target.data, Table::Users).unwrap(), before);
        assert!(check_not_marked(&*target.data).is_ok());
    }

    #[test]
    fn an_interrupted_migration_is_refused_at_start_and_completed_by_the_next() {
        let master = MasterKeys::generate();
        let source = populated(&master);
        let target = stores();
        // What a run stopped after its first page leaves: the mark, some
        // rows, and a row the source does not hold (the source was used
        // in between).
        let mut b = Batch::default();
        b.put(Table::Meta, MARKER, b"2026-12-07T00:00:00Z".to_vec());
        b.put(Table::Users, b"t_x/u_gone".to_vec(), b"{}".to_vec());
        target.data.write(b).unwrap();
        let refused = check_not_marked(&*target.data).unwrap_err();
        assert!(refused.contains("migrate"), "{refused}");
        let m = migrate(&source, &target, master, &mut |_, _| {}).unwrap();
        assert!(m.resumed);
        assert!(target
            .data
            .get(Table::Users, b"t_x/u_gone")
            .unwrap()
            .is_none());
        assert!(check_not_marked(&*target.data).is_ok());
    }

    #[test]
    fn the_wrong_master_key_fails_verification_and_keeps_the_mark() {
        let source = populated(&MasterKeys::generate());
        let target = stores();
        let e = migrate(&source, &target, MasterKeys::generate(), &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(e, MigrateError::Repo(_) | MigrateError::Sealed { .. }),
            "{e}"
        );
        assert!(check_not_marked(&*target.data).is_err());
    }

    #[test]
    fn a_row_changed_on_the_way_is_found() {
        let master = MasterKeys::generate();
        let source = populated(&master);
        let a = digest(&*source.data, Table::Users).unwrap();
        let (k, mut v) = source.data.scan(Table::Users, b"", 1).unwrap().remove(0);
        v.push(b' ');
        let mut b = Batch::default();
        b.put(Table::Users, k, v);
        source.data.write(b).unwrap();
        let b = digest(&*source.data, Table::Users).unwrap();
        assert_eq!(a.rows, b.rows);
        assert_ne!(a.digest, b.digest);
    }

    impl Stores {
        fn data_or_keys(&self, t: Table) -> Arc<dyn Store> {
            if Table::KEYS.contains(&t) {
                self.keys.clone()
            } else {
                self.data.clone()
            }
        }
    }
}
