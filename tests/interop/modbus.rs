//! Interop suite against a Modbus TCP server nobody here wrote: pymodbus
//! (installed by `.ci/run`; run with `cargo test --features interop --test
//! interop modbus::`).
//!
//! The server (tests/interop/modbus_server.py) holds a known register map;
//! the oracle is that map, decoded by hand in the script's comments, and the
//! counter's last value the server served (its state file).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::common::*;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/modbus_server.py")
}

fn port() -> u16 {
    plantflow::sim::broker::free_port().unwrap()
}

/// Starts the Python server; returns once it listens.
fn py_server(port: u16, phase: u8, state: &Path, extra: &[String]) -> KillOnDrop {
    let mut child = Command::new("python3")
        .arg(script())
        .args(["--port", &port.to_string(), "--phase", &phase.to_string()])
        .arg("--state")
        .arg(state)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with pymodbus (installed by .ci/run)");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("ready"),
        "the pymodbus server starts (is pymodbus installed?)"
    );
    KillOnDrop(child)
}

fn event(stats: &plantflow::stats::Stats, key: &str) -> u64 {
    stats.events().get(key).copied().unwrap_or(0)
}

const METER_TAGS: &[&str] = &[
    "kw", "i32", "volts", "broken", "bit1", "bit2", "kwh", "temp", "run",
];

fn test_map(
    dir: &Path,
    p: u16,
    junk: u16,
    silent: u16,
    absent: u16,
) -> plantflow::dataflow::Dataflow {
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    for t in METER_TAGS {
        assets.push_str(&format!("meter/{t},meter,s1,s1/l1,meter,0\n"));
    }
    for d in ["second", "junk", "silent", "absent"] {
        assets.push_str(&format!("{d}/x,{d},s1,s1/l1,meter,0\n"));
    }
    let source = format!(
        r#"[[sources]]
type = "modbus"
id = "field"
interval = "100ms"
timeout = "300ms"
retries = 1
reconnect_max = "1s"

[[sources.maps]]
name = "meter"
registers = [
  {{ tag = "{{device}}/kw", address = 0, type = "f32", order = "CDAB" }},
  {{ tag = "{{device}}/i32", address = 2, type = "i32" }},
  {{ tag = "{{device}}/volts", address = 4, scale = 0.1 }},
  {{ tag = "{{device}}/broken", address = 5 }},
  {{ tag = "{{device}}/bit1", address = 6, bit = 1 }},
  {{ tag = "{{device}}/bit2", address = 6, bit = 2 }},
  {{ tag = "{{device}}/kwh", address = 7, type = "u32", counter = true, scale = 0.5 }},
  {{ tag = "{{device}}/temp", table = "input", address = 0, type = "i16" }},
  {{ tag = "{{device}}/run", table = "coil", address = 3 }},
]

[[sources.devices]]
name = "meter"
host = "127.0.0.1:{p}"
unit = 1
map = "meter"

[[sources.devices]]
name = "second"
host = "127.0.0.1:{p}"
unit = 2
registers = [{{ tag = "second/x", address = 0 }}]

[[sources.devices]]
name = "junk"
host = "127.0.0.1:{junk}"
registers = [{{ tag = "junk/x", address = 0 }}]

[[sources.devices]]
name = "silent"
host = "127.0.0.1:{silent}"
timeout = "60s"
registers = [{{ tag = "silent/x", address = 0 }}]

[[sources.devices]]
name = "absent"
host = "127.0.0.1:{absent}"
registers = [{{ tag = "absent/x", address = 0 }}]
"#
    );
    source_plan(dir, &source, &assets, &[])
}

