//! What a standby encoder keeps so that it can take over at once: its
//! latest configurations and its current GOP from the keyframe, bounded.

use strom_media::flv::{AacPacketType, AudioPacket, AvcPacketType, HevcPacketType, VideoPacket};
use strom_media::{AudioTag, VideoTag};

/// A standby keeps at most this much of its current GOP (tags and bytes);
/// beyond it the GOP is dropped and the next keyframe starts again.
const STANDBY_MAX_TAGS: usize = 2_000;
const STANDBY_MAX_BYTES: usize = 32 * 1024 * 1024;

/// An encoder's recent tags: its latest configurations and its current GOP,
/// replayed when it takes over so viewers get a keyframe at once.
#[derive(Default)]
pub(super) struct Recent {
    video_config: Option<(u32, VideoTag)>,
    audio_config: Option<(u32, AudioTag)>,
    gop: Vec<(u32, Tag)>,
    gop_bytes: usize,
}

#[derive(Clone)]
pub(super) enum Tag {
    Video(VideoTag),
    Audio(AudioTag),
}

fn video_config(tag: &VideoTag) -> bool {
    match &tag.packet {
        VideoPacket::Avc(p) => p.packet_type == AvcPacketType::SequenceHeader,
        VideoPacket::Hevc(p) => p.packet_type == HevcPacketType::SequenceStart,
        _ => false,
    }
}

fn video_frame(tag: &VideoTag) -> bool {
    match &tag.packet {
        VideoPacket::Avc(p) => p.packet_type == AvcPacketType::Nalu,
        VideoPacket::Hevc(p) => p.packet_type == HevcPacketType::CodedFrames,
        _ => false,
    }
}

fn audio_config(tag: &AudioTag) -> bool {
    matches!(&tag.packet, AudioPacket::Aac(p) if p.packet_type == AacPacketType::SequenceHeader)
}

fn tag_bytes(tag: &Tag) -> usize {
    match tag {
        Tag::Video(VideoTag {
            packet: VideoPacket::Avc(p),
            ..
        }) => p.payload.len(),
        Tag::Video(VideoTag {
            packet: VideoPacket::Hevc(p),
            ..
        }) => p.payload.len(),
        Tag::Audio(AudioTag {
            packet: AudioPacket::Aac(p),
            ..
        }) => p.payload.len(),
        _ => 0,
    }
}

impl Recent {
    pub(super) fn keep(&mut self, timestamp_ms: u32, tag: Tag) {
        match &tag {
            Tag::Video(v) if video_config(v) => {
                self.video_config = Some((timestamp_ms, v.clone()));
                return;
            }
            Tag::Audio(a) if audio_config(a) => {
                self.audio_config = Some((timestamp_ms, a.clone()));
                return;
            }
            Tag::Video(v) if video_frame(v) && v.is_keyframe() => {
                self.gop.clear();
                self.gop_bytes = 0;
            }
            // Nothing before the first keyframe can be played.
            _ if self.gop.is_empty() => return,
            _ => {}
        }
        self.gop_bytes += tag_bytes(&tag);
        self.gop.push((timestamp_ms, tag));
        if self.gop.len() > STANDBY_MAX_TAGS || self.gop_bytes > STANDBY_MAX_BYTES {
            self.gop.clear();
            self.gop_bytes = 0;
        }
    }

    /// Ready to take over: configured and holding a keyframe.
    pub(super) fn ready(&self) -> bool {
        self.video_config.is_some() && !self.gop.is_empty()
    }

    /// The tags to replay, configurations first (kept: the GOP goes on
    /// growing until the next keyframe).
    pub(super) fn replay(&self) -> Vec<(u32, Tag)> {
        let mut out = Vec::with_capacity(self.gop.len() + 2);
        if let Some((t, v)) = &self.video_config {
            out.push((*t, Tag::Video(v.clone())));
        }
        if let Some((t, a)) = &self.audio_config {
            out.push((*t, Tag::Audio(a.clone())));
        }
        out.extend(self.gop.iter().map(|(t, tag)| (*t, tag.clone())));
        out
    }
}
