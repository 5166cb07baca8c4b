//! What a relay counts (sessions, subscriptions, per-track traffic, labelled
//! by namespace and track, never personal data) and the [`Scrape`] that
//! turns it into Prometheus text through the `prometheus` crate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{CounterVec, GaugeVec, Histogram, HistogramOpts, Opts, Registry, TextEncoder};

use crate::broadcast::{Broadcasts, Namespace};
use crate::Role;

/// Counters of one MoQT server.
#[derive(Debug)]
pub struct ServerCounters {
    role: Role,
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
    /// clock against this relay's), in seconds.
    pub latency: Histogram,
    /// MoQT sessions open now with a play token, per (tenant, event): the
    /// viewers here (relays and peer-agents pulling through are not).
    pub viewer_sessions: Mutex<HashMap<(String, String), u64>>,
}

/// Upper bounds (seconds) of the latency buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0];

/// Observes the time since `produced_unix_us` (clamped at 0 for clocks
/// slightly ahead) in a histogram of seconds.
pub fn observe_since(histogram: &Histogram, produced_unix_us: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    histogram.observe(now.saturating_sub(produced_unix_us) as f64 / 1e6);
}

/// One `/metrics` page being built: families filled from live figures when
/// the page is asked for, and long-lived collectors (histograms, the
/// process), all written in the text format 0.0.4 by the `prometheus`
/// crate. A family without a series is left out, as Prometheus clients do;
/// label values from a fixed set are filled with 0 by their owners.
#[derive(Clone, Default)]
pub struct Scrape {
    registry: Registry,
    role: Option<&'static str>,
}

impl Scrape {
    pub fn new() -> Scrape {
        Scrape::default()
    }

    /// The same page, with `role` on every family made from the copy.
    pub fn relay(&self, role: Role) -> Scrape {
        Scrape {
            registry: self.registry.clone(),
            role: Some(role.as_str()),
        }
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        let opts = Opts::new(name, help);
        match self.role {
            Some(role) => opts.const_label("role", role),
            None => opts,
        }
    }

    /// A counter family with these labels.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        let family = CounterVec::new(self.opts(name, help), labels).expect("a valid family");
        self.add(family.clone());
        family
    }

    /// A gauge family with these labels.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        let family = GaugeVec::new(self.opts(name, help), labels).expect("a valid family");
        self.add(family.clone());
        family
    }

    /// A counter with one series and no labels.
    pub fn count(&self, name: &str, help: &str, value: u64) {
        self.counter(name, help, &[])
            .with_label_values(NO_LABELS)
            .inc_by(value as f64);
    }

    /// A gauge with one series and no labels.
    pub fn level(&self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, &[])
            .with_label_values(NO_LABELS)
            .set(value);
    }

    /// A collector that lives longer than the page (a histogram).
    pub fn add(&self, collector: impl Collector + 'static) {
        if let Err(e) = self.registry.register(Box::new(collector)) {
            // Two families of one name: a bug, found by the tests that read
            // every page.
            tracing::error!(error = %e, "metric family left out");
            debug_assert!(false, "metric family left out: {e}");
        }
    }

    /// The page.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "metrics could not be encoded");
                String::new()
            })
    }
}

/// Label values of a series without labels.
pub const NO_LABELS: &[&str] = &[];

