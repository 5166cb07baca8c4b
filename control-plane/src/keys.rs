//! Encryption at rest (DATA-1). Personal fields are sealed with AES-256-GCM
//! under a data key per tenant (per event for event-scoped participant data);
//! data keys are wrapped by a versioned master key from a file or the
//! environment and kept in a separate key store that is not part of data
//! backups. Deleting a tenant or event destroys its data key first, so its
//! records — in the live store and in every backup — become unreadable
//! (crypto-shredding). Rotating the master key re-wraps data keys, not data.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::{Batch, Store, StoreError, Table};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key: {0}")]
    Master(String),
    #[error("the data key of {0} no longer exists (deleted)")]
    Shredded(String),
    #[error("sealed value does not open: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Versioned master keys; the highest version wraps new data keys.
#[derive(Clone)]
pub struct MasterKeys {
    versions: Vec<(u32, [u8; 32])>,
}

impl MasterKeys {
    /// Parses `v<N>:<base64 of 32 bytes>` lines (a bare base64 line is v1).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut versions = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (version, b64) = match line.split_once(':') {
                Some((v, k)) => (
                    v.trim_start_matches('v')
                        .parse::<u32>()
                        .map_err(|_| KeyError::Master("version must look like v1".into()))?,
                    k,
                ),
                None => (1, line),
            };
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| KeyError::Master(format!("v{version} is not base64")))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| KeyError::Master(format!("v{version} must be 32 bytes")))?;
            versions.push((version, key));
        }
        versions.sort_by_key(|(v, _)| *v);
        versions.dedup_by_key(|(v, _)| *v);
        if versions.is_empty() {
            return Err(KeyError::Master("no key".into()));
        }
        Ok(Self { versions })
    }

    pub fn generate() -> Self {
        Self {
            versions: vec![(1, rand::random())],
        }
    }

    /// Adds a new newest version (rotation).
    pub fn rotated(&self) -> Self {
        let mut versions = self.versions.clone();
        versions.push((self.current().0 + 1, rand::random()));
        Self { versions }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::from("# strom master keys: the highest version wraps new data keys\n");
        for (v, k) in &self.versions {
            s.push_str(&format!("v{v}:{}\n", STANDARD.encode(k)));
        }
        s
    }

    /// Loads from `STROM_MASTER_KEY` if set, else from `file`, creating the
    /// file (0600) when `create` is true and it does not exist.
    pub fn load(file: &Path, create: bool) -> Result<Self, KeyError> {
        if let Ok(text) = std::env::var("STROM_MASTER_KEY") {
            return Self::parse(&text);
        }
        match std::fs::read_to_string(file) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let keys = Self::generate();
                write_secret_file(file, keys.to_text().as_bytes())
                    .map_err(|e| KeyError::Master(format!("{}: {e}", file.display())))?;
                Ok(keys)
            }
            Err(e) => Err(KeyError::Master(format!("{}: {e}", file.display()))),
        }
    }

    pub fn current(&self) -> (u32, &[u8; 32]) {
        let (v, k) = self.versions.last().expect("at least one version");
        (*v, k)
    }

    fn get(&self, version: u32) -> Option<&[u8; 32]> {
        self.versions
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, k)| k)
    }
}

/// Writes a file readable by its owner only.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

#[derive(Serialize, Deserialize)]
struct WrappedKey {
    kek: u32,
    nonce: String,
    wrapped: String,
}

/// What a data key protects: a tenant's data, one event's participants, or
/// what the audit trail holds of one person (a staff member or participant,
/// `u_…`/`p_…`): shredded when that person is erased, so the old and new
/// values in the hash chain become unreadable while the chain stays intact.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Tenant(String),
    Event(String, String),
    Subject(String, String),
}

impl Scope {
    fn key(&self) -> String {
        match self {
            Scope::Tenant(t) => t.clone(),
            // Event (`e_…`) and subject (`u_…`, `p_…`) ids never collide.
            Scope::Event(t, e) => format!("{t}/{e}"),
            Scope::Subject(t, s) => format!("{t}/{s}"),
        }
    }

