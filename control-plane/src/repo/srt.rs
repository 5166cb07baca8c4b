//! SRT secrets: one per tenant, sealed, for the operator origins.

use super::*;

impl Repo {
    /// The secret SRT passphrases derive from (shared with the operator's
    /// origins, see `strom_token::srt`): made once, sealed with the platform
    /// key in the store.
    pub fn srt_secret(&self) -> Result<[u8; strom_token::srt::SECRET_LEN]> {
        if let Some(s) = self.srt_secret.get() {
            return Ok(*s);
        }
        let _g = self.lock()?;
        let scope = Scope::Tenant("_platform".into());
        let place = aad("_platform", "srt-secret", "v1", "secret");
        let secret = match self.store.get(Table::Meta, b"srt-secret")? {
            Some(raw) => {
                let sealed: String = decode(&raw)?;
                let bytes = self.ring.open(&scope, &place, &sealed)?;
                bytes
                    .try_into()
                    .map_err(|_| RepoError::from(KeyError::Corrupt("SRT secret length")))?
            }
            None => {
                let secret: [u8; strom_token::srt::SECRET_LEN] = rand::random();
                let sealed = self.ring.seal(&scope, &place, &secret)?;
                let mut b = Batch::default();
                b.put(Table::Meta, "srt-secret", encode(&sealed));
                self.store.write(b)?;
                secret
            }
        };
        Ok(*self.srt_secret.get_or_init(|| secret))
    }

    /// Every tenant's SRT secret (derived from the root, which never leaves
    /// the control plane): what an origin holds (F9).
    pub fn srt_tenant_secrets(&self) -> Result<BTreeMap<String, String>> {
        let root = self.srt_secret()?;
        Ok(self
            .tenants()?
            .into_iter()
            .map(|t| {
                let secret = strom_token::srt::tenant_secret(&root, &t.id);
                (t.id, strom_token::srt::secret_to_hex(&secret))
            })
            .collect())
    }

    /// The version of the tenant set: a digest of the tenant ids, so every
    /// replica on one store names the same set with the same number and an
    /// origin's long poll may move between replicas. 53 bits (exact in any
    /// JSON reader).
    pub fn tenant_set_version(&self) -> Result<u64> {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for (key, _) in self.store.scan(Table::Tenants, b"", usize::MAX)? {
            digest.update((key.len() as u64).to_be_bytes());
            digest.update(&key);
        }
        let d = digest.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        Ok(u64::from_be_bytes(first) & ((1 << 53) - 1))
    }

    /// Takes up tenants created or deleted on this or another replica: the
    /// watch changes and long polls waiting on it answer.
    pub fn follow_tenants(&self) -> Result<u64> {
        let version = self.tenant_set_version()?;
        self.tenants_changed.send_if_modified(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
        Ok(version)
    }

    /// Carries the tenant-set version ([`Self::tenant_set_version`]);
    /// changes whenever a tenant is created or deleted.
    pub fn tenants_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tenants_changed.subscribe()
    }

    /// The SRT secret of one tenant (for its stream keys and passphrases).
    pub fn srt_tenant_secret(&self, tenant: &str) -> Result<[u8; strom_token::srt::SECRET_LEN]> {
        Ok(strom_token::srt::tenant_secret(&self.srt_secret()?, tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_memory;

    #[test]
    fn each_tenant_has_its_own_stable_srt_secret() {
        let repo = in_memory();
        let a = repo.create_tenant("Acme").unwrap().id;
        let b = repo.create_tenant("Globex").unwrap().id;
        let sa = repo.srt_tenant_secret(&a).unwrap();
        assert_eq!(repo.srt_tenant_secret(&a).unwrap(), sa);
        assert_ne!(repo.srt_tenant_secret(&b).unwrap(), sa);
        let all = repo.srt_tenant_secrets().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[&a], hex::encode(sa));
    }

    #[test]
    fn the_tenant_set_version_follows_the_set_and_wakes_watchers() {
        let repo = in_memory();
        let mut watch = repo.tenants_watch();
        let empty = repo.tenant_set_version().unwrap();
        assert_eq!(*watch.borrow_and_update(), empty, "set at open");
        let a = repo.create_tenant("Acme").unwrap().id;
        assert!(
            watch.has_changed().unwrap(),
            "a new tenant wakes the long poll"
        );
        let one = *watch.borrow_and_update();
        assert_ne!(one, empty);
        assert!(one < 1 << 53);
        // Following finds nothing new: no wake-up.
        assert_eq!(repo.follow_tenants().unwrap(), one);
        assert!(!watch.has_changed().unwrap());
        let b = repo.create_tenant("Globex").unwrap().id;
        let two = *watch.borrow_and_update();
        assert_ne!(two, one);
        repo.delete_tenant(&b).unwrap();
        assert_eq!(
            *watch.borrow_and_update(),
            one,
            "the same set, the same version"
        );
        let _ = a;
    }
}
