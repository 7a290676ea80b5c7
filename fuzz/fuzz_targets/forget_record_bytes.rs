//! Forget records: decoding never panics; accepted ones re-encode to the same bytes. See `blocksnap::props::forget_record_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::forget_record_bytes(data));
