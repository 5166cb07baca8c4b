//! CMAF header (init segment): ftyp + moov with one track and mvex/trex.

use bytes::Bytes;
use mp4_atom::{
    Audio, Avc1, Avcc, AvccExt, Codec, Dinf, Dref, Encode, Ftyp, Hdlr, Hvc1, HvcCArray, Hvcc, Mdhd,
    Mdia, Minf, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tkhd, Trak, Trex, Url, Visual,
    Vmhd,
};

use super::CmafError;
use crate::aac::AacConfig;
use crate::avc::AvcConfig;
use crate::hevc::HevcConfig;
use crate::video::VideoConfig;

/// Video media timescale: 90 kHz, the MPEG convention, exact for every common frame rate
/// and for RTMP's millisecond timestamps.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Track ids strom uses. Each track is its own CMAF stream, but distinct ids let the
/// init segments be combined into one multi-track file.
pub const VIDEO_TRACK_ID: u32 = 1;
pub const AUDIO_TRACK_ID: u32 = 2;

/// What an init segment describes.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackConfig {
    Video {
        track_id: u32,
        /// H.264 or H.265 configuration.
        config: VideoConfig,
        timescale: u32,
    },
    Audio {
        track_id: u32,
        aac: AacConfig,
        /// Equal to the sample rate so every AAC frame lasts exactly 1024 ticks.
        timescale: u32,
    },
}

impl TrackConfig {
    /// A video track with id [`VIDEO_TRACK_ID`] and the 90 kHz timescale
    /// (takes an [`AvcConfig`], a [`HevcConfig`] or a [`VideoConfig`]).
    pub fn video(config: impl Into<VideoConfig>) -> Self {
        Self::Video {
            track_id: VIDEO_TRACK_ID,
            config: config.into(),
            timescale: VIDEO_TIMESCALE,
        }
    }

    /// An audio track with id [`AUDIO_TRACK_ID`] and timescale = sample rate.
    pub fn audio(aac: AacConfig) -> Self {
        let timescale = aac.sample_rate;
        Self::Audio {
            track_id: AUDIO_TRACK_ID,
            aac,
            timescale,
        }
    }

    pub fn track_id(&self) -> u32 {
        match self {
            Self::Video { track_id, .. } | Self::Audio { track_id, .. } => *track_id,
        }
    }

    pub fn timescale(&self) -> u32 {
        match self {
            Self::Video { timescale, .. } | Self::Audio { timescale, .. } => *timescale,
        }
    }
}

fn avcc_box(avc: &AvcConfig) -> Avcc {
    Avcc {
        configuration_version: 1,
        avc_profile_indication: avc.profile_idc,
        profile_compatibility: avc.constraint_flags,
        avc_level_indication: avc.level_idc,
        length_size: avc.nal_length_size,
        sequence_parameter_sets: avc.sps.iter().map(|s| s.to_vec()).collect(),
        picture_parameter_sets: avc.pps.iter().map(|p| p.to_vec()).collect(),
        ext: avc.extension.as_ref().map(|e| AvccExt {
            chroma_format: e.chroma_format,
            bit_depth_luma: e.bit_depth_luma,
            bit_depth_chroma: e.bit_depth_chroma,
            sequence_parameter_sets_ext: e.sps_ext.iter().map(|s| s.to_vec()).collect(),
        }),
    }
}

/// The hvcC box, rebuilt field by field from the parsed record (mp4-atom writes the
/// reserved bits itself), so it says exactly what the catalog's codec string says.
fn hvcc_box(hevc: &HevcConfig) -> Hvcc {
    let g = &hevc.general;
    Hvcc {
        configuration_version: 1,
        general_profile_space: g.profile_space,
        general_tier_flag: g.tier_flag,
        general_profile_idc: g.profile_idc,
        general_profile_compatibility_flags: g.compatibility_flags.to_be_bytes(),
        general_constraint_indicator_flags: g.constraint_flags,
        general_level_idc: g.level_idc,
        min_spatial_segmentation_idc: hevc.min_spatial_segmentation_idc,
        parallelism_type: hevc.parallelism_type,
        chroma_format_idc: hevc.chroma_format_idc,
        bit_depth_luma_minus8: hevc.bit_depth_luma - 8,
        bit_depth_chroma_minus8: hevc.bit_depth_chroma - 8,
        avg_frame_rate: hevc.avg_frame_rate,
        constant_frame_rate: hevc.constant_frame_rate,
        num_temporal_layers: hevc.num_temporal_layers,
        temporal_id_nested: hevc.temporal_id_nested,
        length_size_minus_one: hevc.nal_length_size - 1,
        arrays: hevc
            .arrays
            .iter()
            .map(|a| HvcCArray {
                completeness: a.completeness,
                nal_unit_type: a.nal_unit_type,
                nalus: a.nal_units.iter().map(|n| n.to_vec()).collect(),
            })
            .collect(),
    }
}

