//! Shared per-track counters that every session task adds to, the wall-clock
//! helpers latency is measured with, and the in-group continuity check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::histogram::{Histogram, Snapshot};

/// Microseconds since the Unix epoch on this machine's clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The wall clocks (Unix µs) in the first and the last `prft` box of a
/// concatenation of CMAF chunks (an object, or an LL-HLS part). Walks the
/// top-level boxes only, without allocating; None when there is no `prft`
/// or the boxes do not parse.
pub fn prft_range(data: &[u8]) -> Option<(u64, u64)> {
    let mut pos = 0usize;
    let mut first = None;
    let mut last = None;
    while pos < data.len() {
        let rest = &data[pos..];
        let header = rest.get(..8)?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let (head, size) = match size32 {
            0 => (8usize, rest.len() as u64),
            1 => {
                let b: [u8; 8] = rest.get(8..16)?.try_into().ok()?;
                (16, u64::from_be_bytes(b))
            }
            n => (8, u64::from(n)),
        };
        if size < head as u64 || size > rest.len() as u64 {
            return None;
        }
        if &header[4..8] == b"prft" {
            // version+flags (4), reference_track_ID (4), ntp_timestamp (8).
            let ntp: [u8; 8] = rest.get(head + 8..head + 16)?.try_into().ok()?;
            let us = strom_media::ntp_to_unix_micros(u64::from_be_bytes(ntp));
            first.get_or_insert(us);
            last = Some(us);
        }
        pos += size as usize;
    }
    Some((first?, last?))
}

/// The wall clock (Unix µs) of the first `prft` box in the first bytes of
/// an object: tolerates a prefix cut anywhere after the `prft` box, so
/// that a viewer need not keep whole objects.
pub fn prft_in_prefix(prefix: &[u8]) -> Option<u64> {
    let mut pos = 0usize;
    loop {
        let rest = prefix.get(pos..)?;
        let size = u64::from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?));
        if rest.get(4..8)? == b"prft" {
            let ntp: [u8; 8] = rest.get(16..24)?.try_into().ok()?;
            return Some(strom_media::ntp_to_unix_micros(u64::from_be_bytes(ntp)));
        }
        // Another box first (styp, free…): skip it if its size is plain.
        if size < 8 {
            return None;
        }
        pos = pos.checked_add(usize::try_from(size).ok()?)?;
    }
}

/// What all sessions of one transport measured on one track.
#[derive(Default)]
pub struct TrackStats {
    /// Objects (MoQT) or parts (HLS) received.
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    /// Objects missing inside groups (or parts missing inside segments).
    pub lost_objects: AtomicU64,
    /// Whole groups (segments) missing between received ones.
    pub group_gaps: AtomicU64,
    /// Groups seen from their first object to their end, and their objects:
    /// the average sizes a missing group is estimated with.
    pub whole_groups: AtomicU64,
    pub whole_group_objects: AtomicU64,
    /// Receipt minus the origin's ingest wall clock (first chunk), µs.
    pub latency: Histogram,
    /// The same without the catch-up a subscription starts with (MoQT: the
    /// first group, which the edge replays from its cache).
    pub latency_live: Histogram,
    /// HLS only: receipt minus the wall clock of the part's last chunk.
    pub latency_last: Histogram,
    /// Objects without a parseable `prft` (no latency sample).
    pub no_prft: AtomicU64,
    /// Latencies below zero (clock steps): recorded as 0.
    pub negative: AtomicU64,
    /// Group streams that ended in an error (reset) rather than a FIN.
    pub stream_errors: AtomicU64,
}

impl TrackStats {
    /// Records one received HLS part (whole) at `received_us`.
    pub fn part(&self, payload: &[u8], received_us: u64) {
        let range = prft_range(payload);
        self.record(payload.len(), range.map(|r| r.0), received_us, true);
        if let Some((_, last)) = range {
            self.latency_last.record(received_us.saturating_sub(last));
        }
    }

