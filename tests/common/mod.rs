//! Shared helpers for the integration tests: running a dataflow, reading the
//! Parquet lake back, and comparing numbers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workload_v1_small")
}

pub fn dataflow(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dataflows")
        .join(name)
}

/// Loads `file` with INPUT_DIR / OUT_DIR set to the given directories.
pub fn load(file: &Path, input: &Path, out: &Path) -> plantflow::config::Plan {
    let (i, o) = (input.display().to_string(), out.display().to_string());
    let env = move |k: &str| match k {
        "INPUT_DIR" => Some(i.clone()),
        "OUT_DIR" => Some(o.clone()),
        _ => None,
    };
    match plantflow::config::load_with_env(file, &env) {
        Ok(p) => p,
        Err(e) => panic!("{}", e.render()),
    }
}

pub fn run(file: &Path, input: &Path, out: &Path, workers: usize) -> plantflow::run::RunSummary {
    let plan = load(file, input, out);
    plantflow::run::run(
        plan,
        plantflow::run::RunOptions {
            workers,
            follow: false,
            stop: None,
        },
    )
    .expect("run succeeds")
}

/// Every committed Parquet file of `table` (hidden in-progress files excluded).
pub fn parquet_files(root: &Path, table: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "parquet")
                    && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(table), &mut out);
    out.sort();
    out
}

pub fn batches(root: &Path, table: &str) -> Vec<RecordBatch> {
    parquet_files(root, table)
        .into_iter()
        .flat_map(|f| {
            let file = std::fs::File::open(&f).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One `aggregates` row as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Agg {
    pub count: i64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub energy_kwh: f64,
    pub cost: f64,
    pub producing: bool,
    pub waste_kwh: f64,
    pub price: f64,
    pub revision: i64,
}

fn f64s(b: &RecordBatch, name: &str) -> Vec<f64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    c.as_primitive::<Float64Type>().values().to_vec()
}

fn strs(b: &RecordBatch, name: &str) -> Vec<String> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let s = c.as_string::<i32>();
    (0..s.len()).map(|i| s.value(i).to_string()).collect()
}

fn tss(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    c.as_primitive::<TimestampMillisecondType>()
        .values()
        .to_vec()
}

fn i64s(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = b
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    c.as_primitive::<Int64Type>().values().to_vec()
}

/// Every revision of every aggregate, keyed by (tag, window_start).
pub fn all_aggregates(root: &Path) -> Vec<((String, i64), Agg)> {
    let mut out = Vec::new();
    for b in batches(root, "aggregates") {
        let (tag, ws, count) = (strs(&b, "tag"), tss(&b, "window_start"), i64s(&b, "count"));
        let (mean, min, max) = (f64s(&b, "mean"), f64s(&b, "min"), f64s(&b, "max"));
        let (e, c, w, p) = (
            f64s(&b, "energy_kwh"),
            f64s(&b, "cost"),
            f64s(&b, "waste_kwh"),
            f64s(&b, "price_per_kwh"),
        );
        let prod = b.column_by_name("producing").unwrap().as_boolean().clone();
        let rev = i64s(&b, "revision");
        for i in 0..b.num_rows() {
            out.push((
                (tag[i].clone(), ws[i]),
                Agg {
                    count: count[i],
                    mean: mean[i],
                    min: min[i],
                    max: max[i],
                    energy_kwh: e[i],
                    cost: c[i],
                    producing: prod.value(i),
                    waste_kwh: w[i],
                    price: p[i],
                    revision: rev[i],
                },
            ));
        }
    }
    out
}

/// The latest revision of each aggregate.
pub fn latest_aggregates(root: &Path) -> HashMap<(String, i64), Agg> {
    let mut m: HashMap<(String, i64), Agg> = HashMap::new();
    for (k, a) in all_aggregates(root) {
        match m.get(&k) {
            Some(old) if old.revision > a.revision => {}
            Some(old) if old.revision == a.revision => {
                panic!("duplicate revision {} for {k:?}", a.revision)
            }
            _ => {
                m.insert(k, a);
            }
        }
    }
    m
}

/// One `actions` row as read back.
#[derive(Clone, Debug)]
pub struct Action {
    pub action_id: String,
    pub asset: String,
    pub period_start: i64,
    pub value: f64,
    pub owner: String,
    pub action_type: String,
    pub value_category: String,
    pub status: String,
    pub evidence: serde_json::Value,
    pub revision: i64,
}

pub fn all_actions(root: &Path) -> Vec<Action> {
    let mut out = Vec::new();
    for b in batches(root, "actions") {
        let (id, asset, ps, v) = (
            strs(&b, "action_id"),
            strs(&b, "asset"),
            tss(&b, "period_start"),
            f64s(&b, "value"),
        );
        let (o, t, vc, st, ev) = (
            strs(&b, "owner"),
            strs(&b, "action_type"),
            strs(&b, "value_category"),
            strs(&b, "status"),
            strs(&b, "evidence"),
        );
        let rev = i64s(&b, "revision");
        for i in 0..b.num_rows() {
            out.push(Action {
                action_id: id[i].clone(),
                asset: asset[i].clone(),
                period_start: ps[i],
                value: v[i],
                owner: o[i].clone(),
                action_type: t[i].clone(),
                value_category: vc[i].clone(),
                status: st[i].clone(),
                evidence: serde_json::from_str(&ev[i]).unwrap(),
                revision: rev[i],
            });
        }
    }
    out
}

/// Latest revision of each action, keyed by (asset, period_start); withdrawn ones dropped.
pub fn latest_actions(root: &Path) -> HashMap<(String, i64), Action> {
    let mut by_id: HashMap<String, Action> = HashMap::new();
    for a in all_actions(root) {
        match by_id.get(&a.action_id) {
            Some(old) if old.revision > a.revision => {}
            _ => {
                by_id.insert(a.action_id.clone(), a);
            }
        }
    }
    by_id
        .into_values()
        .filter(|a| a.status != "withdrawn")
        .map(|a| ((a.asset.clone(), a.period_start), a))
        .collect()
}

/// Dead-letter rows: (reason, raw).
pub fn dead_letters(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in batches(root, "dead_letter") {
        let (r, raw) = (strs(&b, "reason"), strs(&b, "raw"));
        out.extend(r.into_iter().zip(raw));
    }
    out
}

pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a - b).abs() < 1e-12
}

#[track_caller]
pub fn assert_close(got: f64, want: f64, what: &str) {
    assert!(close(got, want), "{what}: got {got}, want {want}");
}

/// Kills the child if the test fails before it exits on its own.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Starts `plantflow run --follow <df>` with INPUT_DIR / OUT_DIR set; killed on drop.
pub fn spawn_follow(df: &Path, input: &Path, out: &Path) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
            .args(["run", "--follow"])
            .arg(df)
            .env("INPUT_DIR", input)
            .env("OUT_DIR", out)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    )
}
