//! OPC UA ingestion against a real server: the project's simulated plant
//! (`plantflow::sim::opcua`, on async-opcua's server). Numbers are checked
//! against the same independent oracle as the replay and MQTT tests.

use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::common::*;
use opcua::types::{StatusCode, Variant};
use plantflow::sim::opcua::{PlantServer, ServerOptions, SimTag};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,plantflow=info".into()))
        .with_test_writer()
        .try_init();
}

/// Tags of the workload fixture, in assets.csv order.
fn fixture_tags() -> Vec<String> {
    let text = std::fs::read_to_string(fixture_dir().join("assets.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

fn server(tags: &[String], pki: &Path, users: Vec<(String, String)>, port: u16) -> PlantServer {
    server_with(tags, pki, users, port, true)
}

fn server_with(
    tags: &[String],
    pki: &Path,
    users: Vec<(String, String)>,
    port: u16,
    odd_nodes: bool,
) -> PlantServer {
    PlantServer::start(ServerOptions {
        port,
        tags: tags.iter().map(|t| SimTag::new(t, "kW", 500.0)).collect(),
        anonymous: users.is_empty(),
        users,
        pki_dir: pki.to_path_buf(),
        odd_nodes,
        min_publishing_interval_ms: 20,
        offer_none: true,
    })
    .expect("the simulator starts")
}

fn event(stats: &plantflow::stats::Stats, key: &str) -> u64 {
    stats.events().get(key).copied().unwrap_or(0)
}

/// Waits until the source has created `n` monitored items.
fn wait_subscribed(stats: &plantflow::stats::Stats, n: u64) {
    wait_for("the monitored items", || {
        (event(stats, "opcua: monitored items created") >= n).then_some(())
    });
}

#[test]
fn workload_v1_over_opcua_matches_the_oracle() {
    init_tracing();
    let pki = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tags = fixture_tags();
    let s = server_with(&tags, &pki.path().join("server"), vec![], 0, false);
    let plan = load_env(
        &dataflow("opcua_plant.toml"),
        &[
            ("INPUT_DIR", fixture_dir().display().to_string()),
            ("OUT_DIR", out.path().display().to_string()),
            ("OPCUA_URL", s.url()),
            (
                "OPCUA_PKI_DIR",
                pki.path().join("client").display().to_string(),
            ),
            ("OPCUA_PUBLISHING_INTERVAL", "50ms".into()),
        ],
    );
    let (stats, stop, run) = start_run(plan, 2);
    // Browse discovery finds the 100 fixture variables.
    wait_subscribed(&stats, 100);
    let items: Vec<u64> = stats
        .levels()
        .into_iter()
        .filter(|((what, _), _)| *what == plantflow::stats::OPCUA_MONITORED_ITEMS)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(items, vec![100], "the monitored items gauge");
    // The fixture's samples in file order, as fast as the server takes them
    // (each item's queue holds all of its 900 changes).
    let no_stop = std::sync::atomic::AtomicBool::new(false);
    let n = plantflow::sim::opcua::replay_csv(
        &s,
        &tags,
        &fixture_dir().join("samples.csv"),
        0.0,
        &no_stop,
    )
    .unwrap();
    assert_eq!(n, 90_000);
    wait_for("all 90,000 changes", || {
        let n = stats.rows_read.load(Relaxed);
        eprintln!(
            "rows read {n}, events {:?}, dead {:?}",
            stats.events(),
            stats.dead_letters()
        );
        (n >= 90_000).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    s.stop();
    assert_eq!(summary.rows_read, 90_000, "every change exactly once");
    assert_eq!(
        summary.dropped_quality, 77,
        "the 77 bad rows arrive as bad StatusCodes"
    );
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );
    assert!(
        !summary.events.keys().any(|k| k.contains("overflow")),
        "{:?}",
        summary.events
    );
    // Timestamps are the SourceTimestamps the server was given.
    assert!(
        !summary.events.keys().any(|k| k.contains("ServerTimestamp")),
        "{:?}",
        summary.events
    );
    assert_aggregates_equal(&latest_aggregates(out.path()), &expected_aggregates());
    assert!(assert_actions_match_oracle(out.path()) > 0);
}

/// Assets of the small tests: three motors and the simulator's odd nodes.
const SMALL_ASSETS: &str = "tag,asset,site,line,kind,standby_kw\n\
     s1/l1/m1/power_kw,s1/l1/m1,s1,s1/l1,motor,1.0\n\
     s1/l1/m2/power_kw,s1/l1/m2,s1,s1/l1,motor,1.0\n\
     s1/l2/m3/power_kw,s1/l2/m3,s1,s1/l2,motor,1.0\n\
     odd/text,odd,s1,s1/l1,sensor,0.0\n\
     odd/array,odd,s1,s1/l1,sensor,0.0\n\
     odd/range,odd,s1,s1/l1,sensor,0.0\n\
     odd/flag,odd,s1,s1/l1,sensor,0.0\n\
     odd/count,odd,s1,s1/l1,sensor,0.0\n";

fn plan_with_source(
    dir: &Path,
    source: &str,
    vars: &[(&str, String)],
) -> plantflow::dataflow::Dataflow {
    source_plan(dir, source, SMALL_ASSETS, vars)
}

/// The `plc` source of the small tests: the simulator at `url`, trusted,
/// its `Plant/s1` power tags browsed as `s1/...`, every change sampled at
/// 50 ms; `extra` lines go in the source's table.
fn plc_source(url: &str, dir: &Path, extra: &str) -> String {
    format!(
        r#"[[sources]]
type = "opcua"
id = "plc"
endpoint = "{url}"
pki_dir = "{pki}"
trust_server_certs = true
{extra}
[[sources.browse]]
root = "Plant/s1"
include = ["**/power_kw"]
tag = "s1/{{path}}"

[[sources.groups]]
name = "default"
publishing_interval = "50ms"
trigger = "status_value_timestamp"
"#,
        pki = dir.join("client-pki").display()
    )
}

const SMALL: &[&str] = &[
    "s1/l1/m1/power_kw",
    "s1/l1/m2/power_kw",
    "s1/l2/m3/power_kw",
];

fn small_tags() -> Vec<String> {
    SMALL.iter().map(|s| s.to_string()).collect()
}

/// The base of the small tests' event times: a minute boundary 10 minutes
/// ago (the simulator's odd nodes carry current timestamps, so the stream's
/// watermark is near now).
fn base() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (plantflow::model::now_ms() / 60_000 - 10) * 60_000)
}

#[test]
fn signed_and_encrypted_session_with_username_trusts_the_server_explicitly() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tags = small_tags();
    let s = server(
        &tags,
        &dir.path().join("server-pki"),
        vec![("operator".into(), "s3cret-pw".into())],
        0,
    );
    let source = format!(
        r#"[[sources]]
type = "opcua"
id = "plc"
endpoint = "{url}"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
username = "operator"
password_env = "PLC_PASSWORD"
pki_dir = "{pki}"

[[sources.browse]]
root = "Plant/s1"
include = ["**/power_kw"]
tag = "s1/{{path}}"

[[sources.groups]]
name = "default"
publishing_interval = "50ms"
queue_size = 100
trigger = "status_value_timestamp"
"#,
        url = s.url(),
        pki = dir.path().join("client-pki").display()
    );
    let vars = [("PLC_PASSWORD", "s3cret-pw".to_string())];
    let plan = plan_with_source(dir.path(), &source, &vars);
    // The password never shows in the plan's debug output.
    assert!(!format!("{plan:?}").contains("s3cret-pw"));

    // First run: the server's certificate is not trusted yet.
    let err = plantflow::run::run(plan.clone(), Default::default())
        .unwrap_err()
        .message;
    assert!(err.contains("rejected") && err.contains("trusted"), "{err}");
    // The client's key, created by that first run, is the owner's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let private = dir.path().join("client-pki/private");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private), 0o700);
        let keys: Vec<_> = std::fs::read_dir(&private).unwrap().flatten().collect();
        assert!(!keys.is_empty(), "a private key was created");
        for k in keys {
            assert_eq!(mode(&k.path()), 0o600, "{}", k.path().display());
        }
    }
    let rejected = dir.path().join("client-pki/rejected");
    let certs: Vec<_> = std::fs::read_dir(&rejected).unwrap().flatten().collect();
    assert_eq!(certs.len(), 1, "the server certificate waits in rejected/");
    let trusted = dir.path().join("client-pki/trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::rename(certs[0].path(), trusted.join(certs[0].file_name())).unwrap();

    // Trusted: 3 tags × 20 changes each.
    let (stats, stop, run) = start_run(plan, 1);
    wait_subscribed(&stats, 3);
    for k in 0..20i64 {
        let updates: Vec<_> = (0..3)
            .map(|i| {
                (
                    i,
                    (k * 10 + i as i64) as f64,
                    base() + k * 1_000,
                    StatusCode::Good,
                )
            })
            .collect();
        s.set(&updates).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    wait_for("60 changes", || {
        (stats.rows_read.load(Relaxed) >= 60).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    s.stop();
    assert_eq!(summary.rows_read, 60);
    assert_eq!(summary.rows_accepted, 60);
    // Window 07:35 holds k = 0..19 for each tag: mean of 10k + i.
    let aggs = latest_aggregates(&dir.path().join("out"));
    for (i, t) in SMALL.iter().enumerate() {
        let a = &aggs[&(t.to_string(), base())];
        assert_eq!(a.count, 20, "{t}");
        assert_close(a.mean, 95.0 + i as f64, t);
    }
}

#[test]
fn wrong_password_and_missing_policy_are_clear_errors() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let s = PlantServer::start(ServerOptions {
        tags: small_tags()
            .iter()
            .map(|t| SimTag::new(t, "kW", 1.0))
            .collect(),
        pki_dir: dir.path().join("server-pki"),
        users: vec![("operator".into(), "right".into())],
        anonymous: false,
        offer_none: false,
        ..Default::default()
    })
    .unwrap();
    let src = |policy: &str, mode: &str| {
        format!(
            r#"[[sources]]
type = "opcua"
id = "plc"
endpoint = "{url}"
security_policy = "{policy}"
security_mode = "{mode}"
username = "operator"
password_env = "PW"
pki_dir = "{pki}"
trust_server_certs = true

[[sources.nodes]]
browse_path = "Plant/s1/l1/m1/power_kw"
"#,
            url = s.url(),
            pki = dir.path().join("client-pki").display()
        )
    };
    let plan = plan_with_source(
        dir.path(),
        &src("Basic256Sha256", "Sign"),
        &[("PW", "wrong-pw".to_string())],
    );
    let err = plantflow::run::run(plan, Default::default())
        .unwrap_err()
        .message;
    assert!(err.contains("refused the user"), "{err}");
    assert!(
        !err.contains("wrong-pw"),
        "the password is not in the error: {err}"
    );

    // A server without a None endpoint: the error lists what it offers.
    let plan = plan_with_source(
        dir.path(),
        &src("None", "None"),
        &[("PW", "right".to_string())],
    );
    let err = plantflow::run::run(plan, Default::default())
        .unwrap_err()
        .message;
    assert!(err.contains("offers no None/None endpoint"), "{err}");
    assert!(err.contains("Basic256Sha256/SignAndEncrypt"), "{err}");
    s.stop();
}

#[test]
fn odd_types_and_unknown_nodes_are_dead_letters_not_values() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let s = server(&small_tags(), &dir.path().join("server-pki"), vec![], 0);
    let source = format!(
        r#"[[sources]]
type = "opcua"
id = "plc"
endpoint = "{url}"
pki_dir = "{pki}"
trust_server_certs = true

[[sources.browse]]
root = "Plant/odd"
tag = "odd/{{name}}"

[[sources.nodes]]
node_id = "ns=2;s=no/such/node"
tag = "s1/l1/m2/power_kw"

[[sources.nodes]]
browse_path = "Plant/s1/l9/nothing"

[[sources.nodes]]
browse_path = "Plant/s1/l1/m1/power_kw"
tag = "s1/l1/m1/power_kw"
"#,
        url = s.url(),
        pki = dir.path().join("client-pki").display()
    );
    let plan = plan_with_source(dir.path(), &source, &[]);
    let (stats, stop, run) = start_run(plan, 1);
    // 5 odd nodes + power_kw; the NodeId that does not exist is refused by the server.
    wait_subscribed(&stats, 6);
    s.set(&[(0, 4.5, base(), StatusCode::Good)]).unwrap();
    s.set(&[(0, 0.0, base() + 1_000, StatusCode::BadSensorFailure)])
        .unwrap();
    s.set_variant("odd/text", Variant::from("stopped"), StatusCode::Good)
        .unwrap();
    // 1 good + 1 bad + (odd: text, array, range initial values + the new text)
    // = rows read; flag (Boolean) and count (Int32) are numbers.
    wait_for("the odd values", || {
        (stats.rows_read.load(Relaxed) >= 2 + 4 + 2 + 2).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    s.stop();
    let dl = dead_letters(&dir.path().join("out"));
    let has = |needle: &str| {
        assert!(
            dl.iter().any(|(r, _)| r.contains(needle)),
            "no dead letter with `{needle}`: {dl:#?}"
        )
    };
    has("type mismatch: String");
    has("type mismatch: an array of 3 values");
    has("type mismatch: a structure (Range)");
    has("cannot monitor browse path Plant/s1/l9/nothing");
    has("BadNodeIdUnknown");
    assert_eq!(summary.dropped_quality, 1, "the bad value is a quality row");
    // power_kw 4.5 plus flag = 1 and count = 7 (initial values): 3 accepted.
    assert_eq!(summary.rows_accepted, 3, "{:?}", summary.dead_letters);
}

#[test]
fn server_restart_is_marked_as_a_gap_and_data_resumes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tags = small_tags();
    let s = server(&tags, &dir.path().join("server-pki"), vec![], 0);
    let port = s.port;
    let source = plc_source(&s.url(), dir.path(), "keep_alive = \"500ms\"\n");
    let plan = plan_with_source(dir.path(), &source, &[]);
    let (stats, stop, run) = start_run(plan, 1);
    wait_subscribed(&stats, 3);
    let write = |s: &PlantServer, from: i64, to: i64| {
        for k in from..to {
            let u: Vec<_> = (0..3)
                .map(|i| (i, k as f64, base() + k * 1_000, StatusCode::Good))
                .collect();
            s.set(&u).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    write(&s, 0, 10);
    wait_for("the first 30 changes", || {
        (stats.rows_read.load(Relaxed) >= 30).then_some(())
    });
    s.stop();
    // Same port, same certificate: a restarted server with no sessions.
    let s = server(&tags, &dir.path().join("server-pki"), vec![], port);
    wait_for("the reconnect", || {
        (event(&stats, "opcua: gaps marked") >= 1).then_some(())
    });
    write(&s, 30, 40);
    // 30 + 3 gap markers (bad quality) + 30.
    wait_for("the changes after the restart", || {
        let n = stats.rows_read.load(Relaxed);
        if n < 63 {
            eprintln!(
                "rows {n} events {:?} dead {:?}",
                stats.events(),
                stats.dead_letters()
            );
        }
        (n >= 63).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    s.stop();
    assert_eq!(summary.rows_accepted, 60, "every change the servers made");
    assert_eq!(summary.dropped_quality, 3, "one bad-quality marker per tag");
    let gaps = batches(&dir.path().join("out"), "gaps");
    let n: usize = gaps.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 1, "one gap row");
    let b = &gaps[0];
    let reason = b
        .column_by_name("reason")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert!(reason.contains("new session"), "{reason}");
    let tags_col = b
        .column_by_name("tags")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(tags_col, 3);
    // Windows 07:35 (k 0..9, 30..39 at +30 s..) hold only real values.
    let aggs = latest_aggregates(&dir.path().join("out"));
    let a = &aggs[&("s1/l1/m1/power_kw".to_string(), base())];
    assert_eq!(a.count, 20);
    assert_close(a.mean, (45.0 + 345.0) / 20.0, "mean of 0..9 and 30..39");
}

#[test]
fn opcua_config_errors_name_file_line_and_key() {
    let err = plantflow::dataflow::load_with_env(
        Path::new("tests/fixtures/config/bad_opcua.toml"),
        &|_| None,
    )
    .expect_err("rejected");
    let text = err.render();
    for part in [
        "error: `http://plc1:4840/` is not an opc.tcp:// URL\n --> tests/fixtures/config/bad_opcua.toml:6:12",
        "error: unknown security policy `Basic256Sha265`\n --> tests/fixtures/config/bad_opcua.toml:7:19",
        "help: did you mean `Basic256Sha256`?",
        "error: a `username` needs a password (`password_env` or `password_file`)",
        "error: `ns=2;x=oops` is not a NodeId\n  --> tests/fixtures/config/bad_opcua.toml:12:11",
        "error: unknown subscription group `fats`\n  --> tests/fixtures/config/bad_opcua.toml:17:9",
        "help: did you mean `fast`?",
        "key `sources[0].browse[0].include`",
        "error: the tag template must use {path} or {name}",
        "error: a percent deadband is 0–100 % of the EURange (got 150)",
        "error: unknown data change trigger `value`",
    ] {
        assert!(text.contains(part), "missing:\n{part}\n--- in ---\n{text}");
    }
    // Policy None with mode None is fine; a secure policy with mode None is not
    // reported here because the policy name itself is wrong.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args(["validate", "tests/fixtures/config/bad_opcua.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plantflow"))
        .args(["validate", "dataflows/opcua_plant.toml"])
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

#[test]
fn aes_policies_sign_and_encrypt_deliver_values() {
    init_tracing();
    for (policy, mode) in [
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "Sign"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = server(&small_tags(), &dir.path().join("server-pki"), vec![], 0);
        let source = format!(
            r#"[[sources]]
type = "opcua"
id = "plc"
endpoint = "{url}"
security_policy = "{policy}"
security_mode = "{mode}"
pki_dir = "{pki}"
trust_server_certs = true

[[sources.nodes]]
browse_path = "Plant/s1/l1/m1/power_kw"
tag = "s1/l1/m1/power_kw"
"#,
            url = s.url(),
            pki = dir.path().join("client-pki").display()
        );
        let plan = plan_with_source(dir.path(), &source, &[]);
        let (stats, stop, run) = start_run(plan, 1);
        wait_subscribed(&stats, 1);
        for k in 0..5i64 {
            s.set(&[(0, k as f64, base() + k * 1_000, StatusCode::Good)])
                .unwrap();
        }
        wait_for("5 changes", || {
            (stats.rows_read.load(Relaxed) >= 5).then_some(())
        });
        stop.store(true, SeqCst);
        let summary = run.join().unwrap().expect("run succeeds");
        s.stop();
        assert_eq!(summary.rows_accepted, 5, "{policy}/{mode}");
        let a =
            &latest_aggregates(&dir.path().join("out"))[&("s1/l1/m1/power_kw".to_string(), base())];
        assert_close(a.mean, 2.0, policy);
    }
}

/// A durable OPC UA node (issue 25): samples are in the input log before
/// they count, so a SIGKILL loses none the log had; the time the node was
/// down is a `gaps` row (the server cannot send it again); windows hold
/// every value once.
#[test]
fn a_killed_node_keeps_its_logged_samples_and_marks_its_downtime_as_a_gap() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let tags = small_tags();
    let s = server(&tags, &dir.path().join("server-pki"), vec![], 0);
    let source = plc_source(&s.url(), dir.path(), "");
    plan_with_source(dir.path(), &source, &[]);
    let df = dir.path().join("df.toml");
    // The last node drains when stopped, to see its last window. Each is
    // waited for until its subscriptions are active (a change written
    // before that is not seen: the server does not replay).
    let node = |drain: bool| {
        let env = [("PLANTFLOW_LOG", "warn,plantflow=info".to_string())];
        let args: &[&str] = if drain { &["--drain"] } else { &[] };
        let (child, mut lines) = follow_node_lines(&df, &env, dir.path(), args);
        lines.wait_for("OPC UA subscriptions active");
        child
    };
    let write = |from: i64, to: i64| {
        for k in from..to {
            let u: Vec<_> = (0..3)
                .map(|i| (i, k as f64, base() + k * 1_000, StatusCode::Good))
                .collect();
            s.set(&u).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut first = node(false);
    // The subscription's first notification carries the nodes' current values.
    std::thread::sleep(std::time::Duration::from_millis(500));
    write(0, 10);
    wait_for("30 samples in the input log", || {
        logged(&df, &[]).filter(|(n, _)| *n >= 30)
    });
    let _ = first.0.kill();
    let _ = first.0.wait();
    let mut second = node(true);
    std::thread::sleep(std::time::Duration::from_millis(500));
    write(30, 40);
    let (n, restarts) = wait_for("60 samples in the input log", || {
        logged(&df, &[]).filter(|(n, _)| *n >= 60)
    });
    assert_eq!((n, restarts), (60, 1), "each change once, one restart");
    assert!(second.terminate().success());
    s.stop();
    let out = dir.path().join("out");
    assert_downtime_gap(&out);
    // One window per tag (base is a minute boundary): k = 0..9 and 30..39.
    let agg = latest_aggregates(&out);
    for t in &tags {
        let a = &agg[&(t.clone(), base())];
        assert_eq!(a.count, 20, "{t}");
        assert_close(a.mean * a.count as f64, 390.0, t);
    }
    assert_no_revision_twice(&out);
}
