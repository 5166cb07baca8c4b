//! The run's result: what the viewers measured and what the edge's own
//! counters say, as JSON and as a table for people.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::edge_metrics::Sample;
use crate::histogram::Snapshot;
use crate::stats::TrackSnapshot;

/// p50/p99/max of a latency histogram, milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl From<&Snapshot> for Latency {
    fn from(s: &Snapshot) -> Latency {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            samples: s.count,
            p50_ms: s.quantile(0.5).map(ms),
            p99_ms: s.quantile(0.99).map(ms),
            max_ms: (s.count > 0).then(|| ms(s.max)),
            mean_ms: s.mean().map(|m| m / 1000.0),
        }
    }
}

/// What one transport delivered on one track (or all tracks).
#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    /// Objects (MoQT) or parts (HLS).
    pub objects: u64,
    pub bytes: u64,
    pub mbit_per_s: f64,
    /// Lost in total: missing inside groups plus missing groups times the
    /// average group size.
    pub lost_objects: u64,
    pub lost_inside_groups: u64,
    pub group_gaps: u64,
    pub objects_per_group: Option<f64>,
    pub latency: Latency,
    /// Without the catch-up each MoQT subscription starts with.
    pub latency_live: Latency,
    /// HLS: receipt minus the wall clock of a part's last chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_last_chunk: Option<Latency>,
    pub no_prft: u64,
    pub negative_latencies: u64,
    pub stream_errors: u64,
}

impl Delivery {
    pub fn new(s: &TrackSnapshot, secs: f64, hls: bool) -> Delivery {
        Delivery {
            objects: s.objects,
            bytes: s.bytes,
            mbit_per_s: s.bytes as f64 * 8.0 / 1e6 / secs.max(1e-9),
            lost_objects: s.lost_total(),
            lost_inside_groups: s.lost_objects,
            group_gaps: s.group_gaps,
            objects_per_group: s.objects_per_group(),
            latency: (&s.latency).into(),
            latency_live: (&s.latency_live).into(),
            latency_last_chunk: hls.then(|| (&s.latency_last).into()),
            no_prft: s.no_prft,
            negative_latencies: s.negative,
            stream_errors: s.stream_errors,
        }
    }

    /// Totals over tracks; lost objects are summed per track (each with its
    /// own group size).
    pub fn total(tracks: &[TrackSnapshot], secs: f64, hls: bool) -> Delivery {
        let mut all = TrackSnapshot::default();
        for t in tracks {
            all.merge(t);
        }
        let mut d = Delivery::new(&all, secs, hls);
        d.lost_objects = tracks.iter().map(TrackSnapshot::lost_total).sum();
        d.objects_per_group = None;
        d
    }
}

#[derive(Debug, Serialize)]
pub struct MoqtReport {
    pub subscribers: usize,
    pub sessions: u64,
    pub connect_failures: u64,
    pub subscribe_failures: u64,
    pub session_errors: u64,
    pub rejoins: u64,
    pub join_time: Latency,
    pub total: Delivery,
    pub tracks: BTreeMap<String, Delivery>,
}

#[derive(Debug, Serialize)]
pub struct HlsReport {
    pub clients: usize,
    pub playlist_requests: u64,
    pub part_requests: u64,
    pub http_errors: u64,
    pub resyncs: u64,
    pub total: Delivery,
    pub tracks: BTreeMap<String, Delivery>,
}

/// The edge's counters over the run.
#[derive(Debug, Default, Serialize)]
pub struct EdgeReport {
    pub moqt_egress_bytes: Option<f64>,
    pub hls_egress_bytes: Option<f64>,
    pub egress_mbit_per_s: Option<f64>,
    pub cpu_seconds: Option<f64>,
    /// Mean CPU use over the run, in cores.
    pub cpu_cores: Option<f64>,
    pub cpu_seconds_per_gb: Option<f64>,
    pub rss_start_bytes: Option<f64>,
    pub rss_end_bytes: Option<f64>,
    pub rss_min_bytes: Option<f64>,
    pub rss_max_bytes: Option<f64>,
    /// Over the second half of the run only, when caches are warm: a flat
    /// edge keeps these close together however long the run.
    pub rss_late_min_bytes: Option<f64>,
    pub rss_late_max_bytes: Option<f64>,
    pub reader_skips: Option<f64>,
    pub samples: Vec<Sample>,
}

impl EdgeReport {
    /// From the scrape before the load, those during, and the one after.
    pub fn new(before: &Sample, during: &[Sample], after: &Sample, secs: f64) -> EdgeReport {
        let delta = |f: fn(&Sample) -> Option<f64>| Some((f(after)? - f(before)?).max(0.0));
        // Per-track series appear with the first subscriber: absent before is 0.
        let counter =
            |f: fn(&Sample) -> Option<f64>| Some((f(after)? - f(before).unwrap_or(0.0)).max(0.0));
        let moqt = counter(|s| s.moqt_egress_bytes);
        let hls = delta(|s| s.hls_egress_bytes);
        let egress = match (moqt, hls) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        let cpu = delta(|s| s.cpu_seconds);
        let mut samples = vec![before.clone()];
        samples.extend(during.iter().cloned());
        samples.push(after.clone());
        let rss: Vec<f64> = samples.iter().filter_map(|s| s.rss_bytes).collect();
        let half = (after.at_secs + before.at_secs) / 2.0;
        let late: Vec<f64> = samples
            .iter()
            .filter(|s| s.at_secs >= half)
            .filter_map(|s| s.rss_bytes)
            .collect();
        EdgeReport {
            moqt_egress_bytes: moqt,
            hls_egress_bytes: hls,
            egress_mbit_per_s: egress.map(|b| b * 8.0 / 1e6 / secs.max(1e-9)),
            cpu_seconds: cpu,
            cpu_cores: cpu.map(|c| c / secs.max(1e-9)),
            cpu_seconds_per_gb: match (cpu, egress) {
                (Some(c), Some(b)) if b > 0.0 => Some(c / (b / 1e9)),
                _ => None,
            },
            rss_start_bytes: before.rss_bytes,
            rss_end_bytes: after.rss_bytes,
            rss_min_bytes: rss.iter().copied().reduce(f64::min),
            rss_max_bytes: rss.iter().copied().reduce(f64::max),
            rss_late_min_bytes: late.iter().copied().reduce(f64::min),
            rss_late_max_bytes: late.iter().copied().reduce(f64::max),
            reader_skips: counter(|s| s.reader_skips),
            samples,
        }
    }
}

