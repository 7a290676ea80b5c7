//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) and every
//! past crash (`fuzz/regressions/<target>/`) through the properties the fuzz
//! targets check (`blocksnap::props`), so plain `cargo test` on stable
//! guards against regressions without a fuzzer.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use blocksnap::format::manifest::Manifest;
use blocksnap::props;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn manifest_value(data: &[u8]) {
    if let Ok(m) = Manifest::arbitrary_take_rest(Unstructured::new(data)) {
        props::manifest_value(&m);
    }
}

/// A target's name and the property check its fuzz target runs.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 7] = [
    ("manifest_bytes", props::manifest_bytes),
    ("manifest_value", manifest_value),
    ("chunk_bytes", props::chunk_bytes),
    ("config_bytes", props::config_bytes),
    ("location", props::location),
    ("path_and_ip", props::path_and_ip),
    ("signature_bytes", props::signature_bytes),
];

/// Runs every input under `fuzz/<kind>/<target>/`; returns how many ran.
fn replay(kind: &str) -> usize {
    let mut n = 0;
    for (target, check) in TARGETS {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(
                result.is_ok(),
                "{target}: {} fails its properties",
                path.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn seed_corpus_replays() {
    assert!(replay("corpus") >= 6, "the seed corpus is missing");
}

#[test]
fn past_crashes_replay() {
    replay("regressions");
}

#[test]
fn every_target_has_seeds_and_a_fuzz_target() {
    for (target, _) in TARGETS {
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "{target}"
        );
        assert!(
            std::fs::read_dir(fuzz_dir().join("corpus").join(target))
                .unwrap()
                .count()
                > 0,
            "{target}"
        );
    }
}