/// `tenant`, `event` and `stream` of a namespace: its first two fields and
/// the rest (ids, never names of people).
pub fn namespace_values(ns: &Namespace) -> [String; 3] {
    let f = ns.fields();
    let get = |i: usize| f.get(i).cloned().unwrap_or_default();
    let stream = f.get(2..).map(|r| r.join("/")).unwrap_or_default();
    [get(0), get(1), stream]
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
    pub fn new(role: Role) -> ServerCounters {
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "strom_upstream_object_latency_seconds",
                "Age of live objects when they arrive from upstream, from the origin's ingest clock (prft).",
            )
            .const_label("role", role.as_str())
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("a valid histogram");
        ServerCounters {
            role,
            sessions_quic: AtomicU64::default(),
            sessions_webtransport: AtomicU64::default(),
            sessions_active_quic: AtomicU64::default(),
            sessions_active_webtransport: AtomicU64::default(),
            subscriptions_total: AtomicU64::default(),
            subscriptions_refused: AtomicU64::default(),
            moqt_objects_out: AtomicU64::default(),
            moqt_bytes_out: AtomicU64::default(),
            hls_requests: AtomicU64::default(),
            hls_bytes: AtomicU64::default(),
            upstream_subscriptions: AtomicU64::default(),
            upstream_subscriptions_active: AtomicU64::default(),
            sessions_refused: AtomicU64::default(),
            requests_refused: AtomicU64::default(),
            hls_refused: AtomicU64::default(),
            upstream_sessions_active: AtomicU64::default(),
            qoe: crate::qoe::QoeStore::new(role),
            latency,
            viewer_sessions: Mutex::default(),
        }
    }

    /// The relay these counters belong to.
    pub fn role(&self) -> Role {
        self.role
    }

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

/// The whole `/metrics` page of a relay: its counters, per-track figures
/// and the process; `extra` adds the families of the service around it.
pub fn page(
    counters: &ServerCounters,
    broadcasts: &Broadcasts,
    extra: impl FnOnce(&Scrape),
) -> String {
    let scrape = Scrape::new();
    collect(&scrape.relay(counters.role), counters, broadcasts);
    #[cfg(target_os = "linux")]
    scrape.add(prometheus::process_collector::ProcessCollector::for_self());
    extra(&scrape);
    scrape.encode()
}

