//! A cluster's checkpoints: every process keeps its own input log and
//! checkpoints, taken at the same timely time on every process, so that a
//! restart of the whole cluster goes on from one of them.
//!
//! A checkpoint holds the state of every operator at a time `C`: on each
//! worker, all input before `C`, from every process (the rows of other
//! processes cross to a tag's worker). So every process must split its log
//! at `C`: its input before `C` is in the checkpoint, the rest in the log
//! after it. Process 0 runs a *round* every `checkpoint_interval`:
//!
//! 1. It holds its own time where it is and asks every other process to do
//!    the same (`Prepare`); each answers with its time (`Time`). A held
//!    time does not move on, so sources wait (for a round trip, at most
//!    [`ANSWERS`]).
//! 2. If every time is in one epoch, it picks the cut `C` just after the
//!    latest of them (a free millisecond of that epoch, never a window's
//!    boundary) and tells every process (`Cut`). Each goes on, takes its
//!    checkpoint where its own time passes `C`, and moves a time still
//!    below `C` to it at once (`Ingest::reach_cut`): the workers past `C`
//!    take no input until every process is there, so a quiet process
//!    would hold them all. When every source is a replay file read to its
//!    end, the times may be in different epochs: no process is quiet (each
//!    reads on until its share ends), so one behind reaches `C` by reading,
//!    while the others wait at `C` (their files' times far apart, the
//!    processes take turns). A process whose share has ended cannot take
//!    part, and a round then takes no checkpoint; one whose share ends
//!    before it reaches `C` never writes `C`, so the lake never names it
//!    (the others' files of `C` go when a later checkpoint is named).
//! 3. Each process writes its own `checkpoint-C.bin` and tells process 0
//!    (`Written`). Once every process has written `C`, the lake's next
//!    commit that reaches `C` names it; process 0 then tells the others
//!    (`Committed`), and each deletes what it replaces, as one process does.
//!
//! At a start, process 0 reads the checkpoint its lake's record names and
//! says in its greeting where every process goes on from
//! ([`crate::engine::cluster::Start`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::cluster::{self, Control};
use crate::ingest::Ingest;
use crate::sinks::parquet::commit::{CheckpointRef, CheckpointSlot};

/// How long process 0 waits for every process's time in a round: a round
/// without all of them takes no checkpoint.
const ANSWERS: Duration = Duration::from_secs(2);

/// A process's answer in a round: the round, and its time (`None`: it
/// cannot take part).
type Answer = (u64, Option<u64>);

/// Process 0's checkpoint at a time: its own ref (once written), and the
/// other processes that wrote theirs.
type Gate = (Option<CheckpointRef>, BTreeSet<usize>);

/// A cluster's checkpoint rounds, on one process.
pub(super) struct Rounds {
    ingest: Arc<Ingest>,
    processes: usize,
    me: usize,
    /// The window size: a cut never falls on a window's boundary.
    epoch_ms: u64,
    /// Whether a cut may be in another epoch than a process's time (every
    /// source is a file read to its end).
    across_epochs: bool,
    /// The state directory of this process's input log.
    dir: PathBuf,
    /// Process 0: the round in progress, and where its times go.
    round: AtomicU64,
    times: Mutex<Option<Sender<Answer>>>,
    /// Process 0: the checkpoints written so far, by time: its own (once
    /// written) and which other processes wrote theirs.
    gate: Mutex<BTreeMap<u64, Gate>>,
    /// Process 0: where a checkpoint every process wrote goes (the lake's
    /// next commit names it).
    slot: Mutex<Option<Arc<CheckpointSlot>>>,
    /// Another process: its checkpoints, by time (a commit that names one
    /// deletes what it replaces).
    mine: Mutex<BTreeMap<u64, CheckpointRef>>,
}

