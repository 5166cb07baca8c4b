//! SRT stream keys and passphrases for publish credentials.
//!
//! A publish token (PASETO, ~560 characters) does not fit SRT's stream id
//! (512 bytes), so SRT callers present a short **SRT stream key** instead:
//! `s1.<tenant>.<event>.<stream>.<iat ns>.<exp s>.<jti>.<mac>`, the claims
//! of the publish token they go with and an HMAC over them with the secret
//! below. The origin rebuilds the token's claims from it, so expiry and
//! revocation (of the stream, the event or that very credential) apply
//! exactly as to the token.
//!
//! A stream's SRT passphrase is derived from its publish credential with a
//! secret the control plane and the operator's origins share:
//! `base64url(HMAC-SHA256(secret, "strom srt passphrase v1" ‖ credential))`,
//! 32 characters. The control plane shows it with the credential; the origin
//! computes it in the SRT handshake from the credential in the stream id,
//! without a call per handshake. Issuing a new credential gives a new
//! passphrase. The stream id travels in clear in SRT's handshake; the secret
//! does not, so a listener on the wire who reads the credential still cannot
//! decrypt the media.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::{Action, Claims, TokenError, ISSUER};

/// Bytes in the shared secret.
pub const SECRET_LEN: usize = 32;
const LABEL: &[u8] = b"strom srt passphrase v1\0";

/// The SRT passphrase of `credential` (32 characters; SRT accepts 10 to 79).
pub fn passphrase(secret: &[u8; SECRET_LEN], credential: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(LABEL);
    mac.update(credential.as_bytes());
    let tag = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..24])
}

/// What starts an SRT stream key.
pub const KEY_PREFIX: &str = "s1.";

fn mac(secret: &[u8; SECRET_LEN], body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"strom srt stream key v1\0");
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..16])
}

/// The SRT stream key of a publish token's claims (`None` for claims that are
/// not a stream's publish credential).
pub fn stream_key(secret: &[u8; SECRET_LEN], claims: &Claims) -> Option<String> {
    let stream = claims.str.as_deref()?;
    let parts = [
        claims.ten.as_str(),
        claims.evt.as_str(),
        stream,
        claims.jti.as_str(),
    ];
    if claims.act != Action::Publish || parts.iter().any(|p| p.is_empty() || p.contains('.')) {
        return None;
    }
    let body = format!(
        "{KEY_PREFIX}{}.{}.{}.{}.{}.{}",
        claims.ten,
        claims.evt,
        stream,
        claims.iat.unix_timestamp_nanos(),
        claims.exp.unix_timestamp(),
        claims.jti
    );
    let tag = mac(secret, &body);
    Some(format!("{body}.{tag}"))
}

/// The publish claims an SRT stream key stands for, if its MAC holds. Times
/// and revocations are the caller's to check (`Verifier::check_claims`).
pub fn claims_of(secret: &[u8; SECRET_LEN], key: &str) -> Result<Claims, TokenError> {
    let key = key.trim();
    if key.len() > 512 || !key.starts_with(KEY_PREFIX) {
        return Err(TokenError::Malformed);
    }
    let (body, tag) = key.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let expected = mac(secret, body);
    // Constant time: compare digests of both.
    let same = {
        use sha2::Digest;
        let (a, b) = (
            Sha256::digest(expected.as_bytes()),
            Sha256::digest(tag.as_bytes()),
        );
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    };
    if !same {
        return Err(TokenError::BadSignature);
    }
    // The MAC covers the body, so only a key made with the secret gets
    // here; still, `s1.<tag>` has a body shorter than the prefix.
    let fields = body.strip_prefix(KEY_PREFIX).ok_or(TokenError::Malformed)?;
    let parts: Vec<&str> = fields.split('.').collect();
    let [ten, evt, stream, iat, exp, jti] = parts[..] else {
        return Err(TokenError::Malformed);
    };
    let iat: i128 = iat.parse().map_err(|_| TokenError::Malformed)?;
    let exp: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let iat = OffsetDateTime::from_unix_timestamp_nanos(iat).map_err(|_| TokenError::Malformed)?;
    let exp = OffsetDateTime::from_unix_timestamp(exp).map_err(|_| TokenError::Malformed)?;
    Ok(Claims {
        iss: ISSUER.into(),
        sub: format!("s_{evt}_{stream}"),
        ten: ten.into(),
        evt: evt.into(),
        str: Some(stream.into()),
        act: Action::Publish,
        iat,
        // A key of the first instant time can hold has no time before it
        // (the subtraction panicked; reproduced with the fuzz target
        // `token_verify`, mode 3).
        nbf: iat
            .checked_sub(time::Duration::seconds(crate::CLOCK_SKEW_SECS))
            .ok_or(TokenError::Malformed)?,
        exp,
        jti: jti.into(),
        rol: None,
        via: None,
    })
}

/// The tenant an SRT stream key names (its first field), before any check:
/// it says which tenant's secret checks the key.
pub fn tenant_of(key: &str) -> Option<&str> {
    let rest = key.trim().strip_prefix(KEY_PREFIX)?;
    let tenant = rest.split('.').next()?;
    (!tenant.is_empty() && tenant.len() <= 64).then_some(tenant)
}

