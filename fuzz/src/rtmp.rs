//! RTMP ingest as the origin runs it: rml_rtmp's server handshake
//! (`handshake_step`), then `strom_origin::fuzzing::Ingest` — rml_rtmp's
//! `ServerSession` inside `contained()`, connect and publish requests through
//! the origin's authorizer and `Publications`, FLV tag bodies into the
//! packager. Only the socket is missing.

use std::net::SocketAddr;
use std::sync::Arc;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use strom_relay::{Broadcasts, CacheLimits, Namespace};
use strom_origin::fuzzing::{handshake_step, Ingest, Publications, RtmpContext, StaticKeys, StreamKey};

use crate::piece_size;

/// The application and stream key the fixture origin accepts.
pub const APP: &str = "live";
pub const KEY: &str = "fuzz-key-0123456789abcdef";

/// What `contained()` reports when the third-party parser panicked.
const CONTAINED: &str = "the parser failed on this input";

pub fn context() -> RtmpContext {
    RtmpContext {
        authorizer: Arc::new(StaticKeys::new(vec![StreamKey {
            app: APP.into(),
            key: KEY.into(),
            namespace: Namespace::parse("t/e/s").expect("a valid namespace"),
            srt_passphrase: None,
        }])),
        publications: Publications::new(Broadcasts::new(), CacheLimits::default(), None, None),
        counters: Arc::default(),
    }
}

/// A client's side of a complete handshake (C0+C1, then C2 once S0-S2
/// came), made by rml_rtmp's client against the server handshake.
pub fn client_handshake(server: &mut Handshake) -> Option<Vec<u8>> {
    let mut client = Handshake::new(PeerType::Client);
    let c0c1 = client.generate_outbound_p0_and_p1().ok()?;
    let (s0s1s2, done) = handshake_step(server, &c0c1).ok()?;
    if done.is_some() {
        return Some(c0c1);
    }
    let c2 = match client.process_bytes(&s0s1s2).ok()? {
        HandshakeProcessResult::InProgress { response_bytes } => response_bytes,
        HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
    };
    let (_, done) = handshake_step(server, &c2).ok()?;
    done.map(|_| [c0c1, c2].concat())
}

/// Byte 0: bit 0 set = a valid client handshake happens first and the rest
/// is the session; clear = the rest starts with the handshake itself.
/// Bits 1-7 pick the read size.
pub fn rtmp_ingest(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let piece = piece_size(mode >> 1);
    let mut server = Handshake::new(PeerType::Server);
    let session: Vec<u8> = if mode & 1 == 1 {
        if client_handshake(&mut server).is_none() {
            panic!("rml_rtmp's client and server disagree on the handshake");
        }
        data.to_vec()
    } else {
        let mut at = 0;
        loop {
            let Some(chunk) = data.get(at..(at + piece).min(data.len())) else {
                return;
            };
            if chunk.is_empty() {
                return;
            }
            at += chunk.len();
            match handshake_step(&mut server, chunk) {
                Ok((_, Some(remaining))) => break [&remaining[..], &data[at..]].concat(),
                Ok((_, None)) => {}
                Err(_) => return,
            }
        }
    };
    let ctx = context();
    let remote: SocketAddr = "192.0.2.1:50000".parse().expect("an address");
    let Ok((mut ingest, mut out)) = Ingest::start(&ctx, remote) else {
        return;
    };
    for chunk in session.chunks(piece) {
        out.clear();
        match ingest.receive(chunk, &mut out) {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                let message = format!("{e:#}");
                // A panic that `contained()` caught is a bug all the same
                // (in rml_rtmp): STROM_FUZZ_STRICT=1 makes it a crash so that
                // it can be found and reported.
                if message.contains(CONTAINED) && std::env::var_os("STROM_FUZZ_STRICT").is_some() {
                    panic!("contained panic in rml_rtmp: {message}");
                }
                return;
            }
        }
    }
}
