//! Publish journals: decoding never panics; accepted ones name only blocksnap's working directories and plain entries, and round-trip. See `blocksnap::props::journal_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::journal_bytes(data));
