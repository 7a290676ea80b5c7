//! An exhaustive model of the writer / forget / prune protocol of FORMAT.md
//! §10, and an explorer that visits every state it can reach.
//!
//! The store is a map of keys to small values with a modification time in
//! the store's clock; every request an actor makes (LIST, GET, HEAD,
//! conditional PUT, DELETE) is one atomic step, and any actor may be held
//! between any two of its steps for as long as the others like (a stalled
//! VM, SIGSTOP, a PUT delayed in retries), or die there. Time moves in
//! ticks; the grace, expiry and lease are counted in ticks. The one
//! assumption FORMAT.md states and the model keeps is that a sweep's delete
//! reaches the store before its lease is over: time cannot pass a lease
//! while a sweep holds a delete it checked the lease for.
//!
//! A LIST and the GETs of the immutable objects it lists (epochs, plans,
//! manifests) are one step; everything whose bytes or presence another
//! actor can change between two requests (pending objects, fates, chunks,
//! records, sweep and done markers) is read by a step of its own.
//!
//! The safety property, checked in every state reached:
//! - **no live snapshot names a missing chunk** — live meaning its manifest
//!   is listed and no forget record names it (FORMAT.md §10 "Forget"; in
//!   the protocol before #21, listed and that is all);
//! - **no forgotten snapshot returns** — before #21, a forget that finished
//!   left no manifest for good; after it, a record is never deleted, so
//!   this holds by the definition of live;
//! - **no writer reports a commit that is not there**: when a writer says
//!   "committed", its manifest is listed or its snapshot was forgotten.
//!
//! [`Rules`] switches each fix of #21 off, so that the explorer can show the
//! holes an outside checker found in the earlier protocol (and that it
//! would find them again if a fix were lost).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

/// Which protocol: the one FORMAT.md specifies now, or the earlier one
/// with some of its fixes taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Pending objects and fates per attempt (`pending/<id>-<a>`), not one
    /// per snapshot.
    pub per_attempt: bool,
    /// The forget record is what forgets: a manifest put back after it is
    /// not live.
    pub tombstones: bool,
    /// The writer re-checks for a forget record after its PUT.
    pub recheck: bool,
    /// A claim carries the secret naming its attempt; prune completes only
    /// such claims.
    pub secret: bool,
}

impl Rules {
    pub const NOW: Rules = Rules {
        per_attempt: true,
        tombstones: true,
        recheck: true,
        secret: true,
    };
    /// The protocol as it was before issue #21.
    pub const BEFORE: Rules = Rules {
        per_attempt: false,
        tombstones: false,
        recheck: false,
        secret: false,
    };
}

