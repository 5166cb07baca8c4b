#![warn(unreachable_pub)]
//! strom's peer-agent: runs on machines inside a corporate LAN and shares one
//! copy of each stream between the agents of a site (the peer-assisted eCDN).
//!
//! An agent registers with the control plane (with its tenant's agent
//! credential) and learns its site, a ticket and the site's roster; it finds
//! the site's other agents by mDNS and by that roster, and admits only those
//! whose ticket names the same tenant and site ((`swarm`)). The admitted
//! agents form a tree (`topology`): one pulls from the edge, the others
//! from each other, over MoQT (`media`). Each agent serves the browsers of
//! its LAN exactly like an edge (MoQT/WebTransport and LL-HLS, the same
//! playback tokens), because it embeds the edge's cache and servers.

mod media;
mod parents;
mod registration;
mod repair;
mod repairing;
mod swarm;
mod topology;
mod tracks;

pub use media::AgentCounters;

use parents::ParentChoice;
use registration::Registrar;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use libp2p::{identity, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use strom_protocol::{AgentStats, P2pMode, RegisterAnswer, RegisterRequest};
use strom_relay::metrics::{Figure, Scrape, ServerCounters};
use strom_relay::{
    http, monitoring, tls, AbortOnDrop, Access, Broadcasts, CacheSettings, ControlPlaneLink, Role,
    ServingSettings, TlsFiles, UpstreamSettings,
};
use tokio::sync::{mpsc, watch};

use media::{MediaContext, PeerEvent, Target};
use repairing::RepairTarget;
use swarm::{Command, Members, Registration, SiteNetworks};
use topology::{Parent, Suspicions};

/// How long a peer that fell silent or was unreachable is passed over.
const SUSPECT_FOR: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PeerAgentConfig {
    /// The control plane; `credential` is the tenant's agent credential.
    pub control_plane: Option<ControlPlaneLink>,
    /// The edge the site's leader pulls from (and every agent falls back to).
    pub edge: UpstreamSettings,
    /// libp2p (QUIC) between agents.
    pub p2p_listen: SocketAddr,
    /// MoQT/WebTransport for browsers and other agents.
    pub moqt_listen: SocketAddr,
    /// LL-HLS and `/webtransport.json` for the LAN's browsers (no `/metrics`).
    pub http_listen: SocketAddr,
    pub http_tls: bool,
    /// `/metrics`, `/healthz` and `/readyz` for monitoring (loopback only
    /// unless `metrics_allow_non_loopback`); none to turn it off.
    pub metrics_listen: Option<SocketAddr>,
    /// Allow a `metrics_listen` that is not loopback (its series name the
    /// tenant's live events, without authentication).
    pub metrics_allow_non_loopback: bool,
    pub tls: Option<TlsFiles>,
    /// The most agents one agent feeds.
    pub fanout: usize,
    /// A peer silent this long on the libp2p connection has left.
    pub peer_timeout_ms: u64,
    /// A live track with nothing new from its parent for this long is
    /// fetched from the repair source (the playback deadline, P2P-4).
    pub repair_after_ms: u64,
    #[serde(flatten)]
    pub cache: CacheSettings,
    #[serde(flatten)]
    pub serving: ServingSettings,
    /// Testing only: behave like a hostile agent (alter every object it
    /// forwards, and push to the front of the site's order).
    pub tamper: bool,
}

impl Default for PeerAgentConfig {
    fn default() -> Self {
        Self {
            control_plane: None,
            edge: UpstreamSettings::default(),
            p2p_listen: "0.0.0.0:4001".parse().expect("static address"),
            moqt_listen: "0.0.0.0:4443".parse().expect("static address"),
            http_listen: "0.0.0.0:8443".parse().expect("static address"),
            http_tls: true,
            // The shipped configuration turns it on (127.0.0.1:8083); off
            // by default here so that embedders and tests choose a port.
            metrics_listen: None,
            metrics_allow_non_loopback: false,
            tls: None,
            fanout: 16,
            peer_timeout_ms: 400,
            repair_after_ms: 300,
            cache: CacheSettings::default(),
            serving: ServingSettings::default(),
            tamper: false,
        }
    }
}

impl PeerAgentConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let link = self.control_plane.as_ref().context(
            "peer_agent.control_plane is missing: agents register with the control plane (url, credential)",
        )?;
        strom_relay::validate_control_plane(Role::Agent, link)?;
        self.edge.resolve().context("peer_agent.edge")?;
        if !(1..=256).contains(&self.fanout) {
            anyhow::bail!("peer_agent.fanout = {} must be 1 to 256", self.fanout);
        }
        if !(300..=60_000).contains(&self.peer_timeout_ms) {
            anyhow::bail!(
                "peer_agent.peer_timeout_ms = {} must be 300 to 60000",
                self.peer_timeout_ms
            );
        }
        if !(50..=5_000).contains(&self.repair_after_ms) {
            anyhow::bail!(
                "peer_agent.repair_after_ms = {} must be 50 to 5000",
                self.repair_after_ms
            );
        }
        if !self.http_tls && !self.http_listen.ip().is_loopback() {
            anyhow::bail!(
                "peer_agent.http_listen = {} is not loopback: plain HTTP is allowed on loopback only, set http_tls = true",
                self.http_listen
            );
        }
        strom_relay::monitoring::validate_listen(
            Role::Agent,
            self.metrics_listen,
            self.metrics_allow_non_loopback,
        )?;
        self.cache.validate("peer_agent")?;
        self.serving.validate("peer_agent")?;
        Ok(())
    }
}

