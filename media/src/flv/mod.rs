//! FLV tag bodies as carried by RTMP audio/video messages, plus a small FLV file reader.
//!
//! RTMP delivers each audio or video message body exactly as the body of an FLV tag
//! (no FLV file header, no tag header), so [`VideoTag::parse`] and [`AudioTag::parse`]
//! take that body. Everything here treats the input as hostile: every length is
//! checked and nothing panics on short or malformed data. Payloads are zero-copy
//! slices of the input [`Bytes`].

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Why a tag body could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty tag body")]
    Empty,
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("invalid video frame type {0}")]
    InvalidFrameType(u8),
    #[error("invalid AVC packet type {0}")]
    InvalidAvcPacketType(u8),
    #[error("invalid Enhanced RTMP video packet type {0}")]
    InvalidVideoPacketType(u8),
    #[error("invalid AAC packet type {0}")]
    InvalidAacPacketType(u8),
    #[error("invalid video codec id {0}")]
    InvalidVideoCodec(u8),
    #[error("not an FLV file (bad signature)")]
    BadSignature,
    #[error("invalid FLV header: {0}")]
    BadHeader(&'static str),
}

/// The FLV video frame type (upper nibble of the first byte, or bits 4..6 with Enhanced RTMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Keyframe,
    Inter,
    DisposableInter,
    GeneratedKeyframe,
    /// Video info / command frame: carries no picture.
    Command,
}

impl FrameType {
    fn from_bits(v: u8) -> Result<Self, FlvError> {
        Ok(match v {
            1 => Self::Keyframe,
            2 => Self::Inter,
            3 => Self::DisposableInter,
            4 => Self::GeneratedKeyframe,
            5 => Self::Command,
            other => return Err(FlvError::InvalidFrameType(other)),
        })
    }

    fn to_bits(self) -> u8 {
        match self {
            Self::Keyframe => 1,
            Self::Inter => 2,
            Self::DisposableInter => 3,
            Self::GeneratedKeyframe => 4,
            Self::Command => 5,
        }
    }
}

/// `AVCPacketType` of an AVC video tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvcPacketType {
    /// Payload is an AVCDecoderConfigurationRecord.
    SequenceHeader,
    /// Payload is one access unit of length-prefixed NAL units.
    Nalu,
    EndOfSequence,
}

/// An H.264 video tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcPacket {
    pub packet_type: AvcPacketType,
    /// Composition time offset (pts - dts) in milliseconds; a signed 24-bit field on the wire.
    pub composition_time: i32,
    pub payload: Bytes,
}

/// `VideoPacketType` of an Enhanced RTMP `hvc1` video tag, as far as strom packages it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HevcPacketType {
    /// SequenceStart (0): payload is an HEVCDecoderConfigurationRecord.
    SequenceStart,
    /// CodedFrames (1) or CodedFramesX (3): payload is one access unit of
    /// length-prefixed NAL units.
    CodedFrames,
    /// SequenceEnd (2): no payload.
    SequenceEnd,
}

/// An H.265 video tag (Enhanced RTMP FourCC `hvc1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcPacket {
    pub packet_type: HevcPacketType,
    /// Composition time offset (pts - dts) in milliseconds: the SI24 of CodedFrames,
    /// 0 for CodedFramesX and the other packet types.
    pub composition_time: i32,
    pub payload: Bytes,
}

/// What follows the first byte of a video tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPacket {
    Avc(AvcPacket),
    /// H.265 over Enhanced RTMP.
    Hevc(HevcPacket),
    /// Enhanced RTMP Metadata (packet type 4): AMF-encoded values such as colorInfo for
    /// a codec strom packages. Carries nothing a decoder of the CMAF output needs.
    Metadata(Bytes),
    /// A video info / command frame; the single byte is the command.
    Command(u8),
    /// A codec strom does not package. `codec` is a display name ("VP6") or, for
    /// Enhanced RTMP, the FourCC ("hvc1").
    Unsupported {
        codec: String,
    },
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTag {
    pub frame_type: FrameType,
    pub packet: VideoPacket,
}

fn need(what: &'static str, data: &[u8], n: usize) -> Result<(), FlvError> {
    if data.len() < n {
        Err(FlvError::Truncated {
            what,
            need: n,
            have: data.len(),
        })
    } else {
        Ok(())
    }
}

