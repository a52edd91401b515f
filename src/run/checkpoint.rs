//! Checkpoints of a durable node: the engine's state at a time `at`, so a
//! restart replays only the input log after it (`docs/durability.md`).
//!
//! The bridge starts one every `checkpoint_interval` at an epoch boundary
//! (its part: where each source is, the context the engine has; the input
//! log goes on in a new segment), every worker puts its operators' parts
//! (`engine::checkpoint`), and the thread here writes them as one file
//! (`checkpoint-<at>.bin`: a checksum, then postcard; temporary file,
//! `fsync`, rename, directory `fsync`). The lake's next commit whose rows
//! reach `at` names it; then the log segments and checkpoints it replaces
//! are deleted, but for the previous one (a fallback if this one cannot be
//! read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{EngineRestore, WorkerParts};
use crate::ingest::bridge::{BridgePart, LogCounts};
use crate::ingest::wal;
use crate::ingest::TagRegistry;
use crate::model::SharedName;
use crate::sinks::parquet::commit::{CheckpointRef, CheckpointSlot};

/// The format of a checkpoint file; another is refused.
const FORMAT: u32 = 1;

/// A checkpoint file's content.
#[derive(Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: u32,
    pub fingerprint: String,
    pub bridge: BridgePart,
    /// The tag names by id (ids in every part are these).
    pub tags: Vec<SharedName>,
    /// Every worker's operators' parts.
    pub workers: Vec<crate::engine::checkpoint::Parts>,
}

impl Checkpoint {
    /// The engine's part, to start the workers from.
    pub fn engine(&mut self) -> EngineRestore {
        EngineRestore {
            at: self.bridge.at,
            workers: std::mem::take(&mut self.workers),
        }
    }
}

/// A checkpoint's file name.
fn file_name(at: u64) -> String {
    format!("checkpoint-{at:020}.bin")
}

/// The checkpoint at `at` as a commit names it, but for its segment (a
/// cluster's process reads its own file of that time).
pub fn named(at: u64) -> CheckpointRef {
    CheckpointRef {
        at,
        segment: 0,
        file: file_name(at),
        processes: 1,
    }
}

/// Writes `c` to `dir` (temporary file, `fsync`, rename, directory `fsync`):
/// after a crash the file is whole or absent.
fn write(dir: &Path, c: &Checkpoint, n: u64) -> Result<CheckpointRef, String> {
    let payload = postcard::to_allocvec(c).map_err(|e| e.to_string())?;
    let name = file_name(c.bridge.at);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut bytes = Vec::with_capacity(payload.len() + 8);
    bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let err = |e: std::io::Error| format!("writing the checkpoint {}: {e}", tmp.display());
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    crate::model::crash_point("checkpoint", n);
    std::fs::rename(&tmp, &path).map_err(err)?;
    crate::model::sync_dir(dir).map_err(err)?;
    Ok(CheckpointRef {
        at: c.bridge.at,
        segment: c.bridge.segment,
        file: name,
        processes: 1,
    })
}

/// Reads the checkpoint `r` names in `dir`, checked against its checksum,
/// format and dataflow file.
pub fn read(dir: &Path, r: &CheckpointRef, fingerprint: &str) -> Result<Checkpoint, String> {
    let path = dir.join(&r.file);
    let c = read_file(&path)?;
    if c.fingerprint != fingerprint {
        return Err(format!(
            "{} belongs to another version of the dataflow file",
            path.display()
        ));
    }
    Ok(c)
}

/// Reads a checkpoint file, checked against its checksum and format.
fn read_file(path: &Path) -> Result<Checkpoint, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let damaged = || format!("{} is damaged (its checksum fails)", path.display());
    if bytes.len() < 8 {
        return Err(damaged());
    }
    let (sum, payload) = bytes.split_at(8);
    if xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes() != sum {
        return Err(damaged());
    }
    let c: Checkpoint = postcard::from_bytes(payload)
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    if c.format != FORMAT {
        return Err(format!(
            "{} is of format {} (this plantflow reads {FORMAT})",
            path.display(),
            c.format
        ));
    }
    Ok(c)
}

