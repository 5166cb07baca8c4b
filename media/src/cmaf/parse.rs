//! Read timing and codec facts back out of CMAF chunks and init segments.
//!
//! Edges use these to compute group/part durations and glass-to-glass latency, and
//! the tests use them to check the writer. Input may come from the network: every
//! offset is range-checked.

use bytes::Bytes;
use mp4_atom::{Codec, Decode, Moof, Moov};

use super::{ntp_to_unix_micros, CmafError};
use crate::aac::AacConfig;
use crate::hevc::ProfileTierLevel;

/// The prft box of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrftInfo {
    pub version: u8,
    pub flags: u32,
    pub reference_track_id: u32,
    /// Raw 64-bit NTP timestamp.
    pub ntp: u64,
    /// The same instant as Unix microseconds.
    pub unix_micros: u64,
    /// Media time (track timescale) the wall clock refers to.
    pub media_time: u64,
}

/// One sample of a parsed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleInfo {
    /// Byte offset of the sample data within the parsed buffer.
    pub offset: usize,
    pub size: u32,
    pub duration: u32,
    pub flags: u32,
    pub keyframe: bool,
    pub cts_offset: i64,
}

/// What a chunk says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    pub sequence_number: u32,
    pub track_id: u32,
    pub base_media_decode_time: u64,
    /// Sum of sample durations, track timescale.
    pub duration: u64,
    pub sample_count: usize,
    pub first_is_keyframe: bool,
    pub prft: Option<PrftInfo>,
    pub samples: Vec<SampleInfo>,
}

/// Media kind and basic properties of an init segment's track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    Video { width: u16, height: u16 },
    Audio { sample_rate: u32, channels: u16 },
}

/// What an init segment says about its (first) track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitInfo {
    pub track_id: u32,
    pub timescale: u32,
    /// RFC 6381 codec string.
    pub codec: String,
    pub kind: TrackKind,
    pub major_brand: Option<String>,
    pub compatible_brands: Vec<String>,
}

/// A chunk with more samples than this is rejected rather than expanded: a hostile
/// trun can declare 2^32 zero-sized samples.
const MAX_SAMPLES: usize = 100_000;

struct TopBox {
    kind: [u8; 4],
    start: usize,
    body: usize,
    end: usize,
}

/// Split a buffer into its top-level boxes.
fn top_boxes(data: &[u8]) -> Result<Vec<TopBox>, CmafError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 8 {
            return Err(CmafError::Layout(
                "trailing bytes shorter than a box header",
            ));
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let kind = [rest[4], rest[5], rest[6], rest[7]];
        let (header, size) = match size32 {
            0 => (8usize, rest.len() as u64),
            1 => {
                if rest.len() < 16 {
                    return Err(CmafError::Layout("truncated 64-bit box size"));
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[8..16]);
                (16, u64::from_be_bytes(b))
            }
            n => (8, u64::from(n)),
        };
        if size < header as u64 || size > rest.len() as u64 {
            return Err(CmafError::Layout("box size out of range"));
        }
        let end = pos + size as usize;
        out.push(TopBox {
            kind,
            start: pos,
            body: pos + header,
            end,
        });
        pos = end;
    }
    Ok(out)
}

/// Refuses an `sgpd` box (sample group descriptions) that claims more
/// entries than it has bytes, anywhere in `body` (the body of a `moov` or
/// `moof`). mp4-atom 0.17 decodes `entry_count` entries one by one even when
/// they take no bytes (a version-0 entry of an unknown grouping type takes
/// the rest of the box, the next ones nothing): a box of a few bytes claiming
/// 2^32 entries allocated until the process died. mp4-atom decodes unknown
/// children of many boxes (`stbl`, `traf`, `stsd`, sample entries…) as any
/// box, so every `sgpd` header that fits in `body` is checked, wherever it
/// sits; every real entry takes at least one byte.
fn check_sample_groups(body: &[u8]) -> Result<(), CmafError> {
    let mut from = 4;
    while let Some(found) = body
        .get(from..)
        .and_then(|b| b.windows(4).position(|w| w == b"sgpd"))
    {
        let kind = from + found;
        from = kind + 1;
        let start = kind - 4;
        let size = u32::from_be_bytes([
            body[start],
            body[start + 1],
            body[start + 2],
            body[start + 3],
        ]);
        // A box header: 32-bit size, 0 = to the end, 1 = a 64-bit size follows.
        let (inner_start, end) = match size {
            0 => (kind + 4, Some(body.len())),
            1 => match body.get(kind + 4..kind + 12) {
                Some(b) => (
                    kind + 12,
                    usize::try_from(u64::from_be_bytes(b.try_into().unwrap_or_default()))
                        .ok()
                        .and_then(|n| start.checked_add(n)),
                ),
                None => continue,
            },
            n => (kind + 4, start.checked_add(n as usize)),
        };
        let Some(inner) = end.and_then(|end| body.get(inner_start..end)) else {
            continue;
        };
        // version(1) flags(3) grouping_type(4) [default_length(4)]
        // [default_group_description_index(4)] entry_count(4)
        let Some(&version) = inner.first() else {
            continue;
        };
        let at = 8 + 4 * usize::from(version.min(2));
        let Some(count) = inner.get(at..at + 4) else {
            continue;
        };
        let count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize;
        if count > (inner.len() - at - 4).max(1) {
            return Err(CmafError::Layout("sgpd claims more entries than it holds"));
        }
    }
    Ok(())
}

