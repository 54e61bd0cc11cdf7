//! Merging today's events into yesterday's interaction snapshot, in differential dataflow.
//!
//! At a user's owner, today's events are first summed per (user, item) (a local sort). The
//! pairs that exist in both the snapshot and today's sums are the ones whose weight changes:
//! they go through a differential-dataflow computation where every contribution is an update
//! whose diff is its weight, so a removal ("unfavorite", a negative weight) is a retraction
//! that cancels the earlier weight. Pairs only in the snapshot or only in today's events pass
//! through unchanged: a nightly delta touches few pairs, and a collection of every pair costs
//! three times the time and five times the memory of the local sort (measured on 10 M events,
//! docs/BENCHMARKS.md).
//!
//! Weights are summed as fixed-point integers ([`to_fixed`]), so sums are exact and do not
//! depend on the order in which workers deliver events: the model stays bit-identical across
//! worker layouts. Records are keyed by the user's virtual shard (their [`Hashable`] is the
//! shard number and timely's exchange sends hash `h` to worker `h mod W`, which is
//! [`crate::cluster::owner`]), so they stay on the worker that already holds them.

use crate::cluster::CommError;
use crate::ids::RawId;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::input::Input;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use timely::worker::Worker;

/// Fixed-point scale of summed weights: 2⁻³² resolution; |weight| ≤ 1e9 per event leaves
/// room for about 4·10¹⁹ events per pair in an `i128`.
pub const WEIGHT_SCALE: f64 = 4_294_967_296.0;

/// An event weight as an exact fixed-point number.
pub fn to_fixed(w: f64) -> i128 {
    (w * WEIGHT_SCALE).round() as i128
}

/// A fixed-point weight back as a float.
pub fn from_fixed(w: i128) -> f64 {
    w as f64 / WEIGHT_SCALE
}

/// One consolidated pair: (user, item, summed fixed-point weight, newest event time).
pub type Pair = (RawId, RawId, i128, i64);

/// A (user, item) key routed by the user's virtual shard.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct PairKey {
    vshard: u32,
    user: RawId,
    item: RawId,
}

impl Hashable for PairKey {
    type Output = u64;
    fn hashed(&self) -> u64 {
        self.vshard as u64
    }
}

/// The merged pairs of this worker's users.
#[derive(Debug, Default)]
pub struct Merged {
    /// Every pair with a positive sum, sorted by (user, item): the next snapshot.
    pub positive: Vec<Pair>,
    /// Pairs whose sum is ≤ 0 (removed).
    pub nonpositive: u64,
}

