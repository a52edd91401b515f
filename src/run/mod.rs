//! Running a validated [`Plan`]: wires sources, the engine, context watchers
//! and the Parquet writer together, handles signals, and reports a summary.
//!
//! # Shutdown
//! A run ends when every source has ended (replay without `--follow`), or on
//! the first SIGINT/SIGTERM: sources stop reading, the engine closes every
//! open window, sinks flush, and every file is committed before exit 0. A
//! second signal exits at once with code 130 (in-progress files stay hidden).
//! With [`RunOptions::shutdown_timeout`], a stopping run that has not ended
//! in that time exits with code 124, naming what still runs.
//!
//! # Failures
//! Every component runs under the [`supervise::Supervisor`]: the first one
//! that fails (an error or a panic) ends the run with one line naming it
//! and its config key (`source \`plant\` (sources[0]) failed: …`).

mod checkpoint;
pub mod cluster;
mod cuts;
pub use checkpoint::log_totals;
pub use checkpoint::tree_size;
mod inspect;
pub use inspect::state_inspect;
mod durable;
mod fanout;
mod lake;
mod maintain;
pub use maintain::{lake_compact, lake_vacuum};
mod memory;
pub mod progress;
mod signals;
mod summary;
pub mod supervise;
pub mod tags;

pub use summary::{peak_rss_bytes, Resumed, RunSummary};
pub use supervise::{install_panic_hook, RunError};
use supervise::{Component, Supervisor};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Plan;
use crate::dataflow::{Dataflow, SourcePlan};
use crate::engine::{self, EngineArgs};
use crate::http::board::Board;
use crate::ingest::bridge::ContextChange;
use crate::ingest::normalize::SourceCtx;
use crate::ingest::{Geometry, Ingest, InitialContext, TagRegistry};
use crate::model::tariff::load as load_tariff;
use crate::model::{AssetRow, SinkBatch, Stamped};
use crate::sources::context::{load_assets, load_intervals, ContextStore, Snapshot};
use crate::stats::Stats;

/// How long a stopping run waits for `mqtt_publish` sinks to hand over
/// what they hold.
const PUBLISH_DRAIN: Duration = Duration::from_secs(10);

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub workers: usize,
    /// Tail replay files and watch context files until stopped.
    pub follow: bool,
    /// Stop flag shared with the caller (signals, tests).
    pub stop: Option<Arc<AtomicBool>>,
    /// Counters shared with the caller, to watch progress while running.
    pub stats: Option<Arc<Stats>>,
    /// Keep only totals of actions in the summary's report, not every
    /// action's latest row (the CLI: a long run would hold them all).
    pub tally_actions_only: bool,
    /// Once stopping (a signal or a failure), exit the process if the run
    /// has not ended in this time (the CLI; `None` in tests and the demo).
    pub shutdown_timeout: Option<Duration>,
    /// Forget the lake's commit record and write from the start.
    pub reset_state: bool,
    /// Run without the input log (not durable): for the benchmarks'
    /// baseline only.
    pub no_input_log: bool,
    /// On a stop, close what is open as if the input had ended and commit
    /// it (the lake cannot be resumed then); without it, a stop commits
    /// only what is final.
    pub drain: bool,
    /// This process's place in a cluster (`--processes`), if any.
    pub cluster: Option<crate::config::cluster::Cluster>,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Window geometry of a plan: retraction buckets are the lcm of all periods.
pub fn geometry(plan: &Plan) -> Geometry {
    let mut p = plan.window.size_ms;
    for r in plan
        .rules
        .iter()
        .filter(|r| r.kind == crate::config::RuleKind::Windows)
    {
        p = p / gcd(p, r.period_ms) * r.period_ms;
    }
    Geometry {
        size_ms: plan.window.size_ms,
        period_ms: p,
        retention_ms: plan.window.retention_ms,
    }
}

/// The rows behind `Arc`s. Not `into_iter().map(Arc::new).collect()`: that
/// collects in place, and the vector of 8-byte `Arc`s would keep the rows'
/// allocation (20 times its size) for as long as the context lives.
fn shared(rows: Vec<AssetRow>) -> Vec<Arc<AssetRow>> {
    let mut out = Vec::with_capacity(rows.len());
    out.extend(rows.into_iter().map(Arc::new));
    out
}

