//! The `recflow` command line.

use clap::{Parser, Subcommand};
use recflow::export::ExportFormat;
use recflow::job::Job;
use recflow::run::{run, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "recflow",
    version,
    about = "Train implicit-feedback recommenders (weighted ALS + LSH) as batch jobs on timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a job file: ingest, train, recommend, evaluate, publish.
    Run(RunArgs),
    /// Search hyperparameters on eval.valid, then publish the best configuration's model
    /// (with metrics on eval.test) and write OUT/tune.json, OUT/tune.html, OUT/best.toml.
    Tune(TuneArgs),
    /// Write synthetic implicit data (planted low-rank model, power-law activity) as TSV.
    Generate(GenerateArgs),
    /// Export a published model's factors.
    Export {
        /// Model store directory.
        store: PathBuf,
        /// Version (default: CURRENT).
        #[arg(long)]
        version: Option<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Tsv)]
        format: ExportFormat,
    },
    /// Metrics of any recommendation file or directory against held-out pairs, or recompute a
    /// store version's own metrics (`recflow eval STORE`).
    Eval {
        /// A model store: recompute its version's metrics from the recs and held-out pairs
        /// it keeps (instead of --recs/--train/--test).
        #[arg(conflicts_with_all = ["recs", "train", "test"])]
        store: Option<PathBuf>,
        /// With STORE: the version to evaluate (default: CURRENT).
        #[arg(long, requires = "store")]
        version: Option<String>,
        /// Recommendation file or directory of part files (`user item score rank`).
        #[arg(long, required_unless_present = "store")]
        recs: Option<PathBuf>,
        /// Training pairs (users absent from it are not evaluated); gzip/zstd read as such.
        #[arg(long, required_unless_present = "store")]
        train: Option<PathBuf>,
        /// Held-out pairs; gzip/zstd read as such.
        #[arg(long, required_unless_present = "store")]
        test: Option<PathBuf>,
        /// Cut-off(s), comma-separated (`-k 10,20`); the first is the headline.
        #[arg(short, long, default_value = "10", value_delimiter = ',')]
        k: Vec<usize>,
    },
    /// Print a user's recommendations from the current version of a store.
    Recommend {
        /// Model store directory.
        store: PathBuf,
        /// User id.
        #[arg(
            long,
            required_unless_present_any = ["items", "users_file"],
            conflicts_with_all = ["items", "users_file"]
        )]
        user: Option<String>,
        /// Instead of a user: an ad-hoc item list (basket, curated list), comma-separated;
        /// projected (svd model) or solved for (als model) against the item factors.
        #[arg(long, conflicts_with = "users_file")]
        items: Option<String>,
        /// Answer every user in this file (one id per line; the version is loaded once).
        #[arg(long)]
        users_file: Option<PathBuf>,
        /// At most this many (any k: scored at query time from the factors).
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Version to query (default: CURRENT).
        #[arg(long)]
        version: Option<String>,
    },
    /// Print an item's most similar items from the current version of a store.
    Similar {
        /// Model store directory.
        store: PathBuf,
        /// Item id.
        #[arg(long)]
        item: String,
        /// At most this many (any k: scored at query time from the factors).
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Version to query (default: CURRENT).
        #[arg(long)]
        version: Option<String>,
    },
    /// Show a store's versions, parameters, counts and metrics.
    Inspect {
        /// Model store directory.
        store: PathBuf,
    },
    /// Count what training a job costs each worker on a layout (flops, bytes, entities per
    /// half-step), from the ingested data alone: ingests in this process, trains nothing.
    Plan {
        /// The job file (TOML); optional with --shape (the defaults are counted then).
        job: Option<PathBuf>,
        /// Workers of the layouts to count (comma-separated, e.g. 16,64,256).
        #[arg(short = 'w', long, value_delimiter = ',', required = true)]
        workers: Vec<usize>,
        /// Processes each layout's workers run in (divides every -w; default 1): splits the
        /// traffic into network and within-process bytes.
        #[arg(short = 'n', long)]
        processes: Option<usize>,
        /// Count without data, from a degree model of this size:
        /// users=N,items=N,pairs=N[,user_exponent=0.7][,item_exponent=0.8] (power-law degrees
        /// by rank; see the README's "Sizing a cluster").
        #[arg(long, value_name = "SPEC")]
        shape: Option<String>,
        /// Override a job key (repeatable).
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// Also write every half-step's per-worker counts as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The job file (TOML).
    job: PathBuf,
    #[command(flatten)]
    layout: Layout,
    /// Override a job key, e.g. --set als.factors=128 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Continue from the store's last checkpoint (als.checkpoint_every); ends with the same
    /// model an uninterrupted run makes.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
struct TuneArgs {
    /// The job file (TOML); needs eval.valid.
    job: PathBuf,
    #[command(flatten)]
    layout: Layout,
    /// Searched key: `als.factors=64,128,256`, `als.regularization=1e-3..10:log`,
    /// `als.solver=cg,block` (repeatable). None: a built-in space for ALS.
    #[arg(long = "param", value_name = "KEY=VALUES")]
    param: Vec<String>,
    /// Configurations drawn (default: the full grid for lists only; else 27 for halving,
    /// 10 for random).
    #[arg(long)]
    trials: Option<usize>,
    /// grid | random | halving (successive halving: every configuration trains a few
    /// iterations, the best third go on, doubling). Default: grid for lists only without
    /// --trials, else halving.
    #[arg(long)]
    search: Option<String>,
    /// Seed of the random search.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Validation metric to maximise (`ndcg@20`, `recall@10`, `auc`, …).
    #[arg(long, default_value = "ndcg@20")]
    metric: String,
    /// Start no new trial after this many minutes.
    #[arg(long = "time-limit", value_name = "MIN")]
    time_limit: Option<f64>,
    /// Retrain the best configuration on the input plus eval.valid before publishing.
    #[arg(long)]
    refit: bool,
    /// Early stopping: stop a trial after this many evaluations without a better value
    /// (its iteration count becomes the best evaluation's).
    #[arg(long = "early-stop", value_name = "PATIENCE")]
    early_stop: Option<usize>,
    /// Iterations between a trial's evaluations with --early-stop.
    #[arg(long = "eval-every", default_value_t = 2)]
    eval_every: usize,
    /// Directory for trials and the results.
    #[arg(long, default_value = "tune")]
    out: PathBuf,
    /// Override a job key for every trial (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// No progress output from the runs.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Users.
    #[arg(long)]
    users: u64,
    /// Items.
    #[arg(long)]
    items: u64,
    /// Rows.
    #[arg(long)]
    nnz: u64,
    /// Planted rank.
    #[arg(long, default_value_t = 16)]
    rank: u32,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write day DAY's next-day event file for the base set given by the other flags:
    /// new events, new users and items, removals (negative weights).
    #[arg(long, value_name = "DAY")]
    delta: Option<u64>,
    /// Delta mode: new events (default: nnz / 20).
    #[arg(long)]
    delta_nnz: Option<u64>,
    /// Delta mode: new users per day (default: users / 50).
    #[arg(long)]
    new_users: Option<u64>,
    /// Delta mode: new items per day (default: items / 50).
    #[arg(long)]
    new_items: Option<u64>,
    /// Delta mode: base pairs removed (default: nnz / 200).
    #[arg(long)]
    removals: Option<u64>,
}

/// Where the workers run: threads of this process, or processes of a cluster.
#[derive(clap::Args)]
struct Layout {
    /// Worker threads per process [default: the cores this process may use, in local mode;
    /// required in cluster mode, where every process must run the same number].
    #[arg(short = 'w', long)]
    workers: Option<usize>,
    /// Number of processes (cluster mode).
    #[arg(short = 'n', long, default_value_t = 1)]
    processes: usize,
    /// This process's index (cluster mode).
    #[arg(short = 'p', long, default_value_t = 0)]
    process: usize,
    /// File with one host:port per line, in process order (cluster mode).
    #[arg(long)]
    hostfile: Option<PathBuf>,
    /// Seconds one superstep may wait for peers before the job fails.
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
}

impl Layout {
    /// The run options: flags first, else a Slurm or Kubernetes indexed job's environment.
    fn resolve(self, quiet: bool, resume: bool) -> Result<RunOptions, (u8, String)> {
        let Layout {
            workers,
            processes,
            process,
            hostfile,
            deadline_secs,
        } = self;
        if workers == Some(0) || processes == 0 || process >= processes {
            return Err((
                2,
                format!(
                    "bad layout: -w {} -n {processes} -p {process} (need w >= 1, n >= 1, p < n)",
                    workers.unwrap_or(0)
                ),
            ));
        }
        let (processes, process, env_hosts) = match (
            processes,
            recflow::launch::from_env(|k| std::env::var(k).ok()),
        ) {
            (1, Ok(Some(l))) => l,
            (_, Err(e)) if processes == 1 => return Err((2, e)),
            _ => (processes, process, Vec::new()),
        };
        if processes == 0 || process >= processes {
            return Err((
                2,
                format!("bad layout: {processes} processes, this is process {process}"),
            ));
        }
        let hosts = match &hostfile {
            None if !env_hosts.is_empty() => env_hosts,
            Some(h) => read_hostfile(h).map_err(|e| (2, e))?,
            None if processes > 1 => (0..processes)
                .map(|i| format!("127.0.0.1:{}", 2101 + i))
                .collect(),
            None => Vec::new(),
        };
        let workers = workers_or_default(workers, processes).map_err(|e| (2, e))?;
        if processes > 1 && hosts.len() != processes {
            return Err((
                2,
                format!(
                    "the hostfile lists {} hosts for -n {processes} processes",
                    hosts.len()
                ),
            ));
        }
        Ok(RunOptions {
            workers,
            processes,
            process,
            hosts,
            quiet,
            deadline: Duration::from_secs(deadline_secs.max(1)),
            resume,
        })
    }
}

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

fn read_hostfile(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read hostfile {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// `-w` as given, else (local mode only) the cores this process may use:
/// `available_parallelism` honours cgroup quotas and CPU affinity. A cluster's processes must
/// agree on their thread count, so there it has to be said.
fn workers_or_default(workers: Option<usize>, processes: usize) -> Result<usize, String> {
    match workers {
        Some(w) => Ok(w),
        None if processes > 1 => Err(format!(
            "-w is required in cluster mode ({processes} processes): every process must run the same number of worker threads, e.g. -w 16"
        )),
        None => Ok(local_cores()),
    }
}

/// The cores this process may use (1 when the platform cannot tell).
fn local_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn dispatch(cmd: Cmd) -> Result<(), (u8, String)> {
    match cmd {
        Cmd::Run(a) => run_cmd(a),
        Cmd::Generate(a) => generate_cmd(a),
        Cmd::Export {
            store,
            version,
            out,
            format,
        } => {
            let files = recflow::export::export(&store, version.as_deref(), &out, format)
                .map_err(|e| (1, e))?;
            for f in files {
                println!("{f}");
            }
            Ok(())
        }
        Cmd::Plan {
            job,
            workers,
            processes,
            shape,
            set,
            json,
        } => {
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
            recflow::plan::main(&j, &workers, processes, shape.as_ref(), json.as_ref())
                .map_err(|e| (1, e))
        }
        Cmd::Inspect { store } => {
            // The listing quotes manifests and reports: escaped like every other message.
            let text = recflow::report::inspect::inspect(&store).map_err(|e| (1, e))?;
            print!("{}", recflow::escape::for_terminal(&text));
            Ok(())
        }
        Cmd::Recommend { k: 0, .. } | Cmd::Similar { k: 0, .. } => {
            Err((2, "-k must be at least 1".into()))
        }
        Cmd::Recommend {
            store,
            user,
            items,
            users_file,
            k,
            version,
        } => {
            let v = version.as_deref();
            let lines = match (user, items, users_file) {
                (Some(u), _, _) => recflow::query::query(&store, v, "users", &u, k),
                (None, Some(list), _) => recflow::query::query_items(&store, v, &list, k),
                (None, None, Some(f)) => recflow::query::recommend_batch(&store, v, &f, k),
                (None, None, None) => {
                    Err("give --user ID, --items A,B,C or --users-file FILE".into())
                }
            };
            for l in lines.map_err(|e| (1, e))? {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Similar {
            store,
            item,
            k,
            version,
        } => {
            let v = version.as_deref();
            for l in recflow::query::query(&store, v, "items", &item, k).map_err(|e| (1, e))? {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Tune(a) => tune_cmd(a),
        Cmd::Eval {
            store,
            version,
            recs,
            train,
            test,
            k,
        } => {
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
    }
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
    let threads = threads.unwrap_or_else(local_cores);
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
