//! Writes the seeds that need strom's or a library's own encoders: an RTMP
//! publisher's bytes (rml_rtmp's client publishing the tags of an ffmpeg
//! FLV file), MoQT control and data streams (moq-transport's encoders, the
//! packager's catalog and CMAF chunks, the origin's object signature),
//! tokens and SRT stream keys from strom-token's `SigningKey`. Each seed is
//! run through its target's harness before it is written.
//!
//! Run by `fuzz/seeds.sh` (which makes the FLV first):
//! `cargo run --example seeds -- <corpus dir> <video.flv>`

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use moq_transport::coding::{Encode, KeyValuePairs, TrackNamespace, TrackNamespacePrefix};
use moq_transport::data::{
    Datagram, DatagramType, ExtensionHeaders, StreamHeader, StreamHeaderType, SubgroupHeader,
    SubgroupObject, SubgroupObjectExt,
};
use moq_transport::message::{self, Message};
use moq_transport::setup::{ParameterType, Setup};
use rml_rtmp::handshake::{Handshake, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use strom_fuzz::{fixtures, rtmp};
use strom_media::flv::FlvTagKind;
use strom_media::{AudioTag, FlvReader, Output, Packager, VideoTag};
use strom_token::media::{MediaSigner, ObjectPlace, SIGNATURE_EXTENSION};
use strom_token::{srt, Action, Grant};

struct Corpus(PathBuf);

impl Corpus {
    fn write(&self, target: &str, name: &str, data: &[u8], harness: fn(&[u8])) {
        harness(data);
        let dir = self.0.join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        fs::write(dir.join(name), data).expect("seed written");
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

/// What an encoder sends after the handshake: connect, publish, metadata,
/// then the FLV file's tags (at most `max_tags`).
fn rtmp_session(flv: &[u8], max_tags: usize) -> Vec<u8> {
    let (mut client, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client");
    // The client only goes on once the server answered: play its requests
    // against a real origin session and keep what the client sent.
    let ctx = rtmp::context();
    let (mut ingest, greeting) =
        strom_origin::fuzzing::Ingest::start(&ctx, "192.0.2.1:50000".parse().unwrap()).unwrap();
    client.handle_input(&greeting).expect("greeting");
    let mut out = Vec::new();
    let mut exchange = |client: &mut ClientSession, mut bytes: Vec<u8>, out: &mut Vec<u8>| {
        while !bytes.is_empty() {
            out.extend_from_slice(&bytes);
            let mut answer = Vec::new();
            ingest
                .receive(&bytes, &mut answer)
                .expect("the origin accepts");
            if answer.is_empty() {
                break;
            }
            bytes = bytes_of(client.handle_input(&answer).expect("server answer"));
        }
    };
    exchange(&mut client, bytes_of(initial), &mut out);
    let connect = bytes_of(vec![client
        .request_connection(rtmp::APP.into())
        .expect("connect")]);
    exchange(&mut client, connect, &mut out);
    let publish = bytes_of(vec![client
        .request_publishing(rtmp::KEY.into(), PublishRequestType::Live)
        .expect("publish")]);
    exchange(&mut client, publish, &mut out);
    assert!(
        ingest.is_publishing(),
        "the seed publisher was not accepted"
    );
    let tags = FlvReader::new(Bytes::copy_from_slice(flv)).expect("an FLV file");
    for tag in tags.take(max_tags) {
        let tag = tag.expect("an FLV tag");
        let time = RtmpTimestamp::new(tag.timestamp_ms);
        let result = match tag.kind {
            FlvTagKind::Video => client.publish_video_data(tag.body, time, false),
            FlvTagKind::Audio => client.publish_audio_data(tag.body, time, false),
            _ => continue,
        };
        out.extend(bytes_of(vec![result.expect("media")]));
    }
    out
}

fn encoded(value: &impl Encode) -> Vec<u8> {
    let mut buf = BytesMut::new();
    value.encode(&mut buf).expect("encodes");
    buf.to_vec()
}

/// The packager's output for an FLV file: the catalog JSON and the CMAF
/// chunks of video track groups.
fn packaged(flv: &[u8]) -> (Vec<u8>, Vec<(u64, u64, Bytes)>) {
    let mut packager = Packager::new(None);
    let mut catalog = Vec::new();
    let mut objects = Vec::new();
    for tag in FlvReader::new(Bytes::copy_from_slice(flv)).expect("an FLV file") {
        let tag = tag.expect("an FLV tag");
        let outputs = match tag.kind {
            FlvTagKind::Video => packager.push_video(
                tag.timestamp_ms,
                &VideoTag::parse(&tag.body).expect("video"),
                1_767_225_600_000_000,
            ),
            FlvTagKind::Audio => packager.push_audio(
                tag.timestamp_ms,
                &AudioTag::parse(&tag.body).expect("audio"),
                1_767_225_600_000_000,
            ),
            _ => continue,
        }
        .expect("packages");
        for output in outputs {
            match output {
                Output::Catalog(c) => catalog = c.to_json().expect("json").into_bytes(),
                Output::Object {
                    track,
                    group,
                    object,
                    payload,
                    ..
                } if track.as_str() == "video" => objects.push((group, object, payload)),
                _ => {}
            }
        }
    }
    (catalog, objects)
}

fn moqt(corpus: &Corpus, flv: &[u8]) {
    let h = strom_fuzz::moqt::moqt_control;
    let mut params = KeyValuePairs::default();
    params.set_bytesvalue(ParameterType::Path.into(), b"/moq".to_vec());
    params.set_bytesvalue(
        ParameterType::AuthorizationToken.into(),
        b"\x01\x00token".to_vec(),
    );
    let setup = encoded(&Setup { params });
    let ns = TrackNamespace::from_utf8_path("t/e/s");
    let messages = [
        Message::Subscribe(message::Subscribe {
            id: 0,
            track_namespace: ns.clone(),
            track_name: "catalog".into(),
            params: KeyValuePairs::default(),
        }),
        Message::Subscribe(message::Subscribe {
            id: 2,
            track_namespace: ns.clone(),
            track_name: "video".into(),
            params: KeyValuePairs::default(),
        }),
        Message::TrackStatus(message::TrackStatus {
            id: 4,
            track_namespace: ns.clone(),
            track_name: "audio".into(),
            params: KeyValuePairs::default(),
        }),
        Message::SubscribeNamespace(message::SubscribeNamespace {
            id: 6,
            track_namespace_prefix: TrackNamespacePrefix::from_utf8_path("t/e"),
            params: KeyValuePairs::default(),
        }),
        Message::Unsubscribe(message::Unsubscribe { id: 2 }),
    ];
    let mut stream = setup.clone();
    for m in &messages {
        stream.extend(encoded(m));
    }
    for (selector, name) in [
        (255u8, "session-large-reads"),
        (0, "session-byte-by-byte"),
        (3, "session-32"),
    ] {
        corpus.write(
            "moqt_control",
            name,
            &[&[selector][..], &stream].concat(),
            h,
        );
    }
    corpus.write(
        "moqt_control",
        "setup-only",
        &[&[255u8][..], &setup].concat(),
        h,
    );

    // Data streams: the catalog and video groups as an origin sends them,
    // objects signed by the origin's media key.
    let h = strom_fuzz::moqt::moqt_data;
    let (catalog, objects) = packaged(flv);
    let signer = MediaSigner::from_seed(&fixtures::MEDIA_KEY_SEED);
    let namespace = ["t".to_owned(), "e".to_owned(), "s".to_owned()];
    let subgroup = |header_type: StreamHeaderType, group: u64| {
        encoded(&StreamHeader {
            header_type,
            subgroup_header: Some(SubgroupHeader {
                header_type,
                track_alias: 1,
                group_id: group,
                subgroup_id: Some(0),
                publisher_priority: 10,
            }),
            fetch_header: None,
        })
    };
    let signed = |track: &str, group: u64, object: u64, payload: &[u8]| {
        let mut ext = ExtensionHeaders::new();
        let place = ObjectPlace {
            namespace: &namespace,
            track,
            group,
            object,
        };
        ext.set_bytesvalue(SIGNATURE_EXTENSION, signer.sign(&place, payload).to_vec());
        encoded(&SubgroupObjectExt {
            object_id_delta: 0,
            extension_headers: ext,
            payload_length: payload.len(),
            status: None,
        })
    };
    // The catalog track (kind 2), signed.
    let mut s = subgroup(StreamHeaderType::SubgroupIdExt, 0);
    s.extend(signed("catalog", 0, 0, &catalog));
    s.extend(&catalog);
    corpus.write(
        "moqt_data",
        "catalog-signed",
        &[&[255u8, 2][..], &s].concat(),
        h,
    );
    // A video group (kind 0): its first objects, signed and not.
    let group = objects.first().map_or(0, |o| o.0);
    let in_group: Vec<_> = objects.iter().filter(|o| o.0 == group).take(3).collect();
    let mut s = subgroup(StreamHeaderType::SubgroupIdExt, group);
    for (g, o, payload) in &in_group {
        s.extend(signed("video", *g, *o, payload));
        s.extend(&payload[..]);
    }
    corpus.write(
        "moqt_data",
        "video-group-signed",
        &[&[255u8, 0][..], &s].concat(),
        h,
    );
    let mut s = subgroup(StreamHeaderType::SubgroupZeroIdEndOfGroup, group);
    for (_, _, payload) in &in_group {
        s.extend(encoded(&SubgroupObject {
            object_id_delta: 0,
            payload_length: payload.len(),
            status: None,
        }));
        s.extend(&payload[..]);
    }
    corpus.write(
        "moqt_data",
        "video-group-plain",
        &[&[40u8, 0][..], &s].concat(),
        h,
    );
    if let Some((g, o, payload)) = in_group.first() {
        let datagram = Datagram {
            datagram_type: DatagramType::ObjectIdPayload,
            track_alias: 1,
            group_id: *g,
            object_id: Some(*o),
            publisher_priority: Some(10),
            extension_headers: None,
            status: None,
            payload: Some(payload.clone()),
        };
        corpus.write(
            "moqt_data",
            "datagram",
            &[&[255u8, 0x80][..], &encoded(&datagram)].concat(),
            h,
        );
    }
}

fn tokens(corpus: &Corpus) {
    let h = strom_fuzz::ids::token_verify;
    let key = fixtures::signing_key();
    let grant = |action, stream: Option<&str>, lifetime| Grant {
        subject: "p_0123".into(),
        tenant: "t".into(),
        event: "e".into(),
        stream: stream.map(str::to_owned),
        action,
        lifetime_secs: lifetime,
        not_after: None,
        role: None,
        via: None,
    };
    let now = fixtures::now();
    let (play, _) = key.mint(&grant(Action::Play, Some("s"), 600), now).unwrap();
    let (event, _) = key.mint(&grant(Action::Play, None, 600), now).unwrap();
    let (publish, claims) = key
        .mint(&grant(Action::Publish, Some("s"), 7 * 24 * 3600), now)
        .unwrap();
    let (relay, _) = key
        .mint(&grant(Action::Relay, None, 30 * 24 * 3600), now)
        .unwrap();
    for (name, token) in [
        ("play", &play),
        ("play-event", &event),
        ("publish", &publish),
        ("relay", &relay),
    ] {
        corpus.write(
            "token_verify",
            &format!("token-{name}"),
            &[&[0u8][..], token.as_bytes()].concat(),
            h,
        );
    }
    // Claims to be signed by the harness (mode 1): what `mint` writes.
    let payload = {
        let untrusted = pasetors::token::UntrustedToken::<
            pasetors::token::Public,
            pasetors::version4::V4,
        >::try_from(play.as_str())
        .unwrap();
        let public = pasetors::keys::AsymmetricPublicKey::<pasetors::version4::V4>::from(
            &ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(
                fixtures::TOKEN_KEY_SEED,
            ))
            .pk[..],
        )
        .unwrap();
        let trusted =
            pasetors::version4::PublicToken::verify(&public, &untrusted, None, None).unwrap();
        trusted.payload().to_owned()
    };
    corpus.write(
        "token_verify",
        "claims-play",
        &[&[1u8][..], payload.as_bytes()].concat(),
        h,
    );
    let key_srt = srt::stream_key(&fixtures::SRT_SECRET, &claims).expect("a stream key");
    corpus.write(
        "token_verify",
        "srt-key",
        &[&[2u8][..], key_srt.as_bytes()].concat(),
        h,
    );
    let body = key_srt.rsplit_once('.').unwrap().0;
    corpus.write(
        "token_verify",
        "srt-key-body",
        &[&[3u8][..], body.as_bytes()].concat(),
        h,
    );
    for (name, id) in [
        ("stream-id-token", "#!::r=live/@T@,m=publish"),
        ("stream-id-srt-key", "#!::r=live/@S@,m=publish"),
        (
            "stream-id-backup",
            "#!::r=live/@S@?backup=1&rendition=360p,m=publish",
        ),
        (
            "stream-id-options",
            "#!::u=enc,r=live/@T@,backup=1,rendition=720p",
        ),
    ] {
        corpus.write(
            "token_verify",
            name,
            &[&[4u8][..], id.as_bytes()].concat(),
            h,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, flv] = &args[..] else {
        eprintln!("usage: seeds <corpus dir> <video.flv>");
        std::process::exit(2);
    };
    let corpus = Corpus(PathBuf::from(dir));
    let flv = fs::read(Path::new(flv)).expect("the FLV file");

    let h = strom_fuzz::rtmp::rtmp_ingest;
    let session = rtmp_session(&flv, 40);
    // After a valid handshake (bit 0), in 1017-byte and in 129-byte reads.
    corpus.write(
        "rtmp_ingest",
        "publish-4k",
        &[&[0xFFu8][..], &session].concat(),
        h,
    );
    corpus.write(
        "rtmp_ingest",
        "publish-129",
        &[&[(16u8 << 1) | 1][..], &session].concat(),
        h,
    );
    // With the handshake itself in the input.
    let mut server = Handshake::new(PeerType::Server);
    let handshake = rtmp::client_handshake(&mut server).expect("a handshake");
    let raw: Vec<u8> = [&[255u8 << 1][..], &handshake, &rtmp_session(&flv, 8)].concat();
    corpus.write("rtmp_ingest", "handshake-and-publish", &raw, h);

    moqt(&corpus, &flv);
    tokens(&corpus);
}
