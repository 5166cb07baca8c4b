//! RTMP ingest (publish only): handshake, session, and hand-off of audio and
//! video tags to a [`PublishSession`]. A misbehaving peer loses its own
//! connection and nothing else. Until its publish is accepted a peer has
//! proven nothing and is held to the origin's [`Admission`] limits: a place
//! among the unauthenticated connections, a deadline to publish, and at most
//! [`MAX_BYTES_BEFORE_PUBLISH`] read from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::admission::{Admission, Unauthenticated};
use crate::auth::{key_label, PublishAuthorizer, Transport};
use crate::contain::contained;
use crate::publish::{Publications, PublishSession, PushOptions};
use strom_relay::access::RevocationWatch;
use strom_relay::pseudonym;

/// A publisher that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a peer may send before its publish is accepted. The handshake
/// (3 KiB), `connect`, `releaseStream`, `FCPublish`, `createStream` and
/// `publish` take 3–5 KiB, even with a 560-character publish token in three
/// of them. Without a cap, rml_rtmp would reassemble a message of up to
/// 16 MiB for a peer that never authenticates.
pub const MAX_BYTES_BEFORE_PUBLISH: u64 = 32 * 1024;
/// Read buffer while a peer is unauthenticated, and once it publishes.
const UNAUTHENTICATED_READ: usize = 4 * 1024;
const PUBLISHING_READ: usize = 64 * 1024;

/// Ingest counters, for `/metrics`.
#[derive(Default, Debug)]
pub struct IngestCounters {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    pub revoked: AtomicU64,
    /// Connections ended by a contained panic (a bug; the log says where).
    pub panics: AtomicU64,
    /// `refused`, by reason (RTMP; SRT keeps its own, see `srt.rs`).
    refusals: Mutex<HashMap<&'static str, u64>>,
}

impl IngestCounters {
    /// Counts a refused publish or connection, with its reason.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        *self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Refusals counted with `reason` so far.
    pub fn refusals(&self, reason: &str) -> u64 {
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        refusals.get(reason).copied().unwrap_or(0)
    }

    /// Prometheus text for the RTMP (and RTMPS) refusals by reason.
    pub fn render_rtmp_refusals(&self) -> String {
        let name = "strom_ingest_rtmp_refused_total";
        let mut out = format!(
            "# HELP {name} RTMP and RTMPS publishes and connections refused, by reason.\n# TYPE {name} counter\n"
        );
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let mut reasons: Vec<_> = refusals.iter().collect();
        reasons.sort();
        for (reason, n) in reasons {
            out.push_str(&format!("{name}{{reason=\"{reason}\"}} {n}\n"));
        }
        out
    }
}

/// Why a peer that never published was closed.
#[derive(Debug, thiserror::Error)]
enum Unadmitted {
    #[error("did not publish within {0} s of connecting")]
    Deadline(u64),
    #[error("sent more than {0} bytes without publishing")]
    TooMuch(u64),
}

impl Unadmitted {
    fn label(&self) -> &'static str {
        match self {
            Unadmitted::Deadline(_) => "publish_deadline",
            Unadmitted::TooMuch(_) => "too_much_before_publish",
        }
    }
}

/// Prometheus text for the ingest counters of each protocol (one family per
/// metric, a `protocol` label per listener).
pub fn render_ingest(protocols: &[(&str, &IngestCounters)]) -> String {
    type Field = fn(&IngestCounters) -> &AtomicU64;
    let rows: [(&str, &str, Field); 6] = [
        (
            "strom_ingest_connections_total",
            "Ingest connections accepted.",
            |c| &c.connections,
        ),
        (
            "strom_ingest_refused_total",
            "Publishes refused (credential, duplicate, handshake).",
            |c| &c.refused,
        ),
        (
            "strom_ingest_failed_total",
            "Connections closed on an error.",
            |c| &c.failed,
        ),
        (
            "strom_ingest_bytes_total",
            "Bytes received from broadcasters.",
            |c| &c.bytes,
        ),
        (
            "strom_ingest_revoked_total",
            "Pushes stopped because their publish credential was revoked.",
            |c| &c.revoked,
        ),
        (
            "strom_ingest_panics_total",
            "Connections ended by a contained panic in the ingest (a bug: the log says where).",
            |c| &c.panics,
        ),
    ];
    let mut out = String::new();
    for (name, help, field) in rows {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (protocol, counters) in protocols {
            out.push_str(&format!(
                "{name}{{protocol=\"{protocol}\"}} {}\n",
                field(counters).load(Ordering::Relaxed)
            ));
        }
    }
    out
}