/// What the input log in a state directory has held since it began (for
/// `state inspect`): the oldest checkpoint's totals and the segments after it.
pub fn log_totals(dir: &Path) -> Result<(LogCounts, usize), String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-") && n.ends_with(".bin"))
        .collect();
    names.sort();
    let base = match names.first() {
        Some(n) => Some(read_file(&dir.join(n))?),
        None => None,
    };
    let from = base.as_ref().map_or(0, |c| c.bridge.segment);
    let mut counts = base.map(|c| c.bridge.track.counts).unwrap_or_default();
    let segments = wal::segments(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for seq in segments.iter().filter(|s| **s >= from) {
        let s = wal::scan(&wal::segment(dir, *seq))?;
        counts.samples += s.samples;
        counts.messages += s.messages;
        counts.context += s.context.len() as u64;
        counts.runs += s.runs;
    }
    Ok((counts, names.len()))
}

/// The first checkpoint of `refs` (latest first) that reads, with a
/// warning for each that does not; none: an error naming why.
pub fn read_latest(
    dir: &Path,
    refs: &[CheckpointRef],
    fingerprint: &str,
) -> Result<Option<Checkpoint>, String> {
    let mut why = Vec::new();
    for r in refs {
        match read(dir, r, fingerprint) {
            Ok(c) => {
                if !why.is_empty() {
                    tracing::warn!(
                        checkpoint = %r.file,
                        "going on from the previous checkpoint: {}",
                        why.join("; ")
                    );
                }
                return Ok(Some(c));
            }
            Err(e) => why.push(e),
        }
    }
    match why.is_empty() {
        true => Ok(None),
        false => Err(format!(
            "no checkpoint of the state directory can be read: {}. Run with \
             --reset-state to start over (what the lake holds stays; the input \
             log is not replayed)",
            why.join("; ")
        )),
    }
}

