//! Packager behaviour: numbering, catalog timing, audio placement, timestamps, resume.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::cmaf::{parse_chunk, ChunkInfo};
use crate::flv::{AacPacket, AvcPacket, FrameType, HevcPacket};
use crate::test_util::{avc_record, hevc_record};

const WALL: u64 = 1_700_000_000_000_000;

fn video_seq(record: Bytes) -> VideoTag {
    VideoTag {
        frame_type: FrameType::Keyframe,
        packet: VideoPacket::Avc(AvcPacket {
            packet_type: AvcPacketType::SequenceHeader,
            composition_time: 0,
            payload: record,
        }),
    }
}

fn hevc_seq(record: Bytes) -> VideoTag {
    VideoTag {
        frame_type: FrameType::Keyframe,
        packet: VideoPacket::Hevc(HevcPacket {
            packet_type: HevcPacketType::SequenceStart,
            composition_time: 0,
            payload: record,
        }),
    }
}

/// An HEVC access unit: one 4-byte-length-prefixed IDR_W_RADL (19) or TRAIL_R (1) slice.
fn hevc_frame(key: bool, cts_ms: i32, size: usize) -> VideoTag {
    let mut au = (size as u32 + 2).to_be_bytes().to_vec();
    au.extend_from_slice(if key { &[0x26, 0x01] } else { &[0x02, 0x01] });
    au.extend(std::iter::repeat_n(0xAB, size));
    VideoTag {
        frame_type: if key {
            FrameType::Keyframe
        } else {
            FrameType::Inter
        },
        packet: VideoPacket::Hevc(HevcPacket {
            packet_type: HevcPacketType::CodedFrames,
            composition_time: cts_ms,
            payload: Bytes::from(au),
        }),
    }
}

/// An access unit with one 4-byte-length-prefixed slice NAL.
fn frame(key: bool, cts_ms: i32, size: usize) -> VideoTag {
    let mut au = (size as u32 + 1).to_be_bytes().to_vec();
    au.push(if key { 0x65 } else { 0x41 });
    au.extend(std::iter::repeat_n(0xAB, size));
    VideoTag {
        frame_type: if key {
            FrameType::Keyframe
        } else {
            FrameType::Inter
        },
        packet: VideoPacket::Avc(AvcPacket {
            packet_type: AvcPacketType::Nalu,
            composition_time: cts_ms,
            payload: Bytes::from(au),
        }),
    }
}

fn audio(seq: bool, payload: &[u8]) -> AudioTag {
    AudioTag {
        sound_format: 10,
        sound_rate: 3,
        sound_16bit: true,
        stereo: true,
        packet: AudioPacket::Aac(AacPacket {
            packet_type: if seq {
                AacPacketType::SequenceHeader
            } else {
                AacPacketType::Raw
            },
            payload: Bytes::copy_from_slice(payload),
        }),
    }
}

fn asc() -> AudioTag {
    audio(true, &[0x11, 0x90]) // AAC-LC 48 kHz stereo
}

/// (track, group, object, chunk info, group start flag)
type Obj = (TrackName, u64, u64, ChunkInfo, bool);

fn objects(outs: &[Output]) -> Vec<Obj> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Object {
                track,
                group,
                object,
                payload,
                keyframe_group_start,
            } => Some((
                *track,
                *group,
                *object,
                parse_chunk(payload).expect("packager output parses"),
                *keyframe_group_start,
            )),
            Output::Catalog(_) => None,
        })
        .collect()
}

