//! Tenants: settings, password policy, deletion.

use super::*;

impl Repo {
    pub fn create_tenant(&self, name: &str) -> Result<Tenant> {
        self.create_tenant_with_id(&new_id("t"), name)
    }

    /// Creates a tenant under a given id (tests whose relays carry
    /// broadcasts of a fixed tenant id).
    #[doc(hidden)]
    pub fn create_tenant_with_id(&self, id: &str, name: &str) -> Result<Tenant> {
        let name = clean_text("name", name, 120)?;
        let tenant = Tenant {
            id: id.into(),
            name,
            created_at: now(),
            settings: TenantSettings::default(),
        };
        self.ring.ensure(&Scope::Tenant(tenant.id.clone()))?;
        let _g = self.lock()?;
        let mut b = Batch::default();
        b.put(Table::Tenants, tenant.id.clone(), encode(&tenant));
        self.commit(
            &tenant.id,
            b,
            vec![Entry::new("system", "create", "tenant", &tenant.id)],
        )?;
        self.follow_tenants()?;
        Ok(tenant)
    }

    pub fn tenant(&self, id: &str) -> Result<Tenant> {
        self.get(Table::Tenants, id.as_bytes())
    }

    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        self.scan(Table::Tenants, b"")
    }

    pub fn update_tenant(&self, actor: &str, tenant: &Tenant) -> Result<()> {
        tenant
            .settings
            .password_policy
            .validate()
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        let lm = &tenant.settings.lockout_minutes;
        for m in [lm.owner, lm.event_manager, lm.moderator, lm.participant] {
            if !(1..=999).contains(&m) {
                return Err(RepoError::Invalid(
                    "lockout minutes must be 1 to 999".into(),
                ));
            }
        }
        if !(5..=1440).contains(&tenant.settings.session_idle_minutes) {
            return Err(RepoError::Invalid(
                "session_idle_minutes must be 5 to 1440".into(),
            ));
        }
        let _g = self.lock()?;
        let mut b = Batch::default();
        b.put(Table::Tenants, tenant.id.clone(), encode(tenant));
        self.commit(
            &tenant.id,
            b,
            vec![Entry::new(actor, "change", "tenant", &tenant.id).field("settings")],
        )
    }

    /// Deletes a tenant for good: journal it (so a restore cannot bring it
    /// back), destroy its keys, then its data, then revoke its tokens.
    pub fn delete_tenant(&self, id: &str) -> Result<()> {
        self.tenant(id)?;
        let _g = self.lock()?;
        journal(
            self.keys.as_ref(),
            &JournalEntry::Tenant { tenant: id.into() },
        )?;
        // What must stop working, read before the data goes: its events'
        // tokens and its agents' credentials (and their tickets).
        let events = self.scan::<Event>(Table::Events, &prefix(&[id]))?;
        let agents = self.credentials(id)?;
        self.ring.shred(&Scope::Tenant(id.into()))?;
        self.purge_tenant_data(id)?;
        let at = OffsetDateTime::now_utc();
        let mut entries: Vec<(RevocationKind, &str, &str, OffsetDateTime)> = events
            .iter()
            .map(|e| (RevocationKind::EventDeleted, id, e.id.as_str(), at))
            .collect();
        entries.extend(
            agents
                .iter()
                .map(|c| (RevocationKind::Subject, id, c.id.as_str(), at)),
        );
        if !entries.is_empty() {
            self.append_revocations(&entries)?;
        }
        self.follow_tenants()?;
        Ok(())
    }

    pub(super) fn purge_tenant_data(&self, id: &str) -> Result<()> {
        let mut b = Batch::default();
        b.delete(Table::Tenants, id.to_owned());
        for t in Table::DATA {
            if t != Table::Tenants && t != Table::Revocations && t != Table::Edges {
                b.delete_prefix(t, prefix(&[id]));
            }
        }
        b.delete(Table::Meta, key(&["audit-head", id]));
        self.store.write(b)?;
        Ok(())
    }

    /// Replays the deletion journal (after a restore, before serving).
    pub fn replay_journal(&self) -> Result<usize> {
        let entries: Vec<JournalEntry> = self
            .keys
            .scan(Table::Journal, b"", usize::MAX)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect::<Result<_>>()?;
        let mut replayed = 0;
        for entry in entries {
            match entry {
                JournalEntry::Tenant { tenant } => {
                    if self.store.get(Table::Tenants, tenant.as_bytes())?.is_some()
                        || !self
                            .store
                            .scan(Table::Events, &prefix(&[&tenant]), 1)?
                            .is_empty()
                    {
                        self.purge_tenant_data(&tenant)?;
                        replayed += 1;
                    }
                }
                JournalEntry::Event { tenant, event } => {
                    if self
                        .store
                        .get(Table::Events, &key(&[&tenant, &event]))?
                        .is_some()
                    {
                        self.purge_event_data(&tenant, &event)?;
                        replayed += 1;
                    }
                }
                JournalEntry::Participant {
                    tenant,
                    event,
                    participant,
                } => {
                    let row = key(&[&tenant, &event, &participant]);
                    if let Some(raw) = self.store.get(Table::Participants, &row)? {
                        let p: Participant = decode(&raw)?;
                        let email = self.participant_view(&p).ok().map(|v| v.email);
                        let mut b = Batch::default();
                        self.purge_participant(
                            &mut b,
                            &tenant,
                            &event,
                            &participant,
                            email.as_deref(),
                        )?;
                        self.store.write(b)?;
                        replayed += 1;
                    }
                }
                JournalEntry::User {
                    tenant,
                    user,
                    email_index,
                } => {
                    if self
                        .store
                        .get(Table::Users, &key(&[&tenant, &user]))?
                        .is_some()
                    {
                        let mut b = Batch::default();
                        b.delete(Table::Users, key(&[&tenant, &user]));
                        b.delete(Table::Index, email_index.into_bytes());
                        self.end_sessions(&mut b, &tenant, &user, None)?;
                        self.store.write(b)?;
                        replayed += 1;
                    }
                }
            }
        }
        Ok(replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    #[test]
    fn a_deleted_tenant_is_gone_its_events_revoked_and_others_untouched() {
        let repo = in_memory();
        let acme = repo.create_tenant("Acme").unwrap();
        let globex = repo.create_tenant("Globex").unwrap();
        let before = repo.revocations_after(0, None).unwrap().entries.len();
        repo.delete_tenant(&acme.id).unwrap();
        assert!(matches!(repo.tenant(&acme.id), Err(RepoError::NotFound)));
        assert!(repo.tenant(&globex.id).is_ok());
        assert!(matches!(
            repo.delete_tenant(&acme.id),
            Err(RepoError::NotFound)
        ));
        // The deletion is journalled: a replay after a restore finds nothing
        // left to purge here.
        assert_eq!(repo.replay_journal().unwrap(), 0);
        assert!(repo.revocations_after(0, None).unwrap().entries.len() >= before);
    }

    #[test]
    fn tenant_names_are_checked() {
        let repo = in_memory();
        for bad in ["", "a\u{0}b", &"x".repeat(500)] {
            assert!(repo.create_tenant(bad).is_err(), "{bad:?}");
        }
    }
}
