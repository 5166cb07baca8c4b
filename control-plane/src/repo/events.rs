//! Events and their streams.

use super::*;

impl Repo {
    pub fn create_event(&self, actor: &str, mut event: Event) -> Result<Event> {
        event.id = new_id("e");
        event.created_at = now();
        event.ended_at = None;
        validate_event(&event)?;
        self.ring
            .ensure(&Scope::Event(event.tenant.clone(), event.id.clone()))?;
        let _g = self.lock()?;
        let mut b = Batch::default();
        b.put(
            Table::Events,
            key(&[&event.tenant, &event.id]),
            encode(&event),
        );
        self.commit(
            &event.tenant,
            b,
            vec![Entry::new(actor, "create", "event", &event.id)],
        )?;
        Ok(event)
    }

    pub fn event(&self, tenant: &str, id: &str) -> Result<Event> {
        if !valid_id("e", id) {
            return Err(RepoError::NotFound);
        }
        self.get(Table::Events, &key(&[tenant, id]))
    }

    pub fn events(&self, tenant: &str) -> Result<Vec<Event>> {
        self.scan(Table::Events, &prefix(&[tenant]))
    }

    pub fn update_event(&self, actor: &str, event: &Event) -> Result<()> {
        validate_event(event)?;
        let _g = self.lock()?;
        self.event(&event.tenant, &event.id)?;
        let mut b = Batch::default();
        b.put(
            Table::Events,
            key(&[&event.tenant, &event.id]),
            encode(event),
        );
        self.commit(
            &event.tenant,
            b,
            vec![Entry::new(actor, "change", "event", &event.id)],
        )
    }

    /// Ends an event now: viewers' and publishers' tokens are revoked.
    pub fn end_event(&self, actor: &str, tenant: &str, id: &str) -> Result<Event> {
        let _g = self.lock()?;
        let mut event = self.event(tenant, id)?;
        event.ended_at = Some(now());
        let mut b = Batch::default();
        b.put(Table::Events, key(&[tenant, id]), encode(&event));
        self.commit(tenant, b, vec![Entry::new(actor, "end", "event", id)])?;
        self.revoke_locked(RevocationKind::Event, tenant, id)?;
        Ok(event)
    }

    /// Deletes an event with its participants, streams and keys (DATA-7).
    pub fn delete_event(&self, actor: &str, tenant: &str, id: &str) -> Result<()> {
        let _g = self.lock()?;
        self.event(tenant, id)?;
        journal(
            self.keys.as_ref(),
            &JournalEntry::Event {
                tenant: tenant.into(),
                event: id.into(),
            },
        )?;
        // Keys first: a crash after this leaves only unreadable ciphertext.
        let mut scopes = vec![Scope::Event(tenant.into(), id.into())];
        scopes.extend(
            self.scan::<Participant>(Table::Participants, &prefix(&[tenant, id]))?
                .into_iter()
                .map(|p| Scope::Subject(tenant.into(), p.id)),
        );
        self.ring.shred_all(&scopes)?;
        self.purge_event_data(tenant, id)?;
        self.commit(
            tenant,
            Batch::default(),
            vec![Entry::new(actor, "delete", "event", id)],
        )?;
        self.revoke_locked(RevocationKind::EventDeleted, tenant, id)?;
        Ok(())
    }

    pub(super) fn purge_event_data(&self, tenant: &str, id: &str) -> Result<()> {
        let participants: Vec<Participant> =
            self.scan(Table::Participants, &prefix(&[tenant, id]))?;
        let mut b = Batch::default();
        b.delete(Table::Events, key(&[tenant, id]));
        b.delete_prefix(Table::Participants, prefix(&[tenant, id]));
        b.delete_prefix(Table::Streams, prefix(&[tenant, id]));
        b.delete_prefix(Table::Consent, prefix(&[tenant, id]));
        b.delete_prefix(Table::Index, prefix(&[tenant, "event", id]));
        for p in participants {
            b.delete(Table::Index, key(&[tenant, "participant-event", &p.id]));
            self.end_sessions(&mut b, tenant, &p.id, None)?;
        }
        self.store.write(b)?;
        Ok(())
    }

    pub fn create_stream(
        &self,
        actor: &str,
        tenant: &str,
        event: &str,
        name: &str,
    ) -> Result<Stream> {
        if !valid_stream_name(name) {
            return Err(RepoError::Invalid(
                "stream name must be 1 to 32 of a-z, 0-9 and -".into(),
            ));
        }
        let _g = self.lock()?;
        self.event(tenant, event)?;
        let k = key(&[tenant, event, name]);
        if self.store.get(Table::Streams, &k)?.is_some() {
            return Err(RepoError::Conflict("a stream with this name exists".into()));
        }
        let stream = Stream {
            tenant: tenant.into(),
            event: event.into(),
            name: name.into(),
            created_at: now(),
            credential_issued_at: None,
        };
        let mut b = Batch::default();
        b.put(Table::Streams, k, encode(&stream));
        self.commit(
            tenant,
            b,
            vec![Entry::new(
                actor,
                "create",
                "stream",
                &format!("{event}/{name}"),
            )],
        )?;
        Ok(stream)
    }

    pub fn streams(&self, tenant: &str, event: &str) -> Result<Vec<Stream>> {
        self.event(tenant, event)?;
        self.scan(Table::Streams, &prefix(&[tenant, event]))
    }

