//! Rate limits on the endpoints that guess or send mail (login, magic link,
//! password reset, registration): a fixed window per client address and per
//! account. The counts live in the store's [`Presence`], so replicas on
//! one database share every window: an attacker spreading requests over
//! replicas gets no more than from one. Departure from the plan's
//! tower_governor: it keys by IP only, counts in one process's memory, and
//! lockout needs per-account limits beside it; one small limiter does all.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{Presence, StoreError};

/// Why a request is not let through.
#[derive(Debug)]
pub enum Refusal {
    /// Over the limit: come back in this many seconds.
    Wait(u64),
    /// The counters cannot be reached (the database is away).
    Unavailable(StoreError),
}

/// A fixed window per key, counted in [`Presence`]: every replica on one
/// database counts into the same window.
pub struct Limiter {
    presence: Arc<dyn Presence>,
    kind: &'static str,
    limit: u32,
    window: Duration,
}

impl Limiter {
    pub fn new(
        presence: Arc<dyn Presence>,
        kind: &'static str,
        limit: u32,
        window: Duration,
    ) -> Self {
        Self {
            presence,
            kind,
            limit,
            window,
        }
    }

    /// Counts a request for `key`. Blocks on the store: call it off the
    /// async workers.
    pub fn check(&self, key: &str) -> Result<(), Refusal> {
        let counted = self
            .presence
            .count(self.kind, key, self.window)
            .map_err(Refusal::Unavailable)?;
        if counted.hits > u64::from(self.limit) {
            return Err(Refusal::Wait(
                counted.left.as_secs_f64().ceil().max(1.0) as u64
            ));
        }
        Ok(())
    }
}

/// Lockout for accounts that do not exist: three failed attempts on an
/// unknown address lock it like a real account, so a 423 does not tell an
/// attacker which addresses have accounts. Kept in [`Presence`] for a day
/// after the last attempt. Two replicas counting one attempt each at the
/// same instant may both read the old state and count one: harmless, an
/// unknown account has no password to guess, and the lock still follows.
pub struct PhantomLockouts {
    presence: Arc<dyn Presence>,
}

/// How long a phantom lockout state is kept after its last attempt.
const PHANTOM_KEPT: Duration = Duration::from_secs(24 * 3600);
const PHANTOM_KIND: &str = "phantom-lockout";

impl PhantomLockouts {
    pub fn new(presence: Arc<dyn Presence>) -> Self {
        Self { presence }
    }

    /// Counts a failed attempt on the unknown account `key` (a hash);
    /// `Ok(Err)` when a real account would now be locked.
    pub fn attempt(
        &self,
        key: &str,
        lock_minutes: u16,
        now: time::OffsetDateTime,
    ) -> Result<Result<(), strom_identity::lockout::Locked>, StoreError> {
        use strom_identity::lockout::{self, LockoutState};
        let state: LockoutState = self
            .presence
            .get(PHANTOM_KIND, key)?
            .and_then(|p| serde_json::from_slice(&p.value).ok())
            .unwrap_or_default();
        let next = match lockout::begin_attempt(&state, now) {
            Ok(next) => next,
            Err(locked) => return Ok(Err(locked)),
        };
        let after = lockout::attempt_failed(&next, lock_minutes, now);
        let value = serde_json::to_vec(&after)
            .map_err(|e| StoreError::Backend(format!("lockout state: {e}")))?;
        self.presence.put(PHANTOM_KIND, key, &value, PHANTOM_KEPT)?;
        Ok(Ok(()))
    }
}

/// The per-address rate-limit key: an IPv4 address, or the /64 an IPv6
/// address lies in (one host usually holds a whole /64, so per address it
/// could start a fresh allowance with every request).
pub(crate) fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The limits the API applies.
pub struct RateLimits {
    /// Per client address, over all guarded endpoints.
    pub per_ip: Limiter,
    /// Per account (tenant + blind e-mail hash or id).
    pub per_account: Limiter,
    /// Lockout of addresses without an account.
    pub phantom: PhantomLockouts,
    /// Security events per session holder written to the audit trail.
    pub security_events: Limiter,
}

impl RateLimits {
    pub fn new(
        presence: Arc<dyn Presence>,
        per_ip_per_minute: u32,
        per_account_per_minute: u32,
    ) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            per_ip: Limiter::new(presence.clone(), "limit-ip", per_ip_per_minute, minute),
            per_account: Limiter::new(
                presence.clone(),
                "limit-account",
                per_account_per_minute,
                minute,
            ),
            phantom: PhantomLockouts::new(presence.clone()),
            security_events: Limiter::new(
                presence,
                "limit-security-events",
                crate::api::SECURITY_EVENTS_PER_MINUTE,
                minute,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::MemoryPresence;

    #[test]
    fn window_limits_and_resets() {
        let l = Limiter::new(
            Arc::new(MemoryPresence::default()),
            "t",
            3,
            Duration::from_millis(500),
        );
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        assert!(matches!(l.check("a"), Err(Refusal::Wait(1))));
        assert!(
            matches!(l.check("a"), Err(Refusal::Wait(1))),
            "still refused"
        );
        assert!(l.check("b").is_ok(), "keys are independent");
        std::thread::sleep(Duration::from_millis(600));
        assert!(l.check("a").is_ok(), "a new window");
    }

    #[test]
    fn limiters_on_one_presence_count_apart() {
        let presence: Arc<dyn Presence> = Arc::new(MemoryPresence::default());
        let limits = RateLimits::new(presence, 2, 2);
        assert!(limits.per_ip.check("k").is_ok());
        assert!(limits.per_ip.check("k").is_ok());
        assert!(limits.per_ip.check("k").is_err());
        assert!(limits.per_account.check("k").is_ok(), "another kind");
    }

    #[test]
    fn unknown_accounts_lock_like_real_ones() {
        let p = PhantomLockouts::new(Arc::new(MemoryPresence::default()));
        let t0 = time::OffsetDateTime::now_utc();
        for _ in 0..3 {
            assert!(p.attempt("k", 15, t0).unwrap().is_ok());
        }
        assert!(
            p.attempt("k", 15, t0).unwrap().is_err(),
            "the 4th is refused as locked"
        );
        assert!(p.attempt("other", 15, t0).unwrap().is_ok());
        assert!(p
            .attempt("k", 15, t0 + time::Duration::minutes(16))
            .unwrap()
            .is_ok());
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
    }
}
