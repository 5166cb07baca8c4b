//! H.265/HEVC configuration: the HEVCDecoderConfigurationRecord (`hvcC`, ISO/IEC 14496-15
//! 8.3.3) carried by the Enhanced RTMP `hvc1` SequenceStart, and what strom needs from
//! its sequence parameter set (ITU-T H.265 7.3.2.2).
//!
//! Everything here is hostile input: the record is walked with bounds checks, the SPS is
//! read bit by bit with every read checked, and nothing panics on short or malformed
//! data. The SPS is decoded up to the conformance window and bit depths (required: they
//! give the picture size); the rest, up to the VUI timing info, is decoded best-effort
//! for the frame rate, so an unusual SPS tail costs only the frame rate.
//!
//! Why one file of ~820 lines: the SPS is only ever reached through the
//! record, and both share the checked bit reader; the tests live in
//! `hevc/tests.rs`.

use bytes::Bytes;
use thiserror::Error;

use crate::avc::{nal_units, AvcError};

/// Why an HEVC configuration or access unit was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HevcError {
    #[error("HEVC decoder configuration record truncated at {0}")]
    Truncated(&'static str),
    #[error("unsupported HEVC configuration version {0}")]
    UnsupportedVersion(u8),
    #[error("HEVC configuration has no {0}")]
    Missing(&'static str),
    #[error("NAL unit of type {actual} in the hvcC array for type {expected}")]
    WrongNalType { expected: u8, actual: u8 },
    #[error("empty {0} NAL unit")]
    EmptyNal(&'static str),
    #[error("invalid SPS: {0}")]
    InvalidSps(&'static str),
    #[error("{0} is longer than an hvcC length field allows")]
    TooLarge(&'static str),
    #[error("NAL length prefix of {prefix} bytes claims {len} bytes but only {remaining} remain")]
    NalOverrun {
        prefix: usize,
        len: usize,
        remaining: usize,
    },
    #[error("invalid NAL length size {0}")]
    InvalidLengthSize(u8),
}

impl From<AvcError> for HevcError {
    /// Length-prefixed framing is shared with H.264; only its two errors can occur.
    fn from(e: AvcError) -> Self {
        match e {
            AvcError::NalOverrun {
                prefix,
                len,
                remaining,
            } => HevcError::NalOverrun {
                prefix,
                len,
                remaining,
            },
            AvcError::InvalidLengthSize(n) => HevcError::InvalidLengthSize(n),
            _ => HevcError::Truncated("access unit"),
        }
    }
}

/// Video parameter set.
pub const NAL_VPS: u8 = 32;
/// Sequence parameter set.
pub const NAL_SPS: u8 = 33;
/// Picture parameter set.
pub const NAL_PPS: u8 = 34;
/// Access unit delimiter.
pub const NAL_AUD: u8 = 35;
/// Filler data.
pub const NAL_FILLER: u8 = 38;

/// The `nal_unit_type` of a NAL unit (6 bits after the forbidden zero bit), or `None`
/// when the unit is shorter than its two-byte header.
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    (nal.len() >= 2).then(|| (nal[0] >> 1) & 0x3F)
}

/// Intra random access point types (BLA, IDR, CRA and the reserved IRAP types 22, 23):
/// decoding can start at such a picture.
pub fn is_irap(nal_unit_type: u8) -> bool {
    (16..=23).contains(&nal_unit_type)
}

/// Whether a length-prefixed access unit contains an IRAP picture. Used to double-check
/// the RTMP keyframe flag, since a group must start where a decoder can start.
pub fn contains_irap(access_unit: &[u8], nal_length_size: u8) -> Result<bool, HevcError> {
    let mut found = false;
    for nal in nal_units(access_unit, nal_length_size)? {
        if nal_unit_type(nal?).is_some_and(is_irap) {
            found = true;
        }
    }
    Ok(found)
}

/// The general part of `profile_tier_level()` (H.265 7.3.3), as found in the SPS and
/// repeated in the hvcC header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProfileTierLevel {
    pub profile_space: u8,
    /// True for the High tier.
    pub tier_flag: bool,
    pub profile_idc: u8,
    /// general_profile_compatibility_flag[j] is bit 31 - j.
    pub compatibility_flags: u32,
    /// The 48 bits from general_progressive_source_flag on, as written.
    pub constraint_flags: [u8; 6],
    pub level_idc: u8,
}

impl ProfileTierLevel {
    /// The RFC 6381 codec string for `sample_entry` ("hvc1" or "hev1") per ISO/IEC
    /// 14496-15 annex E.3, e.g. `hvc1.1.6.L93.B0`: profile space letter (none for 0) and
    /// profile_idc; the 32 compatibility flags in reverse bit order, hex without leading
    /// zeros; L or H and level_idc; each constraint byte in hex, trailing zero bytes left out.
    pub fn codec_string(&self, sample_entry: &str) -> String {
        let space = match self.profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        let mut s = format!(
            "{sample_entry}.{space}{}.{:X}.{}{}",
            self.profile_idc,
            self.compatibility_flags.reverse_bits(),
            if self.tier_flag { 'H' } else { 'L' },
            self.level_idc
        );
        let used = self
            .constraint_flags
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1);
        for b in &self.constraint_flags[..used] {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }
}

/// What strom reads from an HEVC sequence parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct HevcSps {
    pub profile_tier_level: ProfileTierLevel,
    /// sps_max_sub_layers_minus1 + 1.
    pub max_sub_layers: u8,
    pub temporal_id_nesting: bool,
    /// 0 = monochrome, 1 = 4:2:0, 2 = 4:2:2, 3 = 4:4:4.
    pub chroma_format_idc: u8,
    pub separate_colour_plane: bool,
    /// pic_width/height_in_luma_samples: the coded size.
    pub coded_width: u32,
    pub coded_height: u32,
    /// Display size after the conformance window is cropped off.
    pub width: u32,
    pub height: u32,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// Frames per second from VUI timing info, when the encoder wrote it.
    pub frame_rate: Option<f64>,
}

/// A picture side above this is not a real stream (level 6.2 allows 8192x4320) and
/// would overflow the arithmetic below.
const MAX_PICTURE_SIDE: u32 = 16_888;

/// Bit reader over an RBSP (emulation prevention already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, HevcError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(HevcError::InvalidSps("ends early"))?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    fn flag(&mut self) -> Result<bool, HevcError> {
        Ok(self.bit()? == 1)
    }

    /// u(n) for n <= 32.
    fn bits(&mut self, n: u32) -> Result<u32, HevcError> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), HevcError> {
        let end = self.pos.saturating_add(n);
        if end > self.data.len() * 8 {
            return Err(HevcError::InvalidSps("ends early"));
        }
        self.pos = end;
        Ok(())
    }

    /// ue(v), limited to values that fit 32 bits.
    fn ue(&mut self) -> Result<u32, HevcError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(HevcError::InvalidSps("Exp-Golomb code longer than 32 bits"));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// se(v).
    fn se(&mut self) -> Result<i64, HevcError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// ue(v) that must not exceed `max`.
    fn ue_max(&mut self, max: u32, what: &'static str) -> Result<u32, HevcError> {
        let v = self.ue()?;
        if v > max {
            return Err(HevcError::InvalidSps(what));
        }
        Ok(v)
    }
}

