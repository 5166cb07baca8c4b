//! See `strom_fuzz::media::flv_tags`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::media::flv_tags(data));
