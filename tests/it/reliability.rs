//! Fail loud, never hang, stay bounded (docs/reliability.md): a value that
//! cannot run fails `validate`; a failing source or sink ends the run with
//! one line naming it; every mutation of a dataflow's numbers and strings
//! either fails `validate` (exit 78, file:line) or runs to a clean end.

use std::process::Command;

use crate::common::*;

const PLANTFLOW: &str = env!("CARGO_BIN_EXE_plantflow");

/// A value that would fail at run time fails `validate` instead (issue 31:
/// `period = "0s"` passed and then hung the run).
#[test]
fn zero_periods_fail_validation_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("period = \"1h\""))
        .expect("the rule's period")
        + 1;
    let df = dir.path().join("p0.toml");
    std::fs::write(&df, text.replace("period = \"1h\"", "period = \"0s\"")).unwrap();
    for cmd in ["validate", "run"] {
        let out = Command::new(PLANTFLOW)
            .args([cmd, df.to_str().unwrap()])
            .env("INPUT_DIR", fixture_dir())
            .env("OUT_DIR", dir.path().join("out"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{cmd}: {err}");
        assert!(err.contains(&format!("p0.toml:{line}:")), "{err}");
        assert!(err.contains("key `rules[0].period`"), "{err}");
        assert!(err.contains("must be greater than 0"), "{err}");
    }
}

/// `[dead_letter]` values out of range fail `validate` with their keys.
#[test]
fn dead_letter_limits_out_of_range_fail_validation() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap()
        + "\n[dead_letter]\nmax_raw = \"10B\"\nper_message = 0\n";
    let df = dir.path().join("dl.toml");
    std::fs::write(&df, text).unwrap();
    let out = Command::new(PLANTFLOW)
        .args(["validate", df.to_str().unwrap()])
        .env("INPUT_DIR", fixture_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("`10B` is out of range") && err.contains("key `dead_letter.max_raw`"),
        "{err}"
    );
    assert!(
        err.contains("0 is out of range") && err.contains("key `dead_letter.per_message`"),
        "{err}"
    );
}

/// A source that fails ends the run: exit 1, one line naming the source and
/// its key, no backtrace, and the run does not hang (it used to, until SIGKILL).
#[test]
fn a_failing_source_ends_the_run_with_one_line_naming_it() {
    let input = tempfile::tempdir().unwrap();
    for f in ["assets.csv", "tariff.csv", "production.csv"] {
        std::fs::copy(fixture_dir().join(f), input.path().join(f)).unwrap();
    }
    // Not a Parquet file: the first 5,000 bytes of the CSV.
    let csv = std::fs::read(fixture_dir().join("samples.csv")).unwrap();
    std::fs::write(input.path().join("bad.parquet"), &csv[..5_000]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(PLANTFLOW)
        .args(["run", "dataflows/workload_v1.toml"])
        .env("INPUT_DIR", input.path())
        .env("OUT_DIR", out.path())
        .env("SAMPLES_FILE", "bad.parquet")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("plantflow: source `samples` (sources[0]) failed: ")
            && last.contains("bad.parquet: not a Parquet file"),
        "{err}"
    );
    assert_eq!(err.matches("failed").count(), 1, "said once: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

/// The lake cannot be written (its directory is a file: what a full or
/// read-only disk also gives): the sink fails, the run ends at once with
/// exit 1 and one line naming the sink and its key.
#[test]
fn a_lake_that_cannot_be_written_ends_the_run_naming_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file where the lake should be").unwrap();
    let out = Command::new(PLANTFLOW)
        .args(["run", "dataflows/workload_v1.toml"])
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", blocker.join("lake"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("plantflow: sink `lake` (sinks[0]) failed: "),
        "{err}"
    );
    assert!(last.contains("not-a-dir"), "names the path: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A path to one leaf of a TOML document.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn leaves(v: &toml::Value, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                path.push(Seg::Key(k.clone()));
                leaves(v, path, out);
                path.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                leaves(v, path, out);
                path.pop();
            }
        }
        leaf => out.push((path.clone(), leaf.clone())),
    }
}

fn set(v: &mut toml::Value, path: &[Seg], new: toml::Value) {
    match path.split_first() {
        None => *v = new,
        Some((Seg::Key(k), rest)) => set(v.get_mut(k.as_str()).expect("key"), rest, new),
        Some((Seg::Index(i), rest)) => set(v.get_mut(*i).expect("index"), rest, new),
    }
}

