//! The site swarm: libp2p over QUIC (the same quinn/rustls stack as MoQT),
//! mDNS discovery, the site's CIDR gate, and admission.
//!
//! Confinement: a connection whose remote address lies outside the site's
//! CIDRs is refused before its handshake completes (and outbound dials to
//! such addresses too), so agents never bridge networks or talk across the
//! internet. Admission: right after connecting, the dialer opens
//! `/strom/admit/1` and both sides show their ticket from the control plane
//! (a token scoped to the tenant, subject `agent:<site>:<peer id>`). A peer
//! whose ticket does not verify, or names another tenant, site or peer id, is
//! blocked. Only admitted peers become members, and only members exchange
//! media (over MoQT, each pinning the other's certificate from its hello).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{allow_block_list, identity, mdns, Multiaddr, PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use strom_token::{Action, Verifier};
use tokio::sync::{mpsc, watch};

const ADMIT: StreamProtocol = StreamProtocol::new("/strom/admit/1");
const MAX_HELLO: usize = 16 * 1024;
const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// An admitted agent of this site.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub peer: PeerId,
    /// Its MoQT server (its address as this agent sees it, its port).
    pub moqt: SocketAddr,
    pub cert_sha256: [u8; 32],
}

pub type Members = BTreeMap<PeerId, Member>;

/// What this agent shows a peer when admitting each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub ticket: String,
    pub moqt_port: u16,
    pub cert_sha256: String,
}

/// Who this agent is, once registered with the control plane.
#[derive(Debug, Clone)]
pub struct Registration {
    pub tenant: String,
    pub site: String,
    /// The site's mode is `on` (otherwise the agent pulls from the edge alone).
    pub p2p: bool,
    pub hello: Hello,
}

/// Orders for the swarm from the rest of the agent.
#[derive(Debug)]
pub enum Command {
    /// Dial these addresses (the control plane's roster).
    Dial(PeerId, Vec<Multiaddr>),
    /// Cut a peer off for good (bad ticket, altered media).
    Block(PeerId, &'static str),
}

/// The site's networks; empty until the control plane named the site.
#[derive(Clone, Default)]
pub struct SiteNetworks(Arc<RwLock<Vec<(IpAddr, u8)>>>);

impl SiteNetworks {
    pub fn set(&self, cidrs: Vec<(IpAddr, u8)>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = cidrs;
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(net, len)| cidr_contains(*net, *len, ip))
    }

