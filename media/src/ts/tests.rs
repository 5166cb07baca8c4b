use super::*;
use crate::test_util::{HEVC_PPS_720P, HEVC_SPS_720P, HEVC_VPS_720P, PPS_1080P, SPS_1080P};
use crate::{AacConfig, AvcConfig, HevcConfig};
use proptest::prelude::*;

const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;
const PMT_PID: u16 = 0x1000;

/// A minimal transport stream writer: one program, H.264 or HEVC and AAC.
struct Mux {
    counters: HashMap<u16, u8>,
    out: Vec<u8>,
}

fn ts_stamp(marker: u8, t: u64) -> [u8; 5] {
    let t = t & ((1 << 33) - 1);
    [
        marker << 4 | ((t >> 29) as u8 & 0x0E) | 1,
        (t >> 22) as u8,
        ((t >> 14) as u8 & 0xFE) | 1,
        (t >> 7) as u8,
        ((t << 1) as u8 & 0xFE) | 1,
    ]
}

impl Mux {
    fn new() -> Self {
        Self {
            counters: HashMap::new(),
            out: Vec::new(),
        }
    }

    fn packets(&mut self, pid: u16, payload: &[u8]) {
        let mut first = true;
        for chunk in payload.chunks(PACKET_SIZE - 4) {
            let cc = self.counters.entry(pid).or_insert(0);
            let mut p = vec![SYNC, (pid >> 8) as u8 & 0x1F, pid as u8];
            if first {
                p[1] |= 0x40;
            }
            if chunk.len() == PACKET_SIZE - 4 {
                p.push(0x10 | *cc);
            } else {
                // Pad with an adaptation field of stuffing.
                let stuffing = PACKET_SIZE - 4 - chunk.len();
                p.push(0x30 | *cc);
                p.push((stuffing - 1) as u8);
                if stuffing > 1 {
                    p.push(0);
                    p.extend(std::iter::repeat_n(0xFF, stuffing - 2));
                }
            }
            p.extend_from_slice(chunk);
            assert_eq!(p.len(), PACKET_SIZE);
            self.out.extend_from_slice(&p);
            *cc = (*cc + 1) & 0x0F;
            first = false;
        }
    }

    fn section(&mut self, pid: u16, table_id: u8, body: &[u8]) {
        let mut s = vec![0, table_id];
        let len = body.len() + 4;
        s.extend_from_slice(&[0xB0 | (len >> 8) as u8, len as u8]);
        s.extend_from_slice(body);
        s.extend_from_slice(&[0, 0, 0, 0]); // CRC: not checked
        self.packets(pid, &s);
    }

    fn tables_with(&mut self, video_stream_type: u8) {
        self.section(
            0,
            0x00,
            &[
                0,
                1,
                0xC1,
                0,
                0,
                0,
                1,
                0xE0 | (PMT_PID >> 8) as u8,
                PMT_PID as u8,
            ],
        );
        let mut pmt = vec![0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0x00];
        for (t, pid) in [(video_stream_type, VIDEO_PID), (0x0F, AUDIO_PID)] {
            pmt.extend_from_slice(&[t, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0]);
        }
        self.section(PMT_PID, 0x02, &pmt);
    }

    fn pes(&mut self, pid: u16, pts: u64, dts: Option<u64>, data: &[u8]) {
        let stream_id = if pid == VIDEO_PID { 0xE0 } else { 0xC0 };
        let mut header = vec![0x80, if dts.is_some() { 0xC0 } else { 0x80 }];
        let mut stamps = ts_stamp(if dts.is_some() { 3 } else { 2 }, pts).to_vec();
        if let Some(d) = dts {
            stamps.extend_from_slice(&ts_stamp(1, d));
        }
        header.push(stamps.len() as u8);
        header.extend_from_slice(&stamps);
        let len = header.len() + data.len();
        // Video PES usually leaves the length 0 (unbounded), audio gives it.
        let len_field = if pid == VIDEO_PID { 0 } else { len as u16 };
        let mut p = vec![0, 0, 1, stream_id];
        p.extend_from_slice(&len_field.to_be_bytes());
        p.extend_from_slice(&header);
        p.extend_from_slice(data);
        self.packets(pid, &p);
    }
}

fn access_unit(idr: bool, size: usize) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x09, 0xF0];
    if idr {
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(&SPS_1080P);
        au.extend_from_slice(&[0, 0, 1]);
        au.extend_from_slice(&PPS_1080P);
    }
    au.extend_from_slice(&[0, 0, 1, if idr { 0x65 } else { 0x41 }]);
    au.extend((0..size).map(|i| (i % 200) as u8 + 1));
    au
}

