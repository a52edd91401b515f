//! The only module that names timely and differential-dataflow.
//!
//! # Dataflow
//! ```text
//! samples (partitioned by tag in the bridge) ──► window (timely op) ─► enriched windows (+ derived metrics) ─► aggregates sink
//! context: assets, tariff, production, maintenance ─(own copy)──┘      ├► rules: fold per (rule, group, period) ─► findings ───┐
//!                                                                      └► energy per window (billing, verification) ────────┤
//!   production runs, status updates ─────────────────────────────────────────────────────────────────────────────────┤
//!                                      value layer on worker 0: actions, outcomes, bills ◄────────────────────────────┘
//! ```
//! The window operator pre-aggregates samples and enriches each window from
//! its worker's copy of the context tables ([`context::Context`]) as it emits
//! it; a context change retracts and re-emits the retained windows it alters.
//! The output is a differential collection, so everything downstream (sinks
//! with revisions, the rules fold) sees corrections as updates.
//! Context tables are differential inputs every worker feeds with its own
//! copy (their ids are process-local); status updates and the value layer's
//! production runs come from worker 0 alone. In a cluster (`cluster.rs`)
//! samples cross to their tag's worker as partial windows
//! (`window::combine`) and every output row goes to worker 0, the lake's
//! one writer. Sinks hand finished rows to the Parquet writer over a
//! channel: no worker does file I/O.
//!
//! # Workers
//! Each worker drains its own bounded channel from the [`bridge::Ingest`],
//! pauses intake while the output probe lags more than two epochs behind the
//! input (timely has no backpressure of its own), and parks when idle.

pub mod checkpoint;
pub mod cluster;
mod outlets;
pub use checkpoint::{spill_dir, CheckpointTo, EngineRestore, WorkerParts};
use outlets::{to_sinks, Initial, Outlets};
pub mod context;
pub mod ledger;
pub mod output;
pub mod rules;
pub mod spill;
pub mod value;
pub mod window;

use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::{Exchange as _, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Stream};

use crate::config::Plan;
use crate::ingest::bridge::{ContextChange, WorkerMsg};
use crate::ingest::{Geometry, Ingest, InitialContext, TagRegistry};
use crate::model::Interval;
use crate::model::{Enriched, Sample, SharedName, StatusUpdate, TagId, F64};
use crate::model::{SideRows, SinkBatch, Stamped};
use crate::value::layer::{self as value_layer, Aging, ValueIn, ValueLayer};
use crate::value::rules::Compiled;
use context::{AssetCtx, Context, CtxUpdate};
use output::Versioned;

impl Versioned for Enriched {
    type Key = (TagId, i64);
    fn key(&self) -> Self::Key {
        (self.tag, self.win.window_start)
    }
    fn key_hash(&self) -> u64 {
        (self.tag as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.win.window_start as u64
    }
    fn end(&self) -> i64 {
        self.win.window_end
    }
    fn withdrawn(&self) -> Option<Self> {
        None
    }
}

/// Rows for the lake a cluster's other processes send to worker 0, with
/// their stamps.
type Side = (Option<u64>, SideRows);

struct Inputs {
    samples: InputHandle<u64, CapacityContainerBuilder<Vec<Sample>>>,
    side: InputHandle<u64, CapacityContainerBuilder<Vec<Side>>>,
    /// This worker's index among all (a cluster's) workers.
    index: usize,
    assets: InputSession<u64, (TagId, AssetCtx), isize>,
    tariff: InputSession<u64, (u32, F64), isize>,
    production: InputSession<u64, Interval, isize>,
    maintenance: InputSession<u64, Interval, isize>,
    status: InputSession<u64, StatusUpdate, isize>,
}

impl Inputs {
    fn advance(&mut self, t: u64) {
        if t > *self.samples.time() {
            self.samples.advance_to(t);
            self.side.advance_to(t);
            self.assets.advance_to(t);
            self.tariff.advance_to(t);
            self.production.advance_to(t);
            self.maintenance.advance_to(t);
            self.status.advance_to(t);
            self.flush_context();
        }
    }

    fn flush_context(&mut self) {
        self.assets.flush();
        self.tariff.flush();
        self.production.flush();
        self.maintenance.flush();
        self.status.flush();
    }

