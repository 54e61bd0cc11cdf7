//! The worker threads of one process: who they are, and one read-only copy of what they all
//! need instead of one per thread.
//!
//! Timely gives each worker thread its own state and only messages between them; for data
//! that every thread of a process reads (the other side's factor vectors during a half-step)
//! that means one copy per thread. [`LocalGroup`] finds the threads that share this process
//! (one superstep, see [`LocalGroup::from_announcements`]) and hands them the same object
//! ([`LocalGroup::share`]); [`SharedRows`] is such an object: a row-major `f32` array each
//! thread fills in its own, declared, disjoint row ranges and that all then read.
//! Cross-process data still moves as messages; only threads of one address space share.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A number that differs between processes (pid, start time and an address), equal for the
/// threads of one process: two workers announcing the same nonce share an address space.
pub fn process_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let addr = &NONCE as *const _ as u64;
        let mut h = (std::process::id() as u64) ^ t.rotate_left(17) ^ addr.rotate_left(41);
        // splitmix64 finaliser, so nearby pids and times spread over all bits.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d049bb133111eb);
        h ^ (h >> 31)
    })
}

/// A token unique within this process, so two runs in one process (tests) never share.
pub fn fresh_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Gives memory that threads freed back to the OS. glibc's malloc keeps what a thread frees
/// in that thread's arena; after a stage whose threads allocated and freed a lot (ingest's
/// staging buffers), that retained memory would sit under the next stage's peak once per
/// thread. Linux with glibc only (a no-op elsewhere); call once per process.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists (thread-safe in glibc).
    unsafe {
        libc::malloc_trim(0);
    }
}

type Shared = Arc<dyn std::any::Any + Send + Sync>;

/// Objects being handed to the threads of a group: (group token, sequence) → (object, how
/// many threads have still to take it).
static REGISTRY: Mutex<BTreeMap<(u64, u64), (Shared, usize)>> = Mutex::new(BTreeMap::new());

/// The worker threads of this process, as seen by one of them.
#[derive(Debug)]
pub struct LocalGroup {
    /// Global indices of this process's workers, ascending.
    pub members: Vec<usize>,
    /// This worker's position in `members`.
    pub rank: usize,
    /// The token of the group's first member (the registry key's first half).
    token: u64,
    /// How many objects this thread has taken (the same count on every member, since all
    /// take the same objects in the same order).
    taken: u64,
}

impl LocalGroup {
    /// The group of worker `me` from every worker's announcement `(worker, nonce, token)`
    /// (each worker announces [`process_nonce`] and a [`fresh_token`]): the workers with
    /// `me`'s nonce, keyed by the first one's token.
    pub fn from_announcements(me: usize, all: &[(usize, u64, u64)]) -> LocalGroup {
        let nonce = all
            .iter()
            .find(|a| a.0 == me)
            .expect("a worker announces itself")
            .1;
        let mut mine: Vec<(usize, u64)> = all
            .iter()
            .filter(|a| a.1 == nonce)
            .map(|a| (a.0, a.2))
            .collect();
        mine.sort_unstable();
        let members: Vec<usize> = mine.iter().map(|m| m.0).collect();
        LocalGroup {
            rank: members.binary_search(&me).expect("me in my group"),
            token: mine[0].1,
            members,
            taken: 0,
        }
    }

    /// Threads in this process.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false (a group holds at least its own worker).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether worker `w` runs in this process.
    pub fn is_local(&self, w: usize) -> bool {
        self.members.binary_search(&w).is_ok()
    }

    /// The thread of this process that receives what worker `src` sends this process: `src`
    /// itself when it is local, else member `src mod len` (spreads the receiving).
    pub fn receiver_of(&self, src: usize) -> usize {
        if self.is_local(src) {
            src
        } else {
            self.members[src % self.members.len()]
        }
    }

    /// The object every member of the group gets from its call with the same sequence
    /// number: the first caller builds it with `make`, the others receive the same `Arc`.
    /// Every member must call `share` the same number of times, in the same order.
    pub fn share<T: Send + Sync + 'static>(&mut self, make: impl FnOnce() -> T) -> Arc<T> {
        let key = (self.token, self.taken);
        self.taken += 1;
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.members.len();
        let obj: Shared = match reg.remove(&key) {
            Some((obj, left)) => {
                if left > 1 {
                    reg.insert(key, (obj.clone(), left - 1));
                }
                obj
            }
            None => {
                let obj: Shared = Arc::new(make());
                if n > 1 {
                    reg.insert(key, (obj.clone(), n - 1));
                }
                obj
            }
        };
        obj.downcast::<T>()
            .expect("the members of a group share objects in the same order")
    }
}

