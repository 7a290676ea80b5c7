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

const TARGETS: [Target; 11] = [
    ("manifest_bytes", props::manifest_bytes),
    ("manifest_value", manifest_value),
    ("chunk_bytes", props::chunk_bytes),
    ("config_bytes", props::config_bytes),
    ("location", props::location),
    ("path_and_ip", props::path_and_ip),
    ("signature_bytes", props::signature_bytes),
    ("journal_bytes", props::journal_bytes),
    ("forget_record_bytes", props::forget_record_bytes),
    ("prune_plan_bytes", props::prune_plan_bytes),
    ("fate_bytes", props::fate_bytes),
];

/// Runs every input under `fuzz/<kind>/<target>/`; returns how many ran
/// per target.
fn replay(kind: &str) -> Vec<(&'static str, usize)> {
    let mut out = Vec::new();
    for (target, check) in TARGETS {
        let mut n = 0;
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            out.push((target, 0));
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
        out.push((target, n));
    }
    out
}

#[test]
fn seed_corpus_replays() {
    for (target, n) in replay("corpus") {
        assert!(n > 0, "{target}: no seed in fuzz/corpus/{target}/");
    }
}

#[test]
fn past_crashes_replay() {
    let ran: usize = replay("regressions").iter().map(|(_, n)| n).sum();
    eprintln!("{ran} past crashes replayed");
}

/// A time-boxed random mutation loop over every target, on stable: from
/// the seeds, bytes flipped, inserted, removed, duplicated and spliced, and
/// lengths and counts set to edge values. Not coverage-guided (the
/// cargo-fuzz run in `.ci/run` is), but it runs in every `cargo test`.
/// `BLOCKSNAP_FUZZ_SECS` (default 1) per target.
#[test]
fn a_mutation_loop_over_every_target_finds_nothing() {
    let secs: f64 = std::env::var("BLOCKSNAP_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (target, check) in TARGETS {
        let seeds: Vec<Vec<u8>> = std::fs::read_dir(fuzz_dir().join("corpus").join(target))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        let started = std::time::Instant::now();
        let mut runs = 0u64;
        while started.elapsed().as_secs_f64() < secs {
            let mut data = seeds[(next() as usize) % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let len = data.len().max(1);
                let at = (next() as usize) % len;
                match next() % 7 {
                    0 if !data.is_empty() => data[at] ^= 1 << (next() % 8),
                    1 => data.insert(at.min(data.len()), next() as u8),
                    2 if !data.is_empty() => {
                        data.remove(at);
                    }
                    3 if at + 8 <= data.len() => {
                        let edge =
                            [0u64, 1, 0x7f, 0xff, u32::MAX as u64, u64::MAX][next() as usize % 6];
                        data[at..at + 8].copy_from_slice(&edge.to_le_bytes());
                    }
                    4 if !data.is_empty() => {
                        let end = (at + (next() as usize % 64)).min(data.len());
                        let piece = data[at..end].to_vec();
                        data.splice(at..at, piece);
                    }
                    5 => {
                        let other = &seeds[(next() as usize) % seeds.len()];
                        let cut = (next() as usize) % (other.len() + 1);
                        data.truncate(at);
                        data.extend_from_slice(&other[cut..]);
                    }
                    _ => data.truncate(at),
                }
            }
            let result = std::panic::catch_unwind(|| check(&data));
            if result.is_err() {
                let dir = fuzz_dir().join("regressions").join(target);
                let _ = std::fs::create_dir_all(&dir);
                let name = format!("found-{}", blake3::hash(&data).to_hex());
                let _ = std::fs::write(dir.join(&name), &data);
                panic!("{target}: an input breaks its properties (kept as fuzz/regressions/{target}/{name})");
            }
            runs += 1;
        }
        eprintln!("{target}: {runs} mutated inputs in {secs} s");
    }
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
