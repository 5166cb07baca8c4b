//! Peer-agents (the eCDN inside a customer's LAN). A tenant owner issues an
//! agent credential; each agent registers with it every few seconds, naming
//! its LAN addresses. The control plane answers with the agent's site (from
//! the site map), a short-lived ticket that the site's other agents check
//! before they exchange media with it, and the roster of the site's agents
//! (mDNS does not cross subnets). The roster lives in memory: it is live data.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use strom_token::{Action, Grant};
use utoipa::ToSchema;

use super::problem::{blocking, Body};
use super::*;
pub(crate) use strom_protocol::{RegisterAnswer, RegisterRequest, RosterEntry};

/// How often agents register (the answer tells them).
pub(crate) const REGISTER_EVERY_SECS: u64 = 10;
/// An agent not heard from for this long leaves the roster.
const ROSTER_TTL: Duration = Duration::from_secs(3 * REGISTER_EVERY_SECS);
/// Lifetime of a ticket; agents register far more often than this.
const TICKET_SECS: i64 = 3600;
/// The prefix of a ticket's subject: `agent:<site>:<peer id>`.
pub(crate) const TICKET_SUBJECT_PREFIX: &str = "agent:";

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/api/v1/agent-credentials",
            post(create_agent_credential).get(list_agent_credentials),
        )
        .route(
            "/api/v1/agent-credentials/{id}",
            axum::routing::delete(revoke_agent_credential),
        )
        .route("/api/v1/agents/register", post(register))
        .route("/api/v1/agents", get(list_agents))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AgentCredential {
    /// The credential's id (its token subject; revoke by it).
    pub id: String,
    /// Give this to the tenant's peer-agents (`peer_agent.credential`). Shown once.
    pub credential: String,
}

/// Issues a credential with which the tenant's peer-agents register.
#[utoipa::path(post, path = "/api/v1/agent-credentials", tag = "agents",
    responses((status = 201, body = AgentCredential), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn create_agent_credential(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<AgentCredential>)> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            let (id, credential) = repo.issue_agent_credential(caller.actor(), caller.tenant())?;
            Ok((
                StatusCode::CREATED,
                Json(AgentCredential { id, credential }),
            ))
        })
        .await
}

