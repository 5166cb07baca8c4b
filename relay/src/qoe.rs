//! Quality-of-experience beacons from players (OPS-5), aggregated per event
//! and transport into `/metrics`: start-up time and latency to live as
//! histograms, watch and stall time, stalls, media received. A beacon names
//! no viewer; it carries the playback token so that only viewers of a
//! broadcast this relay serves can report on it (and no one can grow the
//! label set at will).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use serde::Deserialize;

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

pub const MAX_BEACON_BYTES: usize = 4096;
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

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let mut cumulative = 0;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default, Clone)]
struct Figures {
    beacons: u64,
    watch_ms: u64,
    stall_ms: u64,
    stalls: u64,
    media_bytes: f64,
    startup: Histogram,
    latency: Histogram,
}

/// Aggregates per (tenant, event, transport).
#[derive(Debug, Default)]
pub struct QoeStore {
    map: Mutex<BTreeMap<(String, String, String), Figures>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl QoeStore {
    pub fn add(&self, b: &Beacon) {
        let Ok(ns) = b.namespace() else { return };
        let key = (ns[0].to_owned(), ns[1].to_owned(), b.transport.clone());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.entry(key).or_default();
        f.beacons += 1;
        f.watch_ms += b.watch_ms;
        f.stall_ms += b.stall_ms;
        f.stalls += u64::from(b.stalls);
        f.media_bytes += b.bitrate_bps as f64 / 8.0 * b.watch_ms as f64 / 1000.0;
        if let Some(ms) = b.first_frame_ms {
            f.startup.observe(&STARTUP_BUCKETS, ms as f64 / 1000.0);
        }
        if let Some(ms) = b.latency_ms {
            f.latency.observe(&LATENCY_BUCKETS, ms as f64 / 1000.0);
        }
    }

    /// Cumulative figures per (tenant, event), over every transport.
    pub fn totals(&self) -> BTreeMap<(String, String), crate::control_plane::QoeSums> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<(String, String), crate::control_plane::QoeSums> = BTreeMap::new();
        for ((t, e, _), f) in map.iter() {
            out.entry((t.clone(), e.clone()))
                .or_default()
                .add(&crate::control_plane::QoeSums {
                    beacons: f.beacons,
                    watch_seconds: f.watch_ms as f64 / 1000.0,
                    stall_seconds: f.stall_ms as f64 / 1000.0,
                    stalls: f.stalls,
                    latency_seconds_sum: f.latency.sum,
                    latency_samples: f.latency.count,
                });
        }
        out
    }

    /// Prometheus text for every family (headers even when empty).
    pub fn render(&self, role: &str) -> String {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let labels = |(t, e, tr): &(String, String, String)| {
            format!(
                "role=\"{role}\",tenant=\"{}\",event=\"{}\",transport=\"{}\"",
                escape(t),
                escape(e),
                escape(tr)
            )
        };
        let mut out = String::new();
        type Field = fn(&Figures) -> String;
        let counters: [(&str, &str, Field); 5] = [
            ("strom_qoe_beacons_total", "Player QoE beacons received.", |f| {
                f.beacons.to_string()
            }),
            (
                "strom_qoe_watch_seconds_total",
                "Time viewers watched (playing or stalled).",
                |f| format!("{}", f.watch_ms as f64 / 1000.0),
            ),
            (
                "strom_qoe_stall_seconds_total",
                "Time viewers' playback was stalled (stall ratio: this over watch seconds).",
                |f| format!("{}", f.stall_ms as f64 / 1000.0),
            ),
            ("strom_qoe_stalls_total", "Stalls viewers saw.", |f| {
                f.stalls.to_string()
            }),
            (
                "strom_qoe_media_bytes_total",
                "Media bytes viewers received, from their players' bitrate (rate × 8 over viewers: average bitrate).",
                |f| format!("{}", f.media_bytes.round()),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, f) in &map {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(k), value(f));
            }
        }
        let _ = writeln!(out, "# HELP strom_qoe_startup_seconds Time from start to the first frame shown.\n# TYPE strom_qoe_startup_seconds histogram");
        for (k, f) in &map {
            f.startup.render(
                &mut out,
                "strom_qoe_startup_seconds",
                &labels(k),
                &STARTUP_BUCKETS,
            );
        }
        let _ = writeln!(out, "# HELP strom_qoe_latency_seconds Latency to live players reported.\n# TYPE strom_qoe_latency_seconds histogram");
        for (k, f) in &map {
            f.latency.render(
                &mut out,
                "strom_qoe_latency_seconds",
                &labels(k),
                &LATENCY_BUCKETS,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"v":1,"ns":"acme/townhall/main","token":"t","transport":"webtransport","first_frame_ms":800,"watch_ms":10000,"stall_ms":300,"stalls":1,"latency_ms":420,"bitrate_bps":2500000}"#;

    #[test]
    fn beacons_aggregate_per_event_and_transport() {
        let store = QoeStore::default();
        let b = Beacon::parse(GOOD.as_bytes()).unwrap();
        store.add(&b);
        store.add(&b);
        let text = store.render("edge");
        let l = r#"role="edge",tenant="acme",event="townhall",transport="webtransport""#;
        assert!(
            text.contains(&format!("strom_qoe_beacons_total{{{l}}} 2")),
            "{text}"
        );
        assert!(text.contains(&format!("strom_qoe_stall_seconds_total{{{l}}} 0.6")));
        assert!(text.contains(&format!(
            "strom_qoe_startup_seconds_bucket{{{l},le=\"1\"}} 2"
        )));
        assert!(text.contains(&format!("strom_qoe_latency_seconds_count{{{l}}} 2")));
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
