#![warn(unreachable_pub)]
//! strom's origin: accepts broadcasters' pushes (RTMP), packages them as CMAF
//! groups and objects, and publishes them over MoQT to edges.

mod admission;
mod auth;
mod contain;
mod failover;
mod publish;
mod record;
mod rtmp;
mod srt;
mod tasks;
mod vod;

// The surface is `Origin` and its configuration; the configuration's parts
// are named here.
pub use admission::AdmissionConfig;

/// What the fuzz targets reach: the parsers and sessions that take a
/// broadcaster's bytes.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::auth::{PublishAuthorizer, PublishTokens, StaticKeys, StreamKey, Transport};
    pub use crate::publish::Publications;
    pub use crate::rtmp::{handshake_step, Ingest, RtmpContext};
    pub use crate::srt::parse_stream_id;
}

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strom_relay::metrics::ServerCounters;
use strom_relay::{
    http, monitoring, Access, Broadcasts, CacheSettings, ControlPlaneLink, Namespace, Role,
    TlsFiles,
};
use strom_service::Tasks;

use admission::Admission;
use auth::{PublishAuthorizer, PublishTokens, StaticKeys, StreamKey};
use publish::Publications;
use rtmp::{IngestCounters, RtmpContext};
use srt::{SrtContext, SrtCounters, SrtListener};

/// A stream a broadcaster may push: `rtmp://host/<app>/<key>` publishes `namespace`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    pub app: String,
    pub key: String,
    /// `tenant/event/stream`
    pub namespace: String,
    /// SRT pushes of this stream must be encrypted with this passphrase
    /// (10 to 79 characters; the caller picks AES-128, 192 or 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_passphrase: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OriginConfig {
    pub rtmp_listen: SocketAddr,
    /// RTMPS (RTMP in TLS, with the origin's certificate); none to turn it off.
    pub rtmps_listen: Option<SocketAddr>,
    /// SRT listener (UDP); encoders call in with `#!::r=<app>/<key>,m=publish`.
    pub srt_listen: SocketAddr,
    pub moqt_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// HTTPS for edges fetching recordings (`/vod/...`, relay tokens when
    /// a control plane is set); none to turn it off.
    pub vod_listen: Option<SocketAddr>,
    pub recording: record::RecordingConfig,
    pub tls: Option<TlsFiles>,
    pub streams: Vec<StreamSettings>,
    #[serde(flatten)]
    pub cache: CacheSettings,
    pub linger_secs: u64,
    /// Limits on ingest connections not yet allowed to publish.
    pub admission: AdmissionConfig,
    /// When set, broadcasters push with publish tokens
    /// (`rtmp://host/live/<token>`) instead of `streams` keys, and edges
    /// pulling over MoQT must present relay tokens.
    pub control_plane: Option<ControlPlaneLink>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            rtmp_listen: "127.0.0.1:1935".parse().expect("static address"),
            rtmps_listen: Some("127.0.0.1:1936".parse().expect("static address")),
            srt_listen: "127.0.0.1:9000".parse().expect("static address"),
            moqt_listen: "127.0.0.1:4444".parse().expect("static address"),
            http_listen: "127.0.0.1:8081".parse().expect("static address"),
            vod_listen: Some("127.0.0.1:8444".parse().expect("static address")),
            recording: record::RecordingConfig::default(),
            tls: None,
            streams: Vec::new(),
            cache: CacheSettings::default(),
            linger_secs: 300,
            admission: AdmissionConfig::default(),
            control_plane: None,
        }
    }
}

impl OriginConfig {
    pub fn stream_keys(&self) -> anyhow::Result<Vec<StreamKey>> {
        let mut keys: Vec<StreamKey> = Vec::new();
        for s in &self.streams {
            let namespace = Namespace::parse(&s.namespace)
                .with_context(|| format!("origin.streams.namespace = {:?}", s.namespace))?;
            if s.key.len() < 16 {
                anyhow::bail!(
                    "origin.streams key for {} is {} characters; at least 16 are required",
                    s.namespace,
                    s.key.len()
                );
            }
            if s.app.is_empty() || s.app.contains('/') {
                anyhow::bail!(
                    "origin.streams.app = {:?} must be one non-empty path segment",
                    s.app
                );
            }
            if keys.iter().any(|k| k.key == s.key) {
                anyhow::bail!("origin.streams: a key is used twice (for {})", s.namespace);
            }
            if let Some(p) = &s.srt_passphrase {
                if !(10..=79).contains(&p.len()) {
                    anyhow::bail!(
                        "origin.streams srt_passphrase for {} is {} characters; SRT needs 10 to 79",
                        s.namespace,
                        p.len()
                    );
                }
            }
            keys.push(StreamKey {
                app: s.app.clone(),
                key: s.key.clone(),
                namespace,
                srt_passphrase: s.srt_passphrase.clone(),
            });
        }
        Ok(keys)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.stream_keys()?;
        self.admission.validate()?;
        if let Some(link) = &self.control_plane {
            strom_relay::validate_control_plane(Role::Origin, link)?;
            if !self.streams.is_empty() {
                anyhow::bail!(
                    "origin.streams and origin.control_plane are both set: with a control plane, broadcasters push with publish tokens; remove the static streams"
                );
            }
        }
        if !self.http_listen.ip().is_loopback() {
            anyhow::bail!(
                "origin.http_listen = {} must be loopback (it serves metrics only)",
                self.http_listen
            );
        }
        self.cache.validate("origin")?;
        Ok(())
    }
}

