//! `ledger`: the cold tier of the value layer's actions.
//!
//! A `one_per = "period"` rule opens an action per group and period, and an
//! action nobody acknowledges stays open: kept in memory, they would grow
//! with every hour the process runs. With `[window] spill_after` set, the
//! value layer hands the actions of closed periods
//! ([`ValueLayer::evict`](crate::value::layer::ValueLayer::evict)) to this
//! ledger: one JSON line each, appended by the ledger's own thread (never a
//! timely worker), with an index from action id to place (16 bytes an
//! action). When an update needs an action the layer does not hold (a
//! status update naming it, a correction of its finding), the value
//! operator asks the ledger for it and waits for the reply before it
//! applies that time's updates, so the result is the same as with
//! everything in memory.
//!
//! Lines go to segment files (`actions-NNNNNN.jsonl`). On a node that takes
//! checkpoints a snapshot ([`Ledger::snapshot`], through the same queue as
//! puts and gets) syncs and closes the segment being written, hard-links
//! every segment still holding an action into the checkpoint's spill
//! directory and writes the index there; a restart from that checkpoint
//! links them back ([`LedgerPlan::seed`]). A segment is never written again
//! once closed, and is deleted once every action in it has been read back.
//! Without checkpoints the files are scratch, removed when the run ends.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};

use rustc_hash::FxHashMap;
use timely::scheduling::SyncActivator;

use super::spill::{link_all, Linked, Snapshot};
use crate::value::layer::ColdAction;

enum Request {
    Put(Vec<ColdAction>),
    Get(String),
    /// Actions nothing can change any more: out of the index.
    Forget(Vec<String>),
    Snapshot(PathBuf, Sender<Result<Linked, String>>),
}

/// What the ledger answers a [`Ledger::get`].
pub enum Reply {
    Found(Box<ColdAction>),
    /// The ledger never had it (or could not read it back: logged).
    Missing,
}

/// Where the ledger keeps its segments, and the checkpoints it is part of.
pub struct LedgerFiles {
    pub dir: PathBuf,
    /// Where checkpoints go, on a node that takes them.
    pub checkpoints: Option<PathBuf>,
    /// The ledger directory of the checkpoint the run starts from.
    pub seed: Option<PathBuf>,
}

/// The handle the value operator holds; dropping it stops the thread,
/// which removes the files (a checkpoint keeps its own links).
pub struct Ledger {
    tx: SyncSender<Request>,
    replies: Receiver<Reply>,
    checkpoints: Option<PathBuf>,
}

fn key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// The ledger's directory inside a checkpoint's spill directory.
const NAME: &str = "ledger";

impl Ledger {
    /// Starts the ledger thread in `files.dir`; `wake` activates the value
    /// operator when a reply is ready.
    pub fn start(files: LedgerFiles, wake: SyncActivator) -> std::io::Result<Ledger> {
        crate::model::private_dir(&files.dir)?;
        let mut segs = Segments::open(&files.dir)?;
        if let Some(seed) = &files.seed {
            segs.seed(seed);
        }
        // One slot more than the operator's gets and puts: a snapshot.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(257);
        let (reply_tx, replies) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("plantflow-ledger".into())
            .spawn(move || segs.serve(rx, reply_tx, wake))?;
        Ok(Ledger {
            tx,
            replies,
            checkpoints: files.checkpoints,
        })
    }

    /// Hands actions to the ledger; gives them back if its queue is full.
    pub fn put(&self, actions: Vec<ColdAction>) -> Result<(), Vec<ColdAction>> {
        match self.tx.try_send(Request::Put(actions)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Request::Put(a)))
            | Err(TrySendError::Disconnected(Request::Put(a))) => Err(a),
            Err(_) => Ok(()),
        }
    }

    /// Lets go of closed actions nothing can change any more (their period
    /// is past the retention); gives them back if the queue is full.
    pub fn forget(&self, ids: Vec<String>) -> Result<(), Vec<String>> {
        match self.tx.try_send(Request::Forget(ids)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Request::Forget(ids)))
            | Err(TrySendError::Disconnected(Request::Forget(ids))) => Err(ids),
            Err(_) => Ok(()),
        }
    }

    /// Asks for an action by id; `false` if the queue is full (ask again).
    pub fn get(&self, id: &str) -> bool {
        self.tx.try_send(Request::Get(id.to_string())).is_ok()
    }

    /// The next reply, if one is ready.
    pub fn reply(&self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }

    /// Links the ledger as it is once every request before this one is
    /// served into the checkpoint at `at`; None without checkpoints. The
    /// value operator puts its part only when it waits for no reply, so at
    /// most its gets and puts of one step are queued: the queue has room.
    pub fn snapshot(&self, at: u64) -> Option<Snapshot> {
        let root = self.checkpoints.as_ref()?;
        let to = root.join(super::checkpoint::spill_dir(at)).join(NAME);
        let (done, rx) = std::sync::mpsc::channel();
        if let Err(e) = self.tx.send(Request::Snapshot(to, done)) {
            if let Request::Snapshot(_, done) = e.0 {
                let _ = done.send(Err("the action ledger has stopped".into()));
            }
        }
        Some(rx)
    }
}

