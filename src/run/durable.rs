//! The input log of a node with live sources (MQTT, OPC UA): opened at
//! start, replayed into the fresh engine before the sources go on
//! (`ingest/wal.rs` has the log; `docs/durability.md` the guarantees).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Plan;
use crate::dataflow::SourcePlan;
use crate::ingest::bridge::ContextChange;
use crate::ingest::wal::{Records, Scan, Wal};
use crate::ingest::{Ingest, InitialContext, TagRegistry};
use crate::model::StatusUpdate;
use crate::sources::context::{ContextStore, Snapshot};

use std::sync::atomic::AtomicBool;

use super::supervise::{self, RunError, Supervisor};

/// An input log opened at start, and what it held.
pub(super) struct InputLog {
    wal: Wal,
    path: PathBuf,
    /// What the log held at start (its samples are read again by the replay).
    scan: Scan,
    fingerprint: String,
}

/// The context the store starts from (the log's end on a restart, else
/// `initial`), and the status updates the file has that the log does not;
/// `initial.status` becomes the log's again (the file's were read into it).
pub(super) fn held(
    log: Option<&InputLog>,
    initial: &mut InitialContext,
) -> (InitialContext, Vec<StatusUpdate>) {
    match (log, log.and_then(|l| l.initial())) {
        (Some(l), Some(began)) => {
            let file = std::mem::replace(&mut initial.status, began.status);
            let held = l.held(initial);
            let new = l.new_status(&held, file);
            (held, new)
        }
        _ => (initial.clone(), Vec::new()),
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

/// The log's path: `<state_dir>/<dataflow>/input.wal`.
pub(super) fn path(plan: &Plan) -> Option<PathBuf> {
    let dir = plan.window.state_dir.as_ref()?;
    Some(dir.join(&plan.name).join("input.wal"))
}

impl InputLog {
    /// Opens the log of a logged dataflow (`--reset-state` starts a new
    /// one); refuses one another dataflow file began (exit 78).
    pub fn open(
        plan: &Plan,
        sources: &[SourcePlan],
        fingerprint: &str,
        opts: &super::RunOptions,
    ) -> Result<Option<InputLog>, RunError> {
        let (follow, reset) = (opts.follow, opts.reset_state);
        let wanted = logged(sources, follow) && !opts.no_input_log;
        let Some(path) = path(plan).filter(|_| wanted) else {
            return Ok(None);
        };
        // A log with no input in it (a run that failed at once) holds
        // nothing to lose: it starts again with this dataflow's header.
        let (mut wal, mut scan) = Wal::open(&path)?;
        if reset || (scan.entries > 0 && scan.is_empty()) {
            drop(wal);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", path.display()).into()),
            }
            (wal, scan) = Wal::open(&path)?;
        }
        match &scan.begin {
            Some((f, _)) if f != fingerprint => {
                return Err(RunError {
                    code: supervise::EXIT_CONFIG,
                    message: format!(
                        "the input log {} belongs to another version of the dataflow file \
                         (fingerprint {f} then, {fingerprint} now). Run with --reset-state \
                         to start a new log (what it holds is not replayed)",
                        path.display()
                    ),
                });
            }
            None if scan.entries > 0 => {
                let at = path.display();
                return Err(format!("the input log {at} does not begin with its header").into());
            }
            _ => {}
        }
        if scan.entries > 0 {
            tracing::info!(log = %path.display(), entries = scan.entries, "replaying the input log");
        }
        Ok(Some(InputLog {
            wal,
            path,
            scan,
            fingerprint: fingerprint.to_string(),
        }))
    }

    /// The context the log's first run started with (the engine starts
    /// from it again; later changes are in the log).
    pub fn initial(&self) -> Option<InitialContext> {
        self.scan.begin.as_ref().map(|(_, i)| i.clone())
    }

    /// The context at the end of the log: the store's starting point, so
    /// later file changes are differences from what the engine has.
    pub fn held(&self, initial: &InitialContext) -> InitialContext {
        let mut out = initial.clone();
        let changes = self.scan.context.iter();
        let (mut assets, mut tariff, mut prod, mut maint) = (
            counted(&out.assets),
            counted(&out.tariff),
            counted(&out.production),
            counted(&out.maintenance),
        );
        for c in changes {
            match c {
                ContextChange::Assets(d) => apply(&mut assets, d),
                ContextChange::Tariff(d) => apply(&mut tariff, d),
                ContextChange::Production(d) => apply(&mut prod, d),
                ContextChange::Maintenance(d) => apply(&mut maint, d),
                ContextChange::Status(s) => out.status.extend(s.iter().cloned()),
            }
        }
        out.assets = rows(assets);
        out.tariff = rows(tariff);
        out.production = rows(prod);
        out.maintenance = rows(maint);
        out
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
        after.began = self.initial().unwrap_or_default();
        let fresh = self.scan.entries == 0;
        let replay = Replay {
            path: self.path,
            upto: self.wal.bytes,
            entries: self.scan.entries,
        };
        ingest.attach_log(self.wal, tags.clone());
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
        stats: &Arc<crate::stats::Stats>,
    ) -> Self {
        AfterReplay {
            store: store.clone(),
            files,
            began: InitialContext::default(),
            status,
            stats: stats.clone(),
        }
    }
}

/// The logged calls to feed again.
struct Replay {
    path: PathBuf,
    /// The log's whole records end here (it is read again up to there).
    upto: u64,
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
            let n = self.entries;
            let started = std::time::Instant::now();
            if n > 0 {
                let records = Records::open(&self.path, self.upto)
                    .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
                ingest.replay(records, &tags)?;
            } else {
                ingest.replay(std::iter::empty(), &tags)?;
            }
            let AfterReplay {
                store,
                files,
                began,
                status,
                stats,
            } = after;
            if n > 0 {
                let ms = started.elapsed().as_millis();
                tracing::info!(entries = n, ms, "input log replayed; sources go on");
                stats.event("input log: entries replayed at start", n);
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
            std::thread::sleep(std::time::Duration::from_millis(100));
            ingest.sync()?;
            if ingest.log_bytes() >> 30 > gib {
                gib = ingest.log_bytes() >> 30;
                tracing::warn!(
                    gib,
                    log = %self.path.display(),
                    "the input log has grown to {gib} GiB; a restart replays it whole \
                     (snapshots that truncate it are not built yet)"
                );
            }
        }
        ingest.sync()
    }
}

fn counted<T: Ord + Clone>(rows: &[T]) -> BTreeMap<T, isize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.clone()).or_insert(0) += 1;
    }
    m
}

fn apply<T: Ord + Clone>(m: &mut BTreeMap<T, isize>, diffs: &[(T, isize)]) {
    for (r, d) in diffs {
        *m.entry(r.clone()).or_insert(0) += d;
    }
}

fn rows<T: Clone>(m: BTreeMap<T, isize>) -> Vec<T> {
    m.into_iter()
        .flat_map(|(r, n)| std::iter::repeat_n(r, n.max(0) as usize))
        .collect()
}
