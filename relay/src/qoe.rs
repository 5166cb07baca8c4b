//! Quality-of-experience beacons from players (OPS-5), aggregated per event
//! and transport into `/metrics`: start-up time and latency to live as
//! histograms, watch and stall time, stalls, media received. A beacon names
//! no viewer; it carries the playback token so that only viewers of a
//! broadcast this relay serves can report on it (and no one can grow the
//! label set at will).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{HistogramOpts, HistogramVec};
use serde::Deserialize;

use crate::metrics::Scrape;
use crate::Role;

/// What a player sends (`POST /qoe`, JSON, at most [`MAX_BEACON_BYTES`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    pub v: u8,
    /// `tenant/event/stream`.
    pub ns: String,
    #[serde(default)]
    pub token: Option<String>,
    pub transport: String,
    pub first_frame_ms: Option<u64>,
    pub watch_ms: u64,
    pub stall_ms: u64,
    pub stalls: u32,
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub bitrate_bps: u64,
}

pub(crate) const MAX_BEACON_BYTES: usize = 4096;
/// Players beacon every 10 s; more than this per beacon is not believable.
const MAX_WATCH_MS: u64 = 120_000;

impl Beacon {
    /// Parses and checks a beacon; the error says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Beacon, String> {
        if body.len() > MAX_BEACON_BYTES {
            return Err("beacon too large".into());
        }
        let b: Beacon = serde_json::from_slice(body).map_err(|e| format!("bad beacon: {e}"))?;
        if b.v != 1 {
            return Err(format!("beacon version {} is not known", b.v));
        }
        if !matches!(b.transport.as_str(), "webtransport" | "hls") {
            return Err("transport must be webtransport or hls".into());
        }
        if b.watch_ms > MAX_WATCH_MS || b.stall_ms > b.watch_ms || b.stalls > 1_000 {
            return Err("figures out of range".into());
        }
        if b.first_frame_ms.is_some_and(|v| v > 600_000)
            || b.latency_ms.is_some_and(|v| v > 600_000)
        {
            return Err("figures out of range".into());
        }
        if b.bitrate_bps > 1_000_000_000 {
            return Err("figures out of range".into());
        }
        Ok(b)
    }

    /// The namespace's fields (three, or an error).
    pub fn namespace(&self) -> Result<Vec<&str>, String> {
        let f: Vec<&str> = self.ns.split('/').collect();
        if f.len() != 3 || f.iter().any(|s| s.is_empty()) {
            return Err("ns must be tenant/event/stream".into());
        }
        Ok(f)
    }
}

const STARTUP_BUCKETS: [f64; 8] = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];
const LATENCY_BUCKETS: [f64; 9] = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];
const LABELS: [&str; 3] = ["tenant", "event", "transport"];

#[derive(Debug, Default, Clone)]
struct Figures {
    beacons: u64,
    watch_ms: u64,
    stall_ms: u64,
    stalls: u64,
    media_bytes: f64,
}

/// Aggregates per (tenant, event, transport).
#[derive(Debug)]
pub struct QoeStore {
    role: Role,
    map: Mutex<BTreeMap<(String, String, String), Figures>>,
    startup: HistogramVec,
    latency: HistogramVec,
}

fn histogram(role: Role, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help)
        .const_label("role", role.as_str())
        .buckets(buckets.to_vec());
    HistogramVec::new(opts, &LABELS).expect("a valid histogram")
}

impl QoeStore {
    pub fn new(role: Role) -> QoeStore {
        QoeStore {
            role,
            map: Mutex::default(),
            startup: histogram(
                role,
                "strom_qoe_startup_seconds",
                "Time from start to the first frame shown.",
                &STARTUP_BUCKETS,
            ),
            latency: histogram(
                role,
                "strom_qoe_latency_seconds",
                "Latency to live players reported.",
                &LATENCY_BUCKETS,
            ),
        }
    }

    pub fn add(&self, b: &Beacon) {
        let Ok(ns) = b.namespace() else { return };
        let labels = [ns[0], ns[1], b.transport.as_str()];
        let key = (ns[0].to_owned(), ns[1].to_owned(), b.transport.clone());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.entry(key).or_default();
        f.beacons += 1;
        f.watch_ms += b.watch_ms;
        f.stall_ms += b.stall_ms;
        f.stalls += u64::from(b.stalls);
        f.media_bytes += b.bitrate_bps as f64 / 8.0 * b.watch_ms as f64 / 1000.0;
        if let Some(ms) = b.first_frame_ms {
            self.startup
                .with_label_values(&labels)
                .observe(ms as f64 / 1000.0);
        }
        if let Some(ms) = b.latency_ms {
            self.latency
                .with_label_values(&labels)
                .observe(ms as f64 / 1000.0);
        }
    }

