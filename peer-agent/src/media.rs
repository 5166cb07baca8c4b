//! The agent's media plane: one MoQT upstream at a time — the edge for the
//! site's leader, another agent for everyone else — that can change under
//! the agent's feet without its local viewers noticing. A change is made
//! before the old upstream is broken: it keeps feeding the caches until the
//! new one delivers (see [`HANDOVER`]).
//!
//! Broadcasts and their track caches outlive upstream sessions. When the
//! parent changes (a peer left, fell silent or was caught altering media),
//! each track subscribes again on the new session ([`crate::tracks`]),
//! starting right after the newest object it holds (MoQT AbsoluteStart):
//! the new parent sends what the old one had not, across group boundaries,
//! and what is already held is dropped. Every
//! object is checked against the origins' media keys before it enters the
//! cache, i.e. before this agent serves or forwards it.
//!
//! A parent that falls behind does not make viewers wait (P2P-4): each
//! track is repaired from the repair source beside its subscriptions
//! ([`crate::repairing`], decided by [`crate::repair`]); this file keeps
//! the freshness clock it reads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use libp2p::PeerId;
use moq_transport::session::{NamespaceEvent, SubscribeNamespace, Subscriber};
use strom_relay::{
    from_track_namespace, tls::Trust, upstream, Broadcast, Broadcasts, CacheLimits, Namespace,
    Object, TrackCache,
};
use strom_token::media::{MediaSignatureError, ObjectPlace};
use strom_token::Verifier;
use tokio::sync::{mpsc, watch};

use crate::repairing::RepairSession;
use crate::topology::Parent;

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
pub(crate) struct Session {
    /// Tells sessions apart: one per connection, kept when the agent
    /// returns to a session it was handing over from.
    pub(crate) generation: u64,
    pub(crate) subscriber: Subscriber,
    pub(crate) parent: Parent<PeerId>,
}

/// How long a replaced upstream session stays open (make before break):
/// its subscriptions keep feeding the caches until the new parent has
/// delivered an object whose signature holds, and a return to it within
/// this time needs no new connection. A new parent that sends nothing good
/// for this long is repaired like any lagging one.
pub(crate) const HANDOVER: Duration = Duration::from_secs(5);

/// One connection to a parent: the session, the broadcasts it announces,
/// and which of them it has announced so far.
struct Upstream {
    target: Target,
    session: Session,
    running: tokio::task::JoinHandle<Result<(), moq_transport::session::SessionError>>,
    announced: Announced,
}

/// What a parent announces, as far as read.
struct Announced {
    namespaces: SubscribeNamespace,
    seen: HashSet<Namespace>,
    /// Broadcasts this parent has not announced by then have ended
    /// (`None`: judged already).
    grace: Option<tokio::time::Instant>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.running.abort();
    }
}

impl Upstream {
    /// Connects to `target` and asks for its announcements; the agent's
    /// current upstream, if any, keeps serving meanwhile.
    async fn open(target: &Target, generation: u64) -> anyhow::Result<Upstream> {
        let (session, mut subscriber) = connect(&target.url, &target.trust, &target.token).await?;
        let running = tokio::spawn(session.run());
        let asked = tokio::time::timeout(
            Duration::from_secs(3),
            upstream::announcements(&mut subscriber, &target.prefix),
        )
        .await;
        let namespaces = match asked {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                running.abort();
                return Err(e);
            }
            Err(_) => {
                running.abort();
                bail!("SUBSCRIBE_NAMESPACE timed out");
            }
        };
        Ok(Upstream {
            target: target.clone(),
            session: Session {
                generation,
                subscriber,
                parent: target.parent.clone(),
            },
            running,
            announced: Announced {
                namespaces,
                seen: HashSet::new(),
                grace: Some(tokio::time::Instant::now() + REANNOUNCE_GRACE),
            },
        })
    }

    fn alive(&self) -> bool {
        !self.running.is_finished()
    }
}

