//! OPC UA throughput harness: the project's simulated plant server with 10k
//! and 50k monitored items, changing every variable as fast as the server
//! takes writes, end to end into plantflow (subscription, decode, normalise,
//! window, context joins, Parquet). Reported next to the server's own rate
//! (value changes it accepted per second), measured in the same run.
//!
//! ```text
//! cargo bench --bench opcua                        # 10,000 and 50,000 items, 10 s each
//! PLANTFLOW_BENCH_ITEMS=2000 PLANTFLOW_BENCH_SECS=5 cargo bench --bench opcua
//! ```
//!
//! The server writes whole rounds (every variable once, one SourceTimestamp
//! per round) for the measuring time; plantflow subscribes with sampling
//! "fastest", queue 1000 and a 100 ms publishing interval over None
//! security. plantflow's rate is changes received / (first write → last
//! change received); changes the server dropped from full queues are
//! counted and printed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua::types::StatusCode;
use plantflow::sim::opcua::{plant_tags, PlantServer, ServerOptions};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dataflow(dir: &Path, tags: &[String], url: &str) -> std::path::PathBuf {
    let mut assets = String::from("tag,asset,site,line,kind,standby_kw\n");
    for t in tags {
        let parts: Vec<&str> = t.split('/').collect();
        assets.push_str(&format!(
            "{t},{}/{}/{},{},{}/{},compressor,1.0\n",
            parts[0], parts[1], parts[2], parts[0], parts[0], parts[1]
        ));
    }
    std::fs::write(dir.join("assets.csv"), assets).unwrap();
    std::fs::write(
        dir.join("tariff.csv"),
        "start_hour,end_hour,price_per_kwh\n0,24,0.2\n",
    )
    .unwrap();
    let text = format!(
        r#"name = "opcua_bench"
currency = "EUR"

[[sources]]
type = "opcua"
id = "plc"
endpoint = "{url}"
pki_dir = "{d}/pki"
trust_server_certs = true

[[sources.browse]]
root = "Plant"

[[sources.groups]]
name = "all"
publishing_interval = "100ms"
queue_size = 1000

[context.assets]
path = "{d}/assets.csv"

[context.tariff]
path = "{d}/tariff.csv"

[window]
size = "1m"
allowed_lateness = "5s"
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
    let f = dir.join("df.toml");
    std::fs::write(&f, text).unwrap();
    f
}

fn run_one(items: usize, secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let tags = plant_tags(items);
    let server = PlantServer::start(ServerOptions {
        tags: tags.clone(),
        pki_dir: dir.path().join("server-pki"),
        min_publishing_interval_ms: 50,
        ..Default::default()
    })
    .expect("simulator");
    let names: Vec<String> = tags.iter().map(|t| t.path.clone()).collect();
    let df = dataflow(dir.path(), &names, &server.url());
    let plan = plantflow::dataflow::load_with_env(&df, &|_| None)
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let stats = Arc::new(plantflow::stats::Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, st2) = (stats.clone(), stop.clone());
    let run = std::thread::spawn(move || {
        plantflow::run::run(
            plan,
            plantflow::run::RunOptions {
                workers: 1,
                follow: false,
                stop: Some(st2),
                stats: Some(s2),
                tally_actions_only: false,
                shutdown_timeout: None,
                reset_state: false,
                no_input_log: false,
                drain: true,
                cluster: None,
            },
        )
    });
    let created = |s: &plantflow::stats::Stats| {
        s.events()
            .get("opcua: monitored items created")
            .copied()
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while created(&stats) < items as u64 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "subscribing timed out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let subscribe_s = t0.elapsed().as_secs_f64();
    let base = stats.rows_read.load(Relaxed);

    // The server writes rounds for `secs` seconds.
    let start = Instant::now();
    let mut written = 0u64;
    let mut round = 0i64;
    while start.elapsed() < Duration::from_secs(secs) {
        let ts = plantflow::model::now_ms();
        let updates: Vec<(usize, f64, i64, StatusCode)> = (0..items)
            .map(|i| (i, (round * 7 + i as i64 % 100) as f64, ts, StatusCode::Good))
            .collect();
        server.set(&updates).unwrap();
        written += items as u64;
        round += 1;
    }
    let server_s = start.elapsed().as_secs_f64();
    // Wait for the client to take what was written (or stall).
    let mut last = (stats.rows_read.load(Relaxed), Instant::now());
    let mut last_change = Instant::now();
    loop {
        let n = stats.rows_read.load(Relaxed) - base;
        if n >= written {
            last_change = Instant::now();
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
            last_change = Instant::now();
        } else if last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let received = stats.rows_read.load(Relaxed) - base;
    let client_s = last_change.duration_since(start).as_secs_f64();
    stop.store(true, Relaxed);
    let summary = run.join().unwrap().expect("run");
    server.stop();
    let overflow: u64 = summary
        .events
        .iter()
        .filter(|(k, _)| k.contains("overflow"))
        .map(|(_, v)| *v)
        .sum();
    let dead: u64 = summary.dead_letters.values().sum();
    assert_eq!(dead, 0, "{:?}", summary.dead_letters);
    let server_rate = written as f64 / server_s;
    let client_rate = received as f64 / client_s;
    println!(
        "{items:>6} items | subscribe {subscribe_s:>5.1} s | server wrote {written:>9} in {server_s:>4.1} s = {server_rate:>9.0} changes/s | plantflow read {received:>9} in {client_s:>4.1} s = {client_rate:>9.0} changes/s | ratio {:.2} | overflow-flagged {overflow}",
        client_rate / server_rate
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("error")
        .try_init();
    let secs = env_or("PLANTFLOW_BENCH_SECS", 10);
    let sizes: Vec<usize> = match std::env::var("PLANTFLOW_BENCH_ITEMS") {
        Ok(v) => v.split(',').filter_map(|s| s.parse().ok()).collect(),
        Err(_) => vec![10_000, 50_000],
    };
    println!(
        "OPC UA end to end on {} CPUs (simulator and plantflow in one process, loopback, None security)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for n in sizes {
        run_one(n, secs);
    }
}