/// An HEVC access unit: AUD, then (on IRAP pictures) VPS/SPS/PPS, a prefix SEI,
/// filler, and one slice (IDR_W_RADL 19 or TRAIL_R 1).
fn hevc_access_unit(irap: bool, size: usize) -> Vec<u8> {
    let mut au = vec![0, 0, 0, 1, 0x46, 0x01, 0x50];
    if irap {
        for nal in [&HEVC_VPS_720P[..], &HEVC_SPS_720P, &HEVC_PPS_720P] {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(nal);
        }
        au.extend_from_slice(&[0, 0, 1, 0x4E, 0x01, 0x05, 0x01, 0xAA, 0x80]);
    }
    au.extend_from_slice(&[0, 0, 1, 0x4C, 0x01, 0xFF, 0xFF, 0x80]); // filler (38)
    au.extend_from_slice(&[0, 0, 1]);
    au.extend_from_slice(if irap { &[0x26, 0x01] } else { &[0x02, 0x01] });
    au.extend((0..size).map(|i| (i % 200) as u8 + 1));
    au
}

/// An ADTS frame: AAC-LC, 48 kHz, stereo, `size` payload bytes.
fn adts(size: usize) -> Vec<u8> {
    let len = size + 7;
    let mut f = vec![
        0xFF,
        0xF1,
        (1 << 6) | (3 << 2),
        (2 << 6) | (len >> 11) as u8,
        (len >> 3) as u8,
        ((len & 7) << 5) as u8 | 0x1F,
        0xFC,
    ];
    f.extend(std::iter::repeat_n(0x21, size));
    f
}

/// 2 s at 30 fps with a keyframe every 30 frames, audio every 1024 samples,
/// starting at `start` (90 kHz).
fn stream(start: u64) -> Vec<u8> {
    stream_of(start, false)
}

/// [`stream`] with H.264 or HEVC video.
fn stream_of(start: u64, hevc: bool) -> Vec<u8> {
    let mut m = Mux::new();
    m.tables_with(if hevc { 0x24 } else { 0x1B });
    for i in 0..60u64 {
        let dts = start + i * 3000;
        let au = if hevc {
            hevc_access_unit(i % 30 == 0, 3000)
        } else {
            access_unit(i % 30 == 0, 3000)
        };
        m.pes(VIDEO_PID, dts + 6000, Some(dts), &au);
        if i % 2 == 0 {
            let pts = start + (i / 2) * 1920 * 2;
            let mut two = adts(300);
            two.extend_from_slice(&adts(300));
            m.pes(AUDIO_PID, pts, None, &two);
        }
    }
    m.out
}

fn tags(bytes: &[u8], chunk: usize) -> (Vec<TsTag>, TsIngest) {
    let mut ingest = TsIngest::new();
    let mut out = Vec::new();
    for c in bytes.chunks(chunk) {
        out.extend(ingest.push(c).expect("demuxes"));
    }
    out.extend(ingest.finish());
    (out, ingest)
}

fn video(tags: &[TsTag]) -> Vec<(u32, &VideoTag)> {
    tags.iter()
        .filter_map(|t| match t {
            TsTag::Video { timestamp_ms, tag } => Some((*timestamp_ms, tag)),
            _ => None,
        })
        .collect()
}

fn audio(tags: &[TsTag]) -> Vec<(u32, &AudioTag)> {
    tags.iter()
        .filter_map(|t| match t {
            TsTag::Audio { timestamp_ms, tag } => Some((*timestamp_ms, tag)),
            _ => None,
        })
        .collect()
}

