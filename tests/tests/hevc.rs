//! H.265 end to end: real libx265 output pushed as MPEG-TS over SRT, and the
//! same kind of bitstream sent as Enhanced RTMP `hvc1` tags (ffmpeg 5.1
//! cannot send HEVC over RTMP, so the tags are built with strom-media's TS
//! demuxer and FLV encoder), come out of an edge as HLS that decodes as HEVC.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strom_media::flv::{AudioPacket, HevcPacketType, VideoPacket};
use strom_media::{AudioTag, TsIngest, TsTag, VideoTag};
use strom_tests::rtmp_client::Publisher;
use strom_tests::*;

const SRT_KEY: &str = "hevc-srt-stream-key-000001";
const SRT_NS: &str = "acme/hevc/srt";
const RTMP_KEY: &str = "hevc-rtmp-stream-key-00001";
const RTMP_NS: &str = "acme/hevc/rtmp";

/// Frames per GOP of [`HEVC_720P30_ARGS`] (one segment each).
const GOP: u64 = 30;

/// The `CODECS` attribute of the first variant of a master playlist.
fn codecs(master: &str) -> String {
    let start = master.find("CODECS=\"").expect("CODECS in master playlist") + 8;
    let end = master[start..].find('"').expect("closing quote") + start;
    master[start..end].to_owned()
}

/// ffprobe's `level` of the first video stream (general_level_idc for HEVC).
fn hevc_level(input: &str) -> u64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=level",
            "-of",
            "default=noprint_wrappers=1:nokey=1",
        ])
        .arg(input)
        .output()
        .expect("running ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe level of {input}: {text:?}"))
}

/// The RFC 6381 codec string of the first `hvcC` box in an MP4 file, built
/// here as ISO/IEC 14496-15 annex E says: profile space and profile, the
/// compatibility flags bit-reversed in hex, tier and level, and the six
/// constraint bytes without trailing zero bytes.
fn hvcc_codec_string(file: &Path) -> String {
    let data = std::fs::read(file).unwrap();
    let at = data
        .windows(4)
        .position(|w| w == b"hvcC")
        .unwrap_or_else(|| panic!("no hvcC in {}", file.display()))
        + 4;
    let h = &data[at..at + 13];
    let space = ["", "A", "B", "C"][usize::from(h[1] >> 6)];
    let tier = if h[1] & 0x20 != 0 { 'H' } else { 'L' };
    let compat = u32::from_be_bytes([h[2], h[3], h[4], h[5]]).reverse_bits();
    let mut out = format!("hvc1.{space}{}.{compat:X}.{tier}{}", h[1] & 0x1F, h[12]);
    let constraints = &h[6..12];
    let used = constraints
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    for b in &constraints[..used] {
        out.push_str(&format!(".{b:X}"));
    }
    out
}

/// Checks the master playlist's codecs: the HEVC string is what the `hvcC`
/// of `reference` (an MP4) gives and names the level ffprobe reads, and the
/// audio is AAC-LC.
fn assert_codec_string(master: &str, reference: &Path) {
    let codecs = codecs(master);
    let video = codecs
        .split(',')
        .find(|c| c.starts_with("hvc1."))
        .unwrap_or_else(|| panic!("no hvc1 codec in {codecs:?}"));
    let want = hvcc_codec_string(reference);
    assert!(
        video.eq_ignore_ascii_case(&want),
        "codec string {video:?}, the hvcC of {} says {want:?}",
        reference.display()
    );
    let level = hevc_level(reference.to_str().unwrap());
    assert!(
        video.starts_with(&format!("hvc1.1.6.L{level}.")),
        "codec string {video:?} for a Main profile stream at level {level}"
    );
    assert!(codecs.contains("mp4a.40.2"), "{master}");
    eprintln!("CODECS=\"{codecs}\"");
}

