//! One trial in progress: its job, its record file and its best validation value so far.
//!
//! A trial trains in chunks through a [`Trainer`]: the first chunk from the job's initial
//! vectors, each later one from the previous chunk's factors (the same model as training
//! straight through). Every chunk ends with an evaluation on `eval.valid`; the trial keeps its
//! best evaluation, so a trial that peaks early keeps that value and iteration count (early
//! stopping). Both the plain search and successive halving drive trials through [`Live`].

use super::TuneOptions;
use crate::job::Job;
use std::path::PathBuf;
use std::time::Instant;

/// What a step of a trial gave.
pub enum Evaluation {
    /// The validation metrics (complete on worker 0).
    Metrics(serde_json::Value),
    /// Training broke down numerically (the configuration is unusable): why.
    Broken(String),
}

/// Trains and evaluates trials' steps (on every worker: [`super::session::Leader`]).
pub trait Trainer {
    /// Trains trial `trial`'s `job` from `from` to `to` iterations and evaluates it.
    fn step(
        &mut self,
        trial: usize,
        job: &Job,
        from: usize,
        to: usize,
    ) -> Result<Evaluation, String>;
    /// The trial trains no more: what was kept for it goes.
    fn forget(&mut self, trial: usize) -> Result<(), String>;
}

/// A trial being trained.
pub(crate) struct Live {
    /// 1-based trial number.
    pub index: usize,
    /// `key=value` per searched parameter.
    pub set: Vec<(String, String)>,
    /// The trial's job (no test set, its own store).
    pub job: Job,
    /// Where its record is written after each evaluation (`OUT/trials/tNNNN.json`).
    pub record_file: PathBuf,
    /// Why training broke down, if it did (the trial then has no value).
    pub error: Option<String>,
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
    pub fn new(index: usize, set: Vec<(String, String)>, job: Job, record_file: PathBuf) -> Live {
        Live {
            index,
            set,
            job,
            record_file,
            error: None,
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
    /// value improved on the trial's best (never for a trial whose training broke down).
    pub fn advance(
        &mut self,
        trainer: &mut dyn Trainer,
        to: usize,
        o: &TuneOptions,
    ) -> Result<bool, String> {
        let to = to.min(self.max_iterations());
        if self.error.is_some() || (to <= self.done && self.done > 0) {
            return Ok(false);
        }
        let t = Instant::now();
        let outcome = trainer.step(self.index, &self.job, self.done, to)?;
        self.secs += t.elapsed().as_secs_f64();
        let better = match outcome {
            Evaluation::Broken(why) => {
                eprintln!("tune: trial {} failed: {why}", self.index);
                self.error = Some(why);
                false
            }
            Evaluation::Metrics(vm) => {
                let v = super::metric_of(&vm, o)?;
                self.done = to;
                self.curve.push((to, v));
                let better = v > self.best;
                if better {
                    (self.best, self.best_vm, self.best_it) = (v, vm, to);
                }
                better
            }
        };
        // Each evaluation is on disk at once: an interrupted search keeps what it learned.
        let json = serde_json::to_string_pretty(&self.record(true)).expect("json");
        std::fs::write(&self.record_file, json)
            .map_err(|e| format!("{}: {e}", self.record_file.display()))?;
        Ok(better)
    }

    /// The trial trains no more.
    pub fn finish(&self, trainer: &mut dyn Trainer) -> Result<(), String> {
        trainer.forget(self.index)
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
            error: self.error.clone(),
        }
    }
}
