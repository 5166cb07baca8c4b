//! H.264 configuration: the AVCDecoderConfigurationRecord carried by the FLV AVC sequence header.
//!
//! The record itself is walked by hand (h264-reader's record accessors index without
//! bounds checks on zero-length parameter sets, and the input is hostile); the SPS is
//! decoded with h264-reader for picture size, cropping and VUI timing.

use bytes::Bytes;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};
use thiserror::Error;

/// Why an AVC configuration or access unit was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AvcError {
    #[error("AVC decoder configuration record truncated at {0}")]
    Truncated(&'static str),
    #[error("unsupported AVC configuration version {0}")]
    UnsupportedVersion(u8),
    #[error("AVC configuration has no {0}")]
    Missing(&'static str),
    #[error("parameter set has NAL type {actual}, expected {expected}")]
    WrongNalType { expected: u8, actual: u8 },
    #[error("invalid SPS: {0}")]
    InvalidSps(String),
    #[error("NAL length prefix of {prefix} bytes claims {len} bytes but only {remaining} remain")]
    NalOverrun {
        prefix: usize,
        len: usize,
        remaining: usize,
    },
    #[error("invalid NAL length size {0}")]
    InvalidLengthSize(u8),
}

/// Optional trailer of the record for High profiles (ISO/IEC 14496-15 5.3.3.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcExtension {
    pub chroma_format: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    pub sps_ext: Vec<Bytes>,
}

/// A parsed AVCDecoderConfigurationRecord plus what strom needs from its SPS.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcConfig {
    /// The record exactly as received (it becomes the body of the avcC box).
    pub raw: Bytes,
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// Bytes in each NAL length prefix of access units (1, 2 or 4).
    pub nal_length_size: u8,
    /// Display size after SPS cropping.
    pub width: u32,
    pub height: u32,
    /// Frames per second from VUI timing info, when the encoder wrote it.
    pub frame_rate: Option<f64>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub extension: Option<AvcExtension>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, AvcError> {
        let v = *self.data.get(self.pos).ok_or(AvcError::Truncated(what))?;
        self.pos += 1;
        Ok(v)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, AvcError> {
        Ok(u16::from(self.u8(what)?) << 8 | u16::from(self.u8(what)?))
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<(usize, usize), AvcError> {
        let end = self.pos.checked_add(n).ok_or(AvcError::Truncated(what))?;
        if end > self.data.len() {
            return Err(AvcError::Truncated(what));
        }
        let range = (self.pos, end);
        self.pos = end;
        Ok(range)
    }
}

/// Read `count` u16-length-prefixed NAL units of the given type.
fn param_sets(
    cur: &mut Cursor<'_>,
    raw: &Bytes,
    count: usize,
    nal_type: u8,
    what: &'static str,
) -> Result<Vec<Bytes>, AvcError> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(cur.u16(what)?);
        let (start, end) = cur.take(len, what)?;
        let header = *raw
            .get(start)
            .filter(|_| len > 0)
            .ok_or(AvcError::Truncated(what))?;
        if header & 0x1F != nal_type {
            return Err(AvcError::WrongNalType {
                expected: nal_type,
                actual: header & 0x1F,
            });
        }
        out.push(raw.slice(start..end));
    }
    Ok(out)
}

fn profile_has_extension(profile_idc: u8) -> bool {
    matches!(profile_idc, 100 | 110 | 122 | 144)
}

