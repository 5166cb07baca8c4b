#![warn(unreachable_pub)]
//! Publish and playback tokens: what a broadcaster shows the origin and a
//! viewer shows an edge. PASETO v4.public (Ed25519, no algorithm choice to
//! confuse), the signing key's PASERK id in the footer, scoped to tenant +
//! event (+ stream) + action, with a pseudonymous subject and nothing personal.
//!
//! Verification is sans-IO: keys, revocations and the clock are arguments, so
//! origin, edge and peer-agents check tokens offline. No runtime and no
//! HTTP here: the relays' control-plane client (`strom-relay`) keeps a
//! [`Verifier`] in step with the control plane.

pub mod media;
pub mod revocation;
pub mod srt;

use std::collections::HashMap;
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken;
use pasetors::version4::{PublicToken, V4};
use pasetors::Public;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use revocation::{Revocation, RevocationKind, Revocations};

/// Issuer claim of every strom token.
pub const ISSUER: &str = "strom";
/// Clock difference between issuer and verifier that is tolerated.
pub const CLOCK_SKEW_SECS: i64 = 30;
/// Longest a playback token may live.
pub const MAX_PLAY_SECS: i64 = 600;
/// How long a relay cut off from the control plane keeps accepting play
/// tokens that expired since it last heard from it (see [`Issuer`]).
pub const OUTAGE_GRACE_SECS: i64 = 3600;
/// Longest a publish credential may live (it is pasted into an encoder once
/// per event, so it spans the event's schedule, never more than this).
pub const MAX_PUBLISH_SECS: i64 = 14 * 24 * 3600;
/// The tenant of the operator's own relays (origins, edges): their relay
/// credentials carry every tenant. A relay credential of any other tenant (a
/// peer-agent's) covers only that tenant's broadcasts.
pub const PLATFORM_TENANT: &str = "_platform";
/// Longest a relay (edge / agent → control plane) credential may live.
pub const MAX_RELAY_SECS: i64 = 366 * 24 * 3600;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Push media for a stream into an origin.
    Publish,
    /// Watch a stream (or every stream of an event) at an edge or agent.
    Play,
    /// A relay (edge, peer-agent) reading keys and revocations.
    Relay,
}

impl Action {
    pub fn max_lifetime_secs(self) -> i64 {
        match self {
            Action::Publish => MAX_PUBLISH_SECS,
            Action::Play => MAX_PLAY_SECS,
            Action::Relay => MAX_RELAY_SECS,
        }
    }
}

/// The claims of a strom token. Registered claims follow PASETO (RFC 3339
/// times); the scope claims are short because tokens travel in URLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// Pseudonymous subject: a participant's, stream's or relay's id, never
    /// an e-mail address or name.
    pub sub: String,
    /// Tenant id.
    pub ten: String,
    /// Event id; empty for relay credentials.
    #[serde(default)]
    pub evt: String,
    /// Stream name; absent means every stream of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub str: Option<String>,
    pub act: Action,
    #[serde(with = "time::serde::rfc3339")]
    pub iat: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub nbf: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub exp: OffsetDateTime,
    pub jti: String,
    /// What an operator's relay credential is for: an origin's may fetch
    /// the SRT secrets and register media keys, an edge's may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rol: Option<RelayRole>,
    /// The credential this token was minted on the strength of (a
    /// peer-agent's ticket names the agent credential it registered with):
    /// revoking that credential's subject revokes this token too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The kind of an operator's relay (a platform relay credential's `rol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayRole {
    /// Takes encoders' pushes: needs the SRT secrets and a media key.
    Origin,
    /// Serves viewers and lower tiers.
    Edge,
}

impl Claims {
    /// The media namespace this token covers: `tenant/event[/stream]`.
    pub fn namespace_prefix(&self) -> Vec<&str> {
        let mut parts = vec![self.ten.as_str(), self.evt.as_str()];
        if let Some(s) = &self.str {
            parts.push(s);
        }
        parts
    }

    /// Whether this is a relay credential of the operator's own infrastructure.
    pub fn is_platform_relay(&self) -> bool {
        self.act == Action::Relay && self.ten == PLATFORM_TENANT
    }

    /// The role of an operator's relay credential; credentials minted
    /// before roles existed count as edges (the lesser scope).
    pub fn relay_role(&self) -> Option<RelayRole> {
        self.is_platform_relay()
            .then(|| self.rol.unwrap_or(RelayRole::Edge))
    }

