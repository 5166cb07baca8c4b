#![warn(unreachable_pub)]
//! strom-edge: the edge service. It pulls broadcasts from upstreams (origins
//! or parent edges) on demand, keeps their newest groups in the relay's
//! cache, and serves it over MoQT (raw QUIC and WebTransport) and LL-HLS.
//! Everything it is made of lives in `strom-relay`; this crate is its
//! configuration and its start-up.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use strom_relay::metrics::ServerCounters;
use strom_relay::{
    http, monitoring, upstream, validate_control_plane, Access, Broadcasts, CacheLimits,
    CacheSettings, ControlPlaneLink, Role, ServingSettings, TlsFiles, UpstreamSettings,
};

/// The `[edge]` section. Unknown keys are refused when the file is read
/// (`strom::config`), not here: serde cannot refuse them next to `flatten`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EdgeConfig {
    pub moqt_listen: SocketAddr,
    /// LL-HLS, recordings and QoE beacons for viewers (no `/metrics`).
    pub http_listen: SocketAddr,
    pub http_tls: bool,
    /// `/metrics`, `/healthz` and `/readyz` for monitoring (loopback only
    /// unless `metrics_allow_non_loopback`); none to turn it off.
    pub metrics_listen: Option<SocketAddr>,
    /// Allow a `metrics_listen` that is not loopback (its series name every
    /// tenant's live events, without authentication).
    pub metrics_allow_non_loopback: bool,
    pub tls: Option<TlsFiles>,
    pub upstream: Vec<UpstreamSettings>,
    #[serde(flatten)]
    pub cache: CacheSettings,
    #[serde(flatten)]
    pub serving: ServingSettings,
    /// When set, viewers need playback tokens (MoQT and HLS), lower-tier
    /// edges relay tokens, and this edge presents `credential` upstream.
    pub control_plane: Option<ControlPlaneLink>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            moqt_listen: "127.0.0.1:4443".parse().expect("static address"),
            http_listen: "127.0.0.1:8080".parse().expect("static address"),
            http_tls: false,
            // The shipped configuration turns it on (127.0.0.1:8082); off
            // by default here so that embedders and tests choose a port.
            metrics_listen: None,
            metrics_allow_non_loopback: false,
            tls: None,
            upstream: Vec::new(),
            cache: CacheSettings::default(),
            serving: ServingSettings::default(),
            control_plane: None,
        }
    }
}

impl EdgeConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.serving.validate("edge")?;
        self.cache.validate("edge")?;
        if !self.http_tls && !self.http_listen.ip().is_loopback() {
            anyhow::bail!(
                "edge.http_listen = {} is not loopback: plain HTTP is allowed on loopback only, set http_tls = true",
                self.http_listen
            );
        }
        monitoring::validate_listen(
            Role::Edge,
            self.metrics_listen,
            self.metrics_allow_non_loopback,
        )?;
        for u in &self.upstream {
            u.resolve()?;
        }
        if let Some(link) = &self.control_plane {
            validate_control_plane(Role::Edge, link)?;
        }
        Ok(())
    }

    pub fn limits(&self) -> CacheLimits {
        // A missing group is not yet waited for on edges: see
        // docs/architecture.md ("Repair at the deadline").
        self.cache.limits(Duration::ZERO)
    }
}

/// A running edge: bound sockets, shared cache, counters.
pub struct Edge {
    config: EdgeConfig,
    moqt: strom_relay::MoqtServer,
    http: tokio::net::TcpListener,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Option<tokio::net::TcpListener>,
    upstreams: Vec<upstream::UpstreamConfig>,
    vod: Option<Arc<dyn strom_relay::VodSource>>,
    access: Option<Arc<Access>>,
    pub broadcasts: Arc<Broadcasts>,
    pub counters: Arc<ServerCounters>,
    pub cert_sha256: String,
}

impl Edge {
    /// Validates the configuration and binds every socket. With a control
    /// plane configured, fetches its key set first (and keeps it current).
    pub async fn load(config: EdgeConfig, data_dir: &Path) -> anyhow::Result<Self> {
        config.validate()?;
        let access = match &config.control_plane {
            Some(link) => Some(Arc::new(
                Access::connect(link.clone(), strom_relay::EDGE_SESSIONS, data_dir)
                    .await
                    .context("edge.control_plane")?,
            )),
            None => None,
        };
        Self::load_inner(config, data_dir, access).await
    }

    /// Like [`Edge::load`] with tokens checked by `access` (built with
    /// [`Access::new`] or [`Access::connect`]) whatever `control_plane` says.
    pub async fn load_with_access(
        config: EdgeConfig,
        data_dir: &Path,
        access: Arc<Access>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        Self::load_inner(config, data_dir, Some(access)).await
    }

