//! Metrics for network admins (issue 7): every service's `/metrics` is valid
//! Prometheus text, serves what docs/metrics.md documents (and documents
//! what it serves), with real figures from a real push and viewer; the alert
//! rules and the Grafana dashboard refer only to metrics that exist.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use strom_tests::control_plane::TestControlPlane;
use strom_tests::prometheus::{self, Families};
use strom_tests::*;
use strom_token::Action;

const NS: &str = "acme/observed/main";

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A documented family: its name and labels.
struct Documented {
    name: String,
    labels: Vec<String>,
}

impl Documented {
    /// Series exist only while something is live (a broadcast, a link, a
    /// viewer, a placed agent) or once something happened (a refusal by
    /// reason): Prometheus clients leave a family without series out.
    fn live(&self) -> bool {
        const LIVE: [&str; 8] = [
            "tenant",
            "event",
            "stream",
            "track",
            "transport",
            "site",
            "encoder",
            "reason",
        ];
        self.labels.iter().any(|l| LIVE.contains(&l.as_str()))
    }
}

/// Live families this test's scenario (one RTMP push, an HLS viewer, a
/// beacon, an agent without broadcasts) gives no series, and the test that
/// sees them served.
const NOT_IN_THIS_SCENARIO: [(&str, &str); 11] = [
    (
        "strom_ingest_rtmp_refused_total",
        "contribution.rs: refused RTMP publishes",
    ),
    (
        "strom_ingest_srt_refused_total",
        "contribution.rs: bad SRT callers",
    ),
    (
        "strom_ingest_srt_rtt_seconds",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_bandwidth_bytes_per_second",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_received_packets_total",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_lost_packets_total",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_retransmitted_packets_total",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_dropped_packets_total",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_undecrypted_packets_total",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_receive_buffer_seconds",
        "contribution.rs: an encrypted SRT push",
    ),
    (
        "strom_ingest_srt_latency_seconds",
        "contribution.rs: an encrypted SRT push",
    ),
];

/// Live families this scenario may or may not show when it reads the pages:
/// the MoQT viewer's session can still be open, or already closed.
const MAYBE_IN_THIS_SCENARIO: [(&str, &str); 1] =
    [("strom_viewer_sessions", "dashboard.rs: an agent's viewer")];

/// The documented families per section of docs/metrics.md.
fn documented() -> BTreeMap<String, Vec<Documented>> {
    let mut out: BTreeMap<String, Vec<Documented>> = BTreeMap::new();
    let mut section = String::new();
    for line in repo_file("docs/metrics.md").lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.to_owned();
        } else if let Some(row) = line.strip_prefix("| `") {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            if let (Some(name), Some(labels)) = (cells[0].split('`').next(), cells.get(2)) {
                out.entry(section.clone()).or_default().push(Documented {
                    name: name.to_owned(),
                    labels: labels
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect(),
                });
            }
        }
    }
    out
}

fn check(service: &str, text: &str) -> Families {
    prometheus::check(text).unwrap_or_else(|e| panic!("{service} /metrics: {e}\n{text}"))
}

/// A peer-agent's `/metrics` as its metrics listener assembles it.
fn agent_metrics() -> String {
    strom_relay::monitoring::Monitoring {
        role: strom_relay::Role::Agent,
        broadcasts: strom_relay::Broadcasts::new(),
        counters: std::sync::Arc::new(strom_relay::metrics::ServerCounters::new(
            strom_relay::Role::Agent,
        )),
        extra_metrics: Some(std::sync::Arc::new(|scrape| {
            strom_peer_agent::collect_metrics(
                scrape,
                &strom_peer_agent::AgentCounters::default(),
                0,
                Some(("acme", "s_hq")),
            )
        })),
    }
    .render()
}

