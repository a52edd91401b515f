//! Latency harness: workload v1 appended to a file at a fixed input rate and
//! read by `plantflow run --follow`; measures the time from a window's close
//! (the watermark passing its end) to its aggregates and actions being
//! visible in the Parquet lake and on MQTT.
//!
//! ```text
//! cargo bench --bench latency      # 4,000 tags x 1,800 s at 200,000 rows/s, 2 workers
//! PLANTFLOW_LAT_TAGS=2000 PLANTFLOW_LAT_SECONDS=600 PLANTFLOW_LAT_RATE=100000 cargo bench --bench latency
//! PLANTFLOW_LAT_MQTT=0 cargo bench --bench latency   # without the MQTT sink
//! PLANTFLOW_LAT_PAYLOAD=row cargo bench --bench latency     # one MQTT message per row (default: array)
//! PLANTFLOW_LAT_MQTT_EXTRA='max_message_bytes = 65536' cargo bench --bench latency   # extra keys of the MQTT sink
//! ```
//!
//! - **Input.** A writer thread appends the workload's `samples.csv` lines to
//!   a follow file in 2 ms ticks, paced to the rate. It notes the wall time
//!   at which the rows it has written first move the watermark (max event
//!   time − 5 s lateness) past each minute boundary: that is the window's close.
//! - **MQTT.** An `mqtt_publish` sink (`payload = "array"`: one JSON array per
//!   topic and output batch) sends `aggregates` and `actions` to an
//!   embedded rumqttd broker; a subscriber in this process stamps each message
//!   on arrival and keeps its payload, parsed after the run (parsing a 256 KiB
//!   array as it arrives would delay the stamps of the messages behind it). An
//!   aggregate's latency is arrival − close of its window; an action's is
//!   arrival − close of the window ending its period (a period rule's action
//!   counts once its period has closed).
//! - **Parquet.** The lake rolls by event time every minute (`roll_by =
//!   "event_time"`); a watcher lists the aggregates directory every 2 ms and
//!   reads each new committed file's window ends. A window's latency is the
//!   first sighting of committed files holding all its tags' rows − its close.
//!
//! Stamps are taken in this process with one monotonic clock. The Parquet
//! figure includes up to 2 ms of polling.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const WINDOW_MS: i64 = 60_000;
const LATENESS_MS: i64 = 5_000;

/// Wall instants of window closes, by window end (event ms).
type Closes = Arc<Mutex<BTreeMap<i64, Instant>>>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{:<34} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        what,
        ms.len(),
        percentile(&ms, 0.0),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        percentile(&ms, 1.0),
    );
}

