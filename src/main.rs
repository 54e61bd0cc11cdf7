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
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Worker threads per process.
        #[arg(short = 'w', long, default_value_t = 1)]
        workers: usize,
        /// Number of processes (cluster mode).
        #[arg(short = 'n', long, default_value_t = 1)]
        processes: usize,
        /// This process's index (cluster mode).
        #[arg(short = 'p', long, default_value_t = 0)]
        process: usize,
        /// File with one host:port per line, in process order (cluster mode).
        #[arg(long)]
        hostfile: Option<PathBuf>,
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
        /// Seconds one superstep may wait for peers before the job fails.
        #[arg(long, default_value_t = 600)]
        deadline_secs: u64,
    },
    /// Write synthetic implicit data (planted low-rank model, power-law activity) as TSV.
    Generate {
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
    },
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
    /// Metrics of any recommendation file or directory against held-out pairs.
    Eval {
        /// Recommendation file or directory of part files (`user item score rank`).
        #[arg(long)]
        recs: PathBuf,
        /// Training pairs (users absent from it are not evaluated).
        #[arg(long)]
        train: PathBuf,
        /// Held-out pairs.
        #[arg(long)]
        test: PathBuf,
        /// Cut-off.
        #[arg(long, default_value_t = 10)]
        k: usize,
    },
    /// Print a user's recommendations from the current version of a store.
    Recommend {
        /// Model store directory.
        store: PathBuf,
        /// User id.
        #[arg(long)]
        user: String,
        /// At most this many.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
    },
    /// Print an item's most similar items from the current version of a store.
    Similar {
        /// Model store directory.
        store: PathBuf,
        /// Item id.
        #[arg(long)]
        item: String,
        /// At most this many.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
    },
    /// Show a store's versions, parameters, counts and metrics.
    Inspect {
        /// Model store directory.
        store: PathBuf,
    },
}

fn main() -> ExitCode {
    // A panicking worker thread would leave its peers waiting for it: end the process at once.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!(
            "error: internal error (a bug in recflow); please report it with the message above"
        );
        std::process::exit(101);
    }));
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
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

