//! Audit trail (DATA-4) and consent records (DATA-5): append-only, one hash
//! chain per tenant. Each record holds the hash of the one before it, so an
//! edited, removed or reordered record breaks the chain at that point; the
//! chain's head (sequence and hash) is kept apart from the records, so a cut
//! tail is found too. Old and new values of personal fields are sealed with
//! the same data key as the data itself: they shred with it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::store::{key, prefix, Batch, Store, StoreError, Table};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub tenant: String,
    /// Pseudonymous id of who did it (`u_…` staff, `p_…` participant, `system`).
    pub actor: String,
    /// create, change, delete, unlock, block, consent, consent-withdrawn, export, login-locked …
    pub action: String,
    /// user, participant, event, stream, site, tenant …
    pub entity: String,
    pub entity_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Sealed old value (or a non-personal value in clear, prefixed `=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    pub prev: String,
    pub hash: String,
}

/// What to record; the chain fields are filled in by [`append`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub actor: String,
    pub action: String,
    pub entity: String,
    pub entity_id: String,
    pub field: Option<String>,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl Entry {
    /// `actor` did `action` to one record (`entity`, `id`).
    pub(crate) fn new(actor: &str, action: &str, entity: &str, id: &str) -> Self {
        Entry {
            actor: actor.into(),
            action: action.into(),
            entity: entity.into(),
            entity_id: id.into(),
            ..Default::default()
        }
    }

    /// … to one field of it, whose values are not recorded (a password, a
    /// second factor).
    pub(crate) fn field(mut self, field: &str) -> Self {
        self.field = Some(field.into());
        self
    }

    /// … to one field whose values are not personal, recorded in clear
    /// (prefixed `=`, which no sealed value starts with).
    pub(crate) fn clear(
        self,
        field: &str,
        old: Option<impl std::fmt::Display>,
        new: Option<impl std::fmt::Display>,
    ) -> Self {
        self.sealed(
            field,
            old.map(|v| format!("={v}")),
            new.map(|v| format!("={v}")),
        )
    }

    /// … to one personal field, both values already sealed.
    pub(crate) fn sealed(mut self, field: &str, old: Option<String>, new: Option<String>) -> Self {
        self.field = Some(field.into());
        self.old = old;
        self.new = new;
        self
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn record_hash(r: &AuditRecord) -> String {
    let mut unhashed = r.clone();
    unhashed.hash = String::new();
    let bytes = serde_json::to_vec(&unhashed).expect("serialises");
    let mut h = Sha256::new();
    h.update(b"strom audit v1\0");
    h.update(&bytes);
    hex::encode(h.finalize())
}

fn head_key(tenant: &str) -> Vec<u8> {
    key(&["audit-head", tenant])
}

pub(crate) fn head(store: &dyn Store, tenant: &str) -> Result<Head, StoreError> {
    match store.get(Table::Meta, &head_key(tenant))? {
        Some(raw) => serde_json::from_slice(&raw).map_err(|e| StoreError::Corrupt(e.to_string())),
        None => Ok(Head {
            seq: 0,
            hash: GENESIS.into(),
        }),
    }
}

/// Adds records for `entries` to `batch` (written atomically with the change
/// they describe). The caller holds the write lock, and `head` is the head
/// before this batch; returns the new head.
pub(crate) fn append(
    batch: &mut Batch,
    tenant: &str,
    mut head: Head,
    entries: Vec<Entry>,
    now: OffsetDateTime,
) -> Head {
    for e in entries {
        let mut r = AuditRecord {
            seq: head.seq + 1,
            at: now,
            tenant: tenant.into(),
            actor: e.actor,
            action: e.action,
            entity: e.entity,
            entity_id: e.entity_id,
            field: e.field,
            old: e.old,
            new: e.new,
            prev: head.hash.clone(),
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        batch.put(
            Table::Audit,
            record_key(tenant, r.seq),
            serde_json::to_vec(&r).expect("serialises"),
        );
        head = Head {
            seq: r.seq,
            hash: r.hash,
        };
    }
    batch.put(
        Table::Meta,
        head_key(tenant),
        serde_json::to_vec(&head).expect("serialises"),
    );
    head
}

fn record_key(tenant: &str, seq: u64) -> Vec<u8> {
    key(&[tenant, &format!("{seq:016}")])
}

/// Records after `after`, oldest first.
pub(crate) fn list(
    store: &dyn Store,
    tenant: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = store.scan_after(
        Table::Audit,
        &prefix(&[tenant]),
        &record_key(tenant, after),
        limit,
    )?;
    rows.into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

#[derive(Debug, PartialEq, Serialize)]
pub enum Broken {
    /// The record's content does not match its hash (edited).
    Edited { seq: u64 },
    /// The record does not follow the one before (removed or reordered).
    Unlinked { seq: u64 },
    /// The stored record cannot be read.
    Unreadable { key: String },
    /// Records end before the head says they do (tail cut) or go beyond it.
    HeadMismatch { head_seq: u64, last_seq: u64 },
}

/// Walks a tenant's chain; returns the number of records and any breaks.
pub fn verify(store: &dyn Store, tenant: &str) -> Result<(u64, Vec<Broken>), StoreError> {
    let mut broken = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1;
    let mut count = 0;
    let mut after = Vec::new();
    let pfx = prefix(&[tenant]);
    loop {
        let page = store.scan_after(Table::Audit, &pfx, &after, 1000)?;
        if page.is_empty() {
            break;
        }
        for (k, v) in &page {
            count += 1;
            let r: AuditRecord = match serde_json::from_slice(v) {
                Ok(r) => r,
                Err(_) => {
                    broken.push(Broken::Unreadable {
                        key: String::from_utf8_lossy(k).into(),
                    });
                    continue;
                }
            };
            if record_hash(&r) != r.hash {
                broken.push(Broken::Edited { seq: r.seq });
            }
            if r.prev != prev || r.seq != expected_seq || k != &record_key(tenant, r.seq) {
                broken.push(Broken::Unlinked { seq: r.seq });
            }
            prev = r.hash.clone();
            expected_seq = r.seq + 1;
        }
        after = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
    }
    let h = head(store, tenant)?;
    if h.seq != expected_seq - 1 || (h.seq > 0 && h.hash != prev) {
        broken.push(Broken::HeadMismatch {
            head_seq: h.seq,
            last_seq: expected_seq - 1,
        });
    }
    Ok((count, broken))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RocksStore;

    fn entry(action: &str) -> Entry {
        Entry::new("u_1", action, "participant", "p_1")
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path(), &Table::DATA).unwrap();
        let now = OffsetDateTime::now_utc();
        let mut h = head(&store, "t1").unwrap();
        for action in ["create", "change", "delete"] {
            let mut b = Batch::default();
            h = append(&mut b, "t1", h, vec![entry(action)], now);
            store.write(b).unwrap();
        }
        assert_eq!(verify(&store, "t1").unwrap(), (3, vec![]));

        // Edit record 2's action in place.
        let k = record_key("t1", 2);
        let mut r: AuditRecord =
            serde_json::from_slice(&store.get(Table::Audit, &k).unwrap().unwrap()).unwrap();
        r.action = "nothing happened".into();
        let mut b = Batch::default();
        b.put(Table::Audit, k.clone(), serde_json::to_vec(&r).unwrap());
        store.write(b).unwrap();
        assert_eq!(
            verify(&store, "t1").unwrap().1,
            vec![Broken::Edited { seq: 2 }]
        );

        // Recomputing its hash only moves the break to the next record.
        r.hash = record_hash(&r);
        let mut b = Batch::default();
        b.put(Table::Audit, k.clone(), serde_json::to_vec(&r).unwrap());
        store.write(b).unwrap();
        assert_eq!(
            verify(&store, "t1").unwrap().1,
            vec![Broken::Unlinked { seq: 3 }]
        );

        // Cutting the tail is found against the head.
        let mut b = Batch::default();
        b.delete(Table::Audit, record_key("t1", 3));
        store.write(b).unwrap();
        assert!(verify(&store, "t1")
            .unwrap()
            .1
            .contains(&Broken::HeadMismatch {
                head_seq: 3,
                last_seq: 2
            }));
    }
}
