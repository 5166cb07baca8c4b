//! See `strom_fuzz::media::ts_demux`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::media::ts_demux(data));
