//! The live dashboard of an event (OPS-1, P2P-6): viewers, latency to live
//! and stall ratio from the players' QoE beacons, per edge load, per site
//! offload and WAN bitrate, and their timelines.
//!
//! Edges report viewers and QoE sums with their status (every 2 s), agents
//! with their registration (every few seconds). Every [`SAMPLE_EVERY`] the
//! sampler folds what came in since into one sample per event, kept in
//! memory for [`KEEP`]. Nothing here names a person: events, edges (relay
//! ids) and sites only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::{blocking, PathOf};
use super::relay::{EventFigures, QoeSums};
use super::*;

/// How often a sample is taken.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long a timeline reaches back (and how long an event's figures stay
/// after its last report).
const KEEP: Duration = Duration::from_secs(3600);
const MAX_SAMPLES: usize = (3600 / 5) as usize;
/// Bounds the events tracked (a flood of reports cannot grow it further).
const MAX_EVENTS: usize = 10_000;
/// An agent not heard from for this long no longer counts its viewers.
const AGENT_STALE: Duration = Duration::from_secs(20);

/// Where QoE figures came from: an edge, or a site's agents.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Source {
    Edge(String),
    Site(String),
}

/// Viewers at a site's agents: (site, peer id) → (viewers, heard at).
type AgentViewers = HashMap<(String, String), (u64, Instant)>;

#[derive(Default)]
struct Inner {
    /// QoE since the last sample, per event ("tenant/event") and source.
    pending: HashMap<String, HashMap<Source, QoeSums>>,
    /// Viewers at agents, per event.
    agent_viewers: HashMap<String, AgentViewers>,
    events: HashMap<String, EventBoard>,
}

/// One event's timeline and its latest breakdown.
struct EventBoard {
    samples: VecDeque<Sample>,
    edges: Vec<EdgeNow>,
    sites: Vec<SiteNow>,
    last_active: Instant,
}

#[derive(Default)]
pub struct Dashboard {
    inner: Mutex<Inner>,
}

/// One point of an event's timeline.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct Sample {
    /// Unix seconds.
    pub at: i64,
    /// Viewers at edges and peer-agents.
    pub viewers: u64,
    /// Ingest bitrate of the event's streams (sum), bits per second.
    pub ingest_bps: u64,
    /// Mean latency to live players reported in the interval, milliseconds.
    pub latency_ms: Option<f64>,
    /// Stalled time over watched time in the interval, 0 to 1.
    pub stall_ratio: Option<f64>,
    /// What edges sent (all events), bits per second.
    pub egress_bps: u64,
    /// Share of the tenant's agents' media that came from peers, 0 to 1.
    pub offload: Option<f64>,
    /// What the tenant's sites pull over their WAN links, bits per second.
    pub wan_bps: f64,
}

/// An edge's load now, and its players' QoE for this event.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct EdgeNow {
    /// The relay's id (its credential's subject).
    pub edge: String,
    /// This event's viewers at the edge.
    pub viewers: u64,
    /// What it sends (all events), bits per second.
    pub egress_bps: u64,
    /// Its CPU use, in cores.
    pub cpu_cores: f64,
    pub latency_ms: Option<f64>,
    pub stall_ratio: Option<f64>,
}

/// A site of the tenant now: its agents' offload and WAN bitrate, and this
/// event's viewers and QoE there.
#[derive(Serialize, ToSchema, Clone, Debug, PartialEq)]
pub struct SiteNow {
    pub site: String,
    /// The site's name (set by the tenant's owners).
    pub name: String,
    pub agents: u64,
    pub viewers: u64,
    pub offload: f64,
    pub wan_bps: f64,
    pub latency_ms: Option<f64>,
    pub stall_ratio: Option<f64>,
}

/// The dashboard of one event.
#[derive(Serialize, ToSchema)]
pub struct EventDashboard {
    /// Seconds between samples.
    pub sample_every_secs: u64,
    /// The latest sample (all zero before the first).
    pub now: Option<Sample>,
    pub edges: Vec<EdgeNow>,
    pub sites: Vec<SiteNow>,
    /// Oldest first, up to an hour.
    pub timeline: Vec<Sample>,
}

fn latency_ms(q: &QoeSums) -> Option<f64> {
    (q.latency_samples > 0).then(|| q.latency_seconds_sum / q.latency_samples as f64 * 1000.0)
}

fn stall_ratio(q: &QoeSums) -> Option<f64> {
    (q.watch_seconds > 0.0).then(|| (q.stall_seconds / q.watch_seconds).clamp(0.0, 1.0))
}

