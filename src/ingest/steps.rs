//! Ingest's supersteps, in the order [`super::ingest`] runs them (see the module doc there).
//! Each reads what the previous one produced on this worker, exchanges through ingest's own
//! channel and hands its result on; none keeps state of its own.

use super::msg::IngestMsg;
use super::parse::Event;
use super::read;
use super::{consolidate, empty_side, held_out_pairs, recency, unit, Counts, IngestStats};
use crate::cluster::owner;
use crate::comm::{Channel, CommError};
use crate::ids::RawId;
use crate::job::Job;
use crate::side::{key, unkey, Outgoing, Side};
use crate::store::FileRecord;
use std::path::PathBuf;
use timely::worker::Worker;

/// Ingest's channel.
pub(super) type Ch = Channel<IngestMsg>;

/// Per destination worker, what one worker routes there.
type PerWorker<T> = Vec<Vec<T>>;

/// A consolidated training pair in transit to the item's owner: (user, item, weight, time).
pub(super) type TrainPair = (RawId, RawId, f32, i64);

/// What step 1 leaves on a user owner.
pub(super) struct Read {
    /// Training events of this worker's users.
    pub events: Vec<Event>,
    /// Events of the separate held-out sets (0: `eval.test`, 1: `eval.valid`).
    pub held: [Vec<Event>; 2],
    /// The parent version's snapshot pairs of this worker's user shards (warm start).
    pub previous: Vec<consolidate::Pair>,
    /// Reading statistics (complete on worker 0).
    pub stats: IngestStats,
}

/// 1. Every worker parses its share of the input (and of the held-out files) and routes each
///    event to its user's owner; owners read their shards' sections of the parent snapshot.
pub(super) fn read_and_route(
    worker: &mut Worker,
    comm: &mut Ch,
    job: &Job,
    files: &[PathBuf],
    snapshot: &[(PathBuf, FileRecord)],
) -> Result<Read, CommError> {
    let (peers, me, v) = (comm.peers, comm.index, job.shards.virtual_shards);
    let to_owner = |e: &Event| owner(e.user.vshard(v), peers);
    let mut out: PerWorker<Event> = vec![Vec::new(); peers];
    let mut held: [PerWorker<Event>; 2] = [vec![Vec::new(); peers], vec![Vec::new(); peers]];
    let mut previous = Vec::new();
    let read = if files.is_empty() {
        Ok(super::read_demo(job, me, peers, |e| {
            out[to_owner(&e)].push(e)
        }))
    } else {
        read::read_part(files, &job.input, me, peers, |e| out[to_owner(&e)].push(e))
    };
    let read = read.and_then(|st| {
        // Only the owner of a shard reads its section (packed or, in older versions, a file).
        let mine = |vs: u32| owner(vs, peers) == me;
        for (dir, rec) in snapshot {
            let recs = std::slice::from_ref(rec);
            previous.extend(crate::store::sections::snapshot_pairs(dir, recs, &mine)?);
        }
        // Separate held-out files are read the same way, split by byte range; a set not
        // configured is never opened.
        let sets = [
            ("eval.test", &job.eval.test),
            ("eval.valid", &job.eval.valid),
        ];
        for (set, (name, path)) in sets.into_iter().enumerate() {
            let Some(t) = path else { continue };
            let files = read::list_files_of(name, std::slice::from_ref(t))?;
            let dest = &mut held[set];
            read::read_part(&files, &job.input, me, peers, |e| {
                dest[to_owner(&e)].push(e)
            })?;
        }
        Ok(st)
    });
    match read {
        Ok(st) => {
            comm.send(0, IngestMsg::Read(st));
            let [t0, t1] = held;
            for (w, ((evs, a), b)) in out.into_iter().zip(t0).zip(t1).enumerate() {
                comm.send(w, IngestMsg::Events(evs));
                comm.send(w, IngestMsg::TestEvents(0, a));
                comm.send(w, IngestMsg::TestEvents(1, b));
            }
        }
        Err(e) => comm.abort(&e),
    }
    let mut r = Read {
        events: Vec::new(),
        held: [Vec::new(), Vec::new()],
        previous,
        stats: IngestStats::default(),
    };
    for (_, m) in comm.exchange(worker, "ingest: read")? {
        match m {
            IngestMsg::Events(mut e) => r.events.append(&mut e),
            IngestMsg::TestEvents(set, mut e) => r.held[set as usize].append(&mut e),
            IngestMsg::Read(st) => r.stats.read.merge(&st),
            other => return unexpected("ingest: read", &other),
        }
    }
    Ok(r)
}

