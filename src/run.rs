//! Running a validated [`Plan`]: wires sources, the engine, context watchers
//! and the Parquet writer together, handles signals, and reports a summary.
//!
//! # Shutdown
//! A run ends when every source has ended (replay without `--follow`), or on
//! the first SIGINT/SIGTERM: sources stop reading, the engine closes every
//! open window, sinks flush, and every file is committed before exit 0. A
//! second signal exits at once with code 130 (in-progress files stay hidden).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Plan;
use crate::dataflow::{Dataflow, SourcePlan};
use crate::engine::{self, EngineArgs};
use crate::ingest::bridge::ContextChange;
use crate::ingest::normalize::SourceCtx;
use crate::ingest::{Geometry, Ingest, InitialContext, TagRegistry};
use crate::model::tariff::load as load_tariff;
use crate::model::AssetRow;
use crate::sinks::parquet::{run_writer, ParquetWriter, WriterReport};
use crate::sources::context::{load_assets, load_intervals, ContextStore, Snapshot};
use crate::stats::Stats;

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
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub dropped_quality: u64,
    pub late_rows: u64,
    pub windows: u64,
    pub corrections: u64,
    /// Closed windows written to the spill store, and read back from it.
    pub windows_spilled: u64,
    pub windows_restored: u64,
    /// Rule accumulators written to the spill store, and read back from it.
    pub groups_spilled: u64,
    pub groups_restored: u64,
    /// Actions written to the ledger, and read back from it.
    pub actions_evicted: u64,
    pub actions_restored: u64,
    /// Findings suppressed: asset in maintenance / action in cool-down.
    pub suppressed_maintenance: u64,
    pub suppressed_cooldown: u64,
    pub dead_letters: BTreeMap<String, u64>,
    /// Source events (gaps, timestamp origins, ...), counted.
    pub events: BTreeMap<String, u64>,
    pub report: WriterReport,
    pub out_dir: PathBuf,
    pub elapsed: Duration,
    pub workers: usize,
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
        std::thread::sleep(Duration::from_millis(250));
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

