//! Modbus polling harness (issue 29): 100 devices × 50 holding registers
//! (one request a poll each) against one pymodbus server on loopback, in
//! one run:
//!
//! - the server's own limit: pymodbus's own async client, 100 connections
//!   reading the same 50 registers back to back (`benches/modbus_client.py`);
//! - plantflow's `modbus` source polling the 100 devices every 1 ms (as
//!   fast as they answer), every sample through the engine into the lake.
//!
//! Prints requests per second of each and their ratio. Needs `python3`
//! with pymodbus (3.11.4, as `.ci/run` installs).
//!
//! ```text
//! cargo bench --bench modbus                   # 100 × 50, 10 s each
//! PLANTFLOW_BENCH_SECS=30 cargo bench --bench modbus
//! ```

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEVICES: usize = 100;
const REGISTERS: usize = 50;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn server(port: u16, dir: &Path) -> std::process::Child {
    let mut child = Command::new("python3")
        .arg(root().join("tests/interop/modbus_server.py"))
        .args(["--port", &port.to_string(), "--map", "bench"])
        .arg("--state")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with pymodbus");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    child
}

fn pymodbus_limit(port: u16, secs: u64) -> f64 {
    let out = Command::new("python3")
        .arg(root().join("benches/modbus_client.py"))
        .args([port, DEVICES as u16, REGISTERS as u16, secs as u16].map(|x| x.to_string()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn plantflow_polls(port: u16, secs: u64, dir: &Path) -> (f64, u64) {
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    let mut devices = String::new();
    for d in 0..DEVICES {
        for r in 0..REGISTERS {
            assets += &format!("d{d}/r{r},d{d},s1,s1/l1,meter,0\n");
        }
        devices += &format!(
            "[[sources.devices]]\nname = \"d{d}\"\nhost = \"127.0.0.1:{port}\"\nmap = \"m\"\n\n"
        );
    }
    let regs: Vec<String> = (0..REGISTERS)
        .map(|r| format!("  {{ tag = \"{{device}}/r{r}\", address = {r} }},"))
        .collect();
    std::fs::write(dir.join("assets.csv"), assets).unwrap();
    std::fs::write(
        dir.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    let text = format!(
        r#"name = "modbus_bench"
currency = "EUR"

[[sources]]
type = "modbus"
id = "field"
interval = "1ms"
timeout = "5s"

[[sources.maps]]
name = "m"
registers = [
{regs}
]

{devices}
[context.assets]
path = "{d}/assets.csv"

[context.tariff]
path = "{d}/tariff.csv"

[window]
size = "1m"
allowed_lateness = "2s"

[metrics]
energy_kwh = "mean / 60.0"

[[sinks]]
type = "parquet"
id = "lake"
path = "{d}/out"
"#,
        regs = regs.join("\n"),
        d = dir.display(),
    );
    let df = dir.join("df.toml");
    std::fs::write(&df, text).unwrap();
    let plan = plantflow::dataflow::load_with_env(&df, &|_| None)
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let stats = Arc::new(plantflow::stats::Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (stats.clone(), stop.clone());
    let run = std::thread::spawn(move || {
        plantflow::run::run(
            plan,
            plantflow::run::RunOptions {
                workers: 1,
                follow: false,
                stop: Some(st),
                stats: Some(s),
                tally_actions_only: true,
                shutdown_timeout: None,
                reset_state: true,
                no_input_log: false,
                drain: true,
                cluster: None,
            },
        )
    });
    // Counted from the first answer on (connections are up).
    let requests =
        |s: &plantflow::stats::Stats| s.events().get("modbus: requests").copied().unwrap_or(0);
    while requests(&stats) < DEVICES as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (n0, t0) = (requests(&stats), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (n1, t1) = (requests(&stats), Instant::now());
    stop.store(true, SeqCst);
    let summary = run.join().unwrap().expect("the run succeeds");
    assert!(
        summary.dead_letters.is_empty(),
        "{:?}",
        summary.dead_letters
    );
    (
        (n1 - n0) as f64 / (t1 - t0).as_secs_f64(),
        summary.rows_accepted,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = std::env::var("PLANTFLOW_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let port = plantflow::sim::broker::free_port().unwrap();
    let mut srv = server(port, dir.path());
    let limit = pymodbus_limit(port, secs);
    let (polls, rows) = plantflow_polls(port, secs, dir.path());
    let _ = srv.kill();
    let _ = srv.wait();
    println!("modbus: {DEVICES} devices x {REGISTERS} registers, one pymodbus server on loopback, {secs} s each");
    println!("  pymodbus's own client (the server's limit)  {limit:>9.0} requests/s");
    println!(
        "  plantflow modbus source                      {polls:>9.0} polls/s ({:.0} samples/s; {rows} samples into the lake)",
        polls * REGISTERS as f64
    );
    println!(
        "  ratio plantflow / pymodbus client            {:>9.2}",
        polls / limit
    );
}
