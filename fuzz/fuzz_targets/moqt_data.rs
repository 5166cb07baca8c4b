//! See `strom_fuzz::moqt::moqt_data`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::moqt::moqt_data(data));
