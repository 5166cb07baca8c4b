//! Whole deployments as separate processes: tiers of edges, a broadcaster
//! that reconnects, and hostile input next to a good stream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use strom_tests::rtmp_client::Publisher;
use strom_tests::*;

const NS: &str = "acme/townhall/main";
const GOOD_KEY: &str = "good-key-0123456789abcdef";
const OTHER_KEY: &str = "other-key-0123456789abcdef";

/// Video and audio frames in a file, after checking it decodes cleanly.
fn frames(file: &Path) -> (u64, u64) {
    let errors = decode_errors(file.to_str().unwrap());
    assert!(
        errors.trim().is_empty(),
        "{} does not decode: {errors}",
        file.display()
    );
    let streams = probe(file.to_str().unwrap());
    let count = |kind: &str| {
        streams
            .iter()
            .filter(|s| s.codec_type == kind)
            .map(|s| s.frames)
            .sum::<u64>()
    };
    (count("video"), count("audio"))
}

fn master_ready(url: &str) {
    wait_until(Duration::from_secs(30), "a master playlist", || {
        http_text(url).filter(|t| t.contains("#EXT-X-STREAM-INF"))
    });
}

#[test]
fn two_tiers_of_edges_pull_each_track_once_from_the_origin() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let origin = Service::origin("origin", dir, &[(GOOD_KEY, NS)]);
    let a = Service::edge("edge-a", dir, &origin);
    let b = Service::edge("edge-b", dir, &a);
    let _push = push(&origin.rtmp_url(GOOD_KEY), 60, dir, "ffmpeg");

    let master_b = b.http_url(&format!("/hls/{NS}/master.m3u8"));
    master_ready(&master_b);

    // Three MoQT viewers on B, two on A, and HLS viewers on both.
    let mut watchers = Vec::new();
    for (i, edge) in [&b, &b, &b, &a, &a].iter().enumerate() {
        let file = dir.join(format!("watch-{i}.mp4"));
        let p = watch(
            &edge.moq_url(),
            NS,
            &edge.cert_sha256,
            10.0,
            &file,
            dir,
            &format!("watch-{i}"),
        );
        watchers.push((p, file));
    }
    for edge in [&a, &b] {
        let url = edge.http_url(&format!("/hls/{NS}/video/playlist.m3u8"));
        wait_until(Duration::from_secs(20), "three segments", || {
            http_text(&url).filter(|t| t.matches("#EXTINF").count() >= 3)
        });
    }
    let hls_file = dir.join("hls-b.mp4");
    let errors = record(&master_b, 6, &hls_file);
    assert!(errors.trim().is_empty(), "HLS from edge B: {errors}");
    let (v, a_frames) = frames(&hls_file);
    assert!(
        v >= 150 && a_frames >= 200,
        "HLS from B: {v} video, {a_frames} audio frames"
    );
    let hls_a = dir.join("hls-a.mp4");
    assert!(
        record(&a.http_url(&format!("/hls/{NS}/master.m3u8")), 4, &hls_a)
            .trim()
            .is_empty()
    );
    assert!(frames(&hls_a).0 >= 90);

    for (mut p, file) in watchers {
        let status = p.wait(Duration::from_secs(40)).expect("watch ends");
        assert!(status.success(), "{}", p.log_text());
        let (v, au) = frames(&file);
        assert!(
            v >= 200 && au >= 300,
            "{}: {v} video, {au} audio frames",
            file.display()
        );
    }

    // The origin served exactly one subscription per track, to edge A alone.
    let om = origin.metrics();
    assert_eq!(
        metric(&om, "strom_moqt_sessions_total", &[]),
        Some(1.0),
        "{om}"
    );
    for track in ["catalog", "video", "audio"] {
        assert_eq!(
            metric(&om, "strom_track_subscriptions_total", &[("track", track)]),
            Some(1.0),
            "origin subscriptions for {track}:\n{om}"
        );
    }
    // Each edge holds one upstream subscription per track.
    for edge in [&a, &b] {
        let m = edge.metrics();
        assert_eq!(
            metric(&m, "strom_upstream_subscriptions_total", &[]),
            Some(3.0),
            "{m}"
        );
    }
    // A served B once per track plus its own two viewers.
    let am = a.metrics();
    assert_eq!(
        metric(
            &am,
            "strom_track_subscriptions_total",
            &[("track", "video")]
        ),
        Some(3.0),
        "{am}"
    );
    for s in [&origin, &a, &b] {
        assert!(!s.proc.log_text().contains("panicked"));
    }
}

