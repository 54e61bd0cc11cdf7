//! The LSH scorers behind [`Scorer`]: user-bucket lists scored as blocks ([`ListScorer`]), the
//! head list as a dense scan plus bucket candidates one by one ([`HeadScan`]), and the plain
//! per-user candidate loop where the kernel does not run ([`Plain`]).

use super::catalog::Catalog;
use super::lists::{Lists, Scratch};
use super::lsh::Index;
use super::scan::{better, fma_dot, kernel_usable, score_candidates, ScanIndex};
use super::scorer::{block_of, Ranked, Scorer};
use super::topk::Tops;
use crate::side::Side;

/// Users per block in list scoring: each list is read once per block, for all its users.
const LIST_BLOCK: usize = 16384;

/// The scorer for an LSH index: lists where user buckets and the kernel are there, the head
/// scan where only the kernel is, else the plain loop. `codes`: every row's user bucket per
/// table (empty without user buckets); `full`: the catalogue's scan index (the kernel runs).
pub fn choose<'a>(
    cat: &'a Catalog,
    ix: &'a Index,
    codes: &'a [u32],
    full: Option<&ScanIndex>,
) -> Box<dyn Scorer + 'a> {
    let d = cat.factors.len() / cat.len().max(1);
    if full.is_some() && !codes.is_empty() {
        let mut refs: Vec<&[u32]> = Vec::with_capacity(ix.user_lists().len() + 1);
        if !ix.head.is_empty() {
            refs.push(&ix.head);
        }
        refs.extend(ix.user_lists().iter().map(|v| v.as_slice()));
        if let Some(lists) = Lists::build(&refs, &cat.factors, d) {
            return Box::new(ListScorer {
                lists,
                tables: ix.tables(),
                codes,
                head: !ix.head.is_empty(),
                keys: &cat.keys,
                scratch: Scratch::default(),
            });
        }
    }
    match full.and_then(|_| HeadScan::new(cat, ix, codes)) {
        Some(h) => Box::new(h),
        None => Box::new(Plain::new(cat, ix)),
    }
}

/// The scorer [`choose`] gives, for a few users at a time (calibration measures a sample): with
/// user buckets and the kernel, each call packs only the head list and the lists of its users'
/// buckets ([`SampleLists`]) instead of every bucket's list; the lists, scores and scored counts
/// are those of [`choose`]'s scorer.
pub fn for_sample<'a>(
    cat: &'a Catalog,
    ix: &'a Index,
    codes: &'a [u32],
    full: Option<&ScanIndex>,
) -> Box<dyn Scorer + 'a> {
    let d = cat.factors.len() / cat.len().max(1);
    if full.is_some() && !codes.is_empty() && kernel_usable(d) {
        return Box::new(SampleLists { cat, ix, codes });
    }
    choose(cat, ix, codes, full)
}

/// Each user's lists (list 0 the head list where there is one, then its bucket per table as
/// `bucket(id)`), row by row of `rows`: the `member` argument of [`Lists::score`].
fn members(
    codes: &[u32],
    (rows, tables): (&[usize], usize),
    head: bool,
    bucket: impl Fn(u32) -> u32,
) -> Vec<u32> {
    let shift = head as u32;
    let mut member = Vec::with_capacity(rows.len() * (tables + shift as usize));
    for &r in rows {
        if head {
            member.push(0);
        }
        member.extend(
            codes[r * tables..(r + 1) * tables]
                .iter()
                .map(|&c| bucket(c) + shift),
        );
    }
    member
}

/// Ranks `rows` against the packed `lists`, each row in its `per` lists of `member`.
#[allow(clippy::too_many_arguments)]
fn rank_lists(
    lists: &Lists,
    (per, member): (usize, &[u32]),
    keys: &[u64],
    scratch: &mut Scratch,
    users: &Side,
    rows: &[usize],
    ex: &[Vec<usize>],
    want: usize,
) -> Ranked {
    let mut ex_start = Vec::with_capacity(rows.len() + 1);
    let mut ex_items = Vec::new();
    ex_start.push(0u32);
    for e in ex {
        ex_items.extend(e.iter().map(|&i| i as u32));
        ex_start.push(ex_items.len() as u32);
    }
    let mut scored = vec![0u32; rows.len()];
    let best = lists.score(
        &block_of(users, rows),
        per,
        member,
        (&ex_start, &ex_items),
        keys,
        want,
        &mut scored,
        scratch,
    );
    Ranked {
        lists: best
            .into_iter()
            .map(|l| l.into_iter().map(|(s, _, i)| (i as usize, s)).collect())
            .collect(),
        scored: Some(scored.into_iter().map(u64::from).collect()),
    }
}

