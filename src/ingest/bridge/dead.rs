//! A logged file source's dead letters: logged with the rows they came
//! among, so a restart that goes on after their position cannot lose them.
//!
//! The writer commits a stamped row once every output has passed its stamp,
//! and skips, after a restart, the rows stamped before the lake's `before`.
//! So a dead letter's stamp `S` must be:
//! - no earlier than the bridge's time when it is sent (it then reaches the
//!   writer before the writer commits past `S`), and no earlier than its
//!   source's epoch (a restarted run's new dead letters are never stamped
//!   before what the lake holds): `S` = the later of the two;
//! - the same when a replay of the log sends it again: the log holds `S`;
//! - in the log after a checkpoint whenever the checkpoint's time `C` is
//!   not after `S` (the log before a checkpoint is not replayed, and the lake
//!   that names `C` may not hold it yet): such dead letters, sent already
//!   but stamped ahead of the time (their source is ahead of another), wait
//!   in `pending` and are logged again at the start of the checkpoint's
//!   segment. (Stamped with their epoch and not logged, a kill lost them.)
//!   A replay sends each batch once (it meets a batch logged again after a
//!   checkpoint it starts before).
//! - At a stop, the writer leaves the held dead letters stamped at or after
//!   the checkpoint its last commit names to the next start, which sends
//!   them again.
//!
//! Dead letters waiting for the time are bounded: a source whose letters
//! would be past [`crate::stats::MAX_QUEUED_DEAD_LETTERS`] of them waits
//! (`Ingest::dead_ahead`) while the source at the time, which has none
//! waiting, goes on. The writer counts letters as taken when it holds them,
//! so that source never waits on the others' letters.

use std::sync::mpsc::Sender;

use super::{Ingest, State};
use crate::ingest::wal::EntryRef;
use crate::model::{DeadLetter, SinkBatch, Stamped};

/// A file source's dead letters handed over with its rows (see the module).
pub struct DeadLetters<'a> {
    pub rows: Vec<DeadLetter>,
    pub to: Option<&'a Sender<Stamped>>,
    /// The stamp the log holds (a replay); `None`: the later of the
    /// bridge's time and the rows' epoch.
    pub stamp: Option<u64>,
}

impl DeadLetters<'_> {
    /// No dead letters (a message source's go to the lake themselves).
    pub fn none() -> Self {
        DeadLetters {
            rows: Vec::new(),
            to: None,
            stamp: None,
        }
    }
}

/// Which rows dead letters came with: their source and its position after
/// them (one batch of a file's dead letters per position).
pub(super) type Batch = (u32, Option<u64>);

/// Dead letters sent with a stamp ahead of the bridge's time.
#[derive(Default)]
pub(super) struct Pending(Vec<(u64, Batch, Vec<DeadLetter>)>);

impl Ingest {
    /// Sends `dead` to the lake stamped `stamp` (after this call's time
    /// step, the state lock held), keeping them while the stamp is ahead of
    /// the time.
    pub(super) fn send_dead(
        &self,
        st: &mut State,
        (stamp, batch): (u64, Batch),
        dead: DeadLetters<'_>,
    ) {
        let Some(to) = dead.to.filter(|_| !dead.rows.is_empty()) else {
            return;
        };
        if stamp > st.time {
            st.pending.0.push((stamp, batch, dead.rows.clone()));
        }
        let _ = to.send(Stamped {
            time: Some(stamp),
            batch: SinkBatch::DeadLetters(dead.rows),
        });
    }

    /// Forgets the pending dead letters the time has reached: every later
    /// checkpoint is after them.
    pub(super) fn settle_dead(&self, st: &mut State) {
        let time = st.time;
        st.pending.0.retain(|(s, _, _)| *s > time);
    }

    /// How many dead letters wait for the time (sent with a stamp ahead of
    /// it). A source ahead of another waits while there are many: they are
    /// held in memory here and by the writer, and logged again at every
    /// checkpoint. The source at the time never has any waiting, so it goes
    /// on and the time moves.
    pub fn dead_ahead(&self) -> usize {
        let mut st = self.lock();
        self.settle_dead(&mut st);
        st.pending.0.iter().map(|p| p.2.len()).sum()
    }

    /// At a checkpoint at `at` (its segment just begun): the pending dead
    /// letters stamped `at` or later go into the new segment. (A replay
    /// from an earlier checkpoint meets them twice: it sends a batch once.)
    pub(super) fn relog_dead(&self, st: &State, at: u64) {
        for (stamp, (source, position), rows) in st.pending.0.iter().filter(|p| p.0 >= at) {
            self.log_with(|l| {
                l.wal.append(&EntryRef::Dead {
                    stamp: *stamp,
                    source: *source,
                    position: *position,
                    rows,
                })
            });
        }
    }
}