impl Dashboard {
    /// An edge's report: its players' QoE per event.
    pub fn relay_reported(&self, relay: &str, events: &[EventFigures], _now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            inner.add_qoe(&e.event, Source::Edge(relay.to_owned()), &e.qoe);
        }
    }

    /// An agent's registration: viewers there and their QoE per event.
    pub fn agent_reported(
        &self,
        tenant: &str,
        site: &str,
        peer: &str,
        events: &[EventFigures],
        now: Instant,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (site.to_owned(), peer.to_owned());
        // The agent's viewers of events it no longer reports are gone.
        for (event, agents) in inner.agent_viewers.iter_mut() {
            if event.starts_with(&format!("{tenant}/")) {
                agents.remove(&key);
            }
        }
        for e in events {
            inner.add_qoe(&e.event, Source::Site(site.to_owned()), &e.qoe);
            if inner.agent_viewers.len() < MAX_EVENTS || inner.agent_viewers.contains_key(&e.event)
            {
                inner
                    .agent_viewers
                    .entry(e.event.clone())
                    .or_default()
                    .insert(key.clone(), (e.viewers, now));
            }
        }
        inner.agent_viewers.retain(|_, agents| !agents.is_empty());
    }

    /// Folds what came in since the last sample into one sample per event.
    /// `sites` gives a tenant's sites now (from the agents' registrations)
    /// and the site names.
    pub fn sample(
        &self,
        now: Instant,
        unix: i64,
        relays: &[(String, super::relay::Report)],
        sites: &dyn Fn(&str) -> Vec<(super::agents::SiteAgents, String)>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let pending = std::mem::take(&mut inner.pending);
        for agents in inner.agent_viewers.values_mut() {
            agents.retain(|_, (_, at)| now.duration_since(*at) < AGENT_STALE);
        }
        inner.agent_viewers.retain(|_, a| !a.is_empty());

        // Every event heard of now: edge reports, origins' streams, agents.
        let mut active: BTreeMap<String, ()> = BTreeMap::new();
        for (_, r) in relays {
            for e in &r.events {
                active.insert(e.event.clone(), ());
            }
            for s in &r.streams {
                let mut f = s.namespace.splitn(3, '/');
                if let (Some(t), Some(e)) = (f.next(), f.next()) {
                    active.insert(format!("{t}/{e}"), ());
                }
            }
        }
        for e in pending.keys().chain(inner.agent_viewers.keys()) {
            active.insert(e.clone(), ());
        }
        let egress_bps: u64 = relays
            .iter()
            .filter(|(_, r)| !r.origin)
            .map(|(_, r)| r.egress_bps)
            .sum();
        let mut tenant_sites: HashMap<String, Vec<(super::agents::SiteAgents, String)>> =
            HashMap::new();
        for event in active.keys() {
            if !inner.events.contains_key(event) && inner.events.len() >= MAX_EVENTS {
                continue;
            }
            let tenant = event.split('/').next().unwrap_or_default().to_owned();
            let sites_now = tenant_sites
                .entry(tenant.clone())
                .or_insert_with(|| sites(&tenant));
            let qoe_of = |source: &Source| {
                pending
                    .get(event)
                    .and_then(|m| m.get(source))
                    .copied()
                    .unwrap_or_default()
            };
            let mut total = QoeSums::default();
            if let Some(m) = pending.get(event) {
                for q in m.values() {
                    total.add(q);
                }
            }
            let mut edges = Vec::new();
            let mut ingest_bps = 0;
            let mut viewers = 0;
            for (id, r) in relays {
                if r.origin {
                    ingest_bps += r
                        .streams
                        .iter()
                        .filter(|s| s.namespace.starts_with(&format!("{event}/")))
                        .map(|s| s.ingest_bps)
                        .sum::<u64>();
                    continue;
                }
                let here = r
                    .events
                    .iter()
                    .filter(|e| &e.event == event)
                    .map(|e| e.viewers)
                    .sum::<u64>();
                viewers += here;
                let q = qoe_of(&Source::Edge(id.clone()));
                edges.push(EdgeNow {
                    edge: id.clone(),
                    viewers: here,
                    egress_bps: r.egress_bps,
                    cpu_cores: r.cpu_cores,
                    latency_ms: latency_ms(&q),
                    stall_ratio: stall_ratio(&q),
                });
            }
            let at_agents = inner.agent_viewers.get(event);
            let (mut wan_bps, mut peer_bps) = (0.0, 0.0);
            let mut site_rows = Vec::new();
            for (s, name) in sites_now.iter() {
                let here: u64 = at_agents
                    .map(|a| {
                        a.iter()
                            .filter(|((site, _), _)| site == &s.site)
                            .map(|(_, (n, _))| *n)
                            .sum()
                    })
                    .unwrap_or(0);
                viewers += here;
                wan_bps += s.wan_bps;
                peer_bps += s.agents.iter().map(|a| a.peer_bps).sum::<f64>();
                let q = qoe_of(&Source::Site(s.site.clone()));
                site_rows.push(SiteNow {
                    site: s.site.clone(),
                    name: name.clone(),
                    agents: s.agents.len() as u64,
                    viewers: here,
                    offload: s.offload,
                    wan_bps: s.wan_bps,
                    latency_ms: latency_ms(&q),
                    stall_ratio: stall_ratio(&q),
                });
            }
            let sample = Sample {
                at: unix,
                viewers,
                ingest_bps,
                latency_ms: latency_ms(&total),
                stall_ratio: stall_ratio(&total),
                egress_bps,
                offload: (wan_bps + peer_bps > 0.0).then(|| peer_bps / (wan_bps + peer_bps)),
                wan_bps,
            };
            let board = inner
                .events
                .entry(event.clone())
                .or_insert_with(|| EventBoard {
                    samples: VecDeque::new(),
                    edges: Vec::new(),
                    sites: Vec::new(),
                    last_active: now,
                });
            board.samples.push_back(sample);
            while board.samples.len() > MAX_SAMPLES {
                board.samples.pop_front();
            }
            board.edges = edges;
            board.sites = site_rows;
            board.last_active = now;
        }
        inner
            .events
            .retain(|_, b| now.duration_since(b.last_active) < KEEP);
    }

    /// The dashboard of `event` ("tenant/event").
    pub fn event(&self, event: &str) -> EventDashboard {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let board = inner.events.get(event);
        EventDashboard {
            sample_every_secs: SAMPLE_EVERY.as_secs(),
            now: board.and_then(|b| b.samples.back().cloned()),
            edges: board.map(|b| b.edges.clone()).unwrap_or_default(),
            sites: board.map(|b| b.sites.clone()).unwrap_or_default(),
            timeline: board
                .map(|b| b.samples.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

impl Inner {
    fn add_qoe(&mut self, event: &str, source: Source, q: &QoeSums) {
        if q.beacons == 0 {
            return;
        }
        if !self.pending.contains_key(event) && self.pending.len() >= MAX_EVENTS {
            return;
        }
        self.pending
            .entry(event.to_owned())
            .or_default()
            .entry(source)
            .or_default()
            .add(q);
    }
}

/// Samples every [`SAMPLE_EVERY`] until the control plane stops.
pub(crate) async fn sample_loop(state: Shared) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            let relays = match st.relay_status.current(now) {
                Ok(r) => r,
                Err(e) => {
                    // No sample rather than one that says nobody watches.
                    tracing::warn!(error = %e, "relay reports not readable; sample skipped");
                    return;
                }
            };
            let repo = st.repo.clone();
            let agents = &st.agents;
            let sites = |tenant: &str| {
                let names: HashMap<String, String> = repo
                    .sites(tenant)
                    .map(|s| s.into_iter().map(|s| (s.id, s.name)).collect())
                    .unwrap_or_default();
                agents
                    .tenant(tenant)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| {
                        let name = names.get(&s.site).cloned().unwrap_or_default();
                        (s, name)
                    })
                    .collect()
            };
            st.dashboard
                .sample(now, crate::repo::now().unix_timestamp(), &relays, &sites);
        })
        .await;
    }
}

