//! The event's live dashboard in the admin UI, end to end (needs root for
//! the network namespaces): a control plane, an origin with an ffmpeg push,
//! an edge, and a branch office with three peer-agents, each with a viewer
//! (`strom watch`) in its host's namespace. A staff member opens the
//! event's admin page in headless Chromium; its preview player watches from
//! the edge and sends QoE beacons. The dashboard must show the viewers (at
//! the edge and at the agents), the site's offload and WAN bitrate, the
//! players' latency to live, and draw its timelines; the screenshot is kept
//! in `web/test-results/dashboard.png`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use strom_control_plane::model::{Event, P2pMode, Principal, Role, Site};
use strom_tests::agents::{start_agent, AgentLinks};
use strom_tests::control_plane::TestControlPlane;
use strom_tests::netns::{self, Network};
use strom_tests::*;
use strom_token::Action;

const PASSWORD: &str = "Dashboard-test-2026!";

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("web")
}

#[test]
fn the_admin_dashboard_shows_viewers_offload_and_latency_of_a_live_event() {
    if !netns::is_root() {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    }
    let _serial = serial();
    let kept = tempfile::Builder::new()
        .prefix("strom-dash-")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("logs: {}", kept.display());
    let dir = kept.as_path();
    // A branch office with three hosts behind a 50 Mbit/s WAN.
    let net = Network::build("50mbit", 10, &[("10.75.0", 3)], dir);

    // --- the control plane: a tenant, a staff member, an event, the site
    let cp = TestControlPlane::start();
    let (cp_tls, cp_ca) = cp.serve_tls(
        format!("{}:0", netns::INTERNET).parse().unwrap(),
        &dir.join("cp-tls"),
    );
    let tenant = cp.repo.create_tenant("Acme").unwrap();
    let email = "events@acme.example";
    let (user, _) = cp
        .repo
        .create_user(
            "test",
            &tenant.id,
            email,
            "Event Manager",
            Role::EventManager,
            Some(PASSWORD),
        )
        .unwrap();
    cp.repo
        .update_credential(
            &tenant.id,
            &Principal::Staff {
                user: user.id.clone(),
                role: Role::EventManager,
            },
            |c| {
                c.must_change = false;
                Ok(())
            },
        )
        .unwrap();
    let start = strom_control_plane::repo::now() - time::Duration::minutes(5);
    let event = cp
        .repo
        .create_event(
            "test",
            Event::open(
                &tenant.id,
                "Town hall",
                start,
                start + time::Duration::hours(2),
            ),
        )
        .unwrap();
    cp.repo
        .create_stream("test", &tenant.id, &event.id, "main")
        .unwrap();
    let namespace = format!("{}/{}/main", tenant.id, event.id);
    cp.repo
        .put_site(
            "test",
            &Site {
                id: strom_control_plane::model::new_id("s"),
                tenant: tenant.id.clone(),
                name: "Berlin office".into(),
                cidrs: vec![net.sites[0].cidr()],
                p2p: P2pMode::On,
            },
            true,
        )
        .unwrap();
    let (_, credential) = cp.repo.issue_agent_credential("test", &tenant.id).unwrap();

    // --- origin and edge (the edge's MoQT on every address: agents come
    // over the WAN, the browser over loopback)
    let origin = Service::origin_with("origin", dir, &[], &cp.toml("origin"));
    let edge_toml = format!(
        "data_dir = {:?}\n[edge]\nmoqt_listen = \"0.0.0.0:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [[edge.upstream]]\nurl = \"moqt://127.0.0.1:{}\"\ncert_sha256 = \"{}\"\n{}",
        dir.join("edge"),
        origin.moqt_port,
        origin.cert_sha256,
        cp.toml("edge")
    );
    let edge = Service::start("edge", "edge", &edge_toml, dir);
    // Where browsers find the edge (an edge's heartbeat would say the same).
    cp.repo
        .put_edge(&strom_control_plane::model::EdgeRegistration {
            id: "relay-1".into(),
            region: "test".into(),
            url: format!("http://127.0.0.1:{}/", edge.http_port),
            load: 0.0,
            registered_at: strom_control_plane::repo::now(),
            last_seen: Some(strom_control_plane::repo::now()),
        })
        .unwrap();

    let publish = cp.token(Action::Publish, "stream-main", &namespace, 3600);
    let mut push = test_source("640x360", None);
    x264(&mut push, "1000k");
    push.args(["-c:a", "aac", "-b:a", "96k", "-f", "flv"])
        .arg(origin.rtmp_url(&publish))
        .stdout(Stdio::null());
    let _push = Proc::spawn("ffmpeg", push, dir);
    let play = cp.token(
        Action::Play,
        "viewer",
        &format!("{}/{}", tenant.id, event.id),
        600,
    );
    let master = edge.http_url(&format!("/hls/{namespace}/master.m3u8?token={play}"));
    wait_until(Duration::from_secs(30), "the broadcast at the edge", || {
        http_text(&master).filter(|t| t.contains("#EXT-X-STREAM-INF"))
    });

    // --- the branch office: an agent and a viewer on each host
    let edge_url = format!("moqt://{}:{}", netns::INTERNET, edge.moqt_port);
    let links = AgentLinks {
        edge_url: &edge_url,
        edge_cert: &edge.cert_sha256,
        cp_url: &cp_tls,
        cp_ca: &cp_ca,
        credential: &credential,
    };
    let agents: Vec<_> = net.sites[0]
        .hosts
        .iter()
        .enumerate()
        .map(|(i, host)| start_agent(host, i, &format!("agent{i}"), &links, false, "", dir))
        .collect();
    // Viewers join as the agents start (a viewer asks again while its
    // agent has not learnt of the broadcast yet).
    let mut viewers: Vec<Proc> = agents
        .iter()
        .map(|a| {
            let host = &net.sites[0].hosts[a.host];
            let mut cmd = host.command(&strom_bin());
            cmd.args(["watch", &a.url, &namespace, "-o", "/dev/null"])
                .args(["--cert-sha256", &a.cert, "--duration", "240"])
                .env("STROM_TOKEN", &play)
                .stdout(Stdio::null());
            Proc::spawn(&format!("viewer{}", a.host), cmd, dir)
        })
        .collect();

    // --- the admin page in Chromium
    let png = web_dir().join("test-results").join("dashboard.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let out = Command::new("node")
        .current_dir(web_dir())
        .arg("tests/dashboard-shot.mjs")
        .args([&cp.url, &tenant.id, email, PASSWORD, &event.id])
        .arg(&png)
        // At least the four viewers, and the site settled (one agent of
        // three pulls from the edge: two thirds from peers).
        .args(["120", "4", "50"])
        .stderr(Stdio::inherit())
        .output()
        .expect("node (npm's playwright-core drives Chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("dashboard: {stdout}");
    let seen: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .expect("the script's JSON line"),
    )
    .expect("JSON");
    for v in &mut viewers {
        assert!(v.is_running(), "{} stopped: {}", v.name, v.log_text());
    }
    assert!(
        out.status.success(),
        "the dashboard never showed viewers, offload and latency: {seen}"
    );
    assert!(png.exists(), "screenshot kept");

    // What the page showed is what the API says, and it is right.
    let api = &seen["api"];
    let now = &api["now"];
    let viewers_now = now["viewers"].as_u64().unwrap();
    assert!(
        viewers_now >= 4,
        "three viewers at the agents and the preview player at the edge: {now}"
    );
    let offload = now["offload"].as_f64().unwrap();
    assert!(
        (0.4..=0.8).contains(&offload),
        "one agent of three pulls from the edge, so about two thirds come from peers: {offload}"
    );
    let latency = now["latency_ms"].as_f64().or_else(|| {
        api["timeline"]
            .as_array()?
            .iter()
            .rev()
            .find_map(|s| s["latency_ms"].as_f64())
    });
    assert!(
        latency.is_some_and(|l| l > 0.0 && l < 10_000.0),
        "players' latency to live: {latency:?}"
    );
    let ingest = now["ingest_bps"].as_u64().unwrap();
    assert!(
        (500_000..3_000_000).contains(&ingest),
        "ingest of the 1.1 Mbit/s push: {ingest}"
    );
    let sites = api["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 1, "{sites:?}");
    assert_eq!(sites[0]["name"], "Berlin office");
    assert_eq!(sites[0]["agents"], 3);
    assert_eq!(
        sites[0]["viewers"], 3,
        "each agent's viewer, counted at its agent"
    );
    assert!(sites[0]["wan_bps"].as_f64().unwrap() > 500_000.0);
    let edges = api["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e["egress_bps"].as_u64().unwrap_or(0) > 500_000),
        "the edge's egress: {edges:?}"
    );
    let watching: u64 = seen["shown"]["watchingNow"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        watching >= 4,
        "the Live card counts viewers as the dashboard does: {watching}"
    );
    assert!(
        seen["shown"]["drawn"].as_u64().unwrap() >= 3,
        "timelines drawn"
    );
    assert!(api["timeline"].as_array().unwrap().len() >= 3);
    // Each running agent's own /metrics (scraped in its namespace): valid,
    // labelled with its site, its viewer counted, most media from peers.
    let site_id = sites[0]["site"].as_str().unwrap();
    // An agent's media bytes from the edge and from peers so far.
    let counter = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
    };
    let scrape = |a: &strom_tests::agents::Agent| -> String {
        let host = &net.sites[0].hosts[a.host];
        let out = host
            .command(std::path::Path::new("curl"))
            .args(["-sf", strom_tests::agents::METRICS_URL])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut before = Vec::new();
    for a in &agents {
        let host = &net.sites[0].hosts[a.host];
        // Not on the port the LAN's browsers use.
        let out = host
            .command(std::path::Path::new("curl"))
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg("http://127.0.0.1:8443/metrics")
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "404",
            "agent {} serves /metrics to its LAN",
            a.host
        );
        let out = host
            .command(std::path::Path::new("curl"))
            .args(["-sf", strom_tests::agents::METRICS_URL])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        strom_tests::prometheus::check(&text)
            .unwrap_or_else(|e| panic!("agent {} /metrics: {e}\n{text}", a.host));
        let viewers = [
            ("role", "agent"),
            ("tenant", tenant.id.as_str()),
            ("event", event.id.as_str()),
        ];
        assert_eq!(
            metric(&text, "strom_viewer_sessions", &viewers),
            Some(1.0),
            "agent {} counts its viewer: {text}",
            a.host
        );
        let site = [("tenant", tenant.id.as_str()), ("site", site_id)];
        metric(&text, "strom_agent_offload_ratio", &site)
            .unwrap_or_else(|| panic!("agent {} offload with its site: {text}", a.host));
        before.push((
            counter(&text, "strom_agent_edge_bytes_total"),
            counter(&text, "strom_agent_peer_bytes_total"),
        ));
    }
    // Where the media comes from now (the gauge counts since the agent
    // started, including the seconds before it found its peers): over 5 s.
    std::thread::sleep(Duration::from_secs(5));
    let offloads: Vec<f64> = agents
        .iter()
        .zip(&before)
        .map(|(a, (edge0, peer0))| {
            let text = scrape(a);
            let edge = counter(&text, "strom_agent_edge_bytes_total") - edge0;
            let peer = counter(&text, "strom_agent_peer_bytes_total") - peer0;
            assert!(
                edge + peer > 0.0,
                "agent {} received nothing in 5 s",
                a.host
            );
            peer / (edge + peer)
        })
        .collect();
    assert!(
        offloads.iter().filter(|o| **o > 0.9).count() >= 2,
        "two of three agents get their media from peers now: {offloads:?}"
    );
    // No person in what the dashboard says.
    let text = api.to_string();
    assert!(!text.contains(email) && !text.contains(&user.id), "{text}");
    drop(viewers);
    drop(agents);
    std::fs::remove_dir_all(dir).ok();
}
