//! The agent's media plane: one MoQT upstream at a time — the edge for the
//! site's leader, another agent for everyone else — that can change under
//! the agent's feet without its local viewers noticing.
//!
//! Broadcasts and their track caches outlive upstream sessions. When the
//! parent changes (a peer left, fell silent or was caught altering media),
//! each track subscribes again on the new session, starting right after the
//! newest object it holds (MoQT AbsoluteStart): the new parent sends exactly
//! what the gap missed, across group boundaries, and nothing twice. Every
//! object is checked against the origins' media keys before it enters the
//! cache, i.e. before this agent serves or forwards it.
//!
//! A parent that falls behind does not make viewers wait (P2P-4): when a
//! live track has had nothing new from its parent for the repair deadline,
//! the agent FETCHes what follows its newest object from its repair source
//! (the standby from the edge, everyone else from a peer, see
//! [`crate::topology::place`]), over a second session kept open for that,
//! every 100 ms until the parent catches up or is passed over. When to
//! repair and when to pass a parent over is decided by [`crate::repair`]
//! (sans-IO, table-tested); this file does the I/O around it.
//!
//! Why one file of ~880 lines: the upstream session, each track's
//! subscription with its repair loop, and the signature check share the
//! session generation and the freshness clock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::PeerId;
use moq_transport::coding::Location;
use moq_transport::coding::{KeyValuePairs, TrackName};
use moq_transport::message::{FilterType, StandaloneFetch, SubscriptionFilter};
use moq_transport::serve::{self, TrackReaderMode};
use moq_transport::session::{NamespaceEvent, Subscriber};
use strom_relay::{
    from_track_namespace, tls::Trust, to_track_namespace, upstream, Broadcast, Broadcasts,
    CacheLimits, Namespace, Object, TrackCache, UpstreamState,
};
use strom_token::media::{MediaSignatureError, ObjectPlace};
use strom_token::Verifier;
use tokio::sync::{mpsc, watch};

use crate::repair::{Check, Repair};
use crate::topology::Parent;

/// How far past its newest object a repair FETCH asks (End Location: up to
/// and including the group before this many groups on).
const REPAIR_GROUPS: u64 = 3;
/// Broadcasts the new parent does not announce within this time have ended.
const REANNOUNCE_GRACE: Duration = Duration::from_secs(6);

/// Where to pull from now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub parent: Parent<PeerId>,
    pub url: url::Url,
    pub trust: Trust,
    /// Presented as AUTHORIZATION TOKEN (this agent's ticket).
    pub token: String,
    /// Announcements under this prefix (the tenant).
    pub prefix: Vec<String>,
}

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

/// Something the media plane learned about a peer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PeerEvent {
    /// Unreachable, or a live track from it stalled.
    Silent(PeerId),
    /// Sent an object whose signature does not hold.
    Tampered(PeerId),
}

