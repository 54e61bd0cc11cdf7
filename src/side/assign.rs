//! Which worker owns which virtual shard: longest-processing-time-first over counted costs.
//!
//! Virtual shards are the unit of the arithmetic (partial Grams, objective partials and keys are
//! per shard), so moving a shard between workers never changes a number in the model; only how
//! much each worker has to do. `v mod W` would ignore that shards differ in work (a popular
//! item makes its shard heavy); here each shard's cost is counted from the ingested data and
//! shards go, heaviest first, to the least-loaded worker. The inputs are the same on every
//! worker and the procedure is deterministic (ties by shard id, then worker index), so every
//! worker derives the same assignment without a leader.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// The owner of each virtual shard of one side (index: shard id). Cheap to clone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    owner: Arc<[u32]>,
}

impl Assignment {
    /// Today's round-robin layout, `v mod W` (ingest's staging layout, before costs are known).
    pub fn round_robin(virtual_shards: u32, workers: usize) -> Assignment {
        Assignment {
            owner: (0..virtual_shards)
                .map(|v| (v as usize % workers) as u32)
                .collect(),
        }
    }

    /// Longest-processing-time-first: shards by cost descending (ties: lower shard id first),
    /// each to the worker with the least cost so far (ties: lower worker index). Its makespan is
    /// at most 4/3 of the optimum, and within one shard's cost of the mean.
    pub fn by_cost(costs: &[u64], workers: usize) -> Assignment {
        let mut order: Vec<u32> = (0..costs.len() as u32).collect();
        order.sort_by_key(|&v| (Reverse(costs[v as usize]), v));
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> =
            (0..workers as u32).map(|w| Reverse((0, w))).collect();
        let mut owner = vec![0u32; costs.len()];
        for v in order {
            let Reverse((load, w)) = heap.pop().expect("at least one worker");
            owner[v as usize] = w;
            heap.push(Reverse((load + costs[v as usize], w)));
        }
        Assignment {
            owner: owner.into(),
        }
    }

    /// The worker that owns shard `v`.
    pub fn owner(&self, v: u32) -> usize {
        self.owner[v as usize] as usize
    }

    /// Number of virtual shards.
    pub fn shards(&self) -> u32 {
        self.owner.len() as u32
    }

    /// The shards worker `w` owns, ascending.
    pub fn owned(&self, w: usize) -> Vec<u32> {
        (0..self.shards()).filter(|&v| self.owner(v) == w).collect()
    }

    /// Per worker (`workers` of them): the sum of `costs` over its shards.
    pub fn loads(&self, costs: &[u64], workers: usize) -> Vec<u64> {
        let mut l = vec![0u64; workers];
        for (v, &c) in costs.iter().enumerate() {
            l[self.owner(v as u32)] += c;
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The best makespan by trying every assignment (tiny inputs only).
    fn optimum(costs: &[u64], w: usize) -> u64 {
        let n = costs.len();
        let mut best = u64::MAX;
        for code in 0..w.pow(n as u32) {
            let mut l = vec![0u64; w];
            let mut c = code;
            for &x in costs {
                l[c % w] += x;
                c /= w;
            }
            best = best.min(*l.iter().max().unwrap());
        }
        best
    }

    #[test]
    fn lpt_is_within_its_bound_of_the_optimum_and_covers_every_shard() {
        let mut s = 7u64;
        for case in 0..200 {
            let n = 1 + case % 7;
            let w = 1 + case % 3;
            let costs: Vec<u64> = (0..n)
                .map(|_| {
                    s = crate::ids::mix64(s);
                    s % 1000
                })
                .collect();
            let a = Assignment::by_cost(&costs, w);
            let loads = a.loads(&costs, w);
            assert_eq!(loads.iter().sum::<u64>(), costs.iter().sum::<u64>());
            let opt = optimum(&costs, w);
            let max = *loads.iter().max().unwrap();
            assert!(
                3 * max <= 4 * opt + 3,
                "{costs:?} on {w}: {max} vs optimum {opt}"
            );
            let owned: usize = (0..w).map(|x| a.owned(x).len()).sum();
            assert_eq!(owned, n);
        }
    }

    #[test]
    fn lpt_breaks_ties_by_shard_then_worker_and_is_deterministic() {
        let a = Assignment::by_cost(&[5, 5, 5, 5, 9], 2);
        // 9 → w0; 0 → w1 (5); 1 → w1 (5 < 9); 2 → w0 (9 < 10); 3 → w1 (10 < 14).
        assert_eq!(a.owned(0), vec![2, 4]);
        assert_eq!(a.owned(1), vec![0, 1, 3]);
        assert_eq!(a, Assignment::by_cost(&[5, 5, 5, 5, 9], 2));
    }

    #[test]
    fn round_robin_is_v_mod_w() {
        let a = Assignment::round_robin(10, 3);
        assert_eq!(a.owned(1), vec![1, 4, 7]);
        assert_eq!(a.owner(9), 0);
    }
}
