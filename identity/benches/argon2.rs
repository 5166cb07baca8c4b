//! Time of one argon2id hash and one verification with `ARGON2_PARAMS`.
//! Run: `cargo bench -p strom-identity --bench argon2`. Plain timing loop (no
//! criterion): each sample is ~tens of milliseconds, so loop overhead is noise.

use std::time::{Duration, Instant};

use strom_identity::password::{hash_password, verify_password, ARGON2_PARAMS};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    const SAMPLES: usize = 21;
    let password = "correct-Horse-7-battery";
    let _warm_up = hash_password(password);
    let mut hashes = Vec::with_capacity(SAMPLES);
    let mut phc = String::new();
    for _ in 0..SAMPLES {
        let start = Instant::now();
        phc = hash_password(password);
        hashes.push(start.elapsed());
    }
    let mut verifies = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        assert!(verify_password(password, &phc));
        verifies.push(start.elapsed());
    }
    let (min, max) = (hashes.iter().min().copied(), hashes.iter().max().copied());
    println!(
        "argon2id m={} KiB t={} p={}: hash median {:.1} ms (min {:.1}, max {:.1}), verify median {:.1} ms, {SAMPLES} samples",
        ARGON2_PARAMS.m_cost_kib,
        ARGON2_PARAMS.t_cost,
        ARGON2_PARAMS.p_cost,
        median(hashes).as_secs_f64() * 1e3,
        min.unwrap_or_default().as_secs_f64() * 1e3,
        max.unwrap_or_default().as_secs_f64() * 1e3,
        median(verifies).as_secs_f64() * 1e3,
    );
}