/// Every window's min and max of a tag (latest revisions).
fn extremes(aggs: &HashMap<(String, i64), Agg>, tag: &str) -> Vec<f64> {
    let mut v: Vec<f64> = aggs
        .iter()
        .filter(|((t, _), _)| t == tag)
        .flat_map(|(_, a)| [a.min, a.max])
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// A device that answers garbage, one that never answers and one that is
/// not there are polled beside two good units of a pymodbus server, which
/// is killed and restarted with new values mid-run: every value decodes as
/// the map says (word-swapped f32, i32, scaled u16, bit fields, i16 input
/// register, coil), the counter's increments add up to what the server
/// counted (across its rollover and the outage), the register that raises
/// an exception is one dead letter naming it, outages are gap rows, and the
/// silent device (60 s timeout) never held the others up.
#[test]
fn pymodbus_map_decodes_and_survives_a_restart_and_bad_devices() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,plantflow=info")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("counter");
    let (p, junk, silent, absent) = (port(), port(), port(), port());
    let extra = vec![
        "--junk-port".to_string(),
        junk.to_string(),
        "--silent-port".to_string(),
        silent.to_string(),
    ];
    let s = py_server(p, 1, &state, &extra);
    let plan = test_map(dir.path(), p, junk, silent, absent);
    let (stats, stop, run) = start_run(plan, 1);
    // Phase 1: the meter's 8 good tags each poll (the counter from the 2nd).
    wait_for("phase 1 polls", || {
        (stats.rows_accepted.load(Relaxed) >= 300).then_some(())
    });
    // The junk and absent devices are down; the silent one has not answered
    // its first request yet (60 s), and the others went on all the same.
    assert_eq!(
        event(&stats, "modbus: devices down"),
        2,
        "{:?}",
        stats.events()
    );
    drop(s);
    wait_for("the meter and unit 2 down", || {
        (event(&stats, "modbus: devices down") >= 4).then_some(())
    });
    let before = stats.rows_accepted.load(Relaxed);
    let s2 = py_server(p, 2, &state, &[]);
    wait_for("both units back (their gaps)", || {
        (event(&stats, "modbus: gaps marked") >= 2).then_some(())
    });
    wait_for("phase 2 polls", || {
        (stats.rows_accepted.load(Relaxed) >= before + 300).then_some(())
    });
    // Freeze the counter, let every poll in flight land, then stop.
    std::fs::write(dir.path().join("counter.freeze"), "").unwrap();
    let frozen = stats.rows_accepted.load(Relaxed);
    wait_for("polls after the freeze", || {
        (stats.rows_accepted.load(Relaxed) >= frozen + 50).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    drop(s2);
    let out = dir.path().join("out");
    let aggs = latest_aggregates(&out);

    // Decoding, by hand (see modbus_server.py): phase 1 then phase 2.
    for (tag, want) in [
        ("meter/kw", vec![1234.5, 2469.0]),
        ("meter/i32", vec![-654321.0, -123456.0]),
        ("meter/volts", vec![100.0, 234.5]),
        ("meter/bit1", vec![1.0]),
        ("meter/bit2", vec![0.0]),
        ("meter/temp", vec![-200.0]),
        ("meter/run", vec![1.0]),
        ("second/x", vec![777.0, 778.0]),
    ] {
        let got = extremes(&aggs, tag);
        assert_eq!(got.len(), want.len(), "{tag}: {got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_close(*g, *w, tag);
        }
    }
    // The counter: increments of 0.5 per poll through the rollover at
    // 2^32, one increase over the outage (the 1,000 counted while down),
    // and in all the last value served less the first, times the scale.
    let last: u64 = std::fs::read_to_string(&state)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let first = (1u64 << 32) - 5;
    let raw = (last + (1u64 << 32) - first) % (1u64 << 32);
    let kwh: Vec<&Agg> = aggs
        .iter()
        .filter(|((t, _), _)| t == "meter/kwh")
        .map(|(_, a)| a)
        .collect();
    let total: f64 = kwh.iter().map(|a| a.mean * a.count as f64).sum();
    assert_close(total, raw as f64 * 0.5, "counter increments");
    let top = kwh.iter().map(|a| a.max).fold(f64::MIN, f64::max);
    assert!(
        (500.5..=501.5).contains(&top),
        "the outage's increase: {top}"
    );
    assert!(
        raw > 1000 + 20,
        "the counter rolled over and went on: {raw}"
    );

    // The register that raises 0x02: one dead letter naming it; no values.
    let dead = dead_letters(&out);
    let broken: Vec<_> = dead
        .iter()
        .filter(|(r, _)| r.contains("`meter/broken`"))
        .collect();
    assert_eq!(broken.len(), 1, "{dead:?}");
    assert!(
        broken[0].0.contains("0x02 IllegalDataAddress")
            && broken[0].0.contains("holding register 5"),
        "{}",
        broken[0].0
    );
    assert!(!aggs.keys().any(|(t, _)| t == "meter/broken"));
    assert!(!aggs
        .keys()
        .any(|(t, _)| t.starts_with("junk/") || t.starts_with("absent/")));

    // Outages: the two units' restart gap; the junk and absent devices' gaps
    // end when the source stops.
    let gaps: Vec<String> = rows(&out, "gaps")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    for d in ["meter", "second", "junk", "absent"] {
        assert!(
            gaps.iter().any(|g| g.starts_with(&format!("device {d} "))),
            "a gap for {d}: {gaps:?}"
        );
    }
    assert!(
        summary
            .events
            .get("modbus: requests split after an exception")
            .copied()
            >= Some(1)
    );
}

/// The library's Modbus power meter dataflow against pymodbus holding that
/// layout (kW 100, kvar 75, PF 0.8, a kWh counter rolling over): the
/// counter's kWh add up to what the server counted, and each hour's low
/// power factor action is worth (kvarh − 0.4843 × kWh) × 0.02.
#[test]
fn the_library_power_meter_finds_a_low_power_factor_on_pymodbus() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("counter");
    let p = port();
    let _s = py_server(p, 1, &state, &["--map".to_string(), "meter".to_string()]);
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw,signal\n");
    for (t, signal) in [
        ("kw", "power_kw"),
        ("kvar", "reactive_kvar"),
        ("pf", "power_factor"),
        ("kwh", "energy_kwh"),
    ] {
        assets.push_str(&format!("meter1/{t},meter1,s1,s1/l1,meter,0,{signal}\n"));
    }
    std::fs::write(input.join("assets.csv"), assets).unwrap();
    std::fs::write(
        input.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let plan = load_env(
        &dataflow("modbus_power_meter.toml"),
        &[
            ("INPUT_DIR", input.display().to_string()),
            ("OUT_DIR", out.display().to_string()),
            ("METER_HOST", format!("127.0.0.1:{p}")),
            ("METER_INTERVAL", "50ms".into()),
        ],
    );
    let (stats, stop, run) = start_run(plan, 1);
    wait_for("polls", || {
        (stats.rows_accepted.load(Relaxed) >= 200).then_some(())
    });
    std::fs::write(dir.path().join("counter.freeze"), "").unwrap();
    let frozen = stats.rows_accepted.load(Relaxed);
    wait_for("polls after the freeze", || {
        (stats.rows_accepted.load(Relaxed) >= frozen + 20).then_some(())
    });
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );

    let last: u64 = std::fs::read_to_string(&state)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let first = (1u64 << 32) - 20;
    let counted = ((last + (1u64 << 32) - first) % (1u64 << 32)) as f64 * 0.01;
    assert!(
        counted > 0.3,
        "the counter rolled over and went on: {counted}"
    );
    let aggs = latest(rows(&out, "aggregates"), &["tag", "window_start"]);
    let hour = |ws: i64| ws - ws.rem_euclid(3_600_000);
    let mut kwh: HashMap<i64, f64> = HashMap::new();
    let mut kvarh: HashMap<i64, f64> = HashMap::new();
    for a in aggs.values() {
        let (ws, mean) = (
            a["window_start"].as_i64().unwrap(),
            a["mean"].as_f64().unwrap(),
        );
        let count = a["count"].as_i64().unwrap() as f64;
        match a["tag"].as_str().unwrap() {
            "meter1/kwh" => *kwh.entry(hour(ws)).or_default() += mean * count,
            "meter1/kvar" => *kvarh.entry(hour(ws)).or_default() += mean / 60.0,
            "meter1/pf" => assert_close(mean, 0.8, "power factor"),
            "meter1/kw" => assert_close(mean, 100.0, "kW"),
            other => panic!("unexpected tag {other}"),
        }
    }
    assert_close(kwh.values().sum(), counted, "kWh from the counter");
    let actions = latest_actions(&out);
    assert_eq!(actions.len(), kwh.len(), "one action per hour: {actions:?}");
    for ((asset, start), a) in &actions {
        assert_eq!(asset, "meter1");
        assert_eq!(
            (a.owner.as_str(), a.action_type.as_str()),
            ("engineering", "capex")
        );
        let want = (kvarh[start] - 0.4843 * kwh[start]) * 0.02;
        assert!(want > 0.0, "the test's kWh stay below the kvarh limit");
        assert_close(a.value, want, "reactive charge");
    }
}

/// A durable node polling pymodbus, killed (SIGKILL) and restarted: what it
/// logged before the kill is in the lake once, the time it was down is a
/// `gaps` row (a Modbus device keeps no history), and polling goes on.
#[test]
fn a_killed_node_marks_its_downtime_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("counter");
    let p = port();
    let _s = py_server(p, 1, &state, &["--map".to_string(), "meter".to_string()]);
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    for t in ["kw", "kvar", "pf"] {
        assets.push_str(&format!("meter1/{t},meter1,s1,s1/l1,meter,0\n"));
    }
    let source = format!(
        r#"[[sources]]
type = "modbus"
id = "field"
interval = "50ms"

[[sources.devices]]
name = "meter1"
host = "127.0.0.1:{p}"
registers = [
  {{ tag = "meter1/kw", address = 0, type = "f32" }},
  {{ tag = "meter1/kvar", address = 2, type = "f32" }},
  {{ tag = "meter1/pf", address = 4, type = "i16", scale = 0.001 }},
]
"#
    );
    source_plan(dir.path(), &source, &assets, &[]);
    let df = dir.path().join("df.toml");
    let aggs = killed_and_restarted(&df, dir.path(), 60);
    for ((tag, _), a) in &aggs {
        let want = match tag.as_str() {
            "meter1/kw" => 100.0,
            "meter1/kvar" => 75.0,
            _ => 0.8,
        };
        assert_close(a.min, want, tag);
        assert_close(a.max, want, tag);
    }
}

