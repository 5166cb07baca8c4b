//! See `strom_fuzz::edge::hls_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::edge::hls_request(data));
