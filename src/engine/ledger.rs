//! `ledger`: the cold tier of the value layer's actions.
//!
//! A `one_per = "period"` rule opens an action per group and period, and an
//! action nobody acknowledges stays open: kept in memory, they would grow
//! with every hour the process runs. With `[window] spill_after` set, the
//! value layer hands the actions of closed periods
//! ([`ValueLayer::evict`](crate::value::layer::ValueLayer::evict)) to this
//! ledger: one JSON line each in a scratch file, appended by the ledger's own
//! thread (never a timely worker), with an index from action id to place.
//! When an update needs an action the layer does not hold (a status update
//! naming it, a correction of its finding), the value operator asks the
//! ledger for it and waits for the reply before it applies that time's
//! updates, so the result is the same as with everything in memory.
//!
//! The file is scratch, like the window spill: it is removed when the run
//! ends. An action read back leaves the index; if it is evicted again it is
//! appended again (the file is not compacted: about 1.5 KB per eviction).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use rustc_hash::FxHashMap;
use timely::scheduling::SyncActivator;

use crate::value::layer::ColdAction;

enum Request {
    Put(Vec<ColdAction>),
    Get(String),
}

/// What the ledger answers a [`Ledger::get`].
pub enum Reply {
    Found(Box<ColdAction>),
    /// The ledger never had it (or could not read it back: logged).
    Missing,
}

/// The handle the value operator holds; dropping it stops the thread,
/// which removes the file.
pub struct Ledger {
    tx: SyncSender<Request>,
    replies: Receiver<Reply>,
}

fn key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

impl Ledger {
    /// Starts the ledger thread with its file in `dir`; `wake` activates the
    /// value operator when a reply is ready.
    pub fn start(dir: &Path, wake: SyncActivator) -> std::io::Result<Ledger> {
        crate::model::private_dir(dir)?;
        let path = dir.join("actions.jsonl");
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(256);
        let (reply_tx, replies) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("plantflow-ledger".into())
            .spawn(move || serve(file, path, rx, reply_tx, wake))?;
        Ok(Ledger { tx, replies })
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

    /// Asks for an action by id; `false` if the queue is full (ask again).
    pub fn get(&self, id: &str) -> bool {
        self.tx.try_send(Request::Get(id.to_string())).is_ok()
    }

    /// The next reply, if one is ready.
    pub fn reply(&self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }
}

/// A ledger line's length fits in 24 bits, its offset in 40 (1 TiB).
const MAX_LINE: u64 = (1 << 24) - 1;
const MAX_OFFSET: u64 = (1 << 40) - 1;

fn pack(offset: u64, len: u64) -> u64 {
    offset << 24 | len
}

fn unpack(at: u64) -> (u64, u64) {
    (at >> 24, at & MAX_LINE)
}

fn serve(
    mut file: File,
    path: PathBuf,
    rx: Receiver<Request>,
    replies: std::sync::mpsc::Sender<Reply>,
    wake: SyncActivator,
) {
    // Where each action's line is: offset and length packed in 8 bytes.
    let mut index: FxHashMap<u64, u64> = FxHashMap::default();
    let mut end = 0u64;
    let mut line = Vec::new();
    for req in rx {
        match req {
            Request::Put(actions) => {
                for a in actions {
                    line.clear();
                    if serde_json::to_writer(&mut line, &a).is_err() {
                        continue;
                    }
                    line.push(b'\n');
                    if line.len() as u64 > MAX_LINE || end > MAX_OFFSET {
                        tracing::error!(path = %path.display(), "action {} is too large for the action ledger ({} bytes at offset {end}), it can no longer take status updates", a.row.action_id, line.len());
                        continue;
                    }
                    match file.write_all(&line) {
                        Ok(()) => {
                            index.insert(key(&a.row.action_id), pack(end, line.len() as u64));
                            end += line.len() as u64;
                        }
                        Err(e) => {
                            tracing::error!(path = %path.display(), "cannot write the action ledger, the action can no longer take status updates: {e}");
                        }
                    }
                }
            }
            Request::Get(id) => {
                let reply = match index.remove(&key(&id)) {
                    None => Reply::Missing,
                    Some(at) => {
                        let (at, len) = unpack(at);
                        let mut buf = vec![0u8; len as usize];
                        let got = file
                            .read_exact_at(&mut buf, at)
                            .map_err(|e| e.to_string())
                            .and_then(|()| {
                                serde_json::from_slice::<ColdAction>(&buf)
                                    .map_err(|e| e.to_string())
                            });
                        match got {
                            Ok(a) if a.row.action_id == id => Reply::Found(Box::new(a)),
                            Ok(_) => Reply::Missing,
                            Err(e) => {
                                tracing::error!(path = %path.display(), "cannot read action {id} back from the ledger: {e}");
                                Reply::Missing
                            }
                        }
                    }
                };
                if replies.send(reply).is_err() {
                    break;
                }
                let _ = wake.activate();
            }
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    // The ledger's directory, then the run's state directory if the window
    // spill has already left it.
    for dir in path.ancestors().skip(1).take(2) {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_position_packs_into_eight_bytes_and_back() {
        for (at, len) in [(0, 0), (1, 1), (MAX_OFFSET, MAX_LINE), (123_456_789, 1_500)] {
            assert_eq!(unpack(pack(at, len)), (at, len));
        }
        assert_ne!(pack(1, 0), pack(0, 1));
    }
}
