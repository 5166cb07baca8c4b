//! See `strom_fuzz::moqt::moqt_control`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strom_fuzz::moqt::moqt_control(data));
