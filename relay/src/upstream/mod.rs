//! Upstream links: an edge dials an origin or a parent edge, learns its
//! broadcasts with SUBSCRIBE_NAMESPACE, and subscribes to a track only while
//! someone downstream wants it — exactly one upstream subscription per track.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use moq_transport::coding::{KeyValuePairs, TrackNamespacePrefix, TupleField};
use moq_transport::data::{FetchRecord, ObjectStatus};
use moq_transport::message::FetchType;
use moq_transport::serve::{self, TrackReaderMode};
use moq_transport::session::{Fetch, NamespaceEvent, SubscribeNamespace, Subscriber, Transport};
use tokio::sync::mpsc;

use crate::broadcast::{Broadcast, Broadcasts, Namespace, Source};
use crate::cache::{CacheLimits, Object, TrackCache, UpstreamState};
use crate::metrics::ServerCounters;
use crate::moqt::{from_track_namespace, quic_transport_config, to_track_namespace};
use crate::object_meta;
use crate::tls::{self, Trust};

mod lifecycle;
pub use lifecycle::{
    After, Demand, Ending, Lifecycle, Location, Policy, Redial, Subscribe, HISTORY_GROUPS,
    RETRY_AFTER,
};

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

/// Keeps one upstream link up for ever, dialling again after a loss as
/// [`Redial`] says.
pub async fn run(config: UpstreamConfig, ctx: UpstreamContext) {
    let mut redial = Redial::new();
    loop {
        let started = Instant::now();
        match connect_once(&config, &ctx).await {
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
    client.transport_config(Arc::new(quic_transport_config()));
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

async fn connect_once(config: &UpstreamConfig, ctx: &UpstreamContext) -> anyhow::Result<()> {
    let (session, subscriber) =
        connect_with_token(&config.url, &config.trust, ctx.credential.as_deref()).await?;
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
    let mut registered: HashMap<Namespace, Arc<Broadcast>> = HashMap::new();
    let result = tokio::select! {
        res = session.run() => res.context("upstream session"),
        res = follow_namespaces(config, ctx, subscriber, &mut registered) => res,
    };
    for b in registered.values() {
        ctx.broadcasts.remove(b);
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
    ctx: &UpstreamContext,
    mut subscriber: Subscriber,
    registered: &mut HashMap<Namespace, Arc<Broadcast>>,
) -> anyhow::Result<()> {
    let namespaces = announcements(&mut subscriber, &config.prefix).await?;
    let mut pulls = FuturesUnordered::new();
    loop {
        tokio::select! {
            event = namespaces.next() => match event? {
                Some(NamespaceEvent::Added(ns)) => {
                    let Ok(ns) = from_track_namespace(&ns) else {
                        tracing::warn!("upstream announced a namespace that is not ours; ignored");
                        continue;
                    };
                    if registered.contains_key(&ns) {
                        continue;
                    }
                    let Some((broadcast, rx)) = adopt(&ctx.broadcasts, &ns, ctx.limits) else {
                        tracing::debug!(namespace = %ns, "broadcast already served by another upstream");
                        continue;
                    };
                    tracing::info!(namespace = %ns, upstream = %config.url, "broadcast announced upstream");
                    registered.insert(ns, broadcast.clone());
                    pulls.push(serve_track_requests(broadcast, rx, subscriber.clone(), ctx.clone()));
                }
                Some(NamespaceEvent::Removed(ns)) => {
                    if let Ok(ns) = from_track_namespace(&ns) {
                        if let Some(b) = registered.remove(&ns) {
                            tracing::info!(namespace = %ns, "broadcast ended upstream");
                            ctx.broadcasts.remove(&b);
                        }
                    }
                }
                None => bail!("upstream ended the namespace subscription"),
            },
            Some(()) = pulls.next(), if !pulls.is_empty() => {}
        }
    }
}

/// Subscribes upstream to each track the broadcast is asked for.
async fn serve_track_requests(
    broadcast: Arc<Broadcast>,
    mut requests: mpsc::UnboundedReceiver<Arc<TrackCache>>,
    subscriber: Subscriber,
    ctx: UpstreamContext,
) {
    let mut pulls = FuturesUnordered::new();
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(track) => pulls.push(pull_track(broadcast.clone(), track, subscriber.clone(), ctx.clone())),
                None => return,
            },
            Some(()) = pulls.next(), if !pulls.is_empty() => {}
        }
    }
}

async fn pull_track(
    broadcast: Arc<Broadcast>,
    track: Arc<TrackCache>,
    mut subscriber: Subscriber,
    ctx: UpstreamContext,
) {
    ctx.counters
        .upstream_subscriptions
        .fetch_add(1, Ordering::Relaxed);
    ctx.counters
        .upstream_subscriptions_active
        .fetch_add(1, Ordering::Relaxed);
    let result = pull_track_inner(&broadcast, &track, &mut subscriber, &ctx).await;
    ctx.counters
        .upstream_subscriptions_active
        .fetch_sub(1, Ordering::Relaxed);
    match result {
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

async fn pull_track_inner(
    broadcast: &Arc<Broadcast>,
    track: &Arc<TrackCache>,
    subscriber: &mut Subscriber,
    ctx: &UpstreamContext,
) -> anyhow::Result<()> {
    let mut life = Lifecycle::new(Policy {
        history: ctx.history,
        ..Policy::edge(ctx.idle)
    });
    let plan = life.subscribe(None);
    let (writer, reader) = serve::Track::new(
        to_track_namespace(&broadcast.namespace),
        track.name.as_str(),
    )
    .produce();
    let subscription = match subscriber.subscribe_open(writer).await {
        Ok(s) => s,
        Err(err) => {
            if let After::Retire { refuse: true } = life.ended(Ending::Closed, true, false) {
                track.set_upstream(UpstreamState::Refused(err.clone()));
            }
            return Err(anyhow::Error::from(err).context("SUBSCRIBE refused"));
        }
    };
    let upstream_largest = subscription
        .subscribe_ok()
        .and_then(|ok| ok.params.largest_object().ok().flatten())
        .map(|l| (l.group_id, l.object_id));
    track.set_upstream(UpstreamState::Ready {
        largest: upstream_largest,
    });
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
        mode = reader.mode() => mode.context("upstream track")?,
        res = subscription.closed() => { res?; return Ok(()) },
    };
    let TrackReaderMode::Subgroups(mut subgroups) = mode else {
        bail!("upstream delivers this track neither as subgroups; not supported");
    };
    let idle = loop {
        tokio::select! {
            next = subgroups.next() => match next? {
                Some(subgroup) => groups.push(read_subgroup(subgroup, track.clone(), ctx.counters.clone())),
                None => break false,
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
                    break true;
                }
            }
            res = subscription.closed() => { res?; break false },
        }
    };
    if idle {
        subscription.unsubscribe().await;
    }
    Ok(())
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

/// A broadcast pulled from an already connected upstream session: tracks are
/// subscribed when first asked for (used by `strom watch`). Drive the
/// session's `run()` alongside; the returned task serves the track requests.
pub fn attach(
    namespace: Namespace,
    subscriber: Subscriber,
    ctx: UpstreamContext,
) -> (Arc<Broadcast>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let broadcast = Broadcast::new(namespace, Source::Upstream(tx), ctx.limits);
    let serve = serve_track_requests(broadcast.clone(), rx, subscriber, ctx);
    (broadcast, serve)
}
