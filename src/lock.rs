//! One training run per store at a time: an exclusive kernel lock on `<store>/LOCK`.
//!
//! The lock is `flock` on an open file (`File::try_lock`), so the kernel decides who holds the
//! store and releases it when the holder's process ends in any way (exit, crash, `kill -9`):
//! there is no stale-lock detection to get wrong and no takeover race. On NFSv4 the server
//! grants the lock as a lease and recovers it when the client dies. The file is never
//! deleted (a deleted-and-recreated lock file would let two runs lock two different files);
//! while held it names the holder (host, pid, start time) for the message a second run prints.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

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
    /// When the lock was taken (Unix seconds).
    pub since_unix: u64,
}

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    me: Holder,
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

impl StoreLock {
    /// Takes the lock of `store` (created if needed), without waiting. Returns an error
    /// containing [`LOCKED`] and naming the holder when another run holds it.
    pub fn acquire(store: &Path) -> Result<StoreLock, String> {
        if store.exists() && !store.is_dir() {
            return Err(format!(
                "model store {} exists but is not a directory: set output.store to a directory",
                store.display()
            ));
        }
        fs::create_dir_all(store)
            .map_err(|e| format!("cannot create model store {}: {e}", store.display()))?;
        let path = store.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                format!(
                    "cannot open {} (is the store writable?): {e}",
                    path.display()
                )
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let who = serde_json::from_str::<Holder>(&text)
                    .map(|h| {
                        format!(
                            "pid {} on host {} since unix time {}",
                            h.pid, h.host, h.since_unix
                        )
                    })
                    .unwrap_or_else(|_| "another process".into());
                return Err(format!(
                    "{LOCKED}: {} is held by {who}; another run is training this store. Run again when it has finished (the lock is released when that process ends, however it ends)",
                    store.display()
                ));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(format!(
                    "cannot lock {} (does the filesystem support locks?): {e}",
                    path.display()
                ))
            }
        }
        let me = Holder {
            host: host_name(),
            pid: std::process::id(),
            since_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let text = serde_json::to_string(&me).expect("holder serialises");
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(StoreLock { file, me })
    }

    /// The holder this lock records (this process).
    pub fn holder(&self) -> &Holder {
        &self.me
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Leave no holder behind for the next message; closing the file releases the lock.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
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
        StoreLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_leftover_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        // What a crashed run leaves: a file naming a holder (or nothing at all), but no lock.
        for text in ["", r#"{"host":"elsewhere","pid":1,"since_unix":0}"#] {
            fs::write(dir.path().join("LOCK"), text).unwrap();
            let l = StoreLock::acquire(dir.path()).unwrap();
            assert_eq!(l.holder().pid, std::process::id());
        }
    }

    #[test]
    fn the_lock_dies_with_its_process() {
        let dir = tempfile::tempdir().unwrap();
        // `flock` in a child shell holds the lock, then the child is killed.
        // `-o`: the lock stays with flock itself, not with the `sleep` it starts.
        let mut child = std::process::Command::new("flock")
            .arg("-o")
            .arg(dir.path().join("LOCK"))
            .args(["sleep", "30"])
            .spawn();
        let Ok(child) = child.as_mut() else {
            return; // no flock(1) on this machine
        };
        let t = std::time::Instant::now();
        while StoreLock::acquire(dir.path()).is_ok() {
            // The child has not taken it yet.
            assert!(t.elapsed().as_secs() < 20, "flock(1) never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        StoreLock::acquire(dir.path()).unwrap();
    }
}
