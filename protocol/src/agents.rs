//! What a peer-agent and the control plane say to each other when the agent
//! registers (every `register_every_secs`).

use serde::{Deserialize, Serialize};

use crate::EventFigures;

/// A LAN site's peer-to-peer mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum P2pMode {
    On,
    Off,
    /// Receives from peers but does not upload.
    Leech,
}

/// A tenant's LAN site: the networks its agents are found in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Site {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The site's networks, e.g. `10.1.0.0/16`.
    pub cidrs: Vec<String>,
    pub p2p: P2pMode,
}

/// An agent registers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The agent's libp2p peer id (base58).
    pub peer_id: String,
    /// The agent's LAN addresses; the first inside a site decides the site.
    pub addrs: Vec<String>,
    /// libp2p listen addresses (multiaddrs) other agents dial.
    pub listen: Vec<String>,
    /// UDP port of the agent's MoQT/WebTransport server.
    pub moqt_port: u16,
    /// TCP port of the agent's HTTPS server (LL-HLS for browsers).
    pub http_port: u16,
    /// The agent's counters since it started; rates come from two
    /// consecutive registrations.
    #[serde(default)]
    pub stats: Option<AgentStats>,
}

/// What an agent reports with each registration. No personal data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentStats {
    /// Media bytes received from the edge (crossing the site's WAN link).
    pub bytes_from_edge: u64,
    /// Media bytes received from other agents (over the LAN).
    pub bytes_from_peers: u64,
    /// Admitted agents connected now.
    pub peers: u32,
    /// Whether this agent pulls from the edge (the site's leader).
    pub upstream_is_edge: bool,
    /// Objects refused for a wrong or missing origin signature.
    pub objects_rejected: u64,
    /// Times the agent's parent stalled or vanished and it moved.
    pub stalls: u64,
    /// Viewers at the agent per event, and their players' QoE since the
    /// last registration (kept for the dashboard, not in the roster).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventFigures>,
}

/// The control plane's answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterAnswer {
    pub site: Site,
    /// A relay token scoped to the tenant, subject `agent:<site>:<peer id>`:
    /// shown to other agents (they check it) and to edges.
    pub ticket: String,
    pub ticket_expires_in_secs: i64,
    /// The site's other agents heard from recently.
    pub roster: Vec<RosterEntry>,
    pub register_every_secs: u64,
}

/// An agent as the roster and the owners' view show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RosterEntry {
    pub peer_id: String,
    pub listen: Vec<String>,
    /// The address (inside the site) the agent was registered with.
    pub addr: String,
    pub moqt_port: u16,
    pub http_port: u16,
    /// Last reported counters, and the rates since the report before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<AgentStats>,
    /// Bits per second received from the edge / from peers lately.
    #[serde(default)]
    pub edge_bps: f64,
    #[serde(default)]
    pub peer_bps: f64,
}

impl RosterEntry {
    /// The agent's HTTPS base URL for browsers (LL-HLS, webtransport.json).
    pub fn base_url(&self) -> String {
        match self.addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("https://[{ip}]:{}/", self.http_port),
            _ => format!("https://{}:{}/", self.addr, self.http_port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_reach_an_agent_at_its_site_address() {
        let mut entry = RosterEntry {
            peer_id: "p".into(),
            listen: vec![],
            addr: "10.1.2.3".into(),
            moqt_port: 4443,
            http_port: 8443,
            stats: None,
            edge_bps: 0.0,
            peer_bps: 0.0,
        };
        assert_eq!(entry.base_url(), "https://10.1.2.3:8443/");
        entry.addr = "fd00::7".into();
        assert_eq!(entry.base_url(), "https://[fd00::7]:8443/");
    }

    #[test]
    fn what_an_agent_sends_is_what_the_control_plane_reads() {
        let req = RegisterRequest {
            peer_id: "12D3KooW".into(),
            addrs: vec!["10.0.0.2".into()],
            listen: vec!["/ip4/10.0.0.2/udp/4001/quic-v1".into()],
            moqt_port: 4443,
            http_port: 8443,
            stats: Some(AgentStats {
                bytes_from_edge: 1,
                ..AgentStats::default()
            }),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<RegisterRequest>(&json).unwrap(), req);
        assert!(
            !json.contains("events"),
            "empty events are left out: {json}"
        );
    }
}
