//! Account lockout (AUTH-4) as pure state transitions: the caller loads a
//! [`LockoutState`], applies one function and writes the result back in the
//! same database transaction (optimistic; a conflict means retry).
//!
//! # How reserve, success and failure compose
//!
//! An attempt is counted *before* the password is checked, so parallel
//! attempts cannot each see "2 failures so far" and all get a guess
//! (Zitadel GHSA-7h8m-vrxx-vr4m):
//!
//! 1. [`begin_attempt`] refuses while `locked_until > now`. A lock whose time has
//!    passed is dropped together with its count. Otherwise, if `failures` has
//!    already reached [`MAX_FAILURES`], the attempt is refused as well (these
//!    are failures or attempts still in flight). Otherwise `failures` is
//!    incremented — provisionally, as if the attempt will fail — and that
//!    state is persisted before the password is looked at.
//! 2. [`attempt_succeeded`] resets the state to zero: the provisional count and
//!    any earlier failures are forgotten.
//! 3. [`attempt_failed`] keeps the provisional count (it already *is* the
//!    failure); when it has reached [`MAX_FAILURES`] it sets `locked_until =
//!    now + lock_minutes` (the per-role duration, 1..=999 minutes).
//!
//! So after 3 failed attempts the 4th is refused — even with the right
//! password — and the account stays locked for the role's duration, until an
//! admin calls [`unlock`] or the time passes. A process that dies between
//! steps 1 and 2/3 leaves its reservation counted as a failure (fail closed).

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// Failed attempts after which the next attempt is refused.
pub const MAX_FAILURES: u8 = 3;

/// Per-account lockout counter, stored with the account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutState {
    /// Failed plus in-flight (reserved) attempts since the last success or unlock.
    pub failures: u8,
    /// The account refuses attempts until this time.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub locked_until: Option<OffsetDateTime>,
}

/// The attempt was refused without looking at the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("account locked")]
pub struct Locked {
    /// When the lock ends. `None`: the attempt budget is used up by attempts
    /// that have not reported an outcome yet (in flight, or lost to a crash);
    /// the account opens when one of them succeeds, turns into a timed lock
    /// when one fails, and an admin can [`unlock`] it.
    pub until: Option<OffsetDateTime>,
}

/// Reserves an attempt; see the module documentation. Persist the returned
/// state before checking the credentials.
pub fn begin_attempt(state: &LockoutState, now: OffsetDateTime) -> Result<LockoutState, Locked> {
    let mut next = state.clone();
    if let Some(until) = state.locked_until {
        if now < until {
            return Err(Locked { until: Some(until) });
        }
        // The lock has run out: its failures are served.
        next = LockoutState::default();
    }
    if next.failures >= MAX_FAILURES {
        return Err(Locked { until: None });
    }
    next.failures += 1;
    Ok(next)
}

/// The reserved attempt presented valid credentials: everything resets.
pub fn attempt_succeeded(_state: &LockoutState) -> LockoutState {
    LockoutState::default()
}

/// The reserved attempt failed. `lock_minutes` is the role's lock duration,
/// clamped to 1..=999.
pub fn attempt_failed(
    state: &LockoutState,
    lock_minutes: u16,
    now: OffsetDateTime,
) -> LockoutState {
    let mut next = state.clone();
    if next.failures >= MAX_FAILURES && next.locked_until.is_none_or(|until| until <= now) {
        let minutes = i64::from(lock_minutes.clamp(1, 999));
        next.locked_until = Some(now + Duration::minutes(minutes));
    }
    next
}

