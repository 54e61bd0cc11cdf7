//! A whole job on every worker: ingest → train → recommend → publish.
//!
//! [`run`] starts the workers (threads, or processes in cluster mode) and [`run_worker`] is
//! the list of stages each of them goes through; the stages live in [`stages`] and
//! [`publish`], each a short function with its own collective steps. Data flows one way: the
//! ingested sides are trained in place, recommended from, then written into a version.

mod msg;
mod publish;
pub(crate) mod stages;

use crate::cluster::{Comm, CommError};
use crate::comm::Channel;
use crate::job::Job;
use crate::progress::Log;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::worker::Worker;

/// How to lay out workers.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Worker threads per process.
    pub workers: usize,
    /// Processes.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// `host:port` per process (cluster mode).
    pub hosts: Vec<String>,
    /// No progress lines.
    pub quiet: bool,
    /// Longest wait for one superstep.
    pub deadline: Duration,
    /// Continue from the store's last checkpoint.
    pub resume: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            processes: 1,
            process: 0,
            hosts: Vec::new(),
            quiet: true,
            deadline: Duration::from_secs(600),
            resume: false,
        }
    }
}

/// What a finished run reports (from worker 0).
#[derive(Clone, Debug)]
pub struct Summary {
    /// Published version directory.
    pub version_dir: PathBuf,
    /// The manifest written.
    pub manifest: serde_json::Value,
}

/// Runs `job` with `opts`; returns worker 0's summary (None on other processes).
pub fn run(job: Job, opts: RunOptions) -> Result<Option<Summary>, String> {
    let files = Arc::new(input_files(&job)?);
    let job = Arc::new(job);
    execute(&opts, move |worker, o| run_worker(worker, &job, &files, o))
}

/// The job's input files (none: the built-in demo data). The held-out sets are listed too,
/// so that a wrong `eval.test` or `eval.valid` fails here, not after the input was read.
pub fn input_files(job: &Job) -> Result<Vec<PathBuf>, String> {
    held_out_files_exist(job)?;
    if job.input.path.is_empty() {
        Ok(Vec::new())
    } else {
        crate::ingest::read::list_files(&job.input.path)
    }
}

/// Checks that `eval.test` and `eval.valid`, where set, name files (ingest reads them).
pub fn held_out_files_exist(job: &Job) -> Result<(), String> {
    let sets = [
        ("eval.test", &job.eval.test),
        ("eval.valid", &job.eval.valid),
    ];
    for (key, path) in sets {
        if let Some(p) = path {
            crate::ingest::read::list_files_of(key, std::slice::from_ref(p))?;
        }
    }
    Ok(())
}

/// Runs `body` on every worker of `opts`' layout and returns worker 0's value. A worker's
/// error fails the whole run; in cluster mode it also ends this process at once (timely would
/// otherwise wait for peers that never finish).
pub(crate) fn execute<T, F>(opts: &RunOptions, body: F) -> Result<Option<T>, String>
where
    T: Send + 'static,
    F: Fn(&mut Worker, &RunOptions) -> Result<Option<T>, CommError> + Send + Sync + 'static,
{
    let o = opts.clone();
    let guards = timely::execute(timely_config(opts), move |worker| {
        let r = body(worker, &o).map_err(|e| e.0);
        if let Err(e) = &r {
            if o.processes > 1 {
                let code = if e.contains(crate::lock::LOCKED) {
                    crate::lock::EXIT_LOCKED
                } else {
                    1
                };
                // This process's temporary files go; peers may see our sockets close and
                // panic in timely's network threads while we exit: the panic hook then keeps
                // this code (see `cleanup::EXITING`).
                crate::cleanup::finish(code, &format!("process {}: {e}", o.process));
            }
        }
        r
    })
    .map_err(|e| format!("cannot start workers: {e}"))?;
    let mut value = None;
    let mut first_err = None;
    for r in guards.join() {
        match r {
            Ok(Ok(Some(v))) => value = Some(v),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(format!("a worker panicked: {e}"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

fn timely_config(opts: &RunOptions) -> timely::Config {
    if opts.processes <= 1 {
        return timely::Config::process(opts.workers);
    }
    timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads: opts.workers,
            process: opts.process,
            addresses: opts.hosts.clone(),
            report: false,
            zerocopy: false,
        },
        worker: timely::WorkerConfig::default(),
    }
}

/// One worker's run of `job`: the stages in order.
pub(crate) fn run_worker(
    worker: &mut Worker,
    job: &Job,
    files: &[PathBuf],
    opts: &RunOptions,
) -> Result<Option<Summary>, CommError> {
    let mut comm = Comm::new(worker, opts.deadline);
    let mut ch = Channel::new(worker, opts.deadline);
    let log = Log::new(comm.index == 0 && !opts.quiet);
    let started = Instant::now();
    let _held = stages::lock_store(worker, &mut ch, job)?;
    let parent = stages::find_parent(worker, &mut comm, job, files, &log)?;
    let (mut data, ingest_secs) =
        stages::ingest(worker, &mut comm, job, files, parent.as_ref(), (&log, opts))?;

    let t = Instant::now();
    let fp = stages::fingerprint(worker, &mut ch, job, &data)?;
    let fold = match parent.as_ref().filter(|_| !opts.resume) {
        Some(p) => Some(stages::fold_in_parent(
            worker,
            (&mut comm, &mut ch),
            job,
            p,
            &mut data,
            &log,
        )?),
        None => None,
    };
    let start = if opts.resume {
        let (u, i) = (&mut data.users, &mut data.items);
        let it = crate::checkpoint::resume(worker, &mut comm, job, &fp, u, i)?;
        log.info(&format!(
            "resuming after iteration {it} from the checkpoint"
        ));
        it
    } else {
        0
    };
    let kept = parent
        .as_ref()
        .filter(|_| !opts.resume)
        .and_then(|p| Some((crate::svd::of_manifest(&p.manifest)?, p.version.clone())));
    let (train, svd) = stages::train(worker, &mut comm, job, &mut data, (&fp, start), kept, &log)?;
    let train_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let warm = parent.is_some();
    let mut recs = stages::recommend(worker, &mut comm, job, &data, warm, &log)?;
    let rec_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let changes = match (parent.as_ref(), recs.as_mut()) {
        (Some(p), Some(r)) if job.recommend.k > 0 => {
            let pairs = r.pairs.take().unwrap_or_default();
            let owners = &data.users.owners;
            Some(crate::warm::compare_recs(
                worker, &mut comm, p, owners, pairs,
            )?)
        }
        _ => None,
    };
    log.stage("publish", &job.output.store);
    if let (Some(p), Some(c)) = (parent.as_ref(), changes.as_ref()) {
        log.info(&format!(
            "compared with {}: top-{} changed for {} of {} users (mean overlap {:.3})",
            p.version, job.recommend.k, c.users_topk_changed, c.users_compared, c.mean_topk_overlap
        ));
    }
    let outcome = publish::Outcome {
        train: &train,
        svd: svd.as_ref(),
        recs: recs.as_ref(),
        timings: json!({ "ingest_secs": ingest_secs, "train_secs": train_secs,
            "recommend_secs": rec_secs, "recommend_phases": recs.as_ref().map(|r| r.phases) }),
        lineage: stages::lineage(job, files, parent.as_ref(), changes, fold),
        started,
    };
    let out = publish::publish(worker, (&mut comm, &mut ch), job, &data, outcome)?;
    if let Some(s) = &out {
        log.done(&format!(
            "published {} ({:.2}s)",
            s.version_dir.display(),
            t.elapsed().as_secs_f64()
        ));
    }
    Ok(out)
}
