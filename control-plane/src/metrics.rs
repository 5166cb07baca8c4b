//! The control plane's counters for `/metrics` (OPS-1): logins, lockouts,
//! tokens issued, revocations. Counted in the repository where each
//! happens; labels are kinds and results, never tenants' people.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use strom_token::{Action, RevocationKind};

#[derive(Default, Debug)]
pub struct CpMetrics {
    pub logins_succeeded: AtomicU64,
    pub logins_failed: AtomicU64,
    /// Attempts refused because the account was locked.
    pub logins_locked: AtomicU64,
    /// Accounts that became locked.
    pub lockouts: AtomicU64,
    tokens: [AtomicU64; 3],
    revocations: [AtomicU64; 5],
    /// Requests refused: a role that does not allow it, a missing CSRF
    /// token, a cross-site state change.
    pub refused_forbidden: AtomicU64,
    pub refused_csrf: AtomicU64,
    pub refused_cross_site: AtomicU64,
    /// Requests refused by a rate limit (HTTP 429).
    pub refused_rate_limited: AtomicU64,
}

const ACTIONS: [(Action, &str); 3] = [
    (Action::Play, "play"),
    (Action::Publish, "publish"),
    (Action::Relay, "relay"),
];

const KINDS: [(RevocationKind, &str); 5] = [
    (RevocationKind::Subject, "subject"),
    (RevocationKind::Event, "event"),
    (RevocationKind::EventDeleted, "event-deleted"),
    (RevocationKind::Stream, "stream"),
    (RevocationKind::Token, "token"),
];

impl CpMetrics {
    pub fn token_issued(&self, action: Action) {
        if let Some(i) = ACTIONS.iter().position(|(a, _)| *a == action) {
            self.tokens[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn revoked(&self, kind: RevocationKind) {
        if let Some(i) = KINDS.iter().position(|(k, _)| *k == kind) {
            self.revocations[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP strom_cp_logins_total Password login attempts by result.\n# TYPE strom_cp_logins_total counter\n");
        for (result, v) in [
            ("success", &self.logins_succeeded),
            ("failure", &self.logins_failed),
            ("locked", &self.logins_locked),
        ] {
            let _ = writeln!(out, "strom_cp_logins_total{{result=\"{result}\"}} {}", c(v));
        }
        let _ = writeln!(
            out,
            "# HELP strom_cp_lockouts_total Accounts locked after failed attempts.\n# TYPE strom_cp_lockouts_total counter\nstrom_cp_lockouts_total {}",
            c(&self.lockouts)
        );
        out.push_str("# HELP strom_cp_tokens_issued_total Tokens minted by action.\n# TYPE strom_cp_tokens_issued_total counter\n");
        for (i, (_, name)) in ACTIONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "strom_cp_tokens_issued_total{{action=\"{name}\"}} {}",
                c(&self.tokens[i])
            );
        }
        out.push_str("# HELP strom_cp_refusals_total Requests refused, by reason: a role that does not allow it, a missing CSRF token, a cross-site state change, a rate limit.\n# TYPE strom_cp_refusals_total counter\n");
        for (reason, v) in [
            ("forbidden", &self.refused_forbidden),
            ("csrf", &self.refused_csrf),
            ("cross_site", &self.refused_cross_site),
            ("rate_limited", &self.refused_rate_limited),
        ] {
            let _ = writeln!(
                out,
                "strom_cp_refusals_total{{reason=\"{reason}\"}} {}",
                c(v)
            );
        }
        out.push_str("# HELP strom_cp_revocations_total Revocations recorded by kind.\n# TYPE strom_cp_revocations_total counter\n");
        for (i, (_, name)) in KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "strom_cp_revocations_total{{kind=\"{name}\"}} {}",
                c(&self.revocations[i])
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_and_kind_has_a_series() {
        let m = CpMetrics::default();
        m.token_issued(Action::Publish);
        m.revoked(RevocationKind::EventDeleted);
        let text = m.render();
        assert!(text.contains("strom_cp_tokens_issued_total{action=\"publish\"} 1"));
        assert!(text.contains("strom_cp_revocations_total{kind=\"event-deleted\"} 1"));
        assert!(text.contains("strom_cp_logins_total{result=\"locked\"} 0"));
    }
}
