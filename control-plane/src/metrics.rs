//! The control plane's counters for `/metrics` (OPS-1): logins, lockouts,
//! tokens issued, revocations, refusals. Counted where each happens; labels
//! are kinds and results, never tenants' people. The `prometheus` crate
//! holds the counters and writes the text format.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use strom_token::{Action, RevocationKind};

#[derive(Debug, Clone)]
pub struct CpMetrics {
    registry: Registry,
    pub logins_succeeded: IntCounter,
    pub logins_failed: IntCounter,
    /// Attempts refused because the account was locked.
    pub logins_locked: IntCounter,
    /// Accounts that became locked.
    pub lockouts: IntCounter,
    tokens: IntCounterVec,
    revocations: IntCounterVec,
    /// Requests refused: a role that does not allow it, a missing CSRF
    /// token, a cross-site state change.
    pub refused_forbidden: IntCounter,
    pub refused_csrf: IntCounter,
    pub refused_cross_site: IntCounter,
    /// Requests refused by a rate limit (HTTP 429).
    pub refused_rate_limited: IntCounter,
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

/// Registers a counter family; every label value in `values` starts at 0,
/// so a dashboard sees the series before the first event.
fn family(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let labels: &[&str] = if label.is_empty() { &[] } else { &[label] };
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric name");
    registry
        .register(Box::new(vec.clone()))
        .expect("each family registered once");
    for v in values {
        vec.with_label_values(&[v]);
    }
    vec
}

impl Default for CpMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let logins = family(
            &registry,
            "strom_cp_logins_total",
            "Password login attempts by result.",
            "result",
            &[],
        );
        let lockouts = family(
            &registry,
            "strom_cp_lockouts_total",
            "Accounts locked after failed attempts.",
            "",
            &[],
        );
        let tokens = family(
            &registry,
            "strom_cp_tokens_issued_total",
            "Tokens minted by action.",
            "action",
            &ACTIONS.map(|(_, n)| n),
        );
        let refusals = family(
            &registry,
            "strom_cp_refusals_total",
            "Requests refused, by reason: a role that does not allow it, a missing CSRF token, a cross-site state change, a rate limit.",
            "reason",
            &[],
        );
        let revocations = family(
            &registry,
            "strom_cp_revocations_total",
            "Revocations recorded by kind.",
            "kind",
            &KINDS.map(|(_, n)| n),
        );
        CpMetrics {
            logins_succeeded: logins.with_label_values(&["success"]),
            logins_failed: logins.with_label_values(&["failure"]),
            logins_locked: logins.with_label_values(&["locked"]),
            lockouts: lockouts.with_label_values(&[] as &[&str]),
            refused_forbidden: refusals.with_label_values(&["forbidden"]),
            refused_csrf: refusals.with_label_values(&["csrf"]),
            refused_cross_site: refusals.with_label_values(&["cross_site"]),
            refused_rate_limited: refusals.with_label_values(&["rate_limited"]),
            tokens,
            revocations,
            registry,
        }
    }
}

impl CpMetrics {
    pub fn token_issued(&self, action: Action) {
        if let Some((_, name)) = ACTIONS.iter().find(|(a, _)| *a == action) {
            self.tokens.with_label_values(&[name]).inc();
        }
    }

    pub fn revoked(&self, kind: RevocationKind) {
        if let Some((_, name)) = KINDS.iter().find(|(k, _)| *k == kind) {
            self.revocations.with_label_values(&[name]).inc();
        }
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "metrics could not be encoded");
                String::new()
            })
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
        assert!(text.contains("strom_cp_tokens_issued_total{action=\"relay\"} 0"));
        assert!(text.contains("strom_cp_revocations_total{kind=\"event-deleted\"} 1"));
        assert!(text.contains("strom_cp_logins_total{result=\"locked\"} 0"));
        assert!(text.contains("strom_cp_lockouts_total 0"));
        assert!(text.contains("# TYPE strom_cp_refusals_total counter"));
    }
}
