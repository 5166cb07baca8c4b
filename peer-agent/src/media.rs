//! The agent's media plane: one MoQT upstream at a time — the edge for the
//! site's leader, another agent for everyone else — that can change under
//! the agent's feet without its local viewers noticing.
//!
//! Broadcasts and their track caches outlive upstream sessions. When the
//! parent changes (a peer left, fell silent or was caught altering media),
//! each track subscribes again on the new session, starting right after the
//! newest object it holds (MoQT AbsoluteStart): the new parent sends exactly
//! what the gap missed, across group boundaries, and nothing twice. Every object is checked against the origins' media keys before it
//! enters the cache, i.e. before this agent serves or forwards it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::PeerId;
use moq_transport::coding::Location;
use moq_transport::coding::{KeyValuePairs, TrackNamespacePrefix, TupleField};
use moq_transport::message::{FilterType, SubscriptionFilter};
use moq_transport::serve::{self, TrackReaderMode};
use moq_transport::session::{NamespaceEvent, Subscriber};
use strom_edge::broadcast::{Broadcast, Broadcasts, Namespace, Source};
use strom_edge::cache::{CacheLimits, Object, TrackCache, UpstreamState};
use strom_edge::moqt::{from_track_namespace, to_track_namespace};
use strom_edge::tls::Trust;
use strom_token::media::{MediaSignatureError, ObjectPlace};
use strom_token::Verifier;
use tokio::sync::{mpsc, watch};

use crate::topology::Parent;

/// A live track silent this long while its parent is a peer (and that peer
/// still answers on the swarm) makes the agent suspect the peer of being
/// slow. A dead peer is noticed sooner, by the swarm's idle timeout. Short
/// silences are left alone on purpose: a parent ramping up its own pull, or
/// a brief stall at the edge, must not send the whole site to the edge at
/// once (which would flood the WAN link it exists to spare).
pub const SILENCE: Duration = Duration::from_secs(2);
/// Objects a subscription must have delivered before silence counts (the
/// catalog track is quiet by nature).
const STEADY_AFTER: u64 = 10;
/// Broadcasts the new parent does not announce within this time have ended.
const REANNOUNCE_GRACE: Duration = Duration::from_secs(6);

/// Where to pull from now.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
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
pub enum PeerEvent {
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
}

