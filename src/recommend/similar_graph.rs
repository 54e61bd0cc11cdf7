//! `lsh.target_recall` for similar items: a neighbour graph over the catalogue, refined until
//! recall@`similar.k` against exact cosine top-k on a hash-chosen item sample reaches the
//! target (or the cost cap `lsh.max_share` stops it).
//!
//! Why not the recommendation index: its lists hold the items that score best *against users*
//! (high norms), while an item's cosine neighbours are mostly items of its own norm; on the
//! shared sets those lists found 15–83% of the exact neighbours (docs/BENCHMARKS.md).
//!
//! Start: hyperplane codes of the unit vectors order the catalogue (one order per table, ties
//! by key), and each item scores the [`WINDOW`] items on either side of it in every order (a
//! fixed cost per item: no bucket grows with a dense region). Each round then scores, for every
//! item, the items listed by its neighbours and by the items that list it ("a neighbour of a
//! neighbour is likely a neighbour": NN-descent, Dong, Charikar and Li 2011) and keeps the best
//! `degree`. A list only ever gains better items, so recall never falls from round to round.
//!
//! Every worker refines its own items and all-gathers the lists, so the graph — and every
//! decision taken from the sample on it — is the same for any layout.

use super::catalog::Catalog;
use super::msg::{NeighbourLists, RecMsg};
use super::planes::hyperplanes;
use super::recall::Sample;
use super::scan::{better, CatalogIx};
use super::similar::{neighbours, Finder};
use crate::cluster::{Comm, CommError};
use crate::job::Lsh;
use timely::worker::Worker;

/// Hyperplane orders of the start lists, and the planes (code bits) of each.
const ORDERS: u32 = 4;
const PLANES: u32 = 16;
/// Items an item scores on either side of it in each order.
const WINDOW: usize = 16;
/// Neighbours kept beyond `similar.k`: room for the items that lead a round to better ones.
const EXTRA: usize = 30;
/// Rounds at most, and without a sample to measure (where the shared sets reach 0.94–0.98).
const MAX_ROUNDS: usize = 12;
const BLIND_ROUNDS: usize = 3;
/// A round that gains less recall than this ends the refinement (the graph has converged).
const MIN_GAIN: f64 = 0.002;
/// Keeps the orders' hyperplanes apart from the recommendation index's (same `lsh.seed`).
const SALT: u64 = 0x6e65_6967_6862_6f72;
/// Pads a list shorter than `degree`.
const NONE: u32 = u32::MAX;

/// One measured state of the graph (the first: the start lists).
#[derive(Clone, Debug, serde::Serialize)]
pub struct GraphRound {
    /// Recall@k on the item sample (None: nothing sampled).
    pub recall: Option<f64>,
    /// Cosines computed in the round per item, as a share of the catalogue.
    pub catalog_share: f64,
}

/// How similar items were found under a target (the manifest's `recommend.lsh.similar`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SimilarCalibration {
    /// `"graph"`, or `"exact"` where one round of the graph would cost more than the cap.
    pub method: &'static str,
    /// `lsh.target_recall`.
    pub target_recall: f64,
    /// `lsh.max_share`.
    pub max_share: f64,
    /// Neighbours kept per item while refining.
    pub degree: usize,
    /// Recall@k of the written lists on the item sample (exact: 1; None: nothing sampled).
    pub recall_at_k: Option<f64>,
    /// `similar.k`.
    pub recall_k: usize,
    /// Items sampled.
    pub sample_items: usize,
    /// Whether the target is reached (None: nothing sampled).
    pub target_met: Option<bool>,
    /// Why the refinement stopped where it did.
    pub stopped: &'static str,
    /// Cosines computed per item over all rounds, as a share of the catalogue.
    pub catalog_share: f64,
    /// Every round, the start lists first.
    pub rounds: Vec<GraphRound>,
}

impl SimilarCalibration {
    /// The record of exact similar items under `cfg`'s target (`why`: what chose exact).
    pub fn exact(cfg: &Lsh, k: usize, why: &'static str) -> SimilarCalibration {
        SimilarCalibration {
            method: "exact",
            target_recall: cfg.target_recall,
            max_share: cfg.max_share,
            degree: 0,
            recall_at_k: Some(1.0),
            recall_k: k,
            sample_items: 0,
            target_met: Some(true),
            stopped: why,
            catalog_share: 1.0,
            rounds: Vec::new(),
        }
    }
}

