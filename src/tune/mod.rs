//! `recflow tune`: train and evaluate many configurations of one job on `eval.valid`, publish
//! the best.
//!
//! Each trial is the job with some keys overridden (`--param`), trained without `eval.test`
//! (the trial's job has none, so the file is never opened) and evaluated on `eval.valid`. The
//! trials run on live workers that ingested the input once ([`session`]): worker 0 drives the
//! search here and every worker executes each step. The winner (by `--metric`, ties to the
//! earlier trial) is then run as a normal job into `output.store` on the same workers, with
//! `eval.test` restored (and, with `--refit`, `eval.valid` added to the input). Trials are
//! drawn from `--seed` only and every step is bit-identical for any worker count or process
//! layout, so the whole search is deterministic (except where `--time-limit` cuts it short).
//!
//! Early stopping (`--early-stop P`): a trial trains `--eval-every` iterations at a time, each
//! chunk continuing from the previous one's factors (the same model as training straight
//! through), and stops after P chunks without a better validation value; its iteration count
//! becomes the best chunk's, and the winner is refit with that count.
//!
//! Successive halving (`--search halving`, the default for ranges) spends the iterations on
//! the configurations that look best ([`halving`]).

mod halving;
mod page;
pub mod session;
mod space;
mod trial;

pub use space::{assignments, default_space, parse_param, Param, Search, Space};
use space::{default_trials, fmt_value, grid, random_draws};

use crate::cluster::CommError;
use crate::job::{Job, JobError};
use crate::run::RunOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Tuning options.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Grid, random or successive halving; `None`: [`Search::default_for`].
    pub search: Option<Search>,
    /// The searched keys.
    pub params: Vec<Param>,
    /// Trials (random search); `None` with lists only: the full grid.
    pub trials: Option<usize>,
    /// Seed of the random search.
    pub seed: u64,
    /// `ndcg@20`, `recall@10`, `auc`, … of `valid_metrics` (larger is better).
    pub metric: String,
    /// Start no trial after this many minutes.
    pub time_limit_min: Option<f64>,
    /// Retrain the winner on the input plus `eval.valid` before publishing.
    pub refit: bool,
    /// Early stopping: stop a trial after this many evaluations without improvement.
    pub patience: Option<usize>,
    /// Iterations between a trial's evaluations with early stopping.
    pub eval_every: usize,
    /// Where trials, `tune.json`, `tune.html` and `best.toml` go.
    pub out: PathBuf,
    /// Workers etc.
    pub run: RunOptions,
}

/// One trial's assignment and outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Trial {
    /// 1-based.
    pub index: usize,
    /// `key=value` per parameter.
    pub set: Vec<(String, String)>,
    /// The metric on `eval.valid` (the best evaluation's with early stopping).
    pub value: f64,
    /// Iterations the value was reached at.
    pub iterations: usize,
    /// All validation metrics.
    pub valid_metrics: serde_json::Value,
    /// Every evaluation of the trial: (iterations, value).
    pub curve: Vec<(usize, f64)>,
    /// Wall seconds.
    pub secs: f64,
    /// Why training broke down, if it did (then `value` is not a number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A trial's job: the base with the assignment, no test set, a scratch store, no files.
fn trial_job(text: &str, base: &Path, sets: &[String], store: &Path) -> Result<Job, JobError> {
    let mut job = Job::parse_in(text, sets, Some(base))?;
    job.eval.test = None;
    job.recommend.k = 0;
    job.similar.k = 0;
    job.model.warm_start = false;
    job.output.store = store.display().to_string();
    job.output.keep_versions = 1;
    if job.eval.valid.is_none() {
        return Err(JobError(
            "recflow tune needs eval.valid (held-out pairs to choose on; eval.test is never used for that)".into(),
        ));
    }
    if job.eval.holdout > 0.0 {
        return Err(JobError(
            "recflow tune: use eval.valid, not eval.holdout (the holdout would be tuned on)".into(),
        ));
    }
    Ok(job)
}

fn overrides(job_sets: &[String], a: &[(String, String)]) -> Vec<String> {
    let mut s = job_sets.to_vec();
    s.extend(a.iter().map(|(k, v)| format!("{k}={v}")));
    s
}

/// What every process knows before the workers start: the job text, the searched space and
/// the drawn assignments.
struct Plan {
    text: String,
    base: PathBuf,
    sets: Vec<String>,
    params: Vec<Param>,
    search: Search,
    assignments: Vec<Vec<(String, String)>>,
}

