#![warn(unreachable_pub)]
//! strom media model and containers: FLV tag bodies (including Enhanced RTMP `hvc1`) or
//! MPEG-TS in, H.264/H.265/AAC configuration,
//! CMAF init segments and chunks out, the MSF-style catalog, and the sans-IO
//! [`Packager`] that turns an RTMP broadcast into groups and objects.

pub mod aac;
pub mod avc;
pub mod catalog;
pub mod cmaf;
pub mod flv;
pub mod hevc;
pub mod packager;
#[cfg(test)]
mod test_util;
pub mod ts;
pub mod video;

pub use aac::{AacConfig, AacError};
pub use avc::{contains_idr, AvcConfig, AvcError};
pub use catalog::{Catalog, CatalogError, CatalogTrack};
pub use cmaf::{
    init_segment, ntp_to_unix_micros, parse_chunk, parse_init, unix_micros_to_ntp, write_chunk,
    ChunkInfo, CmafError, InitInfo, ProducerTime, Sample, TrackConfig,
};
pub use flv::{AudioTag, FlvError, FlvReader, VideoTag};
pub use hevc::{contains_irap, HevcConfig, HevcError};
pub use packager::{Output, Packager, PackagerError, PackagerStats, Resume, TrackName};
pub use ts::{TsError, TsIngest, TsStats, TsTag};
pub use video::{VideoCodec, VideoConfig, VideoError};
