//! Hostile input against the real session: a valid publisher's byte
//! stream, produced by rml_rtmp's client, mutated at random.

use super::*;
use crate::admission::AdmissionConfig;
use crate::auth::{StaticKeys, StreamKey};
use proptest::prelude::*;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use strom_relay::{Broadcasts, CacheLimits, Namespace};

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
    let scrape = strom_relay::metrics::Scrape::new();
    ctx.counters.collect_rtmp_refusals(&scrape);
    let text = scrape.encode();
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
