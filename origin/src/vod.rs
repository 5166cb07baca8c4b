//! Recordings served as HLS VOD from the recordings directory (see
//! [`crate::record`]): the origin answers `/vod/...` on its HTTPS VOD
//! listener (edges forward viewers' requests there) and on its local HTTP.
//!
//! - `/vod/<tenant>/<event>/<stream>/index.json`: the stream's recordings;
//! - `.../<started>/master.m3u8`: the multivariant playlist of one;
//! - `.../<started>/<track>/playlist.m3u8`: a media playlist
//!   (`#EXT-X-PLAYLIST-TYPE:VOD` and `#EXT-X-ENDLIST` once no encoder is
//!   connected; `EVENT` while it is still being recorded);
//! - `.../<started>/<track>/init-<n>.mp4`, `<group>.m4s`: the files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use strom_media::Catalog;
use strom_relay::{safe_path, CatalogView, VodAnswer, VodFuture, VodSource};

use crate::record::{read_index, IndexLine, CATALOG, INDEX};

/// Recordings on this origin's disk.
pub(crate) struct DiskVod {
    root: PathBuf,
}

impl DiskVod {
    pub(crate) fn new(root: PathBuf) -> Self {
        DiskVod { root }
    }
}

impl VodSource for DiskVod {
    fn get<'a>(&'a self, rest: &'a str) -> VodFuture<'a> {
        let root = self.root.clone();
        let rest = rest.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || answer(&root, &rest))
                .await
                .unwrap_or_else(|_| VodAnswer::error(500, "internal error"))
        })
    }
}

/// `video`, `audio`, or one of a rendition (`video-360p`).
fn media_track(name: &str) -> bool {
    name.starts_with("video") || name.starts_with("audio")
}

fn ok(content_type: &str, body: impl Into<Bytes>, cache: &'static str) -> VodAnswer {
    VodAnswer {
        status: 200,
        content_type: content_type.into(),
        body: body.into(),
        cache,
    }
}

const M3U8: &str = "application/vnd.apple.mpegurl";

/// One recording in `index.json`.
#[derive(Debug, Serialize)]
pub(crate) struct RecordingInfo {
    pub id: String,
    /// Unix milliseconds.
    pub started_at: u64,
    pub duration_secs: f64,
    /// `recording` while an encoder may still add to it, else `complete`.
    pub state: &'static str,
    pub master: String,
}

fn answer(root: &Path, rest: &str) -> VodAnswer {
    let Some(parts) = safe_path(rest) else {
        return VodAnswer::error(400, "bad recording path");
    };
    if parts.len() < 4 {
        return VodAnswer::error(404, "not found");
    }
    let stream: PathBuf = parts[..3].iter().collect();
    let stream = root.join(stream);
    match &parts[3..] {
        ["index.json"] => {
            let list = list(&stream);
            match serde_json::to_vec(&list) {
                Ok(json) => ok("application/json", json, "no-cache"),
                Err(_) => VodAnswer::error(500, "internal error"),
            }
        }
        [id, "master.m3u8"] => master(&stream.join(id)),
        [id, track, "playlist.m3u8"] if media_track(track) => {
            media_playlist(&stream.join(id), track)
        }
        [id, track, file]
            if media_track(track) && (file.ends_with(".m4s") || file.ends_with(".mp4")) =>
        {
            let (content_type, cache) = if file.ends_with(".m4s") {
                ("video/iso.segment", "max-age=86400")
            } else {
                ("video/mp4", "max-age=86400")
            };
            match std::fs::read(stream.join(id).join(parts[4]).join(file)) {
                Ok(data) => ok(content_type, data, cache),
                Err(_) => VodAnswer::error(404, "no such file"),
            }
        }
        _ => VodAnswer::error(404, "not found"),
    }
}

struct Summary {
    ended: bool,
    /// Per track: (group, init file, seconds), in group order.
    segments: Vec<(String, u64, String, f64)>,
}

fn summary(dir: &Path) -> Option<Summary> {
    let text = std::fs::read_to_string(dir.join(INDEX)).ok()?;
    let lines = read_index(&text);
    let mut timescales: Vec<(String, String, u64)> = Vec::new();
    let mut segments = Vec::new();
    for line in &lines {
        match line {
            IndexLine::Init {
                track,
                file,
                timescale,
            } => timescales.push((track.clone(), file.clone(), *timescale)),
            IndexLine::Segment {
                track,
                group,
                init,
                duration,
            } => {
                let ts = timescales
                    .iter()
                    .rev()
                    .find(|(t, f, _)| t == track && f == init)
                    .map_or(1000, |(_, _, ts)| *ts)
                    .max(1);
                segments.push((
                    track.clone(),
                    *group,
                    init.clone(),
                    *duration as f64 / ts as f64,
                ));
            }
            _ => {}
        }
    }
    segments.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Some(Summary {
        ended: matches!(lines.last(), Some(IndexLine::Pause | IndexLine::End)),
        segments,
    })
}

/// The recordings of one stream, oldest first.
pub(crate) fn list(stream: &Path) -> Vec<RecordingInfo> {
    let Ok(entries) = std::fs::read_dir(stream) else {
        return Vec::new();
    };
    let mut out: Vec<RecordingInfo> = entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_owned();
            let started_at: u64 = id.parse().ok()?;
            let s = summary(&e.path())?;
            let duration_secs = s
                .segments
                .iter()
                .filter(|seg| {
                    seg.0 == "video"
                        || !s.segments.iter().any(|x| x.0 == "video") && seg.0.starts_with("video")
                })
                .map(|seg| seg.3)
                .sum();
            Some(RecordingInfo {
                master: format!("{id}/master.m3u8"),
                id,
                started_at,
                duration_secs,
                state: if s.ended { "complete" } else { "recording" },
            })
        })
        .collect();
    out.sort_by_key(|r| r.started_at);
    out
}

fn master(dir: &Path) -> VodAnswer {
    let Ok(json) = std::fs::read(dir.join(CATALOG)) else {
        return VodAnswer::error(404, "no such recording");
    };
    match Catalog::from_json(&json) {
        Ok(catalog) => ok(M3U8, CatalogView::new(catalog).multivariant(), "no-cache"),
        Err(_) => VodAnswer::error(500, "the recording's catalog does not parse"),
    }
}

fn media_playlist(dir: &Path, track: &str) -> VodAnswer {
    let Some(summary) = summary(dir) else {
        return VodAnswer::error(404, "no such recording");
    };
    let segments: Vec<_> = summary.segments.iter().filter(|s| s.0 == track).collect();
    let target = segments
        .iter()
        .map(|s| s.3.ceil() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}"
    );
    let _ = writeln!(
        out,
        "#EXT-X-PLAYLIST-TYPE:{}",
        if summary.ended { "VOD" } else { "EVENT" }
    );
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS");
    let mut map: Option<&str> = None;
    for (_, group, init, secs) in segments {
        if map != Some(init.as_str()) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{init}\"");
            map = Some(init);
        }
        let _ = writeln!(out, "#EXTINF:{secs:.5},\n{group}.m4s");
    }
    if summary.ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
    ok(M3U8, out, "no-cache")
}
