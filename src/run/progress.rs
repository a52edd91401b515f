//! A progress bar for replays on a terminal (`plantflow run` over history
//! files): how far through its files the run is, its rate and the time
//! left. Off when stderr is not a terminal, in `--follow`, and without
//! replay sources.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::dataflow::SourcePlan;
use crate::sources::replay::config::ReplayFormat;
use crate::stats::Stats;

/// How much of one replay source there is: a CSV file's bytes or a
/// Parquet file's rows (what [`Stats`] counts of each).
struct Extent {
    id: String,
    bytes: bool,
    total: u64,
}

fn extent(s: &SourcePlan) -> Option<Extent> {
    let SourcePlan::Replay(r) = s else {
        return None;
    };
    let (bytes, total) = match r.format {
        ReplayFormat::Csv => (true, std::fs::metadata(&r.path).ok()?.len()),
        ReplayFormat::Parquet => {
            let f = std::fs::File::open(&r.path).ok()?;
            let b =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).ok()?;
            let rows = b.metadata().file_metadata().num_rows();
            (false, u64::try_from(rows).ok()?)
        }
    };
    Some(Extent {
        id: r.id.clone(),
        bytes,
        total: total.max(1),
    })
}

/// Per mille of the way through every replay source (their mean).
fn done(extents: &[Extent], stats: &Stats) -> u64 {
    let seen = stats.sources();
    let sum: f64 = extents
        .iter()
        .map(|e| {
            let s = seen.get(&e.id).copied().unwrap_or_default();
            let got = if e.bytes { s.bytes } else { s.samples };
            (got as f64 / e.total as f64).min(1.0)
        })
        .sum();
    (sum / extents.len() as f64 * 1000.0) as u64
}

/// Draws the bar on stderr until `finished`, then clears it; `None` when
/// there is nothing to draw (see the module's doc).
pub fn replay_bar(
    sources: &[SourcePlan],
    follow: bool,
    stats: Arc<Stats>,
    finished: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    if follow || !std::io::stderr().is_terminal() {
        return None;
    }
    let extents: Vec<Extent> = sources.iter().filter_map(extent).collect();
    if extents.is_empty() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("replay {bar:40} {percent:>3}%  {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.tick();
    std::thread::Builder::new()
        .name("plantflow-progress".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            while !finished.load(Relaxed) {
                bar.set_position(done(&extents, &stats));
                let rows = Stats::get(&stats.rows_read);
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{rows} rows, {:.0} rows/s", rate));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        })
        .ok()
}
