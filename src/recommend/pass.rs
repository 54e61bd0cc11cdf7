//! The recommendation stage: prepare the scorer once, then rank, write and evaluate this
//! worker's users block by block, and merge the counts on worker 0.

use super::calibrate::{calibrate, Chosen};
use super::catalog::{gather_items, Catalog, Seen};
use super::evaluate::Evaluation;
use super::recall::{Reference, Sample};
use super::scan::{CatalogIx, ScanIndex};
use super::scorer::{ExactDense, ExactScan, Popular, Ranked, Scorer};
use super::similar::{unit_rows, write_lists};
use super::similar_graph::{similar_graph, SimilarCalibration};
use super::{lap, lsh_scorer, similar_items, text, total_users, Phases, Recs, Scored};
use crate::cluster::{Comm, CommError};

use crate::ids::RawId;
use crate::job::{Job, Mode, SimilarMethod};
use crate::side::Side;
use std::time::Instant;
use timely::worker::Worker;

/// Recommends for this worker's users and evaluates against each held-out set of `held`
/// (user id, item key); `keep_pairs`: also return the lines' (user, item) hashes.
pub fn recommend(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    users: &Side,
    items: &Side,
    held: &[&[(RawId, u64)]],
    keep_pairs: bool,
) -> Result<Recs, CommError> {
    let mut phases = Phases::default();
    let mut clock = Instant::now();
    let cat = gather_items(worker, comm, items)?;
    let mode = job.recommend.mode;
    // The fused scan of the whole catalogue (where the kernel runs): exact mode's scorer; in LSH
    // mode it ranks the user buckets and gives sampled users' exact top-k for recall.
    let full = matches!(mode, Mode::Exact | Mode::Lsh)
        .then(|| ScanIndex::build(&cat.keys, &cat.factors, users.dim))
        .flatten();
    let total = total_users(worker, comm, users)?;
    let seen = Seen::new(users, &cat);
    let chosen = match mode {
        Mode::Lsh => Some(choose_lsh(
            worker,
            comm,
            job,
            &cat,
            users,
            &seen,
            full.as_ref(),
            total,
        )?),
        _ => None,
    };
    phases.prepare += lap(&mut clock);
    let mut out = empty_recs(&cat, chosen.as_ref(), comm, keep_pairs);
    let similar_lsh = match job.similar.k {
        0 => None,
        _ => {
            let (part, rec) = similar(worker, comm, job, &cat, items, chosen.as_ref())?;
            out.similar = Some(part);
            Some(rec)
        }
    };
    phases.similar += lap(&mut clock);
    let mut scorer = choose_scorer(mode, &cat, chosen.as_ref(), full.as_ref());
    let ks = job.eval.k.list();
    let exact = mode == Mode::Exact;
    let ev = Evaluation::new(users, &cat, held, &ks, total, exact, job.eval.seed);
    let mut pass = Pass::new(job, users, &cat, &seen, ev, comm.index, keep_pairs);
    pass.run(&mut *scorer, &mut out, &mut phases, &mut clock);
    let finished = pass
        .writer
        .take()
        .map(|w| w.and_then(|w| w.finish()))
        .transpose();
    out.part = comm.agree(worker, "recommend: write", finished)?;
    phases.write += lap(&mut clock);
    let ek = job.eval.k.max();
    merge(
        worker,
        comm,
        (pass, &ks, ek),
        &mut out,
        (&cat, full.is_some(), chosen.as_ref()),
    )?;
    if let Some(v) = out.lsh.as_mut() {
        v["similar"] = serde_json::json!(similar_lsh.flatten());
    }
    out.phases = phases;
    Ok(out)
}

/// What the stage returns before the pass: nothing counted yet, the LSH buckets' part file
/// when an index was chosen.
fn empty_recs(cat: &Catalog, chosen: Option<&Chosen>, comm: &Comm, keep_pairs: bool) -> Recs {
    Recs {
        part: None,
        pairs: keep_pairs.then(Vec::new),
        lines: 0,
        users_without_recs: 0,
        metrics: Vec::new(),
        catalogue: cat.len(),
        buckets: chosen.map(|c| c.index.bucket_lines(&cat.ids, comm.index, comm.peers)),
        similar: None,
        exact: None,
        lsh: None,
        phases: Phases::default(),
    }
}

/// The mode's scorer, chosen once for the whole pass: LSH candidates when an index was
/// chosen, popularity, or the exact scan (dense scores where its kernel does not run).
fn choose_scorer<'a>(
    mode: Mode,
    cat: &'a Catalog,
    chosen: Option<&'a Chosen>,
    full: Option<&'a ScanIndex>,
) -> Box<dyn Scorer + 'a> {
    match (chosen, full) {
        (Some(c), _) => lsh_scorer::choose(cat, &c.index, &c.codes, full),
        _ if mode == Mode::Popular => Box::new(Popular::new(cat)),
        (None, Some(scan)) => Box::new(ExactScan { scan }),
        (None, None) => Box::new(ExactDense::new(cat)),
    }
}