/// The load generator's own cost (it shares the machine with the edge).
#[derive(Debug, Default, Serialize)]
pub struct SelfReport {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub edge_moq: String,
    pub edge_http: String,
    pub namespace: String,
    pub duration_secs: f64,
    pub ramp_secs: f64,
    pub churn: bool,
    /// Seconds between the scrapes before and after the load.
    pub measured_secs: f64,
    pub moqt: MoqtReport,
    pub hls: HlsReport,
    pub edge: EdgeReport,
    pub load_generator: SelfReport,
}

/// CPU seconds and RSS of this process, from `/proc/self`.
pub fn self_usage() -> SelfReport {
    let mut r = SelfReport::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = [11, 12]
                .iter()
                .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
                .sum();
            r.cpu_seconds = Some(ticks / 100.0);
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        r.rss_bytes = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|p| p * 4096.0);
    }
    r
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

fn mib(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{:.1} MiB", v / 1_048_576.0))
}

fn delivery_row(out: &mut String, label: &str, d: &Delivery) {
    let _ = writeln!(
        out,
        "  {label:<12} {:>9} {:>10.1} {:>8.2} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        d.objects,
        d.bytes as f64 / 1e6,
        d.mbit_per_s,
        d.lost_objects,
        d.group_gaps,
        opt(d.latency.p50_ms, 1),
        opt(d.latency.p99_ms, 1),
        opt(d.latency.max_ms, 1),
        opt(d.latency_live.p50_ms, 1),
        opt(d.latency_live.p99_ms, 1),
    );
}

/// The report as a table for a terminal.
pub fn human(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "strom-load: {} over {:.1} s (ramp {:.0} s{}), {} MoQT subscribers, {} HLS clients",
        r.namespace,
        r.measured_secs,
        r.ramp_secs,
        if r.churn { ", churn" } else { "" },
        r.moqt.subscribers,
        r.hls.clients
    );
    let _ = writeln!(
        out,
        "\n  {:<12} {:>9} {:>10} {:>8} {:>7} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "delivery",
        "objects",
        "MB",
        "Mbit/s",
        "lost",
        "gaps",
        "p50 ms",
        "p99 ms",
        "max ms",
        "live p50",
        "live p99"
    );
    for (transport, total, tracks) in [
        ("moqt", &r.moqt.total, &r.moqt.tracks),
        ("hls", &r.hls.total, &r.hls.tracks),
    ] {
        delivery_row(&mut out, transport, total);
        for (name, d) in tracks {
            delivery_row(&mut out, &format!(" {transport}/{name}"), d);
        }
    }
    let m = &r.moqt;
    let _ = writeln!(
        out,
        "\n  MoQT: {} sessions, {} connect failures, {} subscribe failures, {} session errors, {} rejoins; join p50 {} ms p99 {} ms",
        m.sessions,
        m.connect_failures,
        m.subscribe_failures,
        m.session_errors,
        m.rejoins,
        opt(m.join_time.p50_ms, 0),
        opt(m.join_time.p99_ms, 0)
    );
    let h = &r.hls;
    let last = h.total.latency_last_chunk.as_ref();
    let _ = writeln!(
        out,
        "  HLS:  {} playlist and {} part requests, {} errors, {} resyncs; last-chunk latency p50 {} ms p99 {} ms",
        h.playlist_requests,
        h.part_requests,
        h.http_errors,
        h.resyncs,
        opt(last.and_then(|l| l.p50_ms), 1),
        opt(last.and_then(|l| l.p99_ms), 1)
    );
    let e = &r.edge;
    let _ = writeln!(
        out,
        "  edge: egress MoQT {} MB + HLS {} MB ({} Mbit/s); CPU {} s ({} cores), {} CPU-s/GB; reader skips {}",
        opt(e.moqt_egress_bytes.map(|b| b / 1e6), 1),
        opt(e.hls_egress_bytes.map(|b| b / 1e6), 1),
        opt(e.egress_mbit_per_s, 1),
        opt(e.cpu_seconds, 2),
        opt(e.cpu_cores, 2),
        opt(e.cpu_seconds_per_gb, 2),
        opt(e.reader_skips, 0)
    );
    let _ = writeln!(
        out,
        "  edge RSS: start {}, end {}, min {}, max {}; second half {}..{} ({} samples)",
        mib(e.rss_start_bytes),
        mib(e.rss_end_bytes),
        mib(e.rss_min_bytes),
        mib(e.rss_max_bytes),
        mib(e.rss_late_min_bytes),
        mib(e.rss_late_max_bytes),
        e.samples.len()
    );
    let _ = writeln!(
        out,
        "  strom-load itself: CPU {} s, RSS {}",
        opt(r.load_generator.cpu_seconds, 2),
        mib(r.load_generator.rss_bytes)
    );
    out
}
