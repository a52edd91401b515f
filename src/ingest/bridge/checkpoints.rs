//! Checkpoints of the bridge: every `checkpoint_interval` (a process
//! alone), or where a cluster's process 0 cuts (see `run/cuts.rs`). The
//! workers hear of a checkpoint before the time reaches it, and the input
//! log goes on in a new segment from there.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{BridgePart, EntryRef, Ingest, State, WorkerMsg, Written};

/// When the bridge takes checkpoints, and where their parts go.
pub(super) struct Checkpointing {
    /// How often (`None`: where a cluster's process 0 cuts, see [`Cut`]).
    every: Option<std::time::Duration>,
    last: std::time::Instant,
    cut: Cut,
    tx: std::sync::mpsc::Sender<BridgePart>,
    /// The time of the last checkpoint written (set by whoever writes them).
    written: Arc<Written>,
}

/// A cluster's checkpoint round on this process (see
/// [`Ingest::prepare_cut`]): the time is held while process 0 picks a cut
/// after every process's time, and the checkpoint is taken where this
/// process's time passes it.
#[derive(Default)]
struct Cut {
    /// Held since then: the time waits to move on.
    preparing: Option<std::time::Instant>,
    /// The checkpoint to take where the time reaches it.
    at: Option<u64>,
}

/// How long the time waits for process 0's cut at most: then it goes on
/// (and a cut that comes after it has passed is not taken).
const HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a stopping node waits for its last checkpoint.
const STOP_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(5);

impl Ingest {
    /// Takes a checkpoint every `every` of wall clock while logging: the
    /// bridge's part goes to `tx`, the workers' to their own channel.
    /// `written` hears of each checkpoint written.
    pub fn checkpoint_every(
        &self,
        every: std::time::Duration,
        tx: std::sync::mpsc::Sender<BridgePart>,
        written: Arc<Written>,
    ) {
        if let Ok(mut c) = self.checkpointing.lock() {
            *c = Some(Checkpointing {
                every: Some(every),
                last: std::time::Instant::now(),
                cut: Cut::default(),
                tx,
                written,
            });
        }
    }

    /// A cluster's process: takes checkpoints where process 0 cuts (see
    /// [`Ingest::prepare_cut`]), not by the clock.
    pub fn checkpoint_at_cuts(&self, tx: std::sync::mpsc::Sender<BridgePart>) {
        if let Ok(mut c) = self.checkpointing.lock() {
            *c = Some(Checkpointing {
                every: None,
                last: std::time::Instant::now(),
                cut: Cut::default(),
                tx,
                // (a cluster's stop waits for no last checkpoint)
                written: Arc::default(),
            });
        }
    }

    /// A cluster's checkpoint round: holds the time where it is (until
    /// [`Ingest::cut_at`], or [`HOLD`]) and returns it; `None` when this
    /// process cannot take part (its input has ended, or its log is still
    /// being replayed).
    pub fn prepare_cut(&self) -> Option<u64> {
        let st = self.lock();
        if st.ended || !self.logging.load(Relaxed) {
            return None;
        }
        let mut c = self.checkpointing.lock().ok()?;
        let ck = c.as_mut().filter(|c| c.every.is_none())?;
        ck.cut.preparing = Some(std::time::Instant::now());
        Some(st.time)
    }

    /// Process 0's cut of the round being prepared (`None`: no cut this
    /// round): the time goes on, and the checkpoint is taken where it
    /// passes `at` (if it has not already).
    pub fn cut_at(&self, at: Option<u64>) {
        if let Ok(mut c) = self.checkpointing.lock() {
            if let Some(ck) = c.as_mut() {
                // A cut that comes after the hold ended is not taken: the
                // time may have moved on, and rows may be between the two.
                let held = ck.cut.preparing.is_some_and(|s| s.elapsed() < HOLD);
                ck.cut.preparing = None;
                ck.cut.at = at.filter(|_| held);
            }
        }
        self.cut_heard.notify_all();
    }

    /// After a cut (from the thread that heard it): a time below the cut
    /// in the same epoch moves to it now, so that a process whose sources
    /// are quiet does not hold the others' workers at the cut (they take
    /// no input after it until every process is there). The move is a
    /// free millisecond: no window closes. It is logged, so a replay moves
    /// the time the same way.
    pub fn reach_cut(&self) {
        let at = match self.checkpointing.lock() {
            Ok(c) => c.as_ref().and_then(|c| c.cut.at),
            Err(_) => None,
        };
        if let Some(at) = at {
            self.reach(at);
        }
    }