fn show(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => format!(".{k}"),
            Seg::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// What a hostile or careless edit might put in a value of this kind.
fn mutations(v: &toml::Value) -> Vec<toml::Value> {
    use toml::Value::*;
    match v {
        Integer(_) => vec![Integer(0), Integer(-1), Integer(i64::MAX)],
        Float(_) => vec![Float(0.0), Float(-1.0), Float(1e300)],
        String(_) => vec![
            String(std::string::String::new()),
            String("0s".into()),
            String("-5m".into()),
            String("99999999d".into()),
            String("9999999999999999d".into()),
        ],
        Boolean(b) => vec![Boolean(!b)],
        _ => vec![],
    }
}

/// Mutates every number, duration and string of `name` (in `dataflows/`),
/// one at a time. Each mutant must fail `validate` with exit 78 and a
/// file:line, or (when `run`) run on the small fixture to exit 0: never a
/// panic, an internal error or a hang. Returns (rejected, ran).
fn mutate(name: &str, run: bool) -> (usize, usize) {
    mutate_on(name, run, &fixture_dir())
}

/// [`mutate`] with the inputs in `input` (`INPUT_DIR`).
fn mutate_on(name: &str, run: bool, input: &std::path::Path) -> (usize, usize) {
    let text = std::fs::read_to_string(dataflow(name)).unwrap();
    let doc: toml::Value = toml::from_str(&text).unwrap();
    let mut all = Vec::new();
    leaves(&doc, &mut Vec::new(), &mut all);
    let dir = tempfile::tempdir().unwrap();
    let (mut rejected, mut ran) = (0, 0);
    let mut bad = Vec::new();
    for (path, leaf) in &all {
        for m in mutations(leaf) {
            let mut d = doc.clone();
            set(&mut d, path, m.clone());
            let df = dir.path().join("mutant.toml");
            std::fs::write(&df, toml::to_string(&d).unwrap()).unwrap();
            let what = format!("{name}: {} = {m}", show(path));
            // Relative paths a mutant makes (a lake named `0s`) land in the scratch dir.
            let v = Command::new(PLANTFLOW)
                .current_dir(dir.path())
                .args(["validate", df.to_str().unwrap()])
                .env("INPUT_DIR", input)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&v.stderr).to_string();
            match v.status.code() {
                Some(78) => {
                    rejected += 1;
                    if !(err.contains("mutant.toml:") && err.contains("key `")) {
                        bad.push(format!("{what}: exit 78 without file:line and key:\n{err}"));
                    }
                    continue;
                }
                Some(0) if !run => continue,
                Some(0) => {}
                other => {
                    bad.push(format!("{what}: validate exited {other:?}:\n{err}"));
                    continue;
                }
            }
            let out = dir.path().join(format!("out-{ran}"));
            let (status, err) = run_to_end(
                &format!("the run of {what} to end"),
                Command::new(PLANTFLOW)
                    .current_dir(dir.path())
                    .args(["run", df.to_str().unwrap(), "--shutdown-timeout", "20s"])
                    .env("INPUT_DIR", input)
                    .env("OUT_DIR", &out),
            );
            ran += 1;
            if status.code() != Some(0)
                || err.contains("panicked")
                || err.contains("internal error")
            {
                bad.push(format!("{what}: run exited {:?}:\n{err}", status.code()));
            }
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    eprintln!("{name}: {rejected} mutants rejected by validate, {ran} ran to the end");
    assert!(
        bad.is_empty(),
        "{} of {} mutants misbehaved:\n{}",
        bad.len(),
        rejected + ran,
        bad.join("\n---\n")
    );
    (rejected, ran)
}

/// The reference dataflow: every mutant is rejected or runs cleanly.
#[test]
fn every_mutation_of_the_reference_dataflow_fails_validation_or_runs_cleanly() {
    let (rejected, ran) = mutate("workload_v1.toml", true);
    assert!(rejected > 20 && ran > 20, "{rejected} rejected, {ran} ran");
}

/// Rule-library dataflows that run on the small fixture.
#[test]
fn every_mutation_of_library_rules_fails_validation_or_runs_cleanly() {
    for name in ["demand_peak.toml", "idle_load.toml", "off_hours.toml"] {
        let (rejected, ran) = mutate(name, true);
        assert!(
            rejected > 10 && ran > 10,
            "{name}: {rejected} rejected, {ran} ran"
        );
    }
}

/// Rule-library dataflows whose assets carry extra columns (a `signal`
/// per tag, a target): each runs on 26 hours of its own two signals, made
/// here, that its rule finds (so the mutants reach the value layer).
#[test]
fn every_mutation_of_library_rules_with_extra_columns_fails_validation_or_runs_cleanly() {
    use crate::value::{write, H, T0};
    // (dataflow, asset kind, extra asset columns, [(tag, its columns, value)])
    type Signal<'a> = (&'a str, &'a str, f64);
    let cases: [(&str, &str, &str, [Signal; 2]); 4] = [
        (
            "baseload_creep.toml",
            "hvac",
            "base_kw",
            [("power_kw", "10", 12.0), ("aux_kw", "10", 12.0)],
        ),
        (
            "chiller_efficiency.toml",
            "chiller",
            "signal,target_kw_per_ton",
            [
                ("power_kw", "power_kw,0.75", 100.0),
                ("tons", "cooling_tons,0.75", 100.0),
            ],
        ),
        (
            "compressor_specific_power.toml",
            "compressor",
            "signal,target_sp",
            [
                ("power_kw", "power_kw,6.0", 70.0),
                ("flow", "flow_m3min,6.0", 10.0),
            ],
        ),
        (
            "power_factor.toml",
            "motor",
            "signal",
            [
                ("power_kw", "power_kw", 100.0),
                ("kvar", "reactive_kvar", 75.0),
            ],
        ),
    ];
    for (name, kind, columns, signals) in cases {
        let input = tempfile::tempdir().unwrap();
        let mut assets = format!("tag,asset,site,line,kind,standby_kw,{columns}\n");
        let mut samples = String::from("ts,tag,value,quality\n");
        for (tag, extra, _) in signals {
            assets.push_str(&format!(
                "s1/l1/a1/{tag},s1/l1/a1,s1,s1/l1,{kind},0,{extra}\n"
            ));
        }
        // Every 5 minutes for 26 hours: baseload creep's day closes.
        for m in (0..26 * 60).step_by(5) {
            for (tag, _, v) in signals {
                samples.push_str(&format!(
                    "{},s1/l1/a1/{tag},{v},0\n",
                    T0 + m * 60_000 + 30_000
                ));
            }
        }
        write(
            input.path(),
            &[
                ("assets.csv", assets),
                ("samples.csv", samples),
                (
                    "tariff.csv",
                    "start_hour,end_hour,price_per_kwh\n0,24,0.10\n".into(),
                ),
                (
                    "production.csv",
                    format!("line,start_ms,end_ms\ns1/l1,{},{}\n", T0 + H / 2, T0 + H),
                ),
            ],
        );
        // Unmutated, the rule finds something here.
        let out = tempfile::tempdir().unwrap();
        run(&dataflow(name), input.path(), out.path(), 1);
        assert!(!rows(out.path(), "actions").is_empty(), "{name}: no action");
        let (rejected, ran) = mutate_on(name, true, input.path());
        assert!(
            rejected > 10 && ran > 10,
            "{name}: {rejected} rejected, {ran} ran"
        );
    }
}

/// Live dataflows (MQTT, OPC UA): validated only, as running needs peers.
#[test]
fn every_mutation_of_live_dataflows_is_validated_without_panic() {
    for name in ["workload_v1_mqtt.toml", "opcua_plant.toml"] {
        let (rejected, _) = mutate(name, false);
        assert!(rejected > 10, "{name}: {rejected} rejected");
    }
}

/// SIGTERM ends a run within `--shutdown-timeout` even when a component
/// cannot stop: here the status tail, blocked opening a FIFO that no one
/// writes (a file on a stuck share behaves alike). Exit 124, naming it.
#[test]
fn a_component_that_cannot_stop_does_not_outlive_the_shutdown_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status.jsonl");
    let text = std::fs::read_to_string(dataflow("workload_v1.toml"))
        .unwrap()
        .replace("roll_interval = \"1m\"", "roll_interval = \"1s\"")
        + &format!("\n[lifecycle]\npath = \"{}\"\n", status.display());
    let df = dir.path().join("df.toml");
    std::fs::write(&df, text).unwrap();
    let child = Command::new(PLANTFLOW)
        .args(["run", "--follow", "--shutdown-timeout", "2s"])
        .arg(&df)
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", dir.path().join("out"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // The run is up (its lake has files) before the status file turns into a FIFO.
    wait_for("the first files", || {
        parquet_files(&dir.path().join("out"), "aggregates")
            .first()
            .map(|_| ())
    });
    assert!(Command::new("mkfifo")
        .arg(&status)
        .status()
        .unwrap()
        .success());
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let status = child.terminate();
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_ended(
        status,
        &err,
        124,
        "plantflow: did not stop within 2 s (still running: ",
        "the status tail (lifecycle.path)",
    );
}

/// A full disk (a 64 KiB tmpfs; the lake needs about 90 KB): the sink
/// fails with the OS's reason, the run ends at once naming it, and every
/// file a reader can see is whole (in-progress files stay hidden).
#[test]
fn a_full_disk_ends_the_run_naming_the_sink_and_shows_no_half_file() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let Some(_unmount) = small_disk(&small, "64k") else {
        return;
    };
    let lake = small.join("lake");
    let out = Command::new(PLANTFLOW)
        .args(["run", "dataflows/workload_v1.toml"])
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", &lake)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("plantflow: sink `lake` (sinks[0]) failed: ")
            && last.contains("No space left on device"),
        "{err}"
    );
    for table in ["aggregates", "actions", "dead_letter"] {
        for f in parquet_files(&lake, table) {
            let file = std::fs::File::open(&f).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap_or_else(|e| panic!("{} is not whole: {e}", f.display()));
            for b in reader.build().unwrap() {
                b.unwrap_or_else(|e| panic!("{} is not whole: {e}", f.display()));
            }
        }
    }
    // The commit record is whole (or absent), and the lake resumes from it
    // once there is room (here: a copy on a roomy disk), to the oracle's
    // lake with no row twice.
    let record = lake.join("_plantflow/commit.json");
    if let Ok(bytes) = std::fs::read(&record) {
        let m: serde_json::Value = serde_json::from_slice(&bytes).expect("a whole record");
        for f in m["files"].as_array().unwrap() {
            assert!(lake.join(f.as_str().unwrap()).exists(), "{f} is published");
        }
    }
    let roomy = dir.path().join("roomy");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&lake)
        .arg(&roomy)
        .status()
        .unwrap();
    assert!(copied.success());
    let out = Command::new(PLANTFLOW)
        .args(["run", "dataflows/workload_v1.toml"])
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", &roomy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_aggregates_equal(&latest_aggregates(&roomy), &expected_aggregates());
    assert!(assert_actions_match_oracle(&roomy) > 0);
    assert_no_revision_twice(&roomy);
}

