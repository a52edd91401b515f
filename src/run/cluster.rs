//! A dataflow on several processes (timely's cluster mode): the run of a
//! process other than the writer's, and `plantflow cluster local`.
//!
//! Every process runs the same dataflow file on its share of the input
//! (see [`SourceCtx::share`]); the engine sends samples to their tag's
//! worker as partial windows and carries every output row to worker 0, in process 0,
//! which alone writes the lake, serves the operator surface and publishes.
//! The other processes' sources hand their dead letters and gaps to the
//! engine too ([`Ingest::forward_side`]).

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::supervise::{RunError, Supervisor};
use super::{RunOptions, RunSummary};
use crate::config::cluster::Cluster;
use crate::dataflow::{Dataflow, SourcePlan};
use crate::engine::{self, EngineArgs};
use crate::ingest::normalize::SourceCtx;
use crate::ingest::Ingest;
use crate::model::Stamped;

/// The exit code of a process whose peer was lost (EX_UNAVAILABLE).
pub const EXIT_PEER_LOST: i32 = 69;

/// The peers found gone, in the order their connections broke.
static GONE: std::sync::Mutex<Vec<(usize, String)>> = std::sync::Mutex::new(Vec::new());

/// A peer's connection broke (from the panic hook, on timely's connection
/// thread): the first to see one waits a moment for the others, so the
/// message names the process that died first (the survivors of a lost
/// process leave too, and their connections break after it), then ends
/// this process with [`EXIT_PEER_LOST`].
pub(super) fn peer_gone(lost: (usize, String), cause: &str) {
    // A peer's send and receive threads both break: it counts once.
    if let Ok(mut g) = GONE.lock() {
        if !g.iter().any(|(p, _)| *p == lost.0) {
            g.push(lost.clone());
        }
    }
    // The first thread to see a loss reports; the others leave it to it.
    static REPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if REPORTING.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut gone = GONE.lock().map(|g| g.clone()).unwrap_or_default();
    if gone.is_empty() {
        gone.push(lost);
    }
    let (p, addr) = &gone[0];
    let after: Vec<String> = gone[1..]
        .iter()
        .map(|(p, _)| format!("process {p}"))
        .collect();
    let then = if after.is_empty() {
        String::new()
    } else {
        format!(" (then {} left too)", after.join(", "))
    };
    eprintln!(
        "plantflow: process {p} of the cluster ({addr}) is gone ({cause}){then}; \
         the dataflow cannot go on without it: stopping"
    );
    std::process::exit(EXIT_PEER_LOST);
}

/// Process 0 of a cluster (or a process alone): a cluster whose input is
/// logged on one node (all but one replay file read to its end) keeps an
/// input log and checkpoints on every process (see `cuts.rs`), if every
/// process runs a source; one replay file is read again by every process
/// (see [`check`]). Returns the dataflow's [`fingerprint`].
pub(super) fn writer_options(opts: &mut RunOptions, dataflow: &Dataflow) -> u64 {
    let sources = &dataflow.sources;
    if let Some(c) = &opts.cluster {
        let everywhere = every_process_reads(sources, c.processes, opts.follow);
        let logged = super::durable::logged(sources, opts.follow) && !opts.no_input_log;
        opts.no_input_log |= !everywhere;
        if logged && !everywhere {
            tracing::warn!(
                "a process of this cluster runs no source that goes on as long as the input \
                 does (each of its sources runs on one process, or a process reads only a \
                 share of a file that ends beside live sources), so the cluster keeps no input \
                 log or checkpoints: it starts from an empty lake"
            );
        }
    }
    fingerprint(&dataflow.fingerprint)
}