/// Deletes the temporary files of checkpoints a kill cut short, and the
/// spilled state of checkpoints that were never written.
pub fn remove_unfinished(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let orphan = name
            .strip_suffix(".spill")
            .is_some_and(|stem| !dir.join(format!("{stem}.bin")).exists());
        if orphan {
            tracing::info!(dir = %e.path().display(), "deleting the spilled state of a checkpoint a stop cut short");
            let _ = std::fs::remove_dir_all(e.path());
        }
        if name.starts_with(".checkpoint-") && name.ends_with(".tmp") {
            tracing::info!(file = %e.path().display(), "deleting a checkpoint a stop cut short");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The checkpoint file or spilled state directory `name` is of: its stem.
fn stem(name: &str) -> Option<&str> {
    name.strip_suffix(".bin")
        .or_else(|| name.strip_suffix(".spill"))
        .filter(|s| s.starts_with("checkpoint-"))
}

/// Deletes, once a commit names `now` (replacing `before`), the checkpoints
/// but those two and the log segments before the older one's.
pub fn committed(dir: &Path, now: &CheckpointRef, before: Option<&CheckpointRef>) {
    let keep_from = before.map_or(now.segment, |b| b.segment.min(now.segment));
    let keep = [Some(now), before].into_iter().flatten();
    let keep: Vec<&str> = keep.filter_map(|r| stem(&r.file)).collect();
    let now_stem = stem(&now.file).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let old_segment = crate::ingest::wal::seq_of(&path).is_some_and(|seq| seq < keep_from);
        // (names sort by time: one written since `now` was named stays)
        let old_checkpoint = stem(&name).is_some_and(|s| !keep.contains(&s) && s < now_stem);
        if old_segment || old_checkpoint {
            let gone = match name.ends_with(".spill") {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            };
            if let Err(err) = gone {
                tracing::warn!(file = %path.display(), "cannot delete what a checkpoint replaced: {err}");
            }
        }
    }
}

/// Writes the checkpoints whose parts come from the bridge and the workers.
pub struct Checkpointer {
    pub dir: PathBuf,
    pub fingerprint: String,
    pub workers: usize,
    pub tags: Arc<TagRegistry>,
    /// Where each checkpoint written goes (see [`start`]).
    pub publish: Publish,
    /// Checkpoints written by this process.
    pub written: std::cell::Cell<u64>,
    pub stats: Arc<crate::stats::Stats>,
}

/// The parts of one checkpoint gathered so far.
struct Gathering {
    bridge: Option<BridgePart>,
    workers: Vec<Option<crate::engine::checkpoint::Parts>>,
    /// The spill stores' snapshots to wait for.
    waits: Vec<crate::engine::spill::Snapshot>,
}

impl Gathering {
    /// Waits for every spill store's snapshot and syncs what it linked:
    /// the first failure, if any.
    fn spilled(&mut self) -> Result<(), String> {
        let mut res = Ok(());
        for w in self.waits.drain(..) {
            let r = w
                .recv()
                .unwrap_or_else(|_| Err("a spill store stopped before its snapshot".into()))
                .and_then(|l| {
                    l.sync()
                        .map_err(|e| format!("syncing {}: {e}", l.dir.display()))
                });
            if res.is_ok() {
                res = r;
            }
        }
        res
    }
}

impl Checkpointer {
    /// Runs until the workers' channel closes (the engine has ended).
    pub fn spawn(
        self,
        bridge: Receiver<BridgePart>,
        workers: Receiver<WorkerParts>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("plantflow-checkpoint".into())
            .spawn(move || self.serve(bridge, workers))
    }

    fn serve(self, bridge: Receiver<BridgePart>, workers: Receiver<WorkerParts>) {
        let mut pending: BTreeMap<u64, Gathering> = BTreeMap::new();
        loop {
            while let Ok(p) = bridge.try_recv() {
                let at = p.at;
                self.entry(&mut pending, at).bridge = Some(p);
            }
            match workers.recv_timeout(Duration::from_millis(20)) {
                Ok(p) => {
                    let g = self.entry(&mut pending, p.at);
                    if let Some(slot) = g.workers.get_mut(p.worker) {
                        *slot = Some(p.parts);
                    }
                    g.waits.extend(p.waits);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // The engine has ended: what is complete is still written.
                    while let Ok(p) = bridge.try_recv() {
                        let at = p.at;
                        self.entry(&mut pending, at).bridge = Some(p);
                    }
                    self.write_complete(&mut pending);
                    return;
                }
            }
            self.write_complete(&mut pending);
        }
    }

    /// Deletes the spilled state of the checkpoint at `at` (not written).
    fn remove_spilled(&self, at: u64) {
        let _ = std::fs::remove_dir_all(self.dir.join(crate::engine::spill_dir(at)));
    }

    fn entry<'a>(&self, pending: &'a mut BTreeMap<u64, Gathering>, at: u64) -> &'a mut Gathering {
        pending.entry(at).or_insert_with(|| Gathering {
            bridge: None,
            workers: vec![None; self.workers],
            waits: Vec::new(),
        })
    }

    /// Writes the latest checkpoint whose parts are all in (older ones are
    /// of no use then).
    fn write_complete(&self, pending: &mut BTreeMap<u64, Gathering>) {
        let complete = pending
            .iter()
            .rev()
            .find(|(_, g)| g.bridge.is_some() && g.workers.iter().all(|w| w.is_some()))
            .map(|(at, _)| *at);
        let Some(at) = complete else { return };
        let Some(mut g) = pending.remove(&at) else {
            return;
        };
        // Older ones are of no use: their spilled state goes (once linked).
        let older: Vec<u64> = pending.range(..at).map(|(t, _)| *t).collect();
        for t in older {
            if let Some(mut old) = pending.remove(&t) {
                let _ = old.spilled();
                self.remove_spilled(t);
            }
        }
        let started = std::time::Instant::now();
        // The spilled state is linked and synced before the checkpoint
        // that names it is written.
        let spill_dir = self.dir.join(crate::engine::spill_dir(at));
        let spilled = g.spilled().and_then(|()| {
            let sync =
                |d: &Path| crate::model::sync_dir(d).map_err(|e| format!("{}: {e}", d.display()));
            if spill_dir.exists() {
                sync(&spill_dir)?;
            }
            sync(&self.dir)
        });
        if let Err(e) = spilled {
            tracing::error!(
                "checkpoint at {at} not written, keeping the input log since the last one: {e}"
            );
            self.remove_spilled(at);
            return;
        }
        let Some(bridge) = g.bridge else { return };
        let c = Checkpoint {
            format: FORMAT,
            fingerprint: self.fingerprint.clone(),
            bridge,
            // Every id a part names was interned before it was put.
            tags: self.tags.view().keys().to_vec(),
            workers: g.workers.into_iter().flatten().collect(),
        };
        match write(&self.dir, &c, self.written.get() + 1) {
            Ok(r) => {
                self.written.set(self.written.get() + 1);
                self.stats.event("checkpoints written", 1);
                let bytes = std::fs::metadata(self.dir.join(&r.file)).map_or(0, |m| m.len());
                self.stats.checkpoint_written(started.elapsed(), bytes);
                tracing::debug!(
                    at,
                    ms = started.elapsed().as_millis() as u64,
                    "checkpoint written"
                );
                (self.publish)(r);
            }
            Err(e) => {
                self.remove_spilled(at);
                // The input log keeps everything since the last one: a
                // restart replays more, and nothing is lost.
                tracing::error!(
                    "checkpoint at {at} not written, keeping the input log since the last one: {e}"
                );
            }
        }
    }
}

