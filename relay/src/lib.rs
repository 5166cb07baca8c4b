#![warn(unreachable_pub)]
//! strom-relay: what every relay of strom shares. The origin, the edges and
//! the peer-agents all keep broadcasts in one group cache ([`Broadcasts`],
//! [`TrackCache`]), serve it over MoQT (raw QUIC and WebTransport,
//! [`MoqtServer`]) and LL-HLS ([`http`]), pull from upstreams ([`upstream`]),
//! check tokens ([`Access`]), report their status ([`Reporter`]) and talk to
//! the control plane ([`ControlPlaneLink`]). Each service crate
//! (`strom-origin`, `strom-edge`, `strom-peer-agent`) is its configuration
//! and its `load`/`run` around these parts.
//!
//! Modules are private; the `pub use` list below is the surface.

mod access;
mod broadcast;
mod cache;
mod catalog_view;
mod control_plane;
mod hls;
pub mod http;
pub mod metrics;
pub mod monitoring;
mod moqt;
mod priority;
pub mod pseudonym;
mod qoe;
mod settings;
mod status;
pub mod tls;
pub mod upstream;
mod vod;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

// The crate's surface. Types are named here; the modules that stay public
// are namespaces whose functions read best with their module's name
// (`http::serve` next to `monitoring::serve`, `upstream::run`,
// `metrics::sum`, `tls::Trust`, `pseudonym::addr`).
pub use access::{Access, RevocationWatch, EDGE_SESSIONS, ORIGIN_SESSIONS};
pub use broadcast::{Broadcast, Broadcasts, Namespace, Source};
pub use cache::{
    CacheLimits, Delivery, Object, ObjectMeta, TrackCache, TrackReader, UpstreamState,
};
pub use catalog_view::CatalogView;
/// The file in a relay's data directory holding what its control plane
/// said last (key set, revocations, when it last answered).
pub use control_plane::last_word::FILE as LAST_WORD_FILE;
pub use control_plane::{
    fetch_srt_secrets, http_client as control_plane_client, register_media_key, report_status,
    start_key_sync, start_key_sync_kept, ControlPlaneLink, Endpoints as ControlPlaneEndpoints,
    Next as NextReplica, SrtSecretSlot, SyncHandle,
};
pub use moqt::{from_track_namespace, server_alpns, to_track_namespace, MoqtServer};
pub use settings::{CacheSettings, ServingSettings};
pub use status::{EventTally, HlsViewers, Reporter};
pub use strom_protocol::RelayKind;
pub use vod::{safe_path, UpstreamVod, VodAnswer, VodFuture, VodSource};

/// What the fuzz targets reach: the parsers of hostile input that are not
/// otherwise part of the surface.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::access::{hls_cookie, tokenize_playlist};
    pub use crate::vod::immutable;
}

/// Which relay this is. It names the configuration section, is the `role`
/// label of the relay's metrics, and decides what its HTTP surface serves
/// and when it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes pushes and publishes them; its HTTP serves recordings only.
    Origin,
    /// Pulls from an origin or another edge and serves viewers.
    Edge,
    /// A peer-agent inside a LAN, serving its viewers like an edge.
    Agent,
}

impl Role {
    /// The `role` label and the name in status reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Origin => "origin",
            Role::Edge => "edge",
            Role::Agent => "agent",
        }
    }

    /// Its section in the configuration file.
    pub fn section(self) -> &'static str {
        match self {
            Role::Agent => "peer_agent",
            other => other.as_str(),
        }
    }

    /// Whether its HTTP surface serves live viewers (LL-HLS, QoE beacons);
    /// the origin's serves only recordings to edges.
    pub fn serves_viewers(self) -> bool {
        self != Role::Origin
    }

    /// Whether `/readyz` waits for a connected upstream.
    pub fn needs_upstream(self) -> bool {
        self == Role::Edge
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
pub use strom_token;

/// TLS certificate and key files; when absent a development certificate is
/// generated in the data directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn identity(files: Option<&TlsFiles>, data_dir: &Path) -> anyhow::Result<tls::Identity> {
        match files {
            Some(f) => tls::Identity::load(&f.cert, &f.key),
            None => tls::Identity::dev(
                data_dir,
                &["localhost".into(), "127.0.0.1".into(), "::1".into()],
            ),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub cert_sha256: Option<String>,
    pub prefix: String,
    /// The upstream's recordings (`https://host:port`, an origin's
    /// `vod_listen` or an edge's HTTPS); trusted like `url`.
    pub vod_url: Option<String>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: "moqt://127.0.0.1:4443".into(),
            ca_file: None,
            cert_sha256: None,
            prefix: String::new(),
            vod_url: None,
        }
    }
}

