//! The sinks' fan-out: the engine's batches go to the Parquet writer and,
//! with `mqtt_publish` sinks, to encoders that turn them into messages.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::Plan;
use crate::http::board::Board;
use crate::model::{SinkBatch, Stamped};
use crate::mqtt::publish::PublishPlan;
use crate::sinks::jsonl::{JsonlPlan, JsonlWriter};
use crate::sinks::parquet::{run_writer, ParquetPlan, ParquetWriter, WriterReport};
use crate::sinks::webhook::{self, WebhookPlan};

use super::supervise::{Component, Supervisor};
use crate::stats::Stats;

/// The summary's line for batches the MQTT publishers could not take.
pub const PUBLISH_DROPPED: &str = "mqtt_publish: batches dropped (queue full; broker slow or away)";

/// The tasks writing a run's output: the Parquet writer, and one task per
/// `mqtt_publish` sink.
pub(super) struct Writers {
    /// The writer's report, or `None` when it failed (the supervisor has it).
    pub writer: JoinHandle<Option<WriterReport>>,
    pub publishers: Vec<JoinHandle<()>>,
}

/// What the lake's writer needs of the run.
pub(super) struct Lake<'a> {
    pub sink: &'a ParquetPlan,
    pub plan: &'a Plan,
    /// Keep totals of actions only (see `RunOptions::tally_actions_only`).
    pub tally_actions_only: bool,
    /// The lake, opened (its lock is held until the writer ends).
    pub open: super::lake::OpenLake,
}

/// With `[http]`: the operator surface's board, and the sinks' channel
/// through a tap that hands it their actions and outcomes.
pub(super) fn board(
    plan: &Plan,
    lake: &std::path::Path,
    rx: std::sync::mpsc::Receiver<Stamped>,
) -> Result<(Option<Arc<Board>>, std::sync::mpsc::Receiver<Stamped>), String> {
    if plan.http.is_none() {
        return Ok((None, rx));
    }
    let lifecycle = plan.lifecycle.as_ref().map(|l| l.path.clone());
    let b = Board::new(lifecycle, &plan.currency);
    seed(&b, lake);
    Ok((Some(b.clone()), tap(rx, b)?))
}

/// What the lake already holds, on the board: after a restart from a
/// checkpoint the engine does not send the actions it sent before. Only
/// the latest revision of each (the lake has the others).
fn seed(board: &Board, lake: &std::path::Path) {
    use crate::sinks::parquet::read;
    if !lake.join("actions").is_dir() {
        return;
    }
    let actions = match read::latest_actions(lake) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("the board starts empty: cannot read the lake's actions: {e}");
            return;
        }
    };
    let rows: Vec<_> = actions
        .into_iter()
        .map(read::ActionView::into_row)
        .collect();
    board.actions(&rows);
    let outcomes: Vec<_> = read::latest_outcomes(lake)
        .unwrap_or_default()
        .into_iter()
        .map(read::OutcomeView::into_row)
        .collect();
    board.outcomes(&outcomes);
}

