//! Rate limits on the endpoints that guess or send mail (login, magic link,
//! password reset, registration): a fixed window per client address and per
//! account. Sans-IO: the clock is an argument. Departure from the plan's
//! tower_governor: it keys by IP only, and lockout needs per-account limits
//! beside it; one small limiter does both.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Limiter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request for `key`; `Err(seconds)` says when to come back.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() > 100_000 {
            counts.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Lockout for accounts that do not exist: three failed attempts on an
/// unknown address lock it like a real account, so a 423 does not tell an
/// attacker which addresses have accounts. In memory and bounded.
#[derive(Default)]
pub struct PhantomLockouts {
    states: Mutex<HashMap<String, strom_identity::lockout::LockoutState>>,
}

impl PhantomLockouts {
    /// Counts a failed attempt on the unknown account `key` (a hash); `Err`
    /// when a real account would now be locked.
    pub fn attempt(
        &self,
        key: &str,
        lock_minutes: u16,
        now: time::OffsetDateTime,
    ) -> Result<(), strom_identity::lockout::Locked> {
        use strom_identity::lockout;
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.len() >= 100_000 {
            states.retain(|_, s| s.locked_until.is_some_and(|u| u > now));
            if states.len() >= 100_000 {
                states.clear();
            }
        }
        let state = states.entry(key.to_owned()).or_default();
        let next = lockout::begin_attempt(state, now)?;
        *state = lockout::attempt_failed(&next, lock_minutes, now);
        Ok(())
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
    pub fn new(per_ip_per_minute: u32, per_account_per_minute: u32) -> Self {
        Self {
            per_ip: Limiter::new(per_ip_per_minute, Duration::from_secs(60)),
            per_account: Limiter::new(per_account_per_minute, Duration::from_secs(60)),
            phantom: PhantomLockouts::default(),
            security_events: Limiter::new(
                crate::api::SECURITY_EVENTS_PER_MINUTE,
                Duration::from_secs(60),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits_and_resets() {
        let l = Limiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
        }
        assert_eq!(l.check("a", t0 + Duration::from_secs(10)), Err(50));
        assert!(l.check("b", t0).is_ok(), "keys are independent");
        assert!(l.check("a", t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn unknown_accounts_lock_like_real_ones() {
        let p = PhantomLockouts::default();
        let t0 = time::OffsetDateTime::now_utc();
        for _ in 0..3 {
            assert!(p.attempt("k", 15, t0).is_ok());
        }
        assert!(
            p.attempt("k", 15, t0).is_err(),
            "the 4th is refused as locked"
        );
        assert!(p.attempt("other", 15, t0).is_ok());
        assert!(p.attempt("k", 15, t0 + time::Duration::minutes(16)).is_ok());
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