    /// Moves the time to `at` if it is below it in the same epoch (taking
    /// the checkpoint of a cut there), and logs it.
    pub(super) fn reach(&self, at: u64) {
        let mut st = self.lock();
        let same_epoch = st.time / self.epoch_ms == at / self.epoch_ms;
        if st.ended || st.time >= at || !same_epoch || at.is_multiple_of(self.epoch_ms) {
            return;
        }
        if !self.log_with(|l| l.wal.append(&EntryRef::Advance(at))) {
            return;
        }
        self.cut_before(&st, at);
        st.time = at;
        st.dirty = false;
        self.broadcast_advance(at);
    }

    /// Before a cluster's time moves from `st.time` to `next`: waits while
    /// a cut is prepared (at most [`HOLD`]), then takes the checkpoint of a
    /// cut this move passes. A cut the time has passed already is dropped
    /// (process 0 then names no checkpoint for that round).
    pub(super) fn cut_before(&self, st: &State, next: u64) -> bool {
        // A cluster's rows for the lake go before the time moves on (and
        // before a checkpoint: the log before it is not replayed).
        self.drain_side(st);
        if !self.logging.load(Relaxed) {
            return false;
        }
        let Ok(mut c) = self.checkpointing.lock() else {
            return false;
        };
        loop {
            let Some(ck) = c.as_mut().filter(|c| c.every.is_none()) else {
                return false;
            };
            match ck.cut.preparing {
                Some(since) if since.elapsed() < HOLD => {}
                _ => {
                    ck.cut.preparing = None;
                    break;
                }
            }
            let waited = self
                .cut_heard
                .wait_timeout(c, std::time::Duration::from_millis(20));
            c = match waited {
                Ok((c, _)) => c,
                Err(p) => p.into_inner().0,
            };
        }
        let Some(ck) = c.as_mut() else { return false };
        match ck.cut.at {
            Some(at) if at <= st.time => {
                ck.cut.at = None;
                false
            }
            Some(at) if at <= next => {
                ck.cut.at = None;
                self.take_checkpoint(st, at, ck)
            }
            _ => false,
        }
    }

    /// Starts a checkpoint at time `at` (the next time) if one is due: the
    /// workers hear of it before they advance to `at`, the log goes on in a
    /// new segment, and the bridge's part is handed over (state lock held).
    pub(super) fn checkpoint_if_due(&self, st: &State, at: u64) -> bool {
        let Ok(mut c) = self.checkpointing.lock() else {
            return false;
        };
        if c.as_ref().is_some_and(|c| c.every.is_none()) {
            drop(c);
            return self.cut_before(st, at);
        }
        let due = |c: &&mut Checkpointing| c.every.is_some_and(|e| c.last.elapsed() >= e);
        let Some(ck) = c.as_mut().filter(due) else {
            return false;
        };
        self.take_checkpoint(st, at, ck)
    }

    /// Takes a checkpoint at `at`: the workers hear of it before the time
    /// reaches `at`, the log goes on in a new segment, and the bridge's
    /// part is handed over (state lock held).
    fn take_checkpoint(&self, st: &State, at: u64, ck: &mut Checkpointing) -> bool {
        let Some(track) = st.track.clone() else {
            return false;
        };
        let Some(segment) = self
            .log
            .lock()
            .ok()
            .and_then(|mut l| l.as_mut()?.wal.roll().ok())
        else {
            // The log failed: its next sync says so; no checkpoint.
            return false;
        };
        ck.last = std::time::Instant::now();
        self.relog_dead(st, at);
        for w in 0..self.senders.len() {
            self.send(w, WorkerMsg::Checkpoint(at));
        }
        let part = BridgePart {
            at,
            segment,
            source_epochs: st.source_epochs.clone(),
            track,
        };
        let _ = ck.tx.send(part);
        true
    }

