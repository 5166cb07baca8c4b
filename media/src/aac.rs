//! AAC configuration: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) from the FLV AAC sequence header.

use bytes::Bytes;
use thiserror::Error;

/// Why an AudioSpecificConfig was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AacError {
    #[error("AudioSpecificConfig truncated")]
    Truncated,
    #[error("audio object type 0 is invalid")]
    NullObjectType,
    #[error("reserved sampling frequency index {0}")]
    ReservedFrequencyIndex(u8),
    #[error("explicit sampling frequency of 0 Hz")]
    ZeroFrequency,
    #[error("channel configuration {0} is not supported")]
    UnsupportedChannelConfig(u8),
}

/// Sampling frequencies by `samplingFrequencyIndex` (Table 1.18); 13 and 14 are reserved.
const FREQUENCIES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// A parsed AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The config exactly as received (it becomes the DecoderSpecificInfo of the esds box).
    pub raw: Bytes,
    /// The signalled audio object type (2 = AAC-LC, 5 = SBR/HE-AAC, 29 = PS/HE-AACv2).
    pub object_type: u8,
    /// `samplingFrequencyIndex`, or `None` when the frequency is explicit.
    pub frequency_index: Option<u8>,
    /// Core sampling rate; one AAC frame is 1024 samples at this rate.
    pub sample_rate: u32,
    /// Output rate after SBR for explicitly signalled HE-AAC.
    pub extension_sample_rate: Option<u32>,
    /// `channelConfiguration` (1..=7, 11..=14).
    pub channel_config: u8,
    /// Number of output channels implied by `channel_config`.
    pub channels: u16,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Result<u32, AacError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8).ok_or(AacError::Truncated)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(v)
    }

    fn object_type(&mut self) -> Result<u8, AacError> {
        let aot = self.read(5)? as u8;
        if aot == 31 {
            // Escape: 32 + 6 more bits.
            Ok(32 + self.read(6)? as u8)
        } else {
            Ok(aot)
        }
    }

    fn frequency(&mut self) -> Result<(Option<u8>, u32), AacError> {
        let index = self.read(4)? as u8;
        match index {
            15 => match self.read(24)? {
                0 => Err(AacError::ZeroFrequency),
                f => Ok((None, f)),
            },
            i => FREQUENCIES
                .get(usize::from(i))
                .map(|&f| (Some(i), f))
                .ok_or(AacError::ReservedFrequencyIndex(i)),
        }
    }
}

fn channels_for(config: u8) -> Option<u16> {
    Some(match config {
        1..=6 => u16::from(config),
        7 => 8,
        11 => 7,
        12 => 8,
        13 => 24,
        14 => 8,
        // 0 means "defined in a program_config_element", which RTMP encoders do not emit
        // and which would need a full PCE parser to know the channel count.
        _ => return None,
    })
}

