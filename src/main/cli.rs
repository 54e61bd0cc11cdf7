//! The binary's argument types: one clap struct per subcommand (the library never sees them).

use super::layout::Layout;
use clap::{Parser, Subcommand};
use recflow::export::ExportFormat;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "recflow",
    version,
    about = "Train implicit-feedback recommenders (weighted ALS + LSH) as batch jobs on timely dataflow"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a job file: ingest, train, recommend, evaluate, publish.
    Run(RunArgs),
    /// Search hyperparameters on eval.valid, then publish the best configuration's model
    /// (with metrics on eval.test) and write OUT/tune.json, OUT/tune.html, OUT/best.toml.
    Tune(TuneArgs),
    /// Write synthetic implicit data (planted low-rank model, power-law activity) as TSV.
    Generate(GenerateArgs),
    /// Export a published model's factors.
    Export(ExportArgs),
    /// Metrics of any recommendation file or directory against held-out pairs, or recompute a
    /// store version's own metrics (`recflow eval STORE`).
    Eval(EvalArgs),
    /// Print a user's recommendations from the current version of a store.
    Recommend(RecommendArgs),
    /// Print an item's most similar items from the current version of a store.
    Similar(SimilarArgs),
    /// Show a store's versions, parameters, counts and metrics.
    Inspect(InspectArgs),
    /// Count what training a job costs each worker on a layout (flops, bytes, entities per
    /// half-step), from the ingested data alone: ingests in this process, trains nothing.
    Plan(PlanArgs),
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Model store directory.
    pub store: PathBuf,
    /// Version (default: CURRENT).
    #[arg(long)]
    pub version: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Tsv)]
    pub format: ExportFormat,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// A model store: recompute its version's metrics from the recs and held-out pairs
    /// it keeps (instead of --recs/--train/--test).
    #[arg(conflicts_with_all = ["recs", "train", "test"])]
    pub store: Option<PathBuf>,
    /// With STORE: the version to evaluate (default: CURRENT).
    #[arg(long, requires = "store")]
    pub version: Option<String>,
    /// Recommendation file or directory of part files (`user item score rank`).
    #[arg(long, required_unless_present = "store")]
    pub recs: Option<PathBuf>,
    /// Training pairs (users absent from it are not evaluated); gzip/zstd read as such.
    #[arg(long, required_unless_present = "store")]
    pub train: Option<PathBuf>,
    /// Held-out pairs; gzip/zstd read as such.
    #[arg(long, required_unless_present = "store")]
    pub test: Option<PathBuf>,
    /// Cut-off(s), comma-separated (`-k 10,20`); the first is the headline.
    #[arg(short, long, default_value = "10", value_delimiter = ',')]
    pub k: Vec<usize>,
}

#[derive(clap::Args)]
pub struct RecommendArgs {
    /// Model store directory.
    pub store: PathBuf,
    /// User id.
    #[arg(
        long,
        required_unless_present_any = ["items", "users_file"],
        conflicts_with_all = ["items", "users_file"]
    )]
    pub user: Option<String>,
    /// Instead of a user: an ad-hoc item list (basket, curated list), comma-separated;
    /// projected (svd model) or solved for (als model) against the item factors.
    #[arg(long, conflicts_with = "users_file")]
    pub items: Option<String>,
    /// Answer every user in this file (one id per line; the version is loaded once).
    #[arg(long)]
    pub users_file: Option<PathBuf>,
    /// At most this many (any k: scored at query time from the factors).
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Version to query (default: CURRENT).
    #[arg(long)]
    pub version: Option<String>,
}