    /// Cumulative figures per (tenant, event), over every transport.
    pub fn totals(&self) -> BTreeMap<(String, String), crate::control_plane::QoeSums> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<(String, String), crate::control_plane::QoeSums> = BTreeMap::new();
        for ((t, e, tr), f) in map.iter() {
            let latency = self.latency.with_label_values(&[t, e, tr]);
            out.entry((t.clone(), e.clone()))
                .or_default()
                .add(&crate::control_plane::QoeSums {
                    beacons: f.beacons,
                    watch_seconds: f.watch_ms as f64 / 1000.0,
                    stall_seconds: f.stall_ms as f64 / 1000.0,
                    stalls: f.stalls,
                    latency_seconds_sum: latency.get_sample_sum(),
                    latency_samples: latency.get_sample_count(),
                });
        }
        out
    }

    /// Adds every family to a relay's page (with the relay's role).
    pub fn collect(&self, scrape: &Scrape) {
        let scrape = scrape.relay(self.role);
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
        type Field = fn(&Figures) -> f64;
        let counters: [(&str, &str, Field); 5] = [
            ("strom_qoe_beacons_total", "Player QoE beacons received.", |f| {
                f.beacons as f64
            }),
            (
                "strom_qoe_watch_seconds_total",
                "Time viewers watched (playing or stalled).",
                |f| f.watch_ms as f64 / 1000.0,
            ),
            (
                "strom_qoe_stall_seconds_total",
                "Time viewers' playback was stalled (stall ratio: this over watch seconds).",
                |f| f.stall_ms as f64 / 1000.0,
            ),
            ("strom_qoe_stalls_total", "Stalls viewers saw.", |f| {
                f.stalls as f64
            }),
            (
                "strom_qoe_media_bytes_total",
                "Media bytes viewers received, from their players' bitrate (rate × 8 over viewers: average bitrate).",
                |f| f.media_bytes.round(),
            ),
        ];
        for (name, help, value) in counters {
            let family = scrape.counter(name, help, &LABELS);
            for ((t, e, tr), f) in &map {
                family.with_label_values(&[t, e, tr]).inc_by(value(f));
            }
        }
        scrape.add(self.startup.clone());
        scrape.add(self.latency.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"v":1,"ns":"acme/townhall/main","token":"t","transport":"webtransport","first_frame_ms":800,"watch_ms":10000,"stall_ms":300,"stalls":1,"latency_ms":420,"bitrate_bps":2500000}"#;

    #[test]
    fn beacons_aggregate_per_event_and_transport() {
        let store = QoeStore::new(Role::Edge);
        let b = Beacon::parse(GOOD.as_bytes()).unwrap();
        store.add(&b);
        store.add(&b);
        let scrape = Scrape::new();
        store.collect(&scrape);
        let text = scrape.encode();
        let l = [
            ("role", "edge"),
            ("tenant", "acme"),
            ("event", "townhall"),
            ("transport", "webtransport"),
        ];
        let get = |name: &str, extra: &[(&str, &str)]| {
            let labels: Vec<_> = l.iter().chain(extra).copied().collect();
            crate::metrics::sum(&text, name, &labels)
        };
        assert_eq!(get("strom_qoe_beacons_total", &[]), Some(2.0), "{text}");
        assert_eq!(get("strom_qoe_stall_seconds_total", &[]), Some(0.6));
        assert_eq!(
            get("strom_qoe_startup_seconds_bucket", &[("le", "1")]),
            Some(2.0)
        );
        assert_eq!(
            get("strom_qoe_startup_seconds_bucket", &[("le", "0.5")]),
            Some(0.0)
        );
        assert_eq!(get("strom_qoe_latency_seconds_count", &[]), Some(2.0));
        let totals = store.totals();
        let t = &totals[&("acme".to_owned(), "townhall".to_owned())];
        assert_eq!((t.beacons, t.latency_samples), (2, 2));
        assert!((t.latency_seconds_sum - 0.84).abs() < 1e-9);
    }

    #[test]
    fn bad_beacons_are_refused_with_a_reason() {
        for bad in [
            GOOD.replace("\"v\":1", "\"v\":2"),
            GOOD.replace("webtransport", "rtmp"),
            GOOD.replace("\"stall_ms\":300", "\"stall_ms\":30000"),
            GOOD.replace("\"watch_ms\":10000", "\"watch_ms\":9999999"),
            GOOD.replace("}", ",\"user\":\"alice\"}"),
            "not json".into(),
            "x".repeat(5000),
        ] {
            assert!(Beacon::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let b = Beacon::parse(
            GOOD.replace("acme/townhall/main", "acme/townhall")
                .as_bytes(),
        )
        .unwrap();
        assert!(b.namespace().is_err());
    }
}
