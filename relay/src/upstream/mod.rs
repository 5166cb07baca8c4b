//! Upstream links: an edge dials its origins and parent edges, learns
//! their broadcasts with SUBSCRIBE_NAMESPACE, and subscribes to a track only
//! while someone downstream wants it — exactly one upstream subscription per
//! track, on the first link in the configuration that offers the broadcast
//! ([`offers`]). When that link is lost the tracks move to the next one and
//! continue at the object their viewers wait for.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use moq_transport::coding::{KeyValuePairs, TrackNamespacePrefix, TupleField};
use moq_transport::data::{FetchRecord, ObjectStatus};
use moq_transport::message::{FetchType, FilterType, SubscriptionFilter};
use moq_transport::serve::{self, TrackReaderMode};
use moq_transport::session::{Fetch, NamespaceEvent, SubscribeNamespace, Subscriber, Transport};
use tokio::sync::{mpsc, watch};

use crate::broadcast::{Broadcast, Broadcasts, Namespace, Source};
use crate::cache::{CacheLimits, Object, TrackCache, UpstreamState};
use crate::metrics::ServerCounters;
use crate::moqt::{from_track_namespace, quic_transport_config, to_track_namespace};
use crate::object_meta;
use crate::tls::{self, Trust};

mod lifecycle;
mod offers;
pub use lifecycle::{
    After, Demand, Ending, Lifecycle, Location, Policy, Redial, Subscribe, HISTORY_GROUPS,
    RETRY_AFTER,
};
pub use offers::{Decision, Link, OfferEvent, Offers, ORPHAN_GRACE};

/// One upstream to pull from.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `moqt://host:port` (raw QUIC) or `https://host:port/path` (WebTransport).
    pub url: url::Url,
    pub trust: Trust,
    /// Only broadcasts under this namespace prefix (empty: all).
    pub prefix: Vec<String>,
}

/// Shared settings of all upstream links of one edge.
#[derive(Clone)]
pub struct UpstreamContext {
    pub broadcasts: Arc<Broadcasts>,
    pub counters: Arc<ServerCounters>,
    pub limits: CacheLimits,
    /// How long a track stays subscribed upstream after its last viewer left.
    pub idle: Duration,
    /// Presented as AUTHORIZATION TOKEN to every upstream (this relay's credential).
    pub credential: Option<Arc<str>>,
    /// Groups of history fetched with a track's first subscription: an
    /// edge's [`HISTORY_GROUPS`] (HLS at once from a cold cache); none for
    /// a viewer, which starts at the live edge as the browser player does.
    pub history: u64,
}

/// How soon a relay notices that its upstream is gone without a word (a
/// killed process, a cut link): QUIC's idle timeout on relay links, with
/// keep-alives well inside it. Viewers' gaps on a failover are this plus a
/// round trip (OPS-4: at most 2 s).
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_millis(1200);
const LINK_KEEP_ALIVE: Duration = Duration::from_millis(200);

/// Keeps upstream link `link` up for ever, dialling again after a loss as
/// [`Redial`] says; what it learns goes to `upstreams`.
pub async fn run(config: UpstreamConfig, link: Link, upstreams: Arc<Upstreams>) {
    let mut redial = Redial::new();
    loop {
        let started = Instant::now();
        match connect_once(&config, link, &upstreams).await {
            Ok(()) => tracing::info!(upstream = %config.url, "upstream session closed"),
            Err(err) => {
                tracing::warn!(upstream = %config.url, error = %format!("{err:#}"), "upstream session failed")
            }
        }
        tokio::time::sleep(redial.after(started.elapsed())).await;
    }
}

