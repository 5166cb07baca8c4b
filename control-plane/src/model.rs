//! What the control plane stores. Personal fields are held sealed (see
//! [`crate::keys`]); these records never hold an e-mail address or name in
//! clear. Ids are random and carry a kind prefix (`t_`, `e_`, `u_`, `p_`, `s_`).

use serde::{Deserialize, Serialize};
use strom_identity::lockout::LockoutState;
use strom_identity::participants_csv::FormField;
use strom_identity::password::PasswordPolicy;
use time::OffsetDateTime;

pub fn new_id(kind: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let bytes: [u8; 12] = rand::random();
    let s: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("{kind}_{s}")
}

/// Ids reach keys and namespaces: they must be what we mint.
pub fn valid_id(kind: &str, id: &str) -> bool {
    id.len() == kind.len() + 13
        && id.starts_with(kind)
        && id.as_bytes()[kind.len()] == b'_'
        && id[kind.len() + 1..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Stream names are chosen by event managers: `[a-z0-9-]{1,32}`.
pub fn valid_stream_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owner / administrator: everything in the tenant, creates accounts.
    Owner,
    /// Events, streams and participants.
    EventManager,
    /// Reads events (questions and answers come later).
    Moderator,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LockoutMinutes {
    pub owner: u16,
    pub event_manager: u16,
    pub moderator: u16,
    pub participant: u16,
}

impl Default for LockoutMinutes {
    fn default() -> Self {
        Self {
            owner: 60,
            event_manager: 30,
            moderator: 30,
            participant: 15,
        }
    }
}

impl LockoutMinutes {
    pub fn for_role(&self, role: Option<Role>) -> u16 {
        match role {
            Some(Role::Owner) => self.owner,
            Some(Role::EventManager) => self.event_manager,
            Some(Role::Moderator) => self.moderator,
            None => self.participant,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantSettings {
    pub password_policy: PasswordPolicy,
    pub totp_required_for_owners: bool,
    pub lockout_minutes: LockoutMinutes,
    pub session_idle_minutes: u32,
    #[serde(default)]
    pub oidc: Option<OidcSettings>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            password_policy: PasswordPolicy::default(),
            totp_required_for_owners: false,
            lockout_minutes: LockoutMinutes::default(),
            session_idle_minutes: 30,
            oidc: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    /// Sealed client secret.
    #[serde(default)]
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub settings: TenantSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub tenant: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub role_since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub active: bool,
    pub credential: Credential,
}

/// Password, lockout and second factor of an account (staff or participant).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credential {
    /// argon2id PHC string.
    pub password: Option<String>,
    /// Earlier hashes, newest first.
    #[serde(default)]
    pub history: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub password_set_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub must_change: bool,
    #[serde(default)]
    pub lockout: LockoutState,
    /// Sealed TOTP secret, once confirmed.
    #[serde(default)]
    pub totp: Option<String>,
    /// Sealed TOTP secret being enrolled.
    #[serde(default)]
    pub totp_pending: Option<String>,
    #[serde(default)]
    pub totp_last_step: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Anyone may register.
    Open,
    /// Registration limited to e-mail domains.
    Domains,
    /// Only participants created by staff (invited or imported).
    List,
    /// Registrations wait for a manager's approval.
    Approval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub tenant: String,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub retention_days: u16,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub legal_hold_until: Option<OffsetDateTime>,
    pub access: AccessMode,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub form: Vec<FormField>,
    pub attendance: bool,
    pub privacy_notice: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Event {
    /// An event of `tenant` open to anyone with the link, from `starts_at`
    /// to `ends_at`, its data kept 30 days; no form, domains or notice yet.
    /// `create_event` gives it its id and checks it.
    pub fn open(
        tenant: &str,
        title: &str,
        starts_at: OffsetDateTime,
        ends_at: OffsetDateTime,
    ) -> Event {
        Event {
            id: String::new(),
            tenant: tenant.into(),
            title: title.into(),
            starts_at,
            ends_at,
            retention_days: 30,
            legal_hold_until: None,
            access: AccessMode::Open,
            domains: Vec::new(),
            form: Vec::new(),
            attendance: false,
            privacy_notice: String::new(),
            ended_at: None,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    /// Viewers' permissions lapse with the event: at its scheduled end plus a
    /// grace period (broadcasts overrun), or at once when it was ended.
    pub fn access_until(&self) -> OffsetDateTime {
        match self.ended_at {
            Some(ended) => ended,
            None => self.ends_at + time::Duration::minutes(EVENT_GRACE_MINUTES),
        }
    }

    pub fn retention_due(&self) -> OffsetDateTime {
        let end = self.ended_at.unwrap_or(self.ends_at);
        let due = end + time::Duration::days(self.retention_days as i64);
        match self.legal_hold_until {
            Some(hold) if hold > due => hold,
            _ => due,
        }
    }
}

pub const EVENT_GRACE_MINUTES: i64 = 15;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stream {
    pub tenant: String,
    pub event: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Credentials issued before this moment are revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub credential_issued_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    /// Invited, has not logged in yet.
    Invited,
    /// Registered, waits for approval.
    Pending,
    Active,
    /// Turned off by staff; may be reactivated.
    Deactivated,
    /// Erasure requested under a retention hold: kept sealed, not processed.
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantSource {
    Invited,
    Registered,
    Imported,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Participant {
    pub id: String,
    pub tenant: String,
    pub event: String,
    /// Sealed.
    pub email: String,
    /// Sealed.
    pub name: String,
    /// Sealed JSON object of the registration form's answers.
    pub fields: String,
    pub status: ParticipantStatus,
    pub source: ParticipantSource,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default)]
    pub consent: Option<String>,
    pub credential: Credential,
    /// Viewing time in seconds, when the event tracks attendance.
    #[serde(default)]
    pub attended_secs: u64,
    /// When viewing time was last credited: a report counts at most the
    /// time since, so it cannot be inflated by reporting often.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub attendance_reported_at: Option<OffsetDateTime>,
    /// The participant withdrew consent to the privacy notice: no new
    /// playback tokens until they give it again.
    #[serde(default)]
    pub consent_withdrawn: bool,
}

pub use strom_protocol::{P2pMode, Site};

/// An origin's media signing key (Ed25519, hex), as it registered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaKeyRegistration {
    pub origin: String,
    pub key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EdgeRegistration {
    pub id: String,
    pub region: String,
    pub url: String,
    /// Share of capacity in use, 0…1, as last reported.
    pub load: f32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    Staff { user: String, role: Role },
    Participant { event: String, participant: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub tenant: String,
    pub principal: Principal,
    pub csrf: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub idle_minutes: u32,
    /// A password change is due before anything else.
    #[serde(default)]
    pub must_change_password: bool,
    /// TOTP enrolment is due before anything else.
    #[serde(default)]
    pub must_enrol_totp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPurpose {
    MagicLogin,
    PasswordReset,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    pub purpose: LinkPurpose,
    pub tenant: String,
    pub principal: Principal,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub used: bool,
    /// SHA-256 of the pre-auth cookie the requesting browser got, hex.
    #[serde(default)]
    pub browser: Option<String>,
    /// SHA-256 of the 8-digit code in the same mail, hex.
    #[serde(default)]
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_validate() {
        let id = new_id("p");
        assert!(valid_id("p", &id), "{id}");
        assert!(!valid_id("e", &id));
        assert!(!valid_id("p", "p_../../etc"));
        assert!(!valid_id("p", "p_ABCDEFGHIJKL"));
        assert!(valid_stream_name("main"));
        assert!(!valid_stream_name("Main"));
        assert!(!valid_stream_name("a/b"));
        assert!(!valid_stream_name(""));
    }
}
