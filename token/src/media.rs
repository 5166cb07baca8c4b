//! Signatures on media objects (P2P-5): the origin signs every MoQT object it
//! publishes, so that anyone forwarding it — an edge, or a peer-agent passing
//! it on inside a LAN — can be checked by whoever receives it. A forwarder
//! that alters a single byte, or replays an object under another position or
//! broadcast, is caught by the first verifier.
//!
//! The signed message is a domain tag, the object's place (namespace fields,
//! track, group, object id) and the SHA-256 of its payload; the signature
//! travels as 72 bytes: an 8-byte key id (from the public key) and the
//! 64-byte Ed25519 signature. Sans-IO: no transport, no clock.

use std::collections::HashMap;

use ed25519_compact::{KeyPair, Noise, PublicKey, Seed, Signature};
use sha2::{Digest, Sha256};

/// The MoQT object extension header type that carries the signature (odd:
/// a byte value; from the range draft-18 leaves to private use).
pub const SIGNATURE_EXTENSION: u64 = 0x3f5a_0001;

/// Length of the signature a [`MediaSigner`] produces.
pub const SIGNATURE_LEN: usize = KEY_ID_LEN + 64;
const KEY_ID_LEN: usize = 8;
const DOMAIN: &[u8] = b"strom media object v1\0";

/// Where an object sits: the signature binds it to exactly this place.
#[derive(Debug, Clone, Copy)]
pub struct ObjectPlace<'a> {
    pub namespace: &'a [String],
    pub track: &'a str,
    pub group: u64,
    pub object: u64,
}

/// Why an object's signature does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaSignatureError {
    #[error("signature is not {SIGNATURE_LEN} bytes")]
    Malformed,
    #[error("signed with an unknown key")]
    UnknownKey,
    #[error("signature does not match the object")]
    Mismatch,
}

/// An origin's signing key.
pub struct MediaSigner {
    keys: KeyPair,
    id: [u8; KEY_ID_LEN],
}

impl MediaSigner {
    pub fn generate() -> Self {
        Self::with_keys(KeyPair::generate())
    }

    /// The key from its 32-byte seed (as stored in a data directory).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::with_keys(KeyPair::from_seed(Seed::new(*seed)))
    }

    fn with_keys(keys: KeyPair) -> Self {
        let id = key_id(&keys.pk);
        Self { keys, id }
    }

    pub fn seed(&self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(self.keys.sk.seed().as_ref());
        seed
    }

    /// The public key verifiers need (32 bytes).
    pub fn public_key(&self) -> [u8; 32] {
        *self.keys.pk
    }

    pub fn sign(&self, place: &ObjectPlace<'_>, payload: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sig = self
            .keys
            .sk
            .sign(message(place, payload), Some(Noise::generate()));
        let mut out = [0u8; SIGNATURE_LEN];
        out[..KEY_ID_LEN].copy_from_slice(&self.id);
        out[KEY_ID_LEN..].copy_from_slice(sig.as_ref());
        out
    }
}

/// The public keys whose signatures are accepted, by key id.
#[derive(Default, Clone)]
pub struct MediaKeys {
    keys: HashMap<[u8; KEY_ID_LEN], PublicKey>,
}

impl MediaKeys {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds a 32-byte Ed25519 public key; false when it is not one.
    pub fn insert(&mut self, public_key: &[u8]) -> bool {
        match PublicKey::from_slice(public_key) {
            Ok(pk) => {
                self.keys.insert(key_id(&pk), pk);
                true
            }
            Err(_) => false,
        }
    }

    pub fn verify(
        &self,
        place: &ObjectPlace<'_>,
        payload: &[u8],
        signature: &[u8],
    ) -> Result<(), MediaSignatureError> {
        if signature.len() != SIGNATURE_LEN {
            return Err(MediaSignatureError::Malformed);
        }
        let (id, sig) = signature.split_at(KEY_ID_LEN);
        let pk = self.keys.get(id).ok_or(MediaSignatureError::UnknownKey)?;
        let sig = Signature::from_slice(sig).map_err(|_| MediaSignatureError::Malformed)?;
        pk.verify(message(place, payload), &sig)
            .map_err(|_| MediaSignatureError::Mismatch)
    }
}