async fn resolve(url: &url::Url) -> anyhow::Result<(SocketAddr, String)> {
    let host = url
        .host_str()
        .context("upstream URL has no host")?
        .to_owned();
    let port = url.port().unwrap_or(443);
    let host_for_lookup = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addr = tokio::net::lookup_host((host_for_lookup.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    Ok((addr, host_for_lookup))
}

/// Opens a MoQT session to `url` as a client (used by upstream links and `strom watch`).
pub async fn connect(
    url: &url::Url,
    trust: &Trust,
) -> anyhow::Result<(moq_transport::session::Session, Subscriber)> {
    connect_with_token(url, trust, None).await
}

/// Like [`connect`], presenting `token` as AUTHORIZATION TOKEN in SETUP.
pub async fn connect_with_token(
    url: &url::Url,
    trust: &Trust,
    token: Option<&str>,
) -> anyhow::Result<(moq_transport::session::Session, Subscriber)> {
    connect_with(url, trust, token, quic_transport_config()).await
}

/// Like [`connect_with_token`] for a viewer that moves to another relay
/// when this one goes away: it notices a silent relay as relays do
/// ([`LINK_IDLE_TIMEOUT`]).
pub async fn connect_viewer(
    url: &url::Url,
    trust: &Trust,
    token: Option<&str>,
) -> anyhow::Result<(moq_transport::session::Session, Subscriber)> {
    connect_with(url, trust, token, link_transport_config()).await
}

/// QUIC settings of a link that must notice a silent peer quickly.
fn link_transport_config() -> quinn::TransportConfig {
    let mut transport = quic_transport_config();
    transport.keep_alive_interval(Some(LINK_KEEP_ALIVE));
    transport.max_idle_timeout(Some(
        LINK_IDLE_TIMEOUT
            .try_into()
            .expect("1.2 s is a valid idle timeout"),
    ));
    transport
}

async fn connect_with(
    url: &url::Url,
    trust: &Trust,
    token: Option<&str>,
    transport_config: quinn::TransportConfig,
) -> anyhow::Result<(moq_transport::session::Session, Subscriber)> {
    let (addr, host) = resolve(url).await?;
    let (alpn, transport): (&[u8], Transport) = match url.scheme() {
        "moqt" => (
            moq_transport::setup::DraftVersion::Draft18.alpn_bytes(),
            Transport::RawQuic,
        ),
        "https" => (
            web_transport_quinn::ALPN.as_bytes(),
            Transport::WebTransport,
        ),
        other => bail!("upstream URL scheme must be moqt or https, not {other}"),
    };
    let client_tls = tls::client_config(trust, &[alpn])?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
        .context("TLS configuration unusable for QUIC")?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config));
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let endpoint = quinn::Endpoint::client(bind).context("binding QUIC client socket")?;
    let server_name = if host.parse::<std::net::IpAddr>().is_ok() {
        "localhost".to_owned()
    } else {
        host
    };
    let conn = endpoint
        .connect_with(client, addr, &server_name)?
        .await
        .with_context(|| format!("QUIC connection to {url}"))?;
    let session = match transport {
        Transport::WebTransport => {
            let mut request = web_transport_quinn::proto::ConnectRequest::new(url.clone());
            for v in moq_transport::setup::SUPPORTED_ALPNS {
                request = request.with_protocol(v.to_string());
            }
            web_transport_quinn::Session::connect(conn, request)
                .await
                .context("WebTransport CONNECT")?
        }
        Transport::RawQuic => web_transport_quinn::Session::raw(
            conn,
            url.clone(),
            web_transport_quinn::proto::ConnectResponse::default(),
        ),
    };
    let tokens = token
        .map(|t| {
            moq_transport::setup::AuthorizationToken::new(
                crate::access::TOKEN_TYPE,
                t.as_bytes().to_vec(),
            )
        })
        .into_iter()
        .collect();
    let (session, _publisher, subscriber) = moq_transport::session::Session::connect_with_tokens(
        session.into(),
        None,
        transport,
        tokens,
    )
    .await
    .context("MoQT setup")?;
    Ok((session, subscriber))
}

