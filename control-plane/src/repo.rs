//! The control plane's records and the rules that keep them consistent:
//! every function takes the tenant from the caller's session, never from the
//! request, so an id of another tenant simply is not found. Personal fields
//! are sealed on the way in and opened on the way out; every change to them
//! appends to the tenant's audit chain in the same atomic batch.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strom_identity::lockout;
use strom_identity::password::{self, PasswordPolicy};
use strom_token::revocation::RevocationFeed;
use strom_token::{Action, Grant, RelayRole, Revocation, RevocationKind, SigningKey};
use time::OffsetDateTime;

use crate::audit::{self, Entry};
use crate::keys::{KeyError, KeyRing, Scope};
use crate::model::*;
use crate::store::{key, prefix, Batch, Store, StoreError, Table};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("account locked")]
    Locked(Option<OffsetDateTime>),
    #[error("wrong credentials")]
    WrongCredentials,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

pub type Result<T> = std::result::Result<T, RepoError>;

pub struct Repo {
    pub store: Arc<dyn Store>,
    pub keys: Arc<dyn Store>,
    pub ring: KeyRing,
    write: Mutex<()>,
    revocation_seq: tokio::sync::watch::Sender<u64>,
    /// Bumped whenever a tenant is created or deleted (origins long-poll
    /// the tenants' SRT secrets on it).
    tenants_changed: tokio::sync::watch::Sender<u64>,
    signing: Mutex<Vec<StoredSigningKey>>,
    srt_secret: std::sync::OnceLock<[u8; strom_token::srt::SECRET_LEN]>,
    verifier: Arc<strom_token::Verifier>,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::CpMetrics,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSigningKey {
    kid: String,
    /// Sealed 64-byte secret key.
    secret: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Tokens signed with it stop verifying then (set when a newer key
    /// became current).
    #[serde(default, with = "time::serde::rfc3339::option")]
    retire_at: Option<OffsetDateTime>,
}

fn signing_key_row(k: &StoredSigningKey) -> Vec<u8> {
    key(&[
        "signing-key",
        &format!("{}", k.created_at.unix_timestamp()),
        &k.kid,
    ])
}

/// A signing key as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SigningKeyInfo {
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Tokens signed with it stop verifying at this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retire_at: Option<OffsetDateTime>,
    /// New tokens are signed with this key.
    pub current: bool,
}

/// A participant as staff (and the participant) see it: opened.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParticipantView {
    pub id: String,
    pub event: String,
    pub email: String,
    pub name: String,
    pub fields: BTreeMap<String, String>,
    pub status: ParticipantStatus,
    pub source: ParticipantSource,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    pub must_change_password: bool,
    pub consent: Option<String>,
    pub attended_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub role_since: OffsetDateTime,
    pub active: bool,
    pub locked: bool,
    pub totp: bool,
    pub must_change_password: bool,
}

/// Consent as recorded: immutable, one record per act.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentRecord {
    pub id: String,
    pub participant: String,
    pub event: String,
    /// Which privacy notice (its text or URL as shown).
    pub notice: String,
    pub given: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| RepoError::Store(StoreError::Corrupt(e.to_string())))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn aad(tenant: &str, entity: &str, id: &str, field: &str) -> String {
    format!("{tenant}|{entity}|{id}|{field}")
}

pub fn normalise_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',');
    if valid {
        Ok(e)
    } else {
        Err(RepoError::Invalid(
            "email is not a valid e-mail address".into(),
        ))
    }
}

