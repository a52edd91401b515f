//! The lake at the start of a run: locked, checked against this dataflow,
//! repaired after a kill, and read for where a resumed run starts writing
//! (`sinks/parquet/commit.rs` has the record; `docs/durability.md` the
//! guarantees).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::sinks::parquet::commit::{self, OpenError};
use crate::sinks::parquet::ship;
use crate::sinks::parquet::{Durable, ParquetPlan, Resume};

use super::summary::{self, Resumed};
use super::supervise::{self, RunError};
use super::{RunOptions, RunSummary};
use crate::dataflow::SourcePlan;

/// A lake opened for a run.
pub(super) struct OpenLake {
    /// Held for the run: one node writes a lake at a time.
    pub lock: std::fs::File,
    /// The writer's part: the record's identity and commit count.
    pub durable: Durable,
    /// What a resumed run does not write again.
    pub resume: Resume,
    /// The record says the last run read every source to its end.
    pub finished_run: bool,
    /// The checkpoints the record names (latest first).
    pub checkpoints: Vec<crate::sinks::parquet::commit::CheckpointRef>,
    /// For the summary: the record found, and the repairs made.
    pub resumed: Option<Resumed>,
}

impl OpenLake {
    /// Locks the lake of `sink`, checks its commit record against this
    /// dataflow (exit 78 when it belongs to another), finishes a commit a
    /// kill cut short, deletes orphans, and reads the revisions it holds.
    pub fn open(
        sink: &ParquetPlan,
        (dataflow, metrics): (&str, &[crate::config::MetricPlan]),
        fingerprint: String,
        opts: &RunOptions,
    ) -> Result<OpenLake, RunError> {
        let reset = opts.reset_state;
        let identity = commit::Identity {
            dataflow: dataflow.to_string(),
            fingerprint,
        };
        let failed = |m: String| format!("sink `{}` ({}) failed: {m}", sink.id, sink.key);
        std::fs::create_dir_all(&sink.path).map_err(|e| {
            failed(format!(
                "cannot create the lake {}: {e}",
                sink.path.display()
            ))
        })?;
        let opened = commit::open(&sink.path, &identity, reset).map_err(|e| match e {
            OpenError::Incompatible(m) => RunError {
                code: supervise::EXIT_CONFIG,
                message: m,
            },
            OpenError::Io(m) => RunError::from(failed(m)),
        })?;
        if opened.marker.as_ref().is_some_and(|m| m.drained) && !reset {
            return Err(RunError {
                code: supervise::EXIT_CONFIG,
                message: format!(
                    "the lake {} was drained by its last run (`--drain` closed its open \
                     windows early), so no run can go on from it. Write to a new lake, or \
                     run with --reset-state to forget its record (its files stay)",
                    sink.path.display()
                ),
            });
        }
        let delta = match sink.delta {
            true => {
                Some(open_delta(sink, dataflow, metrics, opened.marker.as_ref()).map_err(failed)?)
            }
            false => {
                refuse_bare_files_into_delta(sink)?;
                None
            }
        };
        // A lake on object storage: what the bucket lacks of the local
        // copy (a kill before a commit was shipped) goes up first.
        let ship = match &sink.remote {
            Some(url) => {
                let mut s = ship::Shipper::connect(url, &sink.path).map_err(failed)?;
                let shipped = s.sync().map_err(failed)?;
                if shipped.versions > 0 {
                    tracing::info!(
                        versions = shipped.versions,
                        files = shipped.files,
                        "shipped what the bucket lacked"
                    );
                }
                Some(s)
            }
            None => None,
        };
        let mut resume = Resume::default();
        let mut resumed = (opened.orphans > 0).then_some(Resumed {
            seq: 0,
            before: 0,
            republished: 0,
            orphans: opened.orphans,
            nothing_to_do: false,
        });
        if let Some(m) = &opened.marker {
            resume.before = m.before;
            resume.revisions = commit::Revisions::read(&sink.path).map_err(failed)?;
            resumed = Some(Resumed {
                seq: m.seq,
                before: m.before,
                republished: opened.republished,
                orphans: opened.orphans,
                nothing_to_do: false,
            });
            tracing::info!(
                seq = m.seq,
                before = m.before,
                republished = opened.republished,
                orphans = opened.orphans,
                "resuming the lake after its last commit"
            );
        }
        Ok(OpenLake {
            durable: Durable {
                identity,
                seq: opened
                    .marker
                    .as_ref()
                    .map_or(0, |m| m.seq)
                    .max(delta.as_ref().map_or(0, |d| d.last_txn())),
                finished: Arc::default(),
                drain: opts.drain,
                logged: false,
                delta,
                ship,
                sync_log: None,
                checkpoints: None,
                named: opened.marker.as_ref().and_then(|m| m.checkpoint.clone()),
                previous: opened
                    .marker
                    .as_ref()
                    .and_then(|m| m.previous_checkpoint.clone()),
            },
            resume,
            finished_run: opened.marker.as_ref().is_some_and(|m| m.finished),
            checkpoints: opened
                .marker
                .as_ref()
                .map(|m| {
                    let refs = [m.checkpoint.clone(), m.previous_checkpoint.clone()];
                    refs.into_iter().flatten().collect()
                })
                .unwrap_or_default(),
            resumed,
            lock: opened.lock,
        })
    }