async fn connect_once(
    config: &UpstreamConfig,
    link: Link,
    upstreams: &Upstreams,
) -> anyhow::Result<()> {
    let ctx = &upstreams.ctx;
    let (session, subscriber) = connect_with(
        &config.url,
        &config.trust,
        ctx.credential.as_deref(),
        link_transport_config(),
    )
    .await?;
    tracing::info!(upstream = %config.url, "upstream connected");
    ctx.counters
        .upstream_sessions_active
        .fetch_add(1, Ordering::Relaxed);
    struct Connected<'a>(&'a ServerCounters);
    impl Drop for Connected<'_> {
        fn drop(&mut self) {
            self.0
                .upstream_sessions_active
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _connected = Connected(&ctx.counters);
    let mut offered = HashSet::new();
    let result = tokio::select! {
        res = session.run() => res.context("upstream session"),
        res = follow_namespaces(config, link, upstreams, subscriber, &mut offered) => res,
    };
    for ns in offered {
        upstreams.on(&ns, OfferEvent::Lost(link), None);
    }
    result
}

/// Subscribes to the broadcasts an upstream announces under `prefix`.
pub async fn announcements(
    subscriber: &mut Subscriber,
    prefix: &[String],
) -> anyhow::Result<SubscribeNamespace> {
    let mut fields = TrackNamespacePrefix::new();
    for f in prefix {
        fields.fields.push(TupleField::from_utf8(f));
    }
    let namespaces = subscriber
        .subscribe_namespace(fields, KeyValuePairs::default())
        .await
        .context("SUBSCRIBE_NAMESPACE")?;
    namespaces
        .ok()
        .await
        .context("SUBSCRIBE_NAMESPACE refused")?;
    Ok(namespaces)
}

/// Serves `namespace` from an upstream: a broadcast whose track requests
/// arrive on the receiver. None when another source already serves it.
pub fn adopt(
    broadcasts: &Broadcasts,
    namespace: &Namespace,
    limits: CacheLimits,
) -> Option<(Arc<Broadcast>, mpsc::UnboundedReceiver<Arc<TrackCache>>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let broadcast = Broadcast::new(namespace.clone(), Source::Upstream(tx), limits);
    let active = broadcasts.insert(broadcast.clone());
    Arc::ptr_eq(&active, &broadcast).then_some((broadcast, rx))
}

async fn follow_namespaces(
    config: &UpstreamConfig,
    link: Link,
    upstreams: &Upstreams,
    mut subscriber: Subscriber,
    offered: &mut HashSet<Namespace>,
) -> anyhow::Result<()> {
    let namespaces = announcements(&mut subscriber, &config.prefix).await?;
    loop {
        match namespaces.next().await? {
            Some(NamespaceEvent::Added(ns)) => {
                let Ok(ns) = from_track_namespace(&ns) else {
                    tracing::warn!("upstream announced a namespace that is not ours; ignored");
                    continue;
                };
                tracing::info!(namespace = %ns, upstream = %config.url, "broadcast announced upstream");
                offered.insert(ns.clone());
                upstreams.on(&ns, OfferEvent::Announced(link), Some(&subscriber));
            }
            Some(NamespaceEvent::Removed(ns)) => {
                if let Ok(ns) = from_track_namespace(&ns) {
                    if offered.remove(&ns) {
                        tracing::info!(namespace = %ns, upstream = %config.url, "broadcast ended upstream");
                        upstreams.on(&ns, OfferEvent::Ended(link), None);
                    }
                }
            }
            None => bail!("upstream ended the namespace subscription"),
        }
    }
}

/// The broadcasts an edge pulls, each with the links that offer it and the
/// session its tracks are pulled from now.
pub struct Upstreams {
    ctx: UpstreamContext,
    entries: Mutex<HashMap<Namespace, Entry>>,
}

struct Entry {
    broadcast: Arc<Broadcast>,
    offers: Offers,
    sessions: HashMap<Link, Subscriber>,
    /// The session the tracks pull from; `None` while orphaned. Dropped
    /// when the broadcast ends, which ends its pulls.
    serving: watch::Sender<Option<Subscriber>>,
}

