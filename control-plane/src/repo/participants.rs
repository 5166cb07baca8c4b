//! Participants, their consent, attendance and erasure.

use super::*;

/// What a rectification changes; `None` leaves it as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rectification<'a> {
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub fields: Option<&'a BTreeMap<String, String>>,
}

impl Repo {
    pub(super) fn participant_email_index(
        &self,
        tenant: &str,
        event: &str,
        email: &str,
    ) -> Result<Vec<u8>> {
        let bi = self.ring.blind_index(
            &Scope::Event(tenant.into(), event.into()),
            "participant-email",
            email,
        )?;
        Ok(key(&[tenant, "event", event, "email", &bi]))
    }

    /// Creates participants in one atomic batch (all or none): an import
    /// with a duplicate or bad row creates nobody.
    pub fn create_participants(
        &self,
        actor: &str,
        tenant: &str,
        event: &str,
        rows: Vec<NewParticipant>,
    ) -> Result<Vec<ParticipantView>> {
        let ev = self.event(tenant, event)?;
        let with_password = rows.iter().filter(|r| r.password.is_some()).count();
        if with_password > MAX_PASSWORDS_PER_IMPORT {
            return Err(RepoError::Invalid(format!(
                "at most {MAX_PASSWORDS_PER_IMPORT} participants with a password per import ({with_password} given); import the rest in further files, or let them log in by magic link"
            )));
        }
        let scope = Scope::Event(tenant.into(), event.into());
        let ids: Vec<String> = rows.iter().map(|_| new_id("p")).collect();
        // One key per person for what the audit trail keeps of them, made
        // in one write.
        self.ring.ensure_all(
            &ids.iter()
                .map(|id| Scope::Subject(tenant.into(), id.clone()))
                .collect::<Vec<_>>(),
        )?;
        let mut prepared = Vec::new();
        for (row, id) in rows.into_iter().zip(ids) {
            let email = normalise_email(&row.email)?;
            let name = clean_text("name", &row.name, 120)?;
            let fields = check_fields(&ev, &row.fields)?;
            let fields_json = serde_json::to_string(&fields).expect("serialises");
            let credential = Credential {
                // Bulk hashing never takes the permits logins wait for (F19).
                password: row.password.as_deref().map(password::hash_password_bulk),
                password_set_at: row.password.as_ref().map(|_| now()),
                must_change: row.password.is_some(),
                ..Default::default()
            };
            let mut p = Participant {
                id: id.clone(),
                tenant: tenant.into(),
                event: event.into(),
                email: String::new(),
                name: String::new(),
                fields: String::new(),
                status: row.status,
                source: row.source,
                created_at: now(),
                consent: None,
                credential,
                attended_secs: 0,
                attendance_reported_at: None,
                consent_withdrawn: false,
            };
            let mut audit = self.change(actor, "create", tenant, &scope, ("participant", &id));
            audit.set("email", &mut p.email, None, &email)?;
            audit.set("name", &mut p.name, None, &name)?;
            audit.set("fields", &mut p.fields, None, &fields_json)?;
            prepared.push((
                p,
                self.participant_email_index(tenant, event, &email)?,
                audit.into_entries(),
                row.consent,
            ));
        }
        let _g = self.lock()?;
        let mut seen = std::collections::HashSet::new();
        let mut b = Batch::default();
        let mut entries = Vec::new();
        let mut views = Vec::new();
        for (mut p, idx, audit, consent) in prepared {
            if !seen.insert(idx.clone()) || self.store.get(Table::Index, &idx)?.is_some() {
                return Err(RepoError::Conflict(
                    "a participant with this e-mail address exists in this event".into(),
                ));
            }
            if let Some(notice) = consent {
                let record = ConsentRecord {
                    id: new_id("c"),
                    participant: p.id.clone(),
                    event: event.into(),
                    notice,
                    given: true,
                    at: now(),
                };
                p.consent = Some(record.id.clone());
                b.put(
                    Table::Consent,
                    key(&[tenant, event, &p.id, &record.id]),
                    encode(&record),
                );
                entries.push(Entry::new(&p.id, "consent", "participant", &p.id).clear(
                    "privacy-notice",
                    None::<&str>,
                    Some(&record.id),
                ));
            }
            b.put(
                Table::Participants,
                key(&[tenant, event, &p.id]),
                encode(&p),
            );
            b.put(Table::Index, idx, p.id.clone());
            b.put(
                Table::Index,
                key(&[tenant, "participant-event", &p.id]),
                event.to_owned(),
            );
            entries.extend(audit);
            views.push(self.participant_view(&p)?);
        }
        self.commit(tenant, b, entries)?;
        Ok(views)
    }

