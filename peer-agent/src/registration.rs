//! Registering with the control plane: now, and then every few seconds,
//! with this agent's addresses and its viewers' figures; the answer (site,
//! ticket, roster, mode) goes to the swarm.

use super::*;

/// The registration duty, with what it needs named.
pub(crate) struct Registrar {
    pub link: ControlPlaneLink,
    pub me: PeerId,
    pub listening: watch::Receiver<Vec<Multiaddr>>,
    pub p2p_listen: SocketAddr,
    pub moqt_port: u16,
    pub http_port: u16,
    pub cert_sha256: String,
    pub networks: SiteNetworks,
    pub registration: watch::Sender<Option<Registration>>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub counters: Arc<AgentCounters>,
    pub members: watch::Receiver<Members>,
    pub tally: strom_relay::EventTally,
}

impl Registrar {
    /// Registers now and then every few seconds; hands the answer to the swarm.
    pub(crate) async fn run(self) {
        let Registrar {
            link,
            me,
            listening,
            p2p_listen,
            moqt_port,
            http_port,
            cert_sha256,
            networks,
            registration,
            commands,
            counters,
            members,
            mut tally,
        } = self;
        let client = match strom_relay::control_plane_client(&link, Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "control plane client");
                return;
            }
        };
        let mut endpoints = link.endpoints();
        let mut every;
        loop {
            let listen: Vec<Multiaddr> = listening.borrow().clone();
            let addrs: Vec<String> = if p2p_listen.ip().is_unspecified() {
                listen
                    .iter()
                    .filter_map(swarm::ip_of)
                    .filter(|ip| !ip.is_loopback())
                    .map(|ip| ip.to_string())
                    .collect()
            } else {
                vec![p2p_listen.ip().to_string()]
            };
            if addrs.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let body = RegisterRequest {
                peer_id: me.to_string(),
                addrs,
                listen: listen
                    .iter()
                    .filter(|m| swarm::ip_of(m).is_some_and(|ip| !ip.is_loopback()))
                    .map(|m| m.to_string())
                    .collect(),
                moqt_port,
                http_port,
                stats: Some(AgentStats {
                    bytes_from_edge: counters.bytes_from_edge.load(Ordering::Relaxed),
                    bytes_from_peers: counters.bytes_from_peers.load(Ordering::Relaxed),
                    peers: members.borrow().len() as u32,
                    upstream_is_edge: counters.upstream_is_edge.load(Ordering::Relaxed) == 1,
                    objects_rejected: counters.objects_rejected.load(Ordering::Relaxed),
                    stalls: counters.stalls.load(Ordering::Relaxed),
                    // QoE over the last 15 s: a failed registration loses
                    // nothing the next one (2 s later) does not carry.
                    events: tally.figures(),
                }),
            };
            let url = match endpoints.url(strom_protocol::paths::AGENT_REGISTER) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(error = %e, "control plane URL");
                    return;
                }
            };
            // Whether a failure is the replica's (no answer, 5xx): then the
            // next replica is asked at once.
            let mut replica = true;
            let answer = async {
                let response = client
                    .post(url)
                    .bearer_auth(&link.credential)
                    .json(&body)
                    .send()
                    .await?;
                let status = response.status();
                replica = !status.is_client_error();
                if !status.is_success() {
                    let text = response.text().await.unwrap_or_default();
                    anyhow::bail!(
                        "control plane answered {status}: {}",
                        text.chars().take(300).collect::<String>()
                    );
                }
                Ok(response.json::<RegisterAnswer>().await?)
            }
            .await;
            match answer {
                Ok(a) => {
                    let first = registration.borrow().is_none();
                    let p2p_on = a.site.p2p == P2pMode::On;
                    networks.set(if p2p_on {
                        a.site.cidrs.iter().filter_map(|c| c.parse().ok()).collect()
                    } else {
                        Vec::new()
                    });
                    if first {
                        tracing::info!(site = %a.site.id, p2p = ?a.site.p2p, roster = a.roster.len(), "registered with the control plane");
                    }
                    registration.send_replace(Some(Registration {
                        tenant: a.site.tenant.clone(),
                        site: a.site.id.clone(),
                        p2p: p2p_on,
                        hello: swarm::Hello {
                            ticket: a.ticket,
                            moqt_port,
                            cert_sha256: cert_sha256.clone(),
                        },
                    }));
                    if p2p_on {
                        for entry in a.roster {
                            let (Ok(peer), addrs) = (
                                entry.peer_id.parse::<PeerId>(),
                                entry
                                    .listen
                                    .iter()
                                    .filter_map(|m| m.parse::<Multiaddr>().ok())
                                    .collect::<Vec<_>>(),
                            ) else {
                                continue;
                            };
                            let _ = commands.send(Command::Dial(peer, addrs));
                        }
                    }
                    every = Duration::from_secs(a.register_every_secs.clamp(2, 60));
                    endpoints.succeeded();
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), control_plane = %endpoints.base(), "registration with the control plane failed");
                    every = Duration::from_secs(2);
                    if replica && endpoints.failed() == strom_relay::NextReplica::TryNow {
                        every = Duration::ZERO;
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}
