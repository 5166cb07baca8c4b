//! Credentials shared by staff and participants (passwords, lockout), and relay and agent credentials.

use super::*;

impl Repo {
    /// Reserves a login attempt (counted before the password is checked, so
    /// parallel attempts cannot exceed the limit).
    pub fn reserve_attempt(&self, tenant: &str, principal: &Principal) -> Result<Credential> {
        let _g = self.lock()?;
        let mut cred = self.credential(tenant, principal)?;
        cred.lockout = lockout::begin_attempt(&cred.lockout, now()).map_err(|l| {
            self.metrics.logins_locked.inc();
            RepoError::Locked(l.until)
        })?;
        self.put_credential(Batch::default(), tenant, principal, &cred, vec![])?;
        Ok(cred)
    }

    /// Settles an attempt reserved with [`reserve_attempt`]: counts it, locks
    /// the account after the third failure, and records a failure in the
    /// audit trail. A TOTP step that verified is checked again and stored here,
    /// under the write lock, so two requests with the same code cannot both
    /// pass (the second finds the step used). Returns whether the attempt
    /// succeeded in the end.
    ///
    /// [`reserve_attempt`]: Repo::reserve_attempt
    pub fn finish_attempt(
        &self,
        tenant: &str,
        principal: &Principal,
        ok: bool,
        lock_minutes: u16,
        totp_step: Option<u64>,
    ) -> Result<bool> {
        let _g = self.lock()?;
        let mut cred = self.credential(tenant, principal)?;
        let replayed = totp_step.is_some_and(|step| cred.totp_last_step >= Some(step));
        let ok = ok && !replayed;
        if ok {
            if let Some(step) = totp_step {
                cred.totp_last_step = Some(step);
            }
        }
        let was_locked = cred.lockout.locked_until.is_some();
        let counter = if ok {
            &self.metrics.logins_succeeded
        } else {
            &self.metrics.logins_failed
        };
        counter.inc();
        cred.lockout = if ok {
            lockout::attempt_succeeded(&cred.lockout)
        } else {
            lockout::attempt_failed(&cred.lockout, lock_minutes, now())
        };
        let mut entries = vec![];
        if !ok {
            // A security event (V16): bounded by the lockout, three per
            // lock period and account.
            entries.push(Entry::new(
                "system",
                "login-failed",
                principal_entity(principal),
                principal_id(principal),
            ));
        }
        if !was_locked && cred.lockout.locked_until.is_some() {
            self.metrics.lockouts.inc();
            entries.push(Entry::new(
                "system",
                "locked",
                principal_entity(principal),
                principal_id(principal),
            ));
            tracing::warn!(
                tenant,
                subject = principal_id(principal),
                "account locked after failed attempts"
            );
        }
        self.put_credential(Batch::default(), tenant, principal, &cred, entries)?;
        Ok(ok)
    }

    pub fn unlock(&self, actor: &str, tenant: &str, principal: &Principal) -> Result<()> {
        let _g = self.lock()?;
        let mut cred = self.credential(tenant, principal)?;
        cred.lockout = lockout::unlock();
        let entries = vec![Entry::new(
            actor,
            "unlock",
            principal_entity(principal),
            principal_id(principal),
        )];
        self.put_credential(Batch::default(), tenant, principal, &cred, entries)
    }

    /// Removes a staff member's second factor for them (an owner's act, for
    /// a lost authenticator; ASVS 6.4.4): every session of the account ends,
    /// and the next login asks for a new enrolment where the tenant requires
    /// one. Audited as the actor's.
    pub fn reset_totp(&self, actor: &str, tenant: &str, principal: &Principal) -> Result<()> {
        let _g = self.lock()?;
        let mut cred = self.credential(tenant, principal)?;
        let had = cred.totp.is_some();
        cred.totp = None;
        cred.totp_pending = None;
        cred.totp_last_step = None;
        let mut b = Batch::default();
        self.end_sessions(&mut b, tenant, principal_id(principal), None)?;
        let entries = if had {
            vec![Entry::new(
                actor,
                "delete",
                principal_entity(principal),
                principal_id(principal),
            )
            .field("totp")]
        } else {
            Vec::new()
        };
        self.put_credential(b, tenant, principal, &cred, entries)
    }

    /// The words a new password of this account must not be made of
    /// (ASVS 6.2.11): the organisation's name, the account's e-mail address
    /// and name, and the product's words.
    pub fn password_context(&self, tenant: &str, principal: &Principal) -> Result<Vec<String>> {
        let organisation = self.tenant(tenant)?.name;
        let (email, name) = match principal {
            Principal::Staff { user, .. } => {
                let v = self.user_view(&self.user(tenant, user)?)?;
                (v.email, v.name)
            }
            Principal::Participant { event, participant } => {
                let v = self.participant_view(&self.participant(tenant, event, participant)?)?;
                (v.email, v.name)
            }
        };
        Ok(password::context_words(&[
            organisation.as_str(),
            email.as_str(),
            name.as_str(),
        ]))
    }

