//! Writer → parser roundtrips for init segments and chunks, and hostile-input checks.

use bytes::Bytes;
use mp4_atom::{Decode, Moov};
use proptest::prelude::*;

use super::*;
use crate::test_util::{aac_config, avc_config, hevc_config};

#[test]
fn video_init_segment() {
    let avc = avc_config();
    let init = init_segment(&TrackConfig::video(avc.clone())).unwrap();
    let info = parse_init(&init).unwrap();
    assert_eq!(info.track_id, 1);
    assert_eq!(info.timescale, 90_000);
    assert_eq!(info.codec, "avc1.640028");
    assert_eq!(
        info.kind,
        TrackKind::Video {
            width: 1920,
            height: 1080
        }
    );
    assert_eq!(info.major_brand.as_deref(), Some("iso6"));
    assert!(info.compatible_brands.iter().any(|b| b == "cmfc"));

    // The avcC box body is the record as received.
    let pos = init.windows(4).position(|w| w == b"avcC").unwrap();
    let size = u32::from_be_bytes(init[pos - 4..pos].try_into().unwrap()) as usize;
    assert_eq!(&init[pos + 4..pos - 4 + size], &avc.raw[..]);

    // Fragmented layout: mvex/trex for the track, empty sample tables.
    let moov_pos = init.windows(4).position(|w| w == b"moov").unwrap() - 4;
    let moov = Moov::decode(&mut &init[moov_pos..]).unwrap();
    let trex = &moov.mvex.as_ref().unwrap().trex[0];
    assert_eq!(
        (trex.track_id, trex.default_sample_description_index),
        (1, 1)
    );
    assert!(moov.trak[0].mdia.minf.vmhd.is_some());
    assert!(moov.trak[0].mdia.minf.stbl.stts.entries.is_empty());
}

#[test]
fn hevc_init_segment() {
    let hevc = hevc_config();
    let init = init_segment(&TrackConfig::video(hevc.clone())).unwrap();
    let info = parse_init(&init).unwrap();
    assert_eq!(info.track_id, VIDEO_TRACK_ID);
    assert_eq!(info.timescale, 90_000);
    assert_eq!(info.codec, "hvc1.1.6.L93.90");
    assert_eq!(info.codec, hevc.codec_string());
    assert_eq!(
        info.kind,
        TrackKind::Video {
            width: 1280,
            height: 720
        }
    );
    assert!(init.windows(4).any(|w| w == b"hvc1"));
    // mp4-atom rewrites the record from its fields; for a well-formed record (reserved
    // bits set, as ffmpeg writes them) that is the record as received.
    let pos = init.windows(4).position(|w| w == b"hvcC").unwrap();
    let size = u32::from_be_bytes(init[pos - 4..pos].try_into().unwrap()) as usize;
    assert_eq!(&init[pos + 4..pos - 4 + size], &hevc.raw[..]);
    // And it can be joined with an audio init segment.
    let audio = init_segment(&TrackConfig::audio(aac_config())).unwrap();
    let both = combine_init(&[init, audio]).unwrap();
    let moov_pos = both.windows(4).position(|w| w == b"moov").unwrap() - 4;
    let moov = Moov::decode(&mut &both[moov_pos..]).unwrap();
    assert_eq!(moov.trak.len(), 2);
}

#[test]
fn audio_init_segment() {
    let aac = aac_config();
    let cfg = TrackConfig::audio(aac.clone());
    assert_eq!(cfg.timescale(), 48_000);
    let init = init_segment(&cfg).unwrap();
    let info = parse_init(&init).unwrap();
    assert_eq!(info.codec, "mp4a.40.2");
    assert_eq!(info.track_id, AUDIO_TRACK_ID);
    assert_eq!(info.timescale, 48_000);
    assert_eq!(
        info.kind,
        TrackKind::Audio {
            sample_rate: 48_000,
            channels: 2
        }
    );
    // The AudioSpecificConfig travels verbatim in the DecoderSpecificInfo (tag 5).
    let asc = &aac.raw[..];
    assert!(init
        .windows(asc.len() + 2)
        .any(|w| w[0] == 0x05 && w[1] as usize == asc.len() && &w[2..] == asc));
}

fn sample(duration: u32, len: usize, keyframe: bool, cts_offset: i32, fill: u8) -> Sample {
    Sample {
        duration,
        data: Bytes::from(vec![fill; len]),
        keyframe,
        cts_offset,
    }
}