/// What the checkpoint thread does with each checkpoint it wrote.
pub type Publish = Box<dyn Fn(CheckpointRef) + Send>;

/// Starts checkpoints for a node with an input log: the bridge is told how
/// often (or, in a cluster, to take them where process 0 cuts, see
/// `cuts.rs`), the lake's writer where to find them (process 0, or a
/// process alone: `lake`), and the thread that writes them starts (it ends
/// when the engine does). Returns where the workers' parts go.
pub(super) fn start(
    log: Option<&super::durable::InputLog>,
    plan: &crate::config::Plan,
    mut lake: Option<&mut super::lake::OpenLake>,
    ingest: &Arc<crate::ingest::Ingest>,
    (tags, stats, workers): (&Arc<TagRegistry>, &Arc<crate::stats::Stats>, usize),
    rounds: Option<&Arc<super::cuts::Rounds>>,
) -> Result<Option<crate::engine::CheckpointTo>, String> {
    if let Some(lake) = lake.as_mut() {
        // (a logged lake writes its sources' held dead letters at a stop)
        lake.durable.logged = log.is_some();
        // The log is synced every 100 ms; a commit syncs it first, so the
        // lake never holds a row whose input a kill could take from the log.
        if log.is_some() {
            let ingest = ingest.clone();
            lake.durable.sync_log = Some(Box::new(move || ingest.sync()));
        }
    }
    let (Some(log), Some(ms)) = (log, plan.window.checkpoint_ms) else {
        return Ok(None);
    };
    let dir = log.dir().to_path_buf();
    let (bridge_tx, bridge_rx) = std::sync::mpsc::channel();
    let (workers_tx, workers_rx) = std::sync::mpsc::channel();
    let slot = lake.map(|lake| {
        let slot = Arc::new(CheckpointSlot {
            ready: Default::default(),
            writer: Default::default(),
            committed: Box::new({
                let (dir, rounds) = (dir.clone(), rounds.cloned());
                move |now, before| {
                    committed(&dir, now, before);
                    if let Some(r) = &rounds {
                        r.tell_committed(now, before);
                    }
                }
            }),
        });
        lake.durable.checkpoints = Some(slot.clone());
        slot
    });
    let publish: Publish = match (rounds, &slot) {
        (Some(r), _) => {
            if let Some(slot) = &slot {
                r.to_lake(slot.clone());
            }
            ingest.checkpoint_at_cuts(bridge_tx);
            let r = r.clone();
            Box::new(move |c| r.written(c))
        }
        (None, Some(slot)) => {
            let told = Arc::new(crate::ingest::bridge::Written::default());
            ingest.checkpoint_every(Duration::from_millis(ms as u64), bridge_tx, told.clone());
            let slot = slot.clone();
            Box::new(move |c: CheckpointRef| {
                let at = c.at;
                if let Ok(mut ready) = slot.ready.lock() {
                    *ready = Some(c);
                }
                // (a stopping node waits for its last checkpoint)
                told.set(at);
            })
        }
        (None, None) => return Ok(None),
    };
    let thread = Checkpointer {
        dir,
        fingerprint: log.fingerprint().to_string(),
        workers,
        tags: tags.clone(),
        publish,
        written: Default::default(),
        stats: stats.clone(),
    }
    .spawn(bridge_rx, workers_rx)
    .map_err(|e| format!("cannot start the checkpoint thread: {e}"))?;
    // (another process of a cluster leaves its thread be: a kill cuts no
    // checkpoint short, and what is written at the end is not named)
    if let Some(slot) = slot {
        if let Ok(mut w) = slot.writer.lock() {
            *w = Some(thread);
        }
    }
    Ok(Some(crate::engine::CheckpointTo {
        parts: workers_tx,
        dir: log.dir().to_path_buf(),
    }))
}

