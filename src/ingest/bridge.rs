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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Thread;

mod checkpoints;
mod dead;
mod side;
use checkpoints::Checkpointing;

pub use super::track::{BridgePart, LogCounts, SourceTrack, Tracked, Written};
use super::wal::{Entry, EntryRef, Wal};
use super::{InitialContext, TagRegistry};
pub use dead::DeadLetters;

use crate::model::Interval;
use crate::model::{AssetRow, Sample, StatusUpdate, TagId, F64};

/// A change to one context table: rows with +1 (insert) or −1 (retract).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    /// Take a checkpoint at `time` (before the `Advance` to it): no more
    /// input until every operator has its state of the times before it.
    Checkpoint(u64),
    /// Apply a context change at `time` (every worker: each feeds its own
    /// copy of the context tables).
    Context { time: u64, change: ContextChange },
    /// Rows for the lake from a source of another process than the
    /// writer's (a cluster's): the engine carries them to worker 0.
    Side(crate::model::Stamped),
    /// No more input: close the inputs and drain.
    End,
}

/// Logged rows with the tag ids of this process (a log's ids are those of
/// the run that wrote it; `remap` maps them by name).
fn remapped(mut rows: Vec<Sample>, remap: &HashMap<TagId, TagId>) -> Result<Vec<Sample>, String> {
    for s in &mut rows {
        s.tag = *remap
            .get(&s.tag)
            .ok_or_else(|| format!("the input log names no tag {}", s.tag))?;
    }
    Ok(rows)
}

/// The worker that owns a tag's windows.
pub fn worker_of(tag: crate::model::TagId, workers: usize) -> usize {
    tag as usize % workers
}

struct State {
    time: u64,
    /// Latest epoch per source; `None` once the source has ended (a
    /// source a stop ended keeps its epoch: see [`Ingest::end_source`]).
    source_epochs: Vec<Option<u64>>,
    /// Sources that have ended, by themselves or at a stop.
    gone: Vec<bool>,
    ended: bool,
    /// Updates were sent at `time` since it was last advanced.
    dirty: bool,
    /// What a durable node keeps of its input (with a log attached).
    track: Option<Tracked>,
    /// Dead letters sent with a stamp ahead of the time (see `dead.rs`).
    pending: dead::Pending,
}

