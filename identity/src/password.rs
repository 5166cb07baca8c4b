//! Password rules (AUTH-2): the per-tenant policy, the check a new password
//! must pass, argon2id hashing and verification, generated passwords and expiry.
//!
//! Everything here is pure apart from the random salt and generated passwords,
//! which come from the operating system's random source.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// Longest password accepted, in characters. Bounds the work a login request can
/// cause and leaves room for passphrases.
pub const MAX_LENGTH: usize = 128;

/// argon2id parameters for new hashes: m = 19456 KiB, t = 2, p = 1, 32-byte
/// output, 16-byte salt — the OWASP Password Storage Cheat Sheet minimum and
/// argon2's own default.
///
/// Cost, measured by `cargo bench -p strom-identity --bench argon2`
/// (`benches/argon2.rs`) on the 2-core build machine while two other builds ran
/// (load average ~6): one hash median 55.3 ms (min 42.9, max 86.8), one verify
/// median 42.6 ms, 21 samples. We stay at
/// the minimum because the control plane verifies on a blocking thread per login
/// (at most one argon2 computation per core at a time, see `with_argon2_permit`)
/// and a 2-core node must still absorb login bursts at event start; raising `t`
/// is a one-line change here — existing hashes keep verifying, since
/// verification reads the parameters from the PHC string.
pub const ARGON2_PARAMS: Argon2Params = Argon2Params {
    m_cost_kib: 19_456,
    t_cost: 2,
    p_cost: 1,
};

/// Description of the argon2id cost parameters (see [`ARGON2_PARAMS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// Upper bounds on the parameters of a stored hash we are willing to verify,
/// so a tampered or imported hash cannot make one login allocate gigabytes.
const VERIFY_MAX_M_COST_KIB: u32 = 256 * 1024;
const VERIFY_MAX_T_COST: u32 = 16;
const VERIFY_MAX_P_COST: u32 = 8;

/// A tenant's password policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    /// Minimum length in characters, 10..=32.
    pub min_length: u8,
    /// Require letters, digits and special characters.
    pub require_classes: bool,
    /// Passwords expire after this many days (1..=180); `None` = never.
    pub expiry_days: Option<u16>,
    /// How many previous passwords may not be reused, 0..=10.
    pub history: u8,
}

impl Default for PasswordPolicy {
    /// Expiry and composition rules are off by default: ASVS 5.0 (6.2.5,
    /// 6.2.10) and BSI advise against forced rotation and character-class
    /// rules (they push people to `Password1!`); every password is instead
    /// checked against the common ones ([`is_common`]). Tenants who ask for
    /// either rule can switch it on.
    fn default() -> Self {
        Self {
            min_length: 10,
            require_classes: false,
            expiry_days: None,
            history: 10,
        }
    }
}

/// A policy value outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("min_length {0} is outside 10..=32")]
    MinLength(u8),
    #[error("expiry_days {0} is outside 1..=180")]
    ExpiryDays(u16),
    #[error("history {0} is outside 0..=10")]
    History(u8),
}

impl PasswordPolicy {
    /// Checks every field against its allowed range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(10..=32).contains(&self.min_length) {
            return Err(PolicyError::MinLength(self.min_length));
        }
        if let Some(days) = self.expiry_days {
            if !(1..=180).contains(&days) {
                return Err(PolicyError::ExpiryDays(days));
            }
        }
        if self.history > 10 {
            return Err(PolicyError::History(self.history));
        }
        Ok(())
    }
}

/// Character classes a policy may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CharClass {
    Letter,
    Digit,
    Special,
}

/// Why a candidate password was refused. Carries no part of the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    #[error("password is shorter than {min} characters")]
    TooShort { min: usize },
    #[error("password is longer than {max} characters")]
    TooLong { max: usize },
    #[error("password lacks a character of class {0:?}")]
    MissingClass(CharClass),
    #[error("password was used recently")]
    Reused,
    #[error("password is one of the commonly used ones, or too easy to guess")]
    Common,
}

/// Only this much of a password is rated: the estimate's cost grows with
/// the length, and what makes a long password weak shows in its start.
const RATED_CHARS: usize = 64;

/// Words of the product that no password should be built from.
const PRODUCT_WORDS: &[&str] = &["strom", "webcast", "livestream", "townhall"];

/// The words a password must not be built from (ASVS 6.2.11): the
/// product's, and the pieces of `parts` — the organisation's name, the
/// account's e-mail address and name — lower-cased and split at every
/// character that is not a letter or digit (pieces of 3 characters or
/// more), each part also joined up (`vera.viewer` gives `vera`, `viewer`
/// and `veraviewer`).
pub fn context_words(parts: &[&str]) -> Vec<String> {
    let mut words: Vec<String> = PRODUCT_WORDS.iter().map(|w| (*w).to_owned()).collect();
    for part in parts {
        let lower = part.to_lowercase();
        let pieces: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|p| p.chars().count() >= 3)
            .collect();
        let joined = pieces.concat();
        for word in pieces.iter().map(|p| (*p).to_owned()).chain([joined]) {
            if word.chars().count() >= 3 && !words.contains(&word) {
                words.push(word);
            }
        }
    }
    words
}

