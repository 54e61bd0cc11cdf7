//! Trials on live workers: ingest once, then train and evaluate many configurations.
//!
//! `recflow tune` runs on the workers of one layout, like `recflow run` (threads, or processes
//! in cluster mode). Worker 0 drives the search ([`super::drive`]: the plan, halving, the
//! records) and sends each step to every worker as a [`TuneMsg`]; all workers then execute it
//! together on the data they ingested once ([`Session`]): re-apply the trial's confidence to
//! the kept weights, start or restore the trial's factors, train to the step's iteration
//! count, evaluate on `eval.valid`. Between steps each worker keeps a trial's factors (its own
//! rows only) in a file under `OUT/trials/state`, so memory holds one model at a time however
//! many trials are alive. A trial whose keys change what ingest produces (input, caps,
//! shards, held-out sets) makes the workers ingest again, once per such change.
//!
//! The winner is then run as a normal job ([`crate::run::run_worker`]) on the same workers.

use super::trial::{Evaluation, Trainer};
use crate::cluster::{Comm, CommError};
use crate::comm::{Channel, Json, Message};
use crate::ingest::{self, Ingested};
use crate::job::Job;
use crate::progress::Log;
use crate::run::{stages, RunOptions, Summary};
use crate::side::Side;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use timely::worker::Worker;

/// What worker 0 tells every worker to do next.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TuneMsg {
    /// Train trial `trial`'s job from iteration `from` to `to` and evaluate it.
    Step {
        /// 1-based trial number.
        trial: u32,
        /// The trial's job (no test set).
        job: Json<Box<Job>>,
        /// Iterations trained before (0: start from the job's initial vectors).
        from: u32,
        /// Iterations after this step.
        to: u32,
    },
    /// A trial trains no more: its kept factors go.
    Forget(u32),
    /// Publish the winner: run this job as `recflow run` would, then stop.
    Final(Json<Box<Job>>),
    /// A worker's outcome of a step: `Some(why)` if its training broke down numerically.
    Outcome(Option<String>),
}

impl Message for TuneMsg {}

/// The tuner's channel.
pub type TuneCh = Channel<TuneMsg>;

/// One worker's ingested data, kept for every trial.
pub struct Session {
    /// [`ingest_key`] of the job `data` was ingested for.
    key: String,
    data: Ingested,
    /// Each side's summed weights before confidence (a trial's confidence is applied to these).
    weights: [Vec<f32>; 2],
    /// Where this process keeps trials' factors and ingest's scratch files.
    dir: PathBuf,
}

/// The job with every key that only training, recommending or evaluating reads reset: two
/// jobs with the same key ingest the same data.
pub fn ingest_key(job: &Job) -> String {
    let mut j = job.clone();
    j.als = Default::default();
    j.lsh = Default::default();
    j.recommend = Default::default();
    j.similar = Default::default();
    j.svd = Default::default();
    j.output = Default::default();
    j.model.method = crate::job::Model::default().method;
    let d = crate::job::Confidence::default();
    (
        j.confidence.scheme,
        j.confidence.alpha,
        j.confidence.epsilon,
    ) = (d.scheme, d.alpha, d.epsilon);
    let e = crate::job::Eval::default();
    (j.eval.k, j.eval.recall_sample) = (e.k, e.recall_sample);
    serde_json::to_string(&j).expect("a job serialises")
}

impl Session {
    /// Ingests `job`'s input on every worker (its snapshot files are scratch: deleted here).
    pub fn ingest(
        worker: &mut Worker,
        comm: &mut Comm,
        job: &Job,
        dir: &Path,
    ) -> Result<Session, CommError> {
        let mut j = job.clone();
        j.output.store = dir.join("ingest").display().to_string();
        let files = crate::run::input_files(&j);
        let files = comm.agree(worker, "tune: list input", files)?;
        let data = ingest::ingest(worker, comm, &j, &files, &[])?;
        let check = match comm.index {
            0 => stages::check_ingested(&j, &data.stats),
            _ => Ok(()),
        };
        comm.agree(worker, "tune: ingest check", check)?;
        for (pending, _) in &data.snapshot {
            let _ = std::fs::remove_file(pending);
        }
        Ok(Session {
            key: ingest_key(job),
            weights: [data.users.conf.clone(), data.items.conf.clone()],
            data,
            dir: dir.to_path_buf(),
        })
    }

    fn state_file(&self, trial: u32, me: usize) -> PathBuf {
        self.dir.join(format!("state/t{trial:04}-w{me:04}.f32"))
    }