/// Orders and distributes source output to the workers.
pub struct Ingest {
    state: Mutex<State>,
    senders: Vec<SyncSender<WorkerMsg>>,
    threads: Mutex<Vec<Option<Thread>>>,
    epoch_ms: u64,
    /// The input log, when the node is durable (see [`super::wal`]).
    log: Mutex<Option<Logged>>,
    /// Calls are logged (off while the log itself is replayed).
    logging: AtomicBool,
    /// Sources may start: the log has been replayed (or there is none).
    ready: (Mutex<bool>, Condvar),
    /// What the replay left for each source.
    resumed: Mutex<HashMap<usize, Resumed>>,
    checkpointing: Mutex<Option<Checkpointing>>,
    /// A held time hears of its cut ([`Ingest::cut_at`]).
    cut_heard: Condvar,
    /// The run's stop flag: input that ends because of a stop is abandoned
    /// (see [`Ingest::abandoned`]), unless the run drains.
    stop: Mutex<Option<(Arc<AtomicBool>, bool)>>,
    abandon: Arc<AtomicBool>,
    /// Intake held: sources wait in [`Ingest::samples_of`] (the memory
    /// governor's degraded mode).
    held: AtomicBool,
    /// A cluster's process other than the writer's: what its sources send
    /// for the lake, and the count of dead letters queued for the writer.
    side: Mutex<Option<(Receiver<crate::model::Stamped>, Arc<crate::stats::Stats>)>>,
    /// A cluster's process other than the writer's: what to do instead of
    /// ending the input when it is cut short (see [`Ingest::on_cut`]).
    cut: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

/// The log and the names it needs for tag ids.
struct Logged {
    wal: Wal,
    tags: Arc<TagRegistry>,
}

/// Where the replay of a log starts from.
pub enum LogStart {
    /// A checkpoint: the engine holds the input before its time.
    Checkpoint(Box<BridgePart>),
    /// The log's first run, with the context files as they were then.
    Began(InitialContext),
}

/// A source's state at the end of the log: where its normaliser goes on.
#[derive(Debug, Default, Clone)]
pub struct Resumed {
    pub epoch: u64,
    pub max_ts: Option<i64>,
    /// Hashes of its latest logged messages: a broker may deliver them again.
    pub messages: HashSet<u64>,
    /// Its last logged sample per tag: a server sends current values again
    /// on a new subscription (OPC UA), a broker its retained messages.
    pub last: HashMap<TagId, Sample>,
    /// Where a file source goes on (a byte offset, a row index).
    pub position: Option<u64>,
}

/// How many of a source's latest message hashes are kept for redeliveries
/// (far more than any broker keeps in flight).
pub(super) const REDELIVERABLE: usize = 65_536;

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
                gone: vec![false; sources],
                ended: sources == 0,
                dirty: false,
                track: None,
                pending: Default::default(),
            }),
            senders,
            threads: Mutex::new(vec![None; workers]),
            epoch_ms: epoch_ms.max(1),
            log: Mutex::new(None),
            logging: AtomicBool::new(false),
            ready: (Mutex::new(true), Condvar::new()),
            resumed: Mutex::new(HashMap::new()),
            checkpointing: Mutex::new(None),
            cut_heard: Condvar::new(),
            stop: Mutex::new(None),
            abandon: Arc::default(),
            held: AtomicBool::new(false),
            side: Mutex::new(None),
            cut: Mutex::new(None),
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

    /// How many workers the rows go to.
    pub fn workers(&self) -> usize {
        self.senders.len()
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
                self.cut_before(st, m);
                st.time = m;
                st.dirty = false;
                self.broadcast_advance(m);
            }
        }
    }

    /// Source `source` delivers `rows` whose arrival watermark epoch is `epoch`.
    pub fn samples(&self, source: usize, epoch: u64, rows: Vec<Sample>) {
        self.samples_of(source, epoch, rows, (&[], DeadLetters::none()), None);
    }

    /// [`Ingest::samples`] for rows of whole messages, with their hashes
    /// (logged, to recognise redeliveries after a restart), and for rows of
    /// a file with where it goes on after them (logged, to resume there)
    /// and the dead letters of the bad lines among them (logged with them,
    /// then sent to the lake from here: see `bridge/dead.rs`).
    pub fn samples_of(
        &self,
        source: usize,
        epoch: u64,
        rows: Vec<Sample>,
        (messages, dead): (&[u64], DeadLetters<'_>),
        position: Option<u64>,
    ) {
        // Held (memory above its limit): the source waits here, so MQTT
        // stops acknowledging and replay stops reading, until released or
        // stopped.
        while self.held.load(Relaxed) && !self.stop_set() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut st = self.lock();
        if st.ended {
            return;
        }
        // A checkpoint at the epoch these rows move the time to: it comes
        // before them, so they open the log's next segment.
        if self.logging.load(Relaxed) {
            let mut next = st.source_epochs.clone();
            if let Some(e) = next[source].as_mut() {
                *e = (*e).max(epoch);
            }
            if let Some(m) = next
                .iter()
                .flatten()
                .min()
                .copied()
                .filter(|m| *m > st.time)
            {
                self.checkpoint_if_due(&st, m);
            }
        }
        if let Some(t) = st.track.as_mut() {
            if source >= t.sources.len() {
                t.sources.resize_with(source + 1, SourceTrack::default);
            }
            t.sources[source].take(epoch, &rows, messages, position);
            t.counts.samples += rows.len() as u64;
            t.counts.messages += messages.len() as u64;
        }
        // (see `dead.rs`: never before the time the rows enter at)
        let stamp = dead.stamp.unwrap_or(epoch.max(st.time));
        let kept = self.log_with(|l| {
            let tags = l.tags.view();
            let names = l.wal.unnamed(&rows, |id| tags.key(id).to_string());
            if !names.is_empty() {
                l.wal.append(&EntryRef::Tags(&names));
            }
            let source = source as u32;
            l.wal.append(&match dead.rows.as_slice() {
                [] => EntryRef::Samples {
                    source,
                    epoch,
                    rows: &rows,
                    messages,
                    position,
                },
                dead => EntryRef::SamplesWithDead {
                    source,
                    epoch,
                    rows: &rows,
                    messages,
                    position,
                    dead,
                    stamp,
                },
            });
            // In the OS before a worker sees the rows: a cluster's process 0
            // may commit them before this process's next sync.
            l.wal.write_through();
        });
        if !kept {
            return;
        }
        if let Some(e) = st.source_epochs[source].as_mut() {
            *e = (*e).max(epoch);
        }
        // A cluster's rows for the lake go before the time moves on: they
        // are stamped no earlier than the time, and process 0's writer
        // commits a time once the side stream has passed it (`cut_before`
        // drains them at every move).
        self.drain_side(&st);
        self.advance(&mut st);
        self.send_dead(&mut st, (stamp, (source as u32, position)), dead);
        self.settle_dead(&mut st);
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
        if !self.log_with(|l| l.wal.append(&EntryRef::Context(&change))) {
            return;
        }
        if let Some(t) = st.track.as_mut() {
            t.held.apply(&change);
            t.counts.context += 1;
        }
        let time = st.time;
        let last = self.senders.len() - 1;
        for w in 0..last {
            let change = change.clone();
            self.send(w, WorkerMsg::Context { time, change });
        }
        self.send(last, WorkerMsg::Context { time, change });
        st.dirty = true;
        self.settle_locked(&mut st);
    }

    /// Completes the current time when updates were sent at it: advances one
    /// millisecond (never onto a window boundary), so corrections from late
    /// rows or context changes flush while the source is idle.
    pub fn settle(&self) {
        let mut st = self.lock();
        if st.ended || !st.dirty {
            return;
        }
        if !self.log_with(|l| l.wal.append(&EntryRef::Settle)) {
            return;
        }
        self.settle_locked(&mut st);
    }

    fn settle_locked(&self, st: &mut State) {
        if st.ended || !st.dirty {
            return;
        }
        let next = st.time + 1;
        if !next.is_multiple_of(self.epoch_ms) {
            self.cut_before(st, next);
            st.time = next;
            st.dirty = false;
            self.broadcast_advance(next);
        }
    }

    /// Source `source` has ended; when all have, the workers are told to finish.
    pub fn end_source(&self, source: usize) {
        let mut st = self.lock();
        st.gone[source] = true;
        // A source stopped by a stop has not ended: it keeps its epoch, so
        // the rows the others send until they stop too do not move the time
        // past windows its rows may still reach (after a restart). (It was
        // dropped here before: a second file's rows then closed the first
        // file's open windows with part of their rows.)
        if !self.stopping() {
            st.source_epochs[source] = None;
        }
        if st.gone.iter().all(|g| *g) {
            self.finish_locked(&mut st);
        } else {
            self.advance(&mut st);
        }
    }

    /// The run is stopping without draining.
    /// Holds (or releases) every source's intake: a source handing over
    /// samples waits until released or the run is stopped.
    pub fn hold(&self, on: bool) {
        self.held.store(on, Relaxed);
    }

    /// The run's stop flag is set (drained or not).
    fn stop_set(&self) -> bool {
        let stopped = self.stop.lock().ok().and_then(|s| s.clone());
        stopped.is_some_and(|(stop, _)| stop.load(Relaxed))
    }

    fn stopping(&self) -> bool {
        let stopped = self.stop.lock().ok().and_then(|s| s.clone());
        stopped.is_some_and(|(stop, drain)| stop.load(Relaxed) && !drain)
    }

    /// Input that ends while `stop` is set was stopped, not read to its
    /// end: the engine then abandons what it holds instead of closing it
    /// early (a restart goes on from the last checkpoint), unless `drain`.
    pub fn on_stop(&self, stop: Arc<AtomicBool>, drain: bool) {
        if let Ok(mut s) = self.stop.lock() {
            *s = Some((stop, drain));
        }
    }

    /// Set when the input was stopped: the engine's outputs go nowhere
    /// from then on (windows still open are not final, so they are not
    /// closed early, and nothing after the last progress is committed).
    pub fn abandoned(&self) -> Arc<AtomicBool> {
        self.abandon.clone()
    }

    /// Tells every worker to finish (idempotent).
    pub fn finish(&self) {
        let mut st = self.lock();
        self.finish_locked(&mut st);
    }

    fn finish_locked(&self, st: &mut State) {
        if !st.ended && self.stop_set() {
            if let Some(leave) = self.cut.lock().ok().as_deref().and_then(|c| c.as_ref()) {
                leave();
            }
        }
        if !st.ended {
            if self.stopping() {
                // A stop: checkpoint first, so the next start replays nothing.
                self.checkpoint_at_stop(st);
                self.abandon.store(true, Relaxed);
            }
            self.drain_side(st);
            st.ended = true;
            for w in 0..self.senders.len() {
                self.send(w, WorkerMsg::End);
            }
        }
    }
}

