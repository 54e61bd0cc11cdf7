//! Ingest: events → consolidated, capped, sharded interactions in CSR form on both sides.
//!
//! Supersteps ([`steps`], each through ingest's own channel, so they work across processes):
//! 1. every worker parses its byte range of the plain input files and its share of the whole
//!    compressed ones, and routes events to the user's owner (`read_and_route`);
//! 2. user owners sum duplicate (user, item) events; on a warm start they merge the sums with
//!    the previous version's snapshot of their virtual shards ([`consolidate`]: removals are
//!    retractions) and drop pairs whose sum is ≤ 0 (`consolidate`), then apply the per-user
//!    cap (`cap_users`);
//! 3. they split off the holdout and route pairs to the item's owner (`route_to_items`);
//! 4. item owners apply the per-item cap, number their items (per virtual shard, by raw id)
//!    and send item keys back (`number_items`);
//! 5. user owners number their users, build the user-side CSR and send (item, user, weight)
//!    edges so the item owners build theirs (`build_user_csr`, `build_item_csr`);
//! 6. every shard's cost is counted and shards move to the owners their cost gives them
//!    ([`balance`]: until then they live at `v mod W`);
//! 7. each side asks the owners of the other side for exactly the vectors it will need every
//!    half-step: the routing tables (`route_vectors`).

pub mod balance;
pub mod compress;
pub mod consolidate;
pub mod msg;
pub mod parquet;
mod parquet_columns;
pub mod parse;
pub mod read;
pub mod routing;
pub mod rows;
mod steps;
pub mod weight;

use crate::cluster::{owner, Comm};
use crate::comm::CommError;
use crate::generate::{Generator, Spec};
use crate::ids::{mix64, RawId, SplitMix};
use crate::job::Job;
use crate::side::{Assignment, Side};
use parse::Event;
use read::ReadStats;
use std::collections::BTreeMap;
use std::path::PathBuf;
use timely::worker::Worker;

/// Whole-job ingest counters (complete on worker 0 only).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IngestStats {
    /// What the readers saw.
    pub read: ReadStats,
    /// Distinct (user, item) training pairs.
    pub pairs: u64,
    /// Users with at least one training pair.
    pub users: u64,
    /// Items with at least one training pair.
    pub items: u64,
    /// Pairs whose summed weight was ≤ 0 (removed).
    pub nonpositive_pairs: u64,
    /// Pairs dropped by `max_per_user`.
    pub dropped_user_cap: u64,
    /// Pairs dropped by `max_per_item`.
    pub dropped_item_cap: u64,
    /// Held-out pairs (for evaluation).
    pub test_pairs: u64,
    /// Held-out pairs whose item has no training data.
    pub test_unknown_item: u64,
    /// Pairs read from the parent version's interaction snapshot (warm start).
    pub snapshot_pairs: u64,
}

/// What ingest leaves on one worker.
pub struct Ingested {
    /// Users owned by this worker.
    pub users: Side,
    /// Items owned by this worker.
    pub items: Side,
    /// The confidence rule applied to the weights (set by [`crate::confidence::apply`]: until
    /// then the sides' `conf` arrays hold summed weights).
    pub confidence: crate::confidence::Resolved,
    /// Held-out pairs of this worker's users: (user id, item key or `u64::MAX`).
    pub test: Vec<(RawId, u64)>,
    /// Held-out pairs of `eval.valid`, the same way.
    pub valid: Vec<(RawId, u64)>,
    /// Counters (complete on worker 0).
    pub stats: IngestStats,
    /// The next interaction snapshot of this worker's user shards, already written (and
    /// synced) under `<store>/.pending-*`: (file, its record as `snapshot/vs-NNNNN.bin`).
    pub snapshot: Vec<(PathBuf, crate::store::FileRecord)>,
}

