//! The relational part of ingest, as a differential-dataflow computation: events (and, on a
//! warm start, the previous version's interaction snapshot) → one summed weight per
//! (user, item) → pairs with a positive sum → the per-user cap.
//!
//! A removal ("unfavorite") is an event with a negative weight, i.e. a retraction: it cancels
//! the pair's earlier weight wherever it arrives from. Weights are summed as fixed-point
//! integers ([`to_fixed`]), so the sum is exact and does not depend on the order in which
//! workers deliver events: the model stays bit-identical across worker layouts.
//!
//! Records are exchanged to the owner of the user's virtual shard (the key's [`Hashable`] is
//! the shard number, and timely's exchange sends hash `h` to worker `h mod W`, which is
//! [`crate::cluster::owner`]), so the output lands where the user's rows will live.

use crate::cluster::CommError;
use crate::ids::RawId;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::input::Input;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::cmp::Reverse;
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

/// A user routed by its virtual shard.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct UserKey {
    vshard: u32,
    user: RawId,
}

impl Hashable for UserKey {
    type Output = u64;
    fn hashed(&self) -> u64 {
        self.vshard as u64
    }
}

/// A user's pair in cap order: newest first, ties by the item's stable hash, then the id.
type Recent = (Reverse<i64>, u64, RawId, i128);

/// What this worker holds after consolidation (its users only).
#[derive(Default)]
pub struct Consolidated {
    /// Every pair with a positive sum, sorted by (user, item): the next interaction snapshot.
    pub positive: Vec<Pair>,
    /// The pairs that survive the per-user cap, sorted by (user, item).
    pub kept: Vec<Pair>,
    /// Pairs whose sum was ≤ 0 (removed).
    pub nonpositive: u64,
}

