//! HEVC end to end with real encoder output: an ffmpeg-made MPEG-TS (libx265 Main with
//! B-frames and open GOPs, AAC-LC 48 kHz stereo, 320x180, 2 s, GOP 30) goes through the
//! TS demuxer, is carried as Enhanced RTMP `hvc1` tag bodies (encoded and parsed back,
//! as an E-RTMP push would deliver them), and is packaged; the resulting fragmented MP4
//! is checked with ffprobe when it is installed.
//!
//! Regenerate the fixture with:
//! ffmpeg -f lavfi -i testsrc2=size=320x180:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
//!   -t 2 -c:v libx265 -preset veryfast -g 30 -b:v 100k -pix_fmt yuv420p -x265-params log-level=error \
//!   -c:a aac -ac 2 -b:a 64k -f mpegts testsrc_hevc_320x180_2s.ts

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use strom_media::flv::{HevcPacketType, VideoPacket};
use strom_media::{
    contains_irap, parse_chunk, parse_init, Catalog, HevcConfig, Output, Packager, TrackName,
    TsIngest, TsTag, VideoTag,
};

const FIXTURE: &str = "tests/fixtures/testsrc_hevc_320x180_2s.ts";
const WALL_BASE: u64 = 1_750_000_000_000_000;

struct Run {
    catalogs: Vec<Catalog>,
    video: Vec<Bytes>,
    audio: Vec<Bytes>,
    /// (dts ms, pts ms) of every coded frame.
    frame_times: Vec<(i64, i64)>,
    irap_frames: usize,
    packager: Packager,
}

fn run_fixture() -> Run {
    let data = std::fs::read(manifest_dir().join(FIXTURE)).unwrap();
    let mut ingest = TsIngest::new();
    let mut tags = vec![];
    // 1316-byte reads, as SRT delivers them.
    for chunk in data.chunks(1316) {
        tags.extend(ingest.push(chunk).unwrap());
    }
    tags.extend(ingest.finish());
    assert_eq!(ingest.stats().bad_pes + ingest.stats().bad_frames, 0);

    let mut packager = Packager::new(None);
    let mut outs = vec![];
    let (mut frame_times, mut irap_frames) = (vec![], 0);
    for tag in tags {
        match tag {
            TsTag::Video { timestamp_ms, tag } => {
                let VideoPacket::Hevc(h) = &tag.packet else {
                    panic!("not HEVC: {:?}", tag.packet)
                };
                // What an Enhanced RTMP encoder would send for this tag.
                let body = VideoTag::encode_hevc(tag.frame_type, h);
                let parsed = VideoTag::parse(&body).unwrap();
                assert_eq!(parsed, tag);
                if h.packet_type == HevcPacketType::CodedFrames {
                    let dts = i64::from(timestamp_ms);
                    frame_times.push((dts, dts + i64::from(h.composition_time)));
                    if contains_irap(&h.payload, 4).unwrap() {
                        irap_frames += 1;
                    }
                }
                let wall = WALL_BASE + u64::from(timestamp_ms) * 1000;
                outs.extend(packager.push_video(timestamp_ms, &parsed, wall).unwrap());
            }
            TsTag::Audio { timestamp_ms, tag } => {
                let wall = WALL_BASE + u64::from(timestamp_ms) * 1000;
                outs.extend(packager.push_audio(timestamp_ms, &tag, wall).unwrap());
            }
        }
    }
    let mut run = Run {
        catalogs: vec![],
        video: vec![],
        audio: vec![],
        frame_times,
        irap_frames,
        packager,
    };
    for o in outs {
        match o {
            Output::Catalog(c) => run.catalogs.push(c),
            Output::Object { track, payload, .. } => match track {
                TrackName::Video => run.video.push(payload),
                TrackName::Audio => run.audio.push(payload),
            },
        }
    }
    run
}

