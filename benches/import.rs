//! Historian import harness (issue 32): the same samples of workload v1
//! (times rounded to the second, so a wide row holds every tag) replayed
//! by `plantflow run --workers 1` as
//!
//! - a long CSV through the fast reader (no `[sources.format]`),
//! - the same long CSV through the general reader (`time_format = "epoch_ms"`),
//! - a wide CSV (one row a second, a value and a quality column per tag),
//!
//! and, with `PLANTFLOW_BENCH_BEFORE=/path/to/an/older/plantflow`, the long
//! CSV by that binary's fast reader too (before/after), all in one run,
//! alternating. Prints medians, rows/s and ratios to the fast reader.
//!
//! ```text
//! cargo bench --bench import                    # 2,000 tags x 3,600 s (7.2M samples), 3 runs
//! PLANTFLOW_BENCH_BEFORE=/tmp/before/target/release/plantflow cargo bench --bench import
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes the samples with times rounded down to the second, long and wide.
fn shapes(input: &Path) -> (PathBuf, PathBuf) {
    let (long, wide) = (input.join("second_long.csv"), input.join("second_wide.csv"));
    if long.exists() && wide.exists() {
        return (long, wide);
    }
    eprintln!("writing {} and {}", long.display(), wide.display());
    let text = std::fs::read_to_string(input.join("samples.csv")).unwrap();
    let rows: Vec<(i64, &str, &str, &str)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse::<i64>().unwrap() / 1000 * 1000, f[1], f[2], f[3])
        })
        .collect();
    let mut out = String::from("ts,tag,value,quality\n");
    for (ts, tag, v, q) in &rows {
        out += &format!("{ts},{tag},{v},{q}\n");
    }
    std::fs::write(&long, out).unwrap();
    let mut tags: Vec<&str> = rows.iter().map(|r| r.1).collect();
    tags.sort_unstable();
    tags.dedup();
    let index: std::collections::HashMap<&str, usize> =
        tags.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut out = String::from("time");
    for t in &tags {
        out += &format!(",{t},{t}.q");
    }
    out.push('\n');
    let mut cells = vec![""; 2 * tags.len()];
    let mut row_ts = None;
    let flush = |cells: &mut Vec<&str>, ts: i64, out: &mut String| {
        *out += &format!("{ts},{}\n", cells.join(","));
        cells.iter_mut().for_each(|c| *c = "");
    };
    for (ts, tag, v, q) in &rows {
        let i = 2 * index[tag];
        if row_ts.is_some_and(|r| r != *ts) || !cells[i].is_empty() {
            flush(&mut cells, row_ts.unwrap(), &mut out);
        }
        row_ts = Some(*ts);
        (cells[i], cells[i + 1]) = (v, q);
    }
    if let Some(ts) = row_ts {
        flush(&mut cells, ts, &mut out);
    }
    std::fs::write(&wide, out).unwrap();
    (long, wide)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tags = env_or("PLANTFLOW_BENCH_TAGS", 2000) as usize;
    let seconds = env_or("PLANTFLOW_BENCH_SECONDS", 3600);
    let runs = env_or("PLANTFLOW_BENCH_RUNS", 3).max(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let input = plantflow::bench::workload(&root, tags, seconds);
    let (long, wide) = shapes(&input);
    let rows = (tags as u64) * seconds;
    let workload = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/workload_v1.toml"),
    )
    .unwrap();
    let from = "path = \"${INPUT_DIR}/${SAMPLES_FILE:-samples.csv}\"";
    let dataflow = |name: &str, file: &Path, block: &str| {
        let df = root.join(format!("import-{name}.toml"));
        let path = format!("path = \"{}\"\n{block}\n", file.display());
        std::fs::write(&df, workload.replace(from, &path)).unwrap();
        df
    };
    let now = env!("CARGO_BIN_EXE_plantflow").to_string();
    let mut programs: Vec<(String, String, PathBuf)> = Vec::new();
    if let Ok(before) = std::env::var("PLANTFLOW_BENCH_BEFORE") {
        programs.push((
            "long CSV, fast reader (before)".into(),
            before,
            dataflow("fast", &long, ""),
        ));
    }
    programs.extend([
        (
            "long CSV, fast reader".to_string(),
            now.clone(),
            dataflow("fast", &long, ""),
        ),
        (
            "long CSV, general reader".into(),
            now.clone(),
            dataflow(
                "general",
                &long,
                "[sources.format]\ntime_format = \"epoch_ms\"",
            ),
        ),
        (
            "wide CSV, general reader".into(),
            now.clone(),
            dataflow(
                "wide",
                &wide,
                "[sources.format]\nlayout = \"wide\"\ntimestamp = \"time\"\n\
                 time_format = \"epoch_ms\"\nquality = \"{tag}.q\"",
            ),
        ),
    ]);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
    println!(
        "workload v1 at whole seconds: {tags} tags x {seconds} s = {rows} samples -> Parquet, \
         --workers 1, median of {runs}; long CSV {:.0} MiB, wide CSV {:.0} MiB",
        size(&long),
        size(&wide)
    );
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); programs.len()];
    for _ in 0..runs {
        for (k, (_, bin, df)) in programs.iter().enumerate() {
            let out = root.join(format!("import-out-{k}"));
            let _ = std::fs::remove_dir_all(&out);
            let started = Instant::now();
            let o = Command::new(bin)
                .args(["run", "--json", "--workers", "1"])
                .arg(df)
                .env("INPUT_DIR", &input)
                .env("OUT_DIR", &out)
                .output()
                .unwrap();
            secs[k].push(started.elapsed().as_secs_f64());
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["rows_read"].as_u64(), Some(rows), "{}", programs[k].0);
        }
    }
    let base = median(secs[programs.len() - 3].clone());
    println!(
        "{:<34} {:>8} {:>12} {:>8}",
        "input, reader", "wall s", "samples/s", "ratio"
    );
    for (k, (name, _, _)) in programs.iter().enumerate() {
        let s = median(secs[k].clone());
        println!(
            "{name:<34} {s:>8.2} {:>12.0} {:>7.2}x",
            rows as f64 / s,
            base / s
        );
    }
}
