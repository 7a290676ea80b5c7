//! See `blocksnap::props::signature_bytes` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::signature_bytes(data));