fn load_initial(plan: &Plan) -> Result<InitialContext, String> {
    let c = &plan.context;
    Ok(InitialContext {
        assets: shared(load_assets(&c.assets, &c.asset_extra)?),
        tariff: load_tariff(&c.tariff)?,
        production: match &c.production {
            Some(p) => load_intervals(p, "line")?,
            None => Vec::new(),
        },
        maintenance: match &c.maintenance {
            Some(p) => load_intervals(p, "asset")?,
            None => Vec::new(),
        },
        status: Vec::new(),
    })
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Polls the context files and applies their changes as differences.
fn watch_context(plan: Arc<Plan>, store: Arc<ContextStore>, stop: Arc<AtomicBool>) {
    let c = &plan.context;
    let files: Vec<PathBuf> = [
        Some(c.assets.clone()),
        Some(c.tariff.clone()),
        c.production.clone(),
        c.maintenance.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut seen: Vec<Option<SystemTime>> = files.iter().map(|f| mtime(f)).collect();
    let mut sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    while !stop.load(Relaxed) {
        nap(&stop, Duration::from_millis(250));
        store.prune();
        for (i, f) in files.iter().enumerate() {
            let m = mtime(f);
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            if m == seen[i] && size == sizes[i] {
                continue;
            }
            seen[i] = m;
            sizes[i] = size;
            let result = if *f == c.assets {
                load_assets(f, &c.asset_extra).map(|rows| Snapshot::Assets(shared(rows)))
            } else if *f == c.tariff {
                load_tariff(f).map(Snapshot::Tariff)
            } else if Some(f) == c.production.as_ref() {
                load_intervals(f, "line").map(Snapshot::Production)
            } else {
                load_intervals(f, "asset").map(Snapshot::Maintenance)
            };
            match result {
                Ok(snap) => {
                    tracing::info!(file = %f.display(), "context changed; correcting affected outputs");
                    store.replace(snap);
                }
                Err(e) => {
                    tracing::error!(file = %f.display(), "context reload failed, keeping the previous version: {e}")
                }
            }
        }
    }
}

/// Sleeps for `d`, or less when `stop` is set meanwhile (looked at every
/// 10 ms): a background loop sees the end of the run at once, and the run
/// does not wait out its period.
pub(crate) fn nap(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(10)));
    }
}

/// Starts every source on the runtime, each with `base` for its index.
fn spawn_sources(
    rt: &tokio::runtime::Runtime,
    sources: &[SourcePlan],
    base: SourceCtx,
    sup: &Arc<Supervisor>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if base.share.1 > 1 {
        let (stats, stop) = (base.stats.clone(), base.stop.clone());
        tasks.push(cluster::log_progress(rt, stats, stop, base.share.0));
    }
    for (i, s) in sources.iter().enumerate() {
        let ctx = SourceCtx {
            index: i,
            id: s.id().to_string(),
            replayed: matches!(s, SourcePlan::Replay(_)),
            ..base.clone()
        };
        // A cluster's source that runs on another process ends here at once.
        if !cluster::starts_here(s, &ctx) {
            ctx.ingest.end_source(i);
            continue;
        }
        let who = Component(format!("source `{}` (sources[{i}])", s.id()));
        tasks.push(spawn_source(rt, s, ctx, sup, who));
    }
    tasks
}

/// What every source of a run shares (its index and id are set per source).
fn source_base(
    plan: &Plan,
    (ingest, tags, store, watch): (
        &Arc<Ingest>,
        &Arc<TagRegistry>,
        &Arc<ContextStore>,
        &Arc<crate::ingest::watch::TagWatch>,
    ),
    (sink, stats, stop): (
        &std::sync::mpsc::Sender<Stamped>,
        &Arc<Stats>,
        &Arc<AtomicBool>,
    ),
    opts: &RunOptions,
) -> SourceCtx {
    let context: Arc<dyn crate::ingest::normalize::ContextEdits> = store.clone();
    SourceCtx {
        index: 0,
        id: String::new(),
        ingest: ingest.clone(),
        tags: tags.clone(),
        sink: sink.clone(),
        stats: stats.clone(),
        stop: stop.clone(),
        window: plan.window.clone(),
        geometry: geometry(plan),
        follow: opts.follow,
        replayed: false,
        context: Some(context),
        dead_letter: plan.dead_letter,
        watch: watch.clone(),
        share: opts
            .cluster
            .as_ref()
            .map_or((0, 1), |c| (c.process, c.processes)),
    }
}