/// The tenant's agent credentials (owners): when issued, by whom, whether
/// revoked. The credentials themselves are shown only when issued.
#[utoipa::path(get, path = "/api/v1/agent-credentials", tag = "agents",
    responses((status = 200, body = Vec<crate::repo::CredentialRecord>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_agent_credentials(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<crate::repo::CredentialRecord>>> {
    caller
        .in_role(&state, OWNERS, move |repo, caller| {
            Ok(Json(repo.credentials(caller.tenant())?))
        })
        .await
}

/// Revokes an agent credential and every ticket minted with it: the control
/// plane refuses them at once, edges and agents within seconds (their
/// sessions close). Issue a new credential for the agents that stay.
#[utoipa::path(delete, path = "/api/v1/agent-credentials/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn revoke_agent_credential(
    State(state): State<Shared>,
    caller: Caller,
    super::problem::PathOf(id): super::problem::PathOf<String>,
) -> ApiResult<StatusCode> {
    caller.require(OWNERS)?;
    if !crate::model::valid_id("ag", &id) {
        return Err(ApiError::not_found());
    }
    let repo = state.repo.clone();
    blocking(move || {
        repo.revoke_credential(caller.actor(), caller.tenant(), &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// An agent registers (and re-registers every `register_every_secs`).
#[utoipa::path(post, path = "/api/v1/agents/register", tag = "agents", request_body = RegisterRequest, security(("relay" = [])),
    responses((status = 200, body = RegisterAnswer), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn register(
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(mut req): Body<RegisterRequest>,
) -> ApiResult<Json<RegisterAnswer>> {
    let claims = relay::relay_claims(&state, &headers)?;
    if claims.is_platform_relay() || claims.sub.starts_with(TICKET_SUBJECT_PREFIX) {
        return Err(ApiError::forbidden(
            "register with a tenant's agent credential",
        ));
    }
    if !valid_peer_id(&req.peer_id) {
        return Err(ApiError::bad_request(
            "peer_id must be a libp2p peer id (base58)",
        ));
    }
    if req.addrs.is_empty() || req.addrs.len() > 16 || req.listen.len() > 16 {
        return Err(ApiError::bad_request(
            "1 to 16 addrs and at most 16 listen addresses",
        ));
    }
    let addrs: Vec<IpAddr> = req
        .addrs
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::bad_request("addrs must be IP addresses"))?;
    if req
        .listen
        .iter()
        .any(|m| m.len() > 200 || !(m.starts_with("/ip4/") || m.starts_with("/ip6/")))
    {
        return Err(ApiError::bad_request(
            "listen addresses must be multiaddrs starting /ip4/ or /ip6/",
        ));
    }
    if req.moqt_port == 0 || req.http_port == 0 {
        return Err(ApiError::bad_request("moqt_port and http_port must be set"));
    }
    let events = match req.stats.as_mut() {
        Some(stats) => std::mem::take(&mut stats.events),
        None => Vec::new(),
    };
    super::relay::check_events(&events, Some(&claims.ten))?;
    let repo = state.repo.clone();
    let tenant = claims.ten.clone();
    let credential = claims.sub.clone();
    let peer_id = req.peer_id.clone();
    let (site, addr, ticket) = blocking(move || {
        for addr in addrs {
            if let Some(site) = repo.site_of(&tenant, addr)? {
                let grant = Grant {
                    subject: format!("{TICKET_SUBJECT_PREFIX}{}:{}", site.id, peer_id),
                    tenant: tenant.clone(),
                    event: String::new(),
                    stream: None,
                    action: Action::Relay,
                    lifetime_secs: TICKET_SECS,
                    not_after: None,
                    role: None,
                    // Revoking the agent credential revokes its tickets.
                    via: Some(credential.clone()),
                };
                let (ticket, _) = repo.mint(&grant)?;
                return Ok((site, addr, ticket));
            }
        }
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no site of this tenant contains the agent's addresses",
        ))
    })
    .await?;
    let entry = RosterEntry {
        peer_id: req.peer_id,
        listen: req.listen,
        addr: addr.to_string(),
        moqt_port: req.moqt_port,
        http_port: req.http_port,
        stats: req.stats,
        edge_bps: 0.0,
        peer_bps: 0.0,
    };
    let now = Instant::now();
    state
        .dashboard
        .agent_reported(&claims.ten, &site.id, &entry.peer_id, &events, now);
    let roster = state.agents.register(&claims.ten, &site.id, entry, now);
    Ok(Json(RegisterAnswer {
        site,
        ticket,
        ticket_expires_in_secs: TICKET_SECS,
        roster,
        register_every_secs: REGISTER_EVERY_SECS,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct SiteAgents {
    pub site: String,
    pub agents: Vec<RosterEntry>,
    /// What the site's WAN carries for the agents, bits per second.
    pub wan_bps: f64,
    /// Share of the agents' media that came from peers, 0 to 1.
    pub offload: f64,
}

/// The agents of each site heard from recently (tenant owners).
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<SiteAgents>), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub(crate) async fn list_agents(
    State(state): State<Shared>,
    caller: Caller,
) -> ApiResult<Json<Vec<SiteAgents>>> {
    caller.require(OWNERS)?;
    Ok(Json(state.agents.tenant(caller.tenant(), Instant::now())))
}

/// A libp2p peer id as text: base58btc, 46 to 60 characters.
fn valid_peer_id(s: &str) -> bool {
    (46..=60).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
}

/// Per (tenant, site): peer id → (entry, last heard).
type Rosters = HashMap<(String, String), HashMap<String, (RosterEntry, Instant)>>;

/// The live roster of every site.
#[derive(Default)]
pub struct AgentBoard {
    sites: Mutex<Rosters>,
}

impl AgentBoard {
    /// Records `entry` and returns the site's other live agents.
    pub fn register(
        &self,
        tenant: &str,
        site: &str,
        entry: RosterEntry,
        now: Instant,
    ) -> Vec<RosterEntry> {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        // A peer re-registering under another site leaves the old one.
        for ((t, s), agents) in sites.iter_mut() {
            if t == tenant && s != site {
                agents.remove(&entry.peer_id);
            }
        }
        let agents = sites
            .entry((tenant.to_owned(), site.to_owned()))
            .or_default();
        agents.retain(|_, (_, seen)| now.duration_since(*seen) < ROSTER_TTL);
        let me = entry.peer_id.clone();
        let mut entry = entry;
        if let (Some((before, at)), Some(stats)) = (agents.get(&me), entry.stats.as_ref()) {
            let secs = now.duration_since(*at).as_secs_f64();
            if let (Some(prev), true) = (before.stats.as_ref(), secs > 0.5) {
                let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 * 8.0 / secs;
                entry.edge_bps = rate(stats.bytes_from_edge, prev.bytes_from_edge);
                entry.peer_bps = rate(stats.bytes_from_peers, prev.bytes_from_peers);
            }
        }
        agents.insert(me.clone(), (entry, now));
        let mut roster: Vec<RosterEntry> = agents
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, (e, _))| e.clone())
            .collect();
        roster.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        roster
    }

    /// The live agents of one site.
    pub fn site_agents(&self, tenant: &str, site: &str, now: Instant) -> Vec<RosterEntry> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let mut agents: Vec<RosterEntry> = sites
            .get(&(tenant.to_owned(), site.to_owned()))
            .map(|a| {
                a.values()
                    .filter(|(_, seen)| now.duration_since(*seen) < ROSTER_TTL)
                    .map(|(e, _)| e.clone())
                    .collect()
            })
            .unwrap_or_default();
        agents.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        agents
    }

    /// The live agents of `tenant`, per site.
    pub fn tenant(&self, tenant: &str, now: Instant) -> Vec<SiteAgents> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<SiteAgents> = sites
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, s), agents)| {
                let mut agents: Vec<RosterEntry> = agents
                    .values()
                    .filter(|(_, seen)| now.duration_since(*seen) < ROSTER_TTL)
                    .map(|(e, _)| e.clone())
                    .collect();
                agents.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let wan_bps: f64 = agents.iter().map(|a| a.edge_bps).sum();
                let peer_bps: f64 = agents.iter().map(|a| a.peer_bps).sum();
                let offload = if wan_bps + peer_bps > 0.0 {
                    peer_bps / (wan_bps + peer_bps)
                } else {
                    0.0
                };
                SiteAgents {
                    site: s.clone(),
                    agents,
                    wan_bps,
                    offload,
                }
            })
            .filter(|s| !s.agents.is_empty())
            .collect();
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_protocol::AgentStats;

    fn entry(peer: &str) -> RosterEntry {
        RosterEntry {
            peer_id: peer.into(),
            listen: vec![format!("/ip4/10.0.0.1/udp/4001/quic-v1")],
            addr: "10.0.0.1".into(),
            moqt_port: 4443,
            http_port: 8443,
            stats: None,
            edge_bps: 0.0,
            peer_bps: 0.0,
        }
    }

    #[test]
    fn roster_lists_the_sites_other_live_agents() {
        let board = AgentBoard::default();
        let t0 = Instant::now();
        assert!(board.register("acme", "s1", entry("a"), t0).is_empty());
        assert_eq!(
            board.register("acme", "s1", entry("b"), t0),
            vec![entry("a")]
        );
        // Rates and the site's offload from two reports 10 s apart.
        let report = |edge: u64, peers: u64| RosterEntry {
            stats: Some(AgentStats {
                bytes_from_edge: edge,
                bytes_from_peers: peers,
                ..Default::default()
            }),
            ..entry("a")
        };
        board.register("acme", "s9", report(0, 0), t0);
        board.register(
            "acme",
            "s9",
            report(1_000_000, 3_000_000),
            t0 + Duration::from_secs(10),
        );
        let s9 = board
            .tenant("acme", t0 + Duration::from_secs(10))
            .into_iter()
            .find(|s| s.site == "s9")
            .unwrap();
        assert_eq!(s9.wan_bps, 800_000.0);
        assert_eq!(s9.offload, 0.75);
        board.register("acme", "s1", entry("a"), t0);
        // Another site and another tenant do not see them.
        assert!(board.register("acme", "s2", entry("c"), t0).is_empty());
        assert!(board.register("globex", "s1", entry("d"), t0).is_empty());
        // Silent agents age out.
        let later = t0 + ROSTER_TTL + Duration::from_secs(1);
        assert!(board.register("acme", "s1", entry("b"), later).is_empty());
        // Moving to another site leaves the first.
        board.register("acme", "s2", entry("b"), later);
        assert_eq!(board.tenant("acme", later).len(), 1);
        assert_eq!(board.tenant("acme", later)[0].agents.len(), 1);
    }

    #[test]
    fn peer_ids_are_base58() {
        assert!(valid_peer_id(
            "12D3KooWLdvg7ZbBHnyFeY4kU7VZ5U3T8fM6o6x4o3HVYxBXYxKn"
        ));
        assert!(!valid_peer_id(
            "12D3KooW/../../etc/passwd-00000000000000000000000000"
        ));
        assert!(!valid_peer_id("short"));
    }
}
