//! The sans-IO packager: FLV tags of one RTMP broadcast in, catalog and CMAF objects out.
//!
//! A group is a GOP: each video keyframe opens the next group id, and every video
//! frame becomes one object (one CMAF chunk) numbered from 0 within its group. Each AAC
//! frame also becomes one object of the audio track, in the group whose video keyframe
//! time is the latest one not after the frame's decode time.
//!
//! Nothing here reads a clock or touches a socket: the caller passes the wall clock of
//! each tag (it ends up in the chunk's prft box) and forwards the outputs.

mod timeline;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aac::{AacConfig, AacError};
use crate::avc::{AvcConfig, AvcError};
use crate::catalog::{Catalog, CatalogTrack};
use crate::cmaf::{
    self, CmafError, ProducerTime, Sample, TrackConfig, AUDIO_TRACK_ID, VIDEO_TIMESCALE,
    VIDEO_TRACK_ID,
};
use crate::flv::{
    AacPacketType, AudioPacket, AudioTag, AvcPacketType, HevcPacketType, VideoPacket, VideoTag,
};
use crate::hevc::{HevcConfig, HevcError};
use crate::video::{VideoCodec, VideoConfig, VideoError};
use timeline::{rescale, rescale_ceil, Timeline};

/// Why the packager gave up on a broadcast; the caller should close the connection.
#[derive(Debug, Error)]
pub enum PackagerError {
    #[error("unsupported codec {0}")]
    UnsupportedCodec(String),
    #[error("bad AVC configuration or access unit: {0}")]
    Avc(#[from] AvcError),
    #[error("bad HEVC configuration or access unit: {0}")]
    Hevc(#[from] HevcError),
    #[error("bad AAC configuration: {0}")]
    Aac(#[from] AacError),
    #[error("CMAF packaging failed: {0}")]
    Cmaf(#[from] CmafError),
}

impl From<VideoError> for PackagerError {
    fn from(e: VideoError) -> Self {
        match e {
            VideoError::Avc(e) => PackagerError::Avc(e),
            VideoError::Hevc(e) => PackagerError::Hevc(e),
        }
    }
}

/// The two tracks of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackName {
    Video,
    Audio,
}

impl TrackName {
    /// The MoQ track name (and catalog `name`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Audio => "audio",
        }
    }
}

/// Something to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A new or changed catalog; always emitted before the objects that depend on it.
    Catalog(Catalog),
    /// One CMAF chunk of `track`.
    Object {
        track: TrackName,
        group: u64,
        object: u64,
        payload: Bytes,
        /// True for object 0 of a group: the subscriber-visible start of a new group.
        keyframe_group_start: bool,
    },
}

/// Where a reconnecting broadcaster's new session continues the same broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Group id the next keyframe opens.
    pub next_group: u64,
    /// Broadcast media time (ms) at which the new session's first tag is placed; at or
    /// after the end of everything already packaged.
    pub media_time_ms: u64,
    pub next_video_sequence: u32,
    pub next_audio_sequence: u32,
}

/// Counters for monitoring one broadcast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackagerStats {
    pub video_frames: u64,
    pub audio_frames: u64,
    pub keyframes: u64,
    pub groups: u64,
    pub video_bytes: u64,
    pub audio_bytes: u64,
    /// Frames before the first keyframe or before their sequence header, empty ones, and
    /// frames of a codec other than the current sequence header's.
    pub dropped_video_frames: u64,
    /// Audio before the first group, before its sequence header, or empty.
    pub dropped_audio_frames: u64,
    /// Decode times that stepped backwards and were clamped forward.
    pub clamped_timestamps: u64,
    /// Audio decode times re-derived from the RTMP timestamp after a gap.
    pub audio_resyncs: u64,
    /// Tags whose FLV keyframe flag disagreed with the bitstream (IDR for H.264, IRAP
    /// for H.265).
    pub keyframe_flag_mismatches: u64,
    pub last_keyframe_interval_ms: Option<u64>,
    pub max_keyframe_interval_ms: Option<u64>,
}