impl Plan {
    fn new(job_path: &Path, job_sets: &[String], o: &TuneOptions) -> Result<Plan, String> {
        let text = std::fs::read_to_string(job_path)
            .map_err(|e| format!("cannot read job file {}: {e}", job_path.display()))?;
        let base = job_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let params = if o.params.is_empty() {
            default_space()
        } else {
            o.params.clone()
        };
        let search = o
            .search
            .unwrap_or_else(|| Search::default_for(&params, o.trials));
        let assignments = match search {
            Search::Grid if params.iter().any(|p| !matches!(p.space, Space::List(_))) => {
                return Err("--search grid needs listed values only (a range has no grid)".into())
            }
            Search::Grid => grid(&params),
            _ => random_draws(
                &params,
                o.trials.unwrap_or_else(|| default_trials(search)),
                o.seed,
            ),
        };
        let plan = Plan {
            text,
            base,
            sets: job_sets.to_vec(),
            params,
            search,
            assignments,
        };
        // Every trial's job is checked before any worker starts, and so is the final run's
        // eval.test: finding it missing after the search would waste the search.
        for (i, a) in plan.assignments.iter().enumerate() {
            plan.live(i + 1, a.clone(), o)?;
            let fin = Job::parse_in(&plan.text, &overrides(&plan.sets, a), Some(&plan.base))
                .map_err(|e| e.0)?;
            crate::run::held_out_files_exist(&fin)?;
        }
        Ok(plan)
    }

    /// Trial `index` with assignment `a`, untrained.
    fn live(
        &self,
        index: usize,
        a: Vec<(String, String)>,
        o: &TuneOptions,
    ) -> Result<trial::Live, String> {
        let trials = o.out.join("trials");
        let job = trial_job(&self.text, &self.base, &overrides(&self.sets, &a), &trials)
            .map_err(|e| e.0)?;
        let record = trials.join(format!("t{index:04}.json"));
        Ok(trial::Live::new(index, a, job, record))
    }
}

/// Runs the search on the workers of `o.run` and publishes the best configuration; returns
/// `tune.json`'s value on the process of worker 0 (`None` on a cluster's other processes).
pub fn tune(
    job_path: &Path,
    job_sets: &[String],
    o: &TuneOptions,
) -> Result<Option<serde_json::Value>, String> {
    let plan = Plan::new(job_path, job_sets, o)?;
    let trials = o.out.join("trials");
    std::fs::create_dir_all(trials.join("state"))
        .map_err(|e| format!("{}: {e}", trials.display()))?;
    let (plan, opts) = (Arc::new(plan), o.clone());
    let out = crate::run::execute(&o.run, move |worker, run| {
        let dir = opts.out.join("trials");
        if worker.index() != 0 {
            return session::follow(worker, &dir, run).map(|_| None);
        }
        let mut leader = session::Leader::new(worker, dir, run);
        let r = drive(&plan, &mut leader, &opts);
        if let Err(e) = &r {
            leader.abort(e);
        }
        r.map(Some).map_err(CommError)
    });
    let _ = std::fs::remove_dir_all(trials.join("state"));
    let _ = std::fs::remove_dir_all(trials.join("ingest"));
    out
}

/// Worker 0's search: trains the trials through `leader`, writes the records, publishes the
/// winner and writes `tune.json`, `tune.html` and `best.toml`.
fn drive(
    plan: &Plan,
    leader: &mut session::Leader<'_>,
    o: &TuneOptions,
) -> Result<serde_json::Value, String> {
    let mut live = Vec::with_capacity(plan.assignments.len());
    for (i, a) in plan.assignments.iter().enumerate() {
        live.push(plan.live(i + 1, a.clone(), o)?);
    }
    let started = Instant::now();
    let over_time = || {
        o.time_limit_min
            .is_some_and(|m| started.elapsed().as_secs_f64() > m * 60.0)
    };
    match plan.search {
        Search::Halving => {
            halving::search(&mut live, leader, o, &over_time)?;
            let next = live.len() + 1;
            for (i, a) in halving::neighbours(&plan.params, &live)
                .into_iter()
                .enumerate()
            {
                live.push(plan.live(next + i, a, o)?);
            }
            halving::refine(&mut live[next - 1..], leader, o, &over_time)?;
        }
        _ => train_each(&mut live, leader, o, &over_time)?,
    }
    let chunked = plan.search == Search::Halving || o.patience.is_some();
    let trials: Vec<Trial> = live
        .iter()
        .filter(|t| !t.curve.is_empty() || t.error.is_some())
        .map(|t| t.record(chunked))
        .collect();
    write_trials(&trials, o)?;
    let best = best_by(&trials, |t| t.value)
        .ok_or("tune: no trial finished")?
        .clone();
    eprintln!("{}", table(&trials, &o.metric, best.index));
    // Only now is eval.test read: by the final run of the chosen configuration.
    let mut fin = Job::parse_in(
        &plan.text,
        &overrides(&plan.sets, &best.set),
        Some(&plan.base),
    )
    .map_err(|e| e.0)?;
    if o.refit {
        if let Some(v) = fin.eval.valid.take() {
            fin.input.path.push(v);
        }
    }
    let best_toml = toml::to_string(&fin).map_err(|e| format!("best.toml: {e}"))?;
    std::fs::write(o.out.join("best.toml"), &best_toml).map_err(|e| format!("best.toml: {e}"))?;
    let s = leader
        .publish(fin)?
        .ok_or("tune: the final run published nothing")?;
    let out = serde_json::json!({
        "metric": o.metric,
        "search": format!("{:?}", plan.search).to_lowercase(),
        "seed": o.seed,
        "refit": o.refit,
        "params": plan.params.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        "trials": trials,
        "best": best,
        "published": s.version_dir,
        "test_metrics": s.manifest["metrics"],
        "final_valid_metrics": s.manifest["valid_metrics"],
    });
    let json = serde_json::to_string_pretty(&out).expect("json");
    std::fs::write(o.out.join("tune.json"), json).map_err(|e| format!("tune.json: {e}"))?;
    std::fs::write(o.out.join("tune.html"), page::html(&out))
        .map_err(|e| format!("tune.html: {e}"))?;
    eprintln!(
        "tune: published {} (best trial {}); tune.json, tune.html and best.toml in {}",
        s.version_dir.display(),
        best.index,
        o.out.display()
    );
    Ok(out)
}

