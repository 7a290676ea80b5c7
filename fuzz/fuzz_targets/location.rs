//! See `blocksnap::props::location` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::location(data));
