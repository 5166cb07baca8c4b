//! hvcC and SPS parsing against real x265 output, the codec string, the in-band record
//! builder, IRAP detection, and hostile input.

use super::*;
use crate::test_util::{
    hevc_record, make_hvcc, HEVC_HVCC_HEADER_180P10, HEVC_HVCC_HEADER_720P, HEVC_PPS_180P10,
    HEVC_PPS_720P, HEVC_SPS_180P10, HEVC_SPS_720P, HEVC_VPS_180P10, HEVC_VPS_720P,
};
use proptest::prelude::*;

#[test]
fn x265_720p_record() {
    let cfg = HevcConfig::parse(hevc_record()).unwrap();
    assert_eq!((cfg.width, cfg.height), (1280, 720));
    assert_eq!((cfg.sps.coded_width, cfg.sps.coded_height), (1280, 720));
    // By hand from the record header (which repeats the SPS's profile_tier_level):
    // profile_space 0 → no letter; general_profile_idc 1 (Main);
    // compatibility flags 0x60000000 = flags 1 and 2 → reversed 0x00000006 → "6";
    // tier 0 → L, general_level_idc 93 (level 3.1; ffprobe reports level=93);
    // constraint bytes 90 00 00 00 00 00 (progressive_source, frame_only) → ".90".
    assert_eq!(cfg.codec_string(), "hvc1.1.6.L93.90");
    assert_eq!(cfg.general, cfg.sps.profile_tier_level);
    assert_eq!(cfg.nal_length_size, 4);
    assert_eq!(
        (
            cfg.chroma_format_idc,
            cfg.bit_depth_luma,
            cfg.bit_depth_chroma
        ),
        (1, 8, 8)
    );
    assert_eq!(cfg.sps.chroma_format_idc, 1);
    assert_eq!(cfg.sps.max_sub_layers, 1);
    // x265's VUI timing (vui-timing-info): ffprobe r_frame_rate=30/1.
    assert_eq!(cfg.frame_rate, Some(30.0));
    assert_eq!(cfg.arrays.len(), 3);
    assert!(cfg.arrays.iter().all(|a| a.completeness));
    assert_eq!(
        &cfg.nal_units_of(NAL_VPS).next().unwrap()[..],
        &HEVC_VPS_720P
    );
    assert_eq!(
        &cfg.nal_units_of(NAL_SPS).next().unwrap()[..],
        &HEVC_SPS_720P
    );
    assert_eq!(
        &cfg.nal_units_of(NAL_PPS).next().unwrap()[..],
        &HEVC_PPS_720P
    );
}

#[test]
fn x265_main10_record_with_conformance_window() {
    let rec = make_hvcc(
        &HEVC_HVCC_HEADER_180P10,
        &[&HEVC_VPS_180P10, &HEVC_SPS_180P10, &HEVC_PPS_180P10],
    );
    let cfg = HevcConfig::parse(Bytes::from(rec)).unwrap();
    // Coded as 320x184 (8-sample CUs); conf_win_bottom_offset 2 in 4:2:0 crop units
    // of two lines gives 180 (ffprobe: coded_height=184, height=180).
    assert_eq!((cfg.sps.coded_width, cfg.sps.coded_height), (320, 184));
    assert_eq!((cfg.width, cfg.height), (320, 180));
    // Main 10: profile_idc 2, compatibility flag 2 only (0x20000000 → reversed 4),
    // level 60 (2.0), constraint byte 0x90.
    assert_eq!(cfg.codec_string(), "hvc1.2.4.L60.90");
    assert_eq!((cfg.bit_depth_luma, cfg.bit_depth_chroma), (10, 10));
    assert_eq!((cfg.sps.bit_depth_luma, cfg.sps.bit_depth_chroma), (10, 10));
    assert_eq!(cfg.frame_rate, Some(30.0));
}