/// 2. User owners sum each (user, item)'s events and merge them with the parent's snapshot
///    (removals retract); pairs whose sum is ≤ 0 go. The result is written as the next
///    version's snapshot (synced, pending until publish). Returns the pairs sorted by (user,
///    item) and the snapshot files.
#[allow(clippy::type_complexity)]
pub(super) fn consolidate(
    worker: &mut Worker,
    comm: &mut Ch,
    job: &Job,
    (events, mut previous): (Vec<Event>, Vec<consolidate::Pair>),
    counts: &mut Counts,
) -> Result<(Vec<consolidate::Pair>, Vec<(PathBuf, FileRecord)>), CommError> {
    let delta = consolidate::sum_events(events);
    counts.snapshot = previous.len() as u64;
    previous.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let merged = consolidate::merge(delta, previous);
    counts.nonpositive = merged.nonpositive;
    let pairs = merged.positive;
    let dir = super::pending_dir(job, comm.index);
    let written = super::write_snapshot(&pairs, job.shards.virtual_shards, &dir);
    let snapshot = comm.agree(worker, "ingest: write snapshot", written)?;
    Ok((pairs, snapshot))
}

/// The per-user cap (`confidence.max_per_user`): a user's newest pairs are kept. `pairs` are
/// sorted by user; capped pairs are dropped.
pub(super) fn cap_users(
    mut pairs: Vec<consolidate::Pair>,
    cap: usize,
    counts: &mut Counts,
) -> Vec<consolidate::Pair> {
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        if cap > 0 && j - i > cap {
            let group = &mut pairs[i..j];
            group.sort_by(|a, b| recency(a.3, &a.1, b.3, &b.1));
            counts.user_cap += (group.len() - cap) as u64;
            // Marked by a zero weight, dropped below.
            group[cap..].iter_mut().for_each(|p| p.2 = 0);
        }
        i = j;
    }
    pairs.retain(|p| p.2 > 0);
    pairs
}

/// What step 3 receives on an item owner.
pub(super) struct AtItems {
    /// Training pairs of this worker's items.
    pub pairs: Vec<TrainPair>,
    /// Held-out (user, item) pairs of each set whose item this worker owns.
    pub held: [Vec<(RawId, RawId)>; 2],
}

/// 3. Splits off the holdout share (`eval.holdout`), sums the held-out files' events the same
///    way, and routes every pair to its item's owner.
pub(super) fn route_to_items(
    worker: &mut Worker,
    comm: &mut Ch,
    job: &Job,
    pairs: Vec<consolidate::Pair>,
    held: [Vec<Event>; 2],
) -> Result<AtItems, CommError> {
    let (peers, v) = (comm.peers, job.shards.virtual_shards);
    let mut test_out: [PerWorker<(RawId, RawId)>; 2] =
        [vec![Vec::new(); peers], vec![Vec::new(); peers]];
    let mut train_out: PerWorker<TrainPair> = vec![Vec::new(); peers];
    let holdout = job.eval.holdout;
    for (u, it, w, ts) in pairs {
        let dest = owner(it.vshard(v), peers);
        if holdout > 0.0 && unit(job.eval.seed, &u, &it) < holdout {
            test_out[0][dest].push((u, it));
        } else {
            train_out[dest].push((u, it, consolidate::from_fixed(w) as f32, ts));
        }
    }
    for (set, evs) in held.into_iter().enumerate() {
        held_out_pairs(evs, &mut test_out[set], v, peers);
    }
    let [t0, t1] = test_out;
    for (w, ((tr, a), b)) in train_out.into_iter().zip(t0).zip(t1).enumerate() {
        comm.send(w, IngestMsg::Pairs(tr));
        comm.send(w, IngestMsg::TestPairs(0, a));
        comm.send(w, IngestMsg::TestPairs(1, b));
    }
    let mut at = AtItems {
        pairs: Vec::new(),
        held: [Vec::new(), Vec::new()],
    };
    for (_, m) in comm.exchange(worker, "ingest: consolidate")? {
        match m {
            IngestMsg::Pairs(mut p) => at.pairs.append(&mut p),
            IngestMsg::TestPairs(set, mut p) => at.held[set as usize].append(&mut p),
            other => return unexpected("ingest: consolidate", &other),
        }
    }
    Ok(at)
}

