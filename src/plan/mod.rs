//! `recflow plan`: the cost of training a job on any layout, counted from the ingested data
//! without training, so a cluster can be sized before it is rented.
//!
//! The data is ingested once, in this process, with one worker (the model and its counts do
//! not depend on the layout that ingests it); [`cost::count`] then assigns the virtual shards
//! to `W` workers exactly as a run's ingest would ([`crate::side::Assignment`]) and counts each half-step's
//! flops, bytes, entities and interactions per worker, as training's report does.

pub mod cost;
pub mod shape;

use crate::cluster::Comm;
use crate::job::Job;
use crate::side::Assignment;
use cost::{HalfStepCost, Layout, SideData};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What `plan` prints for one layout.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Workers.
    pub workers: usize,
    /// Processes they run in (threads of one process share one gathered array per side).
    pub processes: usize,
    /// Every half-step of the job, per worker.
    pub half_steps: Vec<HalfStepCost>,
    /// Per side (users, items): the lower bound of a half-step's network traffic solving it
    /// (each needed vector once per process that needs it and does not own it).
    pub vector_bound_bytes: [u64; 2],
    /// Per side: max/mean over workers of the shard costs (solve + Gram flops) that
    /// assignment by cost gives, and that `v mod W` (the assignment before it) would give.
    pub shard_cost_imbalance: [ByAssignment; 2],
}

/// One quantity under the two assignments.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ByAssignment {
    /// Assignment by counted cost (what runs use).
    pub by_cost: f64,
    /// `v mod W`.
    pub round_robin: f64,
}