/// [`ListScorer`] packing per call only the lists its rows need. The head list stays list 0
/// and the buckets keep their order (renumbered `0..` by ascending id), so every user visits
/// its lists in the same order as in the whole index: the same pruning, scores and counts.
struct SampleLists<'a> {
    cat: &'a Catalog,
    ix: &'a Index,
    codes: &'a [u32],
}

impl Scorer for SampleLists<'_> {
    fn block(&self) -> usize {
        LIST_BLOCK
    }

    fn rank(&mut self, users: &Side, rows: &[usize], ex: &[Vec<usize>], want: usize) -> Ranked {
        let (t, d) = (self.ix.tables(), users.dim);
        let mut used: Vec<u32> = rows
            .iter()
            .flat_map(|&r| self.codes[r * t..(r + 1) * t].iter().copied())
            .collect();
        used.sort_unstable();
        used.dedup();
        let head = !self.ix.head.is_empty();
        let all = self.ix.user_lists();
        let mut refs: Vec<&[u32]> = Vec::with_capacity(used.len() + 1);
        if head {
            refs.push(&self.ix.head);
        }
        refs.extend(used.iter().map(|&b| all[b as usize].as_slice()));
        let lists = Lists::build(&refs, &self.cat.factors, d).expect("the kernel runs");
        let at = |c: u32| used.binary_search(&c).expect("a row's bucket is packed") as u32;
        let member = members(self.codes, (rows, t), head, at);
        let per = t + head as usize;
        let mut scratch = Scratch::default();
        let keys = &self.cat.keys;
        rank_lists(
            &lists,
            (per, &member),
            keys,
            &mut scratch,
            users,
            rows,
            ex,
            want,
        )
    }
}

/// User buckets with the kernel: the head list (list 0, everybody's) and each user's bucket
/// lists, every list scored for all of the block's users in it at once.
struct ListScorer<'a> {
    lists: Lists,
    codes: &'a [u32],
    tables: usize,
    head: bool,
    keys: &'a [u64],
    scratch: Scratch,
}

impl Scorer for ListScorer<'_> {
    fn block(&self) -> usize {
        LIST_BLOCK
    }

    fn rank(&mut self, users: &Side, rows: &[usize], ex: &[Vec<usize>], want: usize) -> Ranked {
        let t = self.tables;
        let member = members(self.codes, (rows, t), self.head, |c| c);
        let per = t + self.head as usize;
        let s = &mut self.scratch;
        rank_lists(
            &self.lists,
            (per, &member),
            self.keys,
            s,
            users,
            rows,
            ex,
            want,
        )
    }
}

/// Item hashing with the kernel: the head list is one dense scan per block, bucket candidates
/// are scored one by one and merged into the same lists.
struct HeadScan<'a> {
    cat: &'a Catalog,
    ix: &'a Index,
    codes: &'a [u32],
    /// Scan index over the head list's items.
    scan: ScanIndex,
    /// Catalogue index → position in the head list (u32::MAX: not in it).
    sub_of: Vec<u32>,
    /// Every item's norm.
    inorm: Vec<f32>,
    /// Stamp of the user an item was last admitted for.
    mark: Vec<u32>,
    stamp: u32,
    cand: Vec<usize>,
    buf: Vec<f32>,
}