impl Upstreams {
    pub fn new(ctx: UpstreamContext) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Namespace, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a link saw of `ns` (with its session when it announced it).
    pub fn on(&self, ns: &Namespace, event: OfferEvent, session: Option<&Subscriber>) {
        let mut entries = self.entries();
        if !entries.contains_key(ns) {
            let (OfferEvent::Announced(_), Some(_)) = (event, session) else {
                return;
            };
            let Some((broadcast, requests)) = adopt(&self.ctx.broadcasts, ns, self.ctx.limits)
            else {
                tracing::debug!(namespace = %ns, "broadcast already served from elsewhere");
                return;
            };
            let (serving, follow) = watch::channel(None);
            tokio::spawn(serve_track_requests(
                broadcast.clone(),
                requests,
                follow,
                self.ctx.clone(),
            ));
            entries.insert(
                ns.clone(),
                Entry {
                    broadcast,
                    offers: Offers::new(),
                    sessions: HashMap::new(),
                    serving,
                },
            );
        }
        let Some(entry) = entries.get_mut(ns) else {
            return;
        };
        match (event, session) {
            (OfferEvent::Announced(link), Some(session)) => {
                entry.sessions.insert(link, session.clone());
            }
            (OfferEvent::Ended(link) | OfferEvent::Lost(link), _) => {
                entry.sessions.remove(&link);
            }
            _ => {}
        }
        let decision = entry.offers.on(event, Instant::now());
        self.apply(&mut entries, ns, decision);
    }

    /// Ends the orphans whose grace ran out; runs for ever.
    pub async fn expire_orphans(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut entries = self.entries();
            let ended: Vec<Namespace> = entries
                .iter()
                .filter(|(_, e)| e.offers.tick(now) == Decision::End)
                .map(|(ns, _)| ns.clone())
                .collect();
            for ns in ended {
                self.apply(&mut entries, &ns, Decision::End);
            }
        }
    }

    fn apply(&self, entries: &mut HashMap<Namespace, Entry>, ns: &Namespace, decision: Decision) {
        match decision {
            Decision::Keep => {}
            Decision::Serve(link) => {
                if let Some(entry) = entries.get(ns) {
                    tracing::info!(namespace = %ns, link, "pulling the broadcast from this upstream");
                    let session = entry.sessions.get(&link).cloned();
                    entry.serving.send_replace(session);
                }
            }
            Decision::Orphaned => {
                if let Some(entry) = entries.get(ns) {
                    if entry.serving.borrow().is_some() {
                        tracing::info!(namespace = %ns, "no upstream offers the broadcast; waiting for one");
                        entry.serving.send_replace(None);
                    }
                }
            }
            Decision::End => {
                if let Some(entry) = entries.remove(ns) {
                    tracing::info!(namespace = %ns, "broadcast ended");
                    self.ctx.broadcasts.remove(&entry.broadcast);
                }
            }
        }
    }
}

/// Pulls each track the broadcast is asked for from the session `serving`
/// names, following it from session to session, until the broadcast ends
/// (the sender is dropped).
async fn serve_track_requests(
    broadcast: Arc<Broadcast>,
    mut requests: mpsc::UnboundedReceiver<Arc<TrackCache>>,
    serving: watch::Receiver<Option<Subscriber>>,
    ctx: UpstreamContext,
) {
    let mut pulls = FuturesUnordered::new();
    let mut ended = serving.clone();
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(track) => pulls.push(pull_track(broadcast.clone(), track, serving.clone(), ctx.clone())),
                None => break,
            },
            Some(()) = pulls.next(), if !pulls.is_empty() => {}
            closed = ended.changed() => if closed.is_err() { break },
        }
    }
    // The pulls see the end too; let them retire their tracks.
    while pulls.next().await.is_some() {}
}