/// A running origin with bound sockets.
pub struct Origin {
    config: OriginConfig,
    rtmp: tokio::net::TcpListener,
    rtmps: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    srt: SrtListener,
    moqt: strom_relay::MoqtServer,
    http: tokio::net::TcpListener,
    vod: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    recorder: Option<Arc<record::Recorder>>,
    authorizer: Arc<dyn PublishAuthorizer>,
    access: Option<Arc<Access>>,
    pub broadcasts: Arc<Broadcasts>,
    pub publications: Arc<Publications>,
    pub counters: Arc<ServerCounters>,
    pub ingest: Arc<IngestCounters>,
    pub srt_counters: Arc<SrtCounters>,
    /// Ingest connections not yet allowed to publish (RTMP, RTMPS and SRT).
    pub admission: Arc<Admission>,
    /// Fetches the SRT secret from the control plane (token mode).
    _srt_secret_fetch: Option<strom_relay::AbortOnDrop>,
    pub cert_sha256: String,
    /// Hex of the Ed25519 key that signs every object published here.
    pub media_key: String,
}

/// The origin's media signing key, kept in the data directory (0600) so its
/// signatures stay verifiable across restarts.
fn media_signer(data_dir: &Path) -> anyhow::Result<strom_token::media::MediaSigner> {
    use strom_token::media::MediaSigner;
    let path = data_dir.join("media-signing.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes: Vec<u8> = hex::decode(text.trim()).unwrap_or_default();
            let seed: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} is not a 32-byte hex seed", path.display()))?;
            Ok(MediaSigner::from_seed(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = MediaSigner::generate();
            std::fs::create_dir_all(data_dir)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            use std::io::Write;
            options
                .open(&path)
                .and_then(|mut f| f.write_all(hex::encode(signer.seed()).as_bytes()))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(signer)
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("reading {}", path.display()))),
    }
}

impl Origin {
    /// Validates the configuration and binds every socket. With a control
    /// plane configured, fetches its key set first (and keeps it current).
    pub async fn load(config: OriginConfig, data_dir: &Path) -> anyhow::Result<Self> {
        config.validate()?;
        if let Some(link) = &config.control_plane {
            // Edges (and other origins) pull from an origin; a tenant's
            // agents pull from edges, never straight from here.
            let access = Access::connect(link.clone(), strom_relay::ORIGIN_SESSIONS, data_dir)
                .await
                .context("origin.control_plane")?
                .only_relays(&[strom_token::RelayRole::Edge, strom_token::RelayRole::Origin]);
            return Self::load_with_access(config, data_dir, Arc::new(access)).await;
        }
        let authorizer: Arc<dyn PublishAuthorizer> =
            Arc::new(StaticKeys::new(config.stream_keys()?));
        Self::load_with(config, data_dir, authorizer).await
    }

    /// Like [`Origin::load`] with tokens checked by `access` (built with
    /// [`Access::new`] or [`Access::connect`], sessions for
    /// [`strom_relay::ORIGIN_SESSIONS`]): publish tokens for RTMP, relay tokens
    /// for MoQT, whatever `control_plane` says.
    pub async fn load_with_access(
        config: OriginConfig,
        data_dir: &Path,
        access: Arc<Access>,
    ) -> anyhow::Result<Self> {
        let mut tokens = PublishTokens::new(access.clone());
        let mut srt_secret = None;
        if let Some(link) = access.control_plane() {
            // SRT pushes with publish tokens are encrypted with a passphrase
            // derived from the credential and the control plane's secret.
            let slot = strom_relay::SrtSecretSlot::default();
            srt_secret = Some(strom_relay::AbortOnDrop(strom_relay::fetch_srt_secrets(
                link.clone(),
                slot.clone(),
            )));
            tokens = tokens.with_srt_secret(slot);
        }
        let authorizer: Arc<dyn PublishAuthorizer> = Arc::new(tokens);
        let mut origin = Self::load_inner(config, data_dir, authorizer, Some(access)).await?;
        origin._srt_secret_fetch = srt_secret;
        Ok(origin)
    }