#[test]
fn every_service_serves_valid_documented_metrics_with_real_figures() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = TestControlPlane::start();
    let origin = Service::origin_with("origin", dir, &[], &cp.toml("origin"));
    let edge = Service::edge_with("edge", dir, &origin, &cp.toml("edge"));
    let publish = cp.token(Action::Publish, "s_broadcaster", NS, 3600);
    let url = format!(
        "rtmp://127.0.0.1:{}/live/{publish}",
        origin.rtmp_port.unwrap()
    );
    let _pusher = push(&url, 40, dir, "ffmpeg");
    let play = cp.token(Action::Play, "p_viewer", "acme/observed", 3600);
    let master = edge.http_url(&format!("/hls/{NS}/master.m3u8?token={play}"));
    wait_until(Duration::from_secs(30), "the broadcast at the edge", || {
        http_text(&master).filter(|t| t.contains("#EXT-X-STREAM-INF"))
    });
    let file = dir.join("watch.mp4");
    let mut watcher = watch_with_token(
        &edge.moq_url(),
        NS,
        &edge.cert_sha256,
        8.0,
        &file,
        dir,
        "watch",
        Some(&play),
    );
    let status = watcher.wait(Duration::from_secs(40)).expect("watch ends");
    assert!(status.success(), "{}", watcher.log_text());

    // QoE beacons: refused unless well-formed, for a broadcast served here,
    // with a playback token for it; then counted for the event.
    let qoe = edge.http_url("/qoe");
    let beacon = |ns: &str, token: &str| {
        format!(
            r#"{{"v":1,"ns":"{ns}","token":"{token}","transport":"hls","first_frame_ms":900,"watch_ms":10000,"stall_ms":500,"stalls":1,"latency_ms":2100,"bitrate_bps":2500000}}"#
        )
    };
    let post = |body: &str| match ureq::post(&qoe).send_string(body) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("POST /qoe: {e}"),
    };
    assert_eq!(post("not json"), 400);
    assert_eq!(post(&beacon(NS, "")), 403);
    assert_eq!(post(&beacon("acme/observed/nothere", &play)), 404);
    let other = cp.token(Action::Play, "p_other", "acme/elsewhere", 3600);
    assert_eq!(post(&beacon(NS, &other)), 403);
    assert_eq!(post(&beacon(NS, &play)), 204);
    let e = edge.metrics();
    let hls = [("event", "observed"), ("transport", "hls")];
    assert_eq!(metric(&e, "strom_qoe_beacons_total", &hls), Some(1.0));
    assert_eq!(metric(&e, "strom_qoe_stall_seconds_total", &hls), Some(0.5));
    assert_eq!(
        metric(&e, "strom_qoe_startup_seconds_count", &hls),
        Some(1.0)
    );
    // Let the origin see two keyframe intervals and the edge some objects.
    let ns_labels = [
        ("tenant", "acme"),
        ("event", "observed"),
        ("stream", "main"),
    ];
    let latency_count = |text: &str| {
        metric(text, "strom_upstream_object_latency_seconds_count", &[]).unwrap_or(0.0)
    };
    wait_until(
        Duration::from_secs(10),
        "ingest and latency figures",
        || {
            let o = origin.metrics();
            let frames = metric(&o, "strom_ingest_frames_total", &[("track", "video")])?;
            (frames > 60.0 && latency_count(&edge.metrics()) > 30.0).then_some(())
        },
    );

    // The viewers' listener does not say which events are live, to anyone:
    // /metrics is on the edge's metrics_listen only.
    let (status, body) = http_get(&edge.http_url("/metrics")).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 404, "{body}");
    assert!(
        !body.contains("strom_") && !body.contains("observed"),
        "{body}"
    );
    let (status, _) = http_get(&edge.http_url(&format!("/metrics?token={play}"))).unwrap();
    assert_eq!(status, 404, "not even with a playback token");
    assert_ne!(edge.metrics_port, Some(edge.http_port));

    let texts = [
        ("origin", origin.metrics()),
        ("edge", edge.metrics()),
        (
            "control plane",
            http_text(&cp.metrics_url).expect("control plane /metrics"),
        ),
        ("peer-agent", agent_metrics()),
    ];
    let families: BTreeMap<&str, Families> = texts
        .iter()
        .map(|(service, text)| (*service, check(service, text)))
        .collect();

    // Documented ⇔ served.
    let docs = documented();
    let applies = |section: &str| -> Vec<&str> {
        match section {
            s if s.starts_with("Relay") => vec!["origin", "edge", "peer-agent"],
            s if s.starts_with("Edge") => vec!["edge"],
            "Origin" => vec!["origin"],
            "Peer-agent" => vec!["peer-agent"],
            "Control plane" => vec!["control plane"],
            _ => vec![],
        }
    };
    let mut all_documented = Vec::new();
    for (section, families_here) in &docs {
        let services = applies(section);
        for d in families_here {
            let name = &d.name;
            let serving: Vec<&str> = services
                .iter()
                .copied()
                .filter(|s| families[s].contains_key(name))
                .collect();
            if !d.live() {
                // Fixed label values: every service shows them from the start.
                assert_eq!(
                    serving, services,
                    "{name} is not served by all of {services:?} (docs/metrics.md, {section})"
                );
            } else if MAYBE_IN_THIS_SCENARIO.iter().any(|(n, _)| n == name) {
                // Checked by the test named there.
            } else if let Some((_, elsewhere)) =
                NOT_IN_THIS_SCENARIO.iter().find(|(n, _)| n == name)
            {
                assert!(
                    serving.is_empty(),
                    "{name} is served here: drop it from NOT_IN_THIS_SCENARIO ({elsewhere})"
                );
            } else {
                assert!(
                    !serving.is_empty(),
                    "none of {services:?} serves {name} (docs/metrics.md, {section})"
                );
            }
            all_documented.push(name.clone());
        }
    }
    for (service, f) in &families {
        for name in f.keys().filter(|n| n.starts_with("strom_")) {
            assert!(
                all_documented.contains(name),
                "{service} serves {name}, which docs/metrics.md does not document"
            );
        }
    }

    // Real figures: what the push and the viewer did.
    let o = &texts[0].1;
    let e = &texts[1].1;
    let c = &texts[2].1;
    let video = [&ns_labels[..], &[("rendition", "main"), ("track", "video")]].concat();
    let frames = metric(o, "strom_ingest_frames_total", &video).unwrap();
    let bytes = metric(o, "strom_ingest_media_bytes_total", &video).unwrap();
    assert!(
        frames >= 60.0 && bytes > 100_000.0,
        "{frames} frames, {bytes} bytes"
    );
    let gop = metric(o, "strom_ingest_keyframe_interval_seconds", &ns_labels).unwrap();
    assert!(
        (0.9..=1.1).contains(&gop),
        "keyframe interval {gop} s (pushed with -g 30 at 30 fps)"
    );
    assert_eq!(
        metric(o, "strom_ingest_encoder_active", &[("encoder", "primary")]),
        Some(1.0)
    );
    assert!(latency_count(e) > 30.0);
    let under_1s = metric(
        e,
        "strom_upstream_object_latency_seconds_bucket",
        &[("le", "1")],
    )
    .unwrap();
    assert!(under_1s / latency_count(e) > 0.9, "{e}");
    assert!(metric(e, "strom_track_egress_bytes_total", &ns_labels).unwrap() > 100_000.0);
    assert!(metric(c, "strom_cp_tokens_issued_total", &[("action", "publish")]).unwrap() >= 1.0);
    assert!(metric(c, "strom_cp_tokens_issued_total", &[("action", "play")]).unwrap() >= 1.0);
    // No personal data: the viewer's subject appears nowhere.
    for (service, text) in &texts {
        assert!(!text.contains("p_viewer"), "{service} exposes a subject");
    }
}

