//! MoQT as an edge receives it from viewers and upstreams, decoded by
//! moq-transport =0.17.0 the way its session reader does (decode from the
//! buffer; on `More`, read the next piece and try again), then handed to
//! what strom does with each object: `strom_relay::object_meta` (CMAF
//! timing), the origin's signature (`cache::Object::signature`, checked with
//! the key set's media keys) and, on the catalog track, the catalog view
//! that HLS playlists come from.
//!
//! FETCH stream records are decoded by moq-transport's `FetchRecordDecoder`,
//! which is crate-private: only the FETCH stream header is reached here.

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use bytes::{Buf, Bytes, BytesMut};
use moq_transport::coding::{Decode, DecodeError};
use moq_transport::data::{Datagram, StreamHeader, SubgroupObject, SubgroupObjectExt};
use moq_transport::message::Message;
use moq_transport::setup::Setup;
use strom_relay::{CatalogView, Object};
use strom_media::Catalog;
use strom_token::media::{MediaKeys, ObjectPlace};

use crate::{fixtures, piece_size};

/// A stream's bytes arriving in pieces, with the reader's buffer.
struct Stream<'a> {
    pieces: std::slice::Chunks<'a, u8>,
    buffer: BytesMut,
}

impl<'a> Stream<'a> {
    fn new(data: &'a [u8], piece: usize) -> Self {
        Self {
            pieces: data.chunks(piece),
            buffer: BytesMut::new(),
        }
    }

    /// moq-transport's `Reader::decode`: `None` when the stream ended or the
    /// bytes do not decode (the session then closes the stream).
    fn decode<T: Decode>(&mut self) -> Option<T> {
        loop {
            let mut cursor = Cursor::new(&self.buffer);
            match T::decode(&mut cursor) {
                Ok(value) => {
                    let used = cursor.position() as usize;
                    self.buffer.advance(used);
                    return Some(value);
                }
                Err(DecodeError::More(_)) => self.buffer.extend_from_slice(self.pieces.next()?),
                Err(_) => return None,
            }
        }
    }

    /// Up to `len` payload bytes (fewer when the stream ends early).
    fn payload(&mut self, len: usize) -> Bytes {
        while self.buffer.len() < len {
            let Some(piece) = self.pieces.next() else {
                break;
            };
            self.buffer.extend_from_slice(piece);
        }
        let len = len.min(self.buffer.len());
        self.buffer.split_to(len).freeze()
    }

    fn done(&self) -> bool {
        self.buffer.is_empty() && self.pieces.len() == 0
    }
}

/// The control stream: SETUP, then control messages. Byte 0 picks the read size.
pub fn moqt_control(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let mut stream = Stream::new(data, piece_size(selector));
    if stream.decode::<Setup>().is_none() {
        return;
    }
    while let Some(message) = stream.decode::<Message>() {
        let _ = (message.id(), message.name());
    }
}

fn media_keys() -> &'static Arc<MediaKeys> {
    static KEYS: OnceLock<Arc<MediaKeys>> = OnceLock::new();
    KEYS.get_or_init(|| fixtures::verifier().media_keys())
}

/// What strom does with one received object of `track`.
fn object(
    track: &str,
    group: u64,
    id: u64,
    payload: Bytes,
    ext: Option<Arc<moq_transport::data::ExtensionHeaders>>,
) {
    let meta = strom_relay::object_meta(track, &payload);
    let object = Object {
        id,
        payload,
        meta,
        ext,
    };
    if let Some(signature) = object.signature() {
        let namespace = ["t".to_owned(), "e".to_owned(), "s".to_owned()];
        let place = ObjectPlace {
            namespace: &namespace,
            track,
            group,
            object: id,
        };
        let _ = media_keys().verify(&place, &object.payload, signature);
    }
    if track == "catalog" {
        if let Ok(catalog) = Catalog::from_json(&object.payload) {
            let view = CatalogView::new(catalog);
            let _ = view.multivariant();
            for name in view.media_tracks() {
                let _ = view.track(&name);
                let _ = view.init_segment(&name);
            }
        }
    }
}

/// A unidirectional data stream (subgroup or FETCH), or a datagram.
/// Byte 0: the read size. Byte 1: bits 0-1 the track (video, audio,
/// catalog), bit 7 set = a datagram.
pub fn moqt_data(data: &[u8]) {
    let [selector, kind, data @ ..] = data else {
        return;
    };
    let track = ["video", "audio", "catalog", "video"][usize::from(kind & 0x03)];
    if kind & 0x80 != 0 {
        let mut cursor = Cursor::new(Bytes::copy_from_slice(data));
        if let Ok(datagram) = Datagram::decode(&mut cursor) {
            if let Some(payload) = datagram.payload {
                object(
                    track,
                    datagram.group_id,
                    datagram.object_id.unwrap_or(0),
                    payload,
                    datagram.extension_headers.map(Arc::new),
                );
            }
        }
        return;
    }
    let mut stream = Stream::new(data, piece_size(*selector));
    let Some(header) = stream.decode::<StreamHeader>() else {
        return;
    };
    let Some(subgroup) = header.subgroup_header else {
        return;
    };
    let mut next_id = 0u64;
    while !stream.done() {
        let (delta, length, ext) = if header.header_type.has_extension_headers() {
            let Some(o) = stream.decode::<SubgroupObjectExt>() else {
                return;
            };
            (
                o.object_id_delta,
                o.payload_length,
                Some(o.extension_headers),
            )
        } else {
            let Some(o) = stream.decode::<SubgroupObject>() else {
                return;
            };
            (o.object_id_delta, o.payload_length, None)
        };
        let Some(id) = next_id.checked_add(delta) else {
            return;
        };
        next_id = id.saturating_add(1);
        let payload = stream.payload(length);
        object(track, subgroup.group_id, id, payload, ext.map(Arc::new));
    }
}
