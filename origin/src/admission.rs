//! Connections that are not allowed to publish yet: an RTMP or RTMPS peer
//! until its publish is accepted, an SRT caller from the listener callback's
//! admission until libsrt has finished its handshake (passphrase included).
//! Such a peer has proven nothing, so what it may cost the origin is bounded:
//! at most `max_connections` of them per origin and
//! `max_connections_per_address` per source address at once (IPv6: per /64,
//! what one subscriber usually gets), each for at most `deadline_secs` (the
//! listeners enforce the deadline; RTMP also caps the bytes read before
//! publish). Sans-IO: counts only, no clock, no sockets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::auth::Transport;

/// `[origin.admission]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Seconds from connecting until the push must be authenticated (RTMP:
    /// publish accepted, TLS and RTMP handshakes included).
    pub deadline_secs: u64,
    /// Unauthenticated connections at once, over all ingest listeners.
    pub max_connections: usize,
    /// Unauthenticated connections at once from one IPv4 address or IPv6 /64.
    pub max_connections_per_address: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            deadline_secs: 10,
            max_connections: 256,
            max_connections_per_address: 16,
        }
    }
}

impl AdmissionConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=300).contains(&self.deadline_secs) {
            anyhow::bail!(
                "origin.admission.deadline_secs = {} must be 1 to 300",
                self.deadline_secs
            );
        }
        if self.max_connections == 0 {
            anyhow::bail!("origin.admission.max_connections = 0 must be at least 1");
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_address) {
            anyhow::bail!(
                "origin.admission.max_connections_per_address = {} must be 1 to max_connections ({})",
                self.max_connections_per_address,
                self.max_connections
            );
        }
        Ok(())
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.deadline_secs)
    }
}

/// Why a new connection was turned away at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Crowded {
    #[error("too many unauthenticated ingest connections on this origin")]
    Origin,
    #[error("too many unauthenticated ingest connections from this address")]
    Address,
}

impl Crowded {
    /// A short, fixed label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Crowded::Origin => "too_many_unauthenticated",
            Crowded::Address => "too_many_from_address",
        }
    }
}

/// The origin's count of unauthenticated ingest connections.
pub struct Admission {
    config: AdmissionConfig,
    state: Mutex<State>,
    /// Refusals for crowding are logged at most every 10 s (a flood would
    /// otherwise write a line per connection).
    crowded_log: Mutex<Option<Instant>>,
    crowded_unlogged: AtomicU64,
}

#[derive(Default)]
struct State {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    by_transport: [usize; Transport::ALL.len()],
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
            crowded_log: Mutex::new(None),
            crowded_unlogged: AtomicU64::new(0),
        })
    }

    pub fn deadline(&self) -> Duration {
        self.config.deadline()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `peer` until the returned place is
    /// dropped (its push authenticated, or it ended); refuses it when the
    /// origin or its address already has as many as allowed.
    pub fn enter(
        self: &Arc<Self>,
        transport: Transport,
        peer: IpAddr,
    ) -> Result<Unauthenticated, Crowded> {
        let source = source_of(peer);
        let mut state = self.state();
        if state.total >= self.config.max_connections {
            return Err(Crowded::Origin);
        }
        let from_source = state.by_source.entry(source).or_default();
        if *from_source >= self.config.max_connections_per_address {
            return Err(Crowded::Address);
        }
        *from_source += 1;
        state.total += 1;
        state.by_transport[transport as usize] += 1;
        Ok(Unauthenticated {
            admission: self.clone(),
            source,
            transport,
        })
    }

    /// Unauthenticated connections now, over `transport`.
    pub fn count(&self, transport: Transport) -> usize {
        self.state().by_transport[transport as usize]
    }

    /// Logs a crowding refusal, at most once every 10 s with the number
    /// left unlogged since.
    pub fn log_crowded(&self, transport: Transport, crowded: Crowded) {
        let mut last = self.crowded_log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            self.crowded_unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let unlogged = self.crowded_unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            transport = transport.as_str(),
            reason = crowded.label(),
            unlogged,
            max_connections = self.config.max_connections,
            max_connections_per_address = self.config.max_connections_per_address,
            "ingest connection refused: {crowded}"
        );
    }

    /// Adds the gauge of unauthenticated connections to the page.
    pub fn collect(&self, scrape: &strom_relay::metrics::Scrape) {
        let family = scrape.gauge(
            "strom_ingest_unauthenticated_connections",
            "Ingest connections not yet allowed to publish (RTMP before publish, SRT in the handshake).",
            &["protocol"],
        );
        let state = self.state();
        for transport in Transport::ALL {
            family
                .with_label_values(&[transport.as_str()])
                .set(state.by_transport[transport as usize] as f64);
        }
    }
}

