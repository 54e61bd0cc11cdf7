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
mod trial;

use crate::cluster::CommError;
use crate::ids::SplitMix;
use crate::job::{Job, JobError};
use crate::run::RunOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One searched key.
#[derive(Clone, Debug, PartialEq)]
pub enum Space {
    /// Listed values (numbers or enum names), tried as written.
    List(Vec<String>),
    /// A range `lo..hi`, uniform or (`:log`) log-uniform; integers when both ends are.
    Range {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
        /// Log-uniform.
        log: bool,
        /// Whole numbers.
        int: bool,
    },
}

/// A `--param KEY=SPEC`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// `section.key`.
    pub key: String,
    /// Its values.
    pub space: Space,
}

/// Parses `als.factors=64,128`, `als.regularization=1e-3..10:log`.
pub fn parse_param(spec: &str) -> Result<Param, String> {
    let (key, v) = spec
        .split_once('=')
        .ok_or_else(|| format!("--param {spec}: expected KEY=VALUES, e.g. als.factors=64,128"))?;
    let key = key.trim().to_string();
    if key.split('.').count() < 2 {
        return Err(format!("--param {spec}: the key must be section.key"));
    }
    let (body, log) = match v.trim().strip_suffix(":log") {
        Some(b) => (b, true),
        None => (v.trim(), false),
    };
    if let Some((lo, hi)) = body.split_once("..") {
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("--param {spec}: '{s}' is not a number"))
        };
        let (l, h) = (num(lo)?, num(hi)?);
        if !(l.is_finite() && h.is_finite() && l < h) || (log && l <= 0.0) {
            return Err(format!(
                "--param {spec}: need lo < hi (and lo > 0 with :log)"
            ));
        }
        let int = [lo, hi].iter().all(|s| s.trim().parse::<i64>().is_ok());
        return Ok(Param {
            key,
            space: Space::Range {
                lo: l,
                hi: h,
                log,
                int,
            },
        });
    }
    let vals: Vec<String> = body.split(',').map(|s| s.trim().to_string()).collect();
    if vals.iter().any(|s| s.is_empty()) {
        return Err(format!("--param {spec}: empty value"));
    }
    Ok(Param {
        key,
        space: Space::List(vals),
    })
}

/// The space used when no `--param` is given: Rendle et al.'s recipe (frequency-scaled λ,
/// normal initial vectors, the iALS++ block solver) over the keys that matter most, with
/// ranges wide enough for most implicit data sets and `d` up to 512 — successive halving
/// trains the large ones to the end only when they lead at the early rungs.
pub fn default_space() -> Vec<Param> {
    [
        "als.regularization_scaling=frequency",
        "als.init_std=0.1",
        "als.solver=block",
        "als.block_size=64",
        "als.factors=64,128,256,512",
        "als.regularization=1e-4..1e-1:log",
        "confidence.alpha=3..300:log",
    ]
    .iter()
    .map(|s| parse_param(s).expect("built-in space"))
    .collect()
}

/// How trials are chosen and trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// Every combination of listed values, each trained to the end.
    Grid,
    /// `--trials` seeded random draws, each trained to the end (or early-stopped).
    Random,
    /// `--trials` seeded random draws under successive halving ([`halving`]).
    Halving,
}

impl Search {
    /// The default: the grid for lists only without `--trials`, else halving.
    pub fn default_for(params: &[Param], trials: Option<usize>) -> Search {
        let lists_only = params.iter().all(|p| matches!(p.space, Space::List(_)));
        if lists_only && trials.is_none() {
            Search::Grid
        } else {
            Search::Halving
        }
    }

    /// Parses `grid`, `random` or `halving`.
    pub fn parse(s: &str) -> Result<Search, String> {
        match s {
            "grid" => Ok(Search::Grid),
            "random" => Ok(Search::Random),
            "halving" => Ok(Search::Halving),
            _ => Err(format!("--search {s}: expected grid, random or halving")),
        }
    }
}

