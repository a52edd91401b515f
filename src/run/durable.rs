//! The input log of a node with live sources (MQTT, OPC UA): opened at
//! start, replayed into the fresh engine before the sources go on
//! (`ingest/wal.rs` has the log; `docs/durability.md` the guarantees).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Plan;
use crate::dataflow::SourcePlan;
use crate::ingest::bridge::ContextChange;
use crate::ingest::bridge::LogStart;
use crate::ingest::wal::{self, Records, Scan, Wal};
use crate::sinks::parquet::commit::CheckpointRef;

use super::checkpoint::{self, Checkpoint};
use crate::ingest::{Ingest, InitialContext, TagRegistry};
use crate::model::{Stamped, StatusUpdate};
use crate::sources::context::{ContextStore, Snapshot};
use std::sync::mpsc::Sender;

use std::sync::atomic::AtomicBool;

use super::supervise::{self, RunError, Supervisor};

/// An input log opened at start, and what it held.
pub(super) struct InputLog {
    wal: Wal,
    dir: PathBuf,
    /// The segments to replay, each with the length of its whole records.
    replay: Vec<(PathBuf, u64)>,
    /// What those segments hold (their samples are read again by the replay).
    scan: Scan,
    fingerprint: String,
    /// The checkpoint the replay goes on from, if the lake names one.
    checkpoint: Option<Checkpoint>,
}

/// What a run starts from: its input log (if logged), the context files,
/// the context the engine starts from, the tag registry (a checkpoint's
/// ids first) and the engine's part of the checkpoint.
pub(super) struct Started {
    pub log: Option<InputLog>,
    pub files: InitialContext,
    pub initial: InitialContext,
    pub tags: Arc<TagRegistry>,
    pub restore: Option<crate::engine::EngineRestore>,
}

impl Started {
    #[allow(clippy::type_complexity)]
    pub fn into_parts(
        self,
    ) -> (
        Option<InputLog>,
        InitialContext,
        InitialContext,
        Arc<TagRegistry>,
        Option<crate::engine::EngineRestore>,
    ) {
        (self.log, self.files, self.initial, self.tags, self.restore)
    }
}

/// Opens the input log (see [`InputLog::open`]) and what a run starts from.
pub(super) fn start(
    plan: &Plan,
    sources: &[SourcePlan],
    opts: &super::RunOptions,
    lake: &super::lake::OpenLake,
    stats: &crate::stats::Stats,
) -> Result<Started, RunError> {
    let fingerprint = &lake.durable.identity.fingerprint;
    let processes = opts.cluster.as_ref().map_or(1, |c| c.processes);
    let took = lake.checkpoints.first().map(|r| r.processes);
    if let Some(n) = took.filter(|n| *n != processes && !opts.reset_state) {
        let by = match n {
            1 => "one process: run it without --processes".to_string(),
            n => format!("a cluster of {n} processes: run it with --processes {n}"),
        };
        return Err(RunError {
            code: supervise::EXIT_CONFIG,
            message: format!(
                "the lake's last checkpoint was taken by {by} (each process keeps its own \
                 part of the state), or with --reset-state to start over"
            ),
        });
    }
    start_from(plan, sources, opts, (fingerprint, &lake.checkpoints), stats)
}

