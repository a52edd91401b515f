//! Stage entry points for the benchmarks (`benches/stages.rs`, criterion) and
//! the throughput harness (`benches/pipeline.rs`): the same code a run uses,
//! one stage at a time, so a regression shows in the stage it is in.
//!
//! - [`csv_rows`]: the replay CSV reader alone (lines split into fields);
//! - [`decode_csv`]: reader + normaliser (parse, tag lookup, quality policy,
//!   watermark, epoch batches) through the engine bridge;
//! - [`preaggregate`]: the timely window operator alone over decoded batches.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::{QualityPolicy, WindowPlan};
use crate::ingest::normalize::{Normalizer, SourceCtx};
use crate::ingest::{bridge::WorkerMsg, Geometry, Ingest, TagRegistry};
use crate::model::Sample;
use crate::sources::replay::{pump_csv, CsvLine, CsvReader};

/// Workload v1's window: 1 minute, 5 s lateness, 2 h retention, bad rows dropped.
pub fn workload_window() -> (WindowPlan, Geometry) {
    let plan = WindowPlan {
        size_ms: 60_000,
        lateness_ms: 5_000,
        retention_ms: 7_200_000,
        max_future_ms: 365 * 86_400_000,
        quality: QualityPolicy::DropBad,
        spill_after_ms: None,
        state_dir: None,
        checkpoint_ms: None,
    };
    let geo = Geometry {
        size_ms: 60_000,
        period_ms: 3_600_000,
        retention_ms: 7_200_000,
    };
    (plan, geo)
}

/// Reads `samples.csv` with the replay reader; returns the rows.
pub fn csv_rows(path: &Path) -> Result<u64, String> {
    let mut r = CsvReader::open(path)?;
    let mut rows = 0;
    loop {
        match r.next_line(false).map_err(|e| e.to_string())? {
            CsvLine::Row { .. } => rows += 1,
            CsvLine::Eof => return Ok(rows),
            _ => {}
        }
    }
}

/// Reads and normalises `dir/samples.csv` against the tags of
/// `dir/assets.csv`; returns the batches the engine would receive, with
/// their times.
pub fn decode_csv(dir: &Path) -> Result<Vec<(u64, Vec<Sample>)>, String> {
    let tags = Arc::new(TagRegistry::default());
    let assets = std::fs::read_to_string(dir.join("assets.csv")).map_err(|e| e.to_string())?;
    for line in assets.lines().skip(1) {
        if let Some(tag) = line.split(',').next() {
            tags.intern(tag);
        }
    }
    let (window, geometry) = workload_window();
    let (ingest, mut receivers) = Ingest::new(1, 1, window.size_ms as u64, 64);
    let rx = receivers.remove(0);
    let drain = std::thread::spawn(move || {
        let mut out = Vec::new();
        while let Ok(msg) = rx.recv() {
            match msg {
                WorkerMsg::Samples { time, rows } => out.push((time, rows)),
                WorkerMsg::End => break,
                _ => {}
            }
        }
        out
    });
    let (sink, dead) = std::sync::mpsc::channel::<crate::model::Stamped>();
    let stats: Arc<crate::stats::Stats> = Arc::default();
    // Dead letters are dropped here, but taken as a writer would take them
    // (a source waits while too many are queued).
    let taken = stats.clone();
    std::thread::spawn(move || {
        for b in dead {
            if let crate::model::SinkBatch::DeadLetters(rows) = b.batch {
                taken
                    .dead_letters_queued
                    .fetch_sub(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let ctx = SourceCtx {
        index: 0,
        id: "bench".into(),
        ingest,
        tags,
        sink,
        stats,
        stop: Arc::new(AtomicBool::new(false)),
        window,
        geometry,
        follow: false,
        replayed: true,
        context: None,
        dead_letter: Default::default(),
        watch: Default::default(),
        share: (0, 1),
    };
    let mut n = Normalizer::new(ctx, 8192);
    let csv = CsvReader::open(&dir.join("samples.csv"))?;
    pump_csv(csv, &mut n, std::time::Duration::ZERO).map_err(|e| e.to_string())?;
    n.end();
    drain.join().map_err(|_| "drain thread failed".to_string())
}

/// The workload v1 input `target/bench-data/workload-{tags}x{seconds}` under
/// `root`, generated (seed 7) when missing.
pub fn workload(root: &Path, tags: usize, seconds: u64) -> std::path::PathBuf {
    let dir = root.join(format!("workload-{tags}x{seconds}"));
    if !dir.join("MANIFEST.txt").exists() {
        eprintln!(
            "generating {tags} tags x {seconds} s into {}",
            dir.display()
        );
        let p = crate::gen::workload::Params {
            tags,
            seconds,
            seed: 7,
            ..Default::default()
        };
        crate::gen::workload::generate(&p, &dir).expect("generate workload");
    }
    dir
}

/// Runs the window operator alone over decoded batches; returns window updates.
pub fn preaggregate(batches: Vec<(u64, Vec<Sample>)>) -> u64 {
    crate::engine::window::standalone(batches, workload_window().1)
}