    /// Starts from a checkpoint at `at` (the operators hold everything
    /// before it, context included), or feeds the initial context.
    fn start(
        &mut self,
        at: Option<u64>,
        initial: &InitialContext,
        (tags, names): (&TagRegistry, &Names),
    ) {
        match at {
            Some(at) => self.advance(at),
            None => self.insert_initial(initial.clone(), tags, names),
        }
    }

    /// The context every worker starts with (each feeds its own), at time 0.
    fn insert_initial(&mut self, init: InitialContext, tags: &TagRegistry, names: &Names) {
        fn inserts<T>(rows: Vec<T>) -> Vec<(T, isize)> {
            rows.into_iter().map(|r| (r, 1)).collect()
        }
        for change in [
            ContextChange::Assets(inserts(init.assets)),
            ContextChange::Tariff(inserts(init.tariff)),
            ContextChange::Production(inserts(init.production)),
            ContextChange::Maintenance(inserts(init.maintenance)),
            ContextChange::Status(init.status),
        ] {
            self.apply(change, tags, names);
        }
    }

    /// Takes up to 256 messages from the worker's channel into the inputs;
    /// returns whether it took any, and whether the input has ended.
    fn intake(
        &mut self,
        rx: &Receiver<WorkerMsg>,
        tags: &TagRegistry,
        names: &Names,
        barrier: &checkpoint::Barrier,
    ) -> (bool, bool) {
        let mut progressed = false;
        for _ in 0..256 {
            match rx.try_recv() {
                Ok(WorkerMsg::Samples { time, mut rows }) => {
                    self.advance(time);
                    self.samples.send_batch(&mut rows);
                }
                Ok(WorkerMsg::Advance(t)) => self.advance(t),
                // The `Advance` to `at` comes next; then no more input
                // until every operator has put its part.
                Ok(WorkerMsg::Checkpoint(at)) => barrier.ask(at),
                Ok(WorkerMsg::Context { time, change }) => {
                    self.advance(time);
                    self.apply(change, tags, names);
                    self.flush_context();
                }
                Ok(WorkerMsg::Side(batch)) => {
                    if let Some(side) = SideRows::of(batch) {
                        self.side.send(side);
                    }
                }
                Ok(WorkerMsg::End) | Err(TryRecvError::Disconnected) => return (progressed, true),
                Err(TryRecvError::Empty) => break,
            }
            progressed = true;
            if self.at_checkpoint(barrier) {
                break;
            }
        }
        (progressed, false)
    }

    /// The inputs have reached the time of the checkpoint in progress.
    fn at_checkpoint(&self, barrier: &checkpoint::Barrier) -> bool {
        barrier.at().is_some_and(|at| *self.samples.time() >= at)
    }

    fn apply(&mut self, change: ContextChange, tags: &TagRegistry, names: &Names) {
        match change {
            ContextChange::Assets(rows) => {
                for (a, r) in rows {
                    let id = tags.intern_shared(&a.tag);
                    let ctx = AssetCtx {
                        asset: names.intern_shared(&a.asset),
                        line: names.intern_shared(&a.line),
                        row: a,
                    };
                    self.assets.update((id, ctx), r);
                }
                names.0.shrink();
            }
            ContextChange::Tariff(rows) => {
                rows.into_iter().for_each(|(x, r)| self.tariff.update(x, r))
            }
            ContextChange::Production(rows) => rows
                .into_iter()
                .for_each(|(x, r)| self.production.update(x, r)),
            ContextChange::Maintenance(rows) => rows
                .into_iter()
                .for_each(|(x, r)| self.maintenance.update(x, r)),
            // Status updates are the value layer's (on worker 0) alone.
            ContextChange::Status(rows) if self.index == 0 => {
                rows.into_iter().for_each(|u| self.status.update(u, 1))
            }
            ContextChange::Status(_) => {}
        }
    }
}

/// Interns asset and line names (and interval keys) to ids for the context lookups.
#[derive(Default)]
pub struct Names(TagRegistry);

impl Names {
    fn intern(&self, name: &str) -> u32 {
        self.0.intern(name)
    }

