//! The media parsers (strom-media): FLV tags and MPEG-TS into the packager,
//! AVC and HEVC configurations, CMAF init segments and chunks.

use bytes::Bytes;
use strom_media::cmaf::{init_segment, parse_chunk, parse_init, TrackConfig};
use strom_media::flv::FlvTagKind;
use strom_media::video::VideoConfig;
use strom_media::{
    avc, hevc, AudioTag, AvcConfig, FlvReader, HevcConfig, Output, Packager, TsIngest, TsTag,
    VideoTag,
};

use crate::piece_size;

/// A fixed wall clock: the packager only writes it into `prft` boxes.
const WALL_CLOCK_US: u64 = 1_767_225_600_000_000;

/// What the origin does with a packager's output that could fail on what the
/// input put there: the catalog goes out as JSON, init segments to players.
fn consume(outputs: Vec<Output>) {
    for output in outputs {
        match output {
            Output::Catalog(catalog) => {
                let _ = catalog.to_json();
            }
            Output::Object { payload, .. } => {
                let _ = parse_chunk(&payload);
            }
        }
    }
}

/// An FLV file: each tag body as an RTMP message would carry it, parsed as
/// the origin parses message bodies (`PublishSession::push_video`) and fed
/// to the packager. A packager error ends the push, as it does at the origin.
pub fn flv_tags(data: &[u8]) {
    let Ok(reader) = FlvReader::new(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut packager = Packager::new(None);
    for tag in reader {
        let Ok(tag) = tag else { return };
        let result = match tag.kind {
            FlvTagKind::Video => match VideoTag::parse(&tag.body) {
                Ok(v) => packager.push_video(tag.timestamp_ms, &v, WALL_CLOCK_US),
                Err(_) => return,
            },
            FlvTagKind::Audio => match AudioTag::parse(&tag.body) {
                Ok(a) => packager.push_audio(tag.timestamp_ms, &a, WALL_CLOCK_US),
                Err(_) => return,
            },
            _ => continue,
        };
        match result {
            Ok(outputs) => consume(outputs),
            Err(_) => return,
        }
    }
}

/// MPEG-TS as an SRT push delivers it (byte 0 picks the read size), through
/// `TsIngest` and the packager, as the origin's SRT ingest does.
pub fn ts_demux(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let mut ingest = TsIngest::new();
    let mut packager = Packager::new(None);
    let mut push = |tags: Vec<TsTag>| -> bool {
        for tag in tags {
            let result = match &tag {
                TsTag::Video { timestamp_ms, tag } => {
                    packager.push_video(*timestamp_ms, tag, WALL_CLOCK_US)
                }
                TsTag::Audio { timestamp_ms, tag } => {
                    packager.push_audio(*timestamp_ms, tag, WALL_CLOCK_US)
                }
            };
            match result {
                Ok(outputs) => consume(outputs),
                Err(_) => return false,
            }
        }
        true
    };
    for chunk in data.chunks(piece_size(selector)) {
        match ingest.push(chunk) {
            Ok(tags) => {
                if !push(tags) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    push(ingest.finish());
}

/// A video configuration as the packager takes it, then everything strom
/// derives from one: codec string, size, frame rate, the CMAF init segment
/// (parsed back, as an edge parses it) and keyframe detection.
fn video_config(config: VideoConfig, access_unit: &[u8]) {
    let _ = config.codec_string();
    let _ = (config.width(), config.height(), config.frame_rate());
    let _ = config.is_random_access(access_unit);
    if let Ok(init) = init_segment(&TrackConfig::video(config)) {
        let _ = parse_init(&init);
    }
}

/// Splits `data` into a length-prefixed record (2 bytes of length) and the rest.
fn record_and_rest(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return (data, &[]);
    };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    rest.split_at(len)
}

/// AVC: byte 0 picks an avcC record (as in an RTMP sequence header), a raw
/// SPS, or an avcC followed by an access unit.
pub fn avc_config(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(c) = AvcConfig::parse(Bytes::copy_from_slice(data)) {
                video_config(c.into(), &[]);
            }
        }
        1 => {
            let _ = avc::parse_sps(data);
        }
        _ => {
            let (record, au) = record_and_rest(data);
            if let Ok(c) = AvcConfig::parse(Bytes::copy_from_slice(record)) {
                let _ = avc::nal_units(au, c.nal_length_size).map(|n| n.count());
                video_config(c.into(), au);
            }
        }
    }
}

/// The NAL units of an Annex B stream (start codes removed), as the TS path
/// meets parameter sets.
fn annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            if let Some(s) = start {
                units.push(&data[s..i]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        units.push(&data[s..]);
    }
    units
}

/// HEVC: byte 0 picks an hvcC record (Enhanced RTMP sequence start), a raw
/// SPS, VPS/SPS/PPS in Annex B (the TS path's `from_parameter_sets`), or an
/// hvcC followed by an access unit.
pub fn hevc_config(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(c) = HevcConfig::parse(Bytes::copy_from_slice(data)) {
                let _ = c.nal_units_of(hevc::NAL_SPS).count();
                video_config(c.into(), &[]);
            }
        }
        1 => {
            let _ = hevc::parse_sps(data);
        }
        2 => {
            if let [vps, sps, pps, ..] = annex_b(data)[..] {
                if let Ok(c) = HevcConfig::from_parameter_sets(vps, sps, pps) {
                    // What the packager then gets in the sequence start.
                    if let Ok(c) = HevcConfig::parse(c.raw.clone()) {
                        video_config(c.into(), &[]);
                    }
                }
            }
        }
        _ => {
            let (record, au) = record_and_rest(data);
            if let Ok(c) = HevcConfig::parse(Bytes::copy_from_slice(record)) {
                let _ = hevc::contains_irap(au, c.nal_length_size);
                video_config(c.into(), au);
            }
        }
    }
}

/// CMAF as relays and recordings read it: an init segment (VOD, catalog) and
/// a chunk (every object's timing at the edge, `strom_relay::object_meta`).
pub fn cmaf_parse(data: &[u8]) {
    let _ = parse_init(data);
    let _ = parse_chunk(data);
    let _ = strom_relay::object_meta("video", data);
}
