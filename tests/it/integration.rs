//! End-to-end tests: real dataflows, real files, Parquet read back and
//! compared with independent oracles (DuckDB's expected output for the
//! fixture, and from-scratch recomputations written here).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use rand::{Rng, SeedableRng};

const PLANTFLOW: &str = env!("CARGO_BIN_EXE_plantflow");

#[test]
fn fixture_matches_duckdb_oracle() {
    let out = tempfile::tempdir().unwrap();
    let summary = run(&dataflow("workload_v1.toml"), &fixture_dir(), out.path(), 1);
    assert_eq!(summary.rows_read, 90_000);
    assert_eq!(
        summary.dropped_quality, 77,
        "the manifest lists 77 bad rows"
    );
    assert_eq!(summary.windows, 1500);

    let got = latest_aggregates(out.path());
    assert_aggregates_equal(&got, &expected_aggregates());

    assert_actions_match_oracle(out.path());
    // Files are committed: no in-progress file is left anywhere.
    let leftovers = walk_all(out.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".inprogress"))
        .count();
    assert_eq!(leftovers, 0);
}

fn walk_all(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_all(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn two_workers_equal_one() {
    let (o1, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&dataflow("workload_v1.toml"), &fixture_dir(), o1.path(), 1);
    run(&dataflow("workload_v1.toml"), &fixture_dir(), o2.path(), 2);
    let (a1, a2) = (latest_aggregates(o1.path()), latest_aggregates(o2.path()));
    assert_eq!(a1.len(), 1500);
    assert_aggregates_equal(&a2, &a1);
    let (x1, x2) = (latest_actions(o1.path()), latest_actions(o2.path()));
    assert_eq!(x1.len(), x2.len());
    for (k, a) in &x1 {
        let b = &x2[k];
        assert_eq!(a.action_id, b.action_id);
        assert_eq!(a.revision, b.revision, "same revision history for {k:?}");
        assert_close(b.value, a.value, "action value");
    }
}

#[test]
fn parquet_replay_matches_csv_replay() {
    use arrow::array::{Float64Array, Int64Array, StringArray, UInt8Array};
    use std::sync::Arc;
    let input = tempfile::tempdir().unwrap();
    for f in ["assets.csv", "tariff.csv", "production.csv"] {
        std::fs::copy(fixture_dir().join(f), input.path().join(f)).unwrap();
    }
    let mut r = csv::Reader::from_path(fixture_dir().join("samples.csv")).unwrap();
    let (mut ts, mut tag, mut val, mut q) = (vec![], vec![], vec![], vec![]);
    for rec in r.records() {
        let rec = rec.unwrap();
        ts.push(rec[0].parse::<i64>().unwrap());
        tag.push(rec[1].to_string());
        val.push(rec[2].parse::<f64>().unwrap());
        q.push(rec[3].parse::<u8>().unwrap());
    }
    let batch = arrow::record_batch::RecordBatch::try_from_iter(vec![
        (
            "ts",
            Arc::new(Int64Array::from(ts)) as arrow::array::ArrayRef,
        ),
        ("tag", Arc::new(StringArray::from(tag)) as _),
        ("value", Arc::new(Float64Array::from(val)) as _),
        ("quality", Arc::new(UInt8Array::from(q)) as _),
    ])
    .unwrap();
    let file = std::fs::File::create(input.path().join("samples.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("samples.csv", "samples.parquet");
    let df = input.path().join("df.toml");
    std::fs::write(&df, toml).unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = run(&df, input.path(), out.path(), 1);
    assert_eq!(s.rows_read, 90_000);
    assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
}

// ---------------------------------------------------------------------------
// Seeded oracle: out-of-order and very late rows vs a from-scratch recomputation.

struct Case {
    assets: Vec<(String, String, String, f64)>, // tag, asset, line, standby
    runs: Vec<(String, i64, i64)>,
    rows: Vec<(i64, String, f64, u8)>, // in arrival order
}

const PRICES: [(u32, u32, f64); 4] = [(0, 7, 0.08), (7, 17, 0.22), (17, 21, 0.3), (21, 24, 0.12)];

fn price_at(ms: i64) -> f64 {
    let h = (ms.div_euclid(3_600_000)).rem_euclid(24) as u32;
    PRICES.iter().find(|(a, b, _)| *a <= h && h < *b).unwrap().2
}

fn make_case(seed: u64) -> Case {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // 06:40 UTC: crosses the 07:00 tariff change and an hour boundary.
    let start = 1_767_595_200_000 + 6 * 3_600_000 + 40 * 60_000 - 1_767_595_200_000 % 86_400_000;
    let mut assets = Vec::new();
    for a in 0..4 {
        let line = format!("site1/line{}", a % 2 + 1);
        for sig in ["power_kw", "aux_kw"] {
            assets.push((
                format!("{line}/comp{a}/{sig}"),
                format!("{line}/comp{a}"),
                line.clone(),
                2.0 + a as f64,
            ));
        }
    }
    let runs = vec![
        (
            "site1/line1".to_string(),
            start + 5 * 60_000 + 17_000,
            start + 17 * 60_000,
        ),
        (
            "site1/line2".to_string(),
            start + 20 * 60_000,
            start + 40 * 60_000 + 500,
        ),
    ];
    // Generate in event order, then give each row an arrival time.
    let mut events = Vec::new();
    for s in 0..(40 * 60) {
        for (i, (tag, _, _, _)) in assets.iter().enumerate() {
            let ts = start + s * 1000 + (i as i64 * 97) % 1000;
            let base = if tag.ends_with("power_kw") {
                10.0 + 10.0 * (i % 3) as f64
            } else {
                1.0
            };
            let roll: f64 = rng.random();
            let (value, q) = if roll < 0.01 {
                (1.0e6, 2u8)
            } else if roll < 0.03 {
                (base * 1.1, 1)
            } else {
                (base + rng.random_range(-1.0..1.0), 0)
            };
            let late: f64 = rng.random();
            let delay = if late < 0.02 {
                rng.random_range(10_000..600_000) // minutes late: beyond allowed lateness
            } else if late < 0.03 {
                rng.random_range(1..5_000)
            } else {
                0
            };
            events.push((ts + delay, ts, tag.clone(), value, q));
        }
    }
    events.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    let rows = events
        .into_iter()
        .map(|(_, ts, tag, v, q)| (ts, tag, v, q))
        .collect();
    Case { assets, runs, rows }
}

fn write_case(c: &Case, dir: &Path) {
    let mut f = std::fs::File::create(dir.join("samples.csv")).unwrap();
    writeln!(f, "ts,tag,value,quality").unwrap();
    for (ts, tag, v, q) in &c.rows {
        writeln!(f, "{ts},{tag},{v},{q}").unwrap();
    }
    let mut f = std::fs::File::create(dir.join("assets.csv")).unwrap();
    writeln!(f, "tag,asset,site,line,kind,standby_kw").unwrap();
    for (tag, asset, line, sb) in &c.assets {
        writeln!(f, "{tag},{asset},site1,{line},compressor,{sb}").unwrap();
    }
    let mut f = std::fs::File::create(dir.join("tariff.csv")).unwrap();
    writeln!(f, "start_hour,end_hour,price_per_kwh").unwrap();
    for (a, b, p) in PRICES {
        writeln!(f, "{a},{b},{p}").unwrap();
    }
    let mut f = std::fs::File::create(dir.join("production.csv")).unwrap();
    writeln!(f, "line,start_ms,end_ms").unwrap();
    for (l, a, b) in &c.runs {
        writeln!(f, "{l},{a},{b}").unwrap();
    }
}

/// Batch recomputation of workload v1 over all rows, independent of the engine.
type Keyed<T> = HashMap<(String, i64), T>;

fn oracle(c: &Case) -> (Keyed<Agg>, Keyed<f64>) {
    let mut acc: BTreeMap<(String, i64), (i64, f64, f64, f64)> = BTreeMap::new();
    for (ts, tag, v, q) in &c.rows {
        if *q == 2 {
            continue;
        }
        let ws = ts.div_euclid(60_000) * 60_000;
        let e = acc
            .entry((tag.clone(), ws))
            .or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(*v);
        e.3 = e.3.max(*v);
    }
    let mut aggs = HashMap::new();
    let mut waste: HashMap<(String, i64), (f64, f64)> = HashMap::new();
    for ((tag, ws), (n, sum, min, max)) in acc {
        let (_, asset, line, standby) = c.assets.iter().find(|a| a.0 == tag).unwrap();
        let mean = sum / n as f64;
        let energy = mean / 60.0;
        let producing = c
            .runs
            .iter()
            .any(|(l, a, b)| l == line && *a <= ws && ws < *b);
        let w = if !producing && mean > *standby {
            energy
        } else {
            0.0
        };
        let price = price_at(ws);
        let hour = ws.div_euclid(3_600_000) * 3_600_000;
        let e = waste.entry((asset.clone(), hour)).or_default();
        e.0 += w;
        e.1 += w * price;
        aggs.insert(
            (tag, ws),
            Agg {
                count: n,
                mean,
                min,
                max,
                energy_kwh: energy,
                cost: energy * price,
                producing,
                waste_kwh: w,
                price,
                revision: 0,
            },
        );
    }
    let actions = waste
        .into_iter()
        .filter(|(_, (w, _))| *w > 1.0)
        .map(|(k, (_, cost))| (k, cost))
        .collect();
    (aggs, actions)
}

/// workload_v1.toml with closed windows spilled to `state_dir` after `after`.
fn spilling_dataflow(dir: &Path, after: &str, state_dir: &Path) -> std::path::PathBuf {
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let retention = "retention = \"2h\"";
    assert!(toml.contains(retention));
    let toml = toml.replace(
        retention,
        &format!(
            "{retention}\nspill_after = \"{after}\"\nstate_dir = \"{}\"",
            state_dir.display()
        ),
    );
    let df = dir.join(format!("spill-{after}.toml"));
    std::fs::write(&df, toml).unwrap();
    df
}

#[test]
fn late_rows_correct_windows_and_actions_seeded() {
    let (mut groups_spilled, mut groups_restored) = (0, 0);
    for seed in [1u64, 2, 3] {
        let c = make_case(seed);
        let input = tempfile::tempdir().unwrap();
        write_case(&c, input.path());
        let (want_aggs, want_actions) = oracle(&c);
        // Also with closed windows on disk after a minute: most very late rows
        // (10 s to 10 min) then land in a spilled window start.
        let state = tempfile::tempdir().unwrap();
        let spilling = spilling_dataflow(input.path(), "1m", state.path());
        // (spilling is on by default: "0s" keeps everything in memory)
        let in_memory = spilling_dataflow(input.path(), "0s", state.path());
        for (workers, spill) in [(1, false), (2, false), (1, true), (2, true)] {
            let out = tempfile::tempdir().unwrap();
            let df = if spill {
                spilling.clone()
            } else {
                in_memory.clone()
            };
            let s = run(&df, input.path(), out.path(), workers);
            if spill {
                assert!(
                    s.windows_spilled > 0 && s.windows_restored > 0,
                    "seed {seed}: windows went to disk ({}) and came back ({})",
                    s.windows_spilled,
                    s.windows_restored
                );
                // The 06:00 hour's rule accumulators go to disk a minute
                // after it closes, if the run sees its frontier between 07:01
                // and the end of input (timing: the fold's own unit test
                // covers spilling deterministically); late rows bring them back.
                groups_spilled += s.groups_spilled;
                groups_restored += s.groups_restored;
                // The 06:00 hour's actions go to the ledger at 07:00, and the
                // rows up to 10 minutes late correct them from there.
                assert!(
                    s.actions_evicted > 0 && s.actions_restored > 0,
                    "seed {seed}: actions went to the ledger ({}) and corrections fetched them back ({})",
                    s.actions_evicted,
                    s.actions_restored
                );
                assert_eq!(
                    walk_all(state.path()),
                    Vec::<std::path::PathBuf>::new(),
                    "the spill files are scratch, removed at the end"
                );
            } else {
                assert_eq!(s.windows_spilled, 0);
            }
            assert!(
                s.late_rows > 10,
                "seed {seed}: the case must contain very late rows, got {}",
                s.late_rows
            );
            assert!(
                s.corrections > 0,
                "seed {seed}: late rows must produce corrections"
            );
            assert_eq!(
                s.dead_letters.values().sum::<u64>(),
                0,
                "nothing is dropped within retention"
            );
            let all = all_aggregates(out.path());
            assert!(all.iter().any(|(_, a)| a.revision > 0));
            assert_aggregates_equal(&latest_aggregates(out.path()), &want_aggs);
            let got = latest_actions(out.path());
            let mut gk: Vec<_> = got.keys().cloned().collect();
            let mut wk: Vec<_> = want_actions.keys().cloned().collect();
            gk.sort();
            wk.sort();
            assert_eq!(
                gk, wk,
                "seed {seed}, {workers} workers, spill {spill}: action keys"
            );
            for (k, v) in &want_actions {
                assert_close(got[k].value, *v, &format!("seed {seed}: action {k:?}"));
            }
            // The run summary's totals, kept as differences and nothing per
            // action, agree with the actions table's latest versions.
            let tally = &s.report.tally;
            let ids: std::collections::HashSet<String> = all_actions(out.path())
                .into_iter()
                .map(|a| a.action_id)
                .collect();
            assert_eq!(tally.seen(), ids.len(), "seed {seed}: actions seen");
            assert_eq!(tally.counted(), got.len(), "seed {seed}: actions counted");
            assert_close(
                tally.value(),
                got.values().map(|a| a.value).sum(),
                &format!("seed {seed}: value at stake"),
            );
        }
    }
    assert!(
        groups_spilled > 0 && groups_restored > 0,
        "rule accumulators went to disk ({groups_spilled}) and late rows into a spilled period read them back ({groups_restored})"
    );
}

// ---------------------------------------------------------------------------
// Bad input: counted, dead-lettered with a reason, never a panic.

#[test]
fn bad_rows_go_to_dead_letter_with_reasons() {
    let input = tempfile::tempdir().unwrap();
    for f in ["assets.csv", "tariff.csv", "production.csv"] {
        std::fs::copy(fixture_dir().join(f), input.path().join(f)).unwrap();
    }
    let tag = "site1/line1/comp01/power_kw";
    let t0 = 1_767_596_100_000i64;
    let mut s = String::from("ts,tag,value,quality\n");
    for i in 0..120 {
        s.push_str(&format!("{},{tag},10.0,0\n", t0 + i * 1000));
    }
    let bad = [
        (
            format!("{t0},{tag},10.0"),
            "malformed row (3 fields, expected 4)",
        ),
        (format!("{t0},no/such/tag,10.0,0"), "unknown tag"),
        (format!("{t0},{tag},ten,0"), "non-numeric value"),
        (format!("{t0},{tag},NaN,0"), "value is NaN or infinite"),
        (format!("{t0},{tag},inf,0"), "value is NaN or infinite"),
        (
            format!("{},{tag},10.0,0", t0 + 400 * 86_400_000),
            "timestamp out of range",
        ),
        (format!("12,{tag},10.0,0"), "timestamp out of range"),
        (format!("soon,{tag},10.0,0"), "invalid timestamp"),
        (format!("{t0},{tag},10.0,excellent"), "invalid quality"),
    ];
    for (line, _) in &bad {
        s.push_str(line);
        s.push('\n');
    }
    std::fs::write(input.path().join("samples.csv"), s).unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = run(&dataflow("workload_v1.toml"), input.path(), out.path(), 1);
    assert_eq!(summary.rows_accepted, 120);
    assert_eq!(summary.dead_letters.values().sum::<u64>(), bad.len() as u64);
    let mut got = dead_letters(out.path());
    got.sort();
    let mut want: Vec<(String, String)> = bad
        .iter()
        .map(|(l, r)| (r.to_string(), l.clone()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    let aggs = latest_aggregates(out.path());
    assert_eq!(aggs.len(), 2, "two good windows");
    assert!(aggs.values().all(|a| a.count == 60 && a.mean == 10.0));
}

// ---------------------------------------------------------------------------
// Config errors: exact text, exit code 78.

fn render_errors(file: &str) -> String {
    let err = plantflow::dataflow::load_with_env(Path::new(file), &|_| None)
        .expect_err("config must be rejected");
    err.render()
}

#[test]
fn config_errors_are_all_reported_verbatim() {
    let text = render_errors("tests/fixtures/config/bad_keys.toml");
    let want_parts = [
        "error: file `tests/fixtures/workload_v1_small/missing.csv` does not exist\n --> tests/fixtures/config/bad_keys.toml:7:8\n  |\n7 | path = \"tests/fixtures/workload_v1_small/missing.csv\"\n  |        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ key `sources[0].path`\n  |\n  = help: paths are relative to the working directory; `${VAR}` reads the environment",
        "error: unknown key `batch_size` in `sources[0]`\n --> tests/fixtures/config/bad_keys.toml:8:1\n  |\n8 | batch_size = 10\n  | ^^^^^^^^^^ key `sources[0].batch_size`\n  |\n  = help: did you mean `batch_rows`?",
        "error: unknown key `sise` in `window`\n  --> tests/fixtures/config/bad_keys.toml:17:1\n   |\n17 | sise = \"1m\"\n   | ^^^^ key `window.sise`\n   |\n   = help: did you mean `size`?",
        "error: wrong type: integer `5`, expected a string\n  --> tests/fixtures/config/bad_keys.toml:18:20\n   |\n18 | allowed_lateness = 5\n   |                    ^ key `window.allowed_lateness`\n   |\n   = help: write a number with a unit: `500ms`, `5s`, `1m`, `2h` or `1d`",
        "error: expression `mean / 60` does not type-check: `div` is not defined for double and int\n  --> tests/fixtures/config/bad_keys.toml:21:14\n   |\n21 | energy_kwh = \"mean / 60\"\n   |              ^^^^^^^^^^^ key `metrics.energy_kwh`\n   |\n   = help: numbers are doubles: write `60.0`, not `60` (CEL does not mix int and double)",
        "error: unknown column `price_per_kwhh` in expression `energy_kwh * price_per_kwhh`\n  --> tests/fixtures/config/bad_keys.toml:22:8\n   |\n22 | cost = \"energy_kwh * price_per_kwhh\"\n   |        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ key `metrics.cost`\n   |\n   = help: did you mean `price_per_kwh`?",
        "error: unknown owner `operatoins`\n  --> tests/fixtures/config/bad_keys.toml:30:20\n   |\n30 | action = { owner = \"operatoins\", action_type = \"operational_change\", value_category = \"energy_cost\", value = \"waste\" }\n   |                    ^^^^^^^^^^^^ key `rules[0].action.owner`\n   |\n   = help: did you mean `operations`?",
    ];
    let want = format!(
        "{}\n\nerror: 7 problems found; nothing was run",
        want_parts.join("\n\n")
    );
    assert_eq!(text, want);
}

#[test]
fn config_type_and_unit_errors_name_the_key() {
    let text = render_errors("tests/fixtures/config/bad_types.toml");
    for part in [
        "error: unknown source type `kafka`\n --> tests/fixtures/config/bad_types.toml:4:8",
        "error: `1 fortnight` has an unknown unit\n  --> tests/fixtures/config/bad_types.toml:14:8",
        "error: unknown quality policy `drop_bad_ones`\n  --> tests/fixtures/config/bad_types.toml:16:11",
        "   = help: did you mean `drop_bad`?",
        "error: unknown group column `building`\n  --> tests/fixtures/config/bad_types.toml:24:22",
        "error: unknown aggregate `total`\n  --> tests/fixtures/config/bad_types.toml:27:32",
        "error: expression `waste * 2.0` gives a number, expected a bool\n  --> tests/fixtures/config/bad_types.toml:26:13",
        "error: environment variable `PLANTFLOW_TEST_UNSET_VAR` is not set\n  --> tests/fixtures/config/bad_types.toml:33:8",
        "error: unknown roll_by `event_tme`\n  --> tests/fixtures/config/bad_types.toml:34:11",
        "   = help: did you mean `event_time`?",
        "error: 9 problems found; nothing was run",
    ] {
        assert!(text.contains(part), "missing:\n{part}\n--- in ---\n{text}");
    }
}

#[test]
fn spill_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string("tests/fixtures/config/bad_types.toml").unwrap();
    // The fixture's own window, made valid, plus the key under test.
    let with = |extra: &str| {
        let text = base
            .replace("size = \"1 fortnight\"", &format!("size = \"1m\"\n{extra}"))
            .replace("\"drop_bad_ones\"", "\"drop_bad\"");
        let f = dir.path().join("spill.toml");
        std::fs::write(&f, text).unwrap();
        render_errors(f.to_str().unwrap())
    };
    // `[lifecycle] expire_after` and a rule's own, by file:line:key.
    let text = base
        .replace("size = \"1 fortnight\"", "size = \"1m\"")
        .replace("\"drop_bad_ones\"", "\"drop_bad\"")
        + "\n[lifecycle]\nexpire_after = \"a quarter\"\n";
    let f = dir.path().join("expire.toml");
    std::fs::write(&f, &text).unwrap();
    let errs = render_errors(f.to_str().unwrap());
    let line = text.lines().count();
    assert!(
        errs.contains(&format!(":{line}:")) && errs.contains("key `lifecycle.expire_after`"),
        "{errs}"
    );
    let text = with("checkpoint_interval = \"often\"");
    assert!(
        text.contains(":15:"),
        "names the line of checkpoint_interval:\n{text}"
    );
    assert!(text.contains("key `window.checkpoint_interval`"), "{text}");
    let text = with("spill_after = \"0s\"");
    assert!(
        !text.contains("window.spill_after"),
        "\"0s\" keeps everything in memory: {text}"
    );
    let text = with("spill_after = \"10 minutes\"");
    assert!(text.contains("key `window.spill_after`"), "{text}");
    // Windows keep their rows' times as 32-bit offsets: 49 days at most.
    let text = base
        .replace("size = \"1 fortnight\"", "size = \"50d\"")
        .replace("\"drop_bad_ones\"", "\"drop_bad\"");
    let f = dir.path().join("long.toml");
    std::fs::write(&f, text).unwrap();
    let text = render_errors(f.to_str().unwrap());
    assert!(
        text.contains("window size must be at most 49 days"),
        "{text}"
    );
    assert!(
        text.contains(":14:") && text.contains("key `window.size`"),
        "{text}"
    );
}

#[test]
fn cli_exit_codes() {
    let out = Command::new(PLANTFLOW)
        .args(["validate", "tests/fixtures/config/bad_keys.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("7 problems found"));
    let out = Command::new(PLANTFLOW)
        .args(["run", "tests/fixtures/config/bad_types.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let out = Command::new(PLANTFLOW)
        .args(["validate", "dataflows/workload_v1.toml"])
        .env("INPUT_DIR", fixture_dir())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// --follow: tailing, live context edits and late rows become new revisions;
// SIGTERM closes windows, commits files and exits 0.

#[test]
fn follow_mode_corrects_on_context_edit_and_late_rows() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = input.path();
    std::fs::write(dir.join("assets.csv"), "tag,asset,site,line,kind,standby_kw\na/l1/m1/power_kw,a/l1/m1,a,a/l1,motor,1.0\na/l1/m2/power_kw,a/l1/m2,a,a/l1,motor,1.0\n").unwrap();
    std::fs::write(
        dir.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,7,0.08\n7,17,0.22\n17,21,0.3\n21,24,0.12\n",
    )
    .unwrap();
    std::fs::write(dir.join("production.csv"), "line,start_ms,end_ms\n").unwrap();
    let t0: i64 = 1_767_607_200_000; // 2026-01-05 10:00 UTC, price 0.22
    let mut s = String::from("ts,tag,value,quality\n");
    for i in 0..150 {
        for (m, v) in [("m1", 30.0), ("m2", 60.0)] {
            s.push_str(&format!("{},a/l1/{m}/power_kw,{v},0\n", t0 + i * 1000));
        }
    }
    std::fs::write(dir.join("samples.csv"), s).unwrap();
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("roll_interval = \"1m\"", "roll_interval = \"100ms\"");
    let df = dir.join("df.toml");
    std::fs::write(&df, toml).unwrap();
    let mut child = spawn_follow(&df, dir, out.path());

    // Windows [0,60s) and [60s,120s) close: the watermark is at 145 s.
    let first = wait_for("the first two windows", || {
        let a = latest_aggregates(out.path());
        (a.len() == 4).then_some(a)
    });
    for ((tag, _), a) in &first {
        assert_eq!(a.revision, 0);
        assert_eq!(a.price, 0.22);
        let kw = if tag.contains("m1") { 30.0 } else { 60.0 };
        assert_close(a.cost, kw / 60.0 * 0.22, "cost at the old price");
    }

    // Edit the tariff: every window in hour 10 is re-priced as a new revision.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(
        dir.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,7,0.08\n7,17,0.5\n17,21,0.3\n21,24,0.12\n",
    )
    .unwrap();
    let repriced = wait_for("re-priced revisions", || {
        let a = latest_aggregates(out.path());
        (a.len() == 4 && a.values().all(|x| x.revision == 1)).then_some(a)
    });
    for ((tag, _), a) in &repriced {
        let kw = if tag.contains("m1") { 30.0 } else { 60.0 };
        assert_close(a.cost, kw / 60.0 * 0.5, "cost at the new price");
    }
    // Exactly the affected rows: one new revision each, nothing else.
    assert_eq!(all_aggregates(out.path()).len(), 8);
    // Actions count a period once it has closed (hour 10 is still open): none yet.
    assert!(latest_actions(out.path()).is_empty());

    // A row a minute and a half late corrects its window as revision 2.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("samples.csv"))
        .unwrap();
    writeln!(f, "{},a/l1/m1/power_kw,90.0,0", t0 + 30_500).unwrap();
    drop(f);
    let corrected = wait_for("the late-row correction", || {
        let a = latest_aggregates(out.path());
        a.get(&("a/l1/m1/power_kw".to_string(), t0))
            .filter(|x| x.revision == 2)
            .cloned()
    });
    assert_eq!(corrected.count, 61);
    assert_close(
        corrected.mean,
        (60.0 * 30.0 + 90.0) / 61.0,
        "corrected mean",
    );

    // SIGTERM: the open window [120s,180s) is closed and flushed, exit 0.
    assert_eq!(child.terminate().code(), Some(0));
    let fin = latest_aggregates(out.path());
    // Shutdown closes hour 10: m2 wasted 3 x 1 kWh (idle, 60 kW > 1 kW standby), priced at the new 0.5.
    let actions = latest_actions(out.path());
    let action = &actions[&("a/l1/m2".to_string(), t0)];
    assert_close(
        action.value,
        3.0 * 0.5,
        "action valued at the edited tariff",
    );
    assert_eq!(fin.len(), 6, "the last window is closed at shutdown");
    assert_eq!(
        fin[&("a/l1/m2/power_kw".to_string(), t0 + 120_000)].count,
        30
    );
    let leftovers = walk_all(out.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".inprogress"))
        .count();
    assert_eq!(leftovers, 0, "nothing half-written is left");
}

#[test]
fn status_updates_reach_actions_kept_on_disk() {
    let input = one_motor_plant();
    let out = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = input.path();
    std::fs::write(dir.join("status.jsonl"), "").unwrap();
    // An idle motor at 60 kW for 5 h, one sample a minute: every hour wastes
    // 60 kWh (60 windows of 1 kWh above standby) = 12 EUR at 0.2, one action an hour.
    let t0: i64 = 1_767_571_200_000; // 2026-01-05 00:00 UTC
    let h: i64 = 3_600_000;
    let mut s = String::from("ts,tag,value,quality\n");
    for i in 0..300 {
        s.push_str(&format!("{},a/l1/m1/power_kw,60.0,0\n", t0 + i * 60_000));
    }
    std::fs::write(dir.join("samples.csv"), s).unwrap();
    let df = spilling_dataflow(dir, "10m", state.path());
    let toml = std::fs::read_to_string(&df)
        .unwrap()
        .replace("roll_interval = \"1m\"", "roll_interval = \"100ms\"");
    let toml = format!(
        "{toml}\n[lifecycle]\npath = \"{}\"\n",
        dir.join("status.jsonl").display()
    );
    std::fs::write(&df, toml).unwrap();
    let mut child = spawn_follow(&df, dir, out.path());

    // Hours 0..3 have closed (the watermark is just short of 5 h). The value
    // layer hands a period's actions to its ledger on disk once the period
    // has closed and they are out, so the acknowledgement below must fetch
    // hour 0 back from disk.
    let first = wait_for("four hourly actions", || {
        let a = latest_actions(out.path());
        (a.len() == 4).then_some(a)
    });
    for k in 0..4 {
        let a = &first[&("a/l1/m1".to_string(), t0 + k * h)];
        assert_eq!((a.status.as_str(), a.revision), ("open", 0));
        assert_close(a.value, 12.0, "60 kWh at 0.2 EUR");
    }
    let id = first[&("a/l1/m1".to_string(), t0)].action_id.clone();
    std::thread::sleep(Duration::from_millis(300));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("status.jsonl"))
        .unwrap();
    writeln!(
        f,
        r#"{{"action_id":"{id}","status":"acknowledged","at":{},"by":"shift lead","note":"on it"}}"#,
        t0 + 5 * h
    )
    .unwrap();
    drop(f);
    let acked = wait_for("the acknowledged revision", || {
        latest_actions(out.path())
            .remove(&("a/l1/m1".to_string(), t0))
            .filter(|a| a.revision == 1)
    });
    assert_eq!(acked.status, "acknowledged");
    assert_close(acked.value, 12.0, "the value it had");
    assert_eq!(acked.evidence["history"][1]["by"], "shift lead");

    let (status, summary) = child.stop_for_summary();
    assert_eq!(status.code(), Some(0));
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("on disk"))
        .unwrap_or_else(|| panic!("no ledger line in the summary:\n{summary}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(nums[0] >= 4, "hours 0..3 went to disk: {line}");
    assert_eq!(nums[1], 1, "one read back for the update: {line}");
    // The ledger and the spilled windows are scratch: nothing is left
    // but the input log (durable state: a followed file may grow).
    let left: Vec<_> = walk_all(state.path())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !(p.parent().is_some_and(|d| d.ends_with("workload_v1"))
                && name.starts_with("input-")
                && name.ends_with(".wal"))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `in_maintenance` of every (tag, window start, revision) written.
fn maintenance_flags(out: &Path) -> HashMap<(String, i64, i64), bool> {
    use arrow::array::AsArray;
    let mut m = HashMap::new();
    for b in batches(out, "aggregates") {
        let tag = b.column_by_name("tag").unwrap().as_string::<i32>().clone();
        let ws = b.column_by_name("window_start").unwrap();
        let ws = ws.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let rev = b.column_by_name("revision").unwrap();
        let rev = rev.as_primitive::<arrow::datatypes::Int64Type>();
        let f = b
            .column_by_name("in_maintenance")
            .unwrap()
            .as_boolean()
            .clone();
        for i in 0..b.num_rows() {
            m.insert(
                (tag.value(i).to_string(), ws.value(i), rev.value(i)),
                f.value(i),
            );
        }
    }
    m
}

// Edits of the production, maintenance and asset tables while running re-enrich
// exactly the retained windows they touch, on two workers (the context reaches
// both; the tags are spread over them).
#[test]
fn context_edits_re_enrich_exactly_the_windows_they_touch() {
    context_edits_case(false);
}

/// The same edits with every closed window on disk (`spill_after = "10s"`: the
/// watermark is 25 s past the second window's end): each edit reads the
/// windows it touches back first, and the revisions are the same.
#[test]
fn context_edits_re_enrich_spilled_windows() {
    context_edits_case(true);
}

fn context_edits_case(spill: bool) {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = input.path();
    let assets = |m2_standby: f64| {
        format!(
            "tag,asset,site,line,kind,standby_kw\n\
             a/l1/m1/power_kw,a/l1/m1,a,a/l1,motor,1.0\n\
             a/l1/m2/power_kw,a/l1/m2,a,a/l1,motor,{m2_standby}\n\
             a/l2/m3/power_kw,a/l2/m3,a,a/l2,motor,1.0\n"
        )
    };
    std::fs::write(dir.join("assets.csv"), assets(1.0)).unwrap();
    std::fs::write(
        dir.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    std::fs::write(dir.join("production.csv"), "line,start_ms,end_ms\n").unwrap();
    std::fs::write(dir.join("maintenance.csv"), "asset,start_ms,end_ms\n").unwrap();
    let t0: i64 = 1_767_607_200_000; // 2026-01-05 10:00 UTC
    let kw = [
        ("a/l1/m1/power_kw", 30.0),
        ("a/l1/m2/power_kw", 60.0),
        ("a/l2/m3/power_kw", 90.0),
    ];
    let mut s = String::from("ts,tag,value,quality\n");
    for i in 0..150 {
        for (tag, v) in kw {
            s.push_str(&format!("{},{tag},{v},0\n", t0 + i * 1000));
        }
    }
    std::fs::write(dir.join("samples.csv"), s).unwrap();
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("roll_interval = \"1m\"", "roll_interval = \"100ms\"")
        .replace(
            "[context.production]",
            "[context.maintenance]\npath = \"${INPUT_DIR}/maintenance.csv\"\n\n[context.production]",
        );
    let state = tempfile::tempdir().unwrap();
    let toml = if spill {
        toml.replace(
            "retention = \"2h\"",
            &format!(
                "retention = \"2h\"\nspill_after = \"10s\"\nstate_dir = \"{}\"",
                state.path().display()
            ),
        )
    } else {
        toml
    };
    let df = dir.join("df.toml");
    std::fs::write(&df, toml).unwrap();
    let _child = spawn_follow_workers(&df, dir, out.path(), 2);
    let (w0, w1) = (t0, t0 + 60_000);
    let key = |tag: &str, ws: i64| (tag.to_string(), ws);

    // Two windows per tag close (the watermark is at 145 s): idle, so all energy is waste.
    let first = wait_for("the first windows", || {
        let a = latest_aggregates(out.path());
        (a.len() == 6).then_some(a)
    });
    for (tag, v) in kw {
        for ws in [w0, w1] {
            let a = &first[&key(tag, ws)];
            assert_eq!((a.revision, a.producing), (0, false));
            assert_close(a.waste_kwh, v / 60.0, "idle waste");
        }
    }
    if spill {
        // Both window starts of each of the two workers go to disk.
        wait_for("the closed windows on disk", || {
            let n = walk_all(state.path())
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "win"))
                .count();
            (n >= 2).then_some(())
        });
    }

    // A production run on line a/l1 covering the first minute: m1 and m2's first
    // windows are producing now (no waste); nothing else changes.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(
        dir.join("production.csv"),
        format!("line,start_ms,end_ms\na/l1,{w0},{w1}\n"),
    )
    .unwrap();
    let runs = wait_for("the production edit", || {
        let all = all_aggregates(out.path());
        (all.len() == 8).then(|| latest_of(all))
    });
    for tag in ["a/l1/m1/power_kw", "a/l1/m2/power_kw"] {
        let a = &runs[&key(tag, w0)];
        assert_eq!((a.revision, a.producing), (1, true), "{tag}");
        assert_close(a.waste_kwh, 0.0, "no waste while producing");
        assert_eq!(
            runs[&key(tag, w1)].revision,
            0,
            "{tag} second window untouched"
        );
    }
    assert_eq!(
        runs[&key("a/l2/m3/power_kw", w0)].revision,
        0,
        "other line untouched"
    );

    // Maintenance of m3 over the second minute flags exactly that window.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(
        dir.join("maintenance.csv"),
        format!("asset,start_ms,end_ms\na/l2/m3,{w1},{}\n", w1 + 60_000),
    )
    .unwrap();
    wait_for("the maintenance edit", || {
        (all_aggregates(out.path()).len() == 9).then_some(())
    });
    let flags = maintenance_flags(out.path());
    assert!(flags[&("a/l2/m3/power_kw".to_string(), w1, 1)]);
    assert_eq!(
        flags.values().filter(|f| **f).count(),
        1,
        "one window in maintenance"
    );

    // m2's standby rises to 100 kW: both its windows are re-enriched (a new asset
    // row), and its idle 60 kW is no longer waste.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(dir.join("assets.csv"), assets(100.0)).unwrap();
    let last = wait_for("the asset edit", || {
        let all = all_aggregates(out.path());
        (all.len() == 11).then(|| latest_of(all))
    });
    let m2 = "a/l1/m2/power_kw";
    assert_eq!(last[&key(m2, w0)].revision, 2);
    assert_eq!(last[&key(m2, w1)].revision, 1);
    assert_close(last[&key(m2, w1)].waste_kwh, 0.0, "below the new standby");
    assert_close(
        last[&key("a/l1/m1/power_kw", w1)].waste_kwh,
        30.0 / 60.0,
        "m1 unchanged",
    );
    assert_eq!(last[&key("a/l1/m1/power_kw", w1)].revision, 0);
    assert_eq!(last[&key("a/l2/m3/power_kw", w0)].revision, 0);

    // m3's asset row goes (its windows are retracted, nothing replaces them)
    // while m1's standby changes (two new rows, so the edit is seen); then m3
    // comes back: its windows continue from the revisions they had.
    let without_m3 = |m1_standby: f64| {
        assets(100.0)
            .lines()
            .filter(|l| !l.contains("m3"))
            .map(|l| l.replace("motor,1.0", &format!("motor,{m1_standby}")) + "\n")
            .collect::<String>()
    };
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(dir.join("assets.csv"), without_m3(2.0)).unwrap();
    wait_for("the asset removal", || {
        (all_aggregates(out.path()).len() == 13).then_some(())
    });
    std::thread::sleep(Duration::from_millis(50));
    let back = without_m3(2.0) + "a/l2/m3/power_kw,a/l2/m3,a,a/l2,motor,1.0\n";
    std::fs::write(dir.join("assets.csv"), back).unwrap();
    let back = wait_for("the asset's return", || {
        let all = all_aggregates(out.path());
        (all.len() == 15).then(|| latest_of(all))
    });
    let m3 = "a/l2/m3/power_kw";
    assert_eq!(
        back[&key(m3, w0)].revision,
        1,
        "m3 first window: 0, then back"
    );
    assert_eq!(
        back[&key(m3, w1)].revision,
        2,
        "m3 second window: 0, maintenance, back"
    );
    assert_eq!(back[&key("a/l1/m1/power_kw", w0)].revision, 2);
}

// ---------------------------------------------------------------------------
// Generator: deterministic and shaped like WORKLOAD.md.

#[test]
fn generator_is_deterministic_and_sized() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = plantflow::gen::workload::Params {
        tags: 40,
        seconds: 300,
        seed: 11,
        ..Default::default()
    };
    let m = plantflow::gen::workload::generate(&p, a.path()).unwrap();
    plantflow::gen::workload::generate(&p, b.path()).unwrap();
    for f in ["samples.csv", "assets.csv", "production.csv", "tariff.csv"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_eq!(m.rows, 40 * 300);
    let lines = std::fs::read_to_string(a.path().join("samples.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines as u64, m.rows + 1);
    assert!(m.out_of_order_rows > 0 && m.max_lateness_ms < 5_000);
    // The generated workload runs clean: nothing dead-lettered, nothing late.
    let out = tempfile::tempdir().unwrap();
    let s = run(&dataflow("workload_v1.toml"), a.path(), out.path(), 1);
    assert_eq!(s.rows_read, m.rows);
    assert_eq!(s.dropped_quality, m.bad_rows);
    assert_eq!(s.late_rows, 0);
    assert_eq!(s.windows, 40 * 5);
}

/// Context for one idle 1 kW-standby motor on a line with no production, at a flat 0.2/kWh.
fn one_motor_plant() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("assets.csv"),
        "tag,asset,site,line,kind,standby_kw\na/l1/m1/power_kw,a/l1/m1,a,a/l1,motor,1.0\n",
    )
    .unwrap();
    std::fs::write(
        p.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    std::fs::write(p.join("production.csv"), "line,start_ms,end_ms\n").unwrap();
    dir
}

// ---------------------------------------------------------------------------
// Maintenance windows are an optional context table: windows inside one are
// flagged, and a rule can exclude them.

#[test]
fn maintenance_windows_flag_and_suppress() {
    let dir = one_motor_plant();
    let p = dir.path();
    let t0: i64 = 1_767_607_200_000; // 10:00 UTC
                                     // Maintenance covers the windows starting at 10:10 .. 10:39 (window starts inside [start, end)).
    std::fs::write(
        p.join("maintenance.csv"),
        format!(
            "asset,start_ms,end_ms\na/l1/m1,{},{}\n",
            t0 + 600_000,
            t0 + 2_400_000
        ),
    )
    .unwrap();
    let mut s = String::from("ts,tag,value,quality\n");
    for i in 0..3600 {
        s.push_str(&format!("{},a/l1/m1/power_kw,120.0,0\n", t0 + i * 1000));
    }
    std::fs::write(p.join("samples.csv"), s).unwrap();
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("[context.production]", "[context.maintenance]\npath = \"${INPUT_DIR}/maintenance.csv\"\n\n[context.production]")
        .replace("where = \"waste_kwh > 0.0\"", "where = \"waste_kwh > 0.0 && !in_maintenance\"");
    let df = p.join("df.toml");
    std::fs::write(&df, toml).unwrap();
    let out = tempfile::tempdir().unwrap();
    run(&df, p, out.path(), 1);
    let batches = batches(out.path(), "aggregates");
    let mut flagged = 0;
    for b in &batches {
        let m = b.column_by_name("in_maintenance").unwrap();
        let m = arrow::array::AsArray::as_boolean(m);
        flagged += (0..m.len()).filter(|i| m.value(*i)).count();
    }
    assert_eq!(
        flagged, 30,
        "30 one-minute windows start inside the maintenance window"
    );
    let actions = latest_actions(out.path());
    let a = &actions[&("a/l1/m1".to_string(), t0)];
    // 60 windows of 2 kWh waste each, 30 of them excluded by maintenance.
    assert_close(
        a.evidence["measures"]["waste_kwh"].as_f64().unwrap(),
        30.0 * 2.0,
        "waste outside maintenance",
    );
    assert_close(a.value, 30.0 * 2.0 * 0.2, "value");
}

#[test]
fn files_roll_by_rows_and_every_row_lands_once() {
    let input = fixture_dir();
    let dir = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace(
            "roll_interval = \"1m\"",
            "roll_interval = \"1m\"\nroll_rows = 400",
        );
    let df = dir.path().join("df.toml");
    std::fs::write(&df, toml).unwrap();
    let out = tempfile::tempdir().unwrap();
    run(&df, &input, out.path(), 2);
    let files = parquet_files(out.path(), "aggregates");
    assert!(
        files.len() >= 4,
        "1,500 rows at 400 per file roll into at least 4 files, got {}",
        files.len()
    );
    let rows: usize = batches(out.path(), "aggregates")
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 1500);
    assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
}

#[test]
fn rows_later_than_retention_are_dead_lettered_not_lost() {
    let dir = one_motor_plant();
    let p = dir.path();
    let t0: i64 = 1_767_607_200_000; // 10:00 UTC
    let mut s = String::from("ts,tag,value,quality\n");
    for i in 0..(3 * 360) {
        s.push_str(&format!("{},a/l1/m1/power_kw,10.0,0\n", t0 + i * 10_000));
    }
    // 25 minutes late: its hour (12:00) is still in state, so it corrects.
    s.push_str(&format!(
        "{},a/l1/m1/power_kw,70.0,0\n",
        t0 + 2 * 3_600_000 + 30_000
    ));
    // Hours late: the 10:00 window was retracted at 11:00 + 1 min retention.
    let too_late = format!("{},a/l1/m1/power_kw,70.0,0", t0 + 30_000);
    s.push_str(&too_late);
    s.push('\n');
    std::fs::write(p.join("samples.csv"), s).unwrap();
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("retention = \"2h\"", "retention = \"1m\"");
    let df = p.join("df.toml");
    std::fs::write(&df, toml).unwrap();
    let out = tempfile::tempdir().unwrap();
    let summary = run(&df, p, out.path(), 1);
    assert_eq!(
        summary.corrections, 1,
        "the 25-minute-late row corrects its window"
    );
    assert_eq!(summary.dead_letters.get("later than retention"), Some(&1));
    assert_eq!(
        dead_letters(out.path()),
        vec![("later than retention".to_string(), too_late)]
    );
    let aggs = latest_aggregates(out.path());
    let corrected = &aggs[&("a/l1/m1/power_kw".to_string(), t0 + 2 * 3_600_000)];
    assert_eq!((corrected.count, corrected.revision), (7, 1));
    assert_close(corrected.mean, (6.0 * 10.0 + 70.0) / 7.0, "corrected mean");
    let untouched = &aggs[&("a/l1/m1/power_kw".to_string(), t0)];
    assert_eq!((untouched.count, untouched.revision), (6, 0));
}

// `roll_by = "event_time"`: each minute of windows is its own committed file,
// readable while the run goes on (a processing-time roll of 1 h would show
// nothing before shutdown).
#[test]
fn event_time_roll_commits_each_minute_of_windows_while_running() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = input.path();
    std::fs::write(
        dir.join("assets.csv"),
        "tag,asset,site,line,kind,standby_kw\n\
         a/l1/m1/power_kw,a/l1/m1,a,a/l1,motor,1.0\n\
         a/l1/m2/power_kw,a/l1/m2,a,a/l1,motor,1.0\n\
         a/l1/m3/power_kw,a/l1/m3,a,a/l1,motor,1.0\n\
         a/l1/m4/power_kw,a/l1/m4,a,a/l1,motor,1.0\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    std::fs::write(dir.join("production.csv"), "line,start_ms,end_ms\n").unwrap();
    let t0: i64 = 1_767_607_200_000;
    // Rows arrive a minute at a time; each minute closes one more window of
    // four tags, spread over two workers. Tag m{k} reads 10 + minute + k.
    let row = |i: i64| {
        (1..=4)
            .map(|k| {
                format!(
                    "{},a/l1/m{k}/power_kw,{},0\n",
                    t0 + i * 1000,
                    10 + i / 60 + k
                )
            })
            .collect::<String>()
    };
    let mut s = String::from("ts,tag,value,quality\n");
    (0..66).for_each(|i| s.push_str(&row(i)));
    std::fs::write(dir.join("samples.csv"), s).unwrap();
    let toml = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace(
            "roll_interval = \"1m\"",
            "roll_interval = \"1m\"\nroll_by = \"event_time\"",
        );
    let df = dir.join("df.toml");
    std::fs::write(&df, toml).unwrap();
    let _child = spawn_follow_workers(&df, dir, out.path(), 2);
    let committed = || -> Vec<std::path::PathBuf> {
        walk_all(&out.path().join("aggregates"))
            .into_iter()
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_string();
                n.ends_with(".parquet") && !n.starts_with('.')
            })
            .collect()
    };
    let mut files = Vec::new();
    for (minute, next) in [(1usize, 66..126), (2, 126..191), (3, 0..0)] {
        // A processing-time roll would commit 60 s after a file opened: the
        // 20 s liveness limit here (not a speed check) tells the two apart.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        files = loop {
            let f = committed();
            if f.len() >= minute {
                break f;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "minute {minute}: no committed file while the run goes on"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            files.len(),
            minute,
            "one file per closed minute, nothing more"
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("samples.csv"))
            .unwrap();
        for i in next {
            write!(f, "{}", row(i)).unwrap();
        }
    }
    let latest = latest_aggregates(out.path());
    assert_eq!(latest.len(), 12);
    for minute in 0..3i64 {
        for k in 1..=4i64 {
            let a = &latest[&(format!("a/l1/m{k}/power_kw"), t0 + minute * 60_000)];
            assert_eq!(a.count, 60);
            assert_close(a.mean, (10 + minute + k) as f64, "window mean");
        }
    }
    // Each file holds exactly one window, with every tag from both workers.
    for f in &files {
        let r = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(f).unwrap())
            .unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(
            r.metadata().file_metadata().num_rows(),
            4,
            "{}",
            f.display()
        );
    }
}

/// A replay run on a terminal draws a progress bar (rate and time left) on
/// stderr, under `script`'s pseudo-terminal; piped, it draws nothing.
#[test]
fn a_replay_shows_its_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{} run {}",
        env!("CARGO_BIN_EXE_plantflow"),
        dataflow("workload_v1.toml").display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", dir.path().join("tty"))
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux)");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("replay ") && tty.contains("rows/s") && tty.contains("ETA"),
        "{tty}"
    );
    assert!(tty.contains("rows in"), "the summary after the bar: {tty}");
    let piped = Command::new(PLANTFLOW)
        .args(["run"])
        .arg(dataflow("workload_v1.toml"))
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", dir.path().join("piped"))
        .output()
        .unwrap();
    assert!(piped.status.success());
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(!err.contains("rows/s") && !err.contains("ETA"), "{err}");
}

