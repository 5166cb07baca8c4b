//! End to end with real encoder output: an ffmpeg-made FLV (libx264 High with B-frames,
//! AAC-LC 48 kHz stereo, 320x180, 2 s, GOP 30) goes through the packager; the resulting
//! fragmented MP4 files are checked with ffprobe when it is installed.
//!
//! Regenerate the fixture with:
//! ffmpeg -f lavfi -i testsrc2=size=320x180:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
//!   -t 2 -c:v libx264 -preset veryfast -profile:v high -g 30 -b:v 150k -pix_fmt yuv420p \
//!   -c:a aac -ac 2 -b:a 64k -f flv testsrc_320x180_2s.flv

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use strom_media::avc::contains_idr;
use strom_media::flv::{AvcPacketType, FlvTagKind, VideoPacket};
use strom_media::{
    parse_chunk, parse_init, AudioTag, Catalog, FlvReader, Output, Packager, TrackName, VideoTag,
};

const FIXTURE: &str = "tests/fixtures/testsrc_320x180_2s.flv";
const WALL_BASE: u64 = 1_750_000_000_000_000;

struct Run {
    catalogs: Vec<Catalog>,
    video: Vec<(u64, u64, Bytes)>,
    audio: Vec<(u64, u64, Bytes)>,
    /// (dts ms, pts ms) of every AVC NALU tag in the FLV.
    flv_video_times: Vec<(u32, i64)>,
    flv_idr_count: usize,
    flv_audio_frames: usize,
    packager: Packager,
}

fn run_fixture() -> Run {
    let data = std::fs::read(manifest_dir().join(FIXTURE)).unwrap();
    let mut packager = Packager::new(None);
    let mut run = Run {
        catalogs: vec![],
        video: vec![],
        audio: vec![],
        flv_video_times: vec![],
        flv_idr_count: 0,
        flv_audio_frames: 0,
        packager: Packager::new(None),
    };
    let mut outs = vec![];
    for tag in FlvReader::new(Bytes::from(data)).unwrap() {
        let tag = tag.unwrap();
        // Pretend the tags arrive in real time.
        let wall = WALL_BASE + u64::from(tag.timestamp_ms) * 1000;
        match tag.kind {
            FlvTagKind::Video => {
                let v = VideoTag::parse(&tag.body).unwrap();
                if let VideoPacket::Avc(a) = &v.packet {
                    if a.packet_type == AvcPacketType::Nalu {
                        run.flv_video_times.push((
                            tag.timestamp_ms,
                            i64::from(tag.timestamp_ms) + i64::from(a.composition_time),
                        ));
                        if contains_idr(&a.payload, 4).unwrap() {
                            run.flv_idr_count += 1;
                        }
                    }
                }
                outs.extend(packager.push_video(tag.timestamp_ms, &v, wall).unwrap());
            }
            FlvTagKind::Audio => {
                let a = AudioTag::parse(&tag.body).unwrap();
                if tag.body.get(1) == Some(&1) {
                    run.flv_audio_frames += 1;
                }
                outs.extend(packager.push_audio(tag.timestamp_ms, &a, wall).unwrap());
            }
            _ => {}
        }
    }
    for o in outs {
        match o {
            Output::Catalog(c) => run.catalogs.push(c),
            Output::Object {
                track,
                group,
                object,
                payload,
                ..
            } => match track {
                TrackName::Video => run.video.push((group, object, payload)),
                TrackName::Audio => run.audio.push((group, object, payload)),
            },
        }
    }
    run.packager = packager;
    run
}

