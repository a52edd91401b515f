//! Interop suite against a BACnet/IP device nobody here wrote: bacpypes3
//! (installed by `.ci/run`; run with `cargo test --features interop --test
//! interop bacnet::`).
//!
//! The device (tests/interop/bacnet_device.py) writes every value it sets
//! to a log before setting it: that log is the oracle.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::common::*;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/bacnet_device.py")
}

/// A UDP port nothing on loopback holds now.
fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the bacpypes3 device on 127.0.0.1:`port`; returns once it is up.
fn device(port: u16, log: &Path, start: &Path, values: u32) -> KillOnDrop {
    device_in(None, &format!("127.0.0.1/8:{port}"), log, start, values)
}

/// Starts the device at `address` (`ip/prefix:port`), in network namespace
/// `ns` if given.
fn device_in(ns: Option<&str>, address: &str, log: &Path, start: &Path, values: u32) -> KillOnDrop {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3"]);
            c
        }
        None => Command::new("python3"),
    };
    let mut child = cmd
        .arg(script())
        .args(["--name", "ahu1", "--instance", "1001"])
        .args(["--address", address])
        .arg("--log")
        .arg(log)
        .arg("--start-file")
        .arg(start)
        .args(["--period", "0.2", "--values", &values.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with bacpypes3 (installed by .ci/run)");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("device up"),
        "the bacpypes3 device starts (is bacpypes3 installed?)"
    );
    KillOnDrop(child)
}

/// The device's log: each object's values in the order it set them, and
/// whether its status flags said fault.
fn log_of(path: &Path) -> HashMap<String, Vec<(f64, bool)>> {
    let mut out: HashMap<String, Vec<(f64, bool)>> = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        out.entry(v["object"].as_str().unwrap().to_string())
            .or_default()
            .push((v["value"].as_f64().unwrap(), v["flags"] == "fault"));
    }
    out
}

fn event(stats: &plantflow::stats::Stats, key: &str) -> u64 {
    stats.events().get(key).copied().unwrap_or(0)
}

const POINTS: &[(&str, &str)] = &[
    ("sat", "analog-value:1"),
    ("fan_kw", "analog-input:2"),
    ("fan", "binary-value:3"),
    ("mode", "multi-state-value:4"),
    ("dp", "analog-value:5"),
    ("oat", "analog-value:6"),
    ("missing", "analog-value:9"),
];

fn plan(dir: &Path, port: u16, ghost: u16) -> plantflow::dataflow::Dataflow {
    // The tag registry's units: the supply air's is the device's; the
    // outside air's is not (the device reports °F); the others are left to
    // the device.
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw,unit\n");
    for (t, _) in POINTS {
        let unit = match *t {
            "sat" | "oat" => "°C",
            _ => "",
        };
        assets.push_str(&format!("ahu1/{t},ahu1,s1,s1/l1,ahu,0,{unit}\n"));
    }
    assets.push_str("ghost/x,ghost,s1,s1/l1,ahu,0,\n");
    let source = format!(
        r#"[[sources]]
type = "bacnet"
id = "bms"
bind = "127.0.0.1:0"
interval = "200ms"
timeout = "300ms"
reconnect_max = "1s"
cov_lifetime = "3s"

[[sources.devices]]
name = "ahu1"
instance = 1001
address = "127.0.0.1:{port}"
points = [
  {{ tag = "ahu1/sat", object = "analog-value:1", unit = "degrees-celsius" }},
  {{ tag = "ahu1/fan_kw", object = "analog-input:2", unit = "kilowatts" }},
  {{ tag = "ahu1/fan", object = "binary-value:3" }},
  {{ tag = "ahu1/mode", object = "multi-state-value:4" }},
  {{ tag = "ahu1/dp", object = "analog-value:5", unit = "pascals" }},
  {{ tag = "ahu1/oat", object = "analog-value:6", unit = "degrees-celsius" }},
  {{ tag = "ahu1/missing", object = "analog-value:9" }},
]

[[sources.devices]]
name = "ghost"
instance = 2002
address = "127.0.0.1:{ghost}"
points = [{{ tag = "ghost/x", object = "analog-input:1" }}]

[tag_quality]
stale_after = 100000                   # the test's last look comes after the device stopped
"#
    );
    source_plan(dir, &source, &assets, &[])
}

