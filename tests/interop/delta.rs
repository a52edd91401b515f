//! Interop suite: the lake as Delta Lake tables (`format = "delta"`), read
//! by Python's `deltalake` (delta-rs; installed by `.ci/run`; run with
//! `cargo test --features interop --test interop delta::`).
//!
//! The oracles: the workload's expected CSVs (DuckDB SQL over the raw
//! input), and the lake's own committed files as DuckDB reads them (the
//! Delta log must name each exactly once, and only whole ones).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::common::*;

const PLANTFLOW: &str = env!("CARGO_BIN_EXE_plantflow");
const APP: &str = "plantflow/workload_v1";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/delta_check.py")
}

/// Runs the checker; panics with its output unless it passes.
fn check(args: &[&str]) -> String {
    let o = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("python3 with deltalake (installed by .ci/run)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "delta_check.py {args:?}:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The reference dataflow writing Delta tables, committing every 30 ms.
fn delta_dataflow(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    assert!(text.contains("roll_interval = \"1m\""));
    let path = dir.join("workload_v1.toml");
    std::fs::write(
        &path,
        text.replacen(
            "roll_interval = \"1m\"",
            "roll_interval = \"30ms\"\nformat = \"delta\"",
            1,
        ),
    )
    .unwrap();
    path
}

fn command(df: &Path, input: &Path, out: &Path) -> Command {
    let mut c = Command::new(PLANTFLOW);
    c.args(["run", "-w", "2"])
        .arg(df)
        .env("INPUT_DIR", input)
        .env("OUT_DIR", out)
        .stdin(Stdio::null());
    c
}

fn run_ok(df: &Path, input: &Path, out: &Path) -> String {
    let o = command(df, input, out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The lake's commit record: its number and its files.
fn record(lake: &Path) -> (u64, Vec<String>) {
    let text = std::fs::read_to_string(lake.join("_plantflow/commit.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let files = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    (v["seq"].as_u64().unwrap(), files)
}

/// A generated workload: 100 tags for 4 hours (~40 lake commits at 30 ms).
fn generated(dir: &Path) -> PathBuf {
    gen_workload(dir, 100, 14400)
}

/// A generated workload, the Delta dataflow, an uninterrupted run's lake
/// and what `delta_check.py files` says of it.
struct Reference {
    dir: tempfile::TempDir,
    df: PathBuf,
    input: PathBuf,
    want: PathBuf,
    full: String,
}

fn reference() -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let df = delta_dataflow(dir.path());
    let input = generated(dir.path());
    let want = dir.path().join("want");
    run_ok(&df, &input, &want);
    let full = check(&["files", want.to_str().unwrap()]);
    Reference {
        dir,
        df,
        input,
        want,
        full,
    }
}

/// The reference workload written as Delta tables: Python's `deltalake`
/// reads every table through its log, and the latest revisions equal the
/// oracle's CSVs; each table's `txn` is the lake's commit number.
#[test]
fn the_workload_as_delta_tables_equals_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let df = delta_dataflow(dir.path());
    let out = dir.path().join("lake");
    run_ok(&df, &fixture_dir(), &out);
    let (seq, files) = record(&out);
    let expected = fixture_dir().join("expected");
    let (lake, expected, seq) = (out.display(), expected.display(), seq.to_string());
    let mut args = vec!["oracle".to_string(), lake.to_string(), expected.to_string()];
    args.extend([APP.to_string(), seq]);
    // The tables the last commit wrote: their txn is its number.
    let mut last: Vec<String> = files
        .iter()
        .filter_map(|f| Some(f.split_once('/')?.0.to_string()))
        .collect();
    last.sort();
    last.dedup();
    args.extend(last);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shown = check(&args);
    assert!(shown.contains("delta oracle: ok"), "{shown}");
    check(&["files", out.to_str().unwrap()]);
}

/// Dozens of commits: the log is checkpointed every 10 versions, readers
/// read the checkpoint and the commits after it, and so does the writer
/// when it starts again (a finished replay run again adds nothing).
#[test]
fn a_log_of_many_commits_is_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let df = delta_dataflow(dir.path());
    let input = generated(dir.path());
    let out = dir.path().join("lake");
    run_ok(&df, &input, &out);
    let log = out.join("aggregates/_delta_log");
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(log.join("_last_checkpoint")).unwrap()).unwrap();
    let v = last["version"].as_u64().unwrap();
    assert!(v >= 20 && v.is_multiple_of(10), "checkpointed at {v}");
    assert!(log.join(format!("{v:020}.checkpoint.parquet")).exists());
    let shown = check(&["files", out.to_str().unwrap()]);
    let version = |shown: &str| -> u64 {
        let line = shown
            .lines()
            .find(|l| l.starts_with("aggregates "))
            .unwrap();
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert!(version(&shown) >= v, "{shown}");
    // Deleting the commits the checkpoint covers leaves a readable table.
    for n in 1..v {
        std::fs::remove_file(log.join(format!("{n:020}.json"))).unwrap();
    }
    let again = check(&["files", out.to_str().unwrap()]);
    assert_eq!(version(&again), version(&shown));
    // The writer reads its state back from the checkpoint too: a finished
    // replay started again finds nothing to add, and the tables stay.
    let stdout = run_ok(&df, &input, &out);
    assert!(stdout.contains("nothing new to write"), "{stdout}");
    assert_eq!(check(&["files", out.to_str().unwrap()]), again);
}

/// A kill between the lake's commit and the Delta commit (the files renamed
/// into place, the log not yet written), or inside the lake's commit:
/// every table stays readable at its previous version, the next start adds
/// what the log lacks, and the tables end as an uninterrupted run's.
#[test]
fn a_kill_inside_a_commit_leaves_every_table_readable() {
    let Reference {
        dir,
        df,
        input,
        want,
        full,
    } = reference();
    for at in ["before-delta", "after-record", "before-record"] {
        let out = dir.path().join(at);
        let o = command(&df, &input, &out)
            .env("PLANTFLOW_TEST_CRASH", format!("{at}:5"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("test crash at {at} of commit 5")),
            "{err}"
        );
        // Readers see whole commits: the visible files the log does not
        // name yet are exactly the record's (renamed before the kill).
        let (seq, files) = record(&out);
        let mut args = vec!["files".to_string(), out.display().to_string()];
        if at == "before-delta" {
            assert_eq!(seq, 5);
            args.extend(files);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&args);
        let stdout = run_ok(&df, &input, &out);
        assert!(
            stdout.contains("repaired") || at == "before-delta",
            "{at}: {stdout}"
        );
        let got = check(&["files", out.to_str().unwrap()]);
        // Said first: a failure below then names its crash point.
        println!("{at}: the repaired lake against the uninterrupted one");
        assert_latest_equal(&out, &want);
        assert_eq!(rows_per_table(&got), rows_per_table(&full), "{at}");
    }
}

/// SIGKILLs at random moments: after each, every table reads (no version
/// names a missing or cut file); the last run ends as an uninterrupted one.
#[test]
fn random_kills_never_leave_a_table_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let df = delta_dataflow(dir.path());
    let input = generated(dir.path());
    let want = dir.path().join("want");
    run_ok(&df, &input, &want);
    let out = dir.path().join("lake");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(28);
    for _ in 0..4 {
        let after = Duration::from_millis(rng.random_range(300..1500));
        kill_after(&mut command(&df, &input, &out), after);
        if !out.join("_plantflow/commit.json").exists() {
            continue;
        }
        let (_, files) = record(&out);
        let mut args = vec!["files".to_string(), out.display().to_string()];
        args.extend(files);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&args);
    }
    run_ok(&df, &input, &out);
    check(&["files", out.to_str().unwrap()]);
    assert_latest_equal(&out, &want);
}

/// `<table> <version> <rows>` lines → rows of the tables a restart writes
/// exactly as an uninterrupted run (not its snapshots and gap rows).
fn rows_per_table(shown: &str) -> Vec<(String, String)> {
    const EXACT: &[&str] = &[
        "aggregates",
        "actions",
        "outcomes",
        "billing",
        "dead_letter",
    ];
    shown
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some((p.next()?.to_string(), p.nth(1)?.to_string()))
        })
        .filter(|(t, _)| EXACT.contains(&t.as_str()))
        .collect()
}

