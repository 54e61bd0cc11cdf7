//! What a person sees while a job runs: timestamped log lines from worker 0.

use std::time::Instant;

/// Progress log (prints only on worker 0, unless quiet).
pub struct Log {
    start: Instant,
    enabled: bool,
}

impl Log {
    /// A log that prints when `enabled`.
    pub fn new(enabled: bool) -> Log {
        Log {
            start: Instant::now(),
            enabled,
        }
    }

    /// One line to stderr, prefixed with the seconds since the job started.
    pub fn info(&self, msg: &str) {
        if self.enabled {
            eprintln!("[{:>8.2}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }
}