/// Metric names an expression refers to (`strom_…`, `process_…`), without
/// histogram suffixes.
fn referenced(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        if (rest.starts_with("strom_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| b.ends_with("_seconds"))
                .unwrap_or(name);
            out.push(base.to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn alert_rules_and_the_dashboard_refer_to_documented_metrics() {
    let documented: Vec<String> = documented()
        .into_values()
        .flatten()
        .map(|d| d.name)
        .collect();
    let rules = repo_file("deploy/prometheus/alerts.yml");
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/strom-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(e) = line.trim().strip_prefix("expr:") {
            let mut expr = e.trim().trim_start_matches('|').to_owned();
            while lines.peek().is_some_and(|l| l.starts_with("          ")) {
                expr.push(' ');
                expr.push_str(lines.next().unwrap().trim());
            }
            exprs.push(expr);
        }
    }
    assert!(exprs.len() >= 5, "{exprs:?}");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for expr in &exprs {
        let names = referenced(expr);
        assert!(!names.is_empty(), "{expr} refers to no metric");
        for name in names {
            assert!(
                documented.contains(&name),
                "{name} in {expr:?} is not documented"
            );
        }
    }
    // The alerts the issue names are there.
    for alert in [
        "StromIngestDown",
        "StromEdgeSaturated",
        "StromOffloadCollapsed",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    if prometheus::promtool() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (what, file) in [
            ("rules", "deploy/prometheus/alerts.yml"),
            ("config", "deploy/prometheus/prometheus.yml"),
        ] {
            let out = std::process::Command::new("promtool")
                .args(["check", what])
                .arg(root.join(file))
                .output()
                .expect("promtool");
            assert!(
                out.status.success(),
                "promtool check {what} {file}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        eprintln!("promtool is not installed: rules checked for names only");
    }
}
