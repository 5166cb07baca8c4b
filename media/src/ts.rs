//! MPEG-TS in (what SRT carries), FLV-style tags out: the same [`VideoTag`] and
//! [`AudioTag`] an RTMP push yields, so the [`Packager`](crate::Packager) does
//! not know which protocol a broadcast came in over.
//!
//! Sans-IO: [`TsIngest::push`] takes whatever bytes arrived. It finds the
//! program in the PAT, the elementary streams in the PMT (H.264 0x1B, HEVC
//! 0x24, AAC in ADTS 0x0F), reassembles PES packets, and converts them:
//! H.264 and HEVC Annex B access units become length-prefixed NAL units with
//! an AVCDecoderConfigurationRecord (from in-band SPS/PPS) or an
//! HEVCDecoderConfigurationRecord (from in-band VPS/SPS/PPS); ADTS frames
//! become raw AAC frames with an AudioSpecificConfig built from the ADTS
//! header. Timestamps are 33-bit 90 kHz values: they are unwrapped (a
//! broadcast may run past the 26.5 h wrap) and rebased to the first one seen,
//! so an encoder's mux delay (ffmpeg starts at 1.4 s by default) does not
//! matter. Everything is hostile input: lengths are checked, nothing panics,
//! a broken packet costs only itself.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::flv::{
    AacPacket, AacPacketType, AudioPacket, AudioTag, AvcPacket, AvcPacketType, FrameType,
    HevcPacket, HevcPacketType, VideoPacket, VideoTag,
};
use crate::hevc::{self, HevcConfig};

/// Bytes in one transport stream packet.
pub const PACKET_SIZE: usize = 188;
const SYNC: u8 = 0x47;
/// A PES packet above this is refused (a 4K keyframe is well under it).
const MAX_PES: usize = 8 * 1024 * 1024;
/// 33-bit timestamps wrap here (90 kHz: about 26.5 hours).
const WRAP: i64 = 1 << 33;
/// Headroom below the first timestamp seen: a stream whose first packets
/// are slightly ahead of another's still gets non-negative times.
const REBASE_HEADROOM_MS: i64 = 1_000;

/// Why the stream cannot go on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TsError {
    #[error("a PES packet of over {0} bytes")]
    PesTooLarge(usize),
    #[error("no MPEG-TS sync byte in {0} bytes")]
    NoSync(usize),
}

/// The elementary stream types strom reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EsCodec {
    H264,
    Hevc,
    /// AAC in ADTS frames.
    Aac,
}

impl EsCodec {
    fn from_stream_type(t: u8) -> Option<Self> {
        match t {
            0x1B => Some(Self::H264),
            0x24 => Some(Self::Hevc),
            0x0F => Some(Self::Aac),
            _ => None,
        }
    }
}

/// One reassembled PES packet of a known stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsFrame {
    pub codec: EsCodec,
    pub pid: u16,
    /// Raw 33-bit 90 kHz timestamps; `dts` equals `pts` when absent.
    pub pts: u64,
    pub dts: u64,
    pub data: Bytes,
}

/// Counters of what was skipped, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsStats {
    pub packets: u64,
    /// Bytes skipped to find the next sync byte.
    pub resync_bytes: u64,
    /// Packets with the transport error indicator or a bad adaptation field.
    pub bad_packets: u64,
    /// PES packets without a start code or a PTS.
    pub bad_pes: u64,
    /// Continuity counter jumps (lost packets upstream).
    pub discontinuities: u64,
    /// Video access units or ADTS frames that could not be converted, and
    /// parameter sets that could not form a decoder configuration.
    pub bad_frames: u64,
}

struct Assembly {
    data: Vec<u8>,
    /// Total length when the PES header gave one.
    expected: Option<usize>,
}

