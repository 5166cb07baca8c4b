//! What this relay tells the control plane every few seconds
//! ([`crate::control_plane::RelayStatus`]): per broadcast the bitrate stored
//! and the viewers — MoQT subscribers of the video track plus HLS players,
//! counted by the distinct tokens that fetched a video playlist recently.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::control_plane::{EventFigures, QoeSums, RelayStatus, StreamStatus};

use crate::broadcast::Broadcasts;
use crate::metrics::ServerCounters;

/// An HLS player reloads its playlist at least every target duration; one
/// not seen for this long has gone.
const HLS_VIEWER_GONE: Duration = Duration::from_secs(10);
/// Bounds the memory a flood of distinct tokens can take.
const MAX_HLS_VIEWERS: usize = 200_000;

/// HLS viewers by broadcast, keyed by the token's id (never a person).
#[derive(Default)]
pub struct HlsViewers {
    seen: Mutex<HashMap<String, HashMap<String, Instant>>>,
    total: Mutex<usize>,
}

impl HlsViewers {
    pub fn saw(&self, namespace: &str, token_id: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        let viewers = seen.entry(namespace.to_owned()).or_default();
        if !viewers.contains_key(token_id) && *total >= MAX_HLS_VIEWERS {
            return;
        }
        if viewers
            .insert(token_id.to_owned(), Instant::now())
            .is_none()
        {
            *total += 1;
        }
    }

    /// Current players per (tenant, event): distinct tokens over its streams.
    pub fn event_counts(&self) -> HashMap<(String, String), u64> {
        self.counts();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut tokens: HashMap<(String, String), std::collections::HashSet<&str>> = HashMap::new();
        for (namespace, viewers) in seen.iter() {
            let mut f = namespace.splitn(3, '/');
            let (Some(t), Some(e)) = (f.next(), f.next()) else {
                continue;
            };
            tokens
                .entry((t.to_owned(), e.to_owned()))
                .or_default()
                .extend(viewers.keys().map(String::as_str));
        }
        tokens
            .into_iter()
            .map(|(k, v)| (k, v.len() as u64))
            .collect()
    }

    /// Current viewers per broadcast; forgets players gone quiet.
    pub fn counts(&self) -> HashMap<String, u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        seen.retain(|_, v| {
            v.retain(|_, at| now.duration_since(*at) < HLS_VIEWER_GONE);
            !v.is_empty()
        });
        *self.total.lock().unwrap_or_else(|p| p.into_inner()) =
            seen.values().map(|v| v.len()).sum();
        seen.iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect()
    }
}

/// How far back the QoE in a report reaches. Longer than a player's beacon
/// interval (10 s, `web/src/player/qoe.ts`), so that every report carries
/// the latest beacon of every player: the control plane's dashboard samples
/// each source's latest report every 5 s, and with reports every 2 s and
/// beacons every 10 s a report covering only its own 2 s would be caught
/// by the sampler always or never, depending on phase.
pub(crate) const QOE_WINDOW: Duration = Duration::from_secs(15);

/// Per event: viewers now (play sessions and HLS players) and the QoE
/// beacons' figures over the last [`QOE_WINDOW`] (or since the previous
/// call, if that was longer ago). Edges report this to the control plane
/// with their status, peer-agents with their registration. Reports overlap:
/// a report that is lost loses nothing the next one does not carry.
pub struct EventTally {
    counters: Arc<ServerCounters>,
    hls: Arc<HlsViewers>,
    /// Cumulative sums at earlier calls, oldest first; the first one is at
    /// or before `now - QOE_WINDOW` once calls span the window.
    earlier: VecDeque<(Instant, Totals)>,
}

/// Cumulative QoE sums per (tenant, event).
type Totals = BTreeMap<(String, String), QoeSums>;

impl EventTally {
    pub fn new(counters: Arc<ServerCounters>, hls: Arc<HlsViewers>) -> Self {
        Self {
            counters,
            hls,
            earlier: VecDeque::new(),
        }
    }

    pub fn figures(&mut self) -> Vec<EventFigures> {
        let totals = self.counters.qoe.totals();
        self.figures_at(Instant::now(), totals)
    }