/// Feeds `events` and `snapshot` (both: this worker's share, any users) into the dataflow and
/// runs it to completion. `cap` = 0 means no per-user cap. Collective: every worker calls it
/// at the same point. Fails (instead of hanging) when a peer does not finish within `deadline`.
pub fn consolidate(
    worker: &mut Worker,
    deadline: Duration,
    virtual_shards: u32,
    cap: usize,
    events: impl IntoIterator<Item = (RawId, RawId, i128, i64)>,
) -> Result<Consolidated, CommError> {
    let positive: Rc<RefCell<Vec<(Pair, isize)>>> = Rc::default();
    let kept: Rc<RefCell<Vec<(Pair, isize)>>> = Rc::default();
    let nonpositive: Rc<RefCell<i64>> = Rc::default();
    let (p_out, k_out, n_out) = (positive.clone(), kept.clone(), nonpositive.clone());
    let (mut input, probe) = worker.dataflow::<u64, _, _>(move |scope| {
        // The value is (time, is an addition): additions and removals at the same time stay
        // apart, so a pair whose weight cancels exactly still reaches `reduce` and is counted.
        let (input, events) = scope.new_collection::<(PairKey, (i64, bool)), i128>();
        // Sum per pair (the diff is the weight) and keep the newest event time.
        let sums = events.reduce(|_pair, times: &[(&(i64, bool), i128)], out| {
            let sum: i128 = times.iter().map(|(_, w)| w).sum();
            let newest = times.iter().map(|(t, _)| t.0).max().unwrap_or(i64::MIN);
            out.push(((sum, newest), 1isize));
        });
        let pos =
            sums.clone()
                .filter(|(_, (sum, _))| *sum > 0)
                .inspect(move |((k, (w, t)), _, r)| {
                    p_out
                        .borrow_mut()
                        .push(((k.user.clone(), k.item.clone(), *w, *t), *r))
                });
        sums.filter(|(_, (sum, _))| *sum <= 0)
            .inspect(move |(_, _, r)| *n_out.borrow_mut() += *r as i64);
        let capped = if cap == 0 {
            pos
        } else {
            pos.map(|(k, (w, t))| {
                let h = k.item.stable_hash();
                let user = UserKey {
                    vshard: k.vshard,
                    user: k.user,
                };
                (user, (Reverse(t), h, k.item, w))
            })
            .reduce(move |_user, recent: &[(&Recent, isize)], out| {
                // Values arrive in `Recent` order: newest first.
                for (v, _) in recent.iter().take(cap) {
                    out.push(((*v).clone(), 1isize));
                }
            })
            .map(|(u, (Reverse(t), _, item, w))| {
                (
                    PairKey {
                        vshard: u.vshard,
                        user: u.user,
                        item,
                    },
                    (w, t),
                )
            })
        };
        let probe = capped
            .inspect(move |((k, (w, t)), _, r)| {
                k_out
                    .borrow_mut()
                    .push(((k.user.clone(), k.item.clone(), *w, *t), *r))
            })
            .probe()
            .0;
        (input, probe)
    });
    for (user, item, w, t) in events {
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
                "stage 'ingest: consolidate' did not complete within {deadline:?} on worker {}: a peer is stopped, hung or unreachable (raise cluster.deadline_secs if the stage is just slow)",
                worker.index()
            )));
        }
    }
    let settle = |v: Rc<RefCell<Vec<(Pair, isize)>>>| -> Vec<Pair> {
        let mut v = std::mem::take(&mut *v.borrow_mut());
        differential_dataflow::consolidation::consolidate(&mut v);
        v.into_iter()
            .map(|(p, r)| {
                assert_eq!(r, 1, "a consolidated pair appears {r} times");
                p
            })
            .collect()
    };
    let nonpositive = *nonpositive.borrow() as u64;
    Ok(Consolidated {
        positive: settle(positive),
        kept: settle(kept),
        nonpositive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        workers: usize,
        cap: usize,
        events: Vec<(u64, u64, f64, i64)>,
    ) -> (Vec<Pair>, Vec<Pair>, u64) {
        let out = timely::execute(timely::Config::process(workers), move |w| {
            let (me, peers) = (w.index(), w.peers());
            let mine: Vec<_> = events
                .iter()
                .enumerate()
                .filter(|(n, _)| n % peers == me)
                .map(|(_, &(u, i, wt, t))| (RawId::Num(u), RawId::Num(i), to_fixed(wt), t))
                .collect();
            let c = consolidate(w, Duration::from_secs(60), 8, cap, mine).unwrap();
            for p in c.positive.iter().chain(&c.kept) {
                assert_eq!(
                    crate::cluster::owner(p.0.vshard(8), peers),
                    me,
                    "pair not at its user's owner"
                );
            }
            (c.positive, c.kept, c.nonpositive)
        })
        .unwrap();
        let mut all = (Vec::new(), Vec::new(), 0);
        for r in out.join() {
            let (p, k, n) = r.unwrap();
            all.0.extend(p);
            all.1.extend(k);
            all.2 += n;
        }
        all.0.sort();
        all.1.sort();
        all
    }

    #[test]
    fn sums_retracts_and_caps_like_a_naive_reference() {
        let mut ev = Vec::new();
        let mut r = crate::ids::SplitMix::new(5);
        for n in 0..3000 {
            let w = if r.below(10) == 0 { -1.5 } else { 0.5 };
            ev.push((r.below(40), r.below(60), w, n as i64 % 97));
        }
        // Naive: sum per pair, keep positive, cap newest-first.
        let mut m: std::collections::BTreeMap<(u64, u64), (f64, i64)> = Default::default();
        for &(u, i, w, t) in &ev {
            let e = m.entry((u, i)).or_insert((0.0, i64::MIN));
            e.0 += w;
            e.1 = e.1.max(t);
        }
        let nonpos = m.values().filter(|v| v.0 <= 0.0).count() as u64;
        let pos: Vec<_> = m.iter().filter(|(_, v)| v.0 > 0.0).collect();
        let mut want_kept = Vec::new();
        for u in 0..40u64 {
            let mut mine: Vec<_> = pos.iter().filter(|((uu, _), _)| *uu == u).collect();
            mine.sort_by_key(|((_, i), (_, t))| (Reverse(*t), RawId::Num(*i).stable_hash()));
            want_kept.extend(mine.iter().take(5).map(|((u, i), _)| (*u, *i)));
        }
        want_kept.sort();
        for workers in [1, 3] {
            let (p, k, n) = run(workers, 5, ev.clone());
            assert_eq!(n, nonpos);
            assert_eq!(p.len(), pos.len());
            for (got, ((u, i), (w, t))) in p.iter().zip(&pos) {
                assert_eq!(
                    (&got.0, &got.1, got.3),
                    (&RawId::Num(*u), &RawId::Num(*i), *t)
                );
                assert_eq!(from_fixed(got.2), *w);
            }
            let got: Vec<(u64, u64)> = k
                .iter()
                .map(|p| match (&p.0, &p.1) {
                    (RawId::Num(u), RawId::Num(i)) => (*u, *i),
                    _ => unreachable!(),
                })
                .collect();
            assert_eq!(got, want_kept, "cap with {workers} workers");
        }
    }

    #[test]
    fn a_removal_cancels_a_pair_exactly() {
        let (p, k, n) = run(2, 0, vec![(1, 2, 0.1, 5), (1, 2, 0.2, 6), (1, 2, -0.3, 7)]);
        // 0.1 + 0.2 - 0.3 is not 0 in floating point; in fixed point it is.
        assert!(p.is_empty() && k.is_empty());
        assert_eq!(n, 1);
        // Cancelling at the same time (or without timestamps) is still a counted removal.
        let (p, _, n) = run(2, 0, vec![(1, 2, 3.0, i64::MIN), (1, 2, -3.0, i64::MIN)]);
        assert!(p.is_empty());
        assert_eq!(n, 1);
    }
}
