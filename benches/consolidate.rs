//! Ingest consolidation with retractions, three ways, on one worker (issue 16: is
//! differential-dataflow worth it for the relational part of ingest?).
//!
//! - `ingest`: what ingest does — `consolidate::sum_events` (sort by (user, item), sum runs),
//!   then `consolidate::merge` with the snapshot (one pass over both sorted lists). Until
//!   issue 16 the pairs in both went through a differential `reduce`; the `merge` column is
//!   the pure Rust merge written out here, and the figures in docs/DEPENDENCIES.md compare
//!   that old path too.
//! - `dd`: differential used idiomatically — every snapshot pair and every event is one update
//!   of an integer (user, item) key whose *difference* is the fixed-point weight (and newest
//!   time), so `consolidate` sums weights and a removal is a negative difference.
//! - `merge`: the same merge written out locally (a check on the library path).
//!
//! Two shapes: a cold start (10 M events, no snapshot) and a night (a 10 M-pair snapshot plus
//! 500 k new events, 10% of them removals). Each path's output is checked equal to the others'.
//!
//! `cargo bench --bench consolidate` (env EVENTS to change the 10 M).

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::input::Input;
use recflow::ids::{RawId, SplitMix};
use recflow::ingest::consolidate::{merge, sum_events, to_fixed, Pair};
use recflow::ingest::parse::Event;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

const USERS: u64 = 1_000_000;
const ITEMS: u64 = 100_000;

/// A difference that sums fixed-point weights and keeps the newest event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct WeightTime {
    w: i128,
    t: i64,
}

/// The identity is (0, −∞): a sum that cancels to weight 0 is *not* zero, because events
/// that cancel still move the pair's newest time (as in ingest).
impl IsZero for WeightTime {
    fn is_zero(&self) -> bool {
        self.w == 0 && self.t == i64::MIN
    }
}

impl Semigroup for WeightTime {
    fn plus_equals(&mut self, rhs: &Self) {
        self.w += rhs.w;
        self.t = self.t.max(rhs.t);
    }
}

fn num(r: &RawId) -> u64 {
    match r {
        RawId::Num(n) => *n,
        RawId::Str(_) => unreachable!("the bench uses integer ids"),
    }
}

/// `n` events: 85% fresh pairs, 15% repeats of an earlier pair; `removals` of them negative.
fn events(seed: u64, n: usize, removals: f64) -> Vec<Event> {
    let mut r = SplitMix::new(seed);
    let mut out: Vec<Event> = Vec::with_capacity(n);
    for i in 0..n {
        let (user, item) = if i > 0 && r.below(100) < 15 {
            let e = &out[r.below(i as u64) as usize];
            (e.user.clone(), e.item.clone())
        } else {
            (RawId::Num(r.below(USERS)), RawId::Num(r.below(ITEMS)))
        };
        let weight = if (r.below(1000) as f64) < removals * 1000.0 {
            -1.0
        } else {
            1.0 + r.below(4) as f32
        };
        out.push(Event {
            user,
            item,
            weight,
            ts: 1_700_000_000 + i as i64,
        });
    }
    out
}

fn today_path(ev: Vec<Event>, snap: Vec<Pair>) -> Vec<Pair> {
    merge(sum_events(ev), snap).positive
}

fn merge_path(ev: Vec<Event>, snap: Vec<Pair>) -> Vec<Pair> {
    let delta = sum_events(ev);
    let mut out = Vec::with_capacity(delta.len() + snap.len());
    let (mut a, mut b) = (snap.into_iter().peekable(), delta.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match (&x.0, &x.1).cmp(&(&y.0, &y.1)) {
                std::cmp::Ordering::Less => Some(true),
                std::cmp::Ordering::Greater => Some(false),
                std::cmp::Ordering::Equal => None,
            },
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => break,
        };
        match take_a {
            Some(true) => out.push(a.next().unwrap()),
            Some(false) => out.push(b.next().unwrap()),
            None => {
                let (x, y) = (a.next().unwrap(), b.next().unwrap());
                out.push((x.0, x.1, x.2 + y.2, x.3.max(y.3)));
            }
        }
    }
    out.retain(|p| p.2 > 0);
    out
}

fn dd_path(w: &mut timely::worker::Worker, ev: Vec<Event>, snap: Vec<Pair>) -> Vec<Pair> {
    let out: Rc<RefCell<Vec<(u64, WeightTime)>>> = Rc::default();
    let sink = out.clone();
    let (mut input, probe) = w.dataflow::<u64, _, _>(move |scope| {
        let (input, pairs) = scope.new_collection::<u64, WeightTime>();
        let probe = pairs
            .consolidate()
            .inspect(move |(k, _, r)| sink.borrow_mut().push((*k, *r)))
            .probe()
            .0;
        (input, probe)
    });
    let key = |u: &RawId, i: &RawId| num(u) << 32 | num(i);
    for (u, i, wt, t) in &snap {
        input.update(key(u, i), WeightTime { w: *wt, t: *t });
    }
    for e in &ev {
        input.update(
            key(&e.user, &e.item),
            WeightTime {
                w: to_fixed(e.weight as f64),
                t: e.ts,
            },
        );
    }
    drop((ev, snap));
    input.advance_to(1);
    input.flush();
    drop(input);
    while probe.less_than(&1) {
        w.step();
    }
    let mut got = std::mem::take(&mut *out.borrow_mut());
    got.sort_unstable_by_key(|p| p.0);
    got.into_iter()
        .filter(|(_, r)| r.w > 0)
        .map(|(k, r)| (RawId::Num(k >> 32), RawId::Num(k & 0xffff_ffff), r.w, r.t))
        .collect()
}

/// The fastest of three runs of `f` on fresh copies of the inputs (copies not timed).
fn best_of(
    ev: &[Event],
    snap: &[Pair],
    mut f: impl FnMut(Vec<Event>, Vec<Pair>) -> Vec<Pair>,
) -> (f64, Vec<Pair>) {
    let mut best = f64::INFINITY;
    let mut last = Vec::new();
    for _ in 0..3 {
        let (e, s) = (ev.to_vec(), snap.to_vec());
        let t = Instant::now();
        last = f(e, s);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, last)
}

fn main() {
    let n: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    timely::execute_directly(move |w| {
        let cold = events(1, n, 0.0);
        let snapshot = merge_path(events(2, n, 0.0), Vec::new());
        let night = events(3, n / 20, 0.10);
        for (shape, ev, snap) in [
            ("cold start", &cold, Vec::new()),
            ("night", &night, snapshot.clone()),
        ] {
            let (t_today, a) = best_of(ev, &snap, today_path);
            let (t_merge, b) = best_of(ev, &snap, merge_path);
            let (t_dd, c) = best_of(ev, &snap, |e, s| dd_path(w, e, s));
            for (name, other) in [("merge", &b), ("dd", &c)] {
                if let Some(i) = (0..a.len().max(other.len())).find(|&i| a.get(i) != other.get(i)) {
                    panic!(
                        "{shape}: {name} differs from ingest at pair {i}: {:?} vs {:?}",
                        a.get(i),
                        other.get(i)
                    );
                }
            }
            println!(
                "{shape:<10} events {:>9} snapshot {:>9} -> pairs {:>9}: ingest {t_today:6.2} s, merge {t_merge:6.2} s, dd {t_dd:6.2} s (dd/ingest {:.2}x)",
                ev.len(),
                snap.len(),
                a.len(),
                t_dd / t_today
            );
        }
    });
}
