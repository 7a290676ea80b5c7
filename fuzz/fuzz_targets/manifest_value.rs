//! Arbitrary manifests: `decode(encode(m)) == m` exactly when `m` is valid.
//! See `blocksnap::props::manifest_value`.
#![no_main]

use blocksnap::format::manifest::Manifest;

libfuzzer_sys::fuzz_target!(|m: Manifest| blocksnap::props::manifest_value(&m));