/// Counters of the agent's media plane (P2P-6).
#[derive(Default)]
pub struct AgentCounters {
    pub bytes_from_edge: AtomicU64,
    pub bytes_from_peers: AtomicU64,
    pub objects_from_edge: AtomicU64,
    pub objects_from_peers: AtomicU64,
    pub objects_verified: AtomicU64,
    pub objects_rejected: AtomicU64,
    pub objects_unverified: AtomicU64,
    pub parent_switches: AtomicU64,
    /// Times a parent stalled or could not be reached.
    pub stalls: AtomicU64,
    pub upstream_is_edge: AtomicU64,
    /// Objects fetched from the repair source because the parent lagged.
    pub objects_repaired: AtomicU64,
    /// Of those, bytes fetched from the edge (the WAN cost of repair).
    pub repair_bytes_from_edge: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct MediaContext {
    pub broadcasts: Arc<Broadcasts>,
    pub counters: Arc<AgentCounters>,
    pub limits: CacheLimits,
    /// How long a track stays subscribed after its last reader left.
    pub idle: Duration,
    pub verifier: Arc<Verifier>,
    pub events: mpsc::UnboundedSender<PeerEvent>,
    /// A live track with nothing new from its parent for this long is
    /// repaired from the repair source.
    pub repair_after: Duration,
    pub repairs: watch::Receiver<Option<RepairSession>>,
    /// Testing only: alter every object after checking it (a hostile agent).
    pub tamper: bool,
}

#[derive(Clone)]
struct Session {
    generation: u64,
    subscriber: Subscriber,
    parent: Parent<PeerId>,
}

/// Follows `targets` for ever: one upstream session at a time.
pub(crate) async fn run(mut targets: watch::Receiver<Option<Target>>, ctx: MediaContext) {
    let (sessions_tx, sessions) = watch::channel(None::<Session>);
    let mut local: HashMap<Namespace, Arc<Broadcast>> = HashMap::new();
    let mut generation = 0u64;
    let mut previous: Option<Parent<PeerId>> = None;
    loop {
        let target = targets.borrow_and_update().clone();
        let Some(target) = target else {
            if targets.changed().await.is_err() {
                return;
            }
            continue;
        };
        let (session, subscriber) = match connect(&target.url, &target.trust, &target.token).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(parent = %target.parent, error = %format!("{e:#}"), "upstream unreachable");
                if let Parent::Peer(p) = target.parent {
                    let _ = ctx.events.send(PeerEvent::Silent(p));
                }
                // Wait for another target, or retry the same one shortly.
                let _ = tokio::time::timeout(Duration::from_millis(500), targets.changed()).await;
                continue;
            }
        };
        generation += 1;
        if previous.as_ref() != Some(&target.parent) {
            if previous.is_some() {
                ctx.counters.parent_switches.fetch_add(1, Ordering::Relaxed);
            }
            previous = Some(target.parent.clone());
        }
        ctx.counters
            .upstream_is_edge
            .store(u64::from(target.parent == Parent::Edge), Ordering::Relaxed);
        tracing::info!(parent = %target.parent, url = %target.url, "upstream connected");
        sessions_tx.send_replace(Some(Session {
            generation,
            subscriber: subscriber.clone(),
            parent: target.parent.clone(),
        }));
        let outcome = tokio::select! {
            res = session.run() => res.context("upstream session").map(|_| ()),
            res = follow(&target, subscriber, &mut local, &sessions, &ctx) => res,
            _ = targets.changed() => Ok(()),
        };
        sessions_tx.send_replace(None);
        if let Err(e) = outcome {
            tracing::info!(parent = %target.parent, error = %format!("{e:#}"), "upstream session ended");
            if let Parent::Peer(p) = target.parent {
                if targets.borrow().as_ref() == Some(&target) {
                    let _ = ctx.events.send(PeerEvent::Silent(p));
                }
            }
        }
    }
}

