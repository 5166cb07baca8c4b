//! What signing every media object costs (P2P-5): Ed25519 signatures over the
//! object's place and the SHA-256 of its payload, for objects the size of a
//! 3 Mbit/s stream's video frames (~12 KB) and AAC frames (~400 B), on one
//! core. Run in release:
//!
//!   cargo run --release -p strom-simulations --bin strom-sign-bench

use std::time::Instant;

use strom_token::media::{MediaKeys, MediaSigner, ObjectPlace};

fn main() {
    let signer = MediaSigner::generate();
    let mut keys = MediaKeys::default();
    keys.insert(&signer.public_key());
    let namespace: Vec<String> = vec!["t_bench".into(), "e_bench".into(), "main".into()];
    for (label, size, n) in [
        ("video 12 KB", 12_000usize, 20_000u64),
        ("audio 400 B", 400, 40_000),
    ] {
        let payload = vec![0x5au8; size];
        let place = |i: u64| ObjectPlace {
            namespace: &namespace,
            track: "video",
            group: i / 30,
            object: i % 30,
        };
        let start = Instant::now();
        let sigs: Vec<_> = (0..n).map(|i| signer.sign(&place(i), &payload)).collect();
        let sign = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for (i, sig) in sigs.iter().enumerate() {
            keys.verify(&place(i as u64), &payload, sig)
                .expect("verifies");
        }
        let verify = start.elapsed().as_secs_f64();
        println!(
            "{label}: sign {:.0}/s, verify {:.0}/s per core",
            n as f64 / sign,
            n as f64 / verify
        );
    }
}