/// Adds the counters and per-track figures to a relay's page.
fn collect(scrape: &Scrape, counters: &ServerCounters, broadcasts: &Broadcasts) {
    let c = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64;
    let by_protocol = |family: Figure, quic: &AtomicU64, wt: &AtomicU64| {
        family.set("quic", c(quic));
        family.set("webtransport", c(wt));
    };
    by_protocol(
        Figure::new(
            scrape,
            "strom_moqt_sessions_total",
            "MoQT sessions accepted, by transport.",
            true,
            &["protocol"],
        ),
        &counters.sessions_quic,
        &counters.sessions_webtransport,
    );
    by_protocol(
        Figure::new(
            scrape,
            "strom_moqt_sessions_active",
            "MoQT sessions open now, by transport.",
            false,
            &["protocol"],
        ),
        &counters.sessions_active_quic,
        &counters.sessions_active_webtransport,
    );
    let viewers = scrape.gauge(
        "strom_viewer_sessions",
        "MoQT sessions open now with a play token, by event (relays and peer-agents pulling through are not counted).",
        &["tenant", "event"],
    );
    for ((tenant, event), n) in counters.viewers() {
        viewers.with_label_values(&[&tenant, &event]).set(n as f64);
    }
    scrape.count(
        "strom_moqt_subscriptions_refused_total",
        "SUBSCRIBE requests for unknown broadcasts or tracks.",
        c(&counters.subscriptions_refused) as u64,
    );
    let refused = scrape.counter(
        "strom_access_refused_total",
        "Access refused for want of a valid token: MoQT sessions, MoQT requests outside the token's scope, HLS requests.",
        &["what"],
    );
    for (what, v) in [
        ("moqt_session", &counters.sessions_refused),
        ("moqt_request", &counters.requests_refused),
        ("hls_request", &counters.hls_refused),
    ] {
        refused.with_label_values(&[what]).inc_by(c(v));
    }
    // (name, help, figure, counter: false for a gauge)
    let unlabelled: [(&str, &str, &AtomicU64, bool); 7] = [
        (
            "strom_moqt_egress_objects_total",
            "Objects handed to MoQT subscribers (all broadcasts; never resets).",
            &counters.moqt_objects_out,
            true,
        ),
        (
            "strom_moqt_egress_bytes_total",
            "Object payload bytes handed to MoQT subscribers (all broadcasts; never resets).",
            &counters.moqt_bytes_out,
            true,
        ),
        (
            "strom_upstream_subscriptions_total",
            "Track subscriptions this relay opened upstream.",
            &counters.upstream_subscriptions,
            true,
        ),
        (
            "strom_upstream_subscriptions_active",
            "Track subscriptions this relay holds upstream now.",
            &counters.upstream_subscriptions_active,
            false,
        ),
        (
            "strom_upstream_sessions_active",
            "MoQT sessions to upstreams (origin or parent edges) connected now.",
            &counters.upstream_sessions_active,
            false,
        ),
        (
            "strom_hls_requests_total",
            "HTTP requests for HLS playlists and media.",
            &counters.hls_requests,
            true,
        ),
        (
            "strom_hls_egress_bytes_total",
            "Bytes of HLS playlists and media sent.",
            &counters.hls_bytes,
            true,
        ),
    ];
    for (name, help, v, counter) in unlabelled {
        if counter {
            scrape.count(name, help, c(v) as u64);
        } else {
            scrape.level(name, help, c(v));
        }
    }

    let labels = ["tenant", "event", "stream", "track"];
    type Family = (&'static str, &'static str, bool);
    let families: [Family; 8] = [
        (
            "strom_track_subscriptions_total",
            "Downstream MoQT subscriptions accepted per track.",
            true,
        ),
        (
            "strom_track_readers",
            "Readers (MoQT subscribers) following a track now.",
            false,
        ),
        (
            "strom_track_objects_in_total",
            "Objects stored per track.",
            true,
        ),
        (
            "strom_track_ingress_bytes_total",
            "Object bytes stored per track.",
            true,
        ),
        (
            "strom_track_egress_bytes_total",
            "Object bytes handed to MoQT subscribers per track.",
            true,
        ),
        (
            "strom_track_cache_bytes",
            "Bytes held in the group cache per track.",
            false,
        ),
        (
            "strom_track_reader_skips_total",
            "Times a slow reader fell behind the cache and skipped ahead.",
            true,
        ),
        (
            "strom_track_reader_missed_groups_total",
            "Groups readers moved past because they never arrived here.",
            true,
        ),
    ];
    let families =
        families.map(|(name, help, counter)| Figure::new(scrape, name, help, counter, &labels));
    for b in broadcasts.list() {
        let [tenant, event, stream] = namespace_values(&b.namespace);
        for (name, k, track) in b.track_figures() {
            let (readers, cached) = track.map_or((0, 0), |t| {
                (t.reader_count() as u64, t.cached_bytes() as u64)
            });
            let values = [
                c(&k.subscriptions),
                readers as f64,
                c(&k.objects_in),
                c(&k.bytes_in),
                c(&k.bytes_out),
                cached as f64,
                c(&k.objects_skipped),
                c(&k.groups_missed),
            ];
            let at = [
                tenant.as_str(),
                event.as_str(),
                stream.as_str(),
                name.as_str(),
            ];
            for (family, v) in families.iter().zip(values) {
                family.set_at(&at, v);
            }
        }
    }
    scrape.add(counters.latency.clone());
    counters.qoe.collect(scrape);
}

/// A family, counter or gauge, whose series are set from figures read
/// when the page is asked for.
pub enum Figure {
    Counter(CounterVec),
    Gauge(GaugeVec),
}

impl Figure {
    pub fn new(scrape: &Scrape, name: &str, help: &str, counter: bool, labels: &[&str]) -> Figure {
        if counter {
            Figure::Counter(scrape.counter(name, help, labels))
        } else {
            Figure::Gauge(scrape.gauge(name, help, labels))
        }
    }

    fn set(&self, label: &str, v: f64) {
        self.set_at(&[label], v);
    }

    /// Sets the series of these label values (a counter's value is read
    /// from our own counter, so it is added once to a fresh series).
    pub fn set_at(&self, labels: &[&str], v: f64) {
        match self {
            Figure::Counter(f) => f.with_label_values(labels).inc_by(v),
            Figure::Gauge(f) => f.with_label_values(labels).set(v),
        }
    }
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
        let counters = ServerCounters::new(Role::Edge);
        counters
            .subscriptions_refused
            .fetch_add(3, Ordering::Relaxed);
        let text = page(&counters, &Broadcasts::default(), |_| {});
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
