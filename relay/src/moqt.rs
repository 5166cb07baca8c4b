//! MoQT (draft-18) over QUIC and WebTransport: the server that fans the cache
//! out to subscribers and announces broadcasts, and the conversions between
//! strom's model and moq-transport's types.
//!
//! Why one file of ~930 lines: it is the server side of one MoQT session
//! (accepting it, refusing publishers, SUBSCRIBE_NAMESPACE, SUBSCRIBE,
//! FETCH, TRACK_STATUS), and every handler passes the same per-session
//! grant check (`refused`) and feeds the same counters. Split by message,
//! that one gate would be spread over six files.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use moq_transport::coding::{Location, TrackNamespace, TrackNamespacePrefix, TupleField};
use moq_transport::data::{FetchRecord, FetchRecordObject, ObjectStatus};
use moq_transport::message::FilterType;
use moq_transport::message::RequestErrorCode;
use moq_transport::serve::{self, ServeError, Subgroup};
use moq_transport::session::{
    FetchOkInfo, FetchRequested, Publisher, Subscribed, SubscribedNamespace, Transport,
};
use tokio::sync::broadcast::error::RecvError;

use crate::access::{Access, Refused, RevocationWatch, TOKEN_PARAM};
use crate::broadcast::{Announcement, Broadcast, Broadcasts, Namespace};
use crate::cache::{Delivery, UpstreamState};
use crate::priority::MoqtPrioritySession;

/// The longest RENDEZVOUS_TIMEOUT honoured (ms).
const MAX_RENDEZVOUS_MS: u64 = 30_000;

/// How long a subscriber waits for the upstream to accept a track.
const UPSTREAM_ANSWER_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
use crate::metrics::ServerCounters;

/// ALPNs a MoQT endpoint offers: HTTP/3 for WebTransport, then the raw-QUIC MoQT versions.
pub fn server_alpns() -> Vec<&'static [u8]> {
    let mut alpns: Vec<&'static [u8]> = vec![web_transport_quinn::ALPN.as_bytes()];
    alpns.extend(
        moq_transport::setup::SUPPORTED_ALPNS
            .iter()
            .map(|a| a.as_bytes()),
    );
    alpns
}

pub fn to_track_namespace(ns: &Namespace) -> TrackNamespace {
    let mut out = TrackNamespace::new();
    for f in ns.fields() {
        out.add(TupleField::from_utf8(f));
    }
    out
}

pub fn from_track_namespace(ns: &TrackNamespace) -> anyhow::Result<Namespace> {
    let fields = ns
        .fields
        .iter()
        .map(|f| String::from_utf8(f.value.clone()).context("namespace field is not UTF-8"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Namespace::new(fields)?)
}

fn prefix_fields(prefix: &TrackNamespacePrefix) -> anyhow::Result<Vec<String>> {
    prefix
        .fields
        .iter()
        .map(|f| String::from_utf8(f.value.clone()).context("namespace prefix is not UTF-8"))
        .collect()
}

/// Publisher priorities (lower is more important): audio survives congestion first.
pub(crate) fn priority_of(track: &str) -> u8 {
    match track {
        "catalog" => 0,
        t if t.starts_with("audio") => 1,
        _ => 2,
    }
}

pub(crate) fn quic_transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        std::time::Duration::from_secs(10)
            .try_into()
            .expect("10 s is a valid idle timeout"),
    ));
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(3)));
    // One stream per group per track per subscriber; be generous.
    transport.max_concurrent_uni_streams(1024u32.into());
    // Unsent data a connection may buffer, to start with; each session's
    // window then follows what it carries (see `SendWindow`). quinn's default
    // (10 MB) times hundreds of lagging viewers is gigabytes.
    transport.send_window(SendWindow::PER_TRACK * 2);
    transport.max_concurrent_bidi_streams(256u32.into());
    transport
}

/// How long a subscription that starts before everything cached waits for
/// the relay's own history fetch (a second at most, once per track).
const HISTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Socket buffers for a QUIC server: the kernel's default (~208 KiB) drops
/// handshakes when a hundred viewers join at once.
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// A UDP socket with large buffers (the kernel caps them at net.core.*mem_max).
pub(crate) fn udp_socket(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .context("creating UDP socket")?;
    if let Err(err) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %err, "could not enlarge the UDP receive buffer");
    }
    if let Err(err) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %err, "could not enlarge the UDP send buffer");
    }
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding UDP {addr}"))?;
    Ok(socket.into())
}