    async fn load_inner(
        config: EdgeConfig,
        data_dir: &Path,
        access: Option<Arc<Access>>,
    ) -> anyhow::Result<Self> {
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
        let metrics = monitoring::bind(Role::Edge, config.metrics_listen).await?;
        let upstreams = config
            .upstream
            .iter()
            .map(UpstreamSettings::resolve)
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Recordings come from the first upstream that offers them.
        let mut vod: Option<Arc<dyn strom_relay::VodSource>> = None;
        for (settings, resolved) in config.upstream.iter().zip(&upstreams) {
            if let Some(base) = settings.vod_base()? {
                let credential = access
                    .as_ref()
                    .and_then(|a| a.relay_credential())
                    .map(str::to_owned);
                vod = Some(Arc::new(strom_relay::UpstreamVod::new(
                    base,
                    &resolved.trust,
                    credential,
                    config.cache.cache_max_bytes,
                )?));
                break;
            }
        }
        Ok(Self {
            config,
            moqt,
            http,
            http_tls,
            metrics,
            upstreams,
            vod,
            access,
            broadcasts: Broadcasts::new(),
            counters: Arc::new(ServerCounters::new(Role::Edge)),
            cert_sha256: identity.sha256_hex(),
        })
    }

    pub fn moqt_addr(&self) -> anyhow::Result<SocketAddr> {
        self.moqt.local_addr()
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.http.local_addr()?)
    }

    /// Where `/metrics` is served (`metrics_listen`), if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until the process ends.
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
        let moqt_port = self.moqt_addr()?.port();
        tracing::info!(
            moqt = %self.moqt_addr()?,
            http = %self.http_addr()?,
            metrics = %self.metrics_addr().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            cert_sha256 = %self.cert_sha256,
            upstreams = self.upstreams.len(),
            tokens = self.access.is_some(),
            "edge ready"
        );
        let moqt_closer = self.moqt.closer();
        let ctx = upstream::UpstreamContext {
            broadcasts: self.broadcasts.clone(),
            counters: self.counters.clone(),
            limits: self.config.limits(),
            idle: self.config.serving.idle(),
            credential: self
                .access
                .as_ref()
                .and_then(|a| a.relay_credential())
                .map(Arc::from),
            history: upstream::HISTORY_GROUPS,
        };
        let mut parts = strom_service::Tasks::new();
        let upstreams = upstream::Upstreams::new(ctx);
        for (link, u) in self.upstreams.into_iter().enumerate() {
            parts.spawn_loop("upstream", upstream::run(u, link, upstreams.clone()));
        }
        parts.spawn_loop("upstream offers", upstreams.expire_orphans());
        let hls_viewers = Arc::new(strom_relay::HlsViewers::default());
        let state = http::HttpState {
            role: Role::Edge,
            broadcasts: self.broadcasts.clone(),
            counters: self.counters.clone(),
            part_target: self.config.serving.hls_part_target_secs,
            window: self.config.serving.hls_window,
            access: self.access.clone(),
            secure_cookies: self.http_tls.is_some(),
            webtransport: Some(http::WebTransportInfo {
                port: moqt_port,
                cert_sha256: self.cert_sha256.clone(),
            }),
            hls_viewers: hls_viewers.clone(),
            vod: self.vod.clone(),
        };
        if let Some(link) = self
            .access
            .as_ref()
            .and_then(|a| a.control_plane().cloned())
        {
            let mut reporter = strom_relay::Reporter::new(
                strom_relay::RelayKind::Edge,
                self.broadcasts.clone(),
                hls_viewers,
                self.counters.clone(),
            );
            parts.spawn_loop(
                "status reports",
                strom_relay::report_status(link, move || reporter.report()),
            );
        }
        if let Some(listener) = self.metrics {
            parts.spawn_loop(
                "metrics server",
                monitoring::serve(
                    listener,
                    monitoring::Monitoring {
                        role: Role::Edge,
                        broadcasts: self.broadcasts.clone(),
                        counters: self.counters.clone(),
                        extra_metrics: self.access.clone().map(|a| {
                            Arc::new(move |scrape: &strom_relay::metrics::Scrape| {
                                a.collect_metrics(scrape)
                            })
                                as Arc<dyn Fn(&strom_relay::metrics::Scrape) + Send + Sync>
                        }),
                    },
                ),
            );
        }
        parts.spawn_loop("HTTP server", http::serve(self.http, self.http_tls, state));
        parts.spawn_loop(
            "MoQT server",
            self.moqt.run(self.broadcasts, self.counters, self.access),
        );
        parts.run_until(stop).await?;
        moqt_closer.close(Duration::from_secs(1)).await;
        tracing::info!("edge stopped");
        Ok(())
    }
}