    pub fn participant(&self, tenant: &str, event: &str, id: &str) -> Result<Participant> {
        if !valid_id("p", id) || !valid_id("e", event) {
            return Err(RepoError::NotFound);
        }
        self.get(Table::Participants, &key(&[tenant, event, id]))
    }

    pub fn participant_by_email(
        &self,
        tenant: &str,
        event: &str,
        email: &str,
    ) -> Result<Participant> {
        let email = normalise_email(email).map_err(|_| RepoError::NotFound)?;
        self.event(tenant, event)?;
        let idx = self
            .participant_email_index(tenant, event, &email)
            .map_err(|_| RepoError::NotFound)?;
        let id = self
            .store
            .get(Table::Index, &idx)?
            .ok_or(RepoError::NotFound)?;
        self.participant(tenant, event, &String::from_utf8_lossy(&id))
    }

    pub fn participants(&self, tenant: &str, event: &str) -> Result<Vec<Participant>> {
        self.event(tenant, event)?;
        self.scan(Table::Participants, &prefix(&[tenant, event]))
    }

    pub fn participant_view(&self, p: &Participant) -> Result<ParticipantView> {
        let scope = Scope::Event(p.tenant.clone(), p.event.clone());
        let fields = self.ring.open_str(
            &scope,
            &aad(&p.tenant, "participant", &p.id, "fields"),
            &p.fields,
        )?;
        Ok(ParticipantView {
            id: p.id.clone(),
            event: p.event.clone(),
            email: self.ring.open_str(
                &scope,
                &aad(&p.tenant, "participant", &p.id, "email"),
                &p.email,
            )?,
            name: self.ring.open_str(
                &scope,
                &aad(&p.tenant, "participant", &p.id, "name"),
                &p.name,
            )?,
            fields: serde_json::from_str(&fields).unwrap_or_default(),
            status: p.status,
            source: p.source,
            created_at: p.created_at,
            must_change_password: p.credential.must_change,
            consent: p.consent.clone(),
            attended_secs: p.attended_secs,
        })
    }

    /// Rectification (DATA-6): changes name, e-mail or form answers.
    pub fn update_participant(
        &self,
        actor: &str,
        tenant: &str,
        event: &str,
        id: &str,
        to: Rectification<'_>,
    ) -> Result<ParticipantView> {
        let Rectification {
            name,
            email,
            fields,
        } = to;
        let ev = self.event(tenant, event)?;
        let scope = Scope::Event(tenant.into(), event.into());
        let _g = self.lock()?;
        let mut p = self.participant(tenant, event, id)?;
        if p.status == ParticipantStatus::Blocked {
            return Err(RepoError::Conflict(
                "the participant's data is blocked".into(),
            ));
        }
        let old = self.participant_view(&p)?;
        let mut b = Batch::default();
        let mut change = self.change(actor, "change", tenant, &scope, ("participant", id));
        if let Some(name) = name {
            let name = clean_text("name", name, 120)?;
            if name != old.name {
                change.set("name", &mut p.name, Some(&old.name), &name)?;
            }
        }
        if let Some(email) = email {
            let email = normalise_email(email)?;
            if email != old.email {
                let idx = self.participant_email_index(tenant, event, &email)?;
                if self.store.get(Table::Index, &idx)?.is_some() {
                    return Err(RepoError::Conflict(
                        "a participant with this e-mail address exists in this event".into(),
                    ));
                }
                b.delete(
                    Table::Index,
                    self.participant_email_index(tenant, event, &old.email)?,
                );
                b.put(Table::Index, idx, id.to_owned());
                change.set("email", &mut p.email, Some(&old.email), &email)?;
            }
        }
        if let Some(fields) = fields {
            let fields = check_fields(&ev, fields)?;
            if fields != old.fields {
                let new_json = serde_json::to_string(&fields).expect("serialises");
                let old_json = serde_json::to_string(&old.fields).expect("serialises");
                change.set("fields", &mut p.fields, Some(&old_json), &new_json)?;
            }
        }
        b.put(Table::Participants, key(&[tenant, event, id]), encode(&p));
        self.commit(tenant, b, change.into_entries())?;
        self.participant_view(&p)
    }