/// A session's QUIC send window follows the number of tracks it receives:
/// a viewer (two or three tracks) gets about 1 MB — ample for a few Mbit/s
/// at any RTT — while an edge-to-edge link carrying many tracks gets more, so
/// that many lagging viewers cannot pin gigabytes of unsent data.
pub(crate) struct SendWindow {
    conn: quinn::Connection,
    tracks: std::sync::atomic::AtomicU64,
}

impl SendWindow {
    const PER_TRACK: u64 = 512 * 1024;
    const MAX: u64 = 32 * 1024 * 1024;

    fn new(conn: quinn::Connection) -> Arc<Self> {
        Arc::new(Self {
            conn,
            tracks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn set(&self, tracks: u64) {
        let window = (tracks.max(2) * Self::PER_TRACK).min(Self::MAX);
        self.conn.set_send_window(window);
    }

    /// Counts a track for as long as the guard lives.
    fn track(self: &Arc<Self>) -> SendWindowGuard {
        self.set(self.tracks.fetch_add(1, Ordering::Relaxed) + 1);
        SendWindowGuard(self.clone())
    }
}

struct SendWindowGuard(Arc<SendWindow>);

impl Drop for SendWindowGuard {
    fn drop(&mut self) {
        self.0.set(
            self.0
                .tracks
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1),
        );
    }
}

/// A bound QUIC endpoint serving MoQT over raw QUIC and WebTransport.
pub struct MoqtServer {
    endpoint: quinn::Endpoint,
}

impl MoqtServer {
    pub fn bind(addr: SocketAddr, tls: rustls::ServerConfig) -> anyhow::Result<Self> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("TLS configuration unusable for QUIC")?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(quic_transport_config()));
        let socket = udp_socket(addr)?;
        let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            runtime,
        )
        .with_context(|| format!("starting QUIC on {addr}"))?;
        Ok(Self { endpoint })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// What ends every session of this server when the service stops.
    pub fn closer(&self) -> MoqtCloser {
        MoqtCloser(self.endpoint.clone())
    }

    /// Accepts sessions until the endpoint closes; each runs on its own task.
    /// With `access`, a session must open with a token it admits.
    pub async fn run(
        self,
        broadcasts: Arc<Broadcasts>,
        counters: Arc<ServerCounters>,
        access: Option<Arc<Access>>,
    ) {
        while let Some(incoming) = self.endpoint.accept().await {
            let broadcasts = broadcasts.clone();
            let counters = counters.clone();
            let access = access.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match accept_session(incoming, broadcasts, counters, access).await {
                    Ok(()) => {
                        tracing::debug!(remote = %crate::pseudonym::addr(remote), "MoQT session ended")
                    }
                    // A viewer leaving closes with code 0: routine, not news.
                    Err(err) if format!("{err:#}").contains("closed by peer: 0") => {
                        tracing::debug!(remote = %crate::pseudonym::addr(remote), "MoQT session closed by the peer")
                    }
                    Err(err) => {
                        tracing::info!(remote = %crate::pseudonym::addr(remote), error = %format!("{err:#}"), "MoQT session ended")
                    }
                }
            });
        }
    }
}

/// Ends a MoQT server's sessions when its service stops.
#[derive(Clone)]
pub struct MoqtCloser(quinn::Endpoint);

impl MoqtCloser {
    /// Closes every session with NO_ERROR (code 0, "server stopping") so
    /// peers reconnect at once instead of waiting out an idle timeout, and
    /// waits up to `within` for the closes to be sent. moq-transport 0.17
    /// has no API to send a GOAWAY first; a closed session is the clean end
    /// available.
    pub async fn close(&self, within: std::time::Duration) {
        self.0.close(quinn::VarInt::from_u32(0), b"server stopping");
        let _ = tokio::time::timeout(within, self.0.wait_idle()).await;
    }
}

/// MoQT session termination code UNAUTHORIZED (draft-18 §15.10.1).
const SESSION_UNAUTHORIZED: u32 = 0x2;

