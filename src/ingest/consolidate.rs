//! Consolidation: events summed per (user, item), merged into yesterday's interaction snapshot.
//!
//! At a user's owner, today's events are summed per (user, item) by a local sort
//! ([`sum_events`]) and merged with the snapshot pairs of its virtual shards by one pass over
//! both sorted lists ([`merge`]): a pair in both gets the sum of its weights and the newer
//! time, so a removal ("unfavorite", a negative weight) cancels the earlier weight, and pairs
//! whose sum is ≤ 0 are dropped.
//!
//! This was a differential-dataflow `reduce` until issue 16 measured it (benches/consolidate.rs,
//! docs/DEPENDENCIES.md): at 10 M events differential used idiomatically — integer keys, the
//! fixed-point weight as the difference type — took 3.0× the sort (cold start) and 1.9× this
//! path (a night: 10 M snapshot pairs + 500 k events), and the `reduce` over pairs in both took
//! 2.6× the plain merge. Everything here is local to the owner: no data crosses workers.
//!
//! Weights are summed as fixed-point integers ([`to_fixed`]), so sums are exact and do not
//! depend on the order in which workers deliver events: the model stays bit-identical across
//! worker layouts.

use crate::ingest::parse::Event;
use std::cmp::Ordering;

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

pub use crate::ids::Pair;

/// Sums events per (user, item) by a local sort: exact fixed-point sums and the newest time,
/// sorted by (user, item), so the result does not depend on the order events arrived in.
pub fn sum_events(mut events: Vec<Event>) -> Vec<Pair> {
    events.sort_unstable_by(|a, b| (&a.user, &a.item).cmp(&(&b.user, &b.item)));
    let mut sums: Vec<Pair> = Vec::new();
    for e in events {
        let w = to_fixed(e.weight as f64);
        match sums.last_mut() {
            Some(p) if p.0 == e.user && p.1 == e.item => {
                p.2 += w;
                p.3 = p.3.max(e.ts);
            }
            _ => sums.push((e.user, e.item, w, e.ts)),
        }
    }
    sums
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
/// snapshot pairs); both sorted by (user, item) with unique keys. Events that cancel among
/// themselves still move the pair's newest time (it orders the caps).
pub fn merge(today: Vec<Pair>, previous: Vec<Pair>) -> Merged {
    let mut all = Vec::with_capacity(previous.len() + today.len());
    let (mut a, mut b) = (
        previous.into_iter().peekable(),
        today.into_iter().peekable(),
    );
    loop {
        let order = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => (&x.0, &x.1).cmp(&(&y.0, &y.1)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => break,
        };
        match order {
            Ordering::Less => all.push(a.next().expect("peeked")),
            Ordering::Greater => all.push(b.next().expect("peeked")),
            Ordering::Equal => {
                let (old, new) = (a.next().expect("peeked"), b.next().expect("peeked"));
                all.push((old.0, old.1, old.2 + new.2, old.3.max(new.3)));
            }
        }
    }
    let before = all.len();
    all.retain(|p| p.2 > 0);
    Merged {
        nonpositive: (before - all.len()) as u64,
        positive: all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RawId;
    use std::collections::BTreeMap;

    type Sums = BTreeMap<(u64, u64), (i128, i64)>;

    fn pairs(m: &Sums) -> Vec<Pair> {
        m.iter()
            .map(|(&(u, i), &(w, t))| (RawId::Num(u), RawId::Num(i), w, t))
            .collect()
    }

    /// Runs `merge` on the pairs split into `parts` by user (as owners hold them), then
    /// joins the parts.
    fn run(parts: u64, today: Sums, previous: Sums) -> (Vec<Pair>, u64) {
        let mut all = (Vec::new(), 0);
        for part in 0..parts {
            let mine = |m: &Sums| -> Vec<Pair> {
                pairs(m)
                    .into_iter()
                    .filter(|p| matches!(p.0, RawId::Num(u) if u % parts == part))
                    .collect()
            };
            let m = merge(mine(&today), mine(&previous));
            all.0.extend(m.positive);
            all.1 += m.nonpositive;
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
