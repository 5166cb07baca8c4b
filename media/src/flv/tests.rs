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
    // Enhanced RTMP: IsExHeader | keyframe(1) << 4 | PacketTypeCodedFrames(1), FourCC hvc1.
    let tag = VideoTag::parse(&b(&[0x80 | 0x10 | 1, b'h', b'v', b'c', b'1', 0])).unwrap();
    assert!(tag.is_keyframe());
    assert_eq!(
        tag.packet,
        VideoPacket::Unsupported {
            codec: "hvc1".into()
        }
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
    fn aac_roundtrip(seq in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let packet_type = if seq { AacPacketType::SequenceHeader } else { AacPacketType::Raw };
        let packet = AacPacket { packet_type, payload: Bytes::from(payload) };
        let parsed = AudioTag::parse(&AudioTag::encode_aac(&packet)).unwrap();
        prop_assert_eq!(parsed.sound_format, 10);
        prop_assert_eq!(parsed.packet, AudioPacket::Aac(packet));
    }
}