    /// Like [`Origin::load`] with another way to authorise publishers (MoQT open).
    pub async fn load_with(
        config: OriginConfig,
        data_dir: &Path,
        authorizer: Arc<dyn PublishAuthorizer>,
    ) -> anyhow::Result<Self> {
        Self::load_inner(config, data_dir, authorizer, None).await
    }

    async fn load_inner(
        config: OriginConfig,
        data_dir: &Path,
        authorizer: Arc<dyn PublishAuthorizer>,
        access: Option<Arc<Access>>,
    ) -> anyhow::Result<Self> {
        let identity = TlsFiles::identity(config.tls.as_ref(), data_dir)?;
        let moqt = strom_relay::MoqtServer::bind(
            config.moqt_listen,
            identity.server_config(&strom_relay::server_alpns())?,
        )?;
        let rtmp = tokio::net::TcpListener::bind(config.rtmp_listen)
            .await
            .with_context(|| format!("binding RTMP on {}", config.rtmp_listen))?;
        let rtmps = match config.rtmps_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding RTMPS on {addr}"))?;
                Some((listener, Arc::new(identity.server_config(&[])?)))
            }
            None => None,
        };
        let http = http::bind(config.http_listen).await?;
        let vod = match config.vod_listen {
            Some(addr) => Some((
                http::bind(addr).await?,
                Arc::new(identity.server_config(&[b"http/1.1"])?),
            )),
            None => None,
        };
        let recorder = if config.recording.enabled {
            let root = data_dir.join("recordings");
            Some(Arc::new(
                record::Recorder::open(root.clone()).with_context(|| {
                    format!("opening the recordings directory {}", root.display())
                })?,
            ))
        } else {
            None
        };
        let broadcasts = Broadcasts::new();
        // Groups are made here, in order: none is ever missing.
        let limits = config.cache.limits(Duration::ZERO);
        let signer = Arc::new(media_signer(data_dir)?);
        let media_key = hex::encode(signer.public_key());
        let publications =
            Publications::new(broadcasts.clone(), limits, Some(signer), recorder.clone());
        let srt_counters = Arc::new(SrtCounters::default());
        let admission = Admission::new(config.admission.clone());
        let srt = SrtListener::bind(
            config.srt_listen,
            SrtContext::new(
                authorizer.clone(),
                publications.clone(),
                srt_counters.clone(),
                tokio::runtime::Handle::current(),
                admission.clone(),
            ),
        )?;
        Ok(Self {
            publications,
            media_key,
            config,
            rtmp,
            rtmps,
            srt,
            srt_counters,
            admission,
            _srt_secret_fetch: None,
            moqt,
            http,
            vod,
            recorder,
            authorizer,
            access,
            broadcasts,
            counters: Arc::new(ServerCounters::new(Role::Origin)),
            ingest: Arc::new(IngestCounters::default()),
            cert_sha256: identity.sha256_hex(),
        })
    }

    pub fn rtmp_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.rtmp.local_addr()?)
    }

    pub fn rtmps_addr(&self) -> Option<SocketAddr> {
        self.rtmps.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn srt_addr(&self) -> SocketAddr {
        self.srt.local_addr()
    }

    pub fn moqt_addr(&self) -> anyhow::Result<SocketAddr> {
        self.moqt.local_addr()
    }

    pub fn vod_addr(&self) -> Option<SocketAddr> {
        self.vod.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.http.local_addr()?)
    }

    /// Serves until a part fails (an error naming it).
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `stop` resolves, then stops cleanly: broadcasts end,
    /// recordings get their `end` line, MoQT sessions are closed; or until
    /// a part fails (an error naming it).
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tracing::info!(
            rtmp = %self.rtmp_addr()?,
            rtmps = %self.rtmps_addr().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            srt = %self.srt_addr(),
            moqt = %self.moqt_addr()?,
            http = %self.http_addr()?,
            vod = %self.vod_addr().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            cert_sha256 = %self.cert_sha256,
            media_key = %self.media_key,
            tokens = self.access.is_some(),
            "origin ready"
        );
        let moqt_closer = self.moqt.closer();
        let monitoring = self.monitoring_view();
        let publications = self.publications.clone();
        let recorder = self.recorder.clone();
        // The fetch of SRT secrets started at load; it ends with the origin.
        let _srt_secret_fetch = self._srt_secret_fetch;
        let control_plane = self
            .access
            .as_ref()
            .and_then(|a| a.control_plane().cloned());
        let hls_viewers = Arc::new(strom_relay::HlsViewers::default());
        let rtmp_ctx = Arc::new(RtmpContext {
            authorizer: self.authorizer,
            publications: self.publications.clone(),
            counters: self.ingest.clone(),
        });

        let mut parts = Tasks::new();
        parts.spawn("SRT listener", self.srt.serve());
        parts.spawn_loop(
            "RTMP listener",
            rtmp::serve(self.rtmp, rtmp_ctx.clone(), self.admission.clone()),
        );
        if let Some((listener, tls)) = self.rtmps {
            parts.spawn_loop(
                "RTMPS listener",
                rtmp::serve_tls(listener, tls, rtmp_ctx, self.admission.clone()),
            );
        }
        parts.spawn_loop(
            "MoQT server",
            self.moqt.run(
                self.broadcasts.clone(),
                self.counters.clone(),
                self.access.clone(),
            ),
        );
        // Edges fetch recordings over HTTPS, checked like MoQT (relay tokens).
        if let Some((listener, tls)) = self.vod {
            let state = http::HttpState {
                role: Role::Origin,
                broadcasts: self.broadcasts.clone(),
                counters: self.counters.clone(),
                part_target: 0.5,
                window: 6,
                access: self.access.clone(),
                secure_cookies: false,
                webtransport: None,
                hls_viewers: hls_viewers.clone(),
                vod: self.recorder.as_ref().map(|r| {
                    Arc::new(vod::DiskVod::new(r.root().to_path_buf()))
                        as Arc<dyn strom_relay::VodSource>
                }),
            };
            parts.spawn_loop("VOD server", http::serve(listener, Some(tls), state));
        }
        parts.spawn_loop("metrics server", monitoring::serve(self.http, monitoring));
        parts.spawn_loop(
            "broadcast expiry",
            tasks::expire_broadcasts(
                self.publications.clone(),
                Duration::from_secs(self.config.linger_secs),
            ),
        );
        if let Some(link) = control_plane {
            // Peer-agents learn the key that signs this origin's objects
            // from the control plane.
            parts.spawn_loop(
                "media key registration",
                strom_service::once(strom_relay::register_media_key(
                    link.clone(),
                    self.media_key.clone(),
                )),
            );
            // The origin reports what is being pushed (live, ingest bitrate).
            let mut reporter = strom_relay::Reporter::new(
                strom_relay::RelayKind::Origin,
                self.broadcasts.clone(),
                hls_viewers,
                self.counters.clone(),
            );
            parts.spawn_loop(
                "status reports",
                strom_relay::report_status(link, move || reporter.report()),
            );
        }
        if let (Some(access), Some(recorder)) = (&self.access, &self.recorder) {
            parts.spawn_loop(
                "event deletions",
                tasks::delete_recordings_of_deleted_events(access.clone(), recorder.clone()),
            );
        }
        let retention_days = self.config.recording.retention_days;
        if let (Some(recorder), true) = (&self.recorder, retention_days > 0) {
            parts.spawn_loop(
                "recording retention",
                tasks::expire_recordings(recorder.clone(), retention_days),
            );
        }

        parts.run_until(stop).await?;
        // Stopping: end every broadcast (recordings get their `end` line),
        // wait for the recorder, close the MoQT sessions.
        publications.end_all();
        if let Some(recorder) = recorder {
            let flushed =
                tokio::task::spawn_blocking(move || recorder.flush(Duration::from_secs(3))).await;
            if !matches!(flushed, Ok(true)) {
                tracing::warn!(
                    "recordings were not all written before stopping; the next start recovers them"
                );
            }
        }
        moqt_closer.close(Duration::from_secs(1)).await;
        tracing::info!("origin stopped");
        Ok(())
    }

    /// What the loopback metrics and health server shows.
    fn monitoring_view(&self) -> monitoring::Monitoring {
        let ingest = self.ingest.clone();
        let srt_counters = self.srt_counters.clone();
        let admission = self.admission.clone();
        let publications = self.publications.clone();
        monitoring::Monitoring {
            role: Role::Origin,
            broadcasts: self.broadcasts.clone(),
            counters: self.counters.clone(),
            extra_metrics: Some(Arc::new(move |scrape| {
                rtmp::collect_ingest(scrape, &[("rtmp", &ingest), ("srt", &srt_counters.ingest)]);
                ingest.collect_rtmp_refusals(scrape);
                srt_counters.collect(scrape);
                admission.collect(scrape);
                publications.collect(scrape);
            })),
        }
    }
}