/// Runs a plan to completion (or until stopped).
pub fn run(dataflow: Dataflow, opts: RunOptions) -> Result<RunSummary, String> {
    let started = Instant::now();
    let Dataflow {
        plan,
        sources,
        sink,
        publish,
    } = dataflow;
    let plan = Arc::new(plan);
    let workers = opts.workers.max(1);
    let stats = opts.stats.clone().unwrap_or_default();
    let stop = opts.stop.clone().unwrap_or_default();
    let mut initial = load_initial(&plan)?;
    let tags = Arc::new(TagRegistry::default());
    for a in &initial.assets {
        tags.intern_shared(&a.tag);
    }
    tags.shrink();
    let geo = geometry(&plan);
    let (ingest, receivers) = Ingest::new(workers, sources.len(), plan.window.size_ms as u64, 64);
    let (sink_tx, sink_rx) = std::sync::mpsc::channel::<crate::model::SinkBatch>();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("plantflow-io")
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;

    let writer = ParquetWriter::new(
        sink.clone(),
        &plan.name,
        &plan.currency,
        plan.metrics.clone(),
        stats.clone(),
    );
    let writer = if opts.tally_actions_only {
        writer.tally_actions_only()
    } else {
        writer
    };
    // With `mqtt_publish` sinks, batches are shared (`Arc`) between the
    // Parquet writer and an encoder thread that turns them into messages.
    let mut publishers = Vec::new();
    let writer_task = if publish.is_empty() {
        rt.spawn_blocking(move || run_writer(sink_rx, writer))
    } else {
        let (pq_tx, pq_rx) = std::sync::mpsc::channel::<Arc<crate::model::SinkBatch>>();
        let mut outs = Vec::new();
        for p in &publish {
            let (urgent_tx, urgent) = tokio::sync::mpsc::channel(1024);
            let (bulk_tx, bulk) = tokio::sync::mpsc::channel(4096);
            let queues = crate::mqtt::publish::Queues { urgent, bulk };
            let pstats = Arc::new(crate::mqtt::publish::PublishStats::default());
            publishers.push(rt.spawn(crate::mqtt::publish::run(p.clone(), queues, pstats)));
            outs.push((p.clone(), urgent_tx, bulk_tx));
        }
        // The lake first: the tee hands each batch to the Parquet writer and then
        // to an encoder, so JSON encoding and a full MQTT queue never delay
        // files. Actions, outcomes and bills have their own encoder, so they
        // never wait behind a window's worth of aggregates being encoded.
        let (enc_tx, enc_rx) = std::sync::mpsc::sync_channel::<Arc<crate::model::SinkBatch>>(256);
        let (urgent_enc_tx, urgent_enc_rx) =
            std::sync::mpsc::sync_channel::<Arc<crate::model::SinkBatch>>(256);
        std::thread::Builder::new()
            .name("plantflow-publish-tee".into())
            .spawn(move || {
                for batch in sink_rx {
                    let batch = Arc::new(batch);
                    if pq_tx.send(batch.clone()).is_err() {
                        break;
                    }
                    // Progress markers are for the Parquet writer's rolls only
                    // (hundreds a second in a live run): no encoder needs them.
                    if matches!(*batch, crate::model::SinkBatch::Progress { .. }) {
                        continue;
                    }
                    if crate::mqtt::publish::is_urgent(&batch) {
                        let _ = urgent_enc_tx.send(batch);
                    } else {
                        let _ = enc_tx.send(batch);
                    }
                }
            })
            .map_err(|e| format!("cannot start the publish forwarder: {e}"))?;
        type Out = (
            crate::mqtt::publish::PublishPlan,
            tokio::sync::mpsc::Sender<crate::mqtt::publish::Outgoing>,
        );
        let urgent_outs: Vec<Out> = outs
            .iter()
            .map(|(p, u, _)| (p.clone(), u.clone()))
            .collect();
        let bulk_outs: Vec<Out> = outs.into_iter().map(|(p, _, b)| (p, b)).collect();
        for (label, rx, outs) in [
            ("urgent", urgent_enc_rx, urgent_outs),
            ("bulk", enc_rx, bulk_outs),
        ] {
            let name = plan.name.clone();
            std::thread::Builder::new()
                .name(format!("plantflow-publish-encode-{label}"))
                .spawn(move || {
                    for batch in rx {
                        for (p, tx) in &outs {
                            let mut n = 0usize;
                            crate::mqtt::publish::each_message(p, &name, &batch, |m| {
                                n += 1;
                                let _ = tx.blocking_send(m);
                            });
                            tracing::trace!(target: "plantflow::latency", queue = label, n, "publish queued");
                        }
                    }
                })
                .map_err(|e| format!("cannot start the publish encoder: {e}"))?;
        }
        rt.spawn_blocking(move || run_writer(pq_rx, writer))
    };
    // Status updates already in the lifecycle file.
    let mut status_offset = 0;
    if let Some(lc) = &plan.lifecycle {
        let (ups, dead, pos) = crate::sources::status::read_from(&lc.path, 0)?;
        initial.status = ups;
        status_offset = pos;
        if !dead.is_empty() {
            for d in &dead {
                stats.dead_letter(&d.reason);
            }
            let _ = sink_tx.send(crate::model::SinkBatch::DeadLetters(dead));
        }
    }

    // Signals: the first stops sources, the second exits at once.
    {
        let stop = stop.clone();
        rt.spawn(async move {
            let mut signals = 0;
            loop {
                #[cfg(unix)]
                {
                    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                #[cfg(not(unix))]
                {
                    if tokio::signal::ctrl_c().await.is_err() {
                        return;
                    }
                }
                signals += 1;
                if signals == 1 {
                    eprintln!("plantflow: stopping (closing windows and committing files; signal again to abort)");
                    stop.store(true, Relaxed);
                } else {
                    eprintln!("plantflow: aborted");
                    std::process::exit(130);
                }
            }
        });
    }

    // The store diffs file reloads (follow mode) and MQTT context edits
    // against what it holds; with neither, its runs and maintenance windows
    // would be a second copy of the file kept for nothing.
    let editable = opts.follow || sources.iter().any(|s| matches!(s, SourcePlan::Mqtt(_)));
    let held = if editable {
        initial.clone()
    } else {
        InitialContext {
            assets: initial.assets.clone(),
            tariff: initial.tariff.clone(),
            ..Default::default()
        }
    };
    let store = Arc::new(ContextStore::new(
        held,
        ingest.clone(),
        tags.clone(),
        plan.context.asset_extra.clone(),
        plan.context.tariff.clone(),
        geo.retention_ms + geo.period_ms + 2 * geo.size_ms,
    ));
    let mut source_tasks = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let ctx = SourceCtx {
            index: i,
            id: s.id().to_string(),
            ingest: ingest.clone(),
            tags: tags.clone(),
            sink: sink_tx.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            window: plan.window.clone(),
            geometry: geo,
            follow: opts.follow,
            context: Some(store.clone()),
        };
        match s {
            SourcePlan::Replay(r) => {
                let r = r.clone();
                source_tasks.push(rt.spawn_blocking(move || crate::sources::replay::run(&r, ctx)));
            }
            SourcePlan::Mqtt(m) => {
                let m = m.clone();
                let handle = rt.handle().clone();
                source_tasks.push(rt.spawn_blocking(move || crate::mqtt::run(&m, ctx, handle)));
            }
            SourcePlan::OpcUa(o) => {
                let o = o.clone();
                let handle = rt.handle().clone();
                source_tasks.push(rt.spawn_blocking(move || crate::opcua::run(&o, ctx, handle)));
            }
        }
    }
    let watcher = if opts.follow {
        let (p, st, s) = (plan.clone(), store.clone(), stop.clone());
        Some(rt.spawn_blocking(move || watch_context(p, st, s)))
    } else {
        None
    };
    let status_tail = match (&plan.lifecycle, opts.follow) {
        (Some(lc), true) => {
            let (path, ing, s, tx, st) = (
                lc.path.clone(),
                ingest.clone(),
                stop.clone(),
                sink_tx.clone(),
                stats.clone(),
            );
            Some(rt.spawn_blocking(move || {
                let mut offset = status_offset;
                while !s.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    match crate::sources::status::read_from(&path, offset) {
                        Ok((ups, dead, pos)) => {
                            offset = pos;
                            if !dead.is_empty() {
                                for d in &dead {
                                    st.dead_letter(&d.reason);
                                }
                                let _ = tx.send(crate::model::SinkBatch::DeadLetters(dead));
                            }
                            if !ups.is_empty() {
                                tracing::info!(n = ups.len(), "action status updates");
                                ing.context(ContextChange::Status(ups));
                            }
                        }
                        Err(e) => tracing::error!("status updates: {e}"),
                    }
                }
            }))
        }
        _ => None,
    };

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
        },
    );
    stop.store(true, Relaxed);
    ingest.finish();
    drop(sink_tx);
    let mut source_errors = Vec::new();
    for t in source_tasks {
        match rt.block_on(t) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => source_errors.push(e),
            Err(e) => source_errors.push(format!("a source task failed: {e}")),
        }
    }
    if let Some(w) = watcher {
        let _ = rt.block_on(w);
    }
    if let Some(w) = status_tail {
        let _ = rt.block_on(w);
    }
    let report = rt
        .block_on(writer_task)
        .map_err(|e| format!("the writer task failed: {e}"))??;
    for p in publishers {
        let _ = rt.block_on(p);
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    engine_result?;
    if let Some(e) = source_errors.into_iter().next() {
        return Err(e);
    }
    Ok(RunSummary {
        rows_read: Stats::get(&stats.rows_read),
        rows_accepted: Stats::get(&stats.rows_accepted),
        dropped_quality: Stats::get(&stats.dropped_quality),
        late_rows: Stats::get(&stats.late_rows),
        windows: Stats::get(&stats.windows),
        corrections: Stats::get(&stats.corrections),
        windows_spilled: Stats::get(&stats.windows_spilled),
        windows_restored: Stats::get(&stats.windows_restored),
        groups_spilled: Stats::get(&stats.groups_spilled),
        groups_restored: Stats::get(&stats.groups_restored),
        actions_evicted: Stats::get(&stats.actions_evicted),
        actions_restored: Stats::get(&stats.actions_restored),
        suppressed_maintenance: Stats::get(&stats.suppressed_maintenance),
        suppressed_cooldown: Stats::get(&stats.suppressed_cooldown),
        dead_letters: stats.dead_letters(),
        events: stats.events(),
        report,
        out_dir: sink.path.clone(),
        elapsed: started.elapsed(),
        workers,
    })
}