/// Sends this worker's sums and counts to worker 0, which gets the job's metrics, line counts
/// and the manifest's `exact` / `lsh` sections (`full`: whether the exact scan ran).
fn merge(
    worker: &mut Worker,
    comm: &mut Comm,
    (pass, ks, ek): (Pass, &[usize], usize),
    out: &mut Recs,
    (cat, full, chosen): (&Catalog, bool, Option<&Chosen>),
) -> Result<(), CommError> {
    let mode = pass.job.recommend.mode;
    let mut counts = vec![
        out.users_without_recs,
        out.lines,
        pass.scored.sum,
        pass.scored.users,
    ];
    counts.extend_from_slice(&pass.scored.hist);
    let (metrics, c) = pass.ev.finish(worker, comm, counts, ks)?;
    out.metrics = metrics;
    if comm.index == 0 {
        out.users_without_recs = c[0];
        out.lines = c[1];
        let scored = Scored {
            sum: c[2],
            users: c[3],
            hist: c[4..].to_vec(),
        };
        if mode == Mode::Exact && full {
            out.exact = Some(scored.json(cat.len()).into());
        }
        out.lsh = chosen.map(|c| lsh_json(c, &scored, cat.len(), ek));
    }
    Ok(())
}

/// Builds the LSH index with the sizes that reach `lsh.target_recall` (see `calibrate`),
/// measured on a hash-chosen share of all `total` users (the same for any worker count).
#[allow(clippy::too_many_arguments)]
fn choose_lsh(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    cat: &Catalog,
    users: &Side,
    seen: &Seen,
    full: Option<&ScanIndex>,
    total: u64,
) -> Result<Chosen, CommError> {
    let ek = job.eval.k.max();
    let sample = Sample::new(job.eval.recall_sample, total, job.eval.seed);
    let exclude = job.recommend.exclude_seen;
    let reference = Reference::build(users, cat, seen, &sample, exclude, full, ek);
    let want = job.recommend.k.max(ek);
    calibrate(worker, comm, &job.lsh, cat, users, full, &reference, want)
}

/// A similar-items part file and its line count.
type SimilarPart = (Vec<u8>, u64);

/// Similar items of this worker's items: under `lsh.target_recall` exact or from the neighbour
/// graph refined to it, as `similar.method` says (with the record of that); from the LSH
/// index's buckets where one with tables is used without a target (Etsy's method); else exact.
fn similar(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    cat: &Catalog,
    items: &Side,
    chosen: Option<&Chosen>,
) -> Result<(SimilarPart, Option<SimilarCalibration>), CommError> {
    let k = job.similar.k;
    let Some(c) = chosen.filter(|c| c.cfg.tables > 0) else {
        return Ok((similar_items(cat, items, None, k), None));
    };
    if c.cfg.target_recall == 0.0 {
        return Ok((similar_items(cat, items, Some(&c.index), k), None));
    }
    let n = cat.len();
    let graph = match job.similar.method {
        SimilarMethod::Graph => true,
        SimilarMethod::Exact => false,
        SimilarMethod::Auto => n >= SimilarMethod::GRAPH_FROM,
    };
    if !graph {
        let why = match job.similar.method {
            SimilarMethod::Exact => "similar.method = \"exact\"",
            _ => "similar.method = \"auto\": exact below 1 M items (cheaper there than the graph)",
        };
        let record = SimilarCalibration::exact(&c.cfg, k, why);
        return Ok((similar_items(cat, items, None, k), Some(record)));
    }
    let sample = (job.eval.recall_sample, job.eval.seed, k);
    let all = unit_rows(&cat.factors, items.dim);
    let mine: Vec<usize> = (0..items.rows())
        .map(|r| cat.index(items.key_of(r)).expect("own item in catalogue"))
        .collect();
    let found = similar_graph(worker, comm, &c.cfg, (cat, &all), &mine, sample)?;
    let part = match &found.graph {
        Some(g) => write_lists(cat, (items, &mine), k, |i| g.top(i, k)),
        None => similar_items(cat, items, None, k),
    };
    Ok((part, Some(found.record)))
}

