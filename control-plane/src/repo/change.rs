//! One change to a record that holds personal fields, and the audit entries
//! it makes. A personal value is sealed twice in one call: into the record
//! under the record's key (`scope`), and into the audit entry under the key of
//! the person it belongs to, so erasing that person shreds what the trail
//! kept of them (F16).

use super::{aad, Repo, Result};
use crate::audit::Entry;
use crate::keys::Scope;

pub(super) struct Change<'r> {
    repo: &'r Repo,
    tenant: String,
    /// Where the record's own sealed fields live.
    scope: Scope,
    /// Actor, action, entity and id of every entry.
    record: Entry,
    entries: Vec<Entry>,
}

impl Repo {
    /// Starts `actor`'s `action` on the record `entity`/`id` of `tenant`,
    /// whose personal fields are sealed under `scope`.
    pub(super) fn change(
        &self,
        actor: &str,
        action: &str,
        tenant: &str,
        scope: &Scope,
        (entity, id): (&str, &str),
    ) -> Change<'_> {
        Change {
            repo: self,
            tenant: tenant.into(),
            scope: scope.clone(),
            record: Entry::new(actor, action, entity, id),
            entries: Vec::new(),
        }
    }

    /// Seals a personal value for the audit trail under the key of the
    /// person it belongs to (`entity_id`). Older records were sealed under
    /// the record's scope and still open with it (`open_audit_value`).
    fn seal_audit(
        &self,
        tenant: &str,
        entity_id: &str,
        field: &str,
        value: &str,
    ) -> Result<String> {
        let subject = Scope::Subject(tenant.into(), entity_id.into());
        self.ring.ensure(&subject)?;
        Ok(self
            .ring
            .seal_str(&subject, &aad(tenant, "audit", entity_id, field), value)?)
    }
}

impl Change<'_> {
    /// Seals `new` into the record's field `slot` and records the change
    /// from `old` (none when the record is created).
    pub(super) fn set(
        &mut self,
        field: &str,
        slot: &mut String,
        old: Option<&str>,
        new: &str,
    ) -> Result<()> {
        let r = &self.record;
        *slot = self.repo.ring.seal_str(
            &self.scope,
            &aad(&self.tenant, &r.entity, &r.entity_id, field),
            new,
        )?;
        let old = old.map(|v| self.seal(field, v)).transpose()?;
        let new = self.seal(field, new)?;
        self.push(|e| e.sealed(field, old, Some(new)));
        Ok(())
    }

    /// Records that a personal value goes with its record.
    pub(super) fn removed(&mut self, field: &str, old: &str) -> Result<()> {
        let old = self.seal(field, old)?;
        self.push(|e| e.sealed(field, Some(old), None));
        Ok(())
    }

    /// Records a field whose values are not personal, in clear.
    pub(super) fn clear(
        &mut self,
        field: &str,
        old: Option<impl std::fmt::Display>,
        new: Option<impl std::fmt::Display>,
    ) {
        self.push(|e| e.clear(field, old, new));
    }

    pub(super) fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    fn seal(&self, field: &str, value: &str) -> Result<String> {
        self.repo
            .seal_audit(&self.tenant, &self.record.entity_id, field, value)
    }

    fn push(&mut self, f: impl FnOnce(Entry) -> Entry) {
        self.entries.push(f(self.record.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;
    use crate::store::Batch;

    #[test]
    fn a_personal_value_opens_from_the_record_and_the_trail_until_shredded() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let scope = Scope::Tenant(t.clone());
        let mut c = repo.change("u_a", "change", &t, &scope, ("user", "u_b"));
        let mut slot = String::new();
        c.set("name", &mut slot, Some("Old Name"), "New Name")
            .unwrap();
        c.clear("role", Some("Host"), None::<&str>);
        let entries = c.into_entries();
        assert_eq!(entries.len(), 2);
        // The record's field opens under the record's scope and place only.
        let place = aad(&t, "user", "u_b", "name");
        assert_eq!(
            repo.ring.open_str(&scope, &place, &slot).unwrap(),
            "New Name"
        );
        assert!(repo
            .ring
            .open_str(&scope, &aad(&t, "user", "u_b", "email"), &slot)
            .is_err());
        // Neither value stands in clear in the trail.
        let e = &entries[0];
        assert_eq!((e.actor.as_str(), e.action.as_str()), ("u_a", "change"));
        assert_eq!(e.field.as_deref(), Some("name"));
        for v in [&e.old, &e.new] {
            assert!(!v.as_ref().unwrap().contains("Name"));
        }
        assert_eq!(entries[1].old.as_deref(), Some("=Host"));
        assert_eq!(entries[1].new, None);
        repo.commit(&t, Batch::default(), entries).unwrap();
        let records = crate::audit::list(repo.store.as_ref(), &t, 0, 100).unwrap();
        let rec = records
            .iter()
            .find(|r| r.field.as_deref() == Some("name"))
            .unwrap();
        assert_eq!(
            repo.open_audit_value(rec),
            (Some("Old Name".into()), Some("New Name".into()))
        );
        // Erasing the person shreds what the trail kept of them.
        repo.ring
            .shred(&Scope::Subject(t.clone(), "u_b".into()))
            .unwrap();
        let unreadable = Some("(unreadable: key deleted)".to_owned());
        assert_eq!(repo.open_audit_value(rec), (unreadable.clone(), unreadable));
    }
}