/// Every lake file reaches the disk before its name does: the writer
/// fsyncs the in-progress file, renames it, then fsyncs its directory.
/// Read from the system calls themselves (strace), since a kill -9 cannot
/// show it (the page cache outlives the process).
#[test]
fn lake_files_are_synced_before_their_names_appear() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let trace = dir.path().join("trace.txt");
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .args([PLANTFLOW, "run", "dataflows/workload_v1.toml"])
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", &lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut files = parquet_files(&lake, "aggregates");
    files.extend(parquet_files(&lake, "actions"));
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let tmp = f.with_file_name(format!(".{name}.inprogress"));
        let target = f.display().to_string();
        let renamed = calls
            .iter()
            .position(|c| c.contains("rename") && c.contains(&format!("\"{target}\"")))
            .unwrap_or_else(|| panic!("no rename to {target}"));
        let synced = calls
            .iter()
            .position(|c| c.contains("fsync(") && c.contains(&format!("<{}>", tmp.display())))
            .unwrap_or_else(|| panic!("{} never fsync'd", tmp.display()));
        assert!(synced < renamed, "{name}: fsync after rename");
        let parent = f.parent().unwrap().display().to_string();
        assert!(
            calls[renamed..]
                .iter()
                .any(|c| c.contains("fsync(") && c.contains(&format!("<{parent}>"))),
            "{name}: its directory is not fsync'd after the rename"
        );
    }
}

