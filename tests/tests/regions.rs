//! Relays in tiers that fail (issue 19, OPS-4): a second-tier edge pulls
//! each broadcast from the first of its upstreams that offers it and moves
//! to the next when that one dies, its viewers continuing at the object
//! they lack.

use std::time::Duration;

use strom_tests::*;

const KEY: &str = "regions-key-0123456789abcdef";
const NS: &str = "acme/townhall/main";

/// Upstream subscriptions an edge holds now and has opened in all.
fn upstream_subscriptions(edge: &Service) -> (f64, f64) {
    let page = edge.metrics();
    (
        metric(&page, "strom_upstream_subscriptions_active", &[]).unwrap_or(0.0),
        metric(&page, "strom_upstream_subscriptions_total", &[]).unwrap_or(0.0),
    )
}

/// `[[edge.upstream]]` for one more upstream after the first.
fn also_from(upstream: &Service) -> String {
    format!(
        "[[edge.upstream]]\nurl = \"{}\"\ncert_sha256 = \"{}\"\n",
        upstream.moq_url(),
        upstream.cert_sha256
    )
}

/// The video line of `strom watch`'s statistics.
fn video_stats(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.contains("video: "))
        .unwrap_or_else(|| panic!("no video statistics: {log}"))
        .to_owned()
}

fn stat(video: &str, name: &str) -> u64 {
    video
        .split(name)
        .nth(1)
        .and_then(|r| r.split([' ', ',']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in {video}"))
}

#[test]
fn a_second_tier_edge_moves_to_the_next_first_tier_edge_when_its_own_dies() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let origin = Service::origin("origin", dir, &[(KEY, NS)]);
    let _push = push(&origin.rtmp_url(KEY), 60, dir, "ffmpeg");
    // First tier: the region's own edge and another region's.
    let near = Service::edge("near", dir, &origin);
    let far = Service::edge("far", dir, &origin);
    // Second tier: its own region's first tier first, then the other.
    let second = Service::edge_with("second", dir, &near, &also_from(&far));

    let watched = dir.join("watch.mp4");
    let mut viewer = watch(
        &second.moq_url(),
        NS,
        &second.cert_sha256,
        16.0,
        &watched,
        dir,
        "watch",
    );
    // Every track the viewer reads is pulled once, from the near edge.
    let (held, _) = wait_until(
        Duration::from_secs(20),
        "the viewer's tracks pulled",
        || {
            let (held, opened) = upstream_subscriptions(&second);
            (held >= 3.0).then_some((held, opened))
        },
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        upstream_subscriptions(&far).0,
        0.0,
        "the far edge pulled before it was needed"
    );
    let before = upstream_subscriptions(&second);
    assert_eq!(before.0, held);

    // The second tier's own upstream dies without a word.
    near.proc.signal("KILL");
    let moved = wait_until(Duration::from_secs(5), "the tracks on the far edge", || {
        let far_held = upstream_subscriptions(&far).0;
        (far_held >= held).then_some(far_held)
    });
    assert_eq!(moved, held, "the far edge pulls each track once");
    let after = upstream_subscriptions(&second);
    assert_eq!(
        after.0, held,
        "one subscription per track after the move: {after:?}"
    );
    assert_eq!(
        after.1 - before.1,
        held,
        "each track subscribed once more: {before:?} → {after:?}"
    );

    let status = viewer.wait(Duration::from_secs(40)).expect("watch ends");
    let log = viewer.log_text();
    assert!(status.success(), "{log}");
    let video = video_stats(&log);
    eprintln!("viewer at the second tier across the loss of its upstream: {video}");
    let gap = stat(&video, "max gap ");
    assert!(gap <= 2000, "viewer's largest gap {gap} ms: {video}");
    // Resumed at the object it lacked: nothing missing, no group skipped.
    assert_eq!(stat(&video, "holes "), 0, "{video}");
    assert_eq!(stat(&video, "skipped groups "), 0, "{video}");
    assert_decodes_720p30(&watched, 12.0);
    let second_log = second.proc.log_text();
    assert!(
        second_log.contains("pulling the broadcast from this upstream")
            && second_log.contains("link=1"),
        "{second_log}"
    );
    assert!(!second_log.contains("panicked"), "{second_log}");
}

/// Player failover (issue 19): `strom watch` with fallbacks moves to the
/// next edge when its edge is killed, and again when the next is shut down
/// for maintenance, continuing at the object it lacks each time.
#[test]
fn a_viewer_moves_to_the_next_edge_when_its_edge_dies_or_is_shut_down() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let origin = Service::origin("origin", dir, &[(KEY, NS)]);
    let _push = push(&origin.rtmp_url(KEY), 60, dir, "ffmpeg");
    let first = Service::edge("first", dir, &origin);
    let second = Service::edge("second", dir, &origin);
    let third = Service::edge("third", dir, &origin);

    let watched = dir.join("watch.mp4");
    let mut cmd = std::process::Command::new(strom_bin());
    cmd.args([
        "watch",
        &first.moq_url(),
        NS,
        "--cert-sha256",
        &first.cert_sha256,
    ]);
    for edge in [&second, &third] {
        cmd.args(["--fallback", &edge.moq_url()]);
        cmd.args(["--fallback-cert-sha256", &edge.cert_sha256]);
    }
    cmd.args(["--duration", "18", "-o"]).arg(&watched);
    cmd.stdout(std::process::Stdio::null());
    let mut viewer = Proc::spawn("watch", cmd, dir);
    std::thread::sleep(Duration::from_secs(5));
    // Its edge dies without a word; then the next one is shut down.
    first.proc.signal("KILL");
    std::thread::sleep(Duration::from_secs(6));
    second.proc.signal("TERM");
    // The third edge serves it now, each track pulled once.
    let pulled = wait_until(Duration::from_secs(5), "the third edge pulling", || {
        let held = upstream_subscriptions(&third).0;
        (held >= 2.0).then_some(held)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(upstream_subscriptions(&third).0, pulled);
    // The catalog was read once, at the start.
    assert_eq!(pulled, 2.0, "video and audio, once each");

    let status = viewer.wait(Duration::from_secs(40)).expect("watch ends");
    let log = viewer.log_text();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("moving to").count(), 2, "{log}");
    let video = video_stats(&log);
    eprintln!("viewer moved twice between edges: {video}");
    let gap = stat(&video, "max gap ");
    assert!(gap <= 2000, "viewer's largest gap {gap} ms: {video}");
    assert_eq!(stat(&video, "holes "), 0, "{video}");
    assert_eq!(stat(&video, "skipped groups "), 0, "{video}");
    assert_decodes_720p30(&watched, 14.0);
}

/// A bad fallback list is refused before anything connects.
#[test]
fn fallbacks_need_one_certificate_each_or_none() {
    let out = std::process::Command::new(strom_bin())
        .args(["watch", "moqt://127.0.0.1:9", NS, "--cert-sha256"])
        .arg("00".repeat(32))
        .args([
            "--fallback",
            "moqt://127.0.0.1:10",
            "--fallback",
            "moqt://127.0.0.1:11",
        ])
        .args(["--fallback-cert-sha256"])
        .arg("11".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 --fallback but 1 --fallback-cert-sha256"),
        "{err}"
    );
}