/// Whether every one of `processes` processes can hold its time for a
/// checkpoint round for as long as the input goes on (a process whose
/// sources have all ended cannot take part: logs kept then would grow with
/// no checkpoint). Either every source is a file read to its end (each
/// process reads its share, then ends; rounds take no checkpoint once one
/// has, and the logs end with the input), or every process runs a source
/// that does not end: a live one on every process (a shared MQTT
/// subscription, OPC UA) or one run whole on it (source `i` on process
/// `i % n`: a followed CSV file, an unshared MQTT source, Modbus, BACnet).
/// Otherwise the cluster is not logged.
fn every_process_reads(sources: &[SourcePlan], processes: usize, follow: bool) -> bool {
    if all_files(sources, follow) {
        return true;
    }
    let everywhere = |s: &SourcePlan| !matches!(s, SourcePlan::Replay(_)) && runs_everywhere(s);
    let endless = |s: &SourcePlan| match s {
        SourcePlan::Replay(r) => {
            follow && matches!(r.format, crate::sources::replay::ReplayFormat::Csv)
        }
        _ => true,
    };
    let on = |p: usize| {
        sources
            .iter()
            .enumerate()
            .any(|(i, s)| i % processes.max(1) == p && endless(s) && !everywhere(s))
    };
    sources.iter().any(everywhere) || (0..processes).all(on)
}

/// Whether a source runs on every process of a cluster (each reads its
/// share): a replay file (its chunks), an `mqtt` source the broker splits,
/// `opcua` (the nodes whose id hashes to the process). Any other runs
/// whole on one process.
fn runs_everywhere(s: &SourcePlan) -> bool {
    match s {
        SourcePlan::Replay(_) | SourcePlan::OpcUa(_) => true,
        SourcePlan::Mqtt(m) => m.split_by_broker(),
        _ => false,
    }
}

/// Whether every source is a replay file read to its end: every process's
/// time then moves on until its share is read, so a checkpoint round may
/// cut across epochs (see `cuts.rs`).
fn all_files(sources: &[SourcePlan], follow: bool) -> bool {
    !follow && sources.iter().all(|s| matches!(s, SourcePlan::Replay(_)))
}

/// Joins the cluster of `opts` (none: `None`): every process's connections
/// are made, and process 0 says where every input log starts (`start` is
/// this process's own; the result holds process 0's).
pub(super) fn join(
    opts: &RunOptions,
    fingerprint: u64,
    files: &crate::ingest::InitialContext,
    start: engine::cluster::Start,
) -> Result<Option<engine::cluster::Joined>, String> {
    let Some(c) = opts.cluster.as_ref() else {
        return Ok(None);
    };
    let shared = engine::cluster::Shared {
        fingerprint,
        // (the assets file's order: a checkpoint's ids are each process's own)
        tags: engine::cluster::tags_hash(&super::registry(&[], files)),
    };
    engine::cluster::join(c, opts.workers.max(1), shared, start).map(Some)
}

/// [`join`] for process 0 (or a process alone: `None`), whose input log
/// `log` says where every process's starts.
pub(super) fn join_as_zero(
    opts: &RunOptions,
    fingerprint: u64,
    files: &crate::ingest::InitialContext,
    log: Option<&super::durable::InputLog>,
) -> Result<Option<engine::cluster::Joined>, RunError> {
    let from = log.map_or(Default::default(), |l| l.cluster_start(opts.reset_state));
    join(opts, fingerprint, files, from).map_err(super::engine_failed)
}

/// A cluster's checkpoint rounds on this process, when its input is
/// logged and checkpoints are on (process 0 runs them until `stop`).
pub(super) fn rounds(
    opts: &RunOptions,
    (plan, sources): (&crate::config::Plan, &[SourcePlan]),
    log: Option<&super::durable::InputLog>,
    (ingest, stop): (&Arc<Ingest>, &Arc<std::sync::atomic::AtomicBool>),
) -> Option<Arc<super::cuts::Rounds>> {
    let c = opts.cluster.as_ref()?;
    let every = plan.window.checkpoint_ms?;
    let log = log?;
    let at = (c.process, c.processes);
    let dir = log.dir().to_path_buf();
    let epochs = (plan.window.size_ms as u64, all_files(sources, opts.follow));
    let rounds = super::cuts::Rounds::new(ingest, at, epochs, dir);
    if c.writes() {
        let every = std::time::Duration::from_millis(every as u64);
        rounds.coordinate(every, stop.clone());
    } else if let Some(r) = log.checkpoint_ref() {
        rounds.restored(r);
    }
    Some(rounds)
}

