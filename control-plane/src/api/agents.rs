//! Peer-agents (the eCDN inside a customer's LAN). A tenant owner issues an
//! agent credential; each agent registers with it every few seconds, naming
//! its LAN addresses. The control plane answers with the agent's site (from
//! the site map), a short-lived ticket that the site's other agents check
//! before they exchange media with it, and the roster of the site's agents
//! (mDNS does not cross subnets). The roster is live data: it lives in the
//! store's presence, shared by every control-plane replica.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use strom_token::{Action, Grant};
use utoipa::ToSchema;

use super::problem::{blocking, Body};
use super::*;
use crate::store::{Presence, StoreError};
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
    let (st, tenant, site_id) = (state.clone(), claims.ten.clone(), site.id.clone());
    let roster = blocking(move || {
        st.dashboard
            .agent_reported(&tenant, &site_id, &entry.peer_id, &events)
            .map_err(|e| ApiError::from(crate::repo::RepoError::from(e)))?;
        st.agents
            .register(&tenant, &site_id, entry)
            .map_err(|e| ApiError::from(crate::repo::RepoError::from(e)))
    })
    .await?;
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
    let st = state.clone();
    blocking(move || {
        Ok(Json(
            st.agents
                .tenant(caller.tenant())
                .map_err(crate::repo::RepoError::from)?,
        ))
    })
    .await
}

/// A libp2p peer id as text: base58btc, 46 to 60 characters.
fn valid_peer_id(s: &str) -> bool {
    (46..=60).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
}

/// The presence kinds of the rosters: `tenant/site/peer` → the agent's
/// roster entry, and `tenant/peer` → its site.
const AGENTS: &str = "agent";
const AGENT_SITES: &str = "agent-site";

/// The live roster of every site, in the store's presence: an agent that
/// registers with one control-plane replica is in the roster every replica
/// hands out (and in the agent URLs players get), whichever one they reach.
pub struct AgentBoard {
    presence: Arc<dyn Presence>,
    ttl: Duration,
}

impl AgentBoard {
    pub fn new(presence: Arc<dyn Presence>) -> Self {
        Self {
            presence,
            ttl: ROSTER_TTL,
        }
    }