/// The SRT secret of one tenant, derived from the control plane's root
/// secret: origins hold these, never the root, and a tenant's secret signs
/// and encrypts only that tenant's pushes (a key forged with it for another
/// tenant fails that tenant's MAC).
pub fn tenant_secret(root: &[u8; SECRET_LEN], tenant: &str) -> [u8; SECRET_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(root).expect("HMAC takes any key length");
    mac.update(b"strom srt tenant secret v1\0");
    mac.update(tenant.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The shared secret as hex (how the control plane hands it to origins).
pub fn secret_to_hex(secret: &[u8; SECRET_LEN]) -> String {
    hex::encode(secret)
}

/// Parses [`secret_to_hex`]'s output.
pub fn secret_from_hex(text: &str) -> Option<[u8; SECRET_LEN]> {
    let mut secret = [0u8; SECRET_LEN];
    hex::decode_to_slice(text.trim(), &mut secret).ok()?;
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_are_per_credential_and_per_secret() {
        let a = [7u8; SECRET_LEN];
        let b = [8u8; SECRET_LEN];
        let p = passphrase(&a, "v4.public.one");
        assert_eq!(p.len(), 32);
        assert!((10..=79).contains(&p.len()));
        assert_eq!(p, passphrase(&a, "v4.public.one"));
        assert_ne!(p, passphrase(&a, "v4.public.two"));
        assert_ne!(p, passphrase(&b, "v4.public.one"));
        assert!(p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    fn claims() -> Claims {
        let now = OffsetDateTime::now_utc();
        Claims {
            iss: ISSUER.into(),
            sub: "s_e_x_main".into(),
            ten: "t_abc".into(),
            evt: "e_def".into(),
            str: Some("main".into()),
            act: Action::Publish,
            iat: now,
            nbf: now,
            exp: now + time::Duration::hours(2),
            jti: "Jt1-xyz_0".into(),
            rol: None,
            via: None,
        }
    }

    #[test]
    fn tenant_secrets_differ_and_a_key_checks_only_under_its_tenants() {
        let root = [9u8; SECRET_LEN];
        let (a, b) = (tenant_secret(&root, "t_a"), tenant_secret(&root, "t_b"));
        assert_ne!(a, b);
        assert_eq!(a, tenant_secret(&root, "t_a"));
        let mut c = claims();
        c.ten = "t_a".into();
        let key = stream_key(&a, &c).unwrap();
        assert_eq!(tenant_of(&key), Some("t_a"));
        assert!(claims_of(&a, &key).is_ok());
        assert_eq!(claims_of(&b, &key), Err(TokenError::BadSignature));
        // Holding tenant b's secret, a key for tenant a cannot be forged.
        let forged = stream_key(&b, &c).unwrap();
        assert_eq!(claims_of(&a, &forged), Err(TokenError::BadSignature));
        assert_eq!(tenant_of("s1..x"), None);
        assert_eq!(tenant_of("v4.public.x"), None);
    }

    #[test]
    fn a_stream_key_stands_for_its_claims_and_fits_a_stream_id() {
        let secret = [3u8; SECRET_LEN];
        let c = claims();
        let key = stream_key(&secret, &c).unwrap();
        assert!(key.len() < 200, "{key}");
        let back = claims_of(&secret, &key).unwrap();
        assert_eq!(
            (back.ten, back.evt, back.str, back.jti),
            (c.ten, c.evt, c.str, c.jti)
        );
        assert_eq!(back.iat, c.iat);
        assert_eq!(back.exp.unix_timestamp(), c.exp.unix_timestamp());
        assert_eq!(back.act, Action::Publish);
    }

    #[test]
    fn a_forged_or_altered_stream_key_is_refused() {
        let secret = [3u8; SECRET_LEN];
        let key = stream_key(&secret, &claims()).unwrap();
        assert_eq!(
            claims_of(&[4u8; SECRET_LEN], &key).unwrap_err(),
            TokenError::BadSignature
        );
        let altered = key.replacen("main", "mail", 1);
        assert_eq!(
            claims_of(&secret, &altered).unwrap_err(),
            TokenError::BadSignature
        );
        assert_eq!(
            claims_of(&secret, "v4.public.x").unwrap_err(),
            TokenError::Malformed
        );
        assert!(claims_of(&secret, "s1.").is_err());
        let mut relay = claims();
        relay.act = Action::Relay;
        assert_eq!(stream_key(&secret, &relay), None);
    }

    #[test]
    fn a_key_at_the_earliest_representable_time_is_malformed_not_a_panic() {
        let secret = [5u8; SECRET_LEN];
        // -9999-01-01T00:00:00Z, the first instant `time` holds.
        let body = "s1.t.e.s.-377705116800000000000.1.j";
        let key = format!("{body}.{}", mac(&secret, body));
        assert_eq!(claims_of(&secret, &key), Err(TokenError::Malformed));
    }

    /// Found by the fuzz target `token_verify`: the body of `s1.<tag>` is
    /// `s1`, shorter than the prefix that was cut off it.
    #[test]
    fn a_key_without_fields_is_malformed_not_a_panic() {
        let secret = [5u8; SECRET_LEN];
        let key = format!("s1.{}", mac(&secret, "s1"));
        assert_eq!(claims_of(&secret, &key), Err(TokenError::Malformed));
    }

    #[test]
    fn the_secret_round_trips_as_hex_and_junk_is_refused() {
        let s: [u8; SECRET_LEN] = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(secret_from_hex(&secret_to_hex(&s)), Some(s));
        assert_eq!(secret_from_hex("abcd"), None);
        assert_eq!(secret_from_hex(&"zz".repeat(32)), None);
        assert_eq!(secret_from_hex(&"é".repeat(32)), None);
    }
}