    /// Records one object of `len` bytes whose first `prft` says `produced_us`.
    pub fn record(&self, len: usize, produced_us: Option<u64>, received_us: u64, live: bool) {
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        match produced_us {
            Some(first) => {
                let lat = self.latency_of(received_us, first);
                self.latency.record(lat);
                if live {
                    self.latency_live.record(lat);
                }
            }
            None => {
                self.no_prft.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn latency_of(&self, received_us: u64, produced_us: u64) -> u64 {
        if received_us < produced_us {
            self.negative.fetch_add(1, Ordering::Relaxed);
        }
        received_us.saturating_sub(produced_us)
    }

    pub fn whole_group(&self, objects: u64) {
        self.whole_groups.fetch_add(1, Ordering::Relaxed);
        self.whole_group_objects
            .fetch_add(objects, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TrackSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TrackSnapshot {
            objects: l(&self.objects),
            bytes: l(&self.bytes),
            lost_objects: l(&self.lost_objects),
            group_gaps: l(&self.group_gaps),
            whole_groups: l(&self.whole_groups),
            whole_group_objects: l(&self.whole_group_objects),
            latency: self.latency.snapshot(),
            latency_live: self.latency_live.snapshot(),
            latency_last: self.latency_last.snapshot(),
            no_prft: l(&self.no_prft),
            negative: l(&self.negative),
            stream_errors: l(&self.stream_errors),
        }
    }
}

/// Plain figures of a [`TrackStats`], mergeable over tracks.
#[derive(Clone, Debug, Default)]
pub struct TrackSnapshot {
    pub objects: u64,
    pub bytes: u64,
    pub lost_objects: u64,
    pub group_gaps: u64,
    pub whole_groups: u64,
    pub whole_group_objects: u64,
    pub latency: Snapshot,
    pub latency_live: Snapshot,
    pub latency_last: Snapshot,
    pub no_prft: u64,
    pub negative: u64,
    pub stream_errors: u64,
}

impl TrackSnapshot {
    /// Average objects per group, from the groups seen whole.
    pub fn objects_per_group(&self) -> Option<f64> {
        (self.whole_groups > 0).then(|| self.whole_group_objects as f64 / self.whole_groups as f64)
    }

    /// Objects lost in total: the in-group gaps plus the missing groups at
    /// this track's average group size.
    pub fn lost_total(&self) -> u64 {
        let per_group = self.objects_per_group().unwrap_or(0.0);
        self.lost_objects + (self.group_gaps as f64 * per_group).round() as u64
    }

    pub fn merge(&mut self, o: &TrackSnapshot) {
        self.objects += o.objects;
        self.bytes += o.bytes;
        self.lost_objects += o.lost_objects;
        self.group_gaps += o.group_gaps;
        self.whole_groups += o.whole_groups;
        self.whole_group_objects += o.whole_group_objects;
        self.latency.merge(&o.latency);
        self.latency_live.merge(&o.latency_live);
        self.latency_last.merge(&o.latency_last);
        self.no_prft += o.no_prft;
        self.negative += o.negative;
        self.stream_errors += o.stream_errors;
    }
}

/// Continuity of object ids inside one group, as they arrive in order.
#[derive(Debug, Default)]
pub struct GroupContinuity {
    first: Option<u64>,
    next: u64,
    pub received: u64,
    pub lost: u64,
}

impl GroupContinuity {
    /// Notes object `id`; returns how many ids were skipped before it.
    /// `expect_start` says the group should begin at object 0 (any group
    /// but the first of a subscription).
    pub fn object(&mut self, id: u64, expect_start: bool) -> u64 {
        self.received += 1;
        let expected = match self.first {
            None => {
                self.first = Some(id);
                if expect_start {
                    0
                } else {
                    id
                }
            }
            Some(_) => self.next,
        };
        let skipped = id.saturating_sub(expected);
        self.lost += skipped;
        self.next = self.next.max(id + 1);
        skipped
    }

    /// True when the group was seen from object 0 without gaps.
    pub fn whole(&self) -> bool {
        self.first == Some(0) && self.lost == 0
    }
}

/// Missing ids between the smallest and largest of a set of group ids.
pub fn missing_between(ids: &std::collections::BTreeSet<u64>) -> u64 {
    match (ids.first(), ids.last()) {
        (Some(a), Some(b)) => (b - a + 1).saturating_sub(ids.len() as u64),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use strom_media::{parse_chunk, write_chunk, ProducerTime, Sample};

    fn chunk(seq: u32, wall: u64) -> Bytes {
        let samples = [Sample {
            duration: 3000,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2, 3]),
            keyframe: seq == 1,
            cts_offset: 0,
        }];
        let prft = Some(ProducerTime {
            wall_clock_unix_micros: wall,
        });
        write_chunk(1, seq, u64::from(seq) * 3000, &samples, prft).expect("chunk")
    }

    #[test]
    fn prft_agrees_with_the_media_parser() {
        let c = chunk(1, 1_700_000_000_123_456);
        let parsed = parse_chunk(&c).expect("parse").prft.expect("prft");
        assert_eq!(
            prft_range(&c),
            Some((parsed.unix_micros, parsed.unix_micros))
        );
        // A part: several chunks; parse_chunk takes the first, we see both ends.
        let mut part = c.to_vec();
        part.extend_from_slice(&chunk(2, 1_700_000_000_223_456));
        let first = parse_chunk(&part).expect("parse part").prft.expect("prft");
        let (a, b) = prft_range(&part).expect("range");
        assert_eq!(a, first.unix_micros);
        assert_eq!(b - a, 100_000);
        assert_eq!(prft_range(b"garbage"), None);
        for cut in [24, 40, part.len()] {
            assert_eq!(prft_in_prefix(&part[..cut]), Some(a), "cut at {cut}");
        }
        assert_eq!(prft_in_prefix(&part[..20]), None);
        assert_eq!(prft_in_prefix(b"garbage"), None);
        assert_eq!(prft_range(&part[..part.len() - 1]), None);
    }

    #[test]
    fn continuity_counts_skips() {
        let mut g = GroupContinuity::default();
        for id in [0, 1, 2, 5, 6] {
            g.object(id, true);
        }
        assert_eq!((g.received, g.lost), (5, 2));
        assert!(!g.whole());
        let mut first = GroupContinuity::default();
        first.object(7, false);
        first.object(8, false);
        assert_eq!(first.lost, 0);
        assert!(!first.whole());
        let mut late = GroupContinuity::default();
        late.object(3, true);
        assert_eq!(late.lost, 3);
    }

    #[test]
    fn missing_groups() {
        let ids: std::collections::BTreeSet<u64> = [4, 5, 7, 10].into_iter().collect();
        assert_eq!(missing_between(&ids), 3);
        assert_eq!(missing_between(&Default::default()), 0);
    }

    #[test]
    fn lost_total_uses_average_group_size() {
        let s = TrackSnapshot {
            lost_objects: 2,
            group_gaps: 1,
            whole_groups: 2,
            whole_group_objects: 60,
            ..Default::default()
        };
        assert_eq!(s.lost_total(), 32);
    }
}
