//! CMAF chunk writer: prft + moof + mdat for one or more samples of one track.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{Encode, Mfhd, Moof, Tfdt, Tfhd, Traf, Trun, TrunEntry, TrunSamples};

use super::{unix_micros_to_ntp, CmafError};

/// One media sample (an access unit or an AAC frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in track timescale units.
    pub duration: u32,
    pub data: Bytes,
    /// A sync sample: decoding can start here.
    pub keyframe: bool,
    /// Presentation time minus decode time, in track timescale units.
    pub cts_offset: i32,
}

/// The wall clock to stamp into the chunk's prft box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerTime {
    pub wall_clock_unix_micros: u64,
}

/// prft flags strom writes: 2 = "the UTC time is when the following moof was finalised"
/// (ISO/IEC 14496-12 8.16.5). The packager writes each chunk the moment its frame arrives,
/// with the wall clock passed in for that frame, so "finalised" is exactly what the time
/// means. (0 would claim the time the frame entered the encoder, which strom cannot know.)
/// The media_time is then the earliest presentation time in the fragment.
pub const PRFT_FLAGS: u32 = 0x00_0002;

/// sample_flags for a sync sample: sample_depends_on = 2 (depends on no other sample).
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// sample_flags for a non-sync sample: sample_depends_on = 1, sample_is_non_sync_sample = 1.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

fn prft_box(track_id: u32, wall_clock_unix_micros: u64, media_time: u64) -> [u8; 32] {
    // Written by hand because mp4-atom picks version 0 whenever media_time fits 32 bits;
    // version 1 keeps the layout fixed for every chunk of the broadcast.
    let mut b = [0u8; 32];
    b[0..4].copy_from_slice(&32u32.to_be_bytes());
    b[4..8].copy_from_slice(b"prft");
    b[8..12].copy_from_slice(&((1u32 << 24) | PRFT_FLAGS).to_be_bytes());
    b[12..16].copy_from_slice(&track_id.to_be_bytes());
    b[16..24].copy_from_slice(&unix_micros_to_ntp(wall_clock_unix_micros).to_be_bytes());
    b[24..32].copy_from_slice(&media_time.to_be_bytes());
    b
}

fn encode_moof(moof: &Moof) -> Result<Vec<u8>, CmafError> {
    let mut out = Vec::with_capacity(128);
    moof.encode(&mut out)?;
    Ok(out)
}

/// Write one CMAF chunk. `base_media_decode_time` is the decode time of the first sample
/// in track timescale units; `sequence_number` goes into mfhd.
pub fn write_chunk(
    track_id: u32,
    sequence_number: u32,
    base_media_decode_time: u64,
    samples: &[Sample],
    prft: Option<ProducerTime>,
) -> Result<Bytes, CmafError> {
    if samples.is_empty() {
        return Err(CmafError::NoSamples);
    }
    let with_cts = samples.iter().any(|s| s.cts_offset != 0);
    let mut entries = Vec::with_capacity(samples.len());
    let mut payload_len: u64 = 0;
    for s in samples {
        let size = u32::try_from(s.data.len()).map_err(|_| CmafError::TooLarge("sample size"))?;
        payload_len += u64::from(size);
        entries.push(TrunEntry {
            duration: Some(s.duration),
            size: Some(size),
            flags: Some(if s.keyframe {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            }),
            cts: with_cts.then_some(i64::from(s.cts_offset)),
        });
    }
    let mdat_size = u32::try_from(payload_len + 8).map_err(|_| CmafError::TooLarge("mdat"))?;

    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(entries),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the start of moof (default-base-is-moof) to the first
    // sample byte, i.e. past moof and the 8-byte mdat header. Its encoded width is fixed,
    // so sizing the moof with a placeholder and re-encoding is exact.
    let moof_len = encode_moof(&moof)?.len();
    let data_offset =
        i32::try_from(moof_len + 8).map_err(|_| CmafError::TooLarge("trun data offset"))?;
    if let Some(trun) = moof.traf.first_mut().and_then(|t| t.trun.first_mut()) {
        trun.data_offset = Some(data_offset);
    }
    let moof_bytes = encode_moof(&moof)?;

    let mut out = BytesMut::with_capacity(32 + moof_bytes.len() + mdat_size as usize);
    if let Some(p) = prft {
        // Earliest presentation time; negative composition offsets cannot go below zero.
        let media_time = samples
            .iter()
            .scan(base_media_decode_time, |dts, s| {
                let pts = dts.saturating_add_signed(i64::from(s.cts_offset));
                *dts = dts.saturating_add(u64::from(s.duration));
                Some(pts)
            })
            .min()
            .unwrap_or(base_media_decode_time);
        out.put_slice(&prft_box(track_id, p.wall_clock_unix_micros, media_time));
    }
    out.put_slice(&moof_bytes);
    out.put_u32(mdat_size);
    out.put_slice(b"mdat");
    for s in samples {
        out.put_slice(&s.data);
    }
    Ok(out.freeze())
}