impl<'a> HeadScan<'a> {
    fn new(cat: &'a Catalog, ix: &'a Index, codes: &'a [u32]) -> Option<HeadScan<'a>> {
        let (n, d) = (cat.len(), cat.factors.len() / cat.len().max(1));
        let keys: Vec<u64> = ix.head.iter().map(|&i| cat.keys[i as usize]).collect();
        let mut f = Vec::with_capacity(ix.head.len() * d);
        for &i in &ix.head {
            f.extend_from_slice(&cat.factors[i as usize * d..(i as usize + 1) * d]);
        }
        let scan = ScanIndex::build(&keys, &f, d)?;
        let mut sub_of = vec![u32::MAX; n];
        for (s, &i) in ix.head.iter().enumerate() {
            sub_of[i as usize] = s as u32;
        }
        let inorm = cat
            .factors
            .chunks_exact(d.max(1))
            .map(|y| fma_dot(y, y).sqrt())
            .collect();
        Some(HeadScan {
            cat,
            ix,
            codes,
            scan,
            sub_of,
            inorm,
            mark: vec![u32::MAX; n],
            stamp: 0,
            cand: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Adds item `i` to the current user's candidates unless it is already there, in the head
    /// list (scored as a block) or excluded (sorted).
    fn admit(&mut self, i: usize, excluded: &[usize]) {
        if self.mark[i] != self.stamp
            && self.sub_of[i] == u32::MAX
            && excluded.binary_search(&i).is_err()
        {
            self.mark[i] = self.stamp;
            self.cand.push(i);
        }
    }

    /// Scores the candidates for `x` (norm `nx`) and merges them into `best`. Candidates that
    /// Cauchy–Schwarz rules out against the current k-th best (with a margin for rounding)
    /// are dropped unscored.
    fn merge(&mut self, best: &mut Tops, x: &[f32], nx: f32) -> usize {
        let floor = best.threshold(0);
        let inorm = &self.inorm;
        let scored = self.cand.len();
        self.cand
            .retain(|&i| !(best.full(0) && nx * inorm[i] * (1.0 + 1e-4) < floor));
        score_candidates(x, &self.cat.factors, x.len(), &self.cand, &mut self.buf);
        for (&i, &sc) in self.cand.iter().zip(self.buf.iter()) {
            if sc >= best.threshold(0) {
                best.push(0, sc, self.cat.keys[i], i as u32);
            }
        }
        self.cand.clear();
        scored
    }

    /// One user's list from its head-list top `heads` and its buckets; returns the list and
    /// the items scored.
    fn user(
        &mut self,
        x: &[f32],
        r: usize,
        heads: &[(f32, usize)],
        ex: &[usize],
        want: usize,
    ) -> (Vec<(usize, f32)>, u64) {
        self.stamp = self.stamp.wrapping_add(1);
        let mut best = Tops::new(1, want);
        for &(sc, s) in heads {
            let i = self.ix.head[s] as usize;
            best.push(0, sc, self.cat.keys[i], i as u32);
        }
        // Bands in decreasing norm order. Cauchy–Schwarz (with a margin for rounding): once
        // ‖x‖ times a band's largest norm is below the k-th best score, neither that band nor
        // any later one can add an item, so their buckets are not even listed.
        let nx = fma_dot(x, x).sqrt();
        let mut scored = self.ix.head.len();
        let (ix, t) = (self.ix, self.ix.tables());
        if !self.codes.is_empty() {
            for j in 0..t {
                for &i in ix.user_bucket(self.codes[r * t + j]) {
                    self.admit(i as usize, ex);
                }
            }
            scored += self.merge(&mut best, x, nx);
        }
        let probes = if self.codes.is_empty() {
            ix.probes(x)
        } else {
            Vec::new()
        };
        for (b, &m) in ix.band_max.iter().enumerate() {
            if best.full(0) && nx * m * (1.0 + 1e-4) < best.threshold(0) {
                break;
            }
            ix.band_items(&probes, b as u32, |i| self.admit(i as usize, ex));
            scored += self.merge(&mut best, x, nx);
        }
        let list = best.list(0).map(|(sc, _, i)| (i as usize, sc)).collect();
        (list, scored as u64)
    }
}

impl Scorer for HeadScan<'_> {
    fn block(&self) -> usize {
        192
    }

    fn rank(&mut self, users: &Side, rows: &[usize], ex: &[Vec<usize>], want: usize) -> Ranked {
        let sub: Vec<Vec<usize>> = ex
            .iter()
            .map(|e| {
                let mut s: Vec<usize> = e
                    .iter()
                    .filter(|&&i| self.sub_of[i] != u32::MAX)
                    .map(|&i| self.sub_of[i] as usize)
                    .collect();
                s.sort_unstable();
                s
            })
            .collect();
        let heads = self.scan.top_k(&block_of(users, rows), &sub, want);
        let (mut lists, mut scored) = (Vec::with_capacity(rows.len()), Vec::new());
        for (j, &r) in rows.iter().enumerate() {
            let (l, s) = self.user(users.row(r), r, &heads[j], &ex[j], want);
            lists.push(l);
            scored.push(s);
        }
        Ranked {
            lists,
            scored: Some(scored),
        }
    }
}

/// Without the kernel: every candidate of a user scored by a plain dot product and sorted.
struct Plain<'a> {
    cat: &'a Catalog,
    ix: &'a Index,
    mark: Vec<u32>,
    stamp: u32,
}

impl<'a> Plain<'a> {
    fn new(cat: &'a Catalog, ix: &'a Index) -> Plain<'a> {
        Plain {
            cat,
            ix,
            mark: vec![u32::MAX; cat.len()],
            stamp: 0,
        }
    }
}

impl Scorer for Plain<'_> {
    fn block(&self) -> usize {
        (4_000_000 / self.cat.len().max(1)).clamp(1, 256)
    }

