//! The site swarm: libp2p over QUIC (the same quinn/rustls stack as MoQT),
//! the site's CIDR gate, and admission. Agents find each other through the
//! control plane's roster of the site ([`Command::Dial`]), not by mDNS: the
//! roster already names every live agent of the site (mDNS does not cross
//! subnets anyway), and an mDNS responder would parse DNS packets from
//! anyone on the LAN with a DNS library that has known, unfixed advisories
//! (see docs/security.md).
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
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::timeout::TransportTimeout;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Transport as _};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{allow_block_list, identity, Multiaddr, PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use strom_token::{Action, Verifier};
use tokio::sync::{mpsc, watch};

const ADMIT: StreamProtocol = StreamProtocol::new("/strom/admit/1");
const MAX_HELLO: usize = 16 * 1024;
const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Dial and upgrade deadline of a connection (SwarmBuilder's default).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the tickets of admitted peers are checked again against the
/// revocation list: a revoked agent credential (or ticket) loses its
/// members within this much of the list reaching this agent.
const RECHECK: Duration = Duration::from_secs(1);

/// An admitted agent of this site.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub peer: PeerId,
    /// Its MoQT server (its address as this agent sees it, its port).
    pub moqt: SocketAddr,
    pub cert_sha256: [u8; 32],
}

pub(crate) type Members = BTreeMap<PeerId, Member>;

/// What this agent shows a peer when admitting each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub ticket: String,
    pub moqt_port: u16,
    pub cert_sha256: String,
}

/// Who this agent is, once registered with the control plane.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub tenant: String,
    pub site: String,
    /// The site's mode is `on` (otherwise the agent pulls from the edge alone).
    pub p2p: bool,
    pub hello: Hello,
}

