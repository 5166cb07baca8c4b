//! See `strom_fuzz::rtmp::rtmp_ingest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::rtmp::rtmp_ingest(data));
