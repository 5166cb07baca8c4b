//! Peer-agents in network namespaces for the end-to-end tests: start one
//! against an edge and a control plane, and read its log.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::netns::Host;
use crate::{log_field, strom_bin, wait_until, Proc};

/// Where an agent serves `/metrics` in its namespace (loopback, the shipped
/// default).
pub const METRICS_URL: &str = "http://127.0.0.1:8083/metrics";

/// A running `strom peer-agent` in `host`'s namespace.
pub struct Agent {
    pub proc: Proc,
    /// Index of its host in the site.
    pub host: usize,
    pub peer_id: String,
    pub cert: String,
    /// Its MoQT URL inside the site.
    pub url: String,
}

/// Where an agent gets its media and its site.
pub struct AgentLinks<'a> {
    pub edge_url: &'a str,
    pub edge_cert: &'a str,
    pub cp_url: &'a str,
    pub cp_ca: &'a Path,
    pub credential: &'a str,
}

/// Starts an agent on `host` (its MoQT on port 4443 of the host's address,
/// HTTP on 127.0.0.1:8443 and metrics on [`METRICS_URL`] of its namespace);
/// `extra` is more TOML for the
/// `[peer_agent]` section. Waits until it is ready.
pub fn start_agent(
    host: &Host,
    index: usize,
    name: &str,
    links: &AgentLinks,
    tamper: bool,
    extra: &str,
    dir: &Path,
) -> Agent {
    let data = dir.join(name);
    let toml = format!(
        "data_dir = {data:?}\n[peer_agent]\np2p_listen = \"{ip}:4001\"\nmoqt_listen = \"{ip}:4443\"\n\
         http_listen = \"127.0.0.1:8443\"\nhttp_tls = false\nmetrics_listen = \"127.0.0.1:8083\"\n\
         tamper = {tamper}\n{extra}\
         [peer_agent.edge]\nurl = \"{edge_url}\"\ncert_sha256 = \"{edge_cert}\"\n\
         [peer_agent.control_plane]\nurl = \"{cp_url}\"\ncredential = \"{credential}\"\nca_file = {cp_ca:?}\n",
        ip = host.ip,
        edge_url = links.edge_url,
        edge_cert = links.edge_cert,
        cp_url = links.cp_url,
        credential = links.credential,
        cp_ca = links.cp_ca,
    );
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).expect("agent config");
    let mut cmd = host.command(&strom_bin());
    cmd.arg("--config")
        .arg(&config)
        .arg("peer-agent")
        .env(
            "STROM_LOG",
            std::env::var("STROM_P2P_LOG")
                .unwrap_or("info,quinn=warn,moq_transport=warn,libp2p=warn".into()),
        )
        .stdout(Stdio::null());
    let proc = Proc::spawn(name, cmd, dir);
    let log = wait_until(Duration::from_secs(30), "peer-agent ready", || {
        let t = proc.log_text();
        t.contains("peer-agent ready").then_some(t)
    });
    Agent {
        peer_id: log_field(&log, "peer-agent ready", "peer_id").expect("peer_id"),
        cert: log_field(&log, "peer-agent ready", "cert_sha256").expect("cert"),
        url: format!("moqt://{}:4443", host.ip),
        host: index,
        proc,
    }
}

/// The word after `after` in `text` (up to a space, comma or semicolon).
pub fn field<'a>(text: &'a str, after: &str) -> Option<&'a str> {
    let i = text.find(after)? + after.len();
    text[i..].split([' ', ',', ';']).find(|s| !s.is_empty())
}

/// A counter from the agent's last "agent status" log line.
pub fn counter(agent: &Agent, name: &str) -> u64 {
    agent
        .proc
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains("agent status"))
        .and_then(|l| field(l, &format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
