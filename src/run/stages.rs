//! The stages of one run, in the order [`super::run_worker`] calls them. Each is a short
//! function over this worker's state; collective steps go through the stage's own channel
//! (agreements through [`Comm::agree`]).

use super::msg::RunMsg;
use super::RunOptions;
use crate::als::TrainReport;
use crate::checkpoint;
use crate::cluster::{Comm, CommError};
use crate::comm::Channel;
use crate::ingest::{self, IngestStats, Ingested};
use crate::job::Job;
use crate::lock::StoreLock;
use crate::progress::Log;
use crate::recommend::{self, Recs};
use crate::side::Side;
use crate::store;
use crate::store::manifest::SvdReport;
use crate::warm::{self, Parent};
use std::path::{Path, PathBuf};
use std::time::Instant;
use timely::worker::Worker;

/// The driver's channel.
pub(super) type RunCh = Channel<RunMsg>;

/// One run per store at a time: worker 0 takes the lock (and clears what a crashed run left)
/// and holds it until the returned guard drops; everybody learns whether it could.
pub(super) fn lock_store(
    worker: &mut Worker,
    ch: &mut RunCh,
    job: &Job,
) -> Result<Option<StoreLock>, CommError> {
    let lock = if ch.index == 0 {
        let store = Path::new(&job.output.store);
        StoreLock::acquire(store).and_then(|l| store::clean_leftovers(store).map(|_| Some(l)))
    } else {
        Ok(None)
    };
    ch.agree(worker, "store: lock", lock)
}

/// The version a warm start continues from, if any (logged).
pub(super) fn find_parent(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    files: &[PathBuf],
    log: &Log,
) -> Result<Option<Parent>, CommError> {
    let parent = warm::find(worker, comm, job, files)?;
    if let Some(p) = &parent {
        log.info(&format!(
            "warm start from {} ({} snapshot file(s))",
            p.dir.display(),
            p.snapshot.len()
        ));
    } else if job.model.warm_start {
        log.info("warm start: the store has no published version yet, training from scratch");
    }
    Ok(parent)
}

/// Reads, consolidates and shards the input (and the parent's snapshot), checks that there is
/// something to train, and turns weights into confidences. Returns the data and its seconds.
pub(crate) fn ingest(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    files: &[PathBuf],
    parent: Option<&Parent>,
    (log, opts): (&Log, &RunOptions),
) -> Result<(Ingested, f64), CommError> {
    // This process reads about its workers' share of the input (for the byte bar).
    let share = if log.enabled() {
        crate::report::input_bytes(files) * opts.workers as u64 / comm.peers.max(1) as u64
    } else {
        0
    };
    let what = if files.is_empty() {
        "built-in demo data".to_string()
    } else {
        format!("{} file(s)", files.len())
    };
    log.stage_bytes(
        "ingest",
        &format!("{what} with {} worker(s)", comm.peers),
        share,
    );
    let t = Instant::now();
    let snapshot = parent.map(|p| &p.snapshot[..]).unwrap_or(&[]);
    let mut data = ingest::ingest(worker, comm, job, files, snapshot)?;
    let secs = t.elapsed().as_secs_f64();
    let check = match comm.index {
        0 => check_ingested(job, &data.stats),
        _ => Ok(()),
    };
    comm.agree(worker, "ingest: check", check)?;
    apply_confidence(worker, comm, job, &mut data)?;
    if comm.index == 0 {
        log.done(&ingest_line(&data.stats, secs));
    }
    Ok((data, secs))
}

/// Turns the sides' summed weights into confidences by `job.confidence`.
pub(crate) fn apply_confidence(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    data: &mut Ingested,
) -> Result<(), CommError> {
    let s = &data.stats;
    data.confidence = crate::confidence::apply(
        worker,
        comm,
        &job.confidence,
        (s.pairs, s.users, s.items),
        &mut data.users,
        &mut data.items,
    )?;
    Ok(())
}