struct VideoState {
    config: VideoConfig,
    init: Bytes,
}

/// What a video tag asks of the packager, whatever its codec.
enum VideoStep<'a> {
    Config(VideoConfig),
    Frame {
        codec: VideoCodec,
        composition_time: i32,
        payload: &'a Bytes,
    },
    Nothing,
}

struct AudioState {
    config: AacConfig,
    init: Bytes,
}

/// Samples per AAC frame.
const AAC_FRAME: u64 = 1024;
/// How many recent group starts are kept to place late audio.
const RECENT_GROUPS: usize = 8;
/// A frame delta above this is a gap, not a frame duration.
const MAX_VIDEO_DELTA: u64 = VIDEO_TIMESCALE as u64;

/// See the module docs.
pub struct Packager {
    timeline: Timeline,
    resume_ms: u64,
    video: Option<VideoState>,
    audio: Option<AudioState>,
    catalog: Option<Catalog>,
    bitrates: (Option<u64>, Option<u64>),
    next_group: u64,
    /// (group id, start in microseconds), oldest first.
    recent_groups: VecDeque<(u64, u64)>,
    first_group_start_us: Option<u64>,
    video_object: u64,
    /// Current audio group and the next object number in it.
    audio_group: Option<(u64, u64)>,
    video_seq: u32,
    audio_seq: u32,
    /// Last video decode time and duration (90 kHz).
    last_video: Option<(u64, u32)>,
    /// Last audio decode time (sample-rate ticks).
    last_audio: Option<u64>,
    stats: PackagerStats,
}

fn next_seq(seq: &mut u32) -> u32 {
    let s = *seq;
    // mfhd sequence numbers start at 1; skip 0 on wrap.
    *seq = seq.wrapping_add(1).max(1);
    s
}

impl Packager {
    /// A packager for a new broadcast, or for a new session of an existing one.
    pub fn new(resume: Option<Resume>) -> Self {
        Packager {
            timeline: Timeline::new(resume.map(|r| r.media_time_ms)),
            resume_ms: resume.map_or(0, |r| r.media_time_ms),
            video: None,
            audio: None,
            catalog: None,
            bitrates: (None, None),
            next_group: resume.map_or(0, |r| r.next_group),
            recent_groups: VecDeque::new(),
            first_group_start_us: None,
            video_object: 0,
            audio_group: None,
            video_seq: resume.map_or(1, |r| r.next_video_sequence.max(1)),
            audio_seq: resume.map_or(1, |r| r.next_audio_sequence.max(1)),
            last_video: None,
            last_audio: None,
            stats: PackagerStats::default(),
        }
    }

    pub fn stats(&self) -> &PackagerStats {
        &self.stats
    }

    /// The last catalog emitted, if any.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    /// Bitrates announced by the broadcaster (e.g. from onMetaData); they appear in the
    /// next catalog emitted and do not by themselves trigger one.
    pub fn set_bitrates(&mut self, video_bps: Option<u64>, audio_bps: Option<u64>) {
        self.bitrates = (video_bps, audio_bps);
    }

