//! The `recflow` command line.

#[path = "main/cli.rs"]
mod cli;
#[path = "main/layout.rs"]
mod layout;

use clap::Parser;
use cli::*;
use recflow::job::Job;
use recflow::run::run;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A panicking worker thread would leave its peers waiting for it: end the process at once.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let exiting = recflow::cleanup::EXITING.load(std::sync::atomic::Ordering::SeqCst);
        if exiting != 0 {
            // The run already failed and said why; this is a network thread seeing it end.
            std::process::exit(exiting);
        }
        // timely's network threads panic when a peer process's connection breaks: that is a
        // peer that exited, was killed or became unreachable, not a bug here.
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.contains("timely communication error") {
            // Several network threads may see it at once: one message is enough. The others
            // wait for the first to finish printing and end the process.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if SAID.swap(true, std::sync::atomic::Ordering::SeqCst) {
                loop {
                    std::thread::park();
                }
            }
            recflow::cleanup::finish(1, &format!(
                "lost the connection to another recflow process ({payload}): a peer exited, was killed or is unreachable; nothing was published. The first failure is in the other processes' output; rerun the job (with --resume if als.checkpoint_every is set)"
            ));
        }
        default_hook(info);
        recflow::cleanup::finish(
            101,
            "internal error (a bug in recflow); please report it with the message above",
        );
    }));
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        // Removes a failed run's temporary files; the message is escaped for the terminal.
        Err((code, msg)) => recflow::cleanup::finish(code.into(), &msg),
    }
}

/// Runs one subcommand; the error carries the process's exit code and its message.
fn dispatch(cmd: Cmd) -> Result<(), (u8, String)> {
    match cmd {
        Cmd::Run(a) => run_cmd(a),
        Cmd::Generate(a) => generate_cmd(a),
        Cmd::Export(a) => export_cmd(a),
        Cmd::Plan(a) => plan_cmd(a),
        Cmd::Inspect(a) => inspect_cmd(a),
        Cmd::Recommend(RecommendArgs { k: 0, .. }) | Cmd::Similar(SimilarArgs { k: 0, .. }) => {
            Err((2, "-k must be at least 1".into()))
        }
        Cmd::Recommend(a) => recommend_cmd(a),
        Cmd::Similar(a) => similar_cmd(a),
        Cmd::Tune(a) => tune_cmd(a),
        Cmd::Eval(a) => eval_cmd(a),
    }
}

/// `recflow export`: a version's factors as files, their paths on stdout.
fn export_cmd(a: ExportArgs) -> Result<(), (u8, String)> {
    let ExportArgs {
        store,
        version,
        out,
        format,
    } = a;
    let files =
        recflow::export::export(&store, version.as_deref(), &out, format).map_err(|e| (1, e))?;
    for f in files {
        println!("{f}");
    }
    Ok(())
}

/// `recflow plan`: a job's per-worker training cost on the layouts asked for.
fn plan_cmd(a: PlanArgs) -> Result<(), (u8, String)> {
    let PlanArgs {
        job,
        workers,
        processes,
        shape,
        set,
        json,
    } = a;
    if workers.contains(&0) {
        return Err((2, "plan: -w must list worker counts of at least 1".into()));
    }
    recflow::plan::layouts(&workers, processes).map_err(|e| (2, e))?;
    let shape = shape
        .map(|s| recflow::plan::shape::Shape::parse(&s))
        .transpose()
        .map_err(|e| (2, e))?;
    let j = match (&job, &shape) {
        (Some(path), _) => Job::load(path, &set),
        (None, Some(_)) => Job::parse("", &set),
        (None, None) => return Err((2, "plan: give a JOB file, or --shape".into())),
    }
    .map_err(|e| (2, e.0))?;
    recflow::plan::main(&j, &workers, processes, shape.as_ref(), json.as_ref()).map_err(|e| (1, e))
}

/// `recflow inspect`: a store's versions.
fn inspect_cmd(a: InspectArgs) -> Result<(), (u8, String)> {
    // The listing quotes manifests and reports: escaped like every other message.
    let text = recflow::report::inspect::inspect(&a.store).map_err(|e| (1, e))?;
    print!("{}", recflow::escape::for_terminal(&text));
    Ok(())
}

/// `recflow recommend`: one user's, an item list's or a file of users' recommendations.
fn recommend_cmd(a: RecommendArgs) -> Result<(), (u8, String)> {
    let RecommendArgs {
        store,
        user,
        items,
        users_file,
        k,
        version,
    } = a;
    let v = version.as_deref();
    let lines = match (user, items, users_file) {
        (Some(u), _, _) => recflow::query::query(&store, v, "users", &u, k),
        (None, Some(list), _) => recflow::query::query_items(&store, v, &list, k),
        (None, None, Some(f)) => recflow::query::recommend_batch(&store, v, &f, k),
        (None, None, None) => Err("give --user ID, --items A,B,C or --users-file FILE".into()),
    };
    for l in lines.map_err(|e| (1, e))? {
        println!("{l}");
    }
    Ok(())
}

/// `recflow similar`: one item's most similar items.
fn similar_cmd(a: SimilarArgs) -> Result<(), (u8, String)> {
    let SimilarArgs {
        store,
        item,
        k,
        version,
    } = a;
    let v = version.as_deref();
    for l in recflow::query::query(&store, v, "items", &item, k).map_err(|e| (1, e))? {
        println!("{l}");
    }
    Ok(())
}

