//! A whole job on every worker: ingest → train → recommend → publish.

use crate::als::TrainReport;
use crate::checkpoint;
use crate::cluster::{Body, Comm, CommError};
use crate::ingest::{self, Ingested};
use crate::job::Job;
use crate::lock::StoreLock;
use crate::recommend::{self, Recs};
use crate::report::Log;
use crate::side::Side;
use crate::store::{self, FileRecord};
use crate::warm;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::worker::Worker;

/// Non-zero once this process has decided to exit with that code after a failed run; a panic
/// that happens meanwhile (a network thread noticing closed peers) exits with it too.
pub static EXITING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

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
                let code = if e.contains(crate::lock::LOCKED) {
                    crate::lock::EXIT_LOCKED
                } else {
                    1
                };
                // This process's temporary files go; peers may see our sockets close and
                // panic in timely's network threads while we exit: the panic hook then keeps
                // this code (see `EXITING`).
                crate::cleanup::finish(code, &format!("process {}: {e}", o.process));
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
    // One run per store at a time; held by worker 0 until this function returns.
    let lock = if leader {
        let store = Path::new(&job.output.store);
        StoreLock::acquire(store).and_then(|l| store::clean_leftovers(store).map(|_| Some(l)))
    } else {
        Ok(None)
    };
    let _held = comm.agree(worker, "store: lock", lock)?;
    let parent = warm::find(worker, &mut comm, job, files)?;
    if let Some(p) = &parent {
        log.info(&format!(
            "warm start from {} ({} snapshot file(s))",
            p.dir.display(),
            p.snapshot.len()
        ));
    } else if job.model.warm_start {
        log.info("warm start: the store has no published version yet, training from scratch");
    }
    // This process reads about its workers' share of the input (for the byte bar).
    let share = if log.enabled() {
        crate::report::input_bytes(files) * opts.workers as u64 / comm.peers.max(1) as u64
    } else {
        0
    };
    log.stage_bytes(
        "ingest",
        &format!(
            "{} with {} worker(s)",
            if files.is_empty() {
                "built-in demo data".to_string()
            } else {
                format!("{} file(s)", files.len())
            },
            comm.peers
        ),
        share,
    );
    let t = Instant::now();
    let snapshot = parent.as_ref().map(|p| &p.snapshot[..]).unwrap_or(&[]);
    let mut data = ingest::ingest(worker, &mut comm, job, files, snapshot)?;
    let ingest_secs = t.elapsed().as_secs_f64();
    let check = if leader && data.stats.pairs == 0 {
        Err(format!(
            "no interactions left after ingest ({} lines read, {} below min_weight, {} skipped, {} pairs with weight <= 0): check input.path, input.format and input.min_weight",
            data.stats.read.lines, data.stats.read.below_min_weight, data.stats.read.skipped, data.stats.nonpositive_pairs
        ))
    } else if leader && data.stats.items.min(data.stats.users) < job.factors().0 as u64 {
        let (n, what) = if data.stats.items <= data.stats.users {
            (data.stats.items, "items")
        } else {
            (data.stats.users, "users")
        };
        Err(format!(
            "{key} = {} exceeds the number of {what} in the data ({n}): the model would be over-parameterised; set {key} to at most {n}",
            job.factors().0,
            key = job.factors().1
        ))
    } else {
        Ok(())
    };
    comm.agree(worker, "ingest: check", check)?;
    data.confidence = crate::confidence::apply(
        worker,
        &mut comm,
        &job.confidence,
        (data.stats.pairs, data.stats.users, data.stats.items),
        &mut data.users,
        &mut data.items,
    )?;
    if leader {
        let s = &data.stats;
        log.done(&format!(
            "ingest: {} lines{}, {} users, {} items, {} pairs ({:.2}s)",
            s.read.lines,
            if s.read.bytes > 0 {
                format!(
                    " ({} bytes; slowest reader {:.0} MB/s)",
                    s.read.bytes, s.read.min_mb_per_sec_per_worker
                )
            } else {
                String::new()
            },
            s.users,
            s.items,
            s.pairs,
            ingest_secs
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
    let mut fold = None;
    if let Some(p) = parent.as_ref().filter(|_| !opts.resume) {
        let loaded = warm::load_factors(p, &mut data.users, "users")
            .and_then(|u| Ok((u, warm::load_factors(p, &mut data.items, "items")?)));
        let (new_u, new_i) = comm.agree(worker, "warm start: load factors", loaded)?;
        let n = [
            new_u.iter().filter(|&&b| b).count() as u64,
            new_i.iter().filter(|&&b| b).count() as u64,
        ];
        comm.send(0, Body::Counts(n.to_vec()));
        let mut total = [0u64; 2];
        for (_, b) in comm.exchange(worker, "warm start: count new")? {
            if let Body::Counts(c) = b {
                total.iter_mut().zip(c).for_each(|(t, c)| *t += c);
            }
        }
        warm::fold_in(
            worker,
            &mut comm,
            job,
            p,
            &mut data.users,
            &mut data.items,
            &new_u,
            &new_i,
        )?;
        log.info(&format!(
            "warm start: {} new user(s) and {} new item(s) folded in",
            total[0], total[1]
        ));
        fold = Some(total);
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
    let kept = parent
        .as_ref()
        .and_then(|p| Some((crate::svd::of_manifest(&p.manifest)?, p.version.clone())));
    let (train, svd) = crate::svd::train_model(
        worker,
        &mut comm,
        job,
        (&mut data.users, &mut data.items),
        &log,
        start,
        &mut after,
        kept.filter(|_| !opts.resume),
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
    if svd.is_none() {
        log.done(&format!(
            "train: {} iteration(s), objective {} ({train_secs:.2}s)",
            job.als.iterations - start,
            train
                .objective
                .last()
                .map(|p| format!("{:.6e}", p.value))
                .unwrap_or_else(|| "not computed".into())
        ));
    }

    let t = Instant::now();
    let mut recs = if job.recommend.k > 0
        || job.similar.k > 0
        || !job_has_no_eval(job)
        || job.eval.valid.is_some()
    {
        log.stage(
            "recommend",
            &format!("{:?} mode", job.recommend.mode).to_lowercase(),
        );
        let r = recommend::recommend(
            worker,
            &mut comm,
            job,
            &data.users,
            &data.items,
            &[&data.test, &data.valid],
            parent.is_some(),
        )?;
        log.done(&format!(
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
    let timings = json!({ "ingest_secs": ingest_secs, "train_secs": train_secs, "recommend_secs": rec_secs,
            "recommend_phases": recs.as_ref().map(|r| r.phases) });
    let changes = match (parent.as_ref(), recs.as_mut()) {
        (Some(p), Some(r)) if job.recommend.k > 0 => Some(warm::compare_recs(
            worker,
            &mut comm,
            p,
            &data.users.owners,
            r.pairs.take().unwrap_or_default(),
        )?),
        _ => None,
    };
    let lineage = store::manifest::Lineage {
        recs_vs_parent: changes.clone(),
        parent: parent.as_ref().map(|p| p.version.clone()),
        consumed: warm::consumed(parent.as_ref(), job, files),
        new_users: fold.map(|f| f[0]),
        new_items: fold.map(|f| f[1]),
        parent_objective: parent.as_ref().and_then(|p| {
            let o = p.manifest.train["objective"].as_array()?;
            Some(o.last()?["value"].clone())
        }),
        parent_metrics: parent.as_ref().map(|p| p.manifest.metrics.clone()),
    };
    log.stage("publish", &job.output.store);
    if let (Some(p), Some(c)) = (parent.as_ref(), changes.as_ref()) {
        log.info(&format!(
            "compared with {}: top-{} changed for {} of {} users (mean overlap {:.3})",
            p.version, job.recommend.k, c.users_topk_changed, c.users_compared, c.mean_topk_overlap
        ));
    }
    let out = publish(
        worker,
        &mut comm,
        job,
        &data,
        (&train, svd.as_ref()),
        recs.as_ref(),
        timings,
        lineage,
        started,
    )?;
    if let Some(s) = &out {
        log.done(&format!(
            "published {} ({:.2}s)",
            s.version_dir.display(),
            t.elapsed().as_secs_f64()
        ));
    }
    Ok(out)
}

/// This worker's files of the version: factor packs, the snapshot and recs parts written
/// earlier, similar and bucket parts, held-out pairs.
fn worker_files(
    staging: &Path,
    me: usize,
    data: &Ingested,
    recs: Option<&Recs>,
) -> Result<Vec<FileRecord>, String> {
    use store::pack::Kind;
    let mut w = store::VersionWriter::new(staging);
    w.factors(&data.users, Kind::Users)?;
    w.factors(&data.items, Kind::Items)?;
    for (pending, rec) in &data.snapshot {
        w.adopt(pending, rec)?;
    }
    if let Some((b, n)) = recs.and_then(|r| r.similar.as_ref()) {
        w.write(&format!("similar/part-{me:05}.tsv"), b, *n)?;
    }
    if let Some((b, n)) = recs.and_then(|r| r.buckets.as_ref()) {
        w.write(&format!("buckets/part-{me:05}.tsv"), b, *n)?;
    }
    if let Some((pending, rec)) = recs.and_then(|r| r.part.as_ref()) {
        w.adopt(pending, rec)?;
    }
    // The held-out pairs the metrics were computed against (`recflow eval STORE`).
    for (set, pairs) in [("holdout", &data.test), ("valid", &data.valid)] {
        if recs.is_some() && !pairs.is_empty() {
            let rel = format!("eval/{set}-{me:05}.bin");
            w.write(&rel, &store::holdout::encode(pairs), pairs.len() as u64)?;
        }
    }
    Ok(w.into_records())
}

#[allow(clippy::too_many_arguments)]
fn publish(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    data: &Ingested,
    (train, svd): (&TrainReport, Option<&crate::svd::SvdReport>),
    recs: Option<&Recs>,
    mut timings: serde_json::Value,
    lineage: store::manifest::Lineage,
    started: Instant,
) -> Result<Option<crate::run::Summary>, CommError> {
    let (users, items, stats) = (&data.users, &data.items, &data.stats);
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
    let mine = worker_files(&staging, comm.index, data, recs);
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
    // Degree distributions for the report, summed on worker 0.
    let degrees = crate::report::gather_degrees(worker, comm, users, items)?;
    // 3. Worker 0 writes the manifest and flips CURRENT; everybody learns the outcome.
    let mut summary = None;
    if comm.index == 0 {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        timings["total_secs"] = json!(started.elapsed().as_secs_f64());
        let manifest = store::Manifest {
            format_version: store::MANIFEST_VERSION,
            recflow_version: env!("CARGO_PKG_VERSION").into(),
            version: version.into(),
            parent: lineage.parent.clone(),
            lineage,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            job: json!(job),
            workers: comm.peers,
            virtual_shards: job.shards.virtual_shards,
            factors: job.factors().0,
            method: Some(job.model.method),
            svd: svd.cloned(),
            counts: json!(stats),
            confidence: json!(data.confidence),
            train: json!(train),
            timings,
            recommend: json!(recs.map(|r| json!({
                "k": job.recommend.k,
                "mode": job.recommend.mode,
                "lines": r.lines,
                "users_without_recs": r.users_without_recs,
                "exact": r.exact,
                "lsh": r.lsh,
            }))),
            metrics: json!(recs
                .filter(|_| !job_has_no_eval(job))
                .map(|r| r.metrics[0].report(r.catalogue))),
            valid_metrics: json!(recs
                .filter(|_| job.eval.valid.is_some())
                .map(|r| r.metrics[1].report(r.catalogue))),
            holdout: recs
                .map(|r| store::manifest::Holdout {
                    test_pairs: files_rows(&files, "eval/holdout-"),
                    valid_pairs: files_rows(&files, "eval/valid-"),
                    catalogue: r.catalogue,
                    ks: job.eval.k.list(),
                })
                .filter(|h| h.test_pairs + h.valid_pairs > 0),
            files,
        };
        let mut manifest = manifest.to_value();
        // report.json and report.html go into the staging directory: published with the rest.
        let report = crate::report::write(&staging, &mut manifest, degrees.as_ref());
        // Publish and prune as one step against a signal (crate::cleanup).
        let published = crate::cleanup::publishing(|| {
            let typed: store::Manifest =
                serde_json::from_value(manifest.clone()).expect("the manifest just built");
            let dir =
                report.and_then(|_| store::publish(&store_path, &staging, version, &typed))?;
            // Retention: only after the new version is published, and never fatal.
            if let Err(e) = store::prune(&store_path, job.output.keep_versions) {
                eprintln!("warning: published {version}, but pruning old versions failed: {e}");
            }
            Ok::<_, String>(dir)
        });
        match published {
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

/// Rows of the files whose path starts with `prefix`.
fn files_rows(files: &[FileRecord], prefix: &str) -> u64 {
    files
        .iter()
        .filter(|f| f.path.starts_with(prefix))
        .map(|f| f.rows)
        .sum()
}

fn job_has_no_eval(job: &Job) -> bool {
    job.eval.holdout <= 0.0 && job.eval.test.is_none()
}