    /// One step of one trial on every worker; worker 0 gets the validation metrics.
    pub fn step(
        &mut self,
        worker: &mut Worker,
        (comm, ch): (&mut Comm, &mut TuneCh),
        (trial, job, from, to): (u32, &Job, usize, usize),
    ) -> Result<Evaluation, CommError> {
        if ingest_key(job) != self.key {
            let dir = self.dir.clone();
            *self = Session::ingest(worker, comm, job, &dir)?;
        }
        let me = comm.index;
        let path = self.state_file(trial, me);
        let start = self.prepare(worker, comm, job, from, &path)?;
        let mut j = job.clone();
        j.als.iterations = to;
        let log = Log::new(false);
        let mut nothing = |_: &mut Worker, _: &mut Comm, _: usize, _: &Side, _: &Side| Ok(());
        let sides = (&mut self.data.users, &mut self.data.items);
        let (train, _) =
            crate::svd::train_model(worker, comm, &j, sides, &log, start, &mut nothing, None)?;
        let mine = stages::check_trained(&self.data, &train).err();
        let broken = ch
            .all_to_all(
                worker,
                "tune: outcome",
                vec![TuneMsg::Outcome(mine); ch.peers],
            )?
            .into_iter()
            .find_map(|(_, m)| match m {
                TuneMsg::Outcome(why) => why,
                _ => None,
            });
        if let Some(why) = broken {
            let _ = std::fs::remove_file(&path);
            return Ok(Evaluation::Broken(why));
        }
        // A trial at its maximum trains no further: nothing to keep for it.
        if to < job.als.iterations {
            let saved = save_state(&path, &self.data.users, &self.data.items);
            comm.agree(worker, "tune: keep factors", saved)?;
        }
        let held = [&[][..], &self.data.valid[..]];
        let (u, i) = (&self.data.users, &self.data.items);
        let r = crate::recommend::recommend(worker, comm, &j, u, i, &held, false)?;
        Ok(match me {
            0 => Evaluation::Metrics(serde_json::json!(r.metrics[1].report(r.catalogue))),
            _ => Evaluation::Metrics(serde_json::Value::Null),
        })
    }

    /// Sets the trial's confidences and its vectors (fresh, or kept after `from` iterations);
    /// returns the iteration training continues after.
    fn prepare(
        &mut self,
        worker: &mut Worker,
        comm: &mut Comm,
        job: &Job,
        from: usize,
        path: &Path,
    ) -> Result<usize, CommError> {
        self.data.users.conf.copy_from_slice(&self.weights[0]);
        self.data.items.conf.copy_from_slice(&self.weights[1]);
        stages::apply_confidence(worker, comm, job, &mut self.data)?;
        let d = job.factors().0;
        for (tag, side) in [&mut self.data.users, &mut self.data.items]
            .into_iter()
            .enumerate()
        {
            side.dim = d;
            match from {
                0 => ingest::init_factors(side, &job.als, tag as u64),
                _ => side.factors = vec![0.0; side.rows() * d],
            }
        }
        if from == 0 {
            return Ok(0);
        }
        let loaded = load_state(path, &mut self.data.users, &mut self.data.items);
        comm.agree(worker, "tune: restore factors", loaded)?;
        Ok(from)
    }

    /// Drops a trial's kept factors.
    pub fn forget(&self, trial: u32, me: usize) {
        let _ = std::fs::remove_file(self.state_file(trial, me));
    }
}

/// Writes this worker's rows of both sides (raw little-endian f32, users then items).
fn save_state(path: &Path, users: &Side, items: &Side) -> Result<(), String> {
    let mut bytes = Vec::with_capacity(4 * (users.factors.len() + items.factors.len()));
    for x in users.factors.iter().chain(&items.factors) {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads what [`save_state`] wrote into the sides (whose shapes it must fit).
fn load_state(path: &Path, users: &mut Side, items: &mut Side) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = users.factors.len() + items.factors.len();
    if bytes.len() != 4 * n {
        return Err(format!(
            "{}: {} bytes, expected {} (a trial's kept factors do not fit its shape)",
            path.display(),
            bytes.len(),
            4 * n
        ));
    }
    let mut xs = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    for x in users.factors.iter_mut().chain(items.factors.iter_mut()) {
        *x = xs.next().expect("length checked");
    }
    Ok(())
}

/// Worker 0's side of the steps: sends each to every worker and takes part in it.
pub struct Leader<'w> {
    worker: &'w mut Worker,
    comm: Comm,
    ch: TuneCh,
    session: Option<Session>,
    dir: PathBuf,
    opts: RunOptions,
    /// A collective step failed: every worker already knows (no abort to send).
    pub failed_together: bool,
}