/// Every item's best `degree` neighbours (catalogue indices best first, [`NONE`] pads) and
/// their cosines.
/// `fresh`: whether an entry joined its list in the round that made the graph (every entry of
/// the start lists): a round pairs old entries only with fresh ones, since old with old were
/// offered in the round before.
pub(super) struct Graph {
    degree: usize,
    nb: Vec<u32>,
    cos: Vec<f32>,
    fresh: Vec<bool>,
}

impl Graph {
    fn new(degree: usize, (nb, cos): (Vec<u32>, Vec<f32>)) -> Graph {
        let fresh = vec![true; nb.len()];
        Graph {
            degree,
            nb,
            cos,
            fresh,
        }
    }

    fn list(&self, i: usize) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.entries(i).map(|(j, c, _)| (j, c))
    }

    /// Item `i`'s neighbours with their cosines and whether each is fresh.
    fn entries(&self, i: usize) -> impl Iterator<Item = (u32, f32, bool)> + '_ {
        let r = i * self.degree..(i + 1) * self.degree;
        let e = (self.nb[r.clone()].iter().zip(&self.cos[r.clone()])).zip(&self.fresh[r]);
        e.map(|((&j, &c), &f)| (j, c, f))
            .take_while(|e| e.0 != NONE)
    }

    /// Marks the entries that `prev` (the graph before the round) did not hold.
    fn mark_fresh(&mut self, prev: &Graph) {
        let n = self.nb.len() / self.degree.max(1);
        let mut seen = vec![u32::MAX; n];
        for i in 0..n {
            prev.list(i).for_each(|(j, _)| seen[j as usize] = i as u32);
            for e in i * self.degree..(i + 1) * self.degree {
                let j = self.nb[e];
                self.fresh[e] = j != NONE && seen[j as usize] != i as u32;
            }
        }
    }

    /// Item `i`'s first `k` neighbours with their cosines, best first.
    pub(super) fn top(&self, i: usize, k: usize) -> Vec<(f32, CatalogIx)> {
        let l = self.list(i).take(k);
        l.map(|(j, c)| (c, j as CatalogIx)).collect()
    }
}

/// For every item, the items whose lists hold it (with the cosine), best first, at most
/// `degree` (a popular item is listed by many; its best listers are the useful ones).
struct Reverse {
    at: Vec<usize>,
    who: Vec<(f32, u32, bool)>,
}

