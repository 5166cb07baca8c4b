//! The video configurations strom packages, behind one type: H.264 (`avc1`) and H.265
//! (`hvc1`). The packager, the init segment writer and the catalog work on
//! [`VideoConfig`] and do not otherwise care which codec a broadcast uses.

use bytes::Bytes;

use crate::avc::{contains_idr, AvcConfig, AvcError};
use crate::hevc::{contains_irap, HevcConfig, HevcError};

/// A video codec strom packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264, sample entry `avc1`.
    Avc,
    /// H.265, sample entry `hvc1`.
    Hevc,
}

/// The decoder configuration of a video track.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoConfig {
    Avc(AvcConfig),
    Hevc(HevcConfig),
}

/// Why an access unit could not be inspected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VideoError {
    #[error(transparent)]
    Avc(#[from] AvcError),
    #[error(transparent)]
    Hevc(#[from] HevcError),
}

impl From<AvcConfig> for VideoConfig {
    fn from(c: AvcConfig) -> Self {
        VideoConfig::Avc(c)
    }
}

impl From<HevcConfig> for VideoConfig {
    fn from(c: HevcConfig) -> Self {
        VideoConfig::Hevc(c)
    }
}

impl VideoConfig {
    pub fn codec(&self) -> VideoCodec {
        match self {
            Self::Avc(_) => VideoCodec::Avc,
            Self::Hevc(_) => VideoCodec::Hevc,
        }
    }

    /// The configuration record exactly as received (avcC or hvcC body).
    pub fn raw(&self) -> &Bytes {
        match self {
            Self::Avc(c) => &c.raw,
            Self::Hevc(c) => &c.raw,
        }
    }

    /// RFC 6381 codec string (`avc1.640028`, `hvc1.1.6.L93.90`).
    pub fn codec_string(&self) -> String {
        match self {
            Self::Avc(c) => c.codec_string(),
            Self::Hevc(c) => c.codec_string(),
        }
    }

    /// Display width after cropping.
    pub fn width(&self) -> u32 {
        match self {
            Self::Avc(c) => c.width,
            Self::Hevc(c) => c.width,
        }
    }

    /// Display height after cropping.
    pub fn height(&self) -> u32 {
        match self {
            Self::Avc(c) => c.height,
            Self::Hevc(c) => c.height,
        }
    }

    /// Frames per second, when the bitstream says.
    pub fn frame_rate(&self) -> Option<f64> {
        match self {
            Self::Avc(c) => c.frame_rate,
            Self::Hevc(c) => c.frame_rate,
        }
    }

    /// Bytes in each NAL length prefix of access units.
    pub fn nal_length_size(&self) -> u8 {
        match self {
            Self::Avc(c) => c.nal_length_size,
            Self::Hevc(c) => c.nal_length_size,
        }
    }

    /// Whether a length-prefixed access unit of this stream can start decoding:
    /// an IDR slice for H.264, an IRAP picture for H.265.
    pub fn is_random_access(&self, access_unit: &[u8]) -> Result<bool, VideoError> {
        Ok(match self {
            Self::Avc(c) => contains_idr(access_unit, c.nal_length_size)?,
            Self::Hevc(c) => contains_irap(access_unit, c.nal_length_size)?,
        })
    }
}