/// Runs a plan to completion (or until stopped).
pub fn run(dataflow: Dataflow, mut opts: RunOptions) -> Result<RunSummary, RunError> {
    if let Some(c) = opts.cluster.clone().filter(|c| !c.writes()) {
        return cluster::run_peer(dataflow, opts, c);
    }
    let started = Instant::now();
    let cluster_fingerprint = cluster::writer_options(&mut opts, &dataflow);
    let Dataflow {
        plan,
        sources,
        sink,
        publish,
        jsonl,
        webhooks,
        fingerprint,
    } = dataflow;
    let plan = Arc::new(with_state_dir(plan, &sink.path));
    // The lake is locked for the run (`_lock`) and its last commit finished.
    let who = (plan.name.as_str(), plan.metrics.as_slice());
    let mut lake = lake::OpenLake::open(&sink, who, fingerprint.clone(), &opts)?;
    cluster::check(&opts, &sources, &lake, &sink.path)?;
    if let Some(done) = lake.nothing_to_do(&sources, &sink.path, started, &opts) {
        return cluster::dismiss(&plan, cluster_fingerprint, &opts).map(|()| done);
    }
    let (resumed, finished) = (lake.resumed.clone(), lake.durable.finished.clone());
    let workers = opts.workers.max(1);
    let stats = opts.stats.clone().unwrap_or_default();
    let stop = opts.stop.clone().unwrap_or_default();
    // A node whose input cannot be read again as it was (live sources,
    // several files, a followed file) logs it, and replays it after a restart.
    let start = durable::start(&plan, &sources, &opts, &lake, &stats);
    let (log, files, mut initial, tags, restore) = start?.into_parts();
    let geo = geometry(&plan);
    let (ingest, receivers) = Ingest::new(workers, sources.len(), plan.window.size_ms as u64, 64);
    // The runtime is made before the sink channel on purpose: on any early
    // return the sender drops first, so the writer on the runtime ends and
    // dropping the runtime (which waits for it) cannot hang.
    let rt = io_runtime()?;
    let (sink_tx, sink_rx) = std::sync::mpsc::channel::<Stamped>();
    // Status updates already in the lifecycle file.
    let status_offset = initial_status(&plan, &mut initial, &stats, &sink_tx)?;
    let (held, new_status) = durable::held(log.as_ref(), &mut initial);
    // A node with an input log checkpoints its state, so a restart
    // replays only the log after the last one (a cluster: see `cuts.rs`).
    let rounds = cluster::rounds(&opts, (&plan, &sources), log.as_ref(), (&ingest, &stop));
    let (at, lake_at) = ((&tags, &stats, workers), Some(&mut lake));
    let checkpoints =
        checkpoint::start(log.as_ref(), &plan, lake_at, &ingest, at, rounds.as_ref())?;
    let sup = Supervisor::new(stop.clone(), ingest.clone(), opts.drain);
    // Whatever way this function returns, the watchdog stands down.
    let _done = watchdog(&sup, &opts);
    // The operator surface's board sees what goes to the sinks.
    let (board, sink_rx) = fanout::board(&plan, &sink.path, sink_rx)?;
    let fanout::Writers {
        writer: writer_task,
        publishers,
    } = fanout::start(
        &rt,
        sink_rx,
        fanout::Lake {
            sink: &sink,
            plan: &plan,
            tally_actions_only: opts.tally_actions_only,
            open: lake,
        },
        (&publish, &jsonl, &webhooks),
        &sup,
        stats.clone(),
    )?;

    let role = signals::Role::of(&opts, &ingest);
    signals::on_signals(&rt, (&stop, &sup), opts.drain, role);
    // A cluster's process 0 says where every process's input log starts.
    let joined = cluster::join_as_zero(&opts, cluster_fingerprint, &files, log.as_ref())?;

    let editable = opts.follow || sources.iter().any(|s| matches!(s, SourcePlan::Mqtt(_)));
    let store = context_store(&plan, &held, editable, &ingest, &tags, &geo);
    let live = sources.iter().any(|s| !matches!(s, SourcePlan::Replay(_)));
    let tag_quality = tags::TagQuality::new(&tags, &store, &plan, &stats, live);
    if let Some(l) = log {
        let after = durable::AfterReplay::new(&store, files, new_status, (&stats, &sink_tx));
        l.start(&ingest, &tags, &initial, after, (&sup, &stop))?;
    }
    let base = source_base(
        &plan,
        (&ingest, &tags, &store, &tag_quality.watch),
        (&sink_tx, &stats, &stop),
        &opts,
    );
    let source_tasks = spawn_sources(&rt, &sources, base, &sup);
    let background = spawn_background(
        &rt,
        &sup,
        Background {
            plan: &plan,
            store: &store,
            board,
            follow: opts.follow,
            status_offset,
            ingest: &ingest,
            stats: &stats,
            tag_quality: &tag_quality,
            sink: &sink_tx,
            lake: &sink.path,
        },
    );

    let engine_result = engine::run(
        plan.clone(),
        EngineArgs {
            workers,
            receivers,
            ingest: ingest.clone(),
            tags: tags.clone(),
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
    // Every source ended by itself (no signal, no failure): the last
    // commit says the run is finished.
    let by_itself = engine_result.is_ok() && !stop.load(Relaxed) && sup.failure().is_none();
    finished.store(by_itself, Relaxed);
    stop.store(true, Relaxed);
    ingest.finish();
    // The tags as the run leaves them (a run that failed writes nothing more).
    if engine_result.is_ok() && sup.failure().is_none() {
        tag_quality.snapshot(&sink_tx);
    }
    drop(sink_tx);
    let tasks = source_tasks.into_iter().chain(background);
    let report = wind_down(rt, tasks, writer_task, publishers);
    // The first failure is the cause; what failed after it (an engine whose
    // input was cut short) is a consequence.
    if let Some(f) = sup.failure() {
        return Err(f);
    }
    engine_result.map_err(engine_failed)?;
    let report = writer_report(report, &sup)?;
    let took = started.elapsed();
    Ok(summary::collect(&stats, report, sink.path, took, workers).resumed(resumed))
}

/// The runtime of the node's I/O: sources, sinks, the operator surface.
fn io_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("plantflow-io")
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))
}

