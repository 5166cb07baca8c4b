//! FLV tag parsing: known bodies, malformed input, and roundtrips.

use super::*;
use proptest::prelude::*;

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

#[test]
fn avc_nalu_with_negative_cts() {
    let tag = VideoTag::parse(&b(&[0x27, 1, 0xFF, 0xFF, 0xFE, 9, 9])).unwrap();
    assert_eq!(tag.frame_type, FrameType::Inter);
    assert!(!tag.is_keyframe());
    let VideoPacket::Avc(p) = tag.packet else {
        panic!("not avc")
    };
    assert_eq!(p.packet_type, AvcPacketType::Nalu);
    assert_eq!(p.composition_time, -2);
    assert_eq!(&p.payload[..], &[9, 9]);
}

#[test]
fn avc_sequence_header_keyframe() {
    let tag = VideoTag::parse(&b(&[0x17, 0, 0, 0, 0, 1, 0x64])).unwrap();
    assert!(tag.is_keyframe());
    assert!(matches!(
        tag.packet,
        VideoPacket::Avc(AvcPacket {
            packet_type: AvcPacketType::SequenceHeader,
            composition_time: 0,
            ..
        })
    ));
}

#[test]
fn unsupported_video_codecs_are_named() {
    for (byte, name) in [(0x14u8, "VP6"), (0x15, "VP6A"), (0x12, "Sorenson H.263")] {
        let tag = VideoTag::parse(&b(&[byte, 0, 0])).unwrap();
        assert_eq!(
            tag.packet,
            VideoPacket::Unsupported {
                codec: name.to_string()
            }
        );
    }
    // Enhanced RTMP FourCCs other than hvc1: IsExHeader | keyframe(1) << 4 | CodedFrames(1).
    for fourcc in [b"av01", b"vp09", b"avc1"] {
        let mut body = vec![0x80 | 0x10 | 1];
        body.extend_from_slice(fourcc);
        body.extend_from_slice(&[0, 0, 0, 9]);
        let tag = VideoTag::parse(&b(&body)).unwrap();
        assert!(tag.is_keyframe());
        assert_eq!(
            tag.packet,
            VideoPacket::Unsupported {
                codec: String::from_utf8(fourcc.to_vec()).unwrap()
            }
        );
    }
    // Unprintable FourCC bytes are replaced.
    let tag = VideoTag::parse(&b(&[0x91, b'x', 0, 0xFF, b'y'])).unwrap();
    assert_eq!(
        tag.packet,
        VideoPacket::Unsupported {
            codec: "x??y".into()
        }
    );
}

/// An Enhanced RTMP hvc1 body: [1][frame type:3][packet type:4] "hvc1" rest.
fn ex_hvc1(frame_type: u8, packet_type: u8, rest: &[u8]) -> Bytes {
    let mut v = vec![0x80 | frame_type << 4 | packet_type];
    v.extend_from_slice(b"hvc1");
    v.extend_from_slice(rest);
    Bytes::from(v)
}