    fn figures_at(&mut self, now: Instant, totals: Totals) -> Vec<EventFigures> {
        let mut viewers: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (k, n) in self.counters.viewers() {
            *viewers.entry(k).or_default() += n;
        }
        for (k, n) in self.hls.event_counts() {
            *viewers.entry(k).or_default() += n;
        }
        // The base: the latest snapshot at or before the window's start.
        while self
            .earlier
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= QOE_WINDOW)
        {
            self.earlier.pop_front();
        }
        let empty = BTreeMap::new();
        let base = self.earlier.front().map_or(&empty, |(_, m)| m);
        let mut out = Vec::new();
        let keys: std::collections::BTreeSet<&(String, String)> =
            viewers.keys().chain(totals.keys()).collect();
        for key in keys {
            let qoe = totals
                .get(key)
                .map(|t| t.since(base.get(key).unwrap_or(&QoeSums::default())))
                .unwrap_or_default();
            let n = viewers.get(key).copied().unwrap_or(0);
            if n == 0 && qoe.beacons == 0 {
                continue;
            }
            out.push(EventFigures {
                event: format!("{}/{}", key.0, key.1),
                viewers: n,
                qoe,
            });
        }
        self.earlier.push_back((now, totals));
        out
    }
}

/// CPU time this process used so far, in seconds (Linux `/proc`).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here;
    // in clock ticks of 1/100 s (USER_HZ on Linux).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Builds successive reports; bitrates are the byte counters' growth since
/// the previous report.
pub struct Reporter {
    role: strom_protocol::RelayKind,
    broadcasts: Arc<Broadcasts>,
    hls: Arc<HlsViewers>,
    counters: Arc<ServerCounters>,
    events: EventTally,
    previous: HashMap<String, (u64, Instant)>,
    /// Egress bytes and CPU seconds at the previous report.
    previous_load: Option<(u64, Option<f64>, Instant)>,
}

impl Reporter {
    pub fn new(
        role: strom_protocol::RelayKind,
        broadcasts: Arc<Broadcasts>,
        hls: Arc<HlsViewers>,
        counters: Arc<ServerCounters>,
    ) -> Self {
        Self {
            role,
            broadcasts,
            events: EventTally::new(counters.clone(), hls.clone()),
            hls,
            counters,
            previous: HashMap::new(),
            previous_load: None,
        }
    }