/// An action nobody acknowledges expires (`[lifecycle] expire_after`,
/// 90 minutes here): checked on the lake of 6 h of workload v1 by the rule
/// itself, not by the code's own earlier output. Every action opened at
/// `P` (its hour's end) has a second revision `expired` at exactly `P +
/// 90m`, by `plantflow`, if and only if that is at or before the end of the
/// data; no other revision. The same lake with closed actions
/// spilled to the ledger (the default, 10 minutes; they come back to
/// expire) and with everything in memory, row for row.
#[test]
fn actions_nobody_acknowledges_expire_on_time_from_memory_and_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args([
            "gen",
            "workload",
            "--tags",
            "40",
            "--seconds",
            "21600",
            "--out",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let with = |spill: &str| {
        let df = dir.path().join(format!("expire-{spill}.toml"));
        let t = text.replace(
            "size = \"1m\"",
            &format!("size = \"1m\"\nspill_after = \"{spill}\""),
        );
        std::fs::write(&df, format!("{t}\n[lifecycle]\nexpire_after = \"90m\"\n")).unwrap();
        df
    };
    let (memory, disk) = (dir.path().join("memory"), dir.path().join("disk"));
    run(&with("0s"), &input, &memory, 1);
    let s = run(&with("10m"), &input, &disk, 2);
    assert!(s.actions_evicted > 0, "actions went to the ledger");
    // Closed ones (expired) leave it once past the retention.
    assert!(s.actions_forgotten > 0, "final actions left the ledger");
    // The data's end: the last window's end (the last sample's time, to a
    // minute; expiries fall 25 minutes or more from it either way).
    let end = all_aggregates(&memory)
        .iter()
        .map(|((_, ws), _)| ws + 60_000)
        .max()
        .unwrap();
    let mut by_id: BTreeMap<String, Vec<HashMap<String, serde_json::Value>>> = BTreeMap::new();
    for r in rows(&memory, "actions") {
        by_id
            .entry(r["action_id"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    let (mut expired, mut open) = (0, 0);
    for (id, mut revs) in by_id {
        revs.sort_by_key(|r| r["revision"].as_i64());
        let opened = revs[0]["status_at"].as_i64().unwrap();
        assert_eq!(revs[0]["status"], "open", "{id}");
        assert_eq!(opened, revs[0]["period_end"].as_i64().unwrap(), "{id}");
        if opened + 90 * 60_000 <= end {
            expired += 1;
            assert_eq!(revs.len(), 2, "{id}: open, then expired");
            let e = &revs[1];
            assert_eq!(e["status"], "expired", "{id}");
            assert_eq!(e["status_at"].as_i64(), Some(opened + 90 * 60_000), "{id}");
            assert_eq!(e["status_by"], "plantflow", "{id}");
            assert_eq!(
                e["status_note"], "nobody acknowledged it within 90m",
                "{id}"
            );
        } else {
            open += 1;
            assert_eq!(revs.len(), 1, "{id}: still open at the end of the data");
        }
    }
    assert!(
        expired > 0 && open > 0,
        "{expired} expired, {open} still open"
    );
    for t in ["actions", "outcomes", "aggregates"] {
        let all = |out: &Path| {
            let mut v: Vec<String> = rows(out, t)
                .into_iter()
                .map(|mut r| {
                    r.remove("received_at");
                    serde_json::to_string(&r.into_iter().collect::<BTreeMap<_, _>>()).unwrap()
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(all(&disk), all(&memory), "{t}");
    }
}

/// The fixture's samples saved by a spreadsheet (a UTF-8 byte order mark
/// before the header) replay to the DuckDB oracle's aggregates.
#[test]
fn a_csv_with_a_byte_order_mark_replays_like_the_fixture() {
    let input = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_dir()).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), input.path().join(e.file_name())).unwrap();
        }
    }
    let samples = input.path().join("samples.csv");
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend(std::fs::read(&samples).unwrap());
    std::fs::write(&samples, bytes).unwrap();
    let out = tempfile::tempdir().unwrap();
    run(&dataflow("workload_v1.toml"), input.path(), out.path(), 1);
    assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
}