fn fourcc_name(b: &[u8]) -> String {
    // FourCCs from the network may be arbitrary bytes; keep the name printable.
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Sign-extend a big-endian SI24.
fn si24(b: &[u8]) -> i32 {
    let raw = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    // Shift into the top of an i32 and back down to sign-extend.
    ((raw << 8) as i32) >> 8
}

/// Enhanced RTMP `VideoPacketType` values (veovera enhanced-rtmp v1/v2).
mod ex_packet {
    pub(super) const SEQUENCE_START: u8 = 0;
    pub(super) const CODED_FRAMES: u8 = 1;
    pub(super) const SEQUENCE_END: u8 = 2;
    pub(super) const CODED_FRAMES_X: u8 = 3;
    pub(super) const METADATA: u8 = 4;
    pub(super) const MPEG2TS_SEQUENCE_START: u8 = 5;
    pub(super) const MULTITRACK: u8 = 6;
    pub(super) const MOD_EX: u8 = 7;
}

/// The body of an Enhanced RTMP video tag: `[IsExHeader:1][FrameType:3][PacketType:4]`,
/// then (except for command frames and multitrack) a FourCC and the packet.
fn parse_ex_video(body: &Bytes) -> Result<VideoTag, FlvError> {
    use ex_packet::*;
    let first = body[0];
    let frame_type = FrameType::from_bits((first >> 4) & 0x07)?;
    let packet_type = first & 0x0F;
    if packet_type > MOD_EX {
        return Err(FlvError::InvalidVideoPacketType(packet_type));
    }
    if frame_type == FrameType::Command && packet_type != METADATA {
        // E-RTMP v2: a command frame carries a single VideoCommand byte, no FourCC.
        need("Enhanced RTMP video command", body, 2)?;
        return Ok(VideoTag {
            frame_type,
            packet: VideoPacket::Command(body[1]),
        });
    }
    let unsupported = |codec: &str| {
        Ok(VideoTag {
            frame_type,
            packet: VideoPacket::Unsupported {
                codec: codec.to_string(),
            },
        })
    };
    match packet_type {
        MULTITRACK => return unsupported("Enhanced RTMP multitrack video"),
        MOD_EX => return unsupported("Enhanced RTMP ModEx video"),
        _ => {}
    }
    need("Enhanced RTMP video header", body, 5)?;
    if &body[1..5] != b"hvc1" {
        return unsupported(&fourcc_name(&body[1..5]));
    }
    let (packet_type, composition_time, start) = match packet_type {
        SEQUENCE_START => (HevcPacketType::SequenceStart, 0, 5),
        CODED_FRAMES => {
            need("HEVC composition time", body, 8)?;
            (HevcPacketType::CodedFrames, si24(&body[5..8]), 8)
        }
        CODED_FRAMES_X => (HevcPacketType::CodedFrames, 0, 5),
        SEQUENCE_END => (HevcPacketType::SequenceEnd, 0, 5),
        METADATA => {
            return Ok(VideoTag {
                frame_type,
                packet: VideoPacket::Metadata(body.slice(5..)),
            })
        }
        // MPEG2TSSequenceStart (an MPEG-2 TS descriptor as configuration) is defined for
        // AV1 only; strom cannot package HEVC configured that way.
        MPEG2TS_SEQUENCE_START => return unsupported("hvc1 (MPEG2TSSequenceStart)"),
        other => return Err(FlvError::InvalidVideoPacketType(other)),
    };
    Ok(VideoTag {
        frame_type,
        packet: VideoPacket::Hevc(HevcPacket {
            packet_type,
            composition_time,
            payload: body.slice(start..),
        }),
    })
}

fn legacy_video_codec_name(id: u8) -> Option<&'static str> {
    Some(match id {
        1 => "JPEG",
        2 => "Sorenson H.263",
        3 => "Screen video",
        4 => "VP6",
        5 => "VP6A",
        6 => "Screen video v2",
        // Non-standard ids used by some Chinese CDNs before Enhanced RTMP existed.
        12 => "HEVC (legacy codec id 12)",
        13 => "AV1 (legacy codec id 13)",
        _ => return None,
    })
}