impl AacConfig {
    /// Parse an AudioSpecificConfig.
    pub fn parse(raw: Bytes) -> Result<AacConfig, AacError> {
        let mut bits = Bits { data: &raw, pos: 0 };
        let object_type = bits.object_type()?;
        if object_type == 0 {
            return Err(AacError::NullObjectType);
        }
        let (frequency_index, sample_rate) = bits.frequency()?;
        let channel_config = bits.read(4)? as u8;
        let channels = channels_for(channel_config)
            .ok_or(AacError::UnsupportedChannelConfig(channel_config))?;
        let extension_sample_rate = if object_type == 5 || object_type == 29 {
            // Explicit SBR signalling: extensionSamplingFrequency then the core object type.
            let (_, ext) = bits.frequency()?;
            let _core = bits.object_type()?;
            Some(ext)
        } else {
            None
        };
        Ok(AacConfig {
            raw,
            object_type,
            frequency_index,
            sample_rate,
            extension_sample_rate,
            channel_config,
            channels,
        })
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(v: &[u8]) -> Result<AacConfig, AacError> {
        AacConfig::parse(Bytes::copy_from_slice(v))
    }

    /// Build an ASC bit by bit: (value, bit count) pairs.
    fn build(fields: &[(u32, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut acc = 0u64;
        let mut n = 0usize;
        for &(v, bits) in fields {
            for i in (0..bits).rev() {
                acc = (acc << 1) | u64::from((v >> i) & 1);
                n += 1;
                if n == 8 {
                    out.push(acc as u8);
                    acc = 0;
                    n = 0;
                }
            }
        }
        if n > 0 {
            out.push((acc << (8 - n)) as u8);
        }
        out
    }

    #[test]
    fn lc_48k_stereo() {
        let c = parse(&[0x11, 0x90]).unwrap();
        assert_eq!(c.object_type, 2);
        assert_eq!(c.sample_rate, 48000);
        assert_eq!(c.frequency_index, Some(3));
        assert_eq!((c.channel_config, c.channels), (2, 2));
        assert_eq!(c.codec_string(), "mp4a.40.2");
        assert_eq!(&c.raw[..], &[0x11, 0x90]);
    }

    #[test]
    fn lc_44k_mono_and_he_aac() {
        let c = parse(&[0x12, 0x08]).unwrap();
        assert_eq!((c.sample_rate, c.channels), (44100, 1));
        // HE-AAC: AOT 5, 24 kHz core, stereo, extension 48 kHz, core AOT 2.
        let he = build(&[(5, 5), (6, 4), (2, 4), (3, 4), (2, 5)]);
        let c = parse(&he).unwrap();
        assert_eq!(c.codec_string(), "mp4a.40.5");
        assert_eq!(c.sample_rate, 24000);
        assert_eq!(c.extension_sample_rate, Some(48000));
    }

    #[test]
    fn escaped_object_type_and_explicit_frequency() {
        // AOT 31 escape + 10 => 42 (USAC), explicit 37800 Hz, 5.1 (6).
        let v = build(&[(31, 5), (10, 6), (15, 4), (37800, 24), (6, 4)]);
        let c = parse(&v).unwrap();
        assert_eq!(c.object_type, 42);
        assert_eq!(c.frequency_index, None);
        assert_eq!(c.sample_rate, 37800);
        assert_eq!(c.channels, 6);
    }

    #[test]
    fn invalid_configs() {
        assert_eq!(parse(&[]), Err(AacError::Truncated));
        assert_eq!(parse(&[0x11]), Err(AacError::Truncated));
        assert_eq!(parse(&[0x00, 0x10]), Err(AacError::NullObjectType));
        assert_eq!(
            parse(&build(&[(2, 5), (13, 4), (2, 4)])),
            Err(AacError::ReservedFrequencyIndex(13))
        );
        assert_eq!(
            parse(&build(&[(2, 5), (15, 4), (0, 24), (2, 4)])),
            Err(AacError::ZeroFrequency)
        );
        assert_eq!(
            parse(&build(&[(2, 5), (3, 4), (0, 4)])),
            Err(AacError::UnsupportedChannelConfig(0))
        );
        assert_eq!(
            parse(&build(&[(2, 5), (3, 4), (9, 4)])),
            Err(AacError::UnsupportedChannelConfig(9))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse(&data);
        }

        #[test]
        fn constructed_configs_roundtrip(
            aot in prop_oneof![1u32..=30, 32u32..=63],
            index in 0u32..13,
            channel_config in prop_oneof![1u32..=7, 11u32..=14],
        ) {
            let mut fields = vec![];
            if aot >= 32 { fields.push((31, 5)); fields.push((aot - 32, 6)); } else { fields.push((aot, 5)); }
            fields.push((index, 4));
            fields.push((channel_config, 4));
            if aot == 5 || aot == 29 { fields.push((3, 4)); fields.push((2, 5)); }
            let c = parse(&build(&fields)).unwrap();
            prop_assert_eq!(u32::from(c.object_type), aot);
            prop_assert_eq!(c.sample_rate, FREQUENCIES[index as usize]);
            prop_assert_eq!(u32::from(c.channel_config), channel_config);
            prop_assert_eq!(c.codec_string(), format!("mp4a.40.{aot}"));
        }
    }
}
