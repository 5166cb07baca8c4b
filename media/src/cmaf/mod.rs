//! CMAF packaging with mp4-atom: the init segment (ftyp + moov) and one chunk per
//! object (prft + moof + mdat), plus parsers edges use to read timing back out.
//!
//! Every strom track is its own single-track CMAF stream, so each init segment holds
//! exactly one trak and each chunk exactly one traf.

mod chunk;
mod combine;
mod init;
mod parse;
#[cfg(test)]
mod tests;

pub use chunk::{write_chunk, ProducerTime, Sample, PRFT_FLAGS};
pub use combine::combine_init;
pub use init::{init_segment, TrackConfig, AUDIO_TRACK_ID, VIDEO_TIMESCALE, VIDEO_TRACK_ID};
pub use parse::{parse_chunk, parse_init, ChunkInfo, InitInfo, PrftInfo, SampleInfo, TrackKind};

use thiserror::Error;

/// Why a CMAF box could not be written or read.
#[derive(Debug, Error)]
pub enum CmafError {
    #[error("mp4: {0}")]
    Mp4(#[from] mp4_atom::Error),
    #[error("{0} does not fit its field")]
    TooLarge(&'static str),
    #[error("a chunk needs at least one sample")]
    NoSamples,
    #[error("missing box {0}")]
    MissingBox(&'static str),
    #[error("unexpected layout: {0}")]
    Layout(&'static str),
    #[error("sample data at {offset}..{end} lies outside mdat payload {mdat_start}..{mdat_end}")]
    DataOutsideMdat {
        offset: u64,
        end: u64,
        mdat_start: u64,
        mdat_end: u64,
    },
    #[error("unsupported sample entry {0}")]
    UnsupportedCodec(String),
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Unix time in microseconds → 64-bit NTP timestamp (32.32 fixed point seconds since 1900).
///
/// NTP seconds wrap in February 2036 (era 1); the seconds field is taken modulo 2^32,
/// which [`ntp_to_unix_micros`] undoes.
pub fn unix_micros_to_ntp(unix_micros: u64) -> u64 {
    let secs = unix_micros / 1_000_000;
    let micros = unix_micros % 1_000_000;
    let ntp_secs = (secs + NTP_UNIX_OFFSET_SECS) & 0xFFFF_FFFF;
    // Round to the nearest 2^-32 s so the conversion back is exact.
    let frac = ((micros << 32) + 500_000) / 1_000_000;
    (ntp_secs << 32) | frac
}

/// 64-bit NTP timestamp → Unix time in microseconds.
///
/// Per RFC 4330 section 3, an NTP seconds value with the top bit clear is taken to be
/// in era 1 (2036..2104) rather than 1900..1968, so strom's clock keeps working past 2036.
pub fn ntp_to_unix_micros(ntp: u64) -> u64 {
    let ntp_secs = ntp >> 32;
    let frac = ntp & 0xFFFF_FFFF;
    let secs_since_1900 = if ntp_secs & 0x8000_0000 == 0 {
        ntp_secs + (1 << 32)
    } else {
        ntp_secs
    };
    let unix_secs = secs_since_1900.saturating_sub(NTP_UNIX_OFFSET_SECS);
    let micros = (frac * 1_000_000 + (1 << 31)) >> 32;
    unix_secs * 1_000_000 + micros
}

#[cfg(test)]
mod ntp_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ntp_known_values() {
        // 2024-01-01T00:00:00.5Z
        let unix = 1_704_067_200_500_000;
        let ntp = unix_micros_to_ntp(unix);
        assert_eq!(ntp >> 32, 1_704_067_200 + NTP_UNIX_OFFSET_SECS);
        assert_eq!(ntp & 0xFFFF_FFFF, 1 << 31);
        assert_eq!(ntp_to_unix_micros(ntp), unix);
        // 2040 is in NTP era 1.
        let unix_2040 = 2_208_988_800_000_000;
        let ntp = unix_micros_to_ntp(unix_2040);
        assert!(ntp >> 32 < 0x8000_0000);
        assert_eq!(ntp_to_unix_micros(ntp), unix_2040);
    }

    proptest! {
        #[test]
        fn ntp_roundtrip(unix in 0u64..4_000_000_000_000_000) {
            prop_assert_eq!(ntp_to_unix_micros(unix_micros_to_ntp(unix)), unix);
        }
    }
}