impl VideoTag {
    /// Parse an RTMP video message body.
    pub fn parse(body: &Bytes) -> Result<VideoTag, FlvError> {
        let first = *body.first().ok_or(FlvError::Empty)?;
        if first & 0x80 != 0 {
            return parse_ex_video(body);
        }
        let frame_type = FrameType::from_bits(first >> 4)?;
        let codec_id = first & 0x0F;
        if frame_type == FrameType::Command && codec_id == 7 {
            need("video command frame", body, 2)?;
            return Ok(VideoTag {
                frame_type,
                packet: VideoPacket::Command(body[1]),
            });
        }
        if codec_id != 7 {
            let name =
                legacy_video_codec_name(codec_id).ok_or(FlvError::InvalidVideoCodec(codec_id))?;
            return Ok(VideoTag {
                frame_type,
                packet: VideoPacket::Unsupported {
                    codec: name.to_string(),
                },
            });
        }
        need("AVC video header", body, 5)?;
        let packet_type = match body[1] {
            0 => AvcPacketType::SequenceHeader,
            1 => AvcPacketType::Nalu,
            2 => AvcPacketType::EndOfSequence,
            other => return Err(FlvError::InvalidAvcPacketType(other)),
        };
        let composition_time = si24(&body[2..5]);
        Ok(VideoTag {
            frame_type,
            packet: VideoPacket::Avc(AvcPacket {
                packet_type,
                composition_time,
                payload: body.slice(5..),
            }),
        })
    }

    /// True for frame types a decoder can start from (per the FLV header; see
    /// [`crate::avc::contains_idr`] for the defensive check of the bitstream).
    pub fn is_keyframe(&self) -> bool {
        matches!(
            self.frame_type,
            FrameType::Keyframe | FrameType::GeneratedKeyframe
        )
    }

    /// Serialise an AVC tag body (used to build test input and by tools).
    pub fn encode_avc(frame_type: FrameType, packet: &AvcPacket) -> Bytes {
        let mut out = BytesMut::with_capacity(5 + packet.payload.len());
        out.put_u8((frame_type.to_bits() << 4) | 7);
        out.put_u8(match packet.packet_type {
            AvcPacketType::SequenceHeader => 0,
            AvcPacketType::Nalu => 1,
            AvcPacketType::EndOfSequence => 2,
        });
        let cts = (packet.composition_time as u32) & 0x00FF_FFFF;
        out.put_slice(&cts.to_be_bytes()[1..]);
        out.put_slice(&packet.payload);
        out.freeze()
    }

    /// Serialise an Enhanced RTMP `hvc1` tag body (used to build test input and by
    /// tools). Coded frames with a zero composition time use CodedFramesX, as the
    /// specification recommends; the composition time is truncated to 24 bits.
    pub fn encode_hevc(frame_type: FrameType, packet: &HevcPacket) -> Bytes {
        use ex_packet::*;
        let mut out = BytesMut::with_capacity(8 + packet.payload.len());
        let packet_type = match packet.packet_type {
            HevcPacketType::SequenceStart => SEQUENCE_START,
            HevcPacketType::SequenceEnd => SEQUENCE_END,
            HevcPacketType::CodedFrames if packet.composition_time == 0 => CODED_FRAMES_X,
            HevcPacketType::CodedFrames => CODED_FRAMES,
        };
        out.put_u8(0x80 | (frame_type.to_bits() << 4) | packet_type);
        out.put_slice(b"hvc1");
        if packet_type == CODED_FRAMES {
            let cts = (packet.composition_time as u32) & 0x00FF_FFFF;
            out.put_slice(&cts.to_be_bytes()[1..]);
        }
        out.put_slice(&packet.payload);
        out.freeze()
    }
}

/// `AACPacketType` of an AAC audio tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AacPacketType {
    /// Payload is an AudioSpecificConfig.
    SequenceHeader,
    /// Payload is one raw AAC frame.
    Raw,
}

/// An AAC audio tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacPacket {
    pub packet_type: AacPacketType,
    pub payload: Bytes,
}

/// What follows the first byte of an audio tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPacket {
    Aac(AacPacket),
    /// A codec strom does not package. `codec` is a display name ("MP3") or, for
    /// Enhanced RTMP, the FourCC ("Opus").
    Unsupported {
        codec: String,
    },
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTag {
    /// The 4-bit SoundFormat (10 = AAC; 9 = Enhanced RTMP extended header).
    pub sound_format: u8,
    /// The 2-bit SoundRate index; meaningless for AAC (always 3), kept for diagnostics.
    pub sound_rate: u8,
    /// SoundSize: true for 16-bit samples.
    pub sound_16bit: bool,
    /// SoundType: true for stereo.
    pub stereo: bool,
    pub packet: AudioPacket,
}

fn legacy_audio_codec_name(id: u8) -> &'static str {
    match id {
        0 => "Linear PCM (platform endian)",
        1 => "ADPCM",
        2 => "MP3",
        3 => "Linear PCM (little endian)",
        4 => "Nellymoser 16 kHz",
        5 => "Nellymoser 8 kHz",
        6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        11 => "Speex",
        13 => "reserved audio format 13",
        12 => "reserved audio format 12",
        14 => "MP3 8 kHz",
        15 => "device-specific sound",
        // 9 and 10 are handled before this is called.
        _ => "unknown",
    }
}

