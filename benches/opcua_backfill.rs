//! OPC UA backfill rate (issue 29): a historizing asyncua server
//! (tests/interop/asyncua_server.py, Python) changes 200 variables at
//! 10 Hz; the link to plantflow is cut for 30 s by the script's relay, and
//! when it is back plantflow reads the missed 60,000 values with
//! HistoryRead and feeds them through the dataflow as late data. Reported:
//! values backfilled per second (first to last backfilled value), next to
//! the rate at which asyncua's own client reads that history from the same
//! server in the same run (`benches/opcua_history_client.py`).
//!
//! ```text
//! cargo bench --bench opcua_backfill
//! ```

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VARS: usize = 200;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dataflow(dir: &Path, url: &str) -> plantflow::dataflow::Dataflow {
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    for i in 0..VARS {
        let (l, m) = (i / 50 + 1, i % 50 + 1);
        assets += &format!("line{l}/m{m:02}/power_kw,line{l}/m{m:02},s1,s1/line{l},motor,1.0\n");
    }
    std::fs::write(dir.join("assets.csv"), assets).unwrap();
    std::fs::write(
        dir.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    let text = format!(
        r#"name = "backfill_bench"
currency = "EUR"

[[sources]]
type = "opcua"
id = "asyncua"
endpoint = "{url}"
pki_dir = "{d}/pki"
trust_server_certs = true
keep_alive = "1s"

[[sources.browse]]
root = "Plant"
include = ["**/power_kw"]

[[sources.groups]]
name = "all"
publishing_interval = "100ms"
queue_size = 100

[context.assets]
path = "{d}/assets.csv"

[context.tariff]
path = "{d}/tariff.csv"

[window]
size = "1m"
allowed_lateness = "2s"
retention = "2h"

[metrics]
energy_kwh = "mean / 60.0"

[[sinks]]
type = "parquet"
id = "lake"
path = "{d}/out"
"#,
        d = dir.display()
    );
    let df = dir.join("df.toml");
    std::fs::write(&df, text).unwrap();
    plantflow::dataflow::load_with_env(&df, &|_| None).unwrap_or_else(|e| panic!("{}", e.render()))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter("error")
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let port = plantflow::sim::broker::free_port().unwrap();
    let mut server = Command::new("python3")
        .arg(root().join("tests/interop/asyncua_server.py"))
        .args(["--port", &port.to_string(), "--vars", &VARS.to_string()])
        .args(["--interval", "0.1", "--duration", "36", "--historize"])
        .args(["--cut-after", "20", "--cut-for", "30"])
        .arg("--log")
        .arg(dir.path().join("written.csv"))
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with asyncua");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let url = format!("opc.tcp://localhost:{port}/");
    let plan = dataflow(dir.path(), &url);
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
    let backfilled = |s: &plantflow::stats::Stats| {
        s.events()
            .get("opcua: values backfilled from history")
            .copied()
            .unwrap_or(0)
    };
    let (mut first, mut last, mut n) = (None, Instant::now(), 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let now = backfilled(&stats);
        if now > n {
            n = now;
            last = Instant::now();
            first.get_or_insert(last);
        } else if first.is_some() && last.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, SeqCst);
    run.join().unwrap().expect("the run succeeds");
    let first = first.expect("a backfill happened");
    let secs = (last - first).as_secs_f64().max(1e-3);
    let out = Command::new("python3")
        .arg(root().join("benches/opcua_history_client.py"))
        .args([url.as_str(), "60"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace();
    let own: f64 = f.next().unwrap().parse().unwrap();
    let own_n: u64 = f.next().unwrap().parse().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    println!("opcua backfill: {VARS} variables at 10 Hz, link cut for 30 s, a historizing asyncua server");
    println!("  plantflow backfill          {n:>8} values in {secs:.2} s = {:>8.0} values/s (into the lake)", n as f64 / secs);
    println!("  asyncua's own client        {own_n:>8} values              = {own:>8.0} values/s (history read only)");
    println!(
        "  ratio plantflow / client    {:>8.2}",
        n as f64 / secs / own
    );
}