    fn tenant(&self) -> &str {
        match self {
            Scope::Tenant(t) | Scope::Event(t, _) | Scope::Subject(t, _) => t,
        }
    }
}

/// The data keys: wrapped in the key store, unwrapped in memory while used.
pub struct KeyRing {
    store: Arc<dyn Store>,
    master: RwLock<MasterKeys>,
    cache: RwLock<HashMap<Scope, Arc<[u8; 32]>>>,
}

fn aead(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(key).expect("32-byte key")
}

fn seal_raw(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> (Vec<u8>, [u8; 12]) {
    let nonce: [u8; 12] = rand::random();
    let ct = aead(key)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encrypts any length we store");
    (ct, nonce)
}

fn open_raw(key: &[u8; 32], aad: &[u8], nonce: &[u8], ct: &[u8]) -> Result<Vec<u8>, KeyError> {
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| KeyError::Corrupt("nonce"))?;
    aead(key)
        .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
        .map_err(|_| KeyError::Corrupt("authentication failed"))
}

impl KeyRing {
    pub fn new(store: Arc<dyn Store>, master: MasterKeys) -> Self {
        Self {
            store,
            master: RwLock::new(master),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Creates the data key of `scope` if it does not exist yet.
    pub fn ensure(&self, scope: &Scope) -> Result<(), KeyError> {
        self.ensure_all(std::slice::from_ref(scope))
    }

    /// Creates the missing data keys of `scopes` in one durable write (an
    /// import of many participants creates one subject key each).
    pub fn ensure_all(&self, scopes: &[Scope]) -> Result<(), KeyError> {
        let (kek_version, kek) = {
            let master = self.master.read().expect("master lock");
            let (v, k) = master.current();
            (v, *k)
        };
        // Replicas sharing the key store make a scope's key once: two
        // making it at the same moment would leave one of them sealing
        // with a key the other overwrote.
        {
            let cache = self.cache.read().expect("cache lock");
            if scopes.iter().all(|s| cache.contains_key(s)) {
                return Ok(());
            }
        }
        let _section = self.store.exclusive()?;
        let mut b = Batch::default();
        let mut fresh = Vec::new();
        for scope in scopes {
            if self.data_key(scope).is_ok() || fresh.iter().any(|(s, _)| s == scope) {
                continue;
            }
            let key: [u8; 32] = rand::random();
            let (wrapped, nonce) = seal_raw(&kek, scope.key().as_bytes(), &key);
            let record = WrappedKey {
                kek: kek_version,
                nonce: STANDARD.encode(nonce),
                wrapped: STANDARD.encode(wrapped),
            };
            b.put(
                Table::Keys,
                scope.key(),
                serde_json::to_vec(&record).expect("serialises"),
            );
            fresh.push((scope.clone(), key));
        }
        if fresh.is_empty() {
            return Ok(());
        }
        self.store.write(b)?;
        let mut cache = self.cache.write().expect("cache lock");
        for (scope, key) in fresh {
            cache.insert(scope, Arc::new(key));
        }
        Ok(())
    }

    fn data_key(&self, scope: &Scope) -> Result<Arc<[u8; 32]>, KeyError> {
        if let Some(k) = self.cache.read().expect("cache lock").get(scope) {
            return Ok(k.clone());
        }
        let raw = self
            .store
            .get(Table::Keys, scope.key().as_bytes())?
            .ok_or_else(|| KeyError::Shredded(scope.key()))?;
        let record: WrappedKey =
            serde_json::from_slice(&raw).map_err(|_| KeyError::Corrupt("wrapped key record"))?;
        let master = self.master.read().expect("master lock");
        let kek = master.get(record.kek).ok_or_else(|| {
            KeyError::Master(format!(
                "data key wrapped by v{}, which is not loaded",
                record.kek
            ))
        })?;
        let nonce = STANDARD
            .decode(&record.nonce)
            .map_err(|_| KeyError::Corrupt("nonce"))?;
        let wrapped = STANDARD
            .decode(&record.wrapped)
            .map_err(|_| KeyError::Corrupt("wrapped"))?;
        let key: [u8; 32] = open_raw(kek, scope.key().as_bytes(), &nonce, &wrapped)?
            .try_into()
            .map_err(|_| KeyError::Corrupt("data key length"))?;
        let key = Arc::new(key);
        self.cache
            .write()
            .expect("cache lock")
            .insert(scope.clone(), key.clone());
        Ok(key)
    }

    /// Seals `plaintext`; `aad` binds it to its place (tenant‖entity‖id‖field).
    pub fn seal(&self, scope: &Scope, aad: &str, plaintext: &[u8]) -> Result<String, KeyError> {
        let key = self.data_key(scope)?;
        let (ct, nonce) = seal_raw(&key, aad.as_bytes(), plaintext);
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ct);
        Ok(format!("s1.{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn open(&self, scope: &Scope, aad: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        let b64 = sealed
            .strip_prefix("s1.")
            .ok_or(KeyError::Corrupt("format"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| KeyError::Corrupt("base64"))?;
        if bytes.len() < 12 + 16 {
            return Err(KeyError::Corrupt("length"));
        }
        let key = self.data_key(scope)?;
        open_raw(&key, aad.as_bytes(), &bytes[..12], &bytes[12..])
    }

    pub fn seal_str(&self, scope: &Scope, aad: &str, s: &str) -> Result<String, KeyError> {
        self.seal(scope, aad, s.as_bytes())
    }

    pub fn open_str(&self, scope: &Scope, aad: &str, sealed: &str) -> Result<String, KeyError> {
        String::from_utf8(self.open(scope, aad, sealed)?).map_err(|_| KeyError::Corrupt("utf-8"))
    }

    /// A keyed hash for looking values up without storing them in clear
    /// (blind index); it shreds with the scope's data key.
    pub fn blind_index(&self, scope: &Scope, kind: &str, value: &str) -> Result<String, KeyError> {
        let key = self.data_key(scope)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key[..]).expect("any key length");
        mac.update(b"strom blind index\0");
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16]))
    }