/// Bytes and files under `path` (a spilled checkpoint's tree; `state inspect`).
pub fn tree_size(path: &Path) -> (u64, usize) {
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .flatten()
            .map(|e| tree_size(&e.path()))
            .fold((0, 0), |(b, n), (b2, n2)| (b + b2, n + n2)),
        Err(_) => (std::fs::metadata(path).map_or(0, |m| m.len()), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(at: u64, segment: u64) -> CheckpointRef {
        CheckpointRef {
            at,
            segment,
            ..named(at)
        }
    }

    /// Once a commit names `now` (replacing `before`), the checkpoints
    /// older than `before` and the log segments before `before`'s go; a
    /// checkpoint written since `now` (not named yet) and everything else
    /// in the directory stay.
    #[test]
    fn a_named_checkpoint_deletes_what_it_replaces_and_nothing_newer() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for at in [10, 20, 30, 40] {
            std::fs::write(d.join(file_name(at)), b"x").unwrap();
        }
        for seq in 1..=5 {
            std::fs::write(wal::segment(d, seq), b"x").unwrap();
        }
        std::fs::write(d.join("other.txt"), b"x").unwrap();
        committed(d, &r(30, 4), Some(&r(20, 3)));
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            file_name(20),
            file_name(30),
            file_name(40),
            "input-000003.wal".to_string(),
            "input-000004.wal".to_string(),
            "input-000005.wal".to_string(),
            "other.txt".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    /// A checkpoint file whose checksum fails is refused with that reason,
    /// and the next one named is read instead.
    #[test]
    fn a_damaged_checkpoint_is_refused_and_the_previous_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let c = |at: u64| Checkpoint {
            format: FORMAT,
            fingerprint: "f".into(),
            bridge: BridgePart {
                at,
                segment: at,
                source_epochs: vec![Some(at)],
                track: Default::default(),
            },
            tags: vec!["a/b".into()],
            workers: vec![vec![("window".into(), vec![1, 2, 3])]],
        };
        let old = write(d, &c(5), 1).unwrap();
        let new = write(d, &c(7), 2).unwrap();
        let path = d.join(&new.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read(d, &new, "f").unwrap_err().contains("checksum"));
        let got = read_latest(d, &[new.clone(), old], "f").unwrap().unwrap();
        assert_eq!(got.bridge.at, 5);
        assert_eq!(got.workers[0][0].1, vec![1, 2, 3]);
        // Another dataflow file's checkpoint is refused too.
        assert!(read_latest(d, &[new], "g").is_err());
    }
}