fn key_id(pk: &PublicKey) -> [u8; KEY_ID_LEN] {
    let digest = Sha256::digest(pk.as_ref());
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// Domain tag, then every variable field length-prefixed so that no two
/// places encode alike, then the payload's digest.
fn message(place: &ObjectPlace<'_>, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&(place.namespace.len() as u32).to_be_bytes());
    for field in place
        .namespace
        .iter()
        .map(String::as_bytes)
        .chain([place.track.as_bytes()])
    {
        m.extend_from_slice(&(field.len() as u32).to_be_bytes());
        m.extend_from_slice(field);
    }
    m.extend_from_slice(&place.group.to_be_bytes());
    m.extend_from_slice(&place.object.to_be_bytes());
    m.extend_from_slice(&Sha256::digest(payload));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns() -> Vec<String> {
        vec!["t_a".into(), "e_b".into(), "main".into()]
    }

    fn place<'a>(
        namespace: &'a [String],
        track: &'a str,
        group: u64,
        object: u64,
    ) -> ObjectPlace<'a> {
        ObjectPlace {
            namespace,
            track,
            group,
            object,
        }
    }

    #[test]
    fn a_signed_object_verifies_and_every_change_is_caught() {
        let signer = MediaSigner::generate();
        let mut keys = MediaKeys::default();
        assert!(keys.insert(&signer.public_key()));
        let n = ns();
        let payload = b"prft moof mdat".to_vec();
        let sig = signer.sign(&place(&n, "video", 7, 3), &payload);
        assert_eq!(
            keys.verify(&place(&n, "video", 7, 3), &payload, &sig),
            Ok(())
        );

        let mismatch = Err(MediaSignatureError::Mismatch);
        assert_eq!(
            keys.verify(&place(&n, "video", 7, 3), b"prft moof mdaT", &sig),
            mismatch
        );
        assert_eq!(
            keys.verify(&place(&n, "video", 8, 3), &payload, &sig),
            mismatch
        );
        assert_eq!(
            keys.verify(&place(&n, "video", 7, 4), &payload, &sig),
            mismatch
        );
        assert_eq!(
            keys.verify(&place(&n, "audio", 7, 3), &payload, &sig),
            mismatch
        );
        let other: Vec<String> = vec!["t_a".into(), "e_c".into(), "main".into()];
        assert_eq!(
            keys.verify(&place(&other, "video", 7, 3), &payload, &sig),
            mismatch
        );
        // Moving a boundary between fields changes the message too.
        let shifted: Vec<String> = vec!["t_ae_b".into(), "main".into()];
        assert_eq!(
            keys.verify(&place(&shifted, "video", 7, 3), &payload, &sig),
            mismatch
        );

        let mut bad = sig;
        bad[20] ^= 1;
        assert_eq!(
            keys.verify(&place(&n, "video", 7, 3), &payload, &bad),
            mismatch
        );
        assert_eq!(
            keys.verify(
                &place(&n, "video", 7, 3),
                &payload,
                &sig[..SIGNATURE_LEN - 1]
            ),
            Err(MediaSignatureError::Malformed)
        );
    }

    #[test]
    fn only_known_keys_count_and_seeds_round_trip() {
        let signer = MediaSigner::generate();
        let stranger = MediaSigner::generate();
        let mut keys = MediaKeys::default();
        keys.insert(&signer.public_key());
        assert!(!keys.insert(&[0u8; 5]));
        let n = ns();
        let sig = stranger.sign(&place(&n, "video", 1, 0), b"x");
        assert_eq!(
            keys.verify(&place(&n, "video", 1, 0), b"x", &sig),
            Err(MediaSignatureError::UnknownKey)
        );
        let again = MediaSigner::from_seed(&signer.seed());
        assert_eq!(again.public_key(), signer.public_key());
        let sig = again.sign(&place(&n, "video", 1, 0), b"x");
        assert_eq!(keys.verify(&place(&n, "video", 1, 0), b"x", &sig), Ok(()));
    }

    proptest! {
        #[test]
        fn any_flipped_payload_bit_is_caught(payload in proptest::collection::vec(any::<u8>(), 1..4096), bit in any::<usize>()) {
            let signer = MediaSigner::from_seed(&[7u8; 32]);
            let mut keys = MediaKeys::default();
            keys.insert(&signer.public_key());
            let n = ns();
            let p = place(&n, "video", 42, 9);
            let sig = signer.sign(&p, &payload);
            prop_assert_eq!(keys.verify(&p, &payload, &sig), Ok(()));
            let mut altered = payload.clone();
            let i = bit % (altered.len() * 8);
            altered[i / 8] ^= 1 << (i % 8);
            prop_assert_eq!(keys.verify(&p, &altered, &sig), Err(MediaSignatureError::Mismatch));
        }
    }
}