impl Reverse {
    fn new(g: &Graph, keys: &[u64]) -> Reverse {
        let n = keys.len();
        let mut start = vec![0usize; n + 1];
        for &j in g.nb.iter().filter(|&&j| j != NONE) {
            start[j as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut all = vec![(0.0f32, 0u32, false); start[n]];
        for i in 0..n {
            for (j, c, f) in g.entries(i) {
                all[fill[j as usize]] = (c, i as u32, f);
                fill[j as usize] += 1;
            }
        }
        let (mut at, mut who) = (vec![0], Vec::new());
        for j in 0..n {
            let s = &mut all[start[j]..start[j + 1]];
            s.sort_unstable_by(|a, b| better((a.0, keys[a.1 as usize]), (b.0, keys[b.1 as usize])));
            who.extend_from_slice(&s[..s.len().min(g.degree)]);
            at.push(who.len());
        }
        Reverse { at, who }
    }

    /// The listers of `j`: (cosine, lister, whether `j` is fresh in its list).
    fn of(&self, j: usize) -> &[(f32, u32, bool)] {
        &self.who[self.at[j]..self.at[j + 1]]
    }
}

/// The catalogue in each hyperplane order of the unit vectors, and every item's place in it.
struct Orders {
    order: Vec<Vec<u32>>,
    place: Vec<Vec<u32>>,
}

impl Orders {
    fn new(all: &[f32], keys: &[u64], d: usize, seed: u64) -> Orders {
        let planes = hyperplanes(seed ^ SALT, 0..ORDERS, PLANES, d);
        let (mut order, mut place) = (Vec::new(), Vec::new());
        for t in 0..ORDERS as usize {
            let mine = &planes[t * PLANES as usize * (d + 1)..][..PLANES as usize * (d + 1)];
            let mut by: Vec<(u64, u64, u32)> = (0..keys.len())
                .map(|i| (code(mine, &all[i * d..(i + 1) * d]), keys[i], i as u32))
                .collect();
            by.sort_unstable();
            let o: Vec<u32> = by.into_iter().map(|(_, _, i)| i).collect();
            let mut p = vec![0u32; o.len()];
            for (at, &i) in o.iter().enumerate() {
                p[i as usize] = at as u32;
            }
            order.push(o);
            place.push(p);
        }
        Orders { order, place }
    }
}

/// `u`'s side of each plane (rows `d + 1` wide, the last coordinate unused), first plane as
/// the highest bit: items that agree on the first planes sit together in the order.
fn code(planes: &[f32], u: &[f32]) -> u64 {
    let w = u.len() + 1;
    planes.chunks(w).fold(0u64, |c, h| {
        c << 1 | (super::dot(&h[..u.len()], u) >= 0.0) as u64
    })
}

/// `a·b` with eight running sums (lane `l` takes coordinates `l`, `l + 8`, …, then the sums
/// pairwise, then the tail): a fixed order the compiler vectorises, unlike one running sum.
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xa, xb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = xa
        .remainder()
        .iter()
        .zip(xb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in xa.zip(xb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let q = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (q[0] + q[2]) + (q[1] + q[3]) + tail
}

/// Asks for `row`'s cache lines ahead of its use.
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch is a hint; the address is inside `row`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Collects one item's candidates (each once) and keeps the best `degree`.
struct Lister<'a> {
    all: &'a [f32],
    keys: &'a [u64],
    d: usize,
    degree: usize,
    mark: Vec<u32>,
    stamp: u32,
    me: usize,
    cand: Vec<(f32, u32)>,
    pending: Vec<u32>,
    scored: u64,
}

impl<'a> Lister<'a> {
    fn new(all: &'a [f32], keys: &'a [u64], degree: usize) -> Lister<'a> {
        let d = all.len() / keys.len().max(1);
        let mark = vec![0; keys.len()];
        let (stamp, me, scored) = (0, 0, 0);
        let (cand, pending) = (Vec::new(), Vec::new());
        Lister {
            all,
            keys,
            d,
            degree,
            mark,
            stamp,
            me,
            cand,
            pending,
            scored,
        }
    }

    fn begin(&mut self, i: usize) {
        if self.stamp == u32::MAX {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.stamp = 0;
        }
        self.stamp += 1;
        self.me = i;
        self.mark[i] = self.stamp;
        self.cand.clear();
    }

    /// A candidate whose cosine is known (from a list).
    fn known(&mut self, j: u32, c: f32) {
        if self.mark[j as usize] != self.stamp {
            self.mark[j as usize] = self.stamp;
            self.cand.push((c, j));
        }
    }

    /// A candidate to score (in [`Lister::finish`], all together).
    fn offer(&mut self, j: u32) {
        if self.mark[j as usize] != self.stamp {
            self.mark[j as usize] = self.stamp;
            self.pending.push(j);
        }
    }

    /// Scores the offered candidates, fetching rows a few ahead: the rows are scattered over
    /// the catalogue, so the loads, not the arithmetic, are what a round waits for.
    fn score_pending(&mut self) {
        let (d, a) = (self.d, self.all);
        let me = &a[self.me * d..][..d];
        for (p, &j) in self.pending.iter().enumerate() {
            if let Some(&ahead) = self.pending.get(p + 8) {
                prefetch(&a[ahead as usize * d..][..d]);
            }
            self.cand.push((dot8(me, &a[j as usize * d..][..d]), j));
        }
        self.scored += self.pending.len() as u64;
        self.pending.clear();
    }

    /// The best `degree` candidates, best first, padded: appended to `nb` and `cos`.
    fn finish(&mut self, nb: &mut Vec<u32>, cos: &mut Vec<f32>) {
        self.score_pending();
        let keys = self.keys;
        let cmp = |a: &(f32, u32), b: &(f32, u32)| {
            better((a.0, keys[a.1 as usize]), (b.0, keys[b.1 as usize]))
        };
        if self.cand.len() > self.degree {
            self.cand.select_nth_unstable_by(self.degree, cmp);
            self.cand.truncate(self.degree);
        }
        self.cand.sort_unstable_by(cmp);
        nb.extend(self.cand.iter().map(|c| c.1));
        cos.extend(self.cand.iter().map(|c| c.0));
        let pad = self.degree - self.cand.len();
        nb.extend(std::iter::repeat_n(NONE, pad));
        cos.extend(std::iter::repeat_n(0.0, pad));
    }
}

/// Start lists of the items `mine`: their windows in every order.
fn start(l: &mut Lister, orders: &Orders, mine: &[CatalogIx]) -> (Vec<u32>, Vec<f32>) {
    let (mut nb, mut cos) = (Vec::new(), Vec::new());
    for &i in mine {
        l.begin(i);
        for (o, p) in orders.order.iter().zip(&orders.place) {
            let at = p[i] as usize;
            let w = &o[at.saturating_sub(WINDOW)..(at + WINDOW + 1).min(o.len())];
            w.iter().for_each(|&j| l.offer(j));
        }
        l.finish(&mut nb, &mut cos);
    }
    (nb, cos)
}

/// One round for the items `mine`: each keeps its list and scores its neighbours' and
/// listers' neighbours (through a hub that was already one, only its fresh neighbours).
fn refine(l: &mut Lister, g: &Graph, rev: &Reverse, mine: &[CatalogIx]) -> (Vec<u32>, Vec<f32>) {
    let (mut nb, mut cos) = (Vec::new(), Vec::new());
    for &i in mine {
        l.begin(i);
        g.list(i).for_each(|(j, c)| l.known(j, c));
        rev.of(i).iter().for_each(|&(c, j, _)| l.known(j, c));
        let hubs =
            (g.entries(i).map(|(v, _, f)| (v, f))).chain(rev.of(i).iter().map(|x| (x.1, x.2)));
        for (v, new_hub) in hubs {
            for (j, _, fresh) in g.entries(v as usize) {
                if new_hub || fresh {
                    l.offer(j);
                }
            }
        }
        l.finish(&mut nb, &mut cos);
    }
    (nb, cos)
}

/// Every worker's lists of a round (`nb`, `cos` for `mine`) into the whole graph, and the
/// cosines computed over all workers (collective).
fn gather(
    worker: &mut Worker,
    comm: &mut Comm,
    mine: &[CatalogIx],
    (nb, cos, scored): (Vec<u32>, Vec<f32>, u64),
    (n, degree): (usize, usize),
) -> Result<(Graph, u64), CommError> {
    let ch = &mut comm.channel::<RecMsg>(worker);
    let rows = mine.iter().map(|&i| i as u32).collect();
    ch.broadcast(RecMsg::Neighbours(NeighbourLists {
        rows,
        nb,
        cos,
        scored,
    }));
    let mut g = Graph::new(degree, (vec![NONE; n * degree], vec![0.0; n * degree]));
    let mut total = 0;
    for (_, m) in ch.exchange(worker, "similar items: gather neighbour lists")? {
        if let RecMsg::Neighbours(l) = m {
            for (r, &i) in l.rows.iter().enumerate() {
                let to = i as usize * degree..(i as usize + 1) * degree;
                g.nb[to.clone()].copy_from_slice(&l.nb[r * degree..(r + 1) * degree]);
                g.cos[to].copy_from_slice(&l.cos[r * degree..(r + 1) * degree]);
            }
            total += l.scored;
        }
    }
    Ok((g, total))
}

/// The exact cosine top-k of the sampled items (every worker computes the same), and the
/// graph's recall against them.
struct Probe {
    rows: Vec<CatalogIx>,
    exact: Vec<Vec<(f32, CatalogIx)>>,
    k: usize,
}

impl Probe {
    fn new(cat: &Catalog, all: &[f32], (sample, seed, k): (usize, u64, usize)) -> Probe {
        let n = cat.len();
        let s = Sample::new(sample, n as u64, seed);
        let rows: Vec<CatalogIx> = (0..n).filter(|&i| s.contains(&cat.ids[i])).collect();
        let mut f = Finder::exact(cat, all);
        let step = (4_000_000 / n.max(1)).clamp(1, 192);
        let exact = (rows.chunks(step))
            .flat_map(|c| neighbours(&mut f, cat, all, c, k))
            .collect();
        Probe { rows, exact, k }
    }