/// Durations, in ticks.
pub const GRACE: u8 = 1;
pub const EXPIRY: u8 = 1;
pub const LEASE: u8 = 2;
/// A sweep goes on deleting while `now < claim + HOLD` (¾ of the lease).
pub const HOLD: u8 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Key {
    Chunk(u8),
    Snap(u8),
    /// Snapshot, attempt (0 for every attempt before #21).
    Pending(u8, u8),
    Fate(u8, u8),
    Record(u8),
    Epoch(u8),
    Plan(u8),
    /// Round, attempt.
    Sweep(u8, u8),
    Done(u8, u8),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Val {
    Plain,
    /// A claim; `valid` when it carries the attempt's secret.
    Commit {
        valid: bool,
    },
    Expire,
    /// An epoch names the round it swept and the plan's stamp.
    Epoch {
        round: u8,
        stamp: u8,
    },
    /// A plan's condemned chunks (a bit per chunk).
    Plan {
        chunks: u8,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Obj {
    pub val: Val,
    pub mtime: u8,
}

/// What a writer does with the chunks it names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Mode {
    /// Relies on them from its chunk index, built at time 0 in epoch 0 from
    /// a listing that held them: no request at all while the index is valid
    /// at the writer's begin (FORMAT.md §10, "Local state": the epoch is
    /// still 0 and no sweep is under way); otherwise it is rebuilt from a
    /// listing of the chunks, and the writer puts those not listed.
    Index,
    /// `put_if_absent` each (a taken key is relied on as it is).
    Put,
    /// A copy: puts each, checks the destination's forget record first.
    Copy,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Outcome {
    Committed,
    Refused,
    /// Committed, then found forgotten (FORMAT.md §10 "Writers", step 7).
    Forgotten,
    /// A copy that found the snapshot forgotten there.
    Skipped,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum WPc {
    ListEpochs,
    ListPrune,
    /// An index writer whose index is not valid lists the chunks.
    ListChunks,
    Chunk(u8),
    /// A copy looks for a forget record at the destination: in its plan,
    /// and again right before it commits.
    CopyCheck(bool),
    PutPending,
    CheckEpochs,
    CheckPrune,
    Head(u8),
    RefuseDelete,
    Claim,
    HeadPending,
    GetSnap,
    DelFate,
    PutSnap,
    Recheck,
    DelSnap,
    TidyPending(Outcome),
    TidyFate(Outcome),
    End(Outcome),
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Writer {
    pub id: u8,
    pub att: u8,
    pub mode: Mode,
    pc: WPc,
    e0: u8,
    /// Rounds (with plan stamps) to check.
    rounds: Vec<(u8, u8)>,
    /// Chunks to ask about in the check.
    heads: u8,
    /// Chunks to put (all it names, or those a rebuilt index lacks).
    puts: u8,
}

impl Writer {
    pub fn new(id: u8, att: u8, mode: Mode) -> Writer {
        Writer {
            id,
            att,
            mode,
            pc: WPc::ListEpochs,
            e0: 0,
            rounds: Vec::new(),
            heads: 0,
            puts: 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum PPc {
    Now,
    ListPrune,
    ClaimPut(u8),
    Bump(u8),
    ListPending,
    GetFate(u8),
    GetPending(u8),
    /// Attempt index, step of its action.
    Act(u8, Act),
    ListSnaps,
    ListChunks,
    /// Claim index, chunk.
    SweepCheck(u8, u8),
    SweepDelete(u8, u8),
    FinalCheck(u8),
    PutDone(u8),
    Condemn,
    PutPlan(u8),
    End,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Act {
    /// Complete a claim: PUT the manifest.
    PutSnap,
    /// (Before #21) after completing, look for a record.
    CheckRecord,
    DelSnap,
    DelPending,
    DelFate,
    /// Claim `expire` for an attempt nobody claimed in time.
    PutExpire,
    /// (Before #21) a claimed commit of a forgotten snapshot: look first.
    HeadRecord,
}

/// One prune round as a run listed it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct RoundView {
    round: u8,
    plan: Option<(u8, u8)>, // chunks, stamp
    attempt: u8,            // latest attempt, 0 for none
    done: bool,
    last_sweep: Option<u8>, // mtime of the latest sweep marker
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Prune {
    pc: PPc,
    pub runs_left: u8,
    now: u8,
    rounds: Vec<RoundView>,
    /// Rounds to claim: (round, next attempt, stamp).
    claimable: Vec<(u8, u8, u8)>,
    /// Claimed: (round, attempt, claimed at, condemned chunks).
    claims: Vec<(u8, u8, u8, u8)>,
    /// Attempts listed: (snapshot, attempt, pending listed, fate listed).
    attempts: Vec<(u8, u8, bool, bool)>,
    fate: Option<Val>,
    roots: u8,
    /// Listed chunks (bit mask) and which of them were older than the grace.
    listed: u8,
    old_chunks: u8,
    deleted: u8,
    bump_tries: u8,
}

impl Prune {
    pub fn new(runs: u8) -> Prune {
        Prune {
            pc: PPc::Now,
            runs_left: runs,
            now: 0,
            rounds: Vec::new(),
            claimable: Vec::new(),
            claims: Vec::new(),
            attempts: Vec::new(),
            fate: None,
            roots: 0,
            listed: 0,
            old_chunks: 0,
            deleted: 0,
            bump_tries: 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum FPc {
    Look,
    PutRecord,
    DelSnap,
    End,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Forget {
    pub id: u8,
    pc: FPc,
}

impl Forget {
    pub fn new(id: u8) -> Forget {
        Forget { id, pc: FPc::Look }
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Actor {
    Writer(Writer),
    Prune(Prune),
    Forget(Forget),
    Crashed,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct State {
    pub now: u8,
    pub ticks_left: u8,
    pub crashes_left: u8,
    /// Objects a party that can only add objects may still plant.
    pub plants_left: u8,
    pub store: BTreeMap<Key, Obj>,
    pub actors: Vec<Actor>,
}

/// The chunks (bit mask) each snapshot names.
#[derive(Clone, Debug)]
pub struct World {
    pub rules: Rules,
    pub chunks_of: Vec<u8>,
}

impl World {
    fn live(&self, s: &State, id: u8) -> bool {
        s.store.contains_key(&Key::Snap(id))
            && !(self.rules.tombstones && s.store.contains_key(&Key::Record(id)))
    }

    /// The safety property (see the module doc); `Err` says what broke.
    pub fn check(&self, s: &State) -> Result<(), String> {
        for id in 0..self.chunks_of.len() as u8 {
            if self.live(s, id) {
                for c in 0..8 {
                    if self.chunks_of[id as usize] & (1 << c) != 0
                        && !s.store.contains_key(&Key::Chunk(c))
                    {
                        return Err(format!("live snapshot {id} names missing chunk {c}"));
                    }
                }
            }
        }
        for a in &s.actors {
            match a {
                Actor::Forget(f)
                    if f.pc == FPc::End
                        && !self.rules.tombstones
                        && s.store.contains_key(&Key::Record(f.id))
                        && s.store.contains_key(&Key::Snap(f.id)) =>
                {
                    return Err(format!("forgotten snapshot {} is back", f.id));
                }
                Actor::Writer(w)
                    if w.pc == WPc::End(Outcome::Committed)
                        && !s.store.contains_key(&Key::Snap(w.id))
                        && !s.store.contains_key(&Key::Record(w.id)) =>
                {
                    return Err(format!(
                        "writer of snapshot {} reported a commit that is not there",
                        w.id
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn put(&self, s: &mut State, k: Key, val: Val) -> bool {
        if s.store.contains_key(&k) {
            return false;
        }
        s.store.insert(k, Obj { val, mtime: s.now });
        true
    }

    fn pending_att(&self, w: &Writer) -> u8 {
        if self.rules.per_attempt {
            w.att
        } else {
            0
        }
    }

    /// The writer's next step, applied to `s`.
    fn step_writer(&self, s: &mut State, i: usize) {
        let Actor::Writer(mut w) = s.actors[i].clone() else {
            unreachable!()
        };
        let att = self.pending_att(&w);
        let mask = self.chunks_of[w.id as usize];
        let puts = w.puts;
        let next_chunk = |from: u8| (from..8).find(|c| puts & (1 << c) != 0);
        w.pc = match w.pc {
            WPc::ListEpochs => {
                w.e0 = max_epoch(s);
                WPc::ListPrune
            }
            WPc::ListPrune => {
                w.rounds = sweeping(s);
                match w.mode {
                    Mode::Index if w.e0 == 0 && w.rounds.is_empty() => WPc::PutPending,
                    Mode::Index => WPc::ListChunks,
                    Mode::Put => {
                        w.puts = mask;
                        (0..8)
                            .find(|c| mask & (1 << c) != 0)
                            .map_or(WPc::PutPending, WPc::Chunk)
                    }
                    Mode::Copy => {
                        w.puts = mask;
                        WPc::CopyCheck(false)
                    }
                }
            }
            WPc::ListChunks => {
                let listed = s
                    .store
                    .keys()
                    .filter_map(|k| match k {
                        Key::Chunk(c) => Some(1u8 << c),
                        _ => None,
                    })
                    .fold(0, |a, b| a | b);
                w.puts = mask & !listed;
                (0..8)
                    .find(|c| w.puts & (1 << c) != 0)
                    .map_or(WPc::PutPending, WPc::Chunk)
            }
            WPc::CopyCheck(again) => {
                if s.store.contains_key(&Key::Record(w.id)) {
                    WPc::End(Outcome::Skipped)
                } else if again {
                    WPc::PutPending
                } else {
                    next_chunk(0).map_or(WPc::CopyCheck(true), WPc::Chunk)
                }
            }
            WPc::Chunk(c) => {
                self.put(s, Key::Chunk(c), Val::Plain);
                let after = if w.mode == Mode::Copy {
                    WPc::CopyCheck(true)
                } else {
                    WPc::PutPending
                };
                next_chunk(c + 1).map_or(after, WPc::Chunk)
            }
            WPc::PutPending => {
                self.put(s, Key::Pending(w.id, att), Val::Plain);
                WPc::CheckEpochs
            }
            WPc::CheckEpochs => {
                for (&k, o) in s.store.range(Key::Epoch(w.e0 + 1)..=Key::Epoch(u8::MAX)) {
                    if let (Key::Epoch(_), Val::Epoch { round, stamp }) = (k, o.val) {
                        if !w.rounds.contains(&(round, stamp)) {
                            w.rounds.push((round, stamp));
                        }
                    }
                }
                WPc::CheckPrune
            }
            WPc::CheckPrune => {
                let mut refuse = false;
                let mut heads = 0u8;
                for &(r, stamp) in &w.rounds {
                    match s.store.get(&Key::Plan(r)) {
                        Some(Obj {
                            val: Val::Plan { chunks },
                            mtime,
                        }) if *mtime == stamp => {
                            let hit = chunks & mask;
                            if hit != 0 {
                                if round_done(s, r) {
                                    heads |= hit;
                                } else {
                                    refuse = true;
                                }
                            }
                        }
                        _ => refuse = true,
                    }
                }
                w.heads = heads;
                if refuse {
                    WPc::RefuseDelete
                } else {
                    (0..8)
                        .find(|c| heads & (1 << c) != 0)
                        .map_or(WPc::Claim, WPc::Head)
                }
            }
            WPc::Head(c) => {
                if !s.store.contains_key(&Key::Chunk(c)) {
                    WPc::RefuseDelete
                } else {
                    (c + 1..8)
                        .find(|x| w.heads & (1 << x) != 0)
                        .map_or(WPc::Claim, WPc::Head)
                }
            }
            WPc::RefuseDelete => {
                s.store.remove(&Key::Pending(w.id, att));
                WPc::End(Outcome::Refused)
            }
            WPc::Claim => {
                let won = self.put(s, Key::Fate(w.id, att), Val::Commit { valid: true });
                if won {
                    WPc::HeadPending
                } else if !self.rules.per_attempt
                    && matches!(
                        s.store.get(&Key::Fate(w.id, att)).map(|o| o.val),
                        Some(Val::Commit { .. })
                    )
                {
                    // Before #21: "taken by commit: an earlier attempt of
                    // this commit, go on".
                    WPc::HeadPending
                } else {
                    WPc::End(Outcome::Refused)
                }
            }
            WPc::HeadPending => {
                if s.store.contains_key(&Key::Pending(w.id, att)) {
                    WPc::PutSnap
                } else {
                    WPc::GetSnap
                }
            }
            WPc::GetSnap => {
                if s.store.contains_key(&Key::Snap(w.id)) {
                    // A prune completed it.
                    if self.rules.recheck {
                        WPc::Recheck
                    } else {
                        WPc::End(Outcome::Committed)
                    }
                } else {
                    WPc::DelFate
                }
            }
            WPc::DelFate => {
                s.store.remove(&Key::Fate(w.id, att));
                WPc::End(Outcome::Refused)
            }
            WPc::PutSnap => {
                self.put(s, Key::Snap(w.id), Val::Plain);
                if self.rules.recheck {
                    WPc::Recheck
                } else {
                    WPc::TidyPending(Outcome::Committed)
                }
            }
            WPc::Recheck => {
                if s.store.contains_key(&Key::Record(w.id)) {
                    WPc::DelSnap
                } else {
                    WPc::TidyPending(Outcome::Committed)
                }
            }
            WPc::DelSnap => {
                s.store.remove(&Key::Snap(w.id));
                WPc::TidyPending(Outcome::Forgotten)
            }
            WPc::TidyPending(o) => {
                s.store.remove(&Key::Pending(w.id, att));
                WPc::TidyFate(o)
            }
            WPc::TidyFate(o) => {
                s.store.remove(&Key::Fate(w.id, att));
                WPc::End(o)
            }
            WPc::End(o) => WPc::End(o),
        };
        s.actors[i] = Actor::Writer(w);
    }

    fn step_forget(&self, s: &mut State, i: usize) {
        let Actor::Forget(mut f) = s.actors[i].clone() else {
            unreachable!()
        };
        f.pc = match f.pc {
            FPc::Look => {
                if self.live(s, f.id) {
                    FPc::PutRecord
                } else {
                    FPc::End
                }
            }
            FPc::PutRecord => {
                self.put(s, Key::Record(f.id), Val::Plain);
                FPc::DelSnap
            }
            FPc::DelSnap => {
                s.store.remove(&Key::Snap(f.id));
                FPc::End
            }
            FPc::End => FPc::End,
        };
        s.actors[i] = Actor::Forget(f);
    }

    fn step_prune(&self, s: &mut State, i: usize) {
        let Actor::Prune(mut p) = s.actors[i].clone() else {
            unreachable!()
        };
        p.pc = match p.pc {
            PPc::Now => {
                p.now = s.now;
                PPc::ListPrune
            }
            PPc::ListPrune => {
                p.rounds = list_rounds(s);
                p.claimable = p
                    .rounds
                    .iter()
                    .filter_map(|r| {
                        let (_, stamp) = r.plan?;
                        if r.done || stamp + GRACE > p.now {
                            return None;
                        }
                        if r.last_sweep.is_some_and(|m| m + LEASE > p.now) {
                            return None;
                        }
                        Some((r.round, r.attempt + 1, stamp))
                    })
                    .collect();
                p.claims.clear();
                if p.claimable.is_empty() {
                    PPc::ListPending
                } else {
                    PPc::ClaimPut(0)
                }
            }
            PPc::ClaimPut(k) => {
                let (r, n, _) = p.claimable[k as usize];
                if self.put(s, Key::Sweep(r, n), Val::Plain) {
                    p.bump_tries = 0;
                    PPc::Bump(k)
                } else {
                    self.next_claim(&p, k)
                }
            }
            PPc::Bump(k) => {
                let (r, n, stamp) = p.claimable[k as usize];
                let e = max_epoch(s) + 1;
                if self.put(s, Key::Epoch(e), Val::Epoch { round: r, stamp }) {
                    let chunks = match s.store.get(&Key::Plan(r)) {
                        Some(Obj {
                            val: Val::Plan { chunks },
                            ..
                        }) => *chunks,
                        _ => 0,
                    };
                    let at = s.store.get(&Key::Sweep(r, n)).map_or(0, |o| o.mtime);
                    p.claims.push((r, n, at, chunks));
                    self.next_claim(&p, k)
                } else {
                    PPc::Bump(k)
                }
            }
            PPc::ListPending => {
                let mut att: BTreeMap<(u8, u8), (bool, bool)> = BTreeMap::new();
                p.roots = 0;
                for k in s.store.keys() {
                    match *k {
                        Key::Pending(id, a) => att.entry((id, a)).or_default().0 = true,
                        Key::Fate(id, a) => att.entry((id, a)).or_default().1 = true,
                        _ => {}
                    }
                }
                p.attempts = att
                    .into_iter()
                    .map(|((i, a), (pe, f))| (i, a, pe, f))
                    .collect();
                self.next_attempt(&p, 0)
            }
            PPc::GetFate(k) => {
                let (id, a, _, fate_listed) = p.attempts[k as usize];
                p.fate = if fate_listed {
                    s.store.get(&Key::Fate(id, a)).map(|o| o.val)
                } else {
                    None
                };
                PPc::GetPending(k)
            }
            PPc::GetPending(k) => {
                let (id, a, pending_listed, _) = p.attempts[k as usize];
                let pending = if pending_listed {
                    s.store.get(&Key::Pending(id, a)).copied()
                } else {
                    None
                };
                match (pending_listed, pending) {
                    // A fate left behind: deleted.
                    (false, _) => PPc::Act(k, Act::DelFate),
                    // Gone since the listing.
                    (true, None) => self.next_attempt(&p, k + 1),
                    (true, Some(obj)) => {
                        let claim = match p.fate {
                            Some(Val::Commit { valid }) => valid || !self.rules.secret,
                            _ => false,
                        };
                        match p.fate {
                            Some(Val::Commit { .. }) if claim => {
                                if self.rules.tombstones {
                                    p.roots |= self.chunks_of[id as usize];
                                    PPc::Act(k, Act::PutSnap)
                                } else {
                                    PPc::Act(k, Act::HeadRecord)
                                }
                            }
                            Some(_) => PPc::Act(k, Act::DelPending),
                            None if obj.mtime + EXPIRY <= p.now => PPc::Act(k, Act::PutExpire),
                            None => {
                                p.roots |= self.chunks_of[id as usize];
                                self.next_attempt(&p, k + 1)
                            }
                        }
                    }
                }
            }
            PPc::Act(k, act) => {
                let (id, a, _, _) = p.attempts[k as usize];
                match act {
                    Act::HeadRecord => {
                        if s.store.contains_key(&Key::Record(id)) {
                            PPc::Act(k, Act::DelPending)
                        } else {
                            p.roots |= self.chunks_of[id as usize];
                            PPc::Act(k, Act::PutSnap)
                        }
                    }
                    Act::PutSnap => {
                        self.put(s, Key::Snap(id), Val::Plain);
                        if self.rules.tombstones {
                            PPc::Act(k, Act::DelPending)
                        } else {
                            PPc::Act(k, Act::CheckRecord)
                        }
                    }
                    Act::CheckRecord => {
                        if s.store.contains_key(&Key::Record(id)) {
                            PPc::Act(k, Act::DelSnap)
                        } else {
                            PPc::Act(k, Act::DelPending)
                        }
                    }
                    Act::DelSnap => {
                        s.store.remove(&Key::Snap(id));
                        PPc::Act(k, Act::DelPending)
                    }
                    Act::PutExpire => {
                        if self.put(s, Key::Fate(id, a), Val::Expire) {
                            PPc::Act(k, Act::DelPending)
                        } else {
                            // The writer claimed it first: a root.
                            p.roots |= self.chunks_of[id as usize];
                            self.next_attempt(&p, k + 1)
                        }
                    }
                    Act::DelPending => {
                        s.store.remove(&Key::Pending(id, a));
                        PPc::Act(k, Act::DelFate)
                    }
                    Act::DelFate => {
                        s.store.remove(&Key::Fate(id, a));
                        self.next_attempt(&p, k + 1)
                    }
                }
            }
            PPc::ListSnaps => {
                for (id, mask) in self.chunks_of.iter().enumerate() {
                    if s.store.contains_key(&Key::Snap(id as u8)) {
                        p.roots |= mask;
                    }
                }
                PPc::ListChunks
            }
            PPc::ListChunks => {
                p.listed = 0;
                p.old_chunks = 0;
                p.deleted = 0;
                for (k, o) in &s.store {
                    if let Key::Chunk(c) = k {
                        p.listed |= 1 << c;
                        if o.mtime + GRACE <= p.now {
                            p.old_chunks |= 1 << c;
                        }
                    }
                }
                self.next_sweep(&p, 0, 0)
            }
            PPc::SweepCheck(ci, c) => {
                let (r, n, at, _) = p.claims[ci as usize];
                if s.now < at + HOLD && latest_attempt(s, r) == n && !round_done(s, r) {
                    PPc::SweepDelete(ci, c)
                } else {
                    // The lease is over or another attempt took over: stop
                    // this round (the run's remaining rounds go on).
                    self.next_sweep(&p, ci + 1, 0)
                }
            }
            PPc::SweepDelete(ci, c) => {
                s.store.remove(&Key::Chunk(c));
                p.deleted |= 1 << c;
                self.next_sweep(&p, ci, c + 1)
            }
            PPc::FinalCheck(ci) => {
                let (r, n, at, _) = p.claims[ci as usize];
                if s.now < at + HOLD && latest_attempt(s, r) == n && !round_done(s, r) {
                    PPc::PutDone(ci)
                } else {
                    self.next_sweep(&p, ci + 1, 0)
                }
            }
            PPc::PutDone(ci) => {
                let (r, n, _, _) = p.claims[ci as usize];
                self.put(s, Key::Done(r, n), Val::Plain);
                self.next_sweep(&p, ci + 1, 0)
            }
            PPc::Condemn => {
                // Chunks no root needs, old enough, not deleted now, and in
                // no plan still waiting for its sweep.
                let claimed: Vec<u8> = p.claims.iter().map(|c| c.0).collect();
                let awaiting = p
                    .rounds
                    .iter()
                    .filter(|r| !r.done && !claimed.contains(&r.round))
                    .filter_map(|r| r.plan.map(|(c, _)| c))
                    .fold(0, |a, c| a | c);
                let condemned = p.listed & p.old_chunks & !p.roots & !p.deleted & !awaiting;
                if condemned == 0 {
                    self.next_run(&mut p)
                } else {
                    let r = p.rounds.iter().map(|r| r.round).max().unwrap_or(0) + 1;
                    PPc::PutPlan(r)
                }
            }
            PPc::PutPlan(r) => {
                let claimed: Vec<u8> = p.claims.iter().map(|c| c.0).collect();
                let awaiting = p
                    .rounds
                    .iter()
                    .filter(|r| !r.done && !claimed.contains(&r.round))
                    .filter_map(|r| r.plan.map(|(c, _)| c))
                    .fold(0, |a, c| a | c);
                let condemned = p.listed & p.old_chunks & !p.roots & !p.deleted & !awaiting;
                if self.put(s, Key::Plan(r), Val::Plan { chunks: condemned }) {
                    self.next_run(&mut p)
                } else {
                    PPc::PutPlan(r + 1)
                }
            }
            PPc::End => PPc::End,
        };
        s.actors[i] = Actor::Prune(p);
    }

    fn next_claim(&self, p: &Prune, k: u8) -> PPc {
        if (k as usize) + 1 < p.claimable.len() {
            PPc::ClaimPut(k + 1)
        } else {
            PPc::ListPending
        }
    }

    fn next_attempt(&self, p: &Prune, k: u8) -> PPc {
        if (k as usize) < p.attempts.len() {
            PPc::GetFate(k)
        } else {
            PPc::ListSnaps
        }
    }

    /// The next chunk claim `ci` deletes from chunk `from` on, or the next
    /// claim's, or the condemn step.
    fn next_sweep(&self, p: &Prune, ci: u8, from: u8) -> PPc {
        let Some(claim) = p.claims.get(ci as usize) else {
            return PPc::Condemn;
        };
        let todo = claim.3 & p.listed & !p.roots;
        match (from..8).find(|c| todo & (1 << c) != 0) {
            Some(c) => PPc::SweepCheck(ci, c),
            None => PPc::FinalCheck(ci),
        }
    }

    fn next_run(&self, p: &mut Prune) -> PPc {
        p.runs_left -= 1;
        if p.runs_left == 0 {
            PPc::End
        } else {
            PPc::Now
        }
    }
}

fn max_epoch(s: &State) -> u8 {
    s.store
        .keys()
        .filter_map(|k| match k {
            Key::Epoch(e) => Some(*e),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn latest_attempt(s: &State, r: u8) -> u8 {
    s.store
        .keys()
        .filter_map(|k| match k {
            Key::Sweep(x, n) | Key::Done(x, n) if *x == r => Some(*n),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn round_done(s: &State, r: u8) -> bool {
    let a = latest_attempt(s, r);
    a > 0 && s.store.contains_key(&Key::Done(r, a))
}

fn list_rounds(s: &State) -> Vec<RoundView> {
    let mut rounds: BTreeMap<u8, RoundView> = BTreeMap::new();
    for (k, o) in &s.store {
        let r = match k {
            Key::Plan(r) | Key::Sweep(r, _) | Key::Done(r, _) => *r,
            _ => continue,
        };
        let v = rounds.entry(r).or_insert(RoundView {
            round: r,
            plan: None,
            attempt: 0,
            done: false,
            last_sweep: None,
        });
        match (k, o.val) {
            (Key::Plan(_), Val::Plan { chunks }) => v.plan = Some((chunks, o.mtime)),
            (Key::Sweep(_, n), _) => {
                v.attempt = v.attempt.max(*n);
                v.last_sweep = Some(v.last_sweep.map_or(o.mtime, |m| m.max(o.mtime)));
            }
            (Key::Done(_, n), _) => v.attempt = v.attempt.max(*n),
            _ => {}
        }
    }
    let mut out: Vec<RoundView> = rounds.into_values().collect();
    for v in &mut out {
        v.done = round_done(s, v.round);
    }
    out
}

/// Rounds being swept (latest attempt not done), with their plans' stamps.
fn sweeping(s: &State) -> Vec<(u8, u8)> {
    list_rounds(s)
        .into_iter()
        .filter(|r| r.attempt > 0 && !r.done)
        .map(|r| (r.round, r.plan.map_or(0, |p| p.1)))
        .collect()
}

/// What the explorer found.
#[derive(Debug, Default)]
pub struct Explored {
    pub states: u64,
    pub transitions: u64,
    pub max_depth: usize,
    /// The first violation, with the steps that lead to it.
    pub violation: Option<(String, Vec<String>)>,
    /// States where a forgotten snapshot's manifest is listed (allowed once
    /// records forget: not live).
    pub forgotten_listed: u64,
    /// Whether the bound on states stopped the search.
    pub truncated: bool,
}

impl World {
    /// Every transition enabled in `s`, with a name for traces.
    fn successors(&self, s: &State, out: &mut Vec<(String, State)>) {
        out.clear();
        for i in 0..s.actors.len() {
            let (busy, name) = match &s.actors[i] {
                Actor::Writer(w) => (
                    !matches!(w.pc, WPc::End(_)),
                    format!("W{}a{}:{:?}", w.id, w.att, w.pc),
                ),
                Actor::Prune(p) => (p.pc != PPc::End, format!("P{i}:{:?}", p.pc)),
                Actor::Forget(f) => (f.pc != FPc::End, format!("F{}:{:?}", f.id, f.pc)),
                Actor::Crashed => (false, String::new()),
            };
            if !busy {
                continue;
            }
            let mut t = s.clone();
            match &s.actors[i] {
                Actor::Writer(_) => self.step_writer(&mut t, i),
                Actor::Prune(_) => self.step_prune(&mut t, i),
                Actor::Forget(_) => self.step_forget(&mut t, i),
                Actor::Crashed => unreachable!(),
            }
            out.push((name.clone(), t));
            if s.crashes_left > 0 {
                let mut t = s.clone();
                t.actors[i] = Actor::Crashed;
                t.crashes_left -= 1;
                out.push((format!("crash {name}"), t));
            }
        }
        // Time passes, unless a sweep holds a delete whose lease would run
        // out (FORMAT.md's one assumption).
        let holding = s.actors.iter().any(|a| match a {
            Actor::Prune(p) => match p.pc {
                PPc::SweepDelete(ci, _) | PPc::PutDone(ci) => {
                    s.now + 1 >= p.claims[ci as usize].2 + LEASE
                }
                _ => false,
            },
            _ => false,
        });
        if s.ticks_left > 0 && !holding {
            let mut t = s.clone();
            t.now += 1;
            t.ticks_left -= 1;
            out.push(("tick".into(), t));
        }
        // A party that can only add objects plants a claim for an attempt
        // it sees pending, before its writer claims it.
        if s.plants_left > 0 {
            for k in s.store.keys() {
                if let Key::Pending(id, a) = *k {
                    if !s.store.contains_key(&Key::Fate(id, a)) {
                        let mut t = s.clone();
                        t.plants_left -= 1;
                        self.put(&mut t, Key::Fate(id, a), Val::Commit { valid: false });
                        out.push((format!("plant commit fate {id}-{a}"), t));
                    }
                }
            }
        }
    }

    /// Depth-first search of every state reachable from `start`, up to
    /// `max_states` distinct states.
    pub fn explore(&self, start: State, max_states: u64) -> Explored {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut report = Explored::default();
        // Each state's step from its parent, for the trace of a violation.
        let mut arena: Vec<(u32, u32)> = vec![(u32::MAX, u32::MAX)];
        let mut stack: Vec<(State, u32, u32)> = vec![(start.clone(), 0, 0)];
        let mut names: Vec<String> = Vec::new();
        let mut name_ix: std::collections::HashMap<String, u32> = Default::default();
        seen.insert(fingerprint(&start));
        let mut succ = Vec::new();
        while let Some((s, node, depth)) = stack.pop() {
            report.states += 1;
            report.max_depth = report.max_depth.max(depth as usize);
            if let Err(e) = self.check(&s) {
                let mut steps = Vec::new();
                let mut at = node;
                while at != 0 {
                    let (parent, name) = arena[at as usize];
                    steps.push(names[name as usize].clone());
                    at = parent;
                }
                steps.reverse();
                report.violation = Some((e, steps));
                return report;
            }
            if (0..self.chunks_of.len() as u8).any(|id| {
                s.store.contains_key(&Key::Snap(id)) && s.store.contains_key(&Key::Record(id))
            }) {
                report.forgotten_listed += 1;
            }
            if report.states >= max_states {
                report.truncated = true;
                return report;
            }
            self.successors(&s, &mut succ);
            for (name, t) in succ.drain(..) {
                report.transitions += 1;
                if seen.insert(fingerprint(&t)) {
                    let ix = match name_ix.get(&name) {
                        Some(&i) => i,
                        None => {
                            names.push(name.clone());
                            name_ix.insert(name, (names.len() - 1) as u32);
                            (names.len() - 1) as u32
                        }
                    };
                    arena.push((node, ix));
                    stack.push((t, (arena.len() - 1) as u32, depth + 1));
                }
            }
        }
        report
    }
}

fn fingerprint(s: &State) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// A store with chunks `chunks` (bit mask), all old, and snapshot `id`
/// forgotten long ago (its record, no manifest): its chunks are
/// unreferenced, waiting to be condemned.
pub fn store_with(chunks: u8, forgotten: &[u8], live: &[u8]) -> BTreeMap<Key, Obj> {
    let mut store = BTreeMap::new();
    for c in 0..8 {
        if chunks & (1 << c) != 0 {
            store.insert(
                Key::Chunk(c),
                Obj {
                    val: Val::Plain,
                    mtime: 0,
                },
            );
        }
    }
    for &id in forgotten {
        store.insert(
            Key::Record(id),
            Obj {
                val: Val::Plain,
                mtime: 0,
            },
        );
    }
    for &id in live {
        store.insert(
            Key::Snap(id),
            Obj {
                val: Val::Plain,
                mtime: 0,
            },
        );
    }
    store
}
