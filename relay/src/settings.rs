//! Settings every relay shares, written once and validated once: what a
//! track's cache keeps (origin, edge, agent), and how a relay serves the
//! viewers it pulls for (edge, agent). Each service's section flattens
//! them in, so operators keep writing `[edge] cache_max_bytes = …`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::CacheLimits;

/// What each track's cache keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CacheSettings {
    /// Groups older than this (since their first object) are dropped.
    pub cache_max_age_secs: u64,
    /// Bytes kept per track at most; the newest group is always kept.
    pub cache_max_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            cache_max_age_secs: 30,
            cache_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl CacheSettings {
    /// `section` names the configuration section in the error.
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        if self.cache_max_age_secs < 2 {
            anyhow::bail!(
                "{section}.cache_max_age_secs = {} must be at least 2",
                self.cache_max_age_secs
            );
        }
        if self.cache_max_bytes < 1024 * 1024 {
            anyhow::bail!(
                "{section}.cache_max_bytes = {} must be at least 1 MiB",
                self.cache_max_bytes
            );
        }
        Ok(())
    }

    /// The cache's limits; `gap_wait` as [`CacheLimits::gap_wait`].
    pub fn limits(&self, gap_wait: Duration) -> CacheLimits {
        CacheLimits {
            max_age: Duration::from_secs(self.cache_max_age_secs),
            max_bytes: self.cache_max_bytes,
            gap_wait,
        }
    }
}

/// How a relay serves the viewers it pulls tracks for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServingSettings {
    /// A track stays subscribed upstream this long after its last viewer.
    pub idle_secs: u64,
    /// LL-HLS part duration.
    pub hls_part_target_secs: f64,
    /// LL-HLS segments in a playlist.
    pub hls_window: usize,
}

impl Default for ServingSettings {
    fn default() -> Self {
        Self {
            idle_secs: 10,
            hls_part_target_secs: 0.5,
            hls_window: 6,
        }
    }
}

impl ServingSettings {
    /// `section` names the configuration section in the error.
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        if !(0.1..=2.0).contains(&self.hls_part_target_secs) {
            anyhow::bail!(
                "{section}.hls_part_target_secs = {} must be between 0.1 and 2.0",
                self.hls_part_target_secs
            );
        }
        if !(3..=60).contains(&self.hls_window) {
            anyhow::bail!(
                "{section}.hls_window = {} must be between 3 and 60",
                self.hls_window
            );
        }
        Ok(())
    }

    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_is_named_with_its_section() {
        let cache = |age, bytes| CacheSettings {
            cache_max_age_secs: age,
            cache_max_bytes: bytes,
        };
        let serving = |part, window| ServingSettings {
            hls_part_target_secs: part,
            hls_window: window,
            ..ServingSettings::default()
        };
        assert!(CacheSettings::default().validate("edge").is_ok());
        assert!(ServingSettings::default().validate("edge").is_ok());
        // (settings, the error's start; None: valid)
        let cases: [(anyhow::Result<()>, Option<&str>); 8] = [
            (cache(2, 1 << 20).validate("edge"), None),
            (
                cache(1, 1 << 20).validate("edge"),
                Some("edge.cache_max_age_secs = 1"),
            ),
            (
                cache(30, (1 << 20) - 1).validate("origin"),
                Some("origin.cache_max_bytes = 1048575"),
            ),
            (serving(0.1, 3).validate("peer_agent"), None),
            (serving(2.0, 60).validate("peer_agent"), None),
            (
                serving(0.09, 6).validate("peer_agent"),
                Some("peer_agent.hls_part_target_secs = 0.09"),
            ),
            (
                serving(0.5, 61).validate("edge"),
                Some("edge.hls_window = 61"),
            ),
            (
                serving(0.5, 2).validate("edge"),
                Some("edge.hls_window = 2"),
            ),
        ];
        for (i, (result, expected)) in cases.into_iter().enumerate() {
            match (result, expected) {
                (Ok(()), None) => {}
                (Err(e), Some(start)) => assert!(e.to_string().starts_with(start), "case {i}: {e}"),
                (other, expected) => panic!("case {i}: {other:?}, expected {expected:?}"),
            }
        }
    }
}
