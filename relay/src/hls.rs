//! The HLS view of the group cache (sans-IO): segment N is group N, LL-HLS
//! parts are runs of its objects, playlists are rendered from a snapshot.
//!
//! Part boundaries depend only on the objects already received, so a part,
//! once listed, never changes as more objects arrive.

use std::collections::VecDeque;
use std::fmt::Write;

use bytes::{Bytes, BytesMut};

use crate::cache::Group;

/// Parameters of one media playlist.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlaylistParams {
    /// Track timescale (ticks per second).
    pub timescale: u64,
    /// LL-HLS part target duration, seconds.
    pub part_target: f64,
    /// Segments listed at most.
    pub window: usize,
    /// Nominal group duration from the catalog, seconds (for TARGETDURATION).
    pub nominal_segment: f64,
}

/// A part: objects `[first, end)` of a group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Part {
    pub first: usize,
    pub end: usize,
    pub ticks: u64,
    pub independent: bool,
}

/// Splits a group's objects into parts of at most `target_ticks` (when frame
/// durations are steady). Returns the closed parts; the trailing run is
/// closed only when the group is complete.
pub(crate) fn parts_of(group: &Group, target_ticks: u64) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut first = 0;
    let mut ticks = 0u64;
    for (i, object) in group.objects.iter().enumerate() {
        let d = object.meta.duration_ticks;
        ticks += d;
        // Close when one more object of this length would overshoot the target.
        if ticks + d > target_ticks {
            parts.push(Part {
                first,
                end: i + 1,
                ticks,
                independent: first == 0,
            });
            first = i + 1;
            ticks = 0;
        }
    }
    if group.complete && first < group.objects.len() {
        parts.push(Part {
            first,
            end: group.objects.len(),
            ticks,
            independent: first == 0,
        });
    }
    parts
}

/// Concatenates objects `[first, end)` of a group.
pub(crate) fn concat(group: &Group, first: usize, end: usize) -> Bytes {
    let slice = &group.objects[first.min(group.objects.len())..end.min(group.objects.len())];
    if slice.len() == 1 {
        return slice[0].payload.clone();
    }
    let mut out = BytesMut::with_capacity(slice.iter().map(|o| o.payload.len()).sum());
    for o in slice {
        out.extend_from_slice(&o.payload);
    }
    out.freeze()
}

fn seconds(ticks: u64, timescale: u64) -> f64 {
    ticks as f64 / timescale.max(1) as f64
}

fn format_program_date_time(unix_us: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(unix_us as i128 * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// True once the playlist holds `msn`/`part` (part None: the whole segment).
pub(crate) fn has(
    groups: &VecDeque<Group>,
    params: &PlaylistParams,
    msn: u64,
    part: Option<usize>,
) -> bool {
    let target = (params.part_target * params.timescale as f64) as u64;
    match groups.iter().find(|g| g.id == msn) {
        Some(g) => match part {
            None => g.complete,
            Some(p) => g.complete || parts_of(g, target).len() > p,
        },
        // A later segment exists: the requested one is in the past.
        None => groups.back().is_some_and(|g| g.id > msn),
    }
}

/// Renders the media playlist of one track from its cached groups.
pub(crate) fn media_playlist(groups: &VecDeque<Group>, params: &PlaylistParams) -> Option<String> {
    let target_ticks = (params.part_target * params.timescale as f64).round() as u64;
    // Only groups that start decodable (object 0 present) and are not empty.
    let usable: Vec<&Group> = groups
        .iter()
        .filter(|g| g.objects.first().is_some_and(|o| o.id == 0))
        .collect();
    let newest = *usable.last()?;
    let complete: Vec<&Group> = usable.iter().copied().filter(|g| g.complete).collect();
    let start = complete.len().saturating_sub(params.window);
    let listed = &complete[start..];
    let live = if newest.complete { None } else { Some(newest) };

    // Measured durations when there are any; the catalog's nominal one before.
    let max_segment = listed
        .iter()
        .map(|g| seconds(g.duration_ticks(), params.timescale))
        .reduce(f64::max)
        .unwrap_or(params.nominal_segment);
    let target_duration = max_segment.round().max(1.0) as u64;
    let first_msn = listed
        .first()
        .map(|g| g.id)
        .or(live.map(|g| g.id))
        .unwrap_or(0);

    let mut out = String::with_capacity(2048);
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:9");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target_duration}");
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
        params.part_target * 3.0
    );
    let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.3}", params.part_target);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"init.mp4\"");

    // Parts are listed for the newest few segments only (RFC 8216bis: within
    // three target durations of the live edge).
    let parts_from = listed.len().saturating_sub(3);
    for (i, g) in listed.iter().enumerate() {
        if let Some(t) = g.objects.first().and_then(|o| o.meta.producer_time_us) {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                format_program_date_time(t)
            );
        }
        if i >= parts_from {
            for (p, part) in parts_of(g, target_ticks).iter().enumerate() {
                write_part(&mut out, g.id, p, part, params.timescale);
            }
        }
        let _ = writeln!(
            out,
            "#EXTINF:{:.5},\n{}.m4s",
            seconds(g.duration_ticks(), params.timescale),
            g.id
        );
    }
    match live {
        Some(g) => {
            if let Some(t) = g.objects.first().and_then(|o| o.meta.producer_time_us) {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    format_program_date_time(t)
                );
            }
            let parts = parts_of(g, target_ticks);
            for (p, part) in parts.iter().enumerate() {
                write_part(&mut out, g.id, p, part, params.timescale);
            }
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.{}.m4s\"",
                g.id,
                parts.len()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}.0.m4s\"",
                newest.id + 1
            );
        }
    }
    Some(out)
}

