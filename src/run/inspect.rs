//! `plantflow state inspect`: the input log, checkpoints and spilled
//! state of a lake's state directory, and its commit record, for operators.

use std::path::Path;
use std::process::ExitCode;

/// The input log's segments and checkpoints in a state directory.
fn inspect_log(dir: &Path) {
    let segments = crate::ingest::wal::segments(dir).unwrap_or_default();
    let bytes: u64 = segments
        .iter()
        .map(|seq| crate::ingest::wal::segment(dir, *seq))
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "input log    {} ({} segment(s), {bytes} bytes)",
        dir.display(),
        segments.len()
    );
    match super::log_totals(dir) {
        Ok((c, _)) => println!(
            "  holds      {} samples from {} messages, {} context changes, {} restarts \
             (since it began: checkpoints hold what is gone)",
            c.samples,
            c.messages,
            c.context,
            c.runs.saturating_sub(1)
        ),
        Err(e) => eprintln!("plantflow state inspect: {e}"),
    }
    let mut checkpoints: Vec<(String, u64, usize)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .map(|e| {
            let (size, files) = super::tree_size(&e.path());
            (e.file_name().to_string_lossy().into_owned(), size, files)
        })
        .collect();
    checkpoints.sort();
    for (name, size, files) in checkpoints {
        match name.ends_with(".spill") {
            true => println!(
                "  spilled    {name} ({files} files, {size} bytes of closed windows, rule \
                 periods and ledger actions, hard-linked)"
            ),
            false => println!("  checkpoint {name} ({size} bytes)"),
        }
    }
}

/// The input logs of a dataflow's state directory `dir`: its own, or a
/// cluster's, one per process (`process-<i>/`, in process order).
fn logs_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let has_log = |d: &Path| crate::ingest::wal::segments(d).is_ok_and(|s| !s.is_empty());
    if has_log(dir) {
        return vec![dir.to_path_buf()];
    }
    let mut processes: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let i = name.strip_prefix("process-")?.parse().ok()?;
            Some((i, e.path()))
        })
        .filter(|(_, p)| has_log(p))
        .collect();
    processes.sort();
    processes.into_iter().map(|(_, p)| p).collect()
}

/// `plantflow state inspect`: what a lake's commit record and its state
/// directory hold (a dataflow file or a lake directory; read only: no
/// lock, no repair).
pub fn state_inspect(path: &Path) -> ExitCode {
    let (lake, log) = if path.is_dir() {
        // A lake: its default state directory's log, if there is one.
        let logs = std::fs::read_dir(path.join(".plantflow"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| !logs_in(p).is_empty());
        (path.to_path_buf(), logs)
    } else {
        match crate::dataflow::load(path) {
            Ok(d) => {
                let state = d.window.state_dir.clone();
                let state = state.unwrap_or_else(|| d.sink.path.join(".plantflow"));
                (d.sink.path.clone(), Some(state.join(&d.name)))
            }
            Err(e) => {
                eprintln!("{}", e.render());
                return ExitCode::from(crate::EXIT_CONFIG as u8);
            }
        }
    };
    for dir in log.map(|d| logs_in(&d)).unwrap_or_default() {
        inspect_log(&dir);
    }
    match crate::sinks::parquet::commit::read(&lake) {
        Ok(Some(m)) => {
            println!("lake         {}", lake.display());
            println!(
                "dataflow     {} (file fingerprint {})",
                m.dataflow, m.fingerprint
            );
            println!(
                "format       {} (written by plantflow {})",
                m.format, m.version
            );
            println!("commits      {}", m.seq);
            println!(
                "before       {} (rows of earlier timely times are in the lake)",
                m.before
            );
            println!("finished     {}", m.finished);
            println!(
                "last commit  {} file(s) at {} ms",
                m.files.len(),
                m.committed_at
            );
            for f in &m.files {
                println!("  {f}");
            }
            if let Some(c) = &m.checkpoint {
                println!(
                    "checkpoint   {} (state before time {}; the input log goes on from segment {})",
                    c.file, c.at, c.segment
                );
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!(
                "{}: no commit record (nothing committed yet)",
                lake.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plantflow state inspect: {e}");
            ExitCode::FAILURE
        }
    }
}