#[test]
fn codec_strings() {
    let mut ptl = ProfileTierLevel {
        profile_space: 0,
        tier_flag: false,
        profile_idc: 1,
        compatibility_flags: 0x6000_0000,
        constraint_flags: [0xB0, 0, 0, 0, 0, 0],
        level_idc: 93,
    };
    // The ISO/IEC 14496-15 E.3 examples' shape.
    assert_eq!(ptl.codec_string("hvc1"), "hvc1.1.6.L93.B0");
    ptl.constraint_flags = [0; 6];
    assert_eq!(ptl.codec_string("hvc1"), "hvc1.1.6.L93");
    ptl.constraint_flags = [0xB0, 0, 0x12, 0, 0, 0];
    assert_eq!(ptl.codec_string("hvc1"), "hvc1.1.6.L93.B0.0.12");
    // "hev1.A4.41.H120.B0.12.34.56.78.90"-style: profile space 1 (A), profile 4,
    // compatibility 0x82000000 reversed = 0x41, High tier, all six bytes.
    let ptl = ProfileTierLevel {
        profile_space: 1,
        tier_flag: true,
        profile_idc: 4,
        compatibility_flags: 0x8200_0000,
        constraint_flags: [0xB0, 0x12, 0x34, 0x56, 0x78, 0x90],
        level_idc: 120,
    };
    assert_eq!(
        ptl.codec_string("hev1"),
        "hev1.A4.41.H120.B0.12.34.56.78.90"
    );
}

#[test]
fn record_built_from_parameter_sets_matches_ffmpegs() {
    let built =
        HevcConfig::from_parameter_sets(&HEVC_VPS_720P, &HEVC_SPS_720P, &HEVC_PPS_720P).unwrap();
    let ffmpeg = HevcConfig::parse(hevc_record()).unwrap();
    assert_eq!(built.codec_string(), ffmpeg.codec_string());
    assert_eq!((built.width, built.height), (1280, 720));
    assert_eq!(built.general, ffmpeg.general);
    assert_eq!(built.nal_length_size, 4);
    assert_eq!(built.num_temporal_layers, ffmpeg.num_temporal_layers);
    assert_eq!(built.temporal_id_nested, ffmpeg.temporal_id_nested);
    assert_eq!(built.arrays, ffmpeg.arrays);
    // Byte for byte except the fields an Annex B stream does not carry
    // (min_spatial_segmentation_idc, parallelismType).
    let (b, f) = (&built.raw[..], &ffmpeg.raw[..]);
    assert_eq!(b.len(), f.len());
    for (i, (x, y)) in b.iter().zip(f).enumerate() {
        if !(13..=15).contains(&i) {
            assert_eq!(x, y, "byte {i}");
        }
    }

    // Main 10 too.
    let built =
        HevcConfig::from_parameter_sets(&HEVC_VPS_180P10, &HEVC_SPS_180P10, &HEVC_PPS_180P10)
            .unwrap();
    assert_eq!(built.codec_string(), "hvc1.2.4.L60.90");
    assert_eq!(
        (built.bit_depth_luma, built.width, built.height),
        (10, 320, 180)
    );

    // Parameter sets in the wrong places, or empty, are errors.
    assert!(matches!(
        HevcConfig::from_parameter_sets(&HEVC_SPS_720P, &HEVC_SPS_720P, &HEVC_PPS_720P),
        Err(HevcError::WrongNalType {
            expected: NAL_VPS,
            actual: NAL_SPS
        })
    ));
    assert!(HevcConfig::from_parameter_sets(&HEVC_VPS_720P, &HEVC_SPS_720P, &[]).is_err());
    assert!(
        HevcConfig::from_parameter_sets(&HEVC_VPS_720P, &HEVC_PPS_720P, &HEVC_PPS_720P).is_err()
    );
}

#[test]
fn zeroed_record_header_falls_back_to_the_sps() {
    let mut header = HEVC_HVCC_HEADER_720P;
    header[1..13].fill(0);
    let rec = make_hvcc(&header, &[&HEVC_VPS_720P, &HEVC_SPS_720P, &HEVC_PPS_720P]);
    let cfg = HevcConfig::parse(Bytes::from(rec)).unwrap();
    assert_eq!(cfg.codec_string(), "hvc1.1.6.L93.90");
}

#[test]
fn sei_arrays_and_two_byte_lengths_are_kept() {
    let mut header = HEVC_HVCC_HEADER_720P;
    header[21] = (header[21] & !0x03) | 1; // lengthSizeMinusOne = 1
    header[22] = 4;
    let sei = [0x4E, 0x01, 0x05, 0x01, 0xAA, 0x80];
    let rec = make_hvcc(
        &header,
        &[&HEVC_VPS_720P, &HEVC_SPS_720P, &HEVC_PPS_720P, &sei],
    );
    let cfg = HevcConfig::parse(Bytes::from(rec)).unwrap();
    assert_eq!(cfg.nal_length_size, 2);
    assert_eq!(cfg.arrays.len(), 4);
    assert_eq!(cfg.arrays[3].nal_unit_type, 39);
    assert_eq!(&cfg.arrays[3].nal_units[0][..], &sei);
}

