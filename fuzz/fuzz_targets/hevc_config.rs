//! See `strom_fuzz::media::hevc_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::media::hevc_config(data));
