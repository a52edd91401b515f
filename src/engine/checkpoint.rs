//! Checkpoints of the operators' state, taken at a time the bridge chose.
//!
//! The bridge asks every worker for a checkpoint at time `at` before it
//! advances the inputs to `at` ([`crate::ingest::bridge::WorkerMsg::Checkpoint`]);
//! the worker stops taking input until its checkpoint is over. Every
//! stateful operator then puts its *part* into the worker's [`Barrier`] once
//! its input frontier has reached `at` and it has handled every time before
//! `at` and none after: its state is then exactly "all input before `at`".
//! No alignment inside the dataflow is needed: nothing at or after `at`
//! reaches an operator before its worker's checkpoint is over, and what does
//! reach it (another worker's output) waits in its buffers, which are not
//! part of its state. A restart builds every operator from its part
//! ([`Restore`]) and starts the inputs at `at`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::scheduling::Activator;

/// One worker's operators' parts of a checkpoint: (operator, state).
pub type Parts = Vec<(String, Vec<u8>)>;

/// The directory beside `checkpoint-<at>.bin` that holds the spilled state
/// of the checkpoint at `at` (hard links to the spill stores' files).
pub fn spill_dir(at: u64) -> String {
    format!("checkpoint-{at:020}.spill")
}

/// One worker's checkpoint in progress.
#[derive(Default)]
pub struct Barrier {
    at: Cell<Option<u64>>,
    parts: RefCell<BTreeMap<&'static str, Vec<u8>>>,
    /// The operators that put a part, and how to wake them.
    ops: RefCell<Vec<(&'static str, Option<Activator>)>>,
    /// Spill stores linking their files for this checkpoint.
    waits: RefCell<Vec<super::spill::Snapshot>>,
}

impl Barrier {
    /// Operator `part` puts a part in every checkpoint (a sink has no
    /// activator: it looks when its frontier moves, which comes after `ask`).
    pub fn register(&self, part: &'static str, wake: Option<Activator>) {
        self.ops.borrow_mut().push((part, wake));
    }

    /// Starts a checkpoint at `at` (and wakes every operator to look).
    pub fn ask(&self, at: u64) {
        self.at.set(Some(at));
        self.parts.borrow_mut().clear();
        self.waits.borrow_mut().clear();
        for (_, a) in self.ops.borrow().iter() {
            if let Some(a) = a {
                a.activate();
            }
        }
    }

    /// The time of the checkpoint in progress.
    pub fn at(&self) -> Option<u64> {
        self.at.get()
    }

    /// The time of the checkpoint in progress, if `part` is still to come.
    pub fn wants(&self, part: &'static str) -> Option<u64> {
        let at = self.at.get()?;
        (!self.parts.borrow().contains_key(part)).then_some(at)
    }

    /// Puts operator `part`'s state. An encoding failure is a bug, and a
    /// checkpoint without a part would be wrong: the worker stops with it.
    pub fn put<T: Serialize + ?Sized>(&self, part: &'static str, state: &T) {
        let bytes = postcard::to_allocvec(state)
            .unwrap_or_else(|e| panic!("cannot encode the {part} state for a checkpoint: {e}"));
        self.parts.borrow_mut().insert(part, bytes);
    }

    /// Puts the spilled state that goes with operator `part`'s part: the
    /// keys it has in the store (`{part}.cold`), and the store's snapshot
    /// of their files, which the checkpoint waits for.
    pub fn put_cold<T: Serialize + ?Sized>(
        &self,
        part: &'static str,
        keys: &T,
        snapshot: Option<super::spill::Snapshot>,
    ) {
        let Some(s) = snapshot else { return };
        let bytes = postcard::to_allocvec(keys)
            .unwrap_or_else(|e| panic!("cannot encode the {part} keys for a checkpoint: {e}"));
        self.parts.borrow_mut().insert(cold_part(part), bytes);
        self.wait_for(s);
    }

    /// The checkpoint waits for `snapshot` before it is written.
    pub fn wait_for(&self, snapshot: super::spill::Snapshot) {
        self.waits.borrow_mut().push(snapshot);
    }