pub struct RtmpContext {
    pub authorizer: Arc<dyn PublishAuthorizer>,
    pub publications: Arc<Publications>,
    pub counters: Arc<IngestCounters>,
}

/// Plain RTMP; `admission` is the origin's count of unauthenticated
/// connections (shared with RTMPS and SRT).
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, admission: Arc<Admission>) {
    serve_with(listener, None, ctx, admission).await
}

/// RTMPS: RTMP inside TLS (`rtmps://host:port/<app>/<key>`), with the
/// origin's certificate.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<RtmpContext>,
    admission: Arc<Admission>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(listener, Some(acceptor), ctx, admission).await
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<RtmpContext>,
    admission: Arc<Admission>,
) {
    let (transport, protocol) = match tls {
        None => (Transport::Rtmp, "RTMP"),
        Some(_) => (Transport::Rtmps, "RTMPS"),
    };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!(error = %err, "{protocol} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.counters.connections.fetch_add(1, Ordering::Relaxed);
        // Turned away before anything is spent on it: no task, no buffers.
        let place = match admission.enter(transport, remote.ip()) {
            Ok(place) => place,
            Err(crowded) => {
                ctx.counters.refuse(crowded.label());
                admission.log_crowded(transport, crowded);
                continue;
            }
        };
        let admitting = Admitting {
            place,
            by: Instant::now() + admission.deadline(),
            secs: admission.deadline().as_secs(),
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let result = match tls {
                None => handle(stream, remote, transport, admitting, &ctx).await,
                Some(acceptor) => {
                    let (by, secs) = (admitting.by, admitting.secs);
                    match tokio::time::timeout_at(by, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => handle(stream, remote, transport, admitting, &ctx).await,
                        Ok(Err(err)) => Err(anyhow!("TLS handshake failed: {err}")),
                        Err(_) => Err(Unadmitted::Deadline(secs).into()),
                    }
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(remote = %pseudonym::addr(remote), "{protocol} connection closed")
                }
                Err(err) => {
                    ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let reason = err.downcast_ref::<Unadmitted>().map(Unadmitted::label);
                    if let Some(reason) = reason {
                        ctx.counters.refuse(reason);
                    }
                    tracing::warn!(remote = %pseudonym::addr(remote), reason = reason.unwrap_or("error"), error = %format!("{err:#}"), "{protocol} connection closed on error");
                }
            }
        });
    }
}

/// A connection that has not published yet: its place among the
/// unauthenticated connections, and when it must have published by.
struct Admitting {
    place: Unauthenticated,
    by: Instant,
    /// The deadline's length, for the message.
    secs: u64,
}

/// Reads what is there; fails when the peer is idle for `idle` or, before
/// it publishes, at its deadline (`by`, `secs`).
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    idle: Duration,
    deadline: Option<(Instant, u64)>,
) -> anyhow::Result<usize> {
    let idle_at = Instant::now() + idle;
    let (at, admitting) = match deadline {
        Some((by, secs)) if by <= idle_at => (by, Some(secs)),
        _ => (idle_at, None),
    };
    match tokio::time::timeout_at(at, stream.read(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(err)) => Err(err).context("reading from publisher"),
        Err(_) => match admitting {
            Some(secs) => Err(Unadmitted::Deadline(secs).into()),
            None => bail!("publisher sent nothing for {} s", idle.as_secs()),
        },
    }
}

/// Writes all of `bytes`; before the peer publishes, by its deadline (a
/// peer that does not read must not hold the connection either).
async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    deadline: Option<(Instant, u64)>,
) -> anyhow::Result<()> {
    match deadline {
        None => Ok(stream.write_all(bytes).await?),
        Some((by, secs)) => match tokio::time::timeout_at(by, stream.write_all(bytes)).await {
            Ok(written) => Ok(written?),
            Err(_) => Err(Unadmitted::Deadline(secs).into()),
        },
    }
}