/// [`start`] from the checkpoints `refs` (latest first) of the dataflow
/// file `fingerprint` (a cluster's other process: the one process 0 names).
pub(super) fn start_from(
    plan: &Plan,
    sources: &[SourcePlan],
    opts: &super::RunOptions,
    (fingerprint, refs): (&str, &[CheckpointRef]),
    stats: &crate::stats::Stats,
) -> Result<Started, RunError> {
    // (the lake is locked: no other run of this dataflow uses them)
    if let Some(dir) = &plan.window.state_dir {
        crate::engine::spill::remove_stale(dir, &plan.name);
    }
    let mut log = InputLog::open(plan, sources, fingerprint, opts, refs)?;
    let files = super::load_initial(plan)?;
    let initial = log
        .as_ref()
        .and_then(|l| l.began())
        .unwrap_or_else(|| files.clone());
    let checkpoint_tags = log.as_ref().map_or(&[][..], |l| l.checkpoint_tags());
    let tags = super::registry(checkpoint_tags, &initial);
    let restore = log.as_mut().and_then(|l| l.engine_restore());
    if let Some(r) = &restore {
        let (was, now) = (r.workers.len(), opts.workers.max(1));
        if was != now {
            return Err(RunError {
                code: supervise::EXIT_CONFIG,
                message: format!(
                    "the last checkpoint of {} was taken with {was} workers, this run has \
                     {now}: run with --workers {was} (or --reset-state to start over)",
                    dir(plan, opts).unwrap_or_default().display()
                ),
            });
        }
        stats.event("started from a checkpoint", 1);
    }
    Ok(Started {
        log,
        files,
        initial,
        tags,
        restore,
    })
}

/// The context the store starts from (the log's end on a restart, else
/// `initial`), and the status updates the file has that the log does not;
/// `initial.status` becomes the log's again (the file's were read into it).
pub(super) fn held(
    log: Option<&InputLog>,
    initial: &mut InitialContext,
) -> (InitialContext, Vec<StatusUpdate>) {
    match log.and_then(|l| l.start_context().map(|c| (l, c))) {
        Some((l, (base, began))) => {
            let file = std::mem::replace(&mut initial.status, began.status);
            let mut held = base;
            for c in &l.scan.context {
                held.apply(c);
            }
            let new = l.new_status(&held, file);
            (held, new)
        }
        None => (initial.clone(), Vec::new()),
    }
}

/// Whether a dataflow's input is logged: all but one replay source read to
/// its end (which gives the same rows every time it is read again). Live
/// input cannot be read again; several sources interleave by timing; a
/// followed file may have grown. Replay sources in a logged dataflow go on
/// from the position the log recorded.
pub(super) fn logged(sources: &[SourcePlan], follow: bool) -> bool {
    let replay = |s: &SourcePlan| matches!(s, SourcePlan::Replay(_));
    !(sources.len() == 1 && replay(&sources[0]) && !follow)
}

/// The state directory of a dataflow: `<state_dir>/<dataflow>/`, with the
/// input log's segments (`input-NNNNNN.wal`) and its checkpoints; a
/// cluster's process `i` has its own, `<state_dir>/<dataflow>/process-<i>/`.
pub(super) fn dir(plan: &Plan, opts: &super::RunOptions) -> Option<PathBuf> {
    let dir = plan.window.state_dir.as_ref()?.join(&plan.name);
    Some(match &opts.cluster {
        Some(c) => dir.join(format!("process-{}", c.process)),
        None => dir,
    })
}

/// Where a cluster's other processes start from, as process 0 says (see
/// `cuts.rs`): the run of another process, with its checkpoint to read.
pub(super) fn follow_zero(
    start: crate::engine::cluster::Start,
    opts: &super::RunOptions,
) -> (super::RunOptions, Vec<CheckpointRef>) {
    use crate::engine::cluster::Start;
    let mut opts = opts.clone();
    let mut refs = Vec::new();
    match start {
        Start::Unlogged => opts.no_input_log = true,
        Start::Fresh => opts.reset_state = true,
        Start::Whole => {}
        Start::At(at) => refs.push(super::checkpoint::named(at)),
    }
    (opts, refs)
}

