//! See `blocksnap::props::path_and_ip` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::path_and_ip(data));