/// One connection, from the RTMP handshake to its end. Until it publishes,
/// it keeps its place among the unauthenticated connections, must publish
/// by its deadline and may send at most [`MAX_BYTES_BEFORE_PUBLISH`].
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    remote: SocketAddr,
    transport: Transport,
    admitting: Admitting,
    ctx: &RtmpContext,
) -> anyhow::Result<()> {
    let Admitting { place, by, secs } = admitting;
    let mut place = Some(place);
    let deadline = Some((by, secs));
    let mut allowance = Allowance::default();
    let mut buf = vec![0u8; UNAUTHENTICATED_READ];
    let mut handshake = Handshake::new(PeerType::Server);
    let remaining = loop {
        let window = allowance.window(buf.len())?;
        let n = read_some(&mut stream, &mut buf[..window], READ_TIMEOUT, deadline).await?;
        if n == 0 {
            bail!("peer closed during the RTMP handshake");
        }
        allowance.take(n);
        let (response, remaining) = handshake_step(&mut handshake, &buf[..n])?;
        write_all(&mut stream, &response, deadline).await?;
        if let Some(remaining) = remaining {
            break remaining;
        }
    };

    let (mut ingest, mut out) = Ingest::start_over(ctx, remote, transport)?;
    ingest.receive(&remaining, &mut out)?;
    write_all(&mut stream, &out, deadline).await?;

    loop {
        if ingest.is_publishing() {
            authenticated(&mut place, &mut buf);
        }
        let deadline = deadline.filter(|_| place.is_some());
        let window = match deadline {
            Some(_) => allowance.window(buf.len())?,
            None => buf.len(),
        };
        let n = tokio::select! {
            n = read_some(&mut stream, &mut buf[..window], READ_TIMEOUT, deadline) => n?,
            () = revoked(&mut ingest.revocation) => {
                ctx.counters.revoked.fetch_add(1, Ordering::Relaxed);
                let namespace = ingest.publishing.as_ref().map(|(_, _, s)| s.namespace.to_string()).unwrap_or_default();
                tracing::warn!(remote = %pseudonym::addr(remote), %namespace, "publish stopped: the publish credential was revoked");
                return Ok(());
            }
        };
        if n == 0 {
            return Ok(());
        }
        ctx.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if deadline.is_some() {
            allowance.take(n);
        }
        out.clear();
        let done = ingest.receive(&buf[..n], &mut out)?;
        if ingest.is_publishing() {
            authenticated(&mut place, &mut buf);
        }
        if !out.is_empty() {
            write_all(&mut stream, &out, deadline).await?;
        }
        if done {
            return Ok(());
        }
    }
}

/// What a peer that has not published may still send: reads before the
/// publish are cut to what is left, so the origin never takes more than
/// [`MAX_BYTES_BEFORE_PUBLISH`] from it.
#[derive(Default)]
struct Allowance {
    taken: u64,
}

impl Allowance {
    /// How many bytes the next read may take (at most `buf_len`); an error
    /// once nothing is left.
    fn window(&self, buf_len: usize) -> Result<usize, Unadmitted> {
        let left = MAX_BYTES_BEFORE_PUBLISH.saturating_sub(self.taken);
        if left == 0 {
            return Err(Unadmitted::TooMuch(MAX_BYTES_BEFORE_PUBLISH));
        }
        Ok(buf_len.min(usize::try_from(left).unwrap_or(usize::MAX)))
    }

    fn take(&mut self, n: usize) {
        self.taken += n as u64;
    }
}

/// A peer that publishes is authenticated: it gives up its place among the
/// unauthenticated connections (and with it the deadline and the byte cap)
/// and reads with a full-size buffer.
fn authenticated(place: &mut Option<Unauthenticated>, buf: &mut Vec<u8>) {
    if place.take().is_some() {
        buf.resize(PUBLISHING_READ, 0);
    }
}

/// Resolves when the running push's credential is revoked (never without one).
async fn revoked(watch: &mut Option<RevocationWatch>) {
    match watch.as_mut() {
        Some(w) => w.revoked().await,
        None => std::future::pending().await,
    }
}

/// Sans-IO: one step of the server side of the RTMP handshake. Returns the
/// bytes to answer with and, once the handshake is complete, the bytes the
/// publisher sent after it (the start of the session).
pub fn handshake_step(
    handshake: &mut Handshake,
    bytes: &[u8],
) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    match handshake
        .process_bytes(bytes)
        .map_err(|e| anyhow!("RTMP handshake failed: {e:?}"))?
    {
        HandshakeProcessResult::InProgress { response_bytes } => Ok((response_bytes, None)),
        HandshakeProcessResult::Completed {
            response_bytes,
            remaining_bytes,
        } => Ok((response_bytes, Some(remaining_bytes))),
    }
}