    /// The summary of a run with nothing to do: the lake holds a whole
    /// deterministic run already. One replay source read to its end gives
    /// the same rows every time, so there is nothing to add.
    pub fn nothing_to_do(
        &self,
        sources: &[SourcePlan],
        lake: &Path,
        started: Instant,
        opts: &RunOptions,
    ) -> Option<RunSummary> {
        let r = self.resumed.as_ref()?;
        let deterministic =
            !opts.follow && sources.len() == 1 && matches!(sources[0], SourcePlan::Replay(_));
        if !(deterministic && self.finished_run) {
            return None;
        }
        let (took, workers) = (started.elapsed(), opts.workers.max(1));
        Some(summary::nothing_to_do(
            lake.to_path_buf(),
            took,
            workers,
            r.clone(),
        ))
    }
}

/// Opens the Delta logs of the lake's tables (`format = "delta"`): creates
/// the missing ones and adds the files of a commit a kill cut short.
fn open_delta(
    sink: &ParquetPlan,
    dataflow: &str,
    metrics: &[crate::config::MetricPlan],
    record: Option<&commit::Marker>,
) -> Result<crate::sinks::parquet::delta::DeltaLake, String> {
    let all = crate::sinks::parquet::table_schemas(metrics);
    let schemas: Vec<_> = sink
        .tables
        .iter()
        .filter_map(|t| Some((t.clone(), all.get(t)?.clone())))
        .collect();
    let app = crate::sinks::parquet::delta::app_id(dataflow);
    let record = record.map(|m| (m.seq, m.files.as_slice()));
    let (lake, opened) =
        crate::sinks::parquet::delta::DeltaLake::open(&sink.path, &app, &schemas, record)?;
    if opened.created > 0 || opened.repaired > 0 {
        tracing::info!(
            created = opened.created,
            repaired = opened.repaired,
            "Delta logs of the lake's tables opened"
        );
    }
    Ok(lake)
}

/// A lake whose tables are Delta tables goes on as Delta tables: bare files
/// written into them would be missing from their logs, so Delta readers
/// would silently miss rows.
fn refuse_bare_files_into_delta(sink: &ParquetPlan) -> Result<(), RunError> {
    let delta = sink
        .tables
        .iter()
        .map(|t| sink.path.join(t).join("_delta_log"))
        .find(|l| l.is_dir());
    match delta {
        Some(log) => Err(RunError {
            code: supervise::EXIT_CONFIG,
            message: format!(
                "{}.format: the lake's tables are Delta tables ({} exists), and a run writing \
                 bare Parquet files into them would leave their logs behind: set format = \"delta\" \
                 (or write to a new lake)",
                sink.key,
                log.display()
            ),
        }),
        None => Ok(()),
    }
}