    fn intern_shared(&self, name: &SharedName) -> u32 {
        self.0.intern_shared(name)
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.0.get(name)
    }
}

/// The spill plan of the window operator and the rules fold, and the value
/// layer's ledger beside it (`[window] spill_after`); part of checkpoints
/// on a node that takes them (`state`), seeded from the one at `restore_at`.
fn cold_tier(
    plan: &Plan,
    stats: &Arc<crate::stats::Stats>,
    state: Option<&std::path::Path>,
    restore_at: Option<u64>,
) -> (Option<spill::SpillPlan>, Option<value::LedgerPlan>) {
    let spill = spill::plan_for(&plan.window, &plan.name, stats.clone(), (state, restore_at));
    let ledger = spill.as_ref().map(|p| value::LedgerPlan {
        files: ledger::LedgerFiles {
            dir: p.dir.join("ledger"),
            checkpoints: p.checkpoints.clone(),
            seed: p.seed.as_ref().map(|s| s.join("ledger")),
        },
        stats: p.stats.clone(),
    });
    (spill, ledger)
}

/// Everything a run needs besides the plan.
pub struct EngineArgs {
    pub workers: usize,
    pub receivers: Vec<Receiver<WorkerMsg>>,
    pub ingest: Arc<Ingest>,
    pub tags: Arc<TagRegistry>,
    pub initial: InitialContext,
    pub sink: Sender<Stamped>,
    pub geometry: Geometry,
    pub stats: Arc<crate::stats::Stats>,
    /// Above this many bytes of output waiting for the writer, workers stop
    /// taking input (they go on stepping, so the output drains).
    pub max_sink_queue: u64,
    /// Where each worker's checkpoint parts go (a durable node).
    pub checkpoints: Option<CheckpointTo>,
    /// The checkpoint the workers start from, if any.
    pub restore: Option<EngineRestore>,
    /// This process's place in a cluster (`None`: the dataflow runs here
    /// alone), and the dataflow file's fingerprint its peers must share.
    pub cluster: Option<cluster::Joined>,
}

/// Runs the dataflow on `workers` threads until the ingest says `End` and
/// every output is flushed.
pub fn run(plan: Arc<Plan>, args: EngineArgs) -> Result<(), String> {
    let EngineArgs {
        workers,
        receivers,
        ingest,
        tags,
        initial,
        sink,
        geometry: geo,
        stats,
        max_sink_queue,
        checkpoints,
        restore,
        cluster,
    } = args;
    let (first, in_cluster, writes) = cluster::place(cluster.as_ref().map(|c| &c.cluster), workers);
    let (checkpoints, state) = checkpoints.map_or((None, None), |c| (Some(c.parts), Some(c.dir)));
    let names = Arc::new(Names::default());
    let shared = Arc::new(checkpoint::Shared::new(
        restore,
        checkpoints,
        workers,
        &names,
    )?);
    let receivers = Arc::new(Mutex::new(
        receivers.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let sink = Arc::new(Mutex::new(sink));
    let initial = Arc::new(Initial::new(initial, workers));
    // timely reports a worker's panic without its message: keep it here.
    let panics: Arc<Panics> = Arc::default();
    let caught = panics.clone();
    let body = move |worker: &mut timely::worker::Worker| {
        catching(&caught, worker, |worker| {
            let index = worker.index();
            let peers = worker.peers();
            let local = index - first;
            let Some(rx) = receivers.lock().ok().and_then(|mut r| r[local].take()) else {
                return;
            };
            ingest.register_worker(local, std::thread::current());
            let (ck, parts_tx) = shared.for_worker(local);
            let compiled = Rc::new(Compiled::new(&plan));
            // A stopped run's outputs go nowhere (see `Ingest::abandoned`).
            let tx_agg = sink
                .lock()
                .map(|s| Outlet(s.clone(), ingest.abandoned()))
                .ok()
                .filter(|_| writes);
            let (tx_val, tx_side) = (tx_agg.clone(), tx_agg.clone());
            let stats = stats.clone();
            let (queued, pressure, side_stats) = (stats.clone(), stats.clone(), stats.clone());
            let mut samples = InputHandle::<u64, CapacityContainerBuilder<Vec<Sample>>>::new();
            let mut side = InputHandle::<u64, CapacityContainerBuilder<Vec<Side>>>::new();
            let probe = ProbeHandle::new();
            let window_name = format!("window:{}", plan.name);
            let at = (local, workers, in_cluster);

            let (assets, tariff, production, maintenance, status) =
                worker.dataflow::<u64, _, _>(|scope| {
                    cluster::side_to_writer(side.to_stream(scope), tx_side, side_stats, at);
                    let (assets_in, assets) = scope.new_collection::<(TagId, AssetCtx), isize>();
                    let (tariff_in, tariff) = scope.new_collection::<(u32, F64), isize>();
                    let (prod_in, prod) = scope.new_collection::<Interval, isize>();
                    let (maint_in, maint) = scope.new_collection::<Interval, isize>();
                    let (status_in, status) = scope.new_collection::<StatusUpdate, isize>();

                    let context = context_updates(assets, tariff, prod.clone(), maint);
                    let ctx = Context::new(names.clone(), plan.calendar.clone(), geo.size_ms)
                        .owning(index, peers);
                    let c1 = compiled.clone();
                    let (spill, ledger) = cold_tier(&plan, &stats, state.as_deref(), shared.at);
                    // Rows reach their tag's worker: the bridge partitions
                    // a process's rows among its workers; in a cluster each
                    // worker's rows cross to the tag's worker as partial
                    // windows (`window::combine`).
                    let stream = samples.to_stream(scope);
                    let windows = if in_cluster {
                        let pieces = window::combine(stream, geo, &ck)
                            .exchange(|p: &window::Piece| p.tag() as u64);
                        window::window(pieces, context, geo, &window_name, ctx, spill.clone(), &ck)
                    } else {
                        window::window(stream, context, geo, &window_name, ctx, spill.clone(), &ck)
                    };
                    let enriched = windows.as_collection().map(move |mut e| {
                        c1.derive(&mut e);
                        e
                    });

                    let c2 = compiled.clone();
                    let contributions = enriched.clone().flat_map(move |e| c2.contributions(&e));
                    let findings =
                        rules::findings(contributions.inner, compiled.clone(), spill.clone(), &ck)
                            .as_collection()
                            .map(ValueIn::Finding);
                    // Production runs reach the value layer once (every
                    // worker feeds its own copy of the context).
                    let prod = prod.filter(move |_| index == 0);
                    let value_in = value_inputs(findings, &enriched, status, prod, &compiled);

                    let enriched = enriched.inner.probe_with(&probe);
                    let value_in = value_in.inner.probe_with(&probe);
                    let outlets = Outlets {
                        agg: tx_agg,
                        val: tx_val,
                        queued,
                        stats,
                    };
                    let layer = ValueLayer::new(plan.clone(), aging(geo));
                    to_sinks(enriched, (value_in, layer, ledger), outlets, at, geo, &ck);
                    (assets_in, tariff_in, prod_in, maint_in, status_in)
                });

            let mut inputs = Inputs {
                samples,
                side,
                index,
                assets,
                tariff,
                production,
                maintenance,
                status,
            };
            initial.feed(&mut inputs, shared.at, (&tags, &names));
            let pace = Pace {
                max_lag: 2 * geo.size_ms as u64,
                max_sink_queue,
                stats: &pressure,
            };
            let feed = (&rx, &*tags, &*names);
            drive(
                worker,
                inputs,
                (&pace, &probe, feed),
                (&ck, parts_tx.as_ref(), local),
                &caught,
            );
        })
    };
    let guards = cluster::execute(cluster, workers, body)?;
    if guards.join().iter().any(|r| r.is_err()) {
        let first = panics.first();
        return Err(format!(
            "internal error in a worker: {}",
            first.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Runs a worker until its input ends (and its dataflow completes), or
/// another worker panicked: takes input at `pace`, hands checkpoint parts
/// over when a checkpoint asks for them.
fn drive(
    worker: &mut timely::worker::Worker,
    mut inputs: Inputs,
    (pace, probe, feed): (&Pace<'_>, &ProbeHandle<u64>, Feed<'_>),
    (ck, parts_tx, local): (
        &checkpoint::Checkpoints,
        Option<&std::sync::mpsc::Sender<WorkerParts>>,
        usize,
    ),
    caught: &Panics,
) {
    let index = inputs.index;
    while !pace.step(worker, &mut inputs, probe, feed, &ck.barrier) {
        if let Some(taken) = ck.barrier.take() {
            // (a checkpoint holds this process's workers, by local index)
            checkpoint::send(parts_tx, local, &feed.2 .0, taken);
        }
        crate::model::test_panic("worker", index as u64);
        if caught.any() {
            return;
        }
    }
    drop(inputs);
    while !caught.any() && worker.step_or_park(Some(Duration::from_millis(1))) {}
}

/// A worker's input channel, and the interners its input needs.
type Feed<'a> = (&'a Receiver<WorkerMsg>, &'a TagRegistry, &'a Names);

/// When a worker takes input: only while its output keeps up, less than
/// two epochs behind the input (timely has no backpressure of its own) and
/// less than `max_sink_queue` bytes waiting for the writer.
struct Pace<'a> {
    max_lag: u64,
    max_sink_queue: u64,
    stats: &'a crate::stats::Stats,
}

impl Pace<'_> {
    /// Takes what input it may, steps the worker (parking when idle);
    /// returns whether the input has ended.
    fn step(
        &self,
        worker: &mut timely::worker::Worker,
        inputs: &mut Inputs,
        probe: &ProbeHandle<u64>,
        (rx, tags, names): (&Receiver<WorkerMsg>, &TagRegistry, &Names),
        barrier: &checkpoint::Barrier,
    ) -> bool {
        let now = *inputs.samples.time();
        let waiting = self
            .stats
            .sink_queued_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let behind = probe.less_than(&now.saturating_sub(self.max_lag));
        let (progressed, finished) =
            if waiting > self.max_sink_queue || behind || inputs.at_checkpoint(barrier) {
                (false, false)
            } else {
                inputs.intake(rx, tags, names, barrier)
            };
        if finished {
            return true;
        }
        let park = if progressed {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        };
        worker.step_or_park(Some(park));
        false
    }
}

/// One worker on this thread, or `workers` threads of this process.
fn timely_config(workers: usize) -> timely::Config {
    if workers <= 1 {
        timely::Config::thread()
    } else {
        timely::Config::process(workers)
    }
}

/// The panics of this run's workers, with their messages (timely reports a
/// worker's panic without its message).
#[derive(Default)]
struct Panics {
    messages: Mutex<Vec<String>>,
    any: std::sync::atomic::AtomicBool,
}

impl Panics {
    fn any(&self) -> bool {
        self.any.load(std::sync::atomic::Ordering::Acquire)
    }

    fn first(&self) -> Option<String> {
        self.messages.lock().ok().and_then(|p| p.first().cloned())
    }
}

/// Runs a worker's body; a panic's message is kept in `caught` before the
/// panic goes on to timely (which reports it without its message). The
/// other workers see `caught.any()` and leave: a dataflow that lost a worker
/// never completes, so their dataflows are dropped rather than stepped to
/// the end (timely would step them forever after the body returns).
fn catching(
    caught: &Panics,
    worker: &mut timely::worker::Worker,
    body: impl FnOnce(&mut timely::worker::Worker),
) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut *worker)));
    if let Err(payload) = result {
        if let Ok(mut p) = caught.messages.lock() {
            p.push(crate::model::panic_message(payload.as_ref()));
        }
        caught.any.store(true, std::sync::atomic::Ordering::Release);
        std::panic::resume_unwind(payload);
    }
    if caught.any() {
        for id in worker.installed_dataflows() {
            worker.drop_dataflow(id);
        }
    }
}

