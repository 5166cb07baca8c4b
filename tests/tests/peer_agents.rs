//! The peer-assisted eCDN end to end, in real network namespaces (needs
//! root): the internet (this process's namespace: control plane behind a TLS
//! terminator, origin, edge) and a branch office whose only way out is a
//! 10 Mbit/s, 20 ms WAN link (tc tbf + a delay line). Site A is a LAN bridge
//! with ten agent hosts; site B another bridge with two. ffmpeg pushes a
//! 3 Mbit/s stream; each host runs `strom peer-agent` and a viewer
//! (`strom watch`, checking every object's origin signature) against it.
//!
//! One scenario in sequence (the set-up takes most of the time):
//! 1. without agents, ten viewers at the edge cannot all play;
//! 2. with agents, every viewer gets every object in time for 60 s and the
//!    WAN carries at most 1.3 copies of the stream;
//! 3. the leader is killed: the others keep receiving, gap ≤ 1 s; then the
//!    new leader's uplink is cut to a quarter of what it must send: viewers
//!    still wait ≤ 1 s (repair from the standby and the edge, P2P-4);
//! 4. site B's agents never peer with site A's;
//! 5. a tampering agent is cut off and no viewer ever gets its objects.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strom_tests::agents::{counter, field, start_agent, Agent, AgentLinks};
use strom_tests::control_plane::TestControlPlane;
use strom_tests::netns::{self, Host, Network};
use strom_tests::*;
use strom_token::Action;

