//! Throughput harness: workload v1 through `plantflow run` (1 and 2 workers),
//! through `plantflow cluster local` (2 processes of 1 worker), through a plain single-pass Rust program doing the same job, and (CSV,
//! when Python has them) through DuckDB and Polars (`benches/analysts.py`),
//! in the same run, on the same files. Prints medians, rows/s, ratios to the
//! single-pass program and peak RSS.
//!
//! ```text
//! cargo bench --bench pipeline                       # default: 2,000 tags x 3,600 s (7.2M rows), 3 runs
//! PLANTFLOW_BENCH_TAGS=200 PLANTFLOW_BENCH_SECONDS=600 PLANTFLOW_BENCH_RUNS=1 cargo bench --bench pipeline
//! PLANTFLOW_BENCH_SPILL=10m cargo bench --bench pipeline   # closed windows on disk after 10 minutes
//! PLANTFLOW_BENCH_PINNED=1 cargo bench --bench pipeline    # also 1 worker on 1 core against 2 on 2
//! ```
//!
//! The baseline (`baseline()` below) reads `samples.csv` once, aggregates
//! 1-minute windows in a hash map, joins assets, tariff and production at the
//! end, and writes the same aggregates and actions to zstd Parquet: no
//! streaming, no lateness, no corrections, no dataflow. It runs as a child
//! process of this harness (`--baseline DIR OUT`) so both are measured whole.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt8Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
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

type Asset = (String, String, String, String, f64);

/// One window's running aggregate: (window start, count, sum, min, max).
type Acc = (i64, i64, f64, f64, f64);

/// The baseline's state: per tag, the (at most two) windows still open —
/// rows are at most 5 s late, so a row of window k+1 means window k−1 is
/// complete and can be enriched into the output columns. Memory stays flat
/// and the cost per row is constant.
struct Base {
    assets: HashMap<String, Asset>,
    price: [f64; 24],
    runs: HashMap<String, Vec<(i64, i64)>>,
    ids: FxHashMap<String, u32>,
    names: Vec<String>,
    open: Vec<[Option<Acc>; 2]>,
    cols: Columns,
    waste: HashMap<(String, i64), (f64, f64)>,
    rows: u64,
}