/// One worker's share of the counters, summed on worker 0 into [`IngestStats`].
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pairs: u64,
    users: u64,
    items: u64,
    nonpositive: u64,
    user_cap: u64,
    item_cap: u64,
    test: u64,
    test_unknown: u64,
    snapshot: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.pairs += o.pairs;
        self.users += o.users;
        self.items += o.items;
        self.nonpositive += o.nonpositive;
        self.user_cap += o.user_cap;
        self.item_cap += o.item_cap;
        self.test += o.test;
        self.test_unknown += o.test_unknown;
        self.snapshot += o.snapshot;
    }
}

impl IngestStats {
    fn set_counts(&mut self, c: Counts) {
        self.pairs = c.pairs;
        self.users = c.users;
        self.items = c.items;
        self.nonpositive_pairs = c.nonpositive;
        self.dropped_user_cap = c.user_cap;
        self.dropped_item_cap = c.item_cap;
        self.test_pairs = c.test;
        self.test_unknown_item = c.test_unknown;
        self.snapshot_pairs = c.snapshot;
    }
}

/// Runs ingest on this worker. `files` empty means the built-in demo data; `snapshot` lists
/// the parent version's snapshot files (warm start) as (version directory, manifest record):
/// each worker reads those of its shards, checked against the record.
pub fn ingest(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    files: &[PathBuf],
    snapshot: &[(PathBuf, crate::store::FileRecord)],
) -> Result<Ingested, CommError> {
    // Ingest's own typed channel (its supersteps carry only `IngestMsg`).
    let comm = &mut steps::Ch::new(worker, comm.deadline);
    let mut counts = Counts::default();
    let read = steps::read_and_route(worker, comm, job, files, snapshot)?;
    let mut stats = read.stats;
    let (pairs, snapshot) =
        steps::consolidate(worker, comm, job, (read.events, read.previous), &mut counts)?;
    let pairs = steps::cap_users(pairs, job.confidence.max_per_user as usize, &mut counts);
    let at_items = steps::route_to_items(worker, comm, job, pairs, read.held)?;
    let (mut items, keyed) = steps::number_items(worker, comm, job, at_items, &mut counts)?;
    let (users, other, iedges) = steps::build_user_csr(worker, comm, job, keyed.pairs)?;
    let iother = steps::build_item_csr(&mut items, iedges);

    // 6. Shards to their owners by cost.
    (counts.pairs, counts.users, counts.items) =
        (other.len() as u64, users.rows() as u64, items.rows() as u64);
    let unrouted = [
        balance::Unrouted {
            side: users,
            keys: other,
        },
        balance::Unrouted {
            side: items,
            keys: iother,
        },
    ];
    let v = job.shards.virtual_shards;
    let held = [keyed.test, keyed.valid];
    let ([u, i], [test, valid]) = balance::rebalance(worker, comm, &job.als, v, unrouted, held)?;
    let (mut users, mut items) = (u.side, i.side);

    let total = steps::route_vectors(
        worker,
        comm,
        (&mut users, u.keys),
        (&mut items, i.keys),
        counts,
    )?;
    stats.set_counts(total);
    init_factors(&mut users, &job.als, 0);
    init_factors(&mut items, &job.als, 1);
    Ok(Ingested {
        users,
        items,
        test,
        valid,
        stats,
        snapshot,
        confidence: Default::default(),
    })
}

/// Where worker `me` keeps its snapshot files until the version is published.
fn pending_dir(job: &Job, me: usize) -> PathBuf {
    crate::store::pending_dir(std::path::Path::new(&job.output.store), me)
}

/// Writes this worker's consolidated pairs (sorted by user, item) as one synced snapshot pack
/// (compact sections per virtual shard: a few bytes a pair, so it is built in memory).
fn write_snapshot(
    pairs: &[consolidate::Pair],
    v: u32,
    dir: &std::path::Path,
) -> Result<Vec<(PathBuf, crate::store::FileRecord)>, String> {
    let mut by_vshard: BTreeMap<u32, Vec<&consolidate::Pair>> = BTreeMap::new();
    for p in pairs {
        by_vshard.entry(p.0.vshard(v)).or_default().push(p);
    }
    crate::cleanup::create_dir_all(dir)?;
    // One pack per worker, its record's path as in the version (`snapshot/pack-NNNNN.bin`).
    let sections = by_vshard
        .into_iter()
        .map(|(vs, p)| (vs, crate::store::snapshot::encode(vs, &p), p.len() as u64))
        .collect();
    let mut w = crate::store::VersionWriter::new(dir);
    w.pack(crate::store::pack::Kind::Snapshot, "snapshot", sections)?;
    Ok(w.into_records()
        .into_iter()
        .map(|rec| (dir.join(&rec.path), rec))
        .collect())
}