fn dataflow(dir: &Path, follow: &Path, out: &Path, mqtt_port: Option<u16>) -> PathBuf {
    let mut text = format!(
        r#"name = "latency"
currency = "EUR"

[[sources]]
type = "replay"
id = "samples"
path = "{follow}"
poll_interval = "2ms"

[context.assets]
path = "{dir}/assets.csv"

[context.tariff]
path = "{dir}/tariff.csv"

[context.production]
path = "{dir}/production.csv"

[window]
size = "1m"
allowed_lateness = "5s"
quality = "drop_bad"
retention = "2h"

[metrics]
energy_kwh = "mean / 60.0"
cost = "energy_kwh * price_per_kwh"
waste_kwh = "!producing && mean > standby_kw ? energy_kwh : 0.0"

[[rules]]
id = "idle_running"
group_by = ["site", "line", "asset"]
period = "1h"
where = "waste_kwh > 0.0"
condition = "waste_kwh > 1.0"

[rules.measures]
waste_kwh = {{ sum = "waste_kwh" }}
waste_cost = {{ sum = "waste_kwh * price_per_kwh" }}

[rules.action]
owner = "operations"
action_type = "operational_change"
value_category = "energy_cost"
value = "waste_cost"
one_per = "period"

[[sinks]]
type = "parquet"
id = "lake"
path = "{out}"
roll_interval = "1m"
roll_by = "event_time"
"#,
        follow = follow.display(),
        dir = dir.display(),
        out = out.display(),
    );
    if let Some(port) = mqtt_port {
        text.push_str(&format!(
            r#"
[[sinks]]
type = "mqtt_publish"
id = "live"
url = "mqtt://127.0.0.1:{port}"
topic = "bench/{{table}}"
tables = ["aggregates", "actions"]
qos = 1
payload = "{payload}"
"#,
            payload = std::env::var("PLANTFLOW_LAT_PAYLOAD").unwrap_or_else(|_| "array".into()),
        ));
        if let Ok(extra) = std::env::var("PLANTFLOW_LAT_MQTT_EXTRA") {
            text.push_str(&extra.replace("\\n", "\n"));
            text.push('\n');
        }
    }
    let path = out.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tags = env_or("PLANTFLOW_LAT_TAGS", 4000) as usize;
    let seconds = env_or("PLANTFLOW_LAT_SECONDS", 1800);
    let rate = env_or("PLANTFLOW_LAT_RATE", 200_000) as f64;
    let workers = env_or("PLANTFLOW_LAT_WORKERS", 2);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    let input = plantflow::bench::workload(&root, tags, seconds);
    let work = root.join("latency");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let follow = work.join("samples.csv");
    let out = work.join("lake");
    std::fs::write(&follow, "ts,tag,value,quality\n").unwrap();

    let broker = plantflow::sim::broker::start(0, 0).expect("broker");
    // PLANTFLOW_LAT_MQTT=0 leaves the MQTT sink out (Parquet latency alone).
    let mqtt = env_or("PLANTFLOW_LAT_MQTT", 1) == 1;
    let config = dataflow(&input, &follow, &out, mqtt.then_some(broker.v5_port));

    // MQTT subscriber: stamps each message as it arrives and keeps its payload;
    // parsing waits until the run is over, so a large message being parsed never
    // delays the stamp of the next one.
    let received: Arc<Mutex<Vec<(Instant, bool, bytes::Bytes)>>> = Arc::default();
    {
        let mut o = MqttOptions::new("latency-bench", "127.0.0.1", broker.v4_port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(o, 1000);
        client.subscribe("bench/#", QoS::AtLeastOnce).unwrap();
        let received = received.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _keep = client;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = Instant::now();
                        let is_action = p.topic.ends_with("/actions");
                        received.lock().unwrap().push((now, is_action, p.payload));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscriber connected");
    }

    // PLANTFLOW_LAT_TRACE=1: plantflow logs its stage stamps (target
    // `plantflow::latency`) to work/trace.log, the closes go to work/closes.log and
    // the subscriber's arrivals to work/arrivals.log (wall-clock microseconds).
    let trace = env_or("PLANTFLOW_LAT_TRACE", 0) == 1;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantflow"));
    if trace {
        cmd.env("PLANTFLOW_LOG", "warn,plantflow::latency=trace");
    }
    let mut child = cmd
        .args([
            "run",
            "--follow",
            "--json",
            "--workers",
            &workers.to_string(),
        ])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(if trace {
            std::fs::File::create(work.join("trace.log"))
                .unwrap()
                .into()
        } else {
            std::process::Stdio::piped()
        })
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Parquet watcher: first sighting of each window end in a committed file.
    let seen_files: Arc<Mutex<BTreeMap<i64, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let seen = seen_files.clone();
        let stop = stop.clone();
        let dir = out.join("aggregates");
        std::thread::spawn(move || {
            let mut known: HashSet<PathBuf> = HashSet::new();
            let mut rows: BTreeMap<i64, usize> = BTreeMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                for part in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    for f in std::fs::read_dir(part.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        let p = f.path();
                        let name = f.file_name().to_string_lossy().to_string();
                        if !name.ends_with(".parquet")
                            || name.starts_with('.')
                            || known.contains(&p)
                        {
                            continue;
                        }
                        known.insert(p.clone());
                        let Ok(file) = std::fs::File::open(&p) else {
                            continue;
                        };
                        let Ok(b) = ParquetRecordBatchReaderBuilder::try_new(file) else {
                            continue;
                        };
                        let Ok(reader) = b.build() else { continue };
                        let mut s = seen.lock().unwrap();
                        for batch in reader.flatten() {
                            if let Some(c) = batch.column_by_name("window_end") {
                                for e in c.as_primitive::<TimestampMillisecondType>().values() {
                                    *rows.entry(*e).or_insert(0) += 1;
                                    // A window is visible once all its tags' rows are.
                                    if rows[e] == tags {
                                        s.entry(*e).or_insert(now);
                                    }
                                }
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // Writer: paced appends; records window closes.
    let closes: Closes = Arc::default();
    let started = Instant::now();
    {
        let mut src = BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(input.join("samples.csv")).unwrap(),
        );
        let mut dst = std::fs::OpenOptions::new()
            .append(true)
            .open(&follow)
            .unwrap();
        let mut line = String::new();
        src.read_line(&mut line).unwrap();
        let mut written = 0u64;
        let mut max_ts = i64::MIN;
        let mut next_close: Option<i64> = None;
        let mut chunk = Vec::with_capacity(1 << 20);
        let mut done = false;
        let mut close_log = String::new();
        while !done {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            chunk.clear();
            while written < due {
                line.clear();
                if src.read_line(&mut line).unwrap() == 0 {
                    done = true;
                    break;
                }
                if let Some(ts) = line.split(',').next().and_then(|t| t.parse::<i64>().ok()) {
                    max_ts = max_ts.max(ts);
                }
                chunk.extend_from_slice(line.as_bytes());
                written += 1;
            }
            if !chunk.is_empty() {
                dst.write_all(&chunk).unwrap();
                dst.flush().unwrap();
                let now = Instant::now();
                let wm = max_ts - LATENESS_MS;
                let first = next_close.unwrap_or((max_ts / WINDOW_MS) * WINDOW_MS);
                let mut e = first;
                let mut c = closes.lock().unwrap();
                while e <= wm {
                    if trace {
                        let wall = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        close_log.push_str(&format!("{e} {}\n", wall.as_micros()));
                    }
                    c.insert(e, now);
                    e += WINDOW_MS;
                }
                next_close = Some(e);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if trace {
            std::fs::write(work.join("closes.log"), &close_log).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "wrote {written} rows in {secs:.1} s ({:.0} rows/s)",
            written as f64 / secs
        );
    }
    // Let the last closes through, then stop plantflow (SIGINT) and collect.
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    let summary = String::from_utf8_lossy(&output.stdout);
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap_or_default();

    let closes = closes.lock().unwrap().clone();
    // The first window in the file closes as soon as the first rows arrive: skip windows
    // whose start is before the first full minute of input.
    let first_full = closes.keys().next().copied().unwrap_or(0) + WINDOW_MS;
    let ms = |a: Instant, b: Instant| a.saturating_duration_since(b).as_secs_f64() * 1e3;
    // (arrival, is action, window or period end) per row: `payload = "array"`
    // rows all arrived with their message.
    let mut arrivals: Vec<(Instant, bool, i64)> = Vec::new();
    for (now, is_action, payload) in received.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        // Aggregates name their window; a period rule's action its period.
        let end = |v: &serde_json::Value| {
            v["window_end"]
                .as_i64()
                .or_else(|| v["period_end"].as_i64())
                .unwrap_or(0)
        };
        match &v {
            serde_json::Value::Array(rows) => {
                arrivals.extend(rows.iter().map(|r| (*now, *is_action, end(r))))
            }
            one => arrivals.push((*now, *is_action, end(one))),
        }
    }
    if trace {
        // Arrivals on the wall clock the trace and closes.log use.
        let (inst0, wall0) = (Instant::now(), std::time::SystemTime::now());
        let mut log = String::new();
        for (at, is_action, end) in &arrivals {
            let wall = wall0 - inst0.saturating_duration_since(*at);
            let us = wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
            let kind = if *is_action { "action" } else { "aggregate" };
            log.push_str(&format!("{us} {kind} {end}\n"));
        }
        std::fs::write(work.join("arrivals.log"), log).unwrap();
    }
    let mut agg_msgs = Vec::new();
    let mut agg_last: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut actions = Vec::new();
    let mut at_shutdown = 0;
    for (at, is_action, end) in &arrivals {
        if *is_action {
            // Actions of periods the input never closed come out at shutdown: not counted.
            match closes.get(end) {
                Some(c) => actions.push(ms(*at, *c)),
                None => at_shutdown += 1,
            }
        } else if *end >= first_full {
            if let Some(c) = closes.get(end) {
                agg_msgs.push(ms(*at, *c));
                let l = agg_last.entry(*end).or_insert(*at);
                *l = (*l).max(*at);
            }
        }
    }
    let agg_windows: Vec<f64> = agg_last
        .iter()
        .filter_map(|(e, at)| closes.get(e).map(|c| ms(*at, *c)))
        .collect();
    let pq: Vec<f64> = seen_files
        .lock()
        .unwrap()
        .iter()
        .filter(|(e, _)| **e >= first_full)
        .filter_map(|(e, at)| closes.get(e).map(|c| ms(*at, *c)))
        .collect();
    println!(
        "latency: workload v1 {tags} tags x {seconds} s at {rate:.0} rows/s, `run --follow --workers {workers}`, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "plantflow: rows_read {}, windows {}, actions {}, dead letters {}",
        v["rows_read"], v["windows"], v["actions"], v["dead_letters"]
    );
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "window close -> visible (ms)", "n", "min", "p50", "p90", "p99", "max"
    );
    report("MQTT aggregates, per row", agg_msgs);
    report("MQTT aggregates, whole window", agg_windows);
    report("MQTT actions, per row", actions);
    report("Parquet aggregates, whole window", pq);
    println!("({at_shutdown} action messages of periods still open when the input stopped came at shutdown; not counted)");
}
