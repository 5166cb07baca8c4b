//! Prometheus text exposition of what a relay does: sessions, subscriptions,
//! and per-track traffic, labelled by namespace and track (never personal data).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::broadcast::{Broadcasts, Namespace};

/// Counters of one MoQT server.
#[derive(Default, Debug)]
pub struct ServerCounters {
    pub sessions_quic: AtomicU64,
    pub sessions_webtransport: AtomicU64,
    pub sessions_active_quic: AtomicU64,
    pub sessions_active_webtransport: AtomicU64,
    pub subscriptions_total: AtomicU64,
    pub subscriptions_refused: AtomicU64,
    pub moqt_objects_out: AtomicU64,
    pub moqt_bytes_out: AtomicU64,
    pub hls_requests: AtomicU64,
    pub hls_bytes: AtomicU64,
    pub upstream_subscriptions: AtomicU64,
    pub upstream_subscriptions_active: AtomicU64,
    /// MoQT sessions refused for want of a valid token.
    pub sessions_refused: AtomicU64,
    /// MoQT requests (SUBSCRIBE, FETCH, …) outside the session token's scope.
    pub requests_refused: AtomicU64,
    /// HLS requests without a valid token for their broadcast.
    pub hls_refused: AtomicU64,
    /// Upstream MoQT sessions connected now.
    pub upstream_sessions_active: AtomicU64,
    /// Players' QoE beacons received here.
    pub qoe: crate::qoe::QoeStore,
    /// Age of live objects on arrival from upstream (their `prft` wall
    /// clock against this relay's).
    pub latency: LatencyHistogram,
    /// MoQT sessions open now with a play token, per (tenant, event): the
    /// viewers here (relays and peer-agents pulling through are not).
    pub viewer_sessions: Mutex<HashMap<(String, String), u64>>,
}

/// Upper bounds (seconds) of the latency buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0];

