//! The I/O of repair (P2P-4): the session kept open to the repair source,
//! the FETCH that brings what a lagging parent has not sent, and each
//! track's repair loop beside its subscriptions. What to do and when is
//! [`crate::repair`]'s (sans-IO, table-tested); where the repair source is,
//! [`crate::topology::place_suspecting`]'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use moq_transport::coding::{KeyValuePairs, Location, TrackName};
use moq_transport::message::StandaloneFetch;
use moq_transport::session::Subscriber;
use strom_relay::{tls::Trust, to_track_namespace, upstream, Namespace, TrackCache};
use tokio::sync::watch;

use crate::media::{accept, connect, unix_micros, Freshness, MediaContext, PeerEvent};
use crate::repair::{Check, Feeding, Repair};
use crate::topology::Parent;
use crate::tracks::Arrivals;

/// How far past its newest object a repair FETCH asks (End Location: up to
/// and including the group before this many groups on).
const REPAIR_GROUPS: u64 = 3;
/// Where objects a lagging parent has not delivered come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RepairTarget {
    /// The edge (for the standby) or a peer.
    pub from: Parent<PeerId>,
    pub url: url::Url,
    pub trust: Trust,
    pub token: String,
}

/// An open session to the repair source.
#[derive(Clone)]
pub(crate) struct RepairSession {
    from: Parent<PeerId>,
    subscriber: Subscriber,
}

/// Keeps one session open to the current repair source.
pub(crate) async fn keep_repair_session(
    mut targets: watch::Receiver<Option<RepairTarget>>,
    sessions: watch::Sender<Option<RepairSession>>,
) {
    loop {
        let target = targets.borrow_and_update().clone();
        let Some(target) = target else {
            sessions.send_replace(None);
            if targets.changed().await.is_err() {
                return;
            }
            continue;
        };
        let Ok((session, subscriber)) = connect(&target.url, &target.trust, &target.token).await
        else {
            tracing::debug!(from = %target.from, "repair source unreachable");
            sessions.send_replace(None);
            let _ = tokio::time::timeout(Duration::from_secs(1), targets.changed()).await;
            continue;
        };
        tracing::debug!(from = %target.from, "repair session open");
        sessions.send_replace(Some(RepairSession {
            from: target.from.clone(),
            subscriber,
        }));
        tokio::select! {
            res = session.run() => {
                tracing::debug!(from = %target.from, ended = ?res.err(), "repair session ended");
                sessions.send_replace(None);
                let _ = tokio::time::timeout(Duration::from_secs(1), targets.changed()).await;
            }
            _ = targets.changed() => {}
        }
    }
}

/// Fetches what follows the track's newest object from the repair source;
/// returns how many objects it stored.
async fn repair(
    source: RepairSession,
    namespace: Namespace,
    track: Arc<TrackCache>,
    fresh: Arc<Freshness>,
    ctx: MediaContext,
) -> u64 {
    let (Some((newest_group, _)), Some((group, next, _))) = (track.largest(), track.frontier())
    else {
        return 0;
    };
    // One FETCH from where a viewer waits up to a few groups on. The answer
    // stops after any group the source still has open (see the server's
    // `serve_fetch`), so an object of a later group tells that the waited-on
    // group is whole there: close it here too, or viewers would wait for
    // its end from the lagging parent.
    let request = StandaloneFetch {
        track_namespace: to_track_namespace(&namespace),
        track_name: TrackName::from(track.name.as_str()),
        start_location: Location::new(group, next),
        end_location: Location::new(newest_group + REPAIR_GROUPS, 0),
    };
    let mut subscriber = source.subscriber.clone();
    let mut stored = 0u64;
    let mut open = group != newest_group;
    // The budget holds whatever the source does (a source that never
    // answers must not hold the track's one repair); what arrived within it
    // stays, and the next check asks from there.
    let result = tokio::time::timeout(crate::repair::FETCH_BUDGET, async {
        let mut fetch = subscriber.fetch(request, KeyValuePairs::default()).await?;
        // REQUEST_ERROR (nothing newer there) is the common answer.
        fetch.ok().await?;
        while let Some((fetched_group, object)) =
            upstream::next_fetched(&mut fetch, &track.name).await?
        {
            let size = object.payload.len() as u64;
            let verdict = accept(
                &ctx,
                &namespace,
                &track,
                &fresh,
                fetched_group,
                object,
                &source.from,
            );
            // Only an object whose signature holds says the waited-on
            // group is whole at the source.
            if open && fetched_group > group && verdict.is_some() {
                // The parent has not even closed it: that counts as lag.
                track.finish_group(group);
                open = false;
                stored += 1;
            }
            if verdict == Some(true) {
                stored += 1;
                ctx.counters
                    .objects_repaired
                    .fetch_add(1, Ordering::Relaxed);
                if source.from == Parent::Edge {
                    ctx.counters
                        .repair_bytes_from_edge
                        .fetch_add(size, Ordering::Relaxed);
                }
            }
        }
        anyhow::Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("out of its budget")));
    if let Err(e) = result {
        tracing::trace!(from = %source.from, track = %track.name, error = %format!("{e:#}"), "repair fetch ended");
    }
    stored
}