/// A bacpypes3 air handler: four objects report by COV (renewed every
/// 1.5 s, so through several renewals), one refuses COV and is polled, one
/// goes to fault, one does not exist; the device is killed and started
/// again mid-run, and a device that never answers sits beside it. Every
/// value the device set while subscribed is a sample once (count, sum, min
/// and max per tag equal its log), faulty values are bad (dropped by the
/// quality policy), the polled object ends at the device's last value, the
/// unit the device reports other than the config's and the missing object
/// are one dead letter each, and both outages are gap rows.
#[test]
fn bacpypes3_ahu_by_cov_and_polling_equals_the_devices_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,plantflow=info")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let (p, ghost) = (udp_port(), udp_port());
    let (log1, log2) = (dir.path().join("log1"), dir.path().join("log2"));
    let (go1, go2) = (dir.path().join("go1"), dir.path().join("go2"));
    let d1 = device(p, &log1, &go1, 40);
    let (stats, stop, run) = start_run(plan(dir.path(), p, ghost), 1);
    // Four COV objects subscribed (the fifth, analog-value:5, refused).
    wait_for("the subscriptions", || {
        (event(&stats, "bacnet: COV subscriptions made") >= 4).then_some(())
    });
    std::fs::write(&go1, "").unwrap();
    wait_for("the device's 40 changes", || {
        log1.with_extension("done").exists().then_some(())
    });
    // Let the last notifications and a poll land, then kill the device.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    drop(d1);
    // Down: the ghost from the start, and now the air handler (a device
    // back before a request failed would have its subscriptions renewed
    // only at the next renewal).
    wait_for("the device down", || {
        (event(&stats, "bacnet: devices down") >= 2).then_some(())
    });
    let made = event(&stats, "bacnet: COV subscriptions made");
    let d2 = device(p, &log2, &go2, 20);
    wait_for("subscribed again", || {
        (event(&stats, "bacnet: COV subscriptions made") >= made + 4).then_some(())
    });
    std::fs::write(&go2, "").unwrap();
    wait_for("the device's 20 changes", || {
        log2.with_extension("done").exists().then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    drop(d2);
    let out = dir.path().join("out");
    let aggs = latest_aggregates(&out);

    // COV objects: every value set once, in both lives of the device.
    let (l1, l2) = (log_of(&log1), log_of(&log2));
    for (tag, object) in &POINTS[..4] {
        let want: Vec<f64> = l1[*object]
            .iter()
            .chain(&l2[*object])
            .map(|(v, _)| *v)
            .collect();
        let got: Vec<&Agg> = aggs
            .iter()
            .filter(|((t, _), _)| *t == format!("ahu1/{tag}"))
            .map(|(_, a)| a)
            .collect();
        let count: i64 = got.iter().map(|a| a.count).sum();
        let sum: f64 = got.iter().map(|a| a.mean * a.count as f64).sum();
        assert_eq!(count as usize, want.len(), "{tag}: samples vs the log");
        assert_close(sum, want.iter().sum(), tag);
        let min = got.iter().map(|a| a.min).fold(f64::MAX, f64::min);
        let max = got.iter().map(|a| a.max).fold(f64::MIN, f64::max);
        assert_eq!(min, want.iter().copied().fold(f64::MAX, f64::min), "{tag}");
        assert_eq!(max, want.iter().copied().fold(f64::MIN, f64::max), "{tag}");
    }
    // Renewals repeat the current value: skipped, not counted twice.
    assert!(event(&stats, "bacnet: unchanged notifications skipped") > 0);
    assert!(made >= 8, "subscriptions renewed: {made}");

    // The fault: every value set while the flags said fault is bad (90 and
    // up, dropped); the others are samples (uncertain: the unit is wrong).
    let oat: Vec<f64> = l1["analog-value:6"]
        .iter()
        .chain(&l2["analog-value:6"])
        .filter(|(_, f)| !f)
        .map(|(v, _)| *v)
        .collect();
    assert!(l1["analog-value:6"].iter().any(|(v, f)| *f && *v >= 90.0));
    let got: Vec<&Agg> = aggs
        .iter()
        .filter(|((t, _), _)| t == "ahu1/oat")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        got.iter().map(|a| a.count).sum::<i64>() as usize,
        oat.len(),
        "{:?} {oat:?} {:?}",
        got,
        summary.events
    );
    assert!(got.iter().all(|a| a.max < 90.0));
    assert!(summary.dropped_quality > 0);

    // The polled object: only values the device set, the last one last.
    let dp_values: Vec<f64> = l1["analog-value:5"]
        .iter()
        .chain(&l2["analog-value:5"])
        .map(|(v, _)| *v)
        .collect();
    let dp: Vec<(&i64, &Agg)> = aggs
        .iter()
        .filter(|((t, _), _)| t == "ahu1/dp")
        .map(|((_, w), a)| (w, a))
        .collect();
    assert!(!dp.is_empty() && dp.iter().map(|(_, a)| a.count).sum::<i64>() > 20);
    for (_, a) in &dp {
        assert!(dp_values.contains(&a.min) && dp_values.contains(&a.max));
    }
    assert!(event(&stats, "bacnet: COV refused, objects polled") >= 1);

    // Dead letters: the unit, and the object the device does not have.
    let dead = dead_letters(&out);
    let unit: Vec<_> = dead
        .iter()
        .filter(|(r, _)| r.contains("`ahu1/oat`"))
        .collect();
    assert!(
        !unit.is_empty()
            && unit
                .iter()
                .all(|(r, _)| r.contains("degrees-fahrenheit") && r.contains("degrees-celsius")),
        "{dead:?}"
    );
    let missing: Vec<_> = dead
        .iter()
        .filter(|(r, _)| r.contains("`ahu1/missing`"))
        .collect();
    assert!(
        !missing.is_empty() && missing[0].0.contains("unknown-object"),
        "{dead:?}"
    );
    assert!(!aggs
        .keys()
        .any(|(t, _)| t == "ahu1/missing" || t == "ghost/x"));

    // Units in the tag registry (the final tag-quality snapshot): the
    // device's where the assets table has none, a mismatch where it has
    // another.
    let tq = rows(&out, "tag_quality");
    let last = tq
        .iter()
        .filter_map(|r| r["snapshot_at"].as_i64())
        .max()
        .expect("a tag-quality snapshot");
    let tag_row = |tag: &str| {
        tq.iter()
            .find(|r| r["snapshot_at"].as_i64() == Some(last) && r["tag"] == tag)
            .unwrap_or_else(|| panic!("{tag} in the snapshot"))
            .clone()
    };
    let oat = tag_row("ahu1/oat");
    assert_eq!(oat["status"], "unit_mismatch", "{oat:?}");
    assert!(oat["detail"]
        .as_str()
        .unwrap()
        .contains("degrees-fahrenheit (°F); the assets table says °C"));
    for (tag, unit) in [
        ("ahu1/sat", "°C"),
        ("ahu1/fan_kw", "kW"),
        ("ahu1/dp", "Pa"),
        ("ahu1/fan", ""),
    ] {
        let r = tag_row(tag);
        assert_eq!(r["unit"], unit, "{r:?}");
        assert_ne!(r["status"], "unit_mismatch", "{r:?}");
    }

    // Outages: the device's restart, and the device that never answered.
    let gaps: Vec<String> = rows(&out, "gaps")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    for d in ["ahu1", "ghost"] {
        assert!(
            gaps.iter().any(|g| g.starts_with(&format!("device {d} "))),
            "a gap for {d}: {gaps:?}"
        );
    }
    assert!(stats.rows_accepted.load(Relaxed) > 0);
}