/// Deletes the log's segments and checkpoints (`--reset-state`).
fn reset(dir: &std::path::Path) -> Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = wal::seq_of(&path).is_some() || name.starts_with("checkpoint-");
        if ours {
            // (a checkpoint's spilled state is a directory)
            match e.file_type().is_ok_and(|t| t.is_dir()) {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            }
            .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

impl InputLog {
    /// Opens the log of a logged dataflow (`--reset-state` starts a new
    /// one) from the checkpoint the lake's record names (`refs`, latest
    /// first), if any; refuses one another dataflow file began (exit 78).
    pub fn open(
        plan: &Plan,
        sources: &[SourcePlan],
        fingerprint: &str,
        opts: &super::RunOptions,
        refs: &[CheckpointRef],
    ) -> Result<Option<InputLog>, RunError> {
        let (follow, reset_state) = (opts.follow, opts.reset_state);
        let wanted = logged(sources, follow) && !opts.no_input_log;
        let Some(dir) = dir(plan, opts).filter(|_| wanted) else {
            return Ok(None);
        };
        if reset_state {
            reset(&dir)?;
        }
        checkpoint::remove_unfinished(&dir);
        let config = |message: String| RunError {
            code: supervise::EXIT_CONFIG,
            message,
        };
        let checkpoint = match reset_state {
            true => None,
            false => checkpoint::read_latest(&dir, refs, fingerprint).map_err(config)?,
        };
        let mut log = InputLog::segments(&dir, checkpoint, fingerprint)?;
        // A log with no input in it (a run that failed at once) holds
        // nothing to lose: it starts again with this dataflow's header.
        if log.checkpoint.is_none() && log.scan.entries > 0 && log.scan.is_empty() {
            drop(log);
            reset(&dir)?;
            log = InputLog::segments(&dir, None, fingerprint)?;
        }
        let first = log.replay.first().map(|(p, _)| p.display().to_string());
        let first = first.unwrap_or_default();
        match (&log.checkpoint, &log.scan.begin) {
            (None, Some((f, _))) if f != fingerprint => {
                return Err(config(format!(
                    "the input log {first} belongs to another version of the dataflow file \
                     (fingerprint {f} then, {fingerprint} now). Run with --reset-state \
                     to start a new log (what it holds is not replayed)"
                )));
            }
            (None, None) if log.scan.entries > 0 => {
                return Err(format!(
                    "the input log {first} does not begin with its header, and the lake's \
                     commit names no checkpoint to go on from. Run with --reset-state to \
                     start a new log (what it holds is not replayed)"
                )
                .into());
            }
            _ => {}
        }
        if let Some(c) = &log.checkpoint {
            tracing::info!(
                at = c.bridge.at,
                segment = c.bridge.segment,
                "starting from a checkpoint"
            );
        }
        if log.scan.entries > 0 {
            tracing::info!(log = %dir.display(), entries = log.scan.entries, "replaying the input log");
        }
        Ok(Some(log))
    }

    /// Opens the segments from `checkpoint`'s (or the first): every one
    /// but the last was synced whole before the next began; the last is
    /// opened for appending (a torn tail is cut off).
    fn segments(
        dir: &std::path::Path,
        checkpoint: Option<Checkpoint>,
        fingerprint: &str,
    ) -> Result<InputLog, RunError> {
        let all = wal::segments(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let from = match &checkpoint {
            Some(c) => c.bridge.segment,
            None => all.first().copied().unwrap_or(1),
        };
        let mut seqs: Vec<u64> = all.into_iter().filter(|s| *s >= from).collect();
        if seqs.is_empty() {
            seqs.push(from);
        }
        let mut scan = Scan::default();
        let mut replay = Vec::new();
        let last = seqs.len() - 1;
        for seq in &seqs[..last] {
            let path = wal::segment(dir, *seq);
            let s = wal::scan(&path)?;
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            scan.merge(s);
            replay.push((path, len));
        }
        let path = wal::segment(dir, seqs[last]);
        let (wal, s) = Wal::open(&path)?;
        scan.merge(s);
        replay.push((path, wal.bytes));
        Ok(InputLog {
            wal,
            dir: dir.to_path_buf(),
            replay,
            scan,
            fingerprint: fingerprint.to_string(),
            checkpoint,
        })
    }

    /// Where a cluster's other processes go on from: this log's checkpoint,
    /// or their logs' beginning; new logs when process 0 starts over
    /// (`reset`: `--reset-state`). A log of process 0 that holds nothing
    /// says nothing of the others', which may hold acknowledged input.
    pub fn cluster_start(&self, reset: bool) -> crate::engine::cluster::Start {
        use crate::engine::cluster::Start;
        match &self.checkpoint {
            _ if reset => Start::Fresh,
            Some(c) => Start::At(c.bridge.at),
            None => Start::Whole,
        }
    }

    /// The checkpoint this log goes on from, as a commit names it.
    pub fn checkpoint_ref(&self) -> Option<CheckpointRef> {
        let c = self.checkpoint.as_ref()?;
        Some(CheckpointRef {
            segment: c.bridge.segment,
            ..super::checkpoint::named(c.bridge.at)
        })
    }

    /// The context files as the log began (the engine starts from them
    /// again without a checkpoint; later changes are in the log).
    pub fn began(&self) -> Option<InitialContext> {
        match &self.checkpoint {
            Some(c) => Some(c.bridge.track.began.clone()),
            None => self.scan.begin.as_ref().map(|(_, i)| i.clone()),
        }
    }

    /// The context the replay starts from, and the files as the log began.
    fn start_context(&self) -> Option<(InitialContext, InitialContext)> {
        match &self.checkpoint {
            Some(c) => Some((c.bridge.track.held.clone(), c.bridge.track.began.clone())),
            None => self.began().map(|b| (b.clone(), b)),
        }
    }

    /// The dataflow file's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The state directory (checkpoints go there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The checkpoint's tag names by id: interned first, so its ids hold.
    pub fn checkpoint_tags(&self) -> &[crate::model::SharedName] {
        self.checkpoint.as_ref().map_or(&[], |c| &c.tags[..])
    }

    /// The engine's part of the checkpoint (taken once).
    pub fn engine_restore(&mut self) -> Option<crate::engine::EngineRestore> {
        self.checkpoint.as_mut().map(|c| c.engine())
    }

    /// Status updates the file has that the log does not (appended while
    /// the node was down).
    pub fn new_status(&self, held: &InitialContext, file: Vec<StatusUpdate>) -> Vec<StatusUpdate> {
        let seen: HashSet<&StatusUpdate> = held.status.iter().collect();
        file.into_iter().filter(|u| !seen.contains(u)).collect()
    }

    /// Hands the log to the bridge (a fresh one gets its header now) and
    /// starts the thread that replays it once the engine runs.
    pub fn start(
        self,
        ingest: &Arc<Ingest>,
        tags: &Arc<TagRegistry>,
        initial: &InitialContext,
        mut after: AfterReplay,
        (sup, stop): (&Arc<Supervisor>, &Arc<AtomicBool>),
    ) -> Result<(), String> {
        after.began = self.began().unwrap_or_default();
        let fresh = self.scan.entries == 0 && self.checkpoint.is_none();
        let from = match self.checkpoint {
            Some(c) => LogStart::Checkpoint(Box::new(c.bridge)),
            None => LogStart::Began(self.scan.begin.map_or_else(|| initial.clone(), |(_, i)| i)),
        };
        let replay = Replay {
            segments: self.replay,
            entries: self.scan.entries,
        };
        ingest.attach_log(self.wal, tags.clone(), from);
        if fresh {
            ingest.begin_log(&self.fingerprint, initial);
        }
        replay
            .spawn(ingest.clone(), tags.clone(), after, sup, stop.clone())
            .map(|_| ())
            .map_err(|e| format!("cannot start the input log: {e}"))
    }
}

impl AfterReplay {
    pub fn new(
        store: &Arc<ContextStore>,
        files: InitialContext,
        status: Vec<StatusUpdate>,
        (stats, sink): (&Arc<crate::stats::Stats>, &Sender<Stamped>),
    ) -> Self {
        AfterReplay {
            store: store.clone(),
            files,
            began: InitialContext::default(),
            status,
            stats: stats.clone(),
            sink: sink.clone(),
        }
    }
}

/// The logged calls to feed again.
struct Replay {
    /// The segments, each read again up to the end of its whole records.
    segments: Vec<(PathBuf, u64)>,
    entries: u64,
}

/// What to do once the log is replayed: the context files and status
/// updates that changed while the node was down.
pub(super) struct AfterReplay {
    pub store: Arc<ContextStore>,
    /// The context files now, and as the log began.
    pub files: InitialContext,
    pub began: InitialContext,
    pub status: Vec<StatusUpdate>,
    /// The run's counters (an event says when the replay is over).
    pub stats: Arc<crate::stats::Stats>,
    /// Where the log's dead letters go again (the lake's writer, or on a
    /// cluster's other process the engine); dropped after the replay.
    pub sink: Sender<Stamped>,
}

impl Replay {
    /// Replays the log into the bridge and applies what changed while the
    /// node was down (on a thread of its own: the engine must drain it);
    /// then syncs the log every 100 ms (sources without acknowledgements,
    /// OPC UA) until `stop`.
    fn spawn(
        self,
        ingest: Arc<Ingest>,
        tags: Arc<TagRegistry>,
        after: AfterReplay,
        sup: &Arc<super::supervise::Supervisor>,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let sup = sup.clone();
        let who = super::supervise::Component("the input log (state_dir)".into());
        std::thread::Builder::new()
            .name("plantflow-input-log".into())
            .spawn(move || {
                sup.guard(&who, || self.feed(ingest, tags, after, &stop));
            })
    }

    fn feed(
        self,
        ingest: Arc<Ingest>,
        tags: Arc<TagRegistry>,
        after: AfterReplay,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), String> {
        {
            let AfterReplay {
                store,
                files,
                began,
                status,
                stats,
                sink,
            } = after;
            // A file's dead letters in the log go to the lake again, with
            // the stamps they had: the writer skips those it has.
            let n = self.entries;
            let started = std::time::Instant::now();
            if n > 0 {
                let mut all = Vec::new();
                for (path, upto) in &self.segments {
                    let records = Records::open(path, *upto)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    all.push(records);
                }
                ingest.replay(all.into_iter().flatten(), &tags, &sink)?;
            } else {
                ingest.replay(std::iter::empty(), &tags, &sink)?;
            }
            drop(sink);
            // (always counted, so a restart's end of replay can be watched)
            stats.event("input log: entries replayed at start", n);
            if n > 0 {
                let ms = started.elapsed().as_millis();
                tracing::info!(entries = n, ms, "input log replayed; sources go on");
            }
            // A file that differs from the log's start changed while the
            // node was down (a file unchanged leaves message edits alone).
            if files.assets != began.assets {
                store.replace(Snapshot::Assets(files.assets));
            }
            if files.tariff != began.tariff {
                store.replace(Snapshot::Tariff(files.tariff));
            }
            if files.production != began.production {
                store.replace(Snapshot::Production(files.production));
            }
            if files.maintenance != began.maintenance {
                store.replace(Snapshot::Maintenance(files.maintenance));
            }
            if !status.is_empty() {
                ingest.context(ContextChange::Status(status));
            }
        }
        // The log grows with the run until snapshots truncate it: say so at
        // every GiB, so its size is never a surprise.
        let mut gib = ingest.log_bytes() >> 30;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            super::nap(stop, std::time::Duration::from_millis(100));
            ingest.sync()?;
            if ingest.log_bytes() >> 30 > gib {
                gib = ingest.log_bytes() >> 30;
                tracing::warn!(
                    gib,
                    log = %self.segments.last().map(|(p, _)| p.display().to_string()).unwrap_or_default(),
                    "the input log's segment has grown to {gib} GiB; a restart replays it \
                     (checkpoints start a new one: they are off with checkpoint_interval = \"0s\")"
                );
            }
        }
        ingest.sync()
    }
}
