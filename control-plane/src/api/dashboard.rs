//! The live dashboard of an event (OPS-1, P2P-6): viewers, latency to live
//! and stall ratio from the players' QoE beacons, per edge load, per site
//! offload and WAN bitrate, and their timelines.
//!
//! Edges report viewers and QoE sums with their status (every 2 s), agents
//! with their registration (every few seconds); both are kept in the
//! store's presence, so every control-plane replica sees every report.
//! Every [`SAMPLE_EVERY`] a replica folds each source's latest report into
//! one sample per event and puts it in presence under the event and the
//! start of its 5 s slot, kept for [`KEEP`]: replicas sampling the same slot
//! write the same key from the same reports, so the timeline is one,
//! whichever replica a browser reaches and however many sample. QoE is that
//! of each source's latest report, which covers its players' beacons of the
//! last 15 s (longer than a player's 10 s beacon interval, so every sample
//! holds every player's latest beacon): latency and stall ratio are ratios,
//! and a moving window of them is what a timeline shows.
//! Nothing here names a person: events, edges (relay ids) and sites only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::problem::{blocking, PathOf};
use super::relay::{EventFigures, QoeSums};
use super::*;
use crate::store::{Presence, StoreError};

/// How often a sample is taken.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long a timeline reaches back (and how long an event's figures stay
/// after its last report).
const KEEP: Duration = Duration::from_secs(3600);
/// Bounds the events sampled at once (a flood of reports cannot grow it
/// further).
const MAX_EVENTS: usize = 10_000;
/// Presence kinds: agents' latest figures (`tenant/site/peer`), samples
/// (`tenant/event/slot`), an event's latest breakdown (`tenant/event`).
const AGENT_FIGURES: &str = "dash-agent";
const SAMPLES: &str = "dash-sample";
const BREAKDOWN: &str = "dash-now";
/// An agent not heard from for this long no longer counts its viewers.
const AGENT_STALE: Duration = Duration::from_secs(20);

/// Where QoE figures came from: an edge, or a site's agents.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Source {
    Edge(String),
    Site(String),
}

/// The dashboards of all events, in the store's presence.
pub struct Dashboard {
    presence: Arc<dyn Presence>,
    /// An agent not heard from for this long no longer counts.
    agent_stale: Duration,
}

/// An event's latest sample and per-edge and per-site figures, as kept in
/// presence.
#[derive(Serialize, Deserialize, Default)]
struct Breakdown {
    sample: Option<Sample>,
    edges: Vec<EdgeNow>,
    sites: Vec<SiteNow>,
}

/// One point of an event's timeline.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
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
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
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
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq)]
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

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn latency_ms(q: &QoeSums) -> Option<f64> {
    (q.latency_samples > 0).then(|| q.latency_seconds_sum / q.latency_samples as f64 * 1000.0)
}

fn stall_ratio(q: &QoeSums) -> Option<f64> {
    (q.watch_seconds > 0.0).then(|| (q.stall_seconds / q.watch_seconds).clamp(0.0, 1.0))
}

impl Dashboard {
    pub fn new(presence: Arc<dyn Presence>) -> Self {
        Self {
            presence,
            agent_stale: AGENT_STALE,
        }
    }

    #[cfg(test)]
    fn with_agent_stale(presence: Arc<dyn Presence>, agent_stale: Duration) -> Self {
        Self {
            presence,
            agent_stale,
        }
    }

    /// An agent's registration: viewers there and their QoE per event
    /// (events of `tenant` only, checked by the caller). Replaces what the
    /// agent reported before.
    pub fn agent_reported(
        &self,
        tenant: &str,
        site: &str,
        peer: &str,
        events: &[EventFigures],
    ) -> Result<(), StoreError> {
        let key = format!("{tenant}/{site}/{peer}");
        if events.is_empty() {
            return self.presence.remove(AGENT_FIGURES, &key);
        }
        self.presence
            .put(AGENT_FIGURES, &key, &encode(&events)?, self.agent_stale)
    }