fn parse_prft(body: &[u8]) -> Result<PrftInfo, CmafError> {
    let be32 = |i: usize| -> Result<u32, CmafError> {
        body.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(CmafError::Layout("truncated prft"))
    };
    let be64 = |i: usize| -> Result<u64, CmafError> {
        Ok((u64::from(be32(i)?) << 32) | u64::from(be32(i + 4)?))
    };
    let vf = be32(0)?;
    let version = (vf >> 24) as u8;
    let reference_track_id = be32(4)?;
    let ntp = be64(8)?;
    let media_time = match version {
        0 => u64::from(be32(16)?),
        1 => be64(16)?,
        _ => return Err(CmafError::Layout("unknown prft version")),
    };
    Ok(PrftInfo {
        version,
        flags: vf & 0x00FF_FFFF,
        reference_track_id,
        ntp,
        unix_micros: ntp_to_unix_micros(ntp),
        media_time,
    })
}

/// Parse one CMAF chunk (optional styp/prft/emsg, then moof + mdat).
pub fn parse_chunk(data: &[u8]) -> Result<ChunkInfo, CmafError> {
    let mut prft = None;
    let mut moof: Option<(Moof, usize)> = None;
    let mut mdat: Option<(usize, usize)> = None;
    for b in top_boxes(data)? {
        match &b.kind {
            b"prft" if prft.is_none() => prft = Some(parse_prft(&data[b.body..b.end])?),
            b"moof" if moof.is_none() => {
                check_sample_groups(&data[b.body..b.end])?;
                let m = Moof::decode(&mut &data[b.start..b.end])?;
                moof = Some((m, b.start));
            }
            b"mdat" if mdat.is_none() => mdat = Some((b.body, b.end)),
            // styp, emsg, sidx, free and repeated boxes carry nothing strom needs.
            _ => {}
        }
    }
    let (moof, moof_start) = moof.ok_or(CmafError::MissingBox("moof"))?;
    let (mdat_start, mdat_end) = mdat.ok_or(CmafError::MissingBox("mdat"))?;
    let traf = moof.traf.first().ok_or(CmafError::MissingBox("traf"))?;
    let tfdt = traf.tfdt.as_ref().ok_or(CmafError::MissingBox("tfdt"))?;
    let tfhd = &traf.tfhd;

    let base = match tfhd.base_data_offset {
        Some(b) => b,
        None => moof_start as u64,
    };
    let mut samples = Vec::new();
    let mut next_offset = base;
    for trun in &traf.trun {
        if samples.len() + trun.samples.len() > MAX_SAMPLES {
            return Err(CmafError::TooLarge("sample count"));
        }
        if let Some(off) = trun.data_offset {
            next_offset = base
                .checked_add_signed(i64::from(off))
                .ok_or(CmafError::Layout("negative data offset"))?;
        }
        for entry in trun.samples.iter() {
            let size = entry
                .size
                .or(tfhd.default_sample_size)
                .ok_or(CmafError::Layout("sample size not signalled"))?;
            // trex defaults live in the init segment, which a chunk parser does not see.
            let duration = entry
                .duration
                .or(tfhd.default_sample_duration)
                .ok_or(CmafError::Layout("sample duration not signalled"))?;
            // Without flags in the chunk, treat samples as sync (CMAF audio is all sync).
            let flags = entry.flags.or(tfhd.default_sample_flags).unwrap_or(0);
            let end = next_offset
                .checked_add(u64::from(size))
                .ok_or(CmafError::Layout("sample offset overflow"))?;
            if next_offset < mdat_start as u64 || end > mdat_end as u64 {
                return Err(CmafError::DataOutsideMdat {
                    offset: next_offset,
                    end,
                    mdat_start: mdat_start as u64,
                    mdat_end: mdat_end as u64,
                });
            }
            samples.push(SampleInfo {
                offset: next_offset as usize,
                size,
                duration,
                flags,
                keyframe: flags & 0x0001_0000 == 0,
                cts_offset: entry.cts.unwrap_or(0),
            });
            next_offset = end;
        }
    }
    let first = samples.first().ok_or(CmafError::NoSamples)?;
    Ok(ChunkInfo {
        sequence_number: moof.mfhd.sequence_number,
        track_id: tfhd.track_id,
        base_media_decode_time: tfdt.base_media_decode_time,
        duration: samples.iter().map(|s| u64::from(s.duration)).sum(),
        sample_count: samples.len(),
        first_is_keyframe: first.keyframe,
        prft,
        samples,
    })
}