/// What the track's current subscription is, for its repair checks
/// (`None` between parents).
#[derive(Clone)]
pub(crate) struct Feed {
    pub(crate) parent: Parent<PeerId>,
    pub(crate) arrivals: Arc<Arrivals>,
}

/// Checks the track every [`crate::repair::CHECK_EVERY`] for as long as it
/// is pulled and FETCHes from the repair source when [`Repair`] says so.
/// Between parents the last subscription's arrivals still tell how long
/// the track has had no news.
pub(crate) async fn keep_repaired(
    namespace: &Namespace,
    track: &Arc<TrackCache>,
    fresh: &Arc<Freshness>,
    mut feed: watch::Receiver<Option<Feed>>,
    ctx: &MediaContext,
) {
    let mut policy = Repair::new(ctx.repair_after);
    let mut check = tokio::time::interval(crate::repair::CHECK_EVERY);
    let mut repairing: Option<futures::future::BoxFuture<'static, u64>> = None;
    let mut last: Option<Arc<Arrivals>> = None;
    loop {
        tokio::select! {
            stored = async { repairing.as_mut().expect("guarded").await }, if repairing.is_some() => {
                repairing = None;
                if stored > 0 {
                    tracing::debug!(track = %track.name, objects = stored, "repaired past a lagging parent");
                }
                if policy.repaired(Instant::now(), stored) {
                    check.reset_immediately();
                }
            }
            changed = feed.changed() => {
                if changed.is_err() {
                    // The subscriptions are over; `pull_track` ends us.
                    std::future::pending::<()>().await;
                }
                policy.new_parent();
                if let Some(f) = feed.borrow_and_update().as_ref() {
                    last = Some(f.arrivals.clone());
                }
            }
            _ = check.tick() => {
                let parent = feed.borrow().as_ref().map(|f| f.parent.clone());
                let peer = match parent {
                    Some(Parent::Peer(p)) => Some(p),
                    _ => None,
                };
                let source = ctx.repairs.borrow().clone();
                let since_news = last.as_ref().map_or(Duration::ZERO, |a| {
                    a.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
                });
                let verdict = policy.check(Check {
                    now: Instant::now(),
                    lateness: fresh.lateness(track, unix_micros()),
                    since_news,
                    delivered: last.as_ref().map_or(0, |a| a.count.load(Ordering::Relaxed)),
                    source: source.is_some(),
                    parent: match parent {
                        Some(Parent::Peer(_)) => Feeding::Peer,
                        Some(Parent::Edge) => Feeding::Edge,
                        None => Feeding::Nobody,
                    },
                    closed: track.is_closed(),
                });
                if let (true, Some(source)) = (verdict.fetch, source) {
                    tracing::trace!(track = %track.name, since_news_ms = since_news.as_millis() as u64, frontier = ?track.frontier(), largest = ?track.largest(), "repair due");
                    repairing = Some(Box::pin(repair(
                        source,
                        namespace.clone(),
                        track.clone(),
                        fresh.clone(),
                        ctx.clone(),
                    )));
                }
                if let (true, Some(p)) = (verdict.parent_behind, peer) {
                    tracing::warn!(peer = %p, track = %track.name, "parent fell behind");
                    let _ = ctx.events.send(PeerEvent::Silent(p));
                }
            }
        }
    }
}