/// One value per member, put by each and read by all once every member has put its own
/// (after a superstep).
pub struct Slots<T> {
    slots: Vec<Mutex<Option<T>>>,
}

impl<T> Slots<T> {
    /// Empty slots for `n` members.
    pub fn new(n: usize) -> Slots<T> {
        Slots {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Puts member `rank`'s value.
    pub fn put(&self, rank: usize, v: T) {
        *self.slots[rank].lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// Calls `f` with every member's value, in rank order (panics if one is missing).
    pub fn with_all<R>(&self, f: impl FnOnce(&[&T]) -> R) -> R {
        let guards: Vec<_> = self
            .slots
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let vals: Vec<&T> = guards
            .iter()
            .map(|g| {
                g.as_ref()
                    .expect("every member put its value before reading")
            })
            .collect();
        f(&vals)
    }

    /// Takes member `rank`'s value back out.
    pub fn take(&self, rank: usize) -> Option<T> {
        self.slots[rank]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// A row-major `f32` array shared by the threads of one process, used in rounds: in each,
/// every member writes its declared rows (disjoint from every other member's), then every
/// member reads the whole array; no member writes round `g + 1` before all have finished
/// reading round `g`. The rounds are kept by counters, checked at each write and read (with
/// release/acquire ordering, so what one thread wrote is what the others read).
pub struct SharedRows {
    data: Box<[UnsafeCell<f32>]>,
    dim: usize,
    members: usize,
    /// Row ranges declared per member; overlap is refused at declaration.
    declared: Mutex<Vec<(Range<usize>, usize)>>,
    writes_done: AtomicUsize,
    reads_done: AtomicUsize,
}

// SAFETY: the cells are only written through a `Writer`, whose rows are declared disjoint
// from every other member's (checked in `member`) and which exists only between the reads of
// one round and the reads of the next (checked by the round counters); reads happen only
// when every writer of the round has finished.
unsafe impl Sync for SharedRows {}

impl std::fmt::Debug for SharedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedRows({} × {})",
            self.data.len() / self.dim.max(1),
            self.dim
        )
    }
}

impl SharedRows {
    /// A zeroed array of `rows × dim` for `members` threads.
    pub fn new(rows: usize, dim: usize, members: usize) -> SharedRows {
        let zeros: Box<[f32]> = vec![0.0f32; rows * dim].into_boxed_slice();
        // SAFETY: `UnsafeCell<f32>` has the same layout as `f32` (repr(transparent)).
        let data = unsafe { Box::from_raw(Box::into_raw(zeros) as *mut [UnsafeCell<f32>]) };
        SharedRows {
            data,
            dim,
            members,
            declared: Mutex::new(Vec::new()),
            writes_done: AtomicUsize::new(0),
            reads_done: AtomicUsize::new(0),
        }
    }

    /// Rows in the array.
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    /// Member `rank`'s handle, writing `ranges` (rows) in every round; panics if they overlap
    /// another member's.
    pub fn member(self: &Arc<Self>, rank: usize, ranges: Vec<Range<usize>>) -> RowsHandle {
        let mut d = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        for r in &ranges {
            assert!(r.end <= self.rows(), "rows {r:?} beyond {}", self.rows());
            if let Some((o, who)) = d
                .iter()
                .find(|(o, _)| o.start < r.end && r.start < o.end && !r.is_empty())
            {
                panic!("member {rank} declares rows {r:?}, overlapping member {who}'s {o:?}");
            }
        }
        d.extend(ranges.iter().map(|r| (r.clone(), rank)));
        RowsHandle {
            rows: self.clone(),
            ranges,
            round: 0,
        }
    }

    /// Waits (briefly: the supersteps between the phases already order them) until
    /// `counter` reaches `target`.
    fn wait(&self, counter: &AtomicUsize, target: usize, what: &str) {
        let start = Instant::now();
        while counter.load(Ordering::Acquire) < target {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "shared rows: {what} never finished (the members' rounds are out of step)"
            );
            std::thread::yield_now();
        }
    }
}

/// One member's access to a [`SharedRows`], round by round.
#[derive(Debug)]
pub struct RowsHandle {
    rows: Arc<SharedRows>,
    ranges: Vec<Range<usize>>,
    round: usize,
}

impl RowsHandle {
    /// Starts this round's writes (after every member finished reading the last round).
    pub fn write(&mut self) -> Writer<'_> {
        let r = &self.rows;
        r.wait(
            &r.reads_done,
            r.members * self.round,
            "the last round's reads",
        );
        Writer { h: self }
    }