/// What step 4 leaves on a user owner: its pairs with item keys, and its held-out pairs.
pub(super) struct Keyed {
    /// (user, item key, weight).
    pub pairs: Vec<(RawId, u64, f32)>,
    /// Held-out (user, item key or `u64::MAX`) of `eval.test` / the holdout.
    pub test: Vec<(RawId, u64)>,
    /// The same of `eval.valid`.
    pub valid: Vec<(RawId, u64)>,
}

/// 4. Item owners apply the per-item cap (newest first) and number their items per virtual
///    shard in raw id order, then send every pair's item key back to the user's owner (held-out
///    items too: `u64::MAX` when the item has no training data). Returns the item side (no CSR
///    yet) and what came back.
pub(super) fn number_items(
    worker: &mut Worker,
    comm: &mut Ch,
    job: &Job,
    mut at: AtItems,
    counts: &mut Counts,
) -> Result<(Side, Keyed), CommError> {
    let (peers, me, v) = (comm.peers, comm.index, job.shards.virtual_shards);
    let icap = job.confidence.max_per_item as usize;
    // An item's number is its rank among its shard's distinct items, so sort by item; the
    // recency order inside an item only matters for the cap.
    if icap > 0 {
        at.pairs
            .sort_unstable_by(|a, b| a.1.cmp(&b.1).then_with(|| recency(a.3, &a.0, b.3, &b.0)));
    } else {
        at.pairs.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    }
    let mut items = empty_side(me, peers, v, job.factors().0);
    let mut by_vshard: Vec<Vec<RawId>> = vec![Vec::new(); items.vshards.len()];
    let mut back: PerWorker<(RawId, u64, f32)> = vec![Vec::new(); peers];
    let mut pairs = at.pairs.into_iter().peekable();
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
            counts.item_cap += (n - icap) as u64;
        }
        shard.push(it);
    }
    for (j, ids) in by_vshard.into_iter().enumerate() {
        items.ids.extend(ids);
        items.starts[j + 1] = items.ids.len();
    }
    let tback = held_out_keys(&items, at.held, v, peers);
    let [t0, t1] = tback;
    for (w, ((b, t), vl)) in back.into_iter().zip(t0).zip(t1).enumerate() {
        comm.send(w, IngestMsg::ItemKeyed(b));
        comm.send(w, IngestMsg::TestKeyed(0, t));
        comm.send(w, IngestMsg::TestKeyed(1, vl));
    }
    let mut keyed = Keyed {
        pairs: Vec::new(),
        test: Vec::new(),
        valid: Vec::new(),
    };
    for (_, m) in comm.exchange(worker, "ingest: number items")? {
        match m {
            IngestMsg::ItemKeyed(mut p) => keyed.pairs.append(&mut p),
            IngestMsg::TestKeyed(0, mut p) => keyed.test.append(&mut p),
            IngestMsg::TestKeyed(_, mut p) => keyed.valid.append(&mut p),
            other => return unexpected("ingest: number items", &other),
        }
    }
    counts.test = keyed.test.len() as u64;
    counts.test_unknown = keyed.test.iter().filter(|t| t.1 == u64::MAX).count() as u64;
    Ok((items, keyed))
}

/// Held-out items' keys by binary search in their shard's sorted ids (`u64::MAX`: no training
/// data), routed to the user's owner.
fn held_out_keys(
    items: &Side,
    held: [Vec<(RawId, RawId)>; 2],
    v: u32,
    peers: usize,
) -> [PerWorker<(RawId, u64)>; 2] {
    let mut tback: [PerWorker<(RawId, u64)>; 2] =
        [vec![Vec::new(); peers], vec![Vec::new(); peers]];
    for (set, pairs) in held.into_iter().enumerate() {
        for (u, it) in pairs {
            let vs = it.vshard(v);
            let j = vs as usize / peers;
            let ids = &items.ids[items.starts[j]..items.starts[j + 1]];
            let k = ids
                .binary_search(&it)
                .map_or(u64::MAX, |l| key(vs, l as u32));
            tback[set][owner(u.vshard(v), peers)].push((u, k));
        }
    }
    tback
}