    /// Destroys the data keys of a tenant (all its scopes), of one event or
    /// of one person.
    pub fn shred(&self, scope: &Scope) -> Result<(), KeyError> {
        self.shred_all(std::slice::from_ref(scope))
    }

    /// [`shred`](Self::shred) for many scopes in one durable write.
    pub fn shred_all(&self, scopes: &[Scope]) -> Result<(), KeyError> {
        let mut b = Batch::default();
        for scope in scopes {
            b.delete(Table::Keys, scope.key());
            if let Scope::Tenant(t) = scope {
                b.delete_prefix(Table::Keys, crate::store::prefix(&[t]));
            }
        }
        self.store.write(b)?;
        let mut cache = self.cache.write().expect("cache lock");
        cache.retain(|s, _| {
            !scopes.iter().any(|scope| match scope {
                Scope::Tenant(t) => s.tenant() == t,
                other => other == s,
            })
        });
        Ok(())
    }

    /// Replaces the master keys and re-wraps every data key under the newest
    /// version. Data keys stay usable throughout (the cache and the old
    /// version serve reads), so rotation needs no downtime.
    pub fn rotate_master(&self, master: MasterKeys) -> Result<usize, KeyError> {
        let old = self.master.read().expect("master lock").clone();
        let (new_version, new_kek) = {
            let (v, k) = master.current();
            (v, *k)
        };
        // Both old and new versions must open existing records meanwhile.
        let mut merged = old.versions.clone();
        for (v, k) in &master.versions {
            if !merged.iter().any(|(w, _)| w == v) {
                merged.push((*v, *k));
            }
        }
        merged.sort_by_key(|(v, _)| *v);
        *self.master.write().expect("master lock") = MasterKeys { versions: merged };
        let mut rewrapped = 0;
        let mut after: Vec<u8> = Vec::new();
        loop {
            let page = self.store.scan_after(Table::Keys, b"", &after, 256)?;
            if page.is_empty() {
                break;
            }
            for (k, v) in &page {
                let record: WrappedKey = serde_json::from_slice(v)
                    .map_err(|_| KeyError::Corrupt("wrapped key record"))?;
                if record.kek == new_version {
                    continue;
                }
                let scope_key = String::from_utf8_lossy(k).to_string();
                let kek = self
                    .master
                    .read()
                    .expect("master lock")
                    .get(record.kek)
                    .copied()
                    .ok_or_else(|| {
                        KeyError::Master(format!(
                            "data key wrapped by v{}, which is not loaded",
                            record.kek
                        ))
                    })?;
                let nonce = STANDARD
                    .decode(&record.nonce)
                    .map_err(|_| KeyError::Corrupt("nonce"))?;
                let wrapped = STANDARD
                    .decode(&record.wrapped)
                    .map_err(|_| KeyError::Corrupt("wrapped"))?;
                let key = open_raw(&kek, scope_key.as_bytes(), &nonce, &wrapped)?;
                let (wrapped, nonce) = seal_raw(&new_kek, scope_key.as_bytes(), &key);
                let record = WrappedKey {
                    kek: new_version,
                    nonce: STANDARD.encode(nonce),
                    wrapped: STANDARD.encode(wrapped),
                };
                let mut b = Batch::default();
                b.put(
                    Table::Keys,
                    k.clone(),
                    serde_json::to_vec(&record).expect("serialises"),
                );
                self.store.write(b)?;
                rewrapped += 1;
            }
            after = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
        }
        *self.master.write().expect("master lock") = master;
        Ok(rewrapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RocksStore;

    fn ring(dir: &Path) -> KeyRing {
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir, &Table::KEYS).unwrap());
        KeyRing::new(store, MasterKeys::generate())
    }

