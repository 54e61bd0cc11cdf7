//! Ingest: events → consolidated, capped, sharded interactions in CSR form on both sides.
//!
//! Supersteps (all through [`Comm`], so they work across processes):
//! 1. every worker parses its byte range of the plain input files and its share of the whole
//!    compressed ones, and routes events to the user's owner;
//! 2. user owners sum duplicate (user, item) events; on a warm start they merge the sums with
//!    the previous version's snapshot of their virtual shards ([`consolidate`]: removals are
//!    retractions); they drop pairs whose sum is ≤ 0, apply the
//!    per-user cap and the holdout split, and route pairs to the item's owner;
//! 3. item owners apply the per-item cap, number their items (per virtual shard, by raw id)
//!    and send item keys back;
//! 4. user owners number their users, build the user-side CSR and send (item, user, c) edges
//!    so the item owners build theirs;
//! 5. every shard's cost is counted and shards move to the owners their cost gives them
//!    ([`balance`]: until then they live at `v mod W`);
//! 6. each side asks the owners of the other side for exactly the vectors it will need every
//!    half-step: the routing tables.

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
pub mod weight;

use crate::cluster::{owner, Comm};
use crate::comm::{Channel, CommError};
use crate::generate::{Generator, Spec};
use crate::ids::{mix64, RawId, SplitMix};
use crate::job::Job;
use crate::side::{key, unkey, Assignment, Outgoing, Side};
use msg::IngestMsg;
use parse::Event;
use read::ReadStats;
use routing::request;
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
    let comm = &mut Channel::<IngestMsg>::new(worker, comm.deadline);
    let peers = comm.peers;
    let v = job.shards.virtual_shards;
    let me = comm.index;

    // 1. Read and route events to user owners; owners read their shards' snapshot files.
    let mut out: Vec<Vec<Event>> = vec![Vec::new(); peers];
    let read = if files.is_empty() {
        Ok(read_demo(job, me, peers, |e| {
            out[owner(e.user.vshard(v), peers)].push(e)
        }))
    } else {
        read::read_part(files, &job.input, me, peers, |e| {
            out[owner(e.user.vshard(v), peers)].push(e)
        })
    };
    let mut previous: Vec<consolidate::Pair> = Vec::new();
    let read = read.and_then(|st| {
        // Only the owner of a shard reads its section (packed or, in older versions, a file).
        let mine = |vs: u32| owner(vs, peers) == me;
        for (dir, rec) in snapshot {
            let recs = std::slice::from_ref(rec);
            previous.extend(crate::store::sections::snapshot_pairs(dir, recs, &mine)?);
        }
        Ok(st)
    });
    // Separate held-out files (`eval.test`, `eval.valid`) are read the same way, split by byte
    // range; a set not configured is never opened.
    let mut test_ev: [Vec<Vec<Event>>; 2] = [vec![Vec::new(); peers], vec![Vec::new(); peers]];
    let read = read.and_then(|st| {
        for (set, (name, path)) in [
            ("eval.test", &job.eval.test),
            ("eval.valid", &job.eval.valid),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(t) = path else { continue };
            let files =
                read::list_files(std::slice::from_ref(t)).map_err(|e| format!("{name}: {e}"))?;
            let dest = &mut test_ev[set];
            read::read_part(&files, &job.input, me, peers, |e| {
                dest[owner(e.user.vshard(v), peers)].push(e)
            })?;
        }
        Ok(st)
    });
    match read {
        Ok(st) => {
            comm.send(0, IngestMsg::Read(st));
            let [t0, t1] = test_ev;
            for (w, ((evs, a), b)) in out.into_iter().zip(t0).zip(t1).enumerate() {
                comm.send(w, IngestMsg::Events(evs));
                comm.send(w, IngestMsg::TestEvents(0, a));
                comm.send(w, IngestMsg::TestEvents(1, b));
            }
        }
        Err(e) => comm.abort(&e),
    }
    let mut events = Vec::new();
    let mut test_events: [Vec<Event>; 2] = [Vec::new(), Vec::new()];
    let mut stats = IngestStats::default();
    for (_, b) in comm.exchange(worker, "ingest: read")? {
        match b {
            IngestMsg::Events(mut e) => events.append(&mut e),
            IngestMsg::TestEvents(set, mut e) => test_events[set as usize].append(&mut e),
            IngestMsg::Read(st) => stats.read.merge(&st),
            _ => unreachable!(),
        }
    }

    // 2. Consolidate per (user, item), cap per user, split off the holdout.
    // counts: pairs, users, items, nonpositive, ucap, icap, test, test_unknown, snapshot
    let mut counts = [0u64; 9];
    let delta = consolidate::sum_events(events);
    counts[8] = previous.len() as u64;
    previous.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let merged = consolidate::merge(delta, previous);
    counts[3] = merged.nonpositive;
    let mut pairs = merged.positive;
    let written = write_snapshot(&pairs, v, &pending_dir(job, me));
    let snapshot = comm.agree(worker, "ingest: write snapshot", written)?;
    // The per-user cap: newest first. Capped pairs are marked by a zero weight, then dropped.
    let cap = job.confidence.max_per_user as usize;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        if cap > 0 && j - i > cap {
            let group = &mut pairs[i..j];
            group.sort_by(|a, b| recency(a.3, &a.1, b.3, &b.1));
            counts[4] += (group.len() - cap) as u64;
            group[cap..].iter_mut().for_each(|p| p.2 = 0);
        }
        i = j;
    }
    let kept = pairs.into_iter().filter(|p| p.2 > 0);
    let mut test_out: [Vec<Vec<(RawId, RawId)>>; 2] =
        [vec![Vec::new(); peers], vec![Vec::new(); peers]];
    let mut train_out: Vec<Vec<(RawId, RawId, f32, i64)>> = vec![Vec::new(); peers];
    let holdout = job.eval.holdout;
    for (u, it, w, ts) in kept {
        let dest = owner(it.vshard(v), peers);
        if holdout > 0.0 && unit(job.eval.seed, &u, &it) < holdout {
            test_out[0][dest].push((u, it));
        } else {
            train_out[dest].push((u, it, consolidate::from_fixed(w) as f32, ts));
        }
    }
    for (set, evs) in test_events.into_iter().enumerate() {
        held_out_pairs(evs, &mut test_out[set], v, peers);
    }
    let [t0, t1] = test_out;
    for (w, ((tr, a), b)) in train_out.into_iter().zip(t0).zip(t1).enumerate() {
        comm.send(w, IngestMsg::Pairs(tr));
        comm.send(w, IngestMsg::TestPairs(0, a));
        comm.send(w, IngestMsg::TestPairs(1, b));
    }
    let mut pairs = Vec::new();
    let mut tests: [Vec<(RawId, RawId)>; 2] = [Vec::new(), Vec::new()];
    for (_, b) in comm.exchange(worker, "ingest: consolidate")? {
        match b {
            IngestMsg::Pairs(mut p) => pairs.append(&mut p),
            IngestMsg::TestPairs(set, mut p) => tests[set as usize].append(&mut p),
            _ => unreachable!(),
        }
    }

    // 3. Cap per item, number items, send keys back. Items are numbered per virtual shard in raw
    //    id order; the pairs are sorted by item, so an item's number is its rank among the
    //    distinct items of its shard seen so far. The recency order inside an item only matters
    //    for the cap.
    let icap = job.confidence.max_per_item as usize;
    if icap > 0 {
        pairs.sort_unstable_by(|a, b| a.1.cmp(&b.1).then_with(|| recency(a.3, &a.0, b.3, &b.0)));
    } else {
        pairs.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    }
    let mut items = empty_side(me, peers, v, job.factors().0);
    let mut by_vshard: Vec<Vec<RawId>> = vec![Vec::new(); items.vshards.len()];
    let mut back: Vec<Vec<(RawId, u64, f32)>> = vec![Vec::new(); peers];
    let mut pairs = pairs.into_iter().peekable();
    while let Some((u, it, w, _)) = pairs.next() {
        let vs = it.vshard(v);
        let shard = &mut by_vshard[vs as usize / peers];
        let k = key(vs, shard.len() as u32);
        let mut n = 0;
        let mut add = |u: RawId, w: f32| {
            n += 1;
            if icap == 0 || n <= icap {
                back[owner(u.vshard(v), peers)].push((u, k, w));
            }
        };
        add(u, w);
        while let Some(p) = pairs.next_if(|p| p.1 == it) {
            add(p.0, p.2);
        }
        if icap > 0 && n > icap {
            counts[5] += (n - icap) as u64;
        }
        shard.push(it);
    }
    for (j, ids) in by_vshard.into_iter().enumerate() {
        items.ids.extend(ids);
        items.starts[j + 1] = items.ids.len();
    }
    // Held-out items by binary search in their shard's sorted ids (u64::MAX: no training data).
    let mut tback: [Vec<Vec<(RawId, u64)>>; 2] = [vec![Vec::new(); peers], vec![Vec::new(); peers]];
    for (set, held) in tests.into_iter().enumerate() {
        for (u, it) in held {
            let vs = it.vshard(v);
            let j = vs as usize / peers;
            let ids = &items.ids[items.starts[j]..items.starts[j + 1]];
            let k = ids
                .binary_search(&it)
                .map_or(u64::MAX, |l| key(vs, l as u32));
            tback[set][owner(u.vshard(v), peers)].push((u, k));
        }
    }
    let [t0, t1] = tback;
    for (w, ((b, t), vl)) in back.into_iter().zip(t0).zip(t1).enumerate() {
        comm.send(w, IngestMsg::ItemKeyed(b));
        comm.send(w, IngestMsg::TestKeyed(0, t));
        comm.send(w, IngestMsg::TestKeyed(1, vl));
    }
    let mut keyed = Vec::new();
    let (mut test, mut valid) = (Vec::new(), Vec::new());
    for (_, b) in comm.exchange(worker, "ingest: number items")? {
        match b {
            IngestMsg::ItemKeyed(mut p) => keyed.append(&mut p),
            IngestMsg::TestKeyed(0, mut p) => test.append(&mut p),
            IngestMsg::TestKeyed(_, mut p) => valid.append(&mut p),
            _ => unreachable!(),
        }
    }
    counts[6] = test.len() as u64;
    counts[7] = test.iter().filter(|t| t.1 == u64::MAX).count() as u64;

    // 4. Number users, build the user CSR, send edges to item owners.
    // The virtual shard once per pair, not once per comparison.
    let mut keyed: Vec<(u32, RawId, u64, f32)> = keyed
        .into_iter()
        .map(|(u, k, w)| (u.vshard(v), u, k, w))
        .collect();
    keyed.sort_unstable_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let mut users = empty_side(me, peers, v, job.factors().0);
    let mut edges: Vec<Vec<(u64, u64, f32)>> = vec![Vec::new(); peers];
    let mut other: Vec<u64> = Vec::with_capacity(keyed.len());
    let mut j = 0; // position in users.vshards
    let mut local = 0u32;
    users.indptr.push(0);
    for (n, (vs, u, ik, w)) in keyed.iter().enumerate() {
        let new_user = n == 0 || keyed[n - 1].1 != *u;
        if new_user {
            while users.vshards[j] != *vs {
                j += 1;
                users.starts[j] = users.ids.len();
                local = 0;
            }
            if n > 0 {
                users.indptr.push(other.len());
            }
            users.ids.push(u.clone());
            local += 1;
        }
        // The summed weight; `crate::confidence::apply` turns it into a confidence once the
        // whole data set (and so an automatic alpha) is known.
        let c = *w;
        other.push(*ik);
        users.conf.push(c);
        edges[owner(unkey(*ik).0, peers)].push((*ik, key(users.vshards[j], local - 1), c));
    }
    if !keyed.is_empty() {
        users.indptr.push(other.len());
    }
    for s in users.starts[j + 1..].iter_mut() {
        *s = users.ids.len();
    }
    drop(keyed);
    for (w, e) in edges.into_iter().enumerate() {
        comm.send(w, IngestMsg::Edges(e));
    }
    let mut iedges = Vec::new();
    for (_, b) in comm.exchange(worker, "ingest: build CSR")? {
        match b {
            IngestMsg::Edges(mut e) => iedges.append(&mut e),
            _ => unreachable!(),
        }
    }
    iedges.sort_unstable_by_key(|e| (e.0, e.1));
    let mut iother = Vec::with_capacity(iedges.len());
    items.indptr = vec![0; items.rows() + 1];
    for &(ik, uk, c) in &iedges {
        let r = items.row_of(ik);
        items.indptr[r + 1] += 1;
        iother.push(uk);
        items.conf.push(c);
    }
    for r in 0..items.rows() {
        items.indptr[r + 1] += items.indptr[r];
    }
    drop(iedges);

    // 5. Shards to their owners by cost.
    counts[0] = other.len() as u64;
    counts[1] = users.rows() as u64;
    counts[2] = items.rows() as u64;
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
    let (sides, [test, valid]) =
        balance::rebalance(worker, comm, &job.als, v, unrouted, [test, valid])?;
    let [u, i] = sides;
    let (mut users, other, mut items, iother) = (u.side, u.keys, i.side, i.keys);

    // 6. Routing tables, and the counters to worker 0.
    let (uo, io) = (users.owners.clone(), items.owners.clone());
    request(comm, &mut users, &other, 1, &io);
    request(comm, &mut items, &iother, 0, &uo);
    drop((other, iother));
    comm.send(0, IngestMsg::Counts(counts.to_vec()));
    let mut total = [0u64; 9];
    for (from, b) in comm.exchange(worker, "ingest: routing")? {
        match b {
            IngestMsg::Request(side, keys) => {
                let s = if side == 0 { &mut users } else { &mut items };
                let rows = keys.iter().map(|&k| s.row_of(k) as u32).collect();
                s.routing.outgoing.push(Outgoing { to: from, rows });
            }
            IngestMsg::Counts(c) => total.iter_mut().zip(c).for_each(|(t, c)| *t += c),
            _ => unreachable!(),
        }
    }
    [
        stats.pairs,
        stats.users,
        stats.items,
        stats.nonpositive_pairs,
        stats.dropped_user_cap,
        stats.dropped_item_cap,
        stats.test_pairs,
        stats.test_unknown_item,
        stats.snapshot_pairs,
    ] = total;

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
fn init_factors(side: &mut Side, als: &crate::job::Als, tag: u64) {
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
