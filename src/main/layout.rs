//! Where the workers run: the `-w/-n/-p/--hostfile` flags, or a Slurm or Kubernetes
//! indexed job's environment, resolved into the library's [`RunOptions`].

use recflow::run::RunOptions;
use std::path::PathBuf;
use std::time::Duration;

/// Where the workers run: threads of this process, or processes of a cluster.
#[derive(clap::Args)]
pub struct Layout {
    /// Worker threads per process [default: the cores this process may use, in local mode;
    /// required in cluster mode, where every process must run the same number].
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Number of processes (cluster mode).
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index (cluster mode).
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// File with one host:port per line, in process order (cluster mode).
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    /// Seconds one superstep may wait for peers before the job fails.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
}

impl Layout {
    /// The run options: flags first, else a Slurm or Kubernetes indexed job's environment.
    pub fn resolve(self, quiet: bool, resume: bool) -> Result<RunOptions, (u8, String)> {
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
pub fn local_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