impl AvcConfig {
    /// Parse an AVCDecoderConfigurationRecord (the payload of an AVC sequence header tag).
    pub fn parse(raw: Bytes) -> Result<AvcConfig, AvcError> {
        let mut cur = Cursor { data: &raw, pos: 0 };
        let version = cur.u8("configurationVersion")?;
        if version != 1 {
            return Err(AvcError::UnsupportedVersion(version));
        }
        // The record repeats profile/compatibility/level; the codec string is taken from
        // the SPS itself (RFC 6381 3.3), which is what decoders act on.
        let profile_idc = cur.u8("AVCProfileIndication")?;
        let _compatibility = cur.u8("profile_compatibility")?;
        let _level = cur.u8("AVCLevelIndication")?;
        let nal_length_size = (cur.u8("lengthSizeMinusOne")? & 0x03) + 1;
        if nal_length_size == 3 {
            // 14496-15 only allows 1, 2 or 4.
            return Err(AvcError::InvalidLengthSize(3));
        }
        let num_sps = usize::from(cur.u8("numOfSequenceParameterSets")? & 0x1F);
        let sps = param_sets(&mut cur, &raw, num_sps, 7, "sequenceParameterSet")?;
        let num_pps = usize::from(cur.u8("numOfPictureParameterSets")?);
        let pps = param_sets(&mut cur, &raw, num_pps, 8, "pictureParameterSet")?;
        // The High-profile trailer is often missing or malformed in the wild; decoders
        // do not need it (the SPS carries the same values), so a bad one is ignored.
        let extension = if profile_has_extension(profile_idc) && cur.pos < raw.len() {
            let mut ext_cur = Cursor {
                data: &raw,
                pos: cur.pos,
            };
            parse_extension(&mut ext_cur, &raw).ok()
        } else {
            None
        };
        let first_sps = sps.first().ok_or(AvcError::Missing("SPS"))?;
        if pps.is_empty() {
            return Err(AvcError::Missing("PPS"));
        }
        let parsed = parse_sps(first_sps)?;
        let (width, height) = parsed
            .pixel_dimensions()
            .map_err(|e| AvcError::InvalidSps(format!("{e:?}")))?;
        let frame_rate = frame_rate(&parsed);
        Ok(AvcConfig {
            profile_idc: parsed.profile_idc.into(),
            constraint_flags: parsed.constraint_flags.into(),
            level_idc: parsed.level_idc,
            raw: raw.clone(),
            nal_length_size,
            width,
            height,
            frame_rate,
            sps,
            pps,
            extension,
        })
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

fn parse_extension(cur: &mut Cursor<'_>, raw: &Bytes) -> Result<AvcExtension, AvcError> {
    let chroma_format = cur.u8("chroma_format")? & 0x03;
    let bit_depth_luma = (cur.u8("bit_depth_luma")? & 0x07) + 8;
    let bit_depth_chroma = (cur.u8("bit_depth_chroma")? & 0x07) + 8;
    let n = usize::from(cur.u8("numOfSequenceParameterSetExt")?);
    let sps_ext = param_sets(cur, raw, n, 13, "sequenceParameterSetExt")?;
    Ok(AvcExtension {
        chroma_format,
        bit_depth_luma,
        bit_depth_chroma,
        sps_ext,
    })
}

/// Decode one SPS NAL unit (header byte included).
pub fn parse_sps(nal: &[u8]) -> Result<SeqParameterSet, AvcError> {
    if nal.is_empty() {
        // RefNal::new panics on an empty head.
        return Err(AvcError::Missing("SPS bytes"));
    }
    let nal = RefNal::new(nal, &[], true);
    SeqParameterSet::from_bits(nal.rbsp_bits()).map_err(|e| AvcError::InvalidSps(format!("{e:?}")))
}

/// Frame rate from VUI timing: each frame is two fields' worth of ticks, hence the 2.
fn frame_rate(sps: &SeqParameterSet) -> Option<f64> {
    let timing = sps.vui_parameters.as_ref()?.timing_info.as_ref()?;
    if timing.num_units_in_tick == 0 || timing.time_scale == 0 {
        return None;
    }
    let fps = f64::from(timing.time_scale) / (2.0 * f64::from(timing.num_units_in_tick));
    // Encoders sometimes write placeholder timing (e.g. 1 tick per 90 kHz); a value no
    // player could use is treated as absent rather than advertised in the catalog.
    (fps > 0.5 && fps <= 1000.0).then_some(fps)
}

/// Iterates the NAL units of one AVCC-framed (length-prefixed) access unit.
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    data: &'a [u8],
    length_size: usize,
    failed: bool,
}

/// Split an access unit into its NAL units. Zero-length NAL units are skipped.
pub fn nal_units(access_unit: &[u8], nal_length_size: u8) -> Result<NalUnits<'_>, AvcError> {
    if !matches!(nal_length_size, 1 | 2 | 4) {
        return Err(AvcError::InvalidLengthSize(nal_length_size));
    }
    Ok(NalUnits {
        data: access_unit,
        length_size: usize::from(nal_length_size),
        failed: false,
    })
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], AvcError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.data.is_empty() {
                return None;
            }
            let prefix = self.length_size;
            if self.data.len() < prefix {
                self.failed = true;
                return Some(Err(AvcError::NalOverrun {
                    prefix,
                    len: prefix,
                    remaining: self.data.len(),
                }));
            }
            let len = self.data[..prefix]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let rest = &self.data[prefix..];
            if len > rest.len() {
                self.failed = true;
                return Some(Err(AvcError::NalOverrun {
                    prefix,
                    len,
                    remaining: rest.len(),
                }));
            }
            let (nal, tail) = rest.split_at(len);
            self.data = tail;
            if !nal.is_empty() {
                return Some(Ok(nal));
            }
        }
    }
}

