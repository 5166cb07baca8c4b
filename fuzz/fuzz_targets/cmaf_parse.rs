//! See `strom_fuzz::media::cmaf_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::media::cmaf_parse(data));