/// A Prometheus histogram of object latency (cumulative on render).
#[derive(Default, Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 10],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe_micros(&self, us: u64) {
        let secs = us as f64 / 1e6;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observes the time since `produced_unix_us` (clamped at 0 for clocks
    /// slightly ahead).
    pub fn observe_since(&self, produced_unix_us: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.observe_micros(now.saturating_sub(produced_unix_us));
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Decrements the active-session gauge when the session ends.
pub struct SessionGuard {
    counters: Arc<ServerCounters>,
    webtransport: bool,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let gauge = if self.webtransport {
            &self.counters.sessions_active_webtransport
        } else {
            &self.counters.sessions_active_quic
        };
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServerCounters {
    /// Counts a viewer's session of (tenant, event) until the guard drops.
    pub fn viewer_opened(self: &Arc<Self>, tenant: &str, event: &str) -> ViewerGuard {
        let key = (tenant.to_owned(), event.to_owned());
        *self
            .viewer_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        ViewerGuard {
            counters: self.clone(),
            key,
        }
    }

    /// Viewer sessions open now per (tenant, event).
    pub fn viewers(&self) -> HashMap<(String, String), u64> {
        self.viewer_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn session_opened(self: &Arc<Self>, protocol: &str) -> SessionGuard {
        let webtransport = protocol == "webtransport";
        let (total, active) = if webtransport {
            (
                &self.sessions_webtransport,
                &self.sessions_active_webtransport,
            )
        } else {
            (&self.sessions_quic, &self.sessions_active_quic)
        };
        total.fetch_add(1, Ordering::Relaxed);
        active.fetch_add(1, Ordering::Relaxed);
        SessionGuard {
            counters: self.clone(),
            webtransport,
        }
    }
}

/// Holds one viewer session in [`ServerCounters::viewer_sessions`].
pub struct ViewerGuard {
    counters: Arc<ServerCounters>,
    key: (String, String),
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        let mut map = self
            .counters
            .viewer_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The labels every per-broadcast series carries:
/// `tenant="…",event="…",stream="…"` (a namespace's first two fields and
/// the rest; ids, never names of people).
pub fn namespace_labels(ns: &Namespace) -> String {
    let f = ns.fields();
    let get = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
    let stream = f.get(2..).map(|r| r.join("/")).unwrap_or_default();
    format!(
        "tenant=\"{}\",event=\"{}\",stream=\"{}\"",
        escape(get(0)),
        escape(get(1)),
        escape(&stream)
    )
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the counters and per-track figures for `role` ("origin" or "edge").
pub fn render(role: &str, counters: &ServerCounters, broadcasts: &Broadcasts) -> String {
    let mut out = String::new();
    let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{role=\"{role}\"{labels}}} {value}");
        }
    };
    family(
        "strom_moqt_sessions_total",
        "counter",
        "MoQT sessions accepted, by transport.",
        vec![
            (",protocol=\"quic\"".into(), c(&counters.sessions_quic)),
            (
                ",protocol=\"webtransport\"".into(),
                c(&counters.sessions_webtransport),
            ),
        ],
    );
    family(
        "strom_moqt_sessions_active",
        "gauge",
        "MoQT sessions open now, by transport.",
        vec![
            (
                ",protocol=\"quic\"".into(),
                c(&counters.sessions_active_quic),
            ),
            (
                ",protocol=\"webtransport\"".into(),
                c(&counters.sessions_active_webtransport),
            ),
        ],
    );
    let mut viewers: Vec<((String, String), u64)> = counters.viewers().into_iter().collect();
    viewers.sort();
    family(
        "strom_viewer_sessions",
        "gauge",
        "MoQT sessions open now with a play token, by event (relays and peer-agents pulling through are not counted).",
        viewers
            .into_iter()
            .map(|((t, e), n)| {
                (
                    format!(",tenant=\"{}\",event=\"{}\"", escape(&t), escape(&e)),
                    n,
                )
            })
            .collect(),
    );
    family(
        "strom_moqt_subscriptions_refused_total",
        "counter",
        "SUBSCRIBE requests for unknown broadcasts or tracks.",
        vec![(String::new(), c(&counters.subscriptions_refused))],
    );
    family(
        "strom_access_refused_total",
        "counter",
        "Access refused for want of a valid token: MoQT sessions, MoQT requests outside the token's scope, HLS requests.",
        vec![
            (",what=\"moqt_session\"".into(), c(&counters.sessions_refused)),
            (",what=\"moqt_request\"".into(), c(&counters.requests_refused)),
            (",what=\"hls_request\"".into(), c(&counters.hls_refused)),
        ],
    );
    family(
        "strom_moqt_egress_objects_total",
        "counter",
        "Objects handed to MoQT subscribers (all broadcasts; never resets).",
        vec![(String::new(), c(&counters.moqt_objects_out))],
    );
    family(
        "strom_moqt_egress_bytes_total",
        "counter",
        "Object payload bytes handed to MoQT subscribers (all broadcasts; never resets).",
        vec![(String::new(), c(&counters.moqt_bytes_out))],
    );
    family(
        "strom_upstream_subscriptions_total",
        "counter",
        "Track subscriptions this relay opened upstream.",
        vec![(String::new(), c(&counters.upstream_subscriptions))],
    );
    family(
        "strom_upstream_subscriptions_active",
        "gauge",
        "Track subscriptions this relay holds upstream now.",
        vec![(String::new(), c(&counters.upstream_subscriptions_active))],
    );
    family(
        "strom_upstream_sessions_active",
        "gauge",
        "MoQT sessions to upstreams (origin or parent edges) connected now.",
        vec![(String::new(), c(&counters.upstream_sessions_active))],
    );
    family(
        "strom_hls_requests_total",
        "counter",
        "HTTP requests for HLS playlists and media.",
        vec![(String::new(), c(&counters.hls_requests))],
    );
    family(
        "strom_hls_egress_bytes_total",
        "counter",
        "Bytes of HLS playlists and media sent.",
        vec![(String::new(), c(&counters.hls_bytes))],
    );

    let mut per_track: Vec<(String, [u64; 7])> = Vec::new();
    for b in broadcasts.list() {
        for (name, k, track) in b.track_figures() {
            let labels = format!(
                ",{},track=\"{}\"",
                namespace_labels(&b.namespace),
                escape(&name)
            );
            let (readers, cached) = track.map_or((0, 0), |t| {
                (t.reader_count() as u64, t.cached_bytes() as u64)
            });
            per_track.push((
                labels,
                [
                    c(&k.subscriptions),
                    readers,
                    c(&k.objects_in),
                    c(&k.bytes_in),
                    c(&k.bytes_out),
                    cached,
                    c(&k.objects_skipped),
                ],
            ));
        }
    }
    per_track.sort();
    let pick = |i: usize| per_track.iter().map(|(l, v)| (l.clone(), v[i])).collect();
    family(
        "strom_track_subscriptions_total",
        "counter",
        "Downstream MoQT subscriptions accepted per track.",
        pick(0),
    );
    family(
        "strom_track_readers",
        "gauge",
        "Readers (MoQT subscribers) following a track now.",
        pick(1),
    );
    family(
        "strom_track_objects_in_total",
        "counter",
        "Objects stored per track.",
        pick(2),
    );
    family(
        "strom_track_ingress_bytes_total",
        "counter",
        "Object bytes stored per track.",
        pick(3),
    );
    family(
        "strom_track_egress_bytes_total",
        "counter",
        "Object bytes handed to MoQT subscribers per track.",
        pick(4),
    );
    family(
        "strom_track_cache_bytes",
        "gauge",
        "Bytes held in the group cache per track.",
        pick(5),
    );
    family(
        "strom_track_reader_skips_total",
        "counter",
        "Times a slow reader fell behind the cache and skipped ahead.",
        pick(6),
    );
    counters.latency.render(
        "strom_upstream_object_latency_seconds",
        "Age of live objects when they arrive from upstream, from the origin's ingest clock (prft).",
        &mut out,
    );
    out.push_str(&counters.qoe.render(role));
    out
}

/// CPU seconds and resident memory of this process (Linux `/proc/self`),
/// in the standard Prometheus process metric names.
pub fn render_process() -> String {
    let mut out = String::new();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces) start at ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat; 12 and 13 after ')'.
            let ticks: f64 = [11, 12]
                .iter()
                .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
                .sum();
            let hz = 100.0; // USER_HZ is 100 on Linux.
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total User and system CPU time spent."
            );
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
            let _ = writeln!(out, "process_cpu_seconds_total {}", ticks / hz);
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(pages) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size."
            );
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes {}", pages * 4096);
        }
    }
    out
}

/// Reads back the exposition: sums `name` over the series whose labels
/// contain every `(key, value)` of `labels` (tests and load tools use it).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let Some((label_text, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let matches = labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        if let (true, Ok(v)) = (matches, value.trim().parse::<f64>()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_reads_back_what_render_writes() {
        let counters = ServerCounters::default();
        counters
            .subscriptions_refused
            .fetch_add(3, Ordering::Relaxed);
        let text = render("edge", &counters, &Broadcasts::default());
        assert_eq!(
            sum(&text, "strom_moqt_subscriptions_refused_total", &[]),
            Some(3.0)
        );
        assert_eq!(
            sum(&text, "strom_moqt_sessions_total", &[("protocol", "quic")]),
            Some(0.0)
        );
        assert_eq!(sum(&text, "strom_no_such_metric", &[]), None);
        // A name that is a prefix of another must not match it.
        assert_eq!(sum(&text, "strom_moqt_sessions", &[]), None);
    }
}
