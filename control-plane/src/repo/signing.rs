//! The keys that sign tokens: rotation with a bounded overlap, minting.

use super::*;

impl Repo {
    /// The signing keys as stored, oldest first and the current one last,
    /// each checked to open.
    fn stored_signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        let scope = Scope::Tenant("_platform".into());
        let mut keys: Vec<StoredSigningKey> = self.scan(Table::Meta, &prefix(&["signing-key"]))?;
        // The current key (the one not retired) last, whatever the clock
        // says: two rotations within one second have the same created_at.
        keys.sort_by_key(|k| (k.retire_at.is_none(), k.created_at));
        for k in &keys {
            // Fails loudly if the platform key is gone.
            self.ring.open(
                &scope,
                &aad("_platform", "signing-key", &k.kid, "secret"),
                &k.secret,
            )?;
        }
        Ok(keys)
    }

    pub(super) fn load_signing_keys(&self) -> Result<()> {
        let keys = self.stored_signing_keys()?;
        if keys.is_empty() {
            // The first start: one replica makes the first key, the others
            // (waiting on the section) find it.
            let _g = self.lock()?;
            let keys = self.stored_signing_keys()?;
            if keys.is_empty() {
                self.rotate_locked(time::Duration::ZERO)?;
            } else {
                *self.signing.lock().expect("signing lock") = keys;
            }
            return Ok(());
        }
        *self.signing.lock().expect("signing lock") = keys;
        Ok(())
    }

    /// Takes up what another replica changed in the signing keys (a
    /// rotation on a shared store), so this replica signs with the current
    /// key and its verifier and key set accept it. The control plane calls
    /// it every half second. Returns whether anything changed.
    pub fn follow_signing_keys(&self) -> Result<bool> {
        let stored = self.stored_signing_keys()?;
        let same = {
            let held = self.signing.lock().expect("signing lock");
            held.len() == stored.len()
                && held
                    .iter()
                    .zip(&stored)
                    .all(|(h, s)| h.kid == s.kid && h.retire_at == s.retire_at)
        };
        if same || stored.is_empty() {
            return Ok(false);
        }
        *self.signing.lock().expect("signing lock") = stored;
        self.verifier.set_keys(&self.key_set()?);
        tracing::info!("signing keys taken up from the store");
        Ok(true)
    }

    /// Makes a new signing key current. Tokens signed by the older keys keep
    /// verifying for `overlap` and no longer (a compromised key: overlap 0);
    /// credentials signed by them must be issued again within it (see
    /// [`signing_keys`](Self::signing_keys)). The verifier here takes the new
    /// key set at once; relays within a minute (or at their next refusal),
    /// other replicas within a second.
    pub fn rotate_signing_key(&self, overlap: time::Duration) -> Result<String> {
        let _g = self.lock()?;
        self.rotate_locked(overlap)
    }

    fn rotate_locked(&self, overlap: time::Duration) -> Result<String> {
        // Retire what is stored, whichever replica made it.
        let stored = self.stored_signing_keys()?;
        *self.signing.lock().expect("signing lock") = stored;
        let scope = Scope::Tenant("_platform".into());
        let signing = SigningKey::generate();
        let created_at = now();
        let stored = StoredSigningKey {
            kid: signing.kid().to_owned(),
            secret: self.ring.seal(
                &scope,
                &aad("_platform", "signing-key", signing.kid(), "secret"),
                &signing.to_bytes(),
            )?,
            created_at,
            retire_at: None,
        };
        let retire = created_at + overlap.max(time::Duration::ZERO);
        let mut b = Batch::default();
        let mut keys = self.signing.lock().expect("signing lock");
        for old in keys.iter_mut() {
            if old.retire_at.is_none_or(|r| r > retire) {
                old.retire_at = Some(retire);
                b.put(Table::Meta, signing_key_row(old), encode(&*old));
            }
        }
        b.put(Table::Meta, signing_key_row(&stored), encode(&stored));
        self.store.write(b)?;
        keys.push(stored);
        drop(keys);
        self.verifier.set_keys(&self.key_set()?);
        tracing::info!(
            kid = signing.kid(),
            overlap_secs = overlap.whole_seconds(),
            "signing key rotated"
        );
        Ok(signing.kid().to_owned())
    }

    /// The signing keys, newest last: id, creation, when it stops verifying.
    pub fn signing_keys(&self) -> Vec<SigningKeyInfo> {
        let keys = self.signing.lock().expect("signing lock");
        let n = keys.len();
        keys.iter()
            .enumerate()
            .map(|(i, k)| SigningKeyInfo {
                kid: k.kid.clone(),
                created_at: k.created_at,
                retire_at: k.retire_at.or_else(|| {
                    (i + 1 < n).then(|| {
                        k.created_at + time::Duration::seconds(strom_token::MAX_RELAY_SECS)
                    })
                }),
                current: i + 1 == n,
            })
            .collect()
    }

    pub(super) fn current_signing_key(&self) -> Result<SigningKey> {
        let stored = self
            .signing
            .lock()
            .expect("signing lock")
            .last()
            .cloned()
            .ok_or(RepoError::NotFound)?;
        let scope = Scope::Tenant("_platform".into());
        let bytes = self.ring.open(
            &scope,
            &aad("_platform", "signing-key", &stored.kid, "secret"),
            &stored.secret,
        )?;
        SigningKey::from_bytes(&bytes).map_err(|e| RepoError::Invalid(e.to_string()))
    }

    /// The keys tokens are accepted under: the current one and the retired
    /// ones still within their overlap.
    pub fn key_set(&self) -> Result<strom_token::KeySet> {
        let scope = Scope::Tenant("_platform".into());
        let at = now();
        let mut keys = Vec::new();
        for info in self.signing_keys().iter().rev() {
            if !info.current && info.retire_at.is_some_and(|r| r <= at) {
                continue;
            }
            let stored = self
                .signing
                .lock()
                .expect("signing lock")
                .iter()
                .find(|k| k.kid == info.kid)
                .cloned()
                .ok_or(RepoError::NotFound)?;
            let bytes = self.ring.open(
                &scope,
                &aad("_platform", "signing-key", &stored.kid, "secret"),
                &stored.secret,
            )?;
            let key =
                SigningKey::from_bytes(&bytes).map_err(|e| RepoError::Invalid(e.to_string()))?;
            keys.push(key.public_key());
        }
        let media = self
            .scan::<MediaKeyRegistration>(Table::Edges, &prefix(&["_media"]))?
            .into_iter()
            .map(|m| strom_token::MediaKey {
                origin: m.origin,
                key: m.key,
            })
            .collect();
        Ok(strom_token::KeySet { keys, media })
    }

    /// Mints a token now. Its issue time keeps sub-second precision (unlike
    /// [`now`]): a revocation recorded earlier in the same second (a
    /// re-issued stream key, a reactivated participant) must not cover it.
    pub fn mint(&self, grant: &Grant) -> Result<(String, strom_token::Claims)> {
        self.mint_at(grant, OffsetDateTime::now_utc())
    }

    /// Mints as if at `at` (tests of clock skew and expiry).
    pub fn mint_at(
        &self,
        grant: &Grant,
        at: OffsetDateTime,
    ) -> Result<(String, strom_token::Claims)> {
        let minted = self
            .current_signing_key()?
            .mint(grant, at)
            .map_err(|e| RepoError::Invalid(e.to_string()))?;
        self.metrics.token_issued(grant.action);
        Ok(minted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;
    use super::*;

    fn grant() -> Grant {
        Grant::play("p_viewer", "t_a", "e_1")
    }

    #[test]
    fn a_rotation_without_overlap_ends_the_old_keys_tokens() {
        let repo = in_memory();
        let (before, _) = repo.mint(&grant()).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(repo.verifier().verify(&before, now).is_ok());
        repo.rotate_signing_key(time::Duration::hours(1)).unwrap();
        assert!(
            repo.verifier().verify(&before, now).is_ok(),
            "within the overlap"
        );
        let (after, _) = repo.mint(&grant()).unwrap();
        repo.rotate_signing_key(time::Duration::ZERO).unwrap();
        assert!(
            repo.verifier().verify(&before, now).is_err(),
            "a leaked key ends at once"
        );
        assert!(repo.verifier().verify(&after, now).is_err());
        let (fresh, _) = repo.mint(&grant()).unwrap();
        assert!(repo.verifier().verify(&fresh, now).is_ok());
    }

    #[test]
    fn the_current_key_is_read_back_as_current_after_rotations_in_one_second() {
        let repo = in_memory();
        // Stored times are whole seconds: these share one.
        let mut kid = String::new();
        for _ in 0..12 {
            kid = repo.rotate_signing_key(time::Duration::hours(1)).unwrap();
            // As a restart or another replica reads them.
            let stored = repo.stored_signing_keys().unwrap();
            assert_eq!(stored.last().unwrap().kid, kid);
        }
        *repo.signing.lock().unwrap() = Vec::new();
        repo.load_signing_keys().unwrap();
        let current = repo.signing_keys().into_iter().find(|k| k.current).unwrap();
        assert_eq!(current.kid, kid);
        assert_eq!(
            repo.current_signing_key().unwrap().kid(),
            kid,
            "signs with it"
        );
    }
}
