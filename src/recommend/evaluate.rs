//! Offline evaluation of the lists as they are made: per-vshard metric sums (so totals do not
//! depend on which worker summed what), catalogue coverage and sampled AUC.

use super::catalog::{held_out_rows, Catalog};
use super::msg::{EvalSums, RecMsg};
use super::recall::unit;
use crate::cluster::{Comm, CommError};
use crate::eval::{self, Metrics};
use crate::ids::RawId;
use crate::side::Side;
use faer::{Accum, MatMut, MatRef, Par};
use std::collections::HashMap;
use timely::worker::Worker;

/// Scores computed for AUC over the whole job (see `auc_rate`).
const AUC_SCORES: f64 = 4e8;

/// Tag of a held-out set's per-vshard metrics in [`EvalSums::metrics`] (vshards are < 2^16).
const SET_SHIFT: u32 = 24;
/// The vshard slot of a worker's coverage bitsets (after every real vshard).
const COVERAGE: u32 = (1 << SET_SHIFT) - 1;

/// The share of users whose AUC is computed: a hash-chosen share whose total work is about
/// AUC_SCORES scores (all users on small jobs; ~4000 at 100 k items), so evaluation stays a
/// small part of the stage at any scale. `recflow eval STORE` draws the same sample.
pub fn auc_rate(catalogue: usize, total_users: u64) -> f64 {
    let n = catalogue.max(1) as f64;
    (AUC_SCORES / (n * total_users.max(1) as f64)).min(1.0)
}

/// Whether user `id` is in the AUC sample drawn at `rate` with `seed` (`eval.seed`).
pub fn auc_sampled(id: &RawId, rate: f64, seed: u64) -> bool {
    unit(id.stable_hash() ^ seed) <= rate
}

/// Every item's score for one user vector `x` against row-major item `factors` (one row of
/// GEMM, as the dense scorer computes a block's): into `out`.
pub fn score_row(x: &[f32], factors: &[f32], out: &mut Vec<f32>) {
    let d = x.len();
    let n = factors.len() / d.max(1);
    out.resize(n, 0.0);
    let x = MatRef::from_row_major_slice(x, 1, d);
    let y = MatRef::from_row_major_slice(factors, n, d);
    let s = MatMut::from_row_major_slice_mut(out, 1, n);
    faer::linalg::matmul::matmul(s, Accum::Replace, x, y.transpose(), 1.0, Par::Seq);
}

/// This worker's evaluation sums, one entry per held-out set.
pub struct Evaluation<'a> {
    users: &'a Side,
    cat: &'a Catalog,
    /// Held-out catalogue indices per user row, per set.
    tests: Vec<HashMap<usize, Vec<usize>>>,
    /// Per-vshard sums, per set.
    parts: Vec<Vec<(u32, Metrics)>>,
    /// Coverage: one bitset per set and cut-off for the whole worker (a union: any order).
    coverage: Vec<Metrics>,
    /// Share of users whose AUC is computed (None: no AUC, only exact mode has it).
    auc_rate: Option<f64>,
    auc_row: Vec<f32>,
    seed: u64,
}

impl<'a> Evaluation<'a> {
    /// Sums for each set of `held` (user id, item key) at cut-offs `ks`; `total_users` over
    /// all workers; `auc`: whether AUC is computed (exact mode).
    pub fn new(
        users: &'a Side,
        cat: &'a Catalog,
        held: &[&[(RawId, u64)]],
        ks: &[usize],
        total_users: u64,
        auc: bool,
        seed: u64,
    ) -> Evaluation<'a> {
        let parts = (0..held.len() as u32)
            .map(|set| {
                let vs = users.vshards.iter();
                vs.map(|&v| (v | set << SET_SHIFT, Metrics::new(ks)))
                    .collect()
            })
            .collect();
        let rate = auc_rate(cat.len(), total_users);
        Evaluation {
            users,
            cat,
            tests: held.iter().map(|h| held_out_rows(users, cat, h)).collect(),
            parts,
            coverage: vec![Metrics::new(ks); held.len()],
            auc_rate: auc.then_some(rate),
            auc_row: Vec::new(),
            seed,
        }
    }

    /// Adds row `r`'s list (`(catalogue index, score)`, best first) to set `set`; `seen`: its
    /// training items, `full`: every item's score for it where already computed.
    pub fn add(
        &mut self,
        set: usize,
        r: usize,
        list: &[(usize, f32)],
        seen: &[usize],
        full: Option<&[f32]>,
    ) {
        let Some(t) = self.tests[set].get(&r) else {
            return;
        };
        let users = self.users;
        let j = users.starts.partition_point(|&s| s <= r) - 1;
        let m = &mut self.parts[set][j].1;
        let keys: Vec<u64> = list.iter().map(|&(i, _)| i as u64).collect();
        let tk: Vec<u64> = t.iter().map(|&i| i as u64).collect();
        m.add_user(&keys, &tk);
        let idx: Vec<usize> = list.iter().map(|&(i, _)| i).collect();
        self.coverage[set].cover(&idx, self.cat.len());
        let Some(rate) = self.auc_rate else {
            return;
        };
        if !auc_sampled(&users.ids[r], rate, self.seed) {
            return;
        }
        let known: Vec<usize> = t.iter().copied().filter(|&i| i != usize::MAX).collect();
        let full = match full {
            Some(f) => f,
            None => {
                score_row(users.row(r), &self.cat.factors, &mut self.auc_row);
                &self.auc_row
            }
        };
        if let Some(a) = eval::auc(full, &known, seen) {
            self.parts[set][j].1.add_auc(a);
        }
    }

    /// Held-out sets.
    pub fn sets(&self) -> usize {
        self.tests.len()
    }

    /// Sends this worker's sums to worker 0 (with `counts`, summed there too); worker 0 gets
    /// the job's metrics, summed in vshard order, and the summed counts.
    pub fn finish(
        self,
        worker: &mut Worker,
        comm: &mut Comm,
        counts: Vec<u64>,
        ks: &[usize],
    ) -> Result<(Vec<Metrics>, Vec<u64>), CommError> {
        let sets = self.tests.len();
        let mut sums: Vec<(u32, Metrics)> = self.parts.into_iter().flatten().collect();
        for (set, c) in self.coverage.into_iter().enumerate() {
            sums.push((COVERAGE | (set as u32) << SET_SHIFT, c));
        }
        let mut total = vec![0u64; counts.len()];
        let ch = &mut comm.channel::<RecMsg>(worker);
        let mine = RecMsg::Eval(EvalSums {
            metrics: sums,
            counters: counts,
        });
        let mut all = Vec::new();
        for (_, m) in ch.gather_to_leader(worker, "recommend: metrics", mine)? {
            if let RecMsg::Eval(mut e) = m {
                all.append(&mut e.metrics);
                total.iter_mut().zip(e.counters).for_each(|(a, b)| *a += b);
            }
        }
        let mut metrics = vec![Metrics::new(ks); sets];
        all.sort_by_key(|p| p.0);
        for (tag, m) in &all {
            metrics[(tag >> SET_SHIFT) as usize].merge(m);
        }
        Ok((metrics, total))
    }
}
