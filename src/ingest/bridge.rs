//! The bridge between tokio-side sources and timely workers.
//!
//! Sources call [`Ingest`] from their own (tokio blocking-pool) threads; it
//! turns their batches into a totally ordered stream of [`WorkerMsg`]s on one
//! bounded channel per worker (rows partitioned by tag, so each tag's windows
//! live on one worker), and unparks the worker after each send. A full
//! channel blocks the *source*, never a worker: that is the backpressure.
//!
//! # Time
//! Timely time is a `u64`: the global watermark in epoch milliseconds, rounded
//! down to the window size, plus one (the *epoch*). A row is sent at the epoch
//! of the watermark at its arrival, so "on time" means "time < window end"
//! exactly, and a window emitted at its end time is complete once the input
//! reaches the epoch just after it.
//! Context changes between two epochs take the next free millisecond after the
//! current time (an epoch has `size - 1` of them), so they flush at once
//! without closing any window.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use crate::model::Interval;
use crate::model::{AssetRow, Sample, StatusUpdate, F64};

/// A change to one context table: rows with +1 (insert) or −1 (retract).
#[derive(Clone, Debug)]
pub enum ContextChange {
    Assets(Vec<(Arc<AssetRow>, isize)>),
    Tariff(Vec<((u32, F64), isize)>),
    Production(Vec<(Interval, isize)>),
    Maintenance(Vec<(Interval, isize)>),
    /// Action status updates (inserts only).
    Status(Vec<StatusUpdate>),
}

/// What a worker receives, in order.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Rows to send at `time` (after advancing to it).
    Samples { time: u64, rows: Vec<Sample> },
    /// Advance every input to `time`.
    Advance(u64),
    /// Apply a context change at `time` (worker 0 only).
    Context { time: u64, change: ContextChange },
    /// No more input: close the inputs and drain.
    End,
}

/// The worker that owns a tag's windows.
pub fn worker_of(tag: crate::model::TagId, workers: usize) -> usize {
    tag as usize % workers
}

struct State {
    time: u64,
    /// Latest epoch per source; `None` once the source has ended.
    source_epochs: Vec<Option<u64>>,
    ended: bool,
    /// Updates were sent at `time` since it was last advanced.
    dirty: bool,
}

/// Orders and distributes source output to the workers.
pub struct Ingest {
    state: Mutex<State>,
    senders: Vec<SyncSender<WorkerMsg>>,
    threads: Mutex<Vec<Option<Thread>>>,
    epoch_ms: u64,
}

impl Ingest {
    /// A bridge for `workers` workers and `sources` sources; returns one receiver per worker.
    pub fn new(
        workers: usize,
        sources: usize,
        epoch_ms: u64,
        capacity: usize,
    ) -> (Arc<Ingest>, Vec<Receiver<WorkerMsg>>) {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
            senders.push(tx);
            receivers.push(rx);
        }
        let ingest = Ingest {
            state: Mutex::new(State {
                time: 0,
                source_epochs: vec![Some(0); sources],
                ended: sources == 0,
                dirty: false,
            }),
            senders,
            threads: Mutex::new(vec![None; workers]),
            epoch_ms: epoch_ms.max(1),
        };
        (Arc::new(ingest), receivers)
    }

    /// The epoch (timely time) of an event-time watermark: one past the last
    /// window boundary it passed, so that the windows ending at that boundary
    /// (emitted at the boundary time) are complete as soon as the input gets here.
    pub fn epoch_of(&self, watermark_ms: i64) -> u64 {
        let w = watermark_ms.max(0) as u64;
        w - w % self.epoch_ms + 1
    }

    /// The global time (milliseconds of event time, the sources' watermark).
    pub fn time_ms(&self) -> i64 {
        self.lock().time as i64
    }

    /// Registers worker `index`'s thread so sends can unpark it.
    pub fn register_worker(&self, index: usize, thread: Thread) {
        if let Ok(mut t) = self.threads.lock() {
            t[index] = Some(thread);
        }
    }

    fn send(&self, worker: usize, msg: WorkerMsg) {
        // A closed receiver means the worker is gone (shutting down); nothing to do.
        let _ = self.senders[worker].send(msg);
        if let Ok(t) = self.threads.lock() {
            if let Some(th) = &t[worker] {
                th.unpark();
            }
        }
    }

    fn broadcast_advance(&self, time: u64) {
        for w in 0..self.senders.len() {
            self.send(w, WorkerMsg::Advance(time));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Advances the global time to the minimum epoch over live sources.
    fn advance(&self, st: &mut State) {
        let min = st.source_epochs.iter().flatten().min().copied();
        if let Some(m) = min {
            if m > st.time {
                st.time = m;
                st.dirty = false;
                self.broadcast_advance(m);
            }
        }
    }

    /// Source `source` delivers `rows` whose arrival watermark epoch is `epoch`.
    pub fn samples(&self, source: usize, epoch: u64, rows: Vec<Sample>) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        if let Some(e) = st.source_epochs[source].as_mut() {
            *e = (*e).max(epoch);
        }
        self.advance(&mut st);
        if rows.is_empty() {
            return;
        }
        let time = st.time;
        st.dirty = true;
        let workers = self.senders.len();
        if workers == 1 {
            self.send(0, WorkerMsg::Samples { time, rows });
            return;
        }
        // Partition by tag here, on the source's thread: each worker gets the
        // rows of its own tags and the window operator needs no exchange.
        let mut parts: Vec<Vec<Sample>> = (0..workers)
            .map(|_| Vec::with_capacity(rows.len() / workers + 16))
            .collect();
        for s in rows {
            parts[worker_of(s.tag, workers)].push(s);
        }
        for (w, rows) in parts.into_iter().enumerate() {
            if !rows.is_empty() {
                self.send(w, WorkerMsg::Samples { time, rows });
            }
        }
    }

    /// Applies a context change now, at the current time, then moves to the
    /// next free time inside the epoch so the corrections it causes complete.
    pub fn context(&self, change: ContextChange) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        let time = st.time;
        self.send(0, WorkerMsg::Context { time, change });
        st.dirty = true;
        self.settle_locked(&mut st);
    }

    /// Completes the current time when updates were sent at it: advances one
    /// millisecond (never onto a window boundary), so corrections from late
    /// rows or context changes flush while the source is idle.
    pub fn settle(&self) {
        let mut st = self.lock();
        self.settle_locked(&mut st);
    }

    fn settle_locked(&self, st: &mut State) {
        if st.ended || !st.dirty {
            return;
        }
        let next = st.time + 1;
        if !next.is_multiple_of(self.epoch_ms) {
            st.time = next;
            st.dirty = false;
            self.broadcast_advance(next);
        }
    }

    /// Source `source` has ended; when all have, the workers are told to finish.
    pub fn end_source(&self, source: usize) {
        let mut st = self.lock();
        st.source_epochs[source] = None;
        if st.source_epochs.iter().all(|e| e.is_none()) {
            self.finish_locked(&mut st);
        } else {
            self.advance(&mut st);
        }
    }

    /// Tells every worker to finish (idempotent).
    pub fn finish(&self) {
        let mut st = self.lock();
        self.finish_locked(&mut st);
    }

    fn finish_locked(&self, st: &mut State) {
        if !st.ended {
            st.ended = true;
            for w in 0..self.senders.len() {
                self.send(w, WorkerMsg::End);
            }
        }
    }
}