#[derive(clap::Args)]
pub struct SimilarArgs {
    /// Model store directory.
    pub store: PathBuf,
    /// Item id.
    #[arg(long)]
    pub item: String,
    /// At most this many (any k: scored at query time from the factors).
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Version to query (default: CURRENT).
    #[arg(long)]
    pub version: Option<String>,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Model store directory.
    pub store: PathBuf,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The job file (TOML); optional with --shape (the defaults are counted then).
    pub job: Option<PathBuf>,
    /// Workers of the layouts to count (comma-separated, e.g. 16,64,256).
    #[arg(short = 'w', long, value_delimiter = ',', required = true)]
    pub workers: Vec<usize>,
    /// Processes each layout's workers run in (divides every -w; default 1): splits the
    /// traffic into network and within-process bytes.
    #[arg(short = 'n', long)]
    pub processes: Option<usize>,
    /// Count without data, from a degree model of this size:
    /// users=N,items=N,pairs=N[,user_exponent=0.7][,item_exponent=0.8] (power-law degrees
    /// by rank; see the README's "Sizing a cluster").
    #[arg(long, value_name = "SPEC")]
    pub shape: Option<String>,
    /// Override a job key (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// Also write every half-step's per-worker counts as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    #[command(flatten)]
    pub layout: Layout,
    /// Override a job key, e.g. --set als.factors=128 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Continue from the store's last checkpoint (als.checkpoint_every); ends with the same
    /// model an uninterrupted run makes.
    #[arg(long)]
    pub resume: bool,
}

#[derive(clap::Args)]
pub struct TuneArgs {
    /// The job file (TOML); needs eval.valid.
    pub job: PathBuf,
    #[command(flatten)]
    pub layout: Layout,
    /// Searched key: `als.factors=64,128,256`, `als.regularization=1e-3..10:log`,
    /// `als.solver=cg,block` (repeatable). None: a built-in space for ALS.
    #[arg(long = "param", value_name = "KEY=VALUES")]
    pub param: Vec<String>,
    /// Configurations drawn (default: the full grid for lists only; else 27 for halving,
    /// 10 for random).
    #[arg(long)]
    pub trials: Option<usize>,
    /// grid | random | halving (successive halving: every configuration trains a few
    /// iterations, the best third go on, doubling). Default: grid for lists only without
    /// --trials, else halving.
    #[arg(long)]
    pub search: Option<String>,
    /// Seed of the random search.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Validation metric to maximise (`ndcg@20`, `recall@10`, `auc`, …).
    #[arg(long, default_value = "ndcg@20")]
    pub metric: String,
    /// Start no new trial after this many minutes.
    #[arg(long = "time-limit", value_name = "MIN")]
    pub time_limit: Option<f64>,
    /// Retrain the best configuration on the input plus eval.valid before publishing.
    #[arg(long)]
    pub refit: bool,
    /// Early stopping: stop a trial after this many evaluations without a better value
    /// (its iteration count becomes the best evaluation's).
    #[arg(long = "early-stop", value_name = "PATIENCE")]
    pub early_stop: Option<usize>,
    /// Iterations between a trial's evaluations with --early-stop.
    #[arg(long = "eval-every", default_value_t = 2)]
    pub eval_every: usize,
    /// Directory for trials and the results.
    #[arg(long, default_value = "tune")]
    pub out: PathBuf,
    /// Override a job key for every trial (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// No progress output from the runs.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Users.
    #[arg(long)]
    pub users: u64,
    /// Items.
    #[arg(long)]
    pub items: u64,
    /// Rows.
    #[arg(long)]
    pub nnz: u64,
    /// Planted rank.
    #[arg(long, default_value_t = 16)]
    pub rank: u32,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write day DAY's next-day event file for the base set given by the other flags:
    /// new events, new users and items, removals (negative weights).
    #[arg(long, value_name = "DAY")]
    pub delta: Option<u64>,
    /// Delta mode: new events (default: nnz / 20).
    #[arg(long)]
    pub delta_nnz: Option<u64>,
    /// Delta mode: new users per day (default: users / 50).
    #[arg(long)]
    pub new_users: Option<u64>,
    /// Delta mode: new items per day (default: items / 50).
    #[arg(long)]
    pub new_items: Option<u64>,
    /// Delta mode: base pairs removed (default: nnz / 200).
    #[arg(long)]
    pub removals: Option<u64>,
}