impl UpstreamSettings {
    pub fn resolve(&self) -> anyhow::Result<upstream::UpstreamConfig> {
        let url = url::Url::parse(&self.url)
            .with_context(|| format!("edge.upstream.url = {:?} is not a URL", self.url))?;
        if !matches!(url.scheme(), "moqt" | "https") {
            anyhow::bail!(
                "edge.upstream.url = {:?}: the scheme must be moqt:// (raw QUIC) or https:// (WebTransport)",
                self.url
            );
        }
        let trust = match (&self.cert_sha256, &self.ca_file) {
            (Some(hash), _) => {
                tls::Trust::Pinned(tls::parse_hex32(hash).context("edge.upstream.cert_sha256")?)
            }
            (None, Some(ca)) => tls::Trust::CaFile(ca.clone()),
            (None, None) => anyhow::bail!(
                "edge.upstream {:?} needs ca_file or cert_sha256 to trust the upstream",
                self.url
            ),
        };
        let prefix = self
            .prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(upstream::UpstreamConfig { url, trust, prefix })
    }

    /// The upstream's recordings, when `vod_url` is set.
    pub fn vod_base(&self) -> anyhow::Result<Option<url::Url>> {
        let Some(text) = &self.vod_url else {
            return Ok(None);
        };
        let url = url::Url::parse(text)
            .with_context(|| format!("edge.upstream.vod_url = {text:?} is not a URL"))?;
        if url.scheme() != "https" {
            anyhow::bail!("edge.upstream.vod_url = {text:?} must be https://");
        }
        Ok(Some(url))
    }
}

/// Checks a control-plane link at start-up (`role` names the section).
pub fn validate_control_plane(role: Role, link: &ControlPlaneLink) -> anyhow::Result<()> {
    let role = role.section();
    for (i, url) in link.urls().enumerate() {
        let key = if i == 0 {
            "url".to_owned()
        } else {
            format!("fallback_urls[{}]", i - 1)
        };
        if !matches!(url.scheme(), "https" | "http") {
            anyhow::bail!(
                "{role}.control_plane.{key} = {:?}: the scheme must be https (http on loopback only)",
                url.as_str()
            );
        }
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url.scheme() == "http" && !loopback {
            anyhow::bail!(
                "{role}.control_plane.{key} = {:?}: plain http is allowed on loopback only",
                url.as_str()
            );
        }
    }
    if link.credential.trim().is_empty() {
        anyhow::bail!("{role}.control_plane.credential is empty: give this relay's credential");
    }
    Ok(())
}

/// What a CMAF object tells the cache: duration and producer wall clock.
pub fn object_meta(track: &str, payload: &[u8]) -> ObjectMeta {
    if track == "catalog" {
        return ObjectMeta::default();
    }
    match strom_media::cmaf::parse_chunk(payload) {
        Ok(info) => ObjectMeta {
            duration_ticks: info.duration,
            producer_time_us: info.prft.map(|p| p.unix_micros),
        },
        Err(_) => ObjectMeta::default(),
    }
}

/// Stops a background task when the service that started it stops.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn what_each_role_serves_and_waits_for() {
        // role, label, config section, serves viewers, waits for an upstream
        let table = [
            (Role::Origin, "origin", "origin", false, false),
            (Role::Edge, "edge", "edge", true, true),
            (Role::Agent, "agent", "peer_agent", true, false),
        ];
        for (role, label, section, viewers, upstream) in table {
            assert_eq!(role.as_str(), label);
            assert_eq!(role.to_string(), label);
            assert_eq!(role.section(), section);
            assert_eq!(role.serves_viewers(), viewers, "{role}");
            assert_eq!(role.needs_upstream(), upstream, "{role}");
        }
    }
}