fn dispatch(cmd: Cmd) -> Result<(), (u8, String)> {
    match cmd {
        Cmd::Run {
            job,
            workers,
            processes,
            process,
            hostfile,
            set,
            quiet,
            deadline_secs,
            resume,
        } => {
            let j = Job::load(&job, &set).map_err(|e| (2, e.0))?;
            if workers == 0 || processes == 0 || process >= processes {
                return Err((2, format!("bad layout: -w {workers} -n {processes} -p {process} (need w >= 1, n >= 1, p < n)")));
            }
            // Flags win; otherwise Slurm or a Kubernetes indexed job may give the layout.
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
            if processes > 1 && hosts.len() != processes {
                return Err((
                    2,
                    format!(
                        "the hostfile lists {} hosts for -n {processes} processes",
                        hosts.len()
                    ),
                ));
            }
            let opts = RunOptions {
                workers,
                processes,
                process,
                hosts,
                quiet,
                deadline: Duration::from_secs(deadline_secs.max(1)),
                resume,
            };
            let summary = run(j, opts).map_err(|e| (1, e))?;
            if let Some(s) = summary {
                print_summary(&s.manifest, &s.version_dir);
            }
            Ok(())
        }
        Cmd::Generate {
            users,
            items,
            nnz,
            rank,
            seed,
            out,
            threads,
        } => {
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
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let tmp = out.with_extension("tmp");
            let f = std::fs::File::create(&tmp)
                .map_err(|e| (1, format!("cannot create {}: {e}", tmp.display())))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
            recflow::generate::write_tsv(spec, &mut w, threads)
                .and_then(|_| std::io::Write::flush(&mut w))
                .map_err(|e| (1, format!("cannot write {}: {e}", tmp.display())))?;
            std::fs::rename(&tmp, &out)
                .map_err(|e| (1, format!("cannot rename to {}: {e}", out.display())))?;
            Ok(())
        }
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
        Cmd::Inspect { store } => inspect(&store).map_err(|e| (1, e)),
        Cmd::Recommend { store, user, k } => {
            for l in recflow::query::query(&store, "users", &user, k).map_err(|e| (1, e))? {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Similar { store, item, k } => {
            for l in recflow::query::query(&store, "items", &item, k).map_err(|e| (1, e))? {
                println!("{l}");
            }
            Ok(())
        }
        Cmd::Eval {
            recs,
            train,
            test,
            k,
        } => {
            if k == 0 {
                return Err((2, "--k must be at least 1".into()));
            }
            let m = recflow::eval::eval_files(&recs, &train, &test, k).map_err(|e| (1, e))?;
            println!("{}", serde_json::to_string_pretty(&m).expect("json"));
            Ok(())
        }
    }
}

fn print_summary(m: &serde_json::Value, dir: &std::path::Path) {
    let c = &m["counts"];
    println!("recflow run summary");
    println!("  model      {}", dir.display());
    println!(
        "  data       {} lines read, {} users, {} items, {} pairs",
        c["read"]["lines"], c["users"], c["items"], c["pairs"]
    );
    println!(
        "  dropped    {} malformed lines skipped, {} below min_weight, {} pairs with weight <= 0, {} by user cap, {} by item cap",
        c["read"]["skipped"], c["read"]["below_min_weight"], c["nonpositive_pairs"], c["dropped_user_cap"], c["dropped_item_cap"]
    );
    for s in c["read"]["samples"].as_array().into_iter().flatten() {
        println!("             e.g. {}", s.as_str().unwrap_or(""));
    }
    let t = &m["timings"];
    println!(
        "  time       ingest {:.2}s, train {:.2}s, total {:.2}s on {} worker(s)",
        t["ingest_secs"].as_f64().unwrap_or(0.0),
        t["train_secs"].as_f64().unwrap_or(0.0),
        t["total_secs"].as_f64().unwrap_or(0.0),
        m["workers"]
    );
    if let Some(obj) = m["train"]["objective"].as_array() {
        let line: Vec<String> = obj
            .iter()
            .filter(|p| p["half"] == "items")
            .map(|p| {
                format!(
                    "{}:{:.4e}",
                    p["iteration"],
                    p["value"].as_f64().unwrap_or(f64::NAN)
                )
            })
            .collect();
        if !line.is_empty() {
            println!("  objective  {}", line.join(" "));
        }
    }
    if let Some(r) = m.get("recommend").filter(|r| !r.is_null()) {
        println!(
            "  recommend  {} lines, mode {}, {} users without candidates",
            r["lines"], r["mode"], r["users_without_recs"]
        );
    }
    if let Some(x) = m.get("metrics").filter(|x| !x.is_null()) {
        let f = |k: &str| {
            x[k].as_f64()
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "  metrics    @{}: precision {}  map {}  ndcg {}  auc {}  ({} users)",
            x["k"],
            f("precision"),
            f("map"),
            f("ndcg"),
            f("auc"),
            x["users"]
        );
    }
}

fn inspect(store: &std::path::Path) -> Result<(), String> {
    let versions = recflow::store::versions(store);
    if versions.is_empty() {
        return Err(format!("{} holds no published version", store.display()));
    }
    let cur = recflow::store::current(store)?;
    println!("store {}", store.display());
    for v in versions {
        let mark = if cur.as_deref() == Some(&v) { "*" } else { " " };
        match recflow::store::open(store, Some(&v)) {
            Ok((_, m)) => {
                let c = &m["counts"];
                println!(
                    "{mark} {v}  factors {}  users {}  items {}  pairs {}  workers {}  iterations {}  objective {}  metrics {}",
                    m["factors"],
                    c["users"],
                    c["items"],
                    c["pairs"],
                    m["workers"],
                    m["job"]["als"]["iterations"],
                    m["train"]["objective"].as_array().and_then(|a| a.last()).map(|p| p["value"].to_string()).unwrap_or_else(|| "-".into()),
                    m.get("metrics").map(|x| x.to_string()).unwrap_or_else(|| "-".into())
                );
            }
            Err(e) => println!("{mark} {v}  unreadable: {e}"),
        }
    }
    Ok(())
}