impl Base {
    fn add(&mut self, ts: i64, tag: &str, v: f64, q: u8) {
        self.rows += 1;
        if q == 2 {
            return;
        }
        let id = match self.ids.get(tag) {
            Some(id) => *id as usize,
            None => {
                self.ids.insert(tag.to_string(), self.names.len() as u32);
                self.names.push(tag.to_string());
                self.open.push([None, None]);
                self.names.len() - 1
            }
        };
        let ws = ts.div_euclid(60_000) * 60_000;
        let slots = &mut self.open[id];
        let i = match slots.iter().position(|s| s.is_some_and(|a| a.0 == ws)) {
            Some(i) => i,
            None => {
                // A free slot, or the oldest window (complete by now) makes room.
                let i = match slots.iter().position(|s| s.is_none()) {
                    Some(i) => i,
                    None => {
                        let i = if slots[0].map(|a| a.0) < slots[1].map(|a| a.0) {
                            0
                        } else {
                            1
                        };
                        let done = slots[i].take().expect("both slots are full");
                        self.emit(id, done);
                        i
                    }
                };
                self.open[id][i] = Some((ws, 0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
                i
            }
        };
        if let Some(a) = self.open[id][i].as_mut() {
            a.1 += 1;
            a.2 += v;
            a.3 = a.3.min(v);
            a.4 = a.4.max(v);
        }
    }

    /// Enriches one complete window into the output columns.
    fn emit(&mut self, id: usize, (ws, n, sum, min, max): Acc) {
        let tag = &self.names[id];
        let Some((asset, _site, line, _kind, standby)) = self.assets.get(tag) else {
            return;
        };
        let mean = sum / n as f64;
        let energy = mean / 60.0;
        let p = self.price[(ws.div_euclid(3_600_000).rem_euclid(24)) as usize];
        let producing = self
            .runs
            .get(line)
            .is_some_and(|rs| rs.iter().any(|(a, b)| *a <= ws && ws < *b));
        let w = if !producing && mean > *standby {
            energy
        } else {
            0.0
        };
        let e = self
            .waste
            .entry((asset.clone(), ws.div_euclid(3_600_000) * 3_600_000))
            .or_default();
        e.0 += w;
        e.1 += w * p;
        let c = &mut self.cols;
        c.0.push(tag.clone());
        c.1.push(ws);
        c.2.push(n);
        c.3.push(mean);
        c.4.push(min);
        c.5.push(max);
        c.6.push(energy);
        c.7.push(energy * p);
        c.8.push(producing);
        c.9.push(w);
    }

    /// Emits every window still open (end of input).
    fn finish(&mut self) {
        for id in 0..self.open.len() {
            for i in 0..2 {
                if let Some(a) = self.open[id][i].take() {
                    self.emit(id, a);
                }
            }
        }
    }
}

/// The plain single-pass program. Returns rows read.
fn baseline(input: &Path, samples: &Path, out: &Path) -> u64 {
    // Context.
    let mut assets: HashMap<String, Asset> = HashMap::new();
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
    let mut base = Base {
        assets,
        price,
        runs,
        ids: FxHashMap::default(),
        names: Vec::new(),
        open: Vec::new(),
        cols: Columns::default(),
        waste: HashMap::new(),
        rows: 0,
    };
    if samples.extension().is_some_and(|e| e == "parquet") {
        let file = std::fs::File::open(samples).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .with_batch_size(8192)
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ts = batch.column(0).as_primitive::<TimestampMillisecondType>();
            let tag = batch.column(1).as_string::<i32>();
            let v = batch.column(2).as_primitive::<Float64Type>();
            let q = batch.column(3).as_primitive::<UInt8Type>();
            for i in 0..batch.num_rows() {
                base.add(ts.value(i), tag.value(i), v.value(i), q.value(i));
            }
        }
    } else {
        let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(samples).unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line.clear();
        while r.read_line(&mut line).unwrap() > 0 {
            let mut it = line.trim_end().split(',');
            let (ts, tag, v, q) = (
                it.next().unwrap(),
                it.next().unwrap(),
                it.next().unwrap(),
                it.next().unwrap(),
            );
            base.add(
                ts.parse().unwrap(),
                tag,
                v.parse().unwrap(),
                q.parse().unwrap(),
            );
            line.clear();
        }
    }
    base.finish();
    let Base {
        cols, waste, rows, ..
    } = base;
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

/// (seconds since start, RSS MiB) samples of one run.
type RssTrace = Vec<(f64, f64)>;

/// The analysts' tools `benches/analysts.py` can run here (DuckDB and
/// Polars, when Python imports them; none with PLANTFLOW_BENCH_ANALYSTS=0).
fn analysts() -> Vec<String> {
    if env_or("PLANTFLOW_BENCH_ANALYSTS", 1) == 0 {
        return vec![];
    }
    ["duckdb", "polars"]
        .into_iter()
        .filter(|t| {
            Command::new("python3")
                .args(["-c", &format!("import {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
        .collect()
}

/// Resident set of a running process, MiB.
fn rss_of(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Runs a command to completion, sampling its RSS every 50 ms.
fn run_sampled(cmd: &mut Command) -> (std::process::Output, RssTrace) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut trace = Vec::new();
    let pid = child.id();
    // Read the pipes on threads so a full pipe never stalls the child.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).ok();
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).ok();
        b
    });
    // RSS is sampled on a thread; this one waits for the exit itself, so
    // the wall time ends when the child does (not at the next sample).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut trace = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(r) = rss_of(pid) {
                    trace.push((started.elapsed().as_secs_f64(), r));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            trace
        })
    };
    let status = child.wait().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    trace.extend(sampler.join().unwrap());
    let output = std::process::Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    (output, trace)
}

/// `PLANTFLOW_BENCH_PINNED=1`: what a second core gives plantflow. One
/// worker with the whole process held to one core (`taskset -c 0`: its
/// source thread, worker and writer share it) against two workers on both
/// cores, alternately, medians. On a 2-core machine this is the only way
/// to see a worker's scaling: unpinned, one worker's threads already use
/// both cores.
fn pinned(
    formats: &[String],
    (input, root, dataflow): (&Path, &Path, &Path),
    (bin, rows, runs): (&str, u64, u64),
) {
    for format in formats {
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (k, t) in times.iter_mut().enumerate() {
                let out = root.join(format!("out-pinned-{k}"));
                let _ = std::fs::remove_dir_all(&out);
                let mut c = Command::new(if k == 0 { "taskset" } else { bin });
                if k == 0 {
                    c.args(["-c", "0", bin]);
                }
                c.args(["run", "--json", "--workers", &(k + 1).to_string()])
                    .arg(dataflow)
                    .env("INPUT_DIR", input)
                    .env("SAMPLES_FILE", format!("samples.{format}"))
                    .env("OUT_DIR", &out);
                let started = Instant::now();
                let (o, _) = run_sampled(&mut c);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                t.push(started.elapsed().as_secs_f64());
            }
        }
        let [one, two] = times.map(median);
        println!(
            "{format:<8} 1 worker on 1 core {one:.2} s ({:.2} M rows/s), 2 workers on 2 cores {two:.2} s ({:.2} M rows/s): {:.2}x",
            rows as f64 / one / 1e6,
            rows as f64 / two / 1e6,
            one / two
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--baseline") {
        let (input, samples, out) = (
            PathBuf::from(&args[i + 1]),
            PathBuf::from(&args[i + 2]),
            PathBuf::from(&args[i + 3]),
        );
        let rows = baseline(&input, &samples, &out);
        println!("{rows} {:.1}", peak_rss_mib());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harness=false benches to list; nothing to list.
    }
    let tags = env_or("PLANTFLOW_BENCH_TAGS", 2000) as usize;
    let seconds = env_or("PLANTFLOW_BENCH_SECONDS", 3600);
    let runs = env_or("PLANTFLOW_BENCH_RUNS", 3).max(1);
    let stages = env_or("PLANTFLOW_BENCH_STAGES", 1) == 1;
    let formats: Vec<String> = std::env::var("PLANTFLOW_BENCH_FORMATS")
        .unwrap_or_else(|_| "csv,parquet".into())
        .split(',')
        .map(|f| f.trim().to_string())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let input = plantflow::bench::workload(&root, tags, seconds);
    if formats.iter().any(|f| f == "parquet") && !input.join("samples.parquet").exists() {
        eprintln!("converting samples.csv to samples.parquet");
        plantflow::gen::workload::samples_to_parquet(
            &input.join("samples.csv"),
            &input.join("samples.parquet"),
        )
        .expect("write samples.parquet");
    }
    let rows = (tags as u64) * seconds;
    let me = std::env::current_exe().unwrap();
    let bin = env!("CARGO_BIN_EXE_plantflow");
    let mut dataflow = Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/workload_v1.toml");
    // PLANTFLOW_BENCH_SPILL=10m: the same job with closed windows on disk after 10 minutes.
    let spill = std::env::var("PLANTFLOW_BENCH_SPILL").ok();
    if let Some(after) = &spill {
        let toml = std::fs::read_to_string(&dataflow).unwrap();
        let toml = toml.replace(
            "retention = \"2h\"",
            &format!(
                "retention = \"2h\"\nspill_after = \"{after}\"\nstate_dir = \"{}\"",
                root.join("state").display()
            ),
        );
        dataflow = root.join("workload_v1_spill.toml");
        std::fs::write(&dataflow, toml).unwrap();
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "workload v1: {tags} tags x {seconds} s = {rows} rows -> Parquet, median of {runs} run(s), {cores} cores{}",
        spill.as_ref().map(|a| format!(", spill_after = {a}")).unwrap_or_default()
    );
    println!(
        "{:<8} {:<28} {:>8} {:>12} {:>10} {:>12}",
        "input", "program", "wall s", "rows/s", "ratio", "peak RSS MiB"
    );
    for format in &formats {
        let samples = input.join(format!("samples.{format}"));
        let mut results: Vec<(String, Vec<Sample>, RssTrace)> = vec![
            ("single-pass Rust baseline".into(), vec![], vec![]),
            ("plantflow run --workers 1".into(), vec![], vec![]),
            ("plantflow run --workers 2".into(), vec![], vec![]),
            ("plantflow 2 processes x 1 worker".into(), vec![], vec![]),
        ];
        // What an analyst would use instead, when Python has it (CSV only).
        let tools = if format == "csv" { analysts() } else { vec![] };
        results.extend(
            tools
                .iter()
                .map(|t| (format!("{t} (benches/analysts.py)"), vec![], vec![])),
        );
        let mut same = None;
        for _ in 0..runs {
            for (k, (results_k, samples_k, trace_k)) in results.iter_mut().enumerate() {
                let out = root.join(format!("out-{k}"));
                let _ = std::fs::remove_dir_all(&out);
                let started = Instant::now();
                let (output, trace) = if k == 0 {
                    run_sampled(
                        Command::new(&me)
                            .arg("--baseline")
                            .arg(&input)
                            .arg(&samples)
                            .arg(&out),
                    )
                } else if k >= 4 {
                    run_sampled(
                        Command::new("python3")
                            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/analysts.py"))
                            .args(["--one", &tools[k - 4], "--input"])
                            .arg(&input)
                            .arg("--out")
                            .arg(&out),
                    )
                } else if k == 3 {
                    // `cluster local`: two processes on loopback, one summary.
                    run_sampled(
                        Command::new(bin)
                            .args(["cluster", "local", "--json", "--processes", "2", "-w", "1"])
                            .arg(&dataflow)
                            .env("INPUT_DIR", &input)
                            .env("SAMPLES_FILE", format!("samples.{format}"))
                            .env("OUT_DIR", &out),
                    )
                } else {
                    run_sampled(
                        Command::new(bin)
                            .args(["run", "--json", "--workers", &k.to_string()])
                            .arg(&dataflow)
                            .env("INPUT_DIR", &input)
                            .env("SAMPLES_FILE", format!("samples.{format}"))
                            .env("OUT_DIR", &out),
                    )
                };
                let secs = started.elapsed().as_secs_f64();
                assert!(
                    output.status.success(),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let stdout = String::from_utf8_lossy(&output.stdout);
                let rss_mib = if k >= 4 {
                    trace.iter().map(|t| t.1).fold(0.0, f64::max)
                } else if k == 0 {
                    let mut it = stdout.split_whitespace();
                    assert_eq!(it.next().and_then(|x| x.parse().ok()), Some(rows));
                    it.next().and_then(|x| x.parse().ok()).unwrap_or(0.0)
                } else {
                    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
                    assert_eq!(v["rows_read"].as_u64(), Some(rows));
                    // Every plantflow run computes the same windows and
                    // actions (a cluster that split its input wrongly did not).
                    let made = (v["windows"].clone(), v["actions"].clone());
                    let first = same.get_or_insert_with(|| made.clone());
                    assert_eq!(*first, made, "{}: windows and actions differ", results_k);
                    if spill.is_some() {
                        eprintln!(
                            "  plantflow --workers {k}: {} windows spilled, {} read back",
                            v["windows_spilled"], v["windows_restored"]
                        );
                    }
                    // A cluster's memory is its processes' together.
                    let bytes = match v["processes"].as_array() {
                        Some(ps) => ps.iter().filter_map(|p| p["peak_rss_bytes"].as_f64()).sum(),
                        None => v["peak_rss_bytes"].as_f64().unwrap_or(0.0),
                    };
                    bytes / (1 << 20) as f64
                };
                samples_k.push(Sample { secs, rss_mib });
                *trace_k = trace;
            }
        }
        let base = median(results[0].1.iter().map(|s| s.secs).collect());
        for (name, samples, _) in &results {
            let secs = median(samples.iter().map(|s| s.secs).collect());
            let rss = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
            println!(
                "{:<8} {:<28} {:>8.2} {:>12.0} {:>9.2}x {:>12.1}",
                format,
                name,
                secs,
                rows as f64 / secs,
                base / secs,
                rss
            );
        }
        // How `--workers 2` compares with each other program (time over its time).
        let medians: Vec<f64> = results
            .iter()
            .map(|r| median(r.1.iter().map(|s| s.secs).collect()))
            .collect();
        let versus: Vec<String> = results
            .iter()
            .zip(&medians)
            .enumerate()
            .filter(|(k, _)| *k != 2)
            .map(|(_, ((name, _, _), m))| format!("{:.2}x {name}", m / medians[2]))
            .collect();
        println!("{format:<8} `--workers 2` is {}", versus.join(", "));
        // RSS over the last two-worker run: flat once the retention is full.
        let trace = &results[2].2;
        if trace.len() >= 10 {
            let deciles: Vec<String> = (1..=10)
                .map(|d| {
                    format!(
                        "{:.0}",
                        trace[(trace.len() * d / 10).min(trace.len() - 1)].1
                    )
                })
                .collect();
            println!(
                "{:<8} RSS of `--workers 2` at 10%..100% of its run (MiB): {}",
                format,
                deciles.join(" ")
            );
        }
    }
    if env_or("PLANTFLOW_BENCH_PINNED", 0) == 1 {
        pinned(&formats, (&input, &root, &dataflow), (bin, rows, runs));
    }
    if stages {
        let csv = input.join("samples.csv");
        let mut read = Vec::new();
        let mut decode = Vec::new();
        let mut agg = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            assert_eq!(plantflow::bench::csv_rows(&csv).unwrap(), rows);
            read.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let batches = plantflow::bench::decode_csv(&input).unwrap();
            decode.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let windows = plantflow::bench::preaggregate(batches);
            agg.push(t.elapsed().as_secs_f64());
            assert!(
                windows >= tags as u64 * (seconds / 60),
                "{windows} window updates"
            );
        }
        println!("stages (in process, one thread each, median of {runs}):");
        for (name, v, what) in [
            ("csv read", read, "reader: lines split into fields"),
            (
                "decode",
                decode,
                "reader + parse, tag lookup, quality, watermark, bridge",
            ),
            (
                "pre-aggregate",
                agg,
                "timely window operator, 1 worker, decoded batches",
            ),
        ] {
            let secs = median(v);
            println!(
                "  {:<14} {:>8.2} s {:>12.0} rows/s   ({what})",
                name,
                secs,
                rows as f64 / secs
            );
        }
    }
}
