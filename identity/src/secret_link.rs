//! Single-use link secrets (AUTH-1 magic links, AUTH-5 password reset,
//! TENANT-4 invitations): the random secret that goes into the link, the
//! SHA-256 the server stores instead of it, the 8-digit code for opening the
//! mail on another device, and the consume rule (unexpired, not yet used).
//!
//! The secret has 256 bits of entropy, so a plain SHA-256 is enough to make a
//! leaked table useless; no salt or slow hash is needed (unlike passwords).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Magic-login links live 10 minutes (ASVS 5.0 6.5.5: out-of-band secrets
/// at most 10 minutes).
pub const MAGIC_LINK_TTL: Duration = Duration::minutes(10);
/// Password-reset links live 20 minutes (AUTH-5).
pub const RESET_LINK_TTL: Duration = Duration::minutes(20);
/// Invitations live 14 days.
pub const INVITATION_TTL: Duration = Duration::days(14);

/// Length of the base64url form of a 32-byte secret.
const SECRET_B64_LEN: usize = 43;

/// A fresh link secret: the base64url text (no padding) for the link, and its
/// SHA-256 for the server to store and look up.
pub fn new_link_secret() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let text = URL_SAFE_NO_PAD.encode(bytes);
    let hash = Sha256::digest(text.as_bytes()).into();
    (text, hash)
}

/// The stored hash for a secret presented by a client, or `None` if it cannot
/// be one of ours (wrong length or alphabet) — then there is nothing to look up.
pub fn hash_link_secret(secret: &str) -> Option<[u8; 32]> {
    if secret.len() != SECRET_B64_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
    if bytes.len() != 32 {
        return None;
    }
    Some(Sha256::digest(secret.as_bytes()).into())
}

/// An 8-digit code (leading zeros kept) for typing on another device. It has
/// only ~27 bits: the caller must bind it to the pending login and count wrong
/// entries against the lockout.
pub fn new_code() -> String {
    format!("{:08}", OsRng.gen_range(0..100_000_000u32))
}

/// What a link is for; a link for one purpose is never accepted for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPurpose {
    MagicLogin,
    PasswordReset,
    Invitation,
}

impl LinkPurpose {
    /// How long a link of this purpose is valid.
    pub fn ttl(self) -> Duration {
        match self {
            LinkPurpose::MagicLogin => MAGIC_LINK_TTL,
            LinkPurpose::PasswordReset => RESET_LINK_TTL,
            LinkPurpose::Invitation => INVITATION_TTL,
        }
    }
}

/// The server-side record of an issued link, stored under the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub purpose: LinkPurpose,
    /// Pseudonymous id of the account or participant the link is for.
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub used: bool,
}

impl LinkRecord {
    /// A new unused record expiring after the purpose's TTL.
    pub fn issue(purpose: LinkPurpose, subject: impl Into<String>, now: OffsetDateTime) -> Self {
        Self {
            purpose,
            subject: subject.into(),
            expires_at: now + purpose.ttl(),
            used: false,
        }
    }
}

/// Why a link cannot be consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link has expired")]
    Expired,
    #[error("link was already used")]
    AlreadyUsed,
}

/// Marks the record used if it is still valid at `now`. The caller writes the
/// returned record back in the same transaction that grants what the link is for.
pub fn consume(record: &LinkRecord, now: OffsetDateTime) -> Result<LinkRecord, LinkError> {
    if record.used {
        return Err(LinkError::AlreadyUsed);
    }
    if now >= record.expires_at {
        return Err(LinkError::Expired);
    }
    Ok(LinkRecord {
        used: true,
        ..record.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap()
    }

    #[test]
    fn secret_hash_round_trip() {
        let (text, stored) = new_link_secret();
        assert_eq!(text.len(), 43);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(hash_link_secret(&text), Some(stored));
        let (other, other_stored) = new_link_secret();
        assert_ne!(text, other);
        assert_ne!(stored, other_stored);
    }

    #[test]
    fn foreign_secrets_have_no_hash() {
        let (text, _) = new_link_secret();
        assert_eq!(hash_link_secret(""), None);
        assert_eq!(hash_link_secret(&text[..42]), None);
        assert_eq!(hash_link_secret(&format!("{text}A")), None);
        assert_eq!(
            hash_link_secret(&format!("{}+", &text[..42])),
            None,
            "standard base64 alphabet"
        );
        assert_eq!(hash_link_secret(&format!("{}=", &text[..42])), None);
        assert_eq!(hash_link_secret("ääääääääääääääääääääää"), None);
    }

    #[test]
    fn codes_are_eight_digits() {
        for _ in 0..200 {
            let c = new_code();
            assert_eq!(c.len(), 8);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn ttls() {
        assert_eq!(MAGIC_LINK_TTL, Duration::minutes(10));
        assert_eq!(RESET_LINK_TTL, Duration::minutes(20));
        assert_eq!(INVITATION_TTL, Duration::days(14));
        let r = LinkRecord::issue(LinkPurpose::PasswordReset, "acct-1", t0());
        assert_eq!(r.expires_at, t0() + Duration::minutes(20));
    }

    #[test]
    fn consume_once_before_expiry() {
        let r = LinkRecord::issue(LinkPurpose::MagicLogin, "acct-1", t0());
        let used = consume(&r, t0() + Duration::minutes(9)).unwrap();
        assert!(used.used);
        assert_eq!(used.subject, "acct-1");
        assert_eq!(
            consume(&used, t0() + Duration::minutes(9)),
            Err(LinkError::AlreadyUsed)
        );
    }

    #[test]
    fn expired_links_are_refused() {
        let r = LinkRecord::issue(LinkPurpose::PasswordReset, "acct-1", t0());
        assert_eq!(
            consume(&r, t0() + Duration::minutes(20)),
            Err(LinkError::Expired)
        );
        assert!(consume(&r, t0() + Duration::minutes(20) - Duration::seconds(1)).is_ok());
    }

    #[test]
    fn record_serde_round_trip() {
        let r = LinkRecord::issue(LinkPurpose::Invitation, "p-9", t0());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"invitation\""), "{json}");
        assert_eq!(serde_json::from_str::<LinkRecord>(&json).unwrap(), r);
    }

    proptest! {
        #[test]
        fn hash_link_secret_never_panics(s in ".{0,100}") {
            let _ = hash_link_secret(&s);
        }
    }
}
