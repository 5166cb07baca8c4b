//! LL-HLS viewers: per media playlist (video, audio) a player loop of
//! blocking playlist reloads (`_HLS_msn`/`_HLS_part`) and part GETs over its
//! own keep-alive connection, measuring part bytes, part latency (receipt
//! minus the `prft` of the part's first and last chunk) and skipped parts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::http::{Client, Target};
use crate::stats::{now_us, TrackStats};

/// A part's address: media sequence number and part index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartId {
    pub msn: u64,
    pub part: u64,
}

/// What a player needs from a media playlist.
#[derive(Debug, Default, PartialEq)]
pub struct Playlist {
    pub media_sequence: u64,
    /// Every `#EXT-X-PART` listed, in playlist order.
    pub parts: Vec<PartId>,
    pub preload_hint: Option<PartId>,
}

/// `N.P.m4s` → (N, P).
fn part_uri(uri: &str) -> Option<PartId> {
    let name = uri.rsplit('/').next()?.strip_suffix(".m4s")?;
    let (msn, part) = name.split_once('.')?;
    Some(PartId {
        msn: msn.parse().ok()?,
        part: part.parse().ok()?,
    })
}

fn attribute<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &line[at..];
    Some(&rest[..rest.find('"')?])
}

impl Playlist {
    pub fn parse(text: &str) -> Option<Playlist> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "#EXTM3U" {
            return None;
        }
        let mut p = Playlist::default();
        for line in lines {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.trim().parse().ok()?;
            } else if line.starts_with("#EXT-X-PART:") {
                if let Some(id) = attribute(line, "URI").and_then(part_uri) {
                    p.parts.push(id);
                }
            } else if line.starts_with("#EXT-X-PRELOAD-HINT:") && line.contains("TYPE=PART") {
                p.preload_hint = attribute(line, "URI").and_then(part_uri);
            }
        }
        Some(p)
    }
}

/// Counters shared by all HLS viewers, besides the per-track figures.
#[derive(Default)]
pub struct HlsShared {
    pub playlist_requests: AtomicU64,
    pub part_requests: AtomicU64,
    /// Non-200 answers and failed requests.
    pub http_errors: AtomicU64,
    /// Times a player lost the live edge and reloaded a plain playlist.
    pub resyncs: AtomicU64,
}

/// How far a player's part cursor is behind what a playlist lists.
struct Cursor {
    next: PartId,
    /// Parts fetched of the segment `next.msn`, and whether from part 0 on.
    in_segment: u64,
    whole: bool,
}

impl Cursor {
    fn new(next: PartId) -> Cursor {
        Cursor {
            next,
            in_segment: 0,
            whole: next.part == 0,
        }
    }

    /// Moves to `to` (a part that is now fetched or about to be), counting
    /// what was skipped. Returns true when `to` was the expected part.
    fn advance(&mut self, to: PartId, stats: &TrackStats) -> bool {
        if to.msn != self.next.msn {
            if self.whole && self.in_segment > 0 && to.msn == self.next.msn + 1 {
                stats.whole_group(self.in_segment);
            }
            // A segment may end before the part the cursor waited for: moving
            // to the next segment's part 0 loses nothing.
            let skipped_segments = to.msn.saturating_sub(self.next.msn + 1)
                + u64::from(self.next.part == 0 && self.in_segment == 0 && to.msn > self.next.msn);
            if skipped_segments > 0 {
                stats
                    .group_gaps
                    .fetch_add(skipped_segments, Ordering::Relaxed);
            }
            if to.part > 0 {
                stats.lost_objects.fetch_add(to.part, Ordering::Relaxed);
            }
            self.in_segment = 0;
            self.whole = to.part == 0 && skipped_segments == 0;
        } else if to.part > self.next.part {
            stats
                .lost_objects
                .fetch_add(to.part - self.next.part, Ordering::Relaxed);
            self.whole = false;
        }
        let expected = to == self.next;
        self.next = to;
        expected
    }

    fn fetched(&mut self, part: PartId) {
        self.in_segment += 1;
        self.next = PartId {
            msn: part.msn,
            part: part.part + 1,
        };
    }
}