/// Context updates as one stream (each worker's own copy): the window
/// operator looks each window's context up as it emits it, and re-emits
/// the retained windows a context change alters.
fn context_updates<'s>(
    assets: VecCollection<'s, u64, (TagId, AssetCtx), isize>,
    tariff: VecCollection<'s, u64, (u32, F64), isize>,
    production: VecCollection<'s, u64, Interval, isize>,
    maintenance: VecCollection<'s, u64, Interval, isize>,
) -> Stream<'s, u64, Vec<(CtxUpdate, u64, isize)>> {
    let (tariff, production, maintenance) = (tariff.inner, production.inner, maintenance.inner);
    assets
        .inner
        .map(|((tag, a), t, r)| (CtxUpdate::Asset(tag, a), t, r))
        .concat(tariff.map(|((k, p), t, r)| (CtxUpdate::Tariff(k, p), t, r)))
        .concat(production.map(|(iv, t, r)| (CtxUpdate::Production(iv), t, r)))
        .concat(maintenance.map(|(iv, t, r)| (CtxUpdate::Maintenance(iv), t, r)))
}

/// What the value layer takes: findings, status updates, each window's
/// energy when billing or a verification needs it, and production runs only
/// for a `units` verification baseline (the windows' `producing` flag comes
/// from the context tables: otherwise it would keep every run).
fn value_inputs<'s>(
    findings: VecCollection<'s, u64, ValueIn, isize>,
    enriched: &VecCollection<'s, u64, Enriched, isize>,
    status: VecCollection<'s, u64, StatusUpdate, isize>,
    production: VecCollection<'s, u64, Interval, isize>,
    compiled: &Rc<Compiled>,
) -> VecCollection<'s, u64, ValueIn, isize> {
    let c = compiled.clone();
    let value_in = if compiled.has_energy() {
        findings.concat(enriched.clone().flat_map(move |e| c.energy(&e)))
    } else {
        findings
    }
    .concat(status.map(ValueIn::Status));
    if compiled.needs_production() {
        value_in.concat(production.map(ValueIn::Production))
    } else {
        value_in
    }
}

