//! The newest catalog of a broadcast as the HLS side needs it: per-track
//! timescale and init segment, and the multivariant playlist.

use std::sync::Arc;

use bytes::Bytes;
use strom_media::{Catalog, CatalogTrack};

use crate::cache::TrackCache;
use crate::hls::{self, AudioRendition, Variant};

/// Default when the catalog has no group duration (ms).
const DEFAULT_GROUP_MS: u64 = 2000;

pub struct CatalogView {
    catalog: Catalog,
    /// Measured bits per second per track, from the cache.
    measured: Vec<(String, u64)>,
}

pub struct TrackInfo {
    pub timescale: u64,
    pub group_duration_secs: f64,
}

impl CatalogView {
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            measured: Vec::new(),
        }
    }

    /// Reads the newest catalog object of a `catalog` track.
    pub fn latest(track: &Arc<TrackCache>) -> Option<Self> {
        let payload: Bytes = track.with_groups(|groups| {
            groups
                .iter()
                .rev()
                .find_map(|g| g.objects.last().map(|o| o.payload.clone()))
        })?;
        match Catalog::from_json(&payload) {
            Ok(catalog) => Some(Self {
                catalog,
                measured: Vec::new(),
            }),
            Err(err) => {
                tracing::warn!(error = %err, "catalog does not parse");
                None
            }
        }
    }

    /// Adds bitrates measured from cached media, used where the catalog has none.
    pub fn with_measured(mut self, measured: Vec<(String, u64)>) -> Self {
        self.measured = measured;
        self
    }

    fn find(&self, name: &str) -> Option<&CatalogTrack> {
        self.catalog.track(name)
    }

    pub fn track(&self, name: &str) -> Option<TrackInfo> {
        let t = self.find(name)?;
        Some(TrackInfo {
            timescale: t.timescale.map(u64::from).unwrap_or(90_000),
            group_duration_secs: t.group_duration.unwrap_or(DEFAULT_GROUP_MS) as f64 / 1000.0,
        })
    }

    pub fn init_segment(&self, name: &str) -> Option<Bytes> {
        self.find(name)?.init_data_bytes().ok().flatten()
    }

    fn bitrate(&self, t: &CatalogTrack) -> u64 {
        let measured = self
            .measured
            .iter()
            .find(|(n, _)| *n == t.name)
            .map(|(_, b)| *b)
            .unwrap_or(0);
        t.bitrate.unwrap_or(0).max(measured)
    }

    fn role(t: &CatalogTrack) -> &str {
        t.role.as_deref().unwrap_or("")
    }

    pub fn multivariant(&self) -> String {
        // One audio track for every variant: the first (the main push's;
        // renditions carry copies of the same sound).
        let audio: Vec<&CatalogTrack> = self
            .catalog
            .tracks
            .iter()
            .filter(|t| Self::role(t) == "audio")
            .take(1)
            .collect();
        let audio_bps = audio.iter().map(|t| self.bitrate(t)).max().unwrap_or(0);
        let audio_codec = audio.first().and_then(|t| t.codec.clone());
        let variants: Vec<Variant<'_>> = self
            .catalog
            .tracks
            .iter()
            .filter(|t| Self::role(t) == "video")
            .map(|t| {
                let mut codecs = t.codec.clone().unwrap_or_default();
                if let Some(a) = &audio_codec {
                    codecs = format!("{codecs},{a}");
                }
                let video_bps = self.bitrate(t).max(500_000);
                Variant {
                    video_track: &t.name,
                    codecs,
                    // Headroom for container overhead and peaks, as players
                    // use BANDWIDTH as the peak rate.
                    bandwidth: (video_bps + audio_bps) * 11 / 10,
                    resolution: t.width.zip(t.height),
                    frame_rate: t.framerate,
                }
            })
            .collect();
        let renditions: Vec<AudioRendition<'_>> = audio
            .iter()
            .enumerate()
            .map(|(i, t)| AudioRendition {
                track: &t.name,
                name: &t.name,
                default: i == 0,
            })
            .collect();
        hls::multivariant_playlist(&variants, &renditions)
    }
}

impl CatalogView {
    /// Media track names, video first, in catalog order.
    pub fn media_tracks(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for role in ["video", "audio"] {
            names.extend(
                self.catalog
                    .tracks
                    .iter()
                    .filter(|t| Self::role(t) == role)
                    .map(|t| t.name.clone()),
            );
        }
        names
    }
}