/// PAT/PMT tracking and PES reassembly.
#[derive(Default)]
pub struct Demuxer {
    carry: Vec<u8>,
    pmt_pid: Option<u16>,
    streams: HashMap<u16, EsCodec>,
    assembling: HashMap<u16, Assembly>,
    continuity: HashMap<u16, u8>,
    pub stats: TsStats,
}

impl Demuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; appends every PES packet completed by them to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<EsFrame>) -> Result<(), TsError> {
        if !self.carry.is_empty() {
            let need = PACKET_SIZE - self.carry.len();
            let take = need.min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < PACKET_SIZE {
                return Ok(());
            }
            let packet: [u8; PACKET_SIZE] = self.carry[..].try_into().expect("one packet");
            self.carry.clear();
            self.packet(&packet, out)?;
        }
        while !data.is_empty() {
            if data[0] != SYNC {
                let skip = data.iter().position(|&b| b == SYNC).unwrap_or(data.len());
                self.stats.resync_bytes += skip as u64;
                data = &data[skip..];
                continue;
            }
            if data.len() < PACKET_SIZE {
                self.carry.extend_from_slice(data);
                break;
            }
            let (packet, rest) = data.split_at(PACKET_SIZE);
            self.packet(packet, out)?;
            data = rest;
        }
        Ok(())
    }

    /// Emits what is still being assembled (at the end of a push).
    pub fn flush(&mut self, out: &mut Vec<EsFrame>) {
        let pids: Vec<u16> = self.assembling.keys().copied().collect();
        for pid in pids {
            self.finish(pid, out);
        }
    }

    fn packet(&mut self, p: &[u8], out: &mut Vec<EsFrame>) -> Result<(), TsError> {
        self.stats.packets += 1;
        if p[1] & 0x80 != 0 {
            self.stats.bad_packets += 1;
            return Ok(());
        }
        let start = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
        let control = (p[3] >> 4) & 0x03;
        let counter = p[3] & 0x0F;
        let mut offset = 4;
        if control & 0x02 != 0 {
            offset += 1 + usize::from(p[4]);
        }
        if control & 0x01 == 0 || offset >= PACKET_SIZE {
            if offset > PACKET_SIZE {
                self.stats.bad_packets += 1;
            }
            return Ok(());
        }
        let payload = &p[offset..];
        if pid == 0 {
            if start {
                self.pat(payload);
            }
            return Ok(());
        }
        if Some(pid) == self.pmt_pid {
            if start {
                self.pmt(payload);
            }
            return Ok(());
        }
        if !self.streams.contains_key(&pid) {
            return Ok(());
        }
        if let Some(last) = self.continuity.insert(pid, counter) {
            if counter != (last + 1) & 0x0F && counter != last {
                self.stats.discontinuities += 1;
                // What was being assembled has a hole: drop it.
                if !start && self.assembling.remove(&pid).is_some() {
                    self.stats.bad_pes += 1;
                }
            }
        }
        if start {
            self.finish(pid, out);
            let expected = (payload.len() >= 6)
                .then(|| usize::from(u16::from_be_bytes([payload[4], payload[5]])))
                .filter(|&n| n > 0)
                .map(|n| n + 6);
            self.assembling.insert(
                pid,
                Assembly {
                    data: payload.to_vec(),
                    expected,
                },
            );
        } else if let Some(a) = self.assembling.get_mut(&pid) {
            a.data.extend_from_slice(payload);
            if a.data.len() > MAX_PES {
                self.assembling.remove(&pid);
                return Err(TsError::PesTooLarge(MAX_PES));
            }
        } else {
            return Ok(());
        }
        if self
            .assembling
            .get(&pid)
            .and_then(|a| a.expected.map(|e| a.data.len() >= e))
            .unwrap_or(false)
        {
            self.finish(pid, out);
        }
        Ok(())
    }

    /// A PSI section's body (after the pointer field), up to its CRC.
    fn section(payload: &[u8], table_id: u8) -> Option<&[u8]> {
        let pointer = usize::from(*payload.first()?);
        let s = payload.get(1 + pointer..)?;
        if *s.first()? != table_id || s.len() < 3 {
            return None;
        }
        let length = usize::from(u16::from_be_bytes([s[1] & 0x0F, s[2]]));
        // A section longer than one packet is not followed; strom's encoders
        // send one program with a few streams, which always fits.
        let body = s.get(3..3 + length)?;
        body.get(..body.len().checked_sub(4)?)
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(body) = Self::section(payload, 0x00) else {
            return;
        };
        // transport_stream_id(2) version(1) section(1) last_section(1), then programs.
        for entry in body.get(5..).unwrap_or_default().chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            if program != 0 {
                self.pmt_pid = Some(u16::from(entry[2] & 0x1F) << 8 | u16::from(entry[3]));
                return;
            }
        }
    }

    fn pmt(&mut self, payload: &[u8]) {
        let Some(body) = Self::section(payload, 0x02) else {
            return;
        };
        // program_number(2) version(1) section(1) last(1) PCR_PID(2) program_info_length(2)
        let Some(info) = body.get(7..9) else { return };
        let info_len = usize::from(u16::from_be_bytes([info[0] & 0x0F, info[1]]));
        let mut rest = body.get(9 + info_len..).unwrap_or_default();
        let mut streams = HashMap::new();
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let pid = u16::from(rest[1] & 0x1F) << 8 | u16::from(rest[2]);
            let es_info = usize::from(u16::from_be_bytes([rest[3] & 0x0F, rest[4]]));
            if let Some(codec) = EsCodec::from_stream_type(stream_type) {
                // One stream per kind: the first video and the first audio.
                let video = |c: &EsCodec| matches!(c, EsCodec::H264 | EsCodec::Hevc);
                if !streams.values().any(|c| video(c) == video(&codec)) {
                    streams.insert(pid, codec);
                }
            }
            rest = rest.get(5 + es_info..).unwrap_or_default();
        }
        if streams != self.streams {
            self.assembling.retain(|pid, _| streams.contains_key(pid));
            self.streams = streams;
        }
    }

    fn finish(&mut self, pid: u16, out: &mut Vec<EsFrame>) {
        let Some(a) = self.assembling.remove(&pid) else {
            return;
        };
        let Some(codec) = self.streams.get(&pid).copied() else {
            return;
        };
        let mut data = a.data;
        if let Some(e) = a.expected {
            data.truncate(e);
        }
        // Parsed within the length the PES header gave (F14): a length that
        // ends inside the header itself makes a bad PES, not a panic.
        match parse_pes(&data) {
            Some((pts, dts, start)) => {
                let data = Bytes::from(data).slice(start..);
                if !data.is_empty() {
                    out.push(EsFrame {
                        codec,
                        pid,
                        pts,
                        dts,
                        data,
                    });
                }
            }
            None => self.stats.bad_pes += 1,
        }
    }
}

fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

/// (pts, dts, payload offset) of a PES packet with a PTS.
fn parse_pes(p: &[u8]) -> Option<(u64, u64, usize)> {
    if p.len() < 9 || p[0..3] != [0, 0, 1] {
        return None;
    }
    let flags = p[7] >> 6;
    let header_len = usize::from(p[8]);
    let start = 9 + header_len;
    if start > p.len() || flags & 0x02 == 0 {
        return None;
    }
    let pts = timestamp(p.get(9..14)?);
    let dts = if flags == 0x03 {
        timestamp(p.get(14..19)?)
    } else {
        pts
    };
    Some((pts, dts, start))
}

/// One FLV-style tag with its time in milliseconds since the broadcast's first
/// timestamp, as an RTMP message would carry it.
#[derive(Debug, Clone, PartialEq)]
pub enum TsTag {
    Video { timestamp_ms: u32, tag: VideoTag },
    Audio { timestamp_ms: u32, tag: AudioTag },
}

/// Unwraps 33-bit timestamps and rebases them to the first one seen.
#[derive(Default)]
struct Clock {
    base: Option<i64>,
    last: Option<i64>,
}

impl Clock {
    /// Milliseconds since the base for a raw 33-bit value.
    fn ms(&mut self, raw: u64) -> i64 {
        self.ticks(raw) / 90
    }

