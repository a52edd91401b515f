//! A dataflow on several processes (issue 27, docs/cluster.md): 2 and 3
//! processes on loopback, each reading its share of a replay file, write
//! the lake of one process (latest revision per key, every dead letter
//! once); a killed process makes the others stop, naming it, and the
//! cluster started again goes on from its lake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const PLANTFLOW: &str = env!("CARGO_BIN_EXE_plantflow");

/// A generated workload (21 MB of samples: read in 1 MiB chunks, shared by
/// the processes) with malformed lines spread through it, and the
/// reference dataflow.
struct Setup {
    dir: tempfile::TempDir,
    input: PathBuf,
    dataflow: PathBuf,
    /// The samples file, when not `samples.csv`.
    samples: Option<&'static str>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let input = gen_workload(dir.path(), 120, 3600);
    // A bad line every 20,000: dead letters from every process's chunks.
    let path = input.join("samples.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut with_bad = String::with_capacity(text.len() + 4096);
    for (i, line) in text.lines().enumerate() {
        with_bad.push_str(line);
        with_bad.push('\n');
        if i > 0 && i % 20_000 == 0 {
            with_bad.push_str(&format!("not-a-time,line-{i},1.0\n"));
        }
    }
    std::fs::write(&path, with_bad).unwrap();
    Setup::new(dir, input, None)
}

/// The same workload as a Parquet export (one row group of 432,000 rows:
/// read in jobs of 65,536 rows, shared by the processes).
fn setup_parquet() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let o = Command::new(PLANTFLOW)
        .args([
            "gen",
            "workload",
            "--tags",
            "120",
            "--seconds",
            "3600",
            "--parquet",
        ])
        .arg("--out")
        .arg(&input)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Setup::new(dir, input, Some("samples.parquet"))
}

impl Setup {
    /// The input in `input` (samples in `samples`, when not `samples.csv`)
    /// and a copy of the reference dataflow, in `dir`.
    fn new(dir: tempfile::TempDir, input: PathBuf, samples: Option<&'static str>) -> Setup {
        let dataflow = dir.path().join("workload_v1.toml");
        std::fs::copy(crate::common::dataflow("workload_v1.toml"), &dataflow).unwrap();
        Setup {
            dir,
            input,
            dataflow,
            samples,
        }
    }

    fn env(&self, c: &mut Command, out: &Path) {
        c.env("INPUT_DIR", &self.input)
            .env("OUT_DIR", out)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some(f) = self.samples {
            c.env("SAMPLES_FILE", f);
        }
    }

    /// One process, two workers: the lake to compare with, and its summary.
    fn one(&self) -> (PathBuf, serde_json::Value) {
        let out = self.dir.path().join("one");
        let mut c = Command::new(PLANTFLOW);
        c.args(["run", "--json", "-w", "2"]).arg(&self.dataflow);
        self.env(&mut c, &out);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (out, serde_json::from_slice(&o.stdout).unwrap())
    }

    /// `cluster local` with `n` processes of one worker.
    fn cluster(&self, n: usize) -> (PathBuf, serde_json::Value) {
        let out = self.dir.path().join(format!("cluster-{n}"));
        let summary = self.cluster_on(n, &out);
        (out, summary)
    }