    fn check(&self, addr: &Multiaddr) -> Result<(), ConnectionDenied> {
        match ip_of(addr) {
            Some(ip) if self.contains(ip) => Ok(()),
            Some(ip) => Err(ConnectionDenied::new(OutsideSite(ip))),
            None => Err(ConnectionDenied::new(OutsideSite(IpAddr::from([
                0, 0, 0, 0,
            ])))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} is outside this agent's site")]
struct OutsideSite(IpAddr);

pub fn cidr_contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// Refuses connections to and from addresses outside the site.
struct Gate(SiteNetworks);

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0.check(remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0.check(remote)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: Option<PeerId>,
        addresses: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        for a in addresses {
            self.0.check(a)?;
        }
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0.check(addr)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gate: Gate,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    mdns: mdns::tokio::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// Settings of the swarm.
pub struct SwarmSettings {
    pub keypair: identity::Keypair,
    pub listen: Vec<Multiaddr>,
    pub networks: SiteNetworks,
    pub verifier: Arc<Verifier>,
    /// Set once the control plane answered (and on every ticket renewal).
    pub registration: watch::Receiver<Option<Registration>>,
    /// How long a silent peer connection lives (dead-peer detection).
    pub idle_timeout: Duration,
}

/// Handles to a running swarm.
pub struct SwarmHandle {
    pub members: watch::Receiver<Members>,
    pub commands: mpsc::UnboundedSender<Command>,
    /// The swarm's listen addresses as they come up.
    pub listening: watch::Receiver<Vec<Multiaddr>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Builds the swarm and runs it in the background.
pub fn start(settings: SwarmSettings) -> anyhow::Result<SwarmHandle> {
    let idle_ms = settings.idle_timeout.as_millis().clamp(300, 60_000) as u32;
    let keep_alive = (settings.idle_timeout / 5).max(Duration::from_millis(50));
    let networks = settings.networks.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(settings.keypair)
        .with_tokio()
        .with_quic_config(|mut c| {
            c.max_idle_timeout = idle_ms;
            c.keep_alive_interval = keep_alive;
            c
        })
        .with_behaviour(|key| {
            Ok(Behaviour {
                gate: Gate(networks),
                blocked: Default::default(),
                mdns: mdns::tokio::Behaviour::new(
                    mdns::Config {
                        query_interval: Duration::from_secs(5),
                        ttl: Duration::from_secs(60),
                        ..Default::default()
                    },
                    key.public().to_peer_id(),
                )?,
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .context("building the libp2p swarm")?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    for addr in &settings.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listening on {addr}"))?;
    }
    let (members_tx, members) = watch::channel(Members::new());
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (listening_tx, listening) = watch::channel(Vec::new());
    let control = swarm.behaviour().stream.new_control();
    let task = tokio::spawn(run(
        swarm,
        control,
        settings.verifier,
        settings.registration,
        members_tx,
        command_rx,
        listening_tx,
    ));
    Ok(SwarmHandle {
        members,
        commands,
        listening,
        task,
    })
}

enum Admission {
    Admitted(PeerId, Hello),
    Refused(PeerId, String),
}

async fn run(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut control: libp2p_stream::Control,
    verifier: Arc<Verifier>,
    registration: watch::Receiver<Option<Registration>>,
    members_tx: watch::Sender<Members>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    listening_tx: watch::Sender<Vec<Multiaddr>>,
) {
    let me = *swarm.local_peer_id();
    let (admissions_tx, mut admissions) = mpsc::unbounded_channel::<Admission>();
    let mut incoming = match control.accept(ADMIT) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "admission protocol already registered");
            return;
        }
    };
    // Remote address of each connected peer, and who is blocked.
    let mut remotes: HashMap<PeerId, Multiaddr> = HashMap::new();
    let mut blocked: HashSet<PeerId> = HashSet::new();
    let mut members = Members::new();
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, "peer swarm listening");
                    listening_tx.send_modify(|l| l.push(address));
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                    for (peer, addr) in found {
                        // Both sides hear each other at once: only the lower
                        // peer id dials, so a pair holds one connection, not
                        // two racing ones (the roster still dials both ways).
                        if me < peer && !blocked.contains(&peer) && !swarm.is_connected(&peer) {
                            tracing::debug!(%peer, %addr, "found by mDNS");
                            // The gate refuses addresses outside the site.
                            let _ = swarm.dial(addr);
                        }
                    }
                }
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                    remotes.insert(peer_id, endpoint.get_remote_address().clone());
                    if endpoint.is_dialer() && num_established.get() == 1 {
                        tokio::spawn(admit_outbound(
                            control.clone(),
                            peer_id,
                            verifier.clone(),
                            registration.clone(),
                            admissions_tx.clone(),
                        ));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                    remotes.remove(&peer_id);
                    if members.remove(&peer_id).is_some() {
                        tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer left");
                        members_tx.send_replace(members.clone());
                    }
                }
                SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                    tracing::debug!(remote = %send_back_addr.iter().find_map(|p| match p { libp2p::multiaddr::Protocol::Ip4(ip) => Some(strom_edge::pseudonym::ip(ip.into())), libp2p::multiaddr::Protocol::Ip6(ip) => Some(strom_edge::pseudonym::ip(ip.into())), _ => None }).unwrap_or_default(), error = %error, "incoming peer connection refused");
                }
                _ => {}
            },
            Some((peer, stream)) = incoming.next() => {
                tokio::spawn(admit_inbound(
                    stream,
                    peer,
                    verifier.clone(),
                    registration.clone(),
                    admissions_tx.clone(),
                ));
            }
            Some(admission) = admissions.recv() => match admission {
                Admission::Admitted(peer, hello) => {
                    let (Some(remote), Some(cert)) = (remotes.get(&peer).and_then(ip_of), parse_hex32(&hello.cert_sha256)) else {
                        continue;
                    };
                    let member = Member { peer, moqt: SocketAddr::new(remote, hello.moqt_port), cert_sha256: cert };
                    if members.get(&peer) != Some(&member) {
                        tracing::info!(%peer, moqt = %member.moqt, "peer admitted");
                        members.insert(peer, member);
                        members_tx.send_replace(members.clone());
                    }
                }
                Admission::Refused(peer, reason) => {
                    tracing::warn!(%peer, %reason, "peer refused and blocked");
                    block(&mut swarm, &mut blocked, &mut members, &members_tx, peer);
                }
            },
            Some(command) = commands.recv() => match command {
                Command::Dial(peer, addrs) => {
                    if peer != me && !blocked.contains(&peer) && !swarm.is_connected(&peer) {
                        for addr in addrs {
                            let _ = swarm.dial(addr);
                        }
                    }
                }
                Command::Block(peer, reason) => {
                    tracing::warn!(%peer, %reason, "peer blocked");
                    block(&mut swarm, &mut blocked, &mut members, &members_tx, peer);
                }
            },
        }
    }
}