#[test]
fn chunk_layout_and_prft() {
    let samples = [
        sample(3000, 100, true, 6000, 1),
        sample(3000, 50, false, 0, 2),
    ];
    let wall = 1_704_067_200_123_456;
    let chunk = write_chunk(
        7,
        42,
        900_000,
        &samples,
        Some(ProducerTime {
            wall_clock_unix_micros: wall,
        }),
    )
    .unwrap();
    assert_eq!(&chunk[4..8], b"prft");
    assert_eq!(chunk[8], 1, "prft version 1");
    let info = parse_chunk(&chunk).unwrap();
    assert_eq!(info.track_id, 7);
    assert_eq!(info.sequence_number, 42);
    assert_eq!(info.base_media_decode_time, 900_000);
    assert_eq!(info.duration, 6000);
    assert_eq!(info.sample_count, 2);
    assert!(info.first_is_keyframe);
    assert!(!info.samples[1].keyframe);
    assert_eq!(info.samples[0].cts_offset, 6000);
    let prft = info.prft.unwrap();
    assert_eq!(prft.unix_micros, wall);
    assert_eq!(prft.ntp, unix_micros_to_ntp(wall));
    assert_eq!(prft.flags, PRFT_FLAGS);
    // Earliest presentation: sample 1 at 903000 (pts of sample 0 is 906000).
    assert_eq!(prft.media_time, 903_000);
    assert_eq!(&chunk[info.samples[0].offset..][..100], &[1u8; 100][..]);
    assert_eq!(&chunk[info.samples[1].offset..][..50], &[2u8; 50][..]);
    assert_eq!(
        info.samples[1].offset + 50,
        chunk.len(),
        "mdat ends the chunk"
    );
}

#[test]
fn chunk_errors() {
    assert!(matches!(
        write_chunk(1, 1, 0, &[], None),
        Err(CmafError::NoSamples)
    ));
    let chunk = write_chunk(1, 1, 0, &[sample(1024, 10, true, 0, 9)], None).unwrap();
    assert!(parse_chunk(&chunk).unwrap().prft.is_none());
    // Truncating the mdat leaves the sample pointing past its end.
    assert!(parse_chunk(&chunk[..chunk.len() - 1]).is_err());
    // Point the data offset one byte too far.
    let pos = chunk.windows(4).position(|w| w == b"trun").unwrap();
    let mut bad = chunk.to_vec();
    let off_at = pos + 4 + 4 + 4; // type, version/flags, sample_count
    let off = i32::from_be_bytes(bad[off_at..off_at + 4].try_into().unwrap());
    bad[off_at..off_at + 4].copy_from_slice(&(off + 1).to_be_bytes());
    assert!(matches!(
        parse_chunk(&bad),
        Err(CmafError::DataOutsideMdat { .. })
    ));
    assert!(matches!(
        parse_chunk(b""),
        Err(CmafError::MissingBox("moof"))
    ));
}

/// A box of `kind` around `body`.
fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

/// Found by the `cmaf_parse` fuzz target: an `sgpd` of a few bytes claiming
/// 2^32 - 1 entries made mp4-atom allocate until the process died, in an
/// init segment (moov) and in a chunk (moof/traf, which every edge parses).
#[test]
fn a_sample_group_box_claiming_more_entries_than_bytes_is_refused() {
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(b"abcd");
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.push(b'x');
    let sgpd = mp4_box(b"sgpd", &body);
    let init = mp4_box(b"moov", &mp4_box(b"trak", &mp4_box(b"mdia", &sgpd)));
    assert!(matches!(parse_init(&init), Err(CmafError::Layout(_))));
    let mut chunk = mp4_box(b"moof", &mp4_box(b"traf", &sgpd));
    chunk.extend_from_slice(&mp4_box(b"mdat", b"x"));
    assert!(matches!(parse_chunk(&chunk), Err(CmafError::Layout(_))));
    // Found next: a malformed box after the sgpd (here a size past the end)
    // must not hide it, since mp4-atom decodes the boxes in order.
    let mut moov_body = sgpd.clone();
    moov_body.extend_from_slice(&[0, 0, 1, 0, b'f', b'r', b'e', b'e']);
    assert!(matches!(
        parse_init(&mp4_box(b"moov", &moov_body)),
        Err(CmafError::Layout(_))
    ));
    // Found next (moqt_data, through `object_meta`): mp4-atom decodes the
    // children of an `stsd` as any box, so an sgpd hides there too.
    let mut stsd_body = vec![0, 0, 0, 0, 0, 0, 0, 1];
    stsd_body.extend_from_slice(&sgpd);
    let mut chunk = mp4_box(b"moof", &mp4_box(b"stsd", &stsd_body));
    chunk.extend_from_slice(&mp4_box(b"mdat", b"x"));
    assert!(matches!(parse_chunk(&chunk), Err(CmafError::Layout(_))));
    // One entry in a version-1 box with a default length still parses as far as mp4-atom goes.
    let mut body = vec![1, 0, 0, 0];
    body.extend_from_slice(b"abcd");
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&1u32.to_be_bytes());
    body.push(b'x');
    let init = mp4_box(b"moov", &mp4_box(b"sgpd", &body));
    assert!(matches!(
        parse_init(&init),
        Err(CmafError::Mp4(_)) | Err(CmafError::MissingBox(_))
    ));
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    (
        1u32..100_000,
        0usize..300,
        any::<bool>(),
        -5000i32..5000,
        any::<u8>(),
    )
        .prop_map(|(duration, len, keyframe, cts_offset, fill)| {
            sample(duration, len, keyframe, cts_offset, fill)
        })
}