/// A session to a parent or repair source, given up after 3 s.
async fn connect(
    url: &url::Url,
    trust: &Trust,
    token: &str,
) -> anyhow::Result<(moq_transport::session::Session, Subscriber)> {
    tokio::time::timeout(
        Duration::from_secs(3),
        upstream::connect_with_token(url, trust, Some(token)),
    )
    .await
    .context("timed out")?
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
    let (Some((newest_group, _)), Some((group, next, _))) = (track.largest(), frontier(&track))
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
            if open && fetched_group > group {
                // The parent has not even closed it: that counts as lag.
                track.finish_group(group);
                open = false;
                stored += 1;
            }
            let size = object.payload.len() as u64;
            if accept(
                &ctx,
                &namespace,
                &track,
                &fresh,
                fetched_group,
                object,
                &source.from,
            ) {
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

/// Learns broadcasts from the current parent; they persist across parents.
async fn follow(
    target: &Target,
    mut subscriber: Subscriber,
    local: &mut HashMap<Namespace, Arc<Broadcast>>,
    sessions: &watch::Receiver<Option<Session>>,
    ctx: &MediaContext,
) -> anyhow::Result<()> {
    let namespaces = upstream::announcements(&mut subscriber, &target.prefix).await?;
    let mut seen: HashSet<Namespace> = HashSet::new();
    let grace = tokio::time::sleep(REANNOUNCE_GRACE);
    tokio::pin!(grace);
    let mut grace_over = false;
    loop {
        tokio::select! {
            event = namespaces.next() => match event? {
                Some(NamespaceEvent::Added(ns)) => {
                    let Ok(ns) = from_track_namespace(&ns) else { continue };
                    seen.insert(ns.clone());
                    let alive = local.get(&ns).is_some_and(|b| {
                        ctx.broadcasts.get(&ns).is_some_and(|c| Arc::ptr_eq(&c, b))
                    });
                    if alive {
                        continue;
                    }
                    let Some((broadcast, rx)) = upstream::adopt(&ctx.broadcasts, &ns, ctx.limits) else {
                        continue;
                    };
                    tracing::info!(namespace = %ns, "broadcast available");
                    local.insert(ns, broadcast.clone());
                    tokio::spawn(serve_tracks(broadcast, rx, sessions.clone(), ctx.clone()));
                }
                Some(NamespaceEvent::Removed(ns)) => {
                    if let Ok(ns) = from_track_namespace(&ns) {
                        seen.remove(&ns);
                        if let Some(b) = local.remove(&ns) {
                            tracing::info!(namespace = %ns, "broadcast ended");
                            ctx.broadcasts.remove(&b);
                        }
                    }
                }
                None => bail!("upstream ended the namespace subscription"),
            },
            _ = &mut grace, if !grace_over => {
                grace_over = true;
                local.retain(|ns, b| {
                    let keep = seen.contains(ns);
                    if !keep {
                        tracing::info!(namespace = %ns, "broadcast no longer announced");
                        ctx.broadcasts.remove(b);
                    }
                    keep
                });
            }
        }
    }
}

async fn serve_tracks(
    broadcast: Arc<Broadcast>,
    mut requests: mpsc::UnboundedReceiver<Arc<TrackCache>>,
    sessions: watch::Receiver<Option<Session>>,
    ctx: MediaContext,
) {
    while let Some(track) = requests.recv().await {
        tokio::spawn(pull_track(
            broadcast.clone(),
            track,
            sessions.clone(),
            ctx.clone(),
        ));
    }
}

enum Ended {
    /// Nobody reads the track any more.
    Idle,
    /// The parent changed: subscribe on the new session.
    Switched,
    /// The subscription ended or was refused on this session.
    Closed(anyhow::Error),
}

/// Keeps one track fed, across parents, while anyone reads it; the
/// relay's [`upstream::Lifecycle`] decides where each subscription starts,
/// when to let go, and what follows the end of one.
async fn pull_track(
    broadcast: Arc<Broadcast>,
    track: Arc<TrackCache>,
    mut sessions: watch::Receiver<Option<Session>>,
    ctx: MediaContext,
) {
    let mut life = upstream::Lifecycle::new(upstream::Policy::agent(ctx.idle));
    let mut idle_check = tokio::time::interval(Duration::from_millis(500));
    let fresh = Arc::new(Freshness::default());
    loop {
        if track.is_closed() {
            break;
        }
        let current = sessions.borrow_and_update().clone();
        let Some(session) = current else {
            tokio::select! {
                changed = sessions.changed() => if changed.is_err() { break },
                _ = idle_check.tick() => if !life.wanted(track.demand(Instant::now())) { break },
            }
            continue;
        };
        let how = match subscribe_once(
            &broadcast,
            &track,
            &fresh,
            &session,
            &mut sessions,
            &ctx,
            &mut life,
        )
        .await
        {
            Ended::Idle => break,
            Ended::Switched => upstream::Ending::Switched,
            Ended::Closed(err) => {
                tracing::debug!(namespace = %broadcast.namespace, track = %track.name, error = %format!("{err:#}"), "upstream subscription ended");
                upstream::Ending::Closed
            }
        };
        let answered = !matches!(
            track.upstream_answer(Duration::ZERO).await,
            UpstreamState::Pending
        );
        match life.ended(how, session.parent == Parent::Edge, answered) {
            upstream::After::Resubscribe => {}
            upstream::After::Wait(wait) => {
                let _ = tokio::time::timeout(wait, sessions.changed()).await;
            }
            upstream::After::Retire { refuse } => {
                if refuse {
                    track.set_upstream(UpstreamState::Refused(serve::ServeError::Cancel));
                }
                break;
            }
        }
    }
    upstream::retire(&broadcast, &track).await;
}

/// How far behind live a track's cache is, from the origin's ingest clock
/// stamped on each object (`prft`). The smallest arrival offset seen (local
/// clock minus producer clock) stands for "on time", so clock skew between
/// origin and agent cancels out; a parent that trickles objects ever later
/// shows up as growing lateness even though something arrives all the time.
#[derive(Default)]
struct Freshness {
    best_offset_us: Mutex<Option<i64>>,
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Where a viewer reading the track in order waits now. A parent that
/// falls behind sends the newest group first, so:
/// - the group before the newest, while it is still open: at its tail;
/// - a group missing entirely just before the newest: at its first object
///   (the cache's reader waits there, see `CacheLimits::gap_wait`);
/// - otherwise: after the newest object.
///
/// Returns the group, the next object id, and the producer time of the
/// last object held before that place.
fn frontier(track: &TrackCache) -> Option<(u64, u64, Option<u64>)> {
    track.with_groups(|groups| {
        let newest = groups.back()?;
        let (group, next, last) = match groups.iter().rev().nth(1) {
            Some(previous) if !previous.complete => {
                let last = previous.objects.last()?;
                (previous.id, last.id + 1, last)
            }
            Some(previous) if previous.id + 1 < newest.id => {
                (previous.id + 1, 0, previous.objects.last()?)
            }
            _ => {
                let last = newest.objects.last()?;
                (newest.id, last.id + 1, last)
            }
        };
        Some((group, next, last.meta.producer_time_us))
    })
}

impl Freshness {
    fn record(&self, produced_us: u64, now_us: u64) {
        let offset = now_us as i64 - produced_us as i64;
        let mut best = self
            .best_offset_us
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *best = Some(best.map_or(offset, |b| b.min(offset)));
    }

    fn best(&self) -> Option<i64> {
        *self
            .best_offset_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How late the object a viewer waits for is now, beyond the best
    /// delivery seen; `None` for tracks without producer times (catalog).
    fn lateness(&self, track: &TrackCache, now_us: u64) -> Option<Duration> {
        let best = self.best()?;
        let (_, _, produced) = frontier(track)?;
        let late = now_us as i64 - produced? as i64 - best;
        Some(Duration::from_micros(late.max(0) as u64))
    }
}

/// Arrival bookkeeping of one subscription (for silence detection).
struct Arrivals {
    count: AtomicU64,
    last: Mutex<Instant>,
}

async fn subscribe_once(
    broadcast: &Arc<Broadcast>,
    track: &Arc<TrackCache>,
    fresh: &Arc<Freshness>,
    session: &Session,
    sessions: &mut watch::Receiver<Option<Session>>,
    ctx: &MediaContext,
    life: &mut upstream::Lifecycle,
) -> Ended {
    let mut subscriber = session.subscriber.clone();
    let (writer, reader) = serve::Track::new(
        to_track_namespace(&broadcast.namespace),
        track.name.as_str(),
    )
    .produce();
    // After a switch, resume where a viewer reading in order waits: right
    // after the newest object held, or in the previous group if its tail
    // is still missing (a lagging parent sends the newest group first). The
    // new parent sends what the gap missed, across group boundaries; what
    // is already held comes at most once more and is dropped (MoQT
    // AbsoluteStart).
    let plan = life.subscribe(frontier(track).map(|(group, next, _)| (group, next)));
    let mut params = KeyValuePairs::default();
    if let Some((group, next)) = plan.start {
        let filter = SubscriptionFilter {
            filter_type: FilterType::AbsoluteStart,
            start_location: Some(Location::new(group, next)),
            end_group_id: None,
        };
        if params.set_subscription_filter(&filter).is_err() {
            params = KeyValuePairs::default();
        }
    }
    let subscription = match subscriber.subscribe_open_with_params(writer, params).await {
        Ok(s) => s,
        Err(err) => return Ended::Closed(anyhow::Error::from(err).context("SUBSCRIBE refused")),
    };
    let largest = subscription
        .subscribe_ok()
        .and_then(|ok| ok.params.largest_object().ok().flatten())
        .map(|l| (l.group_id, l.object_id));
    track.set_upstream(UpstreamState::Ready { largest });
    let arrivals = Arc::new(Arrivals {
        count: AtomicU64::new(0),
        last: Mutex::new(Instant::now()),
    });
    // An agent fetches no history (`plan.history` is 0, see
    // `upstream::Policy::agent`): a new subscription already starts at the
    // newest group's first object.
    debug_assert_eq!(plan.history, 0);
    track.set_history_done();
    let mode = tokio::select! {
        mode = reader.mode() => mode,
        res = subscription.closed() => return Ended::Closed(match res {
            Ok(()) => anyhow::anyhow!("closed before delivering"),
            Err(e) => e.into(),
        }),
    };
    let mode = match mode {
        Ok(m) => m,
        Err(e) => return Ended::Closed(e.into()),
    };
    let TrackReaderMode::Subgroups(mut subgroups) = mode else {
        return Ended::Closed(anyhow::anyhow!("upstream does not deliver subgroups"));
    };
    let mut groups = FuturesUnordered::new();
    let mut idle_check = tokio::time::interval(Duration::from_millis(500));
    let mut silence_check = tokio::time::interval(crate::repair::CHECK_EVERY);
    let mut repairing: Option<futures::future::BoxFuture<'static, u64>> = None;
    let mut policy = Repair::new(ctx.repair_after);
    let ended = loop {
        tokio::select! {
            next = subgroups.next() => match next {
                Ok(Some(subgroup)) => groups.push(read_subgroup(
                    subgroup,
                    broadcast.namespace.clone(),
                    track.clone(),
                    fresh.clone(),
                    session.parent.clone(),
                    arrivals.clone(),
                    ctx.clone(),
                )),
                Ok(None) => break Ended::Closed(anyhow::anyhow!("upstream track ended")),
                Err(e) => break Ended::Closed(e.into()),
            },
            Some(()) = groups.next(), if !groups.is_empty() => {}
            stored = async { repairing.as_mut().expect("guarded").await }, if repairing.is_some() => {
                repairing = None;
                policy.repaired(Instant::now(), stored);
                if stored > 0 {
                    tracing::debug!(track = %track.name, objects = stored, "repaired past a lagging parent");
                }
            }
            _ = idle_check.tick() => {
                if !life.wanted(track.demand(Instant::now())) {
                    break Ended::Idle;
                }
            }
            _ = silence_check.tick() => {
                if let Parent::Peer(p) = session.parent {
                    let source = ctx.repairs.borrow().clone();
                    let since_news = arrivals.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                    let verdict = policy.check(Check {
                        now: Instant::now(),
                        lateness: fresh.lateness(track, unix_micros()),
                        since_news,
                        delivered: arrivals.count.load(Ordering::Relaxed),
                        source: source.is_some(),
                        closed: track.is_closed(),
                    });
                    if let (true, Some(source)) = (verdict.fetch, source) {
                        tracing::trace!(track = %track.name, since_news_ms = since_news.as_millis() as u64, frontier = ?frontier(track), largest = ?track.largest(), "repair due");
                        repairing = Some(Box::pin(repair(
                            source,
                            broadcast.namespace.clone(),
                            track.clone(),
                            fresh.clone(),
                            ctx.clone(),
                        )));
                    }
                    if verdict.parent_behind {
                        tracing::warn!(peer = %p, track = %track.name, "parent fell behind");
                        let _ = ctx.events.send(PeerEvent::Silent(p));
                    }
                }
            }
            changed = sessions.changed() => {
                let same = changed.is_ok()
                    && sessions.borrow().as_ref().is_some_and(|s| s.generation == session.generation);
                if !same {
                    break Ended::Switched;
                }
            }
            res = subscription.closed() => break Ended::Closed(match res {
                Ok(()) => anyhow::anyhow!("upstream closed the subscription"),
                Err(e) => e.into(),
            }),
        }
    };
    if matches!(ended, Ended::Idle) {
        subscription.unsubscribe().await;
    }
    ended
}

async fn read_subgroup(
    subgroup: serve::SubgroupReader,
    namespace: Namespace,
    track: Arc<TrackCache>,
    fresh: Arc<Freshness>,
    from: Parent<PeerId>,
    arrivals: Arc<Arrivals>,
    ctx: MediaContext,
) {
    let group = subgroup.group_id;
    let clean = upstream::read_objects(subgroup, &track.name, |object| {
        // Only news counts: a parent whose objects repair already brought
        // is lagging, however busy it looks.
        if accept(&ctx, &namespace, &track, &fresh, group, object, &from) {
            arrivals.count.fetch_add(1, Ordering::Relaxed);
            *arrivals.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    })
    .await;
    // Only a clean end closes the group: after a reset (the parent went
    // away) the next parent may still complete it.
    if clean.is_ok() {
        track.finish_group(group);
    }
}

/// Checks an object's signature and stores it; a bad one is dropped and
/// its sender reported.
fn accept(
    ctx: &MediaContext,
    namespace: &Namespace,
    track: &TrackCache,
    fresh: &Freshness,
    group: u64,
    mut object: Object,
    from: &Parent<PeerId>,
) -> bool {
    let id = object.id;
    let keys = ctx.verifier.media_keys();
    if keys.is_empty() {
        ctx.counters
            .objects_unverified
            .fetch_add(1, Ordering::Relaxed);
    } else {
        let place = ObjectPlace {
            namespace: namespace.fields(),
            track: &track.name,
            group,
            object: id,
        };
        let verdict = match object.signature() {
            Some(sig) => keys.verify(&place, &object.payload, sig),
            None => Err(MediaSignatureError::Malformed),
        };
        if let Err(reason) = verdict {
            ctx.counters
                .objects_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from = %from, track = %track.name, group, object = id, %reason, "object refused: signature");
            // A key this agent does not know yet may be an origin's new key:
            // refuse the object and fetch the key set now (at most every
            // 5 s); only a signature that is missing or does not hold
            // convicts the sender.
            if reason == MediaSignatureError::UnknownKey {
                ctx.verifier.want_fresh_keys();
            }
            if let (Parent::Peer(p), false) = (from, reason == MediaSignatureError::UnknownKey) {
                let _ = ctx.events.send(PeerEvent::Tampered(*p));
            }
            return false;
        }
        ctx.counters
            .objects_verified
            .fetch_add(1, Ordering::Relaxed);
    }
    let size = object.payload.len() as u64;
    match from {
        Parent::Edge => {
            ctx.counters
                .bytes_from_edge
                .fetch_add(size, Ordering::Relaxed);
            ctx.counters
                .objects_from_edge
                .fetch_add(1, Ordering::Relaxed);
        }
        Parent::Peer(_) => {
            ctx.counters
                .bytes_from_peers
                .fetch_add(size, Ordering::Relaxed);
            ctx.counters
                .objects_from_peers
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    if ctx.tamper && !object.payload.is_empty() {
        let mut altered = object.payload.to_vec();
        let middle = altered.len() / 2;
        altered[middle] ^= 0x5a;
        object.payload = altered.into();
    }
    let produced = object.meta.producer_time_us;
    let stored = track.insert(group, object, Instant::now());
    if let (true, Some(produced)) = (stored, produced) {
        fresh.record(produced, unix_micros());
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;
    use strom_relay::ObjectMeta;

    fn object(id: u64, produced_us: u64) -> Object {
        Object {
            id,
            payload: bytes::Bytes::from_static(b"x"),
            meta: ObjectMeta {
                duration_ticks: 0,
                producer_time_us: Some(produced_us),
            },
            ext: None,
        }
    }

    fn cache() -> Arc<TrackCache> {
        TrackCache::new(
            "video",
            CacheLimits {
                max_age: Duration::from_secs(30),
                max_bytes: 1 << 20,
                ..CacheLimits::default()
            },
        )
    }

    #[test]
    fn a_viewer_waits_for_the_open_previous_group_not_the_newest() {
        let track = cache();
        let now = Instant::now();
        assert_eq!(frontier(&track), None);
        for id in 0..4 {
            track.insert(7, object(id, 1_000 + id), now);
        }
        assert_eq!(frontier(&track), Some((7, 4, Some(1_003))));
        // A lagging parent sends the next group first: group 7 stays open.
        track.insert(8, object(0, 2_000), now);
        track.insert(8, object(1, 2_001), now);
        assert_eq!(frontier(&track), Some((7, 4, Some(1_003))));
        // Once group 7 is closed the viewer moves on to the newest.
        track.finish_group(7);
        assert_eq!(frontier(&track), Some((8, 2, Some(2_001))));
    }

    #[test]
    fn a_viewer_waits_at_a_group_that_never_came_before_the_newest() {
        let track = cache();
        let now = Instant::now();
        for id in 0..3 {
            track.insert(7, object(id, 1_000 + id), now);
        }
        track.finish_group(7);
        // The parent sends group 9 first; group 8 has not come at all.
        track.insert(9, object(0, 3_000), now);
        // The viewer waits at 8/0, as late as the last object it had.
        assert_eq!(frontier(&track), Some((8, 0, Some(1_002))));
        // Repaired: group 8 is whole, the viewer waits after the newest.
        track.insert(8, object(0, 2_000), now);
        track.finish_group(8);
        assert_eq!(frontier(&track), Some((9, 1, Some(3_000))));
    }

    #[test]
    fn lateness_counts_from_the_best_delivery_so_clock_skew_cancels() {
        let track = cache();
        let fresh = Freshness::default();
        let now = Instant::now();
        // The agent's clock runs 5 s ahead of the origin's; objects take
        // 20 ms at best, 60 ms at worst.
        let skew = 5_000_000u64;
        for (id, took) in [(0u64, 60_000u64), (1, 20_000), (2, 40_000)] {
            let produced = 10_000_000 + id * 33_000;
            track.insert(1, object(id, produced), now);
            fresh.record(produced, produced + skew + took);
        }
        let newest = 10_000_000 + 2 * 33_000;
        let on_time = newest + skew + 20_000;
        assert_eq!(fresh.lateness(&track, on_time), Some(Duration::ZERO));
        assert_eq!(
            fresh.lateness(&track, on_time + 350_000),
            Some(Duration::from_millis(350))
        );
        // Without producer times (the catalog) there is no lateness.
        assert_eq!(Freshness::default().lateness(&track, on_time), None);
    }
}