    /// Records `entry` and returns the site's other live agents.
    pub fn register(
        &self,
        tenant: &str,
        site: &str,
        mut entry: RosterEntry,
    ) -> Result<Vec<RosterEntry>, StoreError> {
        let me = entry.peer_id.clone();
        let key = format!("{tenant}/{site}/{me}");
        // A peer re-registering under another site leaves the old one.
        let where_key = format!("{tenant}/{me}");
        if let Some(before) = self.presence.get(AGENT_SITES, &where_key)? {
            let old = String::from_utf8_lossy(&before.value);
            if old != site {
                self.presence
                    .remove(AGENTS, &format!("{tenant}/{old}/{me}"))?;
            }
        }
        // Rates since the agent's previous report, by the store's clock.
        if let (Some(before), Some(stats)) =
            (self.presence.get(AGENTS, &key)?, entry.stats.as_ref())
        {
            let secs = before.age.as_secs_f64();
            let prev = serde_json::from_slice::<RosterEntry>(&before.value).ok();
            if let (Some(prev), true) = (prev.and_then(|p| p.stats), secs > 0.5) {
                let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 * 8.0 / secs;
                entry.edge_bps = rate(stats.bytes_from_edge, prev.bytes_from_edge);
                entry.peer_bps = rate(stats.bytes_from_peers, prev.bytes_from_peers);
            }
        }
        let value = serde_json::to_vec(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.presence.put(AGENTS, &key, &value, self.ttl)?;
        self.presence
            .put(AGENT_SITES, &where_key, site.as_bytes(), self.ttl)?;
        let mut roster = self.site_agents(tenant, site)?;
        roster.retain(|e| e.peer_id != me);
        Ok(roster)
    }

    fn listed(&self, prefix: &str) -> Result<Vec<(String, RosterEntry)>, StoreError> {
        Ok(self
            .presence
            .list(AGENTS, prefix)?
            .into_iter()
            .filter_map(|p| {
                let site = p.key.split('/').nth(1)?.to_owned();
                // An entry this version cannot read (a newer replica's) is
                // left out, not fatal.
                Some((site, serde_json::from_slice(&p.value).ok()?))
            })
            .collect())
    }

    /// The live agents of one site.
    pub fn site_agents(&self, tenant: &str, site: &str) -> Result<Vec<RosterEntry>, StoreError> {
        Ok(self
            .listed(&format!("{tenant}/{site}/"))?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// The live agents of `tenant`, per site.
    pub fn tenant(&self, tenant: &str) -> Result<Vec<SiteAgents>, StoreError> {
        let mut sites: std::collections::BTreeMap<String, Vec<RosterEntry>> = Default::default();
        for (site, entry) in self.listed(&format!("{tenant}/"))? {
            sites.entry(site).or_default().push(entry);
        }
        Ok(sites
            .into_iter()
            .map(|(site, agents)| {
                let wan_bps: f64 = agents.iter().map(|a| a.edge_bps).sum();
                let peer_bps: f64 = agents.iter().map(|a| a.peer_bps).sum();
                let offload = if wan_bps + peer_bps > 0.0 {
                    peer_bps / (wan_bps + peer_bps)
                } else {
                    0.0
                };
                SiteAgents {
                    site,
                    agents,
                    wan_bps,
                    offload,
                }
            })
            .collect())
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

    /// The board's rules over any presence; `a` and `b` share one (two
    /// replicas; the PostgreSQL suite runs them on a real server).
    pub(crate) fn roster_rules(a: &AgentBoard, b: &AgentBoard) {
        assert!(a.register("acme", "s1", entry("a")).unwrap().is_empty());
        assert_eq!(
            b.register("acme", "s1", entry("b")).unwrap(),
            vec![entry("a")]
        );
        assert_eq!(
            a.site_agents("acme", "s1").unwrap(),
            vec![entry("a"), entry("b")]
        );
        // Rates and the site's offload from two reports, one on each board.
        let report = |edge: u64, peers: u64| RosterEntry {
            stats: Some(AgentStats {
                bytes_from_edge: edge,
                bytes_from_peers: peers,
                ..Default::default()
            }),
            ..entry("r")
        };
        a.register("acme", "s9", report(0, 0)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        b.register("acme", "s9", report(1_000_000, 3_000_000))
            .unwrap();
        let s9 = a
            .tenant("acme")
            .unwrap()
            .into_iter()
            .find(|s| s.site == "s9")
            .unwrap();
        // 8 Mbit over the 0.6 s (or, on a busy machine, more) between the
        // two reports.
        assert!(
            (1_000_000.0..=8_000_000.0 / 0.6).contains(&s9.wan_bps),
            "{}",
            s9.wan_bps
        );
        assert!((s9.offload - 0.75).abs() < 1e-9, "{}", s9.offload);
        // Another site and another tenant do not see them.
        assert!(a.register("acme", "s2", entry("c")).unwrap().is_empty());
        assert!(b.register("globex", "s1", entry("d")).unwrap().is_empty());
        assert_eq!(b.tenant("globex").unwrap().len(), 1);
        // Moving to another site leaves the first at once.
        b.register("acme", "s2", entry("b")).unwrap();
        assert_eq!(a.site_agents("acme", "s1").unwrap(), vec![entry("a")]);
        assert_eq!(
            a.site_agents("acme", "s2").unwrap(),
            vec![entry("b"), entry("c")]
        );
        // Silent agents age out.
        std::thread::sleep(a.ttl + Duration::from_millis(100));
        assert!(a.register("acme", "s1", entry("b")).unwrap().is_empty());
        assert_eq!(b.tenant("acme").unwrap().len(), 1);
        assert_eq!(b.tenant("acme").unwrap()[0].agents.len(), 1);
    }

    #[test]
    fn roster_lists_the_sites_other_live_agents() {
        let presence: Arc<dyn Presence> = Arc::new(crate::store::MemoryPresence::default());
        let board = |p: &Arc<dyn Presence>| AgentBoard {
            presence: p.clone(),
            ttl: Duration::from_millis(1_500),
        };
        roster_rules(&board(&presence), &board(&presence));
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
