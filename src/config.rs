//! The one configuration file of strom (TOML): every option, its default and
//! what it does. `strom config default` prints [`DEFAULT_CONFIG`]; a test keeps
//! that text equal to the built-in defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strom_control_plane::ControlPlaneConfig;
use strom_edge::EdgeConfig;
use strom_origin::OriginConfig;
use strom_peer_agent::PeerAgentConfig;

/// Unknown keys are refused by [`Config::parse`] (all of them named at
/// once), not by serde: the sections that flatten in shared settings cannot
/// use `deny_unknown_fields`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub origin: OriginConfig,
    pub edge: EdgeConfig,
    pub control_plane: ControlPlaneConfig,
    pub peer_agent: PeerAgentConfig,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./strom-data"),
            log_format: LogFormat::Text,
            origin: OriginConfig::default(),
            // Monitoring on by default for the product (the libraries' own
            // defaults leave the port to embedders and tests).
            edge: EdgeConfig {
                metrics_listen: Some("127.0.0.1:8082".parse().expect("static address")),
                ..EdgeConfig::default()
            },
            control_plane: ControlPlaneConfig {
                metrics_listen: Some("127.0.0.1:8091".parse().expect("static address")),
                ..ControlPlaneConfig::default()
            },
            peer_agent: PeerAgentConfig {
                metrics_listen: Some("127.0.0.1:8083".parse().expect("static address")),
                ..PeerAgentConfig::default()
            },
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("configuration {} is invalid", path.display()))
    }

    /// Reads a configuration's text. Every key written must be one strom
    /// knows (a misspelt key must not silently fall back to its default).
    /// serde's `deny_unknown_fields` cannot sit next to the settings the
    /// relays share (`#[serde(flatten)]`), so the keys written are checked
    /// against the keys the parsed configuration writes back.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        let written: toml::Table = toml::from_str(text)?;
        let toml::Value::Table(known) = toml::Value::try_from(&config)? else {
            anyhow::bail!("the configuration does not write back as a table");
        };
        let mut unknown = Vec::new();
        unknown_keys(&written, &known, "", &mut unknown);
        if !unknown.is_empty() {
            anyhow::bail!(
                "unknown option{} {} (see `strom config default` for every option)",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", ")
            );
        }
        Ok(config)
    }
}

