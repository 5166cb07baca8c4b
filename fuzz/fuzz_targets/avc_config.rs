//! See `strom_fuzz::media::avc_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::media::avc_config(data));