/// The tokens a session presents: AUTHORIZATION TOKEN setup options, then a
/// `token` query parameter of the WebTransport URL or the raw-QUIC PATH
/// (for clients whose MoQT library cannot send setup options).
pub(crate) fn session_tokens(
    params: &moq_transport::coding::KeyValuePairs,
    url: &url::Url,
    path: Option<&str>,
) -> Result<Vec<String>, Refused> {
    let setup = moq_transport::setup::decode_setup_tokens(params)
        .map_err(|_| Refused::Token(strom_token::TokenError::Malformed))?;
    let mut tokens: Vec<String> = setup
        .iter()
        .map(|t| String::from_utf8_lossy(t.value).into_owned())
        .collect();
    let from_url = url
        .query()
        .and_then(|q| crate::access::query_value(q, TOKEN_PARAM));
    let from_path = path
        .and_then(|p| p.split_once('?'))
        .and_then(|(_, q)| crate::access::query_value(q, TOKEN_PARAM));
    tokens.extend(from_url);
    tokens.extend(from_path);
    Ok(tokens)
}

/// A session's admission: what its token allows, and the watch that ends it.
pub(crate) struct SessionGrant {
    pub access: Arc<Access>,
    pub claims: strom_token::Claims,
}

impl SessionGrant {
    fn check(&self, namespace: &TrackNamespace) -> Result<(), Refused> {
        let fields: Vec<String> = namespace
            .fields
            .iter()
            .map(|f| String::from_utf8_lossy(&f.value).into_owned())
            .collect();
        let parts: Vec<&str> = fields.iter().map(String::as_str).collect();
        self.access.permits(&self.claims, &parts)
    }
}

/// Checks a request's namespace against the session's grant (no grant: open).
fn refused(grant: Option<&SessionGrant>, namespace: &TrackNamespace) -> Option<Refused> {
    grant.and_then(|g| g.check(namespace).err())
}