/// The agent's libp2p identity, kept in the data directory (0600).
fn load_identity(data_dir: &Path, tamper: bool) -> anyhow::Result<identity::Keypair> {
    if tamper {
        // A hostile agent grinds an identity that sorts first in its site.
        loop {
            let k = identity::Keypair::generate_ed25519();
            let r = topology::rank(&k.public().to_peer_id().to_bytes());
            if r[0] == 0 && r[1] < 16 {
                return Ok(k);
            }
        }
    }
    let path = data_dir.join("peer-identity.key");
    match std::fs::read(&path) {
        Ok(mut bytes) => identity::Keypair::ed25519_from_bytes(&mut bytes)
            .with_context(|| format!("{} is not an Ed25519 secret key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = identity::ed25519::Keypair::generate();
            let secret = keypair.secret();
            write_private(&path, secret.as_ref())?;
            Ok(keypair.into())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// A loaded agent: identity, sockets and token access, ready to run.
pub struct PeerAgent {
    config: PeerAgentConfig,
    link: ControlPlaneLink,
    keypair: identity::Keypair,
    access: Arc<Access>,
    moqt: strom_relay::MoqtServer,
    http: tokio::net::TcpListener,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Option<tokio::net::TcpListener>,
    pub cert_sha256: String,
    pub broadcasts: Arc<Broadcasts>,
    pub counters: Arc<AgentCounters>,
}

impl PeerAgent {
    pub async fn load(config: PeerAgentConfig, data_dir: &Path) -> anyhow::Result<Self> {
        config.validate()?;
        let link = config.control_plane.clone().expect("validated");
        let keypair = load_identity(data_dir, config.tamper)?;
        let access = Arc::new(
            Access::connect(link.clone(), strom_relay::EDGE_SESSIONS, data_dir)
                .await
                .context("peer_agent.control_plane")?,
        );
        let identity = TlsFiles::identity(config.tls.as_ref(), data_dir)?;
        let moqt = strom_relay::MoqtServer::bind(
            config.moqt_listen,
            identity.server_config(&strom_relay::server_alpns())?,
        )?;
        let http = http::bind(config.http_listen).await?;
        let http_tls = if config.http_tls {
            Some(Arc::new(identity.server_config(&[b"h2", b"http/1.1"])?))
        } else {
            None
        };
        let metrics = monitoring::bind(Role::Agent, config.metrics_listen).await?;
        Ok(Self {
            config,
            link,
            keypair,
            access,
            moqt,
            http,
            http_tls,
            metrics,
            cert_sha256: identity.sha256_hex(),
            broadcasts: Broadcasts::new(),
            counters: Arc::new(AgentCounters::default()),
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// Where `/metrics` is served (`metrics_listen`), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until a part fails (an error naming it).
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `stop` resolves, then closes its MoQT sessions; or
    /// until a part fails (an error naming it).
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let me = self.peer_id();
        let moqt_closer = self.moqt.closer();
        let mut parts = strom_service::Tasks::new();
        let moqt_addr = self.moqt.local_addr()?;
        let http_addr = self.http.local_addr()?;
        let edge_upstream = self.config.edge.resolve()?;
        let networks = SiteNetworks::default();
        let (registration_tx, registration) = watch::channel(None::<Registration>);
        let listen: Multiaddr = multiaddr_of(self.config.p2p_listen);
        let swarm = swarm::start(swarm::SwarmSettings {
            keypair: self.keypair.clone(),
            listen: vec![listen],
            networks: networks.clone(),
            verifier: self.access.verifier().clone(),
            registration: registration.clone(),
            idle_timeout: Duration::from_millis(self.config.peer_timeout_ms),
        })?;
        tracing::info!(
            peer_id = %me,
            moqt = %moqt_addr,
            http = %http_addr,
            metrics = %self.metrics_addr().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            cert_sha256 = %self.cert_sha256,
            "peer-agent ready"
        );
        let server_counters = Arc::new(ServerCounters::new(Role::Agent));
        let hls_viewers = Arc::new(strom_relay::HlsViewers::default());
        let tally = strom_relay::EventTally::new(server_counters.clone(), hls_viewers.clone());
        parts.spawn_loop(
            "registration",
            Registrar {
                link: self.link.clone(),
                me,
                listening: swarm.listening.clone(),
                p2p_listen: self.config.p2p_listen,
                moqt_port: moqt_addr.port(),
                http_port: http_addr.port(),
                cert_sha256: self.cert_sha256.clone(),
                networks,
                registration: registration_tx,
                commands: swarm.commands.clone(),
                counters: self.counters.clone(),
                members: swarm.members.clone(),
                tally,
            }
            .run(),
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        let (targets_tx, targets) = watch::channel(None::<Target>);
        let (repair_targets_tx, repair_targets) = watch::channel(None::<RepairTarget>);
        let (repair_sessions_tx, repair_sessions) = watch::channel(None);
        parts.spawn_loop(
            "repair session",
            repairing::keep_repair_session(repair_targets, repair_sessions_tx),
        );
        parts.spawn_loop(
            "parent choice",
            ParentChoice {
                me,
                fanout: self.config.fanout,
                members: swarm.members.clone(),
                registration: registration.clone(),
                events,
                commands: swarm.commands.clone(),
                targets: targets_tx,
                repair_targets: repair_targets_tx,
                edge: edge_upstream,
                counters: self.counters.clone(),
            }
            .run(),
        );
        let limits = self
            .config
            .cache
            .limits(repair::gap_wait(Duration::from_millis(
                self.config.repair_after_ms,
            )));
        let media_ctx = MediaContext {
            broadcasts: self.broadcasts.clone(),
            counters: self.counters.clone(),
            limits,
            idle: self.config.serving.idle(),
            verifier: self.access.verifier().clone(),
            events: events_tx,
            repair_after: Duration::from_millis(self.config.repair_after_ms),
            repairs: repair_sessions,
            tamper: self.config.tamper,
        };
        parts.spawn_loop("media", media::run(targets.clone(), media_ctx));
        parts.spawn_loop(
            "status log",
            log_status(
                self.counters.clone(),
                server_counters.clone(),
                swarm.members.clone(),
                targets.clone(),
            ),
        );
        let metrics_counters = self.counters.clone();
        let metrics_members = swarm.members.clone();
        let metrics_site = registration.clone();
        let metrics_access = self.access.clone();
        if let Some(listener) = self.metrics {
            parts.spawn_loop(
                "metrics server",
                monitoring::serve(
                    listener,
                    monitoring::Monitoring {
                        role: Role::Agent,
                        broadcasts: self.broadcasts.clone(),
                        counters: server_counters.clone(),
                        extra_metrics: Some(Arc::new(move |scrape| {
                            let site = metrics_site
                                .borrow()
                                .as_ref()
                                .map(|r| (r.tenant.clone(), r.site.clone()));
                            collect_metrics(
                                scrape,
                                &metrics_counters,
                                metrics_members.borrow().len(),
                                site.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
                            );
                            metrics_access.collect_metrics(scrape);
                        })),
                    },
                ),
            );
        }
        let state = http::HttpState {
            role: Role::Agent,
            broadcasts: self.broadcasts.clone(),
            counters: server_counters.clone(),
            part_target: self.config.serving.hls_part_target_secs,
            window: self.config.serving.hls_window,
            access: Some(self.access.clone()),
            secure_cookies: self.http_tls.is_some(),
            webtransport: Some(http::WebTransportInfo {
                port: moqt_addr.port(),
                cert_sha256: self.cert_sha256.clone(),
            }),
            hls_viewers,
            vod: None,
        };
        parts.spawn_loop("HTTP server", http::serve(self.http, self.http_tls, state));
        parts.spawn_loop(
            "MoQT server",
            self.moqt
                .run(self.broadcasts, server_counters, Some(self.access)),
        );
        let mut swarm_task = AbortOnDrop(swarm.task);
        parts.spawn_loop("peer swarm", async move {
            let _ = (&mut swarm_task.0).await;
        });
        parts.run_until(stop).await?;
        moqt_closer.close(Duration::from_secs(1)).await;
        tracing::info!("peer-agent stopped");
        Ok(())
    }
}

fn multiaddr_of(addr: SocketAddr) -> Multiaddr {
    let mut m = Multiaddr::empty();
    m.push(match addr.ip() {
        IpAddr::V4(ip) => libp2p::multiaddr::Protocol::Ip4(ip),
        IpAddr::V6(ip) => libp2p::multiaddr::Protocol::Ip6(ip),
    });
    m.push(libp2p::multiaddr::Protocol::Udp(addr.port()));
    m.push(libp2p::multiaddr::Protocol::QuicV1);
    m
}

async fn log_status(
    counters: Arc<AgentCounters>,
    server: Arc<ServerCounters>,
    members: watch::Receiver<Members>,
    targets: watch::Receiver<Option<Target>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let parent = match targets.borrow().as_ref() {
            Some(t) => t.parent.to_string(),
            None => "none".to_owned(),
        };
        tracing::info!(
            parent = %parent,
            peers = members.borrow().len(),
            bytes_from_edge = counters.bytes_from_edge.load(Ordering::Relaxed),
            bytes_from_peers = counters.bytes_from_peers.load(Ordering::Relaxed),
            bytes_to_viewers = server.moqt_bytes_out.load(Ordering::Relaxed),
            objects_verified = counters.objects_verified.load(Ordering::Relaxed),
            objects_rejected = counters.objects_rejected.load(Ordering::Relaxed),
            switches = counters.parent_switches.load(Ordering::Relaxed),
            objects_repaired = counters.objects_repaired.load(Ordering::Relaxed),
            repair_bytes_from_edge = counters.repair_bytes_from_edge.load(Ordering::Relaxed),
            "agent status"
        );
    }
}

/// Adds the agent's own counters (P2P-6) to the page, labelled with the
/// tenant and site ids once the control plane has placed the agent.
pub fn collect_metrics(
    scrape: &Scrape,
    c: &AgentCounters,
    peers: usize,
    site: Option<(&str, &str)>,
) {
    let (labels, values): (&[&str], Vec<&str>) = match site {
        Some((tenant, site)) => (&["tenant", "site"], vec![tenant, site]),
        None => (&[], vec![]),
    };
    let edge = c.bytes_from_edge.load(Ordering::Relaxed);
    let peer = c.bytes_from_peers.load(Ordering::Relaxed);
    let offload = if edge + peer == 0 {
        0.0
    } else {
        peer as f64 / (edge + peer) as f64
    };
    let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed) as f64;
    let rows = [
        (
            "strom_agent_edge_bytes_total",
            true,
            "Media bytes received from the edge.",
            edge as f64,
        ),
        (
            "strom_agent_peer_bytes_total",
            true,
            "Media bytes received from other agents.",
            peer as f64,
        ),
        (
            "strom_agent_offload_ratio",
            false,
            "Share of media bytes received from peers.",
            offload,
        ),
        (
            "strom_agent_peers",
            false,
            "Admitted agents of this site connected now.",
            peers as f64,
        ),
        (
            "strom_agent_upstream_is_edge",
            false,
            "1 when this agent pulls from the edge (the site's leader).",
            load(&c.upstream_is_edge),
        ),
        (
            "strom_agent_parent_switches_total",
            true,
            "Times this agent changed the agent or edge it pulls from.",
            load(&c.parent_switches),
        ),
        (
            "strom_agent_stalls_total",
            true,
            "Times a parent stalled or could not be reached and the agent moved.",
            load(&c.stalls),
        ),
        (
            "strom_agent_repaired_objects_total",
            true,
            "Objects fetched from the repair source because the parent lagged past the deadline.",
            load(&c.objects_repaired),
        ),
        (
            "strom_agent_repair_edge_bytes_total",
            true,
            "Bytes of repair fetched from the edge (only the standby repairs from the edge).",
            load(&c.repair_bytes_from_edge),
        ),
        (
            "strom_agent_objects_verified_total",
            true,
            "Objects whose origin signature held.",
            load(&c.objects_verified),
        ),
        (
            "strom_agent_objects_rejected_total",
            true,
            "Objects refused for a missing or wrong signature.",
            load(&c.objects_rejected),
        ),
    ];
    for (name, counter, help, value) in rows {
        Figure::new(scrape, name, help, counter, labels).set_at(&values, value);
    }
}