    pub fn stream(&self, tenant: &str, event: &str, name: &str) -> Result<Stream> {
        if !valid_stream_name(name) {
            return Err(RepoError::NotFound);
        }
        self.get(Table::Streams, &key(&[tenant, event, name]))
    }

    pub fn delete_stream(&self, actor: &str, tenant: &str, event: &str, name: &str) -> Result<()> {
        let _g = self.lock()?;
        self.stream(tenant, event, name)?;
        let mut b = Batch::default();
        b.delete(Table::Streams, key(&[tenant, event, name]));
        self.commit(
            tenant,
            b,
            vec![Entry::new(
                actor,
                "delete",
                "stream",
                &format!("{event}/{name}"),
            )],
        )?;
        self.revoke_locked(RevocationKind::Stream, tenant, &format!("{event}/{name}"))?;
        Ok(())
    }

    /// Issues the stream's publish credential (the encoder's stream key);
    /// earlier credentials of the stream are revoked.
    pub fn issue_publish_credential(
        &self,
        actor: &str,
        tenant: &str,
        event: &str,
        name: &str,
    ) -> Result<(String, strom_token::Claims)> {
        let ev = self.event(tenant, event)?;
        let _g = self.lock()?;
        let mut stream = self.stream(tenant, event, name)?;
        if stream.credential_issued_at.is_some() {
            self.revoke_locked(RevocationKind::Stream, tenant, &format!("{event}/{name}"))?;
        }
        let grant = Grant {
            subject: format!("s_{event}_{name}"),
            tenant: tenant.into(),
            event: event.into(),
            stream: Some(name.into()),
            action: Action::Publish,
            lifetime_secs: strom_token::MAX_PUBLISH_SECS,
            not_after: Some(ev.access_until()),
            role: None,
            via: None,
        };
        let minted = self.mint(&grant)?;
        stream.credential_issued_at = Some(now());
        let mut b = Batch::default();
        b.put(Table::Streams, key(&[tenant, event, name]), encode(&stream));
        self.commit(
            tenant,
            b,
            vec![Entry::new(
                actor,
                "issue-credential",
                "stream",
                &format!("{event}/{name}"),
            )],
        )?;
        Ok(minted)
    }
}

pub(super) fn validate_event(e: &Event) -> Result<()> {
    clean_text("title", &e.title, 200)?;
    if e.ends_at <= e.starts_at {
        return Err(RepoError::Invalid("ends_at must be after starts_at".into()));
    }
    if e.ends_at - e.starts_at > time::Duration::days(14) {
        return Err(RepoError::Invalid("an event lasts at most 14 days".into()));
    }
    if !(1..=3650).contains(&e.retention_days) {
        return Err(RepoError::Invalid(
            "retention_days must be 1 to 3650".into(),
        ));
    }
    if e.form.len() > 50 {
        return Err(RepoError::Invalid(
            "a registration form has at most 50 fields".into(),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for f in &e.form {
        let ok = (1..=40).contains(&f.name.len())
            && f.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok || ["email", "name", "password"].contains(&f.name.as_str()) || !names.insert(&f.name)
        {
            return Err(RepoError::Invalid("form field names are unique, 1 to 40 of a-z, 0-9 and _, and not email, name or password".into()));
        }
        clean_text("label", &f.label, 200)?;
    }
    if e.access == AccessMode::Domains && e.domains.is_empty() {
        return Err(RepoError::Invalid(
            "access by domain needs at least one domain".into(),
        ));
    }
    for d in &e.domains {
        let ok = (3..=253).contains(&d.len())
            && d.contains('.')
            && d.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !ok {
            return Err(RepoError::Invalid(
                "domains must be lower-case host names".into(),
            ));
        }
    }
    if e.privacy_notice.len() > 2000 {
        return Err(RepoError::Invalid(
            "privacy_notice is at most 2000 characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    fn event(tenant: &str) -> Event {
        super::super::test_event(tenant, now())
    }

    #[test]
    fn events_are_checked_when_created() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let ok = repo.create_event("u", event(&t)).unwrap();
        assert!(repo.event(&t, &ok.id).is_ok());
        let mut bad = Vec::new();
        let mut e = event(&t);
        e.ends_at = e.starts_at;
        bad.push(e);
        let mut e = event(&t);
        e.ends_at = e.starts_at + time::Duration::days(15);
        bad.push(e);
        let mut e = event(&t);
        e.retention_days = 0;
        bad.push(e);
        let mut e = event(&t);
        e.access = AccessMode::Domains;
        bad.push(e);
        let mut e = event(&t);
        e.access = AccessMode::Domains;
        e.domains = vec!["Example.COM".into()];
        bad.push(e);
        for e in bad {
            assert!(
                matches!(
                    repo.create_event("u", e.clone()),
                    Err(RepoError::Invalid(_))
                ),
                "{e:?}"
            );
        }
        assert_eq!(repo.events(&t).unwrap().len(), 1);
    }

    #[test]
    fn a_deleted_event_is_gone_and_its_tokens_are_revoked() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let e = repo.create_event("u", event(&t)).unwrap();
        let seq = *repo.revocation_watch().borrow();
        repo.delete_event("u", &t, &e.id).unwrap();
        assert!(matches!(repo.event(&t, &e.id), Err(RepoError::NotFound)));
        let feed = repo.revocations_after(seq, Some(&t)).unwrap();
        assert!(feed
            .entries
            .iter()
            .any(|r| r.kind == RevocationKind::EventDeleted && r.id == e.id));
    }
}