/// The input log: recording, replaying, syncing.
impl Ingest {
    /// Appends to the log while logging (the state lock is held: the log's
    /// order is the bridge's).
    /// Returns false once the log has failed: input it could not keep must
    /// not count (the log's next sync ends the run).
    fn log_with(&self, f: impl FnOnce(&mut Logged)) -> bool {
        if self.logging.load(Relaxed) {
            if let Ok(mut l) = self.log.lock() {
                if let Some(l) = l.as_mut() {
                    f(l);
                    return !l.wal.failed();
                }
            }
        }
        true
    }

    /// Whether calls are logged now (a durable node's log is replayed).
    pub fn logs(&self) -> bool {
        self.logging.load(Relaxed)
    }

    /// Makes the node durable: `entries` (the log so far) are replayed by
    /// [`Ingest::replay`] before sources start, then calls go to `wal`.
    /// `from` is where the log's replay starts: a checkpoint's bridge part,
    /// or the log's first run with the context it began with.
    pub fn attach_log(&self, wal: Wal, tags: Arc<TagRegistry>, from: LogStart) {
        {
            let mut st = self.lock();
            match from {
                LogStart::Checkpoint(p) => {
                    st.time = p.at;
                    // Every source starts again (one that had ended, or was
                    // stopped, ends again by itself).
                    for (e, was) in st.source_epochs.iter_mut().zip(p.source_epochs) {
                        *e = Some(was.map_or(p.at, |w| w.max(p.at)));
                    }
                    st.gone.fill(false);
                    st.track = Some(p.track);
                }
                LogStart::Began(began) => {
                    st.track = Some(Tracked {
                        sources: Vec::new(),
                        held: began.clone(),
                        began,
                        counts: LogCounts::default(),
                    })
                }
            }
        }
        if let Ok(mut l) = self.log.lock() {
            *l = Some(Logged { wal, tags });
        }
        if let Ok(mut r) = self.ready.0.lock() {
            *r = false;
        }
    }