    /// Every operator's part, once all are in: the checkpoint is over.
    pub fn take(&self) -> Option<(u64, Parts, Vec<super::spill::Snapshot>)> {
        let at = self.at.get()?;
        {
            let parts = self.parts.borrow();
            if !self.ops.borrow().iter().all(|(p, _)| parts.contains_key(p)) {
                return None;
            }
        }
        self.at.set(None);
        let parts = std::mem::take(&mut *self.parts.borrow_mut());
        let waits = std::mem::take(&mut *self.waits.borrow_mut());
        Some((
            at,
            parts.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            waits,
        ))
    }
}

/// The name of the part that lists operator `part`'s spilled keys.
fn cold_part(part: &'static str) -> &'static str {
    match part {
        "window" => "window.cold",
        "rules" => "rules.cold",
        "value" => "value.cold",
        other => panic!("{other} has no spilled state"),
    }
}

/// Whether an operator whose input frontier is at `f` and whose earliest
/// unhandled time is `next` holds exactly the input before `at`.
pub fn ready(at: u64, f: Option<u64>, next: Option<u64>) -> bool {
    f.is_none_or(|f| f >= at) && next.is_none_or(|n| n >= at)
}

/// The parts one worker starts from.
#[derive(Default)]
pub struct Restore {
    parts: RefCell<HashMap<String, Vec<u8>>>,
}

impl Restore {
    pub fn new(parts: Parts) -> Restore {
        Restore {
            parts: RefCell::new(parts.into_iter().collect()),
        }
    }

    /// Operator `part`'s state, if the worker starts from a checkpoint. The
    /// checkpoint file passed its checksum, so a part that does not decode
    /// is a bug: the worker stops with it.
    pub fn take<T: DeserializeOwned>(&self, part: &str) -> Option<T> {
        let bytes = self.parts.borrow_mut().remove(part)?;
        Some(
            postcard::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("cannot read the {part} state of the checkpoint: {e}")),
        )
    }

    /// Operator `part`'s spilled keys, if its checkpoint had any.
    pub fn take_cold<T: DeserializeOwned>(&self, part: &'static str) -> Option<T> {
        self.take(cold_part(part))
    }
}

/// What every stateful operator of a worker is built with: the barrier it
/// puts its part into, and the parts it starts from.
#[derive(Clone, Default)]
pub struct Checkpoints {
    pub barrier: std::rc::Rc<Barrier>,
    pub restore: std::rc::Rc<Restore>,
}

/// Where a node that takes checkpoints sends the workers' parts, and the
/// directory the checkpoints go to (spill stores link their files there).
pub struct CheckpointTo {
    pub parts: std::sync::mpsc::Sender<WorkerParts>,
    pub dir: std::path::PathBuf,
}

/// One worker's parts of the checkpoint at `at`.
pub struct WorkerParts {
    pub worker: usize,
    pub at: u64,
    pub parts: Parts,
    /// The spill stores' snapshots the checkpoint must wait for.
    pub waits: Vec<super::spill::Snapshot>,
}

/// A checkpoint to start from: every worker's parts (worker 0's include
/// the interned asset and line names, `names`) and its time.
pub struct EngineRestore {
    pub at: u64,
    pub workers: Vec<Parts>,
}

/// What the workers share about checkpoints: the one they start from and
/// where their parts go.
pub(super) struct Shared {
    /// The time of the checkpoint the workers start from.
    pub at: Option<u64>,
    parts: std::sync::Mutex<Vec<Option<Parts>>>,
    tx: std::sync::Mutex<Option<std::sync::mpsc::Sender<WorkerParts>>>,
}

impl Shared {
    /// Checks a checkpoint against the run (its number of workers) and
    /// interns its asset and line names (worker 0's part), so ids hold.
    pub fn new(
        restore: Option<EngineRestore>,
        tx: Option<std::sync::mpsc::Sender<WorkerParts>>,
        workers: usize,
        names: &super::Names,
    ) -> Result<Shared, String> {
        let at = restore.as_ref().map(|r| r.at);
        let mut parts = Vec::new();
        if let Some(r) = restore {
            if r.workers.len() != workers {
                return Err(format!(
                    "the checkpoint was taken with {} workers, this run has {workers}: run with \
                     --workers {} (or --reset-state to start over)",
                    r.workers.len(),
                    r.workers.len()
                ));
            }
            parts = r.workers;
            // Every worker put the names as it saw them; they only grow, so
            // the longest list holds every id any part names.
            let mut longest: Vec<crate::model::SharedName> = Vec::new();
            for w in &mut parts {
                if let Some(i) = w.iter().position(|(k, _)| k == "names") {
                    let (_, bytes) = w.swap_remove(i);
                    let list: Vec<crate::model::SharedName> = postcard::from_bytes(&bytes)
                        .map_err(|e| format!("cannot read the checkpoint's names: {e}"))?;
                    if list.len() > longest.len() {
                        longest = list;
                    }
                }
            }
            for n in &longest {
                names.intern_shared(n);
            }
        }
        Ok(Shared {
            at,
            parts: std::sync::Mutex::new(parts.into_iter().map(Some).collect()),
            tx: std::sync::Mutex::new(tx),
        })
    }

    /// Worker `index`'s barrier and parts to start from, and where its parts go.
    pub fn for_worker(
        &self,
        index: usize,
    ) -> (Checkpoints, Option<std::sync::mpsc::Sender<WorkerParts>>) {
        let parts = self
            .parts
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(index).and_then(|p| p.take()));
        let ck = Checkpoints {
            barrier: std::rc::Rc::default(),
            restore: std::rc::Rc::new(Restore::new(parts.unwrap_or_default())),
        };
        (ck, self.tx.lock().ok().and_then(|t| t.clone()))
    }
}

/// Hands worker `index`'s parts of the checkpoint at `at` over, with the
/// interned asset, line and interval names as it sees them (every worker
/// interns interval keys; the ids in its parts are of these).
pub(super) fn send(
    tx: Option<&std::sync::mpsc::Sender<WorkerParts>>,
    index: usize,
    names: &crate::ingest::TagRegistry,
    (at, mut parts, waits): (u64, Parts, Vec<super::spill::Snapshot>),
) {
    match postcard::to_allocvec(names.view().keys()) {
        Ok(b) => parts.push(("names".into(), b)),
        Err(e) => panic!("cannot encode the names for a checkpoint: {e}"),
    }
    if let Some(tx) = tx {
        let _ = tx.send(WorkerParts {
            worker: index,
            at,
            parts,
            waits,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::ready;

    /// An operator holds exactly the input before `at` once its frontier
    /// has reached `at` and nothing before `at` waits in it.
    #[test]
    fn an_operator_is_ready_at_its_frontier_with_nothing_before_it_waiting() {
        assert!(ready(10, Some(10), None));
        assert!(
            ready(10, Some(10), Some(10)),
            "data at the time itself is after"
        );
        assert!(!ready(10, Some(9), None), "input before 10 may still come");
        assert!(
            !ready(10, Some(10), Some(9)),
            "a time before 10 is not handled"
        );
        assert!(ready(10, None, None), "the input has ended");
    }
}