/// The RBSP of a NAL unit: the two-byte header dropped and emulation prevention bytes
/// (the 0x03 of every 0x00 0x00 0x03) removed.
pub fn rbsp(nal: &[u8]) -> Vec<u8> {
    let body = nal.get(2..).unwrap_or_default();
    let mut out = Vec::with_capacity(body.len());
    let mut zeros = 0;
    for &b in body {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

fn profile_tier_level(
    r: &mut Bits<'_>,
    max_sub_layers_minus1: u8,
) -> Result<ProfileTierLevel, HevcError> {
    let profile_space = r.bits(2)? as u8;
    let tier_flag = r.flag()?;
    let profile_idc = r.bits(5)? as u8;
    let compatibility_flags = r.bits(32)?;
    let mut constraint_flags = [0u8; 6];
    for b in &mut constraint_flags {
        *b = r.bits(8)? as u8;
    }
    let level_idc = r.bits(8)? as u8;
    let mut sub_layers = [(false, false); 8];
    for s in sub_layers
        .iter_mut()
        .take(usize::from(max_sub_layers_minus1))
    {
        *s = (r.flag()?, r.flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        // reserved_zero_2bits for the unused sub-layer slots up to 8.
        r.skip(2 * (8 - usize::from(max_sub_layers_minus1)))?;
    }
    for &(profile_present, level_present) in
        sub_layers.iter().take(usize::from(max_sub_layers_minus1))
    {
        if profile_present {
            r.skip(88)?;
        }
        if level_present {
            r.skip(8)?;
        }
    }
    Ok(ProfileTierLevel {
        profile_space,
        tier_flag,
        profile_idc,
        compatibility_flags,
        constraint_flags,
        level_idc,
    })
}

/// Decode one SPS NAL unit (two-byte header included).
pub fn parse_sps(nal: &[u8]) -> Result<HevcSps, HevcError> {
    match nal_unit_type(nal) {
        None => return Err(HevcError::EmptyNal("SPS")),
        Some(NAL_SPS) => {}
        Some(actual) => {
            return Err(HevcError::WrongNalType {
                expected: NAL_SPS,
                actual,
            })
        }
    }
    let data = rbsp(nal);
    let mut r = Bits::new(&data);
    let _vps_id = r.bits(4)?;
    let max_sub_layers_minus1 = r.bits(3)? as u8;
    if max_sub_layers_minus1 > 6 {
        return Err(HevcError::InvalidSps("sps_max_sub_layers_minus1 above 6"));
    }
    let temporal_id_nesting = r.flag()?;
    let ptl = profile_tier_level(&mut r, max_sub_layers_minus1)?;
    let _sps_id = r.ue_max(15, "sps_seq_parameter_set_id above 15")?;
    let chroma_format_idc = r.ue_max(3, "chroma_format_idc above 3")? as u8;
    let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
    let coded_width = r.ue()?;
    let coded_height = r.ue()?;
    if coded_width == 0 || coded_height == 0 {
        return Err(HevcError::InvalidSps("zero picture size"));
    }
    if coded_width > MAX_PICTURE_SIDE || coded_height > MAX_PICTURE_SIDE {
        return Err(HevcError::InvalidSps("picture size above 16888"));
    }
    // Crop units (H.265 table 6-1): two luma samples horizontally for 4:2:0 and 4:2:2,
    // vertically for 4:2:0 only; one when the chroma planes are coded separately.
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let sub_width = if matches!(chroma_array_type, 1 | 2) {
        2
    } else {
        1
    };
    let sub_height = if chroma_array_type == 1 { 2 } else { 1 };
    let (mut width, mut height) = (coded_width, coded_height);
    if r.flag()? {
        let mut crop = [0u32; 4];
        for c in &mut crop {
            *c = r.ue_max(MAX_PICTURE_SIDE, "conformance window offset too large")?;
        }
        let [left, right, top, bottom] = crop;
        width = coded_width
            .checked_sub(sub_width * (left + right))
            .filter(|&w| w > 0)
            .ok_or(HevcError::InvalidSps(
                "conformance window wider than the picture",
            ))?;
        height = coded_height
            .checked_sub(sub_height * (top + bottom))
            .filter(|&h| h > 0)
            .ok_or(HevcError::InvalidSps(
                "conformance window taller than the picture",
            ))?;
    }
    let bit_depth_luma = r.ue_max(8, "bit_depth_luma_minus8 above 8")? as u8 + 8;
    let bit_depth_chroma = r.ue_max(8, "bit_depth_chroma_minus8 above 8")? as u8 + 8;
    // Everything after this point only yields the frame rate: a stream is usable
    // without it, so a tail strom cannot follow is not an error.
    let frame_rate = sps_frame_rate(&mut r, max_sub_layers_minus1).ok().flatten();
    Ok(HevcSps {
        profile_tier_level: ptl,
        max_sub_layers: max_sub_layers_minus1 + 1,
        temporal_id_nesting,
        chroma_format_idc,
        separate_colour_plane,
        coded_width,
        coded_height,
        width,
        height,
        bit_depth_luma,
        bit_depth_chroma,
        frame_rate,
    })
}

/// The SPS from log2_max_pic_order_cnt_lsb_minus4 through the VUI timing info.
fn sps_frame_rate(r: &mut Bits<'_>, max_sub_layers_minus1: u8) -> Result<Option<f64>, HevcError> {
    let log2_max_poc_lsb = r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4 above 12")? + 4;
    let ordering_info_for_all = r.flag()?;
    let first = if ordering_info_for_all {
        0
    } else {
        max_sub_layers_minus1
    };
    for _ in first..=max_sub_layers_minus1 {
        r.ue()?; // sps_max_dec_pic_buffering_minus1
        r.ue()?; // sps_max_num_reorder_pics
        r.ue()?; // sps_max_latency_increase_plus1
    }
    for _ in 0..6 {
        // Coding and transform block sizes, transform hierarchy depths.
        r.ue()?;
    }
    if r.flag()? && r.flag()? {
        // scaling_list_enabled_flag and sps_scaling_list_data_present_flag.
        scaling_list_data(r)?;
    }
    r.skip(2)?; // amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.flag()? {
        // pcm_enabled_flag: two bit depths (4 bits each), two sizes, loop filter flag.
        r.skip(8)?;
        r.ue()?;
        r.ue()?;
        r.skip(1)?;
    }
    let num_sets = r.ue_max(64, "num_short_term_ref_pic_sets above 64")? as usize;
    let mut sets: Vec<RefPicSet> = Vec::with_capacity(num_sets);
    for idx in 0..num_sets {
        let set = st_ref_pic_set(r, idx, &sets)?;
        sets.push(set);
    }
    if r.flag()? {
        // long_term_ref_pics_present_flag
        let n = r.ue_max(32, "num_long_term_ref_pics_sps above 32")?;
        for _ in 0..n {
            r.skip(log2_max_poc_lsb as usize + 1)?;
        }
    }
    r.skip(2)?; // sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    if !r.flag()? {
        return Ok(None);
    }
    vui_frame_rate(r)
}

fn scaling_list_data(r: &mut Bits<'_>) -> Result<(), HevcError> {
    for size_id in 0..4u32 {
        let step = if size_id == 3 { 3 } else { 1 };
        for _matrix in (0..6).step_by(step) {
            if !r.flag()? {
                r.ue()?; // scaling_list_pred_matrix_id_delta
            } else {
                let coefs = 64.min(1 << (4 + (size_id << 1)));
                if size_id > 1 {
                    r.se()?; // scaling_list_dc_coef_minus8
                }
                for _ in 0..coefs {
                    r.se()?;
                }
            }
        }
    }
    Ok(())
}

/// Delta POCs of one short-term reference picture set: only their number matters for
/// parsing, but inter-set prediction needs the values to derive it.
struct RefPicSet {
    deltas: Vec<i64>,
}

/// More reference pictures than any level allows.
const MAX_REF_PICS: usize = 32;

fn st_ref_pic_set(
    r: &mut Bits<'_>,
    idx: usize,
    sets: &[RefPicSet],
) -> Result<RefPicSet, HevcError> {
    let inter = idx != 0 && r.flag()?;
    if inter {
        // In the SPS the reference is always the previous set (delta_idx_minus1 is
        // only coded in slice headers).
        let reference = sets.last().ok_or(HevcError::InvalidSps(
            "inter-predicted first reference picture set",
        ))?;
        let negative = r.flag()?;
        let magnitude = i64::from(r.ue_max(1 << 15, "abs_delta_rps_minus1 too large")?) + 1;
        let delta_rps = if negative { -magnitude } else { magnitude };
        let mut deltas = Vec::new();
        // One flag pair per picture of the reference set, plus the reference picture itself.
        for j in 0..=reference.deltas.len() {
            let used = r.flag()?;
            let use_delta = used || r.flag()?;
            if use_delta {
                let d = reference.deltas.get(j).copied().unwrap_or(0) + delta_rps;
                if d != 0 {
                    deltas.push(d);
                }
            }
        }
        if deltas.len() > MAX_REF_PICS {
            return Err(HevcError::InvalidSps("too many reference pictures"));
        }
        Ok(RefPicSet { deltas })
    } else {
        let negatives = r.ue_max(MAX_REF_PICS as u32, "num_negative_pics too large")?;
        let positives = r.ue_max(MAX_REF_PICS as u32, "num_positive_pics too large")?;
        if (negatives + positives) as usize > MAX_REF_PICS {
            return Err(HevcError::InvalidSps("too many reference pictures"));
        }
        let mut deltas = Vec::with_capacity((negatives + positives) as usize);
        let mut poc = 0i64;
        for _ in 0..negatives {
            poc -= i64::from(r.ue_max(1 << 15, "delta_poc_s0_minus1 too large")?) + 1;
            r.skip(1)?;
            deltas.push(poc);
        }
        poc = 0;
        for _ in 0..positives {
            poc += i64::from(r.ue_max(1 << 15, "delta_poc_s1_minus1 too large")?) + 1;
            r.skip(1)?;
            deltas.push(poc);
        }
        Ok(RefPicSet { deltas })
    }
}

/// vui_parameters() (H.265 E.2.1) up to the timing info.
fn vui_frame_rate(r: &mut Bits<'_>) -> Result<Option<f64>, HevcError> {
    if r.flag()? {
        // aspect_ratio_info_present_flag
        if r.bits(8)? == 255 {
            r.skip(32)?; // sar_width, sar_height
        }
    }
    if r.flag()? {
        r.skip(1)?; // overscan_appropriate_flag
    }
    if r.flag()? {
        // video_format, video_full_range_flag, colour_description_present_flag
        r.skip(4)?;
        if r.flag()? {
            r.skip(24)?;
        }
    }
    if r.flag()? {
        // chroma_loc_info_present_flag
        r.ue()?;
        r.ue()?;
    }
    // neutral_chroma_indication_flag, field_seq_flag, frame_field_info_present_flag
    r.skip(3)?;
    if r.flag()? {
        // default_display_window_flag
        for _ in 0..4 {
            r.ue()?;
        }
    }
    if !r.flag()? {
        return Ok(None);
    }
    let num_units_in_tick = r.bits(32)?;
    let time_scale = r.bits(32)?;
    Ok(plausible_rate(
        f64::from(time_scale),
        f64::from(num_units_in_tick),
    ))
}

/// `num / den` frames per second, when a player could use it. Encoders sometimes write
/// placeholder timing; such a value is treated as absent.
fn plausible_rate(num: f64, den: f64) -> Option<f64> {
    if num <= 0.0 || den <= 0.0 {
        return None;
    }
    let fps = num / den;
    (fps > 0.5 && fps <= 1000.0).then_some(fps)
}

/// One array of the record: the NAL units of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcNalArray {
    /// True when every parameter set of this type is here and none in the samples.
    pub completeness: bool,
    pub nal_unit_type: u8,
    pub nal_units: Vec<Bytes>,
}