/// How one subscription ended.
enum Pulled {
    /// Nobody wants the track any more (unsubscribed).
    Idle,
    /// The upstream ended the track cleanly.
    Finished,
    /// Refused, reset, or the session broke.
    Broken(anyhow::Error, Option<serve::ServeError>),
}

async fn pull_track(
    broadcast: Arc<Broadcast>,
    track: Arc<TrackCache>,
    mut serving: watch::Receiver<Option<Subscriber>>,
    ctx: UpstreamContext,
) {
    let mut life = Lifecycle::new(Policy {
        history: ctx.history,
        ..Policy::edge(ctx.idle)
    });
    let mut answered = false;
    let outcome: anyhow::Result<()> = loop {
        let session = serving.borrow_and_update().clone();
        let Some(session) = session else {
            // Orphaned: wait for an upstream (or the end of the broadcast).
            if serving.changed().await.is_err() {
                break Ok(());
            }
            continue;
        };
        let plan = life.subscribe(track.frontier().map(|(group, next, _)| (group, next)));
        let (how, error, refusal) = tokio::select! {
            pulled = pull_once(&broadcast, &track, session, plan, &life, &ctx, &mut answered) => match pulled {
                Pulled::Idle => break Ok(()),
                Pulled::Finished => (Ending::Finished, None, None),
                Pulled::Broken(err, refusal) => (Ending::Closed, Some(err), refusal),
            },
            changed = serving.changed() => match changed {
                Ok(()) => (Ending::Switched, None, None),
                Err(_) => break Ok(()),
            },
        };
        match life.ended(how, true, answered) {
            After::Resubscribe => {}
            After::Wait(limit) => {
                if let Some(err) = &error {
                    tracing::debug!(namespace = %broadcast.namespace, track = %track.name, error = %format!("{err:#}"), "upstream subscription broke; following the broadcast");
                }
                if let Ok(Err(_)) = tokio::time::timeout(limit, serving.changed()).await {
                    break Ok(());
                }
            }
            After::Retire { refuse } => {
                if refuse {
                    track.set_upstream(UpstreamState::Refused(
                        refusal.unwrap_or(serve::ServeError::Cancel),
                    ));
                }
                break error.map_or(Ok(()), Err);
            }
        }
    };
    match outcome {
        Ok(()) => {
            tracing::debug!(namespace = %broadcast.namespace, track = %track.name, "upstream subscription released")
        }
        Err(err) => {
            tracing::info!(namespace = %broadcast.namespace, track = %track.name, error = %format!("{err:#}"), "upstream subscription ended")
        }
    }
    retire(&broadcast, &track).await;
}

/// A track's upstream subscription is over: the broadcast drops it (the
/// next request subscribes afresh), viewers still waiting for the answer
/// are refused, and the cache closes.
pub async fn retire(broadcast: &Broadcast, track: &Arc<TrackCache>) {
    broadcast.remove_track(track);
    track.set_history_done();
    if matches!(
        track.upstream_answer(Duration::ZERO).await,
        UpstreamState::Pending
    ) {
        track.set_upstream(UpstreamState::Refused(serve::ServeError::Cancel));
    }
    track.close();
}

