//! `spill`: the cold tier of retained windows and rule accumulators.
//!
//! A closed window stays correctable until its rule period closes plus the
//! retention (two hours in the reference job): up to 180 windows per tag, which
//! would be 10 KiB of memory per tag at 56 bytes each. Yet almost every
//! correction touches the last few minutes. With `[window] spill_after`, the
//! window operator hands the windows of a start that closed longer ago than
//! that to a [`Store`]: one file of 56-byte records per window start and
//! worker, written and read back by the store's own thread (never the timely
//! worker). A late row or a context edit that touches a spilled start, and its
//! expiry, read it back first; the operator holds its capability meanwhile,
//! so results are the same as with everything in memory, only later by the
//! time of a file read.
//!
//! The store is generic over what it keeps ([`Records`]): the rules fold
//! (`engine::rules`) uses it the same way for the accumulators of a rule's
//! closed periods, one postcard file per `(rule, period)` and worker.
//!
//! The files are scratch, not a checkpoint: the store removes them when the
//! run ends. If a file cannot be written the windows come back and stay in
//! memory; if one cannot be read back its windows can no longer be corrected,
//! which is logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use timely::scheduling::SyncActivator;

use super::window::Acc;
use crate::stats::Stats;

/// Where and after how long closed windows go to disk.
#[derive(Clone, Debug)]
pub struct SpillPlan {
    /// A window start spills once its windows closed this long ago.
    pub after_ms: i64,
    /// The store's directory (one subdirectory per worker).
    pub dir: PathBuf,
    /// Counts windows written and read back (the run summary's `spilled`).
    pub stats: Arc<Stats>,
}

/// The spill plan of a dataflow's `[window]`, if it spills: a directory of
/// this process in `state_dir` (`run` defaults it to `<lake>/.plantflow`;
/// the system's temporary directory is only the last resort of tools that
/// run the engine without a lake).
pub fn plan_for(
    w: &crate::config::WindowPlan,
    dataflow: &str,
    stats: Arc<Stats>,
) -> Option<SpillPlan> {
    let after_ms = w.spill_after_ms?;
    let dir = w.state_dir.clone().unwrap_or_else(std::env::temp_dir);
    let name: String = dataflow
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Some(SpillPlan {
        after_ms,
        dir: dir.join(format!("plantflow-{name}-{}", std::process::id())),
        stats,
    })
}

/// What a store keeps: one file of records per key, encoded and decoded on
/// the store's thread (never the timely worker's).
pub trait Records: Sized + Send + 'static {
    /// What a file holds the records of (a window start; a rule's period).
    type Key: Copy + Send + std::fmt::Debug + 'static;
    /// The file of `key`'s records.
    fn file_name(key: Self::Key) -> String;
    fn encode(&self) -> Result<Vec<u8>, String>;
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// How many records (windows, accumulators) these are.
    fn count(&self) -> u64;
    /// The counters of records written and read back.
    fn counters(stats: &Stats) -> (&AtomicU64, &AtomicU64);
}

/// The closed windows of one window start, in 56-byte records.
impl Records for Vec<Acc> {
    type Key = i64;

    fn file_name(start: i64) -> String {
        format!("{start}.win")
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::with_capacity(self.len() * Acc::BYTES);
        for a in self {
            a.encode(&mut bytes);
        }
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(Acc::BYTES) {
            return None;
        }
        Some(bytes.chunks_exact(Acc::BYTES).map(Acc::decode).collect())
    }

    fn count(&self) -> u64 {
        self.len() as u64
    }

    fn counters(stats: &Stats) -> (&AtomicU64, &AtomicU64) {
        (&stats.windows_spilled, &stats.windows_restored)
    }
}

enum Request<R: Records> {
    Write(R::Key, R),
    Read(R::Key),
}

/// What the store hands back.
pub enum Reply<R: Records> {
    /// The records of a key, read back (or not written after all).
    Records(R::Key, R),
    /// A key whose file could not be read: its records are lost.
    Lost(R::Key, String),
}

/// One worker's handle on its spill thread.
pub struct Store<R: Records> {
    tx: Option<SyncSender<Request<R>>>,
    rx: Receiver<Reply<R>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How many requests may wait for the thread.
const QUEUE: usize = 256;

impl<R: Records> Store<R> {
    /// Starts a store in `plan.dir/{name}` (`name` unique per worker and
    /// operator); `wake` activates the operator when a reply is ready.
    pub fn start(plan: &SpillPlan, name: &str, wake: SyncActivator) -> std::io::Result<Store<R>> {
        let dir = plan.dir.join(name);
        crate::model::private_dir(&dir)?;
        let (tx, requests) = std::sync::mpsc::sync_channel(QUEUE);
        let (replies, rx) = std::sync::mpsc::channel();
        let root = plan.dir.clone();
        let stats = plan.stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("plantflow-spill-{name}"))
            .spawn(move || serve(&root, &dir, requests, replies, wake, &stats))?;
        Ok(Store {
            tx: Some(tx),
            rx,
            thread: Some(thread),
        })
    }

    /// Hands a key's records to the store; gives them back if its queue is full.
    pub fn write(&self, key: R::Key, records: R) -> Result<(), R> {
        let Some(tx) = &self.tx else {
            return Err(records);
        };
        match tx.try_send(Request::Write(key, records)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => match r {
                Request::Write(_, records) => Err(records),
                Request::Read(_) => unreachable!("a write request comes back as sent"),
            },
        }
    }

    /// Asks for a key's records back; false if the queue is full (ask again later).
    pub fn read(&self, key: R::Key) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(Request::Read(key)).is_ok())
    }

    /// The next reply, if one is ready.
    pub fn reply(&self) -> Option<Reply<R>> {
        self.rx.try_recv().ok()
    }
}

impl<R: Records> Drop for Store<R> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve<R: Records>(
    root: &Path,
    dir: &Path,
    requests: Receiver<Request<R>>,
    replies: std::sync::mpsc::Sender<Reply<R>>,
    wake: SyncActivator,
    stats: &Stats,
) {
    let (written, restored) = R::counters(stats);
    let mut warned = false;
    for r in requests {
        let reply = match r {
            Request::Write(key, records) => {
                let written_to = records.encode().and_then(|b| {
                    std::fs::write(dir.join(R::file_name(key)), b).map_err(|e| e.to_string())
                });
                match written_to {
                    Ok(()) => {
                        written.fetch_add(records.count(), Relaxed);
                        continue;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(dir = %dir.display(), "cannot spill closed state to disk, keeping it in memory: {e}");
                            warned = true;
                        }
                        Reply::Records(key, records)
                    }
                }
            }
            Request::Read(key) => {
                let path = dir.join(R::file_name(key));
                match std::fs::read(&path).map(|b| R::decode(&b)) {
                    Ok(Some(records)) => {
                        let _ = std::fs::remove_file(&path);
                        restored.fetch_add(records.count(), Relaxed);
                        Reply::Records(key, records)
                    }
                    Ok(None) => Reply::Lost(key, format!("{} is truncated", path.display())),
                    Err(e) => Reply::Lost(key, format!("{}: {e}", path.display())),
                }
            }
        };
        if replies.send(reply).is_err() {
            break;
        }
        let _ = wake.activate();
    }
    // The run is over: the files are scratch.
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir(root);
}