/// Merges `today` (this worker's per-pair sums of new events) into `previous` (its users'
/// snapshot pairs); both sorted by (user, item) with unique keys. Collective: every worker
/// calls it at the same point. Fails instead of hanging when a peer does not finish within
/// `deadline`.
pub fn merge(
    worker: &mut Worker,
    deadline: Duration,
    virtual_shards: u32,
    today: Vec<Pair>,
    previous: Vec<Pair>,
) -> Result<Merged, CommError> {
    // Split off the pairs in both inputs; the rest passes through (without a copy when one
    // input is empty, as on a cold start).
    let (mut through, mut both) = (Vec::new(), Vec::new());
    if previous.is_empty() || today.is_empty() {
        through = if previous.is_empty() { today } else { previous };
    } else {
        through.reserve(previous.len() + today.len());
        let (mut a, mut b) = (
            previous.into_iter().peekable(),
            today.into_iter().peekable(),
        );
        loop {
            let order = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => (&x.0, &x.1).cmp(&(&y.0, &y.1)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            match order {
                std::cmp::Ordering::Less => through.push(a.next().expect("peeked")),
                std::cmp::Ordering::Greater => through.push(b.next().expect("peeked")),
                std::cmp::Ordering::Equal => {
                    let (old, new) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    if new.2 == 0 {
                        // Today's events cancel out: differential would drop a zero update,
                        // but the pair's newest time still moves (it orders the caps).
                        through.push((old.0, old.1, old.2, old.3.max(new.3)));
                    } else {
                        both.push(old);
                        both.push(new);
                    }
                }
            }
        }
    }

    let out: Rc<RefCell<Vec<(Pair, isize)>>> = Rc::default();
    let sink = out.clone();
    let (mut input, probe) = worker.dataflow::<u64, _, _>(move |scope| {
        // The value is (time, is an addition): an addition and a removal at the same time
        // stay apart, so a pair that cancels exactly still reaches `reduce`.
        let (input, updates) = scope.new_collection::<(PairKey, (i64, bool)), i128>();
        let probe = updates
            .reduce(|_pair, times: &[(&(i64, bool), i128)], out| {
                let sum: i128 = times.iter().map(|(_, w)| w).sum();
                let newest = times.iter().map(|(t, _)| t.0).max().unwrap_or(i64::MIN);
                out.push(((sum, newest), 1isize));
            })
            .inspect(move |((k, (w, t)), _, r)| {
                sink.borrow_mut()
                    .push(((k.user.clone(), k.item.clone(), *w, *t), *r))
            })
            .probe()
            .0;
        (input, probe)
    });
    for (user, item, w, t) in both {
        let vshard = user.vshard(virtual_shards);
        input.update((PairKey { vshard, user, item }, (t, w > 0)), w);
    }
    input.advance_to(1);
    input.flush();
    drop(input);
    let start = Instant::now();
    while probe.less_than(&1) {
        worker.step_or_park(Some(Duration::from_millis(50)));
        if start.elapsed() > deadline {
            return Err(CommError(format!(
                "stage 'ingest: merge snapshot' did not complete within {deadline:?} on worker {}: a peer is stopped, hung or unreachable (if the stage is just slow, raise `recflow run --deadline-secs`, default 600)",
                worker.index()
            )));
        }
    }
    let mut changed = std::mem::take(&mut *out.borrow_mut());
    differential_dataflow::consolidation::consolidate(&mut changed);
    through.extend(changed.into_iter().map(|(p, r)| {
        assert_eq!(r, 1, "a merged pair appears {r} times");
        p
    }));
    through.sort_unstable_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    let before = through.len();
    through.retain(|p| p.2 > 0);
    Ok(Merged {
        nonpositive: (before - through.len()) as u64,
        positive: through,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Sums = BTreeMap<(u64, u64), (i128, i64)>;

    fn pairs(m: &Sums) -> Vec<Pair> {
        m.iter()
            .map(|(&(u, i), &(w, t))| (RawId::Num(u), RawId::Num(i), w, t))
            .collect()
    }

    /// Runs `merge` on `workers` threads, each worker getting the pairs of its own users.
    fn run(workers: usize, today: Sums, previous: Sums) -> (Vec<Pair>, u64) {
        let out = timely::execute(timely::Config::process(workers), move |w| {
            let (me, peers) = (w.index(), w.peers());
            let mine = |m: &Sums| -> Vec<Pair> {
                pairs(m)
                    .into_iter()
                    .filter(|p| crate::cluster::owner(p.0.vshard(8), peers) == me)
                    .collect()
            };
            let m = merge(w, Duration::from_secs(60), 8, mine(&today), mine(&previous)).unwrap();
            (m.positive, m.nonpositive)
        })
        .unwrap();
        let mut all = (Vec::new(), 0);
        for r in out.join() {
            let (p, n) = r.unwrap();
            all.0.extend(p);
            all.1 += n;
        }
        all.0.sort();
        all
    }

    #[test]
    fn merge_equals_a_naive_sum_of_both_inputs() {
        let mut r = crate::ids::SplitMix::new(5);
        let (mut today, mut previous, mut naive) = (Sums::new(), Sums::new(), Sums::new());
        for _ in 0..2000 {
            let key = (r.below(40), r.below(60));
            let t = r.below(100) as i64;
            previous.insert(key, (to_fixed(1.0 + r.below(3) as f64), t));
        }
        for _ in 0..500 {
            let key = (r.below(50), r.below(60));
            let w = if r.below(3) == 0 { -2.0 } else { 0.5 };
            let e = today.entry(key).or_insert((0, i64::MIN));
            e.0 += to_fixed(w);
            e.1 = e.1.max(100 + r.below(10) as i64);
        }
        for m in [&previous, &today] {
            for (k, &(w, t)) in m {
                let e = naive.entry(*k).or_insert((0, i64::MIN));
                e.0 += w;
                e.1 = e.1.max(t);
            }
        }
        let nonpos = naive.values().filter(|v| v.0 <= 0).count() as u64;
        naive.retain(|_, v| v.0 > 0);
        for workers in [1, 3] {
            let (got, n) = run(workers, today.clone(), previous.clone());
            let mut want = pairs(&naive);
            want.sort();
            assert_eq!(got, want, "{workers} workers");
            assert_eq!(n, nonpos);
        }
    }

    #[test]
    fn a_removal_cancels_a_pair_exactly() {
        let mut previous = Sums::new();
        previous.insert((1, 2), (to_fixed(0.1) + to_fixed(0.2), 5));
        previous.insert((1, 3), (to_fixed(3.0), i64::MIN));
        let mut today = Sums::new();
        today.insert((1, 2), (to_fixed(-0.3), 7));
        today.insert((1, 3), (to_fixed(-3.0), i64::MIN));
        let (p, n) = run(2, today, previous);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(n, 2);
        // Events that cancel among themselves still move the pair's newest time.
        let mut previous = Sums::new();
        previous.insert((1, 1), (to_fixed(3.0), 5));
        let mut today = Sums::new();
        today.insert((1, 1), (0, 10));
        let (p, _) = run(2, today, previous);
        assert_eq!(p, vec![(RawId::Num(1), RawId::Num(1), to_fixed(3.0), 10)]);
    }
}