/// Worker 0's complete counts: an empty result or more factors than entities is an error
/// that says what to change.
pub(crate) fn check_ingested(job: &Job, s: &IngestStats) -> Result<(), String> {
    let (factors, key) = job.factors();
    if s.pairs == 0 {
        return Err(format!(
            "no interactions left after ingest ({} lines read, {} below min_weight, {} skipped, {} pairs with weight <= 0): check input.path, input.format and input.min_weight",
            s.read.lines, s.read.below_min_weight, s.read.skipped, s.nonpositive_pairs
        ));
    }
    if s.items.min(s.users) < factors as u64 {
        let (n, what) = if s.items <= s.users {
            (s.items, "items")
        } else {
            (s.users, "users")
        };
        return Err(format!(
            "{key} = {factors} exceeds the number of {what} in the data ({n}): the model would be over-parameterised; set {key} to at most {n}"
        ));
    }
    Ok(())
}

fn ingest_line(s: &IngestStats, secs: f64) -> String {
    let bytes = if s.read.bytes > 0 {
        format!(
            " ({} bytes; slowest reader {:.0} MB/s)",
            s.read.bytes, s.read.min_mb_per_sec_per_worker
        )
    } else {
        String::new()
    };
    format!(
        "ingest: {} lines{bytes}, {} users, {} items, {} pairs ({secs:.2}s)",
        s.read.lines, s.users, s.items, s.pairs
    )
}

/// The fingerprint of job and data that checkpoints carry; worker 0's counts define it.
pub(super) fn fingerprint(
    worker: &mut Worker,
    ch: &mut RunCh,
    job: &Job,
    data: &Ingested,
) -> Result<String, CommError> {
    let mine =
        (ch.index == 0).then(|| RunMsg::Fingerprint(checkpoint::fingerprint(job, &data.stats)));
    match ch.broadcast_from(worker, "checkpoint: fingerprint", 0, mine)? {
        RunMsg::Fingerprint(fp) => Ok(fp),
        other => unexpected("checkpoint: fingerprint", &other),
    }
}

/// Warm start: known entities take the parent's vectors, new ones are folded in; returns how
/// many (users, items) were new (complete on worker 0).
pub(super) fn fold_in_parent(
    worker: &mut Worker,
    (comm, ch): (&mut Comm, &mut RunCh),
    job: &Job,
    parent: &Parent,
    data: &mut Ingested,
    log: &Log,
) -> Result<[u64; 2], CommError> {
    let loaded = warm::load_factors(parent, &mut data.users, "users")
        .and_then(|u| Ok((u, warm::load_factors(parent, &mut data.items, "items")?)));
    let (new_u, new_i) = comm.agree(worker, "warm start: load factors", loaded)?;
    let mine = [&new_u, &new_i].map(|n| n.iter().filter(|&&b| b).count() as u64);
    let mut total = [0u64; 2];
    for (_, m) in ch.gather_to_leader(worker, "warm start: count new", RunMsg::NewEntities(mine))? {
        if let RunMsg::NewEntities(c) = m {
            total.iter_mut().zip(c).for_each(|(t, c)| *t += c);
        }
    }
    let sides = (&mut data.users, &mut data.items);
    warm::fold_in(worker, comm, job, parent, sides.0, sides.1, &new_u, &new_i)?;
    log.info(&format!(
        "warm start: {} new user(s) and {} new item(s) folded in",
        total[0], total[1]
    ));
    Ok(total)
}