/// An admin unlocks the account (record it in the audit trail, DATA-4).
pub fn unlock() -> LockoutState {
    LockoutState::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap()
    }

    /// Drives one login the way the control plane does: reserve, then report.
    fn login(
        state: &LockoutState,
        password_ok: bool,
        now: OffsetDateTime,
    ) -> Result<LockoutState, Locked> {
        let reserved = begin_attempt(state, now)?;
        Ok(if password_ok {
            attempt_succeeded(&reserved)
        } else {
            attempt_failed(&reserved, 15, now)
        })
    }

    #[test]
    fn three_failures_then_fourth_refused_even_with_right_password() {
        let mut s = LockoutState::default();
        for i in 1..=3u8 {
            s = login(&s, false, t0()).unwrap();
            assert_eq!(s.failures, i);
        }
        assert_eq!(s.locked_until, Some(t0() + Duration::minutes(15)));
        let err = login(&s, true, t0() + Duration::minutes(1)).unwrap_err();
        assert_eq!(err.until, Some(t0() + Duration::minutes(15)));
        // The refused attempt changed nothing (the caller writes nothing back).
        assert_eq!(s.failures, 3);
    }

    #[test]
    fn success_before_the_limit_resets_the_count() {
        let mut s = LockoutState::default();
        s = login(&s, false, t0()).unwrap();
        s = login(&s, false, t0()).unwrap();
        s = login(&s, true, t0()).unwrap();
        assert_eq!(s, LockoutState::default());
        s = login(&s, false, t0()).unwrap();
        s = login(&s, false, t0()).unwrap();
        assert_eq!(s.failures, 2);
        assert_eq!(s.locked_until, None);
    }

    #[test]
    fn lock_expires_by_time() {
        let mut s = LockoutState::default();
        for _ in 0..3 {
            s = login(&s, false, t0()).unwrap();
        }
        let until = t0() + Duration::minutes(15);
        assert!(begin_attempt(&s, until - Duration::seconds(1)).is_err());
        let reserved = begin_attempt(&s, until).unwrap();
        // The expired lock's failures are served; this attempt is the first of a new round.
        assert_eq!(
            reserved,
            LockoutState {
                failures: 1,
                locked_until: None
            }
        );
        assert_eq!(attempt_succeeded(&reserved), LockoutState::default());
    }

    #[test]
    fn failing_after_expiry_starts_a_new_round_not_a_new_lock() {
        let mut s = LockoutState::default();
        for _ in 0..3 {
            s = login(&s, false, t0()).unwrap();
        }
        let later = t0() + Duration::minutes(16);
        s = login(&s, false, later).unwrap();
        assert_eq!(
            s,
            LockoutState {
                failures: 1,
                locked_until: None
            }
        );
    }

    #[test]
    fn lock_duration_is_per_role_and_clamped() {
        let reserved = LockoutState {
            failures: 3,
            locked_until: None,
        };
        assert_eq!(
            attempt_failed(&reserved, 999, t0()).locked_until,
            Some(t0() + Duration::minutes(999))
        );
        assert_eq!(
            attempt_failed(&reserved, 0, t0()).locked_until,
            Some(t0() + Duration::minutes(1))
        );
        assert_eq!(
            attempt_failed(&reserved, 5000, t0()).locked_until,
            Some(t0() + Duration::minutes(999))
        );
    }

    #[test]
    fn admin_unlock() {
        let mut s = LockoutState::default();
        for _ in 0..3 {
            s = login(&s, false, t0()).unwrap();
        }
        assert!(begin_attempt(&s, t0()).is_err());
        s = unlock();
        assert_eq!(login(&s, true, t0()).unwrap(), LockoutState::default());
    }

    #[test]
    fn parallel_reservations_cannot_exceed_the_budget() {
        // Two failures recorded; two requests arrive together. Each reservation
        // is a read-modify-write in one transaction, so the second sees the first.
        let s = LockoutState {
            failures: 2,
            locked_until: None,
        };
        let first = begin_attempt(&s, t0()).unwrap();
        assert_eq!(first.failures, 3);
        let second = begin_attempt(&first, t0());
        assert_eq!(
            second,
            Err(Locked { until: None }),
            "second parallel attempt must not get a guess"
        );
        // The first one fails: that is the third failure and the account locks.
        let after = attempt_failed(&first, 15, t0());
        assert_eq!(after.locked_until, Some(t0() + Duration::minutes(15)));
    }

    #[test]
    fn parallel_burst_from_zero_gets_exactly_three_guesses() {
        let mut s = LockoutState::default();
        let mut granted = 0;
        for _ in 0..10 {
            if let Ok(next) = begin_attempt(&s, t0()) {
                s = next;
                granted += 1;
            }
        }
        assert_eq!(granted, 3);
        // One in-flight attempt succeeds: the account opens again.
        assert_eq!(attempt_succeeded(&s), LockoutState::default());
    }

    #[test]
    fn late_failures_do_not_extend_a_running_lock() {
        // Three reservations in flight, all fail at slightly different times.
        let mut s = LockoutState::default();
        for _ in 0..3 {
            s = begin_attempt(&s, t0()).unwrap();
        }
        s = attempt_failed(&s, 15, t0());
        let until = s.locked_until;
        s = attempt_failed(&s, 15, t0() + Duration::seconds(5));
        assert_eq!(s.locked_until, until);
    }

    #[test]
    fn serde_round_trip() {
        let s = LockoutState {
            failures: 3,
            locked_until: Some(t0()),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LockoutState>(&json).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<LockoutState>(r#"{"failures":1}"#)
                .unwrap()
                .failures,
            1
        );
    }
}
