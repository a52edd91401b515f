//! A cluster's process other than the writer's: what its sources send for
//! the lake goes to the engine, and an input cut short leaves the cluster.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::{Ingest, State, WorkerMsg};

impl Ingest {
    /// A cluster's process other than the writer's: the dead letters and
    /// gaps its sources send on `rx` go to the engine (which carries them
    /// to worker 0's writer) with the rows after them, so they are in
    /// before the input ends (`stats` counts the dead letters queued).
    pub fn forward_side(
        &self,
        rx: Receiver<crate::model::Stamped>,
        stats: Arc<crate::stats::Stats>,
    ) {
        if let Ok(mut s) = self.side.lock() {
            *s = Some((rx, stats));
        }
    }

    /// A cluster's process other than the writer's: input that ends while
    /// the run is stopped (a signal or a failure) ends with `leave` instead
    /// (which may end the process): ended, it would let the others close
    /// and commit windows that lack this process's share.
    pub fn on_cut(&self, leave: Box<dyn Fn() + Send + Sync>) {
        if let Ok(mut c) = self.cut.lock() {
            *c = Some(leave);
        }
    }

    /// Forwards what the sources sent for the lake so far (the state lock
    /// is held: a source's rows for the lake come before its next samples).
    pub(super) fn drain_side(&self, st: &State) {
        if st.ended {
            return;
        }
        let Ok(side) = self.side.lock() else { return };
        let Some((rx, stats)) = side.as_ref() else {
            return;
        };
        use crate::model::SinkBatch;
        while let Ok(s) = rx.try_recv() {
            match &s.batch {
                SinkBatch::DeadLetters(d) => {
                    // (a replay of the log sends dead letters not counted:
                    // the count stops at 0)
                    let n = d.len() as u64;
                    let queued = &stats.dead_letters_queued;
                    let _ = queued.fetch_update(Relaxed, Relaxed, |q| Some(q.saturating_sub(n)));
                }
                SinkBatch::Gaps(_) => {}
                _ => continue,
            }
            self.send(0, WorkerMsg::Side(s));
        }
    }
}