#[test]
fn bad_records() {
    let good = hevc_record().to_vec();
    for cut in 0..good.len() {
        assert!(
            HevcConfig::parse(Bytes::copy_from_slice(&good[..cut])).is_err(),
            "prefix of {cut} bytes accepted"
        );
    }
    let mut v0 = good.clone();
    v0[0] = 0;
    assert_eq!(
        HevcConfig::parse(Bytes::from(v0)),
        Err(HevcError::UnsupportedVersion(0))
    );
    let mut three = good.clone();
    three[21] = (three[21] & !0x03) | 2;
    assert_eq!(
        HevcConfig::parse(Bytes::from(three)),
        Err(HevcError::InvalidLengthSize(3))
    );
    // The SPS in the PPS array.
    let swapped = make_hvcc(
        &HEVC_HVCC_HEADER_720P,
        &[&HEVC_VPS_720P, &HEVC_SPS_720P, &HEVC_SPS_720P],
    );
    let mut swapped = swapped;
    let last_array = 23 + 5 + HEVC_VPS_720P.len() + 5 + HEVC_SPS_720P.len();
    swapped[last_array] = 0x80 | NAL_PPS;
    assert_eq!(
        HevcConfig::parse(Bytes::from(swapped)),
        Err(HevcError::WrongNalType {
            expected: NAL_PPS,
            actual: NAL_SPS
        })
    );
    // Missing arrays.
    let mut header = HEVC_HVCC_HEADER_720P;
    header[22] = 2;
    let no_pps = make_hvcc(&header, &[&HEVC_VPS_720P, &HEVC_SPS_720P]);
    assert_eq!(
        HevcConfig::parse(Bytes::from(no_pps)),
        Err(HevcError::Missing("PPS"))
    );
    let no_sps = make_hvcc(&header, &[&HEVC_VPS_720P, &HEVC_PPS_720P]);
    assert_eq!(
        HevcConfig::parse(Bytes::from(no_sps)),
        Err(HevcError::Missing("SPS"))
    );
    // A zero-length NAL unit in an array.
    let mut empty = HEVC_HVCC_HEADER_720P.to_vec();
    empty[22] = 1;
    empty.extend_from_slice(&[0xA0, 0, 1, 0, 0]);
    assert_eq!(
        HevcConfig::parse(Bytes::from(empty)),
        Err(HevcError::EmptyNal("VPS"))
    );
    // An SPS cut short inside profile_tier_level.
    assert!(matches!(
        parse_sps(&HEVC_SPS_720P[..10]),
        Err(HevcError::InvalidSps(_))
    ));
    // Garbage.
    assert!(HevcConfig::parse(Bytes::from_static(b"not a record at all, just text")).is_err());
    assert!(HevcConfig::parse(Bytes::new()).is_err());
}

#[test]
fn emulation_prevention_is_removed() {
    assert_eq!(
        rbsp(&[0x42, 0x01, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03]),
        vec![0, 0, 1, 0, 0]
    );
    assert_eq!(
        rbsp(&[0x42, 0x01, 0x00, 0x03, 0x00, 0x00, 0x03, 0x03]),
        vec![0, 3, 0, 0, 3]
    );
    assert_eq!(rbsp(&[0x42]), Vec::<u8>::new());
}

#[test]
fn irap_detection() {
    // IDR_W_RADL (19): header 0x26 0x01.
    let idr = [0, 0, 0, 3, 0x26, 0x01, 0xAF];
    assert!(contains_irap(&idr, 4).unwrap());
    // CRA (21) after a prefix SEI (39).
    let cra = [0, 0, 0, 3, 0x4E, 0x01, 0x05, 0, 0, 0, 3, 0x2A, 0x01, 0xAF];
    assert!(contains_irap(&cra, 4).unwrap());
    // TRAIL_R (1) only.
    let trail = [0, 3, 0x02, 0x01, 0xD0];
    assert!(!contains_irap(&trail, 2).unwrap());
    // Every IRAP type, and the types just outside the range.
    for t in 0..64u8 {
        assert_eq!(is_irap(t), (16..=23).contains(&t), "type {t}");
    }
    assert!(matches!(
        contains_irap(&[0, 0, 0, 9, 0x26, 0x01], 4),
        Err(HevcError::NalOverrun { len: 9, .. })
    ));
    assert_eq!(contains_irap(&idr, 3), Err(HevcError::InvalidLengthSize(3)));
    // A one-byte NAL unit has no type.
    assert!(!contains_irap(&[0, 0, 0, 1, 0x26], 4).unwrap());
}

