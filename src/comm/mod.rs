//! Typed collectives: a bulk-synchronous superstep layer on timely's exchange.
//!
//! Each [`Channel<M>`] is one small timely dataflow carrying one stage's own message type `M`
//! from an input handle, through an `Exchange` that routes each envelope to its destination
//! worker, into an inbox. A superstep is: send, advance the epoch, step the worker until the
//! probe says every message of the epoch has arrived everywhere; received messages are then
//! ordered by (sender, sequence). This layer knows nothing about any stage: a stage defines
//! its message enum, implements [`Message`] for it, and talks through [`Channel::all_to_all`],
//! [`Channel::gather_to_leader`], [`Channel::broadcast_from`] and [`reduce_in_vshard_order`].
//!
//! Why supersteps rather than free-running dataflow operators: **determinism** (every result
//! is computed from a complete, sender-ordered set of messages, so floating-point sums run in
//! an order fixed by the data, never by arrival or layout) and **deadlines** (timely has no
//! timeouts, so a stopped peer would make everybody wait forever; each superstep here fails
//! after its deadline, naming the stage, and an error on one worker is broadcast as an abort
//! that fails the superstep on all). Large state stays outside the dataflow, owned by each
//! worker's driver; only what must move crosses workers, through timely, so the same code runs
//! with threads or processes.

mod json;
pub mod local;

pub use json::Json;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

/// A stage's message type.
pub trait Message: timely::ExchangeData + Clone {
    /// Bytes of model data it carries, for the cost model (control messages: 0).
    fn payload_bytes(&self) -> u64 {
        0
    }
}

/// What travels: a stage's message, or an abort from a worker that failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Wire<M> {
    Data(M),
    Abort(String),
}

/// A message between workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Envelope<M> {
    to: u32,
    from: u32,
    /// Sender-local sequence number (received messages are sorted by (from, seq)).
    seq: u64,
    body: Wire<M>,
}

/// A failed superstep.
#[derive(Debug)]
pub struct CommError(pub String);

impl std::fmt::Display for CommError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Inbox<M> = Rc<RefCell<Vec<(u64, Envelope<M>)>>>;

/// Bulk-synchronous messaging of one message type for one worker.
pub struct Channel<M: Message> {
    input: InputHandle<u64, CapacityContainerBuilder<Vec<Envelope<M>>>>,
    probe: ProbeHandle<u64>,
    inbox: Inbox<M>,
    seq: u64,
    /// This worker's index.
    pub index: usize,
    /// Number of workers.
    pub peers: usize,
    /// Longest wait for one superstep.
    pub deadline: Duration,
    /// Payload bytes ([`Message::payload_bytes`]) sent to other workers.
    pub payload_sent: u64,
    /// Payload bytes received from other workers.
    pub payload_received: u64,
    /// Payload bytes sent to each worker (this one's entry stays 0).
    pub payload_sent_to: Vec<u64>,
    /// Payload bytes received from each worker.
    pub payload_received_from: Vec<u64>,
}

