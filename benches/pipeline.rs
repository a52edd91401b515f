//! Throughput harness: workload v1 through `plantflow run` (1 and 2 workers)
//! and through a plain single-pass Rust program doing the same job, in the
//! same run, on the same files. Prints medians, rows/s, ratios and peak RSS.
//!
//! ```text
//! cargo bench --bench pipeline                       # default: 2,000 tags x 3,600 s (7.2M rows), 3 runs
//! PLANTFLOW_BENCH_TAGS=200 PLANTFLOW_BENCH_SECONDS=600 PLANTFLOW_BENCH_RUNS=1 cargo bench --bench pipeline
//! ```
//!
//! The baseline (`baseline()` below) reads `samples.csv` once, aggregates
//! 1-minute windows in a hash map, joins assets, tariff and production at the
//! end, and writes the same aggregates and actions to zstd Parquet: no
//! streaming, no lateness, no corrections, no dataflow. It runs as a child
//! process of this harness (`--baseline DIR OUT`) so both are measured whole.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Output columns of the baseline's aggregates table.
#[derive(Default)]
struct Columns(
    Vec<String>,
    Vec<i64>,
    Vec<i64>,
    Vec<f64>,
    Vec<f64>,
    Vec<f64>,
    Vec<f64>,
    Vec<f64>,
    Vec<bool>,
    Vec<f64>,
);

/// Writes one batch as a zstd Parquet file.
fn write_parquet(path: &Path, batch: &RecordBatch) {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// The plain single-pass program. Returns rows read.
fn baseline(input: &Path, out: &Path) -> u64 {
    // Context.
    let mut assets: HashMap<String, (String, String, String, String, f64)> = HashMap::new();
    let text = std::fs::read_to_string(input.join("assets.csv")).unwrap();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        assets.insert(
            f[0].into(),
            (
                f[1].into(),
                f[2].into(),
                f[3].into(),
                f[4].into(),
                f[5].parse().unwrap(),
            ),
        );
    }
    let mut price = [0.0f64; 24];
    let text = std::fs::read_to_string(input.join("tariff.csv")).unwrap();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        let (a, b, p): (usize, usize, f64) = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
        );
        price[a..b].iter_mut().for_each(|x| *x = p);
    }
    let mut runs: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let text = std::fs::read_to_string(input.join("production.csv")).unwrap();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        runs.entry(f[0].into())
            .or_default()
            .push((f[1].parse().unwrap(), f[2].parse().unwrap()));
    }
    // One pass over the samples.
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut acc: HashMap<(u32, i64), (i64, f64, f64, f64)> = HashMap::new();
    let mut rows = 0u64;
    let mut r = BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(input.join("samples.csv")).unwrap(),
    );
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line.clear();
    while r.read_line(&mut line).unwrap() > 0 {
        rows += 1;
        let mut it = line.trim_end().split(',');
        let (ts, tag, v, q) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );
        if q != "2" {
            let ts: i64 = ts.parse().unwrap();
            let v: f64 = v.parse().unwrap();
            let id = match ids.get(tag) {
                Some(id) => *id,
                None => {
                    ids.insert(tag.to_string(), names.len() as u32);
                    names.push(tag.to_string());
                    names.len() as u32 - 1
                }
            };
            let e = acc.entry((id, ts.div_euclid(60_000) * 60_000)).or_insert((
                0,
                0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ));
            e.0 += 1;
            e.1 += v;
            e.2 = e.2.min(v);
            e.3 = e.3.max(v);
        }
        line.clear();
    }
    // Enrich, write aggregates and actions.
    let mut cols = Columns::default();
    let mut waste: HashMap<(String, i64), (f64, f64)> = HashMap::new();
    for ((id, ws), (n, sum, min, max)) in acc {
        let tag = &names[id as usize];
        let Some((asset, _site, line, _kind, standby)) = assets.get(tag) else {
            continue;
        };
        let mean = sum / n as f64;
        let energy = mean / 60.0;
        let p = price[(ws.div_euclid(3_600_000).rem_euclid(24)) as usize];
        let producing = runs
            .get(line)
            .is_some_and(|rs| rs.iter().any(|(a, b)| *a <= ws && ws < *b));
        let w = if !producing && mean > *standby {
            energy
        } else {
            0.0
        };
        let e = waste
            .entry((asset.clone(), ws.div_euclid(3_600_000) * 3_600_000))
            .or_default();
        e.0 += w;
        e.1 += w * p;
        cols.0.push(tag.clone());
        cols.1.push(ws);
        cols.2.push(n);
        cols.3.push(mean);
        cols.4.push(min);
        cols.5.push(max);
        cols.6.push(energy);
        cols.7.push(energy * p);
        cols.8.push(producing);
        cols.9.push(w);
    }
    std::fs::create_dir_all(out).unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        ("tag", Arc::new(StringArray::from(cols.0)) as ArrayRef),
        (
            "window_start",
            Arc::new(TimestampMillisecondArray::from(cols.1).with_timezone("UTC")) as _,
        ),
        ("count", Arc::new(Int64Array::from(cols.2)) as _),
        ("mean", Arc::new(Float64Array::from(cols.3)) as _),
        ("min", Arc::new(Float64Array::from(cols.4)) as _),
        ("max", Arc::new(Float64Array::from(cols.5)) as _),
        ("energy_kwh", Arc::new(Float64Array::from(cols.6)) as _),
        ("cost", Arc::new(Float64Array::from(cols.7)) as _),
        ("producing", Arc::new(BooleanArray::from(cols.8)) as _),
        ("waste_kwh", Arc::new(Float64Array::from(cols.9)) as _),
    ])
    .unwrap();
    write_parquet(&out.join("aggregates.parquet"), &batch);
    let actions: Vec<_> = waste.into_iter().filter(|(_, (w, _))| *w > 1.0).collect();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "asset",
            Arc::new(StringArray::from(
                actions
                    .iter()
                    .map(|((a, _), _)| a.clone())
                    .collect::<Vec<_>>(),
            )) as ArrayRef,
        ),
        (
            "hour_start",
            Arc::new(Int64Array::from(
                actions.iter().map(|((_, h), _)| *h).collect::<Vec<_>>(),
            )) as _,
        ),
        (
            "waste_kwh",
            Arc::new(Float64Array::from(
                actions.iter().map(|(_, (w, _))| *w).collect::<Vec<_>>(),
            )) as _,
        ),
        (
            "waste_cost",
            Arc::new(Float64Array::from(
                actions.iter().map(|(_, (_, c))| *c).collect::<Vec<_>>(),
            )) as _,
        ),
    ])
    .unwrap();
    write_parquet(&out.join("actions.parquet"), &batch);
    rows
}