/// The manifest's `recommend.lsh`: buckets, candidates, recall and the calibration.
fn lsh_json(c: &Chosen, scored: &Scored, n: usize, ek: usize) -> serde_json::Value {
    let mut m = scored.json(n);
    let h = &c.hits;
    let mut put = |k: &str, v: serde_json::Value| m.insert(k.to_string(), v);
    put("buckets", serde_json::json!(c.index.stats()));
    put("recall_at_k", serde_json::json!(h.recall()));
    put("recall_k", serde_json::json!(ek));
    put(
        "recall_users",
        serde_json::json!((h.total as f64 / ek.max(1) as f64).round()),
    );
    put(
        "target_recall",
        serde_json::json!(c.calibration.target_recall),
    );
    put("target_met", serde_json::json!(c.calibration.target_met));
    put("calibration", serde_json::json!(c.calibration));
    m.into()
}

/// The pass over this worker's users.
struct Pass<'a> {
    job: &'a Job,
    users: &'a Side,
    seen: &'a Seen<'a>,
    ev: Evaluation<'a>,
    lines: text::Lines,
    /// Per [`CatalogIx`]: the item id's stable hash (for the pairs `keep_pairs` returns).
    item_hash: Vec<u64>,
    /// This worker's part, written block by block (see [`Recs::part`]).
    writer: Option<Result<crate::store::PartWriter, String>>,
    scored: Scored,
}

impl<'a> Pass<'a> {
    fn new(
        job: &'a Job,
        users: &'a Side,
        cat: &'a Catalog,
        seen: &'a Seen<'a>,
        ev: Evaluation<'a>,
        worker: usize,
        keep_pairs: bool,
    ) -> Pass<'a> {
        let k = job.recommend.k;
        let writer = (k > 0).then(|| {
            let rel = crate::store::parts::part_path("recs", worker, job.output.compression);
            let pending =
                crate::store::pending_dir(std::path::Path::new(&job.output.store), worker);
            crate::store::PartWriter::create(pending.join(&rel), &rel)
        });
        Pass {
            job,
            users,
            seen,
            ev,
            lines: text::Lines::new(&cat.ids, k),
            item_hash: if keep_pairs {
                cat.ids.iter().map(RawId::stable_hash).collect()
            } else {
                Vec::new()
            },
            writer,
            scored: Scored::new(),
        }
    }

    /// Ranks, writes and evaluates every user, block by block (phases timed per block: a
    /// clock read per user and phase cost more than some phases).
    fn run(
        &mut self,
        scorer: &mut dyn Scorer,
        out: &mut Recs,
        ph: &mut Phases,
        clock: &mut Instant,
    ) {
        let want = self.job.recommend.k.max(self.job.eval.k.max());
        let block = scorer.block().max(1);
        let mut r0 = 0;
        while r0 < self.users.rows() {
            let rows: Vec<usize> = (r0..(r0 + block).min(self.users.rows())).collect();
            let seen: Vec<Vec<CatalogIx>> = rows.iter().map(|&r| self.seen.row(r)).collect();
            let none = vec![
                Vec::new();
                if self.job.recommend.exclude_seen {
                    0
                } else {
                    rows.len()
                }
            ];
            let ex = if none.is_empty() { &seen } else { &none };
            let ranked = scorer.rank(self.users, &rows, ex, want);
            ranked
                .scored
                .iter()
                .flatten()
                .for_each(|&c| self.scored.add(c));
            ph.score += lap(clock);
            self.write(&rows, &ranked, out);
            ph.write += lap(clock);
            for set in 0..self.ev.sets() {
                for (j, &r) in rows.iter().enumerate() {
                    self.ev
                        .add(set, r, &ranked.lists[j], &seen[j], scorer.full_row(j));
                }
            }
            ph.eval += lap(clock);
            r0 += rows.len();
        }
    }

    /// Writes the block's lines. They go to disk now: a worker's recs are hundreds of MB at
    /// scale. After a failed write nothing more is written; the error ends the stage on every
    /// worker.
    fn write(&mut self, rows: &[usize], ranked: &Ranked, out: &mut Recs) {
        let k = self.job.recommend.k;
        let (mut text, before) = (Vec::new(), out.lines);
        for (&r, list) in rows.iter().zip(&ranked.lists) {
            if list.is_empty() && k > 0 {
                out.users_without_recs += 1;
            }
            let id = &self.users.ids[r];
            self.lines
                .push_user(&mut text, id, list.iter().take(k).copied());
            out.lines += list.len().min(k) as u64;
            if let Some(p) = out.pairs.as_mut() {
                let u = id.stable_hash();
                p.extend(list.iter().take(k).map(|&(i, _)| (u, self.item_hash[i])));
            }
        }
        if let Some(Ok(w)) = self.writer.as_mut() {
            if let Err(e) = w.append(&text, out.lines - before) {
                self.writer = Some(Err(e));
            }
        }
    }
}
