//! Renditions (MEDIA-8): several pushes declared as renditions of one
//! stream appear in one catalog and one multivariant playlist, live and in
//! the recording.

use std::process::Stdio;
use std::time::Duration;

use strom_tests::*;

const KEY: &str = "renditions-stream-key-001";
const NS: &str = "acme/ladder/main";

/// ffmpeg pushing the test pattern at `size` and `bitrate` to `url`.
fn push_size(url: &str, size: &str, bitrate: &str, dir: &std::path::Path, name: &str) -> Proc {
    let mut cmd = test_source(size, Some(12));
    x264(&mut cmd, bitrate);
    cmd.args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
        .args(["-f", "flv"])
        .arg(url)
        .stdout(Stdio::null());
    Proc::spawn(name, cmd, dir)
}

#[test]
fn renditions_of_one_stream_share_one_multivariant_playlist_live_and_recorded() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let origin = Service::origin("origin", dir, &[(KEY, NS)]);
    let edge = Service::edge("edge", dir, &origin);
    let url = origin.rtmp_url(KEY);
    let mut main = push_size(&url, "1280x720", "2500k", dir, "ffmpeg-720p");
    let mut low = push_size(
        &format!("{url}?rendition=360p"),
        "640x360",
        "600k",
        dir,
        "ffmpeg-360p",
    );
    // A malformed rendition name is refused; the others go on.
    let mut bad = push_size(
        &format!("{url}?rendition=../x"),
        "640x360",
        "600k",
        dir,
        "ffmpeg-bad",
    );
    let status = bad.wait(Duration::from_secs(20)).expect("bad push ends");
    assert!(!status.success(), "a malformed rendition name was accepted");

    let master = edge.http_url(&format!("/hls/{NS}/master.m3u8"));
    let text = wait_until(Duration::from_secs(20), "two variants", || {
        http_text(&master).filter(|t| t.matches("#EXT-X-STREAM-INF").count() == 2)
    });
    assert!(text.contains("RESOLUTION=1280x720"), "{text}");
    assert!(text.contains("RESOLUTION=640x360"), "{text}");
    assert!(text.contains("video-360p/playlist.m3u8"), "{text}");
    assert_eq!(text.matches("TYPE=AUDIO").count(), 1, "{text}");
    let low_playlist = master.replace("master.m3u8", "video-360p/playlist.m3u8");
    wait_until(Duration::from_secs(20), "three 360p segments", || {
        http_text(&low_playlist).filter(|t| t.matches("#EXTINF").count() >= 3)
    });
    let live = dir.join("live-360p.mp4");
    let errors = record(&low_playlist, 4, &live);
    assert!(errors.trim().is_empty(), "{errors}");
    let probed = probe(live.to_str().unwrap());
    let video = probed
        .iter()
        .find(|s| s.codec_type == "video")
        .expect("video");
    assert_eq!(
        (video.width, video.height),
        (Some(640), Some(360)),
        "{probed:?}"
    );

    for p in [&mut main, &mut low] {
        let status = p.wait(Duration::from_secs(40)).expect("push ends");
        assert!(status.success(), "{}", p.log_text());
    }
    // The recording has both renditions under one master playlist.
    let index = edge.http_url(&format!("/vod/{NS}/index.json"));
    let list: Vec<serde_json::Value> = wait_until(Duration::from_secs(10), "the recording", || {
        let list: Vec<serde_json::Value> = serde_json::from_str(&http_text(&index)?).ok()?;
        list.iter()
            .any(|r| r["state"] == "complete")
            .then_some(list)
    });
    let vod_master = edge.http_url(&format!(
        "/vod/{NS}/{}",
        list[0]["master"].as_str().unwrap()
    ));
    let text = http_text(&vod_master).unwrap();
    assert_eq!(text.matches("#EXT-X-STREAM-INF").count(), 2, "{text}");
    let low_vod = dir.join("vod-360p.mp4");
    let errors = record(
        &vod_master.replace("master.m3u8", "video-360p/playlist.m3u8"),
        600,
        &low_vod,
    );
    assert!(errors.trim().is_empty(), "{errors}");
    let probed = probe(low_vod.to_str().unwrap());
    let video = probed
        .iter()
        .find(|s| s.codec_type == "video")
        .expect("video");
    assert_eq!(
        (video.width, video.height),
        (Some(640), Some(360)),
        "{probed:?}"
    );
    assert!(video.frames >= 10 * 30, "{probed:?}");
}
