//! See `strom_fuzz::ids::token_verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::ids::token_verify(data));