/// One subscription on `subscriber`, from where `plan` says, until it ends
/// or nobody wants the track.
async fn pull_once(
    broadcast: &Arc<Broadcast>,
    track: &Arc<TrackCache>,
    mut subscriber: Subscriber,
    plan: Subscribe,
    life: &Lifecycle,
    ctx: &UpstreamContext,
    answered: &mut bool,
) -> Pulled {
    let (writer, reader) = serve::Track::new(
        to_track_namespace(&broadcast.namespace),
        track.name.as_str(),
    )
    .produce();
    // After a change of upstream: right where the viewers wait; what the
    // cache already holds comes at most once more and is dropped.
    let mut params = KeyValuePairs::default();
    if let Some((group, object)) = plan.start {
        let filter = SubscriptionFilter {
            filter_type: FilterType::AbsoluteStart,
            start_location: Some(moq_transport::coding::Location::new(group, object)),
            end_group_id: None,
        };
        if params.set_subscription_filter(&filter).is_err() {
            params = KeyValuePairs::default();
        }
    }
    ctx.counters
        .upstream_subscriptions
        .fetch_add(1, Ordering::Relaxed);
    ctx.counters
        .upstream_subscriptions_active
        .fetch_add(1, Ordering::Relaxed);
    // Counted down however the subscription ends (a switch drops it).
    struct Held<'a>(&'a ServerCounters);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0
                .upstream_subscriptions_active
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _held = Held(&ctx.counters);
    let subscription = match subscriber.subscribe_open_with_params(writer, params).await {
        Ok(s) => s,
        Err(err) => {
            return Pulled::Broken(
                anyhow::Error::from(err.clone()).context("SUBSCRIBE refused"),
                Some(err),
            )
        }
    };
    let upstream_largest = subscription
        .subscribe_ok()
        .and_then(|ok| ok.params.largest_object().ok().flatten())
        .map(|l| (l.group_id, l.object_id));
    if !*answered {
        track.set_upstream(UpstreamState::Ready {
            largest: upstream_largest,
        });
        *answered = true;
    }
    let mut idle_check = tokio::time::interval(Duration::from_millis(500));
    let mut groups = FuturesUnordered::new();
    // Recent history so that a cold edge can serve HLS at once (a joining
    // FETCH ends where the subscription began). An upstream without FETCH
    // support costs nothing but the request.
    let history = backfill(
        subscriber.clone(),
        subscription.id,
        plan.history,
        track.clone(),
    );
    tokio::pin!(history);
    let mut history_done = plan.history == 0;
    if history_done {
        track.set_history_done();
    }
    let mode = tokio::select! {
        mode = reader.mode() => mode,
        res = subscription.closed() => return match res {
            Ok(()) => Pulled::Finished,
            Err(err) => Pulled::Broken(anyhow::Error::from(err), None),
        },
    };
    let mut subgroups = match mode {
        Ok(TrackReaderMode::Subgroups(subgroups)) => subgroups,
        Ok(_) => {
            return Pulled::Broken(
                anyhow::anyhow!("upstream delivers this track neither as subgroups; not supported"),
                None,
            )
        }
        Err(err) => {
            return Pulled::Broken(anyhow::Error::from(err).context("upstream track"), None)
        }
    };
    let pulled = loop {
        tokio::select! {
            next = subgroups.next() => match next {
                Ok(Some(subgroup)) => groups.push(read_subgroup(subgroup, track.clone(), ctx.counters.clone())),
                Ok(None) => break Pulled::Finished,
                Err(err) => break Pulled::Broken(anyhow::Error::from(err), None),
            },
            Some(res) = groups.next(), if !groups.is_empty() => {
                if let Err(err) = res {
                    tracing::debug!(track = %track.name, error = %err, "upstream group stream ended early");
                }
            }
            res = &mut history, if !history_done => {
                history_done = true;
                track.set_history_done();
                if let Err(err) = res {
                    tracing::debug!(track = %track.name, error = %format!("{err:#}"), "no history from upstream");
                }
            }
            _ = idle_check.tick() => {
                if !life.wanted(track.demand(Instant::now())) {
                    subscription.unsubscribe().await;
                    break Pulled::Idle;
                }
            }
            res = subscription.closed() => break match res {
                Ok(()) => Pulled::Finished,
                Err(err) => Pulled::Broken(anyhow::Error::from(err), None),
            },
        }
    };
    if !history_done {
        track.set_history_done();
    }
    pulled
}