fn catalogs(outs: &[Output]) -> Vec<&Catalog> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Catalog(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn started() -> (Packager, Vec<Output>) {
    let mut p = Packager::new(None);
    let mut outs = p.push_video(0, &video_seq(avc_record()), WALL).unwrap();
    outs.extend(p.push_audio(0, &asc(), WALL).unwrap());
    (p, outs)
}

#[test]
fn groups_and_objects_follow_gops() {
    let (mut p, mut outs) = started();
    assert_eq!(catalogs(&outs).len(), 1, "both configs known → catalog");
    let pattern = [true, false, false, true, false, true];
    for (i, key) in pattern.iter().enumerate() {
        outs.extend(
            p.push_video(i as u32 * 33, &frame(*key, 0, 10), WALL + i as u64)
                .unwrap(),
        );
    }
    let ids: Vec<(u64, u64, bool)> = objects(&outs).iter().map(|o| (o.1, o.2, o.4)).collect();
    assert_eq!(
        ids,
        vec![
            (0, 0, true),
            (0, 1, false),
            (0, 2, false),
            (1, 0, true),
            (1, 1, false),
            (2, 0, true)
        ]
    );
    let objs = objects(&outs);
    assert!(objs[0].3.first_is_keyframe && !objs[1].3.first_is_keyframe);
    // prft carries the wall clock passed with each tag.
    for (i, o) in objs.iter().enumerate() {
        assert_eq!(o.3.prft.unwrap().unix_micros, WALL + i as u64);
    }
    assert_eq!(p.stats().groups, 3);
    assert_eq!(p.stats().video_frames, 6);
    assert_eq!(p.stats().last_keyframe_interval_ms, Some(66));
    assert_eq!(p.stats().max_keyframe_interval_ms, Some(99));
}

#[test]
fn frames_before_first_keyframe_are_dropped() {
    let (mut p, _) = started();
    assert!(p
        .push_video(0, &frame(false, 0, 5), WALL)
        .unwrap()
        .is_empty());
    assert!(p
        .push_audio(0, &audio(false, &[1, 2]), WALL)
        .unwrap()
        .is_empty());
    let outs = p.push_video(33, &frame(true, 0, 5), WALL).unwrap();
    assert_eq!(objects(&outs)[0].1, 0);
    assert_eq!(p.stats().dropped_video_frames, 1);
    assert_eq!(p.stats().dropped_audio_frames, 1);
}

#[test]
fn video_timing_durations_and_cts() {
    let (mut p, _) = started();
    let mut all = vec![];
    for (ts, key, cts) in [
        (1000, true, 66),
        (1033, false, 0),
        (1067, false, 33),
        (1100, false, 0),
    ] {
        all.extend(p.push_video(ts, &frame(key, cts, 4), WALL).unwrap());
    }
    let objs = objects(&all);
    let dts: Vec<u64> = objs.iter().map(|o| o.3.base_media_decode_time).collect();
    assert_eq!(dts, vec![90_000, 92_970, 96_030, 99_000]);
    let durs: Vec<u64> = objs.iter().map(|o| o.3.duration).collect();
    // First frame: 1/fps from the SPS (30 fps); then the last observed delta.
    assert_eq!(durs, vec![3000, 2970, 3060, 2970]);
    assert_eq!(objs[0].3.samples[0].cts_offset, 66 * 90);
}

#[test]
fn catalog_timing() {
    // Video-only until the first keyframe forces a video-only catalog.
    let mut p = Packager::new(None);
    let outs = p.push_video(0, &video_seq(avc_record()), WALL).unwrap();
    assert!(outs.is_empty(), "no catalog until audio or a keyframe");
    let outs = p.push_video(0, &frame(true, 0, 3), WALL + 7000).unwrap();
    assert!(
        matches!(outs[0], Output::Catalog(_)),
        "catalog before the object"
    );
    let cat = catalogs(&outs)[0].clone();
    assert_eq!(cat.tracks.len(), 1);
    assert_eq!(cat.generated_at, (WALL + 7000) / 1000);
    let v = cat.track("video").unwrap();
    assert_eq!(v.codec.as_deref(), Some("avc1.640028"));
    assert_eq!((v.width, v.height), (Some(1920), Some(1080)));
    let init = v.init_data_bytes().unwrap().unwrap();
    assert_eq!(crate::cmaf::parse_init(&init).unwrap().codec, "avc1.640028");

    // Audio config arrives later: catalog re-emitted with both tracks.
    p.set_bitrates(Some(2_500_000), Some(128_000));
    let outs = p.push_audio(10, &asc(), WALL).unwrap();
    let cat = catalogs(&outs)[0];
    assert_eq!(cat.tracks.len(), 2);
    assert_eq!(cat.track("audio").unwrap().samplerate, Some(48000));
    assert_eq!(cat.track("audio").unwrap().bitrate, Some(128_000));
    // Same configs again: nothing new.
    assert!(p.push_audio(20, &asc(), WALL).unwrap().is_empty());
    assert!(p
        .push_video(20, &video_seq(avc_record()), WALL)
        .unwrap()
        .is_empty());
    // A changed audio config (44.1 kHz mono) re-emits.
    let outs = p.push_audio(30, &audio(true, &[0x12, 0x08]), WALL).unwrap();
    assert_eq!(
        catalogs(&outs)[0].track("audio").unwrap().samplerate,
        Some(44100)
    );
    assert_eq!(
        p.catalog()
            .unwrap()
            .track("audio")
            .unwrap()
            .channel_config
            .as_deref(),
        Some("1")
    );
}

#[test]
fn audio_is_placed_by_decode_time() {
    let (mut p, _) = started();
    let mut outs = vec![];
    // Audio before the first keyframe (by arrival) is dropped.
    outs.extend(p.push_audio(0, &audio(false, &[1]), WALL).unwrap());
    outs.extend(p.push_video(0, &frame(true, 0, 3), WALL).unwrap());
    // 48 kHz AAC frames are 21.33 ms; RTMP rounds to whole ms.
    for i in 0..3u64 {
        outs.extend(
            p.push_audio((i * 1024 * 1000 / 48000) as u32, &audio(false, &[2]), WALL)
                .unwrap(),
        );
    }
    outs.extend(p.push_video(1000, &frame(true, 0, 3), WALL).unwrap());
    // Late audio (dts < 1000 ms) after the keyframe stays in group 0 ...
    outs.extend(p.push_audio(980, &audio(false, &[3]), WALL).unwrap());
    // ... and the first audio at/after the keyframe opens audio group 1.
    outs.extend(p.push_audio(1002, &audio(false, &[4]), WALL).unwrap());
    outs.extend(p.push_audio(1023, &audio(false, &[5]), WALL).unwrap());

    let audio: Vec<(u64, u64, u64, bool)> = objects(&outs)
        .iter()
        .filter(|o| o.0 == TrackName::Audio)
        .map(|o| (o.1, o.2, o.3.base_media_decode_time, o.4))
        .collect();
    // Sample counting: 0, 1024, 2048 despite ms rounding; 980 ms resyncs (a gap);
    // 1002 ms is within a frame of 980 ms + 1024 samples, so counting continues.
    assert_eq!(
        audio,
        vec![
            (0, 0, 0, true),
            (0, 1, 1024, false),
            (0, 2, 2048, false),
            (0, 3, 47_040, false),
            (1, 0, 48_064, true),
            (1, 1, 49_088, false),
        ]
    );
    for o in objects(&outs) {
        let want = match o.0 {
            TrackName::Video => crate::cmaf::VIDEO_TRACK_ID,
            TrackName::Audio => crate::cmaf::AUDIO_TRACK_ID,
        };
        assert_eq!(o.3.track_id, want);
    }
    assert_eq!(p.stats().audio_resyncs, 1);
    assert_eq!(p.stats().dropped_audio_frames, 1);
}

#[test]
fn audio_leading_video_stays_in_current_group() {
    let (mut p, _) = started();
    let mut outs = p.push_video(0, &frame(true, 0, 3), WALL).unwrap();
    // Audio for t ≥ 1000 ms arrives before the keyframe at 1000 ms: group 1 does not
    // exist yet, so it goes to group 0 (documented; audio frames are all sync samples).
    outs.extend(p.push_audio(1000, &audio(false, &[1]), WALL).unwrap());
    outs.extend(p.push_video(1000, &frame(true, 0, 3), WALL).unwrap());
    outs.extend(p.push_audio(1021, &audio(false, &[1]), WALL).unwrap());
    let groups: Vec<(u64, u64)> = objects(&outs)
        .iter()
        .filter(|o| o.0 == TrackName::Audio)
        .map(|o| (o.1, o.2))
        .collect();
    assert_eq!(groups, vec![(0, 0), (1, 0)]);
}

#[test]
fn timestamps_wrap_and_clamp() {
    let (mut p, _) = started();
    let start = u32::MAX - 40;
    let mut outs = vec![];
    for i in 0..4u32 {
        outs.extend(
            p.push_video(start.wrapping_add(i * 33), &frame(i == 0, 0, 2), WALL)
                .unwrap(),
        );
    }
    // A backwards step is clamped.
    outs.extend(
        p.push_video(start.wrapping_add(50), &frame(false, 0, 2), WALL)
            .unwrap(),
    );
    let dts: Vec<u64> = objects(&outs)
        .iter()
        .map(|o| o.3.base_media_decode_time)
        .collect();
    let base = u64::from(start) * 90;
    assert_eq!(dts[..4], [base, base + 2970, base + 5940, base + 8910]);
    assert_eq!(dts[4], base + 8911);
    assert_eq!(p.stats().clamped_timestamps, 1);
}

#[test]
fn resume_continues_groups_and_media_time() {
    let (mut p, _) = started();
    let mut first = vec![];
    for i in 0..5u32 {
        first.extend(
            p.push_video(i * 40, &frame(i % 2 == 0, 0, 2), WALL)
                .unwrap(),
        );
        first.extend(p.push_audio(i * 40, &audio(false, &[9]), WALL).unwrap());
    }
    let resume = p.resume_point();
    assert_eq!(resume.next_group, 3);
    let last = objects(&first);
    let last_video = last.iter().rev().find(|o| o.0 == TrackName::Video).unwrap();
    // Video ended at 160 ms + 40 ms duration.
    assert_eq!(resume.media_time_ms, 200);

    // The encoder reconnects and restarts its timestamps at 0.
    let mut q = Packager::new(Some(resume));
    let mut second = q.push_video(0, &video_seq(avc_record()), WALL).unwrap();
    second.extend(q.push_audio(0, &asc(), WALL).unwrap());
    second.extend(q.push_video(0, &frame(true, 0, 2), WALL).unwrap());
    second.extend(q.push_audio(0, &audio(false, &[9]), WALL).unwrap());
    let objs = objects(&second);
    assert_eq!((objs[0].1, objs[0].2), (3, 0));
    assert_eq!(objs[0].3.base_media_decode_time, 200 * 90);
    assert!(objs[0].3.base_media_decode_time > last_video.3.base_media_decode_time);
    assert_eq!(objs[0].3.sequence_number, last_video.3.sequence_number + 1);
    let last_audio = last.iter().rev().find(|o| o.0 == TrackName::Audio).unwrap();
    assert!(objs[1].3.base_media_decode_time > last_audio.3.base_media_decode_time);
    assert_eq!(objs[1].1, 3);
    // Resuming a packager that packaged nothing keeps the point.
    assert_eq!(Packager::new(Some(resume)).resume_point(), resume);
}

#[test]
fn unsupported_and_malformed_input() {
    let mut p = Packager::new(None);
    let vp6 = VideoTag::parse(&Bytes::from_static(&[0x14, 0, 0])).unwrap();
    assert!(matches!(
        p.push_video(0, &vp6, WALL),
        Err(PackagerError::UnsupportedCodec(c)) if c == "VP6"
    ));
    let mp3 = AudioTag::parse(&Bytes::from_static(&[0x2F, 0xFF, 0xFB])).unwrap();
    assert!(matches!(
        p.push_audio(0, &mp3, WALL),
        Err(PackagerError::UnsupportedCodec(c)) if c == "MP3"
    ));
    assert!(matches!(
        p.push_video(0, &video_seq(Bytes::from_static(&[1, 2, 3])), WALL),
        Err(PackagerError::Avc(_))
    ));
    assert!(matches!(
        p.push_audio(0, &audio(true, &[0x00]), WALL),
        Err(PackagerError::Aac(_))
    ));
    p.push_video(0, &video_seq(avc_record()), WALL).unwrap();
    let mut bad = frame(true, 0, 4);
    if let VideoPacket::Avc(a) = &mut bad.packet {
        a.payload = Bytes::from_static(&[0, 0, 0, 99, 0x65]);
    }
    assert!(matches!(
        p.push_video(0, &bad, WALL),
        Err(PackagerError::Avc(_))
    ));
}

#[test]
fn keyframe_flag_is_checked_against_the_bitstream() {
    let (mut p, _) = started();
    p.push_video(0, &frame(true, 0, 2), WALL).unwrap();
    let mut liar = frame(false, 0, 2);
    liar.frame_type = FrameType::Keyframe;
    let outs = p.push_video(33, &liar, WALL).unwrap();
    let o = &objects(&outs)[0];
    assert_eq!((o.1, o.2), (0, 1), "no IDR → no new group");
    assert!(!o.3.first_is_keyframe);
    assert_eq!(p.stats().keyframe_flag_mismatches, 1);
}

#[test]
fn hevc_is_packaged_like_avc() {
    let mut p = Packager::new(None);
    let mut outs = p.push_video(0, &hevc_seq(hevc_record()), WALL).unwrap();
    outs.extend(p.push_audio(0, &asc(), WALL).unwrap());
    let cats = catalogs(&outs);
    assert_eq!(cats.len(), 1);
    let v = cats[0].track("video").unwrap();
    assert_eq!(v.codec.as_deref(), Some("hvc1.1.6.L93.90"));
    assert_eq!((v.width, v.height), (Some(1280), Some(720)));
    assert_eq!(v.framerate, Some(30.0));
    let init = v.init_data_bytes().unwrap().unwrap();
    let info = crate::cmaf::parse_init(&init).unwrap();
    assert_eq!(info.codec, "hvc1.1.6.L93.90");

    // Metadata and command frames are ignored; frames become objects, IRAP opens groups.
    let meta = VideoTag {
        frame_type: FrameType::Keyframe,
        packet: VideoPacket::Metadata(Bytes::from_static(&[2, 0, 9])),
    };
    assert!(p.push_video(0, &meta, WALL).unwrap().is_empty());
    let mut outs = vec![];
    for (i, (key, cts)) in [(true, 66), (false, 0), (false, 33), (true, 0)]
        .into_iter()
        .enumerate()
    {
        outs.extend(
            p.push_video(1000 + i as u32 * 33, &hevc_frame(key, cts, 5), WALL)
                .unwrap(),
        );
    }
    let objs = objects(&outs);
    let ids: Vec<(u64, u64, bool)> = objs
        .iter()
        .map(|o| (o.1, o.2, o.3.first_is_keyframe))
        .collect();
    assert_eq!(
        ids,
        vec![(0, 0, true), (0, 1, false), (0, 2, false), (1, 0, true)]
    );
    assert_eq!(objs[0].3.base_media_decode_time, 90_000);
    assert_eq!(objs[0].3.samples[0].cts_offset, 66 * 90);
    assert_eq!(
        objs[0].3.duration, 3000,
        "first duration from the SPS's 30 fps"
    );
    // The chunk carries the access unit unchanged.
    let Output::Object { payload, .. } = outs
        .iter()
        .find(|o| matches!(o, Output::Object { .. }))
        .unwrap()
    else {
        unreachable!()
    };
    let s = &objs[0].3.samples[0];
    assert_eq!(
        &payload[s.offset..s.offset + s.size as usize],
        &[0, 0, 0, 7, 0x26, 0x01, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB]
    );

    // The keyframe flag is checked against the bitstream here too.
    let mut liar = hevc_frame(false, 0, 2);
    liar.frame_type = FrameType::Keyframe;
    let outs = p.push_video(2000, &liar, WALL).unwrap();
    assert_eq!((objects(&outs)[0].1, objects(&outs)[0].2), (1, 1));
    assert_eq!(p.stats().keyframe_flag_mismatches, 1);

    // The same record again is nothing new; SequenceEnd is ignored.
    assert!(p
        .push_video(2100, &hevc_seq(hevc_record()), WALL)
        .unwrap()
        .is_empty());
    let end = VideoTag {
        frame_type: FrameType::Keyframe,
        packet: VideoPacket::Hevc(HevcPacket {
            packet_type: HevcPacketType::SequenceEnd,
            composition_time: 0,
            payload: Bytes::new(),
        }),
    };
    assert!(p.push_video(2100, &end, WALL).unwrap().is_empty());
}

#[test]
fn codec_changes_mid_stream_like_a_config_change() {
    let (mut p, _) = started();
    p.push_video(0, &frame(true, 0, 3), WALL).unwrap();
    // The encoder switches to HEVC: a new catalog with a new init segment.
    let outs = p.push_video(40, &hevc_seq(hevc_record()), WALL).unwrap();
    let cat = catalogs(&outs)[0];
    assert_eq!(
        cat.track("video").unwrap().codec.as_deref(),
        Some("hvc1.1.6.L93.90")
    );
    // A stray H.264 frame cannot be decoded with the HEVC configuration: dropped.
    assert!(p
        .push_video(40, &frame(false, 0, 3), WALL)
        .unwrap()
        .is_empty());
    assert_eq!(p.stats().dropped_video_frames, 1);
    let outs = p.push_video(80, &hevc_frame(true, 0, 3), WALL).unwrap();
    assert_eq!((objects(&outs)[0].1, objects(&outs)[0].2), (1, 0));
    // And back to H.264.
    let outs = p.push_video(120, &video_seq(avc_record()), WALL).unwrap();
    assert_eq!(
        catalogs(&outs)[0].track("video").unwrap().codec.as_deref(),
        Some("avc1.640028")
    );
}

#[test]
fn malformed_hevc_input() {
    let mut p = Packager::new(None);
    assert!(matches!(
        p.push_video(0, &hevc_seq(Bytes::from_static(&[1, 2, 3])), WALL),
        Err(PackagerError::Hevc(_))
    ));
    // Frames before the sequence start are dropped.
    assert!(p
        .push_video(0, &hevc_frame(true, 0, 2), WALL)
        .unwrap()
        .is_empty());
    p.push_video(0, &hevc_seq(hevc_record()), WALL).unwrap();
    let mut bad = hevc_frame(true, 0, 4);
    if let VideoPacket::Hevc(h) = &mut bad.packet {
        h.payload = Bytes::from_static(&[0, 0, 0, 99, 0x26, 0x01]);
    }
    assert!(matches!(
        p.push_video(0, &bad, WALL),
        Err(PackagerError::Hevc(HevcError::NalOverrun { .. }))
    ));
    let av1 = VideoTag::parse(&Bytes::from_static(&[
        0x91, b'a', b'v', b'0', b'1', 0, 0, 0,
    ]))
    .unwrap();
    assert!(matches!(
        p.push_video(0, &av1, WALL),
        Err(PackagerError::UnsupportedCodec(c)) if c == "av01"
    ));
}

#[derive(Debug, Clone)]
enum Ev {
    Video { step: u32, key: bool },
    Audio { step: u32 },
}

fn arb_events() -> impl Strategy<Value = Vec<Ev>> {
    proptest::collection::vec(
        prop_oneof![
            (0u32..80, proptest::bool::weighted(0.15))
                .prop_map(|(step, key)| Ev::Video { step, key }),
            (0u32..40).prop_map(|step| Ev::Audio { step }),
        ],
        1..150,
    )
}

proptest! {
    #[test]
    fn numbering_invariants(start in any::<u32>(), events in arb_events()) {
        let (mut p, _) = started();
        let mut ts = start;
        let mut outs = vec![];
        for ev in &events {
            match ev {
                Ev::Video { step, key } => {
                    ts = ts.wrapping_add(*step);
                    outs.extend(p.push_video(ts, &frame(*key, 0, 3), WALL).unwrap());
                }
                Ev::Audio { step } => {
                    ts = ts.wrapping_add(*step);
                    outs.extend(p.push_audio(ts, &audio(false, &[7]), WALL).unwrap());
                }
            }
        }
        for track in [TrackName::Video, TrackName::Audio] {
            let objs: Vec<Obj> = objects(&outs).into_iter().filter(|o| o.0 == track).collect();
            let mut prev: Option<&Obj> = None;
            for o in &objs {
                match prev {
                    None => prop_assert_eq!(o.2, 0),
                    Some(pr) => {
                        prop_assert!(o.3.base_media_decode_time > pr.3.base_media_decode_time, "tfdt increases");
                        prop_assert!(o.3.sequence_number > pr.3.sequence_number);
                        if o.1 == pr.1 {
                            prop_assert_eq!(o.2, pr.2 + 1, "objects are contiguous");
                        } else {
                            prop_assert!(o.1 > pr.1, "groups never go back");
                            prop_assert_eq!(o.2, 0);
                            if track == TrackName::Video {
                                prop_assert_eq!(o.1, pr.1 + 1, "video groups increase by one");
                            }
                        }
                    }
                }
                prop_assert_eq!(o.4, o.2 == 0);
                if track == TrackName::Video {
                    prop_assert_eq!(o.3.first_is_keyframe, o.2 == 0);
                }
                prev = Some(o);
            }
        }
        prop_assert_eq!(p.stats().groups, p.resume_point().next_group);
    }
}