#[test]
fn h264_and_aac_become_the_tags_an_rtmp_push_would_carry() {
    // 1316-byte reads, as SRT delivers them.
    let (out, ingest) = tags(&stream(900_000), 1316);
    let v = video(&out);
    // One sequence header, then 60 frames.
    assert_eq!(v.len(), 61, "{:?}", ingest.stats());
    let VideoPacket::Avc(seq) = &v[0].1.packet else {
        panic!("not AVC")
    };
    assert_eq!(seq.packet_type, AvcPacketType::SequenceHeader);
    let config = AvcConfig::parse(seq.payload.clone()).expect("record parses");
    assert_eq!((config.width, config.height), (1920, 1080));
    assert_eq!(config.nal_length_size, 4);
    let frames: Vec<_> = v[1..].iter().collect();
    for (i, (ts, tag)) in frames.iter().enumerate() {
        // Rebased with 1 s headroom; 33.3 ms per frame.
        assert_eq!(*ts, 1000 + (i as u32 * 100) / 3, "frame {i}");
        let VideoPacket::Avc(p) = &tag.packet else {
            panic!()
        };
        assert_eq!(p.composition_time, 66);
        assert_eq!(tag.frame_type == FrameType::Keyframe, i % 30 == 0);
        // SPS, PPS and the delimiter are gone; the slice is length-prefixed.
        let n = crate::avc::nal_units(&p.payload, 4)
            .expect("length-prefixed")
            .count();
        assert_eq!(n, 1);
        assert!(crate::contains_idr(&p.payload, 4).unwrap() == (i % 30 == 0));
    }
    let a = audio(&out);
    assert_eq!(a.len(), 61, "one AudioSpecificConfig and 60 frames");
    let AudioPacket::Aac(asc) = &a[0].1.packet else {
        panic!()
    };
    let config = AacConfig::parse(asc.payload.clone()).expect("ASC parses");
    assert_eq!(
        (config.object_type, config.sample_rate, config.channels),
        (2, 48000, 2)
    );
    for (i, (ts, _)) in a[1..].iter().enumerate() {
        assert_eq!(
            *ts,
            1000 + (i as u64 * 1024 * 1000 / 48000) as u32,
            "audio {i}"
        );
    }
    assert_eq!(ingest.stats().bad_pes + ingest.stats().bad_frames, 0);
}

#[test]
fn the_33_bit_wrap_does_not_jump_the_clock() {
    // Start 0.5 s before the wrap: times keep rising through it.
    let start = (1u64 << 33) - 45_000;
    let (out, _) = tags(&stream(start), 1316);
    let times: Vec<u32> = video(&out)[1..].iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), 60);
    assert!(
        times.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= 34),
        "{times:?}"
    );
    assert_eq!(*times.last().unwrap(), 1000 + 59 * 100 / 3);
}

#[test]
fn garbage_between_packets_is_skipped_and_counted() {
    let clean = stream(0);
    let mut dirty = b"junk before the first sync".to_vec();
    dirty.extend_from_slice(&clean[..PACKET_SIZE * 10]);
    dirty.extend_from_slice(&[1, 2, 3]);
    dirty.extend_from_slice(&clean[PACKET_SIZE * 10..]);
    let (out, ingest) = tags(&dirty, 500);
    assert!(ingest.stats().resync_bytes >= 29);
    assert_eq!(video(&out).len(), 61);
}

#[test]
fn a_lost_packet_costs_only_its_own_frame() {
    let clean = stream(0);
    // Drop one packet in the middle of the stream (a video packet, most likely).
    let cut = PACKET_SIZE * 200;
    let mut lossy = clean[..cut].to_vec();
    lossy.extend_from_slice(&clean[cut + PACKET_SIZE..]);
    let (out, ingest) = tags(&lossy, 1316);
    assert_eq!(ingest.stats().discontinuities, 1);
    let n = video(&out).len() + audio(&out).len();
    assert!((119..=121).contains(&n), "{n} tags");
}

#[test]
fn hevc_becomes_the_tags_an_enhanced_rtmp_push_would_carry() {
    let (out, ingest) = tags(&stream_of(900_000, true), 1316);
    let v = video(&out);
    assert_eq!(v.len(), 61, "{:?}", ingest.stats());
    let VideoPacket::Hevc(seq) = &v[0].1.packet else {
        panic!("not HEVC: {:?}", v[0].1.packet)
    };
    assert_eq!(seq.packet_type, HevcPacketType::SequenceStart);
    assert_eq!(v[0].1.frame_type, FrameType::Keyframe);
    let config = HevcConfig::parse(seq.payload.clone()).expect("record parses");
    assert_eq!((config.width, config.height), (1280, 720));
    assert_eq!(config.codec_string(), "hvc1.1.6.L93.90");
    assert_eq!(config.nal_length_size, 4);
    for (i, (ts, tag)) in v[1..].iter().enumerate() {
        assert_eq!(*ts, 1000 + (i as u32 * 100) / 3, "frame {i}");
        let VideoPacket::Hevc(p) = &tag.packet else {
            panic!("not HEVC")
        };
        assert_eq!(p.packet_type, HevcPacketType::CodedFrames);
        assert_eq!(p.composition_time, 66);
        assert_eq!(tag.frame_type == FrameType::Keyframe, i % 30 == 0);
        // Parameter sets, AUD and filler are gone; SEI and the slice remain.
        let types: Vec<u8> = crate::avc::nal_units(&p.payload, 4)
            .expect("length-prefixed")
            .map(|n| crate::hevc::nal_unit_type(n.unwrap()).unwrap())
            .collect();
        if i % 30 == 0 {
            assert_eq!(types, vec![39, 19]);
        } else {
            assert_eq!(types, vec![1]);
        }
        assert_eq!(crate::contains_irap(&p.payload, 4).unwrap(), i % 30 == 0);
    }
    assert_eq!(audio(&out).len(), 61);
    assert_eq!(ingest.stats().bad_pes + ingest.stats().bad_frames, 0);
}