/// Orders for the swarm from the rest of the agent.
#[derive(Debug)]
pub(crate) enum Command {
    /// Dial these addresses (the control plane's roster).
    Dial(PeerId, Vec<Multiaddr>),
    /// Cut a peer off for good (bad ticket, altered media).
    Block(PeerId, &'static str),
}

/// The site's networks; empty until the control plane named the site.
#[derive(Clone, Default)]
pub(crate) struct SiteNetworks(Arc<RwLock<Vec<ipnet::IpNet>>>);

impl SiteNetworks {
    pub(crate) fn set(&self, cidrs: Vec<ipnet::IpNet>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = cidrs;
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|net| net.contains(&ip))
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

pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
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
    stream: libp2p_stream::Behaviour,
}

/// Settings of the swarm.
pub(crate) struct SwarmSettings {
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
pub(crate) struct SwarmHandle {
    pub members: watch::Receiver<Members>,
    pub commands: mpsc::UnboundedSender<Command>,
    /// The swarm's listen addresses as they come up.
    pub listening: watch::Receiver<Vec<Multiaddr>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Builds the swarm and runs it in the background.
pub(crate) fn start(settings: SwarmSettings) -> anyhow::Result<SwarmHandle> {
    let idle_ms = settings.idle_timeout.as_millis().clamp(300, 60_000) as u32;
    let keep_alive = (settings.idle_timeout / 5).max(Duration::from_millis(50));
    let networks = settings.networks.clone();
    // What libp2p's SwarmBuilder (`with_tokio().with_quic_config(..)`) puts
    // together, assembled here: the builder needs libp2p's "tokio" feature,
    // whose weak features (`libp2p-mdns?/tokio`, ...) put libp2p-mdns and
    // hickory-proto into Cargo.lock although nothing builds them
    // (rust-lang/cargo#10801), and the audit reads Cargo.lock.
    let mut quic = libp2p_quic::Config::new(&settings.keypair);
    quic.max_idle_timeout = idle_ms;
    quic.keep_alive_interval = keep_alive;
    let transport = libp2p_quic::tokio::Transport::new(quic)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let behaviour = Behaviour {
        gate: Gate(networks),
        blocked: Default::default(),
        stream: libp2p_stream::Behaviour::new(),
    };
    let mut swarm = libp2p::Swarm::new(
        TransportTimeout::new(transport, CONNECTION_TIMEOUT).boxed(),
        behaviour,
        settings.keypair.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(3600)),
    );
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
    Admitted(PeerId, Hello, Box<strom_token::Claims>),
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
    // The ticket claims each member was admitted with.
    let mut admitted: HashMap<PeerId, strom_token::Claims> = HashMap::new();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                let revocations = verifier.revocations();
                let revoked: Vec<PeerId> = admitted
                    .iter()
                    .filter(|(_, claims)| revocations.revokes(claims))
                    .map(|(peer, _)| *peer)
                    .collect();
                for peer in revoked {
                    // Dropped, not blocked: the same agent may come back
                    // with a fresh credential, and is admitted anew then.
                    tracing::warn!(%peer, "peer's ticket revoked, dropping it");
                    admitted.remove(&peer);
                    if members.remove(&peer).is_some() {
                        members_tx.send_replace(members.clone());
                    }
                    let _ = swarm.disconnect_peer_id(peer);
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, "peer swarm listening");
                    listening_tx.send_modify(|l| l.push(address));
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
                    admitted.remove(&peer_id);
                    if members.remove(&peer_id).is_some() {
                        tracing::info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer left");
                        members_tx.send_replace(members.clone());
                    }
                }
                SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                    tracing::debug!(remote = %send_back_addr.iter().find_map(|p| match p { libp2p::multiaddr::Protocol::Ip4(ip) => Some(strom_relay::pseudonym::ip(ip.into())), libp2p::multiaddr::Protocol::Ip6(ip) => Some(strom_relay::pseudonym::ip(ip.into())), _ => None }).unwrap_or_default(), error = %error, "incoming peer connection refused");
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
                Admission::Admitted(peer, hello, claims) => {
                    let (Some(remote), Some(cert)) = (remotes.get(&peer).and_then(ip_of), parse_hex32(&hello.cert_sha256)) else {
                        continue;
                    };
                    let member = Member { peer, moqt: SocketAddr::new(remote, hello.moqt_port), cert_sha256: cert };
                    admitted.insert(peer, *claims);
                    if members.get(&peer) != Some(&member) {
                        tracing::info!(%peer, moqt = %member.moqt, "peer admitted");
                        members.insert(peer, member);
                        members_tx.send_replace(members.clone());
                    }
                }
                Admission::Refused(peer, reason) => {
                    tracing::warn!(%peer, %reason, "peer refused and blocked");
                    admitted.remove(&peer);
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
                    admitted.remove(&peer);
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
        Ok(claims) => Admission::Admitted(peer, theirs, Box::new(claims)),
        Err(reason) => Admission::Refused(peer, reason),
    }
}

/// The ticket check on its own (sans-IO).
pub(crate) fn check_ticket(
    verifier: &Verifier,
    mine: &Registration,
    peer: &str,
    ticket: &str,
) -> Result<strom_token::Claims, String> {
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
    Ok(claims)
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

pub(crate) fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
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
        n.set(vec!["10.77.0.0/24".parse().unwrap()]);
        assert!(n.check(&addr).is_ok());
        for outside in [
            "/ip4/10.76.0.12/udp/4001/quic-v1",
            "/ip4/8.8.8.8/udp/4001/quic-v1",
            "/ip6/fd00::1/udp/4001/quic-v1",
            "/dns4/example.com/udp/4001/quic-v1",
        ] {
            assert!(n.check(&outside.parse().unwrap()).is_err(), "{outside}");
        }
        // Everything, and IPv6 by prefix.
        n.set(vec![
            "0.0.0.0/0".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        for inside in ["/ip4/1.2.3.4/udp/1/quic-v1", "/ip6/fd12::1/udp/1/quic-v1"] {
            assert!(n.check(&inside.parse().unwrap()).is_ok(), "{inside}");
        }
        assert!(n
            .check(&"/ip6/fe80::1/udp/1/quic-v1".parse().unwrap())
            .is_err());
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
                    role: None,
                    via: None,
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
        assert!(check_ticket(&verifier, &mine, "peerA", &good).is_ok());
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
                    role: None,
                    via: None,
                },
                now,
            )
            .unwrap()
            .0;
        assert!(check_ticket(&verifier, &mine, "peerA", &forged).is_err());
    }

