//! MoQT viewers: each is its own QUIC connection to the edge that SUBSCRIBEs
//! to the media tracks with moq-transport directly (no cache in between) and
//! records, per object, receipt time minus the origin's `prft` wall clock,
//! bytes, and continuity of object and group ids.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use moq_transport::coding::TrackNamespace;
use moq_transport::data::ObjectStatus;
use moq_transport::serve::{self, SubgroupReader, TrackReaderMode};
use moq_transport::session::Subscriber;
use rand::Rng;
use strom_relay::tls::Trust;
use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::stats::{now_us, prft_in_prefix, GroupContinuity, TrackStats};

/// Bytes of each object kept to find its `prft` (it leads the object).
const HEAD: usize = 256;

/// What every MoQT viewer connects to.
pub struct MoqConfig {
    pub url: url::Url,
    pub trust: Trust,
    pub namespace: TrackNamespace,
    pub tracks: Vec<String>,
    /// Reconnect after a random lifetime in this range (churn), or stay.
    pub churn: Option<(Duration, Duration)>,
}

/// Counters shared by all MoQT viewers.
pub struct MoqShared {
    /// Per track, in the order of [`MoqConfig::tracks`].
    pub tracks: Vec<TrackStats>,
    pub sessions: AtomicU64,
    pub sessions_active: AtomicU64,
    pub connect_failures: AtomicU64,
    pub subscribe_failures: AtomicU64,
    /// Sessions that ended (or whose tracks ended) before they were meant to.
    pub session_errors: AtomicU64,
    /// Reconnections by plan (churn).
    pub rejoins: AtomicU64,
    /// From starting the connection to the first object of the first track, µs.
    pub join_time: Histogram,
}

impl MoqShared {
    pub fn new(tracks: usize) -> MoqShared {
        MoqShared {
            tracks: (0..tracks).map(|_| TrackStats::default()).collect(),
            sessions: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            subscribe_failures: AtomicU64::new(0),
            session_errors: AtomicU64::new(0),
            rejoins: AtomicU64::new(0),
            join_time: Histogram::default(),
        }
    }
}

/// One viewer: starts at `start`, stays (or churns) until `end`.
pub async fn viewer(config: Arc<MoqConfig>, shared: Arc<MoqShared>, start: Instant, end: Instant) {
    tokio::time::sleep_until(start).await;
    let mut first = true;
    while Instant::now() < end {
        let life_end = match config.churn {
            Some((lo, hi)) => {
                let life = rand::thread_rng().gen_range(lo..=hi);
                (Instant::now() + life).min(end)
            }
            None => end,
        };
        if !first {
            shared.rejoins.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        if let Err(err) = session(&config, &shared, life_end).await {
            tracing::warn!(error = %format!("{err:#}"), "MoQT viewer session failed");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::time::sleep_until(end) => return,
            }
        }
    }
}

/// Decrements the active-session gauge when a session ends.
struct Active<'a>(&'a AtomicU64);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One QUIC connection that reads every track until `until`.
async fn session(config: &MoqConfig, shared: &MoqShared, until: Instant) -> anyhow::Result<()> {
    let began = Instant::now();
    let connect = strom_relay::upstream::connect(&config.url, &config.trust);
    let (session, subscriber) = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(x)) => x,
        Ok(Err(err)) => {
            shared.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Err(err.context("connecting"));
        }
        Err(_) => {
            shared.connect_failures.fetch_add(1, Ordering::Relaxed);
            bail!("connecting timed out");
        }
    };
    shared.sessions.fetch_add(1, Ordering::Relaxed);
    shared.sessions_active.fetch_add(1, Ordering::Relaxed);
    let _active = Active(&shared.sessions_active);
    let joined = AtomicBool::new(false);
    let work = async {
        let mut tracks: FuturesUnordered<_> = config
            .tracks
            .iter()
            .zip(&shared.tracks)
            .map(|(name, stats)| {
                let on_first = || {
                    if !joined.swap(true, Ordering::Relaxed) {
                        let us = began.elapsed().as_micros() as u64;
                        shared.join_time.record(us);
                    }
                };
                follow_track(
                    subscriber.clone(),
                    config.namespace.clone(),
                    name,
                    stats,
                    shared,
                    on_first,
                )
            })
            .collect();
        match tracks.next().await {
            Some(Err(err)) => Err(err),
            _ => Err(anyhow::anyhow!("a track ended")),
        }
    };
    let result = tokio::select! {
        res = session.run() => Err(match res {
            Ok(()) => anyhow::anyhow!("session closed"),
            Err(err) => anyhow::Error::from(err).context("session"),
        }),
        res = work => res,
        _ = tokio::time::sleep_until(until) => Ok(()),
    };
    if result.is_err() {
        shared.session_errors.fetch_add(1, Ordering::Relaxed);
    }
    // Dropping the session and subscriber closes the QUIC connection.
    result
}

