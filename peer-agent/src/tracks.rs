//! A track's subscriptions across parents (make before break): each
//! pulled track subscribes on the media plane's current session, carries
//! the subscription it replaces until the new one delivers, and reads
//! subgroups into the cache through [`accept`], which checks every object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::PeerId;
use moq_transport::coding::{KeyValuePairs, Location};
use moq_transport::message::{FilterType, SubscriptionFilter};
use moq_transport::serve::{self, TrackReaderMode};
use moq_transport::session::Subscribe;
use strom_relay::{to_track_namespace, upstream, Broadcast, Namespace, TrackCache, UpstreamState};
use tokio::sync::{mpsc, watch};

use crate::media::{accept, Freshness, MediaContext, Session, HANDOVER};
use crate::repairing::{keep_repaired, Feed};
use crate::topology::Parent;

pub(crate) async fn serve_tracks(
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
    /// The parent changed: subscribe on the new session. The subscription
    /// that was current comes along, to be handed over from.
    Switched(Box<Live>),
    /// The subscription ended or was refused on this session.
    Closed(anyhow::Error),
}

/// Keeps one track fed, across parents, while anyone reads it: the
/// subscriptions one after another, and beside them the repairs, which
/// belong to the track and so go on while a parent dies or is replaced.
async fn pull_track(
    broadcast: Arc<Broadcast>,
    track: Arc<TrackCache>,
    sessions: watch::Receiver<Option<Session>>,
    ctx: MediaContext,
) {
    let fresh = Arc::new(Freshness::default());
    let (feed_tx, feed) = watch::channel(None::<Feed>);
    tokio::select! {
        () = follow_parents(&broadcast, &track, &fresh, sessions, &feed_tx, &ctx) => {}
        () = keep_repaired(&broadcast.namespace, &track, &fresh, feed, &ctx) => {}
    }
    upstream::retire(&broadcast, &track).await;
}

/// The track's subscriptions, one per parent; the relay's
/// [`upstream::Lifecycle`] decides where each starts, when to let go, and
/// what follows the end of one. Make before break: the subscription a new
/// one replaces keeps feeding the cache until the new one has delivered an
/// object whose signature holds (a new parent that is slow to start, or
/// caught altering media at once, costs viewers nothing), and when the
/// agent returns to the session it was handed over from, that subscription
/// simply carries on.
async fn follow_parents(
    broadcast: &Arc<Broadcast>,
    track: &Arc<TrackCache>,
    fresh: &Arc<Freshness>,
    mut sessions: watch::Receiver<Option<Session>>,
    feed: &watch::Sender<Option<Feed>>,
    ctx: &MediaContext,
) {
    let mut life = upstream::Lifecycle::new(upstream::Policy::agent(ctx.idle));
    let mut idle_check = tokio::time::interval(Duration::from_millis(500));
    let mut draining: Option<Draining> = None;
    loop {
        if track.is_closed() {
            break;
        }
        let current = sessions.borrow_and_update().clone();
        let Some(session) = current else {
            tokio::select! {
                changed = sessions.changed() => if changed.is_err() { break },
                _ = idle_check.tick() => if !life.wanted(track.demand(Instant::now())) { break },
                () = drain(&mut draining) => {}
            }
            continue;
        };
        let opened = match draining.take_if(|d| d.live.generation == session.generation) {
            Some(back) => {
                tracing::debug!(namespace = %broadcast.namespace, track = %track.name, parent = %session.parent, "subscription carries on");
                Ok(back.live)
            }
            None => {
                let open = open_subscription(broadcast, track, fresh, &session, ctx, &mut life);
                tokio::pin!(open);
                loop {
                    tokio::select! {
                        opened = &mut open => break opened,
                        () = drain(&mut draining) => {}
                    }
                }
            }
        };
        let ended = match opened {
            Ok(live) => {
                feed.send_replace(Some(live.feed()));
                carry(live, &mut draining, &mut sessions, track, &life).await
            }
            Err(err) => Ended::Closed(err),
        };
        feed.send_replace(None);
        let how = match ended {
            Ended::Idle => break,
            Ended::Switched(live) => {
                // Hand over from whichever subscription works: the one
                // just replaced, unless it never delivered anything good
                // and an older one still does.
                if live.proven() || draining.is_none() {
                    draining = Some(Draining {
                        live: *live,
                        until: tokio::time::Instant::now() + HANDOVER,
                    });
                }
                upstream::Ending::Switched
            }
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
                let waited = tokio::time::sleep(wait);
                tokio::pin!(waited);
                loop {
                    tokio::select! {
                        () = &mut waited => break,
                        _ = sessions.changed() => break,
                        () = drain(&mut draining) => {}
                    }
                }
            }
            upstream::After::Retire { refuse } => {
                if refuse {
                    track.set_upstream(UpstreamState::Refused(serve::ServeError::Cancel));
                }
                break;
            }
        }
    }
}