/// The value of `o.metric` in validation metrics.
pub(crate) fn metric_of(vm: &serde_json::Value, o: &TuneOptions) -> Result<f64, String> {
    crate::eval::lookup(vm, &o.metric).ok_or_else(|| {
        format!(
            "--metric {}: not in the validation metrics (eval.k lists the cut-offs)",
            o.metric
        )
    })
}

/// The best of `items` by `value`: the highest, the earlier one on ties; NaN never wins.
pub(crate) fn best_by<T>(items: &[T], value: impl Fn(&T) -> f64) -> Option<&T> {
    items
        .iter()
        .filter(|t| value(t).is_finite())
        .fold(None, |b, t| match b {
            Some(b) if value(b) >= value(t) => Some(b),
            _ => Some(t),
        })
}

/// The plain search: each trial to the end, one after another; with `--early-stop P`, in
/// chunks of `--eval-every` iterations, stopping after P chunks without a better value.
fn train_each(
    live: &mut [trial::Live],
    trainer: &mut dyn trial::Trainer,
    o: &TuneOptions,
    over_time: &dyn Fn() -> bool,
) -> Result<(), String> {
    let n = live.len();
    for t in live.iter_mut() {
        if over_time() {
            eprintln!(
                "tune: time limit reached after {} of {n} trials",
                t.index - 1
            );
            break;
        }
        let max = t.max_iterations();
        match o.patience {
            None => {
                t.advance(trainer, max, o)?;
            }
            Some(patience) => {
                let mut since = 0;
                while t.done < max && since < patience {
                    let to = t.done + o.eval_every.max(1);
                    since = if t.advance(trainer, to, o)? {
                        0
                    } else {
                        since + 1
                    };
                }
            }
        }
        let desc: Vec<String> = t.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!(
            "tune: trial {}/{n}  {} = {:.5} at {} it.  ({:.1}s)  {}",
            t.index,
            o.metric,
            t.best,
            t.best_it,
            t.secs,
            desc.join(" ")
        );
        t.finish(trainer)?;
    }
    Ok(())
}

/// `trials.json`: every finished trial (also written when the final run fails).
fn write_trials(trials: &[Trial], o: &TuneOptions) -> Result<(), String> {
    let json = serde_json::to_string_pretty(trials).expect("json");
    std::fs::write(o.out.join("trials.json"), json).map_err(|e| format!("trials.json: {e}"))
}

/// The trials as a text table, the best marked.
fn table(trials: &[Trial], metric: &str, best: usize) -> String {
    let mut s = String::new();
    let keys: Vec<&str> = trials
        .first()
        .map(|t| t.set.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    s.push_str(&format!(
        "{:>5}  {:>10}  {:>7}  {}\n",
        "trial",
        metric,
        "secs",
        keys.join("  ")
    ));
    for t in trials {
        let vals: Vec<&str> = t.set.iter().map(|(_, v)| v.as_str()).collect();
        let mark = if t.index == best { " *" } else { "" };
        s.push_str(&format!(
            "{:>5}  {:>10.5}  {:>7.1}  {}{mark}\n",
            t.index,
            t.value,
            t.secs,
            vals.join("  ")
        ));
    }
    s
}