/// Starts the shutdown watchdog (with `--shutdown-timeout`); it stands
/// down when the returned flag is dropped.
fn watchdog(sup: &Arc<Supervisor>, opts: &RunOptions) -> SetOnDrop {
    let done = Arc::new(AtomicBool::new(false));
    if let Some(t) = opts.shutdown_timeout {
        sup.watchdog(t, done.clone());
    }
    SetOnDrop(done)
}

/// Waits for the sources and background tasks, then the writer and the
/// publishers, and stops the runtime; the writer's outcome.
fn wind_down(
    rt: tokio::runtime::Runtime,
    tasks: impl Iterator<Item = tokio::task::JoinHandle<()>>,
    writer: tokio::task::JoinHandle<Option<crate::sinks::parquet::WriterReport>>,
    publishers: Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<crate::sinks::parquet::WriterReport>, tokio::task::JoinError> {
    for t in tasks {
        let _ = rt.block_on(t);
    }
    let report = rt.block_on(writer);
    drain_publishers(&rt, publishers);
    rt.shutdown_timeout(Duration::from_millis(100));
    report
}

/// The writer's report, or why there is none.
fn writer_report(
    report: Result<Option<crate::sinks::parquet::WriterReport>, tokio::task::JoinError>,
    sup: &Supervisor,
) -> Result<crate::sinks::parquet::WriterReport, RunError> {
    match report {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(sup
            .failure()
            .unwrap_or_else(|| "the writer failed".to_string().into())),
        Err(e) => Err(format!("the writer task failed: {e}").into()),
    }
}

/// A publisher whose broker is away cannot drain: it gets a bounded time,
/// then what it still holds is dropped (the lake is committed).
fn drain_publishers(rt: &tokio::runtime::Runtime, publishers: Vec<tokio::task::JoinHandle<()>>) {
    for p in publishers {
        if rt
            .block_on(async { tokio::time::timeout(PUBLISH_DRAIN, p).await })
            .is_err()
        {
            tracing::warn!(
                "mqtt_publish: the broker did not take every message within {PUBLISH_DRAIN:?}; the rest is dropped"
            );
        }
    }
}

/// The engine's error as the run's: a worker's panic is an internal error.
fn engine_failed(e: String) -> RunError {
    RunError {
        code: if e.starts_with("internal error") {
            supervise::EXIT_INTERNAL
        } else {
            supervise::EXIT_FAILED
        },
        message: format!("the engine failed: {e}"),
    }
}

/// Scratch state (spilled windows, the action ledger) lives beside the lake
/// by default (`<lake>/.plantflow`), never at a predictable path under /tmp.
fn with_state_dir(mut plan: Plan, lake: &std::path::Path) -> Plan {
    if plan.window.state_dir.is_none() {
        plan.window.state_dir = Some(lake.join(".plantflow"));
    }
    plan
}

/// The tag registry: a checkpoint's tags (its ids hold), then the context's.
fn registry(checkpoint: &[crate::model::SharedName], initial: &InitialContext) -> Arc<TagRegistry> {
    let tags = Arc::new(TagRegistry::default());
    for t in checkpoint {
        tags.intern_shared(t);
    }
    for a in &initial.assets {
        tags.intern_shared(&a.tag);
    }
    tags.shrink();
    tags
}

/// What runs beside the sources (see [`spawn_background`]).
struct Background<'a> {
    plan: &'a Arc<Plan>,
    store: &'a Arc<ContextStore>,
    board: Option<Arc<Board>>,
    follow: bool,
    /// Where the lifecycle file's tail starts.
    status_offset: u64,
    ingest: &'a Arc<Ingest>,
    stats: &'a Arc<Stats>,
    tag_quality: &'a Arc<tags::TagQuality>,
    sink: &'a std::sync::mpsc::Sender<Stamped>,
    /// The lake's directory.
    lake: &'a std::path::Path,
}