    #[test]
    fn seal_open_bound_to_place_and_shredded_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring(dir.path());
        let event = Scope::Event("t1".into(), "e1".into());
        ring.ensure(&Scope::Tenant("t1".into())).unwrap();
        ring.ensure(&event).unwrap();
        let sealed = ring
            .seal_str(&event, "t1|participant|p1|email", "ada@example.com")
            .unwrap();
        assert!(!sealed.contains("ada"));
        assert_eq!(
            ring.open_str(&event, "t1|participant|p1|email", &sealed)
                .unwrap(),
            "ada@example.com"
        );
        // Moved to another record or field: refused.
        assert!(ring
            .open_str(&event, "t1|participant|p2|email", &sealed)
            .is_err());
        ring.shred(&Scope::Tenant("t1".into())).unwrap();
        assert!(matches!(
            ring.open_str(&event, "t1|participant|p1|email", &sealed),
            Err(KeyError::Shredded(_))
        ));
    }

    #[test]
    fn rotation_rewraps_and_old_version_can_go() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path(), &Table::KEYS).unwrap());
        let v1 = MasterKeys::generate();
        let ring = KeyRing::new(store.clone(), v1.clone());
        let scope = Scope::Tenant("t1".into());
        ring.ensure(&scope).unwrap();
        let sealed = ring.seal_str(&scope, "a", "secret").unwrap();
        let v2 = v1.rotated();
        assert_eq!(ring.rotate_master(v2.clone()).unwrap(), 1);
        // A fresh process that holds only v2 opens the data.
        let only_v2 = MasterKeys {
            versions: vec![(2, *v2.current().1)],
        };
        let fresh = KeyRing::new(store, only_v2);
        assert_eq!(fresh.open_str(&scope, "a", &sealed).unwrap(), "secret");
    }

    #[test]
    fn master_key_text_round_trip_and_errors() {
        let keys = MasterKeys::generate().rotated();
        let again = MasterKeys::parse(&keys.to_text()).unwrap();
        assert_eq!(again.current().0, 2);
        assert!(MasterKeys::parse("v1:short").is_err());
        assert!(MasterKeys::parse("").is_err());
    }
}
