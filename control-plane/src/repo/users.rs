//! Staff accounts: roles, passwords, TOTP, deactivation.

use super::*;

impl Repo {
    pub(super) fn user_email_index(&self, tenant: &str, email: &str) -> Result<Vec<u8>> {
        let bi = self
            .ring
            .blind_index(&Scope::Tenant(tenant.into()), "user-email", email)?;
        Ok(key(&[tenant, "user-email", &bi]))
    }

    pub fn create_user(
        &self,
        actor: &str,
        tenant: &str,
        email: &str,
        name: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<(UserView, Option<String>)> {
        let t = self.tenant(tenant)?;
        let email = normalise_email(email)?;
        let name = clean_text("name", name, 120)?;
        let scope = Scope::Tenant(tenant.into());
        let (initial, generated) = match password {
            Some(p) => {
                let context =
                    password::context_words(&[t.name.as_str(), email.as_str(), name.as_str()]);
                password::check_password_in(&t.settings.password_policy, p, &[], &context)
                    .map_err(|e| RepoError::Invalid(e.to_string()))?;
                (Some(p.to_owned()), None)
            }
            None => {
                let g = password::generate_password(&t.settings.password_policy);
                (Some(g.clone()), Some(g))
            }
        };
        let id = new_id("u");
        let credential = Credential {
            password: initial.as_deref().map(password::hash_password),
            password_set_at: Some(now()),
            // Set by someone else or generated: the holder must choose their own.
            must_change: true,
            ..Default::default()
        };
        let mut change = self.change(actor, "create", tenant, &scope, ("user", &id));
        let mut user = User {
            id: id.clone(),
            tenant: tenant.into(),
            email: String::new(),
            name: String::new(),
            role,
            role_since: now(),
            created_at: now(),
            active: true,
            credential,
        };
        change.set("email", &mut user.email, None, &email)?;
        change.set("name", &mut user.name, None, &name)?;
        change.clear("role", None::<&str>, Some(format!("{role:?}")));
        let idx = self.user_email_index(tenant, &email)?;
        let _g = self.lock()?;
        if self.store.get(Table::Index, &idx)?.is_some() {
            return Err(RepoError::Conflict(
                "an account with this e-mail address exists".into(),
            ));
        }
        let mut b = Batch::default();
        b.put(Table::Users, key(&[tenant, &id]), encode(&user));
        b.put(Table::Index, idx, id.clone());
        self.commit(tenant, b, change.into_entries())?;
        Ok((self.user_view(&user)?, generated))
    }

    /// Records a security event in the tenant's audit trail (V16): a
    /// refused request of `subject` (a session's pseudonymous id), and what
    /// it asked for (`what`: a route, never a value).
    pub fn security_event(
        &self,
        tenant: &str,
        subject: &str,
        action: &str,
        what: &str,
    ) -> Result<()> {
        if self.store.get(Table::Tenants, tenant.as_bytes())?.is_none() {
            return Ok(());
        }
        let _g = self.lock()?;
        self.commit(
            tenant,
            Batch::default(),
            vec![Entry::new(subject, action, "session", subject).field(what)],
        )
    }

    pub fn user(&self, tenant: &str, id: &str) -> Result<User> {
        if !valid_id("u", id) {
            return Err(RepoError::NotFound);
        }
        self.get(Table::Users, &key(&[tenant, id]))
    }

    pub fn user_by_email(&self, tenant: &str, email: &str) -> Result<User> {
        let email = normalise_email(email).map_err(|_| RepoError::NotFound)?;
        let idx = self
            .user_email_index(tenant, &email)
            .map_err(|_| RepoError::NotFound)?;
        let id = self
            .store
            .get(Table::Index, &idx)?
            .ok_or(RepoError::NotFound)?;
        self.user(tenant, &String::from_utf8_lossy(&id))
    }

    pub fn user_view(&self, u: &User) -> Result<UserView> {
        let scope = Scope::Tenant(u.tenant.clone());
        Ok(UserView {
            id: u.id.clone(),
            email: self
                .ring
                .open_str(&scope, &aad(&u.tenant, "user", &u.id, "email"), &u.email)?,
            name: self
                .ring
                .open_str(&scope, &aad(&u.tenant, "user", &u.id, "name"), &u.name)?,
            role: u.role,
            role_since: u.role_since,
            active: u.active,
            locked: u.credential.lockout.locked_until.is_some_and(|t| t > now()),
            totp: u.credential.totp.is_some(),
            must_change_password: u.credential.must_change,
        })
    }

    pub fn users(&self, tenant: &str) -> Result<Vec<User>> {
        self.scan(Table::Users, &prefix(&[tenant]))
    }

    pub fn update_user(
        &self,
        actor: &str,
        tenant: &str,
        id: &str,
        name: Option<&str>,
        role: Option<Role>,
        active: Option<bool>,
    ) -> Result<UserView> {
        let scope = Scope::Tenant(tenant.into());
        let _g = self.lock()?;
        let mut u = self.user(tenant, id)?;
        let old = self.user_view(&u)?;
        let mut change = self.change(actor, "change", tenant, &scope, ("user", id));
        if let Some(name) = name {
            let name = clean_text("name", name, 120)?;
            if name != old.name {
                change.set("name", &mut u.name, Some(&old.name), &name)?;
            }
        }
        if let Some(role) = role {
            if role != u.role {
                if u.role == Role::Owner && self.owner_count(tenant)? <= 1 {
                    return Err(RepoError::Conflict(
                        "the last owner cannot lose the owner role".into(),
                    ));
                }
                change.clear(
                    "role",
                    Some(format!("{:?}", u.role)),
                    Some(format!("{role:?}")),
                );
                u.role = role;
                u.role_since = now();
            }
        }
        if let Some(active) = active {
            if active != u.active {
                if !active && u.role == Role::Owner && self.owner_count(tenant)? <= 1 {
                    return Err(RepoError::Conflict(
                        "the last owner cannot be deactivated".into(),
                    ));
                }
                change.clear("active", Some(u.active), Some(active));
                u.active = active;
            }
        }
        let mut b = Batch::default();
        b.put(Table::Users, key(&[tenant, id]), encode(&u));
        if !active.unwrap_or(true) {
            self.end_sessions(&mut b, tenant, id, None)?;
        }
        self.commit(tenant, b, change.into_entries())?;
        self.user_view(&u)
    }

    pub(super) fn owner_count(&self, tenant: &str) -> Result<usize> {
        Ok(self
            .users(tenant)?
            .iter()
            .filter(|u| u.role == Role::Owner && u.active)
            .count())
    }

    pub fn delete_user(&self, actor: &str, tenant: &str, id: &str) -> Result<()> {
        let scope = Scope::Tenant(tenant.into());
        let _g = self.lock()?;
        let u = self.user(tenant, id)?;
        if u.role == Role::Owner && self.owner_count(tenant)? <= 1 {
            return Err(RepoError::Conflict(
                "the last owner cannot be deleted".into(),
            ));
        }
        let view = self.user_view(&u)?;
        let mut b = Batch::default();
        b.delete(Table::Users, key(&[tenant, id]));
        b.delete(Table::Index, self.user_email_index(tenant, &view.email)?);
        self.end_sessions(&mut b, tenant, id, None)?;
        journal(
            self.keys.as_ref(),
            &JournalEntry::User {
                tenant: tenant.into(),
                user: id.into(),
                email_index: String::from_utf8_lossy(&self.user_email_index(tenant, &view.email)?)
                    .into_owned(),
            },
        )?;
        let mut change = self.change(actor, "delete", tenant, &scope, ("user", id));
        change.removed("email", &view.email)?;
        change.removed("name", &view.name)?;
        self.ring.shred(&Scope::Subject(tenant.into(), id.into()))?;
        self.commit(tenant, b, change.into_entries())
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    #[test]
    fn one_account_per_address_and_tenant_and_names_are_sealed() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let (u, password) = repo
            .create_user(
                "system",
                &t,
                "Staff@Example.com",
                "Staff Member",
                Role::Owner,
                None,
            )
            .unwrap();
        assert!(password.is_some(), "an initial password is generated");
        // The same address, differently written, is the same account.
        assert!(repo
            .create_user(
                "system",
                &t,
                "staff@example.com",
                "Again",
                Role::Moderator,
                None
            )
            .is_err());
        // Another tenant may have its own account for the address.
        let other = repo.create_tenant("Globex").unwrap().id;
        assert!(repo
            .create_user(
                "system",
                &other,
                "staff@example.com",
                "Other",
                Role::Owner,
                None
            )
            .is_ok());
        assert_eq!(
            repo.user_by_email(&t, "STAFF@example.com").unwrap().id,
            u.id
        );
        // Stored sealed: the name is not in the store in clear.
        let raw = repo.store.scan(Table::Users, b"", usize::MAX).unwrap();
        assert!(raw
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v).contains("Staff Member")));
    }

    #[test]
    fn a_demoted_or_deactivated_account_is_read_as_it_is_now() {
        let repo = in_memory();
        let t = repo.create_tenant("Acme").unwrap().id;
        let (u, _) = repo
            .create_user("system", &t, "a@example.com", "A", Role::Owner, None)
            .unwrap();
        // The last owner keeps the role: a tenant is never without one.
        let last = repo.update_user("u_owner", &t, &u.id, None, Some(Role::Moderator), None);
        assert!(matches!(last, Err(RepoError::Conflict(_))));
        repo.create_user("system", &t, "b@example.com", "B", Role::Owner, None)
            .unwrap();
        repo.update_user("u_owner", &t, &u.id, None, Some(Role::Moderator), None)
            .unwrap();
        assert_eq!(repo.user(&t, &u.id).unwrap().role, Role::Moderator);
        repo.update_user("u_owner", &t, &u.id, None, None, Some(false))
            .unwrap();
        assert!(!repo.user(&t, &u.id).unwrap().active);
    }
}
