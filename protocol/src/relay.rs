//! What relays send the control plane and fetch from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where each relay request goes, relative to the control plane's URL.
pub mod paths {
    /// The token key set (`strom_token::KeySet`).
    pub const KEYS: &str = "api/v1/relay/keys";
    /// The revocation feed (`strom_token::revocation::RevocationFeed`), by
    /// long poll.
    pub const REVOCATIONS: &str = "api/v1/relay/revocations";
    /// [`crate::RelayStatus`] reports.
    pub const STATUS: &str = "api/v1/relay/status";
    /// An origin's media signing key.
    pub const MEDIA_KEY: &str = "api/v1/relay/media-key";
    /// [`crate::SrtSecrets`], for origins.
    pub const SRT_SECRETS: &str = "api/v1/relay/srt-secrets";
    /// Agents register ([`crate::RegisterRequest`]).
    pub const AGENT_REGISTER: &str = "api/v1/agents/register";
}

/// How often relays report their status.
pub const STATUS_EVERY_SECS: u64 = 2;
/// How long a long poll (revocations, SRT secrets) is held open.
pub const LONG_POLL_SECS: u64 = 20;

/// Which of the operator's relays reports: its credential must be of the
/// same kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RelayKind {
    /// Takes encoders' pushes: reports the broadcasts being pushed.
    Origin,
    /// Serves viewers and lower tiers: reports its viewers.
    #[default]
    Edge,
}

/// What a relay carries now, reported to the control plane every
/// [`STATUS_EVERY_SECS`]: per broadcast its ingest bitrate (at an origin:
/// the encoder's push) and its viewers. No personal data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RelayStatus {
    pub role: RelayKind,
    pub streams: Vec<StreamStatus>,
    /// Per event: viewers at this relay now, players' QoE since the last report.
    #[serde(default)]
    pub events: Vec<EventFigures>,
    /// Bits per second sent to viewers and relays (MoQT and HLS) over the
    /// last interval.
    #[serde(default)]
    pub egress_bps: u64,
    /// The relay process's CPU use over the last interval, in cores (1.0 =
    /// one core busy).
    #[serde(default)]
    pub cpu_cores: f64,
}

/// One broadcast at one relay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamStatus {
    /// tenant/event/stream.
    pub namespace: String,
    /// Bits per second stored for the broadcast over the last interval.
    pub ingest_bps: u64,
    pub viewers: u64,
}

/// One event at one relay or peer-agent: viewers now, and what its players'
/// QoE beacons reported over the last 15 s or more (sums, so the control
/// plane can add relays up; consecutive reports overlap, so a lost report
/// loses no beacon). No personal data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventFigures {
    /// tenant/event.
    pub event: String,
    /// Play sessions (MoQT) and HLS players (distinct tokens) there now.
    pub viewers: u64,
    pub qoe: QoeSums,
}

impl EventFigures {
    /// At most ten million viewers, and plausible QoE sums.
    pub fn plausible(&self) -> bool {
        self.viewers <= 10_000_000 && self.qoe.plausible()
    }
}

/// Players' QoE beacons summed over an interval.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QoeSums {
    pub beacons: u64,
    pub watch_seconds: f64,
    pub stall_seconds: f64,
    pub stalls: u64,
    /// Sum and number of the latencies to live players reported.
    pub latency_seconds_sum: f64,
    pub latency_samples: u64,
}

impl QoeSums {
    pub fn add(&mut self, o: &QoeSums) {
        self.beacons = self.beacons.saturating_add(o.beacons);
        self.watch_seconds += o.watch_seconds;
        self.stall_seconds += o.stall_seconds;
        self.stalls = self.stalls.saturating_add(o.stalls);
        self.latency_seconds_sum += o.latency_seconds_sum;
        self.latency_samples = self.latency_samples.saturating_add(o.latency_samples);
    }

    /// `self - before` for cumulative totals (a restart counts from zero).
    pub fn since(&self, before: &QoeSums) -> QoeSums {
        if self.beacons < before.beacons {
            return *self;
        }
        QoeSums {
            beacons: self.beacons - before.beacons,
            watch_seconds: (self.watch_seconds - before.watch_seconds).max(0.0),
            stall_seconds: (self.stall_seconds - before.stall_seconds).max(0.0),
            stalls: self.stalls.saturating_sub(before.stalls),
            latency_seconds_sum: (self.latency_seconds_sum - before.latency_seconds_sum).max(0.0),
            latency_samples: self.latency_samples.saturating_sub(before.latency_samples),
        }
    }

    /// Figures a report may carry: finite, non-negative, at most a day of
    /// watching per beacon, no more stall than watch time (plus a second),
    /// at most an hour of latency per sample.
    pub fn plausible(&self) -> bool {
        let fine = |v: f64| v.is_finite() && v >= 0.0;
        fine(self.watch_seconds)
            && fine(self.stall_seconds)
            && fine(self.latency_seconds_sum)
            && self.watch_seconds <= self.beacons as f64 * 86_400.0
            && self.stall_seconds <= self.watch_seconds + 1.0
            && self.latency_seconds_sum <= self.latency_samples as f64 * 3_600.0
    }
}

/// Every tenant's SRT secret, for the operator's origins.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SrtSecrets {
    /// Tenant id → that tenant's SRT secret (64 hex digits): its SRT stream
    /// keys are checked and its passphrases derived with it.
    pub secrets: BTreeMap<String, String>,
    /// Changes when tenants come or go: ask again with it to wait for that.
    #[serde(default)]
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qoe(beacons: u64, watch: f64, stall: f64) -> QoeSums {
        QoeSums {
            beacons,
            watch_seconds: watch,
            stall_seconds: stall,
            ..QoeSums::default()
        }
    }

    #[test]
    fn plausible_figures() {
        let cases = [
            (qoe(1, 10.0, 0.5), true),
            (qoe(0, 0.0, 0.0), true),
            (qoe(1, 10.0, 11.5), false),
            (qoe(1, 90_000.0, 0.0), false),
            (qoe(1, f64::NAN, 0.0), false),
            (qoe(1, 10.0, -1.0), false),
            (qoe(1, f64::INFINITY, 0.0), false),
            (
                QoeSums {
                    latency_seconds_sum: 3_601.0,
                    latency_samples: 1,
                    ..qoe(1, 10.0, 0.0)
                },
                false,
            ),
        ];
        for (q, want) in cases {
            assert_eq!(q.plausible(), want, "{q:?}");
        }
    }

    #[test]
    fn sums_since_a_restart_count_from_zero() {
        let before = qoe(10, 100.0, 1.0);
        assert_eq!(qoe(12, 130.0, 1.0).since(&before), qoe(2, 30.0, 0.0));
        assert_eq!(qoe(3, 20.0, 0.0).since(&before), qoe(3, 20.0, 0.0));
    }

    #[test]
    fn a_report_with_a_field_the_control_plane_does_not_know_is_refused() {
        let json = r#"{"role":"edge","streams":[],"surprise":1}"#;
        assert!(serde_json::from_str::<RelayStatus>(json).is_err());
        let json = r#"{"role":"edge","streams":[]}"#;
        assert!(serde_json::from_str::<RelayStatus>(json).is_ok());
    }
}