fn write_part(out: &mut String, msn: u64, index: usize, part: &Part, timescale: u64) {
    let _ = writeln!(
        out,
        "#EXT-X-PART:DURATION={:.5},URI=\"{msn}.{index}.m4s\"{}",
        seconds(part.ticks, timescale),
        if part.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        }
    );
}

/// One rendition line of the multivariant playlist.
pub(crate) struct Variant<'a> {
    pub video_track: &'a str,
    pub codecs: String,
    pub bandwidth: u64,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

pub(crate) struct AudioRendition<'a> {
    pub track: &'a str,
    pub name: &'a str,
    pub default: bool,
}

pub(crate) fn multivariant_playlist(
    variants: &[Variant<'_>],
    audio: &[AudioRendition<'_>],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:9");
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    for a in audio {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{}\",DEFAULT={},AUTOSELECT=YES,URI=\"{}/playlist.m3u8\"",
            a.name,
            if a.default { "YES" } else { "NO" },
            a.track
        );
    }
    for v in variants {
        let mut line = format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"",
            v.bandwidth, v.codecs
        );
        if let Some((w, h)) = v.resolution {
            let _ = write!(line, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = v.frame_rate {
            let _ = write!(line, ",FRAME-RATE={fps:.3}");
        }
        if !audio.is_empty() {
            line.push_str(",AUDIO=\"audio\"");
        }
        let _ = writeln!(out, "{line}\n{}/playlist.m3u8", v.video_track);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Object, ObjectMeta};
    use std::time::Instant;

    fn group(id: u64, frames: usize, ticks: u64, complete: bool) -> Group {
        Group {
            id,
            objects: (0..frames as u64)
                .map(|i| Object {
                    id: i,
                    payload: Bytes::from_static(b"x"),
                    meta: ObjectMeta {
                        duration_ticks: ticks,
                        producer_time_us: Some(1_700_000_000_000_000 + i),
                    },
                    ext: None,
                })
                .collect(),
            complete,
            bytes: frames,
            first_arrival: Instant::now(),
        }
    }

    fn params() -> PlaylistParams {
        PlaylistParams {
            timescale: 90_000,
            part_target: 0.5,
            window: 6,
            nominal_segment: 1.0,
        }
    }

    #[test]
    fn parts_split_a_one_second_gop_in_two() {
        let g = group(3, 30, 3000, true);
        let parts = parts_of(&g, 45_000);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].first, parts[0].end), (0, 15));
        assert!(parts[0].independent && !parts[1].independent);
        assert!(parts.iter().all(|p| p.ticks <= 45_000));
    }

    #[test]
    fn parts_are_stable_as_objects_arrive() {
        let full = parts_of(&group(0, 30, 3000, true), 45_000);
        for n in 0..30 {
            let partial = parts_of(&group(0, n, 3000, false), 45_000);
            assert_eq!(&full[..partial.len()], &partial[..], "at {n} objects");
        }
    }

    #[test]
    fn playlist_lists_complete_segments_parts_and_hint() {
        let groups: VecDeque<Group> = vec![
            group(10, 30, 3000, true),
            group(11, 30, 3000, true),
            group(12, 20, 3000, false),
        ]
        .into();
        let text = media_playlist(&groups, &params()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:10"));
        assert!(text.contains("#EXTINF:1.00000,\n10.m4s"));
        assert!(text.contains("#EXTINF:1.00000,\n11.m4s"));
        assert!(!text.contains("12.m4s\n"));
        assert!(text.contains("URI=\"12.0.m4s\",INDEPENDENT=YES"));
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.1.m4s\""));
        assert!(text.contains("#EXT-X-TARGETDURATION:1"));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"));
    }

    #[test]
    fn blocking_reload_condition() {
        let groups: VecDeque<Group> =
            vec![group(5, 30, 3000, true), group(6, 16, 3000, false)].into();
        assert!(has(&groups, &params(), 5, None));
        assert!(!has(&groups, &params(), 6, None));
        assert!(has(&groups, &params(), 6, Some(0)));
        assert!(!has(&groups, &params(), 6, Some(1)));
        assert!(!has(&groups, &params(), 7, Some(0)));
        assert!(has(&groups, &params(), 4, None));
    }

    #[test]
    fn multivariant_has_audio_group() {
        let text = multivariant_playlist(
            &[Variant {
                video_track: "video",
                codecs: "avc1.4d401f,mp4a.40.2".into(),
                bandwidth: 2_700_000,
                resolution: Some((1280, 720)),
                frame_rate: Some(30.0),
            }],
            &[AudioRendition {
                track: "audio",
                name: "audio",
                default: true,
            }],
        );
        assert!(text.contains("AUDIO=\"audio\""));
        assert!(text.contains("RESOLUTION=1280x720"));
        assert!(text.contains("URI=\"audio/playlist.m3u8\""));
    }
}
