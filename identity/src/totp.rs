//! Time-based one-time passwords (AUTH-3): secrets, otpauth:// provisioning
//! URIs and verification with replay refusal. RFC 6238 with the parameters
//! every authenticator app supports: HMAC-SHA1, 6 digits, 30 s steps, ±1 step.
//!
//! The caller persists the step returned by [`verify`] and passes it back as
//! `last_used_step`, so a code is accepted at most once (RFC 6238 §5.2).

use rand::rngs::OsRng;
use rand::RngCore;
use totp_rs::{Algorithm, Secret, Totp};

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: u8 = 6;
/// Steps accepted either side of the current one (clock drift, typing time).
pub const SKEW_STEPS: u64 = 1;

/// Why a code was not accepted. Carries neither secret nor code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("stored TOTP secret is not valid base32 of at least 128 bits")]
    BadSecret,
    #[error("issuer or account label is not usable in an otpauth URI")]
    BadLabel,
    #[error("code is not {DIGITS} digits")]
    Malformed,
    #[error("code does not match")]
    Mismatch,
    #[error("code was already used")]
    Replayed,
}

/// A new random 160-bit secret (RFC 4226 §4 recommends 160 bits), base32
/// without padding as authenticator apps expect.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    OsRng.fill_bytes(&mut bytes);
    Secret::from(bytes).to_base32()
}

fn totp(secret_b32: &str, skew: u16) -> Result<Totp, TotpError> {
    let secret = Secret::try_from_base32(secret_b32).map_err(|_| TotpError::BadSecret)?;
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP_SECONDS)
        .with_skew(skew)
        .with_secret(secret)
        .build()
        .map_err(|_| TotpError::BadSecret)
}

/// The `otpauth://totp/…` URI for enrolment (shown as QR code). Issuer and
/// label are percent-encoded; neither may contain `:`.
pub fn provisioning_uri(
    secret: &str,
    issuer: &str,
    account_label: &str,
) -> Result<String, TotpError> {
    let secret = Secret::try_from_base32(secret).map_err(|_| TotpError::BadSecret)?;
    if issuer.contains(':') || account_label.contains(':') || account_label.is_empty() {
        return Err(TotpError::BadLabel);
    }
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret)
        .with_issuer(Some(issuer))
        .with_account_name(account_label)
        .build()
        .map_err(|e| match e {
            totp_rs::TotpError::SecretTooShort { .. } => TotpError::BadSecret,
            _ => TotpError::BadLabel,
        })?
        .to_url()
        .map_err(|_| TotpError::BadLabel)
}

/// Verifies `code` at `now_unix` and returns the time step it matched, which
/// the caller must store. Steps at or before `last_used_step` are never
/// accepted, so a code (or an older one) cannot be replayed.
pub fn verify(
    secret_b32: &str,
    code: &str,
    now_unix: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    // One step at a time with skew 0, so each step can be checked against the
    // replay floor; totp-rs compares tokens in constant time.
    let totp = totp(secret_b32, 0)?;
    let code = code.trim();
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let current = now_unix / STEP_SECONDS;
    let mut replayed = false;
    for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
        let Some(time) = step.checked_mul(STEP_SECONDS) else {
            continue;
        };
        if totp.check(code, time).is_some() {
            if last_used_step.is_some_and(|last| step <= last) {
                replayed = true;
                continue;
            }
            return Ok(step);
        }
    }
    Err(if replayed {
        TotpError::Replayed
    } else {
        TotpError::Mismatch
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the SHA1 seed "12345678901234567890".
    const RFC_SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn code_at(secret: &str, time: u64) -> String {
        totp(secret, 0).unwrap().generate(time).to_string()
    }

    #[test]
    fn rfc6238_vectors() {
        // The RFC's 8-digit values reduced to 6 digits (last six).
        for (time, expected) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(RFC_SECRET_B32, time), expected);
            assert_eq!(verify(RFC_SECRET_B32, expected, time, None), Ok(time / 30));
        }
    }

    #[test]
    fn accepts_one_step_of_skew_either_way() {
        let secret = new_secret();
        let now = 1_700_000_015;
        let step = now / 30;
        assert_eq!(
            verify(&secret, &code_at(&secret, now - 30), now, None),
            Ok(step - 1)
        );
        assert_eq!(
            verify(&secret, &code_at(&secret, now + 30), now, None),
            Ok(step + 1)
        );
        assert_eq!(
            verify(&secret, &code_at(&secret, now - 60), now, None),
            Err(TotpError::Mismatch)
        );
        assert_eq!(
            verify(&secret, &code_at(&secret, now + 60), now, None),
            Err(TotpError::Mismatch)
        );
    }

    #[test]
    fn refuses_replay_of_used_step() {
        let secret = new_secret();
        let now = 1_700_000_000;
        let code = code_at(&secret, now);
        let step = verify(&secret, &code, now, None).unwrap();
        assert_eq!(
            verify(&secret, &code, now, Some(step)),
            Err(TotpError::Replayed)
        );
        // Still refused a few seconds later within the skew window.
        assert_eq!(
            verify(&secret, &code, now + 20, Some(step)),
            Err(TotpError::Replayed)
        );
        // An older code is refused once a newer step was used.
        let older = code_at(&secret, now - 30);
        assert_eq!(
            verify(&secret, &older, now, Some(step)),
            Err(TotpError::Replayed)
        );
        // The next step's code is fine.
        let next = code_at(&secret, now + 30);
        assert_eq!(verify(&secret, &next, now + 30, Some(step)), Ok(step + 1));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let secret = new_secret();
        for code in ["", "12345", "1234567", "12a456", "+12345", "１２３４５６"] {
            assert_eq!(
                verify(&secret, code, 1_700_000_000, None),
                Err(TotpError::Malformed),
                "{code:?}"
            );
        }
        assert_eq!(
            verify("not base32!", "123456", 0, None),
            Err(TotpError::BadSecret)
        );
        assert_eq!(
            verify("GEZDGNBV", "123456", 0, None),
            Err(TotpError::BadSecret),
            "too short"
        );
        // Extreme clocks do not overflow.
        let _ = verify(&secret, "123456", u64::MAX, None);
        let _ = verify(&secret, "123456", 0, Some(u64::MAX));
    }

    #[test]
    fn new_secrets_are_160_bit_base32_and_distinct() {
        let a = new_secret();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(a, new_secret());
    }

    #[test]
    fn provisioning_uri_shape() {
        let uri = provisioning_uri(RFC_SECRET_B32, "strom Acme", "user 17").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/strom%20Acme:user%2017?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={RFC_SECRET_B32}")), "{uri}");
        assert!(uri.contains("issuer=strom%20Acme"), "{uri}");
        assert_eq!(
            provisioning_uri(RFC_SECRET_B32, "a:b", "x"),
            Err(TotpError::BadLabel)
        );
        assert_eq!(
            provisioning_uri(RFC_SECRET_B32, "a", ""),
            Err(TotpError::BadLabel)
        );
        assert_eq!(provisioning_uri("???", "a", "x"), Err(TotpError::BadSecret));
    }
}
