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

/// The limits the API applies.
pub struct RateLimits {
    /// Per client address, over all guarded endpoints.
    pub per_ip: Limiter,
    /// Per account (tenant + blind e-mail hash or id).
    pub per_account: Limiter,
}

impl RateLimits {
    pub fn new(per_ip_per_minute: u32, per_account_per_minute: u32) -> Self {
        Self {
            per_ip: Limiter::new(per_ip_per_minute, Duration::from_secs(60)),
            per_account: Limiter::new(per_account_per_minute, Duration::from_secs(60)),
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
}