fn block(
    swarm: &mut libp2p::Swarm<Behaviour>,
    blocked: &mut HashSet<PeerId>,
    members: &mut Members,
    members_tx: &watch::Sender<Members>,
    peer: PeerId,
) {
    blocked.insert(peer);
    swarm.behaviour_mut().blocked.block_peer(peer);
    if members.remove(&peer).is_some() {
        members_tx.send_replace(members.clone());
    }
}

/// Waits until this agent holds a ticket (registration done).
async fn own_registration(
    mut registration: watch::Receiver<Option<Registration>>,
) -> Option<Registration> {
    let r = registration.wait_for(|r| r.is_some()).await.ok()?;
    r.clone()
}

async fn admit_outbound(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    verifier: Arc<Verifier>,
    registration: watch::Receiver<Option<Registration>>,
    out: mpsc::UnboundedSender<Admission>,
) {
    let result = tokio::time::timeout(ADMIT_TIMEOUT * 3, async {
        let mine = own_registration(registration)
            .await
            .context("not registered")?;
        let mut stream = control
            .open_stream(peer, ADMIT)
            .await
            .map_err(|e| anyhow::anyhow!("opening admission stream: {e}"))?;
        write_hello(&mut stream, &mine.hello).await?;
        let theirs = tokio::time::timeout(ADMIT_TIMEOUT, read_hello(&mut stream))
            .await
            .context("no hello in time")??;
        let _ = stream.close().await;
        anyhow::Ok((mine, theirs))
    })
    .await;
    let outcome = match result {
        Ok(Ok((mine, theirs))) => judge(&verifier, &mine, peer, theirs),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %format!("{e:#}"), "admission did not complete");
            return;
        }
        Err(_) => return,
    };
    let _ = out.send(outcome);
}

async fn admit_inbound(
    mut stream: libp2p::Stream,
    peer: PeerId,
    verifier: Arc<Verifier>,
    registration: watch::Receiver<Option<Registration>>,
    out: mpsc::UnboundedSender<Admission>,
) {
    let result = tokio::time::timeout(ADMIT_TIMEOUT * 3, async {
        let theirs = tokio::time::timeout(ADMIT_TIMEOUT, read_hello(&mut stream))
            .await
            .context("no hello in time")??;
        let mine = own_registration(registration)
            .await
            .context("not registered")?;
        anyhow::Ok((mine, theirs))
    })
    .await;
    let (mine, theirs) = match result {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %format!("{e:#}"), "admission did not complete");
            return;
        }
        Err(_) => return,
    };
    let outcome = judge(&verifier, &mine, peer, theirs);
    if matches!(outcome, Admission::Admitted(..)) {
        let _ = write_hello(&mut stream, &mine.hello).await;
    }
    let _ = stream.close().await;
    let _ = out.send(outcome);
}

/// Admits `peer` when its ticket verifies and names this tenant, this site
/// and exactly that peer id.
fn judge(verifier: &Verifier, mine: &Registration, peer: PeerId, theirs: Hello) -> Admission {
    match check_ticket(verifier, mine, &peer.to_string(), &theirs.ticket) {
        Ok(()) => Admission::Admitted(peer, theirs),
        Err(reason) => Admission::Refused(peer, reason),
    }
}