#[test]
fn enhanced_rtmp_hevc_packet_types() {
    // 0 SequenceStart: the HEVCDecoderConfigurationRecord follows the FourCC.
    let tag = VideoTag::parse(&ex_hvc1(1, 0, &[1, 2, 3])).unwrap();
    assert!(tag.is_keyframe());
    assert_eq!(
        tag.packet,
        VideoPacket::Hevc(HevcPacket {
            packet_type: HevcPacketType::SequenceStart,
            composition_time: 0,
            payload: b(&[1, 2, 3]),
        })
    );
    // 1 CodedFrames: SI24 composition time, then the access unit.
    let tag = VideoTag::parse(&ex_hvc1(2, 1, &[0xFF, 0xFF, 0xDF, 0, 0, 0, 1, 7])).unwrap();
    assert_eq!(tag.frame_type, FrameType::Inter);
    assert_eq!(
        tag.packet,
        VideoPacket::Hevc(HevcPacket {
            packet_type: HevcPacketType::CodedFrames,
            composition_time: -33,
            payload: b(&[0, 0, 0, 1, 7]),
        })
    );
    let tag = VideoTag::parse(&ex_hvc1(1, 1, &[0, 0, 66])).unwrap();
    assert!(
        matches!(tag.packet, VideoPacket::Hevc(HevcPacket { composition_time: 66, ref payload, .. }) if payload.is_empty())
    );
    // 3 CodedFramesX: no composition time (zero), the access unit right after the FourCC.
    let tag = VideoTag::parse(&ex_hvc1(3, 3, &[0, 0, 0, 1, 7])).unwrap();
    assert_eq!(tag.frame_type, FrameType::DisposableInter);
    assert_eq!(
        tag.packet,
        VideoPacket::Hevc(HevcPacket {
            packet_type: HevcPacketType::CodedFrames,
            composition_time: 0,
            payload: b(&[0, 0, 0, 1, 7]),
        })
    );
    // 2 SequenceEnd.
    let tag = VideoTag::parse(&ex_hvc1(1, 2, &[])).unwrap();
    assert!(matches!(
        tag.packet,
        VideoPacket::Hevc(HevcPacket {
            packet_type: HevcPacketType::SequenceEnd,
            ..
        })
    ));
    // 4 Metadata: AMF to be ignored.
    let tag = VideoTag::parse(&ex_hvc1(1, 4, &[2, 0, 9])).unwrap();
    assert_eq!(tag.packet, VideoPacket::Metadata(b(&[2, 0, 9])));
    // 5 MPEG2TSSequenceStart: not something strom can package.
    let tag = VideoTag::parse(&ex_hvc1(1, 5, &[0x80])).unwrap();
    assert!(matches!(tag.packet, VideoPacket::Unsupported { .. }));
    // 6 Multitrack and 7 ModEx are named, not misread as a FourCC.
    for t in [6, 7] {
        let tag = VideoTag::parse(&ex_hvc1(1, t, &[0; 8])).unwrap();
        let VideoPacket::Unsupported { codec } = tag.packet else {
            panic!("packet type {t}")
        };
        assert!(codec.starts_with("Enhanced RTMP"), "{codec}");
    }
    // 8..15 are not defined.
    assert_eq!(
        VideoTag::parse(&ex_hvc1(1, 9, &[])),
        Err(FlvError::InvalidVideoPacketType(9))
    );
    // A command frame carries one command byte and no FourCC (E-RTMP v2).
    let tag = VideoTag::parse(&b(&[0x80 | 0x50 | 1, 1])).unwrap();
    assert_eq!(tag.packet, VideoPacket::Command(1));
    assert!(VideoTag::parse(&b(&[0x80 | 0x50 | 1])).is_err());
    // Truncation: the FourCC, and the composition time of CodedFrames.
    assert!(matches!(
        VideoTag::parse(&b(&[0x91, b'h', b'v', b'c'])),
        Err(FlvError::Truncated { need: 5, .. })
    ));
    assert!(matches!(
        VideoTag::parse(&ex_hvc1(1, 1, &[0, 0])),
        Err(FlvError::Truncated {
            need: 8,
            have: 7,
            ..
        })
    ));
    // Frame type 0 is invalid in the extended header too.
    assert_eq!(
        VideoTag::parse(&ex_hvc1(0, 1, &[0, 0, 0])),
        Err(FlvError::InvalidFrameType(0))
    );
}

#[test]
fn malformed_video_is_rejected() {
    assert_eq!(VideoTag::parse(&b(&[])), Err(FlvError::Empty));
    assert!(matches!(
        VideoTag::parse(&b(&[0x17, 1, 0])),
        Err(FlvError::Truncated {
            need: 5,
            have: 3,
            ..
        })
    ));
    assert_eq!(
        VideoTag::parse(&b(&[0x17, 3, 0, 0, 0])),
        Err(FlvError::InvalidAvcPacketType(3))
    );
    assert_eq!(
        VideoTag::parse(&b(&[0x07, 1, 0, 0, 0])),
        Err(FlvError::InvalidFrameType(0))
    );
    assert_eq!(
        VideoTag::parse(&b(&[0x1F, 1, 0, 0, 0])),
        Err(FlvError::InvalidVideoCodec(15))
    );
    assert!(VideoTag::parse(&b(&[0x90, b'a', b'v'])).is_err());
}

#[test]
fn audio_tags() {
    let tag = AudioTag::parse(&b(&[0xAF, 0, 0x11, 0x90])).unwrap();
    assert_eq!(tag.sound_format, 10);
    assert!(tag.stereo && tag.sound_16bit);
    assert_eq!(
        tag.packet,
        AudioPacket::Aac(AacPacket {
            packet_type: AacPacketType::SequenceHeader,
            payload: b(&[0x11, 0x90])
        })
    );
    let mp3 = AudioTag::parse(&b(&[0x2F, 0xFF])).unwrap();
    assert_eq!(
        mp3.packet,
        AudioPacket::Unsupported {
            codec: "MP3".into()
        }
    );
    let opus = AudioTag::parse(&b(&[0x91, b'O', b'p', b'u', b's'])).unwrap();
    assert_eq!(
        opus.packet,
        AudioPacket::Unsupported {
            codec: "Opus".into()
        }
    );
    assert!(matches!(
        AudioTag::parse(&b(&[0xAF])),
        Err(FlvError::Truncated { .. })
    ));
    assert_eq!(
        AudioTag::parse(&b(&[0xAF, 2])),
        Err(FlvError::InvalidAacPacketType(2))
    );
}