#[derive(Clone)]
pub struct MediaContext {
    pub broadcasts: Arc<Broadcasts>,
    pub counters: Arc<AgentCounters>,
    pub limits: CacheLimits,
    /// How long a track stays subscribed after its last reader left.
    pub idle: Duration,
    pub verifier: Arc<Verifier>,
    pub events: mpsc::UnboundedSender<PeerEvent>,
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
pub async fn run(mut targets: watch::Receiver<Option<Target>>, ctx: MediaContext) {
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
        let connected = tokio::time::timeout(
            Duration::from_secs(3),
            strom_edge::upstream::connect_with_token(
                &target.url,
                &target.trust,
                Some(&target.token),
            ),
        )
        .await;
        let (session, subscriber) = match connected {
            Ok(Ok(pair)) => pair,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "timed out".into(),
                };
                tracing::warn!(parent = %target.parent, %error, "upstream unreachable");
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

/// Learns broadcasts from the current parent; they persist across parents.
async fn follow(
    target: &Target,
    mut subscriber: Subscriber,
    local: &mut HashMap<Namespace, Arc<Broadcast>>,
    sessions: &watch::Receiver<Option<Session>>,
    ctx: &MediaContext,
) -> anyhow::Result<()> {
    let mut prefix = TrackNamespacePrefix::new();
    for f in &target.prefix {
        prefix.fields.push(TupleField::from_utf8(f));
    }
    let namespaces = subscriber
        .subscribe_namespace(prefix, KeyValuePairs::default())
        .await
        .context("SUBSCRIBE_NAMESPACE")?;
    namespaces
        .ok()
        .await
        .context("SUBSCRIBE_NAMESPACE refused")?;
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
                    let (tx, rx) = mpsc::unbounded_channel();
                    let broadcast = Broadcast::new(ns.clone(), Source::Upstream(tx), ctx.limits);
                    let active = ctx.broadcasts.insert(broadcast.clone());
                    if !Arc::ptr_eq(&active, &broadcast) {
                        continue;
                    }
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

/// Keeps one track fed, across parents, while anyone reads it.
async fn pull_track(
    broadcast: Arc<Broadcast>,
    track: Arc<TrackCache>,
    mut sessions: watch::Receiver<Option<Session>>,
    ctx: MediaContext,
) {
    let mut first = true;
    let mut idle_check = tokio::time::interval(Duration::from_millis(500));
    loop {
        if track.is_closed() {
            break;
        }
        let current = sessions.borrow_and_update().clone();
        let Some(session) = current else {
            tokio::select! {
                changed = sessions.changed() => if changed.is_err() { break },
                _ = idle_check.tick() => if !track.in_demand(ctx.idle, Instant::now()) { break },
            }
            continue;
        };
        match subscribe_once(&broadcast, &track, &session, &mut sessions, &ctx, first).await {
            Ended::Idle => break,
            Ended::Switched => {}
            Ended::Closed(err) => {
                tracing::debug!(namespace = %broadcast.namespace, track = %track.name, error = %format!("{err:#}"), "upstream subscription ended");
                if first && session.parent == Parent::Edge {
                    if let UpstreamState::Pending = track.upstream_answer(Duration::ZERO).await {
                        track.set_upstream(UpstreamState::Refused(serve::ServeError::Cancel));
                        break;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_millis(300), sessions.changed()).await;
            }
        }
        first = false;
    }
    broadcast.remove_track(&track);
    track.set_history_done();
    if matches!(
        track.upstream_answer(Duration::ZERO).await,
        UpstreamState::Pending
    ) {
        track.set_upstream(UpstreamState::Refused(serve::ServeError::Cancel));
    }
    track.close();
}

/// Arrival bookkeeping of one subscription (for silence detection).
struct Arrivals {
    count: AtomicU64,
    last: Mutex<Instant>,
}

async fn subscribe_once(
    broadcast: &Arc<Broadcast>,
    track: &Arc<TrackCache>,
    session: &Session,
    sessions: &mut watch::Receiver<Option<Session>>,
    ctx: &MediaContext,
    first: bool,
) -> Ended {
    let mut subscriber = session.subscriber.clone();
    let (writer, reader) = serve::Track::new(
        to_track_namespace(&broadcast.namespace),
        track.name.as_str(),
    )
    .produce();
    // After a switch, resume right after the newest object held: the new
    // parent sends exactly what the gap missed, across group boundaries,
    // and nothing twice (MoQT AbsoluteStart).
    let mut params = KeyValuePairs::default();
    if let (false, Some((group, object))) = (first, track.largest()) {
        let filter = SubscriptionFilter {
            filter_type: FilterType::AbsoluteStart,
            start_location: Some(Location::new(group, object + 1)),
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
    // No history is fetched: on a thin WAN a burst of old groups delays the
    // live objects queued behind it, and a new subscription already starts
    // at the newest group's first object.
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
    let mut silence_check = tokio::time::interval(Duration::from_millis(100));
    let mut reported_silence = false;
    let ended = loop {
        tokio::select! {
            next = subgroups.next() => match next {
                Ok(Some(subgroup)) => groups.push(read_subgroup(
                    subgroup,
                    broadcast.namespace.clone(),
                    track.clone(),
                    session.parent.clone(),
                    arrivals.clone(),
                    ctx.clone(),
                )),
                Ok(None) => break Ended::Closed(anyhow::anyhow!("upstream track ended")),
                Err(e) => break Ended::Closed(e.into()),
            },
            Some(()) = groups.next(), if !groups.is_empty() => {}
            _ = idle_check.tick() => {
                if !track.in_demand(ctx.idle, Instant::now()) {
                    break Ended::Idle;
                }
            }
            _ = silence_check.tick() => {
                if let Parent::Peer(p) = session.parent {
                    let steady = arrivals.count.load(Ordering::Relaxed) >= STEADY_AFTER;
                    let quiet = arrivals.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > SILENCE;
                    if steady && quiet && !reported_silence && !track.is_closed() {
                        reported_silence = true;
                        tracing::warn!(peer = %p, track = %track.name, "parent fell silent");
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
    mut subgroup: serve::SubgroupReader,
    namespace: Namespace,
    track: Arc<TrackCache>,
    from: Parent<PeerId>,
    arrivals: Arc<Arrivals>,
    ctx: MediaContext,
) {
    let group = subgroup.group_id;
    let clean = async {
        while let Some(mut object) = subgroup.next().await? {
            let id = object.info.object_id;
            let ext = extensions(&object.info.extension_headers);
            let payload = object.read_all().await?;
            arrivals.count.fetch_add(1, Ordering::Relaxed);
            *arrivals.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            accept(&ctx, &namespace, &track, group, id, payload, ext, &from);
        }
        Ok::<(), serve::ServeError>(())
    }
    .await;
    // Only a clean end closes the group: after a reset (the parent went
    // away) the next parent may still complete it.
    if clean.is_ok() {
        track.finish_group(group);
    }
}

fn extensions(
    ext: &moq_transport::data::ExtensionHeaders,
) -> Option<Arc<moq_transport::data::ExtensionHeaders>> {
    (!ext.is_empty()).then(|| Arc::new(ext.clone()))
}

/// Checks an object's signature and stores it; a bad one is dropped and
/// its sender reported.
#[allow(clippy::too_many_arguments)]
fn accept(
    ctx: &MediaContext,
    namespace: &Namespace,
    track: &TrackCache,
    group: u64,
    id: u64,
    payload: bytes::Bytes,
    ext: Option<Arc<moq_transport::data::ExtensionHeaders>>,
    from: &Parent<PeerId>,
) -> bool {
    let mut object = Object {
        id,
        meta: strom_edge::object_meta(&track.name, &payload),
        payload,
        ext,
    };
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
            // A key this agent does not know yet may be an origin's new key
            // (key sets refresh every minute): refuse the object, but only a
            // signature that is missing or does not hold convicts the sender.
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
    track.insert(group, object, Instant::now())
}
