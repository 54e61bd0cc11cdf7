//! One trial in progress: its job, its scratch store and its best validation value so far.
//!
//! A trial trains in chunks: the first chunk is a cold run, each later one a warm start from
//! the previous chunk's factors in the trial's own store (the same model as training straight
//! through). Every chunk ends with an evaluation on `eval.valid`; the trial keeps its best
//! evaluation, so a trial that peaks early keeps that value and iteration count (early
//! stopping). Both the plain search and successive halving drive trials through [`Live`].

use super::TuneOptions;
use crate::job::Job;
use crate::run::run;
use std::path::PathBuf;
use std::time::Instant;

/// A trial being trained.
pub(crate) struct Live {
    /// 1-based trial number.
    pub index: usize,
    /// `key=value` per searched parameter.
    pub set: Vec<(String, String)>,
    /// The trial's job (no test set, its own store).
    pub job: Job,
    /// The trial's scratch store.
    pub store: PathBuf,
    /// Iterations trained so far.
    pub done: usize,
    /// Best validation value so far (−∞ before the first evaluation).
    pub best: f64,
    /// Validation metrics of the best evaluation.
    pub best_vm: serde_json::Value,
    /// Iterations of the best evaluation.
    pub best_it: usize,
    /// Every evaluation: (iterations, value).
    pub curve: Vec<(usize, f64)>,
    /// Wall seconds spent training and evaluating.
    pub secs: f64,
}

impl Live {
    /// A trial that has not trained yet.
    pub fn new(index: usize, set: Vec<(String, String)>, job: Job, store: PathBuf) -> Live {
        Live {
            index,
            set,
            job,
            store,
            done: 0,
            best: f64::NEG_INFINITY,
            best_vm: serde_json::Value::Null,
            best_it: 0,
            curve: Vec::new(),
            secs: 0.0,
        }
    }

    /// The most iterations this trial may train (its job's `als.iterations`).
    pub fn max_iterations(&self) -> usize {
        self.job.als.iterations
    }

    /// Trains on to `to` iterations (at most the job's) and evaluates; returns whether the
    /// value improved on the trial's best.
    pub fn advance(&mut self, to: usize, o: &TuneOptions) -> Result<bool, String> {
        let to = to.min(self.max_iterations());
        if to <= self.done && self.done > 0 {
            return Ok(false);
        }
        let t = Instant::now();
        let mut j = self.job.clone();
        j.als.iterations = to - self.done;
        // Later chunks continue from the previous chunk's factors; the input holds all events.
        j.model.warm_start = self.done > 0;
        j.model.snapshot = false;
        let s = run(j, o.run.clone())?.ok_or("tune runs on one process")?;
        let (v, vm) = super::metric_of(&s, o)?;
        self.done = to;
        self.curve.push((to, v));
        self.secs += t.elapsed().as_secs_f64();
        let better = v > self.best;
        if better {
            (self.best, self.best_vm, self.best_it) = (v, vm, to);
        }
        // Each evaluation is on disk at once: an interrupted search keeps what it learned.
        let json = serde_json::to_string_pretty(&self.record(true)).expect("json");
        let path = self.store.with_extension("json");
        std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(better)
    }

    /// Removes the scratch store (the trial trains no more).
    pub fn drop_store(&self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }

    /// The finished record; `with_iterations` adds the best iteration count to the set (the
    /// winner is then refit with it).
    pub fn record(&self, with_iterations: bool) -> super::Trial {
        let mut set = self.set.clone();
        if with_iterations {
            set.retain(|(k, _)| k != "als.iterations");
            set.push(("als.iterations".into(), self.best_it.to_string()));
        }
        super::Trial {
            index: self.index,
            set,
            value: self.best,
            iterations: self.best_it,
            valid_metrics: self.best_vm.clone(),
            curve: self.curve.clone(),
            secs: self.secs,
        }
    }
}
