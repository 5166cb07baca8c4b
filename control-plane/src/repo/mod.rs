//! The control plane's records and the rules that keep them consistent:
//! every function takes the tenant from the caller's session, never from the
//! request, so an id of another tenant simply is not found. Personal fields
//! are sealed on the way in and opened on the way out; every change to them
//! appends to the tenant's audit chain in the same atomic batch.

use std::collections::BTreeMap;
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

mod change;
mod revocations;
mod signing;
mod srt;
mod tenants;
mod users;

pub use participants::{
    NewParticipant, Rectification, MAX_ATTENDANCE_REPORT_SECS, MAX_PASSWORDS_PER_IMPORT,
};
pub use revocations::REVOCATION_PAGE;
pub use sessions::MAX_SESSIONS_PER_ACCOUNT;
mod credentials;
mod events;
mod participants;
mod relays;
mod retention;
mod sessions;
mod sites;

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

/// An open write section ([`Repo::lock`]). The store's section closes
/// before the process's lock (fields drop in order).
pub struct Section<'a> {
    _store: crate::store::Exclusive<'a>,
    _local: MutexGuard<'a, ()>,
}

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
        repo.follow_tenants()?;
        repo.load_signing_keys()?;
        repo.load_verifier()?;
        Ok(repo)
    }

    /// Opens a write section: read-modify-write sequences (a link used
    /// once, lockout counters, the audit chain's head) run one at a time in
    /// this process and, on a store several replicas share, across them.
    pub fn lock(&self) -> Result<Section<'_>> {
        let local = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let store = self.store.exclusive()?;
        Ok(Section {
            _store: store,
            _local: local,
        })
    }

    pub(super) fn get<T: DeserializeOwned>(&self, t: Table, k: &[u8]) -> Result<T> {
        match self.store.get(t, k)? {
            Some(raw) => decode(&raw),
            None => Err(RepoError::NotFound),
        }
    }

    pub(super) fn scan<T: DeserializeOwned>(&self, t: Table, p: &[u8]) -> Result<Vec<T>> {
        self.store
            .scan(t, p, usize::MAX)?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    /// Writes `batch` plus audit records for `entries` atomically.
    pub(super) fn commit(&self, tenant: &str, mut batch: Batch, entries: Vec<Entry>) -> Result<()> {
        if !entries.is_empty() {
            let head = audit::head(self.store.as_ref(), tenant)?;
            audit::append(&mut batch, tenant, head, entries, now());
        }
        self.store.write(batch)?;
        Ok(())
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

    pub(super) fn participant_event(&self, tenant: &str, participant: &str) -> Option<String> {
        self.store
            .get(
                Table::Index,
                &key(&[tenant, "participant-event", participant]),
            )
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
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

/// A repository on the in-memory store with a fresh master key, for the
/// unit tests of each aggregate.
#[cfg(test)]
pub(crate) fn in_memory() -> Repo {
    let store: Arc<dyn Store> = Arc::new(crate::store::MemStore::new());
    let keys: Arc<dyn Store> = Arc::new(crate::store::MemStore::new());
    let ring = KeyRing::new(keys.clone(), crate::keys::MasterKeys::generate());
    Repo::new(store, keys, ring).expect("a repository in memory")
}

/// An open event of `tenant` starting at `start`, two hours long, for the
/// unit tests.
#[cfg(test)]
pub(crate) fn test_event(tenant: &str, start: OffsetDateTime) -> Event {
    Event::open(tenant, "Town hall", start, start + time::Duration::hours(2))
}