#[test]
fn hevc_ts_packages_into_groups() {
    let run = run_fixture();
    // The first keyframe precedes the first ADTS frame in the mux: a video-only catalog,
    // then one with both tracks (as for H.264 over SRT).
    assert_eq!(run.catalogs.len(), 2);
    assert_eq!(run.catalogs[0].tracks.len(), 1);
    let cat = run.catalogs.last().unwrap();
    let v = cat.track("video").unwrap();
    assert_eq!(Some(v), run.catalogs[0].track("video"));
    let codec = v.codec.as_deref().unwrap();
    // Main (profile 1, compatibility flags 1 and 2), level 2 (60), progressive + frame only.
    assert_eq!(codec, "hvc1.1.6.L60.90");
    assert_eq!((v.width, v.height), (Some(320), Some(180)));
    assert_eq!(v.framerate, Some(30.0));
    let init = v.init_data_bytes().unwrap().unwrap();
    let info = parse_init(&init).unwrap();
    assert_eq!(info.codec, codec);
    assert_eq!(info.timescale, 90_000);
    assert_eq!(
        cat.track("audio").unwrap().codec.as_deref(),
        Some("mp4a.40.2")
    );

    assert_eq!(run.video.len(), 60);
    assert_eq!(run.video.len(), run.frame_times.len());
    // The first IDR and the CRA of the second GOP each open a group.
    assert_eq!(run.irap_frames, 2);
    assert_eq!(run.packager.stats().groups, 2);
    assert_eq!(run.packager.stats().keyframe_flag_mismatches, 0);
    for (payload, (dts_ms, pts_ms)) in run.video.iter().zip(&run.frame_times) {
        let c = parse_chunk(payload).unwrap();
        assert_eq!(c.base_media_decode_time, *dts_ms as u64 * 90);
        assert_eq!(c.samples[0].cts_offset, (pts_ms - dts_ms) * 90);
    }
    assert!(!run.audio.is_empty());
    assert!(init.windows(4).any(|w| w == b"hvcC"));
}

#[test]
fn the_built_record_agrees_with_the_catalog() {
    let data = std::fs::read(manifest_dir().join(FIXTURE)).unwrap();
    let mut ingest = TsIngest::new();
    let mut tags = ingest.push(&data).unwrap();
    tags.extend(ingest.finish());
    let record = tags
        .iter()
        .find_map(|t| match t {
            TsTag::Video { tag, .. } => match &tag.packet {
                VideoPacket::Hevc(h) if h.packet_type == HevcPacketType::SequenceStart => {
                    Some(h.payload.clone())
                }
                _ => None,
            },
            _ => None,
        })
        .expect("a sequence start");
    let cfg = HevcConfig::parse(record).unwrap();
    assert_eq!((cfg.sps.coded_width, cfg.sps.coded_height), (320, 184));
    assert_eq!((cfg.width, cfg.height), (320, 180));
    assert_eq!(cfg.codec_string(), "hvc1.1.6.L60.90");
}

fn ffprobe_available() -> bool {
    Command::new("ffprobe").arg("-version").output().is_ok()
}

fn write_fmp4(name: &str, init: &[u8], chunks: &[Bytes]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strom-media-hevc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut file = init.to_vec();
    for c in chunks {
        file.extend_from_slice(c);
    }
    std::fs::write(&path, file).unwrap();
    path
}

/// Run ffprobe, failing the test on any error output.
fn ffprobe(path: &Path, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffprobe failed: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "ffprobe reported errors: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ffprobe_decodes_the_hevc_fragmented_mp4() {
    if !ffprobe_available() {
        println!("NOTE: ffprobe not installed; skipping the ffprobe check");
        return;
    }
    let run = run_fixture();
    let init = run.catalogs[0]
        .track("video")
        .unwrap()
        .init_data_bytes()
        .unwrap()
        .unwrap();
    let path = write_fmp4("video.mp4", &init, &run.video);
    let v = ffprobe(
        &path,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_name,codec_tag_string,profile,width,height,nb_read_frames",
            "-of",
            "default=noprint_wrappers=1",
        ],
    );
    assert!(v.contains("codec_name=hevc"), "{v}");
    assert!(v.contains("codec_tag_string=hvc1"), "{v}");
    assert!(v.contains("profile=Main"), "{v}");
    assert!(v.contains("width=320") && v.contains("height=180"), "{v}");
    assert!(
        v.contains(&format!("nb_read_frames={}", run.video.len())),
        "{v}"
    );

    // Decode and presentation times survive.
    let pkts = ffprobe(
        &path,
        &[
            "-show_entries",
            "packet=pts_time,dts_time",
            "-of",
            "csv=p=0",
        ],
    );
    let got: Vec<(i64, i64)> = pkts
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l
                .split(',')
                .map(|s| (s.parse::<f64>().unwrap() * 1000.0).round() as i64);
            let pts = it.next().unwrap();
            let dts = it.next().unwrap();
            (dts, pts)
        })
        .collect();
    assert_eq!(got, run.frame_times);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// The package directory at run time (cargo sets it for tests); the
/// compile-time one can name another checkout that shares the target dir.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