    pub fn credential(&self, tenant: &str, principal: &Principal) -> Result<Credential> {
        Ok(match principal {
            Principal::Staff { user, .. } => self.user(tenant, user)?.credential,
            Principal::Participant { event, participant } => {
                self.participant(tenant, event, participant)?.credential
            }
        })
    }

    /// Stores a credential (with whatever else `b` holds); the caller holds
    /// the write lock.
    pub(super) fn put_credential(
        &self,
        mut b: Batch,
        tenant: &str,
        principal: &Principal,
        cred: &Credential,
        entries: Vec<Entry>,
    ) -> Result<()> {
        match principal {
            Principal::Staff { user, .. } => {
                let mut u = self.user(tenant, user)?;
                u.credential = cred.clone();
                b.put(Table::Users, key(&[tenant, user]), encode(&u));
            }
            Principal::Participant { event, participant } => {
                let mut p = self.participant(tenant, event, participant)?;
                p.credential = cred.clone();
                b.put(
                    Table::Participants,
                    key(&[tenant, event, participant]),
                    encode(&p),
                );
            }
        }
        self.commit(tenant, b, entries)
    }

    /// Sets a new password chosen by its holder (policy and history apply)
    /// and ends every other session of the account (ASVS 7.4.3): whoever
    /// took it over is logged out. `keep` is the cookie secret of the
    /// session that made the change, if it stays.
    pub fn set_password(
        &self,
        tenant: &str,
        principal: &Principal,
        new: &str,
        policy: &PasswordPolicy,
        keep: Option<&str>,
    ) -> Result<()> {
        let cred = self.credential(tenant, principal)?;
        let mut history = cred.password.iter().cloned().collect::<Vec<_>>();
        history.extend(cred.history.iter().cloned());
        let context = self.password_context(tenant, principal)?;
        password::check_password_in(policy, new, &history, &context)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        let hash = password::hash_password(new);
        let _g = self.lock()?;
        let mut cred = self.credential(tenant, principal)?;
        if let Some(old) = cred.password.take() {
            cred.history.insert(0, old);
        }
        cred.history.truncate(10);
        cred.password = Some(hash);
        cred.password_set_at = Some(now());
        cred.must_change = false;
        let mut b = Batch::default();
        let ended = self.end_sessions(&mut b, tenant, principal_id(principal), keep)?;
        let entries = vec![Entry::new(
            principal_id(principal),
            "change",
            principal_entity(principal),
            principal_id(principal),
        )
        .field("password")];
        self.put_credential(b, tenant, principal, &cred, entries)?;
        tracing::info!(
            tenant,
            subject = principal_id(principal),
            other_sessions_ended = ended,
            "password changed"
        );
        Ok(())
    }

    /// Changes a credential under the write lock.
    pub fn update_credential(
        &self,
        tenant: &str,
        principal: &Principal,
        f: impl FnOnce(&mut Credential) -> Result<()>,
    ) -> Result<Credential> {
        let _g = self.lock()?;
        let mut cred = self.credential(tenant, principal)?;
        f(&mut cred)?;
        self.put_credential(Batch::default(), tenant, principal, &cred, vec![])?;
        Ok(cred)
    }

    /// Confirms a new second factor: the pending TOTP secret becomes the
    /// account's, and every other session ends (whoever held one did not
    /// prove this factor). Audited.
    pub fn confirm_totp(
        &self,
        tenant: &str,
        principal: &Principal,
        step: u64,
        keep: &str,
    ) -> Result<()> {
        let _g = self.lock()?;
        let mut cred = self.credential(tenant, principal)?;
        let replaced = cred.totp.is_some();
        cred.totp = Some(
            cred.totp_pending
                .take()
                .ok_or_else(|| RepoError::Invalid("start enrolment first".into()))?,
        );
        cred.totp_last_step = Some(step);
        let mut b = Batch::default();
        self.end_sessions(&mut b, tenant, principal_id(principal), Some(keep))?;
        let entries = vec![Entry::new(
            principal_id(principal),
            if replaced { "change" } else { "create" },
            principal_entity(principal),
            principal_id(principal),
        )
        .field("totp")];
        self.put_credential(b, tenant, principal, &cred, entries)
    }

    /// Seals a tenant-level secret (e.g. the OIDC client secret).
    pub fn seal_tenant_secret(&self, tenant: &str, field: &str, value: &str) -> Result<String> {
        Ok(self.ring.seal_str(
            &Scope::Tenant(tenant.into()),
            &aad(tenant, "tenant", tenant, field),
            value,
        )?)
    }

