//! Relay and agent credentials: issued, listed, revoked (revoking one
//! revokes every ticket minted from it).

use super::*;

impl Repo {
    /// Mints a peer-agent enrolment credential for `tenant`: a relay
    /// credential scoped to the tenant, listed and revocable by its id
    /// (the token's subject); revoking it revokes its tickets too.
    pub fn issue_agent_credential(&self, actor: &str, tenant: &str) -> Result<(String, String)> {
        let id = crate::model::new_id("ag");
        let (token, _) = self.issue_credential(actor, tenant, &id, CredentialKind::Agent)?;
        Ok((id, token))
    }

    /// Mints a credential for one of the operator's relays (`subject`: its
    /// id, e.g. `edge-fra-1`), scoped by `role` (F9: only origins read SRT
    /// secrets and register media keys). Issuing again for a subject makes
    /// a fresh credential; earlier ones stay valid until revoked.
    pub fn issue_relay_credential(
        &self,
        actor: &str,
        role: RelayRole,
        subject: &str,
    ) -> Result<(String, CredentialRecord)> {
        let ok = (1..=64).contains(&subject.len())
            && subject
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && !subject.starts_with("agent");
        if !ok {
            return Err(RepoError::Invalid(
                "a relay's subject is 1 to 64 of a-z, 0-9, - and _".into(),
            ));
        }
        let kind = match role {
            RelayRole::Origin => CredentialKind::Origin,
            RelayRole::Edge => CredentialKind::Edge,
        };
        self.issue_credential(actor, PLATFORM, subject, kind)
    }

    pub(super) fn issue_credential(
        &self,
        actor: &str,
        tenant: &str,
        subject: &str,
        kind: CredentialKind,
    ) -> Result<(String, CredentialRecord)> {
        let grant = Grant {
            subject: subject.into(),
            tenant: tenant.into(),
            event: String::new(),
            stream: None,
            action: Action::Relay,
            lifetime_secs: strom_token::MAX_RELAY_SECS,
            not_after: None,
            role: match kind {
                CredentialKind::Origin => Some(RelayRole::Origin),
                CredentialKind::Edge => Some(RelayRole::Edge),
                CredentialKind::Agent => None,
            },
            via: None,
        };
        let _g = self.lock()?;
        let row = key(&[tenant, subject]);
        let earlier: Option<CredentialRecord> = match self.store.get(Table::Credentials, &row)? {
            Some(raw) => Some(decode(&raw)?),
            None => None,
        };
        if earlier.as_ref().is_some_and(|e| e.kind != kind) {
            return Err(RepoError::Conflict(
                "this subject holds a credential of another kind".into(),
            ));
        }
        let (token, claims) = self.mint(&grant)?;
        let record = CredentialRecord {
            id: subject.into(),
            tenant: tenant.into(),
            kind,
            issued_at: claims.iat,
            issued_by: actor.into(),
            issued: earlier.as_ref().map_or(0, |e| e.issued) + 1,
            kid: self.current_kid(),
            expires_at: claims.exp,
            revoked_at: None,
        };
        let mut b = Batch::default();
        b.put(Table::Credentials, row, encode(&record));
        let entry = Entry::new(actor, "issue-credential", kind.entity(), subject);
        if tenant == PLATFORM {
            self.store.write(b)?;
        } else {
            self.commit(tenant, b, vec![entry])?;
        }
        tracing::info!(tenant, credential = subject, kind = ?kind, "relay credential issued");
        Ok((token, record))
    }

    pub(super) fn current_kid(&self) -> String {
        self.signing
            .lock()
            .expect("signing lock")
            .last()
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// The credentials issued for `tenant`'s agents, or with
    /// [`PLATFORM`] the operator's relays.
    pub fn credentials(&self, tenant: &str) -> Result<Vec<CredentialRecord>> {
        self.scan(Table::Credentials, &prefix(&[tenant]))
    }

    /// Revokes every credential issued so far for subject `id` of `tenant`
    /// and every token minted on its strength (agent tickets): the control
    /// plane refuses them at once, relays within about a second.
    pub fn revoke_credential(
        &self,
        actor: &str,
        tenant: &str,
        id: &str,
    ) -> Result<CredentialRecord> {
        let _g = self.lock()?;
        let row = key(&[tenant, id]);
        let mut record: CredentialRecord = self.get(Table::Credentials, &row)?;
        let r = self.append_revocations(&[(
            RevocationKind::Subject,
            tenant,
            id,
            OffsetDateTime::now_utc(),
        )])?;
        record.revoked_at = Some(r[0].issued_before);
        let mut b = Batch::default();
        b.put(Table::Credentials, row, encode(&record));
        let entry = Entry::new(actor, "revoke-credential", record.kind.entity(), id);
        if tenant == PLATFORM {
            self.store.write(b)?;
        } else {
            self.commit(tenant, b, vec![entry])?;
        }
        tracing::warn!(tenant, credential = id, kind = ?record.kind, "relay credential revoked");
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    #[test]
    fn a_revoked_agent_credential_stops_verifying_here_at_once() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let (id, token) = repo.issue_agent_credential("u_owner", &t).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(repo.verifier().verify(&token, now).is_ok());
        assert_eq!(repo.credentials(&t).unwrap().len(), 1);
        repo.revoke_credential("u_owner", &t, &id).unwrap();
        assert!(repo.verifier().verify(&token, now).is_err());
        let listed = repo.credentials(&t).unwrap();
        assert!(listed[0].revoked_at.is_some());
        // Another tenant cannot revoke it, or list it.
        let other = repo.create_tenant("Globex").unwrap().id;
        assert!(repo.credentials(&other).unwrap().is_empty());
        assert!(repo.revoke_credential("u_x", &other, &id).is_err());
    }
}