/// Hands the aggregates of a complete time to the sinks.
fn send_aggregates(
    tx: Option<Outlet>,
    stats: Arc<crate::stats::Stats>,
) -> impl FnMut(u64, Vec<(Enriched, i64)>) + 'static {
    move |time, rows| {
        if let Some(tx) = &tx {
            let batch = SinkBatch::Aggregates(rows);
            if tx.open() {
                stats.sink_queued(batch.engine_bytes());
                tx.send(Stamped::at(time, batch));
            }
        }
    }
}

/// The channel to the sinks, closed once the run's input was abandoned.
#[derive(Clone)]
struct Outlet(
    std::sync::mpsc::Sender<Stamped>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl Outlet {
    fn open(&self) -> bool {
        !self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send(&self, batch: Stamped) {
        if self.open() {
            let _ = self.0.send(batch);
        }
    }
}

/// The value layer's retention geometry.
fn aging(geo: Geometry) -> Aging {
    Aging {
        size_ms: geo.size_ms,
        period_ms: geo.period_ms,
        retention_ms: geo.retention_ms,
    }
}

/// Hands the value layer's output of a step to the sinks (and its counters
/// to the run's stats).
fn send_value_out(
    tx: Option<&Outlet>,
    stats: &crate::stats::Stats,
    time: u64,
    out: value_layer::ValueOut,
    counters: Option<crate::stats::ValueCounters>,
) {
    if let Some(c) = counters {
        stats.set_value_counters(c);
    }
    let Some(tx) = tx.filter(|t| t.open()) else {
        return;
    };
    let send = |batch: SinkBatch| {
        stats.sink_queued(batch.engine_bytes());
        tx.send(Stamped::at(time, batch));
    };
    if !out.actions.is_empty() {
        send(SinkBatch::Actions(out.actions));
    }
    if !out.totals.is_empty() {
        send(SinkBatch::ActionTotals(out.totals));
    }
    if !out.outcomes.is_empty() {
        send(SinkBatch::Outcomes(out.outcomes));
    }
    if !out.bills.is_empty() {
        send(SinkBatch::Billing(out.bills));
    }
    if !out.dead_letters.is_empty() {
        for _ in &out.dead_letters {
            stats.dead_letter("status update rejected");
        }
        tx.send(Stamped::at(time, SinkBatch::DeadLetters(out.dead_letters)));
    }
}

/// Progress markers let the Parquet writer commit an event-time roll once
/// every worker's outputs (`of` in all) have passed it.
fn progress_marker(tx: Option<Outlet>, source: usize, of: usize) -> impl FnMut(u64) + 'static {
    move |time| {
        if let Some(tx) = &tx {
            tx.send(Stamped::now(SinkBatch::Progress { source, of, time }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_hands_out_dense_ids_and_finds_every_name_again() {
        let r = TagRegistry::default();
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("site{}/m{i}/kw", i % 7))
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(
                r.intern(n),
                i as TagId,
                "ids are dense, in first-seen order"
            );
        }
        // Across every growth of the table: the same ids, and no stranger's.
        let view = r.view();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(view.get(n.as_str()), Some(i as TagId));
            assert_eq!(r.intern(n), i as TagId, "interning again keeps the id");
        }
        assert_eq!(view.get("site1/m1/kw/"), None);
        assert_eq!(view.get(""), None);
        // A source's view stays as it was; the registry's grows.
        let shared: SharedName = "late/tag".into();
        assert_eq!(r.intern_shared(&shared), 10_000);
        assert_eq!(view.get("late/tag"), None);
        assert_eq!(r.view().get("late/tag"), Some(10_000));
        assert!(
            SharedName::ptr_eq(r.view().key(10_000), &shared),
            "the shared copy is kept"
        );
    }
}