/// A minimal bit writer for constructed SPSs.
struct Writer {
    bits: Vec<bool>,
}

impl Writer {
    fn u(&mut self, n: u32, v: u64) {
        for i in (0..n).rev() {
            self.bits.push(i < 64 && (v >> i) & 1 == 1);
        }
    }
    fn ue(&mut self, v: u32) {
        let v = u64::from(v) + 1;
        let len = 64 - v.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, v);
    }
    fn nal(mut self) -> Vec<u8> {
        self.bits.push(true); // rbsp_stop_one_bit
        while !self.bits.len().is_multiple_of(8) {
            self.bits.push(false);
        }
        let bytes: Vec<u8> = self
            .bits
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |a, &b| a << 1 | u8::from(b)))
            .collect();
        // Header (type 33) and emulation prevention.
        let mut out = vec![0x42, 0x01];
        let mut zeros = 0;
        for b in bytes {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }
}

/// An SPS with the given size, chroma format and conformance window, two
/// sub-layers (exercising the sub-layer part of profile_tier_level), a
/// scaling list, an inter-predicted reference picture set and VUI timing.
fn make_sps(chroma: u32, w: u32, h: u32, crop: [u32; 4], timing: Option<(u32, u32)>) -> Vec<u8> {
    let mut b = Writer { bits: vec![] };
    b.u(4, 0); // vps id
    b.u(3, 1); // max_sub_layers_minus1
    b.u(1, 1); // temporal_id_nesting
               // profile_tier_level: Main, L120 High tier.
    b.u(2, 0);
    b.u(1, 1);
    b.u(5, 1);
    b.u(32, 0x6000_0000);
    b.u(48, 0xB000_0000_0000);
    b.u(8, 120);
    b.u(1, 1); // sub_layer_profile_present_flag[0]
    b.u(1, 1); // sub_layer_level_present_flag[0]
    for _ in 1..8 {
        b.u(2, 0);
    }
    b.u(88, 0);
    b.u(8, 0);
    b.ue(0); // sps id
    b.ue(chroma);
    if chroma == 3 {
        b.u(1, 0);
    }
    b.ue(w);
    b.ue(h);
    let cropped = crop.iter().any(|&c| c > 0);
    b.u(1, u64::from(cropped));
    if cropped {
        for c in crop {
            b.ue(c);
        }
    }
    b.ue(0); // bit depths
    b.ue(0);
    b.ue(4); // log2_max_pic_order_cnt_lsb_minus4
    b.u(1, 1); // sub_layer_ordering_info for all
    for _ in 0..2 {
        b.ue(4);
        b.ue(2);
        b.ue(0);
    }
    for _ in 0..6 {
        b.ue(1);
    }
    b.u(1, 1); // scaling_list_enabled_flag
    b.u(1, 1); // sps_scaling_list_data_present_flag
    for size_id in 0..4 {
        let step = if size_id == 3 { 3 } else { 1 };
        for matrix in (0..6).step_by(step) {
            if matrix == 0 {
                b.u(1, 1); // explicit coefficients
                let coefs = 64.min(1 << (4 + (size_id << 1)));
                if size_id > 1 {
                    b.ue(0); // se(0)
                }
                for _ in 0..coefs {
                    b.ue(0);
                }
            } else {
                b.u(1, 0);
                b.ue(0);
            }
        }
    }
    b.u(1, 0); // amp
    b.u(1, 1); // sao
    b.u(1, 0); // pcm
    b.ue(2); // num_short_term_ref_pic_sets
             // Set 0: two negative pictures.
    b.ue(2);
    b.ue(0);
    b.ue(0);
    b.u(1, 1);
    b.ue(1);
    b.u(1, 1);
    // Set 1: predicted from set 0 with deltaRps = -1: flags for 3 entries.
    b.u(1, 1); // inter_ref_pic_set_prediction_flag
    b.u(1, 1); // delta_rps_sign
    b.ue(0); // abs_delta_rps_minus1
    for _ in 0..3 {
        b.u(1, 1);
    }
    b.u(1, 0); // long_term_ref_pics_present_flag
    b.u(1, 1); // temporal mvp
    b.u(1, 1); // strong intra smoothing
    b.u(1, 1); // vui_parameters_present_flag
    b.u(1, 1); // aspect_ratio_info_present_flag
    b.u(8, 255);
    b.u(16, 1);
    b.u(16, 1);
    b.u(1, 0); // overscan
    b.u(1, 1); // video_signal_type
    b.u(3, 5);
    b.u(1, 0);
    b.u(1, 1);
    b.u(24, 0x01_01_01);
    b.u(1, 0); // chroma_loc
    b.u(3, 0);
    b.u(1, 1); // default display window
    for _ in 0..4 {
        b.ue(0);
    }
    match timing {
        Some((n, s)) => {
            b.u(1, 1);
            b.u(32, u64::from(n));
            b.u(32, u64::from(s));
        }
        None => b.u(1, 0),
    }
    b.nal()
}