/// NAL unit type 5: a coded slice of an IDR picture.
pub const NAL_IDR: u8 = 5;

/// Whether an AVCC-framed access unit contains an IDR slice. Used to double-check the
/// FLV keyframe flag, since a group must start where a decoder can start.
pub fn contains_idr(access_unit: &[u8], nal_length_size: u8) -> Result<bool, AvcError> {
    let mut found = false;
    for nal in nal_units(access_unit, nal_length_size)? {
        if nal?.first().is_some_and(|h| h & 0x1F == NAL_IDR) {
            found = true;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{make_record, PPS_1080P, SPS_1080P};
    use h264_reader::nal::sps::{
        ChromaInfo, FrameCropping, FrameMbsFlags, PicOrderCntType, SeqParamSetId, TimingInfo,
        VuiParameters,
    };
    use h264_reader::nal::{NalHeader, WritableNal};
    use proptest::prelude::*;

    fn make_sps(
        profile_idc: u8,
        level_idc: u8,
        mbs_w: u32,
        mbs_h: u32,
        crop: Option<(u32, u32, u32, u32)>,
        timing: Option<(u32, u32)>,
    ) -> Vec<u8> {
        let sps = SeqParameterSet {
            profile_idc: profile_idc.into(),
            constraint_flags: 0u8.into(),
            level_idc,
            seq_parameter_set_id: SeqParamSetId::from_u32(0).unwrap(),
            chroma_info: ChromaInfo::default(),
            log2_max_frame_num_minus4: 0,
            pic_order_cnt: PicOrderCntType::TypeTwo,
            max_num_ref_frames: 1,
            gaps_in_frame_num_value_allowed_flag: false,
            pic_width_in_mbs_minus1: mbs_w - 1,
            pic_height_in_map_units_minus1: mbs_h - 1,
            frame_mbs_flags: FrameMbsFlags::Frames,
            direct_8x8_inference_flag: true,
            frame_cropping: crop.map(|(l, r, t, b)| FrameCropping {
                left_offset: l,
                right_offset: r,
                top_offset: t,
                bottom_offset: b,
            }),
            vui_parameters: timing.map(|(n, ts)| VuiParameters {
                timing_info: Some(TimingInfo {
                    num_units_in_tick: n,
                    time_scale: ts,
                    fixed_frame_rate_flag: true,
                }),
                ..Default::default()
            }),
        };
        sps.to_vec_with_header(NalHeader::new(0x67).unwrap())
    }

    const PPS: [u8; 4] = [0x68, 0xEB, 0xE3, 0xCB];

    #[test]
    fn x264_1080p_record() {
        // Record from a real x264 1080p High@4.0 stream (shaka-packager output).
        let (sps, pps) = (SPS_1080P, PPS_1080P);
        let cfg = AvcConfig::parse(Bytes::from(make_record(&sps, &pps, 4))).unwrap();
        assert_eq!((cfg.width, cfg.height), (1920, 1080));
        assert_eq!(cfg.codec_string(), "avc1.640028");
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.frame_rate, Some(30.0));
        assert_eq!(&cfg.sps[0][..], &sps);
        assert_eq!(&cfg.pps[0][..], &pps);
    }

    #[test]
    fn cropping_and_timing_from_constructed_sps() {
        // 320x180 is coded as 20x12 macroblocks (320x192) with 6*2 = 12 lines cropped.
        let sps = make_sps(77, 31, 20, 12, Some((0, 0, 0, 6)), Some((1001, 60000)));
        let cfg = AvcConfig::parse(Bytes::from(make_record(&sps, &PPS, 4))).unwrap();
        assert_eq!((cfg.width, cfg.height), (320, 180));
        assert_eq!(cfg.codec_string(), "avc1.4d001f");
        let fps = cfg.frame_rate.unwrap();
        assert!((fps - 29.97).abs() < 0.01, "{fps}");
    }

    #[test]
    fn bad_records() {
        let sps = make_sps(66, 30, 4, 4, None, None);
        let good = make_record(&sps, &PPS, 4);
        assert!(AvcConfig::parse(Bytes::from(good.clone())).is_ok());
        for cut in 0..good.len() {
            assert!(
                AvcConfig::parse(Bytes::copy_from_slice(&good[..cut])).is_err(),
                "prefix of {cut} bytes accepted"
            );
        }
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(
            AvcConfig::parse(Bytes::from(v2)),
            Err(AvcError::UnsupportedVersion(2))
        );
        let swapped = make_record(&PPS, &sps, 4);
        assert!(matches!(
            AvcConfig::parse(Bytes::from(swapped)),
            Err(AvcError::WrongNalType { .. })
        ));
        // Zero-length SPS: must be an error, not a panic.
        let mut zero = vec![1, 0x42, 0, 30, 0xFF, 0xE1, 0, 0, 1, 0, 0];
        assert!(AvcConfig::parse(Bytes::from(zero.clone())).is_err());
        zero.truncate(8);
        assert!(AvcConfig::parse(Bytes::from(zero)).is_err());
    }

    #[test]
    fn idr_detection() {
        let au = [0, 0, 0, 2, 0x09, 0xF0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        assert!(contains_idr(&au, 4).unwrap());
        let au = [0, 0, 0, 2, 0x09, 0xF0, 0, 0, 0, 3, 0x41, 0x9A, 0x00];
        assert!(!contains_idr(&au, 4).unwrap());
        // Two-byte prefixes, with an empty NAL in between.
        let au = [0, 0, 0, 1, 0x65];
        assert!(contains_idr(&au, 2).unwrap());
        // Overrun.
        let au = [0, 0, 0, 9, 0x65];
        assert!(matches!(
            contains_idr(&au, 4),
            Err(AvcError::NalOverrun { len: 9, .. })
        ));
        assert!(contains_idr(&au, 3).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = AvcConfig::parse(Bytes::from(data.clone()));
            let _ = parse_sps(&data);
            let _ = contains_idr(&data, 4);
            let _ = contains_idr(&data, 1);
        }

        #[test]
        fn mutated_records_never_panic(idx in 0usize..40, val in any::<u8>()) {
            let sps = make_sps(100, 40, 120, 68, Some((0, 0, 0, 4)), Some((1, 50)));
            let mut rec = make_record(&sps, &PPS, 4);
            let i = idx % rec.len();
            rec[i] = val;
            let _ = AvcConfig::parse(Bytes::from(rec));
        }

        #[test]
        fn dimensions_roundtrip(
            mbs_w in 1u32..120, mbs_h in 1u32..68,
            crop_r in 0u32..8, crop_b in 0u32..8,
            ticks in 1u32..2000, scale in 1u32..200_000,
            length_size in prop_oneof![Just(1u8), Just(2u8), Just(4u8)],
        ) {
            let crop_r = crop_r.min(mbs_w * 8 - 1);
            let crop_b = crop_b.min(mbs_h * 8 - 1);
            let sps = make_sps(100, 51, mbs_w, mbs_h, Some((0, crop_r, 0, crop_b)), Some((ticks, scale)));
            let cfg = AvcConfig::parse(Bytes::from(make_record(&sps, &PPS, length_size))).unwrap();
            // 4:2:0 crop units are two luma samples in each direction.
            prop_assert_eq!(cfg.width, mbs_w * 16 - 2 * crop_r);
            prop_assert_eq!(cfg.height, mbs_h * 16 - 2 * crop_b);
            prop_assert_eq!(cfg.nal_length_size, length_size);
            let fps = f64::from(scale) / (2.0 * f64::from(ticks));
            if fps > 0.5 && fps <= 1000.0 {
                prop_assert_eq!(cfg.frame_rate, Some(fps));
            } else {
                prop_assert_eq!(cfg.frame_rate, None);
            }
        }
    }
}
