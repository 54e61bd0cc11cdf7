//! A whole job on every worker: ingest → train → recommend → publish.

use crate::als::{self, TrainReport};
use crate::checkpoint;
use crate::cluster::{Body, Comm, CommError};
use crate::ingest::{self, IngestStats};
use crate::job::Job;
use crate::recommend::{self, Recs};
use crate::report::Log;
use crate::side::Side;
use crate::store::{self, FileRecord};
use serde_json::json;
use std::path::{Path, PathBuf};
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
    let files = if job.input.path.is_empty() {
        Vec::new()
    } else {
        ingest::read::list_files(&job.input.path)?
    };
    let config = if opts.processes > 1 {
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
    } else {
        timely::Config::process(opts.workers)
    };
    let job = Arc::new(job);
    let files = Arc::new(files);
    let o = opts.clone();
    let guards = timely::execute(config, move |worker| {
        let r = run_worker(worker, &job, &files, &o).map_err(|e| e.0);
        if let Err(e) = &r {
            if o.processes > 1 {
                // timely would keep stepping the dataflow until every peer finishes it, which a
                // dead or stopped peer never does: fail this process now, cleanly.
                eprintln!("error: process {}: {e}", o.process);
                std::process::exit(1);
            }
        }
        r
    })
    .map_err(|e| format!("cannot start workers: {e}"))?;
    let mut summary = None;
    let mut first_err = None;
    for r in guards.join() {
        match r {
            Ok(Ok(Some(s))) => summary = Some(s),
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
        None => Ok(summary),
    }
}

fn run_worker(
    worker: &mut Worker,
    job: &Job,
    files: &[PathBuf],
    opts: &RunOptions,
) -> Result<Option<Summary>, CommError> {
    let mut comm = Comm::new(worker, opts.deadline);
    let leader = comm.index == 0;
    let log = Log::new(leader && !opts.quiet);
    let started = Instant::now();
    log.info(&format!(
        "ingest: {} with {} worker(s)",
        if files.is_empty() {
            "built-in demo data".to_string()
        } else {
            format!("{} file(s)", files.len())
        },
        comm.peers
    ));
    let t = Instant::now();
    let mut data = ingest::ingest(worker, &mut comm, job, files)?;
    let ingest_secs = t.elapsed().as_secs_f64();
    let check = if leader && data.stats.pairs == 0 {
        Err(format!(
            "no interactions left after ingest ({} lines read, {} below min_weight, {} skipped, {} pairs with weight <= 0): check input.path, input.format and input.min_weight",
            data.stats.read.lines, data.stats.read.below_min_weight, data.stats.read.skipped, data.stats.nonpositive_pairs
        ))
    } else if leader && data.stats.items < job.als.factors as u64 {
        Err(format!(
            "als.factors = {} exceeds the number of items in the data ({}): the model would be over-parameterised; set als.factors to at most {}",
            job.als.factors, data.stats.items, data.stats.items
        ))
    } else {
        Ok(())
    };
    comm.agree(worker, "ingest: check", check)?;
    if leader {
        let s = &data.stats;
        log.info(&format!(
            "ingest: {} lines, {} users, {} items, {} pairs ({:.2}s)",
            s.read.lines, s.users, s.items, s.pairs, ingest_secs
        ));
    }

    let t = Instant::now();
    let fp = checkpoint::fingerprint(job, &data.stats);
    // Worker 0's counts define the fingerprint; everybody uses its value.
    if leader {
        comm.broadcast(Body::Text(fp));
    }
    let mut fp = String::new();
    for (_, b) in comm.exchange(worker, "checkpoint: fingerprint")? {
        if let Body::Text(t) = b {
            fp = t;
        }
    }
    let start = if opts.resume {
        let it = checkpoint::resume(
            worker,
            &mut comm,
            job,
            &fp,
            &mut data.users,
            &mut data.items,
        )?;
        log.info(&format!(
            "resuming after iteration {it} from the checkpoint"
        ));
        it
    } else {
        0
    };
    let every = job.als.checkpoint_every;
    let mut after = |w: &mut Worker, c: &mut Comm, it: usize, u: &Side, i: &Side| {
        if every > 0 && it.is_multiple_of(every) && it < job.als.iterations {
            checkpoint::save(w, c, job, &fp, it, u, i)?;
        }
        Ok(())
    };
    let train = als::train(
        worker,
        &mut comm,
        &job.als,
        &mut data.users,
        &mut data.items,
        &log,
        start,
        &mut after,
    )?;
    let train_secs = t.elapsed().as_secs_f64();
    // A numerically broken solve (zeroed or non-finite vectors) is never published.
    let finite = [&data.users, &data.items]
        .iter()
        .all(|s| s.factors.iter().all(|x| x.is_finite()));
    let check = if !finite
        || train.singular > 0
        || train.objective.iter().any(|p| !p.value.is_finite())
    {
        Err(format!(
            "training broke down numerically ({} singular user/item systems, objective {}): confidences are too large for f32 solves; lower confidence.alpha, use confidence.scheme = \"log\", use smaller weights, or raise als.regularization; nothing was published",
            train.singular,
            train.objective.last().map(|p| p.value).unwrap_or(f64::NAN)
        ))
    } else {
        Ok(())
    };
    comm.agree(worker, "train: check", check)?;

    let t = Instant::now();
    let recs = if job.recommend.k > 0 || job.similar.k > 0 || !job_has_no_eval(job) {
        let r = recommend::recommend(worker, &mut comm, job, &data.users, &data.items, &data.test)?;
        log.info(&format!(
            "recommend: {} lines ({:?} mode, {:.2}s)",
            r.lines,
            job.recommend.mode,
            t.elapsed().as_secs_f64()
        ));
        Some(r)
    } else {
        None
    };
    let rec_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let timings =
        json!({ "ingest_secs": ingest_secs, "train_secs": train_secs, "recommend_secs": rec_secs });
    let out = publish(
        worker,
        &mut comm,
        job,
        &data.users,
        &data.items,
        &data.stats,
        &train,
        recs.as_ref(),
        timings,
        started,
    )?;
    if let Some(s) = &out {
        log.info(&format!(
            "published {} ({:.2}s)",
            s.version_dir.display(),
            t.elapsed().as_secs_f64()
        ));
    }
    Ok(out)
}

