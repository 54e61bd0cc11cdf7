//! The vector exchange of a half-step: every worker sends the other side's vectors its
//! routing plan names and puts those it receives (or owns) into a gathered array, either its
//! own (per-worker layout) or its process's shared one ([`super::shared`]).

use super::msg::{AlsMsg, GramPart};
use super::Ch;
use crate::comm::local::Writer;
use crate::comm::CommError;
use crate::job::Als;
use crate::side::Side;
use timely::worker::Worker;

/// Where [`exchange_into`] puts the vectors: whole rows from a first row on.
pub(crate) trait Sink {
    /// Copies `v` (whole rows) in from row `first`.
    fn put(&mut self, first: usize, v: &[f32]);
}

/// A worker's own gathered array.
struct SliceSink<'a> {
    buf: &'a mut [f32],
    d: usize,
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, first: usize, v: &[f32]) {
        self.buf[first * self.d..first * self.d + v.len()].copy_from_slice(v);
    }
}

/// This thread's rows of its process's shared gathered array.
impl Sink for Writer<'_> {
    fn put(&mut self, first: usize, v: &[f32]) {
        Writer::put(self, first, v);
    }
}

/// What one exchange of vectors moved.
pub(crate) struct Exchanged {
    /// The Gram partials that arrived with the first round.
    pub(crate) parts: Vec<GramPart>,
    /// Vector bytes sent to other workers.
    pub(crate) vector_bytes: u64,
    /// Vector bytes copied in directly (this worker's own vectors, no message).
    pub(crate) local_bytes: u64,
}

/// [`exchange_into`] a worker's own gathered array (per-worker layout, as ingest built it).
/// Returns the Gram partials that arrived and the vector bytes sent.
pub(crate) fn exchange_vectors(
    worker: &mut Worker,
    comm: &mut Ch,
    als: &Als,
    s: &Side,
    o: &Side,
    gathered: &mut [f32],
) -> Result<(Vec<GramPart>, u64), CommError> {
    let d = als.factors;
    let mut sink = SliceSink { buf: gathered, d };
    let ex = exchange_into(worker, comm, als, s, o, &mut sink)?;
    Ok((ex.parts, ex.vector_bytes))
}

/// Sends this worker's vectors to the workers whose rows touch them and puts the vectors its
/// routing receives into `gathered`, in rounds of at most `als.exchange_kib` per destination:
/// a round's buffers are copied in and freed before the next round is built, so the exchange
/// costs a few chunks of memory, not a second copy of every vector this worker sends.
pub(crate) fn exchange_into(
    worker: &mut Worker,
    comm: &mut Ch,
    als: &Als,
    s: &Side,
    o: &Side,
    gathered: &mut dyn Sink,
) -> Result<Exchanged, CommError> {
    let d = als.factors;
    let per_round = (als.exchange_kib * 256 / d).max(1);
    let mut ex = Exchanged {
        parts: Vec::new(),
        vector_bytes: 0,
        local_bytes: 0,
    };
    let mut got_rows = vec![0usize; s.routing.incoming.len()];
    for round in 0.. {
        let window = round * per_round..(round + 1) * per_round;
        let more = send_round(comm, s, o, gathered, d, window, &mut ex);
        // Everybody learns whether anybody has rows left, so all run the same rounds.
        comm.broadcast(AlsMsg::Counts(vec![more as u64]));
        if !receive_round(worker, comm, s, gathered, d, &mut got_rows, &mut ex.parts)? {
            break;
        }
    }
    check_complete(comm, s, o, &got_rows);
    Ok(ex)
}

/// One round's sends: the rows of every outgoing list that fall in `window` (positions in
/// the list) as one buffer per destination; this worker's own rows go straight into
/// `gathered` in the first round (no message buffer). Returns whether any list has rows left.
fn send_round(
    comm: &mut Ch,
    s: &Side,
    o: &Side,
    gathered: &mut dyn Sink,
    d: usize,
    window: std::ops::Range<usize>,
    ex: &mut Exchanged,
) -> bool {
    let lo = window.start;
    let mut more = false;
    for out in &o.routing.outgoing {
        let (dest, rows) = (&out.to, &out.rows);
        if *dest == comm.index {
            if let Some((_, inc)) = s.routing.from(comm.index) {
                if inc.len == rows.len() {
                    if lo == 0 {
                        let off = inc.offset;
                        for (k, &r) in rows.iter().enumerate() {
                            gathered.put(off + k, o.row(r as usize));
                        }
                        ex.local_bytes += (4 * d * rows.len()) as u64;
                    }
                    continue;
                }
            }
        }
        if lo >= rows.len() {
            continue;
        }
        let hi = rows.len().min(window.end);
        more |= hi < rows.len();
        let mut buf = Vec::with_capacity((hi - lo) * d);
        for &r in &rows[lo..hi] {
            buf.extend_from_slice(o.row(r as usize));
        }
        if *dest != comm.index {
            ex.vector_bytes += 4 * buf.len() as u64;
        }
        comm.send(*dest, AlsMsg::Vectors(lo as u64, buf));
    }
    more
}

/// One round's receives: vectors into `gathered` at their routing offsets (counted per
/// incoming list in `got_rows`), Gram partials into `parts`. Returns whether any worker has
/// rows left for another round.
fn receive_round(
    worker: &mut Worker,
    comm: &mut Ch,
    s: &Side,
    gathered: &mut dyn Sink,
    d: usize,
    got_rows: &mut [usize],
    parts: &mut Vec<GramPart>,
) -> Result<bool, CommError> {
    let mut any_more = false;
    for (from, b) in comm.exchange(worker, "train: exchange vectors")? {
        match b {
            AlsMsg::Vectors(first, v) => {
                let (j, inc) = s.routing.from(from).expect("routing table");
                let (off, len) = (inc.offset, inc.len);
                let first = first as usize;
                assert!(
                    v.len() % d == 0 && first + v.len() / d <= len,
                    "vector buffer from worker {from} does not fit its routing table"
                );
                gathered.put(off + first, &v);
                got_rows[j] += v.len() / d;
            }
            AlsMsg::GramParts(mut p) => parts.append(&mut p),
            AlsMsg::Counts(c) => any_more |= c[0] != 0,
            _ => unreachable!(),
        }
    }
    Ok(any_more)
}

/// Every incoming list arrived whole (this worker's own, copied directly, excepted).
fn check_complete(comm: &Ch, s: &Side, o: &Side, got_rows: &[usize]) {
    for (j, inc) in s.routing.incoming.iter().enumerate() {
        let (from, len) = (inc.from, inc.len);
        let own = from == comm.index
            && o.routing
                .outgoing
                .iter()
                .any(|out| out.to == from && out.rows.len() == len);
        assert!(
            own || got_rows[j] == len,
            "worker {from} sent {} of {len} vectors",
            got_rows[j]
        );
    }
}
