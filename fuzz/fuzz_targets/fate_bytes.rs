//! Fates: a claim is recognised only with the secret that names its attempt. See `blocksnap::props::fate_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| blocksnap::props::fate_bytes(data));
