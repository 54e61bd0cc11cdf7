//! This run's temporary files, and how a run that ends early removes them.
//!
//! Every directory a run creates before publishing (`.pending-*`, `.staging-*`) goes through
//! [`create_dir_all`], which registers it; so do the `CURRENT` temporary file and the renamed
//! version directory until `CURRENT` names it. Whatever ends the process early calls
//! [`finish`]: an error returned to `main`, a failed process of a cluster run, a lost peer (the
//! panic hook), SIGINT or SIGTERM (a handler thread, [`on_signals`]). It removes what is
//! registered, prints one line and exits (1, or 130 / 143 for SIGINT / SIGTERM).
//!
//! The race with publishing: the rename of the staging directory, the flip of `CURRENT` and
//! pruning run inside [`publishing`], which holds a lock that [`finish`] takes first. A signal
//! therefore lands either before the flip (nothing published, temporary files removed, exit
//! 130 / 143) or after it and after pruning (the version is reported as published, exit 0),
//! never in between. A signal that arrives during the flip waits for it; if the run then ends
//! first, [`succeed`] reports the signal (the handler sets a flag synchronously). Once
//! [`finish`] has begun, [`create_dir_all`] refuses, so a worker that is still running cannot
//! recreate a directory after it was removed, and directories are renamed before removal so
//! that a worker writing into one cannot make the removal fail.
//!
//! The registry is per process (paths carry the process id); library callers of
//! `run::run` only register, and only the binary ends the process.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

#[derive(Default)]
struct State {
    /// Registered temporary paths (directories or files), removed by [`finish`].
    paths: Vec<PathBuf>,
    /// [`finish`] has begun: nothing new may be created.
    ending: bool,
    /// The version this run published (`CURRENT` names it).
    published: Option<PathBuf>,
}

static STATE: Mutex<State> = Mutex::new(State {
    paths: Vec::new(),
    ending: false,
    published: None,
});
static PUBLISH: Mutex<()> = Mutex::new(());

/// Non-zero once this process has decided to exit with that code after a failed run; a panic
/// that happens meanwhile (a network thread noticing closed peers) exits with it too.
pub static EXITING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// The signal received (set in the signal handler itself, before the handler thread runs).
static SIGNALLED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

fn signal_name(sig: usize) -> &'static str {
    if sig == signal_hook::consts::SIGINT as usize {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

fn interrupted_after(sig: usize, v: &Path) -> String {
    format!(
        "recflow: interrupted by {} after publishing {} (CURRENT names it): the version is complete",
        signal_name(sig),
        v.display()
    )
}

thread_local! {
    /// This thread holds [`PUBLISH`] (a panic there must not wait for itself).
    static IN_PUBLISH: Cell<bool> = const { Cell::new(false) };
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates `path` and its missing parents, registering the topmost directory it created as
/// this run's (removed if the run ends early). Refused once the run is ending.
pub fn create_dir_all(path: &Path) -> Result<(), String> {
    let mut st = state();
    if st.ending {
        return Err(format!(
            "not creating {}: the run is ending",
            path.display()
        ));
    }
    let mut top = None;
    let mut p = Some(path);
    while let Some(q) = p.filter(|q| !q.as_os_str().is_empty() && !q.exists()) {
        top = Some(q.to_path_buf());
        p = q.parent();
    }
    std::fs::create_dir_all(path).map_err(|e| {
        format!(
            "cannot create {} (is the store writable?): {e}",
            path.display()
        )
    })?;
    st.paths.extend(top);
    Ok(())
}

/// Registers a temporary file or directory made some other way (removed if the run ends early).
pub fn register(path: &Path) {
    state().paths.push(path.to_path_buf());
}

/// Unregisters `path` (it was renamed away or became part of the published store).
pub fn forget(path: &Path) {
    state().paths.retain(|p| p != path);
}

/// Records that `CURRENT` now names `version_dir`: from here on the run has published.
pub fn published(version_dir: &Path) {
    let mut st = state();
    st.paths.retain(|p| p != version_dir);
    st.published = Some(version_dir.to_path_buf());
}

/// Runs the last steps of a publish (rename, `CURRENT` flip, pruning) so that [`finish`]
/// happens either wholly before or wholly after them.
pub fn publishing<T>(f: impl FnOnce() -> T) -> T {
    let _held = PUBLISH.lock().unwrap_or_else(|e| e.into_inner());
    IN_PUBLISH.with(|c| c.set(true));
    let out = f();
    IN_PUBLISH.with(|c| c.set(false));
    out
}

/// Ends the process after a failure: removes this run's registered temporary files and
/// prints `msg` as the error, exiting with `code`; or, when this run's version was already
/// published, prints it as a warning, says so and exits 0.
pub fn finish(code: i32, msg: &str) -> ! {
    let msg = crate::escape::for_terminal(msg);
    end(code, |published| match published {
        None => format!("error: {msg}"),
        Some(v) => format!(
            "warning: {msg}\n  {} was published before that (CURRENT names it)",
            v.display()
        ),
    })
}

/// [`finish`] with the line `say` gives (it learns whether this run published, and where).
fn end(code: i32, say: impl FnOnce(Option<&Path>) -> String) -> ! {
    let _publish = if IN_PUBLISH.with(Cell::get) {
        None
    } else {
        Some(PUBLISH.lock().unwrap_or_else(|e| e.into_inner()))
    };
    // Held until the process exits: nothing new is registered or created meanwhile.
    let mut st = state();
    st.ending = true;
    if let Some(v) = st.published.clone() {
        eprintln!("{}", say(Some(&v)));
        std::process::exit(0);
    }
    for p in st.paths.drain(..).rev() {
        remove(&p);
    }
    eprintln!("{}", say(None));
    // A network thread that panics from here on (peers see us go) exits with this code.
    EXITING.store(code, std::sync::atomic::Ordering::SeqCst);
    std::process::exit(code)
}

/// Removes a registered path. A directory is first renamed out of the way (to `.trash-*`,
/// which the next run also sweeps): a worker still running cannot add a file to it by name
/// while it is being removed, which would make the removal fail.
fn remove(p: &Path) {
    if p.is_dir() {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let trash = p.with_file_name(format!(".trash-{name}-{}", std::process::id()));
        let gone = std::fs::rename(p, &trash).map(|_| trash);
        let _ = std::fs::remove_dir_all(gone.as_deref().unwrap_or(p));
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// Ends a successful run (exit 0). A signal that arrived during the publish, which it waited
/// for, is reported here when the handler thread has not reported it yet.
pub fn succeed() -> ! {
    let _publish = PUBLISH.lock().unwrap_or_else(|e| e.into_inner());
    let mut st = state();
    st.ending = true;
    let sig = SIGNALLED.get().map_or(0, |s| s.load(Ordering::SeqCst));
    if let (true, Some(v)) = (sig != 0, &st.published) {
        eprintln!("{}", interrupted_after(sig, v));
    }
    std::process::exit(0)
}

/// Installs the SIGINT / SIGTERM handler for a training run: a thread that [`finish`]es the
/// process with exit code 130 / 143 and a message saying nothing was published.
pub fn on_signals() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = SIGNALLED.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_usize(sig, flag.clone(), sig as usize)
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    std::thread::Builder::new()
        .name("recflow-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = signal_name(sig as usize);
                end(128 + sig, |published| match published {
                    None => format!("error: interrupted by {name}: nothing was published (CURRENT is unchanged); this run's temporary files were removed"),
                    Some(v) => interrupted_after(sig as usize, v),
                });
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