/// Runs workload v1 on `workers` with `force` applied to its validated
/// plan (what `validate` would reject) and returns the run's error.
fn run_forced(
    workers: usize,
    force: impl Fn(&mut plantflow::dataflow::Dataflow),
) -> plantflow::run::RunError {
    let out = tempfile::tempdir().unwrap();
    let mut plan = load(&dataflow("workload_v1.toml"), &fixture_dir(), out.path());
    force(&mut plan);
    let (_stats, _stop, run) = start_run(plan, workers);
    wait_for("the run to end", || run.is_finished().then_some(()));
    run.join().expect("the run returns").expect_err("an error")
}

/// A panic in a component (here a rule period of zero, which `validate`
/// rejects, forced into the plan: the source's window geometry divides by
/// it) ends the run with an internal error naming the component, on one or
/// two workers: no hang, no process taken down. It used to hang until SIGKILL.
#[test]
fn a_panic_in_a_source_ends_the_run_with_an_internal_error() {
    for workers in [1, 2] {
        let err = run_forced(workers, |p| p.rules[0].period_ms = 0);
        assert_eq!(err.code, plantflow::run::supervise::EXIT_INTERNAL, "{err}");
        assert!(
            err.message.starts_with(
                "source `samples` (sources[0]) failed: internal error: attempt to divide by zero"
            ),
            "{workers} workers: {err}"
        );
    }
}

