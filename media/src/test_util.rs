//! Shared fixtures for unit tests.

use bytes::Bytes;

use crate::aac::AacConfig;
use crate::avc::AvcConfig;

/// SPS of a real x264 1920x1080 High@4.0 30 fps stream.
pub const SPS_1080P: [u8; 26] = [
    0x67, 0x64, 0x00, 0x28, 0xAC, 0xD9, 0x40, 0x78, 0x02, 0x27, 0xE5, 0x84, 0x00, 0x00, 0x03, 0x00,
    0x04, 0x00, 0x00, 0x03, 0x00, 0xF0, 0x3C, 0x60, 0xC6, 0x58,
];
pub const PPS_1080P: [u8; 5] = [0x68, 0xEB, 0xEC, 0xB2, 0x2C];

/// An AVCDecoderConfigurationRecord around one SPS and one PPS.
pub fn make_record(sps: &[u8], pps: &[u8], length_size: u8) -> Vec<u8> {
    let mut r = vec![1, sps[1], sps[2], sps[3], 0xFC | (length_size - 1), 0xE1];
    r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    r.extend_from_slice(sps);
    r.push(1);
    r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    r.extend_from_slice(pps);
    r
}

pub fn avc_record() -> Bytes {
    Bytes::from(make_record(&SPS_1080P, &PPS_1080P, 4))
}

pub fn avc_config() -> AvcConfig {
    AvcConfig::parse(avc_record()).expect("fixture record parses")
}

/// AAC-LC, 48 kHz, stereo.
pub fn aac_config() -> AacConfig {
    AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).expect("fixture ASC parses")
}
