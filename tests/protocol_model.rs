//! The writer / forget / prune protocol of FORMAT.md §10, model-checked
//! (issue #21): every interleaving of the actors of each named case below,
//! with stalls and crashes between any two requests and time passing, is
//! explored, and no reachable state breaks the safety property (see
//! `tests/model/mod.rs`). The same cases under the protocol as it was
//! before #21 reach the four holes an outside checker reported — the proof
//! that the model can see them.
//!
//! Bounds: each case's actors, ticks and crashes are fixed below;
//! `BLOCKSNAP_MODEL_STATES` raises the cap on distinct states per case
//! (CI: the default; `benches/protocol_model.sh` runs them uncapped).

mod model;

use model::{Actor, Forget, Mode, Prune, Rules, State, World, Writer};

struct Case {
    name: &'static str,
    /// Chunks each snapshot id names.
    chunks_of: Vec<u8>,
    start: State,
}

fn cap() -> u64 {
    std::env::var("BLOCKSNAP_MODEL_STATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000)
}

fn state(store: std::collections::BTreeMap<model::Key, model::Obj>, actors: Vec<Actor>) -> State {
    State {
        now: 0,
        ticks_left: 0,
        crashes_left: 0,
        plants_left: 0,
        store,
        actors,
    }
}

fn writer(id: u8, att: u8, mode: Mode) -> Actor {
    Actor::Writer(Writer::new(id, att, mode))
}

fn prune(runs: u8) -> Actor {
    Actor::Prune(Prune::new(runs))
}

fn forget(id: u8) -> Actor {
    Actor::Forget(Forget::new(id))
}

/// A plan for round 1 condemning chunk 0, written long ago.
fn with_old_plan(
    mut store: std::collections::BTreeMap<model::Key, model::Obj>,
) -> std::collections::BTreeMap<model::Key, model::Obj> {
    store.insert(
        model::Key::Plan(1),
        model::Obj {
            val: model::Val::Plan { chunks: 1 },
            mtime: 0,
        },
    );
    store
}

/// The named cases: FORMAT.md §10's interleavings and the review's holes.
/// Snapshot 0 was forgotten long ago (its chunk 0 is unreferenced and
/// old); snapshot 1 names chunk 0 again (a writer reusing it).
fn cases() -> Vec<Case> {
    let chunks_of = vec![0b01, 0b01, 0b10];
    let base = || model::store_with(0b11, &[0], &[2]);
    let mut out = Vec::new();
    let mut case = |name, start: State| {
        out.push(Case {
            name,
            chunks_of: chunks_of.clone(),
            start,
        })
    };
    // §10 interleavings 1 and 2: a snapshot reusing a chunk that a prune
    // condemns and sweeps around it (index writer: no request for it).
    let mut s = state(base(), vec![writer(1, 1, Mode::Index), prune(2)]);
    s.ticks_left = 3;
    case(
        "interleavings 1-2: a writer reusing a chunk beside condemn and sweep",
        s,
    );
    // Interleaving 3-4: a writer paused past every margin, or dead.
    let mut s = state(
        with_old_plan(base()),
        vec![writer(1, 1, Mode::Put), prune(2)],
    );
    s.ticks_left = 3;
    s.crashes_left = 1;
    case(
        "interleavings 3-4: a writer paused or killed at any request",
        s,
    );
    // Review hole 1: a prune completes a claimed commit, forget forgets it,
    // a sweep deletes its chunk, the writer's own PUT lands.
    let mut s = state(base(), vec![writer(1, 1, Mode::Index), prune(3), forget(1)]);
    s.ticks_left = 3;
    case(
        "hole 1: a late writer PUT after completion, forget and sweep",
        s,
    );
    // Review hole 2: two copies of one snapshot and a forget.
    let s = state(
        base(),
        vec![
            writer(1, 1, Mode::Copy),
            writer(1, 2, Mode::Copy),
            forget(1),
        ],
    );
    case(
        "hole 2: two copies of one snapshot and a forget between them",
        s,
    );
    // Review hole 3: two copies share a pending object; one refuses.
    let mut s = state(
        with_old_plan(base()),
        vec![
            writer(1, 1, Mode::Index),
            writer(1, 2, Mode::Index),
            prune(1),
        ],
    );
    s.ticks_left = 1;
    case(
        "hole 3: two attempts of one snapshot, one refused by its check",
        s,
    );
    // Review hole 4: an expired attempt and a second one.
    let mut s = state(
        with_old_plan(base()),
        vec![
            writer(1, 1, Mode::Index),
            writer(1, 2, Mode::Index),
            prune(2),
        ],
    );
    s.ticks_left = 2;
    case(
        "hole 4: an attempt expired by a prune, and a second attempt",
        s,
    );
    // Two prunes at once, completing one claimed commit beside a forget.
    let mut s = state(
        base(),
        vec![writer(1, 1, Mode::Index), prune(1), prune(1), forget(1)],
    );
    s.ticks_left = 1;
    s.crashes_left = 1;
    case(
        "two prunes completing one commit beside a forget, one killed",
        s,
    );
    // Two prunes sweeping one round (condemn vs condemn, sweep vs sweep).
    let mut s = state(
        with_old_plan(base()),
        vec![writer(1, 1, Mode::Index), prune(2), prune(1)],
    );
    s.ticks_left = 3;
    case("two prunes claiming, sweeping and condemning at once", s);
    // A co-tenant plants a claim for a pending attempt before its writer.
    let mut s = state(
        with_old_plan(base()),
        vec![writer(1, 1, Mode::Index), prune(2)],
    );
    s.ticks_left = 2;
    s.plants_left = 1;
    case("a planted claim for a writer's attempt", s);
    out
}

fn run(rules: Rules, case: &Case) -> model::Explored {
    let world = World {
        rules,
        chunks_of: case.chunks_of.clone(),
    };
    world.explore(case.start.clone(), cap())
}

#[test]
fn the_protocol_keeps_every_live_snapshot_whole_in_every_case() {
    let mut total = 0;
    for case in cases() {
        let started = std::time::Instant::now();
        let r = run(Rules::NOW, &case);
        eprintln!(
            "{}: {} states, {} transitions, depth {}, {} with a forgotten manifest listed{} ({:.1}s)",
            case.name,
            r.states,
            r.transitions,
            r.max_depth,
            r.forgotten_listed,
            if r.truncated { ", TRUNCATED" } else { "" },
            started.elapsed().as_secs_f64()
        );
        if let Some((what, trace)) = &r.violation {
            panic!("{}: {what}\n{}", case.name, trace.join("\n"));
        }
        assert!(
            r.states > 100,
            "{}: explored only {} states",
            case.name,
            r.states
        );
        total += r.states;
    }
    eprintln!("total: {total} states");
}

/// The protocol before #21 (shared pending objects, manifests that are
/// what a forget removes, no re-check, unauthenticated claims) fails the
/// cases the review found; each fix, taken out alone, lets one through.
#[test]
fn the_earlier_protocol_reaches_the_reviews_holes() {
    let cases = cases();
    let find = |name: &str| cases.iter().find(|c| c.name.starts_with(name)).unwrap();
    for (rules, case, expect) in [
        (Rules::BEFORE, "hole 1", "snapshot 1"),
        (Rules::BEFORE, "hole 2", "snapshot 1"),
        (Rules::BEFORE, "hole 3", "names missing chunk"),
        (Rules::BEFORE, "hole 4", "names missing chunk"),
        (
            Rules {
                per_attempt: false,
                ..Rules::NOW
            },
            "hole 3",
            "names missing chunk",
        ),
        (
            Rules {
                tombstones: false,
                ..Rules::NOW
            },
            "hole 1",
            "snapshot 1",
        ),
        (
            Rules {
                secret: false,
                ..Rules::NOW
            },
            "a planted claim",
            "names missing chunk",
        ),
    ] {
        let r = run(rules, find(case));
        let (what, trace) = r
            .violation
            .unwrap_or_else(|| panic!("{rules:?} on {case}: no violation in {} states", r.states));
        assert!(what.contains(expect), "{rules:?} on {case}: {what}");
        eprintln!(
            "{rules:?} on {case}: {what} after {} steps ({} states)",
            trace.len(),
            r.states
        );
    }
}