    /// 90 kHz ticks since the base (never negative) for a raw 33-bit value.
    fn ticks(&mut self, raw: u64) -> i64 {
        let raw = raw as i64 & (WRAP - 1);
        let value = match self.last {
            None => raw,
            Some(last) => {
                // The candidate nearest the last value: a jump of over 13 h
                // either way is a wrap, not a real jump.
                let epoch = last.div_euclid(WRAP) * WRAP;
                [epoch - WRAP + raw, epoch + raw, epoch + WRAP + raw]
                    .into_iter()
                    .min_by_key(|v| (v - last).abs())
                    .expect("three candidates")
            }
        };
        self.last = Some(self.last.map_or(value, |l| l.max(value)));
        let base = *self.base.get_or_insert(value - REBASE_HEADROOM_MS * 90);
        (value - base).max(0)
    }
}

/// MPEG-TS bytes in, tags out. See the module docs.
#[derive(Default)]
pub struct TsIngest {
    demux: Demuxer,
    clock: Clock,
    /// The SPS and PPS of the configuration last announced.
    avc: Option<(Bytes, Bytes)>,
    /// The VPS, SPS and PPS of the HEVC configuration last announced.
    hevc: Option<[Bytes; 3]>,
    /// The AudioSpecificConfig last announced.
    asc: Option<[u8; 2]>,
}