    pub fn open_tenant_secret(&self, tenant: &str, field: &str, sealed: &str) -> Result<String> {
        Ok(self.ring.open_str(
            &Scope::Tenant(tenant.into()),
            &aad(tenant, "tenant", tenant, field),
            sealed,
        )?)
    }

    pub fn seal_totp(&self, tenant: &str, principal: &Principal, secret: &str) -> Result<String> {
        Ok(self.ring.seal_str(
            &Scope::Tenant(tenant.into()),
            &aad(
                tenant,
                principal_entity(principal),
                principal_id(principal),
                "totp",
            ),
            secret,
        )?)
    }

    pub fn open_totp(&self, tenant: &str, principal: &Principal, sealed: &str) -> Result<String> {
        Ok(self.ring.open_str(
            &Scope::Tenant(tenant.into()),
            &aad(
                tenant,
                principal_entity(principal),
                principal_id(principal),
                "totp",
            ),
            sealed,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    fn staff(repo: &Repo) -> (String, Principal) {
        let t = repo.create_tenant("Acme").unwrap().id;
        let (u, _) = repo
            .create_user(
                "system",
                &t,
                "staff@example.com",
                "Staff",
                Role::Owner,
                None,
            )
            .unwrap();
        let p = Principal::Staff {
            user: u.id,
            role: Role::Owner,
        };
        (t, p)
    }

    fn actions(repo: &Repo, tenant: &str) -> Vec<String> {
        audit::list(repo.store.as_ref(), tenant, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect()
    }

    fn attempt(repo: &Repo, t: &str, p: &Principal, ok: bool, step: Option<u64>) -> Result<bool> {
        repo.reserve_attempt(t, p)?;
        repo.finish_attempt(t, p, ok, 15, step)
    }

    #[test]
    fn the_third_failure_locks_even_the_right_password_out_until_an_owner_unlocks() {
        let repo = in_memory();
        let (t, p) = staff(&repo);
        for _ in 0..3 {
            assert!(!attempt(&repo, &t, &p, false, None).unwrap());
        }
        // The fourth attempt is refused before the password is looked at.
        assert!(matches!(
            attempt(&repo, &t, &p, true, None),
            Err(RepoError::Locked(Some(_)))
        ));
        let trail = actions(&repo, &t);
        assert_eq!(trail.iter().filter(|a| *a == "login-failed").count(), 3);
        assert_eq!(trail.iter().filter(|a| *a == "locked").count(), 1);
        let m = &repo.metrics;
        assert_eq!(
            (
                m.logins_failed.get(),
                m.lockouts.get(),
                m.logins_locked.get()
            ),
            (3, 1, 1)
        );
        repo.unlock("u_owner", &t, &p).unwrap();
        assert!(actions(&repo, &t).contains(&"unlock".to_owned()));
        assert!(attempt(&repo, &t, &p, true, None).unwrap());
        // A success clears the count: three more failures are needed again.
        assert!(!attempt(&repo, &t, &p, false, None).unwrap());
        assert!(!attempt(&repo, &t, &p, false, None).unwrap());
        assert!(attempt(&repo, &t, &p, true, None).unwrap());
    }

    #[test]
    fn parallel_attempts_cannot_exceed_the_limit() {
        let repo = in_memory();
        let (t, p) = staff(&repo);
        // Three attempts reserved at once (none settled yet): a fourth waits
        // for nothing, it is refused.
        for _ in 0..3 {
            repo.reserve_attempt(&t, &p).unwrap();
        }
        assert!(matches!(
            repo.reserve_attempt(&t, &p),
            Err(RepoError::Locked(None))
        ));
    }

    #[test]
    fn a_totp_step_passes_once() {
        let repo = in_memory();
        let (t, p) = staff(&repo);
        assert!(attempt(&repo, &t, &p, true, Some(1000)).unwrap());
        // The same code again (a replay), or an older one: refused, and
        // counted as a failure.
        assert!(!attempt(&repo, &t, &p, true, Some(1000)).unwrap());
        assert!(!attempt(&repo, &t, &p, true, Some(999)).unwrap());
        assert!(attempt(&repo, &t, &p, true, Some(1001)).unwrap());
        assert_eq!(repo.credential(&t, &p).unwrap().totp_last_step, Some(1001));
        assert_eq!(repo.metrics.logins_failed.get(), 2);
    }

    #[test]
    fn a_sealed_second_factor_opens_only_for_its_account() {
        let repo = in_memory();
        let (t, p) = staff(&repo);
        let sealed = repo.seal_totp(&t, &p, "JBSWY3DPEHPK3PXP").unwrap();
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(repo.open_totp(&t, &p, &sealed).unwrap(), "JBSWY3DPEHPK3PXP");
        let other = Principal::Staff {
            user: "u_other".into(),
            role: Role::Owner,
        };
        assert!(repo.open_totp(&t, &other, &sealed).is_err());
    }
}