    /// Whether this token allows `action` on the namespace `parts`
    /// (`[tenant, event, stream]`). A token for an event covers its streams.
    pub fn covers(&self, action: Action, parts: &[&str]) -> bool {
        if self.act != action || parts.len() < 2 || self.evt.is_empty() {
            return false;
        }
        let prefix = self.namespace_prefix();
        if parts.len() < prefix.len() {
            return false;
        }
        prefix.iter().zip(parts).all(|(a, b)| a == b)
    }
}

/// What to mint.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: String,
    pub tenant: String,
    pub event: String,
    pub stream: Option<String>,
    pub action: Action,
    /// Requested lifetime; clipped to the action's maximum and to `not_after`.
    pub lifetime_secs: i64,
    /// Hard end, e.g. the event's end plus grace.
    pub not_after: Option<OffsetDateTime>,
    /// An operator relay credential's role (claim `rol`).
    pub role: Option<RelayRole>,
    /// The credential this token derives from (claim `via`).
    pub via: Option<String>,
}

impl Grant {
    /// Pushing `stream` of `event` as `subject`, for `lifetime_secs`
    /// (clipped to a publish token's maximum).
    pub fn publish(
        subject: &str,
        tenant: &str,
        event: &str,
        stream: &str,
        lifetime_secs: i64,
    ) -> Grant {
        Grant {
            subject: subject.into(),
            tenant: tenant.into(),
            event: event.into(),
            stream: Some(stream.into()),
            action: Action::Publish,
            lifetime_secs,
            not_after: None,
            role: None,
            via: None,
        }
    }

    /// Watching `event` of `tenant` as `subject`, for as long as a playback
    /// token may live.
    pub fn play(subject: &str, tenant: &str, event: &str) -> Grant {
        Grant {
            subject: subject.into(),
            tenant: tenant.into(),
            event: event.into(),
            stream: None,
            action: Action::Play,
            lifetime_secs: MAX_PLAY_SECS,
            not_after: None,
            role: None,
            via: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("not a strom token")]
    Malformed,
    #[error("signed by an unknown key")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token lives longer than its action allows")]
    TooLong,
    #[error("token revoked")]
    Revoked,
    #[error("token does not cover {0}")]
    OutOfScope(String),
    #[error("cannot mint: {0}")]
    Mint(String),
}

/// A signing key with its PASERK id (`k4.pid.…`).
pub struct SigningKey {
    kid: String,
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl SigningKey {
    pub fn generate() -> Self {
        let pair = AsymmetricKeyPair::<V4>::generate().expect("system randomness for Ed25519");
        Self::from_pair(pair.secret, pair.public)
    }

    /// From the 64-byte secret key (seed ‖ public key) as stored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let secret = AsymmetricSecretKey::<V4>::from(bytes).map_err(|_| TokenError::Malformed)?;
        let public =
            AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| TokenError::Malformed)?;
        Ok(Self::from_pair(secret, public))
    }

    fn from_pair(secret: AsymmetricSecretKey<V4>, public: AsymmetricPublicKey<V4>) -> Self {
        let mut kid = String::new();
        Id::from(&public).fmt(&mut kid).expect("PASERK id formats");
        Self {
            kid,
            secret,
            public,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.secret.as_bytes().to_vec()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: "v4.public".into(),
            x: URL_SAFE_NO_PAD.encode(self.public.as_bytes()),
        }
    }

    /// Mints a token for `grant` at `now`. Not-before lies `CLOCK_SKEW_SECS`
    /// in the past so a verifier whose clock is slightly behind accepts it.
    pub fn mint(&self, grant: &Grant, now: OffsetDateTime) -> Result<(String, Claims), TokenError> {
        let lifetime = grant
            .lifetime_secs
            .clamp(1, grant.action.max_lifetime_secs());
        let mut exp = now + time::Duration::seconds(lifetime);
        if let Some(limit) = grant.not_after {
            exp = exp.min(limit);
        }
        if exp <= now {
            return Err(TokenError::Mint("the grant has already ended".into()));
        }
        let claims = Claims {
            iss: ISSUER.into(),
            sub: grant.subject.clone(),
            ten: grant.tenant.clone(),
            evt: grant.event.clone(),
            str: grant.stream.clone(),
            act: grant.action,
            iat: now,
            nbf: now - time::Duration::seconds(CLOCK_SKEW_SECS),
            exp,
            jti: random_id(),
            rol: grant.role,
            via: grant.via.clone(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| TokenError::Mint(e.to_string()))?;
        let footer = serde_json::to_vec(&Footer {
            kid: self.kid.clone(),
        })
        .map_err(|e| TokenError::Mint(e.to_string()))?;
        let token = PublicToken::sign(&self.secret, &payload, Some(&footer), None)
            .map_err(|e| TokenError::Mint(e.to_string()))?;
        Ok((token, claims))
    }
}

fn random_id() -> String {
    let bytes: [u8; 12] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Serialize, Deserialize)]