impl<M: Message> Channel<M> {
    /// Builds the channel's dataflow on `worker` (every worker must build its channels in the
    /// same order, as timely requires of all dataflows).
    pub fn new(worker: &mut Worker, deadline: Duration) -> Channel<M> {
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let inbox: Inbox<M> = Rc::default();
        let sink = inbox.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Exchange::new(|e: &Envelope<M>| e.to as u64),
                    "Inbox",
                    move |_cap, _info| {
                        move |(input, _frontier), _output| {
                            input.for_each(|cap, data| {
                                let t = *cap.least().expect("a totally ordered stamp");
                                sink.borrow_mut().extend(data.drain(..).map(|e| (t, e)));
                            });
                        }
                    },
                )
                .probe_with(&probe);
        });
        Channel {
            input,
            probe,
            inbox,
            seq: 0,
            index: worker.index(),
            peers: worker.peers(),
            deadline,
            payload_sent: 0,
            payload_received: 0,
            payload_sent_to: vec![0; worker.peers()],
            payload_received_from: vec![0; worker.peers()],
        }
    }

    fn push(&mut self, to: usize, body: Wire<M>) {
        self.seq += 1;
        self.input.send(Envelope {
            to: to as u32,
            from: self.index as u32,
            seq: self.seq,
            body,
        });
    }

    /// Queues `msg` for worker `to` in the current superstep.
    pub fn send(&mut self, to: usize, msg: M) {
        if to != self.index {
            let b = msg.payload_bytes();
            self.payload_sent += b;
            self.payload_sent_to[to] += b;
        }
        self.push(to, Wire::Data(msg));
    }

    /// Sends a copy of `msg` to every worker (including this one).
    pub fn broadcast(&mut self, msg: M) {
        for w in 0..self.peers {
            self.send(w, msg.clone());
        }
    }

    /// Makes the current superstep fail on every worker with `why`.
    pub fn abort(&mut self, why: &str) {
        for w in 0..self.peers {
            self.push(w, Wire::Abort(why.to_string()));
        }
    }

    /// Ends the superstep: waits until every message of it has arrived, then returns this
    /// worker's messages ordered by (sender, sequence), so results never depend on arrival
    /// order. An abort from any worker turns into an error here.
    pub fn exchange(
        &mut self,
        worker: &mut Worker,
        stage: &str,
    ) -> Result<Vec<(usize, M)>, CommError> {
        let epoch = *self.input.time();
        self.input.advance_to(epoch + 1);
        let start = Instant::now();
        while self.probe.less_than(self.input.time()) {
            worker.step_or_park(Some(Duration::from_millis(50)));
            if start.elapsed() > self.deadline {
                return Err(CommError(format!(
                    "stage '{stage}' (superstep {epoch}) did not complete within {:?} on worker {}: a peer is stopped, hung or unreachable (if the stage is just slow, raise `recflow run --deadline-secs`, default 600)",
                    self.deadline, self.index
                )));
            }
        }
        // Faster peers may already have sent messages of later supersteps: keep those.
        let (mut got, later): (Vec<_>, Vec<_>) = std::mem::take(&mut *self.inbox.borrow_mut())
            .into_iter()
            .partition(|(t, _)| *t <= epoch);
        *self.inbox.borrow_mut() = later;
        got.sort_by_key(|(_, e)| (e.from, e.seq));
        let mut out = Vec::with_capacity(got.len());
        for (_, e) in got {
            let msg = match e.body {
                Wire::Abort(why) => return Err(failed(e.from, &why)),
                Wire::Data(m) => m,
            };
            if e.from as usize != self.index {
                let b = msg.payload_bytes();
                self.payload_received += b;
                self.payload_received_from[e.from as usize] += b;
            }
            out.push((e.from as usize, msg));
        }
        Ok(out)
    }

    /// One superstep in which worker `w` receives `per_dest[w]` from every worker.
    pub fn all_to_all(
        &mut self,
        worker: &mut Worker,
        stage: &str,
        per_dest: Vec<M>,
    ) -> Result<Vec<(usize, M)>, CommError> {
        assert_eq!(per_dest.len(), self.peers, "one message per worker");
        for (w, m) in per_dest.into_iter().enumerate() {
            self.send(w, m);
        }
        self.exchange(worker, stage)
    }

    /// One superstep in which worker 0 receives every worker's `msg` (others get nothing).
    pub fn gather_to_leader(
        &mut self,
        worker: &mut Worker,
        stage: &str,
        msg: M,
    ) -> Result<Vec<(usize, M)>, CommError> {
        self.send(0, msg);
        self.exchange(worker, stage)
    }

    /// One superstep in which `root`'s `msg` (`Some` there only) reaches every worker.
    pub fn broadcast_from(
        &mut self,
        worker: &mut Worker,
        stage: &str,
        root: usize,
        msg: Option<M>,
    ) -> Result<M, CommError> {
        if let Some(m) = msg {
            self.broadcast(m);
        }
        let got = self.exchange(worker, stage)?;
        got.into_iter()
            .find(|(from, _)| *from == root)
            .map(|(_, m)| m)
            .ok_or_else(|| CommError(format!("stage '{stage}': worker {root} sent nothing")))
    }

    /// Runs a superstep whose only purpose is to agree on success: if `local` is an error,
    /// every worker gets it (so no worker waits for a peer that gave up).
    pub fn agree<T>(
        &mut self,
        worker: &mut Worker,
        stage: &str,
        local: Result<T, String>,
    ) -> Result<T, CommError> {
        if let Err(e) = &local {
            self.abort(e);
        }
        let got = self.exchange(worker, stage);
        match local {
            Err(e) => Err(CommError(e)),
            Ok(v) => got.map(|_| v),
        }
    }
}

fn failed(from: u32, why: &str) -> CommError {
    CommError(format!("worker {from} failed: {why}"))
}

/// Folds per-virtual-shard parts in ascending shard order (whatever order they arrived in),
/// the one summation order that is the same for every layout.
pub fn reduce_in_vshard_order<T, A>(
    mut parts: Vec<(u32, T)>,
    init: A,
    mut add: impl FnMut(&mut A, &T),
) -> A {
    parts.sort_by_key(|p| p.0);
    let mut acc = init;
    for (_, p) in &parts {
        add(&mut acc, p);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    enum Test {
        Num(u64),
    }
    impl Message for Test {}

    #[test]
    fn collectives_deliver_in_sender_order_and_aborts_fail_everyone() {
        let out = timely::execute(timely::Config::process(3), |worker| {
            let mut ch = Channel::<Test>::new(worker, Duration::from_secs(30));
            let me = ch.index as u64;
            let per: Vec<Test> = (0..3).map(|w| Test::Num(10 * me + w)).collect();
            let got = ch.all_to_all(worker, "a2a", per).unwrap();
            let a2a: Vec<u64> = got.into_iter().map(|(_, Test::Num(x))| x).collect();
            let g = ch
                .gather_to_leader(worker, "gather", Test::Num(me))
                .unwrap();
            let gathered: Vec<usize> = g.into_iter().map(|(f, _)| f).collect();
            let b = ch.broadcast_from(worker, "bcast", 2, (me == 2).then_some(Test::Num(7)));
            let failed = ch.agree(
                worker,
                "agree",
                if me == 1 { Err("x".into()) } else { Ok(()) },
            );
            (
                a2a,
                gathered,
                matches!(b, Ok(Test::Num(7))),
                failed.is_err(),
            )
        })
        .unwrap()
        .join();
        for (w, r) in out.into_iter().enumerate() {
            let (a2a, gathered, b, failed) = r.unwrap();
            let w = w as u64;
            assert_eq!(a2a, vec![w, 10 + w, 20 + w]);
            assert_eq!(gathered, if w == 0 { vec![0, 1, 2] } else { vec![] });
            assert!(b && failed);
        }
    }

    #[test]
    fn vshard_order_reduction_ignores_arrival_order() {
        let parts = vec![(2u32, 0.1f64), (0, 1e16), (1, -1e16)];
        let s = reduce_in_vshard_order(parts, 0.0f64, |a, x| *a += x);
        assert_eq!(s, 0.1); // (1e16 - 1e16) + 0.1, not (0.1 + 1e16) - 1e16 = 0
    }
}