fn video_sample_entry(config: &VideoConfig, visual: Visual) -> Codec {
    match config {
        VideoConfig::Avc(avc) => Codec::from(Avc1 {
            visual,
            avcc: avcc_box(avc),
            ..Default::default()
        }),
        VideoConfig::Hevc(hevc) => Codec::from(Hvc1 {
            visual,
            hvcc: hvcc_box(hevc),
            ..Default::default()
        }),
    }
}

fn esds_box(track_id: u32, aac: &AacConfig) -> mp4_atom::Esds {
    use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
    mp4_atom::Esds {
        es_desc: EsDescriptor {
            // ES_ID is 16 bits; 0 is allowed ("not used") for a single-stream file.
            es_id: u16::try_from(track_id).unwrap_or(0),
            dec_config: DecoderConfig {
                object_type_indication: 0x40, // MPEG-4 Audio
                stream_type: 0x05,            // AudioStream
                up_stream: 0,
                buffer_size_db: Default::default(),
                max_bitrate: 0,
                avg_bitrate: 0,
                dec_specific: Some(DecoderSpecific {
                    profile: aac.object_type,
                    freq_index: aac.frequency_index.unwrap_or(15),
                    chan_conf: aac.channel_config,
                    raw: aac.raw.to_vec(),
                }),
            },
            sl_config: SLConfig::default(),
            ..Default::default()
        },
    }
}

/// Write the CMAF header for one track.
pub fn init_segment(config: &TrackConfig) -> Result<Bytes, CmafError> {
    let track_id = config.track_id();
    let timescale = config.timescale();
    let (handler, name, codec, width, height, vmhd, smhd, volume) = match config {
        TrackConfig::Video { config, .. } => {
            let w =
                u16::try_from(config.width()).map_err(|_| CmafError::TooLarge("video width"))?;
            let h =
                u16::try_from(config.height()).map_err(|_| CmafError::TooLarge("video height"))?;
            let visual = Visual {
                data_reference_index: 1,
                width: w,
                height: h,
                ..Default::default()
            };
            (
                b"vide",
                "VideoHandler",
                video_sample_entry(config, visual),
                w,
                h,
                Some(Vmhd::default()),
                None,
                0,
            )
        }
        TrackConfig::Audio { aac, .. } => {
            let mp4a = Mp4a {
                audio: Audio {
                    data_reference_index: 1,
                    channel_count: aac.channels,
                    sample_size: 16,
                    // 16.16 fixed point: rates above 65535 Hz cannot be represented and
                    // are written as 0; decoders take the rate from the AudioSpecificConfig.
                    sample_rate: u16::try_from(aac.sample_rate).unwrap_or(0).into(),
                },
                esds: esds_box(track_id, aac),
                btrt: None,
                taic: None,
            };
            (
                b"soun",
                "SoundHandler",
                Codec::from(mp4a),
                0,
                0,
                None,
                Some(Smhd::default()),
                1,
            )
        }
    };

    // CMAF (ISO/IEC 23000-19) requires 'cmfc' among the compatible brands; 'iso6' is the
    // ISOBMFF edition with tfdt v1 / trun v1 signed offsets; 'mp41' keeps older demuxers happy.
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: track_id.saturating_add(1),
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id,
                default_sample_description_index: 1,
                ..Default::default()
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id,
                enabled: true,
                in_movie: true,
                volume: volume.into(),
                width: width.into(),
                height: height.into(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: handler.into(),
                    name: name.into(),
                },
                minf: Minf {
                    vmhd,
                    smhd,
                    dinf: Dinf {
                        dref: Dref {
                            entries: vec![Url::default().into()],
                        },
                    },
                    stbl: Stbl {
                        stsd: Stsd {
                            codecs: vec![codec],
                        },
                        stco: Some(Stco::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    };

    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}