/// GETs what a player loads once before following a playlist (the
/// multivariant playlist, an init segment); failures count as HTTP errors.
async fn fetch_once(client: &mut Client, path: &str, shared: &HlsShared) {
    match client.get(path, Duration::from_secs(10)).await {
        Ok(r) if r.status == 200 => {}
        Ok(r) => {
            tracing::debug!(status = r.status, %path, "request refused");
            shared.http_errors.fetch_add(1, Ordering::Relaxed);
        }
        Err(err) => {
            tracing::debug!(error = %format!("{err:#}"), %path, "request failed");
            shared.http_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One media playlist of one player (`base` is its track directory), until
/// `end`; loads the multivariant playlist `master` first when given.
pub async fn follow(
    target: Target,
    base: String,
    master: Option<String>,
    stats: &TrackStats,
    shared: &HlsShared,
    end: Instant,
) {
    let mut client = Client::new(target);
    let limit = Duration::from_secs(10);
    if let Some(master) = master {
        fetch_once(&mut client, &master, shared).await;
    }
    fetch_once(&mut client, &format!("{base}/init.mp4"), shared).await;
    let mut cursor: Option<Cursor> = None;
    while Instant::now() < end {
        let path = match &cursor {
            None => format!("{base}/playlist.m3u8"),
            Some(c) => format!(
                "{base}/playlist.m3u8?_HLS_msn={}&_HLS_part={}",
                c.next.msn, c.next.part
            ),
        };
        shared.playlist_requests.fetch_add(1, Ordering::Relaxed);
        let playlist = tokio::select! {
            r = client.get(&path, limit) => r,
            _ = tokio::time::sleep_until(end) => return,
        };
        let playlist = match playlist {
            Ok(r) if r.status == 200 => Playlist::parse(&String::from_utf8_lossy(&r.body)),
            Ok(r) => {
                tracing::debug!(status = r.status, %path, "playlist request refused");
                None
            }
            Err(err) => {
                tracing::debug!(error = %format!("{err:#}"), %path, "playlist request failed");
                None
            }
        };
        let Some(playlist) = playlist else {
            shared.http_errors.fetch_add(1, Ordering::Relaxed);
            if cursor.take().is_some() {
                shared.resyncs.fetch_add(1, Ordering::Relaxed);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::time::sleep_until(end) => return,
            }
            continue;
        };
        let c = match cursor.as_mut() {
            Some(c) => c,
            // Join at the live edge: the part the server hints at next.
            None => {
                let start = playlist.preload_hint.or_else(|| {
                    playlist.parts.last().map(|p| PartId {
                        msn: p.msn,
                        part: p.part + 1,
                    })
                });
                let Some(start) = start else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                cursor.insert(Cursor::new(start))
            }
        };
        let mut todo: Vec<PartId> = playlist
            .parts
            .iter()
            .copied()
            .filter(|p| *p >= c.next)
            .collect();
        todo.sort();
        todo.dedup();
        for part in todo {
            c.advance(part, stats);
            shared.part_requests.fetch_add(1, Ordering::Relaxed);
            let path = format!("{base}/{}.{}.m4s", part.msn, part.part);
            let got = tokio::select! {
                r = client.get(&path, limit) => r,
                _ = tokio::time::sleep_until(end) => return,
            };
            match got {
                Ok(r) if r.status == 200 => {
                    stats.part(&r.body, now_us());
                }
                Ok(r) => {
                    tracing::debug!(status = r.status, %path, "part request refused");
                    shared.http_errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    tracing::debug!(error = %format!("{err:#}"), %path, "part request failed");
                    shared.http_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            c.fetched(part);
        }
        // The next part to wait for: the server's hint once it is ahead of us
        // (a segment that ended exactly at a part boundary has no part `next`).
        if let Some(hint) = playlist.preload_hint {
            if hint > c.next && hint.msn > c.next.msn {
                c.advance(hint, stats);
            }
        }
    }
}

/// One player: video and audio playlists side by side, starting at `start`.
pub async fn viewer(
    target: Target,
    namespace: String,
    tracks: Arc<Vec<(String, usize)>>,
    stats: Arc<Vec<TrackStats>>,
    shared: Arc<HlsShared>,
    start: Instant,
    end: Instant,
) {
    tokio::time::sleep_until(start).await;
    let loops = tracks.iter().map(|(name, i)| {
        let base = format!("/hls/{namespace}/{name}");
        let master = (*i == 0).then(|| format!("/hls/{namespace}/master.m3u8"));
        follow(target.clone(), base, master, &stats[*i], &shared, end)
    });
    futures::future::join_all(loops).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLIST: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXT-X-PART:DURATION=0.50000,URI=\"10.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI=\"10.1.m4s\"
#EXTINF:1.00000,
10.m4s
#EXT-X-PART:DURATION=0.50000,URI=\"11.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"11.1.m4s\"
";

    fn id(msn: u64, part: u64) -> PartId {
        PartId { msn, part }
    }

    #[test]
    fn parses_parts_and_hint() {
        let p = Playlist::parse(PLAYLIST).expect("parse");
        assert_eq!(p.media_sequence, 10);
        assert_eq!(p.parts, vec![id(10, 0), id(10, 1), id(11, 0)]);
        assert_eq!(p.preload_hint, Some(id(11, 1)));
        assert!(Playlist::parse("nonsense").is_none());
    }

    #[test]
    fn cursor_counts_skips_but_not_segment_ends() {
        let stats = TrackStats::default();
        let mut c = Cursor::new(id(5, 1));
        assert!(c.advance(id(5, 1), &stats));
        c.fetched(id(5, 1));
        // Segment 5 ended after part 1: part 6.0 is next, nothing lost.
        c.advance(id(6, 0), &stats);
        c.fetched(id(6, 0));
        c.advance(id(6, 1), &stats);
        c.fetched(id(6, 1));
        assert_eq!(stats.lost_objects.load(Ordering::Relaxed), 0);
        assert_eq!(stats.group_gaps.load(Ordering::Relaxed), 0);
        assert_eq!(stats.whole_groups.load(Ordering::Relaxed), 0);
        c.advance(id(7, 0), &stats);
        assert_eq!(stats.whole_groups.load(Ordering::Relaxed), 1);
        assert_eq!(stats.whole_group_objects.load(Ordering::Relaxed), 2);
        c.fetched(id(7, 0));
        // Skipping part 7.1 and all of segment 8.
        assert!(!c.advance(id(9, 1), &stats));
        assert_eq!(stats.group_gaps.load(Ordering::Relaxed), 1);
        assert_eq!(stats.lost_objects.load(Ordering::Relaxed), 1);
    }
}
