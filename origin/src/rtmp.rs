//! RTMP ingest (publish only): handshake, session, and hand-off of audio and
//! video tags to a [`PublishSession`]. A misbehaving peer loses its own
//! connection and nothing else.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::auth::{key_label, PublishAuthorizer};
use crate::contain::contained;
use crate::publish::{Publications, PublishSession, PushOptions};
use strom_edge::access::RevocationWatch;
use strom_edge::pseudonym;

/// Time allowed for the RTMP handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Ingest counters, for `/metrics`.
#[derive(Default, Debug)]
pub struct IngestCounters {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    pub revoked: AtomicU64,
}

/// Prometheus text for the ingest counters of each protocol (one family per
/// metric, a `protocol` label per listener).
pub fn render_ingest(protocols: &[(&str, &IngestCounters)]) -> String {
    type Field = fn(&IngestCounters) -> &AtomicU64;
    let rows: [(&str, &str, Field); 5] = [
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

pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>) {
    serve_with(listener, None, ctx).await
}

/// RTMPS: RTMP inside TLS (`rtmps://host:port/<app>/<key>`), with the
/// origin's certificate.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<RtmpContext>,
) {
    serve_with(listener, Some(tokio_rustls::TlsAcceptor::from(tls)), ctx).await
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<RtmpContext>,
) {
    let protocol = if tls.is_some() { "RTMPS" } else { "RTMP" };
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!(error = %err, "{protocol} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            ctx.counters.connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let result = match tls {
                None => handle(stream, remote, &ctx).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => handle(stream, remote, &ctx).await,
                        Ok(Err(err)) => Err(anyhow!("TLS handshake failed: {err}")),
                        Err(_) => Err(anyhow!("TLS handshake timed out")),
                    }
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(remote = %pseudonym::addr(remote), "{protocol} connection closed")
                }
                Err(err) => {
                    ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(remote = %pseudonym::addr(remote), error = %format!("{err:#}"), "{protocol} connection closed on error");
                }
            }
        });
    }
}

async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    limit: Duration,
) -> anyhow::Result<usize> {
    match tokio::time::timeout(limit, stream.read(buf)).await {
        Ok(Ok(0)) => Ok(0),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(err)) => Err(err).context("reading from publisher"),
        Err(_) => bail!("publisher sent nothing for {} s", limit.as_secs()),
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    remote: SocketAddr,
    ctx: &RtmpContext,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut handshake = Handshake::new(PeerType::Server);
    let remaining = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            let n = read_some(&mut stream, &mut buf, HANDSHAKE_TIMEOUT).await?;
            if n == 0 {
                bail!("peer closed during the RTMP handshake");
            }
            match handshake
                .process_bytes(&buf[..n])
                .map_err(|e| anyhow!("RTMP handshake failed: {e:?}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    stream.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
            }
        }
    })
    .await
    .map_err(|_| anyhow!("RTMP handshake timed out"))??;

    let (session, initial) = ServerSession::new(ServerSessionConfig::new())
        .map_err(|e| anyhow!("RTMP session: {e:?}"))?;
    let mut ingest = Ingest {
        session,
        ctx,
        remote,
        publishing: None,
        revocation: None,
    };
    let mut out = Vec::new();
    ingest.results(initial, &mut out)?;
    let first = ingest.input(&remaining)?;
    ingest.results(first, &mut out)?;
    stream.write_all(&out).await?;

    loop {
        let n = tokio::select! {
            n = read_some(&mut stream, &mut buf, READ_TIMEOUT) => n?,
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
        out.clear();
        let results = ingest.input(&buf[..n])?;
        let done = ingest.results(results, &mut out)?;
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if done {
            return Ok(());
        }
    }
}

/// Resolves when the running push's credential is revoked (never without one).
async fn revoked(watch: &mut Option<RevocationWatch>) {
    match watch.as_mut() {
        Some(w) => w.revoked().await,
        None => std::future::pending().await,
    }
}

struct Ingest<'a> {
    session: ServerSession,
    ctx: &'a RtmpContext,
    remote: SocketAddr,
    publishing: Option<(String, String, PublishSession)>,
    revocation: Option<RevocationWatch>,
}

impl Ingest<'_> {
    fn input(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<ServerSessionResult>> {
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let session = &mut self.session;
        contained(|| session.handle_input(bytes))
            .map_err(|e| anyhow!("malformed RTMP: {e}"))?
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
                        self.ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
                        bail!("publish refused: {e}");
                    }
                };
                let role = options.role();
                let label = key_label(&stream_key);
                let publisher = match self.ctx.authorizer.admit(&app_name, &stream_key) {
                    Ok(p) => p,
                    Err(refused) => {
                        self.ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(remote = %pseudonym::addr(self.remote), key = %label, reason = refused.label(), "publish refused");
                        bail!("publish refused for app {app_name:?}, key {label}: {refused}");
                    }
                };
                let namespace = publisher.namespace;
                let session = match self.ctx.publications.claim(namespace.clone(), &options) {
                    Ok(s) => s,
                    Err(err) => {
                        self.ctx.counters.refused.fetch_add(1, Ordering::Relaxed);
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
    use crate::auth::{StaticKeys, StreamKey};
    use proptest::prelude::*;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    };
    use rml_rtmp::time::RtmpTimestamp;
    use strom_edge::broadcast::{Broadcasts, Namespace};
    use strom_edge::cache::CacheLimits;

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
}