struct Sample {
    secs: f64,
    rss_mib: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--baseline") {
        let (input, out) = (PathBuf::from(&args[i + 1]), PathBuf::from(&args[i + 2]));
        let rows = baseline(&input, &out);
        println!("{rows} {:.1}", peak_rss_mib());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harness=false benches to list; nothing to list.
    }
    let tags = env_or("PLANTFLOW_BENCH_TAGS", 2000) as usize;
    let seconds = env_or("PLANTFLOW_BENCH_SECONDS", 3600);
    let runs = env_or("PLANTFLOW_BENCH_RUNS", 3).max(1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let input = root.join(format!("workload-{tags}x{seconds}"));
    if !input.join("MANIFEST.txt").exists() {
        eprintln!(
            "generating {tags} tags x {seconds} s into {}",
            input.display()
        );
        let p = plantflow::gen::workload::Params {
            tags,
            seconds,
            seed: 7,
            ..Default::default()
        };
        plantflow::gen::workload::generate(&p, &input).expect("generate workload");
    }
    let rows = (tags as u64) * seconds;
    let me = std::env::current_exe().unwrap();
    let bin = env!("CARGO_BIN_EXE_plantflow");
    let dataflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/workload_v1.toml");

    let mut results: Vec<(String, Vec<Sample>)> = vec![
        ("single-pass Rust baseline".into(), vec![]),
        ("plantflow run --workers 1".into(), vec![]),
        ("plantflow run --workers 2".into(), vec![]),
    ];
    for _ in 0..runs {
        for (k, (_, samples)) in results.iter_mut().enumerate() {
            let out = root.join(format!("out-{k}"));
            let _ = std::fs::remove_dir_all(&out);
            let started = Instant::now();
            let output = if k == 0 {
                Command::new(&me)
                    .arg("--baseline")
                    .arg(&input)
                    .arg(&out)
                    .output()
                    .unwrap()
            } else {
                Command::new(bin)
                    .args(["run", "--json", "--workers", &k.to_string()])
                    .arg(&dataflow)
                    .env("INPUT_DIR", &input)
                    .env("OUT_DIR", &out)
                    .output()
                    .unwrap()
            };
            let secs = started.elapsed().as_secs_f64();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let rss_mib = if k == 0 {
                stdout
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0.0)
            } else {
                let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
                assert_eq!(v["rows_read"].as_u64(), Some(rows));
                v["peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
            };
            samples.push(Sample { secs, rss_mib });
        }
    }
    let base = median(results[0].1.iter().map(|s| s.secs).collect());
    println!("workload v1: {tags} tags x {seconds} s = {rows} rows, CSV replay -> Parquet, median of {runs} run(s), {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!(
        "{:<30} {:>9} {:>13} {:>16} {:>13}",
        "program", "wall s", "rows/s", "ratio to base", "peak RSS MiB"
    );
    for (name, samples) in &results {
        let secs = median(samples.iter().map(|s| s.secs).collect());
        let rss = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
        println!(
            "{:<30} {:>9.2} {:>13.0} {:>15.2}x {:>13.1}",
            name,
            secs,
            rows as f64 / secs,
            base / secs,
            rss
        );
    }
}
