//! Real network namespaces for LAN and WAN tests (needs root): the test
//! process's own namespace is "the internet" (origin, edge, control plane);
//! a `wan` namespace holds a layer-2 delay line (`simulations/delayline.py`,
//! this kernel has no netem) behind a tc tbf rate limit each way; a site
//! router namespace holds one bridge per site, and each host of a site gets
//! its own namespace on that bridge. Everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Proc;

/// Address of the internet side of the WAN link (origin, edge, control plane).
pub const INTERNET: &str = "10.78.0.1";
const ROUTER_WAN: &str = "10.78.0.2";

/// Whether this process may create namespaces.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A site: a bridge, its /24, its hosts.
pub struct Site {
    pub bridge: String,
    /// e.g. "10.77.0" — the router is .1, hosts .10 upwards.
    pub net: String,
    pub hosts: Vec<Host>,
}

impl Site {
    pub fn cidr(&self) -> String {
        format!("{}.0/24", self.net)
    }
}

/// One namespace on a site's LAN.
pub struct Host {
    pub ns: String,
    pub ip: String,
}

impl Host {
    /// `command` run inside this host's namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Limits what this host sends into its LAN (tc tbf, as tc writes
    /// rates: "6mbit"); `None` lifts the limit. A slow machine, a busy
    /// uplink, a laptop on bad Wi-Fi.
    pub fn limit_upload(&self, rate: Option<&str>) {
        match rate {
            Some(rate) => {
                run_quiet(&[
                    "ip", "netns", "exec", &self.ns, "ethtool", "-K", "l0", "tso", "off", "gso",
                    "off",
                ]);
                run(&[
                    "ip", "netns", "exec", &self.ns, "tc", "qdisc", "replace", "dev", "l0", "root",
                    "tbf", "rate", rate, "burst", "32kb", "latency", "100ms",
                ]);
            }
            None => run_quiet(&[
                "ip", "netns", "exec", &self.ns, "tc", "qdisc", "del", "dev", "l0", "root",
            ]),
        }
    }
}

/// The whole network; dropped, it is torn down.
pub struct Network {
    prefix: String,
    pub wan_if: String,
    pub sites: Vec<Site>,
    _delay_line: Proc,
}