const TENANT: &str = "acme";
const NAMESPACE: &str = "acme/townhall/main";
/// Agents in site A: 10, or `STROM_P2P_AGENTS` (to measure larger sites).
fn agents_wanted() -> usize {
    std::env::var("STROM_P2P_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}
/// `STROM_P2P_PEER_TIMEOUT_MS`: another swarm idle timeout (to measure).
fn peer_timeout() -> Option<u64> {
    std::env::var("STROM_P2P_PEER_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
}
const SECS: u64 = 60;

/// What `strom watch` reported last for the video track.
#[derive(Debug, Default, Clone)]
struct Viewed {
    objects: u64,
    p99_ms: Option<f64>,
    /// Latency of the objects produced after the viewer joined.
    live_p50_ms: Option<f64>,
    live_p99_ms: Option<f64>,
    /// Objects and groups that never came, and groups that came after a
    /// newer one (late, not lost).
    holes: u64,
    skipped_groups: u64,
    #[allow(dead_code)] // printed with the figures (Debug)
    late_groups: u64,
    max_gap_ms: u64,
    /// When that gap ended, in seconds from the viewer's start.
    #[allow(dead_code)] // printed with the figures (Debug)
    max_gap_at_s: Option<f64>,
    /// When the first object was shown, from the start of `--duration`.
    first_ms: Option<u64>,
    verified: u64,
    refused: u64,
}

fn viewed(log: &str) -> Viewed {
    let Some(line) = log.lines().rev().find(|l| l.contains("video: ")) else {
        return Viewed::default();
    };
    let video = &line[line.find("video: ").expect("found")..];
    let video = video.split(';').next().unwrap_or(video);
    let num = |after: &str| {
        field(video, after)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Viewed {
        objects: field(video, "video: ")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        p99_ms: field(video, "p99 ").and_then(|v| v.parse().ok()),
        live_p50_ms: field(video, "live p50 ").and_then(|v| v.parse().ok()),
        live_p99_ms: field(video, "live p50 ")
            .and_then(|_| field(&video[video.find("live p50 ")?..], "p99 "))
            .and_then(|v| v.parse().ok()),
        holes: num("holes "),
        skipped_groups: num("skipped groups "),
        late_groups: num("late groups "),
        max_gap_ms: num("max gap "),
        max_gap_at_s: field(video, " ms at ").and_then(|v| v.parse().ok()),
        first_ms: field(video, "first after ").and_then(|v| v.parse().ok()),
        verified: num("signatures "),
        refused: field(video, "verified ")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// A viewer at an agent (on its LAN) shows its first object within 2 s.
fn joined_in_time(v: &Viewed) {
    assert!(
        v.first_ms.is_some_and(|ms| ms <= JOIN_MS),
        "a viewer at an agent took over {JOIN_MS} ms to show its first object: {v:?}"
    );
}
const JOIN_MS: u64 = 2000;

/// A viewer in `host`'s namespace watching `url` for `secs`.
#[allow(clippy::too_many_arguments)]
fn viewer(
    host: &Host,
    url: &str,
    cert: &str,
    token: &str,
    media_key: &str,
    secs: u64,
    dir: &Path,
    name: &str,
) -> Proc {
    let mut cmd = host.command(&strom_bin());
    cmd.args([
        "watch",
        url,
        NAMESPACE,
        "-o",
        "/dev/null",
        "--cert-sha256",
        cert,
    ])
    .args(["--duration", &secs.to_string()])
    .env("STROM_TOKEN", token)
    .env("STROM_MEDIA_KEY", media_key)
    .stdout(Stdio::null());
    Proc::spawn(name, cmd, dir)
}

fn finish(viewers: &mut [Proc], secs: u64) -> Vec<Viewed> {
    viewers
        .iter_mut()
        .map(|v| {
            v.wait(Duration::from_secs(secs + 40));
            viewed(&v.log_text())
        })
        .collect()
}

/// Peer ids this agent's log says it admitted.
fn admitted(agent: &Agent) -> HashSet<String> {
    agent
        .proc
        .log_text()
        .lines()
        .filter(|l| l.contains("peer admitted"))
        .filter_map(|l| field(l, "peer=").map(str::to_owned))
        .collect()
}

/// The parent the agent chose last ("edge" or a peer id).
fn parent(agent: &Agent) -> Option<String> {
    agent
        .proc
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains("upstream chosen"))
        .and_then(|l| field(l, "parent="))
        .map(str::to_owned)
}

fn stream_mbit(clip: &Path) -> f64 {
    std::fs::metadata(clip).expect("clip").len() as f64 * 8.0 / 60.0 / 1e6
}

/// A 60 s 720p30 clip at ~2.8 Mbit/s video + AAC, encoded once and pushed
/// with `-c copy` (no encoder competing for the CPU during the test).
fn clip() -> std::path::PathBuf {
    let dir =
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or("/tmp".into())).join(".cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    let clip = dir.join("strom-bench-clip-720p30-3m.flv");
    if std::fs::metadata(&clip)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
    {
        return clip;
    }
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=60",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000:duration=60",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-b:v", "2800k", "-maxrate", "2800k", "-bufsize", "2800k"])
        .args([
            "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-f", "flv",
        ])
        .arg(&clip)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "encoding the test clip");
    clip
}

#[test]
fn a_site_behind_a_thin_wan_pulls_one_copy_and_survives_loss_and_tampering() {
    if !netns::is_root() {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    }
    let _serial = serial();
    // Logs stay when the test fails (the path is printed); removed on
    // success unless STROM_P2P_KEEP_LOGS is set.
    let kept = tempfile::Builder::new()
        .prefix("strom-p2p-")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("logs: {}", kept.display());
    let dir = kept.as_path();
    let clip = clip();
    let n_agents = agents_wanted();
    let mut net = Network::build("10mbit", 20, &[("10.77.0", n_agents), ("10.76.0", 2)], dir);

    // --- the internet: control plane (HTTPS for the agents), origin, edge
    let cp = TestControlPlane::start();
    let (cp_url, cp_ca) = cp.serve_tls(
        format!("{}:0", netns::INTERNET).parse().unwrap(),
        &dir.join("cp-tls"),
    );
    let site = |name: &str, cidr: String| strom_control_plane::model::Site {
        id: strom_control_plane::model::new_id("s"),
        tenant: TENANT.into(),
        name: name.into(),
        cidrs: vec![cidr],
        p2p: strom_control_plane::model::P2pMode::On,
    };
    cp.repo
        .put_site("test", &site("HQ", net.sites[0].cidr()), true)
        .unwrap();
    cp.repo
        .put_site("test", &site("Branch", net.sites[1].cidr()), true)
        .unwrap();
    let (_, credential) = cp.repo.issue_agent_credential("test", TENANT).unwrap();

    let origin = Service::origin_with("origin", dir, &[], &cp.toml("origin"));
    let edge_toml = format!(
        "data_dir = {:?}\n[edge]\nmoqt_listen = \"{}:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [[edge.upstream]]\nurl = \"moqt://127.0.0.1:{}\"\ncert_sha256 = \"{}\"\n{}",
        dir.join("edge"),
        netns::INTERNET,
        origin.moqt_port,
        origin.cert_sha256,
        cp.toml("edge")
    );
    let edge = Service::start("edge", "edge", &edge_toml, dir);
    let edge_url = format!("moqt://{}:{}", netns::INTERNET, edge.moqt_port);
    let media_key = wait_until(Duration::from_secs(20), "the origin's media key", || {
        cp.repo.key_set().ok()?.media.first().map(|k| k.key.clone())
    });

    let publish = cp.token(Action::Publish, "stream-main", NAMESPACE, 3600);
    let mut push = Command::new("ffmpeg");
    push.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
    ])
    .arg(&clip)
    .args(["-c", "copy", "-f", "flv"])
    .arg(origin.rtmp_url(&publish))
    .stdout(Stdio::null());
    let _push = Proc::spawn("ffmpeg", push, dir);
    let play = cp.token(Action::Play, "viewer", "acme/townhall", 600);
    let master = edge.http_url(&format!("/hls/{NAMESPACE}/master.m3u8?token={play}"));
    wait_until(Duration::from_secs(30), "the broadcast at the edge", || {
        http_text(&master).filter(|t| t.contains("#EXT-X-STREAM-INF"))
    });
    let stream = stream_mbit(&clip);

    // --- 1. without peer-assist: every viewer pulls its own copy over the WAN
    let base_secs = 20;
    let mut viewers: Vec<Proc> = net.sites[0]
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            viewer(
                h,
                &edge_url,
                &edge.cert_sha256,
                &play,
                &media_key,
                base_secs,
                dir,
                &format!("direct{i}"),
            )
        })
        .collect();
    let direct = finish(&mut viewers, base_secs);
    drop(viewers);
    // Objects of the time a viewer watched: from its first object to the
    // end of its `--duration` (30 per second). Joining is timed on its own
    // (`joined_in_time`): a viewer whose start was delayed crossing the
    // congested WAN still has to get every object after that.
    let expected = |v: &Viewed, secs: u64| {
        (secs * 1000).saturating_sub(v.first_ms.unwrap_or(secs * 1000)) * 30 / 1000
    };
    let plays = |v: &Viewed, secs: u64| {
        v.objects >= expected(v, secs) * 95 / 100 && v.live_p99_ms.is_some_and(|p| p < 2000.0)
    };
    eprintln!("without agents ({base_secs} s):");
    for (i, v) in direct.iter().enumerate() {
        eprintln!("  viewer {i}: {v:?}");
    }
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    };
    eprintln!(
        "  median latency p99 (all objects) {:.0} ms",
        median(direct.iter().filter_map(|v| v.p99_ms).collect())
    );
    let playing = direct.iter().filter(|v| plays(v, base_secs)).count();
    assert!(
        playing < n_agents,
        "without agents all {n_agents} viewers played: the WAN is not the bottleneck this test needs"
    );

    // --- 2. agents on every host of both sites
    let links = AgentLinks {
        edge_url: &edge_url,
        edge_cert: &edge.cert_sha256,
        cp_url: &cp_url,
        cp_ca: &cp_ca,
        credential: &credential,
    };
    let extra = peer_timeout()
        .map(|ms| format!("peer_timeout_ms = {ms}\n"))
        .unwrap_or_default();
    let mut agents: Vec<Agent> = Vec::new();
    for (i, host) in net.sites[0].hosts.iter().enumerate() {
        agents.push(start_agent(
            host,
            i,
            &format!("agent{i}"),
            &links,
            false,
            &extra,
            dir,
        ));
    }
    let branch: Vec<Agent> = net.sites[1]
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| start_agent(h, i, &format!("branch{i}"), &links, false, &extra, dir))
        .collect();
    let a_ids: HashSet<String> = agents.iter().map(|a| a.peer_id.clone()).collect();
    let b_ids: HashSet<String> = branch.iter().map(|a| a.peer_id.clone()).collect();
    wait_until(
        Duration::from_secs(60),
        "every agent admitted the other nine",
        || {
            agents
                .iter()
                .all(|a| admitted(a).len() >= n_agents - 1)
                .then_some(())
        },
    );
    let leaders: Vec<&Agent> = agents
        .iter()
        .filter(|a| parent(a).as_deref() == Some("edge"))
        .collect();
    assert_eq!(
        leaders.len(),
        1,
        "exactly one agent pulls from the edge: {:?}",
        agents.iter().map(parent).collect::<Vec<_>>()
    );

    let before = net.wan_tx_bytes();
    let started = Instant::now();
    let mut viewers: Vec<Proc> = agents
        .iter()
        .map(|a| {
            viewer(
                &net.sites[0].hosts[a.host],
                &a.url,
                &a.cert,
                &play,
                &media_key,
                SECS,
                dir,
                &format!("local{}", a.host),
            )
        })
        .collect();
    let local = finish(&mut viewers, SECS);
    let elapsed = started.elapsed().as_secs_f64();
    let wan_mbit = (net.wan_tx_bytes() - before) as f64 * 8.0 / elapsed / 1e6;
    drop(viewers);
    eprintln!(
        "with agents ({SECS} s): WAN {wan_mbit:.2} Mbit/s = {:.2} copies of {stream:.2} Mbit/s",
        wan_mbit / stream
    );
    for (i, v) in local.iter().enumerate() {
        eprintln!("  viewer {i}: {v:?}");
    }
    for (i, v) in local.iter().enumerate() {
        assert!(
            v.objects >= expected(v, SECS) * 97 / 100,
            "viewer {i} got {} of ~{} objects: {v:?}",
            v.objects,
            expected(v, SECS)
        );
        joined_in_time(v);
        assert_eq!(
            (v.holes, v.skipped_groups),
            (0, 0),
            "viewer {i} missed objects: {v:?}"
        );
        assert!(
            v.live_p99_ms.is_some_and(|p| p < 1000.0),
            "viewer {i} latency: {v:?}"
        );
        assert_eq!(
            v.refused, 0,
            "viewer {i} got objects whose signature fails: {v:?}"
        );
        assert!(
            v.verified >= v.objects,
            "viewer {i}: every object verified: {v:?}"
        );
    }
    assert!(
        wan_mbit / stream <= 1.3,
        "the WAN carried {:.2} copies",
        wan_mbit / stream
    );
    let from_peers: u64 = agents.iter().map(|a| counter(a, "bytes_from_peers")).sum();
    let from_edge: u64 = agents.iter().map(|a| counter(a, "bytes_from_edge")).sum();
    let repaired: u64 = agents.iter().map(|a| counter(a, "objects_repaired")).sum();
    eprintln!(
        "  offload {:.1} % ({from_peers} bytes from peers, {from_edge} from the edge; {repaired} objects repaired); median live latency p50 {:.0} ms",
        100.0 * from_peers as f64 / (from_peers + from_edge).max(1) as f64,
        median(local.iter().filter_map(|v| v.live_p50_ms).collect())
    );

    // --- 2b. latency an agent adds: a viewer at the edge and one at an agent, side by side
    let side_secs = 15;
    let follower = agents
        .iter()
        .find(|a| parent(a).as_deref() != Some("edge"))
        .expect("a follower");
    let other = net.sites[0]
        .hosts
        .iter()
        .enumerate()
        .find(|(i, _)| *i != follower.host)
        .expect("another host")
        .1;
    let side_before = net.wan_tx_bytes();
    let side_started = Instant::now();
    let mut pair = vec![
        viewer(
            other,
            &edge_url,
            &edge.cert_sha256,
            &play,
            &media_key,
            side_secs,
            dir,
            "side-edge",
        ),
        viewer(
            &net.sites[0].hosts[follower.host],
            &follower.url,
            &follower.cert,
            &play,
            &media_key,
            side_secs,
            dir,
            "side-agent",
        ),
    ];
    let side = finish(&mut pair, side_secs);
    let side_wan = (net.wan_tx_bytes() - side_before) as f64 * 8.0
        / side_started.elapsed().as_secs_f64()
        / 1e6;
    drop(pair);
    eprintln!(
        "latency to live side by side ({side_secs} s, live p50 / p99): edge {:?} / {:?} ms, agent (two relays further) {:?} / {:?} ms; WAN {side_wan:.2} Mbit/s = {:.2} copies",
        side[0].live_p50_ms, side[0].live_p99_ms, side[1].live_p50_ms, side[1].live_p99_ms,
        side_wan / stream
    );
    assert!(
        side.iter()
            .all(|v| v.first_ms.is_some() && v.objects >= expected(v, side_secs) * 90 / 100),
        "{side:?}; WAN {side_wan:.2} Mbit/s; parents {:?}",
        agents.iter().map(parent).collect::<Vec<_>>()
    );
    joined_in_time(&side[1]);

    // --- 3. the leader dies while everyone watches
    let leader = agents
        .iter()
        .position(|a| parent(a).as_deref() == Some("edge"))
        .expect("a leader");
    let loss_secs = 20;
    let mut viewers: Vec<Proc> = agents
        .iter()
        .filter(|a| a.host != leader)
        .map(|a| {
            viewer(
                &net.sites[0].hosts[a.host],
                &a.url,
                &a.cert,
                &play,
                &media_key,
                loss_secs,
                dir,
                &format!("loss{}", a.host),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(7));
    agents[leader].proc.kill();
    let after_loss = finish(&mut viewers, loss_secs);
    drop(viewers);
    eprintln!(
        "leader killed 7 s into a {loss_secs} s view; longest wait per viewer (ms): {:?}",
        after_loss.iter().map(|v| v.max_gap_ms).collect::<Vec<_>>()
    );
    for v in &after_loss {
        eprintln!("  {v:?}");
    }
    for v in &after_loss {
        assert!(
            v.max_gap_ms <= 1000,
            "a viewer waited {} ms: {v:?}",
            v.max_gap_ms
        );
        assert!(v.objects >= expected(v, loss_secs) * 90 / 100, "{v:?}");
        joined_in_time(v);
        assert_eq!(v.refused, 0);
    }
    let new_leaders: Vec<usize> = agents
        .iter()
        .filter(|a| a.host != leader && parent(a).as_deref() == Some("edge"))
        .map(|a| a.host)
        .collect();
    assert_eq!(new_leaders.len(), 1, "one agent took over the edge pull");

    // --- 3b. the new leader slows down (its uplink drops to a quarter of
    // what its children need) but stays alive: viewers must not wait for it
    let slow = new_leaders[0];
    let slow_secs = 20;
    let repaired_before: u64 = agents
        .iter()
        .filter(|a| a.host != leader)
        .map(|a| counter(a, "objects_repaired"))
        .sum();
    let before = net.wan_tx_bytes();
    let started = Instant::now();
    let mut viewers: Vec<Proc> = agents
        .iter()
        .filter(|a| a.host != leader && a.host != slow)
        .map(|a| {
            viewer(
                &net.sites[0].hosts[a.host],
                &a.url,
                &a.cert,
                &play,
                &media_key,
                slow_secs,
                dir,
                &format!("slow{}", a.host),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(6));
    net.sites[0].hosts[slow].limit_upload(Some("6mbit"));
    let lagging = finish(&mut viewers, slow_secs);
    net.sites[0].hosts[slow].limit_upload(None);
    drop(viewers);
    let copies =
        (net.wan_tx_bytes() - before) as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e6 / stream;
    // The status line comes every 5 s.
    std::thread::sleep(Duration::from_secs(6));
    let repaired: u64 = agents
        .iter()
        .filter(|a| a.host != leader)
        .map(|a| counter(a, "objects_repaired"))
        .sum::<u64>()
        - repaired_before;
    eprintln!(
        "leader's uplink cut to 6 Mbit/s 6 s into a {slow_secs} s view: longest wait per viewer (ms) {:?}; \
         {repaired} objects repaired; WAN {copies:.2} copies",
        lagging.iter().map(|v| v.max_gap_ms).collect::<Vec<_>>()
    );
    for v in &lagging {
        eprintln!("  {v:?}");
    }
    assert!(
        repaired > 0,
        "nothing was repaired: the test proves nothing"
    );
    for v in &lagging {
        assert!(
            v.max_gap_ms <= 1000,
            "a viewer waited {} ms for a slow parent: {v:?}",
            v.max_gap_ms
        );
        assert_eq!(
            (v.holes, v.skipped_groups),
            (0, 0),
            "a viewer missed objects: {v:?}"
        );
        assert!(v.objects >= expected(v, slow_secs) * 90 / 100, "{v:?}");
        joined_in_time(v);
        assert_eq!(v.refused, 0);
    }

    // --- 4. the second site keeps to itself
    for a in &agents {
        let foreign: Vec<String> = admitted(a).intersection(&b_ids).cloned().collect();
        assert!(
            foreign.is_empty(),
            "site A agent admitted site B agents {foreign:?}"
        );
    }
    for b in &branch {
        let seen = admitted(b);
        assert!(
            seen.is_disjoint(&a_ids),
            "site B agent admitted site A agents"
        );
        assert_eq!(seen.len(), 1, "the two site B agents admitted each other");
    }

    // --- 5. a tampering agent joins site A (it grinds an identity that sorts first)
    net.add_host(0);
    let host_index = net.sites[0].hosts.len() - 1;
    let host = &net.sites[0].hosts[host_index];
    let tamperer = start_agent(host, host_index, "tamperer", &links, true, &extra, dir);
    let tamper_secs = 30;
    let before = net.wan_tx_bytes();
    let started = Instant::now();
    let mut viewers: Vec<Proc> = agents
        .iter()
        .filter(|a| a.host != leader)
        .map(|a| {
            viewer(
                &net.sites[0].hosts[a.host],
                &a.url,
                &a.cert,
                &play,
                &media_key,
                tamper_secs,
                dir,
                &format!("tamper{}", a.host),
            )
        })
        .collect();
    let tampered = finish(&mut viewers, tamper_secs);
    let wan_mbit =
        (net.wan_tx_bytes() - before) as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e6;
    drop(viewers);
    eprintln!(
        "with a tampering agent ({tamper_secs} s): WAN {wan_mbit:.2} Mbit/s = {:.2} copies",
        wan_mbit / stream
    );
    for v in &tampered {
        eprintln!("  {v:?}");
    }
    let blockers = agents
        .iter()
        .filter(|a| a.host != leader)
        .filter(|a| {
            a.proc.log_text().lines().any(|l| {
                (l.contains("peer blocked") || l.contains("peer refused"))
                    && l.contains(&tamperer.peer_id)
            })
        })
        .count();
    let fed = agents
        .iter()
        .filter(|a| a.host != leader)
        .filter(|a| {
            a.proc
                .log_text()
                .lines()
                .any(|l| l.contains("upstream chosen") && l.contains(&tamperer.peer_id))
        })
        .count();
    eprintln!("agents that pulled from the tamperer: {fed}; that cut it off: {blockers}");
    assert!(
        fed > 0,
        "the tampering agent never fed anyone: the test proves nothing"
    );
    assert_eq!(blockers, fed, "every agent the tamperer fed cut it off");
    for v in &tampered {
        assert_eq!(v.refused, 0, "a viewer got an altered object: {v:?}");
        // Make before break: an agent keeps its old parent until the new
        // one delivers good objects (before, the leader's viewer lost group
        // tails: 85 % was all this could ask, BENCHMARKS.md). While the
        // tamperer leads, the WAN carries two leaders' copies (2.3 copies
        // of a 10 Mbit/s link), and a viewer may wait ~1 s and fall ~2 s
        // behind: 90 %, as for the other fault phases. Counts start at the
        // live edge: `strom watch` fetches no history (it did until
        // 2026-12, which padded every count by ~3 s of old groups).
        assert!(v.objects >= expected(v, tamper_secs) * 90 / 100, "{v:?}");
        joined_in_time(v);
    }
    drop(tamperer);
    drop(agents);
    drop(branch);
    if std::env::var_os("STROM_P2P_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&kept);
    }
}