    /// Where a reconnecting broadcaster should continue: after everything packaged so far.
    pub fn resume_point(&self) -> Resume {
        let video_end = self
            .last_video
            .map(|(dts, dur)| rescale_ceil(dts + u64::from(dur), 1000, u64::from(VIDEO_TIMESCALE)));
        let audio_end = match (&self.audio, self.last_audio) {
            (Some(a), Some(dts)) => Some(rescale_ceil(
                dts + AAC_FRAME,
                1000,
                u64::from(a.config.sample_rate),
            )),
            _ => None,
        };
        let media_time_ms = [video_end, audio_end]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.resume_ms)
            .max(self.resume_ms);
        Resume {
            next_group: self.next_group,
            media_time_ms,
            next_video_sequence: self.video_seq,
            next_audio_sequence: self.audio_seq,
        }
    }

    /// Feed one RTMP video message.
    pub fn push_video(
        &mut self,
        rtmp_timestamp_ms: u32,
        tag: &VideoTag,
        wall_clock_unix_micros: u64,
    ) -> Result<Vec<Output>, PackagerError> {
        let mut out = Vec::new();
        let (codec, composition_time, payload) = match Self::video_step(tag)? {
            VideoStep::Nothing => return Ok(out),
            VideoStep::Config(config) => {
                if self.video.as_ref().is_some_and(|v| {
                    v.config.codec() == config.codec() && v.config.raw() == config.raw()
                }) {
                    return Ok(out);
                }
                let init = cmaf::init_segment(&TrackConfig::video(config.clone()))?;
                self.video = Some(VideoState { config, init });
                self.refresh_catalog(wall_clock_unix_micros, false, &mut out);
                return Ok(out);
            }
            VideoStep::Frame {
                codec,
                composition_time,
                payload,
            } => (codec, composition_time, payload),
        };

        // The timeline sees every frame, even dropped ones, so wrap tracking stays current.
        let broadcast_ms = self.timeline.broadcast_ms(rtmp_timestamp_ms);
        let Some(video) = &self.video else {
            self.stats.dropped_video_frames += 1;
            return Ok(out);
        };
        if payload.is_empty() || video.config.codec() != codec {
            // A frame of another codec than the configuration (an encoder switching
            // codecs without a sequence header) cannot be decoded with it.
            self.stats.dropped_video_frames += 1;
            return Ok(out);
        }
        // A group must start where a decoder can start, so the bitstream decides.
        let keyframe = video.config.is_random_access(payload)?;
        if keyframe != tag.is_keyframe() {
            self.stats.keyframe_flag_mismatches += 1;
        }
        let nominal = video
            .config
            .frame_rate()
            .map_or(VIDEO_TIMESCALE / 30, |fps| {
                (f64::from(VIDEO_TIMESCALE) / fps).round() as u32
            })
            .max(1);

        let mut dts = broadcast_ms.saturating_mul(u64::from(VIDEO_TIMESCALE) / 1000);
        let duration = match self.last_video {
            None => nominal,
            Some((last, last_dur)) => {
                if dts <= last {
                    self.stats.clamped_timestamps += 1;
                    dts = last + 1;
                    last_dur
                } else if dts - last > MAX_VIDEO_DELTA {
                    // A gap: the previous duration is a better guess for this frame.
                    last_dur
                } else {
                    // The next frame is unknown and must not be waited for; the last
                    // observed delta is the estimate, and tfdt keeps players exact.
                    (dts - last) as u32
                }
            }
        };

        if keyframe {
            self.open_group(dts);
        } else if self.recent_groups.is_empty() {
            self.stats.dropped_video_frames += 1;
            return Ok(out);
        }
        if keyframe && self.catalog.is_none() {
            self.refresh_catalog(wall_clock_unix_micros, true, &mut out);
        }
        self.last_video = Some((dts, duration));

        let cts_offset = composition_time.saturating_mul((VIDEO_TIMESCALE / 1000) as i32);
        let sample = Sample {
            duration,
            data: payload.clone(),
            keyframe,
            cts_offset,
        };
        let seq = next_seq(&mut self.video_seq);
        let payload = cmaf::write_chunk(
            VIDEO_TRACK_ID,
            seq,
            dts,
            &[sample],
            Some(ProducerTime {
                wall_clock_unix_micros,
            }),
        )?;
        let group = self.recent_groups.back().map_or(0, |g| g.0);
        let object = self.video_object;
        self.video_object += 1;
        self.stats.video_frames += 1;
        self.stats.video_bytes += payload.len() as u64;
        out.push(Output::Object {
            track: TrackName::Video,
            group,
            object,
            payload,
            keyframe_group_start: object == 0,
        });
        Ok(out)
    }

    /// Classify a video tag: a configuration (parsed), a frame, or nothing to package.
    fn video_step(tag: &VideoTag) -> Result<VideoStep<'_>, PackagerError> {
        Ok(match &tag.packet {
            VideoPacket::Avc(p) => match p.packet_type {
                AvcPacketType::SequenceHeader => {
                    VideoStep::Config(AvcConfig::parse(p.payload.clone())?.into())
                }
                AvcPacketType::Nalu => VideoStep::Frame {
                    codec: VideoCodec::Avc,
                    composition_time: p.composition_time,
                    payload: &p.payload,
                },
                AvcPacketType::EndOfSequence => VideoStep::Nothing,
            },
            VideoPacket::Hevc(p) => match p.packet_type {
                HevcPacketType::SequenceStart => {
                    VideoStep::Config(HevcConfig::parse(p.payload.clone())?.into())
                }
                HevcPacketType::CodedFrames => VideoStep::Frame {
                    codec: VideoCodec::Hevc,
                    composition_time: p.composition_time,
                    payload: &p.payload,
                },
                HevcPacketType::SequenceEnd => VideoStep::Nothing,
            },
            VideoPacket::Command(_) | VideoPacket::Metadata(_) => VideoStep::Nothing,
            VideoPacket::Unsupported { codec } => {
                return Err(PackagerError::UnsupportedCodec(codec.clone()))
            }
        })
    }

    fn open_group(&mut self, dts: u64) {
        let start_us = rescale(dts, 1_000_000, u64::from(VIDEO_TIMESCALE));
        if let Some(&(_, prev)) = self.recent_groups.back() {
            let interval = start_us.saturating_sub(prev) / 1000;
            self.stats.last_keyframe_interval_ms = Some(interval);
            self.stats.max_keyframe_interval_ms = Some(
                self.stats
                    .max_keyframe_interval_ms
                    .unwrap_or(0)
                    .max(interval),
            );
        }
        let id = self.next_group;
        self.next_group += 1;
        self.recent_groups.push_back((id, start_us));
        if self.recent_groups.len() > RECENT_GROUPS {
            self.recent_groups.pop_front();
        }
        self.first_group_start_us.get_or_insert(start_us);
        self.video_object = 0;
        self.stats.keyframes += 1;
        self.stats.groups += 1;
    }

    /// Feed one RTMP audio message.
    pub fn push_audio(
        &mut self,
        rtmp_timestamp_ms: u32,
        tag: &AudioTag,
        wall_clock_unix_micros: u64,
    ) -> Result<Vec<Output>, PackagerError> {
        let mut out = Vec::new();
        let packet = match &tag.packet {
            AudioPacket::Aac(p) => p,
            AudioPacket::Unsupported { codec } => {
                return Err(PackagerError::UnsupportedCodec(codec.clone()))
            }
        };
        if packet.packet_type == AacPacketType::SequenceHeader {
            let config = AacConfig::parse(packet.payload.clone())?;
            if self
                .audio
                .as_ref()
                .is_some_and(|a| a.config.raw == config.raw)
            {
                return Ok(out);
            }
            let init = cmaf::init_segment(&TrackConfig::audio(config.clone()))?;
            // A new sample rate changes the timescale; re-derive from timestamps.
            self.last_audio = None;
            self.audio = Some(AudioState { config, init });
            self.refresh_catalog(wall_clock_unix_micros, false, &mut out);
            return Ok(out);
        }

        let broadcast_ms = self.timeline.broadcast_ms(rtmp_timestamp_ms);
        let Some(audio) = &self.audio else {
            self.stats.dropped_audio_frames += 1;
            return Ok(out);
        };
        let rate = u64::from(audio.config.sample_rate);
        if packet.payload.is_empty() || self.recent_groups.is_empty() {
            self.stats.dropped_audio_frames += 1;
            return Ok(out);
        }

        let from_ts = rescale(broadcast_ms, rate, 1000);
        let dts = match self.last_audio {
            None => from_ts,
            Some(last) => {
                // Count samples while the timestamp agrees within a frame: RTMP's
                // millisecond rounding would otherwise jitter tfdt by up to 1 ms.
                let expected = last + AAC_FRAME;
                if from_ts > expected + AAC_FRAME {
                    self.stats.audio_resyncs += 1;
                    from_ts
                } else {
                    if from_ts + AAC_FRAME < expected {
                        self.stats.clamped_timestamps += 1;
                    }
                    expected
                }
            }
        };
        let dts_us = rescale(dts, 1_000_000, rate);
        if self
            .first_group_start_us
            .is_some_and(|first| dts_us < first)
        {
            // Audio from before the first keyframe has no group to go to.
            self.stats.dropped_audio_frames += 1;
            return Ok(out);
        }
        // The latest group that started at or before this frame, never going back to an
        // older group than the audio track is already in.
        let by_time = self
            .recent_groups
            .iter()
            .rev()
            .find(|(_, start)| *start <= dts_us)
            .or(self.recent_groups.front())
            .map_or(0, |g| g.0);
        let (group, object) = match self.audio_group {
            Some((current, next_obj)) if current >= by_time => (current, next_obj),
            _ => (by_time, 0),
        };
        self.audio_group = Some((group, object + 1));
        self.last_audio = Some(dts);

        let sample = Sample {
            duration: AAC_FRAME as u32,
            data: packet.payload.clone(),
            keyframe: true,
            cts_offset: 0,
        };
        let seq = next_seq(&mut self.audio_seq);
        let payload = cmaf::write_chunk(
            AUDIO_TRACK_ID,
            seq,
            dts,
            &[sample],
            Some(ProducerTime {
                wall_clock_unix_micros,
            }),
        )?;
        self.stats.audio_frames += 1;
        self.stats.audio_bytes += packet.payload.len() as u64;
        out.push(Output::Object {
            track: TrackName::Audio,
            group,
            object,
            payload,
            keyframe_group_start: object == 0,
        });
        Ok(out)
    }

    /// Emit a catalog when it is ready and differs from the last one.
    ///
    /// Ready means: video config known, and either audio config known or
    /// `video_only_ok` (the first keyframe arrived without audio). Once a catalog has
    /// been emitted, every config change re-emits.
    fn refresh_catalog(
        &mut self,
        wall_clock_unix_micros: u64,
        video_only_ok: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(video) = &self.video else { return };
        if self.audio.is_none() && !video_only_ok && self.catalog.is_none() {
            return;
        }
        let mut v = CatalogTrack::from_video_config(
            TrackName::Video.as_str(),
            &video.config,
            VIDEO_TIMESCALE,
            &video.init,
        );
        v.bitrate = self.bitrates.0;
        v.group_duration = self.stats.last_keyframe_interval_ms;
        let mut tracks = vec![v];
        if let Some(audio) = &self.audio {
            let mut a = CatalogTrack::audio(
                TrackName::Audio.as_str(),
                &audio.config,
                audio.config.sample_rate,
                &audio.init,
            );
            a.bitrate = self.bitrates.1;
            tracks.push(a);
        }
        let catalog = Catalog::new(wall_clock_unix_micros / 1000, tracks);
        if let Some(prev) = &self.catalog {
            // groupDuration is informational; a new GOP length alone is not worth a catalog.
            let strip = |c: &Catalog| {
                let mut c = c.clone();
                c.tracks.iter_mut().for_each(|t| t.group_duration = None);
                c
            };
            if strip(prev).same_tracks(&strip(&catalog)) {
                return;
            }
        }
        self.catalog = Some(catalog.clone());
        out.push(Output::Catalog(catalog));
    }
}
