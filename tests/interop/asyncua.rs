//! Interop suite against an OPC UA server nobody here wrote: Python asyncua
//! (installed by `.ci/run`; run with `cargo test --features interop --test interop asyncua::`).
//!
//! The server (tests/interop/asyncua_server.py) logs every value it writes;
//! the oracle is that log, aggregated per tag and 1-minute window by this
//! test, against plantflow's Parquet aggregates.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

use crate::common::*;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,plantflow=info,opcua_client=error")
        .with_test_writer()
        .try_init();
}

struct PyServer {
    child: Child,
    done: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PyServer {
    fn kill(mut self) {
        // SIGKILL: the server dies without closing anything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/asyncua_server.py")
}

/// Starts the Python server; returns once it listens.
fn py_server(port: u16, vars: usize, secs: f64, start: u64, dir: &Path, go: &str) -> PyServer {
    py_server_with(port, vars, secs, start, dir, go, &[])
}

/// [`py_server`] with more arguments (`--historize`, `--cut-after`, ...).
fn py_server_with(
    port: u16,
    vars: usize,
    secs: f64,
    start: u64,
    dir: &Path,
    go: &str,
    extra: &[&str],
) -> PyServer {
    let mut child = Command::new("python3")
        .arg(script())
        .args(["--port", &port.to_string()])
        .args(["--vars", &vars.to_string()])
        .args(["--interval", "0.1"])
        .args(["--duration", &secs.to_string()])
        .args(["--start", &start.to_string()])
        .arg("--log")
        .arg(dir.join("written.csv"))
        .arg("--cert-dir")
        .arg(dir.join("server-certs"))
        .arg("--go-file")
        .arg(dir.join(go))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with asyncua (installed by .ci/run)");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d = done.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line == "ready" {
                let _ = tx.send(());
            } else if let Some(n) = line.strip_prefix("done ") {
                d.store(n.parse::<u64>().unwrap_or(0) + 1, SeqCst);
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the asyncua server starts");
    PyServer { child, done }
}

/// (count, sum) per (tag, window start).
type Windows = HashMap<(String, i64), (i64, f64)>;

/// Values written, per (tag, window start), and how many in all.
fn written(dir: &Path) -> (Windows, u64) {
    let text = std::fs::read_to_string(dir.join("written.csv")).unwrap();
    let mut m = Windows::new();
    let mut n = 0;
    for l in text.lines() {
        let f: Vec<&str> = l.split(',').collect();
        let ts: i64 = f[1].parse().unwrap();
        let v: f64 = f[2].parse().unwrap();
        let e = m
            .entry((f[0].to_string(), ts - ts.rem_euclid(60_000)))
            .or_default();
        e.0 += 1;
        e.1 += v;
        n += 1;
    }
    (m, n)
}

fn assert_matches_log(out: &Path, dir: &Path) {
    let (want, _) = written(dir);
    let got = latest_aggregates(out);
    assert_eq!(
        got.len(),
        want.len(),
        "one aggregate per written (tag, window)"
    );
    for (k, (count, sum)) in &want {
        let a = got
            .get(k)
            .unwrap_or_else(|| panic!("no aggregate for {k:?}"));
        assert_eq!(a.count, *count, "{k:?}");
        assert_close(a.mean * a.count as f64, *sum, &format!("{k:?} sum"));
    }
}

fn dataflow_for(
    dir: &Path,
    vars: usize,
    url: &str,
    security: &str,
) -> plantflow::dataflow::Dataflow {
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    for i in 0..vars {
        let (l, m) = (i / 50 + 1, i % 50 + 1);
        assets.push_str(&format!(
            "line{l}/m{m:02}/power_kw,line{l}/m{m:02},s1,s1/line{l},motor,1.0\n"
        ));
    }
    let source = format!(
        r#"[[sources]]
type = "opcua"
id = "asyncua"
endpoint = "{url}"
{security}
pki_dir = "{pki}"
trust_server_certs = true
keep_alive = "1s"

[[sources.browse]]
root = "Plant"
include = ["**/power_kw"]

[[sources.groups]]
name = "all"
publishing_interval = "100ms"
queue_size = 100
"#,
        pki = dir.join("client-pki").display(),
    );
    source_plan(dir, &source, &assets, &[])
}

fn event(stats: &plantflow::stats::Stats, key: &str) -> u64 {
    stats.events().get(key).copied().unwrap_or(0)
}

/// Lets the server start changing values once plantflow has subscribed.
fn go_when_subscribed(stats: &plantflow::stats::Stats, dir: &Path, go: &str) {
    wait_for("the subscription", || {
        (event(stats, "opcua: monitored items created") > 0).then_some(())
    });
    std::fs::write(dir.join(go), "").unwrap();
}

fn port() -> u16 {
    plantflow::sim::broker::free_port().unwrap()
}

/// Runs until the server is done and every written value was read.
fn run_to_end(
    plan: plantflow::dataflow::Dataflow,
    s: &PyServer,
    dir: &Path,
) -> plantflow::run::RunSummary {
    let (stats, stop, run) = start_run(plan, 2);
    go_when_subscribed(&stats, dir, "go");
    wait_for("the server to finish writing", || {
        (s.done.load(SeqCst) > 0).then_some(())
    });
    let (_, n) = written(dir);
    wait_for("every written value", || {
        (stats.rows_read.load(Relaxed) >= n).then_some(())
    });
    stop.store(true, SeqCst);
    run.join().unwrap().expect("run succeeds")
}

#[test]
fn every_change_of_a_few_hundred_asyncua_variables_arrives() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let p = port();
    // 300 variables × 10 changes/s for 5 s (+ the initial values).
    let s = py_server(p, 300, 5.0, 0, dir.path(), "go");
    let plan = dataflow_for(dir.path(), 300, &format!("opc.tcp://localhost:{p}/"), "");
    let summary = run_to_end(plan, &s, dir.path());
    let (_, n) = written(dir.path());
    assert!(n >= 300 * 40, "the server wrote {n}");
    assert_eq!(summary.rows_read, n, "exactly the values written");
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );
    assert_matches_log(&dir.path().join("out"), dir.path());
}