#[test]
fn fixture_packages_into_groups() {
    let run = run_fixture();
    assert_eq!(
        run.catalogs.len(),
        1,
        "one catalog for an unchanging stream"
    );
    let cat = &run.catalogs[0];
    let v = cat.track("video").unwrap();
    assert!(
        v.codec.as_deref().unwrap().starts_with("avc1.64"),
        "{:?}",
        v.codec
    );
    assert_eq!((v.width, v.height), (Some(320), Some(180)));
    assert_eq!(v.framerate, Some(30.0));
    let a = cat.track("audio").unwrap();
    assert_eq!(a.codec.as_deref(), Some("mp4a.40.2"));
    assert_eq!(a.samplerate, Some(48000));
    assert_eq!(a.channel_config.as_deref(), Some("2"));

    // Every frame is packaged (the FLV starts with a keyframe), one group per IDR.
    assert_eq!(run.video.len(), run.flv_video_times.len());
    assert!(run.flv_idr_count >= 2);
    let groups = run.video.last().unwrap().0 + 1;
    assert_eq!(groups as usize, run.flv_idr_count);
    assert_eq!(run.packager.stats().groups, groups);
    // At most the audio that precedes the first keyframe is dropped.
    let dropped = run.packager.stats().dropped_audio_frames as usize;
    assert_eq!(run.audio.len() + dropped, run.flv_audio_frames);
    assert!(dropped <= 2, "dropped {dropped}");

    // Chunks carry the exact FLV decode times and the tag's wall clock.
    for ((_, _, payload), (dts_ms, _)) in run.video.iter().zip(&run.flv_video_times) {
        let info = parse_chunk(payload).unwrap();
        assert_eq!(info.base_media_decode_time, u64::from(*dts_ms) * 90);
        assert_eq!(
            info.prft.unwrap().unix_micros,
            WALL_BASE + u64::from(*dts_ms) * 1000
        );
    }
    let init = v.init_data_bytes().unwrap().unwrap();
    assert_eq!(parse_init(&init).unwrap().timescale, 90_000);
}

fn ffprobe_available() -> bool {
    Command::new("ffprobe").arg("-version").output().is_ok()
}

fn write_fmp4(name: &str, init: &[u8], chunks: &[(u64, u64, Bytes)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strom-media-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut file = init.to_vec();
    for (_, _, c) in chunks {
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
fn ffprobe_accepts_fragmented_mp4() {
    if !ffprobe_available() {
        println!("NOTE: ffprobe not installed; skipping the ffprobe check");
        return;
    }
    let run = run_fixture();
    let cat = &run.catalogs[0];
    let vinit = cat
        .track("video")
        .unwrap()
        .init_data_bytes()
        .unwrap()
        .unwrap();
    let ainit = cat
        .track("audio")
        .unwrap()
        .init_data_bytes()
        .unwrap()
        .unwrap();
    let vpath = write_fmp4("video.mp4", &vinit, &run.video);
    let apath = write_fmp4("audio.mp4", &ainit, &run.audio);

    // Decode every frame and report stream properties.
    let v = ffprobe(
        &vpath,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "default=noprint_wrappers=1",
        ],
    );
    assert!(v.contains("codec_name=h264"), "{v}");
    assert!(v.contains("width=320") && v.contains("height=180"), "{v}");
    assert!(
        v.contains(&format!("nb_read_frames={}", run.video.len())),
        "{v}"
    );

    // Presentation times survive: compare with the FLV's dts + composition offset.
    let pkts = ffprobe(
        &vpath,
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
    let want: Vec<(i64, i64)> = run
        .flv_video_times
        .iter()
        .map(|&(d, p)| (i64::from(d), p))
        .collect();
    assert_eq!(got, want);

    let a = ffprobe(
        &apath,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_name,sample_rate,channels,nb_read_frames",
            "-of",
            "default=noprint_wrappers=1",
        ],
    );
    assert!(a.contains("codec_name=aac"), "{a}");
    assert!(
        a.contains("sample_rate=48000") && a.contains("channels=2"),
        "{a}"
    );
    assert!(
        a.contains(&format!("nb_read_frames={}", run.audio.len())),
        "{a}"
    );
    let _ = std::fs::remove_dir_all(vpath.parent().unwrap());
}

/// The package directory at run time (cargo sets it for tests); the
/// compile-time one can name another checkout that shares the target dir.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
