//! See `blocksnap::props::chunk_bytes` for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::chunk_bytes(data));
