//! The fuzz harnesses: one function per target in `fuzz_targets/`, each
//! driving strom's own code with the calls strom makes on bytes from the
//! network, files or users. They live in a library so that a crash can be
//! replayed from a test or the seed generator (`examples/seeds.rs`) can check
//! its seeds against the very same code.
//!
//! Several inputs begin with a mode byte that picks a path or the size of the
//! reads (how bytes arrive from a socket matters to stream parsers).

pub mod edge;
pub mod ids;
pub mod media;
pub mod moqt;
pub mod rtmp;

/// Reads of `1..=256 × 8` bytes chosen by `selector`: small reads split
/// headers, large ones pass whole messages.
pub fn piece_size(selector: u8) -> usize {
    usize::from(selector) * 8 + 1
}

/// Fixed keys and times, so that seeds made by `examples/seeds.rs` verify in
/// the targets.
pub mod fixtures {
    use std::sync::{Arc, OnceLock};

    use strom_token::{KeySet, SigningKey, Verifier};
    use time::OffsetDateTime;

    /// Seed of the token signing key the targets trust (not a secret: it
    /// signs nothing outside the fuzzer).
    pub const TOKEN_KEY_SEED: [u8; 32] = *b"strom fuzz token signing key 001";
    /// Tenant `t`'s SRT secret (what the origin holds for it).
    pub const SRT_SECRET: [u8; 32] = *b"strom fuzz srt shared secret 001";
    /// Seed of the origin media signing key whose signatures are checked.
    pub const MEDIA_KEY_SEED: [u8; 32] = *b"strom fuzz media signing key 001";
    /// The verifier's clock for pre-made tokens: 2026-01-01T00:00:00Z.
    pub const NOW_UNIX: i64 = 1_767_225_600;

    pub fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW_UNIX).expect("a valid time")
    }

    /// The 64-byte Ed25519 secret (seed ‖ public key) of the token key.
    pub fn token_key_bytes() -> Vec<u8> {
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(TOKEN_KEY_SEED));
        pair.sk.to_vec()
    }

    pub fn signing_key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::from_bytes(&token_key_bytes()).expect("a valid key"))
    }

    /// A verifier that trusts the fixture key (as an edge after its key-set sync).
    pub fn verifier() -> Arc<Verifier> {
        let verifier = Verifier::new();
        let rejected = verifier.set_keys(&KeySet {
            keys: vec![signing_key().public_key()],
            media: vec![strom_token::MediaKey {
                origin: "origin-1".into(),
                key: strom_token::media::MediaSigner::from_seed(&MEDIA_KEY_SEED)
                    .public_key()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            }],
        });
        assert!(rejected.is_empty(), "fixture keys rejected: {rejected:?}");
        Arc::new(verifier)
    }
}