/// Whether `candidate` is a common password (ASVS 6.2.4): one of the 30,000
/// most used passwords zxcvbn ships (also reversed, in l33t or with other
/// capitals), or one that zxcvbn finds within 10^6 guesses — a listed
/// password with a few digits added (`Welcome123`), a repeat, a sequence,
/// a keyboard walk, or one made of the `context` words
/// ([`context_words`]) with a little added (`Acme-Webcast-2026`).
pub fn is_common(candidate: &str, context: &[String]) -> bool {
    made_of_context(candidate, context) || rated_common(candidate, context)
}

/// Fewer letters and digits than this left once the context words are
/// taken out: the password is those words with a little added.
const MIN_OWN_CHARS: usize = 6;

/// Whether `candidate` is built from `context` words: taken out (ignoring
/// case, longest first), what remains is only digits and punctuation,
/// fewer than [`MIN_OWN_CHARS`] letters or digits, or a common password
/// itself. zxcvbn alone rates `Acme-Webcast-2026` as strong even when told
/// the words (it prices `Acme-` as five random characters).
fn made_of_context(candidate: &str, context: &[String]) -> bool {
    let mut words: Vec<&str> = context
        .iter()
        .map(String::as_str)
        .filter(|w| w.chars().count() >= 3)
        .collect();
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    let mut rest: String = candidate
        .chars()
        .take(RATED_CHARS)
        .collect::<String>()
        .to_lowercase();
    let mut found = false;
    for word in words {
        if rest.contains(word) {
            // A space, so that what was around a word does not join up.
            rest = rest.replace(word, " ");
            found = true;
        }
    }
    if !found {
        return false;
    }
    let own: Vec<char> = rest.chars().filter(|c| c.is_alphanumeric()).collect();
    own.len() < MIN_OWN_CHARS || own.iter().all(|c| c.is_numeric()) || rated_common(&rest, &[])
}

/// zxcvbn's verdict: listed, or guessed within 10^6 tries.
fn rated_common(candidate: &str, context: &[String]) -> bool {
    let rated: String = candidate.chars().take(RATED_CHARS).collect();
    let inputs: Vec<&str> = context.iter().map(String::as_str).collect();
    let entropy = zxcvbn::zxcvbn(&rated, &inputs);
    if matches!(entropy.score(), zxcvbn::Score::Zero | zxcvbn::Score::One) {
        return true;
    }
    let length = rated.chars().count();
    entropy.sequence().iter().any(|m| {
        let whole = m.token.chars().count() + 1 >= length;
        let listed = matches!(
            &m.pattern,
            zxcvbn::matching::patterns::MatchPattern::Dictionary(d)
                if format!("{:?}", d.dictionary_name) == "Passwords"
        );
        whole && listed
    })
}

fn class_of(c: char) -> CharClass {
    if c.is_alphabetic() {
        CharClass::Letter
    } else if c.is_numeric() {
        CharClass::Digit
    } else {
        CharClass::Special
    }
}

/// Checks a new password against the policy and the user's previous hashes
/// (`history`: PHC strings, newest first; only the first `policy.history` are
/// consulted), with the product's words only as context: use
/// [`check_password_in`] where the account is known.
pub fn check_password(
    policy: &PasswordPolicy,
    candidate: &str,
    history: &[String],
) -> Result<(), PasswordRejected> {
    check_password_in(policy, candidate, history, &context_words(&[]))
}

/// [`check_password`] for an account: `context` ([`context_words`] of the
/// organisation's name, the account's e-mail address and name) is refused
/// as the stuff of a password. Costs one argon2 verification per consulted
/// hash.
pub fn check_password_in(
    policy: &PasswordPolicy,
    candidate: &str,
    history: &[String],
    context: &[String],
) -> Result<(), PasswordRejected> {
    let length = candidate.chars().count();
    let min = usize::from(policy.min_length);
    if length < min {
        return Err(PasswordRejected::TooShort { min });
    }
    if length > MAX_LENGTH {
        return Err(PasswordRejected::TooLong { max: MAX_LENGTH });
    }
    if is_common(candidate, context) {
        return Err(PasswordRejected::Common);
    }
    if policy.require_classes {
        for class in [CharClass::Letter, CharClass::Digit, CharClass::Special] {
            if !candidate.chars().any(|c| class_of(c) == class) {
                return Err(PasswordRejected::MissingClass(class));
            }
        }
    }
    let reused = history
        .iter()
        .take(usize::from(policy.history))
        .any(|phc| verify_password(candidate, phc));
    if reused {
        return Err(PasswordRejected::Reused);
    }
    Ok(())
}