#[test]
fn viewers_keep_receiving_when_the_broadcaster_reconnects() {
    let _serial = serial();
    let dev = Dev::start();
    let dir = dev.dir.path();
    let url = dev.get("rtmp_publish_url");
    let mut first = push(&url, 12, dir, "ffmpeg-first");
    let hls = dev.get("hls_url");
    master_ready(&hls);
    let video = hls.replace("master.m3u8", "video/playlist.m3u8");

    let watched = dir.join("watch.mp4");
    let mut watcher = watch_with_token(
        &dev.get("moq_url"),
        &dev.get("namespace"),
        &dev.get("cert_sha256"),
        24.0,
        &watched,
        dir,
        "watch",
        Some(&dev.get("playback_token")),
    );

    // An HLS viewer polling and fetching every new segment throughout.
    let poll_url = video.clone();
    let hls_viewer = std::thread::spawn(move || {
        let mut fetched: Vec<u64> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(26);
        while Instant::now() < deadline {
            if let Some(text) = http_text(&poll_url) {
                for seg in text
                    .lines()
                    .filter_map(|l| l.split('?').next()?.strip_suffix(".m4s"))
                {
                    let Ok(n) = seg.parse::<u64>() else { continue };
                    if fetched.contains(&n) {
                        continue;
                    }
                    let (status, body) =
                        http_get(&poll_url.replace("playlist.m3u8", &format!("{n}.m4s"))).unwrap();
                    assert_eq!(status, 200, "segment {n}");
                    assert!(!body.is_empty());
                    fetched.push(n);
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        fetched
    });

    let status = first
        .wait(Duration::from_secs(30))
        .expect("first push ends");
    assert!(status.success(), "{}", first.log_text());
    std::thread::sleep(Duration::from_secs(1));
    let _second = push(&url, 16, dir, "ffmpeg-second");

    let status = watcher.wait(Duration::from_secs(60)).expect("watch ends");
    assert!(status.success(), "{}", watcher.log_text());
    let (v, a) = frames(&watched);
    // ~24 s watched, minus the broadcaster's absence and start-up.
    assert!(
        v >= 18 * 30 && a >= 18 * 46,
        "{v} video, {a} audio frames across the reconnect"
    );

    let fetched = hls_viewer.join().expect("HLS viewer");
    let first_seg = *fetched.iter().min().unwrap();
    let last_seg = *fetched.iter().max().unwrap();
    assert!(
        last_seg - first_seg >= 18,
        "HLS segments {first_seg}..{last_seg}"
    );
    let log = dev.proc.log_text();
    assert_eq!(log.matches("publish started").count(), 2, "{log}");
    assert!(!log.contains("panicked"));
}

fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn bad_input_hurts_only_itself_while_a_good_stream_flows() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let origin = Service::origin(
        "origin",
        dir,
        &[(GOOD_KEY, NS), (OTHER_KEY, "acme/townhall/other")],
    );
    let edge = Service::edge("edge", dir, &origin);
    let _good = push(&origin.rtmp_url(GOOD_KEY), 60, dir, "ffmpeg-good");
    master_ready(&edge.http_url(&format!("/hls/{NS}/master.m3u8")));
    let watched = dir.join("watch.mp4");
    let mut watcher = watch(
        &edge.moq_url(),
        NS,
        &edge.cert_sha256,
        30.0,
        &watched,
        dir,
        "watch",
    );
    std::thread::sleep(Duration::from_secs(2));
    let rtmp_addr = format!("127.0.0.1:{}", origin.rtmp_port.unwrap());
    let log_grows = |marker: &str, before: usize| {
        wait_until(Duration::from_secs(10), marker, || {
            (origin.proc.log_text().matches(marker).count() > before).then_some(())
        })
    };

    // 1. Random bytes on the RTMP port.
    let before = origin
        .proc
        .log_text()
        .matches("RTMP handshake failed")
        .count();
    let mut garbage = TcpStream::connect(&rtmp_addr).unwrap();
    let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>() | 0x80).collect();
    let _ = garbage.write_all(&noise);
    assert!(
        closed_by_server(&mut garbage, Duration::from_secs(10)),
        "garbage connection stays open"
    );
    log_grows("RTMP handshake failed", before);

    // 2. A truncated FLV tag from a publisher with a valid key.
    let before = origin.proc.log_text().matches("malformed").count();
    let mut publisher =
        Publisher::connect(&rtmp_addr, "live", OTHER_KEY).expect("publish accepted");
    publisher.video(&[0x17, 0x01, 0x00], 0).unwrap();
    assert!(
        publisher.closed_by_server(Duration::from_secs(10)),
        "truncated tag: connection stays open"
    );
    log_grows("malformed", before);

    // 3. An unknown stream key.
    let before = origin.proc.log_text().matches("unknown stream key").count();
    let mut wrong = push(
        &origin.rtmp_url("not-a-key-at-all-0000000"),
        10,
        dir,
        "ffmpeg-wrong-key",
    );
    let status = wrong
        .wait(Duration::from_secs(20))
        .expect("ffmpeg gives up on a refused key");
    assert!(!status.success());
    log_grows("unknown stream key", before);
    assert!(
        !origin.proc.log_text().contains("not-a-key-at-all"),
        "a stream key reached the log"
    );

    // 4. Unsupported codecs: Sorenson H.263 video, then MP3 audio.
    for (video, audio, name, expect) in [
        ("flv1", vec!["-c:a", "aac"], "ffmpeg-flv1", "Sorenson"),
        ("h264", vec!["-c:a", "libmp3lame"], "ffmpeg-mp3", "MP3"),
    ] {
        let before = origin.proc.log_text().matches("unsupported codec").count();
        let mut p = push_with(&origin.rtmp_url(OTHER_KEY), 10, dir, name, &audio, video);
        log_grows("unsupported codec", before);
        let status = p
            .wait(Duration::from_secs(20))
            .expect("ffmpeg stops when closed");
        assert!(!status.success(), "{name} was not refused");
        let log = origin.proc.log_text();
        assert!(log.contains(expect), "no log line naming {expect}:\n{log}");
    }

    // 5. An AMF0 command with too few values (the RTMP library panics on it;
    //    the ingest contains that and closes only this connection).
    let before = origin.proc.log_text().matches("malformed RTMP").count();
    let mut short = strom_tests::rtmp_client::handshake(&rtmp_addr).expect("handshake");
    short
        .write_all(&strom_tests::rtmp_client::short_amf0_command())
        .unwrap();
    assert!(
        closed_by_server(&mut short, Duration::from_secs(10)),
        "short AMF0 command: connection stays open"
    );
    log_grows("malformed RTMP", before);

    // The good stream kept flowing to the viewer the whole time.
    let status = watcher.wait(Duration::from_secs(60)).expect("watch ends");
    assert!(status.success(), "{}", watcher.log_text());
    let (v, a) = frames(&watched);
    assert!(
        v >= 27 * 30 && a >= 27 * 46,
        "{v} video, {a} audio frames in 30 s"
    );
    let m = origin.metrics();
    assert!(
        metric(&m, "strom_ingest_refused_total", &[]).unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert!(!origin.proc.log_text().contains("panicked"));
    assert!(!edge.proc.log_text().contains("panicked"));
}
