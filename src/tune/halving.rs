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
//! Then one step of local refinement ([`neighbours`]): the winner's value of each log-range
//! key ×3 and ÷3 (a linear range: ± a sixth of it), one key at a time, trained to the
//! winner's iteration count — random draws are sparse in three or four dimensions, and the
//! best configuration's neighbourhood is where a better one most likely is.
//!
//! Everything the search decides on is a validation value of a model that is bit-identical for
//! any worker layout, so the search is too (except where `--time-limit` cuts it short).

use super::trial::{Live, Trainer};
use super::{fmt_value, Param, Space, TuneOptions};
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
    trainer: &mut dyn Trainer,
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
            let improved = live[i].advance(trainer, to, o)?;
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
                live[i].finish(trainer)?;
            }
        }
        alive.retain(|i| keep.contains(i));
        if alive.iter().all(|&i| stopped[i]) {
            break;
        }
    }
    Ok(())
}

/// The winner's neighbours: for each range key, its value moved one step each way (×3 and
/// ÷3 on a log range, ± (hi − lo)/6 on a linear one, clipped to the range), the other keys
/// and the iteration count kept. Empty when no trial finished.
pub(crate) fn neighbours(params: &[Param], live: &[Live]) -> Vec<Vec<(String, String)>> {
    let Some(best) = super::best_by(live, |t| t.best) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in params {
        let Space::Range { lo, hi, log, int } = p.space else {
            continue;
        };
        let Some(v) = best
            .set
            .iter()
            .find(|(k, _)| *k == p.key)
            .and_then(|(_, v)| v.parse::<f64>().ok())
        else {
            continue;
        };
        let steps = if log {
            [v / 3.0, v * 3.0]
        } else {
            [v - (hi - lo) / 6.0, v + (hi - lo) / 6.0]
        };
        for x in steps {
            let x = fmt_value(x.clamp(lo, hi), int);
            if x == fmt_value(v, int) {
                continue;
            }
            let mut set = best.set.clone();
            set.iter_mut()
                .filter(|(k, _)| *k == p.key)
                .for_each(|kv| kv.1 = x.clone());
            set.retain(|(k, _)| k != "als.iterations");
            set.push(("als.iterations".into(), best.best_it.to_string()));
            out.push(set);
        }
    }
    out
}

/// Trains each neighbour straight to its iteration count (their sets carry it).
pub(crate) fn refine(
    live: &mut [Live],
    trainer: &mut dyn Trainer,
    o: &TuneOptions,
    over_time: &dyn Fn() -> bool,
) -> Result<(), String> {
    let n = live.len();
    for (i, t) in live.iter_mut().enumerate() {
        if over_time() {
            eprintln!("tune: time limit reached after {i} of {n} refinement trials");
            return Ok(());
        }
        let s = Instant::now();
        t.advance(trainer, t.max_iterations(), o)?;
        progress(t, 0, 0, o, s.elapsed().as_secs_f64());
        t.finish(trainer)?;
    }
    Ok(())
}

fn progress(t: &Live, rung: usize, rungs: usize, o: &TuneOptions, secs: f64) {
    let desc: Vec<String> = t.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let stage = if rungs == 0 {
        "refine ".to_string()
    } else {
        format!("rung {}/{rungs}", rung + 1)
    };
    eprintln!(
        "tune: {stage} trial {:>3}  {} = {:.5} at {} it. (best {:.5} at {})  ({secs:.1}s)  {}",
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
    fn neighbours_move_one_range_key_a_step_each_way_clipped() {
        let params = vec![
            super::super::parse_param("a.l=1e-3..1:log").unwrap(),
            super::super::parse_param("a.n=1..10").unwrap(),
            super::super::parse_param("a.s=x,y").unwrap(),
        ];
        let job = crate::job::Job::parse("", &[]).unwrap();
        let set = |l: &str, n: &str| {
            vec![
                ("a.l".to_string(), l.to_string()),
                ("a.n".to_string(), n.to_string()),
                ("a.s".to_string(), "x".to_string()),
            ]
        };
        let mut a = Live::new(1, set("5.0000e-1", "9"), job.clone(), "t1".into());
        a.best = 0.5;
        a.best_it = 4;
        let mut b = Live::new(2, set("1.0000e-2", "2"), job, "t2".into());
        b.best = 0.4;
        let got = neighbours(&params, &[a, b]);
        let it = ("als.iterations".to_string(), "4".to_string());
        let with = |l: &str, n: &str| {
            let mut s = set(l, n);
            s.push(it.clone());
            s
        };
        // l: 0.5/3 and 0.5·3 clipped to 1; n: 9 − 1.5 → 8 (rounded), 9 + 1.5 clipped to 10.
        assert_eq!(
            got,
            vec![
                with("1.6667e-1", "9"),
                with("1.0000e0", "9"),
                with("5.0000e-1", "8"),
                with("5.0000e-1", "10"),
            ]
        );
    }

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
