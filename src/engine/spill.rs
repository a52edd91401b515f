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
//! On a node that takes checkpoints the files are part of them: each file
//! is written once (always a new file) and only ever removed, so a
//! checkpoint at time `C` hard-links the files the store holds at `C` into
//! `checkpoint-<C>.spill/<store>/` beside the checkpoint
//! ([`Store::snapshot`]); the request goes through the store's queue, so it
//! sees every write before it and no read after it. The checkpoint's thread
//! syncs what was written since the last one ([`Linked`]) before it writes
//! the checkpoint. A restart from that
//! checkpoint links them back into a fresh store before it serves
//! ([`SpillPlan::seed`]). Otherwise the files are scratch: the store removes
//! its directory when the run ends. If a file cannot be written the windows
//! come back and stay in memory; if one cannot be read back its windows can
//! no longer be corrected, which is logged.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::mpsc::{Receiver, Sender};
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
    /// Where checkpoints go, on a node that takes them: the files are then
    /// linked into each checkpoint (and synced by the checkpoint's thread).
    pub checkpoints: Option<PathBuf>,
    /// The spill directory of the checkpoint the run starts from.
    pub seed: Option<PathBuf>,
}

/// What a snapshot linked: the directory, and the files in it whose data
/// nothing has synced yet. The checkpoint's thread syncs both (never the
/// store's thread, which serves reads the timely workers wait for) before
/// it writes the checkpoint.
#[derive(Debug, Default)]
pub struct Linked {
    pub dir: PathBuf,
    pub unsynced: Vec<PathBuf>,
}

impl Linked {
    /// Syncs the files, then the directory.
    pub fn sync(&self) -> std::io::Result<()> {
        for f in &self.unsynced {
            std::fs::File::open(f)?.sync_data()?;
        }
        crate::model::sync_dir(&self.dir)
    }
}

/// A snapshot's outcome, sent by the store's thread once its files are
/// linked (the checkpoint is written only after every one is synced).
pub type Snapshot = Receiver<Result<Linked, String>>;

/// The spill plan of a dataflow's `[window]`, if it spills: a directory of
/// this process in `state_dir` (`run` defaults it to `<lake>/.plantflow`;
/// the system's temporary directory is only the last resort of tools that
/// run the engine without a lake).
pub fn plan_for(
    w: &crate::config::WindowPlan,
    dataflow: &str,
    stats: Arc<Stats>,
    (checkpoints, restore_at): (Option<&Path>, Option<u64>),
) -> Option<SpillPlan> {
    let after_ms = w.spill_after_ms?;
    let dir = w.state_dir.clone().unwrap_or_else(std::env::temp_dir);
    Some(SpillPlan {
        after_ms,
        dir: dir.join(scratch_name(dataflow, std::process::id())),
        stats,
        checkpoints: checkpoints.map(Path::to_path_buf),
        seed: checkpoints
            .zip(restore_at)
            .map(|(d, at)| d.join(super::checkpoint::spill_dir(at))),
    })
}

/// The scratch directory of process `pid`'s stores in the state directory.
fn scratch_name(dataflow: &str, pid: u32) -> String {
    format!("plantflow-{}-{pid}", safe_name(dataflow))
}

