//! Recording and VOD (MEDIA-6): every broadcast is recorded at the origin and
//! plays as HLS VOD through the edge afterwards, also after an origin crash.

use std::path::Path;
use std::time::Duration;

use strom_tests::*;

const KEY: &str = "recording-stream-key-0001";
const NS: &str = "acme/records/main";

/// The recordings of `NS` listed by the edge.
fn recordings(edge: &Service) -> Vec<serde_json::Value> {
    http_text(&edge.http_url(&format!("/vod/{NS}/index.json")))
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .unwrap_or_default()
}

fn complete(edge: &Service) -> Option<serde_json::Value> {
    recordings(edge)
        .into_iter()
        .find(|r| r["state"] == "complete")
}

/// Copies the recording's VOD from the edge into `file` with ffmpeg.
fn fetch_vod(edge: &Service, recording: &serde_json::Value, file: &Path) {
    let master = edge.http_url(&format!(
        "/vod/{NS}/{}",
        recording["master"].as_str().expect("master")
    ));
    let text = http_text(&master).expect("master playlist");
    assert!(text.contains("CODECS=\"avc1.4d"), "{text}");
    let video = http_text(&master.replace("master.m3u8", "video/playlist.m3u8")).unwrap();
    assert!(video.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{video}");
    assert!(video.contains("#EXT-X-ENDLIST"), "{video}");
    let errors = record(&master, 600, file);
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
}

#[test]
fn a_finished_push_plays_as_vod_from_the_edge() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let origin = Service::origin("origin", dir, &[(KEY, NS)]);
    let edge = Service::edge("edge", dir, &origin);
    let mut pusher = push(&origin.rtmp_url(KEY), 10, dir, "ffmpeg");
    let status = pusher.wait(Duration::from_secs(40)).expect("push ends");
    assert!(status.success(), "{}", pusher.log_text());

    let recording = wait_until(Duration::from_secs(10), "a complete recording", || {
        complete(&edge)
    });
    let secs = recording["duration_secs"].as_f64().unwrap();
    assert!((9.0..=10.6).contains(&secs), "{recording}");
    let file = dir.join("vod.mp4");
    fetch_vod(&edge, &recording, &file);
    // Everything pushed, from the first keyframe on.
    assert_decodes_720p30(&file, 9.0);

    // Bad paths are refused without reaching the disk.
    let (status, _) = http_get(&edge.http_url(&format!("/vod/{NS}/..%2F..%2Fx"))).unwrap();
    assert!(status == 400 || status == 404, "{status}");
    let (status, _) = http_get(&edge.http_url(&format!("/vod/{NS}/1/video/x.part"))).unwrap();
    assert_eq!(status, 404);
}

#[test]
fn what_was_recorded_before_an_origin_crash_stays_playable() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut origin = Service::origin("origin", dir, &[(KEY, NS)]);
    let _pusher = push(&origin.rtmp_url(KEY), 60, dir, "ffmpeg");
    let stream_dir = dir.join("origin/recordings").join(NS);
    // Wait for some whole groups on disk, then kill the origin mid-group.
    wait_until(Duration::from_secs(30), "6 recorded groups", || {
        let rec = std::fs::read_dir(&stream_dir)
            .ok()?
            .flatten()
            .next()?
            .path();
        let index = std::fs::read_to_string(rec.join("index.log")).ok()?;
        (index.matches("seg video").count() >= 6).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    origin.proc.signal("KILL");
    let _ = origin.proc.wait(Duration::from_secs(5));

    let origin = Service::origin("origin", dir, &[(KEY, NS)]);
    assert!(
        origin.proc.log_text().contains("recording left open"),
        "{}",
        origin.proc.log_text()
    );
    let edge = Service::edge("edge", dir, &origin);
    let recording = wait_until(Duration::from_secs(10), "the recovered recording", || {
        complete(&edge)
    });
    let secs = recording["duration_secs"].as_f64().unwrap();
    assert!(secs >= 6.0, "{recording}");
    let file = dir.join("vod.mp4");
    fetch_vod(&edge, &recording, &file);
    assert_decodes_720p30(&file, secs - 0.5);
}

#[test]
fn strom_dev_serves_its_recordings_to_viewers_with_a_token() {
    let _serial = serial();
    let dev = Dev::start();
    let dir = dev.dir.path();
    let mut pusher = push(&dev.get("rtmp_publish_url"), 8, dir, "ffmpeg");
    let status = pusher.wait(Duration::from_secs(40)).expect("push ends");
    assert!(status.success(), "{}", pusher.log_text());
    let index = dev.get("recordings_url");
    let list = wait_until(Duration::from_secs(10), "a complete recording", || {
        let text = http_text(&index)?;
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
        list.iter()
            .any(|r| r["state"] == "complete")
            .then_some(list)
    });
    // Without the token, nothing: the edge checks viewers, and the origin
    // checks the edge's relay credential.
    let bare = index.split('?').next().unwrap();
    let (status, _) = http_get(bare).unwrap();
    assert_eq!(status, 401);
    let token = index.split("token=").nth(1).unwrap();
    let master = format!(
        "{}{}?token={token}",
        bare.trim_end_matches("index.json"),
        list[0]["master"].as_str().unwrap()
    );
    let file = dir.join("vod.mp4");
    let errors = record(&master, 600, &file);
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
    assert_decodes_720p30(&file, 7.0);
}

#[test]
fn deleting_an_event_deletes_its_recordings_and_no_others() {
    use strom_tests::control_plane::TestControlPlane;
    use strom_token::{Action, RevocationKind};
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = TestControlPlane::start();
    let origin = Service::origin_with("origin", dir, &[], &cp.toml("origin"));
    let rtmp = |ns: &str| {
        let token = cp.token(Action::Publish, "s_broadcaster", ns, 3600);
        format!(
            "rtmp://127.0.0.1:{}/live/{token}",
            origin.rtmp_port.unwrap()
        )
    };
    let mut gone = push(&rtmp("acme/townhall/main"), 5, dir, "ffmpeg-townhall");
    let mut kept = push(&rtmp("acme/allhands/main"), 5, dir, "ffmpeg-allhands");
    for p in [&mut gone, &mut kept] {
        let status = p.wait(Duration::from_secs(40)).expect("push ends");
        assert!(status.success(), "{}", p.log_text());
    }
    let root = dir.join("origin/recordings/acme");
    let recorded = |event: &str| {
        let stream = root.join(event).join("main");
        let rec = std::fs::read_dir(stream).ok()?.flatten().next()?.path();
        let index = std::fs::read_to_string(rec.join("index.log")).ok()?;
        index.contains("seg video").then_some(())
    };
    wait_until(Duration::from_secs(10), "both recordings", || {
        recorded("townhall").and(recorded("allhands"))
    });

    cp.revoke(RevocationKind::EventDeleted, "acme", "townhall");
    wait_until(
        Duration::from_secs(10),
        "the deleted event's recordings gone",
        || (!root.join("townhall").exists()).then_some(()),
    );
    assert!(
        recorded("allhands").is_some(),
        "another event's recording went too"
    );
    let log = origin.proc.log_text();
    assert!(log.contains("their event was deleted"), "{log}");
}