    /// One sample per event from the relays' latest reports and the
    /// agents' latest registrations, put in presence under the 5 s slot
    /// `unix` falls in. `sites` gives a tenant's sites now (from the
    /// agents' registrations) and the site names.
    pub fn sample(
        &self,
        unix: i64,
        relays: &[(String, super::relay::Report)],
        sites: &dyn Fn(&str) -> Vec<(super::agents::SiteAgents, String)>,
    ) -> Result<(), StoreError> {
        // QoE per event and source, and viewers at agents per event.
        let mut pending: HashMap<String, HashMap<Source, QoeSums>> = HashMap::new();
        let mut at_agents: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        let mut add_qoe = |event: &str, source: Source, q: &QoeSums| {
            if q.beacons == 0 || (!pending.contains_key(event) && pending.len() >= MAX_EVENTS) {
                return;
            }
            pending
                .entry(event.to_owned())
                .or_default()
                .entry(source)
                .or_default()
                .add(q);
        };
        for (id, r) in relays.iter().filter(|(_, r)| !r.origin) {
            for e in &r.events {
                add_qoe(&e.event, Source::Edge(id.clone()), &e.qoe);
            }
        }
        for kept in self.presence.list(AGENT_FIGURES, "")? {
            let mut key = kept.key.splitn(3, '/');
            let (Some(tenant), Some(site)) = (key.next(), key.next()) else {
                continue;
            };
            let Ok(events) = serde_json::from_slice::<Vec<EventFigures>>(&kept.value) else {
                continue;
            };
            for e in events
                .iter()
                .filter(|e| e.event.starts_with(&format!("{tenant}/")))
            {
                add_qoe(&e.event, Source::Site(site.to_owned()), &e.qoe);
                if at_agents.len() < MAX_EVENTS || at_agents.contains_key(&e.event) {
                    at_agents
                        .entry(e.event.clone())
                        .or_default()
                        .push((site.to_owned(), e.viewers));
                }
            }
        }

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
        for e in pending.keys().chain(at_agents.keys()) {
            active.insert(e.clone(), ());
        }
        let egress_bps: u64 = relays
            .iter()
            .filter(|(_, r)| !r.origin)
            .map(|(_, r)| r.egress_bps)
            .sum();
        let slot = unix - unix.rem_euclid(SAMPLE_EVERY.as_secs() as i64);
        let mut tenant_sites: HashMap<String, Vec<(super::agents::SiteAgents, String)>> =
            HashMap::new();
        for event in active.keys().take(MAX_EVENTS) {
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
            let agents_here = at_agents.get(event);
            let (mut wan_bps, mut peer_bps) = (0.0, 0.0);
            let mut site_rows = Vec::new();
            for (s, name) in sites_now.iter() {
                let here: u64 = agents_here
                    .map(|a| {
                        a.iter()
                            .filter(|(site, _)| site == &s.site)
                            .map(|(_, n)| *n)
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
                at: slot,
                viewers,
                ingest_bps,
                latency_ms: latency_ms(&total),
                stall_ratio: stall_ratio(&total),
                egress_bps,
                offload: (wan_bps + peer_bps > 0.0).then(|| peer_bps / (wan_bps + peer_bps)),
                wan_bps,
            };
            let breakdown = Breakdown {
                sample: Some(sample.clone()),
                edges,
                sites: site_rows,
            };
            self.presence.put(
                SAMPLES,
                &format!("{event}/{:012}", slot.max(0)),
                &encode(&sample)?,
                KEEP,
            )?;
            self.presence
                .put(BREAKDOWN, event, &encode(&breakdown)?, KEEP)?;
        }
        Ok(())
    }

    /// The latest sample of `event` ("tenant/event"), if any (one read).
    pub fn latest(&self, event: &str) -> Result<Option<Sample>, StoreError> {
        Ok(self
            .presence
            .get(BREAKDOWN, event)?
            .and_then(|p| serde_json::from_slice::<Breakdown>(&p.value).ok())
            .and_then(|b| b.sample))
    }

    /// The dashboard of `event` ("tenant/event").
    pub fn event(&self, event: &str) -> Result<EventDashboard, StoreError> {
        let timeline: Vec<Sample> = self
            .presence
            .list(SAMPLES, &format!("{event}/"))?
            .into_iter()
            .filter_map(|p| serde_json::from_slice(&p.value).ok())
            .collect();
        let breakdown: Breakdown = self
            .presence
            .get(BREAKDOWN, event)?
            .and_then(|p| serde_json::from_slice(&p.value).ok())
            .unwrap_or_default();
        Ok(EventDashboard {
            sample_every_secs: SAMPLE_EVERY.as_secs(),
            now: timeline.last().cloned(),
            edges: breakdown.edges,
            sites: breakdown.sites,
            timeline,
        })
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
            let now = std::time::Instant::now();
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
            if let Err(e) =
                st.dashboard
                    .sample(crate::repo::now().unix_timestamp(), &relays, &sites)
            {
                tracing::warn!(error = %e, "dashboard sample not kept");
            }
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
        let board = st
            .dashboard
            .event(&format!("{}/{}", caller.tenant(), event))
            .map_err(crate::repo::RepoError::Store)?;
        Ok(Json(board))
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
        let presence: Arc<dyn Presence> = Arc::new(crate::store::MemoryPresence::default());
        let stale = Duration::from_millis(400);
        let d = Dashboard::with_agent_stale(presence.clone(), stale);
        // Another replica on the same presence (the same database).
        let other = Dashboard::with_agent_stale(presence, stale);
        let now = std::time::Instant::now();
        d.agent_reported("t", "s1", "peer-a", &[event(4, qoe(10.0, 0.0, 1.5))])
            .unwrap();
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
        )
        .unwrap();
        // An agent may not report another tenant's event.
        other
            .agent_reported("u", "s9", "peer-y", &[event(1000, qoe(1.0, 1.0, 9.0))])
            .unwrap();
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
        let relays_with = |q: QoeSums| {
            vec![
                ("edge-1".to_owned(), report(false, vec![event(3, q)])),
                ("origin-1".to_owned(), report(true, vec![])),
            ]
        };
        let relays = relays_with(qoe(10.0, 1.0, 0.5));
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
        d.sample(1000, &relays, &sites).unwrap();
        // Read on the other replica.
        let b = other.event("t/e").unwrap();
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
        let u = d.event("u/e").unwrap().now.unwrap();
        assert_eq!(u.viewers, 50, "not {u:?}");
        assert_eq!(u.ingest_bps, 0);
        assert!(d.event("t/none").unwrap().now.is_none());
        // Both replicas sample the same slot (1000 and 1003 are one slot):
        // one point, not two.
        other.sample(1003, &relays, &sites).unwrap();
        assert_eq!(d.event("t/e").unwrap().timeline.len(), 1);
        // The next slot has no beacons: QoE unknown, viewers still there.
        d.agent_reported("t", "s1", "peer-a", &[event(4, QoeSums::default())])
            .unwrap();
        d.sample(1005, &relays_with(QoeSums::default()), &sites)
            .unwrap();
        let b = d.event("t/e").unwrap();
        assert_eq!(b.timeline.len(), 2);
        assert_eq!((b.timeline[0].at, b.timeline[1].at), (1000, 1005));
        assert_eq!(b.timeline[1].latency_ms, None);
        assert_eq!(b.timeline[1].viewers, 7);
        // An agent gone quiet stops counting.
        std::thread::sleep(stale + Duration::from_millis(100));
        assert!(now.elapsed() >= stale);
        d.sample(1020, &relays, &sites).unwrap();
        assert_eq!(d.event("t/e").unwrap().now.unwrap().viewers, 3);
    }
}