impl<'w> Leader<'w> {
    /// Builds worker 0's channels (in the order followers build theirs).
    pub fn new(worker: &'w mut Worker, dir: PathBuf, opts: &RunOptions) -> Leader<'w> {
        let comm = Comm::new(worker, opts.deadline);
        let ch = TuneCh::new(worker, opts.deadline);
        Leader {
            worker,
            comm,
            ch,
            session: None,
            dir,
            opts: opts.clone(),
            failed_together: false,
        }
    }

    fn command(&mut self, m: TuneMsg) -> Result<TuneMsg, CommError> {
        self.ch
            .broadcast_from(self.worker, "tune: command", 0, Some(m))
    }

    fn collective<T>(&mut self, r: Result<T, CommError>) -> Result<T, String> {
        r.map_err(|e| {
            self.failed_together = true;
            e.0
        })
    }

    /// Tells every worker the search failed on worker 0 (unless they already know).
    pub fn abort(&mut self, why: &str) {
        if !self.failed_together {
            self.ch.abort(why);
            let _ = self.ch.exchange(self.worker, "tune: command");
        }
    }

    /// Runs the winner as a normal job on every worker.
    pub fn publish(&mut self, job: Job) -> Result<Option<Summary>, String> {
        let sent = self.command(TuneMsg::Final(Json(Box::new(job.clone()))));
        self.collective(sent)?;
        self.session = None;
        let r = final_run(self.worker, &mut self.ch, &job, &self.opts);
        self.collective(r)
    }
}

impl Trainer for Leader<'_> {
    fn step(
        &mut self,
        trial: usize,
        job: &Job,
        from: usize,
        to: usize,
    ) -> Result<Evaluation, String> {
        let m = TuneMsg::Step {
            trial: trial as u32,
            job: Json(Box::new(job.clone())),
            from: from as u32,
            to: to as u32,
        };
        let sent = self.command(m);
        self.collective(sent)?;
        let r = step_on(
            self.worker,
            (&mut self.comm, &mut self.ch),
            &mut self.session,
            (trial as u32, job, from, to),
            &self.dir,
        );
        self.collective(r)
    }

    fn forget(&mut self, trial: usize) -> Result<(), String> {
        let sent = self.command(TuneMsg::Forget(trial as u32));
        self.collective(sent)?;
        if let Some(s) = &self.session {
            s.forget(trial as u32, 0);
        }
        Ok(())
    }
}

/// A step on this worker, ingesting first if this is the first step.
fn step_on(
    worker: &mut Worker,
    (comm, ch): (&mut Comm, &mut TuneCh),
    session: &mut Option<Session>,
    (trial, job, from, to): (u32, &Job, usize, usize),
    dir: &Path,
) -> Result<Evaluation, CommError> {
    if session.is_none() {
        *session = Some(Session::ingest(worker, comm, job, dir)?);
    }
    let s = session.as_mut().expect("ingested");
    s.step(worker, (comm, ch), (trial, job, from, to))
}

/// The final job on every worker, as `recflow run` runs it.
fn final_run(
    worker: &mut Worker,
    ch: &mut TuneCh,
    job: &Job,
    opts: &RunOptions,
) -> Result<Option<Summary>, CommError> {
    let files = ch.agree(
        worker,
        "tune: list final input",
        crate::run::input_files(job),
    )?;
    crate::run::run_worker(worker, job, &files, opts)
}

/// Every other worker: executes worker 0's steps until the final run.
pub fn follow(worker: &mut Worker, dir: &Path, opts: &RunOptions) -> Result<(), CommError> {
    let mut comm = Comm::new(worker, opts.deadline);
    let mut ch = TuneCh::new(worker, opts.deadline);
    let mut session = None;
    let me = comm.index;
    loop {
        match ch.broadcast_from(worker, "tune: command", 0, None)? {
            TuneMsg::Step {
                trial,
                job: Json(job),
                from,
                to,
            } => {
                let at = (trial, &*job, from as usize, to as usize);
                step_on(worker, (&mut comm, &mut ch), &mut session, at, dir)?;
            }
            TuneMsg::Forget(t) => {
                if let Some(s) = &session {
                    s.forget(t, me);
                }
            }
            TuneMsg::Final(Json(job)) => {
                drop(session);
                final_run(worker, &mut ch, &job, opts)?;
                return Ok(());
            }
            TuneMsg::Outcome(_) => {
                return Err(CommError(
                    "tune: an outcome where a command was due (a bug)".into(),
                ))
            }
        }
    }
}