fn plantflow(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(PLANTFLOW).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The operations of a table's log, version by version.
fn operations(table: &Path) -> Vec<String> {
    let log = table.join("_delta_log");
    let mut names: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(log.join(n)).unwrap();
            let info = text.lines().find(|l| l.contains("commitInfo")).unwrap();
            let v: serde_json::Value = serde_json::from_str(info).unwrap();
            v["commitInfo"]["operation"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `plantflow lake compact` run again and again while a node writes the
/// lake: each table ends with every row once (as an uncompacted run's),
/// the node's commits go on after the compactions' versions, and vacuum
/// deletes the compacted files only once they are older than `--retain`.
#[test]
fn compaction_while_the_node_writes_keeps_every_row_once() {
    let Reference {
        dir,
        df,
        input,
        want,
        full,
    } = reference();
    let out = dir.path().join("lake");
    let mut node = KillOnDrop(
        command(&df, &input, &out)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lake = out.to_str().unwrap();
    let mut compactions = 0;
    while node.0.try_wait().unwrap().is_none() {
        if out.join("aggregates/_delta_log").exists() {
            let (ok, stdout, err) = plantflow(&["lake", "compact", "--target-size", "1MiB", lake]);
            assert!(ok, "{err}");
            compactions += stdout.matches(" at version ").count();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.0.wait().unwrap().success());
    let ops = operations(&out.join("aggregates"));
    let first = ops.iter().position(|o| o == "OPTIMIZE");
    assert!(
        first.is_some_and(|i| ops[i..].iter().any(|o| o == "WRITE")),
        "a node commit after a compaction's ({compactions} compactions): {ops:?}"
    );
    // Compacted files stay for readers of older versions until --retain.
    let (ok, stdout, err) = plantflow(&["lake", "vacuum", lake]);
    assert!(
        ok && stdout.contains("aggregates       deleted 0 files"),
        "{stdout}{err}"
    );
    let (ok, stdout, err) = plantflow(&["lake", "vacuum", "--retain", "0s", lake]);
    assert!(ok, "{err}");
    let deleted: usize = stdout
        .lines()
        .filter_map(|l| {
            l.split("deleted ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(deleted > 0, "{stdout}");
    // Now the folders hold exactly what the logs name, row for row.
    let got = check(&["files", lake]);
    assert_eq!(rows_per_table(&got), rows_per_table(&full));
    assert_latest_equal(&out, &want);
}

/// A lake written as bare Parquet goes on as Delta tables (its files in
/// version 0); a run writing bare files into Delta tables is refused.
#[test]
fn a_parquet_lake_goes_on_as_delta_tables_and_not_back() {
    let dir = tempfile::tempdir().unwrap();
    let df = delta_dataflow(dir.path());
    let bare = dir.path().join("bare.toml");
    let text = std::fs::read_to_string(&df).unwrap();
    std::fs::write(
        &bare,
        text.replace("format = \"delta\"", "format = \"parquet\""),
    )
    .unwrap();
    let input = generated(dir.path());
    let want = dir.path().join("want");
    run_ok(&df, &input, &want);
    let out = dir.path().join("lake");
    let o = command(&bare, &input, &out)
        .env("PLANTFLOW_TEST_CRASH", "after-record:6")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!out.join("aggregates/_delta_log").exists());
    let stdout = run_ok(&df, &input, &out);
    assert!(stdout.contains("repaired"), "{stdout}");
    let got = check(&["files", out.to_str().unwrap()]);
    let full = check(&["files", want.to_str().unwrap()]);
    assert_eq!(rows_per_table(&got), rows_per_table(&full));
    assert_latest_equal(&out, &want);
    let o = command(&bare, &input, &out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("sinks[0].format") && err.contains("Delta tables"),
        "{err}"
    );
}