    /// This round's array, once every member has written; dropping it ends the round.
    pub fn read(&mut self) -> Reader<'_> {
        let r = &self.rows;
        r.wait(
            &r.writes_done,
            r.members * (self.round + 1),
            "this round's writes",
        );
        Reader { h: self }
    }
}

/// Writes of one member in one round.
pub struct Writer<'a> {
    h: &'a mut RowsHandle,
}

impl Writer<'_> {
    /// Copies `v` (whole rows) into the array from row `first`, which must lie in one of this
    /// member's declared ranges.
    pub fn put(&mut self, first: usize, v: &[f32]) {
        let d = self.h.rows.dim;
        assert!(v.len().is_multiple_of(d), "whole rows only");
        let end = first + v.len() / d;
        assert!(
            self.h
                .ranges
                .iter()
                .any(|r| r.start <= first && end <= r.end),
            "rows {first}..{end} are not this member's"
        );
        let dst = &self.h.rows.data[first * d..end * d];
        // SAFETY: these rows are this member's alone (declared disjoint) and no member reads
        // during the round's writes; `UnsafeCell<f32>` is layout-compatible with `f32`.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), UnsafeCell::raw_get(dst.as_ptr()), v.len());
        }
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        self.h.rows.writes_done.fetch_add(1, Ordering::Release);
    }
}

/// The whole array, read-only, for one member in one round.
pub struct Reader<'a> {
    h: &'a mut RowsHandle,
}

impl std::ops::Deref for Reader<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        let data = &self.h.rows.data;
        // SAFETY: every member's writes of this round are done (checked in `read`) and none
        // starts the next round before every reader is dropped (checked in `write`).
        unsafe { std::slice::from_raw_parts(UnsafeCell::raw_get(data.as_ptr()), data.len()) }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        self.h.round += 1;
        self.h.rows.reads_done.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_form_by_nonce_and_share_one_object_per_call() {
        let all = [(0, 7, 100), (1, 9, 200), (2, 7, 101), (3, 9, 201)];
        let mut a = LocalGroup::from_announcements(2, &all);
        let mut b = LocalGroup::from_announcements(0, &all);
        assert_eq!((a.members.clone(), a.rank), (vec![0, 2], 1));
        assert_eq!(a.receiver_of(1), 2); // remote: members[1 % 2]
        assert_eq!(a.receiver_of(0), 0); // local: itself
        let x = a.share(|| 5u32);
        let y = b.share(|| 6u32);
        assert!(Arc::ptr_eq(&x, &y));
        assert_eq!(*y, 5);
        let z = b.share(|| 8u32);
        assert_eq!(*z, 8);
    }

    #[test]
    fn members_write_disjoint_rows_and_read_the_whole_round() {
        let rows = Arc::new(SharedRows::new(4, 2, 2));
        let hs = [
            rows.member(0, vec![0..1, 3..4]),
            rows.member(1, std::iter::once(1..3).collect()),
        ];
        let out: Vec<Vec<f32>> = std::thread::scope(|s| {
            let t: Vec<_> = hs
                .into_iter()
                .enumerate()
                .map(|(m, mut h)| {
                    s.spawn(move || {
                        let mut seen = Vec::new();
                        for round in 0..3 {
                            {
                                let mut w = h.write();
                                let v = (10 * round + m) as f32;
                                if m == 0 {
                                    w.put(0, &[v, v]);
                                    w.put(3, &[v, v]);
                                } else {
                                    w.put(1, &[v, v, v, v]);
                                }
                            }
                            seen.extend_from_slice(&h.read());
                        }
                        seen
                    })
                })
                .collect();
            t.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let want: Vec<f32> = (0..3)
            .flat_map(|r| {
                let (a, b) = ((10 * r) as f32, (10 * r + 1) as f32);
                [a, a, b, b, b, b, a, a]
            })
            .collect();
        assert_eq!(out, vec![want.clone(), want]);
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn overlapping_rows_are_refused() {
        let rows = Arc::new(SharedRows::new(4, 1, 2));
        let _a = rows.member(0, std::iter::once(0..2).collect());
        let _b = rows.member(1, std::iter::once(1..3).collect());
    }
}