fn side_files(dir: &Path, side: &Side, name: &str, tag: u8) -> Result<Vec<FileRecord>, String> {
    let mut recs = Vec::new();
    for (j, &vs) in side.vshards.iter().enumerate() {
        let (a, b) = (side.starts[j], side.starts[j + 1]);
        let bytes = store::format::encode(
            tag,
            vs,
            side.dim,
            &side.ids[a..b],
            &side.factors[a * side.dim..b * side.dim],
        );
        recs.push(store::write_part(
            dir,
            &format!("{name}/vs-{vs:05}.bin"),
            &bytes,
            (b - a) as u64,
        )?);
    }
    Ok(recs)
}

#[allow(clippy::too_many_arguments)]
fn publish(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    users: &Side,
    items: &Side,
    stats: &IngestStats,
    train: &TrainReport,
    recs: Option<&Recs>,
    mut timings: serde_json::Value,
    started: Instant,
) -> Result<Option<crate::run::Summary>, CommError> {
    let store_path = PathBuf::from(&job.output.store);
    // 1. Worker 0 opens a staging directory and tells everybody where it is.
    if comm.index == 0 {
        match store::begin(&store_path) {
            Ok((v, s)) => comm.broadcast(Body::Text(format!("{v}\n{}", s.display()))),
            Err(e) => comm.broadcast(Body::Abort(e)),
        }
    }
    let mut target = String::new();
    for (_, b) in comm.exchange(worker, "publish: prepare")? {
        if let Body::Text(t) = b {
            target = t;
        }
    }
    let (version, staging) = target.split_once('\n').expect("prepare message");
    let staging = PathBuf::from(staging);
    // 2. Every worker writes (and syncs) the files of the shards it owns.
    let mine = side_files(&staging, users, "users", 0).and_then(|mut r| {
        r.extend(side_files(&staging, items, "items", 1)?);
        if let Some((b, n)) = recs.and_then(|r| r.similar.as_ref()) {
            r.push(store::write_part(
                &staging,
                &format!("similar/part-{:05}.tsv", comm.index),
                b,
                *n,
            )?);
        }
        if let Some((b, n)) = recs.and_then(|r| r.buckets.as_ref()) {
            r.push(store::write_part(
                &staging,
                &format!("buckets/part-{:05}.tsv", comm.index),
                b,
                *n,
            )?);
        }
        if let Some(recs) = recs.filter(|_| job.recommend.k > 0) {
            r.push(store::write_part(
                &staging,
                &format!("recs/part-{:05}.tsv", comm.index),
                &recs.tsv,
                recs.lines,
            )?);
        }
        Ok(r)
    });
    match mine {
        Ok(r) => comm.send(0, Body::Text(serde_json::to_string(&r).expect("records"))),
        Err(e) => comm.broadcast(Body::Abort(e)),
    }
    let mut files: Vec<FileRecord> = Vec::new();
    for (_, b) in comm.exchange(worker, "publish: write")? {
        if let Body::Text(t) = b {
            files.extend(serde_json::from_str::<Vec<FileRecord>>(&t).expect("records"));
        }
    }
    // 3. Worker 0 writes the manifest and flips CURRENT; everybody learns the outcome.
    let mut summary = None;
    if comm.index == 0 {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        timings["total_secs"] = json!(started.elapsed().as_secs_f64());
        let manifest = json!({
            "format_version": store::MANIFEST_VERSION,
            "recflow_version": env!("CARGO_PKG_VERSION"),
            "version": version,
            "parent": serde_json::Value::Null,
            "created_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "job": job,
            "workers": comm.peers,
            "virtual_shards": job.shards.virtual_shards,
            "factors": job.als.factors,
            "counts": stats,
            "train": train,
            "timings": timings,
            "recommend": recs.map(|r| json!({
                "k": job.recommend.k,
                "mode": job.recommend.mode,
                "lines": r.lines,
                "users_without_recs": r.users_without_recs,
                "lsh": r.lsh,
            })),
            "metrics": recs.filter(|_| !job_has_no_eval(job)).map(|r| r.metrics.report(job.eval.k)),
            "files": files,
        });
        match store::publish(&store_path, &staging, version, &manifest) {
            Ok(dir) => {
                summary = Some(Summary {
                    version_dir: dir,
                    manifest,
                });
                comm.broadcast(Body::Text("ok".into()));
            }
            Err(e) => comm.broadcast(Body::Abort(e)),
        }
    }
    comm.exchange(worker, "publish: commit")?;
    Ok(summary)
}

fn job_has_no_eval(job: &Job) -> bool {
    job.eval.holdout <= 0.0 && job.eval.test.is_none()
}