/// Newest first; ties (and inputs without timestamps) broken by the id's stable hash.
fn recency(ta: i64, a: &RawId, tb: i64, b: &RawId) -> std::cmp::Ordering {
    tb.cmp(&ta)
        .then_with(|| a.stable_hash().cmp(&b.stable_hash()))
        .then_with(|| a.cmp(b))
}

/// Held-out file pairs of one set: summed like training events, kept when the sum is positive,
/// routed to the item's owner.
fn held_out_pairs(mut evs: Vec<Event>, out: &mut [Vec<(RawId, RawId)>], v: u32, peers: usize) {
    evs.sort_unstable_by(|a, b| (&a.user, &a.item).cmp(&(&b.user, &b.item)));
    let mut j = 0;
    while j < evs.len() {
        let mut k = j;
        let mut w = 0.0f64;
        while k < evs.len() && evs[k].user == evs[j].user && evs[k].item == evs[j].item {
            w += evs[k].weight as f64;
            k += 1;
        }
        if w > 0.0 {
            let e = &evs[j];
            out[owner(e.item.vshard(v), peers)].push((e.user.clone(), e.item.clone()));
        }
        j = k;
    }
}

/// A uniform number in [0, 1) fixed by (seed, user, item).
fn unit(seed: u64, u: &RawId, i: &RawId) -> f64 {
    let h = mix64(seed ^ mix64(u.stable_hash() ^ mix64(i.stable_hash())));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn empty_side(me: usize, peers: usize, v: u32, dim: usize) -> Side {
    let vshards: Vec<u32> = (me as u32..v).step_by(peers).collect();
    Side {
        starts: vec![0; vshards.len() + 1],
        vshards,
        owners: Assignment::round_robin(v, peers),
        dim,
        ..Side::default()
    }
}

/// Initial vectors seeded by (seed, side, raw id), so any worker layout starts alike: uniform
/// in [0, 0.01) as in `implicit` (`init_std = 0`), else normal with std `init_std / √d`.
pub fn init_factors(side: &mut Side, als: &crate::job::Als, tag: u64) {
    let d = side.dim;
    side.factors = vec![0.0; side.rows() * d];
    let std = als.init_std / (d.max(1) as f64).sqrt();
    for (r, id) in side.ids.iter().enumerate() {
        let mut rng = SplitMix::new(mix64(als.seed ^ mix64(tag ^ mix64(id.stable_hash()))));
        for x in &mut side.factors[r * d..(r + 1) * d] {
            *x = if als.init_std > 0.0 {
                (rng.next_normal() * std) as f32
            } else {
                rng.next_f64() as f32 * 0.01
            };
        }
    }
}

/// This worker's share of the built-in demo data (chunks `me, me+W, …`).
fn read_demo(job: &Job, me: usize, peers: usize, mut sink: impl FnMut(Event)) -> ReadStats {
    let d = &job.input.demo;
    let g = Generator::new(Spec {
        users: d.users,
        items: d.items,
        nnz: d.nnz,
        rank: d.rank,
        seed: d.seed,
    });
    let mut st = ReadStats {
        weights: vec!["the built-in demo data's counts".into()],
        ..ReadStats::default()
    };
    let mut c = me as u64;
    while c < g.chunks() {
        g.chunk(c, |u, i, n| {
            st.lines += 1;
            if job.input.min_weight.is_some_and(|m| (n as f64) < m) {
                st.below_min_weight += 1;
                return;
            }
            st.events += 1;
            sink(Event {
                user: RawId::Num(u),
                item: RawId::Num(i),
                weight: n as f32,
                ts: i64::MIN,
            })
        });
        c += peers as u64;
    }
    st
}