    /// Feeds the logged calls to the workers again (on a thread of its own:
    /// the engine must be running), then lets the sources start. Tag ids
    /// are those of each run, so names map them to this process's ids.
    pub fn replay(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        tags: &TagRegistry,
        lake: &std::sync::mpsc::Sender<crate::model::Stamped>,
    ) -> Result<(), String> {
        let mut remap: HashMap<TagId, TagId> = HashMap::new();
        // Dead letters logged again after a checkpoint (see `dead.rs`):
        // each batch is sent once.
        let mut dead_sent: HashSet<dead::Batch> = HashSet::new();
        for (i, e) in entries.into_iter().enumerate() {
            // A run stopped while replaying (a signal, a failure) stops reading.
            if i % 1024 == 0 && self.lock().ended {
                break;
            }
            match e {
                Entry::Begin { .. } => {}
                Entry::Run => {
                    remap.clear();
                    if let Some(t) = self.lock().track.as_mut() {
                        t.counts.runs += 1;
                    }
                }
                Entry::Tags(names) => {
                    for (old, name) in names {
                        remap.insert(old, tags.intern(&name));
                    }
                }
                Entry::Samples {
                    source,
                    epoch,
                    rows,
                    messages,
                    position,
                } => {
                    let rows = remapped(rows, &remap)?;
                    let none = DeadLetters::none();
                    self.samples_of(source as usize, epoch, rows, (&messages, none), position);
                }
                Entry::SamplesWithDead {
                    source,
                    epoch,
                    rows,
                    messages,
                    position,
                    dead,
                    stamp,
                } => {
                    let rows = remapped(rows, &remap)?;
                    let first = dead_sent.insert((source, position));
                    let dead = DeadLetters {
                        rows: dead,
                        to: first.then_some(lake),
                        stamp: Some(stamp),
                    };
                    self.samples_of(source as usize, epoch, rows, (&messages, dead), position);
                }
                Entry::Dead {
                    stamp,
                    source,
                    position,
                    rows,
                } => {
                    if dead_sent.insert((source, position)) {
                        let dead = DeadLetters {
                            rows,
                            to: Some(lake),
                            stamp: Some(stamp),
                        };
                        self.send_dead(&mut self.lock(), (stamp, (source, position)), dead);
                    }
                }
                Entry::Context(change) => self.context(change),
                Entry::Settle => self.settle(),
                Entry::Advance(t) => self.reach(t),
            }
        }
        let resumed = self
            .lock()
            .track
            .as_mut()
            .map(|t| {
                t.counts.runs += 1;
                let s = t.sources.iter().enumerate();
                s.map(|(i, s)| (i, s.resumed())).collect()
            })
            .unwrap_or_default();
        if let Ok(mut r) = self.resumed.lock() {
            *r = resumed;
        }
        self.log_with_now(|l| l.wal.append(&EntryRef::Run));
        self.logging.store(true, Relaxed);
        let (lock, cv) = &self.ready;
        if let Ok(mut r) = lock.lock() {
            *r = true;
        }
        cv.notify_all();
        Ok(())
    }