async fn accept_session(
    incoming: quinn::Incoming,
    broadcasts: Arc<Broadcasts>,
    counters: Arc<ServerCounters>,
    access: Option<Arc<Access>>,
) -> anyhow::Result<()> {
    let conn = incoming.await.context("QUIC handshake failed")?;
    let window = SendWindow::new(conn.clone());
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .unwrap_or_default();
    let (session, transport) = if alpn == web_transport_quinn::ALPN.as_bytes() {
        let request = web_transport_quinn::Request::accept(conn)
            .await
            .context("WebTransport CONNECT failed")?;
        // Browsers that do not offer WT-Available-Protocols get draft-18.
        let mut response = web_transport_quinn::proto::ConnectResponse::OK;
        if !request.protocols.is_empty() {
            match moq_transport::setup::negotiate_version(&request.protocols) {
                Some(v) => response = response.with_protocol(v.to_string()),
                None => {
                    let _ = request
                        .reject(web_transport_quinn::http::StatusCode::NOT_ACCEPTABLE)
                        .await;
                    anyhow::bail!("WebTransport client offers no MoQT version we speak");
                }
            }
        }
        let session = request
            .respond(response)
            .await
            .context("WebTransport response failed")?;
        (session, Transport::WebTransport)
    } else if moq_transport::setup::SUPPORTED_ALPNS
        .iter()
        .any(|a| a.as_bytes() == alpn.as_slice())
    {
        let url = url::Url::parse("moqt://localhost/").expect("static URL parses");
        let session = web_transport_quinn::Session::raw(
            conn,
            url,
            web_transport_quinn::proto::ConnectResponse::default(),
        );
        (session, Transport::RawQuic)
    } else {
        anyhow::bail!("unsupported ALPN {:?}", String::from_utf8_lossy(&alpn));
    };

    let url = session.request().url.clone();
    let closer = session.clone();
    let session =
        moq_transport::session::transport::Session::new(MoqtPrioritySession(session), url.clone());
    let (session, publisher, subscriber) =
        moq_transport::session::Session::accept(session, None, transport)
            .await
            .context("MoQT setup failed")?;
    let protocol = match transport {
        Transport::WebTransport => "webtransport",
        Transport::RawQuic => "quic",
    };
    let (grant, mut watch): (Option<Arc<SessionGrant>>, Option<RevocationWatch>) = match access {
        None => (None, None),
        Some(access) => {
            let admitted = session_tokens(session.setup_params(), &url, session.connection_path())
                .and_then(|tokens| access.admit(&tokens, time::OffsetDateTime::now_utc()));
            match admitted {
                Ok(claims) => {
                    tracing::debug!(protocol, subject = %claims.sub, tenant = %claims.ten, event = %claims.evt, action = ?claims.act, "MoQT session admitted");
                    let watch = access.watch(claims.clone());
                    (Some(Arc::new(SessionGrant { access, claims })), Some(watch))
                }
                Err(refused) => {
                    counters.sessions_refused.fetch_add(1, Ordering::Relaxed);
                    closer.close(SESSION_UNAUTHORIZED, refused.to_string().as_bytes());
                    anyhow::bail!("MoQT session refused: {refused} ({})", refused.label());
                }
            }
        }
    };
    let _session_guard = counters.session_opened(protocol);
    let _viewer_guard = grant
        .as_ref()
        .filter(|g| g.claims.act == strom_token::Action::Play)
        .map(|g| counters.viewer_opened(&g.claims.ten, &g.claims.evt));
    let publisher = publisher.context("peer did not take the subscriber role")?;
    let revoked = async {
        match watch.as_mut() {
            Some(w) => w.revoked().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        res = session.run() => res.context("MoQT session failed"),
        _ = serve_publisher(publisher, broadcasts, counters.clone(), window, grant.clone()) => Ok(()),
        _ = refuse_publishers(subscriber) => Ok(()),
        _ = revoked => {
            closer.close(SESSION_UNAUTHORIZED, b"credential revoked");
            let subject = grant.as_ref().map(|g| g.claims.sub.clone()).unwrap_or_default();
            tracing::info!(%subject, "MoQT session closed: credential revoked");
            Ok(())
        }
    }
}

/// Answers every SUBSCRIBE and SUBSCRIBE_NAMESPACE of one session.
async fn serve_publisher(
    mut publisher: Publisher,
    broadcasts: Arc<Broadcasts>,
    counters: Arc<ServerCounters>,
    window: Arc<SendWindow>,
    grant: Option<Arc<SessionGrant>>,
) {
    let mut namespaces = publisher.clone();
    let mut fetches = publisher.clone();
    // Accept FETCH before the peer can send one (otherwise NOT_SUPPORTED).
    publisher.accept_fetch();
    let mut statuses = publisher.clone();
    let mut track_sets = publisher.clone();
    loop {
        tokio::select! {
            request = statuses.track_status_requested() => {
                let Some(mut request) = request else { return };
                if let Some(refused) = refused(grant.as_deref(), &request.request_msg.track_namespace) {
                    counters.requests_refused.fetch_add(1, Ordering::Relaxed);
                    let _ = request.respond_error(refused.request_error_code() as u64, "not authorised for this namespace");
                    continue;
                }
                answer_track_status(request, &broadcasts);
            }
            request = track_sets.subscribed_tracks() => {
                let Some(request) = request else { return };
                let _ = request.reject(RequestErrorCode::NotSupported as u64, "SUBSCRIBE_TRACKS is not supported");
            }
            request = fetches.fetch_requested() => {
                let Some(request) = request else { return };
                let broadcasts = broadcasts.clone();
                let grant = grant.clone();
                let counters = counters.clone();
                tokio::spawn(async move {
                    if let Err(err) = serve_fetch(request, broadcasts, grant.as_deref(), &counters).await {
                        tracing::debug!(error = %format!("{err:#}"), "fetch ended");
                    }
                });
            }
            subscribed = publisher.subscribed() => {
                let Some(subscribed) = subscribed else { return };
                if let Some(refused) = refused(grant.as_deref(), &subscribed.info.track_namespace) {
                    counters.requests_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(reason = refused.label(), "SUBSCRIBE refused");
                    let _ = subscribed.close(ServeError::Closed(refused.request_error_code() as u64));
                    continue;
                }
                let broadcasts = broadcasts.clone();
                let counters = counters.clone();
                let window = window.track();
                tokio::spawn(async move {
                    serve_subscription(subscribed, broadcasts, counters).await;
                    drop(window);
                });
            }
            request = namespaces.subscribed_namespace() => {
                let Some(request) = request else { return };
                let broadcasts = broadcasts.clone();
                let grant = grant.clone();
                let counters = counters.clone();
                tokio::spawn(async move {
                    if let Err(err) = serve_namespaces(request, broadcasts, grant.as_deref(), &counters).await {
                        tracing::debug!(error = %format!("{err:#}"), "namespace subscription ended");
                    }
                });
            }
        }
    }
}

async fn serve_namespaces(
    mut request: SubscribedNamespace,
    broadcasts: Arc<Broadcasts>,
    grant: Option<&SessionGrant>,
    counters: &ServerCounters,
) -> anyhow::Result<()> {
    let prefix = match prefix_fields(&request.info.namespace_prefix) {
        Ok(p) => p,
        Err(err) => {
            let _ = request.reject(0x3, "namespace prefix is not UTF-8");
            return Err(err);
        }
    };
    if let Some(grant) = grant {
        let parts: Vec<&str> = prefix.iter().map(String::as_str).collect();
        if let Err(refused) = grant.access.permits_prefix(&grant.claims, &parts) {
            counters.requests_refused.fetch_add(1, Ordering::Relaxed);
            let _ = request.reject(
                refused.request_error_code() as u64,
                "not authorised for this namespace",
            );
            anyhow::bail!("SUBSCRIBE_NAMESPACE refused: {}", refused.label());
        }
    }
    // Only broadcasts the session's token covers are announced.
    let wanted = |ns: &Namespace| {
        ns.starts_with(&prefix)
            && grant.is_none_or(|g| {
                let parts: Vec<&str> = ns.fields().iter().map(String::as_str).collect();
                g.access.permits(&g.claims, &parts).is_ok()
            })
    };
    let (current, mut events) = broadcasts.watch();
    request.ok()?;
    for ns in current.iter().filter(|ns| wanted(ns)) {
        request.namespace(&to_track_namespace(ns))?;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(Announcement::Active(ns)) if wanted(&ns) => {
                    request.namespace(&to_track_namespace(&ns))?;
                }
                Ok(Announcement::Ended(ns)) if wanted(&ns) => {
                    request.namespace_done(&to_track_namespace(&ns))?;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // Too far behind to be exact: resend what exists now.
                    for b in broadcasts.list() {
                        if wanted(&b.namespace) {
                            request.namespace(&to_track_namespace(&b.namespace))?;
                        }
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            },
            res = request.closed() => return Ok(res?),
        }
    }
}

async fn serve_subscription(
    subscribed: Subscribed,
    broadcasts: Arc<Broadcasts>,
    counters: Arc<ServerCounters>,
) {
    let info = subscribed.info.clone();
    let track_name = info.track_name.to_string_lossy().into_owned();
    // RENDEZVOUS_TIMEOUT: hold the request until the broadcast appears.
    let rendezvous = info
        .params
        .rendezvous_timeout()
        .ok()
        .flatten()
        .map(|ms| std::time::Duration::from_millis(ms.min(MAX_RENDEZVOUS_MS)));
    let broadcast = match from_track_namespace(&info.track_namespace) {
        Ok(ns) => broadcast_within(&broadcasts, &ns, rendezvous).await,
        Err(_) => None,
    };
    let found = broadcast.and_then(|b| b.track(&track_name).map(|t| (b, t)));
    let Some((broadcast, track)) = found else {
        counters
            .subscriptions_refused
            .fetch_add(1, Ordering::Relaxed);
        let err = if rendezvous.is_some() {
            ServeError::Timeout
        } else {
            ServeError::NotFound
        };
        let _ = subscribed.close(err);
        return;
    };
    counters.subscriptions_total.fetch_add(1, Ordering::Relaxed);
    track.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(namespace = %broadcast.namespace, track = %track_name, "subscription");

    // A relay answers only once its own upstream subscription stands.
    let upstream_largest = match track.upstream_answer(UPSTREAM_ANSWER_LIMIT).await {
        UpstreamState::Ready { largest } => largest,
        UpstreamState::Refused(err) => {
            let _ = subscribed.close(err);
            return;
        }
        UpstreamState::Pending => {
            let _ = subscribed.close(ServeError::Timeout);
            return;
        }
    };
    let reader = match info
        .filter
        .as_ref()
        .map(|f| (f.filter_type, f.start_location))
    {
        Some((FilterType::AbsoluteStart | FilterType::AbsoluteRange, Some(start))) => {
            // A viewer or relay moving here from another relay asks for
            // where it stopped, often before the live group this relay's
            // own subscription began with: let the history fetch bring it
            // rather than skip it.
            let held = track.with_groups(|groups| groups.front().map(|g| g.id));
            if held.is_none_or(|oldest| start.group_id < oldest) {
                track.history_settled(HISTORY_WAIT).await;
            }
            track.reader_at_object(start.group_id, start.object_id)
        }
        Some((FilterType::NextGroupStart, _)) => {
            track.reader_at(Some(track.largest().map_or(0, |(g, _)| g + 1)))
        }
        _ => track.reader_from_newest(),
    };
    let largest = track
        .largest()
        .max(upstream_largest)
        .map(|(g, o)| Location::new(g, o));
    let (writer, track_reader) =
        serve::Track::new(info.track_namespace.clone(), info.track_name.clone()).produce();
    let subgroups = match writer.subgroups() {
        Ok(s) => s,
        Err(err) => {
            let _ = subscribed.close(err);
            return;
        }
    };
    let result = tokio::select! {
        res = subscribed.serve_with_largest_location(track_reader, largest) => res.map_err(anyhow::Error::from),
        res = feed(reader, subgroups, priority_of(&track_name), &counters) => res,
    };
    if let Err(err) = result {
        tracing::debug!(track = %track_name, error = %format!("{err:#}"), "subscription ended");
    }
}

/// Copies the cache into one subscriber's track: a subgroup stream per group.
async fn feed(
    mut reader: crate::cache::TrackReader,
    mut subgroups: serve::SubgroupsWriter,
    priority: u8,
    counters: &ServerCounters,
) -> anyhow::Result<()> {
    let mut current: Option<(u64, serve::SubgroupWriter)> = None;
    while let Some(delivery) = reader.next().await {
        match delivery {
            Delivery::Object { group, object } => {
                if current.as_ref().map(|(g, _)| *g) != Some(group) {
                    current = Some((
                        group,
                        subgroups.create(Subgroup {
                            group_id: group,
                            subgroup_id: 0,
                            priority,
                        })?,
                    ));
                }
                if let Some((_, writer)) = current.as_mut() {
                    let size = object.payload.len() as u64;
                    let mut w = writer.create_with_id(
                        object.id,
                        object.payload.len(),
                        object.ext.as_deref().cloned(),
                    )?;
                    w.write(object.payload)?;
                    counters.moqt_objects_out.fetch_add(1, Ordering::Relaxed);
                    counters.moqt_bytes_out.fetch_add(size, Ordering::Relaxed);
                }
            }
            Delivery::GroupEnd { group } => {
                if current.as_ref().map(|(g, _)| *g) == Some(group) {
                    // Dropping the writer ends the group's stream.
                    current = None;
                } else if let Some(end) = reader.track().end_of_group(group) {
                    // The subscription started past the group's last object
                    // (AbsoluteStart where a relay below waits for a tail
                    // that does not exist): MoQT's End of Group status on a
                    // stream of its own tells it the group is whole. Without
                    // it that relay's readers would wait at the group for
                    // ever.
                    let start = reader
                        .starts_at()
                        .filter(|(g, _)| *g == group)
                        .map_or(0, |(_, o)| o);
                    let mut writer = subgroups.create(Subgroup {
                        group_id: group,
                        subgroup_id: 0,
                        priority,
                    })?;
                    writer.create_with_id_and_status(
                        end.max(start),
                        0,
                        ObjectStatus::EndOfGroup,
                        None,
                    )?;
                    current = None;
                }
            }
        }
    }
    drop(current);
    subgroups.close(ServeError::Done).ok();
    Ok(())
}

/// Answers a FETCH (standalone or joining) from the cache: the cached objects
/// in the requested range, in order.
async fn serve_fetch(
    request: FetchRequested,
    broadcasts: Arc<Broadcasts>,
    grant: Option<&SessionGrant>,
    counters: &ServerCounters,
) -> anyhow::Result<()> {
    let resolved = tokio::time::timeout(std::time::Duration::from_secs(5), request.resolve())
        .await
        .context("joining FETCH did not resolve")??;
    let Some(range) = resolved else {
        return Ok(()); // the library already answered REQUEST_ERROR
    };
    if let Some(refused) = refused(grant, &range.track_namespace) {
        counters.requests_refused.fetch_add(1, Ordering::Relaxed);
        let _ = request.reject(
            refused.request_error_code(),
            "not authorised for this namespace",
        );
        anyhow::bail!("FETCH refused: {}", refused.label());
    }
    let name = range.track_name.to_string_lossy().into_owned();
    let track = from_track_namespace(&range.track_namespace)
        .ok()
        .and_then(|ns| broadcasts.get(&ns))
        .and_then(|b| b.track(&name));
    let Some(track) = track else {
        let _ = request.reject(RequestErrorCode::DoesNotExist, "no such track");
        return Ok(());
    };
    // A relay withholds FETCH_OK until it knows: let its own history arrive.
    track
        .history_settled(std::time::Duration::from_secs(3))
        .await;
    let (start, end) = (range.start_location, range.end_location);
    // Objects not here yet: wait a little for the first of them.
    let mut changes = track.changes();
    let deadline = tokio::time::Instant::now() + FETCH_WAIT;
    let objects = loop {
        changes.borrow_and_update();
        let objects = cached_range(&track, start, end);
        let ahead = track
            .largest()
            .is_none_or(|(g, o)| Location::new(g, o) < start);
        if !objects.is_empty() || !ahead || track.is_closed() {
            break objects;
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => break objects,
        }
    };
    let Some(last) = objects.last().map(|(g, o)| Location::new(*g, o.id + 1)) else {
        let _ = request.reject(
            RequestErrorCode::InvalidRange,
            "nothing cached in that range",
        );
        return Ok(());
    };
    let mut writer = request
        .respond(FetchOkInfo {
            end_of_track: false,
            end_location: last,
            params: Default::default(),
            track_extensions: Default::default(),
        })
        .await?;
    let priority = priority_of(&name);
    for (group, object) in objects {
        writer
            .write_record(&FetchRecord::Object(FetchRecordObject {
                group_id: group,
                subgroup_id: Some(0),
                object_id: object.id,
                publisher_priority: priority,
                extension_headers: object.ext.as_deref().cloned().unwrap_or_default(),
                payload_length: object.payload.len() as u64,
            }))
            .await?;
        writer.write_payload(&object.payload).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// How long a FETCH for objects past the newest one here waits for the
/// first of them before it is refused. A peer-agent repairing from an
/// agent that is itself repairing (two hops from the edge, when their
/// common parent fails) gets the objects as they arrive instead of asking
/// again at its next check. Well inside the requester's budget
/// (`FETCH_BUDGET` in the peer-agent's `repair`).
const FETCH_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// The cached objects from `start` (inclusive) to `end` (exclusive), in order.
fn cached_range(
    track: &crate::cache::TrackCache,
    start: Location,
    end: Location,
) -> Vec<(u64, crate::cache::Object)> {
    // End Location is exclusive; object 0 of the end group means "the whole previous group".
    track.with_groups(|groups| {
        let newest = groups.back().map(|g| g.id);
        let mut out = Vec::new();
        for g in groups
            .iter()
            .filter(|g| g.id >= start.group_id && g.id <= end.group_id)
        {
            out.extend(
                g.objects
                    .iter()
                    .filter(|o| {
                        let at = Location::new(g.id, o.id);
                        at >= start && at < end
                    })
                    .map(|o| (g.id, o.clone())),
            );
            // A group still open below the newest ends the answer: its tail
            // may yet come, so whoever repairs from here can read an object
            // of a later group as "the earlier groups are whole".
            if !g.complete && Some(g.id) != newest {
                break;
            }
        }
        out
    })
}

/// Viewers' sessions may not publish into this server: PUBLISH_NAMESPACE and
/// PUBLISH are answered with REQUEST_ERROR rather than left hanging.
async fn refuse_publishers(subscriber: Option<moq_transport::session::Subscriber>) {
    let Some(subscriber) = subscriber else {
        return std::future::pending().await;
    };
    let mut namespaces = subscriber.clone();
    let mut tracks = subscriber;
    loop {
        tokio::select! {
            request = namespaces.published_namespace() => match request {
                Some(request) => {
                    let _ = request.reject(RequestErrorCode::Unauthorized as u64, "this server does not accept publishers");
                }
                None => return std::future::pending().await,
            },
            request = tracks.publish_received() => match request {
                Some(request) => request.close(ServeError::NotImplemented("PUBLISH is not accepted here".into())),
                None => return std::future::pending().await,
            },
        }
    }
}

/// TRACK_STATUS: the track's largest object from the cache, or DOES_NOT_EXIST.
fn answer_track_status(
    mut request: moq_transport::session::TrackStatusRequested,
    broadcasts: &Broadcasts,
) {
    let msg = &request.request_msg;
    let name = msg.track_name.to_string_lossy().into_owned();
    let track = from_track_namespace(&msg.track_namespace)
        .ok()
        .and_then(|ns| broadcasts.get(&ns))
        .and_then(|b| b.track(&name));
    let Some(track) = track else {
        let _ = request.respond_error(RequestErrorCode::DoesNotExist as u64, "no such track");
        return;
    };
    // moq-transport reports the largest object of a track reader; build one
    // that holds just that location.
    let (writer, reader) =
        serve::Track::new(msg.track_namespace.clone(), msg.track_name.clone()).produce();
    let largest_written = (|| -> Result<(), ServeError> {
        let mut subgroups = writer.subgroups()?;
        if let Some((group, object)) = track.largest() {
            let mut subgroup = subgroups.create(Subgroup {
                group_id: group,
                subgroup_id: 0,
                priority: priority_of(&name),
            })?;
            subgroup.create_with_id(object, 0, None)?;
        }
        Ok(())
    })();
    if largest_written.is_err() {
        let _ = request.respond_error(
            RequestErrorCode::InternalError as u64,
            "track status unavailable",
        );
        return;
    }
    let _ = request.respond_ok(&reader);
}

/// The broadcast under `namespace`, waiting up to `wait` for it to be announced.
async fn broadcast_within(
    broadcasts: &Broadcasts,
    namespace: &Namespace,
    wait: Option<std::time::Duration>,
) -> Option<Arc<Broadcast>> {
    let (_, mut events) = broadcasts.watch();
    if let Some(b) = broadcasts.get(namespace) {
        return Some(b);
    }
    let wait = wait?;
    tokio::time::timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(Announcement::Active(ns)) if &ns == namespace => {
                    return broadcasts.get(namespace)
                }
                Err(RecvError::Closed) => return None,
                Err(RecvError::Lagged(_)) => {
                    if let Some(b) = broadcasts.get(namespace) {
                        return Some(b);
                    }
                }
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moq_transport::coding::{Encode, KeyValuePairs, VarInt};

    fn setup_token(value: &str) -> Vec<u8> {
        let mut option = Vec::new();
        VarInt::from(moq_transport::setup::AliasType::UseValue as u64)
            .encode(&mut option)
            .unwrap();
        VarInt::from(crate::access::TOKEN_TYPE)
            .encode(&mut option)
            .unwrap();
        option.extend_from_slice(value.as_bytes());
        option
    }

    #[test]
    fn session_tokens_come_from_setup_then_the_url() {
        let key = u64::from(moq_transport::setup::ParameterType::AuthorizationToken);
        let mut params = KeyValuePairs::default();
        params.set_bytesvalue(key, setup_token("v4.public.setup"));
        let url = url::Url::parse("https://edge.example/?token=v4.public.url").unwrap();
        assert_eq!(
            session_tokens(&params, &url, None).unwrap(),
            vec!["v4.public.setup".to_owned(), "v4.public.url".to_owned()]
        );
        let plain = url::Url::parse("moqt://edge.example/").unwrap();
        let none = KeyValuePairs::default();
        assert_eq!(
            session_tokens(&none, &plain, Some("/watch?token=v4.public.path")).unwrap(),
            vec!["v4.public.path".to_owned()]
        );
        assert!(session_tokens(&none, &plain, None).unwrap().is_empty());
        // An option that is not a Token structure is refused, not guessed at.
        let mut broken = KeyValuePairs::default();
        broken.set_bytesvalue(key, vec![0x2]);
        assert_eq!(
            session_tokens(&broken, &plain, None),
            Err(Refused::Token(strom_token::TokenError::Malformed))
        );
    }
}