    fn recall(&self, g: &Graph) -> Option<f64> {
        let hits: usize = (self.rows.iter().zip(&self.exact))
            .map(|(&i, e)| {
                let got = g.top(i, self.k);
                e.iter().filter(|x| got.iter().any(|y| y.1 == x.1)).count()
            })
            .sum();
        let total: usize = self.exact.iter().map(|e| e.len()).sum();
        (total > 0).then(|| hits as f64 / total as f64)
    }
}

/// What [`similar_graph`] found: the graph (None: similar items are exact) and its record.
pub(super) struct Found {
    /// The refined graph.
    pub graph: Option<Graph>,
    /// The record.
    pub record: SimilarCalibration,
}

/// Cosines per item of one round at most: its list and listers, and their lists.
fn round_bound(degree: usize, n: usize) -> usize {
    (2 * degree * (degree + 1)).min(n)
}

/// Cosines per item of the start lists and of one round at most (the cap's first check).
fn first_cost(n: usize, degree: usize) -> f64 {
    let start = (2 * WINDOW + 1) * ORDERS as usize;
    (start.min(n) + round_bound(degree, n)) as f64
}

/// Builds and refines the neighbour graph of the whole catalogue under `cfg`'s target and
/// cap; `mine`: this worker's items; `all`: the catalogue's unit vectors (collective).
pub(super) fn similar_graph(
    worker: &mut Worker,
    comm: &mut Comm,
    cfg: &Lsh,
    (cat, all): (&Catalog, &[f32]),
    mine: &[CatalogIx],
    sample: (usize, u64, usize),
) -> Result<Found, CommError> {
    let (n, k) = (cat.len(), sample.2);
    let degree = (k + EXTRA).min(n.saturating_sub(1)).max(1);
    let why =
        "the start lists and one round would score more than lsh.max_share of the catalogue: exact";
    let mut record = SimilarCalibration::exact(cfg, k, why);
    record.degree = degree;
    if n < 2 || first_cost(n, degree) > cfg.max_share * n as f64 {
        return Ok(Found {
            graph: None,
            record,
        });
    }
    let probe = Probe::new(cat, all, sample);
    let share = |scored: u64| scored as f64 / n as f64 / n as f64;
    let mut l = Lister::new(all, &cat.keys, degree);
    let orders = Orders::new(all, &cat.keys, all.len() / n, cfg.seed);
    let (nb, cos) = start(&mut l, &orders, mine);
    let (mut g, scored) = gather(worker, comm, mine, (nb, cos, l.scored), (n, degree))?;
    let mut recall = probe.recall(&g);
    let mut rounds = vec![GraphRound {
        recall,
        catalog_share: share(scored),
    }];
    let mut spent = share(scored);
    let bound = share(round_bound(degree, n) as u64 * n as u64);
    let stopped = loop {
        let target_met = recall.map(|r| r >= cfg.target_recall);
        if target_met == Some(true) {
            break "target reached";
        }
        if recall.is_none() && rounds.len() > BLIND_ROUNDS {
            break "no items sampled (eval.recall_sample = 0): a fixed number of rounds";
        }
        if rounds.len() > MAX_ROUNDS {
            break "the most rounds";
        }
        let next = rounds
            .get(1..)
            .and_then(|r| r.last())
            .map_or(bound, |r| r.catalog_share);
        if spent + next > cfg.max_share {
            break "the next round would score more than lsh.max_share of the catalogue";
        }
        let rev = Reverse::new(&g, &cat.keys);
        l.scored = 0;
        let (nb, cos) = refine(&mut l, &g, &rev, mine);
        let (mut next, scored) = gather(worker, comm, mine, (nb, cos, l.scored), (n, degree))?;
        next.mark_fresh(&g);
        g = next;
        let before = recall;
        recall = probe.recall(&g);
        rounds.push(GraphRound {
            recall,
            catalog_share: share(scored),
        });
        spent += share(scored);
        if let (Some(a), Some(b)) = (before, recall) {
            if b - a < MIN_GAIN && b < cfg.target_recall {
                break "converged below the target (a round gained almost nothing)";
            }
        }
    };
    record.method = "graph";
    record.recall_at_k = recall;
    record.sample_items = probe.rows.len();
    record.target_met = recall.map(|r| r >= cfg.target_recall);
    record.stopped = stopped;
    record.catalog_share = spent;
    record.rounds = rounds;
    Ok(Found {
        graph: Some(g),
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SplitMix;

    fn unit(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix::new(seed);
        let v: Vec<f32> = (0..n * d).map(|_| r.next_normal() as f32).collect();
        super::super::similar::unit_rows(&v, d)
    }

    /// The exact `k` best of item `i` by [`better`] over all others.
    fn naive(all: &[f32], keys: &[u64], d: usize, i: usize, k: usize) -> Vec<u32> {
        let n = keys.len();
        let mut v: Vec<(f32, u32)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (dot8(&all[i * d..][..d], &all[j * d..][..d]), j as u32))
            .collect();
        v.sort_by(|a, b| better((a.0, keys[a.1 as usize]), (b.0, keys[b.1 as usize])));
        v.into_iter().take(k).map(|x| x.1).collect()
    }

    #[test]
    fn rounds_never_lose_recall_and_reach_the_exact_lists() {
        let (n, d, degree, k) = (600, 6, 12, 5);
        let all = unit(n, d, 3);
        let keys: Vec<u64> = (0..n as u64).map(|i| i * 7 + 1).collect();
        let mine: Vec<usize> = (0..n).collect();
        let exact: Vec<Vec<u32>> = (0..n).map(|i| naive(&all, &keys, d, i, k)).collect();
        let hits = |g: &Graph| -> usize {
            (0..n)
                .map(|i| {
                    g.top(i, k)
                        .iter()
                        .filter(|x| exact[i].contains(&(x.1 as u32)))
                        .count()
                })
                .sum()
        };
        let mut l = Lister::new(&all, &keys, degree);
        let orders = Orders::new(&all, &keys, d, 9);
        let mut g = Graph::new(degree, start(&mut l, &orders, &mine));
        let mut last = hits(&g);
        assert!(last < n * k, "the start lists alone are not exact here");
        for _ in 0..8 {
            let rev = Reverse::new(&g, &keys);
            let mut next = Graph::new(degree, refine(&mut l, &g, &rev, &mine));
            next.mark_fresh(&g);
            g = next;
            let h = hits(&g);
            assert!(h >= last, "{h} < {last}");
            last = h;
        }
        assert!(last as f64 >= 0.99 * (n * k) as f64, "{last} of {}", n * k);
        // Every listed cosine is the item pair's cosine, and lists are best first.
        for i in 0..n {
            let t = g.top(i, degree);
            assert!(t.windows(2).all(|w| w[0].0 >= w[1].0));
            for &(c, j) in &t {
                assert_eq!(c, dot8(&all[i * d..][..d], &all[j * d..][..d]));
                assert_ne!(j, i);
            }
        }
    }

    #[test]
    fn dot8_is_the_dot_product_for_any_length() {
        let mut r = SplitMix::new(4);
        for d in [1, 7, 8, 9, 16, 31, 64, 67] {
            let a: Vec<f32> = (0..d).map(|_| r.next_normal() as f32).collect();
            let b: Vec<f32> = (0..d).map(|_| r.next_normal() as f32).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!(
                (dot8(&a, &b) as f64 - want).abs() < 1e-5 * d as f64,
                "d {d}"
            );
        }
    }

    #[test]
    fn reverse_lists_are_the_listers_best_first() {
        let (n, d, degree) = (50, 4, 6);
        let all = unit(n, d, 5);
        let keys: Vec<u64> = (0..n as u64).rev().collect();
        let mine: Vec<usize> = (0..n).collect();
        let mut l = Lister::new(&all, &keys, degree);
        let orders = Orders::new(&all, &keys, d, 1);
        let g = Graph::new(degree, start(&mut l, &orders, &mine));
        let rev = Reverse::new(&g, &keys);
        for j in 0..n {
            let mut want: Vec<(f32, u32, bool)> = (0..n)
                .flat_map(|i| {
                    g.list(i)
                        .filter(|x| x.0 as usize == j)
                        .map(move |x| (x.1, i as u32, true))
                })
                .collect();
            want.sort_by(|a, b| better((a.0, keys[a.1 as usize]), (b.0, keys[b.1 as usize])));
            want.truncate(degree);
            assert_eq!(rev.of(j), &want[..], "item {j}");
        }
    }

    #[test]
    fn a_worker_s_lists_do_not_depend_on_which_items_it_owns() {
        let (n, d, degree) = (200, 5, 8);
        let all = unit(n, d, 8);
        let keys: Vec<u64> = (0..n as u64).collect();
        let orders = Orders::new(&all, &keys, d, 2);
        let mut whole = Lister::new(&all, &keys, degree);
        let every: Vec<usize> = (0..n).collect();
        let (nb, cos) = start(&mut whole, &orders, &every);
        let odd: Vec<usize> = (0..n).filter(|i| i % 2 == 1).collect();
        let mut part = Lister::new(&all, &keys, degree);
        let (pnb, pcos) = start(&mut part, &orders, &odd);
        for (r, &i) in odd.iter().enumerate() {
            assert_eq!(pnb[r * degree..][..degree], nb[i * degree..][..degree]);
            assert_eq!(pcos[r * degree..][..degree], cos[i * degree..][..degree]);
        }
    }
}