/// Hands the actions and outcomes on their way to the sinks to the
/// operator surface's board too (on a thread of its own).
fn tap(
    rx: std::sync::mpsc::Receiver<Stamped>,
    board: Arc<Board>,
) -> Result<std::sync::mpsc::Receiver<Stamped>, String> {
    let (tx, out) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("plantflow-board".into())
        .spawn(move || {
            for batch in rx {
                match &batch.batch {
                    SinkBatch::Actions(rows) => board.actions(rows),
                    SinkBatch::Outcomes(rows) => board.outcomes(rows),
                    _ => {}
                }
                if tx.send(batch).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start the board's tap: {e}"))?;
    Ok(out)
}

/// With `jsonl` sinks: a tap on the sinks' channel that hands the value
/// tables' batches to each sink's writer (a task of its own, behind a
/// bounded queue: a slow disk holds the tap, it never drops a line). A
/// resumed run wrote the rows before its commit's time already.
///
/// With `webhook` sinks, the tap also queues each revision for its sender
/// (a thread of its own); a full queue dead-letters the revision instead of
/// holding the tap.
fn files(
    rt: &tokio::runtime::Runtime,
    (jsonl, webhooks): (&[JsonlPlan], &[WebhookPlan]),
    (dataflow, resume_before): (&str, u64),
    rx: std::sync::mpsc::Receiver<Stamped>,
    (sup, stats): (&Arc<Supervisor>, &Arc<Stats>),
) -> Result<(std::sync::mpsc::Receiver<Stamped>, Vec<JoinHandle<()>>), String> {
    if jsonl.is_empty() && webhooks.is_empty() {
        return Ok((rx, Vec::new()));
    }
    let mut txs = Vec::new();
    let mut tasks = Vec::new();
    for p in jsonl {
        let who = Component(format!("sink `{}` ({})", p.id, p.key));
        let mut w = JsonlWriter::open(p.clone(), dataflow).map_err(|e| format!("{who}: {e}"))?;
        let (tx, batches) = std::sync::mpsc::sync_channel::<Arc<SinkBatch>>(1024);
        txs.push(tx);
        let sup = sup.clone();
        tasks.push(rt.spawn_blocking(move || {
            let done = batches
                .iter()
                .try_for_each(|b| w.write(&b))
                .and_then(|()| w.sync());
            if let Err(e) = done {
                sup.fail(&who, &e, super::supervise::EXIT_FAILED);
            }
        }));
    }
    let (tx, out) = std::sync::mpsc::channel();
    let mut hooks = Vec::new();
    for p in webhooks {
        let who = Component(format!("sink `{}` ({})", p.id, p.key));
        let stopping: webhook::Stopping = {
            let sup = sup.clone();
            Arc::new(move || sup.is_stopping())
        };
        let s = webhook::Sender::new(p.clone(), tx.clone(), stats.clone(), stopping)
            .map_err(|e| format!("{who}: {e}"))?;
        let (queue_tx, queue) = std::sync::mpsc::sync_channel::<webhook::Delivery>(p.max_queue);
        hooks.push((p.clone(), queue_tx, tx.clone()));
        tasks.push(rt.spawn_blocking(move || s.run(queue)));
    }
    let (dataflow, stats) = (dataflow.to_string(), stats.clone());
    std::thread::Builder::new()
        .name("plantflow-jsonl-tap".into())
        .spawn(move || {
            for batch in rx {
                // (the value tables' batches are small: a copy each)
                let copy = match &batch.batch {
                    SinkBatch::Actions(r) => Some(SinkBatch::Actions(r.clone())),
                    SinkBatch::Outcomes(r) => Some(SinkBatch::Outcomes(r.clone())),
                    SinkBatch::Billing(r) => Some(SinkBatch::Billing(r.clone())),
                    _ => None,
                };
                if let Some(c) = copy.filter(|_| batch.time.is_none_or(|t| t >= resume_before)) {
                    for (p, queue, dead) in &hooks {
                        for d in webhook::deliveries(&p.tables, &dataflow, &c) {
                            if let Err(std::sync::mpsc::TrySendError::Full(d)) = queue.try_send(d) {
                                let _ = dead.send(webhook::queue_full(p, &d, &stats));
                            }
                        }
                    }
                    let c = Arc::new(c);
                    for w in &txs {
                        let _ = w.send(c.clone());
                    }
                }
                if tx.send(batch).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start the jsonl tap: {e}"))?;
    Ok((out, tasks))
}

/// Starts the Parquet writer and the publishers on `rt`, fed from `sink_rx`.
pub(super) fn start(
    rt: &tokio::runtime::Runtime,
    sink_rx: std::sync::mpsc::Receiver<Stamped>,
    lake: Lake<'_>,
    (publish, jsonl, webhooks): (&[PublishPlan], &[JsonlPlan], &[WebhookPlan]),
    sup: &Arc<Supervisor>,
    stats: Arc<Stats>,
) -> Result<Writers, String> {
    let Lake {
        sink,
        plan,
        tally_actions_only,
        open,
    } = lake;
    let resume_before = open.resume.before;
    let lock = open.lock;
    let (sink_rx, files) = files(
        rt,
        (jsonl, webhooks),
        (&plan.name, resume_before),
        sink_rx,
        (sup, &stats),
    )?;
    let writer = ParquetWriter::new(
        sink.clone(),
        &plan.name,
        &plan.currency,
        plan.metrics.clone(),
        stats.clone(),
    );
    let writer = if tally_actions_only {
        writer.tally_actions_only()
    } else {
        writer
    };
    let writer = writer.durable(open.durable, open.resume);
    let dataflow = plan.name.as_str();
    let who = Component(format!("sink `{}` ({})", sink.id, sink.key));
    let guarded = {
        let sup = sup.clone();
        move |f: Box<dyn FnOnce() -> Result<WriterReport, String> + Send>| {
            let r = sup.guard(&who, f);
            drop(lock);
            r
        }
    };
    // With `mqtt_publish` sinks, batches are shared (`Arc`) between the
    // Parquet writer and an encoder thread that turns them into messages.
    let mut publishers = files;
    let writer = if publish.is_empty() {
        rt.spawn_blocking(move || guarded(Box::new(move || run_writer(sink_rx, writer))))
    } else {
        let (pq_tx, pq_rx) = std::sync::mpsc::channel::<Arc<Stamped>>();
        let mut outs = Vec::new();
        for p in publish {
            let (urgent_tx, urgent) = tokio::sync::mpsc::channel(1024);
            let (bulk_tx, bulk) = tokio::sync::mpsc::channel(4096);
            let queues = crate::mqtt::publish::Queues { urgent, bulk };
            let pstats = Arc::new(crate::mqtt::publish::PublishStats::default());
            let (sup, who) = (
                sup.clone(),
                Component(format!("sink `{}` ({})", p.id, p.key)),
            );
            let task = crate::mqtt::publish::run(p.clone(), queues, pstats);
            publishers.push(rt.spawn(async move {
                if let Err(e) = task.await {
                    sup.fail(&who, &e, super::supervise::EXIT_FAILED);
                }
            }));
            outs.push((p.clone(), urgent_tx, bulk_tx));
        }
        // The lake first: the tee hands each batch to the Parquet writer and then
        // to an encoder, so JSON encoding and a full MQTT queue never delay
        // files. Actions, outcomes and bills have their own encoder, so they
        // never wait behind a window's worth of aggregates being encoded.
        let (enc_tx, enc_rx) = std::sync::mpsc::sync_channel::<Arc<Stamped>>(256);
        let (urgent_enc_tx, urgent_enc_rx) = std::sync::mpsc::sync_channel::<Arc<Stamped>>(256);
        std::thread::Builder::new()
            .name("plantflow-publish-tee".into())
            .spawn(move || {
                let mut dropped = 0u64;
                for batch in sink_rx {
                    let batch = Arc::new(batch);
                    if pq_tx.send(batch.clone()).is_err() {
                        break;
                    }
                    // Progress markers are for the Parquet writer's rolls only
                    // (hundreds a second in a live run): no encoder needs them.
                    if matches!(batch.batch, SinkBatch::Progress { .. }) {
                        continue;
                    }
                    // A resumed run published its rows before the commit it
                    // resumes from already.
                    if batch.time.is_some_and(|t| t < resume_before) {
                        continue;
                    }
                    // Never wait for the publishers: a slow or absent broker
                    // fills their queues, and then their batches are dropped
                    // (counted), while the lake goes on.
                    let tx = if crate::mqtt::publish::is_urgent(&batch.batch) {
                        &urgent_enc_tx
                    } else {
                        &enc_tx
                    };
                    if let Err(std::sync::mpsc::TrySendError::Full(_)) = tx.try_send(batch) {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(dropped, "mqtt_publish: queue full (broker slow or away); batches for MQTT dropped, the lake goes on");
                        }
                        stats.event(PUBLISH_DROPPED, 1);
                    }
                }
            })
            .map_err(|e| format!("cannot start the publish forwarder: {e}"))?;
        type Out = (
            PublishPlan,
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
            let name = dataflow.to_string();
            std::thread::Builder::new()
                .name(format!("plantflow-publish-encode-{label}"))
                .spawn(move || {
                    for batch in rx {
                        for (p, tx) in &outs {
                            let mut n = 0usize;
                            crate::mqtt::publish::each_message(p, &name, &batch.batch, |m| {
                                n += 1;
                                let _ = tx.blocking_send(m);
                            });
                            tracing::trace!(target: "plantflow::latency", queue = label, n, "publish queued");
                        }
                    }
                })
                .map_err(|e| format!("cannot start the publish encoder: {e}"))?;
        }
        rt.spawn_blocking(move || guarded(Box::new(move || run_writer(pq_rx, writer))))
    };
    Ok(Writers { writer, publishers })
}
