//! Successive halving (Jamieson & Talwalkar 2016; the synchronous form of Hyperband's inner
//! loop) with iterations as the budget.
//!
//! Every configuration trains to the first rung's iteration count and is evaluated; the best
//! third (by their best validation value so far, ties to the earlier trial) train on to the
//! next rung, and so on up to the job's `als.iterations`. Rungs double from `--eval-every`
//! (2, 4, 8, … and the maximum), so most of the budget goes to the few configurations that
//! look best, and a large-`d` configuration is never trained to the end unless it earns it.
//! A survivor whose value did not improve at a rung stops there (early stopping): it keeps its
//! best value and iteration count and stays in the ranking, but trains no further.
//!
//! Everything the search decides on is a validation value of a model that is bit-identical for
//! any worker layout, so the search is too (except where `--time-limit` cuts it short).

use super::trial::Live;
use super::TuneOptions;
use std::time::Instant;

/// Keep this share (1/η) of the configurations at each rung.
pub const ETA: usize = 3;

/// The rungs' iteration counts: `first`, doubling, capped by and ending at `max`.
pub fn rungs(first: usize, max: usize) -> Vec<usize> {
    let mut r = Vec::new();
    let mut it = first.max(1);
    while it < max {
        r.push(it);
        it *= 2;
    }
    r.push(max.max(1));
    r
}

/// Indices of the configurations that go on: the best ⌈n/η⌉ by (value desc, trial index).
pub fn survivors(values: &[(usize, f64)]) -> Vec<usize> {
    let mut v: Vec<(usize, f64)> = values.iter().filter(|x| x.1.is_finite()).copied().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(values.len().div_ceil(ETA));
    v.into_iter().map(|x| x.0).collect()
}

/// Runs the halving search over `live` (every trial untrained); returns them with their best
/// evaluations. `over_time` says whether the time limit has passed.
pub(crate) fn search(
    live: &mut [Live],
    o: &TuneOptions,
    over_time: &dyn Fn() -> bool,
) -> Result<(), String> {
    let max = live.iter().map(Live::max_iterations).max().unwrap_or(1);
    let ladder = rungs(o.eval_every, max);
    let mut alive: Vec<usize> = (0..live.len()).collect();
    let mut stopped = vec![false; live.len()];
    for (k, &to) in ladder.iter().enumerate() {
        for &i in &alive {
            if stopped[i] {
                continue;
            }
            if over_time() {
                eprintln!(
                    "tune: time limit reached at rung {} ({to} iterations)",
                    k + 1
                );
                return Ok(());
            }
            let t = Instant::now();
            let improved = live[i].advance(to, o)?;
            // Early stopping: no better than its best so far, or at its own maximum.
            stopped[i] = !improved || live[i].done >= live[i].max_iterations();
            progress(&live[i], k, ladder.len(), o, t.elapsed().as_secs_f64());
        }
        if k + 1 == ladder.len() {
            break;
        }
        let values: Vec<(usize, f64)> = alive.iter().map(|&i| (i, live[i].best)).collect();
        let keep = survivors(&values);
        for &i in &alive {
            if !keep.contains(&i) {
                live[i].drop_store();
            }
        }
        alive.retain(|i| keep.contains(i));
        if alive.iter().all(|&i| stopped[i]) {
            break;
        }
    }
    Ok(())
}

fn progress(t: &Live, rung: usize, rungs: usize, o: &TuneOptions, secs: f64) {
    let desc: Vec<String> = t.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!(
        "tune: rung {}/{} trial {:>3}  {} = {:.5} at {} it. (best {:.5} at {})  ({secs:.1}s)  {}",
        rung + 1,
        rungs,
        t.index,
        o.metric,
        t.curve.last().map_or(f64::NAN, |c| c.1),
        t.done,
        t.best,
        t.best_it,
        desc.join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_double_up_to_the_maximum() {
        assert_eq!(rungs(2, 15), vec![2, 4, 8, 15]);
        assert_eq!(rungs(2, 16), vec![2, 4, 8, 16]);
        assert_eq!(rungs(2, 4), vec![2, 4]);
        assert_eq!(rungs(2, 1), vec![1]);
        assert_eq!(rungs(0, 3), vec![1, 2, 3]);
    }

    #[test]
    fn survivors_are_the_best_third_ties_to_the_earlier_trial() {
        let v = [
            (0, 0.1),
            (1, 0.5),
            (2, 0.5),
            (3, f64::NAN),
            (4, 0.9),
            (5, 0.2),
            (6, 0.3),
        ];
        // ⌈7/3⌉ = 3: 0.9, then the tie 0.5 / 0.5 in trial order.
        assert_eq!(survivors(&v), vec![4, 1, 2]);
        assert_eq!(survivors(&[(7, 0.0)]), vec![7]);
        assert!(survivors(&[(0, f64::NAN)]).is_empty());
    }
}