/// The fingerprint every process of a cluster must share (its dataflow
/// file's), as a number for the handshake.
pub(super) fn fingerprint(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// What a cluster cannot run as configured: an mqtt source with context
/// routes whose samples are not shared runs on one process, so its context
/// edits would reach that process's workers alone.
pub(super) fn check_sources(
    cluster: Option<&Cluster>,
    sources: &[SourcePlan],
) -> Result<(), RunError> {
    if cluster.is_none_or(|c| c.processes < 2) {
        return Ok(());
    }
    for s in sources {
        if let SourcePlan::Mqtt(m) = s {
            let context = m
                .routes
                .iter()
                .any(|r| matches!(r.format, crate::mqtt::Format::Context(_)));
            if context && !m.split_by_broker() {
                return Err(RunError {
                    code: super::supervise::EXIT_CONFIG,
                    message: format!(
                        "mqtt source `{}` edits context tables, which every process of a \
                         cluster must see: give its sample topics `share = \"<group>\"` so \
                         it runs on every process (or put the context topics in a source of \
                         their own with shared sample topics)",
                        m.id
                    ),
                });
            }
        }
    }
    Ok(())
}

/// What process 0 of a cluster checks before it starts: its sources (see
/// [`check_sources`]), and its lake, which must be empty if the cluster
/// keeps no input logs and its input is not one replay file.
pub(super) fn check(
    opts: &RunOptions,
    sources: &[SourcePlan],
    lake: &super::lake::OpenLake,
    path: &Path,
) -> Result<(), RunError> {
    let cluster = opts.cluster.as_ref();
    check_sources(cluster, sources)?;
    if cluster.is_none()
        || lake.resumed.is_none()
        || replays_alike(sources, opts.follow)
        || !opts.no_input_log
    {
        return Ok(());
    }
    Err(RunError {
        code: super::supervise::EXIT_CONFIG,
        message: format!(
            "{} already holds a run's files, and this cluster keeps no input logs (a process \
             runs no source that goes on as long as the input does): it goes on from a lake only when \
             its input is one replay file (read again, what the lake has is skipped) or when \
             every process keeps its input log: give it an empty directory",
            path.display()
        ),
    })
}

/// Whether every run of these sources reads the same rows: one replay file
/// (not followed). A cluster goes on from a lake of such a run as one
/// process does: every process reads its share again, and process 0's
/// writer skips what the lake's last commit holds (the rows' timely times
/// are those of event time, the same in every run).
fn replays_alike(sources: &[SourcePlan], follow: bool) -> bool {
    !super::durable::logged(sources, follow)
}

/// Process 0 of a cluster whose lake already holds the whole run tells the
/// other processes, which are waiting to connect, that there is nothing to do.
pub(super) fn dismiss(
    plan: &crate::config::Plan,
    fingerprint: u64,
    opts: &RunOptions,
) -> Result<(), RunError> {
    let Some(c) = opts.cluster.as_ref() else {
        return Ok(());
    };
    let initial = super::load_initial(plan)?;
    let tags = super::registry(&[], &initial);
    let shared = engine::cluster::Shared {
        fingerprint,
        tags: engine::cluster::tags_hash(&tags),
    };
    if let Err(e) = engine::cluster::dismiss(c, opts.workers.max(1), shared) {
        tracing::warn!("not every process heard that there is nothing to do: {e}");
    }
    Ok(())
}

/// Runs process `c.process` (not 0) of a cluster: its share of the
/// sources and its workers, no lake, no operator surface, no publishing.
/// Its input log (if the cluster keeps them) starts where process 0 says.
pub(super) fn run_peer(
    dataflow: Dataflow,
    opts: RunOptions,
    c: Cluster,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let Dataflow {
        plan,
        sources,
        sink,
        fingerprint: text,
        ..
    } = dataflow;
    check_sources(Some(&c), &sources)?;
    let plan = Arc::new(super::with_state_dir(plan, &sink.path));
    let workers = opts.workers.max(1);
    let stats = opts.stats.clone().unwrap_or_default();
    let stop = opts.stop.clone().unwrap_or_default();
    let files = super::load_initial(&plan)?;
    let (ingest, receivers) = Ingest::new(workers, sources.len(), plan.window.size_ms as u64, 64);
    let rt = super::io_runtime()?;
    let sup = Supervisor::new(stop.clone(), ingest.clone(), opts.drain);
    leave_when_cut(&ingest, &sup, opts.drain, c.process);
    let _done = super::watchdog(&sup, &opts);
    let role = super::signals::Role::Peer(&ingest);
    super::signals::on_signals(&rt, (&stop, &sup), opts.drain, role);
    let joined = match join(&opts, fingerprint(&text), &files, Default::default()) {
        Err(e) if e == engine::cluster::NOTHING_TO_DO => {
            tracing::info!("{e}");
            // The sources stop, and the cluster has no run to leave.
            ingest.on_cut(Box::new(|| {}));
            let (took, resumed) = (started.elapsed(), Default::default());
            let done = super::summary::nothing_to_do(sink.path, took, workers, resumed);
            return Ok(done);
        }
        joined => joined.map_err(super::engine_failed)?,
    };
    let from = joined.as_ref().map_or(Default::default(), |j| j.start);
    let (here, refs) = super::durable::follow_zero(from, &opts);
    let began = super::durable::start_from(&plan, &sources, &here, (&text, &refs), &stats);
    let began = began.map_err(|e| match from {
        engine::cluster::Start::At(at) => RunError {
            message: format!(
                "process 0 goes on from the checkpoint at {at}, which every process wrote, \
                 but this one cannot read its own: {}. Run process 0 with --reset-state \
                 to start every process over",
                e.message
            ),
            ..e
        },
        _ => e,
    })?;
    let (log, files, mut initial, tags, restore) = began.into_parts();
    let geo = super::geometry(&plan);
    let (sink_tx, sink_rx) = std::sync::mpsc::channel::<Stamped>();
    ingest.forward_side(sink_rx, stats.clone());
    let (held, new_status) = super::durable::held(log.as_ref(), &mut initial);
    let rounds = rounds(&opts, (&plan, &sources), log.as_ref(), (&ingest, &stop));
    let at = (&tags, &stats, workers);
    let checkpoints =
        super::checkpoint::start(log.as_ref(), &plan, None, &ingest, at, rounds.as_ref())?;
    let editable = opts.follow || sources.iter().any(|s| matches!(s, SourcePlan::Mqtt(_)));
    let store = super::context_store(&plan, &held, editable, &ingest, &tags, &geo);
    let quality = super::tags::TagQuality::new(&tags, &store, &plan, &stats, false);
    if let Some(l) = log {
        let after = super::durable::AfterReplay::new(&store, files, new_status, (&stats, &sink_tx));
        l.start(&ingest, &tags, &initial, after, (&sup, &stop))?;
    }
    let base = super::source_base(
        &plan,
        (&ingest, &tags, &store, &quality.watch),
        (&sink_tx, &stats, &stop),
        &opts,
    );
    let mut tasks = super::spawn_sources(&rt, &sources, base, &sup);
    if opts.follow {
        tasks.push(super::spawn_watcher(&rt, &sup, &plan, &store, &stop));
    }
    if plan.memory.max_bytes.is_some() {
        let (p, s, sup, i, st) = (
            plan.clone(),
            stop.clone(),
            sup.clone(),
            ingest.clone(),
            stats.clone(),
        );
        tasks.push(rt.spawn_blocking(move || {
            let who = super::supervise::Component("the memory governor (memory.max)".into());
            sup.guard(&who, || super::memory::govern(&p.memory, &i, &st, &s));
        }));
    }
    let result = engine::run(
        plan.clone(),
        EngineArgs {
            workers,
            receivers,
            ingest: ingest.clone(),
            tags,
            initial,
            sink: sink_tx.clone(),
            geometry: geo,
            stats: stats.clone(),
            max_sink_queue: sink.max_queue_bytes,
            checkpoints,
            restore,
            cluster: joined,
        },
    );
    stop.store(true, Relaxed);
    ingest.finish();
    drop(sink_tx);
    for t in tasks {
        let _ = rt.block_on(t);
    }
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Some(f) = sup.failure() {
        return Err(f);
    }
    result.map_err(super::engine_failed)?;
    let report = crate::sinks::parquet::WriterReport::default();
    Ok(super::summary::collect(
        &stats,
        report,
        sink.path,
        started.elapsed(),
        workers,
    ))
}

/// How long a process other than 0 that asked process 0 to stop the
/// cluster waits to hear back before it stops alone.
pub(super) const ASKED_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What this process does when the cluster stops (see
/// `engine::cluster::tell_stop`): process 0 (`zero`), asked by another,
/// stops every process and itself; another process, told by process 0,
/// stops without leaving the cluster. Every process then ends its input;
/// process 0 (whose `--drain` decides) commits what is final, and each
/// exits 0.
pub(super) fn stop_with_cluster(
    sup: &Arc<Supervisor>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    (ingest, zero): (&Arc<Ingest>, bool),
    drain: bool,
) {
    let (sup, stop, ingest) = (Arc::downgrade(sup), stop.clone(), Arc::downgrade(ingest));
    engine::cluster::on_stop(Box::new(move |p| {
        if stop.load(Relaxed) {
            return;
        }
        let Some(i) = ingest.upgrade() else { return };
        if zero {
            eprintln!("plantflow: process {p} asks the cluster to stop: stopping every process");
            keep_what_is_final(&i, drain);
            engine::cluster::tell_stop();
        } else {
            eprintln!("plantflow: process 0 stops the cluster: stopping");
            // Process 0 stops too: this input ends instead of leaving.
            i.on_cut(Box::new(|| {}));
        }
        if let Some(s) = sup.upgrade() {
            s.stopping();
        }
        stop.store(true, Relaxed);
    }));
}

/// Process 0 of a cluster that stops without `--drain` writes nothing
/// from now on but what is final already: its own input may have ended
/// before (its share read), and the other processes' inputs end now, which
/// would close windows that lack the rest of their input. Everything the
/// writer has before its last progress is complete, so the commit stays
/// whole (see `Ingest::abandoned`).
pub(super) fn keep_what_is_final(ingest: &Ingest, drain: bool) {
    if !drain {
        ingest.abandoned().store(true, Relaxed);
    }
}

/// A process that asked process 0 to stop the cluster stops alone (it
/// leaves the cluster) if process 0 has not stopped it within `wait`.
pub(super) fn stop_alone_after(
    sup: &Arc<Supervisor>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    wait: std::time::Duration,
) {
    let (sup, stop) = (Arc::downgrade(sup), stop.clone());
    std::thread::spawn(move || {
        std::thread::sleep(wait);
        if stop.load(Relaxed) {
            return;
        }
        eprintln!("plantflow: process 0 did not answer within {wait:?}: stopping alone");
        if let Some(s) = sup.upgrade() {
            s.stopping();
        }
        stop.store(true, Relaxed);
    });
}

/// A process other than the writer's whose input is cut short (it failed,
/// or was stopped without `--drain`) leaves the cluster at once instead of
/// ending its input: the others then stop, naming it (exit 69), rather than
/// close and commit windows without its share. A stop with `--drain` ends
/// its input as if read to its end (every process of a cluster is to be
/// stopped so).
fn leave_when_cut(ingest: &Arc<Ingest>, sup: &Arc<Supervisor>, drain: bool, me: usize) {
    let sup = Arc::downgrade(sup);
    ingest.on_cut(Box::new(move || {
        let failure = sup.upgrade().and_then(|s| s.failure());
        let (code, why) = match failure {
            Some(f) => (i32::from(f.code), f.message),
            None if drain => return,
            None => (
                i32::from(super::supervise::EXIT_ABORTED),
                "stopped without --drain".to_string(),
            ),
        };
        eprintln!("plantflow: process {me}: {why}; leaving the cluster, which stops with it");
        std::process::exit(code);
    }));
}

/// Whether the source at `index` starts on this process: on every one
/// (see [`runs_everywhere`]: a replay file decides for itself which jobs
/// it reads), or whole on one.
pub(super) fn starts_here(s: &SourcePlan, ctx: &SourceCtx) -> bool {
    runs_everywhere(s) || ctx.runs_whole()
}

/// A cluster's process logs its input every second (`PLANTFLOW_LOG=info`):
/// only process 0 has an operator surface, so this is where the others'
/// progress shows.
pub(super) fn log_progress(
    rt: &tokio::runtime::Runtime,
    stats: Arc<crate::stats::Stats>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    process: usize,
) -> tokio::task::JoinHandle<()> {
    rt.spawn_blocking(move || {
        let mut last = u64::MAX;
        loop {
            let done = stop.load(Relaxed);
            let read = stats.rows_read.load(Relaxed);
            if read != last {
                let accepted = stats.rows_accepted.load(Relaxed);
                tracing::info!("process {process}: {read} rows read, {accepted} accepted");
                last = read;
            }
            if done {
                break;
            }
            super::nap(&stop, std::time::Duration::from_secs(1));
        }
    })
}

/// What `plantflow cluster local` runs: `processes` children of this
/// program on loopback, each `run --processes N --process I` with a
/// hostfile of free ports, the summary of them all (process 0's lake).
pub struct Local<'a> {
    pub exe: &'a Path,
    pub dataflow: &'a Path,
    pub processes: usize,
    pub workers: usize,
    pub json: bool,
}

/// Starts the processes and waits for them; when one fails, the others
/// are stopped and the failure named. Returns the exit code and the
/// merged summary (JSON) when all succeeded.
pub fn local(l: &Local<'_>) -> Result<serde_json::Value, (i32, String)> {
    use std::process::{Command, Stdio};
    let ports: Vec<u16> = (0..l.processes)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| (1, format!("no free port on loopback: {e}")))?;
    let hostfile = std::env::temp_dir().join(format!("plantflow-hosts-{}", std::process::id()));
    let _gone = RemoveOnDrop(hostfile.clone());
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hostfile, text).map_err(|e| (1, e.to_string()))?;
    let mut children = Vec::new();
    for i in 0..l.processes {
        let child = Command::new(l.exe)
            .args(["run", "--json", "-w", &l.workers.to_string()])
            .args([
                "--processes",
                &l.processes.to_string(),
                "--process",
                &i.to_string(),
            ])
            .arg("--hostfile")
            .arg(&hostfile)
            .arg(l.dataflow)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| (1, format!("cannot start process {i}: {e}")))?;
        children.push(child);
    }
    // One reader per child: its summary (stdout) ends when it exits.
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, c) in children.iter_mut().enumerate() {
        let (tx, out) = (tx.clone(), c.stdout.take());
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut out) = out {
                let _ = std::io::Read::read_to_string(&mut out, &mut text);
            }
            let _ = tx.send((i, text));
        });
    }
    drop(tx);
    let mut outputs: Vec<String> = vec![String::new(); l.processes];
    let mut failed: Option<(usize, i32, String)> = None;
    for (i, text) in rx {
        outputs[i] = text;
        let status = children[i].wait().map_err(|e| (1, e.to_string()))?;
        if !status.success() && failed.is_none() {
            let how = match status.code() {
                Some(c) => format!("exited with code {c}"),
                None => "was killed by a signal".to_string(),
            };
            failed = Some((i, status.code().unwrap_or(1), how));
            // The others lose their peer and stop by themselves; this
            // bounds it.
            std::thread::sleep(std::time::Duration::from_millis(200));
            for c in children.iter_mut() {
                let _ = c.kill();
            }
        }
    }
    if let Some((i, code, how)) = failed {
        return Err((code, format!("process {i} of {} {how}", l.processes)));
    }
    let summaries: Vec<serde_json::Value> = outputs
        .iter()
        .map(|o| serde_json::from_str(o).unwrap_or_default())
        .collect();
    Ok(merge(&summaries))
}