/// Ingests `job`'s input in this process (one worker; nothing is published, the store is not
/// touched) and returns both sides' shard degrees and interaction keys.
pub fn ingest_data(job: &Job) -> Result<[SideData; 2], String> {
    let files = if job.input.path.is_empty() {
        Vec::new()
    } else {
        crate::ingest::read::list_files(&job.input.path)?
    };
    let scratch = std::env::temp_dir().join(format!("recflow-plan-{}", std::process::id()));
    let mut job = job.clone();
    job.output.store = scratch.display().to_string();
    let out = timely::execute_directly(move |worker| {
        let mut comm = Comm::new(worker, Duration::from_secs(3600));
        crate::ingest::ingest(worker, &mut comm, &job, &files, &[])
            .map(|d| [side_data(&d.users), side_data(&d.items)])
            .map_err(|e| e.0)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    out
}

/// A whole side's degrees per shard and its entries' keys (one worker holds every shard).
fn side_data(s: &crate::side::Side) -> SideData {
    let degrees = (0..s.vshards.len())
        .map(|j| {
            (s.starts[j]..s.starts[j + 1])
                .map(|r| s.degree(r) as u64)
                .collect()
        })
        .collect();
    let keys = s
        .cols
        .iter()
        .map(|&c| s.gathered_keys[c as usize])
        .collect();
    SideData { degrees, keys }
}

/// Counts `job` on `workers` workers in one process.
pub fn plan(job: &Job, data: &[SideData; 2], workers: usize) -> Plan {
    let one = Layout {
        workers,
        processes: 1,
    };
    plan_layout(job, data, one)
}

/// Counts `job` on `layout`.
pub fn plan_layout(job: &Job, data: &[SideData; 2], layout: Layout) -> Plan {
    let workers = layout.workers;
    Plan {
        workers,
        processes: layout.processes,
        half_steps: cost::count(&job.als, data, layout),
        vector_bound_bytes: [0, 1].map(|t| cost::vector_bound(&job.als, data, layout, t)),
        shard_cost_imbalance: [0, 1].map(|t| {
            let costs: Vec<u64> = data[t]
                .degrees
                .iter()
                .map(|d| cost::shard_cost(&job.als, d.iter().copied()))
                .collect();
            balance(&costs, workers)
        }),
    }
}

/// Shard-cost max/mean over workers by cost and by `v mod W`.
fn balance(costs: &[u64], workers: usize) -> ByAssignment {
    let of = |a: Assignment| cost::imbalance(a.loads(costs, workers).into_iter().map(|x| x as f64));
    ByAssignment {
        by_cost: of(Assignment::by_cost(costs, workers)),
        round_robin: of(Assignment::round_robin(costs.len() as u32, workers)),
    }
}

/// Counts `job`'s training on `layout` for data of `shape` (the degree model of [`shape`]).
pub fn plan_shape(job: &Job, m: &shape::Modelled, layout: Layout) -> Plan {
    let (als, w) = (&job.als, layout.workers);
    let owners = [0, 1].map(|t| Assignment::by_cost(&m.sums[t].cost, w));
    let traffic = [0, 1].map(|t| shape::traffic(m, &owners, als.factors, layout, t));
    Plan {
        workers: w,
        processes: layout.processes,
        half_steps: cost::count_from(als, &m.sums, &owners, &traffic, layout),
        vector_bound_bytes: [0, 1].map(|t| traffic[t].sent.iter().sum()),
        shard_cost_imbalance: [0, 1].map(|t| balance(&m.sums[t].cost, w)),
    }
}

/// The table `plan` prints: one row per side for a steady-state iteration (the second, or
/// the only one), with the max/mean of each count over workers, the traffic split into
/// network (between processes) and within-process bytes, and the network next to its lower
/// bound.
pub fn table(p: &Plan) -> String {
    let it = p
        .half_steps
        .iter()
        .map(|h| h.iteration)
        .max()
        .unwrap_or(1)
        .min(2);
    let mut out = format!(
        "{} workers in {} process(es) (iteration {it}):\n{:<6} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7} {:>11} {:>7} {:>10} {:>10} {:>10} {:>6}\n",
        p.workers, p.processes, "half", "GFLOP max", "max/mn", "net sent mx", "max/mn",
        "net recv mx", "max/mn", "entities mx", "max/mn", "network MB", "within MB", "bound MB",
        "ratio"
    );
    for (t, h) in p
        .half_steps
        .iter()
        .filter(|h| h.iteration == it)
        .enumerate()
    {
        let mm = |f: &dyn Fn(&cost::WorkerCost) -> f64| h.max_mean(f);
        let r = |(max, mean): (f64, f64)| if mean > 0.0 { max / mean } else { 1.0 };
        let (fl, se, re, en) = (
            mm(&|w| w.flops as f64),
            mm(&|w| w.network_sent as f64),
            mm(&|w| w.network_received as f64),
            mm(&|w| w.entities as f64),
        );
        let bound = p.vector_bound_bytes[t.min(1)] as f64;
        let net = h.network_sent() as f64;
        let ratio = if bound > 0.0 {
            format!("{:.3}", net / bound)
        } else {
            "-".to_string()
        };
        out += &format!(
            "{:<6} {:>10.2} {:>7.3} {:>11.1} {:>7.3} {:>11.1} {:>7.3} {:>11.0} {:>7.3} {:>10.1} {:>10.1} {:>10.1} {:>6}\n",
            h.half, fl.0 / 1e9, r(fl), se.0 / 1e6, r(se), re.0 / 1e6, r(re), en.0, r(en),
            net / 1e6, h.within_process() as f64 / 1e6, bound / 1e6, ratio
        );
    }
    for (t, side) in ["users", "items"].iter().enumerate() {
        let b = p.shard_cost_imbalance[t];
        out += &format!(
            "{side}: shard cost max/mean {:.3} by cost, {:.3} with v mod W\n",
            b.by_cost, b.round_robin
        );
    }
    out
}

/// `recflow plan`: prints the table for each layout (`workers` split over `processes`, one
/// when not given); `json` also writes every half-step.
pub fn main(
    job: &Job,
    workers: &[usize],
    processes: Option<usize>,
    shape: Option<&shape::Shape>,
    json: Option<&PathBuf>,
) -> Result<(), String> {
    let layouts = layouts(workers, processes)?;
    let plans: Vec<Plan> = if let Some(sh) = shape {
        let v = job.shards.virtual_shards as usize;
        let m = shape::model(&job.als, sh, v);
        layouts.iter().map(|&l| plan_shape(job, &m, l)).collect()
    } else {
        let data = ingest_data(job)?;
        layouts
            .iter()
            .map(|&l| plan_layout(job, &data, l))
            .collect()
    };
    for p in &plans {
        println!("{}", table(p));
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&plans).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The layouts of `-w W1,W2,.. [-n N]`: each `W` over `N` processes (1 without `-n`).
pub fn layouts(workers: &[usize], processes: Option<usize>) -> Result<Vec<Layout>, String> {
    let n = processes.unwrap_or(1);
    workers
        .iter()
        .map(|&w| {
            if w == 0 || n == 0 || !w.is_multiple_of(n) {
                Err(format!(
                    "plan: {w} workers do not split evenly over -n {n} processes (timely runs the same number of threads in each): pick -w values that are multiples of -n"
                ))
            } else {
                Ok(Layout {
                    workers: w,
                    processes: n,
                })
            }
        })
        .collect()
}