/// Asserts `file` holds `min_seconds` of 720p30 HEVC (+ AAC if `audio`) that
/// decodes without an error; returns the video frame count.
fn assert_hevc_720p30(file: &Path, min_seconds: f64, audio: bool) -> u64 {
    let streams = probe(file.to_str().unwrap());
    eprintln!("{}: {streams:?}", file.display());
    let video = streams
        .iter()
        .find(|s| s.codec_type == "video")
        .unwrap_or_else(|| panic!("no video stream in {}: {streams:?}", file.display()));
    assert_eq!(video.codec_name, "hevc");
    assert_eq!((video.width, video.height), (Some(1280), Some(720)));
    let fps = video.frame_rate.unwrap_or(0.0);
    assert!((fps - 30.0).abs() < 0.5, "frame rate {fps}");
    assert!(
        video.frames as f64 >= min_seconds * 30.0,
        "{} video frames, wanted {min_seconds} s",
        video.frames
    );
    if audio {
        let audio = streams
            .iter()
            .find(|s| s.codec_type == "audio")
            .unwrap_or_else(|| panic!("no audio stream in {}: {streams:?}", file.display()));
        assert_eq!(audio.codec_name, "aac");
        // AAC at 48 kHz: 46.875 frames per second.
        assert!(
            audio.frames as f64 >= min_seconds * 46.0,
            "{} audio frames, wanted {min_seconds} s",
            audio.frames
        );
    }
    let errors = decode_errors(file.to_str().unwrap());
    assert!(errors.trim().is_empty(), "decode errors: {errors}");
    video.frames
}

/// The MD5 of every decoded video frame of `input`, in presentation order.
fn frame_hashes(input: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(input)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .expect("running ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect()
}

/// Waits for the master playlist and `segments` complete segments of both tracks.
fn wait_for_hls(master: &str, segments: usize) {
    wait_until(Duration::from_secs(30), "HLS master playlist", || {
        http_text(master).filter(|t| t.contains("#EXT-X-STREAM-INF"))
    });
    for track in ["video", "audio"] {
        let url = master.replace("master.m3u8", &format!("{track}/playlist.m3u8"));
        wait_until(Duration::from_secs(30), "HLS segments", || {
            http_text(&url).filter(|t| t.matches("#EXTINF").count() >= segments)
        });
    }
}

#[test]
fn hevc_over_srt_decodes_at_the_edge() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let origin = Service::origin("origin", dir, &[(SRT_KEY, SRT_NS)]);
    let edge = Service::edge("edge", dir, &origin);
    let port = origin.srt_port.expect("origin logs its SRT address");
    let url = srt_url(port, &format!("live/{SRT_KEY}"), None, 16);
    let mut pusher = push_srt_hevc(&url, 40, dir, "ffmpeg-srt-hevc");

    let master = edge.http_url(&format!("/hls/{SRT_NS}/master.m3u8"));
    wait_for_hls(&master, 3);
    let text = http_text(&master).unwrap();
    assert!(text.contains("CODECS=\"hvc1."), "{text}");
    assert!(text.contains("RESOLUTION=1280x720"), "{text}");
    let recorded = dir.join("srt-hevc-hls.mp4");
    let errors = record(&master, 10, &recorded);
    assert!(errors.trim().is_empty(), "ffmpeg reading HLS: {errors}");
    let frames = assert_hevc_720p30(&recorded, 8.0, true);
    eprintln!("recorded {frames} HEVC frames from the edge's HLS");
    assert_codec_string(&text, &recorded);

    let metrics = origin.metrics();
    let connections = metric(
        &metrics,
        "strom_ingest_connections_total",
        &[("protocol", "srt")],
    )
    .unwrap_or(0.0);
    assert!(connections >= 1.0, "{metrics}");
    let bytes = metric(&metrics, "strom_ingest_bytes_total", &[("protocol", "srt")]).unwrap_or(0.0);
    assert!(bytes > 1e6, "{bytes} bytes received over SRT");
    let failed = metric(
        &metrics,
        "strom_ingest_failed_total",
        &[("protocol", "srt")],
    );
    assert_eq!(failed, Some(0.0), "{metrics}");
    assert!(
        pusher.is_running(),
        "ffmpeg stopped early:\n{}",
        pusher.log_text()
    );
    pusher.kill();
}

/// One FLV tag body ready for RTMP: video or audio, at `ts` ms.
struct RtmpTag {
    ts: u32,
    video: bool,
    body: bytes::Bytes,
}

/// What [`hevc_tags`] made: the tags in send order and what they carry.
struct Clip {
    /// The MPEG-TS file ffmpeg wrote.
    ts: PathBuf,
    tags: Vec<RtmpTag>,
    frames: u64,
    keyframes: u64,
    configs: u64,
}