/// `plantflow cluster local`: the processes on loopback, one summary.
pub fn main_local(
    dataflow: &Path,
    processes: usize,
    workers: usize,
    json: bool,
) -> std::process::ExitCode {
    if let Err(e) = crate::dataflow::load(dataflow) {
        eprintln!("{}", e.render());
        return std::process::ExitCode::from(crate::EXIT_CONFIG as u8);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("plantflow: cannot find this program to start its processes: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let how = Local {
        exe: &exe,
        dataflow,
        processes: processes.max(1),
        workers: workers.max(1),
        json,
    };
    match local(&how) {
        Ok(summary) if json => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Ok(s) => {
            println!(
                "cluster of {} processes: {} rows read, {} accepted, {} windows, {} actions, {} files in {}",
                processes,
                s["rows_read"],
                s["rows_accepted"],
                s["windows"],
                s["actions"],
                s["files"],
                s["out_dir"].as_str().unwrap_or("the lake")
            );
            let resumed = &s["resumed"];
            if resumed["nothing_to_do"].as_bool() == Some(true) {
                println!(
                    "  the lake already holds this run to its end (commit {}): nothing new to write",
                    resumed["after_commit"]
                );
            } else if resumed.is_object() {
                println!(
                    "  resumed after commit {} (rows before timely time {} were in the lake)",
                    resumed["after_commit"], resumed["before"]
                );
            }
            for (i, p) in s["processes"].as_array().into_iter().flatten().enumerate() {
                println!(
                    "  process {i}: {} rows read in {} s",
                    p["rows_read"], p["elapsed_s"]
                );
            }
            std::process::ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("plantflow: the cluster failed: {message}");
            std::process::ExitCode::from(code.clamp(1, 255) as u8)
        }
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One summary of a cluster's: the lake's figures from process 0 (it
/// writes it), the input's counters summed over every process, and each
/// process's own beside them.
pub fn merge(summaries: &[serde_json::Value]) -> serde_json::Value {
    use serde_json::Value;
    let mut out = summaries.first().cloned().unwrap_or_default();
    const SUMMED: [&str; 9] = [
        "rows_read",
        "rows_accepted",
        "dropped_quality",
        "late_rows",
        "windows",
        "corrections",
        "windows_spilled",
        "windows_restored",
        "groups_spilled",
    ];
    for key in SUMMED {
        let total: u64 = summaries.iter().filter_map(|s| s[key].as_u64()).sum();
        out[key] = Value::from(total);
    }
    let mut dead = serde_json::Map::new();
    for s in summaries {
        for (k, v) in s["dead_letters"].as_object().into_iter().flatten() {
            let n = dead.get(k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap_or(0);
            dead.insert(k.clone(), Value::from(n));
        }
    }
    out["dead_letters"] = Value::Object(dead);
    out["processes"] = Value::Array(
        summaries
            .iter()
            .map(|s| {
                serde_json::json!({
                    "rows_read": s["rows_read"],
                    "windows": s["windows"],
                    "elapsed_s": s["elapsed_s"],
                    "peak_rss_bytes": s["peak_rss_bytes"],
                })
            })
            .collect(),
    );
    out
}