/// The library's BACnet air handler against the bacpypes3 device, its
/// occupied hours set to start two hours from now: the polled fan power
/// (10–13.5 kW, above its 0.5 kW standby) is waste in every window, and
/// each hour's action is worth that hour's fan kWh × the 0.2 tariff. The
/// supply temperature by COV is every value the device set; every unit
/// is the one the map expects (no dead letters).
#[test]
fn the_library_air_handler_finds_its_fan_running_after_hours_on_bacpypes3() {
    let dir = tempfile::tempdir().unwrap();
    let p = udp_port();
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    let _d = device(p, &log, &go, 25);
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    let now_h = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600)
        % 24;
    let (from, to) = ((now_h + 2) % 24, (now_h + 3) % 24);
    let mut assets =
        String::from("tag,asset,site,line,kind,standby_kw,signal,occupied_from,occupied_to\n");
    for t in ["supply_temp", "fan_kw", "fan_status", "mode", "filter_dp"] {
        assets.push_str(&format!("ahu1/{t},ahu1,hq,hvac,ahu,0.5,{t},{from},{to}\n"));
    }
    std::fs::write(input.join("assets.csv"), assets).unwrap();
    std::fs::write(
        input.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let plan = load_env(
        &dataflow("bacnet_ahu.toml"),
        &[
            ("INPUT_DIR", input.display().to_string()),
            ("OUT_DIR", out.display().to_string()),
            ("BACNET_BIND", "127.0.0.1:0".into()),
            ("AHU_ADDRESS", format!("127.0.0.1:{p}")),
            ("AHU_INTERVAL", "100ms".into()),
        ],
    );
    let (stats, stop, run) = start_run(plan, 1);
    wait_for("the subscriptions", || {
        (event(&stats, "bacnet: COV subscriptions made") >= 3).then_some(())
    });
    std::fs::write(&go, "").unwrap();
    wait_for("the device's 25 changes", || {
        log.with_extension("done").exists().then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("run succeeds");
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );
    let l = log_of(&log);
    let aggs = latest(rows(&out, "aggregates"), &["tag", "window_start"]);
    let hour = |ws: i64| ws - ws.rem_euclid(3_600_000);
    let mut fan_kwh: HashMap<i64, f64> = HashMap::new();
    let (mut sat_count, mut sat_sum) = (0usize, 0.0);
    let fan_values: Vec<f64> = l["analog-input:2"].iter().map(|(v, _)| *v).collect();
    for a in aggs.values() {
        let f = |k: &str| a[k].as_f64().unwrap();
        let ws = a["window_start"].as_i64().unwrap();
        match a["tag"].as_str().unwrap() {
            "ahu1/fan_kw" => {
                assert!(fan_values.contains(&f("min")) && fan_values.contains(&f("max")));
                *fan_kwh.entry(hour(ws)).or_default() += f("mean") / 60.0;
            }
            "ahu1/supply_temp" => {
                let count = a["count"].as_i64().unwrap();
                sat_count += count as usize;
                sat_sum += f("mean") * count as f64;
            }
            _ => {}
        }
    }
    let sat: Vec<f64> = l["analog-value:1"].iter().map(|(v, _)| *v).collect();
    assert_eq!(sat_count, sat.len(), "supply temperature by COV");
    assert_close(sat_sum, sat.iter().sum(), "supply temperature sum");
    let actions = latest_actions(&out);
    assert_eq!(
        actions.len(),
        fan_kwh.len(),
        "one action per hour: {actions:?}"
    );
    for ((asset, start), a) in &actions {
        assert_eq!(asset, "ahu1");
        assert_eq!(
            (a.owner.as_str(), a.action_type.as_str()),
            ("maintenance", "operational_change")
        );
        assert_close(a.value, fan_kwh[start] * 0.2, "fan energy after hours");
    }
}

/// A network namespace joined to this one by a veth pair: this side
/// 10.231.`n`.1/24, the namespace's 10.231.`n`.2/24. A real subnet with a
/// real broadcast address, which loopback is not.
struct Netns {
    name: String,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's ip");
    assert!(
        o.status.success(),
        "ip {}: {} (the test makes a network namespace: it needs root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Netns {
    fn new(n: u8) -> Netns {
        let id = std::process::id() % 100_000;
        let name = format!("pf-bacnet-{id}");
        let (a, b) = (format!("pfb{id}a"), format!("pfb{id}b"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &b, "netns", &ns.name]);
        ip(&["addr", "add", &format!("10.231.{n}.1/24"), "dev", &a]);
        ip(&["link", "set", &a, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("10.231.{n}.2/24"), "dev", &b]);
        inside(&["link", "set", &b, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Discovery as on a site: the device sits on another host of a subnet
/// (a network namespace), the node knows only its instance, and a Who-Is
/// broadcast to the subnet finds it; then its COV objects give every value
/// it sets, once.
#[test]
fn a_device_on_another_host_is_found_by_a_who_is_broadcast() {
    let n = 20 + (std::process::id() % 200) as u8;
    let ns = Netns::new(n);
    let dir = tempfile::tempdir().unwrap();
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    let _d = device_in(
        Some(&ns.name),
        &format!("10.231.{n}.2/24:47808"),
        &log,
        &go,
        15,
    );
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    for (t, _) in &POINTS[..4] {
        assets.push_str(&format!("ahu1/{t},ahu1,s1,s1/l1,ahu,0\n"));
    }
    let source = format!(
        r#"[[sources]]
type = "bacnet"
id = "bms"
bind = "10.231.{n}.1:47808"
broadcast = "10.231.{n}.255"
interval = "200ms"
timeout = "500ms"

[[sources.devices]]
name = "ahu1"
instance = 1001
points = [
  {{ tag = "ahu1/sat", object = "analog-value:1" }},
  {{ tag = "ahu1/fan_kw", object = "analog-input:2" }},
  {{ tag = "ahu1/fan", object = "binary-value:3" }},
  {{ tag = "ahu1/mode", object = "multi-state-value:4" }},
]
"#
    );
    let (stats, stop, run) = start_run(source_plan(dir.path(), &source, &assets, &[]), 1);
    wait_for("the device found and subscribed", || {
        (event(&stats, "bacnet: COV subscriptions made") >= 4).then_some(())
    });
    assert_eq!(event(&stats, "bacnet: devices found by Who-Is"), 1);
    std::fs::write(&go, "").unwrap();
    wait_for("the device's 15 changes", || {
        log.with_extension("done").exists().then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    stop.store(true, SeqCst);
    run.join().unwrap().expect("run succeeds");
    let l = log_of(&log);
    let aggs = latest_aggregates(&dir.path().join("out"));
    for (tag, object) in &POINTS[..4] {
        let want: Vec<f64> = l[*object].iter().map(|(v, _)| *v).collect();
        let got: Vec<&Agg> = aggs
            .iter()
            .filter(|((t, _), _)| *t == format!("ahu1/{tag}"))
            .map(|(_, a)| a)
            .collect();
        assert_eq!(
            got.iter().map(|a| a.count).sum::<i64>() as usize,
            want.len(),
            "{tag}"
        );
        assert_close(
            got.iter().map(|a| a.mean * a.count as f64).sum(),
            want.iter().sum(),
            tag,
        );
    }
    assert_eq!(event(&stats, "bacnet: devices down"), 0);
}

/// A durable node reading the bacpypes3 device (a COV object and a polled
/// one), SIGKILLed and restarted while the device goes on: every sample
/// its input log holds is in the lake once, each is a value the device set,
/// and the time the node was down is a `gaps` row (the device's trend logs
/// are not read back).
#[test]
fn a_killed_node_marks_its_downtime_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let p = udp_port();
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    std::fs::write(&go, "").unwrap();
    let _d = device(p, &log, &go, 1_000_000);
    let assets = "tag,asset,site,line,kind,standby_kw\nahu1/sat,ahu1,s1,s1/l1,ahu,0\nahu1/dp,ahu1,s1,s1/l1,ahu,0\n";
    let source = format!(
        r#"[[sources]]
type = "bacnet"
id = "bms"
bind = "127.0.0.1:0"
interval = "100ms"
timeout = "300ms"

[[sources.devices]]
name = "ahu1"
instance = 1001
address = "127.0.0.1:{p}"
points = [
  {{ tag = "ahu1/sat", object = "analog-value:1" }},
  {{ tag = "ahu1/dp", object = "analog-value:5" }},
]
"#
    );
    source_plan(dir.path(), &source, assets, &[]);
    let df = dir.path().join("df.toml");
    let aggs = killed_and_restarted(&df, dir.path(), 40);
    let l = log_of(&log);
    for ((tag, _), a) in &aggs {
        let object = if tag == "ahu1/sat" {
            "analog-value:1"
        } else {
            "analog-value:5"
        };
        let set: Vec<f64> = l[object].iter().map(|(v, _)| *v).collect();
        assert!(set.contains(&a.min) && set.contains(&a.max), "{tag}: {a:?}");
    }
}

/// A durable cluster of 2 on the bacpypes3 device: two `bacnet` sources,
/// each run whole on one process and each reading two of the device's
/// objects, killed and started again as [`cluster_killed_and_restarted`]
/// says: every logged sample in the lake once, no (key, revision) twice,
/// the downtime a gap of each source, and every window's extremes values
/// the device set (its log).
#[test]
fn a_killed_cluster_of_two_bacnet_sources_goes_on_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let p = udp_port();
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    std::fs::write(&go, "").unwrap();
    let _d = device(p, &log, &go, 1_000_000);
    let objects = [
        ("a", "sat", "analog-value:1"),
        ("a", "dp", "analog-value:5"),
        ("b", "fan_kw", "analog-input:2"),
        ("b", "oat", "analog-value:6"),
    ];
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    for (_, t, _) in objects {
        assets.push_str(&format!("ahu1/{t},ahu1,s1,s1/l1,ahu,0\n"));
    }
    let mut source = String::new();
    for s in ["a", "b"] {
        let points: Vec<String> = objects
            .iter()
            .filter(|(of, _, _)| *of == s)
            .map(|(_, t, o)| format!("{{ tag = \"ahu1/{t}\", object = \"{o}\" }}"))
            .collect();
        source.push_str(&format!(
            r#"[[sources]]
type = "bacnet"
id = "bms-{s}"
bind = "127.0.0.1:0"
interval = "100ms"
timeout = "300ms"

[[sources.devices]]
name = "ahu1"
instance = 1001
address = "127.0.0.1:{p}"
points = [{}]

"#,
            points.join(", ")
        ));
    }
    source_plan(dir.path(), &source, &assets, &[]);
    let aggs = cluster_killed_and_restarted(
        &dir.path().join("df.toml"),
        dir.path(),
        40,
        &["bms-a", "bms-b"],
    );
    let l = log_of(&log);
    for ((tag, _), a) in &aggs {
        let (_, _, object) = objects
            .iter()
            .find(|(_, t, _)| format!("ahu1/{t}") == *tag)
            .unwrap();
        let set: Vec<f64> = l[*object].iter().map(|(v, _)| *v).collect();
        assert!(set.contains(&a.min) && set.contains(&a.max), "{tag}: {a:?}");
    }
    let tags: std::collections::BTreeSet<_> = aggs.keys().map(|(t, _)| t).collect();
    assert_eq!(tags.len(), 4, "{tags:?}");
}