impl TsIngest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> &TsStats {
        &self.demux.stats
    }

    /// Feeds bytes as they arrived; returns the tags they complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TsTag>, TsError> {
        let mut frames = Vec::new();
        self.demux.push(data, &mut frames)?;
        Ok(self.convert(frames))
    }

    /// Converts what is still buffered (when the push ends).
    pub fn finish(&mut self) -> Vec<TsTag> {
        let mut frames = Vec::new();
        self.demux.flush(&mut frames);
        self.convert(frames)
    }

    fn convert(&mut self, frames: Vec<EsFrame>) -> Vec<TsTag> {
        let mut out = Vec::new();
        for f in frames {
            match f.codec {
                EsCodec::H264 => self.h264(&f, &mut out),
                EsCodec::Aac => self.aac(&f, &mut out),
                EsCodec::Hevc => self.h265(&f, &mut out),
            }
        }
        out
    }

    fn h264(&mut self, f: &EsFrame, out: &mut Vec<TsTag>) {
        let dts = self.clock.ticks(f.dts);
        let pts = self.clock.ticks(f.pts);
        let timestamp_ms = ms_u32(dts / 90);
        let (mut sps, mut pps) = (None, None);
        let mut body = BytesMut::with_capacity(f.data.len() + 16);
        let mut idr = false;
        for nal in annex_b(&f.data) {
            let Some(&header) = nal.first() else { continue };
            match header & 0x1F {
                7 => {
                    sps.get_or_insert_with(|| f.data.slice_ref(nal));
                }
                8 => {
                    pps.get_or_insert_with(|| f.data.slice_ref(nal));
                }
                // Access unit delimiters and filler say nothing to a decoder of fMP4.
                9 | 12 => {}
                t => {
                    idr |= t == 5;
                    body.put_u32(nal.len() as u32);
                    body.extend_from_slice(nal);
                }
            }
        }
        if let (Some(sps), Some(pps)) = (sps, pps) {
            if self.avc.as_ref() != Some(&(sps.clone(), pps.clone())) {
                if sps.len() < 4 || sps.len() > usize::from(u16::MAX) || pps.len() > 0xFFFF {
                    self.demux.stats.bad_frames += 1;
                } else {
                    out.push(TsTag::Video {
                        timestamp_ms,
                        tag: VideoTag {
                            frame_type: FrameType::Keyframe,
                            packet: VideoPacket::Avc(AvcPacket {
                                packet_type: AvcPacketType::SequenceHeader,
                                composition_time: 0,
                                payload: avc_record(&sps, &pps),
                            }),
                        },
                    });
                    self.avc = Some((sps, pps));
                    // A later switch back to HEVC must announce its configuration again.
                    self.hevc = None;
                }
            }
        }
        if body.is_empty() {
            return;
        }
        let composition_time = ((pts - dts) / 90).clamp(0, 0x7F_FFFF) as i32;
        out.push(TsTag::Video {
            timestamp_ms,
            tag: VideoTag {
                frame_type: if idr {
                    FrameType::Keyframe
                } else {
                    FrameType::Inter
                },
                packet: VideoPacket::Avc(AvcPacket {
                    packet_type: AvcPacketType::Nalu,
                    composition_time,
                    payload: body.freeze(),
                }),
            },
        });
    }

    /// Like [`Self::h264`]: parameter sets leave the access unit and, when new or
    /// changed, are announced as an `hvc1` SequenceStart; AUD and filler are dropped.
    fn h265(&mut self, f: &EsFrame, out: &mut Vec<TsTag>) {
        let dts = self.clock.ticks(f.dts);
        let pts = self.clock.ticks(f.pts);
        let timestamp_ms = ms_u32(dts / 90);
        let (mut vps, mut sps, mut pps) = (None, None, None);
        let mut body = BytesMut::with_capacity(f.data.len() + 16);
        let mut irap = false;
        for nal in annex_b(&f.data) {
            let Some(nal_type) = hevc::nal_unit_type(nal) else {
                continue;
            };
            match nal_type {
                hevc::NAL_VPS => {
                    vps.get_or_insert_with(|| f.data.slice_ref(nal));
                }
                hevc::NAL_SPS => {
                    sps.get_or_insert_with(|| f.data.slice_ref(nal));
                }
                hevc::NAL_PPS => {
                    pps.get_or_insert_with(|| f.data.slice_ref(nal));
                }
                hevc::NAL_AUD | hevc::NAL_FILLER => {}
                t => {
                    irap |= hevc::is_irap(t);
                    body.put_u32(nal.len() as u32);
                    body.extend_from_slice(nal);
                }
            }
        }
        if let (Some(vps), Some(sps), Some(pps)) = (vps, sps, pps) {
            let sets = [vps, sps, pps];
            if self.hevc.as_ref() != Some(&sets) {
                match HevcConfig::from_parameter_sets(&sets[0], &sets[1], &sets[2]) {
                    Ok(config) => {
                        out.push(TsTag::Video {
                            timestamp_ms,
                            tag: VideoTag {
                                frame_type: FrameType::Keyframe,
                                packet: VideoPacket::Hevc(HevcPacket {
                                    packet_type: HevcPacketType::SequenceStart,
                                    composition_time: 0,
                                    payload: config.raw,
                                }),
                            },
                        });
                        self.hevc = Some(sets);
                        self.avc = None;
                    }
                    Err(_) => self.demux.stats.bad_frames += 1,
                }
            }
        }
        if body.is_empty() {
            return;
        }
        let composition_time = ((pts - dts) / 90).clamp(0, 0x7F_FFFF) as i32;
        out.push(TsTag::Video {
            timestamp_ms,
            tag: VideoTag {
                frame_type: if irap {
                    FrameType::Keyframe
                } else {
                    FrameType::Inter
                },
                packet: VideoPacket::Hevc(HevcPacket {
                    packet_type: HevcPacketType::CodedFrames,
                    composition_time,
                    payload: body.freeze(),
                }),
            },
        });
    }

    fn aac(&mut self, f: &EsFrame, out: &mut Vec<TsTag>) {
        let mut data = &f.data[..];
        let mut index = 0u64;
        while !data.is_empty() {
            let Some(adts) = Adts::parse(data) else {
                self.demux.stats.bad_frames += 1;
                return;
            };
            let asc = adts.audio_specific_config();
            // Frame i of a PES starts i × 1024 samples after its PTS.
            let offset = index * 1024 * 90_000 / u64::from(adts.sample_rate);
            let timestamp_ms = ms_u32(self.clock.ms(f.pts + offset));
            if self.asc != Some(asc) {
                self.asc = Some(asc);
                out.push(TsTag::Audio {
                    timestamp_ms,
                    tag: aac_tag(AacPacketType::SequenceHeader, Bytes::copy_from_slice(&asc)),
                });
            }
            let raw = f.data.slice_ref(&data[adts.header_len..adts.frame_len]);
            out.push(TsTag::Audio {
                timestamp_ms,
                tag: aac_tag(AacPacketType::Raw, raw),
            });
            data = &data[adts.frame_len..];
            index += 1;
        }
    }
}