/// 5. User owners number their users (per virtual shard, by raw id) and build the user CSR,
///    whose entries are item keys until routing; every entry goes to its item's owner as an
///    (item key, user key, weight) edge. Returns the user side and its entries' item keys, and
///    the edges this worker's items received.
#[allow(clippy::type_complexity)]
pub(super) fn build_user_csr(
    worker: &mut Worker,
    comm: &mut Ch,
    job: &Job,
    keyed: Vec<(RawId, u64, f32)>,
) -> Result<(Side, Vec<u64>, Vec<(u64, u64, f32)>), CommError> {
    let (peers, me, v) = (comm.peers, comm.index, job.shards.virtual_shards);
    // The virtual shard once per pair, not once per comparison.
    let mut keyed: Vec<(u32, RawId, u64, f32)> = keyed
        .into_iter()
        .map(|(u, k, w)| (u.vshard(v), u, k, w))
        .collect();
    keyed.sort_unstable_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let mut users = empty_side(me, peers, v, job.factors().0);
    let mut edges: PerWorker<(u64, u64, f32)> = vec![Vec::new(); peers];
    let mut other: Vec<u64> = Vec::with_capacity(keyed.len());
    let mut j = 0; // position in users.vshards
    let mut local = 0u32;
    users.indptr.push(0);
    for (n, (vs, u, ik, w)) in keyed.iter().enumerate() {
        if n == 0 || keyed[n - 1].1 != *u {
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
        other.push(*ik);
        users.conf.push(*w);
        edges[owner(unkey(*ik).0, peers)].push((*ik, key(users.vshards[j], local - 1), *w));
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
    for (_, m) in comm.exchange(worker, "ingest: build CSR")? {
        match m {
            IngestMsg::Edges(mut e) => iedges.append(&mut e),
            other => return unexpected("ingest: build CSR", &other),
        }
    }
    Ok((users, other, iedges))
}

/// Item owners build the item CSR from the edges; returns its entries' user keys.
pub(super) fn build_item_csr(items: &mut Side, mut iedges: Vec<(u64, u64, f32)>) -> Vec<u64> {
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
    iother
}

/// 7. Each side asks the other side's owners for the vectors its entries need every half-step
///    (the routing tables); the counters go to worker 0, which returns the job's totals.
pub(super) fn route_vectors(
    worker: &mut Worker,
    comm: &mut Ch,
    (users, other): (&mut Side, Vec<u64>),
    (items, iother): (&mut Side, Vec<u64>),
    counts: Counts,
) -> Result<Counts, CommError> {
    let (uo, io) = (users.owners.clone(), items.owners.clone());
    super::routing::request(comm, users, &other, 1, &io);
    super::routing::request(comm, items, &iother, 0, &uo);
    drop((other, iother));
    comm.send(0, IngestMsg::Counts(counts));
    let mut total = Counts::default();
    for (from, m) in comm.exchange(worker, "ingest: routing")? {
        match m {
            IngestMsg::Request(side, keys) => {
                let s = if side == 0 { &mut *users } else { &mut *items };
                let rows = keys.iter().map(|&k| s.row_of(k) as u32).collect();
                s.routing.outgoing.push(Outgoing { to: from, rows });
            }
            IngestMsg::Counts(c) => total += c,
            other => return unexpected("ingest: routing", &other),
        }
    }
    Ok(total)
}

/// A message another step sends: a bug, reported as a failure rather than a panic.
fn unexpected<T>(stage: &str, m: &IngestMsg) -> Result<T, CommError> {
    let kind = format!("{m:?}");
    let kind = kind.split(['(', ' ', '{']).next().unwrap_or("?");
    Err(CommError(format!(
        "stage '{stage}': unexpected {kind} message (a bug: workers disagree on the step)"
    )))
}