/// Beside the sources, under the supervisor: the memory governor (when
/// there is a limit), the operator surface (when `[http]` is set), in
/// `--follow` the context watcher, the status tail (in `--follow` or when
/// the surface takes status changes) and the tag-quality snapshots.
fn spawn_background(
    rt: &tokio::runtime::Runtime,
    sup: &Arc<Supervisor>,
    b: Background<'_>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let stop = sup.stop_flag();
    let mut out = Vec::new();
    let plan = b.plan;
    if plan.memory.max_bytes.is_some() {
        let (p, s, sup) = (plan.clone(), stop.clone(), sup.clone());
        let (ingest, stats) = (b.ingest.clone(), b.stats.clone());
        out.push(rt.spawn_blocking(move || {
            let who = Component("the memory governor (memory.max)".into());
            sup.guard(&who, || memory::govern(&p.memory, &ingest, &stats, &s));
        }));
    }
    if let (Some(h), Some(board)) = (plan.http.clone(), b.board) {
        let (s, sup, handle) = (stop.clone(), sup.clone(), rt.handle().clone());
        let surface = crate::http::Surface {
            stats: b.stats.clone(),
            stop: s,
            board,
            token: h.token.clone(),
            tags: b.tag_quality.clone(),
            lake: b.lake.to_path_buf(),
        };
        out.push(rt.spawn_blocking(move || {
            let who = Component("the operator surface (http.listen)".into());
            sup.guard(&who, || crate::http::serve(&handle, &h, surface));
        }));
    }
    if b.follow {
        out.push(spawn_watcher(rt, sup, plan, b.store, &stop));
    }
    let writes = plan.http.as_ref().is_some_and(|h| h.token.is_some());
    let tail = plan.lifecycle.as_ref().filter(|_| b.follow || writes);
    out.extend(tail.map(|lc| {
        let tail = StatusTail {
            path: lc.path.clone(),
            offset: b.status_offset,
            ingest: b.ingest.clone(),
            stop: stop.clone(),
            sink: b.sink.clone(),
            stats: b.stats.clone(),
        };
        tail_status(rt, sup, tail)
    }));
    let (tq, sink, s) = (b.tag_quality.clone(), b.sink.clone(), stop.clone());
    out.push(rt.spawn_blocking(move || tq.snapshots(&sink, &s)));
    out
}

fn spawn_watcher(
    rt: &tokio::runtime::Runtime,
    sup: &Arc<Supervisor>,
    plan: &Arc<Plan>,
    store: &Arc<ContextStore>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (p, st, s, sup) = (plan.clone(), store.clone(), stop.clone(), sup.clone());
    rt.spawn_blocking(move || {
        st.wait_ready();
        let who = Component("the context watcher (context)".into());
        sup.guard(&who, || {
            watch_context(p, st, s);
            Ok(())
        });
    })
}

