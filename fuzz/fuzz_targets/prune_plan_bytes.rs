//! Prune plans: decoding never panics; accepted ones re-encode to the same bytes, chunks in order. See `blocksnap::props::prune_plan_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::prune_plan_bytes(data));