/// Fetches `history` groups before where `subscription` began.
async fn backfill(
    mut subscriber: Subscriber,
    subscription: u64,
    history: u64,
    track: Arc<TrackCache>,
) -> anyhow::Result<()> {
    let mut fetch = subscriber
        .joining_fetch(
            FetchType::RelativeJoining,
            subscription,
            history,
            KeyValuePairs::default(),
        )
        .await?;
    fetch.ok().await?;
    let mut groups = Vec::new();
    let result = async {
        while let Some((group, object)) = next_fetched(&mut fetch, &track.name).await? {
            track.backfill(group, object, Instant::now());
            if groups.last() != Some(&group) {
                groups.push(group);
            }
        }
        anyhow::Ok(())
    }
    .await;
    // The last fetched group may continue live; earlier ones are whole.
    let live = track.largest().map(|(g, _)| g);
    for g in groups {
        if Some(g) != live {
            track.finish_group(g);
        }
    }
    result
}

/// The next object a FETCH delivers, with its group, as the cache keeps it;
/// none at the end.
pub async fn next_fetched(fetch: &mut Fetch, track: &str) -> anyhow::Result<Option<(u64, Object)>> {
    while let Some(record) = fetch.next().await? {
        let FetchRecord::Object(header) = record else {
            continue;
        };
        let mut payload =
            bytes::BytesMut::with_capacity(header.payload_length.min(1 << 24) as usize);
        while let Some(chunk) = fetch.read_payload_chunk(1 << 20).await? {
            payload.extend_from_slice(&chunk);
        }
        let payload = payload.freeze();
        let object = Object {
            id: header.object_id,
            meta: object_meta(track, &payload),
            payload,
            ext: extensions(&header.extension_headers),
        };
        return Ok(Some((header.group_id, object)));
    }
    Ok(None)
}

/// An object's extension headers as the cache keeps them (none: no allocation).
pub fn extensions(
    ext: &moq_transport::data::ExtensionHeaders,
) -> Option<Arc<moq_transport::data::ExtensionHeaders>> {
    (!ext.is_empty()).then(|| Arc::new(ext.clone()))
}

async fn read_subgroup(
    subgroup: serve::SubgroupReader,
    track: Arc<TrackCache>,
    counters: Arc<ServerCounters>,
) -> Result<(), serve::ServeError> {
    let group = subgroup.group_id;
    let result = read_objects(subgroup, &track.name, |object| {
        if let Some(produced) = object.meta.producer_time_us {
            crate::metrics::observe_since(&counters.latency, produced);
        }
        track.insert(group, object, Instant::now());
    })
    .await;
    // Stream end or reset: nothing more will arrive for this group.
    track.finish_group(group);
    result
}

/// Reads one subgroup stream (one group of one track) and hands each object
/// to `each`, as the cache keeps it. Ok: the stream ended cleanly; an error:
/// it was reset (the group may be incomplete).
pub async fn read_objects(
    mut subgroup: serve::SubgroupReader,
    track: &str,
    mut each: impl FnMut(Object),
) -> Result<(), serve::ServeError> {
    while let Some(mut object) = subgroup.next().await? {
        // A status (End of Group, End of Track) carries no media: the
        // stream's clean end that follows says what it needs to.
        if object.info.status != ObjectStatus::NormalObject {
            continue;
        }
        let id = object.info.object_id;
        let ext = extensions(&object.info.extension_headers);
        let payload = object.read_all().await?;
        let meta = object_meta(track, &payload);
        each(Object {
            id,
            payload,
            meta,
            ext,
        });
    }
    Ok(())
}

/// A broadcast pulled from the upstream sessions `serving` names, one after
/// another: tracks are subscribed when first asked for and follow each new
/// session at the object their readers wait for (used by `strom watch`).
/// Drive the sessions alongside; the returned task serves the track
/// requests until the sender is dropped.
pub fn attach(
    namespace: Namespace,
    serving: watch::Receiver<Option<Subscriber>>,
    ctx: UpstreamContext,
) -> (Arc<Broadcast>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let broadcast = Broadcast::new(namespace, Source::Upstream(tx), ctx.limits);
    let serve = serve_track_requests(broadcast.clone(), rx, serving, ctx);
    (broadcast, serve)
}
