//! The broadcast catalog, serialised as JSON in the style of the MoQ Streaming Format (MSF).
//!
//! One catalog describes every track of a broadcast; players fetch it first, then
//! subscribe to the tracks. Optional fields are omitted when unknown, and unknown
//! fields are ignored when reading, so older and newer peers interoperate.

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aac::AacConfig;
use crate::avc::AvcConfig;
use crate::video::VideoConfig;

/// The catalog format version strom writes and accepts.
pub const CATALOG_VERSION: u32 = 1;

/// Why a catalog could not be read or written.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("catalog JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported catalog version {0}")]
    UnsupportedVersion(u32),
    #[error("initData is not valid base64: {0}")]
    InitData(#[from] base64::DecodeError),
}

/// A broadcast catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    pub version: u32,
    /// Wall clock when this catalog was generated, Unix milliseconds.
    #[serde(default)]
    pub generated_at: u64,
    pub tracks: Vec<CatalogTrack>,
}

/// One track entry of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogTrack {
    pub name: String,
    /// "cmaf" for every strom track.
    pub packaging: String,
    #[serde(default)]
    pub is_live: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Tracks with the same render group are played together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_group: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framerate: Option<f64>,
    /// Bits per second, when the broadcaster announced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timescale: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samplerate: Option<u32>,
    /// Channel count as a string, as MSF/WebCodecs expect ("2").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_config: Option<String>,
    /// Base64 of the CMAF init segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_data: Option<String>,
    /// Typical group (GOP) duration in milliseconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_duration: Option<u64>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl CatalogTrack {
    fn base(name: &str, role: &str, codec: String, timescale: u32, init: &[u8]) -> Self {
        CatalogTrack {
            name: name.to_string(),
            packaging: "cmaf".into(),
            is_live: true,
            role: Some(role.into()),
            render_group: Some(1),
            codec: Some(codec),
            width: None,
            height: None,
            framerate: None,
            bitrate: None,
            timescale: Some(timescale),
            samplerate: None,
            channel_config: None,
            init_data: Some(b64().encode(init)),
            group_duration: None,
        }
    }

    /// A video track entry for an H.264 configuration and its init segment.
    pub fn video(name: &str, avc: &AvcConfig, timescale: u32, init: &[u8]) -> Self {
        Self::from_video_config(name, &VideoConfig::Avc(avc.clone()), timescale, init)
    }

    /// A video track entry for any video configuration (H.264 or H.265) and its init
    /// segment: codec string, display size and frame rate come from the configuration.
    pub fn from_video_config(
        name: &str,
        config: &VideoConfig,
        timescale: u32,
        init: &[u8],
    ) -> Self {
        CatalogTrack {
            width: Some(config.width()),
            height: Some(config.height()),
            framerate: config.frame_rate(),
            ..Self::base(name, "video", config.codec_string(), timescale, init)
        }
    }

    /// An audio track entry for an AAC configuration and its init segment.
    pub fn audio(name: &str, aac: &AacConfig, timescale: u32, init: &[u8]) -> Self {
        CatalogTrack {
            samplerate: Some(aac.sample_rate),
            channel_config: Some(aac.channels.to_string()),
            ..Self::base(name, "audio", aac.codec_string(), timescale, init)
        }
    }

    /// Decode `initData`, if present.
    pub fn init_data_bytes(&self) -> Result<Option<Bytes>, CatalogError> {
        match &self.init_data {
            Some(s) => Ok(Some(Bytes::from(b64().decode(s)?))),
            None => Ok(None),
        }
    }
}

impl Catalog {
    pub fn new(generated_at_unix_ms: u64, tracks: Vec<CatalogTrack>) -> Self {
        Catalog {
            version: CATALOG_VERSION,
            generated_at: generated_at_unix_ms,
            tracks,
        }
    }

    pub fn track(&self, name: &str) -> Option<&CatalogTrack> {
        self.tracks.iter().find(|t| t.name == name)
    }

    pub fn to_json(&self) -> Result<String, CatalogError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parse a catalog, rejecting versions this code does not understand.
    pub fn from_json(json: &[u8]) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = serde_json::from_slice(json)?;
        if catalog.version != CATALOG_VERSION {
            return Err(CatalogError::UnsupportedVersion(catalog.version));
        }
        Ok(catalog)
    }

    /// Equal apart from `generatedAt`: used to decide whether a re-emitted catalog is news.
    pub fn same_tracks(&self, other: &Catalog) -> bool {
        self.version == other.version && self.tracks == other.tracks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Catalog {
        let aac = AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap();
        let mut audio = CatalogTrack::audio("audio", &aac, 48000, b"init-a");
        audio.bitrate = Some(128_000);
        let video = CatalogTrack {
            name: "video".into(),
            codec: Some("avc1.4d401f".into()),
            width: Some(1280),
            height: Some(720),
            framerate: Some(30.0),
            bitrate: Some(2_500_000),
            group_duration: Some(1000),
            ..CatalogTrack::base("video", "video", "avc1.4d401f".into(), 90000, b"init-v")
        };
        Catalog::new(1_700_000_000_123, vec![video, audio])
    }

    #[test]
    fn json_shape() {
        let json = sample().to_json().unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["generatedAt"], 1_700_000_000_123u64);
        let video = &v["tracks"][0];
        assert_eq!(video["name"], "video");
        assert_eq!(video["packaging"], "cmaf");
        assert_eq!(video["isLive"], true);
        assert_eq!(video["renderGroup"], 1);
        assert_eq!(video["framerate"], 30.0);
        assert_eq!(video["groupDuration"], 1000);
        assert_eq!(video["initData"], b64().encode(b"init-v"));
        assert!(
            video.get("samplerate").is_none(),
            "None fields must be skipped"
        );
        let audio = &v["tracks"][1];
        assert_eq!(audio["role"], "audio");
        assert_eq!(audio["codec"], "mp4a.40.2");
        assert_eq!(audio["samplerate"], 48000);
        assert_eq!(audio["channelConfig"], "2");
        assert_eq!(audio["bitrate"], 128000);
        assert!(audio.get("width").is_none());
    }

    #[test]
    fn roundtrip_and_init_data() {
        let c = sample();
        let back = Catalog::from_json(c.to_json().unwrap().as_bytes()).unwrap();
        assert_eq!(back, c);
        let init = back.track("audio").unwrap().init_data_bytes().unwrap();
        assert_eq!(init.as_deref(), Some(&b"init-a"[..]));
        assert!(back.track("nope").is_none());
    }

    #[test]
    fn tolerant_and_strict_parts() {
        let json = br#"{"version":1,"tracks":[{"name":"v","packaging":"cmaf","future":42}]}"#;
        let c = Catalog::from_json(json).unwrap();
        assert_eq!(c.tracks[0].init_data_bytes().unwrap(), None);
        assert!(matches!(
            Catalog::from_json(br#"{"version":2,"tracks":[]}"#),
            Err(CatalogError::UnsupportedVersion(2))
        ));
        assert!(Catalog::from_json(b"{").is_err());
        let bad = br#"{"version":1,"tracks":[{"name":"v","packaging":"cmaf","initData":"!!"}]}"#;
        assert!(Catalog::from_json(bad).unwrap().tracks[0]
            .init_data_bytes()
            .is_err());
    }
}