#[test]
fn flv_reader_reads_tags_and_stops_on_truncation() {
    let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
    let body = [0xAF, 1, 7, 7];
    file.extend_from_slice(&[8, 0, 0, 4, 0x00, 0x01, 0x02, 0x01, 0, 0, 0]);
    file.extend_from_slice(&body);
    file.extend_from_slice(&15u32.to_be_bytes());
    file.extend_from_slice(&[9, 0, 0, 9]); // truncated second tag
    let mut reader = FlvReader::new(Bytes::from(file)).unwrap();
    let tag = reader.next().unwrap().unwrap();
    assert_eq!(tag.kind, FlvTagKind::Audio);
    assert_eq!(tag.timestamp_ms, 0x0100_0102);
    assert_eq!(&tag.body[..], &body);
    assert!(reader.next().unwrap().is_err());
    assert!(reader.next().is_none());
    assert_eq!(
        FlvReader::new(b(b"XYZ\x01\x05\0\0\0\x09")).err(),
        Some(FlvError::BadSignature)
    );
}

fn arb_frame_type() -> impl Strategy<Value = FrameType> {
    prop_oneof![
        Just(FrameType::Keyframe),
        Just(FrameType::Inter),
        Just(FrameType::DisposableInter),
        Just(FrameType::GeneratedKeyframe),
    ]
}

fn arb_avc_type() -> impl Strategy<Value = AvcPacketType> {
    prop_oneof![
        Just(AvcPacketType::SequenceHeader),
        Just(AvcPacketType::Nalu),
        Just(AvcPacketType::EndOfSequence),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let data = Bytes::from(data);
        let _ = VideoTag::parse(&data);
        let _ = AudioTag::parse(&data);
        if let Ok(reader) = FlvReader::new(data) {
            for tag in reader.take(100) {
                let _ = tag;
            }
        }
    }

    #[test]
    fn avc_roundtrip(
        frame_type in arb_frame_type(),
        packet_type in arb_avc_type(),
        cts in -(1i32 << 23)..(1i32 << 23),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let packet = AvcPacket { packet_type, composition_time: cts, payload: Bytes::from(payload) };
        let encoded = VideoTag::encode_avc(frame_type, &packet);
        let parsed = VideoTag::parse(&encoded).unwrap();
        prop_assert_eq!(parsed.frame_type, frame_type);
        prop_assert_eq!(parsed.packet, VideoPacket::Avc(packet));
    }

    #[test]
    fn hevc_roundtrip(
        frame_type in arb_frame_type(),
        packet_type in prop_oneof![
            Just(HevcPacketType::SequenceStart),
            Just(HevcPacketType::CodedFrames),
            Just(HevcPacketType::SequenceEnd),
        ],
        cts in -(1i32 << 23)..(1i32 << 23),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // Only coded frames carry a composition time.
        let cts = if packet_type == HevcPacketType::CodedFrames { cts } else { 0 };
        let packet = HevcPacket { packet_type, composition_time: cts, payload: Bytes::from(payload) };
        let encoded = VideoTag::encode_hevc(frame_type, &packet);
        prop_assert_eq!(encoded[0] & 0x80, 0x80);
        prop_assert_eq!(encoded.len(), packet.payload.len() + if cts != 0 { 8 } else { 5 });
        let parsed = VideoTag::parse(&encoded).unwrap();
        prop_assert_eq!(parsed.frame_type, frame_type);
        prop_assert_eq!(parsed.packet, VideoPacket::Hevc(packet));
    }

    #[test]
    fn aac_roundtrip(seq in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let packet_type = if seq { AacPacketType::SequenceHeader } else { AacPacketType::Raw };
        let packet = AacPacket { packet_type, payload: Bytes::from(payload) };
        let parsed = AudioTag::parse(&AudioTag::encode_aac(&packet)).unwrap();
        prop_assert_eq!(parsed.sound_format, 10);
        prop_assert_eq!(parsed.packet, AudioPacket::Aac(packet));
    }
}