/// The ticket check on its own (sans-IO).
pub fn check_ticket(
    verifier: &Verifier,
    mine: &Registration,
    peer: &str,
    ticket: &str,
) -> Result<(), String> {
    let now = time::OffsetDateTime::now_utc();
    let claims = verifier
        .verify(ticket, now)
        .map_err(|e| format!("ticket: {e}"))?;
    if verifier.revocations().revokes(&claims) {
        return Err("ticket revoked".into());
    }
    if claims.act != Action::Relay {
        return Err("ticket is not an agent ticket".into());
    }
    if claims.ten != mine.tenant {
        return Err("ticket of another tenant".into());
    }
    let expected = format!("agent:{}:{}", mine.site, peer);
    if claims.sub != expected {
        return Err("ticket names another site or peer".into());
    }
    Ok(())
}

async fn write_hello(stream: &mut libp2p::Stream, hello: &Hello) -> anyhow::Result<()> {
    let body = serde_json::to_vec(hello)?;
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_hello(stream: &mut libp2p::Stream) -> anyhow::Result<Hello> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HELLO {
        anyhow::bail!("hello of {len} bytes is too long");
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_admit_only_their_own_addresses() {
        let n = SiteNetworks::default();
        let addr: Multiaddr = "/ip4/10.77.0.12/udp/4001/quic-v1".parse().unwrap();
        assert!(n.check(&addr).is_err(), "no site yet: nobody");
        n.set(vec![("10.77.0.0".parse().unwrap(), 24)]);
        assert!(n.check(&addr).is_ok());
        for outside in [
            "/ip4/10.76.0.12/udp/4001/quic-v1",
            "/ip4/8.8.8.8/udp/4001/quic-v1",
            "/ip6/fd00::1/udp/4001/quic-v1",
            "/dns4/example.com/udp/4001/quic-v1",
        ] {
            assert!(n.check(&outside.parse().unwrap()).is_err(), "{outside}");
        }
        assert!(cidr_contains(
            "0.0.0.0".parse().unwrap(),
            0,
            "1.2.3.4".parse().unwrap()
        ));
        assert!(cidr_contains(
            "fd00::".parse().unwrap(),
            8,
            "fd12::1".parse().unwrap()
        ));
        assert!(!cidr_contains(
            "fd00::".parse().unwrap(),
            8,
            "fe80::1".parse().unwrap()
        ));
    }

    #[test]
    fn tickets_must_name_this_tenant_site_and_peer() {
        let key = strom_token::SigningKey::generate();
        let verifier = Verifier::new();
        verifier.set_keys(&strom_token::KeySet {
            keys: vec![key.public_key()],
            media: Vec::new(),
        });
        let now = time::OffsetDateTime::now_utc();
        let ticket = |tenant: &str, sub: &str, action| {
            key.mint(
                &strom_token::Grant {
                    subject: sub.into(),
                    tenant: tenant.into(),
                    event: String::new(),
                    stream: None,
                    action,
                    lifetime_secs: 600,
                    not_after: None,
                },
                now,
            )
            .unwrap()
            .0
        };
        let mine = Registration {
            tenant: "acme".into(),
            site: "s_hq".into(),
            p2p: true,
            hello: Hello {
                ticket: String::new(),
                moqt_port: 1,
                cert_sha256: String::new(),
            },
        };
        let good = ticket("acme", "agent:s_hq:peerA", Action::Relay);
        assert_eq!(check_ticket(&verifier, &mine, "peerA", &good), Ok(()));
        // Replayed by another peer, another site, another tenant, wrong kind.
        assert!(check_ticket(&verifier, &mine, "peerB", &good).is_err());
        let other_site = ticket("acme", "agent:s_branch:peerA", Action::Relay);
        assert!(check_ticket(&verifier, &mine, "peerA", &other_site).is_err());
        let other_tenant = ticket("globex", "agent:s_hq:peerA", Action::Relay);
        assert!(check_ticket(&verifier, &mine, "peerA", &other_tenant).is_err());
        let play = ticket("acme", "agent:s_hq:peerA", Action::Play);
        assert!(check_ticket(&verifier, &mine, "peerA", &play).is_err());
        // Signed by a key the control plane never published.
        let forged = strom_token::SigningKey::generate()
            .mint(
                &strom_token::Grant {
                    subject: "agent:s_hq:peerA".into(),
                    tenant: "acme".into(),
                    event: String::new(),
                    stream: None,
                    action: Action::Relay,
                    lifetime_secs: 600,
                    not_after: None,
                },
                now,
            )
            .unwrap()
            .0;
        assert!(check_ticket(&verifier, &mine, "peerA", &forged).is_err());
    }
}