/// A panic on the engine's timely workers (here a rule compiled without its
/// measures, forced into the plan) ends the run with an internal error that
/// keeps the panic's message, on one or two workers: no hang.
#[test]
fn a_panic_in_the_engine_ends_the_run_with_its_message() {
    for workers in [1, 2] {
        let err = run_forced(workers, |p| p.rules[0].measures.clear());
        assert_eq!(err.code, plantflow::run::supervise::EXIT_INTERNAL, "{err}");
        assert!(
            err.message.starts_with(
                "the engine failed: internal error in a worker: validated expression failed to compile"
            ),
            "{workers} workers: {err}"
        );
    }
}

/// A status file that cannot be read when the run starts (here a
/// directory) ends the run with an error naming it, before anything waits
/// on the writer: no hang.
#[test]
fn an_unreadable_status_file_ends_the_run_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let err = run_forced(1, move |p| {
        p.lifecycle = Some(plantflow::config::LifecyclePlan { path: path.clone() })
    });
    assert!(
        err.message.starts_with("cannot read `")
            && err.message.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

/// A slow disk (the test hook pauses the writer 100 ms per batch) no longer
/// lets the engine's output pile up in memory: with `max_queue = "64KiB"`
/// the engine stops taking input while that much waits, the peak stays
/// near the bound (the output of one engine step past it: about 2 MB here,
/// whatever the input's length) instead of the whole run's output, and the
/// lake is the same. Two hours of 400 tags, so the unbounded pile-up is
/// several steps' output on a fast machine too (one hour was not, on a
/// machine whose engine took the whole hour in one step).
#[test]
fn a_slow_writer_bounds_the_engine_output_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let gen = Command::new(PLANTFLOW)
        .args([
            "gen",
            "workload",
            "--tags",
            "400",
            "--seconds",
            "7200",
            "--out",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let run = |name: &str, extra: &str, slow_ms: u64| {
        let df = dir.path().join(format!("{name}.toml"));
        let t = text.replace(
            "roll_interval = \"1m\"",
            &format!("roll_interval = \"1m\"{extra}"),
        );
        std::fs::write(&df, t).unwrap();
        let out = dir.path().join(name);
        let o = Command::new(PLANTFLOW)
            .args(["run", "--json"])
            .arg(&df)
            .env("INPUT_DIR", &input)
            .env("OUT_DIR", &out)
            .env("PLANTFLOW_TEST_SLOW_WRITER_MS", slow_ms.to_string())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (s["sink_queue_peak_bytes"].as_u64().unwrap(), out)
    };
    // The writer sleeps for each engine batch it finds already queued: on
    // a machine busy with other tests the engine may not outrun it, so a
    // slower writer is tried until the unbounded run piles up.
    let mut tries = Vec::new();
    let (free, free_out, bounded, bounded_out) = loop {
        let slow = [100, 400, 1600][tries.len()];
        let (free, free_out) = run(&format!("free-{slow}"), "", slow);
        let (bounded, bounded_out) =
            run(&format!("bounded-{slow}"), "\nmax_queue = \"64KiB\"", slow);
        eprintln!("peak output waiting for the writer ({slow} ms a batch): {free} bytes unbounded, {bounded} with 64 KiB");
        tries.push((slow, free, bounded));
        if bounded < free / 4 || tries.len() == 3 {
            break (free, free_out, bounded, bounded_out);
        }
    };
    assert!(bounded < free / 4, "{tries:?}");
    assert!(bounded < 4 << 20, "{bounded}");
    assert_eq!(
        latest_aggregates(&bounded_out),
        latest_aggregates(&free_out)
    );
    let actions = |o: &std::path::Path| latest(rows(o, "actions"), &["action_id"]);
    assert_eq!(actions(&bounded_out), actions(&free_out));
}

/// One timely worker of two panics (the test hook panics worker 1 on its
/// first step) while the other waits for its progress: the run ends with
/// the panic's message (exit 70) instead of the survivor waiting forever.
#[test]
fn one_worker_panicking_ends_the_run_while_the_other_waits() {
    let out = tempfile::tempdir().unwrap();
    let (status, err) = run_to_end(
        "the run to end",
        Command::new(PLANTFLOW)
            .current_dir(out.path())
            .args(["run", "--workers", "2", "--shutdown-timeout", "20s"])
            .arg(dataflow("workload_v1.toml"))
            .env("INPUT_DIR", fixture_dir())
            .env("OUT_DIR", out.path().join("lake"))
            .env("PLANTFLOW_TEST_PANIC", "worker:1"),
    );
    assert_ended(
        status,
        &err,
        70,
        "plantflow: the engine failed: internal error in a worker: test panic on worker 1",
        "",
    );
}

/// An `mqtt_publish` sink that cannot start (its CA file holds no
/// certificate) ends the run with exit 1 and one line naming the sink and
/// its key. The issue saw one ERROR line and a run that hung until SIGKILL.
#[test]
fn a_publish_sink_that_cannot_start_ends_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("empty-ca.pem");
    std::fs::write(&ca, "").unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let df = dir.path().join("publish.toml");
    std::fs::write(
        &df,
        format!(
            "{text}\n[[sinks]]\ntype = \"mqtt_publish\"\nid = \"actions\"\nurl = \"mqtts://127.0.0.1:1\"\n\
             topic = \"plantflow/actions/{{site}}\"\ntables = [\"actions\"]\nca_file = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let (status, err) = run_to_end(
        "the run to end",
        Command::new(PLANTFLOW)
            .current_dir(dir.path())
            .args(["run", "--follow", "--shutdown-timeout", "20s"])
            .arg(&df)
            .env("INPUT_DIR", fixture_dir())
            .env("OUT_DIR", dir.path().join("lake")),
    );
    assert_ended(
        status,
        &err,
        1,
        "plantflow: sink `actions` (sinks[1]) failed: ",
        "no trusted CA certificates",
    );
}

/// Memory above `[memory] max` (here 1 MiB, below any process) holds the
/// sources; still above after `grace` (1 s), the run ends with exit 1 and
/// one line naming the governor and its key, instead of growing until the
/// system kills it. Nothing is lost: the same lake, run again without the
/// limit (which changes nothing the lake keeps), ends as the oracle's.
/// The limited run follows its file (`--follow`), so it cannot end by
/// itself between two of the governor's readings (a quarter second; the
/// whole fixture may take less).
#[test]
fn memory_above_its_limit_holds_input_then_ends_the_run_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let limited = dir.path().join("limited.toml");
    std::fs::write(
        &limited,
        format!("{text}\n[memory]\nmax = \"1MiB\"\ngrace = \"1s\"\n"),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let (status, err) = run_to_end(
        "the run to end",
        Command::new(PLANTFLOW)
            .current_dir(dir.path())
            .args(["run", "--follow", "--shutdown-timeout", "20s"])
            .arg(&limited)
            .env("INPUT_DIR", fixture_dir())
            .env("OUT_DIR", &lake)
            .env("PLANTFLOW_LOG", "warn"),
    );
    assert!(
        err.contains("memory: ")
            && err.contains("above the limit of 1.0 MiB (memory.max): input held"),
        "the hold is said: {err}"
    );
    assert_ended(
        status,
        &err,
        1,
        "plantflow: the memory governor (memory.max) failed: ",
        "after holding input for 1s (`memory.grace`)",
    );
    // The same lake without the limit: the oracle's, nothing twice.
    let unlimited = dir.path().join("unlimited.toml");
    std::fs::write(&unlimited, &text).unwrap();
    let out = Command::new(PLANTFLOW)
        .current_dir(dir.path())
        .arg("run")
        .arg(&unlimited)
        .env("INPUT_DIR", fixture_dir())
        .env("OUT_DIR", &lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_aggregates_equal(&latest_aggregates(&lake), &expected_aggregates());
    assert!(assert_actions_match_oracle(&lake) > 0);
    assert_no_revision_twice(&lake);
}

/// The run exited `code`, and the last line on its stderr starts with
/// `start` and holds `has` (one line naming the component).
fn assert_ended(status: std::process::ExitStatus, err: &str, code: i32, start: &str, has: &str) {
    assert_eq!(status.code(), Some(code), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with(start) && last.contains(has), "{err}");
}