/// Hashing failed; only possible when the operating system's random source fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hasher() -> Argon2<'static> {
    // The constants are valid argon2 parameters; `Params::DEFAULT` is the
    // fallback only to keep this function total.
    let params = Params::new(
        ARGON2_PARAMS.m_cost_kib,
        ARGON2_PARAMS.t_cost,
        ARGON2_PARAMS.p_cost,
        Some(Params::DEFAULT_OUTPUT_LEN),
    )
    .unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// At most this many argon2 computations run at once in the process (one
/// per core): each takes 19 MiB and a core for ~45 ms, so a login storm or a
/// credential-stuffing burst queues here instead of allocating gigabytes on
/// hundreds of blocking threads and slowing every login down together.
fn argon2_permits() -> usize {
    static PERMITS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PERMITS.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// A counting semaphore for argon2 runs (std only: callers are blocking
/// threads).
struct Permits {
    running: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Permits {
    const fn new() -> Self {
        Self {
            running: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Runs `f` holding one of `limit` permits (blocking until one is free).
    fn with<T>(&self, limit: usize, f: impl FnOnce() -> T) -> T {
        struct Permit<'a>(&'a Permits);
        impl Drop for Permit<'_> {
            fn drop(&mut self) {
                let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
                *running -= 1;
                self.0.freed.notify_one();
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= limit {
            running = self.freed.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
        drop(running);
        let _permit = Permit(self);
        f()
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        *self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Logins, password changes and single account creations.
static INTERACTIVE: Permits = Permits::new();
/// Bulk work (participant imports): one core at most, and never a permit
/// that a login waits for, however many imports run (F19).
static BULK: Permits = Permits::new();
const BULK_PERMITS: usize = 1;

/// Runs `f` holding one of the [`argon2_permits`] (blocking until one is free).
fn with_argon2_permit<T>(f: impl FnOnce() -> T) -> T {
    INTERACTIVE.with(argon2_permits(), f)
}

/// Hashes a password into an argon2id PHC string with a fresh random salt.
pub fn try_hash_password(password: &str) -> Result<String, HashError> {
    with_argon2_permit(|| hash_unbounded(password))
}

/// [`hash_password`] for bulk work such as a participant import: the runs
/// queue on their own single permit, so logins on every tenant keep all of
/// theirs while an import hashes thousands of passwords.
///
/// # Panics
/// As [`hash_password`], only if the operating system's random source fails.
pub fn hash_password_bulk(password: &str) -> String {
    match BULK.with(BULK_PERMITS, || hash_unbounded(password)) {
        Ok(phc) => phc,
        Err(e) => panic!("{e}"),
    }
}

fn hash_unbounded(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    OsRng
        .try_fill(&mut salt)
        .map_err(|e| HashError(e.to_string()))?;
    hasher()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Hashes a password into an argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
///
/// # Panics
/// Only if the operating system's random source fails (as `OsRng` itself
/// would); no password makes it panic. Use [`try_hash_password`] to handle that.
pub fn hash_password(password: &str) -> String {
    match try_hash_password(password) {
        Ok(phc) => phc,
        Err(e) => panic!("{e}"),
    }
}

/// Whether `password` matches the PHC string. `false` for a malformed hash, an
/// unsupported algorithm or parameters beyond what we would ever produce.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > VERIFY_MAX_M_COST_KIB
        || params.t_cost() > VERIFY_MAX_T_COST
        || params.p_cost() > VERIFY_MAX_P_COST
    {
        return false;
    }
    with_argon2_permit(|| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Characters of generated passwords: no look-alikes (0/O, 1/l/I) and no
/// characters that break out of quoting in mails, CSV or shells.
const GEN_LETTERS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
const GEN_DIGITS: &[u8] = b"23456789";
const GEN_SPECIALS: &[u8] = b"!#%+-.:=?@_";

/// Length of generated passwords unless the policy wants more: 16 characters
/// from a 67-symbol alphabet is about 97 bits.
const GEN_LENGTH: usize = 16;

/// Generates a password that satisfies the policy, from the OS random source.
pub fn generate_password(policy: &PasswordPolicy) -> String {
    let length = GEN_LENGTH
        .max(usize::from(policy.min_length))
        .min(MAX_LENGTH);
    let all: Vec<u8> = [GEN_LETTERS, GEN_DIGITS, GEN_SPECIALS].concat();
    let mut rng = OsRng;
    loop {
        let candidate: String = (0..length)
            .map(|_| char::from(all[rng.gen_range(0..all.len())]))
            .collect();
        // Rejection sampling keeps the distribution uniform over passwords that
        // have every class; with 16 characters fewer than 1 in 5 draws is redrawn.
        let has = |set: &[u8]| candidate.bytes().any(|b| set.contains(&b));
        if has(GEN_LETTERS) && has(GEN_DIGITS) && has(GEN_SPECIALS) {
            return candidate;
        }
    }
}

/// Whether a password set at `set_at` has expired at `now` under the policy.
pub fn expired(policy: &PasswordPolicy, set_at: OffsetDateTime, now: OffsetDateTime) -> bool {
    match policy.expiry_days {
        None => false,
        Some(days) => now >= set_at + Duration::days(i64::from(days)),
    }
}

#[cfg(test)]
mod tests;