    pub fn report(&mut self) -> RelayStatus {
        let now = Instant::now();
        let hls = self.hls.counts();
        let mut streams = Vec::new();
        let mut next = HashMap::new();
        for b in self.broadcasts.list() {
            let namespace = b.namespace.to_string();
            let mut bytes = 0;
            let mut moqt_viewers = 0;
            for (name, counters, cache) in b.track_figures() {
                bytes += counters.bytes_in.load(std::sync::atomic::Ordering::Relaxed);
                if name == "video" {
                    moqt_viewers = cache.map_or(0, |c| c.reader_count() as u64);
                }
            }
            let ingest_bps = match self.previous.get(&namespace) {
                Some((before, at)) if bytes >= *before => {
                    let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                    ((bytes - before) as f64 * 8.0 / secs) as u64
                }
                _ => 0,
            };
            next.insert(namespace.clone(), (bytes, now));
            let viewers = moqt_viewers + hls.get(&namespace).copied().unwrap_or(0);
            streams.push(StreamStatus {
                namespace,
                ingest_bps,
                viewers,
            });
        }
        self.previous = next;
        let egress = self.counters.moqt_bytes_out.load(Ordering::Relaxed)
            + self.counters.hls_bytes.load(Ordering::Relaxed);
        let cpu = process_cpu_seconds();
        let (egress_bps, cpu_cores) = match self.previous_load {
            Some((bytes, cpu_before, at)) => {
                let secs = now.duration_since(at).as_secs_f64().max(0.001);
                let cores = match (cpu, cpu_before) {
                    (Some(c), Some(b)) if c >= b => (c - b) / secs,
                    _ => 0.0,
                };
                (
                    (egress.saturating_sub(bytes) as f64 * 8.0 / secs) as u64,
                    cores,
                )
            }
            None => (0, 0.0),
        };
        self.previous_load = Some((egress, cpu, now));
        RelayStatus {
            role: self.role,
            streams,
            events: self.events.figures(),
            egress_bps,
            cpu_cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Players beacon every 10 s, the relay reports every `report` and the
    /// control plane samples the latest report every 5 s: whatever the
    /// phases, every sample after the first beacon sees one, and over time
    /// a beacon is counted in every report of the window after it.
    #[test]
    fn every_report_carries_the_latest_beacon_of_every_player() {
        let cases = [
            // (report every, beacon phase, sample phase), milliseconds
            (2_000, 0, 0),
            (2_000, 1_000, 0),
            (2_000, 300, 4_900),
            (2_000, 9_999, 2_500),
            (5_000, 0, 0),
            (10_000, 5_000, 0),
            (14_000, 1, 7_000),
        ];
        for (report, beacon_phase, sample_phase) in cases {
            let mut tally = EventTally::new(
                Arc::new(ServerCounters::new(crate::Role::Edge)),
                Arc::new(HlsViewers::default()),
            );
            let start = Instant::now();
            let key = ("t".to_owned(), "e".to_owned());
            let mut beacons = 0u64;
            let mut latest: Option<QoeSums> = None;
            let mut seen_by_samples = 0;
            let mut samples_after_first_beacon = 0;
            for ms in 0..120_000u64 {
                if ms >= beacon_phase && (ms - beacon_phase).is_multiple_of(10_000) {
                    beacons += 1;
                }
                if ms % report == 0 {
                    let totals = BTreeMap::from([(
                        key.clone(),
                        QoeSums {
                            beacons,
                            watch_seconds: 10.0 * beacons as f64,
                            latency_seconds_sum: 0.5 * beacons as f64,
                            latency_samples: beacons,
                            ..QoeSums::default()
                        },
                    )]);
                    let figures = tally.figures_at(start + Duration::from_millis(ms), totals);
                    latest = figures.first().map(|f| f.qoe);
                    if let Some(q) = latest {
                        assert!(
                            q.beacons <= 2 + (report / 10_000),
                            "a window holds a beacon or two per player, not the past: \
                             {q:?} at {ms} ms (report every {report} ms)"
                        );
                    }
                }
                if ms >= sample_phase && (ms - sample_phase).is_multiple_of(5_000) && beacons > 0 {
                    samples_after_first_beacon += 1;
                    if latest.is_some_and(|q| q.latency_samples > 0) {
                        seen_by_samples += 1;
                    }
                }
            }
            // The sampler may run between the first beacon and the first
            // report after it; from then on every sample sees latency.
            assert!(
                seen_by_samples + 2 >= samples_after_first_beacon,
                "report every {report} ms, beacons at +{beacon_phase} ms, samples at \
                 +{sample_phase} ms: {seen_by_samples} of {samples_after_first_beacon} \
                 samples saw a beacon"
            );
        }
    }

    #[test]
    fn hls_viewers_are_distinct_tokens_and_expire() {
        let v = HlsViewers::default();
        v.saw("t/e/s", "a");
        v.saw("t/e/s", "a");
        v.saw("t/e/s", "b");
        v.saw("t/e/other", "a");
        let c = v.counts();
        assert_eq!(c.get("t/e/s"), Some(&2));
        assert_eq!(c.get("t/e/other"), Some(&1));
        v.seen.lock().unwrap().get_mut("t/e/s").unwrap().insert(
            "b".into(),
            Instant::now() - HLS_VIEWER_GONE - Duration::from_secs(1),
        );
        assert_eq!(v.counts().get("t/e/s"), Some(&1));
        // Per event, a token counts once over the event's streams.
        v.saw("t/e/other", "b");
        assert_eq!(v.event_counts().get(&("t".into(), "e".into())), Some(&2));
    }

    #[test]
    fn process_cpu_time_is_read() {
        let before = process_cpu_seconds().expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_seconds().expect("again") >= before);
    }
}