/// RFC 6381 codec string from an hvcC header.
fn hvcc_codec_string(sample_entry: &str, c: &mp4_atom::Hvcc) -> String {
    ProfileTierLevel {
        profile_space: c.general_profile_space,
        tier_flag: c.general_tier_flag,
        profile_idc: c.general_profile_idc,
        compatibility_flags: u32::from_be_bytes(c.general_profile_compatibility_flags),
        constraint_flags: c.general_constraint_indicator_flags,
        level_idc: c.general_level_idc,
    }
    .codec_string(sample_entry)
}

fn brand(b: &mp4_atom::FourCC) -> String {
    b.to_string()
}

/// Parse an init segment (ftyp + moov).
pub fn parse_init(data: &[u8]) -> Result<InitInfo, CmafError> {
    let mut ftyp = None;
    let mut moov = None;
    for b in top_boxes(data)? {
        match &b.kind {
            b"ftyp" => ftyp = Some(mp4_atom::Ftyp::decode(&mut &data[b.start..b.end])?),
            b"moov" => {
                check_sample_groups(&data[b.body..b.end])?;
                moov = Some(Moov::decode(&mut &data[b.start..b.end])?)
            }
            _ => {}
        }
    }
    let moov = moov.ok_or(CmafError::MissingBox("moov"))?;
    let trak = moov.trak.first().ok_or(CmafError::MissingBox("trak"))?;
    let timescale = trak.mdia.mdhd.timescale;
    let codec = trak
        .mdia
        .minf
        .stbl
        .stsd
        .codecs
        .first()
        .ok_or(CmafError::MissingBox("sample entry"))?;
    let (codec, kind) = match codec {
        Codec::Avc1(avc1) => {
            let c = &avc1.avcc;
            (
                format!(
                    "avc1.{:02x}{:02x}{:02x}",
                    c.avc_profile_indication, c.profile_compatibility, c.avc_level_indication
                ),
                TrackKind::Video {
                    width: avc1.visual.width,
                    height: avc1.visual.height,
                },
            )
        }
        Codec::Hvc1(hvc1) => (
            hvcc_codec_string("hvc1", &hvc1.hvcc),
            TrackKind::Video {
                width: hvc1.visual.width,
                height: hvc1.visual.height,
            },
        ),
        Codec::Hev1(hev1) => (
            hvcc_codec_string("hev1", &hev1.hvcc),
            TrackKind::Video {
                width: hev1.visual.width,
                height: hev1.visual.height,
            },
        ),
        Codec::Mp4a(mp4a) => {
            let dc = &mp4a.esds.es_desc.dec_config;
            let asc = dc
                .dec_specific
                .as_ref()
                .and_then(|d| AacConfig::parse(Bytes::copy_from_slice(&d.raw)).ok());
            let codec = match (&asc, dc.object_type_indication) {
                (Some(asc), 0x40) => asc.codec_string(),
                (_, oti) => format!("mp4a.{oti:02x}"),
            };
            let sample_rate = asc
                .as_ref()
                .map(|a| a.sample_rate)
                .unwrap_or_else(|| u32::from(mp4a.audio.sample_rate.integer()));
            (
                codec,
                TrackKind::Audio {
                    sample_rate,
                    channels: mp4a.audio.channel_count,
                },
            )
        }
        other => {
            return Err(CmafError::UnsupportedCodec(
                format!("{other:?}").chars().take(40).collect(),
            ))
        }
    };
    Ok(InitInfo {
        track_id: trak.tkhd.track_id,
        timescale,
        codec,
        kind,
        major_brand: ftyp.as_ref().map(|f| brand(&f.major_brand)),
        compatible_brands: ftyp
            .map(|f| f.compatible_brands.iter().map(brand).collect())
            .unwrap_or_default(),
    })
}