/// Follows the lifecycle file from `offset`: new status updates go to the
/// engine, malformed lines to `dead_letter`, until `stop`.
fn tail_status(
    rt: &tokio::runtime::Runtime,
    sup: &Arc<Supervisor>,
    tail: StatusTail,
) -> tokio::task::JoinHandle<()> {
    let sup = sup.clone();
    rt.spawn_blocking(move || {
        tail.ingest.wait_ready();
        let who = Component("the status tail (lifecycle.path)".into());
        sup.guard(&who, || {
            tail.follow();
            Ok(())
        });
    })
}

/// The lifecycle file's tail: where it is read from and where updates go.
struct StatusTail {
    path: PathBuf,
    offset: u64,
    ingest: Arc<Ingest>,
    stop: Arc<AtomicBool>,
    sink: std::sync::mpsc::Sender<Stamped>,
    stats: Arc<Stats>,
}

impl StatusTail {
    fn follow(mut self) {
        while !self.stop.load(Relaxed) {
            nap(&self.stop, Duration::from_millis(200));
            match crate::sources::status::read_from(&self.path, self.offset) {
                Ok((ups, dead, pos)) => {
                    self.offset = pos;
                    if !dead.is_empty() {
                        for d in &dead {
                            self.stats.dead_letter(&d.reason);
                        }
                        let _ = self.sink.send(Stamped::now(SinkBatch::DeadLetters(dead)));
                    }
                    if !ups.is_empty() {
                        tracing::info!(n = ups.len(), "action status updates");
                        self.ingest.context(ContextChange::Status(ups));
                    }
                }
                Err(e) => tracing::error!("status updates: {e}"),
            }
        }
    }
}

/// Starts a source on the runtime's blocking pool: the one place that
/// names every kind of source.
fn spawn_source(
    rt: &tokio::runtime::Runtime,
    s: &SourcePlan,
    ctx: SourceCtx,
    sup: &Arc<Supervisor>,
    who: Component,
) -> tokio::task::JoinHandle<()> {
    let sup = sup.clone();
    let handle = rt.handle().clone();
    let s = s.clone();
    rt.spawn_blocking(move || {
        // A durable node's sources go on once its input log is replayed.
        ctx.ingest.wait_ready();
        sup.guard(&who, || match &s {
            SourcePlan::Replay(r) => crate::sources::replay::run(r, ctx),
            SourcePlan::Mqtt(m) => crate::mqtt::run(m, ctx, handle),
            SourcePlan::OpcUa(o) => crate::opcua::run(o, ctx, handle),
            SourcePlan::Modbus(m) => crate::modbus::run(m, ctx, handle),
            SourcePlan::Bacnet(b) => crate::bacnet::run(b, ctx, handle),
        });
    })
}

/// Sets the flag when dropped (the run has returned, however).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// Reads the status updates already in the lifecycle file into `initial`;
/// returns where the file's tail starts.
fn initial_status(
    plan: &Plan,
    initial: &mut InitialContext,
    stats: &Stats,
    sink_tx: &std::sync::mpsc::Sender<Stamped>,
) -> Result<u64, String> {
    let mut offset = 0;
    if let Some(lc) = &plan.lifecycle {
        let (ups, dead, pos) = crate::sources::status::read_from(&lc.path, 0)?;
        initial.status = ups;
        offset = pos;
        if !dead.is_empty() {
            for d in &dead {
                stats.dead_letter(&d.reason);
            }
            let _ = sink_tx.send(Stamped::now(SinkBatch::DeadLetters(dead)));
        }
    }
    Ok(offset)
}

/// The context store: the context as loaded, diffed against file reloads
/// and MQTT edits. When nothing can edit the context (`editable` false), it
/// keeps no second copy of the production runs and maintenance windows.
fn context_store(
    plan: &Plan,
    initial: &InitialContext,
    editable: bool,
    ingest: &Arc<Ingest>,
    tags: &Arc<TagRegistry>,
    geo: &Geometry,
) -> Arc<ContextStore> {
    let held = if editable {
        initial.clone()
    } else {
        InitialContext {
            assets: initial.assets.clone(),
            tariff: initial.tariff.clone(),
            ..Default::default()
        }
    };
    Arc::new(ContextStore::new(
        held,
        ingest.clone(),
        tags.clone(),
        plan.context.asset_extra.clone(),
        plan.context.tariff.clone(),
        geo.retention_ms + geo.period_ms + 2 * geo.size_ms,
    ))
}