#[test]
fn basic256sha256_sign_and_encrypt_session_with_asyncua() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let p = port();
    let s = py_server(p, 20, 2.0, 0, dir.path(), "go");
    let plan = dataflow_for(
        dir.path(),
        20,
        &format!("opc.tcp://localhost:{p}/"),
        "security_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"",
    );
    let summary = run_to_end(plan, &s, dir.path());
    let (_, n) = written(dir.path());
    assert_eq!(summary.rows_read, n);
    assert_matches_log(&dir.path().join("out"), dir.path());
}

#[test]
fn asyncua_server_killed_and_restarted_resumes_with_a_gap() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let p = port();
    let url = format!("opc.tcp://localhost:{p}/");
    let s = py_server(p, 50, 2.0, 0, dir.path(), "go");
    let plan = dataflow_for(dir.path(), 50, &url, "");
    let (stats, stop, run) = start_run(plan, 1);
    go_when_subscribed(&stats, dir.path(), "go");
    wait_for("phase 1 written", || {
        (s.done.load(SeqCst) > 0).then_some(())
    });
    let (_, n1) = written(dir.path());
    wait_for("phase 1 read", || {
        (stats.rows_read.load(Relaxed) >= n1).then_some(())
    });
    // SIGKILL while the session and subscription are live, then a new
    // process on the same port continues the stream.
    s.kill();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let s2 = py_server(p, 50, 2.0, 1000, dir.path(), "go2");
    // The new process's initial values arrive once the client has a new
    // session and recreated subscriptions; then the stream continues.
    wait_for("the reconnect", || {
        (event(&stats, "opcua: gaps marked") >= 1).then_some(())
    });
    std::fs::write(dir.path().join("go2"), "").unwrap();
    wait_for("phase 2 written", || {
        (s2.done.load(SeqCst) > 0).then_some(())
    });
    let (_, n) = written(dir.path());
    // Every value of both phases, plus one bad-quality gap marker per tag.
    wait_for("phase 2 read", || {
        (stats.rows_read.load(Relaxed) >= n + 50).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    assert_eq!(
        summary.rows_accepted, n,
        "every value written by either process"
    );
    assert_eq!(summary.dropped_quality, 50, "one gap marker per tag");
    assert!(
        summary
            .events
            .get("opcua: gaps marked")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    let gaps: usize = batches(&dir.path().join("out"), "gaps")
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert!(gaps >= 1, "the gap is in the gaps table");
    // This server keeps no history (asyncua answers Good and no values):
    // the gap row says so.
    let recovery: Vec<String> = rows(&dir.path().join("out"), "gaps")
        .iter()
        .map(|g| g["recovery"].as_str().unwrap().to_string())
        .collect();
    assert!(
        recovery
            .iter()
            .any(|r| r.contains("none: the server's history has no values in the gap")),
        "{recovery:?}"
    );
    assert_matches_log(&dir.path().join("out"), dir.path());
}

/// The node killed (SIGKILL) with everything the first server process
/// wrote in its input log, while that server is replaced by a second one
/// on the same port: the restarted node goes on from its checkpoint and
/// log, records its downtime as a gap, and its lake holds every value
/// either process wrote, once (drained when stopped, to compare whole
/// windows with the server's log).
#[test]
fn a_killed_node_goes_on_from_its_state_against_asyncua() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let p = port();
    let url = format!("opc.tcp://localhost:{p}/");
    let s = py_server(p, 50, 2.0, 0, dir.path(), "go");
    dataflow_for(dir.path(), 50, &url, "");
    let df = dir.path().join("df.toml");
    let text = std::fs::read_to_string(&df).unwrap();
    let often = text
        .replace(
            "size = \"1m\"",
            "size = \"1m\"\ncheckpoint_interval = \"200ms\"",
        )
        .replacen(
            "type = \"parquet\"",
            "type = \"parquet\"\nroll_interval = \"200ms\"",
            1,
        );
    assert_ne!(often, text);
    std::fs::write(&df, often).unwrap();
    let mut node = follow_node(&df, &[], dir.path(), 1);
    // The subscription's first notification: then the server may go.
    wait_for("the subscription", || {
        logged(&df, &[]).filter(|(n, _)| *n >= 50)
    });
    std::fs::write(dir.path().join("go"), "").unwrap();
    wait_for("phase 1 written", || {
        (s.done.load(SeqCst) > 0).then_some(())
    });
    let (_, n1) = written(dir.path());
    wait_for("phase 1 in the input log", || {
        logged(&df, &[]).filter(|(n, _)| *n >= n1)
    });
    let _ = node.0.kill();
    let _ = node.0.wait();
    s.kill();
    let s2 = py_server(p, 50, 2.0, 1000, dir.path(), "go2");
    let mut node = follow_node_with(&df, &[], dir.path(), 1, &["--drain"]);
    let (_, with_initial) = written(dir.path());
    wait_for("the new subscription", || {
        logged(&df, &[]).filter(|(n, _)| *n >= with_initial)
    });
    std::fs::write(dir.path().join("go2"), "").unwrap();
    wait_for("phase 2 written", || {
        (s2.done.load(SeqCst) > 0).then_some(())
    });
    let (_, n) = written(dir.path());
    let (logged_n, restarts) = wait_for("phase 2 in the input log", || {
        logged(&df, &[]).filter(|(m, _)| *m >= n)
    });
    assert_eq!((logged_n, restarts), (n, 1), "each value once, one restart");
    assert!(node.terminate().success());
    let out = dir.path().join("out");
    assert_downtime_gap(&out);
    assert_matches_log(&out, dir.path());
    assert_no_revision_twice(&out);
}

/// The link to a historizing asyncua server cut for 30 s (the server closes
/// every connection and stops listening, and goes on changing values): the
/// subscription cannot deliver what changed meanwhile, so plantflow reads it
/// with HistoryRead once the link is back. Every value the server wrote
/// arrives exactly once, the windows equal the server's own log, and the
/// gap row says how many values were backfilled.
#[test]
fn a_link_cut_for_30_s_is_backfilled_from_the_servers_history() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let p = port();
    // 50 variables at 10 Hz for 36 s; the link is cut after 2 s, for 30 s.
    let s = py_server_with(
        p,
        50,
        36.0,
        0,
        dir.path(),
        "go",
        &["--historize", "--cut-after", "20", "--cut-for", "30"],
    );
    let plan = dataflow_for(dir.path(), 50, &format!("opc.tcp://localhost:{p}/"), "");
    let (stats, stop, run) = start_run(plan, 1);
    go_when_subscribed(&stats, dir.path(), "go");
    wait_for("the server to finish writing", || {
        (s.done.load(SeqCst) > 0).then_some(())
    });
    let (_, n) = written(dir.path());
    wait_for("every written value, backfilled or live", || {
        (stats.rows_accepted.load(Relaxed) >= n).then_some(())
    });
    wait_for("the gap row", || {
        (stats
            .events()
            .contains_key("opcua: values backfilled from history"))
        .then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    assert_eq!(
        summary.rows_accepted, n,
        "every value once: {:?}",
        summary.events
    );
    let backfilled = event_of(&summary, "opcua: values backfilled from history");
    // 30 s of 50 variables at 10 Hz, less what the subscription's queue
    // had (and republished) when the link came back.
    assert!(
        backfilled >= 50 * 10 * 20,
        "backfilled {backfilled}: {:?}",
        summary.events
    );
    let gaps = rows(&dir.path().join("out"), "gaps");
    assert!(
        gaps.iter().any(|g| g["recovery"]
            .as_str()
            .unwrap()
            .contains(&format!("backfilled {backfilled} values"))),
        "{gaps:?}"
    );
    assert_matches_log(&dir.path().join("out"), dir.path());
}

fn event_of(summary: &plantflow::run::RunSummary, key: &str) -> u64 {
    summary.events.get(key).copied().unwrap_or(0)
}

/// A durable node killed (SIGKILL) while a historizing server goes on
/// changing values: restarted, it reads from the server's history what
/// changed while it was down (from the newest time in its input log), and
/// its lake holds every value the server wrote, once.
#[test]
fn a_killed_node_backfills_its_downtime_from_the_servers_history() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let p = port();
    let url = format!("opc.tcp://localhost:{p}/");
    let s = py_server_with(p, 50, 8.0, 0, dir.path(), "go", &["--historize"]);
    dataflow_for(dir.path(), 50, &url, "");
    let df = dir.path().join("df.toml");
    let text = std::fs::read_to_string(&df).unwrap();
    let often = text.replace(
        "size = \"1m\"",
        "size = \"1m\"\ncheckpoint_interval = \"200ms\"",
    );
    assert_ne!(often, text);
    std::fs::write(&df, often).unwrap();
    let mut node = follow_node(&df, &[], dir.path(), 1);
    wait_for("the subscription", || {
        logged(&df, &[]).filter(|(n, _)| *n >= 50)
    });
    std::fs::write(dir.path().join("go"), "").unwrap();
    wait_for("a second of changes in the input log", || {
        logged(&df, &[]).filter(|(n, _)| *n >= 50 * 10)
    });
    let _ = node.0.kill();
    let _ = node.0.wait();
    // Down for a few seconds while the server goes on.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut node = follow_node_with(&df, &[], dir.path(), 1, &["--drain"]);
    wait_for("the server to finish writing", || {
        (s.done.load(SeqCst) > 0).then_some(())
    });
    let (_, n) = written(dir.path());
    wait_for("every written value in the input log", || {
        logged(&df, &[]).filter(|(got, _)| *got >= n)
    });
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
    let out = dir.path().join("out");
    let gaps = rows(&out, "gaps");
    assert!(
        gaps.iter().any(|g| {
            g["reason"].as_str().unwrap().contains("plantflow was down")
                && g["recovery"].as_str().unwrap().starts_with("backfilled ")
        }),
        "{gaps:?}"
    );
    assert_matches_log(&out, dir.path());
}