    /// The last checkpoint of a stopping node, at the next free time (not
    /// a window boundary: nothing closes early), waited for (bounded): the
    /// engine then holds everything, and the lake's last commit names it.
    pub(super) fn checkpoint_at_stop(&self, st: &mut State) {
        let at = st.time + 1;
        if !self.logging.load(Relaxed) || at.is_multiple_of(self.epoch_ms) {
            return;
        }
        let written = match self.checkpointing.lock() {
            Ok(mut c) => match c.as_mut() {
                // (a cluster's checkpoints are taken where process 0 cuts:
                // a stop goes on from the last one)
                Some(Checkpointing {
                    every: Some(every),
                    last,
                    written,
                    ..
                }) => {
                    // Due at once.
                    *last = std::time::Instant::now() - *every;
                    written.clone()
                }
                _ => return,
            },
            Err(_) => return,
        };
        if !self.checkpoint_if_due(st, at) {
            return;
        }
        st.time = at;
        st.dirty = false;
        self.broadcast_advance(at);
        if !written.wait(at, STOP_CHECKPOINT) {
            tracing::warn!("the last checkpoint was not written within {STOP_CHECKPOINT:?}; the next start replays the log since the one before");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::bridge::{LogStart, WorkerMsg};
    use crate::ingest::wal::Wal;
    use crate::model::{Quality, Sample};
    use std::time::Duration;

    fn rows() -> Vec<Sample> {
        let s = Sample {
            tag: 0,
            ts: 1,
            value: 2.0,
            quality: Quality::Good,
        };
        vec![s]
    }

    /// What reached the worker so far, without its rows.
    fn heard(rx: &std::sync::mpsc::Receiver<WorkerMsg>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(match m {
                WorkerMsg::Advance(t) => format!("advance {t}"),
                WorkerMsg::Checkpoint(t) => format!("checkpoint {t}"),
                WorkerMsg::Samples { time, .. } => format!("samples {time}"),
                other => format!("{other:?}"),
            });
        }
        out
    }

    /// A cluster's cut: the time is held while it is prepared (a source
    /// that would move it waits), the checkpoint is taken where the time
    /// passes the cut (before the workers advance past it), and a cut the
    /// time has already passed is not taken.
    #[test]
    fn a_held_time_waits_for_its_cut_and_checkpoints_where_it_passes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, rx) = Ingest::new(1, 1, 60_000, 64);
        let (wal, _) = Wal::open(&dir.path().join("input-000001.wal")).unwrap();
        let tags = Arc::new(crate::ingest::TagRegistry::default());
        tags.intern("a/b");
        ingest.attach_log(wal, tags.clone(), LogStart::Began(Default::default()));
        ingest
            .replay(std::iter::empty(), &tags, &std::sync::mpsc::channel().0)
            .unwrap();
        let (tx, parts) = std::sync::mpsc::channel();
        ingest.checkpoint_at_cuts(tx);
        ingest.samples(0, 1, rows());
        assert_eq!(heard(&rx[0]), ["advance 1", "samples 1"]);

        assert_eq!(ingest.prepare_cut(), Some(1));
        let i = ingest.clone();
        let source = std::thread::spawn(move || i.samples(0, 60_001, rows()));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !source.is_finished(),
            "the source waits while the cut is prepared"
        );
        assert!(heard(&rx[0]).is_empty(), "the time did not move");
        ingest.cut_at(Some(2));
        source.join().unwrap();
        let got = heard(&rx[0]);
        assert_eq!(got, ["checkpoint 2", "advance 60001", "samples 60001"]);
        let part = parts.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(part.at, 2);

        // A cut the time has passed already: no checkpoint.
        assert_eq!(ingest.prepare_cut(), Some(60_001));
        ingest.cut_at(Some(30_000));
        ingest.samples(0, 120_001, rows());
        assert_eq!(heard(&rx[0]), ["advance 120001", "samples 120001"]);
        assert!(parts.try_recv().is_err());

        // A quiet process moves to a cut in its epoch at once (and takes
        // the checkpoint there); one in a later epoch it leaves alone.
        assert_eq!(ingest.prepare_cut(), Some(120_001));
        ingest.cut_at(Some(120_002));
        ingest.reach_cut();
        assert_eq!(heard(&rx[0]), ["checkpoint 120002", "advance 120002"]);
        assert_eq!(
            parts.recv_timeout(Duration::from_secs(1)).unwrap().at,
            120_002
        );
        assert_eq!(ingest.prepare_cut(), Some(120_002));
        ingest.cut_at(Some(180_002));
        ingest.reach_cut();
        assert!(
            heard(&rx[0]).is_empty(),
            "a cut in another epoch is not reached"
        );
    }
}