    /// A member whose ticket (or the agent credential it was minted from)
    /// is revoked is dropped within the recheck period, over real QUIC.
    #[tokio::test]
    async fn a_member_whose_credential_is_revoked_is_dropped() {
        let key = strom_token::SigningKey::generate();
        let keys = strom_token::KeySet {
            keys: vec![key.public_key()],
            media: Vec::new(),
        };
        let agent = |credential: &str| {
            let keypair = identity::Keypair::generate_ed25519();
            let peer = keypair.public().to_peer_id();
            let (ticket, _) = key
                .mint(
                    &strom_token::Grant {
                        subject: format!("agent:s_hq:{peer}"),
                        tenant: "acme".into(),
                        event: String::new(),
                        stream: None,
                        action: Action::Relay,
                        lifetime_secs: 600,
                        not_after: None,
                        role: None,
                        via: Some(credential.into()),
                    },
                    time::OffsetDateTime::now_utc() - time::Duration::seconds(5),
                )
                .unwrap();
            let verifier = Arc::new(Verifier::new());
            verifier.set_keys(&keys);
            let networks = SiteNetworks::default();
            networks.set(vec!["127.0.0.0/8".parse().unwrap()]);
            let (_tx, registration) = watch::channel(Some(Registration {
                tenant: "acme".into(),
                site: "s_hq".into(),
                p2p: true,
                hello: Hello {
                    ticket,
                    moqt_port: 4443,
                    cert_sha256: "00".repeat(32),
                },
            }));
            std::mem::forget(_tx);
            let handle = start(SwarmSettings {
                keypair,
                listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
                networks,
                verifier: verifier.clone(),
                registration,
                idle_timeout: Duration::from_secs(10),
            })
            .unwrap();
            (peer, verifier, handle)
        };
        let (_a, verifier_a, mut a) = agent("cred-a");
        let (b, _verifier_b, mut b_handle) = agent("cred-b");
        let addr = b_handle
            .listening
            .wait_for(|l| !l.is_empty())
            .await
            .unwrap()[0]
            .clone();
        a.commands.send(Command::Dial(b, vec![addr])).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            a.members.wait_for(|m| m.contains_key(&b)),
        )
        .await
        .expect("b admitted")
        .unwrap();

        // Another credential's revocation leaves b alone.
        let revoke = |seq: u64, id: &str| strom_token::revocation::RevocationFeed {
            seq,
            entries: vec![strom_token::Revocation {
                seq,
                kind: strom_token::RevocationKind::Subject,
                tenant: "acme".into(),
                id: id.into(),
                issued_before: time::OffsetDateTime::now_utc(),
                keep_until: None,
            }],
            reset: false,
            more: false,
        };
        verifier_a.revocations_mut().apply(&revoke(1, "cred-x"));
        tokio::time::sleep(RECHECK * 2).await;
        assert!(a.members.borrow().contains_key(&b));

        let revoked = std::time::Instant::now();
        verifier_a.revocations_mut().apply(&revoke(2, "cred-b"));
        tokio::time::timeout(
            Duration::from_secs(5),
            a.members.wait_for(|m| !m.contains_key(&b)),
        )
        .await
        .expect("b dropped within 5 s")
        .unwrap();
        assert!(revoked.elapsed() <= RECHECK * 2, "{:?}", revoked.elapsed());
        b_handle.task.abort();
        a.task.abort();
        let _ = &mut b_handle;
    }
}