/// A subscription being handed over from.
struct Draining {
    live: Live,
    /// It ends by then at the latest.
    until: tokio::time::Instant,
}

/// Drives the subscription being handed over from, a step at a time, and
/// lets it go when it ends or its time is up; without one, pending for ever.
async fn drain(draining: &mut Option<Draining>) {
    let Some(d) = draining.as_mut() else {
        return std::future::pending().await;
    };
    let until = d.until;
    let over = tokio::select! {
        ended = d.live.step() => ended.is_some(),
        () = tokio::time::sleep_until(until) => true,
    };
    if over {
        *draining = None;
    }
}

/// Reads `live` until the track is no longer wanted, the subscription
/// ends, or the session changes; meanwhile drives the subscription being
/// handed over from and lets it go once `live` has proven itself.
async fn carry(
    mut live: Live,
    draining: &mut Option<Draining>,
    sessions: &mut watch::Receiver<Option<Session>>,
    track: &TrackCache,
    life: &upstream::Lifecycle,
) -> Ended {
    enum Next {
        Closed(anyhow::Error),
        Idle,
        Switched,
    }
    let mut idle_check = tokio::time::interval(Duration::from_millis(500));
    let mut handover_check = tokio::time::interval(Duration::from_millis(50));
    let next = loop {
        tokio::select! {
            ended = live.step() => if let Some(err) = ended {
                break Next::Closed(err);
            },
            () = drain(draining) => {}
            _ = handover_check.tick(), if draining.is_some() => if live.proven() {
                tracing::debug!(track = %track.name, parent = %live.parent, "handed over");
                *draining = None;
            },
            _ = idle_check.tick() => if !life.wanted(track.demand(Instant::now())) {
                break Next::Idle;
            },
            changed = sessions.changed() => {
                let same = changed.is_ok()
                    && sessions.borrow().as_ref().is_some_and(|s| s.generation == live.generation);
                if !same {
                    break Next::Switched;
                }
            }
        }
    };
    match next {
        Next::Closed(err) => Ended::Closed(err),
        Next::Idle => {
            *draining = None;
            live.subscription.unsubscribe().await;
            Ended::Idle
        }
        Next::Switched => Ended::Switched(Box::new(live)),
    }
}

/// One subscription of a track: what it reads, and what it delivered.
struct Live {
    generation: u64,
    parent: Parent<PeerId>,
    subscription: Subscribe,
    subgroups: serve::SubgroupsReader,
    groups: FuturesUnordered<BoxFuture<'static, ()>>,
    arrivals: Arc<Arrivals>,
    namespace: Namespace,
    track: Arc<TrackCache>,
    fresh: Arc<Freshness>,
    ctx: MediaContext,
}