    /// Changes a participant's status; leaving Active revokes their tokens.
    pub fn set_participant_status(
        &self,
        actor: &str,
        tenant: &str,
        event: &str,
        id: &str,
        status: ParticipantStatus,
    ) -> Result<ParticipantView> {
        let _g = self.lock()?;
        let mut p = self.participant(tenant, event, id)?;
        let old = p.status;
        if old == status {
            return self.participant_view(&p);
        }
        p.status = status;
        let mut b = Batch::default();
        b.put(Table::Participants, key(&[tenant, event, id]), encode(&p));
        if status != ParticipantStatus::Active {
            self.end_sessions(&mut b, tenant, id, None)?;
        }
        let action = match status {
            ParticipantStatus::Blocked => "block",
            ParticipantStatus::Deactivated => "deactivate",
            ParticipantStatus::Active => "activate",
            _ => "change",
        };
        self.commit(
            tenant,
            b,
            vec![Entry::new(actor, action, "participant", id).clear(
                "status",
                Some(format!("{old:?}")),
                Some(format!("{status:?}")),
            )],
        )?;
        if status != ParticipantStatus::Active && old == ParticipantStatus::Active {
            self.revoke_locked(RevocationKind::Subject, tenant, id)?;
        }
        self.participant_view(&p)
    }

    /// Erasure (DATA-6): deletes the participant, or blocks them while the
    /// event is under a retention hold. Returns whether data was deleted.
    pub fn erase_participant(
        &self,
        actor: &str,
        tenant: &str,
        event: &str,
        id: &str,
    ) -> Result<bool> {
        let ev = self.event(tenant, event)?;
        if ev.legal_hold_until.is_some_and(|h| h > now()) {
            self.set_participant_status(actor, tenant, event, id, ParticipantStatus::Blocked)?;
            return Ok(false);
        }
        let scope = Scope::Event(tenant.into(), event.into());
        let _g = self.lock()?;
        let p = self.participant(tenant, event, id)?;
        let view = self.participant_view(&p)?;
        let mut b = Batch::default();
        self.purge_participant(&mut b, tenant, event, id, Some(&view.email))?;
        let mut change = self.change(actor, "delete", tenant, &scope, ("participant", id));
        change.removed("email", &view.email)?;
        change.removed("name", &view.name)?;
        let entries = change.into_entries();
        // Journalled (a restored backup must not bring the person back),
        // then their audit key shredded (the values above included), then
        // the data.
        journal(
            self.keys.as_ref(),
            &JournalEntry::Participant {
                tenant: tenant.into(),
                event: event.into(),
                participant: id.into(),
            },
        )?;
        self.ring.shred(&Scope::Subject(tenant.into(), id.into()))?;
        self.commit(tenant, b, entries)?;
        self.revoke_locked(RevocationKind::Subject, tenant, id)?;
        Ok(true)
    }

    /// Adds to `b` the deletion of a participant's record, indexes and
    /// sessions. `email` (opened) finds the e-mail index; without it (the
    /// event key is gone) the index shreds with the event key anyway.
    pub(super) fn purge_participant(
        &self,
        b: &mut Batch,
        tenant: &str,
        event: &str,
        id: &str,
        email: Option<&str>,
    ) -> Result<()> {
        b.delete(Table::Participants, key(&[tenant, event, id]));
        if let Some(email) = email {
            b.delete(
                Table::Index,
                self.participant_email_index(tenant, event, email)?,
            );
        }
        b.delete(Table::Index, key(&[tenant, "participant-event", id]));
        self.end_sessions(b, tenant, id, None)?;
        Ok(())
    }

    /// Records consent or its withdrawal: a new immutable record each time.
    pub fn record_consent(
        &self,
        tenant: &str,
        event: &str,
        id: &str,
        notice: &str,
        given: bool,
    ) -> Result<ConsentRecord> {
        let _g = self.lock()?;
        let mut p = self.participant(tenant, event, id)?;
        let record = ConsentRecord {
            id: new_id("c"),
            participant: id.into(),
            event: event.into(),
            notice: notice.into(),
            given,
            at: now(),
        };
        p.consent = given.then(|| record.id.clone());
        p.consent_withdrawn = !given;
        let mut b = Batch::default();
        b.put(
            Table::Consent,
            key(&[tenant, event, id, &record.id]),
            encode(&record),
        );
        b.put(Table::Participants, key(&[tenant, event, id]), encode(&p));
        let action = if given {
            "consent"
        } else {
            "consent-withdrawn"
        };
        self.commit(
            tenant,
            b,
            vec![Entry::new(id, action, "participant", id).clear(
                "privacy-notice",
                None::<&str>,
                Some(&record.id),
            )],
        )?;
        if !given {
            self.revoke_locked(RevocationKind::Subject, tenant, id)?;
        }
        Ok(record)
    }

