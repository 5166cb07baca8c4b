//! The live path end to end with real ffmpeg: RTMP in, MoQT origin → edges,
//! HLS and MoQT out (issue: live path).

use std::time::Duration;

use strom_tests::*;

#[test]
fn hls_and_moqt_viewers_decode_what_ffmpeg_pushes() {
    let _serial = serial();
    let dev = Dev::start();
    let dir = dev.dir.path();
    let _push = push(&dev.get("rtmp_publish_url"), 60, dir, "ffmpeg-push");
    let hls = dev.get("hls_url");
    wait_until(Duration::from_secs(20), "HLS master playlist", || {
        http_text(&hls).filter(|t| t.contains("#EXT-X-STREAM-INF"))
    });
    // A cold edge fetches recent history when it first subscribes upstream
    // (joining FETCH), so the very first playlist already lists whole segments.
    std::thread::sleep(Duration::from_secs(4));
    let first = http_text(&hls.replace("master.m3u8", "video/playlist.m3u8")).unwrap();
    assert!(
        first.matches("#EXTINF").count() >= 2,
        "first playlist of a cold edge:\n{first}"
    );
    // ffmpeg's HLS reader starts three segments from the live end.
    for track in ["video", "audio"] {
        let url = hls.replace("master.m3u8", &format!("{track}/playlist.m3u8"));
        wait_until(Duration::from_secs(20), "three HLS segments", || {
            http_text(&url).filter(|t| t.matches("#EXTINF").count() >= 3)
        });
    }
    let master = http_text(&hls).unwrap();
    assert!(master.contains("CODECS=\"avc1.4d"), "{master}");
    assert!(master.contains("mp4a.40.2"), "{master}");
    assert!(master.contains("RESOLUTION=1280x720"), "{master}");

    // A MoQT viewer and an HLS viewer at the same time.
    let watched = dir.join("watch.mp4");
    let token = dev.get("playback_token");
    let media_key = dev.get("media_key");
    let mut watcher = watch_verifying(
        &dev.get("moq_url"),
        &dev.get("namespace"),
        &dev.get("cert_sha256"),
        14.0,
        &watched,
        dir,
        "strom-watch",
        Some(&token),
        Some(&media_key),
    );
    let watched_wt = dir.join("watch-webtransport.mp4");
    let mut watcher_wt = watch_with_token(
        &dev.get("webtransport_url"),
        &dev.get("namespace"),
        &dev.get("cert_sha256"),
        12.0,
        &watched_wt,
        dir,
        "strom-watch-webtransport",
        Some(&token),
    );
    let recorded = dir.join("hls.mp4");
    let errors = record(&hls, 12, &recorded);
    assert!(errors.trim().is_empty(), "ffmpeg reading HLS: {errors}");
    assert_decodes_720p30(&recorded, 10.0);

    let status = watcher
        .wait(Duration::from_secs(40))
        .expect("strom watch ends after --duration");
    assert!(
        status.success(),
        "strom watch failed: {}",
        watcher.log_text()
    );
    assert_decodes_720p30(&watched, 10.0);
    let status = watcher_wt
        .wait(Duration::from_secs(40))
        .expect("WebTransport watch ends");
    assert!(
        status.success(),
        "strom watch over WebTransport: {}",
        watcher_wt.log_text()
    );
    assert_decodes_720p30(&watched_wt, 10.0);
    let stats = watcher.log_text();
    assert!(
        stats.contains("video:") && stats.contains("audio:"),
        "{stats}"
    );
    // Every object carries the origin's signature, intact through the edge
    // (P2P-5): verified against the origin's media key, none refused.
    let last = stats
        .lines()
        .rev()
        .find(|l| l.contains("video:"))
        .unwrap_or_default();
    for track in ["audio", "video"] {
        let part = last
            .split("; ")
            .find(|p| p.starts_with(&format!("{track}:")))
            .unwrap_or_default();
        assert!(
            part.contains(" refused")
                && part.ends_with(" 0 refused")
                && !part.contains("signatures 0 verified"),
            "{track}: {part}"
        );
    }
    // The origin registered that key with the control plane: the key set
    // relays and peer-agents fetch carries it.
    let keys_url = format!("{}api/v1/relay/keys", dev.get("control_plane_url"));
    let published = (0..50).any(|_| {
        let found = http_text(&keys_url).is_some_and(|t| t.contains(&media_key));
        if !found {
            std::thread::sleep(Duration::from_millis(200));
        }
        found
    });
    assert!(published, "media key not in {keys_url}");

    // LL-HLS: parts, a preload hint, and a blocking reload that returns
    // only once the requested segment exists.
    let video = hls.replace("master.m3u8", "video/playlist.m3u8");
    let playlist = http_text(&video).unwrap();
    assert!(playlist.contains("#EXT-X-PART:"), "{playlist}");
    assert!(
        playlist.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"),
        "{playlist}"
    );
    assert!(playlist.contains("CAN-BLOCK-RELOAD=YES"), "{playlist}");
    let next = last_segment(&playlist) + 2;
    let started = std::time::Instant::now();
    let blocked = http_text(&format!("{video}&_HLS_msn={next}&_HLS_part=0")).unwrap();
    assert!(
        blocked.contains(&format!("URI=\"{next}.0.m4s?token=")),
        "{blocked}"
    );
    assert!(
        started.elapsed() > Duration::from_millis(300),
        "a reload for a future part must block until it exists"
    );
    let (status, body) =
        http_get(&video.replace("playlist.m3u8", &format!("{next}.0.m4s"))).unwrap();
    assert_eq!(status, 200);
    assert!(body.windows(4).any(|w| w == b"moof"));
    assert!(!dev.proc.log_text().contains("panicked"));
}

fn last_segment(playlist: &str) -> u64 {
    playlist
        .lines()
        .filter_map(|l| l.split('?').next()?.strip_suffix(".m4s"))
        .filter_map(|l| l.parse::<u64>().ok())
        .max()
        .expect("playlist lists a segment")
}