    /// The environment of processes started one by one, writing to `out`,
    /// with `extra`; and a directory for their logs.
    fn by_hand(
        &self,
        out: &Path,
        extra: &[(&'static str, &str)],
    ) -> (Vec<(&'static str, String)>, PathBuf) {
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut vars = vec![
            ("INPUT_DIR", self.input.display().to_string()),
            ("OUT_DIR", out.display().to_string()),
        ];
        vars.extend(self.samples.map(|f| ("SAMPLES_FILE", f.to_string())));
        vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        (vars, logs)
    }

    /// `cluster local` with `n` processes of one worker on the lake `out`.
    fn cluster_on(&self, n: usize, out: &Path) -> serde_json::Value {
        let mut c = Command::new(PLANTFLOW);
        c.args(["cluster", "local", "--json", "--processes", &n.to_string()])
            .arg(&self.dataflow);
        self.env(&mut c, out);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

/// A lake's rows by table, see [`latest_rows`].
type Latest = BTreeMap<&'static str, Vec<(String, Value)>>;

/// The latest revision of every key of the lake's tables, by key, without
/// the revision number (a cluster may correct a row more or fewer times on
/// its way), and the dead letters without their wall-clock `received_at`.
fn latest_rows(out: &Path) -> Latest {
    let keys: [(&str, &[&str]); 4] = [
        ("aggregates", &["tag", "window_start"]),
        ("actions", &["action_id"]),
        ("outcomes", &["action_id"]),
        ("billing", &["site", "period_start"]),
    ];
    let mut m = BTreeMap::new();
    for (t, key) in keys {
        let mut v: Vec<(String, Value)> = latest(rows(out, t), key)
            .into_iter()
            .map(|(k, mut r)| {
                r.remove("revision");
                (k, Value::Object(r.into_iter().collect()))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        m.insert(t, v);
    }
    let mut dead: Vec<(String, Value)> = rows(out, "dead_letter")
        .into_iter()
        .map(|mut r| {
            r.remove("received_at");
            let v = Value::Object(r.into_iter().collect());
            (v.to_string(), v)
        })
        .collect();
    dead.sort_by(|a, b| a.0.cmp(&b.0));
    m.insert("dead_letter", dead);
    m
}

/// Equal, but for the last bits of fractional numbers: a window's rows on
/// both sides of a chunk edge reach its worker from two processes in
/// either order, and a floating-point sum depends on the order (texts that
/// are JSON, like an action's evidence, are compared the same way).
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::String(x), Value::String(y)) if x != y => {
            match (
                serde_json::from_str::<Value>(x),
                serde_json::from_str::<Value>(y),
            ) {
                (Ok(x @ Value::Object(_)), Ok(y @ Value::Object(_))) => close(&x, &y),
                _ => false,
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| close(v, w))
        }
        _ => a == b,
    }
}

#[test]
fn two_and_three_processes_write_the_lake_of_one() {
    let s = setup();
    let (one, one_summary) = s.one();
    let want = latest_rows(&one);
    assert_eq!(want["dead_letter"].len(), 21, "the malformed lines");
    clusters_write(&s, (&want, &one_summary));
}

/// The same on a Parquet export: each process reads its share of a row
/// group's jobs. (The first version dealt the jobs to the decoders before
/// taking the process's share, and a decoder read another job's rows: 2
/// processes wrote 6,600 of 12,000 windows on a larger file.)
#[test]
fn two_and_three_processes_on_a_parquet_export_write_the_lake_of_one() {
    let s = setup_parquet();
    let (one, one_summary) = s.one();
    let want = latest_rows(&one);
    assert!(want["dead_letter"].is_empty());
    clusters_write(&s, (&want, &one_summary));
}

/// 2 and 3 processes write `want`, one process's lake (whose summary is
/// `one`), each process reading a share.
fn clusters_write(s: &Setup, (want, one_summary): (&Latest, &Value)) {
    assert_eq!(
        want["aggregates"].len(),
        120 * 60,
        "a window per tag and minute"
    );
    assert!(!want["actions"].is_empty());
    for n in [2, 3] {
        let (out, summary) = s.cluster(n);
        let got = latest_rows(&out);
        for (t, rows) in want {
            let g = &got[t];
            assert_eq!(g.len(), rows.len(), "{n} processes, {t}: row counts differ");
            if let Some(i) =
                (0..g.len()).find(|&i| g[i].0 != rows[i].0 || !close(&g[i].1, &rows[i].1))
            {
                panic!(
                    "{n} processes, {t}: rows differ first at {i}:\n got  {:?}\n want {:?}",
                    g[i], rows[i]
                );
            }
        }
        assert_eq!(summary["rows_read"], one_summary["rows_read"], "{summary}");
        let per: Vec<u64> = summary["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rows_read"].as_u64().unwrap())
            .collect();
        assert_eq!(per.len(), n);
        assert!(
            per.iter().all(|r| *r > 0),
            "every process read its share: {per:?}"
        );
    }
}

/// Three processes (slowed, so they are mid-run): process 1 is killed with
/// SIGKILL, and the other two stop with exit code 69, naming it; or it is
/// stopped with SIGTERM (without `--drain`), and asks process 0 to stop the
/// cluster: every process stops and exits 0, the open windows uncommitted;
/// or process 0 gets SIGTERM and stops the others alike.
#[test]
fn a_killed_process_stops_the_others_naming_it_and_a_stopped_one_stops_them_all() {
    let s = setup();
    // (TERM to process 1, then to process 0)
    for (signal, to) in [("KILL", 1), ("TERM", 1), ("TERM", 0)] {
        let (hosts, ports) = hostfile(s.dir.path(), 3);
        let out = s.dir.path().join(format!("lake-{signal}-{to}"));
        let mut children: Vec<(std::process::Child, PathBuf)> = (0..3)
            .map(|i| {
                let err = s.dir.path().join(format!("stderr-{signal}-{to}-{i}"));
                let mut c = Command::new(PLANTFLOW);
                c.args(["run", "--processes", "3", "--process", &i.to_string()])
                    .arg("--hostfile")
                    .arg(&hosts)
                    .arg(&s.dataflow)
                    .env("PLANTFLOW_LOG", "info")
                    .env("PLANTFLOW_TEST_SLOW_SOURCE_MS", "500")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&err).unwrap());
                s.env(&mut c, &out);
                (c.spawn().unwrap(), err)
            })
            .collect();
        let log = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        for (_, err) in &children {
            wait_for("the cluster connected", || {
                log(err).contains("processes is connected").then_some(())
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        let pid = children[to].0.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        if signal == "TERM" {
            // A stop of any process stops the cluster through process 0:
            // every process ends its input, process 0 commits what is
            // final, and all exit 0.
            let stopped = "process 0 stops the cluster: stopping";
            let said = match to {
                1 => [
                    "process 1 asks the cluster to stop: stopping every process",
                    "asking process 0 to stop the cluster",
                    stopped,
                ],
                _ => [
                    "stopping the cluster's other processes too",
                    stopped,
                    stopped,
                ],
            };
            for (i, said) in said.iter().enumerate() {
                let status = wait_for("the exit", || children[i].0.try_wait().unwrap());
                let err = log(&children[i].1);
                assert_eq!(status.code(), Some(0), "TERM to {to}, process {i}: {err}");
                assert!(err.contains(said), "TERM to {to}, process {i}: {err}");
            }
            assert!(
                rows(&out, "aggregates").len() < 120 * 60,
                "the open windows wait"
            );
            continue;
        }
        children[1].0.wait().unwrap();
        for i in [0, 2] {
            let status = wait_for("the survivor's exit", || children[i].0.try_wait().unwrap());
            let err = log(&children[i].1);
            assert_eq!(status.code(), Some(69), "{signal}, process {i}: {err}");
            assert!(
                err.contains("process 1 of the cluster") && err.contains(&ports[1].to_string()),
                "{signal}, process {i}: {err}"
            );
        }
        // Process 0 committed nothing the kill could have cut short.
        assert!(
            !out.join("_plantflow/commit.json").exists()
                || rows(&out, "aggregates").len() < 120 * 60
        );
    }
}

/// Each row of a lake's tables by its key and revision, with how many times
/// the lake holds it.
fn versions(out: &Path) -> BTreeMap<String, usize> {
    let keys: [(&str, &[&str]); 5] = [
        ("aggregates", &["tag", "window_start", "revision"]),
        ("actions", &["action_id", "revision"]),
        ("outcomes", &["action_id", "revision"]),
        ("billing", &["site", "period_start", "revision"]),
        ("dead_letter", &["source", "reason", "raw"]),
    ];
    let mut m = BTreeMap::new();
    for (t, key) in keys {
        for r in rows(out, t) {
            let k: Vec<String> = key.iter().map(|c| r[*c].to_string()).collect();
            *m.entry(format!("{t}: {}", k.join("|"))).or_default() += 1;
        }
    }
    m
}

/// The latest revision of every key in `out` is one process's (in `one`).
fn same_latest(one: &Path, out: &Path) {
    let (w, g) = (latest_rows(one), latest_rows(out));
    for (t, rows) in &w {
        let same = rows.len() == g[t].len()
            && rows
                .iter()
                .zip(&g[t])
                .all(|(a, b)| a.0 == b.0 && close(&a.1, &b.1));
        if !same {
            let first = rows
                .iter()
                .zip(&g[t])
                .find(|(a, b)| a.0 != b.0 || !close(&a.1, &b.1));
            panic!(
                "{t}: the lake differs from one process's ({} rows, one process {}); first \
                 difference: {first:?}",
                g[t].len(),
                rows.len()
            );
        }
    }
}

/// Every row of `want` once in `got`, and no other.
/// Up to five keys of `a` that `b` lacks.
fn absent<'a>(a: &'a BTreeMap<String, usize>, b: &BTreeMap<String, usize>) -> Vec<&'a String> {
    a.keys().filter(|k| !b.contains_key(*k)).take(5).collect()
}

fn same_versions(got: &BTreeMap<String, usize>, want: &BTreeMap<String, usize>) {
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "rows written twice: {twice:?}");
    let (missing, extra) = (absent(want, got), absent(got, want));
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
}

/// A cluster killed mid-run (process 1 SIGKILLed once process 0 has
/// committed rows) and started again goes on from its lake: every process
/// reads its share again and process 0's writer skips what the lake holds,
/// so the lake ends as an uninterrupted cluster's, no row twice and none
/// missing. A third start finds the run whole: every process has nothing
/// to do.
#[test]
fn a_killed_cluster_started_again_goes_on_from_its_lake() {
    let s = setup();
    let text = std::fs::read_to_string(&s.dataflow).unwrap();
    assert!(text.contains("roll_interval = \"1m\""));
    // Commits many times a second: the kill lands after some, before others.
    let text = text.replace("roll_interval = \"1m\"", "roll_interval = \"30ms\"");
    std::fs::write(&s.dataflow, text).unwrap();
    let (one, _) = s.one();
    let (whole, _) = s.cluster(3);
    let want = versions(&whole);
    assert!(
        want.values().all(|n| *n == 1),
        "an uninterrupted cluster writes each row once"
    );
    let out = s.dir.path().join("killed");
    let (vars, logs) = s.by_hand(&out, &[("PLANTFLOW_TEST_SLOW_SOURCE_MS", "300")]);
    let mut c = LocalCluster::start(&s.dataflow, 3, &logs, |_| vars.clone());
    wait_for("process 0's first committed windows", || {
        let committed = out.join("_plantflow/commit.json").exists();
        (committed && !rows(&out, "aggregates").is_empty()).then_some(())
    });
    c.kill(1);
    for i in [0, 2] {
        let status = c.wait(i);
        assert_eq!(status.code(), Some(69), "process {i}: {}", c.log(i));
    }
    let cut = versions(&out);
    assert!(
        !cut.is_empty() && cut.len() < want.len(),
        "the kill landed mid-run: {} of {} rows in the lake",
        cut.len(),
        want.len()
    );
    let again = || s.cluster_on(3, &out);
    let resumed = again();
    assert!(
        resumed["resumed"]["after_commit"].as_u64() > Some(0)
            && resumed["resumed"]["nothing_to_do"] == false,
        "{resumed}"
    );
    let got = versions(&out);
    same_versions(&got, &want);
    // And the values are one process's (latest revision per key).
    same_latest(&one, &out);
    let files = |out: &Path| versions(out).len();
    let third = again();
    assert_eq!(third["resumed"]["nothing_to_do"], true, "{third}");
    assert_eq!(third["rows_read"], 0, "{third}");
    assert_eq!(files(&out), got.len(), "nothing was written");
}

/// The setup's samples as two replay files (tags split by the sum of their
/// bytes), each over 2 MiB (read in jobs: every process reads a share of
/// both), with checkpoints every 200 ms and commits every 30 ms.
fn two_files(s: &Setup) {
    let text = std::fs::read_to_string(s.input.join("samples.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let (mut a, mut b) = (format!("{header}\n"), format!("{header}\n"));
    for l in lines {
        let tag = l.split(',').nth(1).unwrap();
        let f = if tag.bytes().map(u32::from).sum::<u32>() % 2 == 0 {
            &mut a
        } else {
            &mut b
        };
        f.push_str(l);
        f.push('\n');
    }
    assert!(a.len() > 4 << 20 && b.len() > 4 << 20);
    std::fs::write(s.input.join("a.csv"), a).unwrap();
    std::fs::write(s.input.join("b.csv"), b).unwrap();
    let df = std::fs::read_to_string(&s.dataflow).unwrap();
    let two = df
        .replace(
            "path = \"${INPUT_DIR}/${SAMPLES_FILE:-samples.csv}\"",
            "path = \"${INPUT_DIR}/a.csv\"\n\n[[sources]]\ntype = \"replay\"\nid = \"more\"\n\
             path = \"${INPUT_DIR}/b.csv\"",
        )
        .replace("roll_interval = \"1m\"", "roll_interval = \"30ms\"")
        .replace(
            "size = \"1m\"",
            "size = \"1m\"\ncheckpoint_interval = \"200ms\"",
        );
    assert_eq!(two.matches("[[sources]]").count(), 2);
    assert!(two.contains("checkpoint_interval"));
    std::fs::write(&s.dataflow, two).unwrap();
}

/// A cluster of two replay files (not one: their rows interleave by
/// timing) keeps an input log and checkpoints on every process, cut in
/// rounds as for live sources. Killed twice mid-run (SIGKILL to process 1,
/// then to process 0, each once the lake names a checkpoint both wrote),
/// each start goes on from that checkpoint: every process replays its own
/// log and reads on in its share of each file from the position its log
/// recorded. The lake ends as one process's (latest revision per key, the
/// malformed lines' dead letters once), with no (key, revision) twice.
/// Before, such a cluster kept no log and refused its own lake (exit 78).
#[test]
fn a_killed_cluster_of_two_replay_files_goes_on_from_its_checkpoints() {
    let s = setup();
    two_files(&s);
    killed_twice_goes_on(&s, 21);
}

/// The same on two Parquet files (rows as the CSV files', without the
/// malformed lines, in row groups of 50,000 rows): each process goes on in
/// its share of each file's row-group jobs from the row its log recorded.
#[test]
fn a_killed_cluster_of_two_parquet_files_goes_on_from_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen_workload(dir.path(), 120, 3600);
    let s = Setup::new(dir, input, None);
    two_files(&s);
    for f in ["a", "b"] {
        let csv = s.input.join(format!("{f}.csv"));
        let parquet = s.input.join(format!("{f}.parquet"));
        let n =
            plantflow::gen::workload::samples_to_parquet_in_groups(&csv, &parquet, 50_000).unwrap();
        assert!(n > 150_000, "{f}: {n} rows");
        std::fs::remove_file(csv).unwrap();
    }
    let df = std::fs::read_to_string(&s.dataflow).unwrap();
    let df = df
        .replace("/a.csv\"", "/a.parquet\"")
        .replace("/b.csv\"", "/b.parquet\"");
    assert!(df.contains("a.parquet") && df.contains("b.parquet"));
    std::fs::write(&s.dataflow, df).unwrap();
    killed_twice_goes_on(&s, 0);
}

/// Kills the cluster of two processes on `s` twice mid-run and runs it to
/// its end (see above); the lake ends as one process's, with `dead` dead
/// letters.
fn killed_twice_goes_on(s: &Setup, dead: usize) {
    let (one, _) = s.one();
    let out = s.dir.path().join("killed");
    let (vars, logs) = s.by_hand(&out, &[("PLANTFLOW_TEST_SLOW_SOURCE_MS", "400")]);
    let mut last = 0;
    for p in [1, 0] {
        let mut c = LocalCluster::start(&s.dataflow, 2, &logs, |_| vars.clone());
        let at = wait_for(
            "rows and a newer checkpoint both wrote, named by the lake",
            || {
                let after = named_checkpoint(&out).filter(|at| *at > last)?;
                (!rows(&out, "aggregates").is_empty()).then_some(after)
            },
        );
        c.kill(p);
        let status = c.wait(1 - p);
        assert_eq!(status.code(), Some(69), "{}", c.log(1 - p));
        if p == 0 {
            assert!(
                c.log(0).contains("starting from a checkpoint"),
                "{}",
                c.log(0)
            );
        }
        let cut = versions(&out).len();
        assert!(cut > 0, "process {p} killed after the lake had rows");
        last = at;
    }
    let summary = s.cluster_on(2, &out);
    assert_eq!(
        summary["source_events"]["started from a checkpoint"], 1,
        "{summary}"
    );
    let read = summary["rows_read"].as_u64().unwrap();
    assert!(
        read > 0 && read < 432_000,
        "the last start read the rest: {summary}"
    );
    ends_as_one(&one, &out, dead);
}

/// The lake `out` ends as one process's (`one`): latest revision per key,
/// no (key, revision) twice, the `dead` malformed lines' dead letters
/// once.
fn ends_as_one(one: &Path, out: &Path, dead: usize) {
    same_latest(one, out);
    let got = versions(out);
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "rows written twice: {twice:?}");
    assert_eq!(latest_rows(out)["dead_letter"].len(), dead);
}

/// Two followed files in a cluster of 2 (a followed file runs whole on one
/// process: file `i` on process `i`), logged on every process. Killed
/// (SIGKILL to process 1 once the lake names a checkpoint both wrote) while
/// the files hold their first half hour, the files grown to their whole
/// hour while the cluster is down, and started again (drained at a stop):
/// each process goes on from that checkpoint and its file from the line its
/// log recorded. The lake's latest rows equal one process's over the whole
/// files, with no (key, revision) twice and each malformed line's dead
/// letter once.
#[test]
fn a_followed_cluster_killed_and_grown_goes_on_from_its_logged_lines() {
    let s = setup();
    two_files(&s);
    let (one, one_summary) = s.one();
    let accepted = one_summary["rows_accepted"].as_u64().unwrap();
    // The first half hour of each file (the same time in both, half a
    // window past a boundary: both processes go quiet in one epoch).
    let whole: Vec<(PathBuf, String)> = ["a.csv", "b.csv"]
        .iter()
        .map(|f| {
            let p = s.input.join(f);
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    let start = first_ts(&whole[0].1);
    let half = start - start % 60_000 + 30 * 60_000 + 30_000;
    for (p, text) in &whole {
        // (a prefix: the file grows by appending)
        let cut: String = text
            .lines()
            .take_while(|l| {
                l.split(',')
                    .next()
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_none_or(|t| t < half)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(text.starts_with(&cut) && cut.len() < text.len());
        std::fs::write(p, cut).unwrap();
    }
    let out = s.dir.path().join("followed");
    let (vars, logs) = s.by_hand(&out, &[]);
    let mut c = LocalCluster::start_with(&s.dataflow, (2, "--follow"), &logs, |_| vars.clone());
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while named_checkpoint(&out).is_none() {
        let (zero, one) = (c.log(0), c.log(1));
        assert!(
            std::time::Instant::now() < until,
            "no checkpoint named by the lake ({:?}):\n{zero}\n{one}",
            std::fs::read_to_string(out.join("_plantflow/commit.json"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.kill(1);
    let status = c.wait(0);
    assert_eq!(status.code(), Some(69), "{}", c.log(0));
    assert!(!versions(&out).is_empty(), "the lake had rows");
    for (p, text) in &whole {
        std::fs::write(p, text).unwrap();
    }
    let mut c = LocalCluster::start_with(&s.dataflow, (2, "--follow --drain"), &logs, |_| {
        vars.clone()
    });
    let df = s.dataflow.clone();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while logged_by_all(&df, &vars).0 < accepted {
        let (zero, one) = (c.log(0), c.log(1));
        let n = logged_by_all(&df, &vars);
        assert!(
            std::time::Instant::now() < until,
            "the logs hold {n:?} of {accepted} rows:\n{zero}\n{one}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        logged_by_all(&df, &vars),
        (accepted, 2),
        "each row once, in one log"
    );
    assert!(
        c.log(0).contains("starting from a checkpoint"),
        "{}",
        c.log(0)
    );
    c.stop_all();
    ends_as_one(&one, &out, 21);
}

/// A stop while process 0 has read its share and waits for the others
/// (they read slowly): process 0 commits only what was final, not the
/// windows the others' input ends would close without the rest of their
/// rows, and the cluster started again ends with the uninterrupted lake.
#[test]
fn a_cluster_stopped_while_process_0_waits_commits_only_what_is_final() {
    let s = setup();
    let text = std::fs::read_to_string(&s.dataflow).unwrap();
    let text = text.replace("roll_interval = \"1m\"", "roll_interval = \"30ms\"");
    std::fs::write(&s.dataflow, text).unwrap();
    let (one, _) = s.one();
    let (whole, _) = s.cluster(3);
    let want = versions(&whole);
    let out = s.dir.path().join("stopped");
    let (fast, logs) = s.by_hand(&out, &[]);
    let (slow, _) = s.by_hand(&out, &[("PLANTFLOW_TEST_SLOW_SOURCE_MS", "300")]);
    let vars = |i: usize| if i == 0 { fast.clone() } else { slow.clone() };
    let mut c = LocalCluster::start_with(&s.dataflow, (3, "--json"), &logs, vars);
    c.wait_logged("processes is connected");
    // Process 0's share is read at once; the others' take seconds.
    std::thread::sleep(Duration::from_millis(800));
    c.signal(1, "TERM");
    for i in 0..3 {
        let status = c.wait(i);
        assert_eq!(status.code(), Some(0), "process {i}: {}", c.log(i));
    }
    let cut = versions(&out);
    assert!(cut.len() < want.len(), "the stop landed mid-run");
    let extra = absent(&cut, &want);
    assert!(
        extra.is_empty(),
        "rows no uninterrupted run writes: {extra:?}"
    );
    s.cluster_on(3, &out);
    same_versions(&versions(&out), &want);
    same_latest(&one, &out);
}

/// A process that stops answering without closing its connections
/// (SIGSTOP: its kernel still keeps them open) is lost once its heartbeats
/// stop for `PLANTFLOW_PEER_TIMEOUT`: process 0 names it, tells the
/// other process, and both exit 69 naming it.
#[test]
fn a_process_that_stops_answering_stops_the_others_naming_it() {
    let s = setup();
    let out = s.dir.path().join("stopped");
    let extra = [
        ("PLANTFLOW_TEST_SLOW_SOURCE_MS", "500"),
        ("PLANTFLOW_PEER_TIMEOUT", "3s"),
    ];
    let (vars, logs) = s.by_hand(&out, &extra);
    let mut c = LocalCluster::start(&s.dataflow, 3, &logs, |_| vars.clone());
    c.wait_logged("processes is connected");
    c.signal(1, "STOP");
    for i in [0, 2] {
        let status = c.wait(i);
        let err = c.log(i);
        assert_eq!(status.code(), Some(69), "process {i}: {err}");
        assert!(
            err.contains("process 1 of the cluster") && err.contains("no heartbeat for 3.0 s"),
            "process {i}: {err}"
        );
    }
    c.kill(1);
}

/// 2 and 3 processes read workload v1 over MQTT from the embedded broker
/// (rumqttd) through a shared subscription: the broker gives each message
/// to one of them, and the lake equals the DuckDB oracle's aggregates and
/// actions, as one process's does.
#[test]
fn processes_sharing_an_mqtt_subscription_write_the_oracle_lake() {
    for n in [2, 3] {
        let b = plantflow::sim::broker::start(0, 0).expect("embedded broker starts");
        assert_mqtt_cluster(&b.url_v5(), &b.url_v4(), n);
    }
}

/// The project's OPC UA server with a node per tag of the fixture's assets
/// (100), in a new directory: the directory, the tags, the server.
fn opcua_plant() -> (
    tempfile::TempDir,
    Vec<String>,
    plantflow::sim::opcua::PlantServer,
) {
    use plantflow::sim::opcua::{PlantServer, ServerOptions, SimTag};
    let text = std::fs::read_to_string(fixture_dir().join("assets.csv")).unwrap();
    let tags: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let server = PlantServer::start(ServerOptions {
        port: 0,
        tags: tags.iter().map(|t| SimTag::new(t, "kW", 500.0)).collect(),
        anonymous: true,
        users: vec![],
        pki_dir: dir.path().join("server-pki"),
        odd_nodes: false,
        min_publishing_interval_ms: 20,
        offer_none: true,
    })
    .expect("the simulator starts");
    (dir, tags, server)
}

/// Process `i`'s environment for `opcua_plant.toml` against `server`,
/// writing to `out` (each process its own client certificates in `dir`).
fn opcua_vars(
    server: &plantflow::sim::opcua::PlantServer,
    dir: &Path,
    out: &Path,
) -> impl Fn(usize) -> Vec<(&'static str, String)> {
    let (url, d, out) = (server.url(), dir.to_path_buf(), out.to_path_buf());
    move |i: usize| {
        vec![
            ("INPUT_DIR", fixture_dir().display().to_string()),
            ("OUT_DIR", out.display().to_string()),
            ("OPCUA_URL", url.clone()),
            (
                "OPCUA_PKI_DIR",
                d.join(format!("client-pki-{i}")).display().to_string(),
            ),
            ("OPCUA_PUBLISHING_INTERVAL", "50ms".to_string()),
        ]
    }
}

/// 2 processes read workload v1 from the project's OPC UA server (100
/// variables, every change queued): each monitors the nodes whose id hashes
/// to it (a disjoint share of all 100), and the lake equals the DuckDB
/// oracle's aggregates and actions.
#[test]
fn processes_sharing_an_opcua_node_set_write_the_oracle_lake() {
    use plantflow::sim::opcua::replay_csv;
    let (dir, tags, server) = opcua_plant();
    let out = dir.path().join("lake");
    let vars = opcua_vars(&server, dir.path(), &out);
    let c = LocalCluster::start(&dataflow("opcua_plant.toml"), 2, dir.path(), vars);
    c.wait_logged("OPC UA nodes resolved");
    let items = |i: usize| -> u64 {
        let log = c.log(i);
        let at = log.find("OPC UA nodes resolved").unwrap();
        let line = log[at..].lines().next().unwrap().to_string();
        let n = line
            .split("items=")
            .nth(1)
            .and_then(|r| r.split(' ').next());
        n.and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let per_items = [items(0), items(1)];
    assert_eq!(per_items.iter().sum::<u64>(), 100, "{per_items:?}");
    assert!(per_items.iter().all(|n| *n > 0), "{per_items:?}");
    // Every monitored item exists before the first value is written.
    c.wait_logged("OPC UA subscriptions active");
    let no_stop = std::sync::atomic::AtomicBool::new(false);
    let samples = fixture_dir().join("samples.csv");
    assert_eq!(
        replay_csv(&server, &tags, &samples, 0.0, &no_stop).unwrap(),
        90_000
    );
    let per = c.stop_after(90_000);
    server.stop();
    assert_eq!(
        per.iter().sum::<u64>(),
        90_000,
        "every change once: {per:?}"
    );
    assert_aggregates_equal(&latest_aggregates(&out), &expected_aggregates());
    assert!(assert_actions_match_oracle(&out) > 0);
}

/// A cluster of 2 on the project's OPC UA server (100 nodes, each process
/// monitoring its share) keeps every process's input log and checkpoints.
/// Process 1 is killed (SIGKILL) once both logs hold the first ten values
/// of every node and the lake names a checkpoint both wrote; the cluster
/// started again (drained when stopped) reads the next ten. Every change
/// logged counts once, after the restart too (the new subscriptions send
/// the current values again): each node's window holds the 20 values
/// written while the cluster was up, summing to 0 + … + 9 + 30 + … + 39 =
/// 390, and the time the cluster was down is a gap row.
#[test]
fn a_killed_cluster_on_opcua_keeps_its_logged_changes_and_marks_its_downtime() {
    use opcua::types::StatusCode;
    let (dir, tags, server) = opcua_plant();
    let df = dir.path().join("opcua_plant.toml");
    let text = std::fs::read_to_string(dataflow("opcua_plant.toml")).unwrap();
    let often = text
        .replace("roll_interval = \"1m\"", "roll_interval = \"100ms\"")
        .replace(
            "size = \"1m\"",
            "size = \"1m\"\ncheckpoint_interval = \"200ms\"",
        );
    assert_eq!(
        often.matches("100ms").count() + often.matches("200ms").count(),
        2
    );
    std::fs::write(&df, often).unwrap();
    let out = dir.path().join("lake");
    let vars = opcua_vars(&server, dir.path(), &out);
    // Event times a minute boundary ten minutes ago: one window per node.
    let base = (plantflow::model::now_ms() / 60_000 - 10) * 60_000;
    let write = |from: i64, to: i64| {
        for k in from..to {
            let u: Vec<_> = (0..tags.len())
                .map(|i| (i, k as f64, base + k * 1_000, StatusCode::Good))
                .collect();
            server.set(&u).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let n = tags.len() as u64;
    let logged = || logged_by_all(&df, &vars(0));
    let mut c = LocalCluster::start(&df, 2, dir.path(), &vars);
    c.wait_logged("OPC UA subscriptions active");
    std::thread::sleep(Duration::from_millis(500));
    write(0, 10);
    wait_for("the first ten values of every node logged", || {
        (logged().0 >= 10 * n).then_some(())
    });
    c.kill_1_at_a_checkpoint(&out);
    let mut c = LocalCluster::start_with(&df, (2, "--drain"), dir.path(), &vars);
    c.wait_logged("OPC UA subscriptions active");
    assert!(
        c.log(0).contains("starting from a checkpoint"),
        "{}",
        c.log(0)
    );
    std::thread::sleep(Duration::from_millis(500));
    write(30, 40);
    wait_for("the next ten values logged", || {
        (logged().0 >= 20 * n).then_some(())
    });
    assert_eq!(
        logged(),
        (20 * n, 2),
        "each change once, in one process's log"
    );
    c.stop_all();
    server.stop();
    assert_downtime_gap(&out);
    let agg = latest_aggregates(&out);
    for t in &tags {
        let a = &agg[&(t.clone(), base)];
        assert_eq!(a.count, 20, "{t}");
        assert!((a.mean * 20.0 - 390.0).abs() < 1e-9, "{t}: {}", a.mean);
    }
    assert_no_revision_twice(&out);
}

/// What a cluster refuses before it connects, each with exit 78 and what
/// to do: a hostfile that names another number of processes (its file and
/// line), a lake that already holds a run, an mqtt source that edits
/// context without sharing its samples.
#[test]
fn a_cluster_that_cannot_run_as_given_is_refused_at_start() {
    let s = setup();
    let hosts = s.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:1\n").unwrap();
    let run = |df: &Path, out: &Path, process: &str, extra: &[(&str, &str)], flags: &[&str]| {
        let mut c = Command::new(PLANTFLOW);
        c.args([
            "run",
            "--processes",
            "2",
            "--process",
            process,
            "--hostfile",
        ])
        .arg(&hosts)
        .args(flags)
        .arg(df);
        s.env(&mut c, out);
        c.envs(extra.iter().copied());
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&s.dataflow, &s.dir.path().join("a"), "0", &[], &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("hosts:1: names 1 processes, but --processes is 2"),
        "{err}"
    );
    assert_eq!(hostfile(s.dir.path(), 2).0, hosts);
    // A lake that holds a run goes on only from one replay file read again
    // (see `a_killed_cluster_started_again_goes_on_from_its_lake`); a
    // followed file may have grown, so its input is not read again alike.
    let (one, _) = s.one();
    let (code, err) = run(&s.dataflow, &one, "0", &[], &["--follow"]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("already holds a run's files"), "{err}");
    let mqtt = crate::common::dataflow("workload_v1_mqtt.toml");
    for p in ["0", "1"] {
        let out = s.dir.path().join(format!("mqtt-{p}"));
        let (code, err) = run(&mqtt, &out, p, &[("MQTT_URL", "mqtt://127.0.0.1:1")], &[]);
        assert_eq!(code, Some(78), "process {p}: {err}");
        assert!(
            err.contains("mqtt source `mqtt` edits context tables") && err.contains("share = "),
            "{err}"
        );
    }
}