/// The event's live dashboard: viewers, latency to live and stall ratio
/// (players' QoE beacons), per edge load, per site offload and WAN bitrate,
/// and their timelines over the last hour, sampled every 5 s.
#[utoipa::path(get, path = "/api/v1/events/{event}/dashboard", tag = "events", params(("event" = String, Path)),
    responses((status = 200, body = EventDashboard), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn event_dashboard(
    State(state): State<Shared>,
    caller: Caller,
    PathOf(event): PathOf<String>,
) -> ApiResult<Json<EventDashboard>> {
    caller.require(ALL_STAFF)?;
    let st = state.clone();
    blocking(move || {
        st.repo.event(caller.tenant(), &event)?;
        Ok(Json(st.dashboard.event(&format!(
            "{}/{}",
            caller.tenant(),
            event
        ))))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::agents::{RosterEntry, SiteAgents};
    use super::super::relay::{Report, StreamStatus};
    use super::*;

    fn qoe(watch: f64, stall: f64, latency: f64) -> QoeSums {
        QoeSums {
            beacons: 1,
            watch_seconds: watch,
            stall_seconds: stall,
            stalls: u64::from(stall > 0.0),
            latency_seconds_sum: latency,
            latency_samples: 1,
        }
    }

    fn event(viewers: u64, q: QoeSums) -> EventFigures {
        EventFigures {
            event: "t/e".into(),
            viewers,
            qoe: q,
        }
    }

    #[test]
    fn a_sample_adds_edges_and_sites_up() {
        let d = Dashboard::default();
        let now = Instant::now();
        d.relay_reported("edge-1", &[event(3, qoe(10.0, 1.0, 0.5))], now);
        d.agent_reported("t", "s1", "peer-a", &[event(4, qoe(10.0, 0.0, 1.5))], now);
        // Another tenant's events do not mix in.
        d.agent_reported(
            "u",
            "s9",
            "peer-z",
            &[EventFigures {
                event: "u/e".into(),
                viewers: 50,
                qoe: qoe(1.0, 0.0, 0.1),
            }],
            now,
        );
        let report = |origin: bool, events: Vec<EventFigures>| Report {
            at: now,
            origin,
            streams: vec![StreamStatus {
                namespace: "t/e/main".into(),
                ingest_bps: if origin { 3_000_000 } else { 0 },
                viewers: 1,
            }],
            events,
            egress_bps: if origin { 0 } else { 9_000_000 },
            cpu_cores: 0.25,
        };
        let relays = vec![
            (
                "edge-1".to_owned(),
                report(false, vec![event(3, QoeSums::default())]),
            ),
            ("origin-1".to_owned(), report(true, vec![])),
        ];
        let agent = |peer_bps: f64, edge_bps: f64| RosterEntry {
            peer_id: "p".into(),
            listen: vec![],
            addr: "10.0.0.1".into(),
            moqt_port: 1,
            http_port: 1,
            stats: None,
            edge_bps,
            peer_bps,
        };
        let sites = |tenant: &str| {
            if tenant == "u" {
                return vec![(
                    SiteAgents {
                        site: "s9".into(),
                        agents: vec![agent(0.0, 1e6)],
                        wan_bps: 1e6,
                        offload: 0.0,
                    },
                    "Elsewhere".to_owned(),
                )];
            }
            vec![(
                SiteAgents {
                    site: "s1".into(),
                    agents: vec![agent(0.0, 3e6), agent(3e6, 0.0), agent(3e6, 0.0)],
                    wan_bps: 3e6,
                    offload: 2.0 / 3.0,
                },
                "HQ".to_owned(),
            )]
        };
        d.sample(now, 1000, &relays, &sites);
        let b = d.event("t/e");
        let s = b.now.expect("a sample");
        assert_eq!(s.viewers, 7, "3 at the edge, 4 at the site's agent");
        assert_eq!(s.ingest_bps, 3_000_000);
        assert_eq!(s.latency_ms, Some(1000.0), "mean of 0.5 s and 1.5 s");
        assert_eq!(s.stall_ratio, Some(0.05));
        assert!((s.offload.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.wan_bps, 3e6);
        assert_eq!(b.edges.len(), 1);
        assert_eq!(b.edges[0].latency_ms, Some(500.0));
        assert_eq!(b.edges[0].stall_ratio, Some(0.1));
        assert_eq!(b.sites[0].name, "HQ");
        assert_eq!(b.sites[0].viewers, 4);
        assert_eq!(b.sites[0].stall_ratio, Some(0.0));
        assert_eq!(d.event("u/e").now.unwrap().viewers, 50);
        assert_eq!(d.event("u/e").now.unwrap().ingest_bps, 0);
        // The next sample has no beacons: QoE unknown, viewers still there.
        d.sample(now + SAMPLE_EVERY, 1005, &relays, &sites);
        let b = d.event("t/e");
        assert_eq!(b.timeline.len(), 2);
        assert_eq!(b.timeline[1].latency_ms, None);
        assert_eq!(b.timeline[1].viewers, 7);
        // An agent gone quiet stops counting.
        d.sample(now + AGENT_STALE, 1020, &relays, &sites);
        assert_eq!(d.event("t/e").now.unwrap().viewers, 3);
    }
}