#[test]
fn constructed_sps_fields() {
    let sps = make_sps(1, 1920, 1088, [0, 0, 0, 4], Some((1001, 60000)));
    let parsed = parse_sps(&sps).unwrap();
    assert_eq!((parsed.width, parsed.height), (1920, 1080));
    assert_eq!(parsed.max_sub_layers, 2);
    assert_eq!(
        parsed.profile_tier_level.codec_string("hvc1"),
        "hvc1.1.6.H120.B0"
    );
    let fps = parsed.frame_rate.unwrap();
    assert!((fps - 59.94).abs() < 0.01, "{fps}");
    // 4:4:4 crops in single samples; 4:2:2 halves horizontally only.
    let p = parse_sps(&make_sps(3, 100, 100, [1, 2, 3, 4], None)).unwrap();
    assert_eq!((p.width, p.height, p.frame_rate), (97, 93, None));
    let p = parse_sps(&make_sps(2, 100, 100, [1, 2, 3, 4], None)).unwrap();
    assert_eq!((p.width, p.height), (94, 93));
    let p = parse_sps(&make_sps(0, 64, 64, [0; 4], Some((1, 25)))).unwrap();
    assert_eq!((p.chroma_format_idc, p.frame_rate), (0, Some(25.0)));
    // A window as large as the picture is an error.
    assert!(matches!(
        parse_sps(&make_sps(1, 64, 64, [16, 16, 0, 0], None)),
        Err(HevcError::InvalidSps(_))
    ));
    // Placeholder timing is not a frame rate.
    let p = parse_sps(&make_sps(1, 64, 64, [0; 4], Some((1, 90_000_000)))).unwrap();
    assert_eq!(p.frame_rate, None);
}

proptest! {
    #[test]
    fn arbitrary_records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = HevcConfig::parse(Bytes::from(data.clone()));
        let _ = parse_sps(&data);
        let mut sps = vec![0x42, 0x01];
        sps.extend_from_slice(&data);
        let _ = parse_sps(&sps);
        let _ = contains_irap(&data, 4);
        let _ = contains_irap(&data, 1);
        let _ = HevcConfig::from_parameter_sets(&HEVC_VPS_720P, &sps, &HEVC_PPS_720P);
    }

    #[test]
    fn mutated_records_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut rec = hevc_record().to_vec();
        for (idx, val) in edits {
            let i = idx % rec.len();
            rec[i] = val;
        }
        let _ = HevcConfig::parse(Bytes::from(rec));
    }

    #[test]
    fn mutated_sps_never_panics(idx in 2usize..43, val in any::<u8>()) {
        let mut sps = HEVC_SPS_720P.to_vec();
        sps[idx] = val;
        if let Ok(p) = parse_sps(&sps) {
            prop_assert!(p.width > 0 && p.width <= p.coded_width);
            prop_assert!(p.height > 0 && p.height <= p.coded_height);
        }
    }

    #[test]
    fn dimensions_roundtrip(
        w in 1u32..600, h in 1u32..400,
        crop in proptest::array::uniform4(0u32..8),
        chroma in 0u32..4,
    ) {
        let (sw, sh) = match chroma { 1 => (2, 2), 2 => (2, 1), _ => (1, 1) };
        let (w, h) = (w * sw, h * sh);
        let sps = make_sps(chroma, w, h, crop, Some((1, 30)));
        let [l, r, t, b] = crop;
        match parse_sps(&sps) {
            Ok(p) => {
                prop_assert_eq!(p.width, w - sw * (l + r));
                prop_assert_eq!(p.height, h - sh * (t + b));
                prop_assert_eq!(p.frame_rate, Some(30.0));
            }
            Err(_) => prop_assert!(sw * (l + r) >= w || sh * (t + b) >= h),
        }
    }
}