#[test]
fn hevc_parameter_set_change_is_announced_again() {
    let mut m = Mux::new();
    m.tables_with(0x24);
    m.pes(VIDEO_PID, 0, None, &hevc_access_unit(true, 10));
    m.pes(VIDEO_PID, 3000, None, &hevc_access_unit(true, 10));
    // Same VPS and PPS, the Main 10 SPS: a new configuration.
    let mut changed = vec![0, 0, 0, 1];
    changed.extend_from_slice(&HEVC_VPS_720P);
    changed.extend_from_slice(&[0, 0, 0, 1]);
    changed.extend_from_slice(&crate::test_util::HEVC_SPS_180P10);
    changed.extend_from_slice(&[0, 0, 0, 1]);
    changed.extend_from_slice(&HEVC_PPS_720P);
    changed.extend_from_slice(&[0, 0, 1, 0x26, 0x01, 0xAA]);
    m.pes(VIDEO_PID, 6000, None, &changed);
    // A broken SPS is counted and does not replace the configuration.
    let mut broken = vec![0, 0, 0, 1];
    broken.extend_from_slice(&HEVC_VPS_720P);
    broken.extend_from_slice(&[0, 0, 0, 1, 0x42, 0x01, 0x01]);
    broken.extend_from_slice(&[0, 0, 0, 1]);
    broken.extend_from_slice(&HEVC_PPS_720P);
    broken.extend_from_slice(&[0, 0, 1, 0x26, 0x01, 0xAA]);
    m.pes(VIDEO_PID, 9000, None, &broken);
    let (out, ingest) = tags(&m.out, 1316);
    let seqs: Vec<HevcConfig> = video(&out)
        .iter()
        .filter_map(|(_, t)| match &t.packet {
            VideoPacket::Hevc(p) if p.packet_type == HevcPacketType::SequenceStart => {
                Some(HevcConfig::parse(p.payload.clone()).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 2);
    assert_eq!((seqs[1].width, seqs[1].height), (320, 180));
    assert_eq!(video(&out).len(), 6, "two configurations and four frames");
    assert_eq!(ingest.stats().bad_frames, 1);
}

/// F14: a PES whose PES_packet_length (1..=7) ends before its own header
/// (here 9 + 5 bytes with the PTS) is a bad PES, not a panic, and the stream
/// goes on.
#[test]
fn a_pes_length_shorter_than_its_header_is_a_bad_pes() {
    let mut m = Mux::new();
    m.tables_with(0x1B);
    let mut short = vec![0, 0, 1, 0xC0, 0x00, 0x01, 0x80, 0x80, 5];
    short.extend_from_slice(&ts_stamp(2, 90_000));
    short.extend_from_slice(&adts(100));
    m.packets(AUDIO_PID, &short);
    m.pes(AUDIO_PID, 90_000 + 1920, None, &adts(100));
    let mut demux = Demuxer::new();
    let mut out = Vec::new();
    demux.push(&m.out, &mut out).expect("demuxes");
    demux.flush(&mut out);
    assert_eq!(demux.stats.bad_pes, 1);
    assert_eq!(out.len(), 1, "the next PES still comes out");
    assert_eq!((out[0].pid, out[0].pts), (AUDIO_PID, 90_000 + 1920));
    assert_eq!(&out[0].data[..], &adts(100)[..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Hostile bytes (a valid stream, mutated) never panic.
    #[test]
    fn mutated_streams_never_panic(
        flips in proptest::collection::vec((0usize..40_000, any::<u8>()), 1..50),
        chunk in 1usize..2000,
        hevc in any::<bool>(),
    ) {
        let mut bytes = stream_of(12345, hevc);
        bytes.truncate(40_000);
        for (at, v) in flips {
            if let Some(b) = bytes.get_mut(at) { *b = v; }
        }
        let mut ingest = TsIngest::new();
        for c in bytes.chunks(chunk) {
            let _ = ingest.push(c);
        }
        let _ = ingest.finish();
    }
}
