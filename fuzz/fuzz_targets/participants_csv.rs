//! See `strom_fuzz::ids::participants_csv`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::ids::participants_csv(data));