/// Trials drawn by default: 10 for a random search, 27 (three rungs of thirds) for halving.
fn default_trials(search: Search) -> usize {
    match search {
        Search::Halving => 27,
        _ => 10,
    }
}

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

pub(crate) fn fmt_value(x: f64, int: bool) -> String {
    if int {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.4e}")
    }
}

/// The trials' assignments: the grid (lists only, no trial count) or seeded random draws.
pub fn assignments(
    params: &[Param],
    trials: Option<usize>,
    seed: u64,
) -> Vec<Vec<(String, String)>> {
    let lists_only = params.iter().all(|p| matches!(p.space, Space::List(_)));
    if lists_only && trials.is_none() {
        return grid(params);
    }
    random_draws(params, trials.unwrap_or(10), seed)
}

/// Every combination of the listed values (ranges are not allowed here).
fn grid(params: &[Param]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for p in params {
        let Space::List(vals) = &p.space else {
            unreachable!()
        };
        out = out
            .into_iter()
            .flat_map(|a| {
                vals.iter().map(move |v| {
                    let mut a = a.clone();
                    a.push((p.key.clone(), v.clone()));
                    a
                })
            })
            .collect();
    }
    out
}

/// `n` seeded random draws: a listed value uniformly, a range uniformly or log-uniformly.
fn random_draws(params: &[Param], n: usize, seed: u64) -> Vec<Vec<(String, String)>> {
    let mut rng = SplitMix::new(seed ^ 0x7e57_u64);
    (0..n)
        .map(|_| {
            params
                .iter()
                .map(|p| {
                    let v = match &p.space {
                        Space::List(vals) => vals[rng.below(vals.len() as u64) as usize].clone(),
                        Space::Range { lo, hi, log, int } => {
                            let u = rng.next_f64();
                            let x = if *log {
                                (lo.ln() + u * (hi.ln() - lo.ln())).exp()
                            } else {
                                lo + u * (hi - lo)
                            };
                            fmt_value(x, *int)
                        }
                    };
                    (p.key.clone(), v)
                })
                .collect()
        })
        .collect()
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
        // Every trial's job is checked before any worker starts.
        for (i, a) in plan.assignments.iter().enumerate() {
            plan.live(i + 1, a.clone(), o)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse() {
        let p = parse_param("als.factors=64,128").unwrap();
        assert_eq!(p.space, Space::List(vec!["64".into(), "128".into()]));
        let p = parse_param("als.regularization=1e-3..10:log").unwrap();
        assert_eq!(
            p.space,
            Space::Range {
                lo: 1e-3,
                hi: 10.0,
                log: true,
                int: false
            }
        );
        let p = parse_param("als.factors=16..64").unwrap();
        assert!(matches!(p.space, Space::Range { int: true, .. }));
        assert!(parse_param("factors=1").is_err());
        assert!(parse_param("als.x=0..1:log").is_err());
        assert!(parse_param("als.x=3..1").is_err());
    }

    #[test]
    fn grid_and_random_draws() {
        let ps = vec![
            parse_param("a.x=1,2").unwrap(),
            parse_param("a.y=p,q,r").unwrap(),
        ];
        let g = assignments(&ps, None, 1);
        assert_eq!(g.len(), 6);
        assert_eq!(
            g[5],
            vec![("a.x".into(), "2".into()), ("a.y".into(), "r".into())]
        );
        let ps = vec![
            parse_param("a.z=1e-2..1:log").unwrap(),
            parse_param("a.n=8..9").unwrap(),
        ];
        let r = assignments(&ps, Some(20), 4);
        assert_eq!(r, assignments(&ps, Some(20), 4));
        assert_ne!(r, assignments(&ps, Some(20), 5));
        for a in &r {
            let z: f64 = a[0].1.parse().unwrap();
            assert!((1e-2..=1.0).contains(&z));
            assert!(a[1].1 == "8" || a[1].1 == "9");
        }
    }
}