proptest! {
    #[test]
    fn chunk_roundtrip(
        track_id in 1u32..10,
        seq in any::<u32>(),
        bmdt in any::<u64>().prop_map(|v| v >> 2),
        samples in proptest::collection::vec(arb_sample(), 1..20),
        wall in proptest::option::of(0u64..4_000_000_000_000_000),
    ) {
        let prft = wall.map(|w| ProducerTime { wall_clock_unix_micros: w });
        let chunk = write_chunk(track_id, seq, bmdt, &samples, prft).unwrap();
        let info = parse_chunk(&chunk).unwrap();
        prop_assert_eq!(info.track_id, track_id);
        prop_assert_eq!(info.sequence_number, seq);
        prop_assert_eq!(info.base_media_decode_time, bmdt);
        prop_assert_eq!(info.sample_count, samples.len());
        prop_assert_eq!(info.duration, samples.iter().map(|s| u64::from(s.duration)).sum::<u64>());
        prop_assert_eq!(info.first_is_keyframe, samples[0].keyframe);
        for (got, want) in info.samples.iter().zip(&samples) {
            prop_assert_eq!(got.duration, want.duration);
            prop_assert_eq!(got.keyframe, want.keyframe);
            prop_assert_eq!(got.cts_offset, i64::from(want.cts_offset));
            prop_assert_eq!(&chunk[got.offset..got.offset + got.size as usize], &want.data[..]);
        }
        match (wall, info.prft) {
            (Some(w), Some(p)) => {
                prop_assert_eq!(p.unix_micros, w);
                let mut dts = bmdt;
                let mut min_pts = u64::MAX;
                for s in &samples {
                    min_pts = min_pts.min(dts.saturating_add_signed(i64::from(s.cts_offset)));
                    dts += u64::from(s.duration);
                }
                prop_assert_eq!(p.media_time, min_pts);
            }
            (None, None) => {}
            other => prop_assert!(false, "prft mismatch {:?}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_chunk(&data);
        let _ = parse_init(&data);
    }

    #[test]
    fn mutated_chunks_never_panic(idx in any::<usize>(), val in any::<u8>(), n in 1usize..4) {
        let samples: Vec<Sample> = (0..n).map(|i| sample(3000, 20 + i, i == 0, 0, i as u8)).collect();
        let mut chunk = write_chunk(1, 1, 1234, &samples, Some(ProducerTime { wall_clock_unix_micros: 1 })).unwrap().to_vec();
        let i = idx % chunk.len();
        chunk[i] = val;
        let _ = parse_chunk(&chunk);
    }

    #[test]
    fn mutated_inits_never_panic(idx in any::<usize>(), val in any::<u8>(), kind in 0u8..3) {
        let cfg = match kind {
            0 => TrackConfig::video(avc_config()),
            1 => TrackConfig::video(hevc_config()),
            _ => TrackConfig::audio(aac_config()),
        };
        let mut init = init_segment(&cfg).unwrap().to_vec();
        let i = idx % init.len();
        init[i] = val;
        let _ = parse_init(&init);
    }
}