/// The sans-IO session of one publisher after the handshake: bytes in,
/// bytes to answer out, tags into the publication it claims. [`handle`]
/// drives it from a socket; the fuzz target `rtmp_ingest` (`fuzz/`) drives it
/// with hostile bytes.
pub struct Ingest<'a> {
    session: ServerSession,
    ctx: &'a RtmpContext,
    remote: SocketAddr,
    transport: Transport,
    publishing: Option<(String, String, PublishSession)>,
    revocation: Option<RevocationWatch>,
}

impl<'a> Ingest<'a> {
    /// A new session of a push over plain RTMP; returns it with the bytes it
    /// sends first.
    pub fn start(ctx: &'a RtmpContext, remote: SocketAddr) -> anyhow::Result<(Self, Vec<u8>)> {
        Self::start_over(ctx, remote, Transport::Rtmp)
    }

    /// Like [`start`](Self::start), over `transport` (RTMP or RTMPS: what a
    /// credential is valid for depends on it).
    pub fn start_over(
        ctx: &'a RtmpContext,
        remote: SocketAddr,
        transport: Transport,
    ) -> anyhow::Result<(Self, Vec<u8>)> {
        let (session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| anyhow!("RTMP session: {e:?}"))?;
        let mut ingest = Ingest {
            session,
            ctx,
            remote,
            transport,
            publishing: None,
            revocation: None,
        };
        let mut out = Vec::new();
        ingest.results(initial, &mut out)?;
        Ok((ingest, out))
    }

    /// Takes bytes from the publisher; appends the answer to `out`. Returns
    /// true when the publisher finished; an error ends the connection.
    pub fn receive(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> anyhow::Result<bool> {
        let results = self.input(bytes)?;
        self.results(results, out)
    }

    /// True once a publish was accepted.
    pub fn is_publishing(&self) -> bool {
        self.publishing.is_some()
    }
}

impl Ingest<'_> {
    fn input(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<ServerSessionResult>> {
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let session = &mut self.session;
        contained(|| session.handle_input(bytes))
            .map_err(|e| {
                self.ctx.counters.panics.fetch_add(1, Ordering::Relaxed);
                anyhow!("malformed RTMP: {e}")
            })?
            .map_err(|e| anyhow!("malformed RTMP: {e:?}"))
    }

    /// Handles session results; returns true when the publisher finished.
    fn results(
        &mut self,
        results: Vec<ServerSessionResult>,
        out: &mut Vec<u8>,
    ) -> anyhow::Result<bool> {
        let mut queue: std::collections::VecDeque<ServerSessionResult> = results.into();
        let mut finished = false;
        while let Some(result) = queue.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    out.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let (more, done) = self.event(event)?;
                    queue.extend(more);
                    finished |= done;
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(finished)
    }

    fn accept(&mut self, request_id: u32) -> anyhow::Result<Vec<ServerSessionResult>> {
        self.session
            .accept_request(request_id)
            .map_err(|e| anyhow!("RTMP session: {e:?}"))
    }

    fn event(
        &mut self,
        event: ServerSessionEvent,
    ) -> anyhow::Result<(Vec<ServerSessionResult>, bool)> {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                Ok((self.accept(request_id)?, false))
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                if self.publishing.is_some() {
                    bail!("a second publish on one connection is not supported");
                }
                // `?backup=1` on the app (OBS: server URL) or on the key
                // makes this the backup encoder of a redundant pair.
                let split = PushOptions::split(&app_name).and_then(|(app, a)| {
                    let (key, k) = PushOptions::split(&stream_key)?;
                    Ok((app.to_owned(), key.to_owned(), a.merge(k)))
                });
                let (app_name, stream_key, options) = match split {
                    Ok(parts) => parts,
                    Err(e) => {
                        self.ctx.counters.refuse("bad_option");
                        bail!("publish refused: {e}");
                    }
                };
                let role = options.role();
                let label = key_label(&stream_key);
                let admitted = self
                    .ctx
                    .authorizer
                    .admit(&app_name, &stream_key, self.transport);
                let publisher = match admitted {
                    Ok(p) => p,
                    Err(refused) => {
                        self.ctx.counters.refuse(refused.label());
                        tracing::warn!(remote = %pseudonym::addr(self.remote), transport = self.transport.as_str(), key = %label, reason = refused.label(), "publish refused");
                        bail!("publish refused for app {app_name:?}, key {label}: {refused}");
                    }
                };
                let namespace = publisher.namespace;
                let session = match self.ctx.publications.claim(namespace.clone(), &options) {
                    Ok(s) => s,
                    Err(err) => {
                        self.ctx.counters.refuse("already_live");
                        bail!("publish refused: {err}");
                    }
                };
                tracing::info!(
                    remote = %pseudonym::addr(self.remote),
                    %namespace,
                    key = %label,
                    role = role.as_str(),
                    rendition = options.rendition.as_deref().unwrap_or("main"),
                    standby = !session.is_active(),
                    "publish started"
                );
                self.publishing = Some((app_name, stream_key, session));
                self.revocation = publisher.revocation;
                Ok((self.accept(request_id)?, false))
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some((_, _, session)) = self.publishing.take() {
                    tracing::info!(namespace = %session.namespace, "publish finished by the broadcaster");
                }
                Ok((Vec::new(), true))
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Some((_, _, session)) = self.publishing.as_mut() {
                    session.set_bitrates(
                        metadata.video_bitrate_kbps.map(|k| k as u64 * 1000),
                        metadata.audio_bitrate_kbps.map(|k| k as u64 * 1000),
                    );
                }
                Ok((Vec::new(), false))
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.media(data, timestamp.value, true)?;
                Ok((Vec::new(), false))
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.media(data, timestamp.value, false)?;
                Ok((Vec::new(), false))
            }
            ServerSessionEvent::PlayStreamRequested { .. } => {
                bail!("playback over RTMP is not offered; watch over MoQT or HLS")
            }
            _ => Ok((Vec::new(), false)),
        }
    }

    fn media(&mut self, data: Bytes, timestamp: u32, video: bool) -> anyhow::Result<()> {
        let Some((_, _, session)) = self.publishing.as_mut() else {
            bail!("media before a publish request");
        };
        let result = if video {
            session.push_video(timestamp, &data)
        } else {
            session.push_audio(timestamp, &data)
        };
        result.with_context(|| format!("publish of {} stopped", session.namespace))
    }
}

