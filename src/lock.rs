//! One training run per store at a time: `<store>/LOCK`.
//!
//! The lock file is created with `create_new` (atomic on local and NFSv3+ filesystems) and
//! names its holder: host, pid, the process's start time (so a recycled pid is not mistaken for
//! the holder) and when it was taken. It is a lease: the holder touches it every
//! [`STALE_AFTER`]/20. A lock is stale when its holder is on this host and no longer running,
//! or (from any host: a Kubernetes pod or Slurm node is rarely the same twice) when it has not
//! been touched for [`STALE_AFTER`]; a stale lock is moved aside with an atomic rename (only one
//! contender can win it) and taken over. Before publishing, the holder checks that the lock is
//! still its own ([`StoreLock::still_held`]), so a run that was stopped for longer than the
//! lease and overtaken cannot publish over its successor.

use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A lock not touched for this long is presumed dead, whatever host holds it.
pub const STALE_AFTER: Duration = Duration::from_secs(600);

/// Marks the error of a run refused because another run holds the store (exit code 3).
pub const LOCKED: &str = "store is locked";

/// Exit code of a run refused because the store is locked.
pub const EXIT_LOCKED: i32 = 3;

/// Who holds a lock.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux `/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// When the lock was taken (Unix seconds).
    pub since_unix: u64,
}

/// A held lock; dropping it releases the lock (if it is still ours).
#[derive(Debug)]
pub struct StoreLock {
    path: PathBuf,
    me: Holder,
    stop: Arc<AtomicBool>,
}

/// This machine's host name.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Start time (clock ticks since boot) of process `pid`, if it is running.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; field 22 overall is the 20th of them.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Holder {
    fn me() -> Holder {
        let pid = std::process::id();
        Holder {
            host: host_name(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            since_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Whether this holder is known to be gone (same host, process not running or a
    /// different process under a recycled pid).
    fn is_dead(&self) -> bool {
        self.host == host_name() && start_ticks(self.pid) != Some(self.start_ticks)
    }
}

impl StoreLock {
    /// Takes the lock of `store` (created if needed). Returns an error containing [`LOCKED`]
    /// when a live run holds it; takes over a stale lock.
    pub fn acquire(store: &Path) -> Result<StoreLock, String> {
        StoreLock::acquire_with(store, STALE_AFTER)
    }

    /// [`StoreLock::acquire`] with another lease length (tests).
    pub fn acquire_with(store: &Path, stale_after: Duration) -> Result<StoreLock, String> {
        fs::create_dir_all(store)
            .map_err(|e| format!("cannot create model store {}: {e}", store.display()))?;
        let path = store.join("LOCK");
        let me = Holder::me();
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let text = serde_json::to_string(&me).expect("holder serialises");
                    f.write_all(text.as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    let stop = Arc::new(AtomicBool::new(false));
                    heartbeat(path.clone(), stale_after / 20, stop.clone());
                    return Ok(StoreLock { path, me, stop });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(format!(
                        "cannot create {} (is the store writable?): {e}",
                        path.display()
                    ))
                }
            }
            let text = fs::read_to_string(&path).unwrap_or_default();
            let age = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            match serde_json::from_str::<Holder>(&text) {
                Ok(h) if h.is_dead() || age > stale_after => {
                    // Move it aside atomically: of several contenders only one rename succeeds.
                    let aside = store.join(format!("LOCK.stale-{}-{}", h.pid, me.pid));
                    if fs::rename(&path, &aside).is_ok() {
                        let _ = fs::remove_file(&aside);
                    }
                }
                Ok(h) => {
                    return Err(format!(
                        "{LOCKED}: {} is held by pid {} on host {} since unix time {} (renewed {}s ago); another run is training this store. A lock not renewed for {}s is taken over; if you know that run is dead, remove {} and retry",
                        store.display(),
                        h.pid,
                        h.host,
                        h.since_unix,
                        age.as_secs(),
                        stale_after.as_secs(),
                        path.display()
                    ))
                }
                Err(_) => {
                    // Being written right now, or garbage: old garbage is stale.
                    if age.as_secs() < 10 {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        continue;
                    }
                    return Err(format!(
                        "{LOCKED}: {} exists but does not name a holder; if no run is training this store, remove it and retry",
                        path.display()
                    ));
                }
            }
        }
        Err(format!(
            "{LOCKED}: could not take {} (contended); retry",
            path.display()
        ))
    }

    /// The holder this lock records (this process).
    pub fn holder(&self) -> &Holder {
        &self.me
    }

    /// Whether the lock file still names this holder (checked right before publishing).
    pub fn still_held(&self) -> Result<(), String> {
        let now = fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<Holder>(&t).ok());
        match now {
            Some(h) if h == self.me => Ok(()),
            other => Err(format!(
                "lost the store lock {} (now {}): this run was stalled longer than the lease and another run took over; not publishing",
                self.path.display(),
                other
                    .map(|h| format!("held by pid {} on {}", h.pid, h.host))
                    .unwrap_or_else(|| "absent".into())
            )),
        }
    }
}

/// Renews the lease every `every` until `stop` (a detached thread: it dies with the process).
fn heartbeat(path: PathBuf, every: Duration, stop: Arc<AtomicBool>) {
    let step = every.min(Duration::from_millis(200));
    std::thread::spawn(move || {
        let mut waited = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(step);
            waited += step;
            if waited >= every {
                waited = Duration::ZERO;
                if let Ok(f) = OpenOptions::new().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
            }
        }
    });
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Remove it only if it is still ours (it could have been broken by hand).
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<Holder>(&t).ok())
            .is_some_and(|h| h == self.me);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = StoreLock::acquire(dir.path()).unwrap();
        let e = StoreLock::acquire(dir.path()).unwrap_err();
        assert!(
            e.contains(LOCKED) && e.contains(&format!("pid {}", a.holder().pid)),
            "{e}"
        );
        drop(a);
        assert!(!dir.path().join("LOCK").exists());
        StoreLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited: its pid is free (or reused with another start time).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Holder {
            host: host_name(),
            pid,
            start_ticks: 1,
            since_unix: 0,
        };
        fs::write(
            dir.path().join("LOCK"),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        let l = StoreLock::acquire(dir.path()).unwrap();
        assert_eq!(l.holder().pid, std::process::id());
        // A live holder on another host is never broken.
        drop(l);
        let remote = Holder {
            host: "elsewhere.example".into(),
            ..dead
        };
        fs::write(
            dir.path().join("LOCK"),
            serde_json::to_string(&remote).unwrap(),
        )
        .unwrap();
        assert!(StoreLock::acquire(dir.path())
            .unwrap_err()
            .contains("elsewhere.example"));
        // ... until its lease runs out.
        let f = fs::File::options()
            .append(true)
            .open(dir.path().join("LOCK"))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let l = StoreLock::acquire(dir.path()).unwrap();
        assert_eq!(l.holder().pid, std::process::id());
        l.still_held().unwrap();
        // A holder whose lock was taken over knows it before publishing.
        fs::write(
            dir.path().join("LOCK"),
            serde_json::to_string(&remote).unwrap(),
        )
        .unwrap();
        assert!(l.still_held().unwrap_err().contains("lost the store lock"));
    }
}