/// A durable cluster of 2 on pymodbus: two `modbus` sources, each run
/// whole on one process (source `i` on process `i`), polling the meter map
/// every 50 ms, killed and started again as
/// [`cluster_killed_and_restarted`] says: every logged sample in the lake
/// once, no (key, revision) twice, the downtime a gap of each source, and
/// the meter's values as served.
#[test]
fn a_killed_cluster_of_two_modbus_sources_goes_on_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("counter");
    let p = port();
    let _s = py_server(p, 1, &state, &["--map".to_string(), "meter".to_string()]);
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    let mut source = String::new();
    for m in ["meter1", "meter2"] {
        for t in ["kw", "kvar", "pf"] {
            assets.push_str(&format!("{m}/{t},{m},s1,s1/l1,meter,0\n"));
        }
        source.push_str(&format!(
            r#"[[sources]]
type = "modbus"
id = "field-{m}"
interval = "50ms"

[[sources.devices]]
name = "{m}"
host = "127.0.0.1:{p}"
registers = [
  {{ tag = "{m}/kw", address = 0, type = "f32" }},
  {{ tag = "{m}/kvar", address = 2, type = "f32" }},
  {{ tag = "{m}/pf", address = 4, type = "i16", scale = 0.001 }},
]

"#
        ));
    }
    source_plan(dir.path(), &source, &assets, &[]);
    let aggs = cluster_killed_and_restarted(
        &dir.path().join("df.toml"),
        dir.path(),
        60,
        &["field-meter1", "field-meter2"],
    );
    for ((tag, _), a) in &aggs {
        let want = match tag.rsplit('/').next().unwrap() {
            "kw" => 100.0,
            "kvar" => 75.0,
            _ => 0.8,
        };
        assert_close(a.min, want, tag);
        assert_close(a.max, want, tag);
    }
    let tags: std::collections::BTreeSet<_> = aggs.keys().map(|(t, _)| t).collect();
    assert_eq!(tags.len(), 6, "{tags:?}");
}