/// Trains the job's model (ALS or SVD) from iteration `start`, saving checkpoints, and refuses
/// a numerically broken result. `kept`: a warm start's parent SVD, reused.
#[allow(clippy::too_many_arguments)]
pub(super) fn train(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    data: &mut Ingested,
    (fp, start): (&str, usize),
    kept: Option<(SvdReport, String)>,
    log: &Log,
) -> Result<(TrainReport, Option<SvdReport>), CommError> {
    let t = Instant::now();
    let every = job.als.checkpoint_every;
    let mut after = |w: &mut Worker, c: &mut Comm, it: usize, u: &Side, i: &Side| {
        if every > 0 && it.is_multiple_of(every) && it < job.als.iterations {
            checkpoint::save(w, c, job, fp, it, u, i)?;
        }
        Ok(())
    };
    let sides = (&mut data.users, &mut data.items);
    let (train, svd) =
        crate::svd::train_model(worker, comm, job, sides, log, start, &mut after, kept)?;
    comm.agree(worker, "train: check", check_trained(data, &train))?;
    if svd.is_none() {
        let objective = train
            .objective
            .last()
            .map(|p| format!("{:.6e}", p.value))
            .unwrap_or_else(|| "not computed".into());
        log.done(&format!(
            "train: {} iteration(s), objective {objective} ({:.2}s)",
            job.als.iterations - start,
            t.elapsed().as_secs_f64()
        ));
    }
    Ok((train, svd))
}

/// A numerically broken solve (zeroed or non-finite vectors) is never published or evaluated.
pub(crate) fn check_trained(data: &Ingested, train: &TrainReport) -> Result<(), String> {
    let finite = [&data.users, &data.items]
        .iter()
        .all(|s| s.factors.iter().all(|x| x.is_finite()));
    if finite && train.singular == 0 && train.objective.iter().all(|p| p.value.is_finite()) {
        return Ok(());
    }
    Err(format!(
        "training broke down numerically ({} singular user/item systems, objective {}): confidences are too large for f32 solves; lower confidence.alpha, use confidence.scheme = \"log\", use smaller weights, or raise als.regularization; nothing was published",
        train.singular,
        train.objective.last().map(|p| p.value).unwrap_or(f64::NAN)
    ))
}

/// Recommendations, similar items and metrics, when the job asks for any of them.
pub(super) fn recommend(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    data: &Ingested,
    warm: bool,
    log: &Log,
) -> Result<Option<Recs>, CommError> {
    if !wants_recommend(job) {
        return Ok(None);
    }
    let t = Instant::now();
    let mode = format!("{:?}", job.recommend.mode).to_lowercase();
    log.stage("recommend", &format!("{mode} mode"));
    let held = [&data.test[..], &data.valid[..]];
    let r = recommend::recommend(worker, comm, job, &data.users, &data.items, &held, warm)?;
    log.done(&format!(
        "recommend: {} lines ({mode} mode, {:.2}s)",
        r.lines,
        t.elapsed().as_secs_f64()
    ));
    Ok(Some(r))
}

fn wants_recommend(job: &Job) -> bool {
    job.recommend.k > 0 || job.similar.k > 0 || has_test(job) || job.eval.valid.is_some()
}

/// Whether the job evaluates on a test set (a holdout share or `eval.test`).
pub(super) fn has_test(job: &Job) -> bool {
    job.eval.holdout > 0.0 || job.eval.test.is_some()
}

/// Where this version came from, for the manifest.
pub(super) fn lineage(
    job: &Job,
    files: &[PathBuf],
    parent: Option<&Parent>,
    changes: Option<store::manifest::RecsChange>,
    fold: Option<[u64; 2]>,
) -> store::manifest::Lineage {
    store::manifest::Lineage {
        recs_vs_parent: changes,
        parent: parent.map(|p| p.version.clone()),
        consumed: warm::consumed(parent, job, files),
        new_users: fold.map(|f| f[0]),
        new_items: fold.map(|f| f[1]),
        parent_objective: parent.and_then(|p| {
            let o = p.manifest.train["objective"].as_array()?;
            Some(o.last()?["value"].clone())
        }),
        parent_metrics: parent.map(|p| p.manifest.metrics.clone()),
    }
}

/// A message of another kind than the superstep exchanges: a bug, reported as a failure.
pub(super) fn unexpected<T>(stage: &str, m: &RunMsg) -> Result<T, CommError> {
    Err(CommError(format!(
        "stage '{stage}': unexpected message {m:?} (a bug: workers disagree on the step)"
    )))
}