struct Footer {
    kid: String,
}

/// One public key as published at the key-set endpoint (JWK-like, OKP/Ed25519).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicKey {
    pub kid: String,
    pub kty: String,
    pub crv: String,
    pub alg: String,
    /// Raw 32-byte Ed25519 public key, base64url without padding.
    pub x: String,
}

/// The key-set document: every key a verifier should accept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<PublicKey>,
    /// Origins' media signing keys: what objects are checked against
    /// (`media::MediaKeys`) before a peer-agent serves or forwards them.
    #[serde(default)]
    pub media: Vec<MediaKey>,
}

/// One origin's media signing key, as the origin registered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaKey {
    /// The registering relay's id (its relay credential's subject).
    pub origin: String,
    /// Ed25519 public key, 64 hex digits.
    pub key: String,
}

/// What a relay knows of the control plane that issues its tokens: when it
/// last answered, and whether it answers now.
///
/// Viewers refresh their play token (ten minutes) through the control
/// plane. While no replica of it answers, nobody can, so a relay keeps
/// accepting a **play** token that expired *after* the control plane was
/// last heard from — its holder was entitled then and could not refresh
/// since — for at most [`OUTAGE_GRACE_SECS`] after that moment. A token
/// that had expired before (a viewer refused a refresh, a copied old link)
/// stays expired; revocations held still apply; publish and relay tokens
/// are not extended. Once the control plane answers again, expiry is as
/// minted and players refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Issuer {
    /// When the control plane last answered.
    pub heard: Option<OffsetDateTime>,
    /// No replica answered since.
    pub unreachable: bool,
}

impl Issuer {
    /// Whether `claims`, expired at `now`, are still accepted.
    pub fn extends(&self, claims: &Claims, now: OffsetDateTime) -> bool {
        let Some(heard) = self.heard else {
            return false;
        };
        self.unreachable
            && claims.act == Action::Play
            && claims.exp >= heard
            && now < heard + time::Duration::seconds(OUTAGE_GRACE_SECS)
    }
}

/// Checks tokens offline against a key set and a revocation list.
#[derive(Default)]
pub struct Verifier {
    keys: RwLock<HashMap<String, AsymmetricPublicKey<V4>>>,
    revocations: RwLock<Revocations>,
    media: RwLock<std::sync::Arc<media::MediaKeys>>,
    keys_wanted: std::sync::atomic::AtomicBool,
    issuer: RwLock<Issuer>,
    /// Play tokens accepted past their expiry ([`Issuer`]).
    extended: std::sync::atomic::AtomicU64,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the accepted keys. Keys whose id does not match their bytes
    /// are skipped (and reported), so a bad document cannot smuggle a key
    /// in under another key's id.
    pub fn set_keys(&self, set: &KeySet) -> Vec<String> {
        let mut keys = HashMap::new();
        let mut rejected = Vec::new();
        for key in &set.keys {
            match parse_public(key) {
                Some(public) => {
                    keys.insert(key.kid.clone(), public);
                }
                None => rejected.push(key.kid.clone()),
            }
        }
        *self.keys.write().expect("key lock") = keys;
        let mut media = media::MediaKeys::default();
        for key in &set.media {
            let bytes = hex::decode(&key.key).ok();
            if !bytes.as_deref().is_some_and(|b| media.insert(b)) {
                rejected.push(format!("media key of {}", key.origin));
            }
        }
        *self.media.write().expect("media key lock") = std::sync::Arc::new(media);
        rejected
    }

    /// The origins' media signing keys from the last key set.
    pub fn media_keys(&self) -> std::sync::Arc<media::MediaKeys> {
        self.media.read().expect("media key lock").clone()
    }