    pub fn consents(&self, tenant: &str, event: &str, id: &str) -> Result<Vec<ConsentRecord>> {
        self.scan(Table::Consent, &prefix(&[tenant, event, id]))
    }

    /// Credits viewing time. A report counts at most 600 s and at most the
    /// time since the last credited report (plus a few seconds of slack),
    /// only while the event runs, and the total never exceeds the event's
    /// length: reporting often or after the event adds nothing. Returns the
    /// seconds credited.
    pub fn add_attendance(&self, tenant: &str, event: &str, id: &str, secs: u64) -> Result<u64> {
        let ev = self.event(tenant, event)?;
        let _g = self.lock()?;
        let mut p = self.participant(tenant, event, id)?;
        let at = now();
        if at < ev.starts_at - time::Duration::minutes(EVENT_GRACE_MINUTES)
            || at > ev.access_until()
        {
            return Err(RepoError::Conflict("the event is not running".into()));
        }
        let since_last = p
            .attendance_reported_at
            .map(|last| (at - last).whole_seconds().max(0) as u64 + ATTENDANCE_SLACK_SECS)
            .unwrap_or(MAX_ATTENDANCE_REPORT_SECS);
        let length = (ev.access_until() - ev.starts_at).whole_seconds().max(0) as u64;
        let credited = secs
            .min(MAX_ATTENDANCE_REPORT_SECS)
            .min(since_last)
            .min(length.saturating_sub(p.attended_secs));
        p.attended_secs += credited;
        p.attendance_reported_at = Some(at);
        let mut b = Batch::default();
        b.put(Table::Participants, key(&[tenant, event, id]), encode(&p));
        self.store.write(b)?;
        Ok(credited)
    }
}

/// The most one attendance report credits.
pub const MAX_ATTENDANCE_REPORT_SECS: u64 = 600;
/// Reports may arrive this much later than the time they cover.
pub(super) const ATTENDANCE_SLACK_SECS: u64 = 5;

/// Participants with a password one import may create: each costs an
/// argon2 hash (~45 ms of one core), and imports hash on one core at a time
/// beside the logins, so this bounds one import to about 90 s.
pub const MAX_PASSWORDS_PER_IMPORT: usize = strom_identity::participants_csv::MAX_PASSWORD_ROWS;

/// What to create for one participant.
#[derive(Debug, Clone)]
pub struct NewParticipant {
    pub email: String,
    pub name: String,
    pub fields: BTreeMap<String, String>,
    pub password: Option<String>,
    pub status: ParticipantStatus,
    pub source: ParticipantSource,
    /// The privacy notice agreed to, when the participant registers.
    pub consent: Option<String>,
}