/// SUBSCRIBEs to one track and reads its group streams until it ends.
async fn follow_track(
    mut subscriber: Subscriber,
    namespace: TrackNamespace,
    name: &str,
    stats: &TrackStats,
    shared: &MoqShared,
    on_first: impl Fn(),
) -> anyhow::Result<()> {
    let (writer, reader) = serve::Track::new(namespace, name).produce();
    let subscription = match subscriber.subscribe_open(writer).await {
        Ok(s) => s,
        Err(err) => {
            shared.subscribe_failures.fetch_add(1, Ordering::Relaxed);
            return Err(anyhow::Error::from(err).context(format!("SUBSCRIBE {name}")));
        }
    };
    let mode = tokio::select! {
        mode = reader.mode() => mode.with_context(|| format!("track {name}"))?,
        res = subscription.closed() => {
            res.with_context(|| format!("track {name} closed"))?;
            bail!("track {name} closed before its first group");
        }
    };
    let TrackReaderMode::Subgroups(mut subgroups) = mode else {
        bail!("track {name} is not delivered as subgroups");
    };
    let mut seen = BTreeSet::new();
    let mut groups = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = subgroups.next() => {
                let Some(subgroup) = next.with_context(|| format!("track {name}"))? else {
                    bail!("track {name} ended");
                };
                let g = subgroup.group_id;
                let first = seen.is_empty();
                note_group(&mut seen, g, stats);
                groups.push(read_group(subgroup, stats, first, &on_first));
            }
            Some(()) = groups.next(), if !groups.is_empty() => {}
            res = subscription.closed() => {
                res.with_context(|| format!("track {name} closed"))?;
                bail!("track {name} subscription closed");
            }
        }
    }
}

/// Counts missing group ids as they show, undoing a count when a group
/// thought missing arrives late (group streams run concurrently).
fn note_group(seen: &mut BTreeSet<u64>, g: u64, stats: &TrackStats) {
    let Some(&max) = seen.last() else {
        seen.insert(g);
        return;
    };
    if !seen.insert(g) {
        return;
    }
    if g > max + 1 {
        stats.group_gaps.fetch_add(g - max - 1, Ordering::Relaxed);
    } else if g < max {
        let _ = stats
            .group_gaps
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
    // Keep the set small: only the recent past can still arrive late.
    while seen.len() > 64 {
        seen.pop_first();
    }
}

/// Reads one group stream: every object, its latency and continuity.
async fn read_group(
    mut subgroup: SubgroupReader,
    stats: &TrackStats,
    first_group: bool,
    on_first: &impl Fn(),
) {
    let mut continuity = GroupContinuity::default();
    let result: Result<(), serve::ServeError> = async {
        while let Some(mut object) = subgroup.next().await? {
            let id = object.info.object_id;
            let normal = object.info.status == ObjectStatus::NormalObject;
            // Keep only the head of the object (where its prft is), not the
            // whole payload: fewer large allocations in a long churn run.
            let mut len = 0usize;
            let mut head = BytesMut::new();
            while let Some(chunk) = object.read().await? {
                len += chunk.len();
                if head.len() < HEAD {
                    let take = chunk.len().min(HEAD - head.len());
                    head.extend_from_slice(&chunk[..take]);
                }
            }
            if !normal && len == 0 {
                continue;
            }
            let received = now_us();
            on_first();
            let skipped = continuity.object(id, !first_group);
            if skipped > 0 {
                stats.lost_objects.fetch_add(skipped, Ordering::Relaxed);
            }
            stats.record(len, prft_in_prefix(&head), received, !first_group);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) if continuity.whole() => stats.whole_group(continuity.received),
        Ok(()) => {}
        Err(err) => {
            tracing::debug!(error = %err, "group stream ended in error");
            stats.stream_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_gaps_are_counted_and_undone() {
        let stats = TrackStats::default();
        let mut seen = BTreeSet::new();
        for g in [10, 11, 13] {
            note_group(&mut seen, g, &stats);
        }
        assert_eq!(stats.group_gaps.load(Ordering::Relaxed), 1);
        note_group(&mut seen, 12, &stats);
        assert_eq!(stats.group_gaps.load(Ordering::Relaxed), 0);
        note_group(&mut seen, 12, &stats);
        note_group(&mut seen, 20, &stats);
        assert_eq!(stats.group_gaps.load(Ordering::Relaxed), 6);
    }
}