/// A ledger line's place: its segment, offset and length.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct At {
    seg: u32,
    len: u32,
    offset: u64,
}

/// The ledger's files, owned by its thread.
struct Segments {
    dir: PathBuf,
    /// Where each action's line is, by the hash of its id.
    index: FxHashMap<u64, At>,
    /// Open segments and how many indexed lines each holds.
    files: BTreeMap<u32, (File, usize)>,
    /// The segment appended to, and its length.
    current: u32,
    end: u64,
}

fn seg_name(seg: u32) -> String {
    format!("actions-{seg:06}.jsonl")
}

/// The index as a checkpoint keeps it.
const INDEX: &str = "index.bin";

impl Segments {
    fn open(dir: &Path) -> std::io::Result<Segments> {
        let mut s = Segments {
            dir: dir.to_path_buf(),
            index: FxHashMap::default(),
            files: BTreeMap::new(),
            current: 0,
            end: 0,
        };
        s.start_segment(0)?;
        Ok(s)
    }

    fn start_segment(&mut self, seg: u32) -> std::io::Result<()> {
        let f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(self.dir.join(seg_name(seg)))?;
        self.files.insert(seg, (f, 0));
        self.current = seg;
        self.end = 0;
        Ok(())
    }

    /// Takes a checkpoint's ledger: its segments linked in, its index.
    fn seed(&mut self, seed: &Path) {
        let got = (|| -> Result<(), String> {
            let bytes = match std::fs::read(seed.join(INDEX)) {
                Ok(b) => b,
                // The ledger held nothing at the checkpoint.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let index: Vec<(u64, At)> = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
            // This run's first segment is empty: the seed's replace it.
            self.files.clear();
            let _ = std::fs::remove_file(self.dir.join(seg_name(0)));
            link_all(seed, &self.dir, &mut Vec::new()).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(self.dir.join(INDEX));
            let mut last = 0;
            for (k, at) in index {
                if !self.files.contains_key(&at.seg) {
                    let f = File::options()
                        .read(true)
                        .open(self.dir.join(seg_name(at.seg)))
                        .map_err(|e| format!("{}: {e}", seg_name(at.seg)))?;
                    self.files.insert(at.seg, (f, 0));
                }
                if let Some((_, n)) = self.files.get_mut(&at.seg) {
                    *n += 1;
                }
                last = last.max(at.seg);
                self.index.insert(k, at);
            }
            self.start_segment(last + 1).map_err(|e| e.to_string())
        })();
        if let Err(e) = got {
            tracing::error!(seed = %seed.display(), "cannot take the checkpoint's action ledger, its actions can no longer take status updates: {e}");
            self.index.clear();
            self.files.clear();
            let _ = self.start_segment(0);
        }
    }

    fn put(&mut self, a: &ColdAction, line: &mut Vec<u8>) -> Result<(), String> {
        line.clear();
        serde_json::to_writer(&mut *line, a).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let len = u32::try_from(line.len()).map_err(|_| "the line is too long".to_string())?;
        let (f, n) = self
            .files
            .get_mut(&self.current)
            .ok_or("no segment to write")?;
        f.write_all(line).map_err(|e| e.to_string())?;
        *n += 1;
        let at = At {
            seg: self.current,
            len,
            offset: self.end,
        };
        self.end += u64::from(len);
        if let Some(old) = self.index.insert(key(&a.row.action_id), at) {
            self.forget(old.seg);
        }
        Ok(())
    }

    /// One line of `seg` is no longer indexed: delete the segment once it
    /// holds none and is not the one written.
    fn forget(&mut self, seg: u32) {
        if let Some((_, n)) = self.files.get_mut(&seg) {
            *n = n.saturating_sub(1);
            if *n == 0 && seg != self.current {
                self.files.remove(&seg);
                let _ = std::fs::remove_file(self.dir.join(seg_name(seg)));
            }
        }
    }

    fn get(&mut self, id: &str) -> Reply {
        let Some(at) = self.index.remove(&key(id)) else {
            return Reply::Missing;
        };
        let got = match self.files.get(&at.seg) {
            None => Err(format!("segment {} is gone", at.seg)),
            Some((f, _)) => {
                let mut buf = vec![0u8; at.len as usize];
                f.read_exact_at(&mut buf, at.offset)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        serde_json::from_slice::<ColdAction>(&buf).map_err(|e| e.to_string())
                    })
            }
        };
        self.forget(at.seg);
        match got {
            Ok(a) if a.row.action_id == id => Reply::Found(Box::new(a)),
            Ok(_) => Reply::Missing,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "cannot read action {id} back from the ledger: {e}");
                Reply::Missing
            }
        }
    }

    /// Closes the segment written and links every segment still holding
    /// an action, with the index, into `to`; the checkpoint's thread syncs
    /// the closed segment and the index ([`Linked`]).
    fn snapshot(&mut self, to: &Path) -> Result<Linked, String> {
        let err = |e: std::io::Error| format!("the action ledger into {}: {e}", to.display());
        crate::model::private_dir(to).map_err(err)?;
        let mut unsynced = Vec::new();
        if self.end > 0 {
            let (closed, next) = (self.current, self.current + 1);
            self.start_segment(next).map_err(err)?;
            // A closed segment nothing is left in goes now.
            if self.files.get(&closed).is_some_and(|(_, n)| *n == 0) {
                self.files.remove(&closed);
                let _ = std::fs::remove_file(self.dir.join(seg_name(closed)));
            } else {
                unsynced.push(to.join(seg_name(closed)));
            }
        }
        for (seg, _) in self.files.iter().filter(|(s, _)| **s != self.current) {
            let name = seg_name(*seg);
            if std::fs::hard_link(self.dir.join(&name), to.join(&name)).is_err() {
                std::fs::copy(self.dir.join(&name), to.join(&name)).map_err(err)?;
                unsynced.push(to.join(&name));
            }
        }
        let index: Vec<(u64, At)> = self.index.iter().map(|(k, a)| (*k, *a)).collect();
        let bytes = postcard::to_allocvec(&index).map_err(|e| e.to_string())?;
        std::fs::write(to.join(INDEX), bytes).map_err(err)?;
        unsynced.push(to.join(INDEX));
        Ok(Linked {
            dir: to.to_path_buf(),
            unsynced,
        })
    }

    fn serve(mut self, rx: Receiver<Request>, replies: Sender<Reply>, wake: SyncActivator) {
        let mut line = Vec::new();
        for req in rx {
            match req {
                Request::Put(actions) => {
                    for a in actions {
                        if let Err(e) = self.put(&a, &mut line) {
                            tracing::error!(dir = %self.dir.display(), "cannot write action {} to the ledger, it can no longer take status updates: {e}", a.row.action_id);
                        }
                    }
                }
                Request::Get(id) => {
                    let reply = self.get(&id);
                    if replies.send(reply).is_err() {
                        break;
                    }
                    let _ = wake.activate();
                }
                Request::Forget(ids) => {
                    for id in ids {
                        if let Some(at) = self.index.remove(&key(&id)) {
                            self.forget(at.seg);
                        }
                    }
                }
                Request::Snapshot(to, done) => {
                    let _ = done.send(self.snapshot(&to));
                }
            }
        }
        self.files.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The run's scratch directory, if the window spill has already left it.
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: &str) -> ColdAction {
        ColdAction {
            rule: 0,
            group: vec!["g".into()].into(),
            finding: None,
            row: crate::model::ActionRow {
                action_id: id.into(),
                ..Default::default()
            },
            rev: 1,
            seen: vec!["open".into()],
            outcome: None,
            updates: Vec::new(),
        }
    }

    fn found(r: Reply) -> Option<String> {
        match r {
            Reply::Found(a) => Some(a.row.action_id),
            Reply::Missing => None,
        }
    }

    /// A snapshot holds the ledger as it was: actions read back after it are
    /// still in the snapshot, and a ledger seeded from it answers for them;
    /// actions put after it are not in it. Segments nothing is left in go.
    #[test]
    fn a_snapshot_holds_the_ledger_as_it_was_and_a_seeded_ledger_answers_from_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (live, snap) = (tmp.path().join("live"), tmp.path().join("snap"));
        crate::model::private_dir(&live).unwrap();
        let mut l = Segments::open(&live).unwrap();
        let mut line = Vec::new();
        for id in ["a", "b", "c"] {
            l.put(&action(id), &mut line).unwrap();
        }
        l.snapshot(&snap).unwrap().sync().unwrap();
        assert_eq!(found(l.get("a")).as_deref(), Some("a"));
        l.put(&action("d"), &mut line).unwrap();
        assert!(found(l.get("x")).is_none(), "never had it");
        // Read back and re-evicted: the newer line wins.
        l.put(&action("b"), &mut line).unwrap();
        assert_eq!(found(l.get("b")).as_deref(), Some("b"));
        assert_eq!(found(l.get("c")).as_deref(), Some("c"));
        // Segment 0 held a, b, c: every one was read back or replaced.
        assert!(!live.join(seg_name(0)).exists());
        assert!(snap.join(seg_name(0)).exists(), "the snapshot's link stays");

        let again = tmp.path().join("again");
        crate::model::private_dir(&again).unwrap();
        let mut s = Segments::open(&again).unwrap();
        s.seed(&snap);
        for id in ["a", "b", "c"] {
            assert_eq!(found(s.get(id)).as_deref(), Some(id));
        }
        assert!(found(s.get("d")).is_none(), "put after the snapshot");
        // Let go of an action: it is no longer there, and a segment with
        // nothing left goes.
        s.put(&action("f"), &mut line).unwrap();
        s.snapshot(&tmp.path().join("snap2")).unwrap();
        if let Some(at) = s.index.remove(&key("f")) {
            s.forget(at.seg);
        }
        assert!(found(s.get("f")).is_none());
        assert!(!again.join(seg_name(1)).exists(), "segment 1 held only f");
        // New lines go to a new segment, not over the seed's.
        s.put(&action("e"), &mut line).unwrap();
        assert_eq!(found(s.get("e")).as_deref(), Some("e"));
        assert!(!again.join(seg_name(0)).exists());
    }
}
