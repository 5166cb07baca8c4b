//! Sessions and one-time links.

use super::*;

impl Repo {
    pub fn create_session(&self, session: &Session) -> Result<String> {
        let secret = random_secret();
        let mut b = Batch::default();
        // At most so many sessions per account (ASVS 7.1.2): a new login
        // beyond them ends the ones least recently used.
        let subject = principal_id(&session.principal);
        let live = self.sessions_of(&session.tenant, subject)?;
        for (_, hash, _) in live.iter().skip(MAX_SESSIONS_PER_ACCOUNT - 1) {
            b.delete(Table::Index, key(&["session", hash]));
            b.delete(Table::Sessions, key(&[&session.tenant, subject, hash]));
        }
        b.put(
            Table::Sessions,
            session_key(&session.tenant, &session.principal, &secret),
            encode(session),
        );
        b.put(
            Table::Index,
            key(&["session", &sha256_hex(&secret)]),
            session_key(&session.tenant, &session.principal, &secret),
        );
        self.store.write(b)?;
        Ok(secret)
    }

    /// The live sessions of an account, most recently used first: public
    /// id (the first 16 hex digits of the session's hash, never its secret),
    /// full hash, session. Expired ones that were not yet swept are left out.
    pub fn sessions_of(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<(String, String, Session)>> {
        let t = now();
        let mut out = Vec::new();
        for (k, v) in self
            .store
            .scan(Table::Sessions, &prefix(&[tenant, subject]), usize::MAX)?
        {
            let hash = String::from_utf8_lossy(&k)
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let s: Session = decode(&v)?;
            if session_expired(&s, t) {
                continue;
            }
            out.push((hash.chars().take(16).collect(), hash, s));
        }
        out.sort_by(|a, b| b.2.last_seen.cmp(&a.2.last_seen));
        Ok(out)
    }

    /// Ends one of an account's own sessions by its public id (see
    /// [`Repo::sessions_of`]), as a logout there would.
    pub fn end_own_session(&self, tenant: &str, subject: &str, id: &str) -> Result<()> {
        let (_, hash, _) = self
            .sessions_of(tenant, subject)?
            .into_iter()
            .find(|(public, _, _)| public == id)
            .ok_or(RepoError::NotFound)?;
        let mut b = Batch::default();
        b.delete(Table::Index, key(&["session", &hash]));
        b.delete(Table::Sessions, key(&[tenant, subject, &hash]));
        self.store.write(b)?;
        Ok(())
    }

    /// The live session for a cookie value; touches it (idle expiry).
    pub fn session(&self, secret: &str) -> Result<Session> {
        let skey = self
            .store
            .get(Table::Index, &key(&["session", &sha256_hex(secret)]))?
            .ok_or(RepoError::NotFound)?;
        let mut s: Session = self.get(Table::Sessions, &skey)?;
        let t = now();
        if session_expired(&s, t) {
            self.delete_session(secret)?;
            return Err(RepoError::NotFound);
        }
        if t - s.last_seen > time::Duration::seconds(30) {
            s.last_seen = t;
            let mut b = Batch::default();
            b.put(Table::Sessions, skey, encode(&s));
            self.store.write(b)?;
        }
        self.refresh_session(secret, s)
    }

    /// What a session may do is read from the account now, not from the
    /// moment of login: a demoted, deactivated or deleted staff member's
    /// sessions carry the new role (or end) at their next request, and an
    /// owner who must enrol TOTP is held to it whenever that became due.
    pub(super) fn refresh_session(&self, secret: &str, mut s: Session) -> Result<Session> {
        if let Principal::Staff { user, role } = &mut s.principal {
            let u = match self.user(&s.tenant, user) {
                Ok(u) if u.active => u,
                Ok(_) | Err(RepoError::NotFound) => {
                    self.delete_session(secret)?;
                    return Err(RepoError::NotFound);
                }
                Err(e) => return Err(e),
            };
            *role = u.role;
            let required =
                u.role == Role::Owner && self.tenant(&s.tenant)?.settings.totp_required_for_owners;
            s.must_enrol_totp = required && u.credential.totp.is_none();
        }
        Ok(s)
    }

    /// Adds to `b` the deletion of every session of `subject` (a user or
    /// participant id) but `keep` (the caller's own, by cookie secret), and
    /// of their index entries.
    pub(super) fn end_sessions(
        &self,
        b: &mut Batch,
        tenant: &str,
        subject: &str,
        keep: Option<&str>,
    ) -> Result<usize> {
        let keep = keep.map(sha256_hex);
        let mut ended = 0;
        for (k, _) in self
            .store
            .scan(Table::Sessions, &prefix(&[tenant, subject]), usize::MAX)?
        {
            let hash = String::from_utf8_lossy(&k)
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            if keep.as_deref() == Some(hash.as_str()) {
                continue;
            }
            b.delete(Table::Index, key(&["session", &hash]));
            b.delete(Table::Sessions, k);
            ended += 1;
        }
        Ok(ended)
    }

    pub fn update_session(&self, secret: &str, f: impl FnOnce(&mut Session)) -> Result<()> {
        let skey = self
            .store
            .get(Table::Index, &key(&["session", &sha256_hex(secret)]))?
            .ok_or(RepoError::NotFound)?;
        let mut s: Session = self.get(Table::Sessions, &skey)?;
        f(&mut s);
        let mut b = Batch::default();
        b.put(Table::Sessions, skey, encode(&s));
        self.store.write(b)?;
        Ok(())
    }

    pub fn delete_session(&self, secret: &str) -> Result<()> {
        let ikey = key(&["session", &sha256_hex(secret)]);
        if let Some(skey) = self.store.get(Table::Index, &ikey)? {
            let mut b = Batch::default();
            b.delete(Table::Sessions, skey);
            b.delete(Table::Index, ikey);
            self.store.write(b)?;
        }
        Ok(())
    }

    pub fn create_link(&self, link: &Link, secret_hash: &[u8; 32]) -> Result<()> {
        let mut b = Batch::default();
        b.put(
            Table::Links,
            key(&[&link.tenant, &hex(secret_hash)]),
            encode(link),
        );
        b.put(
            Table::Index,
            key(&["link", &hex(secret_hash)]),
            link.tenant.clone(),
        );
        self.store.write(b)?;
        Ok(())
    }

    /// A link that is valid now, without using it up.
    pub fn peek_link(&self, secret_hash: &[u8; 32], purpose: LinkPurpose) -> Result<Link> {
        let tenant = self
            .store
            .get(Table::Index, &key(&["link", &hex(secret_hash)]))?
            .ok_or(RepoError::NotFound)?;
        let link: Link = self.get(
            Table::Links,
            &key(&[&String::from_utf8_lossy(&tenant), &hex(secret_hash)]),
        )?;
        if link.purpose != purpose || link.used || link.expires_at <= now() {
            return Err(RepoError::NotFound);
        }
        Ok(link)
    }

    /// Consumes a single-use link; `check` sees the record first (browser
    /// binding, code) and may refuse it without using it up.
    pub fn consume_link(
        &self,
        secret_hash: &[u8; 32],
        purpose: LinkPurpose,
        check: impl FnOnce(&Link) -> bool,
    ) -> Result<Link> {
        let _g = self.lock()?;
        let tenant = self
            .store
            .get(Table::Index, &key(&["link", &hex(secret_hash)]))?
            .ok_or(RepoError::NotFound)?;
        let tenant = String::from_utf8_lossy(&tenant).to_string();
        let lkey = key(&[&tenant, &hex(secret_hash)]);
        let mut link: Link = self.get(Table::Links, &lkey)?;
        if link.purpose != purpose || link.used || link.expires_at <= now() || !check(&link) {
            return Err(RepoError::NotFound);
        }
        link.used = true;
        let mut b = Batch::default();
        b.put(Table::Links, lkey, encode(&link));
        self.store.write(b)?;
        Ok(link)
    }
}

/// Sessions one account may hold at once (ASVS 7.1.2; a browser each, say
/// a laptop, a phone and a meeting-room PC, with room to spare).
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 20;

/// Idle past the tenant's timeout, or older than 12 hours.
pub(super) fn session_expired(s: &Session, t: OffsetDateTime) -> bool {
    t - s.last_seen > time::Duration::minutes(s.idle_minutes as i64)
        || t - s.created_at > time::Duration::hours(12)
}

pub(super) fn session_key(tenant: &str, principal: &Principal, secret: &str) -> Vec<u8> {
    key(&[tenant, principal_id(principal), &sha256_hex(secret)])
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    fn session(tenant: &str, user: &str) -> Session {
        Session {
            tenant: tenant.into(),
            principal: Principal::Staff {
                user: user.into(),
                role: Role::Owner,
            },
            csrf: "c".into(),
            created_at: now(),
            last_seen: now(),
            idle_minutes: 30,
            must_change_password: false,
            must_enrol_totp: false,
        }
    }

    #[test]
    fn the_21st_login_ends_the_least_recently_used_session() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let (user, _) = repo
            .create_user(
                "system",
                &t,
                "staff@example.com",
                "Staff",
                Role::Moderator,
                None,
            )
            .unwrap();
        let secrets: Vec<String> = (0..=MAX_SESSIONS_PER_ACCOUNT)
            .map(|_| repo.create_session(&session(&t, &user.id)).unwrap())
            .collect();
        assert_eq!(
            repo.sessions_of(&t, &user.id).unwrap().len(),
            MAX_SESSIONS_PER_ACCOUNT
        );
        assert!(repo.session(secrets.last().unwrap()).is_ok());
        let gone = secrets.iter().filter(|s| repo.session(s).is_err()).count();
        assert_eq!(gone, 1);
        // A session is found by its secret only; a deleted one is gone.
        assert!(repo.session("not-a-secret").is_err());
        repo.delete_session(&secrets[5]).unwrap();
        assert!(repo.session(&secrets[5]).is_err());
        // The role is read from the account: the session claimed Owner.
        let live = repo.session(secrets.last().unwrap()).unwrap();
        assert!(matches!(
            live.principal,
            Principal::Staff {
                role: Role::Moderator,
                ..
            }
        ));
    }

    #[test]
    fn a_session_of_someone_who_never_existed_is_refused() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let secret = repo.create_session(&session(&t, "u_ghost")).unwrap();
        assert!(matches!(repo.session(&secret), Err(RepoError::NotFound)));
    }
}