impl Network {
    /// Builds the WAN (`rate` as tc understands it, e.g. "10mbit"; one-way
    /// `delay_ms`) and the sites, each `(subnet like "10.77.0", hosts)`.
    pub fn build(rate: &str, delay_ms: u32, sites: &[(&str, usize)], dir: &Path) -> Network {
        let prefix = format!("st{}", std::process::id() % 100_000);
        let wan = format!("{prefix}-wan");
        let rtr = format!("{prefix}-rtr");
        let wan_if = format!("{prefix}-wi");
        // Tear down leftovers of a crashed run with the same prefix.
        teardown(&prefix, &wan_if);
        if Command::new("ethtool").arg("--version").output().is_err() {
            run_quiet(&["apt-get", "install", "-y", "-qq", "ethtool"]);
        }
        run(&["ip", "netns", "add", &wan]);
        run(&["ip", "netns", "add", &rtr]);
        run(&[
            "ip", "link", "add", &wan_if, "type", "veth", "peer", "name", "wa", "netns", &wan,
        ]);
        run(&[
            "ip", "link", "add", "wr", "netns", &rtr, "type", "veth", "peer", "name", "wb",
            "netns", &wan,
        ]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{INTERNET}/24"),
            "dev",
            &wan_if,
        ]);
        run(&["ip", "link", "set", &wan_if, "up"]);
        let in_ns = |ns: &str, args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns];
            v.extend_from_slice(args);
            run(&v);
        };
        in_ns(&wan, &["ip", "link", "set", "wa", "up"]);
        in_ns(&wan, &["ip", "link", "set", "wb", "up"]);
        in_ns(
            &rtr,
            &[
                "ip",
                "addr",
                "add",
                &format!("{ROUTER_WAN}/24"),
                "dev",
                "wr",
            ],
        );
        in_ns(&rtr, &["ip", "link", "set", "wr", "up"]);
        in_ns(&rtr, &["ip", "link", "set", "lo", "up"]);
        in_ns(&rtr, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Frames into the delay line must be whole and checksummed.
        run_quiet(&[
            "ethtool", "-K", &wan_if, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ]);
        run_quiet(&[
            "ip", "netns", "exec", &rtr, "ethtool", "-K", "wr", "tx", "off", "tso", "off", "gso",
            "off", "gro", "off",
        ]);
        for (dev, ns) in [(wan_if.as_str(), None), ("wr", Some(rtr.as_str()))] {
            let mut v: Vec<&str> = Vec::new();
            if let Some(ns) = ns {
                v.extend_from_slice(&["ip", "netns", "exec", ns]);
            }
            v.extend_from_slice(&[
                "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kb",
                "latency", "100ms",
            ]);
            run(&v);
        }
        let script = repo_root().join("simulations/delayline.py");
        let mut delay = Command::new("ip");
        delay
            .args(["netns", "exec", &wan, "python3"])
            .arg(&script)
            .args(["wa", "wb", &delay_ms.to_string(), "262144"]);
        let delay_line = Proc::spawn("delayline", delay, dir);
        let mut built = Vec::new();
        for (s, (net, hosts)) in sites.iter().enumerate() {
            let bridge = format!("br{s}");
            in_ns(&rtr, &["ip", "link", "add", &bridge, "type", "bridge"]);
            in_ns(
                &rtr,
                &["ip", "addr", "add", &format!("{net}.1/24"), "dev", &bridge],
            );
            in_ns(&rtr, &["ip", "link", "set", &bridge, "up"]);
            run(&[
                "ip",
                "route",
                "add",
                &format!("{net}.0/24"),
                "via",
                ROUTER_WAN,
                "dev",
                &wan_if,
            ]);
            let mut site = Site {
                bridge: bridge.clone(),
                net: net.to_string(),
                hosts: Vec::new(),
            };
            for _ in 0..*hosts {
                site.hosts
                    .push(add_host(&prefix, &rtr, &bridge, net, s, site.hosts.len()));
            }
            built.push(site);
        }
        Network {
            prefix,
            wan_if,
            sites: built,
            _delay_line: delay_line,
        }
    }

    /// Adds one more host to site `s`.
    pub fn add_host(&mut self, s: usize) -> &Host {
        let rtr = format!("{}-rtr", self.prefix);
        let site = &mut self.sites[s];
        let host = add_host(
            &self.prefix,
            &rtr,
            &site.bridge,
            &site.net,
            s,
            site.hosts.len(),
        );
        site.hosts.push(host);
        site.hosts.last().expect("just added")
    }

    /// Bytes the internet side has sent into the WAN (towards the sites).
    pub fn wan_tx_bytes(&self) -> u64 {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/tx_bytes",
            self.wan_if
        ))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
    }
}

fn add_host(prefix: &str, rtr: &str, bridge: &str, net: &str, site: usize, i: usize) -> Host {
    let ns = format!("{prefix}-s{site}h{i}");
    let ip = format!("{net}.{}", 10 + i);
    let port = format!("s{site}h{i}");
    run(&["ip", "netns", "add", &ns]);
    run(&[
        "ip", "link", "add", "l0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
        rtr,
    ]);
    run(&[
        "ip", "netns", "exec", rtr, "ip", "link", "set", &port, "master", bridge, "up",
    ]);
    let cidr = format!("{ip}/24");
    let gateway = format!("{net}.1");
    for args in [
        ["ip", "addr", "add", cidr.as_str(), "dev", "l0"].as_slice(),
        &["ip", "link", "set", "l0", "up"],
        &["ip", "link", "set", "lo", "up"],
        &["ip", "route", "add", "default", "via", gateway.as_str()],
    ] {
        let mut v: Vec<&str> = vec!["ip", "netns", "exec", &ns];
        v.extend_from_slice(args);
        run(&v);
    }
    Host { ns, ip }
}

fn teardown(prefix: &str, wan_if: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&format!("{prefix}-")) {
                run_quiet(&["ip", "netns", "pids", name]);
                // Processes still inside die with their namespace's devices.
                if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                        run_quiet(&["kill", "-9", pid]);
                    }
                }
                run_quiet(&["ip", "netns", "del", name]);
            }
        }
    }
    run_quiet(&["ip", "link", "del", wan_if]);
    for net in ["10.77.0.0/24", "10.76.0.0/24", "10.75.0.0/24"] {
        run_quiet(&["ip", "route", "del", net]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        teardown(&self.prefix, &self.wan_if);
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}
