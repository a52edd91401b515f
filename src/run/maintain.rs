//! `plantflow lake compact` and `plantflow lake vacuum` (the Delta tables'
//! upkeep: `sinks/parquet/delta/maintain.rs`; docs/lake.md).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::sinks::parquet::delta::maintain;
use crate::sinks::parquet::ship;

/// Exit 78 for a value the command line got wrong.
fn usage(e: String) -> ExitCode {
    eprintln!("plantflow lake: {e}");
    ExitCode::from(78)
}

pub fn lake_compact(lake: &Path, target: &str, table: Option<&str>) -> ExitCode {
    let target = match crate::config::units::parse_size_bytes(target) {
        Ok(t) if t >= 1 << 20 => t,
        Ok(_) => return usage(format!("--target-size {target}: at least 1MiB")),
        Err(e) => return usage(format!("--target-size {target}: {e}")),
    };
    match maintain::compact(lake, target, table) {
        Ok(done) => {
            let mut out = std::io::stdout().lock();
            for c in done {
                match c.version {
                    Some(v) => writeln!(
                        out,
                        "{:<16} {} files ({} rows) -> {} at version {v}",
                        c.table, c.removed, c.rows, c.added
                    ),
                    None => writeln!(out, "{:<16} nothing to compact", c.table),
                }
                .ok();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plantflow lake compact: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn lake_vacuum(lake: &Path, retain: &str, dry: bool, remote: Option<&str>) -> ExitCode {
    let retain_ms = match crate::config::units::parse_duration_ms(retain) {
        Ok(r) => r,
        Err(e) => return usage(format!("--retain {retain}: {e}")),
    };
    // The bucket first gets every version that removed what goes now: its
    // readers must not be left with a version naming a deleted file.
    let ship = match remote.map(|url| {
        let mut s = ship::Shipper::connect(url, lake)?;
        s.sync().map(|_| s)
    }) {
        Some(Err(e)) => {
            eprintln!("plantflow lake vacuum: {e}");
            return ExitCode::FAILURE;
        }
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let done = maintain::vacuum(lake, retain_ms, dry).and_then(|done| {
        if let Some(s) = ship.as_ref().filter(|_| !dry) {
            for v in &done {
                let rels: Vec<String> =
                    v.files.iter().map(|f| format!("{}/{f}", v.table)).collect();
                s.delete(&rels)?;
            }
        }
        Ok(done)
    });
    match done {
        Ok(done) => {
            let verb = if dry { "would delete" } else { "deleted" };
            // A closed pipe (`| head`) ends the listing, not the process.
            let mut out = std::io::stdout().lock();
            for v in done {
                let _ = writeln!(
                    out,
                    "{:<16} {verb} {} files ({} bytes)",
                    v.table,
                    v.files.len(),
                    v.bytes
                );
                if dry {
                    for f in &v.files {
                        let _ = writeln!(out, "  {f}");
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plantflow lake vacuum: {e}");
            ExitCode::FAILURE
        }
    }
}
