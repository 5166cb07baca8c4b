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
use strom_relay::{metrics::Scrape, pseudonym, RevocationWatch};

/// A publisher that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a peer may send before its publish is accepted. The handshake
/// (3 KiB), `connect`, `releaseStream`, `FCPublish`, `createStream` and
/// `publish` take 3–5 KiB, even with a 560-character publish token in three
/// of them. Without a cap, rml_rtmp would reassemble a message of up to
/// 16 MiB for a peer that never authenticates.
pub(crate) const MAX_BYTES_BEFORE_PUBLISH: u64 = 32 * 1024;
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

    /// Adds the RTMP (and RTMPS) refusals by reason to the page.
    pub fn collect_rtmp_refusals(&self, scrape: &Scrape) {
        let family = scrape.counter(
            "strom_ingest_rtmp_refused_total",
            "RTMP and RTMPS publishes and connections refused, by reason.",
            &["reason"],
        );
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        for (reason, n) in refusals.iter() {
            family.with_label_values(&[reason]).inc_by(*n as f64);
        }
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

/// Adds the ingest counters of each protocol to the page (one family per
/// metric, a `protocol` label per listener).
pub(crate) fn collect_ingest(scrape: &Scrape, protocols: &[(&str, &IngestCounters)]) {
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
    for (name, help, field) in rows {
        let family = scrape.counter(name, help, &["protocol"]);
        for (protocol, counters) in protocols {
            family
                .with_label_values(&[protocol])
                .inc_by(field(counters).load(Ordering::Relaxed) as f64);
        }
    }
}

pub struct RtmpContext {
    pub authorizer: Arc<dyn PublishAuthorizer>,
    pub publications: Arc<Publications>,
    pub counters: Arc<IngestCounters>,
}

/// Plain RTMP; `admission` is the origin's count of unauthenticated
/// connections (shared with RTMPS and SRT).
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, admission: Arc<Admission>) {
    serve_with(listener, None, ctx, admission).await
}

/// RTMPS: RTMP inside TLS (`rtmps://host:port/<app>/<key>`), with the
/// origin's certificate.
pub(crate) async fn serve_tls(
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
mod tests;