/// Encodes `seconds` of the 720p30 test pattern as HEVC + AAC in MPEG-TS with
/// ffmpeg, and turns it into Enhanced RTMP tag bodies (`hvc1` SequenceStart,
/// CodedFrames / CodedFramesX) and AAC tags with strom-media.
fn hevc_tags(seconds: u32, dir: &Path) -> Clip {
    let ts = dir.join("hevc.ts");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=1000:sample_rate=48000:duration={seconds}"
        ))
        .args(HEVC_720P30_ARGS)
        .args(["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"])
        .args(["-f", "mpegts"])
        .arg(&ts)
        .output()
        .expect("running ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&ts).unwrap();
    let mut ingest = TsIngest::new();
    let mut tags = ingest.push(&data).expect("demuxing the HEVC clip");
    tags.extend(ingest.finish());
    assert_eq!(ingest.stats().bad_frames, 0, "{:?}", ingest.stats());

    let mut clip = Clip {
        ts,
        tags: Vec::new(),
        frames: 0,
        keyframes: 0,
        configs: 0,
    };
    for tag in tags {
        match tag {
            TsTag::Video { timestamp_ms, tag } => {
                let VideoPacket::Hevc(packet) = &tag.packet else {
                    panic!("not an HEVC tag: {tag:?}");
                };
                match packet.packet_type {
                    HevcPacketType::SequenceStart => clip.configs += 1,
                    HevcPacketType::CodedFrames => {
                        clip.frames += 1;
                        clip.keyframes += u64::from(tag.is_keyframe());
                    }
                    HevcPacketType::SequenceEnd => {}
                }
                clip.tags.push(RtmpTag {
                    ts: timestamp_ms,
                    video: true,
                    body: VideoTag::encode_hevc(tag.frame_type, packet),
                });
            }
            TsTag::Audio { timestamp_ms, tag } => {
                let AudioPacket::Aac(packet) = &tag.packet else {
                    panic!("not an AAC tag: {tag:?}");
                };
                clip.tags.push(RtmpTag {
                    ts: timestamp_ms,
                    video: false,
                    body: AudioTag::encode_aac(packet),
                });
            }
        }
    }
    // Send in timestamp order (stable: a configuration stays before its frame).
    clip.tags.sort_by_key(|t| t.ts);
    clip
}

/// An edge like [`Service::edge`] whose playlists list up to 30 segments, so
/// that the whole of a short broadcast can be read back from them.
fn long_window_edge(dir: &Path, upstream: &Service) -> Service {
    let toml = format!(
        "data_dir = {:?}\n[edge]\nmoqt_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nhls_window = 30\n[[edge.upstream]]\nurl = \"moqt://127.0.0.1:{}\"\ncert_sha256 = \"{}\"\n",
        dir.join("edge"),
        upstream.moqt_port,
        upstream.cert_sha256
    );
    Service::start("edge", "edge", &toml, dir)
}

/// Concatenates the init segment and every listed segment of a media
/// playlist into `file` (a fragmented MP4); returns the number of segments.
fn download_track(playlist: &str, file: &Path) -> usize {
    let text = http_text(playlist).expect("media playlist");
    let base = &playlist[..playlist.rfind('/').unwrap() + 1];
    let get = |name: &str| match http_get(&format!("{base}{name}")) {
        Ok((200, body)) => body,
        other => panic!("GET {base}{name}: {:?}", other.map(|(s, _)| s)),
    };
    let init = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("EXT-X-MAP in media playlist");
    let mut out = get(init);
    let segments: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for s in &segments {
        out.extend(get(s));
    }
    std::fs::write(file, out).unwrap();
    segments.len()
}