fn ms_u32(ms: i64) -> u32 {
    // RTMP's 32-bit millisecond clock wraps after 49.7 days; so does this one.
    (ms as u64 & 0xFFFF_FFFF) as u32
}

fn aac_tag(packet_type: AacPacketType, payload: Bytes) -> AudioTag {
    AudioTag {
        sound_format: 10,
        sound_rate: 3,
        sound_16bit: true,
        stereo: true,
        packet: AudioPacket::Aac(AacPacket {
            packet_type,
            payload,
        }),
    }
}

/// The NAL units of an Annex B byte stream (start codes removed).
fn annex_b(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| s - 3)
        .chain(std::iter::once(data.len()))
        .collect();
    starts.into_iter().zip(ends).map(move |(s, e)| {
        let mut nal = &data[s..e];
        // A four-byte start code leaves a zero at the end of the previous unit;
        // trailing zero bytes are never part of a NAL unit.
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        nal
    })
}

/// An AVCDecoderConfigurationRecord around one SPS and one PPS, 4-byte lengths.
fn avc_record(sps: &[u8], pps: &[u8]) -> Bytes {
    let mut r = Vec::with_capacity(11 + sps.len() + pps.len());
    r.extend_from_slice(&[1, sps[1], sps[2], sps[3], 0xFF, 0xE1]);
    r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    r.extend_from_slice(sps);
    r.push(1);
    r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    r.extend_from_slice(pps);
    Bytes::from(r)
}

struct Adts {
    object_type: u8,
    frequency_index: u8,
    channel_config: u8,
    sample_rate: u32,
    header_len: usize,
    frame_len: usize,
}

const ADTS_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl Adts {
    fn parse(d: &[u8]) -> Option<Adts> {
        if d.len() < 7 || d[0] != 0xFF || d[1] & 0xF0 != 0xF0 {
            return None;
        }
        let header_len = if d[1] & 0x01 == 0 { 9 } else { 7 };
        let object_type = (d[2] >> 6) + 1;
        let frequency_index = (d[2] >> 2) & 0x0F;
        let channel_config = (d[2] & 0x01) << 2 | d[3] >> 6;
        let frame_len =
            usize::from(d[3] & 0x03) << 11 | usize::from(d[4]) << 3 | usize::from(d[5] >> 5);
        let sample_rate = *ADTS_RATES.get(usize::from(frequency_index))?;
        // Several raw data blocks in one ADTS frame are not produced by live encoders.
        if d[6] & 0x03 != 0 || frame_len <= header_len || frame_len > d.len() {
            return None;
        }
        Some(Adts {
            object_type,
            frequency_index,
            channel_config,
            sample_rate,
            header_len,
            frame_len,
        })
    }

    fn audio_specific_config(&self) -> [u8; 2] {
        [
            self.object_type << 3 | self.frequency_index >> 1,
            (self.frequency_index & 0x01) << 7 | self.channel_config << 3,
        ]
    }
}

#[cfg(test)]
mod tests;