fn safe_name(dataflow: &str) -> String {
    dataflow
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Deletes the spill directories that killed runs of `dataflow` left in
/// `state_dir` (their process is gone; what a checkpoint needs of them it
/// holds as its own links). Called with the lake locked.
pub fn remove_stale(state_dir: &Path, dataflow: &str) {
    let prefix = format!("plantflow-{}-", safe_name(dataflow));
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            tracing::info!(dir = %e.path().display(), "deleting the spilled state of a run that was killed");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Hard-links (or, across file systems, copies) every file of `from` into
/// `to` (created). Returns the names linked; `copied` gets those copied
/// (new files: their data is not synced yet).
pub fn link_all(from: &Path, to: &Path, copied: &mut Vec<PathBuf>) -> std::io::Result<Vec<String>> {
    crate::model::private_dir(to)?;
    let mut names = Vec::new();
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let target = to.join(e.file_name());
        if std::fs::hard_link(e.path(), &target).is_err() {
            std::fs::copy(e.path(), &target)?;
            copied.push(target);
        }
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
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
    /// Link the files held now into a checkpoint's directory.
    Snapshot(PathBuf, Sender<Result<Linked, String>>),
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
    /// Unbounded so a snapshot always goes in; writes and reads are
    /// bounded by `queued`.
    tx: Option<Sender<Request<R>>>,
    queued: Arc<AtomicUsize>,
    rx: Receiver<Reply<R>>,
    thread: Option<std::thread::JoinHandle<()>>,
    name: String,
    checkpoints: Option<PathBuf>,
}

/// How many writes and reads may wait for the thread.
const QUEUE: usize = 256;

impl<R: Records> Store<R> {
    /// Starts a store in `plan.dir/{name}` (`name` unique per worker and
    /// operator); `wake` activates the operator when a reply is ready.
    pub fn start(plan: &SpillPlan, name: &str, wake: SyncActivator) -> std::io::Result<Store<R>> {
        let dir = plan.dir.join(name);
        crate::model::private_dir(&dir)?;
        let (tx, requests) = std::sync::mpsc::channel();
        let (replies, rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let serving = Serving {
            root: plan.dir.clone(),
            dir,
            seed: plan.seed.as_ref().map(|s| s.join(name)),
            queued: queued.clone(),
        };
        let stats = plan.stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("plantflow-spill-{name}"))
            .spawn(move || serving.serve(requests, replies, wake, &stats))?;
        Ok(Store {
            tx: Some(tx),
            queued,
            rx,
            thread: Some(thread),
            name: name.to_string(),
            checkpoints: plan.checkpoints.clone(),
        })
    }

    /// Sends a write or read if the queue has room.
    fn send(&self, r: Request<R>) -> Result<(), Request<R>> {
        let Some(tx) = &self.tx else { return Err(r) };
        if self.queued.load(Relaxed) >= QUEUE {
            return Err(r);
        }
        self.queued.fetch_add(1, Relaxed);
        tx.send(r).map_err(|e| {
            self.queued.fetch_sub(1, Relaxed);
            e.0
        })
    }

    /// Hands a key's records to the store; gives them back if its queue is full.
    pub fn write(&self, key: R::Key, records: R) -> Result<(), R> {
        match self.send(Request::Write(key, records)) {
            Ok(()) => Ok(()),
            Err(Request::Write(_, records)) => Err(records),
            Err(_) => unreachable!("a write request comes back as sent"),
        }
    }

    /// Asks for a key's records back; false if the queue is full (ask again later).
    pub fn read(&self, key: R::Key) -> bool {
        self.send(Request::Read(key)).is_ok()
    }

    /// Links the files the store holds once every request before this one
    /// is served into the spill directory of the checkpoint at `at`; the
    /// checkpoint waits for the answer. None on a node without checkpoints.
    pub fn snapshot(&self, at: u64) -> Option<Snapshot> {
        let root = self.checkpoints.as_ref()?;
        let to = root.join(super::checkpoint::spill_dir(at)).join(&self.name);
        let (done, rx) = std::sync::mpsc::channel();
        match &self.tx {
            Some(tx) if tx.send(Request::Snapshot(to, done.clone())).is_ok() => {}
            _ => {
                let _ = done.send(Err(format!("the spill store {} has stopped", self.name)));
            }
        }
        Some(rx)
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

/// What the store's thread serves from.
struct Serving {
    root: PathBuf,
    dir: PathBuf,
    seed: Option<PathBuf>,
    queued: Arc<AtomicUsize>,
}

impl Serving {
    /// Writes a key's file: always a new file (a checkpoint may link the
    /// old one).
    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        std::fs::write(path, bytes)
    }

    /// Links the files held now into `to`: those written since the last
    /// snapshot (`fresh`) are the ones whose data must still be synced.
    fn snapshot(&self, to: &Path, fresh: &mut HashSet<String>) -> Result<Linked, String> {
        let mut unsynced = Vec::new();
        let names = link_all(&self.dir, to, &mut unsynced)
            .map_err(|e| format!("linking {} into {}: {e}", self.dir.display(), to.display()))?;
        unsynced.extend(
            names
                .iter()
                .filter(|n| fresh.contains(*n))
                .map(|n| to.join(n)),
        );
        fresh.clear();
        Ok(Linked {
            dir: to.to_path_buf(),
            unsynced,
        })
    }

    fn serve<R: Records>(
        self,
        requests: Receiver<Request<R>>,
        replies: Sender<Reply<R>>,
        wake: SyncActivator,
        stats: &Stats,
    ) {
        let (written, restored) = R::counters(stats);
        let dir = &self.dir;
        if let Some(seed) = &self.seed {
            match link_all(seed, dir, &mut Vec::new()) {
                Ok(n) => {
                    tracing::debug!(n = n.len(), seed = %seed.display(), "spilled state of the checkpoint linked")
                }
                // A store that spilled nothing by the checkpoint has no directory there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(seed = %seed.display(), "cannot take the checkpoint's spilled state, its windows can no longer be corrected: {e}")
                }
            }
        }
        let mut warned = false;
        // Files written since the last snapshot (their data is not synced).
        let mut fresh: HashSet<String> = HashSet::new();
        for r in requests {
            let reply = match r {
                Request::Snapshot(to, done) => {
                    let _ = done.send(self.snapshot(&to, &mut fresh));
                    continue;
                }
                Request::Write(key, records) => {
                    self.queued.fetch_sub(1, Relaxed);
                    let name = R::file_name(key);
                    let written_to = records
                        .encode()
                        .and_then(|b| self.write(&dir.join(&name), &b).map_err(|e| e.to_string()));
                    match written_to {
                        Ok(()) => {
                            written.fetch_add(records.count(), Relaxed);
                            fresh.insert(name);
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
                    self.queued.fetch_sub(1, Relaxed);
                    let name = R::file_name(key);
                    let path = dir.join(&name);
                    match std::fs::read(&path).map(|b| R::decode(&b)) {
                        Ok(Some(records)) => {
                            let _ = std::fs::remove_file(&path);
                            fresh.remove(&name);
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
        // The run is over: the files are scratch (a checkpoint holds its own links).
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir(&self.root);
    }
}
