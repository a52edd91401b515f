//! `spill`: the cold tier of retained windows.
//!
//! A closed window stays correctable until its rule period closes plus the
//! retention (two hours in the reference job): up to 180 windows per tag, which
//! would be 11.5 KiB of memory per tag at 64 bytes each. Yet almost every
//! correction touches the last few minutes. With `[window] spill_after`, the
//! window operator hands the windows of a start that closed longer ago than
//! that to a [`Store`]: one file of 64-byte records per window start and
//! worker, written and read back by the store's own thread (never the timely
//! worker). A late row or a context edit that touches a spilled start, and its
//! expiry, read it back first; the operator holds its capability meanwhile,
//! so results are the same as with everything in memory, only later by the
//! time of a file read.
//!
//! The files are scratch, not a checkpoint: the store removes them when the
//! run ends. If a file cannot be written the windows come back and stay in
//! memory; if one cannot be read back its windows can no longer be corrected,
//! which is logged.

use std::path::{Path, PathBuf};
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

/// The spill plan of a dataflow's `[window]`, if it spills: in `state_dir`,
/// or a directory of this process under the system's temporary directory.
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

enum Request {
    Write(i64, Vec<u8>),
    Read(i64),
}

/// What the store hands back.
pub enum Reply {
    /// The windows of a start, read back (or not written after all).
    Windows(i64, Vec<Acc>),
    /// A start whose file could not be read: its windows are lost.
    Lost(i64, String),
}

/// One worker's handle on its spill thread.
pub struct Store {
    tx: Option<SyncSender<Request>>,
    rx: Receiver<Reply>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How many requests may wait for the thread.
const QUEUE: usize = 256;

impl Store {
    /// Starts worker `index`'s store under `plan.dir`; `wake` activates the
    /// window operator when a reply is ready.
    pub fn start(plan: &SpillPlan, index: usize, wake: SyncActivator) -> std::io::Result<Store> {
        let dir = plan.dir.join(format!("w{index}"));
        std::fs::create_dir_all(&dir)?;
        let (tx, requests) = std::sync::mpsc::sync_channel(QUEUE);
        let (replies, rx) = std::sync::mpsc::channel();
        let root = plan.dir.clone();
        let stats = plan.stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("plantflow-spill-{index}"))
            .spawn(move || serve(&root, &dir, requests, replies, wake, &stats))?;
        Ok(Store {
            tx: Some(tx),
            rx,
            thread: Some(thread),
        })
    }

    /// Hands a start's windows to the store; gives them back if its queue is full.
    pub fn write(&self, start: i64, rows: Vec<Acc>) -> Result<(), Vec<Acc>> {
        let Some(tx) = &self.tx else { return Err(rows) };
        let mut bytes = Vec::with_capacity(rows.len() * Acc::BYTES);
        for a in &rows {
            a.encode(&mut bytes);
        }
        match tx.try_send(Request::Write(start, bytes)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(rows),
        }
    }

    /// Asks for a start's windows back; false if the queue is full (ask again later).
    pub fn read(&self, start: i64) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(Request::Read(start)).is_ok())
    }

    /// The next reply, if one is ready.
    pub fn reply(&self) -> Option<Reply> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn file(dir: &Path, start: i64) -> PathBuf {
    dir.join(format!("{start}.win"))
}

fn decode(bytes: &[u8]) -> Option<Vec<Acc>> {
    if !bytes.len().is_multiple_of(Acc::BYTES) {
        return None;
    }
    Some(bytes.chunks_exact(Acc::BYTES).map(Acc::decode).collect())
}

fn serve(
    root: &Path,
    dir: &Path,
    requests: Receiver<Request>,
    replies: std::sync::mpsc::Sender<Reply>,
    wake: SyncActivator,
    stats: &Stats,
) {
    let mut warned = false;
    for r in requests {
        let reply = match r {
            Request::Write(start, bytes) => match std::fs::write(file(dir, start), &bytes) {
                Ok(()) => {
                    let n = (bytes.len() / Acc::BYTES) as u64;
                    stats.windows_spilled.fetch_add(n, Relaxed);
                    continue;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(dir = %dir.display(), "cannot spill closed windows, keeping them in memory: {e}");
                        warned = true;
                    }
                    Reply::Windows(start, decode(&bytes).unwrap_or_default())
                }
            },
            Request::Read(start) => {
                let path = file(dir, start);
                match std::fs::read(&path).map(|b| decode(&b)) {
                    Ok(Some(rows)) => {
                        let _ = std::fs::remove_file(&path);
                        stats.windows_restored.fetch_add(rows.len() as u64, Relaxed);
                        Reply::Windows(start, rows)
                    }
                    Ok(None) => Reply::Lost(start, format!("{} is truncated", path.display())),
                    Err(e) => Reply::Lost(start, format!("{}: {e}", path.display())),
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