    /// Asks the background sync ([`sync::start`]) to fetch the key set now:
    /// something arrived signed with a key not known yet (a new origin's
    /// media key). Cheap to call often; the sync limits how often it fetches.
    pub fn want_fresh_keys(&self) {
        self.keys_wanted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// True once after someone asked for fresh keys (the control-plane
    /// client polls this).
    pub fn take_fresh_keys_wanted(&self) -> bool {
        self.keys_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// The control plane answered (a key set, a revocation poll); returns
    /// whether it had been unreachable (the outage ends now).
    pub fn issuer_heard(&self, now: OffsetDateTime) -> bool {
        let before = std::mem::replace(
            &mut *self.issuer.write().expect("issuer lock"),
            Issuer {
                heard: Some(now),
                unreachable: false,
            },
        );
        before.unreachable
    }

    /// No replica of the control plane answered; returns whether this is
    /// news (the outage begins now).
    pub fn issuer_unreachable(&self) -> bool {
        let mut issuer = self.issuer.write().expect("issuer lock");
        !std::mem::replace(&mut issuer.unreachable, true)
    }

    /// Starts in an outage that began before this process did: the control
    /// plane was last heard at `heard` (kept on disk by the relay), and no
    /// replica answers now. The grace counts from `heard`.
    pub fn resume_outage(&self, heard: OffsetDateTime) {
        *self.issuer.write().expect("issuer lock") = Issuer {
            heard: Some(heard),
            unreachable: true,
        };
    }

    pub fn issuer(&self) -> Issuer {
        *self.issuer.read().expect("issuer lock")
    }

    /// Play tokens accepted past their expiry while the control plane was
    /// unreachable, since start.
    pub fn extended_count(&self) -> u64 {
        self.extended.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn key_count(&self) -> usize {
        self.keys.read().expect("key lock").len()
    }

    pub fn revocations(&self) -> std::sync::RwLockReadGuard<'_, Revocations> {
        self.revocations.read().expect("revocation lock")
    }

    pub fn revocations_mut(&self) -> std::sync::RwLockWriteGuard<'_, Revocations> {
        self.revocations.write().expect("revocation lock")
    }

    /// Verifies signature, lifetime and revocation; scope is the caller's
    /// (see [`Verifier::authorize`]).
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Claims, TokenError> {
        let token = token.trim();
        if token.len() > 4096 {
            return Err(TokenError::Malformed);
        }
        let untrusted =
            UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let footer: Footer = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        let public = self
            .keys
            .read()
            .expect("key lock")
            .get(&footer.kid)
            .cloned()
            .ok_or(TokenError::UnknownKey)?;
        let trusted = PublicToken::verify(&public, &untrusted, None, None)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Malformed)?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// Checks claims obtained otherwise than from a token of this verifier
    /// (an SRT stream key): times, lifetime and revocations, as [`verify`](Self::verify) does.
    pub fn check_claims(&self, claims: &Claims, now: OffsetDateTime) -> Result<(), TokenError> {
        match check_times(claims, now) {
            Err(TokenError::Expired) if self.issuer().extends(claims, now) => {
                check_times(claims, claims.exp - time::Duration::seconds(1))?;
                self.extended
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            other => other?,
        }
        if self.revocations().revokes(claims) {
            return Err(TokenError::Revoked);
        }
        Ok(())
    }

    /// Verifies `token` and that it allows `action` on the namespace `parts`.
    pub fn authorize(
        &self,
        token: &str,
        action: Action,
        parts: &[&str],
        now: OffsetDateTime,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify(token, now)?;
        if claims.covers(action, parts) {
            Ok(claims)
        } else {
            Err(TokenError::OutOfScope(parts.join("/")))
        }
    }
}

fn check_times(claims: &Claims, now: OffsetDateTime) -> Result<(), TokenError> {
    let skew = time::Duration::seconds(CLOCK_SKEW_SECS);
    if claims.iss != ISSUER {
        return Err(TokenError::Malformed);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if now + skew < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    let lifetime = (claims.exp - claims.iat).whole_seconds();
    if lifetime > claims.act.max_lifetime_secs() || claims.iat > now + skew {
        return Err(TokenError::TooLong);
    }
    Ok(())
}

fn parse_public(key: &PublicKey) -> Option<AsymmetricPublicKey<V4>> {
    if key.kty != "OKP" || key.crv != "Ed25519" || key.alg != "v4.public" {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(&key.x).ok()?;
    let public = AsymmetricPublicKey::<V4>::from(&bytes).ok()?;
    let mut kid = String::new();
    Id::from(&public).fmt(&mut kid).ok()?;
    (kid == key.kid).then_some(public)
}

#[cfg(test)]
mod tests;