/// A parsed HEVCDecoderConfigurationRecord plus what strom needs from its SPS.
#[derive(Debug, Clone, PartialEq)]
pub struct HevcConfig {
    /// The record exactly as received.
    pub raw: Bytes,
    /// Profile, tier and level for the codec string and the hvcC header: the record's,
    /// or the SPS's when the record leaves them zero (some encoders do).
    pub general: ProfileTierLevel,
    pub min_spatial_segmentation_idc: u16,
    pub parallelism_type: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// Frames per 256 seconds, 0 when unspecified.
    pub avg_frame_rate: u16,
    pub constant_frame_rate: u8,
    pub num_temporal_layers: u8,
    pub temporal_id_nested: bool,
    /// Bytes in each NAL length prefix of access units (1, 2 or 4).
    pub nal_length_size: u8,
    /// Every array of the record in order (VPS, SPS, PPS and any SEI arrays).
    pub arrays: Vec<HevcNalArray>,
    /// The first SPS, decoded.
    pub sps: HevcSps,
    /// Display size after conformance window cropping.
    pub width: u32,
    pub height: u32,
    /// From the SPS VUI timing, else from avgFrameRate.
    pub frame_rate: Option<f64>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, HevcError> {
        let v = *self.data.get(self.pos).ok_or(HevcError::Truncated(what))?;
        self.pos += 1;
        Ok(v)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HevcError> {
        Ok(u16::from(self.u8(what)?) << 8 | u16::from(self.u8(what)?))
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<(usize, usize), HevcError> {
        let end = self.pos.checked_add(n).ok_or(HevcError::Truncated(what))?;
        if end > self.data.len() {
            return Err(HevcError::Truncated(what));
        }
        let range = (self.pos, end);
        self.pos = end;
        Ok(range)
    }
}

fn nal_name(nal_unit_type: u8) -> &'static str {
    match nal_unit_type {
        NAL_VPS => "VPS",
        NAL_SPS => "SPS",
        NAL_PPS => "PPS",
        _ => "parameter set",
    }
}

/// Fixed-size header of the record, before the arrays.
const RECORD_HEADER_LEN: usize = 23;

impl HevcConfig {
    /// Parse an HEVCDecoderConfigurationRecord (the payload of an `hvc1` SequenceStart).
    pub fn parse(raw: Bytes) -> Result<HevcConfig, HevcError> {
        let mut cur = Cursor { data: &raw, pos: 0 };
        let version = cur.u8("configurationVersion")?;
        if version != 1 {
            return Err(HevcError::UnsupportedVersion(version));
        }
        let b = cur.u8("general_profile_idc")?;
        let mut compat = [0u8; 4];
        for c in &mut compat {
            *c = cur.u8("general_profile_compatibility_flags")?;
        }
        let mut constraint_flags = [0u8; 6];
        for c in &mut constraint_flags {
            *c = cur.u8("general_constraint_indicator_flags")?;
        }
        let level_idc = cur.u8("general_level_idc")?;
        let record_ptl = ProfileTierLevel {
            profile_space: b >> 6,
            tier_flag: b & 0x20 != 0,
            profile_idc: b & 0x1F,
            compatibility_flags: u32::from_be_bytes(compat),
            constraint_flags,
            level_idc,
        };
        let min_spatial_segmentation_idc = cur.u16("min_spatial_segmentation_idc")? & 0x0FFF;
        let parallelism_type = cur.u8("parallelismType")? & 0x03;
        let chroma_format_idc = cur.u8("chromaFormat")? & 0x03;
        let bit_depth_luma = (cur.u8("bitDepthLumaMinus8")? & 0x07) + 8;
        let bit_depth_chroma = (cur.u8("bitDepthChromaMinus8")? & 0x07) + 8;
        let avg_frame_rate = cur.u16("avgFrameRate")?;
        let b = cur.u8("lengthSizeMinusOne")?;
        let constant_frame_rate = b >> 6;
        let num_temporal_layers = (b >> 3) & 0x07;
        let temporal_id_nested = b & 0x04 != 0;
        let nal_length_size = (b & 0x03) + 1;
        if nal_length_size == 3 {
            // 14496-15 only allows 1, 2 or 4.
            return Err(HevcError::InvalidLengthSize(3));
        }
        let num_arrays = cur.u8("numOfArrays")?;
        debug_assert_eq!(cur.pos, RECORD_HEADER_LEN);
        let mut arrays = Vec::with_capacity(usize::from(num_arrays));
        for _ in 0..num_arrays {
            let b = cur.u8("array header")?;
            let array_type = b & 0x3F;
            let count = cur.u16("numNalus")?;
            let what = nal_name(array_type);
            let mut nal_units = Vec::new();
            for _ in 0..count {
                let len = usize::from(cur.u16(what)?);
                let (start, end) = cur.take(len, what)?;
                let nal = raw.slice(start..end);
                let actual = nal_unit_type(&nal).ok_or(HevcError::EmptyNal(what))?;
                if actual != array_type {
                    return Err(HevcError::WrongNalType {
                        expected: array_type,
                        actual,
                    });
                }
                nal_units.push(nal);
            }
            arrays.push(HevcNalArray {
                completeness: b & 0x80 != 0,
                nal_unit_type: array_type,
                nal_units,
            });
        }
        let first = |t: u8| {
            arrays
                .iter()
                .filter(|a| a.nal_unit_type == t)
                .flat_map(|a| a.nal_units.first())
                .next()
        };
        if first(NAL_VPS).is_none() {
            return Err(HevcError::Missing("VPS"));
        }
        if first(NAL_PPS).is_none() {
            return Err(HevcError::Missing("PPS"));
        }
        let sps = parse_sps(first(NAL_SPS).ok_or(HevcError::Missing("SPS"))?)?;
        let general = if record_ptl.profile_idc == 0 && record_ptl.level_idc == 0 {
            sps.profile_tier_level
        } else {
            record_ptl
        };
        let frame_rate = sps
            .frame_rate
            .or_else(|| plausible_rate(f64::from(avg_frame_rate), 256.0));
        Ok(HevcConfig {
            raw: raw.clone(),
            general,
            min_spatial_segmentation_idc,
            parallelism_type,
            chroma_format_idc,
            bit_depth_luma,
            bit_depth_chroma,
            avg_frame_rate,
            constant_frame_rate,
            num_temporal_layers,
            temporal_id_nested,
            nal_length_size,
            arrays,
            width: sps.width,
            height: sps.height,
            frame_rate,
            sps,
        })
    }