/// Adds to `out` each key of `written` (at `path`) that `known` lacks.
fn unknown_keys(written: &toml::Table, known: &toml::Table, path: &str, out: &mut Vec<String>) {
    for (key, value) in written {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (value, known.get(key)) {
            (_, None) => out.push(here),
            (toml::Value::Table(w), Some(toml::Value::Table(k))) => unknown_keys(w, k, &here, out),
            (toml::Value::Array(w), Some(toml::Value::Array(k))) => {
                for (i, (w, k)) in w.iter().zip(k).enumerate() {
                    if let (toml::Value::Table(w), toml::Value::Table(k)) = (w, k) {
                        unknown_keys(w, k, &format!("{here}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every option with its default, commented. Keep in step with the structs
/// (the test `default_text_matches_defaults` fails otherwise).
pub const DEFAULT_CONFIG: &str = r#"# strom configuration. Every option is shown with its default.
# Command-line flags and STROM_* environment variables override the file.

# Where strom keeps generated certificates, keys and data.
data_dir = "./strom-data"
# Log lines as "text" (human) or "json" (one object per line). Logs never
# carry personal data; stream keys appear only as short hashes.
log_format = "text"

[origin]
# RTMP ingest (broadcasters push rtmp://host:1935/<app>/<key>).
rtmp_listen = "127.0.0.1:1935"
# RTMPS ingest: RTMP inside TLS with the certificate of [origin.tls]
# (rtmps://host:1936/<app>/<key>). Remove the line to turn it off.
rtmps_listen = "127.0.0.1:1936"
# SRT ingest (UDP): encoders call in as callers, naming the stream in the
# stream id #!::r=<app>/<key>,m=publish (srt://host:9000?streamid=...).
srt_listen = "127.0.0.1:9000"
# MoQT over QUIC (UDP) for edges: ALPN moqt-18 and WebTransport (h3).
moqt_listen = "127.0.0.1:4444"
# HTTP for /metrics, /healthz and /readyz (monitoring only); loopback only.
http_listen = "127.0.0.1:8081"
# HTTPS (the certificate of [origin.tls]) where edges fetch recordings as
# HLS VOD (/vod/...). Remove the line to turn it off.
vod_listen = "127.0.0.1:8444"
# Groups kept per track for late subscribers: age limit and byte limit.
cache_max_age_secs = 30
cache_max_bytes = 67108864
# How long a broadcast waits for its broadcaster to reconnect before it ends.
linger_secs = 300
# Certificate for QUIC; without it a 13-day self-signed ECDSA certificate is
# generated in data_dir (fine for development, pin it by its SHA-256).
# [origin.tls]
# cert = "/etc/strom/origin.pem"
# key = "/etc/strom/origin.key"

# Every broadcast is recorded (CMAF under data_dir/recordings/<tenant>/
# <event>/<stream>/<start>) and served as HLS VOD through the edges:
# /vod/<tenant>/<event>/<stream>/index.json lists the recordings. Recordings
# older than retention_days are deleted (0 keeps them until deleted).
[origin.recording]
enabled = true
retention_days = 30

# Ingest connections not yet allowed to publish: an RTMP or RTMPS peer until
# its publish is accepted (it may send at most 32 KiB before), an SRT caller
# until its handshake (passphrase included) is done. Each must publish within
# deadline_secs of connecting (TLS and RTMP handshakes included). At most
# max_connections such connections at once, max_connections_per_address
# from one IPv4 address or IPv6 /64; further ones are closed at once (SRT
# callers refused with code 1402). Raise the deadline for encoders on very
# slow links, the per-address limit for many encoders behind one NAT.
[origin.admission]
deadline_secs = 10
max_connections = 256
max_connections_per_address = 16

# Streams that may be pushed: rtmp://host:1935/<app>/<key> publishes the
# MoQT namespace tenant/event/stream. Keys are secrets of 16+ characters.
# [[origin.streams]]
# app = "live"
# key = "change-me-to-a-long-random-key"
# namespace = "acme/town-hall/main"
# SRT pushes of this stream must be encrypted with this passphrase (10 to 79
# characters; the encoder picks AES-128, 192 or 256). Without it, SRT pushes
# of this stream are unencrypted and an encrypting caller is refused.
# srt_passphrase = "change-me-too"

# Control plane: publish tokens instead of the streams above (which must then
# be empty). Broadcasters push rtmp://host:1935/live/<publish token>; the token
# names tenant, event and stream, and a revoked token stops its push within
# seconds. Edges pulling over MoQT must present a relay credential. Keys and
# revocations come from url; credential is this origin's relay credential.
# [origin.control_plane]
# url = "https://control.example.net/"
# credential = "v4.public.…relay credential…"
# ca_file = "/etc/strom/control-plane-ca.pem"

[edge]
# MoQT over QUIC (UDP) for viewers and lower-tier edges (raw QUIC and WebTransport).
moqt_listen = "127.0.0.1:4443"
# For viewers: HLS (LL-HLS, CMAF), recordings (/vod/), QoE beacons, and
# /healthz and /readyz for load balancers. No /metrics here.
http_listen = "127.0.0.1:8080"
# Serve HTTPS with the edge certificate (answers carry HSTS). Plain HTTP is
# refused off loopback.
http_tls = false
# /metrics, /healthz and /readyz for monitoring, plain HTTP. The series name
# every tenant's live events, so this is loopback only: scrape from this host
# (or forward). Remove the line to turn it off.
metrics_listen = "127.0.0.1:8082"
# Allow a metrics_listen that is not loopback, for a network that only your
# monitoring reaches (anyone who reaches it reads the metrics).
metrics_allow_non_loopback = false
# Groups kept per track: age limit and byte limit (the newest group always stays).
cache_max_age_secs = 30
cache_max_bytes = 67108864
# Seconds an upstream track subscription is kept after its last viewer left.
idle_secs = 10
# LL-HLS part target (seconds) and segments listed per media playlist.
hls_part_target_secs = 0.5
hls_window = 6
# [edge.tls]
# cert = "/etc/strom/edge.pem"
# key = "/etc/strom/edge.key"

# Upstreams (origins or parent edges) to pull broadcasts from, tried independently.
# url: moqt://host:port (raw QUIC) or https://host:port/ (WebTransport).
# Trust either a CA bundle (ca_file) or exactly one certificate (cert_sha256).
# prefix: only broadcasts under this namespace prefix ("" for all).
# [[edge.upstream]]
# url = "moqt://origin.example.net:4444"
# ca_file = "/etc/strom/ca.pem"
# cert_sha256 = "…64 hex digits…"
# prefix = ""
# Recordings (HLS VOD under /vod/) come from here: the origin's vod_listen.
# vod_url = "https://origin.example.net:8444/"

# Control plane: every viewer needs a playback token for its event. MoQT and
# WebTransport sessions send it as AUTHORIZATION TOKEN in SETUP (or as a token
# query parameter of the URL); HLS requests as ?token=… or the cookie the
# master playlist sets. Lower-tier edges present relay credentials. Revoked
# tokens close their MoQT sessions within seconds. credential is this edge's
# relay credential: it reads revocations and is presented to the upstreams.
# [edge.control_plane]
# url = "https://control.example.net/"
# credential = "v4.public.…relay credential…"
# ca_file = "/etc/strom/control-plane-ca.pem"

[control_plane]
# The JSON API for the portal, the admin UI and relays. Put a TLS reverse
# proxy in front of it; public_url is the address browsers and mails use.
listen = "127.0.0.1:8090"
# /metrics, /healthz and /readyz for monitoring; loopback only. Remove the
# line to turn it off.
metrics_listen = "127.0.0.1:8091"
public_url = "http://localhost:8090/"
# Shown to broadcasters with their publish credential (OBS: Server).
rtmp_url = "rtmp://localhost:1935/live"
# Shown with the credential too: where SRT encoders call in.
srt_url = "srt://localhost:9000"
# Edge base URLs viewers are sent to, besides edges that register themselves.
edges = []
# Master key file, lines of v<N>:<base64 of 32 bytes>; STROM_MASTER_KEY
# overrides it. Without it: <data_dir>/control-plane/master.key.
# master_key_file = "/etc/strom/master.key"
# Create the master key file when it is missing (development only).
generate_master_key = false
# Cookies carry Secure; turn this off only for plain-HTTP tests.
secure_cookies = true
# Requests per minute to the login, magic-link, reset and registration
# endpoints, per client address (IPv6: per /64) and per account.
rate_limit_per_ip_per_minute = 120
rate_limit_per_account_per_minute = 10
# Your TLS reverse proxies (addresses or CIDRs): requests from them are
# counted under the client their Forwarded / X-Forwarded-For header names
# (the rightmost address that is not a proxy). Empty: the connecting
# address is the client, and behind a proxy every client shares its limit.
trusted_proxies = []
# Single sign-on may reach a tenant's identity provider at loopback and
# internal addresses (RFC 1918, CGNAT, unique-local), and over plain http on
# loopback. Off: only https to public addresses (checked on every resolved
# address, for discovery, keys, token and user info), so no tenant's issuer
# can aim the control plane at your network. Link-local addresses (cloud
# metadata) are refused either way. strom dev turns it on.
oidc_allow_private_addresses = false
# Outgoing mail by SMTP; without it mails go to <data_dir>/control-plane/outbox.
# [control_plane.smtp]
# host = "smtp.example.com"
# port = 587
# starttls = true
# username = "strom"
# password = "change-me"
# from = "strom <noreply@example.com>"
# Where records live. Without this table: embedded RocksDB under
# <data_dir>/control-plane (one process). For several replicas behind a
# load balancer, PostgreSQL (migrations are applied at start; the password
# belongs in STROM_POSTGRES_URL, which overrides url). The wrapped data keys
# go to a relation of their own (strom_keys), in another database with
# keys_url / STROM_POSTGRES_KEYS_URL.
# [control_plane.store]
# kind = "postgres"
# url = "postgresql://strom@db.example.com/strom"

[peer_agent]
# `strom peer-agent` runs inside a customer's LAN: it registers with the
# control plane, which names its site from the tenant's site map (CIDRs), finds
# the site's other agents by mDNS and by the control plane's roster, admits
# only agents holding a ticket for the same tenant and site, and refuses any
# address outside the site. One agent pulls each stream from the edge; the
# others pull from agents (a tree, fanout children each). Every object's
# origin signature is checked before the agent serves or forwards it. The
# agent serves the LAN's browsers like an edge (MoQT/WebTransport, LL-HLS).
# libp2p (QUIC, UDP) between the agents of a site.
p2p_listen = "0.0.0.0:4001"
# MoQT over QUIC and WebTransport, for browsers and other agents.
moqt_listen = "0.0.0.0:4443"
# LL-HLS and /webtransport.json for the LAN's browsers; HTTPS unless on
# loopback. No /metrics here.
http_listen = "0.0.0.0:8443"
http_tls = true
# /metrics, /healthz and /readyz for monitoring, plain HTTP, loopback only
# (the series name the tenant's live events). Remove the line to turn it off.
metrics_listen = "127.0.0.1:8083"
# Allow a metrics_listen that is not loopback (anyone who reaches it reads
# the metrics).
metrics_allow_non_loopback = false
# The most agents one agent feeds.
fanout = 16
# A peer whose connection is silent this long has left (its children move).
peer_timeout_ms = 400
# A live track with nothing new from its parent this long is fetched from the
# repair source (the standby, which alone fetches from the edge).
repair_after_ms = 300
cache_max_age_secs = 30
cache_max_bytes = 67108864
idle_secs = 10
hls_part_target_secs = 0.5
hls_window = 6
# The edge the site pulls from; trust ca_file or exactly cert_sha256.
[peer_agent.edge]
url = "moqt://127.0.0.1:4443"
prefix = ""
# ca_file = "/etc/strom/ca.pem"
# cert_sha256 = "…64 hex digits…"
# Required: the control plane, and the tenant's agent credential (an owner
# issues it in the admin API: POST /api/v1/agent-credentials).
# [peer_agent.control_plane]
# url = "https://control.example.net/"
# credential = "v4.public.…agent credential…"
# ca_file = "/etc/strom/control-plane-ca.pem"
# [peer_agent.tls]
# cert = "/etc/strom/agent.pem"
# key = "/etc/strom/agent.key"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_text_matches_defaults() {
        let parsed = Config::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn commented_examples_parse_when_uncommented() {
        let text: String = DEFAULT_CONFIG
            .lines()
            .map(|l| {
                let t = l.trim_start_matches("# ");
                if t.starts_with('[') || t.contains(" = ") {
                    t.replace("…64 hex digits…", &"ab".repeat(32))
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = Config::parse(&text).unwrap();
        assert_eq!(parsed.origin.streams.len(), 1);
        assert_eq!(parsed.edge.upstream.len(), 1);
        assert!(parsed.origin.tls.is_some());
        assert_eq!(
            parsed.control_plane.smtp.as_ref().map(|s| s.port),
            Some(587)
        );
        assert!(parsed.control_plane.master_key_file.is_some());
        assert!(parsed.peer_agent.tls.is_some());
        assert!(parsed.peer_agent.edge.ca_file.is_some());
        for link in [
            &parsed.origin.control_plane,
            &parsed.edge.control_plane,
            &parsed.peer_agent.control_plane,
        ] {
            let link = link.as_ref().expect("control_plane example");
            assert_eq!(link.url.as_str(), "https://control.example.net/");
            assert!(link.ca_file.is_some());
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        // (text, the unknown keys named; none: the text is valid)
        let cases: &[(&str, &[&str])] = &[
            ("[edge]\nhls_windw = 3\n", &["edge.hls_windw"]),
            // The shared settings are known in every section that has them.
            (
                "[edge]\nhls_window = 7\ncache_max_bytes = 2097152\nidle_secs = 3\n",
                &[],
            ),
            ("[origin]\ncache_max_age_secs = 9\n", &[]),
            (
                "[peer_agent]\nhls_part_target_secs = 1.0\ntamper = false\n",
                &[],
            ),
            // ..and not in one that has not.
            ("[origin]\nhls_window = 7\n", &["origin.hls_window"]),
            (
                "[control_plane]\ncache_max_bytes = 2097152\n",
                &["cache_max_bytes"],
            ),
            // Top level and sections: all named at once.
            (
                "dta_dir = \"x\"\n[edge]\nidle_sec = 1\n[peer_agent]\nfan_out = 2\n",
                &["dta_dir", "edge.idle_sec", "peer_agent.fan_out"],
            ),
            // Tables inside sections keep serde's own refusal.
            (
                "[[edge.upstream]]\nurl = \"moqt://127.0.0.1:1\"\ncert = \"x\"\n",
                &["`cert`"],
            ),
            ("[edge.cache]\ncache_max_bytes = 2097152\n", &["edge.cache"]),
        ];
        for (text, names) in cases {
            match (Config::parse(text), names.is_empty()) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    let e = format!("{e:#}");
                    for n in *names {
                        assert!(e.contains(n), "{text:?}: {e}");
                    }
                }
                (other, _) => panic!("{text:?}: {other:?}, expected unknown {names:?}"),
            }
        }
        // A known key with a wrong type is still refused by its parser.
        assert!(Config::parse("[edge]\nhls_window = \"six\"\n").is_err());
    }
}