/// One unauthenticated connection's place; dropping it frees the place.
pub struct Unauthenticated {
    admission: Arc<Admission>,
    source: IpAddr,
    transport: Transport,
}

impl std::fmt::Debug for Unauthenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unauthenticated")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        state.total = state.total.saturating_sub(1);
        let t = &mut state.by_transport[self.transport as usize];
        *t = t.saturating_sub(1);
        if let Some(n) = state.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                state.by_source.remove(&self.source);
            }
        }
    }
}

/// What one peer counts under: its IPv4 address (also when mapped into
/// IPv6), or its IPv6 /64.
fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_address: usize) -> Arc<Admission> {
        Admission::new(AdmissionConfig {
            deadline_secs: 10,
            max_connections: max,
            max_connections_per_address: per_address,
        })
    }

    #[test]
    fn places_are_bounded_per_address_and_per_origin_and_freed_on_drop() {
        let a = admission(3, 2);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let first = a.enter(Transport::Rtmp, one).unwrap();
        let _second = a.enter(Transport::Srt, one).unwrap();
        assert_eq!(a.enter(Transport::Rtmp, one).unwrap_err(), Crowded::Address);
        let _third = a.enter(Transport::Rtmps, two).unwrap();
        assert_eq!(a.enter(Transport::Rtmp, two).unwrap_err(), Crowded::Origin);
        assert_eq!(
            [Transport::Rtmp, Transport::Rtmps, Transport::Srt].map(|t| a.count(t)),
            [1, 1, 1]
        );
        drop(first);
        assert_eq!(a.count(Transport::Rtmp), 0);
        let _again = a.enter(Transport::Rtmp, one).unwrap();
        let scrape = strom_relay::metrics::Scrape::new();
        a.collect(&scrape);
        assert!(scrape
            .encode()
            .contains("strom_ingest_unauthenticated_connections{protocol=\"srt\"} 1"));
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address_and_mapped_ipv4_as_itself() {
        let a = admission(10, 1);
        let _p = a
            .enter(Transport::Rtmp, "2001:db8:1:2::1".parse().unwrap())
            .unwrap();
        assert_eq!(
            a.enter(Transport::Rtmp, "2001:db8:1:2:ffff::9".parse().unwrap())
                .unwrap_err(),
            Crowded::Address
        );
        let _q = a
            .enter(Transport::Rtmp, "2001:db8:1:3::1".parse().unwrap())
            .unwrap();
        let _v4 = a
            .enter(Transport::Srt, "198.51.100.7".parse().unwrap())
            .unwrap();
        assert_eq!(
            a.enter(Transport::Srt, "::ffff:198.51.100.7".parse().unwrap())
                .unwrap_err(),
            Crowded::Address
        );
    }

    #[test]
    fn bad_limits_are_refused_with_their_key() {
        let bad = AdmissionConfig {
            max_connections_per_address: 300,
            ..AdmissionConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_connections_per_address"));
        let bad = AdmissionConfig {
            deadline_secs: 0,
            ..AdmissionConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("deadline_secs"));
        AdmissionConfig::default().validate().unwrap();
    }
}