impl Live {
    /// Reads on until something happened: a subgroup began or one ended
    /// (`None`), or the subscription ended (`Some`, why).
    async fn step(&mut self) -> Option<anyhow::Error> {
        tokio::select! {
            next = self.subgroups.next() => match next {
                Ok(Some(subgroup)) => {
                    self.groups.push(Box::pin(read_subgroup(
                        subgroup,
                        self.namespace.clone(),
                        self.track.clone(),
                        self.fresh.clone(),
                        self.parent.clone(),
                        self.arrivals.clone(),
                        self.ctx.clone(),
                    )));
                    None
                }
                Ok(None) => Some(anyhow::anyhow!("upstream track ended")),
                Err(e) => Some(e.into()),
            },
            Some(()) = self.groups.next(), if !self.groups.is_empty() => None,
            res = self.subscription.closed() => Some(match res {
                Ok(()) => anyhow::anyhow!("upstream closed the subscription"),
                Err(e) => e.into(),
            }),
        }
    }

    fn feed(&self) -> Feed {
        Feed {
            parent: self.parent.clone(),
            arrivals: self.arrivals.clone(),
        }
    }

    /// It has delivered an object whose signature holds: its parent works.
    fn proven(&self) -> bool {
        self.arrivals.verified.load(Ordering::Relaxed) > 0
    }
}

/// Arrival bookkeeping of one subscription (for silence detection).
pub(crate) struct Arrivals {
    /// Objects this agent did not hold yet.
    pub(crate) count: AtomicU64,
    /// When the last of those came.
    pub(crate) last: Mutex<Instant>,
    /// Objects whose signature held, news or not.
    pub(crate) verified: AtomicU64,
}

/// Subscribes to the track on `session`.
async fn open_subscription(
    broadcast: &Arc<Broadcast>,
    track: &Arc<TrackCache>,
    fresh: &Arc<Freshness>,
    session: &Session,
    ctx: &MediaContext,
    life: &mut upstream::Lifecycle,
) -> anyhow::Result<Live> {
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
    let plan = life.subscribe(track.frontier().map(|(group, next, _)| (group, next)));
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
    let subscription = subscriber
        .subscribe_open_with_params(writer, params)
        .await
        .context("SUBSCRIBE refused")?;
    let largest = subscription
        .subscribe_ok()
        .and_then(|ok| ok.params.largest_object().ok().flatten())
        .map(|l| (l.group_id, l.object_id));
    track.set_upstream(UpstreamState::Ready { largest });
    // An agent fetches no history (`plan.history` is 0, see
    // `upstream::Policy::agent`): a new subscription already starts at the
    // newest group's first object.
    debug_assert_eq!(plan.history, 0);
    track.set_history_done();
    let mode = tokio::select! {
        mode = reader.mode() => mode?,
        res = subscription.closed() => return Err(match res {
            Ok(()) => anyhow::anyhow!("closed before delivering"),
            Err(e) => e.into(),
        }),
    };
    let TrackReaderMode::Subgroups(subgroups) = mode else {
        bail!("upstream does not deliver subgroups");
    };
    Ok(Live {
        generation: session.generation,
        parent: session.parent.clone(),
        subscription,
        subgroups,
        groups: FuturesUnordered::new(),
        arrivals: Arc::new(Arrivals {
            count: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
            verified: AtomicU64::new(0),
        }),
        namespace: broadcast.namespace.clone(),
        track: track.clone(),
        fresh: fresh.clone(),
        ctx: ctx.clone(),
    })
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
    let mut refused = false;
    let clean = upstream::read_objects(subgroup, &track.name, |object| {
        // Only news counts: a parent whose objects repair already brought
        // is lagging, however busy it looks.
        match accept(&ctx, &namespace, &track, &fresh, group, object, &from) {
            Some(true) => {
                arrivals.verified.fetch_add(1, Ordering::Relaxed);
                arrivals.count.fetch_add(1, Ordering::Relaxed);
                *arrivals.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            }
            Some(false) => {
                arrivals.verified.fetch_add(1, Ordering::Relaxed);
            }
            None => refused = true,
        }
    })
    .await;
    // Only a clean end closes the group: after a reset (the parent went
    // away) the next parent may still complete it. Nor does the end of a
    // stream that carried refused objects: a peer caught altering media
    // cannot tell this agent that a group is whole (its viewers would skip
    // the tail the next parent brings).
    if clean.is_ok() && !refused {
        track.finish_group(group);
    }
}