pub(super) fn check_fields(
    event: &Event,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    use strom_identity::participants_csv::FieldKind;
    let mut out = BTreeMap::new();
    for (k, _) in given.iter() {
        if !event.form.iter().any(|f| &f.name == k) {
            return Err(RepoError::Invalid(format!(
                "field {k:?} is not in the registration form"
            )));
        }
    }
    for f in &event.form {
        let v = given.get(&f.name).map(|s| s.trim()).unwrap_or("");
        if v.is_empty() {
            if f.required {
                return Err(RepoError::Invalid(format!(
                    "field {:?} is required",
                    f.name
                )));
            }
            continue;
        }
        if v.chars().count() > 500 || v.chars().any(|c| c.is_control()) {
            return Err(RepoError::Invalid(format!(
                "field {:?} must be at most 500 characters without control characters",
                f.name
            )));
        }
        match &f.kind {
            FieldKind::Email => {
                normalise_email(v).map_err(|_| {
                    RepoError::Invalid(format!("field {:?} must be an e-mail address", f.name))
                })?;
            }
            FieldKind::Select(options) if !options.iter().any(|o| o == v) => {
                return Err(RepoError::Invalid(format!(
                    "field {:?} must be one of its options",
                    f.name
                )));
            }
            FieldKind::Checkbox if !matches!(v, "true" | "false") => {
                return Err(RepoError::Invalid(format!(
                    "field {:?} must be true or false",
                    f.name
                )));
            }
            _ => {}
        }
        out.insert(f.name.clone(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{in_memory, test_event};
    use super::*;

    fn new(email: &str) -> NewParticipant {
        NewParticipant {
            email: email.into(),
            name: "Erika Mustermann".into(),
            fields: BTreeMap::new(),
            password: None,
            status: ParticipantStatus::Active,
            source: ParticipantSource::Imported,
            consent: None,
        }
    }

    /// One participant created by the owner.
    fn one(repo: &Repo, t: &str, e: &str, email: &str) -> ParticipantView {
        let mut made = repo
            .create_participants("u_owner", t, e, vec![new(email)])
            .unwrap();
        made.remove(0)
    }

    /// A tenant and an event running now.
    fn running(repo: &Repo) -> (String, String) {
        let t = repo.create_tenant("Acme").unwrap().id;
        let start = now() - time::Duration::minutes(10);
        let e = repo.create_event("u_owner", test_event(&t, start)).unwrap();
        (t, e.id)
    }

    #[test]
    fn an_import_with_one_bad_row_creates_nobody() {
        let repo = in_memory();
        let (t, e) = running(&repo);
        for bad in [
            vec![new("a@example.com"), new("not an address")],
            vec![new("a@example.com"), new("A@Example.com")],
            vec![new("a@example.com"), {
                let mut p = new("b@example.com");
                p.fields.insert("department".into(), "x".into());
                p
            }],
        ] {
            assert!(repo.create_participants("u_owner", &t, &e, bad).is_err());
            assert!(repo.participants(&t, &e).unwrap().is_empty());
        }
        one(&repo, &t, &e, "a@example.com");
        // The address is taken now, however it is written.
        assert!(repo
            .create_participants("u_owner", &t, &e, vec![new(" A@EXAMPLE.com ")])
            .is_err());
    }

    #[test]
    fn an_erased_participant_is_gone_and_the_trail_forgets_them_but_holds() {
        let repo = in_memory();
        let (t, e) = running(&repo);
        let p = one(&repo, &t, &e, "erika@example.com");
        let trail = |repo: &Repo| audit::list(repo.store.as_ref(), &t, 0, 1000).unwrap();
        let opened = |repo: &Repo| -> Vec<String> {
            trail(repo)
                .iter()
                .filter(|r| r.entity_id == p.id)
                .flat_map(|r| {
                    let (old, new) = repo.open_audit_value(r);
                    [old, new]
                })
                .flatten()
                .collect()
        };
        assert!(opened(&repo).contains(&"erika@example.com".to_owned()));
        assert!(repo.erase_participant("u_owner", &t, &e, &p.id).unwrap());
        assert!(matches!(
            repo.participant(&t, &e, &p.id),
            Err(RepoError::NotFound)
        ));
        assert!(matches!(
            repo.participant_by_email(&t, &e, "erika@example.com"),
            Err(RepoError::NotFound)
        ));
        // What the trail kept of them no longer opens, and the trail still
        // verifies.
        let after = opened(&repo);
        assert!(
            !after
                .iter()
                .any(|v| v.contains("erika") || v.contains("Erika")),
            "{after:?}"
        );
        assert!(trail(&repo)
            .iter()
            .any(|r| r.entity_id == p.id && r.action == "delete"));
        let (_, broken) = audit::verify(repo.store.as_ref(), &t).unwrap();
        assert!(broken.is_empty(), "{broken:?}");
    }

    #[test]
    fn attendance_reported_often_adds_nothing() {
        let repo = in_memory();
        let (t, e) = running(&repo);
        let p = one(&repo, &t, &e, "a@example.com");
        // One report counts at most 600 s, whatever it claims.
        assert_eq!(repo.add_attendance(&t, &e, &p.id, 100_000).unwrap(), 600);
        // Right after, only the time since (plus the slack) counts.
        let again = repo.add_attendance(&t, &e, &p.id, 600).unwrap();
        assert!(again <= ATTENDANCE_SLACK_SECS + 1, "{again}");
        // An event that has not started takes no reports.
        let later = repo
            .create_event("u_owner", test_event(&t, now() + time::Duration::days(1)))
            .unwrap();
        let q = one(&repo, &t, &later.id, "b@example.com");
        assert!(matches!(
            repo.add_attendance(&t, &later.id, &q.id, 60),
            Err(RepoError::Conflict(_))
        ));
    }

    #[test]
    fn consent_is_a_new_record_each_time() {
        let repo = in_memory();
        let (t, e) = running(&repo);
        let p = one(&repo, &t, &e, "a@example.com");
        let given = repo
            .record_consent(&t, &e, &p.id, "notice-v1", true)
            .unwrap();
        assert_eq!(
            repo.participant(&t, &e, &p.id).unwrap().consent,
            Some(given.id.clone())
        );
        repo.record_consent(&t, &e, &p.id, "notice-v1", false)
            .unwrap();
        let stored = repo.participant(&t, &e, &p.id).unwrap();
        assert!(stored.consent.is_none() && stored.consent_withdrawn);
        let records = repo.consents(&t, &e, &p.id).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records.iter().any(|r| r.given) && records.iter().any(|r| !r.given));
    }
}