impl AudioTag {
    /// Parse an RTMP audio message body.
    pub fn parse(body: &Bytes) -> Result<AudioTag, FlvError> {
        let first = *body.first().ok_or(FlvError::Empty)?;
        let sound_format = first >> 4;
        let sound_rate = (first >> 2) & 0x03;
        let sound_16bit = first & 0x02 != 0;
        let stereo = first & 0x01 != 0;
        let packet = match sound_format {
            10 => {
                need("AAC audio header", body, 2)?;
                let packet_type = match body[1] {
                    0 => AacPacketType::SequenceHeader,
                    1 => AacPacketType::Raw,
                    other => return Err(FlvError::InvalidAacPacketType(other)),
                };
                AudioPacket::Aac(AacPacket {
                    packet_type,
                    payload: body.slice(2..),
                })
            }
            9 => {
                // Enhanced RTMP audio: [9:4][AudioPacketType:4][FourCC:4]...
                need("Enhanced RTMP audio header", body, 5)?;
                AudioPacket::Unsupported {
                    codec: fourcc_name(&body[1..5]),
                }
            }
            other => AudioPacket::Unsupported {
                codec: legacy_audio_codec_name(other).to_string(),
            },
        };
        Ok(AudioTag {
            sound_format,
            sound_rate,
            sound_16bit,
            stereo,
            packet,
        })
    }

    /// Serialise an AAC tag body with the conventional header byte 0xAF
    /// (AAC, 44 kHz, 16-bit, stereo — the flags are ignored by AAC decoders).
    pub fn encode_aac(packet: &AacPacket) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + packet.payload.len());
        out.put_u8(0xAF);
        out.put_u8(match packet.packet_type {
            AacPacketType::SequenceHeader => 0,
            AacPacketType::Raw => 1,
        });
        out.put_slice(&packet.payload);
        out.freeze()
    }
}

/// The kind of an FLV file tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlvTagKind {
    Audio,
    Video,
    Script,
    Other(u8),
}

/// One tag of an FLV file: the RTMP-equivalent timestamp and message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    pub kind: FlvTagKind,
    /// Decode timestamp in milliseconds (24 bits + 8 extension bits, as RTMP).
    pub timestamp_ms: u32,
    pub body: Bytes,
}

/// Iterates the tags of a complete in-memory FLV file (used by tests and tools;
/// ingest gets tag bodies from RTMP instead).
#[derive(Debug, Clone)]
pub struct FlvReader {
    data: Bytes,
    pos: usize,
    failed: bool,
}

impl FlvReader {
    /// Check the FLV header and position the reader at the first tag.
    pub fn new(data: Bytes) -> Result<Self, FlvError> {
        need("FLV header", &data, 9)?;
        if &data[0..3] != b"FLV" {
            return Err(FlvError::BadSignature);
        }
        let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
        if header_len < 9 {
            return Err(FlvError::BadHeader("data offset smaller than header"));
        }
        // Skip the header and PreviousTagSize0.
        let pos = header_len
            .checked_add(4)
            .ok_or(FlvError::BadHeader("data offset overflow"))?;
        need("FLV header", &data, pos)?;
        Ok(Self {
            data,
            pos,
            failed: false,
        })
    }
}

impl Iterator for FlvReader {
    type Item = Result<FlvTag, FlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        if let Err(e) = need("FLV tag header", rest, 11) {
            self.failed = true;
            return Some(Err(e));
        }
        let kind = match rest[0] & 0x1F {
            8 => FlvTagKind::Audio,
            9 => FlvTagKind::Video,
            18 => FlvTagKind::Script,
            other => FlvTagKind::Other(other),
        };
        let size =
            (usize::from(rest[1]) << 16) | (usize::from(rest[2]) << 8) | usize::from(rest[3]);
        let timestamp_ms = (u32::from(rest[7]) << 24)
            | (u32::from(rest[4]) << 16)
            | (u32::from(rest[5]) << 8)
            | u32::from(rest[6]);
        // Tag header (11) + body + PreviousTagSize (4).
        if let Err(e) = need("FLV tag", rest, 11 + size + 4) {
            self.failed = true;
            return Some(Err(e));
        }
        let start = self.pos + 11;
        let body = self.data.slice(start..start + size);
        self.pos = start + size + 4;
        Some(Ok(FlvTag {
            kind,
            timestamp_ms,
            body,
        }))
    }
}

#[cfg(test)]
mod tests;