/// Follows `targets` for ever. One upstream session serves at a time; the
/// one it replaces stays open for [`HANDOVER`] so that tracks move over
/// without a gap and a return to it costs nothing.
pub(crate) async fn run(mut targets: watch::Receiver<Option<Target>>, ctx: MediaContext) {
    let (sessions_tx, sessions) = watch::channel(None::<Session>);
    let mut local: HashMap<Namespace, Arc<Broadcast>> = HashMap::new();
    let mut generation = 0u64;
    let mut previous: Option<Parent<PeerId>> = None;
    let mut current: Option<Upstream> = None;
    let mut replaced: Option<(Upstream, tokio::time::Instant)> = None;
    loop {
        let target = targets.borrow_and_update().clone();
        let Some(target) = target else {
            sessions_tx.send_replace(None);
            current = None;
            replaced = None;
            if targets.changed().await.is_err() {
                return;
            }
            continue;
        };
        let reuse = |u: &Upstream| u.target == target && u.alive();
        let upstream = if let Some(u) = current.take_if(|u| reuse(u)) {
            u
        } else if let Some((u, _)) = replaced.take_if(|(u, _)| reuse(u)) {
            tracing::info!(parent = %target.parent, "back to the upstream being handed over");
            u
        } else {
            generation += 1;
            match Upstream::open(&target, generation).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(parent = %target.parent, error = %format!("{e:#}"), "upstream unreachable");
                    if let Parent::Peer(p) = target.parent {
                        let _ = ctx.events.send(PeerEvent::Silent(p));
                    }
                    // Wait for another target, or retry the same one
                    // shortly; the current upstream serves meanwhile.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(500), targets.changed()).await;
                    continue;
                }
            }
        };
        if let Some(old) = current.take() {
            replaced = Some((old, tokio::time::Instant::now() + HANDOVER));
        }
        if previous.as_ref() != Some(&target.parent) {
            if previous.is_some() {
                ctx.counters.parent_switches.fetch_add(1, Ordering::Relaxed);
            }
            previous = Some(target.parent.clone());
        }
        ctx.counters
            .upstream_is_edge
            .store(u64::from(target.parent == Parent::Edge), Ordering::Relaxed);
        tracing::info!(parent = %target.parent, url = %target.url, generation = upstream.session.generation, "upstream connected");
        sessions_tx.send_replace(Some(upstream.session.clone()));
        let up = current.insert(upstream);
        let outcome = loop {
            tokio::select! {
                res = &mut up.running => break match res {
                    Ok(Ok(())) => Err(anyhow::anyhow!("upstream session closed")),
                    Ok(Err(e)) => Err(anyhow::Error::from(e).context("upstream session")),
                    Err(e) => Err(anyhow::Error::from(e).context("upstream session")),
                },
                res = follow(&mut up.announced, &mut local, &sessions, &ctx) => break res,
                _ = targets.changed() => break Ok(()),
                _ = async { tokio::time::sleep_until(replaced.as_ref().expect("guarded").1).await },
                    if replaced.is_some() => {
                    replaced = None;
                }
            }
        };
        if let Err(e) = outcome {
            // This upstream is done; tracks wait for the next one (or
            // finish what they were handed over from).
            tracing::info!(parent = %target.parent, error = %format!("{e:#}"), "upstream session ended");
            current = None;
            sessions_tx.send_replace(None);
            if let Parent::Peer(p) = target.parent {
                if targets.borrow().as_ref() == Some(&target) {
                    let _ = ctx.events.send(PeerEvent::Silent(p));
                }
            }
        }
    }
}

/// A session to a parent or repair source, given up after 3 s.
pub(crate) async fn connect(
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

/// Learns broadcasts from the current parent; they persist across parents.
/// Returns only with an error; cancelled (the parent changes) it loses
/// nothing, and a return to this upstream goes on where it left off.
async fn follow(
    up: &mut Announced,
    local: &mut HashMap<Namespace, Arc<Broadcast>>,
    sessions: &watch::Receiver<Option<Session>>,
    ctx: &MediaContext,
) -> anyhow::Result<()> {
    loop {
        let grace = up.grace;
        tokio::select! {
            event = up.namespaces.next() => match event? {
                Some(NamespaceEvent::Added(ns)) => {
                    let Ok(ns) = from_track_namespace(&ns) else { continue };
                    up.seen.insert(ns.clone());
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
                    tokio::spawn(crate::tracks::serve_tracks(broadcast, rx, sessions.clone(), ctx.clone()));
                }
                Some(NamespaceEvent::Removed(ns)) => {
                    if let Ok(ns) = from_track_namespace(&ns) {
                        up.seen.remove(&ns);
                        if let Some(b) = local.remove(&ns) {
                            tracing::info!(namespace = %ns, "broadcast ended");
                            ctx.broadcasts.remove(&b);
                        }
                    }
                }
                None => bail!("upstream ended the namespace subscription"),
            },
            _ = async { tokio::time::sleep_until(grace.expect("guarded")).await }, if grace.is_some() => {
                up.grace = None;
                local.retain(|ns, b| {
                    let keep = up.seen.contains(ns);
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

/// How far behind live a track's cache is, from the origin's ingest clock
/// stamped on each object (`prft`). The smallest arrival offset seen (local
/// clock minus producer clock) stands for "on time", so clock skew between
/// origin and agent cancels out; a parent that trickles objects ever later
/// shows up as growing lateness even though something arrives all the time.
#[derive(Default)]
pub(crate) struct Freshness {
    best_offset_us: Mutex<Option<i64>>,
}

pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
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
    pub(crate) fn lateness(&self, track: &TrackCache, now_us: u64) -> Option<Duration> {
        let best = self.best()?;
        let (_, _, produced) = track.frontier()?;
        let late = now_us as i64 - produced? as i64 - best;
        Some(Duration::from_micros(late.max(0) as u64))
    }
}

/// Checks an object's signature and stores it; a bad one is dropped and
/// its sender reported. `Some(stored)` for an object whose signature holds
/// (`false`: already held), `None` for one refused.
pub(crate) fn accept(
    ctx: &MediaContext,
    namespace: &Namespace,
    track: &TrackCache,
    fresh: &Freshness,
    group: u64,
    mut object: Object,
    from: &Parent<PeerId>,
) -> Option<bool> {
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
            return None;
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
    Some(stored)
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