/// Peak resident memory of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl RunSummary {
    /// The human summary printed after a run.
    pub fn render(&self, currency: &str) -> String {
        let mut s = String::new();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        s.push_str(&format!(
            "rows in        {:>12}  ({:.0} rows/s, {} worker{}, {:.2} s)\n",
            self.rows_read,
            self.rows_read as f64 / secs,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            secs
        ));
        s.push_str(&format!("  accepted     {:>12}\n", self.rows_accepted));
        s.push_str(&format!(
            "  bad quality  {:>12}  (dropped by the quality policy)\n",
            self.dropped_quality
        ));
        s.push_str(&format!(
            "  late         {:>12}  (after their window closed: corrections)\n",
            self.late_rows
        ));
        let dead: u64 = self.dead_letters.values().sum();
        s.push_str(&format!("  dead letters {:>12}\n", dead));
        for (reason, n) in &self.dead_letters {
            s.push_str(&format!("    {reason}: {n}\n"));
        }
        if !self.events.is_empty() {
            s.push_str("source events\n");
            for (what, n) in &self.events {
                s.push_str(&format!("    {what}: {n}\n"));
            }
        }
        s.push_str(&format!(
            "windows        {:>12}  (+{} corrected revisions)\n",
            self.windows, self.corrections
        ));
        if self.windows_spilled > 0 {
            s.push_str(&format!(
                "  spilled      {:>12}  (closed windows kept on disk, {} read back)\n",
                self.windows_spilled, self.windows_restored
            ));
        }
        if self.groups_spilled > 0 {
            s.push_str(&format!(
                "  spilled      {:>12}  (rule accumulators of closed periods kept on disk, {} read back)\n",
                self.groups_spilled, self.groups_restored
            ));
        }
        let tally = &self.report.tally;
        s.push_str(&format!(
            "actions        {:>12}  (value at stake {:.2} {currency})\n",
            tally.counted(),
            tally.value()
        ));
        if self.actions_evicted > 0 {
            s.push_str(&format!(
                "  on disk      {:>12}  (actions of closed periods kept on disk, {} read back)\n",
                self.actions_evicted, self.actions_restored
            ));
        }
        for (owner, action, n, v) in tally.by_owner() {
            s.push_str(&format!(
                "  {owner:<12} {action:<20} {n:>5} actions  {v:>10.2} {currency}\n"
            ));
        }
        for a in tally.top().iter().take(5) {
            s.push_str(&format!(
                "    {} {} {} {:.2} {currency} ({})\n",
                chrono::DateTime::from_timestamp_millis(a.period_start)
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                a.asset,
                a.rule,
                a.value.0,
                a.severity
            ));
        }
        if self.suppressed_maintenance + self.suppressed_cooldown > 0 {
            s.push_str(&format!(
                "  suppressed findings: {} in maintenance, {} in cool-down\n",
                self.suppressed_maintenance, self.suppressed_cooldown
            ));
        }
        if !self.report.outcomes.is_empty() {
            let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
            let (mut kwh, mut cost) = (0.0, 0.0);
            for (o, _) in self.report.outcomes.values() {
                *verdicts.entry(o.verdict.as_str()).or_default() += 1;
                if o.verdict == "verified" {
                    kwh += o.avoided_kwh.unwrap_or(0.0);
                    cost += o.avoided_cost.unwrap_or(0.0);
                }
            }
            let v: Vec<String> = verdicts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            s.push_str(&format!(
                "outcomes       {:>12}  ({}; verified savings {kwh:.1} kWh, {cost:.2} {currency})\n",
                self.report.outcomes.len(),
                v.join(", ")
            ));
        }
        if !self.report.bills.is_empty() {
            let total: f64 = self.report.bills.values().map(|(b, _)| b.total_cost).sum();
            let demand: f64 = self.report.bills.values().map(|(b, _)| b.demand_cost).sum();
            s.push_str(&format!(
                "bills          {:>12}  (total {total:.2} {currency}, of which demand {demand:.2})\n",
                self.report.bills.len()
            ));
        }
        if let Some(rss) = peak_rss_bytes() {
            s.push_str(&format!(
                "peak memory    {:>9.1} MiB\n",
                rss as f64 / (1 << 20) as f64
            ));
        }
        s.push_str(&format!(
            "output         {} ({} files)\n",
            self.out_dir.display(),
            self.report.files
        ));
        s
    }
}