pub fn clean_text(field: &str, s: &str, max: usize) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(|c| c.is_control()) {
        return Err(RepoError::Invalid(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(t.to_owned())
}

impl Repo {
    pub fn new(store: Arc<dyn Store>, keys: Arc<dyn Store>, ring: KeyRing) -> Result<Self> {
        let seq = match store.get(Table::Meta, b"revocation-seq")? {
            Some(raw) => decode(&raw)?,
            None => 0u64,
        };
        let (revocation_seq, _) = tokio::sync::watch::channel(seq);
        let repo = Self {
            store,
            keys,
            ring,
            write: Mutex::new(()),
            revocation_seq,
            tenants_changed: tokio::sync::watch::channel(0).0,
            signing: Mutex::new(Vec::new()),
            srt_secret: std::sync::OnceLock::new(),
            verifier: Arc::new(strom_token::Verifier::new()),
            metrics: Default::default(),
        };
        repo.ring.ensure(&Scope::Tenant("_platform".into()))?;
        repo.load_signing_keys()?;
        repo.load_verifier()?;
        Ok(repo)
    }

    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get<T: DeserializeOwned>(&self, t: Table, k: &[u8]) -> Result<T> {
        match self.store.get(t, k)? {
            Some(raw) => decode(&raw),
            None => Err(RepoError::NotFound),
        }
    }

    fn scan<T: DeserializeOwned>(&self, t: Table, p: &[u8]) -> Result<Vec<T>> {
        self.store
            .scan(t, p, usize::MAX)?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    /// Writes `batch` plus audit records for `entries` atomically.
    fn commit(&self, tenant: &str, mut batch: Batch, entries: Vec<Entry>) -> Result<()> {
        if !entries.is_empty() {
            let head = audit::head(self.store.as_ref(), tenant)?;
            audit::append(&mut batch, tenant, head, entries, now());
        }
        self.store.write(batch)?;
        Ok(())
    }

    /// Seals a personal value for the audit trail under the key of the
    /// person it belongs to (`entity_id`), so erasing that person shreds it
    /// (F16). `_scope` is where the value itself lives; older records were
    /// sealed there and still open with it.
    fn seal_audit(
        &self,
        _scope: &Scope,
        tenant: &str,
        entity_id: &str,
        field: &str,
        value: &str,
    ) -> Result<String> {
        let subject = Scope::Subject(tenant.into(), entity_id.into());
        self.ring.ensure(&subject)?;
        Ok(self
            .ring
            .seal_str(&subject, &aad(tenant, "audit", entity_id, field), value)?)
    }

    pub fn open_audit_value(
        &self,
        record: &audit::AuditRecord,
    ) -> (Option<String>, Option<String>) {
        let field = record.field.clone().unwrap_or_default();
        let open = |v: &Option<String>| -> Option<String> {
            let v = v.as_ref()?;
            if let Some(clear) = v.strip_prefix('=') {
                return Some(clear.to_owned());
            }
            let scopes = [
                Scope::Subject(record.tenant.clone(), record.entity_id.clone()),
                Scope::Tenant(record.tenant.clone()),
            ];
            let event_scope = self
                .participant_event(&record.tenant, &record.entity_id)
                .map(|e| Scope::Event(record.tenant.clone(), e));
            for scope in scopes.iter().chain(event_scope.iter()) {
                if let Ok(s) = self.ring.open_str(
                    scope,
                    &aad(&record.tenant, "audit", &record.entity_id, &field),
                    v,
                ) {
                    return Some(s);
                }
            }
            Some("(unreadable: key deleted)".into())
        };
        (open(&record.old), open(&record.new))
    }

    fn participant_event(&self, tenant: &str, participant: &str) -> Option<String> {
        self.store
            .get(
                Table::Index,
                &key(&[tenant, "participant-event", participant]),
            )
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
    }

    // ---- SRT passphrases ---------------------------------------------

    /// The secret SRT passphrases derive from (shared with the operator's
    /// origins, see `strom_token::srt`): made once, sealed with the platform
    /// key in the store.
    pub fn srt_secret(&self) -> Result<[u8; strom_token::srt::SECRET_LEN]> {
        if let Some(s) = self.srt_secret.get() {
            return Ok(*s);
        }
        let _g = self.lock();
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

    /// Changes whenever a tenant is created or deleted.
    pub fn tenants_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tenants_changed.subscribe()
    }

    /// The SRT secret of one tenant (for its stream keys and passphrases).
    pub fn srt_tenant_secret(&self, tenant: &str) -> Result<[u8; strom_token::srt::SECRET_LEN]> {
        Ok(strom_token::srt::tenant_secret(&self.srt_secret()?, tenant))
    }

    // ---- signing keys -------------------------------------------------

    fn load_signing_keys(&self) -> Result<()> {
        let scope = Scope::Tenant("_platform".into());
        let mut keys: Vec<StoredSigningKey> = self.scan(Table::Meta, &prefix(&["signing-key"]))?;
        if keys.is_empty() {
            self.rotate_signing_key(time::Duration::ZERO)?;
            return Ok(());
        }
        keys.sort_by_key(|k| k.created_at);
        for k in &keys {
            // Fails loudly if the platform key is gone.
            self.ring.open(
                &scope,
                &aad("_platform", "signing-key", &k.kid, "secret"),
                &k.secret,
            )?;
        }
        *self.signing.lock().expect("signing lock") = keys;
        Ok(())
    }

    /// Makes a new signing key current. Tokens signed by the older keys keep
    /// verifying for `overlap` and no longer (a compromised key: overlap 0);
    /// credentials signed by them must be issued again within it (see
    /// [`signing_keys`](Self::signing_keys)). The verifier here takes the new
    /// key set at once; relays within a minute (or at their next refusal).
    pub fn rotate_signing_key(&self, overlap: time::Duration) -> Result<String> {
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

    fn current_signing_key(&self) -> Result<SigningKey> {
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

    // ---- revocations --------------------------------------------------

    pub fn revoke(&self, kind: RevocationKind, tenant: &str, id: &str) -> Result<Revocation> {
        let _g = self.lock();
        self.revoke_locked(kind, tenant, id)
    }

    fn revoke_locked(&self, kind: RevocationKind, tenant: &str, id: &str) -> Result<Revocation> {
        // Token times carry sub-second precision: tokens minted after this
        // instant stay valid, every earlier one is revoked.
        let at = OffsetDateTime::now_utc();
        Ok(self
            .append_revocations(&[(kind, tenant, id, at)])?
            .remove(0))
    }

    /// Records revocations issued at the given moments, in one write
    /// (a tenant's events together; tests build long logs with it).
    #[doc(hidden)]
    pub fn revoke_all_at(
        &self,
        entries: &[(RevocationKind, &str, &str, OffsetDateTime)],
    ) -> Result<Vec<Revocation>> {
        let _g = self.lock();
        self.append_revocations(entries)
    }

    /// Appends to the log (the caller holds the write lock), tells the
    /// control plane's own verifier at once and wakes the relays' polls.
    fn append_revocations(
        &self,
        entries: &[(RevocationKind, &str, &str, OffsetDateTime)],
    ) -> Result<Vec<Revocation>> {
        let mut seq = *self.revocation_seq.borrow();
        let mut b = Batch::default();
        let mut out = Vec::with_capacity(entries.len());
        for (kind, tenant, id, at) in entries {
            seq += 1;
            let r = Revocation {
                seq,
                kind: *kind,
                tenant: (*tenant).into(),
                id: (*id).into(),
                issued_before: *at,
                keep_until: Some(*at + time::Duration::seconds(revocation_lifetime(*kind, id))),
            };
            b.put(Table::Revocations, format!("{seq:016}"), encode(&r));
            out.push(r);
        }
        b.put(Table::Meta, "revocation-seq", encode(&seq));
        self.store.write(b)?;
        self.verifier.revocations_mut().apply(&RevocationFeed {
            seq,
            entries: out.clone(),
            ..Default::default()
        });
        self.revocation_seq.send_replace(seq);
        for r in &out {
            self.metrics.revoked(r.kind);
            tracing::info!(kind = ?r.kind, tenant = %r.tenant, id = %r.id, seq = r.seq, "revocation recorded");
        }
        Ok(out)
    }

    /// One page of the log after `after`, at most [`REVOCATION_PAGE`]
    /// entries; `more` says another page follows (then `seq` is the last
    /// entry's position, else the newest). With `tenant`, only that
    /// tenant's entries (a peer-agent's credential reads no other tenant's
    /// ids), the position still moving over the others.
    pub fn revocations_after(&self, after: u64, tenant: Option<&str>) -> Result<RevocationFeed> {
        let head = *self.revocation_seq.borrow();
        // A relay ahead of us (we were restored from a backup) starts over.
        let reset = after > head;
        let from = if reset { 0 } else { after };
        let rows = self.store.scan_after(
            Table::Revocations,
            b"",
            format!("{from:016}").as_bytes(),
            REVOCATION_PAGE,
        )?;
        let scanned: Vec<Revocation> =
            rows.iter().map(|(_, v)| decode(v)).collect::<Result<_>>()?;
        let more = scanned.len() == REVOCATION_PAGE;
        let seq = match scanned.last() {
            Some(last) if more => last.seq,
            _ => head,
        };
        let entries = scanned
            .into_iter()
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .collect();
        Ok(RevocationFeed {
            seq,
            entries,
            reset,
            more,
        })
    }

    pub fn revocation_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocation_seq.subscribe()
    }

    /// Drops from the log what no relay needs any more (F3): entries that
    /// cannot match a valid token at `at`, and entries a later one covers.
    /// Positions are never reused, so relays simply read on. Returns how
    /// many entries went.
    pub fn compact_revocations(&self, at: OffsetDateTime) -> Result<usize> {
        let _g = self.lock();
        let all: Vec<Revocation> = self.scan(Table::Revocations, b"")?;
        let keep: std::collections::HashSet<u64> = strom_token::revocation::compact(&all, at)
            .iter()
            .map(|r| r.seq)
            .collect();
        let mut b = Batch::default();
        let mut dropped = 0;
        for r in &all {
            if !keep.contains(&r.seq) {
                b.delete(Table::Revocations, format!("{:016}", r.seq));
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.store.write(b)?;
            self.verifier.revocations_mut().prune(at);
            tracing::info!(dropped, kept = keep.len(), "revocation log compacted");
        }
        Ok(dropped)
    }

    /// The control plane's own verifier: relay credentials, agent tickets
    /// and tokens are checked against the same keys and revocations relays
    /// hold, updated the moment a revocation is recorded.
    pub fn verifier(&self) -> &Arc<strom_token::Verifier> {
        &self.verifier
    }

    fn load_verifier(&self) -> Result<()> {
        self.verifier.set_keys(&self.key_set()?);
        let mut after = 0;
        loop {
            let page = self.revocations_after(after, None)?;
            after = page.seq;
            let more = page.more;
            self.verifier.revocations_mut().apply(&page);
            if !more {
                break;
            }
        }
        self.verifier
            .revocations_mut()
            .prune(OffsetDateTime::now_utc());
        Ok(())
    }

    // ---- tenants ------------------------------------------------------

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
        let _g = self.lock();
        let mut b = Batch::default();
        b.put(Table::Tenants, tenant.id.clone(), encode(&tenant));
        self.commit(
            &tenant.id,
            b,
            vec![Entry {
                actor: "system".into(),
                action: "create".into(),
                entity: "tenant".into(),
                entity_id: tenant.id.clone(),
                ..Default::default()
            }],
        )?;
        self.tenants_changed.send_modify(|v| *v += 1);
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
        let _g = self.lock();
        let mut b = Batch::default();
        b.put(Table::Tenants, tenant.id.clone(), encode(tenant));
        self.commit(
            &tenant.id,
            b,
            vec![Entry {
                actor: actor.into(),
                action: "change".into(),
                entity: "tenant".into(),
                entity_id: tenant.id.clone(),
                field: Some("settings".into()),
                ..Default::default()
            }],
        )
    }

    /// Deletes a tenant for good: journal it (so a restore cannot bring it
    /// back), destroy its keys, then its data, then revoke its tokens.
    pub fn delete_tenant(&self, id: &str) -> Result<()> {
        self.tenant(id)?;
        let _g = self.lock();
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
        self.tenants_changed.send_modify(|v| *v += 1);
        Ok(())
    }

    fn purge_tenant_data(&self, id: &str) -> Result<()> {
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

    // ---- staff --------------------------------------------------------

    fn user_email_index(&self, tenant: &str, email: &str) -> Result<Vec<u8>> {
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
        let user = User {
            id: id.clone(),
            tenant: tenant.into(),
            email: self
                .ring
                .seal_str(&scope, &aad(tenant, "user", &id, "email"), &email)?,
            name: self
                .ring
                .seal_str(&scope, &aad(tenant, "user", &id, "name"), &name)?,
            role,
            role_since: now(),
            created_at: now(),
            active: true,
            credential,
        };
        let idx = self.user_email_index(tenant, &email)?;
        let _g = self.lock();
        if self.store.get(Table::Index, &idx)?.is_some() {
            return Err(RepoError::Conflict(
                "an account with this e-mail address exists".into(),
            ));
        }
        let mut b = Batch::default();
        b.put(Table::Users, key(&[tenant, &id]), encode(&user));
        b.put(Table::Index, idx, id.clone());
        let entries = vec![
            self.entry(
                actor,
                "create",
                "user",
                &id,
                Some("email"),
                None,
                Some(self.seal_audit(&scope, tenant, &id, "email", &email)?),
            ),
            self.entry(
                actor,
                "create",
                "user",
                &id,
                Some("name"),
                None,
                Some(self.seal_audit(&scope, tenant, &id, "name", &name)?),
            ),
            self.entry(
                actor,
                "create",
                "user",
                &id,
                Some("role"),
                None,
                Some(format!("={role:?}")),
            ),
        ];
        self.commit(tenant, b, entries)?;
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
        let _g = self.lock();
        self.commit(
            tenant,
            Batch::default(),
            vec![self.entry(subject, action, "session", subject, Some(what), None, None)],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        actor: &str,
        action: &str,
        entity: &str,
        id: &str,
        field: Option<&str>,
        old: Option<String>,
        new: Option<String>,
    ) -> Entry {
        Entry {
            actor: actor.into(),
            action: action.into(),
            entity: entity.into(),
            entity_id: id.into(),
            field: field.map(Into::into),
            old,
            new,
        }
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
        let _g = self.lock();
        let mut u = self.user(tenant, id)?;
        let old = self.user_view(&u)?;
        let mut entries = Vec::new();
        if let Some(name) = name {
            let name = clean_text("name", name, 120)?;
            if name != old.name {
                u.name = self
                    .ring
                    .seal_str(&scope, &aad(tenant, "user", id, "name"), &name)?;
                entries.push(self.entry(
                    actor,
                    "change",
                    "user",
                    id,
                    Some("name"),
                    Some(self.seal_audit(&scope, tenant, id, "name", &old.name)?),
                    Some(self.seal_audit(&scope, tenant, id, "name", &name)?),
                ));
            }
        }
        if let Some(role) = role {
            if role != u.role {
                if u.role == Role::Owner && self.owner_count(tenant)? <= 1 {
                    return Err(RepoError::Conflict(
                        "the last owner cannot lose the owner role".into(),
                    ));
                }
                entries.push(self.entry(
                    actor,
                    "change",
                    "user",
                    id,
                    Some("role"),
                    Some(format!("={:?}", u.role)),
                    Some(format!("={role:?}")),
                ));
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
                entries.push(self.entry(
                    actor,
                    "change",
                    "user",
                    id,
                    Some("active"),
                    Some(format!("={}", u.active)),
                    Some(format!("={active}")),
                ));
                u.active = active;
            }
        }
        let mut b = Batch::default();
        b.put(Table::Users, key(&[tenant, id]), encode(&u));
        if !active.unwrap_or(true) {
            self.end_sessions(&mut b, tenant, id, None)?;
        }
        self.commit(tenant, b, entries)?;
        self.user_view(&u)
    }

    fn owner_count(&self, tenant: &str) -> Result<usize> {
        Ok(self
            .users(tenant)?
            .iter()
            .filter(|u| u.role == Role::Owner && u.active)
            .count())
    }

    pub fn delete_user(&self, actor: &str, tenant: &str, id: &str) -> Result<()> {
        let scope = Scope::Tenant(tenant.into());
        let _g = self.lock();
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
        let entries = vec![
            self.entry(
                actor,
                "delete",
                "user",
                id,
                Some("email"),
                Some(self.seal_audit(&scope, tenant, id, "email", &view.email)?),
                None,
            ),
            self.entry(
                actor,
                "delete",
                "user",
                id,
                Some("name"),
                Some(self.seal_audit(&scope, tenant, id, "name", &view.name)?),
                None,
            ),
        ];
        self.ring.shred(&Scope::Subject(tenant.into(), id.into()))?;
        self.commit(tenant, b, entries)
    }

    // ---- credentials (shared by staff and participants) ----------------

    /// Reserves a login attempt (counted before the password is checked, so
    /// parallel attempts cannot exceed the limit).
    pub fn reserve_attempt(&self, tenant: &str, principal: &Principal) -> Result<Credential> {
        let _g = self.lock();
        let mut cred = self.credential(tenant, principal)?;
        cred.lockout = lockout::begin_attempt(&cred.lockout, now()).map_err(|l| {
            self.metrics.logins_locked.fetch_add(1, Ordering::Relaxed);
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
        let _g = self.lock();
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
        counter.fetch_add(1, Ordering::Relaxed);
        cred.lockout = if ok {
            lockout::attempt_succeeded(&cred.lockout)
        } else {
            lockout::attempt_failed(&cred.lockout, lock_minutes, now())
        };
        let mut entries = vec![];
        if !ok {
            // A security event (V16): bounded by the lockout, three per
            // lock period and account.
            entries.push(self.entry(
                "system",
                "login-failed",
                principal_entity(principal),
                principal_id(principal),
                None,
                None,
                None,
            ));
        }
        if !was_locked && cred.lockout.locked_until.is_some() {
            self.metrics.lockouts.fetch_add(1, Ordering::Relaxed);
            entries.push(self.entry(
                "system",
                "locked",
                principal_entity(principal),
                principal_id(principal),
                None,
                None,
                None,
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
        let _g = self.lock();
        let mut cred = self.credential(tenant, principal)?;
        cred.lockout = lockout::unlock();
        let entries = vec![self.entry(
            actor,
            "unlock",
            principal_entity(principal),
            principal_id(principal),
            None,
            None,
            None,
        )];
        self.put_credential(Batch::default(), tenant, principal, &cred, entries)
    }

    /// Removes a staff member's second factor for them (an owner's act, for
    /// a lost authenticator; ASVS 6.4.4): every session of the account ends,
    /// and the next login asks for a new enrolment where the tenant requires
    /// one. Audited as the actor's.
    pub fn reset_totp(&self, actor: &str, tenant: &str, principal: &Principal) -> Result<()> {
        let _g = self.lock();
        let mut cred = self.credential(tenant, principal)?;
        let had = cred.totp.is_some();
        cred.totp = None;
        cred.totp_pending = None;
        cred.totp_last_step = None;
        let mut b = Batch::default();
        self.end_sessions(&mut b, tenant, principal_id(principal), None)?;
        let entries = if had {
            vec![self.entry(
                actor,
                "delete",
                principal_entity(principal),
                principal_id(principal),
                Some("totp"),
                None,
                None,
            )]
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
    fn put_credential(
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
        let _g = self.lock();
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
        let entries = vec![self.entry(
            principal_id(principal),
            "change",
            principal_entity(principal),
            principal_id(principal),
            Some("password"),
            None,
            None,
        )];
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
        let _g = self.lock();
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
        let _g = self.lock();
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
        let entries = vec![self.entry(
            principal_id(principal),
            if replaced { "change" } else { "create" },
            principal_entity(principal),
            principal_id(principal),
            Some("totp"),
            None,
            None,
        )];
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

    // ---- sessions and links --------------------------------------------

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
    fn refresh_session(&self, secret: &str, mut s: Session) -> Result<Session> {
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
    fn end_sessions(
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
        let _g = self.lock();
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

    // ---- events and streams ---------------------------------------------

    pub fn create_event(&self, actor: &str, mut event: Event) -> Result<Event> {
        event.id = new_id("e");
        event.created_at = now();
        event.ended_at = None;
        validate_event(&event)?;
        self.ring
            .ensure(&Scope::Event(event.tenant.clone(), event.id.clone()))?;
        let _g = self.lock();
        let mut b = Batch::default();
        b.put(
            Table::Events,
            key(&[&event.tenant, &event.id]),
            encode(&event),
        );
        self.commit(
            &event.tenant,
            b,
            vec![self.entry(actor, "create", "event", &event.id, None, None, None)],
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
        let _g = self.lock();
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
            vec![self.entry(actor, "change", "event", &event.id, None, None, None)],
        )
    }

    /// Ends an event now: viewers' and publishers' tokens are revoked.
    pub fn end_event(&self, actor: &str, tenant: &str, id: &str) -> Result<Event> {
        let _g = self.lock();
        let mut event = self.event(tenant, id)?;
        event.ended_at = Some(now());
        let mut b = Batch::default();
        b.put(Table::Events, key(&[tenant, id]), encode(&event));
        self.commit(
            tenant,
            b,
            vec![self.entry(actor, "end", "event", id, None, None, None)],
        )?;
        self.revoke_locked(RevocationKind::Event, tenant, id)?;
        Ok(event)
    }

    /// Deletes an event with its participants, streams and keys (DATA-7).
    pub fn delete_event(&self, actor: &str, tenant: &str, id: &str) -> Result<()> {
        let _g = self.lock();
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
            vec![self.entry(actor, "delete", "event", id, None, None, None)],
        )?;
        self.revoke_locked(RevocationKind::EventDeleted, tenant, id)?;
        Ok(())
    }

    fn purge_event_data(&self, tenant: &str, id: &str) -> Result<()> {
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
        let _g = self.lock();
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
            vec![self.entry(
                actor,
                "create",
                "stream",
                &format!("{event}/{name}"),
                None,
                None,
                None,
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
        let _g = self.lock();
        self.stream(tenant, event, name)?;
        let mut b = Batch::default();
        b.delete(Table::Streams, key(&[tenant, event, name]));
        self.commit(
            tenant,
            b,
            vec![self.entry(
                actor,
                "delete",
                "stream",
                &format!("{event}/{name}"),
                None,
                None,
                None,
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
        let _g = self.lock();
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
            vec![self.entry(
                actor,
                "issue-credential",
                "stream",
                &format!("{event}/{name}"),
                None,
                None,
                None,
            )],
        )?;
        Ok(minted)
    }

    // ---- participants -----------------------------------------------------

    fn participant_email_index(&self, tenant: &str, event: &str, email: &str) -> Result<Vec<u8>> {
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
            let p = Participant {
                id: id.clone(),
                tenant: tenant.into(),
                event: event.into(),
                email: self.ring.seal_str(
                    &scope,
                    &aad(tenant, "participant", &id, "email"),
                    &email,
                )?,
                name: self.ring.seal_str(
                    &scope,
                    &aad(tenant, "participant", &id, "name"),
                    &name,
                )?,
                fields: self.ring.seal_str(
                    &scope,
                    &aad(tenant, "participant", &id, "fields"),
                    &fields_json,
                )?,
                status: row.status,
                source: row.source,
                created_at: now(),
                consent: None,
                credential,
                attended_secs: 0,
                attendance_reported_at: None,
                consent_withdrawn: false,
            };
            let audit = vec![
                self.entry(
                    actor,
                    "create",
                    "participant",
                    &id,
                    Some("email"),
                    None,
                    Some(self.seal_audit(&scope, tenant, &id, "email", &email)?),
                ),
                self.entry(
                    actor,
                    "create",
                    "participant",
                    &id,
                    Some("name"),
                    None,
                    Some(self.seal_audit(&scope, tenant, &id, "name", &name)?),
                ),
                self.entry(
                    actor,
                    "create",
                    "participant",
                    &id,
                    Some("fields"),
                    None,
                    Some(self.seal_audit(&scope, tenant, &id, "fields", &fields_json)?),
                ),
            ];
            prepared.push((
                p,
                self.participant_email_index(tenant, event, &email)?,
                audit,
                row.consent,
            ));
        }
        let _g = self.lock();
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
                entries.push(self.entry(
                    &p.id,
                    "consent",
                    "participant",
                    &p.id,
                    Some("privacy-notice"),
                    None,
                    Some(format!("={}", record.id)),
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
    #[allow(clippy::too_many_arguments)]
    pub fn update_participant(
        &self,
        actor: &str,
        tenant: &str,
        event: &str,
        id: &str,
        name: Option<&str>,
        email: Option<&str>,
        fields: Option<&BTreeMap<String, String>>,
    ) -> Result<ParticipantView> {
        let ev = self.event(tenant, event)?;
        let scope = Scope::Event(tenant.into(), event.into());
        let _g = self.lock();
        let mut p = self.participant(tenant, event, id)?;
        if p.status == ParticipantStatus::Blocked {
            return Err(RepoError::Conflict(
                "the participant's data is blocked".into(),
            ));
        }
        let old = self.participant_view(&p)?;
        let mut b = Batch::default();
        let mut entries = Vec::new();
        if let Some(name) = name {
            let name = clean_text("name", name, 120)?;
            if name != old.name {
                p.name =
                    self.ring
                        .seal_str(&scope, &aad(tenant, "participant", id, "name"), &name)?;
                entries.push(self.entry(
                    actor,
                    "change",
                    "participant",
                    id,
                    Some("name"),
                    Some(self.seal_audit(&scope, tenant, id, "name", &old.name)?),
                    Some(self.seal_audit(&scope, tenant, id, "name", &name)?),
                ));
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
                p.email =
                    self.ring
                        .seal_str(&scope, &aad(tenant, "participant", id, "email"), &email)?;
                entries.push(self.entry(
                    actor,
                    "change",
                    "participant",
                    id,
                    Some("email"),
                    Some(self.seal_audit(&scope, tenant, id, "email", &old.email)?),
                    Some(self.seal_audit(&scope, tenant, id, "email", &email)?),
                ));
            }
        }
        if let Some(fields) = fields {
            let fields = check_fields(&ev, fields)?;
            if fields != old.fields {
                let new_json = serde_json::to_string(&fields).expect("serialises");
                let old_json = serde_json::to_string(&old.fields).expect("serialises");
                p.fields = self.ring.seal_str(
                    &scope,
                    &aad(tenant, "participant", id, "fields"),
                    &new_json,
                )?;
                entries.push(self.entry(
                    actor,
                    "change",
                    "participant",
                    id,
                    Some("fields"),
                    Some(self.seal_audit(&scope, tenant, id, "fields", &old_json)?),
                    Some(self.seal_audit(&scope, tenant, id, "fields", &new_json)?),
                ));
            }
        }
        b.put(Table::Participants, key(&[tenant, event, id]), encode(&p));
        self.commit(tenant, b, entries)?;
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
        let _g = self.lock();
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
            vec![self.entry(
                actor,
                action,
                "participant",
                id,
                Some("status"),
                Some(format!("={old:?}")),
                Some(format!("={status:?}")),
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
        let _g = self.lock();
        let p = self.participant(tenant, event, id)?;
        let view = self.participant_view(&p)?;
        let mut b = Batch::default();
        self.purge_participant(&mut b, tenant, event, id, Some(&view.email))?;
        let entries = vec![
            self.entry(
                actor,
                "delete",
                "participant",
                id,
                Some("email"),
                Some(self.seal_audit(&scope, tenant, id, "email", &view.email)?),
                None,
            ),
            self.entry(
                actor,
                "delete",
                "participant",
                id,
                Some("name"),
                Some(self.seal_audit(&scope, tenant, id, "name", &view.name)?),
                None,
            ),
        ];
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
    fn purge_participant(
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
        let _g = self.lock();
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
            vec![self.entry(
                id,
                action,
                "participant",
                id,
                Some("privacy-notice"),
                None,
                Some(format!("={}", record.id)),
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
        let _g = self.lock();
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

    // ---- sites and edges -------------------------------------------------

    pub fn put_site(&self, actor: &str, site: &Site, create: bool) -> Result<()> {
        clean_text("name", &site.name, 120)?;
        if site.cidrs.is_empty() || site.cidrs.len() > 256 {
            return Err(RepoError::Invalid("a site needs 1 to 256 CIDRs".into()));
        }
        for c in &site.cidrs {
            c.parse::<ipnet::IpNet>().map_err(|_| {
                RepoError::Invalid("cidrs must look like 10.1.0.0/16 or fd00::/8".into())
            })?;
        }
        let _g = self.lock();
        let k = key(&[&site.tenant, &site.id]);
        if !create && self.store.get(Table::Sites, &k)?.is_none() {
            return Err(RepoError::NotFound);
        }
        let mut b = Batch::default();
        b.put(Table::Sites, k, encode(site));
        self.commit(
            &site.tenant,
            b,
            vec![self.entry(
                actor,
                if create { "create" } else { "change" },
                "site",
                &site.id,
                None,
                None,
                None,
            )],
        )
    }

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

    fn issue_credential(
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
        let _g = self.lock();
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
        let entry = self.entry(
            actor,
            "issue-credential",
            kind.entity(),
            subject,
            None,
            None,
            None,
        );
        if tenant == PLATFORM {
            self.store.write(b)?;
        } else {
            self.commit(tenant, b, vec![entry])?;
        }
        tracing::info!(tenant, credential = subject, kind = ?kind, "relay credential issued");
        Ok((token, record))
    }

    fn current_kid(&self) -> String {
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
        let _g = self.lock();
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
        let entry = self.entry(
            actor,
            "revoke-credential",
            record.kind.entity(),
            id,
            None,
            None,
            None,
        );
        if tenant == PLATFORM {
            self.store.write(b)?;
        } else {
            self.commit(tenant, b, vec![entry])?;
        }
        tracing::warn!(tenant, credential = id, kind = ?record.kind, "relay credential revoked");
        Ok(record)
    }

    /// The tenant's site whose CIDRs contain `addr`, the longest prefix winning.
    pub fn site_of(&self, tenant: &str, addr: std::net::IpAddr) -> Result<Option<Site>> {
        let mut best: Option<(u8, Site)> = None;
        for site in self.sites(tenant)? {
            let longest = site
                .cidrs
                .iter()
                .filter_map(|c| c.parse::<ipnet::IpNet>().ok())
                .filter(|net| net.contains(&addr))
                .map(|net| net.prefix_len())
                .max();
            if let Some(len) = longest {
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, site));
                }
            }
        }
        Ok(best.map(|(_, s)| s))
    }

    pub fn sites(&self, tenant: &str) -> Result<Vec<Site>> {
        self.scan(Table::Sites, &prefix(&[tenant]))
    }

    pub fn site(&self, tenant: &str, id: &str) -> Result<Site> {
        if !valid_id("s", id) {
            return Err(RepoError::NotFound);
        }
        self.get(Table::Sites, &key(&[tenant, id]))
    }

    pub fn delete_site(&self, actor: &str, tenant: &str, id: &str) -> Result<()> {
        let _g = self.lock();
        self.site(tenant, id)?;
        let mut b = Batch::default();
        b.delete(Table::Sites, key(&[tenant, id]));
        self.commit(
            tenant,
            b,
            vec![self.entry(actor, "delete", "site", id, None, None, None)],
        )
    }

    pub fn put_edge(&self, edge: &EdgeRegistration) -> Result<()> {
        let mut b = Batch::default();
        b.put(Table::Edges, key(&["_platform", &edge.id]), encode(edge));
        self.store.write(b)?;
        Ok(())
    }

    /// Records an origin's media signing key (one per origin; a new one
    /// replaces it). Kept beside the edge registrations: platform data.
    pub fn put_media_key(&self, reg: &MediaKeyRegistration) -> Result<()> {
        let mut b = Batch::default();
        b.put(Table::Edges, key(&["_media", &reg.origin]), encode(reg));
        self.store.write(b)?;
        Ok(())
    }

    pub fn edges(&self) -> Result<Vec<EdgeRegistration>> {
        self.scan(Table::Edges, &prefix(&["_platform"]))
    }

    // ---- retention and review --------------------------------------------

    /// Events whose retention period has run out by `at`.
    pub fn retention_due(&self, tenant: Option<&str>, at: OffsetDateTime) -> Result<Vec<Event>> {
        let tenants = match tenant {
            Some(t) => vec![t.to_owned()],
            None => self.tenants()?.into_iter().map(|t| t.id).collect(),
        };
        let mut due = Vec::new();
        for t in tenants {
            due.extend(
                self.events(&t)?
                    .into_iter()
                    .filter(|e| e.retention_due() <= at),
            );
        }
        Ok(due)
    }

    /// Deletes what has fallen due; returns the events deleted.
    pub fn sweep_retention(&self) -> Result<Vec<(String, String)>> {
        let mut done = Vec::new();
        for e in self.retention_due(None, now())? {
            self.delete_event("system", &e.tenant, &e.id)?;
            tracing::info!(tenant = %e.tenant, event = %e.id, "retention period over: event deleted");
            done.push((e.tenant, e.id));
        }
        Ok(done)
    }
}

/// The tenant of the operator's own relays.
pub const PLATFORM: &str = strom_token::PLATFORM_TENANT;

/// What a relay credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An operator's origin (SRT secrets, media keys, status).
    Origin,
    /// An operator's edge (status, heartbeat, pulling every tenant).
    Edge,
    /// A tenant's peer-agents (registration, that tenant's broadcasts).
    Agent,
}

impl CredentialKind {
    fn entity(self) -> &'static str {
        match self {
            CredentialKind::Agent => "agent-credential",
            _ => "relay-credential",
        }
    }
}

/// A relay or agent credential as issued; the token itself is shown once
/// and not kept.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CredentialRecord {
    /// The token's subject: `ag_…` for agents, the relay's id otherwise.
    pub id: String,
    pub tenant: String,
    pub kind: CredentialKind,
    /// When the newest one was issued.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub issued_at: OffsetDateTime,
    /// Who issued it (a staff id, or `operator`).
    pub issued_by: String,
    /// How many were issued for this subject.
    pub issued: u32,
    /// The signing key of the newest one: after a key rotation, credentials
    /// on the old key are to be issued again within the overlap.
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// Set when revoked: every credential issued before stops working.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// Entries per page of the revocation feed.
pub const REVOCATION_PAGE: usize = 10_000;

/// How long tokens a revocation can match may live: participants' and
/// staff's (`p_`, `u_`) are playback tokens; other subjects are relay or
/// agent credentials; events and streams carry publish credentials.
fn revocation_lifetime(kind: RevocationKind, id: &str) -> i64 {
    match kind {
        RevocationKind::Subject if id.starts_with("p_") || id.starts_with("u_") => {
            strom_token::MAX_PLAY_SECS
        }
        RevocationKind::Subject | RevocationKind::Token => strom_token::MAX_RELAY_SECS,
        RevocationKind::Event | RevocationKind::EventDeleted | RevocationKind::Stream => {
            strom_token::MAX_PUBLISH_SECS
        }
    }
}

/// The most one attendance report credits.
pub const MAX_ATTENDANCE_REPORT_SECS: u64 = 600;
/// Reports may arrive this much later than the time they cover.
const ATTENDANCE_SLACK_SECS: u64 = 5;

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

fn check_fields(
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

fn validate_event(e: &Event) -> Result<()> {
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

pub fn principal_id(p: &Principal) -> &str {
    match p {
        Principal::Staff { user, .. } => user,
        Principal::Participant { participant, .. } => participant,
    }
}

fn principal_entity(p: &Principal) -> &'static str {
    match p {
        Principal::Staff { .. } => "user",
        Principal::Participant { .. } => "participant",
    }
}

/// Sessions one account may hold at once (ASVS 7.1.2; a browser each, say
/// a laptop, a phone and a meeting-room PC, with room to spare).
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 20;

/// Idle past the tenant's timeout, or older than 12 hours.
fn session_expired(s: &Session, t: OffsetDateTime) -> bool {
    t - s.last_seen > time::Duration::minutes(s.idle_minutes as i64)
        || t - s.created_at > time::Duration::hours(12)
}

fn session_key(tenant: &str, principal: &Principal, secret: &str) -> Vec<u8> {
    key(&[tenant, principal_id(principal), &sha256_hex(secret)])
}

pub fn random_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(s.as_bytes()).into())
}

pub fn hex(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEntry {
    Tenant {
        tenant: String,
    },
    Event {
        tenant: String,
        event: String,
    },
    /// An erased participant.
    Participant {
        tenant: String,
        event: String,
        participant: String,
    },
    /// A deleted staff member (with their e-mail index key, a blind hash).
    User {
        tenant: String,
        user: String,
        email_index: String,
    },
}

fn journal(keys: &dyn Store, entry: &JournalEntry) -> Result<()> {
    let mut b = Batch::default();
    b.put(
        Table::Journal,
        format!("{}-{}", now().unix_timestamp_nanos(), new_id("j")),
        encode(entry),
    );
    keys.write(b)?;
    Ok(())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