#[test]
fn hevc_over_enhanced_rtmp_decodes_at_the_edge() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clip = hevc_tags(12, dir);
    eprintln!(
        "clip: {} tags, {} HEVC frames, {} keyframes, {} sequence starts",
        clip.tags.len(),
        clip.frames,
        clip.keyframes,
        clip.configs
    );
    assert_eq!(clip.configs, 1);
    assert_eq!(clip.frames, 12 * 30);
    assert_eq!(clip.keyframes, 12);
    let origin = Service::origin("origin", dir, &[(RTMP_KEY, RTMP_NS)]);
    let edge = long_window_edge(dir, &origin);
    let master = edge.http_url(&format!("/hls/{RTMP_NS}/master.m3u8"));

    // A player records the live HLS while the tags are sent in real time.
    let recorded = dir.join("rtmp-hevc-hls.mp4");
    let player = {
        let (master, recorded) = (master.clone(), recorded.clone());
        std::thread::spawn(move || {
            wait_for_hls(&master, 3);
            record(&master, 5, &recorded)
        })
    };
    let addr = format!("127.0.0.1:{}", origin.rtmp_port.expect("an origin"));
    let mut publisher = Publisher::connect(&addr, "live", RTMP_KEY).expect("publish accepted");
    let start = Instant::now();
    let first = clip.tags.first().map_or(0, |t| t.ts);
    for tag in &clip.tags {
        let due = start + Duration::from_millis(u64::from(tag.ts - first));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if tag.video {
            publisher.video(&tag.body, tag.ts).expect("sending video");
        } else {
            publisher.audio(&tag.body, tag.ts).expect("sending audio");
        }
    }
    eprintln!("sent {} tags in {:?}", clip.tags.len(), start.elapsed());
    let errors = match player.join() {
        Ok(errors) => errors,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    assert!(errors.trim().is_empty(), "ffmpeg reading HLS: {errors}");
    let text = http_text(&master).unwrap();
    assert!(text.contains("CODECS=\"hvc1."), "{text}");
    assert!(text.contains("RESOLUTION=1280x720"), "{text}");
    assert_hevc_720p30(&recorded, 4.0, true);
    // ffmpeg's own hvcC for the clip sent, built from its in-band parameter
    // sets: the origin's configuration must describe the same stream.
    let source = dir.join("hevc-source.mp4");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y", "-i"])
        .arg(&clip.ts)
        .args(["-map", "0:v", "-c", "copy", "-tag:v", "hvc1"])
        .arg(&source)
        .output()
        .expect("running ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_codec_string(&text, &source);
    assert_eq!(hvcc_codec_string(&recorded), hvcc_codec_string(&source));

    // Every complete GOP sent is a segment at the edge: all but the last,
    // which stays open while the publisher is connected.
    let playlist = master.replace("master.m3u8", "video/playlist.m3u8");
    let want = (clip.keyframes - 1) as usize;
    wait_until(Duration::from_secs(20), "every GOP as a segment", || {
        http_text(&playlist).filter(|t| t.matches("#EXTINF").count() >= want)
    });
    let track = dir.join("rtmp-hevc-video.mp4");
    let segments = download_track(&playlist, &track) as u64;
    eprintln!("{text}{}", http_text(&playlist).unwrap_or_default());
    let frames = assert_hevc_720p30(&track, (want as f64) - 0.5, false);
    eprintln!(
        "edge lists {segments} segments with {frames} frames of the {} sent",
        clip.frames
    );
    assert_eq!(frames, segments * GOP, "whole GOPs per segment");
    // The pictures are the ones sent, in order: the first frames of the clip
    // for the whole track, a run of them for what the player recorded.
    let sent = frame_hashes(&clip.ts);
    let edge_frames = frame_hashes(&track);
    assert_eq!(sent.len() as u64, clip.frames);
    assert!(
        edge_frames[..] == sent[..edge_frames.len()],
        "the edge's track is not the first {} pictures sent",
        edge_frames.len()
    );
    // ffmpeg's `-t` cuts a stream copy in decode order, so the B-frames
    // just before the last picture recorded may be missing; nothing else.
    let played: Vec<usize> = frame_hashes(&recorded)
        .iter()
        .map(|h| {
            sent.iter()
                .position(|s| s == h)
                .expect("a picture recorded from the edge was sent")
        })
        .collect();
    let (first, last) = (played[0], played[played.len() - 1]);
    assert!(
        played.windows(2).all(|w| w[0] < w[1]) && last + 1 - first - played.len() <= 3,
        "pictures recorded from the edge, as indices of those sent: {played:?}"
    );
    assert!(
        !publisher.closed_by_server(Duration::from_millis(200)),
        "the origin closed the E-RTMP publisher:\n{}",
        origin.proc.log_text()
    );
    let metrics = origin.metrics();
    let bytes = metric(
        &metrics,
        "strom_ingest_bytes_total",
        &[("protocol", "rtmp")],
    )
    .unwrap_or(0.0);
    assert!(bytes > 1e6, "{bytes} bytes received over RTMP");
    let failed = metric(
        &metrics,
        "strom_ingest_failed_total",
        &[("protocol", "rtmp")],
    );
    assert_eq!(failed, Some(0.0), "{metrics}");
}