impl Rounds {
    /// Rounds for process `me` of `processes`, whose log is in `dir`, with
    /// epochs of `epoch_ms` (and whether a cut may be in another epoch than
    /// a process's time): control messages are handled from now on.
    pub fn new(
        ingest: &Arc<Ingest>,
        (me, processes): (usize, usize),
        (epoch_ms, across_epochs): (u64, bool),
        dir: PathBuf,
    ) -> Arc<Rounds> {
        let rounds = Arc::new(Rounds {
            ingest: ingest.clone(),
            processes,
            me,
            epoch_ms: epoch_ms.max(1),
            across_epochs,
            dir,
            round: AtomicU64::new(0),
            times: Mutex::new(None),
            gate: Mutex::new(BTreeMap::new()),
            slot: Mutex::new(None),
            mine: Mutex::new(BTreeMap::new()),
        });
        // The heartbeat thread hands messages over and goes on reading:
        // preparing a cut may wait for the bridge.
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Control)>();
        let tx = Mutex::new(tx);
        cluster::on_control(Box::new(move |p, m| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send((p, m));
            }
        }));
        let weak = Arc::downgrade(&rounds);
        let _ = std::thread::Builder::new()
            .name("plantflow-cuts".into())
            .spawn(move || {
                for (p, m) in rx {
                    let Some(r) = weak.upgrade() else { return };
                    r.heard(p, m);
                }
            });
        rounds
    }

    /// Process 0: a checkpoint every process wrote goes to `slot`.
    pub fn to_lake(&self, slot: Arc<CheckpointSlot>) {
        if let Ok(mut s) = self.slot.lock() {
            *s = Some(slot);
        }
    }

    /// Another process: the checkpoint it starts from (a commit that
    /// names a later one deletes it).
    pub fn restored(&self, r: CheckpointRef) {
        if let Ok(mut m) = self.mine.lock() {
            m.insert(r.at, r);
        }
    }

    fn heard(&self, p: usize, m: Control) {
        match m {
            Control::Time(round, t) => {
                let t = (t != u64::MAX).then_some(t);
                if let Some(tx) = self.times.lock().ok().as_deref().and_then(|t| t.as_ref()) {
                    let _ = tx.send((round, t));
                }
            }
            Control::Written(at) => self.gate(at, |(_, peers)| {
                peers.insert(p);
            }),
            Control::Prepare(round) => {
                let t = self.ingest.prepare_cut();
                cluster::send_control(Control::Time(round, t.unwrap_or(u64::MAX)));
            }
            Control::Cut(_, at) => {
                self.ingest.cut_at((at != 0).then_some(at));
                self.ingest.reach_cut();
            }
            Control::Committed(now, before) => self.clean(now, before),
        }
    }

    /// This process wrote its checkpoint `r` (from the checkpoint thread).
    pub fn written(&self, r: CheckpointRef) {
        let at = r.at;
        if self.me == 0 {
            self.gate(at, |(mine, _)| *mine = Some(r));
        } else {
            if let Ok(mut m) = self.mine.lock() {
                m.insert(at, r);
            }
            cluster::send_control(Control::Written(at));
        }
    }

    /// Process 0: notes what `f` says of the checkpoint at `at`; once this
    /// process's and every other's are written, the lake may name it (and
    /// older ones are of no use).
    fn gate(&self, at: u64, f: impl FnOnce(&mut Gate)) {
        let Ok(mut g) = self.gate.lock() else { return };
        let e = g.entry(at).or_default();
        f(e);
        if e.0.is_none() || e.1.len() + 1 < self.processes {
            return;
        }
        let ready = e.0.clone().map(|r| CheckpointRef {
            processes: self.processes,
            ..r
        });
        *g = g.split_off(&(at + 1));
        if let Some(slot) = self.slot.lock().ok().and_then(|s| s.clone()) {
            if let Ok(mut r) = slot.ready.lock() {
                *r = ready;
            }
        }
        tracing::debug!(at, "every process wrote the checkpoint");
    }

    /// Process 0: a commit named the checkpoint at `now.at`: the others
    /// delete what it replaces.
    pub fn tell_committed(&self, now: &CheckpointRef, before: Option<&CheckpointRef>) {
        let before = before.map_or(0, |b| b.at);
        cluster::send_control(Control::Committed(now.at, before));
    }

    /// Another process: process 0's commit named the checkpoint at `now`
    /// (replacing the one at `before`): deletes what they replace here.
    fn clean(&self, now: u64, before: u64) {
        let Ok(mut m) = self.mine.lock() else { return };
        let Some(n) = m.get(&now).cloned() else {
            return;
        };
        let b = m.get(&before).cloned();
        if before != 0 && b.is_none() {
            // (the one before is the lake's fallback: unknown here, nothing goes)
            return;
        }
        super::checkpoint::committed(&self.dir, &n, b.as_ref());
        let keep = b.map_or(now, |b| b.at);
        *m = m.split_off(&keep);
    }

    /// Process 0: runs a round every `every` until `stop`.
    pub fn coordinate(self: &Arc<Self>, every: Duration, stop: Arc<AtomicBool>) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("plantflow-rounds".into())
            .spawn(move || {
                while !stop.load(Relaxed) {
                    super::nap(&stop, every);
                    if !stop.load(Relaxed) {
                        me.round();
                    }
                }
            });
    }

    /// One round (see the module's text).
    fn round(&self) {
        let Some(mine) = self.ingest.prepare_cut() else {
            return;
        };
        let round = self.round.fetch_add(1, Relaxed) + 1;
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut t) = self.times.lock() {
            *t = Some(tx);
        }
        cluster::send_control(Control::Prepare(round));
        // Every time in one epoch: the cut is a free millisecond of it,
        // which every process can move to at once (see `reach_cut`).
        let span = self
            .answers(round, &rx)
            .map(|(a, b)| (a.min(mine), b.max(mine)));
        let s = self.epoch_ms;
        let cut = span
            .filter(|(a, b)| self.across_epochs || a / s == b / s)
            .map(|(_, b)| b + 1)
            .filter(|c| !c.is_multiple_of(s));
        cluster::send_control(Control::Cut(round, cut.unwrap_or(0)));
        self.ingest.cut_at(cut);
        self.ingest.reach_cut();
        if let Ok(mut t) = self.times.lock() {
            *t = None;
        }
        match cut {
            Some(at) => tracing::debug!(round, at, "checkpoint round: cut"),
            None => tracing::debug!(
                round,
                "checkpoint round: no cut (a process did not answer, or the processes' times \
                 were in different epochs)"
            ),
        }
    }

    /// Every other process's time in `round`: the earliest and the latest,
    /// or `None` if one could not take part or did not answer within
    /// [`ANSWERS`].
    fn answers(&self, round: u64, rx: &Receiver<Answer>) -> Option<(u64, u64)> {
        let until = Instant::now() + ANSWERS;
        let (mut earliest, mut latest) = (u64::MAX, 0);
        let mut heard = 0;
        while heard + 1 < self.processes {
            let left = until.checked_duration_since(Instant::now())?;
            match rx.recv_timeout(left) {
                Ok((r, Some(t))) if r == round => {
                    earliest = earliest.min(t);
                    latest = latest.max(t);
                    heard += 1;
                }
                Ok((r, None)) if r == round => return None,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        Some((earliest, latest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Arc<CheckpointSlot> {
        Arc::new(CheckpointSlot {
            ready: Default::default(),
            writer: Default::default(),
            committed: Box::new(|_, _| {}),
        })
    }

    /// Process 0 of three hands a checkpoint to the lake only once it and
    /// both others wrote it, marked as taken by three processes; one that
    /// another process did not write is never handed over.
    #[test]
    fn the_lake_names_a_checkpoint_once_every_process_wrote_it() {
        let (ingest, _rx) = Ingest::new(1, 1, 60_000, 8);
        let dir = tempfile::tempdir().unwrap();
        let r = Rounds::new(&ingest, (0, 3), (60_000, false), dir.path().to_path_buf());
        let s = slot();
        r.to_lake(s.clone());
        let named = |at| super::super::checkpoint::named(at);
        let ready = || s.ready.lock().unwrap().clone();
        r.written(named(5));
        r.heard(1, Control::Written(5));
        assert_eq!(ready(), None, "process 2 has not written it");
        r.heard(2, Control::Written(5));
        let got = ready().expect("every process wrote it");
        assert_eq!((got.at, got.processes), (5, 3));
        // At 9 process 1 wrote none: 9 is never named, 12 is.
        r.written(named(9));
        r.heard(2, Control::Written(9));
        r.heard(1, Control::Written(12));
        r.heard(2, Control::Written(12));
        assert_eq!(ready().map(|r| r.at), Some(5));
        r.written(named(12));
        assert_eq!(ready().map(|r| r.at), Some(12));
    }
}