    fn log_with_now(&self, f: impl FnOnce(&mut Logged)) {
        if let Ok(mut l) = self.log.lock() {
            if let Some(l) = l.as_mut() {
                f(l);
            }
        }
    }

    /// Starts logging a fresh log with its first record.
    pub fn begin_log(&self, fingerprint: &str, initial: &InitialContext) {
        self.log_with_now(|l| {
            l.wal.append(&EntryRef::Begin {
                fingerprint,
                initial,
            })
        });
    }

    /// Blocks until the log has been replayed (at once without a log) or
    /// the bridge has ended.
    pub fn wait_ready(&self) {
        let (lock, cv) = &self.ready;
        let mut r = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !*r && !self.lock().ended {
            r = cv
                .wait_timeout(r, std::time::Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Where source `index` goes on after the replay, if the log had it.
    pub fn resumed(&self, index: usize) -> Option<Resumed> {
        self.resumed.lock().ok()?.remove(&index)
    }

    /// Makes every logged call durable (a group commit); without a log, nothing.
    pub fn sync(&self) -> Result<(), String> {
        match self.log.lock() {
            Ok(mut l) => l.as_mut().map_or(Ok(()), |l| l.wal.sync()),
            Err(_) => Err("the input log's lock is poisoned".into()),
        }
    }

    /// Bytes in the input log (0 without one).
    pub fn log_bytes(&self) -> u64 {
        self.log
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|l| l.wal.bytes))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Quality;

    /// Held intake (the memory governor's degraded mode): a source handing
    /// over samples waits until released, then they reach the worker.
    #[test]
    fn held_intake_waits_until_released() {
        let (ingest, rx) = Ingest::new(1, 1, 60_000, 64);
        ingest.hold(true);
        let i = ingest.clone();
        let source = std::thread::spawn(move || {
            let s = Sample {
                tag: 0,
                ts: 1,
                value: 2.0,
                quality: Quality::Good,
            };
            i.samples(0, 0, vec![s]);
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!source.is_finished(), "the source waits while held");
        assert!(rx[0].try_recv().is_err(), "nothing reached the worker");
        ingest.hold(false);
        source.join().unwrap();
        let got = rx[0].recv_timeout(std::time::Duration::from_secs(5));
        assert!(
            matches!(got, Ok(WorkerMsg::Samples { ref rows, .. }) if rows.len() == 1),
            "{got:?}"
        );
    }
}
