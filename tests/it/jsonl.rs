//! The `jsonl` sink (issue 32): every action and outcome version the lake
//! holds is one line of the file, once, with the lake's own fields; the
//! file rotates at its size and keeps `keep` rotated files; a wrong table
//! name is a config error naming its line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::*;

/// Workload v1 with a `jsonl` sink of actions and outcomes appended (its
/// `extra` lines inside the sink's table).
fn with_jsonl(dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let df = dir.join("jsonl.toml");
    std::fs::write(
        &df,
        format!(
            "{text}\n[[sinks]]\ntype = \"jsonl\"\nid = \"work\"\npath = \"{}\"\n\
             tables = [\"actions\", \"outcomes\"]\n{extra}\n",
            dir.join("out/actions.jsonl").display()
        ),
    )
    .unwrap();
    df
}

/// Every line of the sink's files (rotated ones first), parsed.
fn lines(dir: &Path) -> Vec<serde_json::Value> {
    let path = dir.join("out/actions.jsonl");
    let mut files = plantflow::sinks::jsonl::rotated(&path);
    files.push(path);
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A line's or a row's (action_id, revision).
fn key_of(v: &serde_json::Value) -> (String, i64) {
    (
        v["action_id"].as_str().unwrap().to_string(),
        v["revision"].as_i64().unwrap(),
    )
}

/// The (key, revision) → row of a lake table, as JSON values.
fn lake(out: &Path, table: &str) -> BTreeMap<(String, i64), BTreeMap<String, serde_json::Value>> {
    rows(out, table)
        .into_iter()
        .map(|r| {
            let k = (
                r["action_id"].as_str().unwrap().to_string(),
                r["revision"].as_i64().unwrap(),
            );
            (k, r.into_iter().collect())
        })
        .collect()
}

#[test]
fn every_action_and_outcome_version_of_the_lake_is_one_line_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let df = with_jsonl(dir.path(), "");
    let out = dir.path().join("out");
    run(&df, &fixture_dir(), &out, 2);
    let got = lines(dir.path());
    let want = lake(&out, "actions");
    assert!(!want.is_empty());
    let mut seen = BTreeSet::new();
    for l in got.iter().filter(|l| l["table"] == "actions") {
        let k = key_of(l);
        assert!(seen.insert(k.clone()), "{k:?} twice");
        let row = &want[&k];
        // The lake's fields, the same values (times as epoch ms in both).
        for f in [
            "status",
            "owner",
            "asset",
            "period_start",
            "status_at",
            "severity",
        ] {
            assert_eq!(l[f], row[f], "{k:?} {f}");
        }
        assert!((l["value"].as_f64().unwrap() - row["value"].as_f64().unwrap()).abs() < 1e-9);
        assert_eq!(l["dataflow"], "workload_v1");
        assert!(l["status_time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(seen, want.keys().cloned().collect::<BTreeSet<_>>());
    let outcomes = got.iter().filter(|l| l["table"] == "outcomes").count();
    assert_eq!(outcomes, rows(&out, "outcomes").len());
}

/// A file of at most 2 KiB (a few actions each): rotated many times, the
/// newest three rotated files kept besides the current one, and the lines
/// of those are the lake's latest action versions (none cut across files).
#[test]
fn the_file_rotates_at_its_size_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let df = with_jsonl(dir.path(), "rotate_size = \"2KiB\"\nkeep = 3");
    let out = dir.path().join("out");
    run(&df, &fixture_dir(), &out, 1);
    let path = out.join("actions.jsonl");
    let rotated = plantflow::sinks::jsonl::rotated(&path);
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    for f in rotated.iter().chain([&path]) {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= 2048, "{} is {len} bytes", f.display());
    }
    let want = lake(&out, "actions");
    for l in lines(dir.path()).iter().filter(|l| l["table"] == "actions") {
        let k = key_of(l);
        assert_eq!(l["status"], want[&k]["status"], "{k:?}");
    }
}

#[test]
fn a_table_it_cannot_write_is_a_config_error_on_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let df = with_jsonl(dir.path(), "");
    let text = std::fs::read_to_string(&df).unwrap().replace(
        "tables = [\"actions\", \"outcomes\"]",
        "tables = [\"actions\", \"aggregates\"]",
    );
    std::fs::write(&df, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("\"aggregates\""))
        .unwrap()
        + 1;
    let errs = render_errors(df.to_str().unwrap());
    assert!(
        errs.contains(&format!(":{line}:")) && errs.contains("sinks[1].tables[1]"),
        "{errs}"
    );
    // A file smaller than a line or two would rotate at every line.
    let df = with_jsonl(dir.path(), "rotate_size = \"100B\"");
    let errs = render_errors(df.to_str().unwrap());
    assert!(
        errs.contains("must be at least 1KiB") && errs.contains("sinks[1].rotate_size"),
        "{errs}"
    );
}

fn render_errors(file: &str) -> String {
    let err = plantflow::dataflow::load_with_env(Path::new(file), &|_| None)
        .expect_err("config must be rejected");
    err.render()
}