/// `recflow eval`: metrics of a recommendation file, or a store version's recomputed.
fn eval_cmd(a: EvalArgs) -> Result<(), (u8, String)> {
    let EvalArgs {
        store,
        version,
        recs,
        train,
        test,
        k,
    } = a;
    if k.is_empty() || k.contains(&0) {
        return Err((2, "--k must be at least 1 (each of a list)".into()));
    }
    let m = match (store, recs, train, test) {
        (Some(s), ..) => recflow::eval_store::eval_store(&s, version.as_deref()),
        (None, Some(r), Some(tr), Some(te)) => recflow::eval::eval_files(&r, &tr, &te, &k),
        _ => Err("give a STORE, or --recs, --train and --test".into()),
    }
    .map_err(|e| (1, e))?;
    println!("{}", serde_json::to_string_pretty(&m).expect("json"));
    Ok(())
}

/// `recflow run`: one job, its summary on stderr.
fn run_cmd(a: RunArgs) -> Result<(), (u8, String)> {
    let RunArgs {
        job,
        layout,
        set,
        quiet,
        resume,
    } = a;
    let j = Job::load(&job, &set).map_err(|e| (2, e.0))?;
    let opts = layout.resolve(quiet, resume)?;
    // SIGINT / SIGTERM: this run's temporary files go, exit 130 / 143 (crate::cleanup).
    recflow::cleanup::on_signals().map_err(|e| (1, e))?;
    let summary = run(j, opts).map_err(failed_run)?;
    if let Some(s) = summary.filter(|_| !quiet) {
        let report = recflow::report::read(&s.version_dir)
            .unwrap_or_else(|| recflow::report::build(&s.manifest, None));
        let dir = s.version_dir.display().to_string();
        eprint!("{}", recflow::report::summary::render(&report, &dir));
    }
    recflow::cleanup::succeed()
}

/// `recflow tune`: the search, then the winner published.
fn tune_cmd(a: TuneArgs) -> Result<(), (u8, String)> {
    let TuneArgs {
        job,
        layout,
        param,
        trials,
        search,
        seed,
        metric,
        time_limit,
        refit,
        early_stop,
        eval_every,
        out,
        set,
        quiet,
    } = a;
    let run = layout.resolve(quiet, false)?;
    Job::load(&job, &set).map_err(|e| (2, e.0))?;
    let params = param
        .iter()
        .map(|p| recflow::tune::parse_param(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (2, e))?;
    let search = search
        .map(|s| recflow::tune::Search::parse(&s))
        .transpose()
        .map_err(|e| (2, e))?;
    let o = recflow::tune::TuneOptions {
        search,
        params,
        trials,
        seed,
        metric,
        time_limit_min: time_limit,
        refit,
        patience: early_stop,
        eval_every,
        out,
        run,
    };
    // SIGINT / SIGTERM: temporary files go, exit 130 / 143 (crate::cleanup).
    recflow::cleanup::on_signals().map_err(|e| (1, e))?;
    recflow::tune::tune(&job, &set, &o).map_err(failed_run)?;
    recflow::cleanup::succeed()
}

/// `recflow generate`: a synthetic data set (or a day's delta), written atomically.
fn generate_cmd(a: GenerateArgs) -> Result<(), (u8, String)> {
    let GenerateArgs {
        users,
        items,
        nnz,
        rank,
        seed,
        out,
        threads,
        delta,
        delta_nnz,
        new_users,
        new_items,
        removals,
    } = a;
    if users == 0 || items == 0 || rank == 0 {
        return Err((2, "--users, --items and --rank must be at least 1".into()));
    }
    let spec = recflow::generate::Spec {
        users,
        items,
        nnz,
        rank,
        seed,
    };
    let threads = threads.unwrap_or_else(layout::local_cores);
    let tmp = out.with_extension("tmp");
    let f = std::fs::File::create(&tmp)
        .map_err(|e| (1, format!("cannot create {}: {e}", tmp.display())))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
    let written = match delta {
        None => recflow::generate::write_tsv(spec, &mut w, threads),
        Some(0) => {
            return Err((
                2,
                "--delta DAY: days start at 1 (day 0 is the base set: omit --delta)".into(),
            ))
        }
        Some(day) => {
            let d = recflow::generate::Delta {
                day,
                nnz: delta_nnz.unwrap_or(nnz / 20),
                new_users: new_users.unwrap_or(users / 50),
                new_items: new_items.unwrap_or(items / 50),
                removals: removals.unwrap_or(nnz / 200),
            };
            recflow::generate::write_delta_tsv(spec, &d, &mut w)
        }
    };
    written
        .and_then(|_| std::io::Write::flush(&mut w))
        .map_err(|e| (1, format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &out)
        .map_err(|e| (1, format!("cannot rename to {}: {e}", out.display())))?;
    Ok(())
}

/// A failed run's exit: `EXIT_LOCKED` when another run holds the store, else 1.
fn failed_run(e: String) -> (u8, String) {
    let code = if e.contains(recflow::lock::LOCKED) {
        recflow::lock::EXIT_LOCKED as u8
    } else {
        1
    };
    (code, e)
}