#[cfg(test)]
mod tests {
    //! Hostile input against the real session: a valid publisher's byte
    //! stream, produced by rml_rtmp's client, mutated at random.

    use super::*;
    use crate::admission::AdmissionConfig;
    use crate::auth::{StaticKeys, StreamKey};
    use proptest::prelude::*;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    };
    use rml_rtmp::time::RtmpTimestamp;
    use strom_relay::broadcast::{Broadcasts, Namespace};
    use strom_relay::cache::CacheLimits;

    const KEY: &str = "fuzz-key-0123456789abcdef";

    fn context() -> RtmpContext {
        RtmpContext {
            authorizer: Arc::new(StaticKeys::new(vec![StreamKey {
                app: "live".into(),
                key: KEY.into(),
                namespace: Namespace::parse("t/e/s").unwrap(),
                srt_passphrase: None,
            }])),
            publications: Publications::new(Broadcasts::new(), CacheLimits::default(), None, None),
            counters: Arc::default(),
        }
    }

    fn bytes_of(results: Vec<ClientSessionResult>) -> Vec<u8> {
        results
            .into_iter()
            .filter_map(|r| match r {
                ClientSessionResult::OutboundResponse(p) => Some(p.bytes),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Drives a client and `Ingest` against each other in memory; returns what
    /// the client sent (connect, publish, then `tags` as video data), one
    /// segment per round trip, since the server answers between them.
    fn valid_publisher_bytes(tags: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let ctx = context();
        let (session, server_initial) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let mut server = Ingest {
            session,
            ctx: &ctx,
            remote: "127.0.0.1:9".parse().unwrap(),
            transport: Transport::Rtmp,
            publishing: None,
            revocation: None,
        };
        let (mut client, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut greeting = Vec::new();
        server.results(server_initial, &mut greeting).unwrap();
        client.handle_input(&greeting).unwrap();
        let mut sent = vec![bytes_of(initial)];
        // Passes bytes back and forth until both sides are quiet.
        let mut exchange = |client: &mut ClientSession, bytes: Vec<u8>, sent: &mut Vec<Vec<u8>>| {
            let mut to_server = bytes;
            let mut accepted = false;
            while !to_server.is_empty() {
                sent.push(to_server.clone());
                let mut out = Vec::new();
                let results = server.input(&to_server).unwrap();
                server.results(results, &mut out).unwrap();
                if out.is_empty() {
                    break;
                }
                let replies = client.handle_input(&out).unwrap();
                accepted |= replies.iter().any(|r| {
                    matches!(
                        r,
                        ClientSessionResult::RaisedEvent(
                            ClientSessionEvent::ConnectionRequestAccepted
                                | ClientSessionEvent::PublishRequestAccepted
                        )
                    )
                });
                to_server = bytes_of(replies);
            }
            accepted
        };
        let connect = bytes_of(vec![client.request_connection("live".into()).unwrap()]);
        assert!(exchange(&mut client, connect, &mut sent));
        let publish = bytes_of(vec![client
            .request_publishing(KEY.into(), PublishRequestType::Live)
            .unwrap()]);
        assert!(exchange(&mut client, publish, &mut sent));
        for (i, tag) in tags.iter().enumerate() {
            let r = client
                .publish_video_data(
                    Bytes::from(tag.clone()),
                    RtmpTimestamp::new(i as u32 * 33),
                    false,
                )
                .unwrap();
            sent.push(bytes_of(vec![r]));
        }
        sent
    }

    /// Feeds segments (each in pieces); the ingest may refuse them but must not panic.
    /// Returns whether the publisher got to publishing.
    fn feed(segments: &[Vec<u8>], piece: usize) -> bool {
        let ctx = context();
        let (session, _) = ServerSession::new(ServerSessionConfig::new()).unwrap();
        let mut ingest = Ingest {
            session,
            ctx: &ctx,
            remote: "127.0.0.1:9".parse().unwrap(),
            transport: Transport::Rtmp,
            publishing: None,
            revocation: None,
        };
        let mut out = Vec::new();
        for chunk in segments.iter().flat_map(|s| s.chunks(piece.max(1))) {
            match ingest.input(chunk) {
                Ok(results) => {
                    if ingest.results(results, &mut out).is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        ingest.publishing.is_some()
    }

    #[test]
    fn a_valid_publisher_is_accepted_and_publishes() {
        assert!(feed(&valid_publisher_bytes(&[]), usize::MAX));
        // An inter frame before any sequence header is dropped, not fatal.
        let early_frame = vec![0x27, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x41];
        assert!(feed(&valid_publisher_bytes(&[early_frame]), 7));
        // A sequence header that is not an AVC configuration is fatal.
        let bad_header = vec![0x17, 0x00, 0, 0, 0];
        assert!(!feed(&valid_publisher_bytes(&[bad_header]), 7));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutated_publisher_streams_never_panic(
            tags in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
            cut in any::<prop::sample::Index>(),
            piece in 1usize..600,
        ) {
            let mut segments = valid_publisher_bytes(&tags);
            let total: usize = segments.iter().map(Vec::len).sum();
            for (at, value) in flips {
                let mut i = at.index(total);
                for s in segments.iter_mut() {
                    if i < s.len() {
                        s[i] = value;
                        break;
                    }
                    i -= s.len();
                }
            }
            // Cut the stream short somewhere.
            let mut keep = cut.index(total + 1);
            for s in segments.iter_mut() {
                let n = keep.min(s.len());
                s.truncate(n);
                keep -= n;
            }
            feed(&segments, piece);
        }

        #[test]
        fn random_bytes_after_the_handshake_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            piece in 1usize..600,
        ) {
            feed(&[bytes], piece);
        }
    }

    // ---- Peers that have not published yet: deadline, byte cap, places.

    /// The client side of the RTMP handshake; returns what the server sent
    /// after it.
    async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Vec<u8> {
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake.generate_outbound_p0_and_p1().unwrap();
        stream.write_all(&c0c1).await.unwrap();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            match handshake.process_bytes(&buf[..n]).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).await.unwrap()
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    stream.write_all(&response_bytes).await.unwrap();
                    return remaining_bytes;
                }
            }
        }
    }

    /// Reads and answers the server until the client session raises `want`.
    async fn await_event<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut S,
        session: &mut ClientSession,
        want: fn(&ClientSessionEvent) -> bool,
    ) {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the origin closed the connection");
            let results = session.handle_input(&buf[..n]).unwrap();
            let hit = results
                .iter()
                .any(|r| matches!(r, ClientSessionResult::RaisedEvent(e) if want(e)));
            stream.write_all(&bytes_of(results)).await.unwrap();
            if hit {
                return;
            }
        }
    }

    /// Reads and drops whatever arrives, until the end (or until aborted:
    /// the connection closes once both halves are gone).
    fn drain(mut rx: tokio::io::ReadHalf<tokio::io::DuplexStream>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while rx.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
    }

    /// `handle` on one end of an in-memory connection; the other end.
    fn serve_in_memory(
        admission: &Arc<Admission>,
    ) -> (
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let admitting = Admitting {
            place: admission.enter(Transport::Rtmp, remote.ip()).unwrap(),
            by: Instant::now() + admission.deadline(),
            secs: admission.deadline().as_secs(),
        };
        let task = tokio::spawn(async move {
            let ctx = context();
            handle(server, remote, Transport::Rtmp, admitting, &ctx).await
        });
        (client, task)
    }

    fn unadmitted(result: anyhow::Result<()>) -> &'static str {
        let err = result.expect_err("the connection must be closed");
        err.downcast_ref::<Unadmitted>()
            .unwrap_or_else(|| panic!("closed for another reason: {err:#}"))
            .label()
    }

    #[tokio::test]
    async fn a_peer_that_never_publishes_is_closed_at_the_deadline() {
        let admission = Admission::new(AdmissionConfig {
            deadline_secs: 1,
            ..AdmissionConfig::default()
        });
        let (mut client, server) = serve_in_memory(&admission);
        let start = Instant::now();
        client_handshake(&mut client).await;
        let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        client.write_all(&bytes_of(initial)).await.unwrap();
        let connect = session.request_connection("live".into()).unwrap();
        client.write_all(&bytes_of(vec![connect])).await.unwrap();
        await_event(&mut client, &mut session, |e| {
            matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
        })
        .await;
        // Busy enough never to be idle (an acknowledgement every 100 ms),
        // but it never asks to publish.
        let (rx, mut tx) = tokio::io::split(client);
        drain(rx);
        tokio::spawn(async move {
            let ack = [0x02, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0, 0, 0, 0x10, 0];
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx.write_all(&ack).await.is_err() {
                    return;
                }
            }
        });
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("a peer that never publishes must not stay")
            .unwrap();
        assert_eq!(unadmitted(result), "publish_deadline");
        let after = start.elapsed();
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(3)).contains(&after),
            "{after:?}"
        );
        assert_eq!(admission.count(Transport::Rtmp), 0);
    }

    #[test]
    fn reads_before_the_publish_never_pass_the_cap() {
        let cap = MAX_BYTES_BEFORE_PUBLISH as usize;
        // (taken so far, buffer length, window or None for cut off)
        let cases = [
            (0, 4096, Some(4096)),
            (cap - 4096, 4096, Some(4096)),
            (cap - 100, 4096, Some(100)),
            (cap - 1, 4096, Some(1)),
            (cap, 4096, None),
            (cap + 1, 4096, None),
        ];
        for (taken, buf_len, want) in cases {
            let allowance = Allowance {
                taken: taken as u64,
            };
            let got = allowance.window(buf_len).ok();
            assert_eq!(got, want, "taken {taken}, buffer {buf_len}");
        }
        // Taking every window it offers ends exactly at the cap.
        let mut allowance = Allowance::default();
        while let Ok(window) = allowance.window(4000) {
            allowance.take(window);
        }
        assert_eq!(allowance.taken, MAX_BYTES_BEFORE_PUBLISH);
    }

    #[tokio::test]
    async fn an_endless_unauthenticated_message_is_cut_off_at_the_cap() {
        let admission = Admission::new(AdmissionConfig::default());
        let (mut client, server) = serve_in_memory(&admission);
        client_handshake(&mut client).await;
        let (rx, mut tx) = tokio::io::split(client);
        drain(rx);
        // An AMF0 command declaring 16 MiB − 1 on chunk stream 4, in
        // 128-byte chunks that never finish it.
        let mut sent = 0u64;
        loop {
            let mut chunk = if sent == 0 {
                vec![0x04, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0]
            } else {
                vec![0xC4]
            };
            chunk.extend([0x55u8; 128]);
            if tx.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
            assert!(
                sent < 1 << 20,
                "the origin took {sent} bytes from a peer that never published"
            );
        }
        let result = server.await.unwrap();
        assert_eq!(unadmitted(result), "too_much_before_publish");
        // What it took (never more than the cap), plus what the in-memory
        // pipe (64 KiB) held unread.
        assert!(sent <= MAX_BYTES_BEFORE_PUBLISH + 64 * 1024 + 256, "{sent}");
        assert_eq!(admission.count(Transport::Rtmp), 0);
    }

    #[tokio::test]
    async fn a_publisher_is_held_to_neither_the_deadline_nor_the_cap() {
        let admission = Admission::new(AdmissionConfig {
            deadline_secs: 1,
            ..AdmissionConfig::default()
        });
        let (mut client, server) = serve_in_memory(&admission);
        let rest = client_handshake(&mut client).await;
        let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut first = bytes_of(initial);
        first.extend(bytes_of(session.handle_input(&rest).unwrap()));
        client.write_all(&first).await.unwrap();
        let connect = session.request_connection("live".into()).unwrap();
        client.write_all(&bytes_of(vec![connect])).await.unwrap();
        await_event(&mut client, &mut session, |e| {
            matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
        })
        .await;
        let publish = session
            .request_publishing(KEY.into(), PublishRequestType::Live)
            .unwrap();
        client.write_all(&bytes_of(vec![publish])).await.unwrap();
        await_event(&mut client, &mut session, |e| {
            matches!(e, ClientSessionEvent::PublishRequestAccepted)
        })
        .await;
        assert_eq!(
            admission.count(Transport::Rtmp),
            0,
            "a publisher keeps no place"
        );
        let (rx, mut tx) = tokio::io::split(client);
        let reader = drain(rx);
        // 3 s of 16 KB inter frames (dropped before any sequence header):
        // three times the deadline, fifteen times the byte cap.
        let mut frame = vec![0x27, 0x01, 0, 0, 0];
        frame.extend_from_slice(&16_000u32.to_be_bytes());
        frame.push(0x41);
        frame.resize(16_009, 0);
        for i in 0..30u32 {
            let tag = session
                .publish_video_data(
                    Bytes::from(frame.clone()),
                    RtmpTimestamp::new(i * 100),
                    false,
                )
                .unwrap();
            tx.write_all(&bytes_of(vec![tag])).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!server.is_finished(), "the publisher was cut off");
        reader.abort();
        let _ = reader.await;
        drop(tx);
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("ends when the publisher leaves")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn connections_beyond_the_limits_are_closed_at_once_and_counted() {
        let ctx = Arc::new(context());
        let admission = Admission::new(AdmissionConfig {
            deadline_secs: 30,
            max_connections: 3,
            max_connections_per_address: 2,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _serving = strom_relay::AbortOnDrop(tokio::spawn(serve(
            listener,
            ctx.clone(),
            admission.clone(),
        )));
        let connect = |from: &'static str| async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::new(from.parse().unwrap(), 0))
                .unwrap();
            socket.connect(addr).await.unwrap()
        };
        async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
            let mut buf = [0u8; 64];
            matches!(
                tokio::time::timeout(within, stream.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
        let mut held = vec![connect("127.0.0.1").await, connect("127.0.0.1").await];
        let mut third = connect("127.0.0.1").await;
        assert!(closed(&mut third, Duration::from_secs(5)).await);
        held.push(connect("127.0.0.2").await);
        let mut fourth = connect("127.0.0.3").await;
        assert!(closed(&mut fourth, Duration::from_secs(5)).await);
        assert_eq!(ctx.counters.refusals("too_many_from_address"), 1);
        assert_eq!(ctx.counters.refusals("too_many_unauthenticated"), 1);
        assert!(!closed(&mut held[0], Duration::from_millis(200)).await);
        assert_eq!(admission.count(Transport::Rtmp), 3);
        let text = ctx.counters.render_rtmp_refusals();
        assert!(
            text.contains("strom_ingest_rtmp_refused_total{reason=\"too_many_from_address\"} 1"),
            "{text}"
        );
        // Their places come back when they leave.
        drop(held);
        for _ in 0..100 {
            if admission.count(Transport::Rtmp) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(admission.count(Transport::Rtmp), 0);
        let mut again = connect("127.0.0.1").await;
        assert!(!closed(&mut again, Duration::from_millis(200)).await);
    }
}