    fn rank(&mut self, users: &Side, rows: &[usize], ex: &[Vec<usize>], want: usize) -> Ranked {
        let d = users.dim;
        let (mut lists, mut scored) = (Vec::with_capacity(rows.len()), Vec::new());
        for (j, &r) in rows.iter().enumerate() {
            let x = users.row(r);
            self.stamp = self.stamp.wrapping_add(1);
            let (mark, stamp) = (&mut self.mark, self.stamp);
            let mut cand = Vec::new();
            self.ix.candidates(x, |i| {
                let i = i as usize;
                if mark[i] != stamp && ex[j].binary_search(&i).is_err() {
                    mark[i] = stamp;
                    cand.push(i);
                }
            });
            scored.push(cand.len() as u64);
            let f = &self.cat.factors;
            let mut best: Vec<(f32, u64, usize)> = cand
                .iter()
                .map(|&i| (super::dot(x, &f[i * d..(i + 1) * d]), self.cat.keys[i], i))
                .collect();
            best.sort_unstable_by(|a, b| better((a.0, a.1), (b.0, b.1)));
            best.truncate(want);
            lists.push(best.into_iter().map(|b| (b.2, b.0)).collect());
        }
        Ranked {
            lists,
            scored: Some(scored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RawId, SplitMix};
    use crate::job::{Lsh, Transform};
    use crate::recommend::user_tables::{bucket_ids, UserTable};

    /// The sample scorer packs only the ranked rows' lists; its lists, scores and scored counts
    /// must be the whole index's, for any subset of rows (overlapping bucket lists, seen items,
    /// users alone in a bucket, k beyond the lists).
    #[test]
    fn sample_lists_rank_like_the_whole_index() {
        let (n, d, nu) = (700usize, 16usize, 240usize);
        let mut r = SplitMix::new(5);
        // Rows along one direction with norms from 0.1 to 3.1: scores come close to the norms'
        // product, so Cauchy–Schwarz skips panels and the scored counts depend on the order in
        // which a user's lists are visited.
        let mut aligned = |rows: usize| -> Vec<f32> {
            let mut v = Vec::with_capacity(rows * d);
            for _ in 0..rows {
                let s = 0.1 + 3.0 * r.next_f64() as f32;
                v.extend((0..d).map(|_| s * (1.0 + 0.05 * r.next_normal() as f32)));
            }
            v
        };
        let cat = Catalog {
            keys: (0..n as u64).map(|i| i * 3 + 1).collect(),
            ids: Vec::new(),
            degrees: vec![0; n],
            factors: aligned(n),
        };
        let users = Side {
            ids: (0..nu as u64).map(RawId::Num).collect(),
            factors: aligned(nu),
            dim: d,
            ..Side::default()
        };
        let Some(full) = ScanIndex::build(&cat.keys, &cat.factors, d) else {
            return; // no AVX2 here: both give the plain scorers
        };
        let cfg = Lsh {
            transform: Transform::Users,
            tables: 2,
            head: 8,
            ..Lsh::default()
        };
        let mut ix = Index::build(&cfg, &cat.factors, &cat.keys, d);
        let mut r = SplitMix::new(6);
        // Table t has 9 + 4t buckets, each listing 0..60 items (best-first order is any order
        // here: both scorers read the same lists).
        let tables: Vec<UserTable> = (0..2u64)
            .map(|t| UserTable {
                codes: (0..9 + 4 * t).map(|c| c * 5 + t).collect(),
                dirs: Vec::new(),
                rows: (0..nu).map(|_| r.below(9 + 4 * t) as u32).collect(),
            })
            .collect();
        let lists: Vec<Vec<Vec<u32>>> = tables
            .iter()
            .map(|t| {
                let list = |r: &mut SplitMix| {
                    let mut v: Vec<u32> =
                        (0..r.below(60)).map(|_| r.below(n as u64) as u32).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                };
                t.codes.iter().map(|_| list(&mut r)).collect()
            })
            .collect();
        let refs: Vec<&UserTable> = tables.iter().collect();
        ix.install_user_lists(&refs, lists);
        let codes = bucket_ids(&refs, nu);
        let excluded: Vec<Vec<usize>> = (0..nu)
            .map(|_| (0..n).filter(|_| r.below(15) == 0).collect())
            .collect();
        let mut whole = choose(&cat, &ix, &codes, Some(&full));
        let mut sample = for_sample(&cat, &ix, &codes, Some(&full));
        for (step, k) in [(1usize, 10usize), (7, 10), (31, 3), (5, 300)] {
            let rows: Vec<usize> = (step / 2..nu).step_by(step).collect();
            let ex: Vec<Vec<usize>> = rows.iter().map(|&u| excluded[u].clone()).collect();
            let a = whole.rank(&users, &rows, &ex, k);
            let b = sample.rank(&users, &rows, &ex, k);
            assert_eq!(a.lists, b.lists, "rows every {step}, k {k}");
            assert_eq!(a.scored, b.scored, "rows every {step}, k {k}");
            assert!(a.lists.iter().any(|l| !l.is_empty()));
        }
    }
}
