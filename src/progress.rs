//! What a person sees while a job runs (worker 0 of process 0 only).
//!
//! On a terminal: one `indicatif` line per stage (a spinner, a byte bar while ingest reads, an
//! iteration bar with the objective and an ETA while ALS trains), replaced by one finished
//! line when the stage ends. When stderr is not a terminal: plain timestamped lines. Disabled
//! (`--quiet`, other workers): nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    Plain,
    Bars,
}

/// The live line of the current stage, with the thread that feeds a byte bar.
struct Live {
    name: String,
    bar: ProgressBar,
    feeder: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Live {
    fn stop(self) {
        if let Some((stop, h)) = self.feeder {
            stop.store(true, Ordering::Relaxed);
            h.thread().unpark();
            let _ = h.join();
        }
        self.bar.finish_and_clear();
    }
}

/// Progress log. Cheap no-op when disabled.
pub struct Log {
    start: Instant,
    mode: Mode,
    live: RefCell<Option<Live>>,
}

/// Bytes this process has read through `read(2)` so far (`rchar` of `/proc/self/io`), if the
/// platform tells.
fn bytes_read_by_process() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("progress template")
        .progress_chars("=> ")
}

impl Log {
    /// A log that prints when `enabled`: progress bars if stderr is a terminal (and `TERM` is
    /// not `dumb`), timestamped lines otherwise.
    pub fn new(enabled: bool) -> Log {
        let tty = std::io::stderr().is_terminal()
            && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true);
        Log::with_mode(match (enabled, tty) {
            (false, _) => Mode::Off,
            (true, false) => Mode::Plain,
            (true, true) => Mode::Bars,
        })
    }

    /// A log that always prints plain timestamped lines when `enabled` (never bars).
    pub fn plain(enabled: bool) -> Log {
        Log::with_mode(if enabled { Mode::Plain } else { Mode::Off })
    }

    fn with_mode(mode: Mode) -> Log {
        Log {
            start: Instant::now(),
            mode,
            live: RefCell::new(None),
        }
    }

    /// Whether anything is printed.
    pub fn enabled(&self) -> bool {
        self.mode != Mode::Off
    }

    fn line(&self, msg: &str) -> String {
        format!("[{:>8.2}s] {msg}", self.start.elapsed().as_secs_f64())
    }

    /// One line to stderr, prefixed with the seconds since the job started (printed above
    /// the live bar on a terminal).
    pub fn info(&self, msg: &str) {
        match self.mode {
            Mode::Off => {}
            Mode::Plain => eprintln!("{}", self.line(msg)),
            Mode::Bars => {
                let line = self.line(msg);
                match self.live.borrow().as_ref() {
                    Some(l) => l.bar.suspend(|| eprintln!("{line}")),
                    None => eprintln!("{line}"),
                }
            }
        }
    }

    fn replace_live(&self, live: Option<Live>) {
        if let Some(old) = self.live.replace(live) {
            old.stop();
        }
    }

    /// A stage begins: a spinner with its name and `detail` (a plain line without a terminal).
    pub fn stage(&self, name: &str, detail: &str) {
        match self.mode {
            Mode::Off => {}
            Mode::Plain => self.info(&format!("{name}: {detail}")),
            Mode::Bars => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                    .with_style(style("{spinner} {prefix:<9} {msg} [{elapsed}]"))
                    .with_prefix(name.to_string())
                    .with_message(detail.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.replace_live(Some(Live {
                    name: name.to_string(),
                    bar,
                    feeder: None,
                }));
            }
        }
    }

    /// A stage that reads about `total_bytes` in this process begins: a byte bar fed from the
    /// process's read counter (`/proc/self/io`), or a spinner where there is none.
    pub fn stage_bytes(&self, name: &str, detail: &str, total_bytes: u64) {
        let base = bytes_read_by_process();
        if self.mode != Mode::Bars || total_bytes == 0 || base.is_none() {
            return self.stage(name, detail);
        }
        let base = base.unwrap_or(0);
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr())
            .with_style(style(
                "{spinner} {prefix:<9} [{bar:30}] {binary_bytes}/{binary_total_bytes} read ({binary_bytes_per_sec}, eta {eta}) {msg}",
            ))
            .with_prefix(name.to_string())
            .with_message(detail.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bar.clone(), stop.clone());
        let feeder = std::thread::Builder::new()
            .name("recflow-progress".into())
            .spawn(move || {
                let mut read_all = false;
                while !s.load(Ordering::Relaxed) {
                    if let Some(n) = bytes_read_by_process() {
                        let n = n.saturating_sub(base);
                        b.set_position(n.min(total_bytes));
                        if n >= total_bytes && !read_all {
                            // Reading is over; routing and consolidation go on.
                            read_all = true;
                            b.set_message("read; routing and consolidating");
                        }
                    }
                    std::thread::park_timeout(Duration::from_millis(200));
                }
            })
            .ok();
        self.replace_live(Some(Live {
            name: name.to_string(),
            bar,
            feeder: feeder.map(|h| (stop, h)),
        }));
    }

    /// The current stage ended: its live line is replaced by `msg` (a plain line otherwise).
    pub fn done(&self, msg: &str) {
        self.replace_live(None);
        self.info(msg);
    }

    /// ALS finished iteration `it` of `total` in `secs`, with the objective if it was computed.
    /// On a terminal this moves the iteration bar (objective and ETA); otherwise one line.
    pub fn iteration(&self, it: usize, total: usize, objective: Option<f64>, secs: f64) {
        match self.mode {
            Mode::Off => {}
            Mode::Plain => match objective {
                Some(v) => self.info(&format!(
                    "iteration {it}/{total}: objective {v:.6e} ({secs:.2}s)"
                )),
                None => self.info(&format!("iteration {it}/{total} ({secs:.2}s)")),
            },
            Mode::Bars => {
                let mut live = self.live.borrow_mut();
                let fresh = !matches!(live.as_ref(), Some(l) if l.name == "train" && l.bar.length().is_some());
                if fresh {
                    let bar =
                        ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
                            .with_style(style(
                                "{spinner} {prefix:<9} [{bar:30}] iteration {pos}/{len}  {msg}  eta {eta} [{elapsed}]",
                            ))
                            .with_prefix("train");
                    bar.enable_steady_tick(Duration::from_millis(120));
                    // A resumed run starts part-way: the ETA counts only iterations run here.
                    bar.set_position(it.saturating_sub(1) as u64);
                    bar.reset_eta();
                    if let Some(old) = live.replace(Live {
                        name: "train".into(),
                        bar,
                        feeder: None,
                    }) {
                        old.stop();
                    }
                }
                let l = live.as_ref().expect("live bar");
                l.bar.set_position(it as u64);
                if let Some(v) = objective {
                    l.bar.set_message(format!("objective {v:.6e}"));
                }
            }
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some(l) = self.live.get_mut().take() {
            l.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_and_plain_logs_never_panic() {
        for log in [Log::new(false), Log::plain(false), Log::plain(true)] {
            log.stage("ingest", "demo data");
            log.stage_bytes("ingest", "2 files", 1 << 20);
            log.info("a line");
            log.iteration(1, 3, Some(1.5), 0.1);
            log.iteration(2, 3, None, 0.1);
            log.done("ingest: done");
        }
        assert!(!Log::new(false).enabled());
        assert!(Log::plain(true).enabled());
    }

    #[test]
    fn process_read_counter_grows_when_reading() {
        let Some(a) = bytes_read_by_process() else {
            return; // not Linux, or /proc is hidden: the bar falls back to a spinner
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, vec![7u8; 100_000]).unwrap();
        let _ = std::fs::read(&p).unwrap();
        let b = bytes_read_by_process().unwrap();
        assert!(b >= a + 100_000, "{a} -> {b}");
    }
}