    /// Build a record (4-byte NAL lengths, complete arrays) from in-band parameter sets,
    /// as an Annex B stream carries them, and parse it. The header fields come from the SPS.
    pub fn from_parameter_sets(
        vps: &[u8],
        sps: &[u8],
        pps: &[u8],
    ) -> Result<HevcConfig, HevcError> {
        let parsed = parse_sps(sps)?;
        let mut r = Vec::with_capacity(RECORD_HEADER_LEN + 15 + vps.len() + sps.len() + pps.len());
        let ptl = parsed.profile_tier_level;
        r.push(1);
        r.push(ptl.profile_space << 6 | u8::from(ptl.tier_flag) << 5 | ptl.profile_idc);
        r.extend_from_slice(&ptl.compatibility_flags.to_be_bytes());
        r.extend_from_slice(&ptl.constraint_flags);
        r.push(ptl.level_idc);
        r.extend_from_slice(&[0xF0, 0x00]); // min_spatial_segmentation_idc: unknown
        r.push(0xFC); // parallelismType: unknown
        r.push(0xFC | parsed.chroma_format_idc);
        r.push(0xF8 | (parsed.bit_depth_luma - 8));
        r.push(0xF8 | (parsed.bit_depth_chroma - 8));
        r.extend_from_slice(&[0, 0]); // avgFrameRate: unspecified
        r.push(parsed.max_sub_layers << 3 | u8::from(parsed.temporal_id_nesting) << 2 | 3);
        r.push(3);
        for (t, nal) in [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)] {
            let actual = nal_unit_type(nal).ok_or(HevcError::EmptyNal(nal_name(t)))?;
            if actual != t {
                return Err(HevcError::WrongNalType {
                    expected: t,
                    actual,
                });
            }
            let len = u16::try_from(nal.len()).map_err(|_| HevcError::TooLarge(nal_name(t)))?;
            r.push(0x80 | t);
            r.extend_from_slice(&1u16.to_be_bytes());
            r.extend_from_slice(&len.to_be_bytes());
            r.extend_from_slice(nal);
        }
        HevcConfig::parse(Bytes::from(r))
    }

    /// RFC 6381 codec string for the `hvc1` sample entry, e.g. `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self) -> String {
        self.general.codec_string("hvc1")
    }

    /// The NAL units of one type, in record order.
    pub fn nal_units_of(&self, nal_unit_type: u8) -> impl Iterator<Item = &Bytes> {
        self.arrays
            .iter()
            .filter(move |a| a.nal_unit_type == nal_unit_type)
            .flat_map(|a| a.nal_units.iter())
    }
}

#[cfg(test)]
mod tests;
